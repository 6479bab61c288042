"""Envoy's usage: the gRPC access-log service (ALS) on keystile's gRPC listener.

The shipped Envoy configs log, through ``envoy.access_loggers.http_grpc``, each
request that carried a reservation, with ``x-keystile-reservation`` among the
logged request headers (ext_authz put it there) and the upstream's token count
among the logged response headers (``usage.tokens_header``). Envoy streams them
to ``envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs``: one
long-lived stream per Envoy worker, batches of HTTPAccessLogEntry.

A stream from a peer outside ``auth.trusted_proxies`` is refused, as its checks
would be: anyone else could report any figure. Entries that are not what the
shipped config writes are counted and skipped, never logged one by one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.service.accesslog.v3.als_pb2 import StreamAccessLogsMessage, StreamAccessLogsResponse

from keystile.core.clientip import TrustedProxies
from keystile.core.decide import RESERVATION_HEADER
from keystile.serve.intake import Intake, Report, usage

SERVICE = "envoy.service.accesslog.v3.AccessLogService"
DEFAULT_TOKENS_HEADER = "x-usage-total-tokens"
EMPTY = StreamAccessLogsResponse()


def entry_usage(entry: Any, tokens_header: str) -> tuple[str, int] | None:
    """(reservation, tokens) of one HTTPAccessLogEntry; None when it reports
    nothing (no reservation, no count); Malformed otherwise."""
    reservation = entry.request.request_headers.get(RESERVATION_HEADER, "")
    tokens = entry.response.response_headers.get(tokens_header, "")
    return usage(reservation, tokens)


class AccessLogService:
    """``StreamAccessLogs``: a client stream of batches in, an empty answer at its end."""

    def __init__(
        self,
        report: Report,
        trusted: TrustedProxies,
        peer_address: Callable[[str], str | None],
        tokens_header: str = DEFAULT_TOKENS_HEADER,
    ) -> None:
        self.intake = Intake(report, "accesslog")
        self.tally = self.intake.tally
        self.trusted = trusted
        self.peer_address = peer_address
        self.tokens_header = tokens_header.lower()  # Envoy logs header names lower-cased

    async def stream(
        self,
        messages: AsyncIterator[Any],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Any:
        peer = self.peer_address(context.peer())
        if peer is None or not self.trusted.trusts(peer):
            self.tally.note("untrusted")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "untrusted peer")
        async for message in messages:
            for entry in message.http_logs.log_entry:
                self.take(entry)
        return EMPTY

    def take(self, entry: Any) -> None:
        self.intake.offer(lambda: entry_usage(entry, self.tokens_header))

    def add_to(self, server: grpc.aio.Server) -> None:
        handler: grpc.RpcMethodHandler[Any, Any] = grpc.stream_unary_rpc_method_handler(
            self.stream,
            request_deserializer=StreamAccessLogsMessage.FromString,
            response_serializer=StreamAccessLogsResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"StreamAccessLogs": handler}),)
        )

    async def close(self, grace: float) -> None:
        await self.intake.close(grace)
