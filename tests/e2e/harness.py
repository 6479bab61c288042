"""Real processes on loopback for end-to-end tests and benchmarks: keystile,
nginx with the shipped config, and an upstream that records what arrived."""

from __future__ import annotations

import http.client
import os
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
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    package = {"nginx": "nginx-light"}.get(name, name)
    message = f"{name} is not installed (Debian: apt-get install {package})"
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


@dataclass
class Upstream:
    """An HTTP server that records every request and answers 200 {"ok": true}."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

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
                payload = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
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


class Keystile:
    """``keystile serve`` as users run it: the real console script."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / f"keystile-{self.port}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
        self.env.update(env)
        self.env["KEYSTILE_LISTEN"] = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Keystile:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([str(KEYSTILE), "serve"], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_for_port(self.port, proc=self.proc)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise RuntimeError("keystile failed to start:\n" + self.log()) from None
        return self

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM)
        self.proc = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(KEYSTILE), *args], env=self.env, capture_output=True,
                              text=True, check=True, timeout=60)  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Nginx:
    """nginx running the shipped nginx/ folder, only the ports changed."""

    def __init__(self, workdir: Path, keystile_port: int, upstream_port: int) -> None:
        self.binary = find_binary("nginx")
        self.port = free_port()
        self.prefix = workdir / f"nginx-{self.port}"
        shutil.copytree(ROOT / "nginx", self.prefix)
        replacements = {
            SHIPPED_KEYSTILE_ADDR: f"127.0.0.1:{keystile_port}",
            SHIPPED_LISTEN: f"127.0.0.1:{self.port}",
            SHIPPED_UPSTREAM: f"127.0.0.1:{upstream_port}",
        }
        for conf in self.prefix.glob("*.conf"):
            text = conf.read_text()
            for old, new in replacements.items():
                text = text.replace(old, new)
            conf.write_text(text)
        (self.prefix / "logs").mkdir(exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        globals_ = (f"daemon off; pid {self.prefix}/nginx.pid; "
                    f"error_log {self.prefix}/logs/error.log warn;")  # fmt: skip
        self.proc = subprocess.Popen(
            [self.binary, "-p", str(self.prefix), "-c", "nginx.conf", "-g", globals_],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            wait_for_port(self.port, proc=self.proc)
        except (RuntimeError, TimeoutError):
            self.stop()
            assert self.proc.stderr is not None
            raise RuntimeError("nginx failed: " + self.proc.stderr.read().decode()) from None
        finally:
            assert self.proc.stderr is not None
            if self.proc.poll() is None:
                self.proc.stderr.close()
        return self

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGQUIT)  # SIGQUIT: nginx's graceful shutdown
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text() if path.exists() else ""


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
    nginx: Nginx

    def request(self, method: str, target: str, headers: list[tuple[str, str]] | None = None,
                body: bytes | None = None) -> Reply:  # fmt: skip
        return request(self.nginx.port, method, target, headers, body)


def running_stack(workdir: Path, env: Mapping[str, str]) -> Iterator[Stack]:
    upstream = Upstream().start()
    keystile = Keystile(workdir, env)
    nginx: Nginx | None = None
    try:
        keystile.start()
        nginx = Nginx(workdir, keystile.port, upstream.port).start()
        yield Stack(upstream, keystile, nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        keystile.stop()
        upstream.stop()
