"""The main listener over a real socket: auth requests answered off the wire, the
rest handed to aiohttp with every byte intact, and auth requests llhttp refuses
answered with a plain denial (never an allow, never a 5xx, never an echo)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from keystile import config
from keystile.serve import wire
from keystile.serve.gate import GATES, Authorizer
from keystile.serve.wire import AuthListener
from keystile.server import METRICS, make_app

from .conftest import UPSTREAM_SECRET
from .waiting import wait_until_async


@pytest.fixture
async def served(settings: config.Settings, key: str) -> AsyncIterator[tuple[int, AuthListener]]:
    app = make_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    listener = AuthListener(app[GATES].values(), runner.server, app[METRICS], idle_timeout=1)
    server = await asyncio.get_running_loop().create_server(listener, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], listener
    server.close()
    await listener.close(1.0)
    await runner.cleanup()


@pytest.fixture
def port(served: tuple[int, AuthListener]) -> int:
    return served[0]


def auth(key: str | None, uri: str = "/v1/chat/completions", extra: str = "") -> bytes:
    lines = ["GET /auth/nginx HTTP/1.1", "Host: keystile", f"X-Original-URI: {uri}"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


async def exchange(port: int, data: bytes, *, replies: int = 1, pause: float = 0) -> list[bytes]:
    """Send ``data`` (byte by byte with ``pause``), read ``replies`` whole responses."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if pause:
            for byte in data:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(pause)
        else:
            writer.write(data)
        answers = []
        for _ in range(replies):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
            answers.append(head + await reader.readexactly(length))
        return answers
    finally:
        writer.close()


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def served_by_aiohttp(reply: bytes) -> bool:
    return b"\r\nServer: " in reply  # aiohttp names itself; the wire path does not


async def test_allow_is_answered_off_the_wire_with_injected_headers(port: int, key: str) -> None:
    (reply,) = await exchange(port, auth(key))
    assert status(reply) == 200 and not served_by_aiohttp(reply)
    assert f"Authorization: Bearer {UPSTREAM_SECRET}\r\n".encode() in reply
    assert b"\r\nDate: " in reply and b"\r\nContent-Length: 0\r\n" in reply
    assert key.encode() not in reply


async def test_pipelined_requests_are_answered_in_order(port: int, key: str) -> None:
    # the first needs the store (nothing is cached yet); the others wait their turn
    data = auth(key) + auth(None) + auth(key, "/v1/other") + auth(key)
    replies = await exchange(port, data, replies=4)
    assert [status(r) for r in replies] == [200, 401, 403, 200]
    assert b"X-Keystile-Reason: missing_api_key" in replies[1]
    assert b"X-Keystile-Reason: route_not_allowed" in replies[2]
    assert all(UPSTREAM_SECRET.encode() not in r for r in replies[1:3])


async def test_a_request_trickling_in_byte_by_byte(port: int, key: str) -> None:
    (reply,) = await exchange(port, auth(key), pause=0.0005)
    assert status(reply) == 200


