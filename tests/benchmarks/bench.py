"""Throughput and latency of the request path, side by side in one run.

    python -m tests.benchmarks.bench            # full: 5 rounds x 10 s per scenario
    python -m tests.benchmarks.bench --smoke    # a few seconds: keeps the harness alive
    python -m tests.benchmarks.bench --baseline ../old-checkout   # before and after, one run

Scenarios, interleaved round by round so that machine noise hits all alike, for
nginx (1 worker), Envoy (concurrency 1) over ext_authz HTTP, and the same Envoy
over ext_authz gRPC (envoy-grpc):
  <proxy>-noauth    the proxy forwarding to the upstream, no auth (the limit; Envoy's
                    is envoy-noauth for both dialects)
  <proxy>-floor     the shipped config, auth by a bare handler (the floor): aiohttp
                    for HTTP (floor.py), grpcio's asyncio server for gRPC (grpc_floor.py)
  <proxy>-keystile  the shipped config, auth by `keystile serve` with a route that
                    requires a scope and injects the upstream credential, a rate limit
                    high enough never to trip, usage accounting and metrics
  <proxy>-keystile2w  the same with --workers 2
  nginx-keystileredis the same as nginx-keystile with its rate limit counted in Redis
                    (KEYSTILE_REDIS_URL; when a Redis answers at --redis): the extra
                    cost of a shared limit, next to the same key limited per process
  <proxy>-baseline  the same, served by another checkout's keystile (--baseline DIR,
                    a checkout with its own .venv): before/after ratios from one run
Every scenario must answer 2xx to every request, or the run fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import orjson

from tests.e2e.harness import ROOT, Keystile, Proxy, find_binary, free_port, wait_for_port

UPSTREAM_CONF = """
worker_processes 1;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok"; }}
    }}
}}
"""

ROUTES = """
[[routes]]
name = "chat"
path = "/v1/chat/*"
scopes = ["chat"]
[routes.inject]
Authorization = { env = "BENCH_UPSTREAM_KEY", format = "Bearer {}" }
"""


@contextmanager
def process(args: list[str], port: int, **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            **kwargs)  # type: ignore[call-overload]  # fmt: skip
    try:
        wait_for_port(port, proc=proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def nginx_globals(prefix: Path) -> str:
    return f"daemon off; pid {prefix}/nginx.pid; error_log {prefix}/error.log error;"


@contextmanager
def plain_nginx(workdir: Path, name: str, conf: str, port: int) -> Iterator[int]:
    prefix = workdir / name
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(conf)
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    with process([binary, "-p", str(prefix), "-c", "nginx.conf", "-g", nginx_globals(prefix)],
                 port):  # fmt: skip
        yield port


def envoy_no_auth(port: int, upstream: int, admin: int) -> str:
    template = (Path(__file__).parent / "envoy-noauth.yaml").read_text()
    filled = {"LISTEN_PORT": port, "UPSTREAM_PORT": upstream, "ADMIN_PORT": admin}
    for name, value in filled.items():
        template = template.replace(name, str(value))
    return template


@contextmanager
def plain_envoy(workdir: Path, conf: str, port: int) -> Iterator[int]:
    path = workdir / "envoy-noauth.yaml"
    path.write_text(conf)
    binary = find_binary("envoy")
    with process([binary, "-c", str(path), "--concurrency", "1", "--use-dynamic-base-id",
                  "--log-level", "error"], port):  # fmt: skip
        yield port


@contextmanager
def shipped(kind: str, workdir: Path, auth_port: int, upstream: int) -> Iterator[int]:
    proxy = Proxy(kind, workdir, auth_port, upstream)
    if kind == "nginx":
        conf = proxy.config
        conf.write_text(conf.read_text().replace("http {", "http {\n    access_log off;", 1))
    proxy.start()
    try:
        yield proxy.port
    finally:
        proxy.stop()


def no_auth_conf(port: int, upstream: int) -> str:
    return f"""
