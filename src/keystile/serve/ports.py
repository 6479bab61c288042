"""Is a listen address free? Asked before binding with SO_REUSEPORT.

Workers share their ports through SO_REUSEPORT, and the kernel lets any other
process of the same user that sets it too (another ``keystile serve --workers``,
any grpcio server with its default options) bind the same port beside them:
both would serve, each taking a share of the connections, and nobody would be
told. So the address is first bound without SO_REUSEPORT, which fails while
anything listens there.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable

from keystile.core.errors import ConfigError


def why_taken(host: str, port: int, datagram: bool = False) -> str | None:
    """Why ``host:port`` cannot be bound (``Address already in use``), or None.
    ``datagram``: the UDP port (usage.syslog_listen), else the TCP one."""
    kind = socket.SOCK_DGRAM if datagram else socket.SOCK_STREAM
    try:
        found = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return exc.strerror or str(exc)
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as probe:
            # a connection left in TIME_WAIT by the last run owns nothing (UDP has
            # none, and two UDP sockets that both set it would share the port)
            if not datagram:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio binds it: IPv6 only
                with contextlib.suppress(OSError):
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc.strerror or str(exc)
    return None


def claim(addresses: Iterable[tuple[str, tuple[str, int] | None]], datagram: bool = False) -> None:
    """Raise ConfigError naming the first (setting, address) that is taken."""
    for setting, address in addresses:
        if address is None:
            continue
        why = why_taken(*address, datagram=datagram)
        if why is not None:
            raise ConfigError(f"{setting} {address[0]}:{address[1]}: {why}")
