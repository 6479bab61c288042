"""The gRPC listener (KEYSTILE_GRPC_LISTEN): ``keystile serve`` as users run it (the real
command, on uvloop), and the listener in the test's own loop, asked by a gRPC client
the way Envoy asks."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import orjson
import pytest
from aiohttp import web
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keystile import config, reasons
from keystile.adapters import envoy_grpc
from keystile.adapters.base import error_body
from keystile.cache import Entry
from keystile.decide import Decision, Rules
from keystile.errors import StoreUnavailable
from keystile.gate import Authorizer
from keystile.grpc_listener import CheckService
from keystile.model import KeyRecord, RateInfo
from keystile.routes import RouteTable
from keystile.server import make_app, make_grpc_listener
from tests.e2e.harness import KEYSTILE, Keystile, free_port

from .adapters.conftest import TRUSTED
from .conftest import UPSTREAM_SECRET

CHECK = "/envoy.service.auth.v3.Authorization/Check"


def check(port: int, headers: dict[str, str], path: str = "/v1/chat/x") -> CheckResponse:
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", path, "api.example.com"
    http.headers.update(headers)
    request.attributes.source.address.socket_address.address = "192.0.2.7"
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(CHECK, request_serializer=CheckRequest.SerializeToString,
                                   response_deserializer=CheckResponse.FromString)  # fmt: skip
        response: CheckResponse = call(request, timeout=5)
        return response


def health(port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        return int(stub.Check(request, timeout=5).status)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Keystile]:
    keystile = Keystile(tmp_path, {"KEYSTILE_DB": str(tmp_path / "k.db")}, grpc=True).start()
    yield keystile
    keystile.stop()


def test_check_and_health_are_served_beside_http(served: Keystile) -> None:
    assert served.grpc_port is not None
    port = served.grpc_port
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health(port) == health(port, "envoy.service.auth.v3.Authorization") == serving
    made = orjson.loads(served.cli("keys", "create", "--name", "g", "--json").stdout)
    allowed = check(port, {"authorization": f"Bearer {made['key']}", "x-keystile-owner": "root"})
    assert allowed.status.code == code_pb2.OK, allowed
    upstream = {h.header.key: h.header.value for h in allowed.ok_response.headers}
    assert upstream["X-Keystile-Key-Id"] == made["id"]
    assert {"authorization", "x-keystile-owner"} <= set(allowed.ok_response.headers_to_remove)
    assert made["key"] not in str(allowed)
    again = check(port, {"authorization": f"Bearer {made['key']}"})
    assert again == allowed  # the kept reply, the same answer
    denied = check(port, {})
    assert denied.status.code == code_pb2.UNAUTHENTICATED
    assert denied.denied_response.status.code == 401
    assert orjson.loads(denied.denied_response.body)["error"]["code"] == "missing_api_key"
    url = f"http://127.0.0.1:{served.port}/metrics"
    metrics = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'adapter="envoy_grpc",detail="",outcome="allow"' in metrics
    assert 'adapter="envoy_grpc",detail="no_key",outcome="unauthenticated"' in metrics


def test_health_says_not_serving_once_the_store_is_gone(served: Keystile, tmp_path: Path) -> None:
    assert served.grpc_port is not None
    (tmp_path / "k.db").unlink()
    deadline = time.monotonic() + 10
    while health(served.grpc_port) != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert time.monotonic() < deadline, served.log()
        time.sleep(0.2)
    made_up = "ks_" + "A" * 49
    assert check(served.grpc_port, {"x-api-key": made_up}).status.code != code_pb2.OK


def test_a_second_keystile_cannot_take_the_grpc_port(served: Keystile, tmp_path: Path) -> None:
    # grpcio would share the port (SO_REUSEPORT) and take half of Envoy's checks
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    listen = served.env["KEYSTILE_GRPC_LISTEN"]
    env.update(KEYSTILE_DB=str(tmp_path / "k.db"), KEYSTILE_LISTEN=f"127.0.0.1:{free_port()}",
               KEYSTILE_GRPC_LISTEN=listen)  # fmt: skip
    done = subprocess.run([str(KEYSTILE), "serve"], env=env, capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode != 0
    assert f"grpc_listen {listen}: Address already in use" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_workers_each_serve_the_grpc_port(tmp_path: Path) -> None:
    env = {"KEYSTILE_DB": str(tmp_path / "k.db"), "KEYSTILE_WORKERS": "2"}
    keystile = Keystile(tmp_path, env, grpc=True).start()
    try:
        assert keystile.grpc_port is not None
        made = orjson.loads(keystile.cli("keys", "create", "--name", "w", "--json").stdout)
        for _ in range(20):  # a fresh channel each: the kernel picks a worker each time
            response = check(keystile.grpc_port, {"x-api-key": made["key"]})
            assert response.status.code == code_pb2.OK, keystile.log()
    finally:
        keystile.stop()
    assert "Traceback" not in keystile.log()


@pytest.fixture
async def in_process(settings: config.Settings) -> AsyncIterator[int]:
    """The gRPC listener in this test's event loop, on a free port."""
    app = make_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listener = make_grpc_listener(app, reuse_port=False)
    port = free_port()
    await listener.start(("127.0.0.1", port))
    yield port
    await listener.close(1.0)
    await runner.cleanup()


