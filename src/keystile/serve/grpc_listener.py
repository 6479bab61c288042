"""The gRPC listener (``server.grpc_listen``): Envoy's ext_authz ``Check`` and the
gRPC health service, on grpcio's asyncio server in the process's event loop.

    grpcio (HTTP/2, CheckRequest parsed) -> adapters.envoy_grpc.facts -> Judge
    (the same path as the HTTP dialects) -> adapters.envoy_grpc.render -> bytes

Replies are handed to grpcio serialized: an allow's once per key and route
(kept on the key's cache entry, like the HTTP listener's heads), a denial's
once per reason; only answers with rate-limit figures or a Retry-After are
built per request. Imported only when the listener is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any, Protocol

import grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from grpc_health.v1 import health_pb2_grpc

from keystile.core import reasons
from keystile.core.clientip import TrustedProxies
from keystile.core.decide import Decision, Grant, refusal
from keystile.core.errors import ConfigError
from keystile.serve import ports
from keystile.serve.adapters import envoy_grpc
from keystile.serve.adapters.base import rate_headers
from keystile.serve.cache import Entry
from keystile.serve.gate import Judge, failed
from keystile.serve.health import NOT_SERVING, SERVING, Health

SERVICE = "envoy.service.auth.v3.Authorization"
ALLOWED = Decision(None)  # an allow without rate-limit figures: what is kept per key
HEALTH_INTERVAL = 1.0  # seconds between readiness checks behind the health service
log = logging.getLogger("keystile.grpc")


@lru_cache(maxsize=4096)  # Envoy connects from a few addresses, again and again
def peer_address(peer: str) -> str | None:
    """The address in grpcio's ``context.peer()`` (``ipv4:127.0.0.1:5000``,
    ``ipv6:%5B::1%5D:5000``), without the port; None for anything else."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        rest = rest.replace("%5B", "[").replace("%5D", "]")
        return rest.rpartition(":")[0].strip("[]") or None
    return None


class CheckService:
    """``Authorization/Check``: one CheckRequest in, a serialized CheckResponse out."""

    def __init__(self, judge: Judge, trusted: TrustedProxies) -> None:
        self.judge = judge
        self.trusted = trusted
        self.rules = judge.rules
        self.denials: dict[reasons.Reason, bytes] = {}
        self.pieces: dict[str, tuple[Any, Any]] = {}  # header name -> (message, its HeaderValue)

    async def check(
        self, request: CheckRequest, context: grpc.aio.ServicerContext[CheckRequest, bytes]
    ) -> bytes:
        try:
            facts = envoy_grpc.facts(request, peer_address(context.peer()), self.trusted)
        except Exception as exc:  # a fault of ours: the same 503 as everywhere
            decision, entry = self.judge.book(failed(exc), None, time.perf_counter())
        else:
            decision, entry = await self.judge.judge(facts)
        try:
            return self.encoded(decision, entry)
        except Exception:
            log.exception("auth reply failed; refused (503)")
            return self.encoded(refusal(reasons.INTERNAL_ERROR), None)

    def encoded(self, decision: Decision, entry: Entry | None) -> bytes:
        reason, record = decision.reason, decision.record
        if reason is None and record is not None:
            route = decision.route
            if entry is None or decision.cookie is not None or decision.reservation is not None:
                return serialized(decision, self.rules.grant(record, route, decision.reservation))
            kept: bytes | None = entry.reply(envoy_grpc.NAME, route)
            if kept is None:
                kept = serialized(ALLOWED, self.rules.grant(record, route))
                entry.keep(envoy_grpc.NAME, route, kept)
            if decision.rate is None:
                return kept
            # protobuf merges concatenated messages: each piece adds its header to the
            # kept answer's response_headers_to_add (a whole render costs ~10x more)
            return kept + b"".join([self.client_header(*pair) for pair in rate_headers(decision)])
        if (reason is None or decision.rate is not None or decision.retry_after is not None
                or decision.location is not None):  # fmt: skip
            return serialized(decision, None)
        denial = self.denials.get(reason)
        if denial is None:
            denial = self.denials[reason] = serialized(decision, None)
        return denial

    def client_header(self, name: str, value: str) -> bytes:
        """An OK answer that only adds one header to the client's response, serialized.

        One message per header name, its value set and serialized again (~1 us;
        building one is ~10x that): the figures change with every request, and
        nothing awaits between setting and serializing."""
        piece = self.pieces.get(name)
        if piece is None:
            message = envoy_grpc.to_client(((name, ""),))
            piece = self.pieces[name] = (
                message,
                message.ok_response.response_headers_to_add[0].header,
            )
        message, header = piece
        header.value = value
        data: bytes = message.SerializeToString()
        return data


def serialized(decision: Decision, grant: Grant | None) -> bytes:
    data: bytes = envoy_grpc.render(decision, grant).SerializeToString()
    return data


class Closing(Protocol):
    async def close(self, grace: float) -> None: ...


class GrpcListener:
    """The server, its health service and the task that keeps that health current;
    ``companions``: other services on the same server, closed after it stops."""

    def __init__(
        self, service: CheckService, ready: Callable[[], Awaitable[bool]], reuse_port: bool
    ) -> None:
        # Off unless workers share the port: grpcio sets SO_REUSEPORT by default, so
        # a second keystile would bind the same port silently and take half the checks.
        self.reuse_port = reuse_port
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", int(reuse_port))])
        check: grpc.RpcMethodHandler[CheckRequest, bytes] = grpc.unary_unary_rpc_method_handler(
            service.check, request_deserializer=CheckRequest.FromString
        )  # no response_serializer: check returns bytes
        # registered: grpcio finds the handler in C, not by asking each generic handler
        self.server.add_registered_method_handlers(SERVICE, {"Check": check})
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Check": check}),)
        )
        self.health = Health([SERVICE])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.ready = ready
        self.tending: asyncio.Task[None] | None = None
        self.companions: list[Closing] = []

    async def start(self, address: tuple[str, int], setting: str = "grpc_listen") -> None:
        host, port = address
        if not self.reuse_port:  # a clear error, before grpcio logs its own
            ports.claim([(setting, address)])
        try:
            self.server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        except RuntimeError:
            why = ports.why_taken(host, port) or "grpcio could not bind it"
            raise ConfigError(f"{setting} {host}:{port}: {why}") from None
        self.health.set(await self._status())  # right from the first health check
        await self.server.start()
        self.tending = asyncio.create_task(self._tend())

    async def _status(self) -> int:
        """SERVING while the store answers and the cache is in step (what /readyz says)."""
        try:
            return SERVING if await self.ready() else NOT_SERVING
        except Exception:  # never a stale SERVING because the check itself broke
            log.exception("readiness check failed; health NOT_SERVING")
            return NOT_SERVING

    async def _tend(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            self.health.set(await self._status())

    async def close(self, grace: float) -> None:
        """Health NOT_SERVING (watchers told, their streams ended); no new calls;
        calls in flight get ``grace`` seconds to finish."""
        if self.tending is not None:
            self.tending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.tending
        await self.health.shutdown(min(grace, 1.0))
        await self.server.stop(grace)
        for companion in self.companions:
            await companion.close(grace)