async def test_connection_close_is_honoured(port: int, key: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(auth(key, extra="Connection: close\r\n") + auth(key))
    data = await asyncio.wait_for(reader.read(), 5)  # returns at EOF: the server closed
    writer.close()
    assert data.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in data


async def test_other_paths_go_to_aiohttp(port: int) -> None:
    (reply,) = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n")
    assert status(reply) == 200 and served_by_aiohttp(reply) and b'"ok"' in reply


async def test_a_connection_handed_over_keeps_serving_auth(port: int, key: str) -> None:
    data = b"GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n" + auth(key) + auth(None)
    replies = await exchange(port, data, replies=3)
    assert [status(r) for r in replies] == [200, 200, 401]
    assert all(served_by_aiohttp(r) for r in replies)
    assert UPSTREAM_SECRET.encode() in replies[1]


HOSTILE = {
    "obs-fold": auth(None, extra=f"X-Api-Key: x\r\n  {'k'}\r\n"),
    "bare LF": b"GET /auth/nginx HTTP/1.1\nHost: k\nX-Original-URI: /v1/chat/x\n\n",
    "LF inside a line": auth(None, extra="X-A: 1\nAuthorization: Bearer x\r\n"),
    "CR inside a line": auth(None, extra="X-A: 1\rAuthorization: Bearer x\r\n"),
    "space before colon": auth(None, extra="Authorization : Bearer x\r\n"),
    "no Host": b"GET /auth/nginx HTTP/1.1\r\nX-Original-URI: /v1/chat/x\r\n\r\n",
    "two Hosts": auth(None, extra="Host: other\r\n"),
    "lower-case method": b"get /auth/nginx HTTP/1.1\r\nHost: k\r\n\r\n",
    "huge head": auth(None, extra="X-Pad: " + "a" * 9000 + "\r\n"),
    "NUL": auth(None, extra="X-A: a\x00b\r\n"),
    "SOH": auth(None, extra="X-A: a\x01b\r\n"),
    "DEL": auth(None, extra="X-A: a\x7fb\r\n"),
    "two Content-Lengths": auth(None, extra="Content-Length: 0\r\nContent-Length: 0\r\n"),
}


@pytest.mark.parametrize("name", HOSTILE)
async def test_odd_auth_requests_get_a_plain_denial(port: int, name: str) -> None:
    (reply,) = await exchange(port, HOSTILE[name])
    assert status(reply) == 403 and not served_by_aiohttp(reply), reply
    assert b"X-Keystile-Detail: malformed_request" in reply
    assert UPSTREAM_SECRET.encode() not in reply


ODD_BUT_READABLE = {
    "non-ASCII": auth(None, extra="X-Name: caf\u00e9\r\n"),
    "HTTP/1.0": b"GET /auth/nginx HTTP/1.0\r\nHost: k\r\n\r\n",
}


@pytest.mark.parametrize("name", ODD_BUT_READABLE)
async def test_odd_but_readable_auth_requests_are_judged(port: int, name: str) -> None:
    (reply,) = await exchange(port, ODD_BUT_READABLE[name])
    assert status(reply) in (401, 403) and not served_by_aiohttp(reply), reply


async def test_absolute_form_goes_to_aiohttp(port: int) -> None:
    (reply,) = await exchange(port, b"GET http://k/auth/nginx HTTP/1.1\r\nHost: k\r\n\r\n")
    assert served_by_aiohttp(reply) and status(reply) in (403, 404)


async def test_a_key_in_a_malformed_header_is_never_echoed_or_logged(
    port: int, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    for path in (b"/auth/nginx", b"/api/v1/keys"):
        data = b"GET %s HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer %s\x01\r\n\r\n" % (
            path,
            key.encode(),
        )
        (reply,) = await exchange(port, data)
        assert status(reply) in (400, 403) and key.encode() not in reply
    assert key not in caplog.text


async def test_a_body_cannot_smuggle_a_second_request(port: int, key: str) -> None:
    smuggled = auth(key)
    head = auth(None, extra=f"Content-Length: {len(smuggled)}\r\n")
    # then a request of its own that ends the connection: its answer comes after any
    # the smuggled one could get, and the server closing it marks the end
    last = auth(None, "/v1/last", extra="Connection: close\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + smuggled + last)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)  # returns at EOF: the server closed
    writer.close()
    # the first request's refusal and the last one's (or none: the connection closed
    # after the first); never an answer to the smuggled one
    answers = [int(reply[:3]) for reply in data.split(b"HTTP/1.1 ")[1:]]
    assert answers in ([401, 401], [401]), data
    assert UPSTREAM_SECRET.encode() not in data


async def test_chunked_bodies_are_aiohttp_s(port: int, key: str) -> None:
    body = auth(key)
    data = auth(None, extra="Transfer-Encoding: chunked\r\n") + b"%x\r\n%s\r\n0\r\n\r\n" % (
        len(body),
        body,
    )
    (reply,) = await exchange(port, data)
    assert served_by_aiohttp(reply) and status(reply) == 401


async def test_content_length_zero_stays_on_the_wire(port: int, key: str) -> None:
    (reply,) = await exchange(port, auth(key, extra="Content-Length: 0\r\n"))
    assert status(reply) == 200 and not served_by_aiohttp(reply)


async def test_idle_and_half_sent_connections_are_closed(port: int, key: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(auth(key))
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.write(b"GET /auth/nginx HTTP/1.1\r\nHost: k\r\n")  # and nothing more
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()


async def test_head_gets_no_body_and_the_connection_stays_in_step(port: int, key: str) -> None:
    head = b"HEAD" + auth(None)[3:]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + auth(key))
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert status(first) == 401 and b"Content-Length: " in first
    second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert second.startswith(b"HTTP/1.1 200 "), second  # no stray body between them
    writer.close()


async def test_a_peer_that_never_reads_holds_bounded_memory(
    served: tuple[int, AuthListener], key: str
) -> None:
    port, listener = served
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    _reader, writer = await asyncio.open_connection(sock=sock)
    batch, sent = auth(key) * 200, 0
    with contextlib.suppress(TimeoutError):
        while sent < 16 * 1024 * 1024:  # stops once keystile stops reading
            writer.write(batch)
            await asyncio.wait_for(writer.drain(), 1.0)
            sent += len(batch)

    def stopped_reading() -> bool:  # what bounds its memory: keystile reads no further
        return [c.read_paused for c in listener.connections] == [True]

    await wait_until_async(stopped_reading, what="keystile to stop reading the connection")
    (connection,) = listener.connections
    assert connection.transport is not None
    unsent = connection.transport.get_write_buffer_size()
    assert unsent < 512 * 1024, f"{unsent} bytes of replies queued for a peer that never reads"
    assert len(connection.buffer) <= wire.MAX_PENDING + 512 * 1024
    assert sent < 8 * 1024 * 1024  # it stopped reading long before all was sent
    writer.transport.abort()
    await asyncio.sleep(0)


async def test_an_internal_fault_is_the_same_503_on_both_servers(
    port: int, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: object, facts: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Authorizer, "authorize", broken)
    (fast,) = await exchange(port, auth(key))
    _, slow = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n" + auth(key),
                             replies=2)  # fmt: skip
    assert served_by_aiohttp(slow) and not served_by_aiohttp(fast)
    for reply in (fast, slow):
        assert status(reply) == 503, reply
        assert b"X-Keystile-Detail: internal_error" in reply and key.encode() not in reply
    assert fast.partition(b"\r\n\r\n")[2] == slow.partition(b"\r\n\r\n")[2]
