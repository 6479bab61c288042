#!/usr/bin/env bash
# The example dashboard behind nginx, signed in with keystile, on this machine:
#   deploy/dashboard/run.sh                   then open http://127.0.0.1:8080/ (Ctrl-C stops all)
#   deploy/dashboard/run.sh --reset-password  a new password for the user "demo", printed once
# Starts keystile, the demo upstream and nginx on these addresses (change any of them
# with the variable; nothing else to edit):
#   DASHBOARD_PORT  nginx, where you open the dashboard  (default 8080)
#   KEYSTILE_PORT   keystile                             (default 8700)
#   UPSTREAM_PORT   the demo API                         (default 9000)
# The first run creates the user "demo" and prints its password once; --reset-password
# makes a new one. Needs nginx (apt-get install nginx-light) and keystile (the
# repository's .venv, or KEYSTILE=/path/to/keystile).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
run="${DASHBOARD_RUN_DIR:-$here/.run}"
keystile="${KEYSTILE:-$root/.venv/bin/keystile}"
[ -x "$keystile" ] || keystile="$(command -v keystile)"
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
python_bin="${PYTHON:-python3}"
dashboard_port="${DASHBOARD_PORT:-8080}"
keystile_port="${KEYSTILE_PORT:-8700}"
upstream_port="${UPSTREAM_PORT:-9000}"

# Every port free before anything is made (a failed start leaves nothing half done).
for named in "DASHBOARD_PORT=$dashboard_port" "KEYSTILE_PORT=$keystile_port" \
             "UPSTREAM_PORT=$upstream_port"; do
    if ! "$python_bin" -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "${named#*=}" 2>/dev/null; then
        echo "run.sh: 127.0.0.1:${named#*=} is in use; pick another: ${named%%=*}=PORT $0" >&2
        exit 1
    fi
done

mkdir -p "$run"
# the shipped snippets and the example's nginx.conf, with this run's ports
for conf in "$root"/nginx/keystile-*.conf "$here/nginx.conf"; do
    sed -e "s/127\.0\.0\.1:8700/127.0.0.1:$keystile_port/g" \
        -e "s/127\.0\.0\.1:9000/127.0.0.1:$upstream_port/g" \
        -e "s/127\.0\.0\.1:8080/127.0.0.1:$dashboard_port/g" "$conf" > "$run/$(basename "$conf")"
done
ln -sfn "$here/site" "$run/site"

export KEYSTILE_DB="$run/keystile.db" KEYSTILE_CONFIG="$here/keystile.toml"
export KEYSTILE_LISTEN="127.0.0.1:$keystile_port"
# The upstream's key: made once, kept beside the database, never shown to a browser.
if [ ! -s "$run/upstream-key" ]; then
    (umask 077; "$python_bin" -c 'import secrets; print("sk-demo-" + secrets.token_urlsafe(24))' \
        > "$run/upstream-key")
fi
export DEMO_UPSTREAM_KEY="$(cat "$run/upstream-key")"

new_password() {
    password="$("$python_bin" -c 'import secrets; print(secrets.token_urlsafe(12))')"
    printf '%s\n' "$password" | "$keystile" users set-password demo --stdin >/dev/null
}
if ! "$keystile" --create-store users list --json | grep -q '"external_id": *"demo"'; then
    "$keystile" users create demo --email demo@example.com >/dev/null
    new_password
    echo "Created user demo with password: $password  (shown once; --reset-password makes a new one)"
elif [ "${1:-}" = "--reset-password" ]; then
    new_password
    echo "New password of user demo: $password  (shown once)"
    exit 0
fi

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$keystile" serve & pids+=($!)
"$python_bin" "$here/demo_upstream.py" "$upstream_port" & pids+=($!)
"$nginx_bin" -p "$run" -c nginx.conf -g 'daemon off;' & pids+=($!)
echo "Dashboard: http://127.0.0.1:$dashboard_port/  (sign in as demo)"
wait -n "${pids[@]}"