async def ask(port: int, headers: dict[str, str]) -> CheckResponse:
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "POST", "/v1/chat/completions", "api"
    http.headers.update(headers)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(CHECK, request_serializer=CheckRequest.SerializeToString,
                                   response_deserializer=CheckResponse.FromString)  # fmt: skip
        response: CheckResponse = await call(request, timeout=5)
        return response


async def test_allow_injects_the_route_s_credential(in_process: int, key: str) -> None:
    response = await ask(in_process, {"x-api-key": key})
    assert response.status.code == code_pb2.OK
    headers = {h.header.key: h.header.value for h in response.ok_response.headers}
    assert headers["Authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert "x-api-key" in response.ok_response.headers_to_remove  # the client's key
    assert "authorization" not in response.ok_response.headers_to_remove  # set, not removed


@pytest.mark.parametrize(
    ("fault", "detail"), [(RuntimeError("a bug"), "internal_error"),
                          (StoreUnavailable("gone"), "store_unavailable")],
)  # fmt: skip
async def test_a_fault_of_ours_is_the_same_503_as_over_http(
    in_process: int, key: str, monkeypatch: pytest.MonkeyPatch, fault: Exception, detail: str
) -> None:
    async def broken(self: object, facts: object) -> None:
        raise fault

    monkeypatch.setattr(Authorizer, "authorize", broken)
    response = await ask(in_process, {"x-api-key": key})
    assert response.status.code == code_pb2.UNAVAILABLE
    denied = response.denied_response
    assert denied.status.code == 503
    reason = next(r for r in reasons.REASONS if r.detail == detail)
    assert denied.body.encode() == error_body(reason)
    assert {h.header.key: h.header.value for h in denied.headers}["X-Keystile-Detail"] == detail
    assert key not in str(response)


def test_a_kept_allow_with_rate_figures_is_the_allow_rendered_whole() -> None:
    # the kept answer plus one serialized piece per X-RateLimit-* header merges into
    # exactly what rendering the whole allow gives
    rules = Rules(RouteTable())
    judge = SimpleNamespace(rules=rules)  # all encoding needs of the path
    service = CheckService(judge, TRUSTED)
    record = KeyRecord(id="key_1", key_hash="h", hash_scheme="sha256", display_prefix="ks_x",
                       name="n", created_at=0.0, updated_at=0.0, owner="ana")  # fmt: skip
    entry = Entry(record, expires=float("inf"))
    grant = rules.grant(record, None)
    for remaining in (9, 8):
        decision = Decision(None, record, rate=RateInfo(10, remaining, 60))
        answer = CheckResponse.FromString(service.encoded(decision, entry))
        assert answer == envoy_grpc.render(decision, grant)
        assert len(answer.ok_response.response_headers_to_add) == 3
    plain = CheckResponse.FromString(service.encoded(Decision(None, record), entry))
    assert plain == envoy_grpc.render(Decision(None, record), grant)
    assert not plain.ok_response.response_headers_to_add
