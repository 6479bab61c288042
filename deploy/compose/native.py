#!/usr/bin/env python3
"""compose.yaml's topology without containers: nginx round-robin over three
keystile replicas sharing one PostgreSQL and one Redis, in front of the demo API,
all on loopback. For a machine without a container engine, and for the
end-to-end test that holds revocation and limits across replicas
(tests/e2e/test_replicas.py).

    python3 deploy/compose/native.py --db postgresql://127.0.0.1/keystile \\
        --redis redis://127.0.0.1:6379/0 [--listen 8080] [--config keystile.toml]

The nginx config is compose's nginx.conf with the containers' names turned into
loopback ports, the shipped snippets included from nginx/. Prints one JSON line
with every address once all answer; Ctrl-C (or SIGTERM) stops everything.
Secrets come from the environment as in compose's .env: KEYSTILE_PEPPER and
KEYSTILE_ADMIN_KEY (generated for this run when unset; printed never).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REPLICAS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before it listened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def nginx_config(listen: int, replicas: list[int], upstream: int, run: Path) -> str:
    """compose's nginx.conf, its container names as loopback ports."""
    text = (HERE / "nginx.conf").read_text()
    for number, port in enumerate(replicas, 1):
        text = text.replace(f"keystile-{number}:8700", f"127.0.0.1:{port}")
    text = text.replace("upstream:9000", f"127.0.0.1:{upstream}")
    text = re.sub(r"listen 8080;", f"listen 127.0.0.1:{listen};", text)
    text = text.replace("/etc/nginx/", f"{ROOT / 'nginx'}/")
    text = text.replace("pid /tmp/nginx.pid;", f"pid {run / 'nginx.pid'};")
    text = text.replace("error_log /dev/stderr warn;", f"error_log {run / 'nginx.log'} warn;")
    return text.replace("access_log /dev/stdout;", "access_log off;")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="KEYSTILE_DB: a postgresql:// URL")
    parser.add_argument("--redis", required=True, help="KEYSTILE_REDIS_URL")
    parser.add_argument("--listen", type=int, default=8080, help="nginx's port on 127.0.0.1")
    parser.add_argument("--config", help="KEYSTILE_CONFIG for every replica")
    parser.add_argument("--run-dir", help="where logs and nginx's config go (default: temp)")
    args = parser.parse_args()

    run = Path(args.run_dir or tempfile.mkdtemp(prefix="keystile-native-"))
    run.mkdir(parents=True, exist_ok=True)
    keystile = shutil.which("keystile") or str(Path(sys.executable).with_name("keystile"))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    env = dict(os.environ)  # other KEYSTILE_* settings reach every replica alike
    env.update(KEYSTILE_DB=args.db, KEYSTILE_REDIS_URL=args.redis,
               KEYSTILE_PEPPER=os.environ.get("KEYSTILE_PEPPER") or secrets.token_urlsafe(24),
               KEYSTILE_ADMIN_KEY=os.environ.get("KEYSTILE_ADMIN_KEY") or secrets.token_urlsafe(24))  # fmt: skip
    if args.config:
        env["KEYSTILE_CONFIG"] = args.config
    procs: list[subprocess.Popen[bytes]] = []

    def stop(*_: object) -> None:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ports = [free_port() for _ in range(REPLICAS)]
    for number, port in enumerate(ports, 1):
        log = (run / f"keystile-{number}.log").open("wb")
        proc = subprocess.Popen([keystile, "serve"], stdout=log, stderr=subprocess.STDOUT,
                                env={**env, "KEYSTILE_LISTEN": f"127.0.0.1:{port}"})  # fmt: skip
        procs.append(proc)
        wait_for(port, proc, f"keystile-{number}")
    upstream = free_port()
    api = subprocess.Popen([sys.executable, str(HERE / "demo_api.py"), str(upstream)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    procs.append(api)
    wait_for(upstream, api, "the demo API")
    config = run / "nginx.conf"
    config.write_text(nginx_config(args.listen, ports, upstream, run))
    proxy = subprocess.Popen([nginx, "-p", str(run), "-c", str(config), "-g", "daemon off;"],
                             stderr=(run / "nginx.stderr").open("wb"))  # fmt: skip
    procs.append(proxy)
    wait_for(args.listen, proxy, "nginx")
    print(json.dumps({"nginx": f"127.0.0.1:{args.listen}", "upstream": f"127.0.0.1:{upstream}",
                      "replicas": [f"127.0.0.1:{port}" for port in ports],
                      "run_dir": str(run)}), flush=True)  # fmt: skip
    while all(proc.poll() is None for proc in procs):
        time.sleep(0.2)
    dead = [proc.args for proc in procs if proc.poll() is not None]
    print(f"stopped: {dead} exited; see {run}", file=sys.stderr)
    stop()
    return 1


if __name__ == "__main__":
    sys.exit(main())
