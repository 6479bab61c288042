"""The main listener: auth requests answered straight off the socket, the rest to aiohttp.

Behind a proxy nearly every request keystile sees is the same small thing: an
HTTP/1.1 request to an auth endpoint, a dozen header lines, no body, on a
kept-alive connection. This listener frames each request head at its blank
line, parses it with httptools (llhttp, the C parser aiohttp itself uses),
runs the one request path (:meth:`keystile.gate.Gate.answer`) on the spot, and
writes replies as bytes built once per allow (kept on the key's cache entry)
and once per denial reason.

- Not an auth request (another path, a body, an upgrade): the connection and
  every byte not yet consumed go to aiohttp, which serves it to the end.
- An auth request llhttp refuses (a control byte in a header, a bare LF, a
  duplicate Content-Length, ...): a normal denial (``malformed_request``),
  then the connection is closed. Nothing of the request is logged or echoed.
- HEAD gets the head of the reply and no body.
- Backpressure: while the peer does not read (the transport's write buffer is
  over its high-water mark) or a request waits for the store, no request is
  parsed and reading stops once ``MAX_PENDING`` bytes are buffered; at most
  ``MAX_BATCH`` pipelined requests are answered before other connections get
  the loop. Memory per connection is bounded by those, and ``MAX_CONNECTIONS``
  bounds the listener.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from typing import Any

import httptools
from multidict import CIMultiDict

from keystile.core import reasons
from keystile.core.decide import Decision, refusal
from keystile.observe.metrics import Metrics
from keystile.serve.adapters.base import Inbound, Reply, rate_headers
from keystile.serve.cache import Entry
from keystile.serve.eager import run_eagerly
from keystile.serve.gate import Answer, Gate

MAX_HEAD = 8190  # bytes of request line and headers (aiohttp's line limit)
MAX_PENDING = 65536  # bytes read ahead while a request waits or the peer does not read
MAX_BATCH = 64  # pipelined requests answered in one go before yielding the loop
MAX_CONNECTIONS = 4096  # open connections; more are closed at once
IDLE_TIMEOUT = 60  # seconds: a connection without a request for 1-2 of these is closed

log = logging.getLogger("keystile.wire")

_CLOSE = b"Connection: close\r\n"
_AUTH = b"/auth/"
# bytes no header line may hold (HTAB is allowed); checked before aiohttp sees a head
_CONTROL = bytes(range(0x20)).replace(b"\t", b"").replace(b"\r", b"").replace(b"\n", b"") + b"\x7f"
_BAD_BODY = (
    b'{"error":{"message":"Malformed request.","type":"invalid_request_error",'
    b'"code":"bad_request"}}'
)
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BAD_BODY), _BAD_BODY)
)


def encode_head(reply: Reply) -> bytes:
    """Status line and headers, each line ending in CRLF; Content-Length is the last."""
    lines = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
    for name, value in reply.headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} cannot be sent as it is")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(reply.body)}\r\n")
    return "\r\n".join(lines).encode()


class Endpoints:
    """Which gate serves a request target: exact paths, then prefixes (aiohttp syntax in)."""

    def __init__(self, gates: Iterable[Gate]) -> None:
        self.exact: dict[str, Gate] = {}
        self.prefixes: list[tuple[str, Gate]] = []
        for gate in gates:
            path = gate.adapter.path
            if "{" in path:
                self.prefixes.append((path[: path.index("{")], gate))
            else:
                self.exact[path] = gate

    def find(self, target: str) -> Gate | None:
        path = target.partition("?")[0]
        gate = self.exact.get(path)
        if gate is not None:
            return gate
        for prefix, candidate in self.prefixes:
            if path.startswith(prefix):
                return candidate
        return None


class AuthListener:
    """The main listener's protocol factory, its connections and their upkeep."""

    def __init__(
        self,
        gates: Iterable[Gate],
        fallback: Callable[[], asyncio.Protocol],
        metrics: Metrics | None,  # None: hand-overs are not counted (the admin listener)
        idle_timeout: int = IDLE_TIMEOUT,
    ) -> None:
        self.endpoints = Endpoints(gates)
        self.metrics = metrics
        self.idle_timeout = idle_timeout
        self.fallback = fallback  # aiohttp's protocol factory
        self.connections: set[AuthProtocol] = set()
        self.tasks: set[asyncio.Future[Answer]] = set()
        self.denials: dict[tuple[str, reasons.Reason], tuple[bytes, bytes]] = {}
        self.date = b""
        self.draining = False  # shutting down: answer what is in flight, take nothing new
        self._ticker: asyncio.TimerHandle | None = None
        self._ticks = 0
        self._tick()

    def __call__(self) -> AuthProtocol:
        return AuthProtocol(self)

    def encoded(self, gate: Gate, decision: Decision, entry: Entry | None) -> tuple[bytes, bytes]:
        """(head, body) of the reply, the head without Date and the blank line.

        An allow's head is built once per key, adapter and route, and kept on the
        key's cache entry (freed with it); a denial's once per adapter and reason
        (a denial never carries a key's data). Only rate-limit figures are
        written per request."""
        reason = decision.reason
        record = decision.record
        if (reason is None and record is not None and entry is not None and decision.cookie is None
                and decision.reservation is None):  # fmt: skip
            name, route = gate.adapter.name, decision.route
            head = entry.reply(name, route)
            if head is None:
                reply = gate.render(decision, gate.rules.grant(record, route))
                if reply.body:  # no dialect sends a body with an allow; never kept if one did
                    return encode_head(reply), reply.body
                head = encode_head(reply)
                entry.keep(name, route, head)
            if decision.rate is None:
                return head, b""
            figures = "".join([f"{name}: {value}\r\n" for name, value in rate_headers(decision)])
            return head + figures.encode(), b""
        if (reason is None or decision.rate is not None or decision.retry_after is not None
                or decision.location is not None):  # fmt: skip
            reply = gate.reply(decision)
            return encode_head(reply), reply.body
        denial = self.denials.get((gate.adapter.name, reason))
        if denial is None:
            reply = gate.reply(decision)
            denial = self.denials[(gate.adapter.name, reason)] = (encode_head(reply), reply.body)
        return denial

    def _tick(self) -> None:
        """Every second: the Date header; every idle_timeout: close idle connections."""
        self.date = f"Date: {formatdate(usegmt=True)}\r\n".encode()
        self._ticks += 1
        if self._ticks % self.idle_timeout == 0:
            for connection in list(self.connections):
                connection.sweep()
        self._ticker = asyncio.get_running_loop().call_later(1.0, self._tick)

    async def close(self, grace: float) -> None:
        """Stop deciding: no request not yet started is taken (idle connections close
        at once, busy ones after their answer); requests in flight finish (up to
        ``grace`` s); then the rest close. So the usage flush that follows counts
        every request a client was answered."""
        if self._ticker is not None:
            self._ticker.cancel()
        self.draining = True
        for connection in list(self.connections):
            if not connection.waiting:
                connection.close()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace)
        for connection in list(self.connections):
            connection.close()