worker_processes 1;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream api {{ server 127.0.0.1:{upstream}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def wrk(port: int, path: str, key: str, seconds: float, connections: int) -> tuple[float, float]:
    """(requests per second, p99 latency in ms); fails on any non-2xx answer."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-H", f"x-api-key: {key}", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def redis_answers(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379),
                                      timeout=1) as sock:  # fmt: skip
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1 round of 1 s: checks the harness")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a checkout (with .venv) whose keystile runs as <proxy>-baseline",
    )
    redis = os.environ.get("KEYSTILE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--redis", default=redis, help="Redis for the nginx-keystileredis row (none: no row)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.seconds = 1, 1.0
    for tool in ("wrk", "nginx"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            print(f"{tool} is missing: apt-get install nginx-light wrk", file=sys.stderr)
            return 2

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        (workdir / "keystile.toml").write_text(ROUTES)
        env = {"KEYSTILE_DB": str(workdir / "keystile.db"),
               "KEYSTILE_CONFIG": str(workdir / "keystile.toml"),
               "BENCH_UPSTREAM_KEY": "sk-bench-upstream"}  # fmt: skip
        keystile = Keystile(workdir, env)
        created = keystile.cli("keys", "create", "--name", "bench", "--scope", "chat",
                               "--limit", "per_second=1000000", "--json")  # fmt: skip
        key = orjson.loads(created.stdout)["key"]
        keystile.start()
        stack.callback(keystile.stop)
        two = Keystile(workdir, {**env, "KEYSTILE_WORKERS": "2"})
        two.start()
        stack.callback(two.stop)
        shared = None
        if redis_answers(args.redis):
            prefix = f"keystile-bench:{os.getpid()}:"
            shared = Keystile(workdir, {**env, "KEYSTILE_REDIS_URL": args.redis,
                                        "KEYSTILE_REDIS_PREFIX": prefix}).start()  # fmt: skip
            stack.callback(shared.stop)
        else:
            print(f"no Redis answers at {args.redis}: no nginx-keystileredis row", file=sys.stderr)
        # gRPC in processes of their own: the HTTP rows measure keystile as most run it
        over_grpc = Keystile(workdir, env, grpc=True).start()
        stack.callback(over_grpc.stop)
        two_grpc = Keystile(workdir, {**env, "KEYSTILE_WORKERS": "2"}, grpc=True).start()
        stack.callback(two_grpc.stop)
        baseline = None
        if args.baseline is not None:
            source = args.baseline / "src" / "keystile"
            places = ("grpc_listener.py", "serve/grpc_listener.py")  # before and after the move
            speaks_grpc = any((source / where).exists() for where in places)
            baseline = Keystile(workdir, env, args.baseline / ".venv" / "bin" / "keystile",
                                grpc=speaks_grpc)  # fmt: skip
            baseline.start()
            stack.callback(baseline.stop)

        upstream = stack.enter_context(
            plain_nginx(workdir, "upstream", UPSTREAM_CONF.format(port=(up := free_port())), up)
        )
        floor_port, grpc_floor_port = free_port(), free_port()
        for module, port in (("floor", floor_port), ("grpc_floor", grpc_floor_port)):
            stack.enter_context(process([sys.executable, "-m", f"tests.benchmarks.{module}",
                                         str(port), key], port, cwd=ROOT))  # fmt: skip
        noauth, envoy_noauth = free_port(), free_port()
        scenarios = {
            "nginx-noauth": stack.enter_context(
                plain_nginx(workdir, "noauth", no_auth_conf(noauth, upstream), noauth)
            ),
            "nginx-floor": stack.enter_context(shipped("nginx", workdir, floor_port, upstream)),
            "nginx-keystile": stack.enter_context(
                shipped("nginx", workdir, keystile.port, upstream)
            ),
            "nginx-keystile2w": stack.enter_context(shipped("nginx", workdir, two.port, upstream)),
            **(
                {}
                if shared is None
                else {
                    "nginx-keystileredis": stack.enter_context(
                        shipped("nginx", workdir, shared.port, upstream)
                    )
                }
            ),
            "envoy-noauth": stack.enter_context(
                plain_envoy(
                    workdir, envoy_no_auth(envoy_noauth, upstream, free_port()), envoy_noauth
                )
            ),
            "envoy-floor": stack.enter_context(shipped("envoy", workdir, floor_port, upstream)),
            "envoy-keystile": stack.enter_context(
                shipped("envoy", workdir, keystile.port, upstream)
            ),
            "envoy-keystile2w": stack.enter_context(shipped("envoy", workdir, two.port, upstream)),
            "envoy-grpc-floor": stack.enter_context(
                shipped("envoy-grpc", workdir, grpc_floor_port, upstream)
            ),
            "envoy-grpc-keystile": stack.enter_context(
                shipped("envoy-grpc", workdir, over_grpc.check_port, upstream)
            ),
            "envoy-grpc-keystile2w": stack.enter_context(
                shipped("envoy-grpc", workdir, two_grpc.check_port, upstream)
            ),
        }
        if baseline is not None:
            for kind in ("nginx", "envoy", "envoy-grpc"):
                if kind == "envoy-grpc" and baseline.grpc_port is None:
                    continue
                port = baseline.check_port if kind == "envoy-grpc" else baseline.port
                scenarios[f"{kind}-baseline"] = stack.enter_context(
                    shipped(kind, workdir, port, upstream)
                )
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in scenarios}
        for port in scenarios.values():  # warm-up
            wrk(port, "/v1/chat/completions", key, 1, args.connections)
        for round_no in range(1, args.rounds + 1):
            for name, port in scenarios.items():
                results[name].append(
                    wrk(port, "/v1/chat/completions", key, args.seconds, args.connections)
                )
            print(f"round {round_no}/{args.rounds} done", file=sys.stderr)
    report(results, args)
    return 0


def report(results: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    medians = {
        name: (statistics.median(r for r, _ in runs), statistics.median(p for _, p in runs))
        for name, runs in results.items()
    }
    print(f"\n{args.rounds} rounds x {args.seconds:g} s, wrk -t1 -c{args.connections}, nginx 1 "
          f"worker, Envoy concurrency 1, {os.cpu_count()} cores; medians\n")  # fmt: skip
    header = ("scenario", "req/s", "p99 ms", "x limit", "x floor", "p99 x floor")
    print("{:<23}{:>10}{:>9}{:>9}{:>9}{:>13}".format(*header))
    for name, (rps, p99) in medians.items():
        dialect = name.rpartition("-")[0]  # envoy-grpc-floor: envoy-grpc
        limit_rps = medians[f"{name.split('-')[0]}-noauth"][0]  # the proxy's, no auth
        floor_rps, floor_p99 = medians[f"{dialect}-floor"]
        row = (name, f"{rps:.0f}", f"{p99:.2f}", f"{rps / limit_rps:.2f}", f"{rps / floor_rps:.2f}",
               f"{p99 / floor_p99:.2f}")  # fmt: skip
        print("{:<23}{:>10}{:>9}{:>9}{:>9}{:>13}".format(*row))
    if "nginx-keystileredis" in medians:
        local, redis = medians["nginx-keystile"], medians["nginx-keystileredis"]
        extra = (1 / redis[0] - 1 / local[0]) * 1e6
        print(f"\nrate limit in Redis vs per process (nginx): {redis[0] / local[0]:.2f}x the "
              f"requests a second, p99 {redis[1] / local[1]:.2f}x; ~{extra:.0f} us more per "
              f"request at saturation")  # fmt: skip
    if "envoy-grpc-floor" in medians:
        grpc_floor, http_floor = medians["envoy-grpc-floor"][0], medians["envoy-floor"][0]
        print(f"\nthrough Envoy, the gRPC floor answers {grpc_floor / http_floor:.2f}x the "
              f"requests a second of the HTTP floor")  # fmt: skip


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"\n({time.monotonic() - started:.0f} s)", file=sys.stderr)
    raise SystemExit(code)
