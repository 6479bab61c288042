"""Auth requests answered straight off the socket; everything else goes to aiohttp.

Behind a proxy nearly every request keystile sees is the same small thing: an
HTTP/1.1 request to an auth endpoint, a dozen ASCII header lines, no body, on a
kept-alive connection. aiohttp spends more on such a request (request and
response objects, router, header checks) than keystile spends deciding it, so
the main listener parses these itself and writes replies as bytes, built once
per allow and per denial reason.

It is strict, not general. At the first request that is anything else (another
path, another HTTP version, a body, Transfer-Encoding, Expect or Upgrade,
non-ASCII bytes, a folded or malformed header line, no Host or two, a head over
8 KiB) the connection, with every byte not yet consumed, goes to aiohttp, which
serves it to the end with its full parser and its error answers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus

from multidict import CIMultiDict

from keystile import reasons
from keystile.adapters.base import Inbound, Reply, rate_headers
from keystile.decide import Decision, Facts, refusal
from keystile.gate import Gate
from keystile.metrics import Metrics
from keystile.reasons import Reason
from keystile.store import Unknown

MAX_HEAD = 8190  # bytes of request line and headers (aiohttp's line limit)
MAX_PENDING = 65536  # bytes read ahead while a request waits for the store
IDLE_TIMEOUT = 60  # seconds: a connection without a request for 1-2 of these is closed

log = logging.getLogger("keystile.wire")

_REQUEST_LINE = re.compile(r"([A-Z]{1,20}) (/auth/[!-~]*) HTTP/1\.1")
# one whole header line: token, colon, value without surrounding blanks, CRLF
_FIELD = re.compile(
    r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*((?:[!-~](?:[\t -~]*[!-~])?)?)[ \t]*\r\n", re.M
)
_CLOSE = b"Connection: close\r\n"


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
        metrics: Metrics,
        idle_timeout: int = IDLE_TIMEOUT,
    ) -> None:
        self.endpoints = Endpoints(gates)
        self.metrics = metrics
        self.idle_timeout = idle_timeout
        self.fallback = fallback  # aiohttp's protocol factory
        self.connections: set[AuthProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.denials: dict[tuple[str, Reason], tuple[bytes, bytes]] = {}
        self.date = b""
        self._ticker: asyncio.TimerHandle | None = None
        self._ticks = 0
        self._tick()

    def __call__(self) -> AuthProtocol:
        return AuthProtocol(self)

    def parse(self, head: bytes, peer: str | None) -> tuple[Gate, Inbound, bool] | None:
        """(gate, request, close after) for a request served here, None for aiohttp's.

        ``head`` is the request line and header lines, each ending in CRLF."""
        if not head.isascii():
            return None
        text = head.decode("ascii")
        line_end = text.find("\r\n")
        line = _REQUEST_LINE.fullmatch(text, 0, line_end)
        if line is None:
            return None
        method, target = line.group(1, 2)
        gate = self.endpoints.find(target)
        if gate is None:
            return None
        fields = text[line_end + 2 :]
        pairs = _FIELD.findall(fields)
        lines = len(pairs)
        if not lines == fields.count("\r\n") == fields.count("\n") == fields.count("\r"):
            return None  # a line that is not a plain header line, or a stray CR or LF
        headers = CIMultiDict(pairs)
        hosts = headers.getall("Host", ())
        if len(hosts) != 1 or "Transfer-Encoding" in headers or "Expect" in headers:
            return None
        if "Content-Length" in headers and headers.getall("Content-Length") != ["0"]:
            return None
        close = False
        if "Connection" in headers or "Upgrade" in headers:
            tokens = {
                t.strip().lower() for v in headers.getall("Connection", ()) for t in v.split(",")
            }
            if "upgrade" in tokens or "Upgrade" in headers:
                return None
            close = "close" in tokens
        return gate, Inbound(method, target, hosts[0], headers, peer), close

    def encoded(self, gate: Gate, decision: Decision) -> tuple[bytes, bytes]:
        """(head, body) of the reply, the head without Date and the blank line.

        An allow's head is built once per record, route and adapter (and kept on
        the record), a denial's once per reason: the promise of
        :class:`~keystile.adapters.base.Adapter`. Only a rate limit's figures are
        written per request."""
        reason = decision.reason
        record = decision.record
        if reason is None and record is not None:
            memo_key = (gate.adapter.name, decision.route)
            hit = record.memo.get(memo_key)
            if hit is None:
                reply = gate.render(decision)
                hit = record.memo[memo_key] = (encode_head(reply), reply.body)
            if decision.rate is None:
                return hit
            figures = "".join([f"{name}: {value}\r\n" for name, value in rate_headers(decision)])
            return hit[0] + figures.encode(), hit[1]
        if reason is None or decision.rate is not None or decision.retry_after is not None:
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
        """Stop the upkeep; finish requests in flight (up to ``grace`` s); close the rest."""
        if self._ticker is not None:
            self._ticker.cancel()
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
        self.waiting = False  # a request is waiting for the store; later ones queue
        self.closing = False
        self.requests = 0
        self.swept_at = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if isinstance(peername, tuple) else None
        self.listener.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        self.transport = None
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        if self.waiting:
            if len(self.buffer) > MAX_PENDING and self.transport is not None:
                self.transport.pause_reading()
            return
        self.process()

    def process(self) -> None:
        listener = self.listener
        while self.buffer and not self.closing:
            buffer = self.buffer
            end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
            if end < 0:  # incomplete, or not ours: too long, or a bare LF (aiohttp decides)
                if len(buffer) > MAX_HEAD + 3 or buffer.count(b"\n") != buffer.count(b"\r\n"):
                    self.hand_over()
                return
            parsed = listener.parse(buffer[: end + 2], self.peer)
            if parsed is None:
                self.hand_over()
                return
            gate, request, close = parsed
            self.buffer = buffer[end + 4 :]
            self.requests += 1
            started = time.perf_counter()
            facts: Facts | None = None
            try:
                facts = gate.facts(request, gate.trusted)
                decision = gate.decider.decide_now(facts)
            except Exception:
                log.exception("auth request failed; answered 503")
                decision = refusal(reasons.UNAVAILABLE)
            if isinstance(decision, Unknown):
                assert facts is not None
                self.waiting = True
                task = asyncio.get_running_loop().create_task(
                    self.later(gate, facts, started, close)
                )
                listener.tasks.add(task)
                task.add_done_callback(listener.tasks.discard)
                return
            if facts is not None:
                gate.done(facts, decision, started)
            self.reply(gate, decision, close)

    async def later(self, gate: Gate, facts: Facts, started: float, close: bool) -> None:
        """A request that needs the store; the connection's next requests wait for it."""
        try:
            decision = await gate.decider.decide(facts)
        except Exception:
            log.exception("auth request failed; answered 503")
            decision = refusal(reasons.UNAVAILABLE)
        gate.done(facts, decision, started)
        self.waiting = False
        if self.transport is None:
            return
        self.reply(gate, decision, close)
        if not self.closing:
            self.transport.resume_reading()
            self.process()

    def reply(self, gate: Gate, decision: Decision, close: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        try:
            head, body = self.listener.encoded(gate, decision)
        except Exception:
            log.exception("auth reply failed; answered 503")
            head, body = self.listener.encoded(gate, refusal(reasons.UNAVAILABLE))
        if close:
            transport.write(head + self.listener.date + _CLOSE + b"\r\n" + body)
            self.close()
        else:
            transport.write(head + self.listener.date + b"\r\n" + body)

    def hand_over(self) -> None:
        """From now on aiohttp serves this connection, starting with the unread bytes."""
        transport = self.transport
        if transport is None:
            return
        self.listener.connections.discard(self)
        self.listener.metrics.handovers += 1
        self.transport = None
        buffer, self.buffer = self.buffer, b""
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
        if self.transport is not None:
            self.transport.close()
