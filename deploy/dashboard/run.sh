#!/usr/bin/env bash
# The example dashboard behind nginx, signed in with keystile, on this machine:
#   deploy/dashboard/run.sh      then open http://127.0.0.1:8080/ (Ctrl-C stops all)
# Starts keystile (127.0.0.1:8700), the demo upstream (127.0.0.1:9000) and nginx
# (127.0.0.1:8080). The first run creates the user "demo" and prints its password.
# Needs nginx (apt-get install nginx-light) and keystile (the repository's .venv,
# or KEYSTILE=/path/to/keystile).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
run="${DASHBOARD_RUN_DIR:-$here/.run}"
keystile="${KEYSTILE:-$root/.venv/bin/keystile}"
[ -x "$keystile" ] || keystile="$(command -v keystile)"
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
python_bin="${PYTHON:-python3}"

mkdir -p "$run"
cp "$root"/nginx/keystile-*.conf "$here/nginx.conf" "$run/"
ln -sfn "$here/site" "$run/site"

export KEYSTILE_DB="$run/keystile.db" KEYSTILE_CONFIG="$here/keystile.toml"
# The upstream's key: made once, kept beside the database, never shown to a browser.
if [ ! -s "$run/upstream-key" ]; then
    (umask 077; "$python_bin" -c 'import secrets; print("sk-demo-" + secrets.token_urlsafe(24))' \
        > "$run/upstream-key")
fi
export DEMO_UPSTREAM_KEY="$(cat "$run/upstream-key")"

if ! "$keystile" --create-store users list --json | grep -q '"external_id": *"demo"'; then
    password="$("$python_bin" -c 'import secrets; print(secrets.token_urlsafe(12))')"
    "$keystile" users create demo --email demo@example.com >/dev/null
    printf '%s\n' "$password" | "$keystile" users set-password demo --stdin >/dev/null
    echo "Created user demo with password: $password  (shown once)"
fi

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$keystile" serve & pids+=($!)
"$python_bin" "$here/demo_upstream.py" 9000 & pids+=($!)
"$nginx_bin" -p "$run" -c nginx.conf -g 'daemon off;' & pids+=($!)
echo "Dashboard: http://127.0.0.1:8080/  (sign in as demo)"
wait -n "${pids[@]}"
