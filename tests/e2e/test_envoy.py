"""Envoy specifics, through real Envoy running the shipped envoy/envoy.yaml (HTTP) and
envoy/envoy-grpc.yaml (gRPC). The checks every proxy shares are in test_proxies.py."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.e2e.harness import ROOT, Reply, Stack, Upstream, running_stack
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
