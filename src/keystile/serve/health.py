"""The gRPC health service (``grpc.health.v1.Health``) of the gRPC listener.

One status for every service it knows (``""`` and the ext_authz service):
SERVING while the auth path can answer, NOT_SERVING otherwise, and for good
once the listener drains at shutdown. Written here rather than taken from
grpcio-health-checking because that servicer's ``Watch`` streams never end: each
open one held keystile's shutdown for the whole grace period. Here a watcher is
told NOT_SERVING and its stream ends, so the server stops as soon as the checks
in flight are answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

SERVING = HealthCheckResponse.SERVING
NOT_SERVING = HealthCheckResponse.NOT_SERVING
UNKNOWN = HealthCheckResponse.SERVICE_UNKNOWN


class Health(health_pb2_grpc.HealthServicer):
    def __init__(self, services: Iterable[str]) -> None:
        self.services = frozenset(("", *services))
        self.status: Any = NOT_SERVING  # until the listener has asked once
        self.final = False
        self._changed = asyncio.Event()  # set (and replaced) at each change
        self._watching = 0  # Watch streams open
        self._ended = asyncio.Event()  # set once final and no Watch is open

    def set(self, status: Any) -> None:
        if not self.final and status != self.status:
            self.status = status
            self._wake()

    async def shutdown(self, wait: float) -> None:
        """NOT_SERVING for good; every Watch is told so and ends. Returns once each
        open Watch has written NOT_SERVING and returned (at most ``wait`` seconds),
        so that stopping the server next cannot cut that last message off."""
        self.status, self.final = NOT_SERVING, True
        self._wake()
        if self._watching:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), wait)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def Check(self, request: HealthCheckRequest, context: Any) -> HealthCheckResponse:
        if request.service not in self.services:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no service {request.service!r}")
        return HealthCheckResponse(status=self.status)

    async def Watch(self, request: HealthCheckRequest, context: Any) -> None:
        """The status now, then each change, until shutdown (a service this server
        does not know: SERVICE_UNKNOWN, as the protocol asks, kept open alike)."""
        known, last = request.service in self.services, None
        self._watching += 1
        try:
            while True:
                changed = self._changed  # taken first: a change while writing wakes us
                status = self.status if known else UNKNOWN
                if status != last:
                    await context.write(HealthCheckResponse(status=status))
                    last = status
                if self.final:
                    return
                await changed.wait()
        finally:
            self._watching -= 1
            if self.final and not self._watching:
                self._ended.set()
