"""Token budgets' usage intake through real proxies running the shipped configs:
nginx's syslog datagrams into keystile's UDP listener, Envoy's access-log stream
(HTTP and gRPC dialects) into keystile's gRPC listener.

keystile does not make reservations yet (the budgets land separately), so the
checks are answered by a stand-in that hands out ``test-res-<n>`` the way keystile
will (``X-Keystile-Reservation`` on an allow); what receives the usage is
keystile's own intake, with a ``report`` that records its calls.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from keystile import config
from keystile.clientip import TrustedProxies, parse_networks
from keystile.grpc_listener import peer_address
from keystile.intake import REPORT
from keystile.intake.accesslog import AccessLogService
from keystile.intake.syslog import SyslogListener
from keystile.server import make_app, make_grpc_listener
from tests.e2e.harness import ROOT, Proxy, Reply, find_binary, free_port, request

pytestmark = pytest.mark.e2e
FORGED = "forged.1796700000.nonce.sig"


@dataclass
class StandIn:
    """What keystile will answer once it makes reservations: an allow with
    ``X-Keystile-Reservation: test-res-<n>``; none for a path with ``nores``, a
    401 for one with ``deny``. ``given``: the reservations handed out, in order."""

    given: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str) -> tuple[int, str | None]:
        if "deny" in path:
            return 401, None
        if "nores" in path:
            return 200, None
        with self.lock:
            reservation = f"test-res-{len(self.given) + 1}"
            self.given.append(reservation)
        return 200, reservation

    def http(self) -> ThreadingHTTPServer:
        """The HTTP authorizer (nginx's auth_request, Envoy's http_service)."""
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, reservation = stand_in.answer(self.headers.get("X-Original-URI")
                                                      or self.path)  # fmt: skip
                self.send_response(status)
                if reservation is not None:
                    self.send_header("X-Keystile-Reservation", reservation)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    async def check(self, request: CheckRequest, context: Any) -> CheckResponse:
        """The gRPC authorizer (Envoy's grpc_service), as keystile answers an allow."""
        status, reservation = self.answer(request.attributes.request.http.path)
        response = CheckResponse()
        if status != 200:
            response.status.code = 16  # UNAUTHENTICATED
            response.denied_response.status.code = 401
            return response
        if reservation is not None:
            response.ok_response.headers.append(HeaderValueOption(
                header={"key": "x-keystile-reservation", "value": reservation},
                append_action=HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            ))  # fmt: skip
        return response


@dataclass
class TokenUpstream:
    """An API that answers ``x-usage-total-tokens: N`` for a path ending in
    ``/tokens/N`` (no such header otherwise) and records the headers it got."""

    seen: list[dict[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> int:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                upstream.seen.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                count = re.search(r"/tokens/([^/?]+)$", self.path)
                if count:
                    self.send_header("X-Usage-Total-Tokens", count.group(1))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return int(self.server.server_address[1])


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, reservation: str, tokens: int) -> bool:
        self.calls.append((reservation, tokens))
        return reservation.startswith("test-res-")  # the forged one is unknown


async def ask(port: int, path: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    return await asyncio.to_thread(request, port, "GET", path, headers)


async def until(condition: Any, what: str) -> None:
    for _ in range(200):  # 10 s
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(what)


@pytest.fixture
def upstream() -> Iterator[tuple[TokenUpstream, int]]:
    made = TokenUpstream()
    port = made.start()
    yield made, port
    assert made.server is not None
    made.server.shutdown()
    made.server.server_close()


@pytest.fixture
def proxies() -> Iterator[list[Proxy]]:
    started: list[Proxy] = []
    yield started
    for proxy in started:
        proxy.stop()


async def start(proxy: Proxy, proxies: list[Proxy]) -> Proxy:
    proxies.append(proxy)
    try:
        await asyncio.to_thread(proxy.start)
    except RuntimeError:
        proxies.remove(proxy)
        raise
    return proxy


async def exercise(proxy: Proxy, stand_in: StandIn, upstream: TokenUpstream) -> None:
    """The same requests through any proxy; the usage they should report is in ``wanted``."""
    assert (await ask(proxy.port, "/v1/chat/tokens/1874")).status == 200
    # the client's own reservation header never counts, nor reaches the upstream
    reply = await ask(proxy.port, "/v1/chat/tokens/7", [("X-Keystile-Reservation", FORGED)])
    assert reply.status == 200
    assert (await ask(proxy.port, "/v1/chat/no-count")).status == 200  # nothing to report
    assert (await ask(proxy.port, "/v1/nores/tokens/5")).status == 200  # no reservation
    assert (await ask(proxy.port, "/v1/deny/tokens/5")).status == 401
    assert stand_in.given == ["test-res-1", "test-res-2", "test-res-3"]
    assert all(FORGED not in str(seen) for seen in upstream.seen)


WANTED = [("test-res-1", 1874), ("test-res-2", 7)]


async def test_nginx_sends_each_reservation_s_usage_over_syslog(
    tmp_path: Path, upstream: tuple[TokenUpstream, int], proxies: list[Proxy]
) -> None:
    api, api_port = upstream
    stand_in = StandIn()
    auth = stand_in.http()
    recorder = Recorder()
    listener = SyslogListener(recorder)
    usage_port = free_port()
    await listener.start(("127.0.0.1", usage_port), reuse_port=False)
    try:
        proxy = Proxy("nginx", tmp_path, auth.server_address[1], api_port, usage_port=usage_port)
        await start(proxy, proxies)
        await exercise(proxy, stand_in, api)
        tally = listener.intake.tally.counts
        await until(lambda: sum(tally.values()) >= 3 and not listener.intake.running,
                    f"three usage lines: {tally}")  # fmt: skip
        await asyncio.sleep(0.3)  # and no more
        assert recorder.calls == WANTED
        # one line per request with a reservation: the one without a count reports nothing
        assert tally == {"counted": 2, "unreported": 1}, proxy.log()
        # nginx's upstream never sees a reservation (only its access log does)
        assert all("x-keystile-reservation" not in seen for seen in api.seen)
    finally:
        await listener.close(1.0)
        auth.shutdown()
        auth.server_close()


@pytest.fixture
def settings(tmp_path: Path) -> config.Settings:
    return config.load({"KEYSTILE_DB": str(tmp_path / "k.db")})


async def test_envoy_http_streams_each_reservation_s_usage_to_keystile(
    tmp_path: Path,
    upstream: tuple[TokenUpstream, int],
    proxies: list[Proxy],
    settings: config.Settings,
) -> None:
    api, api_port = upstream
    stand_in = StandIn()
    auth = stand_in.http()
    # keystile's own gRPC listener, as `keystile serve` builds it, with a report
    app = make_app(settings)
    recorder = Recorder()
    app[REPORT] = recorder
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listener = make_grpc_listener(app, reuse_port=False)
    usage_port = free_port()
    await listener.start(("127.0.0.1", usage_port))
    try:
        proxy = Proxy("envoy", tmp_path, auth.server_address[1], api_port, usage_port=usage_port)
        await start(proxy, proxies)
        await exercise(proxy, stand_in, api)
        await until(lambda: len(recorder.calls) >= 2, f"two reports: {recorder.calls}")
        await asyncio.sleep(1.5)  # Envoy flushes its access-log buffer every second
        assert sorted(recorder.calls) == WANTED, proxy.log()
        # the upstream got keystile's reservation, never the client's
        sent = [seen.get("x-keystile-reservation") for seen in api.seen]
        assert sent == ["test-res-1", "test-res-2", "test-res-3", None], sent
    finally:
        await listener.close(1.0)
        await runner.cleanup()
        auth.shutdown()
        auth.server_close()


async def test_envoy_grpc_streams_each_reservation_s_usage_to_keystile(
    tmp_path: Path, upstream: tuple[TokenUpstream, int], proxies: list[Proxy]
) -> None:
    api, api_port = upstream
    stand_in = StandIn()
    recorder = Recorder()
    # the checks and the access log on one gRPC server, as on keystile's grpc_listen
    server = grpc.aio.server()
    check = grpc.unary_unary_rpc_method_handler(
        stand_in.check, request_deserializer=CheckRequest.FromString,
        response_serializer=CheckResponse.SerializeToString,
    )  # fmt: skip
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "envoy.service.auth.v3.Authorization", {"Check": check}),))  # fmt: skip
    trusted = TrustedProxies(parse_networks(["127.0.0.0/8", "::1/128"]))
    usage = AccessLogService(recorder, trusted, peer_address)
    usage.add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        proxy = Proxy("envoy-grpc", tmp_path, port, api_port, pages_port=free_port())
        await start(proxy, proxies)
        await exercise(proxy, stand_in, api)
        await until(lambda: len(recorder.calls) >= 2, f"two reports: {recorder.calls}")
        await asyncio.sleep(1.5)  # Envoy flushes its access-log buffer every second
        assert sorted(recorder.calls) == WANTED, proxy.log()
        assert usage.tally.counts == {"counted": 2, "unreported": 1}
        sent = [seen.get("x-keystile-reservation") for seen in api.seen]
        assert sent == ["test-res-1", "test-res-2", "test-res-3", None], sent
    finally:
        await server.stop(1.0)
        await usage.close(1.0)


@pytest.mark.parametrize("name", ["envoy.yaml", "envoy-grpc.yaml"])
def test_the_shipped_envoy_configs_validate_and_log_usage(name: str) -> None:
    path = ROOT / "envoy" / name
    done = subprocess.run([find_binary("envoy"), "--mode", "validate", "-c", str(path),
                           "--log-level", "warn", "--use-dynamic-base-id"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    text = path.read_text()
    default = config.load({"KEYSTILE_DB": "unused.db"}).usage_tokens_header
    assert f"additional_response_headers_to_log: [{default}]" in text
    assert "additional_request_headers_to_log: [x-keystile-reservation]" in text


def test_the_shipped_nginx_config_logs_the_default_tokens_header() -> None:
    default = config.load({"KEYSTILE_DB": "unused.db"}).usage_tokens_header
    http = (ROOT / "nginx" / "keystile-http.conf").read_text()
    variable = "$upstream_http_" + default.replace("-", "_")
    assert f"'usage1 $ks_reservation {variable} $request_id'" in http
