"""Envoy specifics, through real Envoy running the shipped envoy/envoy.yaml (HTTP) and
envoy/envoy-grpc.yaml (gRPC). The checks every proxy shares are in test_proxies.py."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.e2e.harness import ROOT, Keystile, Proxy, Reply, Stack, Upstream, running_stack
from tests.e2e.test_proxies import CONFIG, UPSTREAM_SECRET, create_key


@pytest.fixture(params=["envoy", "envoy-grpc"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    # a stack per test: these tests stop keystile or the upstream
    (tmp_path / "keystile.toml").write_text(CONFIG)
    env = {"KEYSTILE_DB": str(tmp_path / "keystile.db"),
           "KEYSTILE_CONFIG": str(tmp_path / "keystile.toml"),
           "E2E_UPSTREAM_KEY": UPSTREAM_SECRET}  # fmt: skip
    yield from running_stack(tmp_path, env, request.param)


def nginx_unavailable_body() -> object:
    """The JSON the shipped nginx snippet answers when keystile is unreachable."""
    server = (ROOT / "nginx" / "keystile-server.conf").read_text()
    block = server.split("location @keystile_unavailable", 1)[1]
    match = re.search(r"return 503 '([^']*)';", block)
    assert match, "keystile-server.conf no longer answers 503 with a JSON body"
    return orjson.loads(match.group(1).replace("\\n", "\n"))


def json_of(reply: Reply) -> object:
    return orjson.loads(reply.body)


def test_keystile_down_is_503_with_the_same_json_as_nginx(stack: Stack) -> None:
    _, key = create_key(stack.keystile, "--name", "chat", "--scope", "chat")
    assert stack.request("GET", "/v1/chat/x", [("x-api-key", key)]).status == 200
    stack.keystile.stop()
    stack.upstream.seen.clear()
    reply = stack.request("GET", "/v1/chat/x", [("x-api-key", key)])
    assert reply.status == 503, reply.text()
    assert reply.header("Content-Type") == "application/json", reply.text()
    assert json_of(reply) == nginx_unavailable_body()
    assert json_of(reply)["error"]["code"] == "auth_unavailable"  # type: ignore[index]
    assert reply.header("Retry-After") == "1"
    assert reply.header("Cache-Control") == "no-store"
    assert stack.upstream.seen == []
    assert key not in reply.text()


@pytest.mark.parametrize("failure", ["hangs", "answers 500"])
def test_keystile_hanging_or_failing_is_the_same_503_json(stack: Stack, failure: str) -> None:
    _, key = create_key(stack.keystile, "--name", "chat", "--scope", "chat")
    stack.keystile.stop()
    port = stack.keystile.check_port
    stand_in: socket.socket | Upstream
    if failure == "hangs":  # accepts the connection, never answers: the 1 s timeout
        stand_in = socket.socket()
        stand_in.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        stand_in.bind(("127.0.0.1", port))
        stand_in.listen(16)
        target = "/v1/chat/x"
    else:  # an HTTP check goes to /auth/envoy + this path, which the stand-in answers with
        # 500; a gRPC check gets HTTP/1.1 where Envoy speaks HTTP/2
        stand_in = Upstream(port=port).start()
        target = "/v1/chat/status/500"
    try:
        reply = stack.request("GET", target, [("x-api-key", key)])
    finally:
        if isinstance(stand_in, socket.socket):
            stand_in.close()
        else:
            stand_in.stop()
    assert reply.status == 503, reply.text()
    assert reply.header("Content-Type") == "application/json", reply.text()
    assert json_of(reply) == nginx_unavailable_body()
    assert stack.upstream.seen == []


def test_keystile_s_own_denials_keep_their_status_and_body(stack: Stack) -> None:
    _, memory = create_key(stack.keystile, "--name", "memory", "--scope", "memory")
    _, metered = create_key(stack.keystile, "--name", "metered", "--scope", "chat",
                            "--limit", "per_hour=1")  # fmt: skip
    assert stack.request("GET", "/v1/chat/x", [("x-api-key", metered)]).status == 200
    cases = [
        ([], 401, "missing_api_key"),
        ([("x-api-key", memory)], 403, "insufficient_scope"),
        ([("x-api-key", metered)], 429, "rate_limited"),
    ]
    for headers, status, code in cases:
        reply = stack.request("GET", "/v1/chat/x", headers)
        assert reply.status == status, reply.text()
        assert reply.header("Content-Type") == "application/json", reply.text()
        assert json_of(reply)["error"]["code"] == code, reply.text()  # type: ignore[index]
        assert reply.header("X-Keystile-Reason") == code


def test_an_upstream_503_reaches_the_client_untouched(stack: Stack) -> None:
    _, key = create_key(stack.keystile, "--name", "chat", "--scope", "chat")
    reply = stack.request("GET", "/v1/chat/status/503", [("x-api-key", key)])
    assert reply.status == 503, reply.text()
    assert json_of(reply) == {"upstream_status": 503}
    assert len(stack.upstream.seen) == 1


def test_an_unreachable_upstream_is_not_reported_as_auth_unavailable(stack: Stack) -> None:
    _, key = create_key(stack.keystile, "--name", "chat", "--scope", "chat")
    stack.upstream.stop()
    reply = stack.request("GET", "/v1/chat/x", [("x-api-key", key)])
    assert reply.status == 503, reply.text()
    assert b"auth_unavailable" not in reply.body, reply.text()


@pytest.fixture(params=["headers", "header_map"], scope="module")
def grpc_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The shipped envoy-grpc.yaml, and the same with ``encode_raw_headers: true``
    (Envoy then sends the headers in ``header_map``, values as ``raw_value`` bytes,
    repeated headers apart instead of joined)."""
    workdir = tmp_path_factory.mktemp(f"grpc-{request.param}")
    (workdir / "keystile.toml").write_text(CONFIG)
    env = {"KEYSTILE_DB": str(workdir / "keystile.db"),
           "KEYSTILE_CONFIG": str(workdir / "keystile.toml"),
           "E2E_UPSTREAM_KEY": UPSTREAM_SECRET}  # fmt: skip
    upstream = Upstream().start()
    keystile = Keystile(workdir, env, grpc=True)
    proxy = Proxy("envoy-grpc", workdir, keystile.check_port, upstream.port)
    if request.param == "header_map":
        shipped = proxy.config.read_text()
        setting = "failure_mode_allow: false\n"
        assert setting in shipped
        raw = setting + " " * 14 + "encode_raw_headers: true\n"
        proxy.config.write_text(shipped.replace(setting, raw))
    try:
        keystile.start()
        proxy.start()
        yield Stack(upstream, keystile, proxy)
    finally:
        proxy.stop()
        keystile.stop()
        upstream.stop()


