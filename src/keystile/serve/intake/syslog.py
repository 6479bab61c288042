"""nginx's usage lines: syslog datagrams over UDP on loopback (``usage.syslog_listen``).

The shipped ``keystile-http.conf`` logs one line per request that carried a
reservation, with ``access_log syslog:server=...,tag=keystile,nohostname``.
nginx sends each as one RFC 3164-style datagram:

    <190>Jan  2 03:04:05 keystile: usage1 key_AbC123.1796700000.n.sig 1874 4f1c...9a

that is ``<PRI>``, nginx's local time (``Mmm dd hh:mm:ss``), a hostname unless
``nohostname``, the tag and ``": "``, then the ``keystile_usage`` format:
``usage1``, the reservation, the upstream's token count and ``$request_id``,
one space apart. An unset variable is logged as ``-``.

UDP carries no sender identity worth the name, so the socket is on loopback
only (config refuses anything else) and a datagram from any other address is
dropped. Anything that is not exactly such a line is counted and dropped:
nothing is logged per datagram, nothing can raise out of the callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from typing import Any

from keystile.core.errors import ConfigError
from keystile.serve import ports
from keystile.serve.intake import Intake, Malformed, Report, usage

MAX_DATAGRAM = 512  # a real line is under 300 bytes
# lines that arrive while the event loop is busy wait in the kernel; when its
# buffer is full they are lost (and their reservations lapse): ask for room
RECEIVE_BUFFER = 4 * 1024 * 1024
LINE = re.compile(
    rb"<[0-9]{1,3}>"  # PRI
    rb"[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} "  # TIMESTAMP
    rb"(?:[!-~]{1,255} )?"  # HOSTNAME, when nginx was not told nohostname
    rb"keystile: usage1 ([!-~]+) ([!-~]+) ([!-~]+)\n?"  # TAG: MSG
)


def parse(datagram: bytes) -> tuple[str, int] | None:
    """(reservation, tokens) from one datagram, None when it reports nothing;
    Malformed for anything that is not a line of the shipped format."""
    if len(datagram) > MAX_DATAGRAM:
        raise Malformed
    line = LINE.fullmatch(datagram)
    if line is None:
        raise Malformed
    reservation, tokens, _request_id = line.groups()
    # [!-~] is ASCII: decoding cannot fail
    return usage(reservation.decode("ascii"), tokens.decode("ascii"))


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class SyslogIntake(asyncio.DatagramProtocol):
    """One datagram in, at most one report scheduled; never a log line per datagram."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake
        self.tally = intake.tally

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not (isinstance(addr, tuple) and loopback(str(addr[0]))):
            self.tally.note("untrusted")
            return
        self.intake.offer(lambda: parse(data))

    def error_received(self, exc: Exception) -> None:  # ICMP errors and the like
        self.tally.note("socket_error")


class SyslogListener:
    """The bound socket and its intake; ``close`` as the other listeners have it."""

    def __init__(self, report: Report) -> None:
        self.intake = Intake(report, "syslog")
        self.transport: asyncio.DatagramTransport | None = None

    async def start(self, address: tuple[str, int], reuse_port: bool,
                    setting: str = "usage_syslog_listen") -> None:  # fmt: skip
        host, port = address
        if not reuse_port:  # a clear error rather than the kernel's errno
            ports.claim([(setting, address)], datagram=True)
        loop = asyncio.get_running_loop()
        try:
            self.transport, _ = await loop.create_datagram_endpoint(
                lambda: SyslogIntake(self.intake), local_addr=(host, port),
                family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                reuse_port=reuse_port or None,
            )  # fmt: skip
        except OSError as exc:
            why = ports.why_taken(host, port, datagram=True) or exc.strerror or exc
            raise ConfigError(f"{setting} {host}:{port}: {why}") from None
        sock = self.transport.get_extra_info("socket")
        with contextlib.suppress(OSError):  # the kernel caps it at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)

    async def close(self, grace: float) -> None:
        if self.transport is not None:
            self.transport.close()
        await self.intake.close(grace)
