"""Hostile requests through every shipped proxy config: never an allow of a path,
method or credential placement the upstream could read differently, and the
upstream never hit. The same request gets the same verdict from every proxy
(a proxy may refuse some of them itself, with a 400, before keystile is asked)."""

from __future__ import annotations

import socket

import pytest

from keystile.core.aliases import header_key
from tests.e2e import test_proxies
from tests.e2e.harness import Stack, Upstream

stack, keys, upstream = test_proxies.stack, test_proxies.keys, test_proxies.upstream  # fixtures


def raw_exchange(port: int, head: bytes) -> int:
    """Send ``head`` as it is (its Host too); the status answered (0: closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def raw_request(port: int, head: bytes) -> int:
    """Send ``head`` (its Host made the proxy's own address) byte for byte, non-ASCII
    included; the status answered (0: the connection was closed)."""
    return raw_exchange(port, head.replace(b"Host: api", b"Host: 127.0.0.1:%d" % port))


REFUSED = [
    ("GET", "/v1/models/..;/chat/completions"),
    ("GET", "/v1/chat/..;/x"),
    ("GET", "/v1/chat/x;jsessionid=1"),
    ("GET", "/v1/chat/x%3bjsessionid=1"),
    ("GET", "/v1/chat/completions?api_key={key}"),
    ("GET", "/v1/chat/completions?x=1&API_KEY={key}"),
    ("GET", "/v1/chat/completions?access_token={key}"),
]


@pytest.mark.parametrize(("method", "target"), REFUSED)
def test_refused_whichever_proxy_asks(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]], method: str, target: str
) -> None:
    key = keys["chat"][1]
    reply = stack.request(method, target.format(key=key), [("x-api-key", key)])
    assert key not in reply.text()
    if reply.status == 200:  # a proxy that normalises first (Envoy) decides on what it forwards
        (seen,) = upstream.seen
        assert ";" not in seen.path and ".." not in seen.path and key not in seen.path
    else:
        assert reply.status in (400, 403), reply.text()
        assert upstream.seen == []


OVERRIDES = [("X-HTTP-Method-Override", "DELETE"), ("X-Method-Override", "PUT"),
             ("X-HTTP-Method", "PATCH"), ("X.HTTP.Method.Override", "DELETE")]  # fmt: skip


@pytest.mark.parametrize("override", OVERRIDES)
def test_a_method_override_is_judged_as_the_method_it_names(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]], override: tuple[str, str]
) -> None:
    # the chat route allows GET and POST: an override to another method is refused
    key = keys["chat"][1]
    reply = stack.request("POST", "/v1/chat/completions", [("x-api-key", key), override], b"{}")
    name = override[0]
    if reply.status == 200 and "-" not in name:
        # an alias spelling (X.HTTP.Method.Override) that the proxy dropped (nginx,
        # Traefik): the upstream never saw an override to judge
        (seen,) = upstream.seen
        assert not [h for h, _ in seen.headers if header_key(h) == header_key(name)], seen.headers
        upstream.seen.clear()
    else:
        assert reply.status == 403, reply.text()
        assert upstream.seen == []
    allowed = stack.request("POST", "/v1/chat/completions?_method=POST", [("x-api-key", key)],
                            b"{}")  # fmt: skip
    assert allowed.status == 200


def test_a_query_override_is_judged_too(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]]
) -> None:
    reply = stack.request("POST", "/v1/chat/completions?_method=DELETE",
                          [("x-api-key", keys["chat"][1])], b"{}")  # fmt: skip
    assert reply.status == 403 and upstream.seen == []


@pytest.mark.parametrize(
    "head",
    [b"GET /v1/chat/\xff\xfe HTTP/1.1\r\nHost: api\r\nX-Api-Key: {key}\r\n\r\n",
     b"GET /v1/chat/x?q=\xe9 HTTP/1.1\r\nHost: api\r\nX-Api-Key: {key}\r\n\r\n",
     b"get /v1/models HTTP/1.1\r\nHost: api\r\nX-Api-Key: {key}\r\n\r\n",
     b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: api\r\nX-Api-Key: {key}\r\n\r\n"],
    ids=["raw bytes in the path", "raw bytes in the query", "lower-case method", "CONNECT"],
)  # fmt: skip
def test_raw_bytes_and_odd_methods_are_never_allowed(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]], head: bytes
) -> None:
    status = raw_request(stack.proxy.port, head.replace(b"{key}", keys["chat"][1].encode()))
    # refused, by the proxy or by keystile, and never an error; Traefik refuses every
    # CONNECT itself, before any middleware, with 501 (it does not do tunnels)
    not_implemented = status == 501 and head.startswith(b"CONNECT ")
    assert upstream.seen == [] and (status < 500 or not_implemented), status


@pytest.mark.parametrize("target", ["/hosted/x", "http://evil.example/hosted/x",
                                    "http://EVIL.example:80/hosted/x",
                                    "http://good.example.evil.example/hosted/x"])  # fmt: skip
def test_keystile_judges_the_host_the_upstream_receives(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]], target: str
) -> None:
    """A request line in absolute form naming another host than the Host header: the
    route bound to good.example allows only what reaches the upstream as
    good.example. (nginx judged the Host header and sent the request line's host.)"""
    key = keys["chat"][1]
    head = (f"GET {target} HTTP/1.1\r\nHost: good.example\r\nx-api-key: {key}\r\n"
            "Connection: close\r\n\r\n")  # fmt: skip
    status = raw_exchange(stack.proxy.port, head.encode())
    if target.startswith("/") and stack.proxy.kind != "caddy":
        # the plain request is allowed: the refusals below are about hosts (Caddy's
        # shipped site answers only its own address: an empty 200, nothing forwarded)
        assert status == 200 and upstream.seen
    # whatever reached the upstream reached it as good.example, the host judged
    for seen in upstream.seen:
        assert [h.split(":")[0].lower() for h in seen.header("Host")] == ["good.example"], seen
    assert status in (200, 400, 403), status