class AuthProtocol(asyncio.Protocol):
    """One connection: requests answered in order, one at a time."""

    def __init__(self, listener: AuthListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.buffer = b""
        self.parser: Any = None  # httptools.HttpRequestParser, made at the first request
        self.waiting = False  # a request waits for the store; later ones queue
        self.write_paused = False  # the peer does not read: answer nothing more
        self.read_paused = False
        self.scheduled = False  # process() is queued on the loop (after a full batch)
        self.closing = False
        self.requests = 0
        self.swept_at = 0
        # the request being parsed
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._complete = False
        self._keep_alive = True
        self._method = b""

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.listener.draining or len(self.listener.connections) >= MAX_CONNECTIONS:
            if not self.listener.draining:
                log.warning("over %d connections: one closed at once", MAX_CONNECTIONS)
            transport.close()
            return
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if isinstance(peername, tuple) else None
        self.listener.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        self.transport = None
        self.buffer = b""

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.process()

    def data_received(self, data: bytes) -> None:
        if self.listener.draining:
            return  # shutting down: nothing new is decided
        self.buffer = self.buffer + data if self.buffer else data
        if self.waiting or self.write_paused or self.scheduled:
            self._hold()
            return
        self.process()

    # -- httptools callbacks

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        # read here: llhttp resets both once the message is complete
        self._keep_alive = self.parser.should_keep_alive()
        self._method = self.parser.get_method()

    def on_message_complete(self) -> None:
        self._complete = True

    # -- serving

    def _hold(self) -> None:
        """Stop reading once enough is buffered while nothing can be answered."""
        if len(self.buffer) > MAX_PENDING and not self.read_paused and self.transport is not None:
            self.transport.pause_reading()
            self.read_paused = True

    def process(self) -> None:
        """Answer the buffered requests, in order, until one waits or the peer stops reading."""
        self.scheduled = False
        served = 0
        while self.buffer and not (self.closing or self.waiting or self.write_paused):
            if served == MAX_BATCH:  # let other connections have the loop
                self.scheduled = True
                asyncio.get_running_loop().call_soon(self.process)
                break
            if not self.next_request():
                break
            served += 1
        if self.read_paused and len(self.buffer) <= MAX_PENDING and self.transport is not None:
            if not (self.waiting or self.write_paused):
                self.read_paused = False
                self.transport.resume_reading()
        elif not self.closing:
            self._hold()

    def next_request(self) -> bool:
        """Parse and answer the first buffered request; False when nothing more can be done."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
        line_end = buffer.find(b"\r\n", 0, MAX_HEAD)
        line = buffer[: line_end if line_end >= 0 else MAX_HEAD]
        target = line.split(b" ", 2)[1] if line.count(b" ") >= 2 else b""
        gate = self.listener.endpoints.find(target.decode("latin-1")) if target.startswith(
            _AUTH) else None  # fmt: skip
        if end < 0:  # incomplete, too long, or ended by bare LFs
            if len(buffer) > MAX_HEAD + 3 or buffer.count(b"\n") != buffer.count(b"\r\n"):
                if gate is None:
                    self.hand_over()  # aiohttp answers 431
                else:
                    self.malformed(gate)
            return False
        if gate is None:
            self.hand_over()
            return False
        head = buffer[: end + 4]
        try:
            self.parse(head)
        except httptools.HttpParserUpgrade:
            self.hand_over()
            return False
        except httptools.HttpParserError:
            self.malformed(gate)
            return False
        if not self._complete:  # a body follows: aiohttp's
            self.hand_over()
            return False
        self.buffer = buffer[end + 4 :]
        headers = CIMultiDict(self._headers)
        hosts = headers.getall("Host", ())
        if len(hosts) != 1:
            self.malformed(gate)
            return False
        self.requests += 1
        method = self._method.decode("ascii")
        close = not self._keep_alive
        inbound = Inbound(method, self._url.decode("latin-1"), hosts[0], headers, self.peer)
        answer = run_eagerly(gate.answer(inbound))
        head_only = method == "HEAD"
        if isinstance(answer, asyncio.Future):
            self.waiting = True
            self.listener.tasks.add(answer)
            answer.add_done_callback(partial(self.answered, gate, head_only, close))
            return False
        self.reply(gate, answer, head_only, close)
        return True

    def parse(self, head: bytes) -> None:
        """Feed one request head to llhttp; raises its errors."""
        self._url = b""
        self._headers = []
        self._complete = False
        if self.parser is None:
            self.parser = httptools.HttpRequestParser(self)
        self.parser.feed_data(head)

    def answered(
        self, gate: Gate, head_only: bool, close: bool, task: asyncio.Future[Answer]
    ) -> None:
        """A request that waited for the store is decided; go on with the next ones."""
        self.listener.tasks.discard(task)
        self.waiting = False
        if self.transport is None or task.cancelled():
            return
        self.reply(gate, task.result(), head_only, close)  # Gate.answer never raises
        if self.listener.draining:
            self.close()
            return
        self.process()

    def reply(self, gate: Gate, answer: Answer, head_only: bool, close: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        decision, entry = answer
        try:
            head, body = self.listener.encoded(gate, decision, entry)
        except Exception:
            log.exception("auth reply failed; refused (503)")
            head, body = self.listener.encoded(gate, refusal(reasons.INTERNAL_ERROR), None)
        if head_only:
            body = b""
        if close:
            transport.write(b"".join((head, self.listener.date, _CLOSE, b"\r\n", body)))
            self.close()
        else:
            transport.write(b"".join((head, self.listener.date, b"\r\n", body)))

    def malformed(self, gate: Gate | None) -> None:
        """A request llhttp refuses: a denial for an auth endpoint, else a bare 400.
        Nothing of it is logged or echoed (a header may hold a key); then close."""
        transport = self.transport
        if transport is None:
            return
        if gate is None:
            transport.write(_BAD_REQUEST)
        else:
            decision = refusal(reasons.MALFORMED_REQUEST)
            gate.observe(decision, 0.0)
            head, body = self.listener.encoded(gate, decision, None)
            transport.write(b"".join((head, self.listener.date, _CLOSE, b"\r\n", body)))
        self.close()

    def hand_over(self) -> None:
        """From now on aiohttp serves this connection, starting with the unread bytes.

        A head with a control byte never reaches aiohttp: it would log the whole
        offending line (which may hold a key) and echo it in its 400 body."""
        transport = self.transport
        if transport is None:
            return
        buffer = self.buffer
        head = buffer[: buffer.find(b"\r\n\r\n")] if b"\r\n\r\n" in buffer else buffer
        if head.translate(None, _CONTROL) != head:
            self.malformed(None)
            return
        self.listener.connections.discard(self)
        if self.listener.metrics is not None:
            self.listener.metrics.handovers += 1
        self.transport = None
        self.buffer = b""
        if self.read_paused:
            transport.resume_reading()
        protocol = self.listener.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if buffer:
            protocol.data_received(buffer)

    def sweep(self) -> None:
        """Called every idle_timeout: close if no request arrived since the last call."""
        if self.requests == self.swept_at and not self.waiting:
            self.close()
        self.swept_at = self.requests

    def close(self) -> None:
        self.closing = True
        self.buffer = b""
        if self.transport is not None:
            self.transport.close()