def test_grpc_checks_read_headers_in_either_encoding(grpc_stack: Stack) -> None:
    key_id, key = create_key(grpc_stack.keystile, "--name", "raw", "--scope", "chat")
    _, other = create_key(grpc_stack.keystile, "--name", "other", "--scope", "chat")
    seen = grpc_stack.upstream.seen
    seen.clear()
    forged = [("X-Api-Key", key), ("X-Keystile-Key-Id", "key_forged"), ("x-keystile-owner", "root")]
    allowed = grpc_stack.request("POST", "/v1/chat/completions", forged, b"{}")
    assert allowed.status == 200, allowed.text()
    (upstream,) = seen
    assert upstream.header("Authorization") == [f"Bearer {UPSTREAM_SECRET}"]
    assert upstream.header("X-Keystile-Key-Id") == [key_id]
    assert [v for v in upstream.header("X-Keystile-Owner") if v] == []
    assert [v for v in upstream.header("X-Api-Key") if v] == []
    for headers, code in [
        ([("Authorization", "Bearer " + "ks_" + "A" * 49)], "invalid_api_key"),
        ([("X-Api-Key", key), ("X-Api-Key", other)], "invalid_api_key"),  # two keys
        ([], "missing_api_key"),
    ]:
        denied = grpc_stack.request("POST", "/v1/chat/completions", headers, b"{}")
        assert denied.status == 401, denied.text()
        assert json_of(denied)["error"]["code"] == code, denied.text()  # type: ignore[index]
    assert len(seen) == 1
