"""Usage intake: how an upstream's token count gets back to keystile.

On an allow under a token budget keystile hands the proxy a reservation
(``X-Keystile-Reservation``); once the upstream has answered, the proxy's access
log carries (reservation, tokens) back, and ``report`` reconciles the budget.
Two paths, one module each, neither knowing about the other or about budgets:

    nginx  access_log syslog:  -> UDP on loopback -> intake.syslog
    Envoy  envoy.access_loggers.http_grpc -> gRPC ALS -> intake.accesslog

Both parse strictly and cheaply, never log per bad input (``Tally`` counts and
sums up at most once a minute), and hand each report to ``Intake``, which runs
it as a task, a bounded number at a time: a flood is dropped, not queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable

# report(reservation, tokens): True counted; False unknown, forged or already reported
Report = Callable[[str, int], Awaitable[bool]]

MAX_TOKENS = 10**9  # one response never uses more; a bigger figure is garbage
MAX_RESERVATION = 120
RESERVATION = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_RESERVATION}}}")
TOKENS = re.compile(r"[0-9]{1,10}")
UNSET = ("", "-")  # what nginx logs for an empty variable; an absent header
IN_FLIGHT = 1024  # reports running at once; more are dropped (and counted)
SUMMARY_INTERVAL = 60.0  # seconds between two summaries of what was refused

log = logging.getLogger("keystile.intake")


def receivers(syslog: tuple[str, int] | None, grpc: tuple[str, int] | None) -> list[str]:
    """Where this server takes usage reports from a proxy, in words (empty: nowhere)."""
    found = []
    if syslog is not None:
        found.append(f"nginx's usage lines on udp {syslog[0]}:{syslog[1]} (usage.syslog_listen)")
    if grpc is not None:
        found.append(f"Envoy's access-log service on {grpc[0]}:{grpc[1]} (server.grpc_listen)")
    return found


def intake_summary(syslog: tuple[str, int] | None, grpc: tuple[str, int] | None) -> str:
    """One sentence for ``config check`` and the start-up log: where token usage
    arrives, or the trap of budgets with no proxy reporting usage."""
    found = receivers(syslog, grpc)
    if found:
        return ("Token usage reports: taken from " + " and ".join(found)
                + ", and through POST /api/v1/usage.")  # fmt: skip
    return (
        f"Token usage reports: {NO_INTAKE} Set usage.syslog_listen (nginx, with the "
        "shipped keystile-http.conf) or server.grpc_listen (Envoy), or report through "
        "POST /api/v1/usage; see docs/token-budgets.md."
    )


NO_INTAKE = (
    "no proxy intake is listening (neither usage.syslog_listen nor "
    "server.grpc_listen is set): a key or team with a token budget (tokens_per_*) "
    "is refused once its reservations fill the budget, until they time out "
    "(usage.reservation_timeout)."
)


class Malformed(ValueError):
    """A line or entry that is not what keystile's shipped config writes."""


def usage(reservation: str, tokens: str) -> tuple[str, int] | None:
    """(reservation, tokens) to report; None when there is nothing to report (no
    reservation, or the upstream sent no count: the reservation then lapses on
    its own). Raises Malformed for anything else."""
    if reservation in UNSET or tokens in UNSET:
        return None
    if RESERVATION.fullmatch(reservation) is None or TOKENS.fullmatch(tokens) is None:
        raise Malformed
    count = int(tokens)
    if count > MAX_TOKENS:
        raise Malformed
    return reservation, count


class Tally:
    """What an intake did, by outcome; refusals summed up in one log line a minute
    at most, so a flood of garbage costs a counter bump each, not a log line."""

    REFUSED = ("malformed", "dropped", "failed", "untrusted")

    def __init__(self, source: str) -> None:
        self.source = source
        self.counts: Counter[str] = Counter()
        self.unsaid: Counter[str] = Counter()
        self.said = float("-inf")

    def note(self, outcome: str) -> None:
        self.counts[outcome] += 1
        if outcome in self.REFUSED:
            self.unsaid[outcome] += 1
            now = time.monotonic()
            if now - self.said >= SUMMARY_INTERVAL:
                self.said = now
                said = ", ".join(f"{n} {what}" for what, n in sorted(self.unsaid.items()))
                log.warning("usage intake (%s) refused: %s", self.source, said)
                self.unsaid.clear()


class Intake:
    """Runs ``report`` for each usage as its own task, at most ``limit`` at once, so
    the protocol callback that found the usage never waits for the store."""

    def __init__(self, report: Report, source: str, limit: int = IN_FLIGHT) -> None:
        self.report = report
        self.tally = Tally(source)
        self.limit = limit
        self.running: set[asyncio.Task[None]] = set()

    def offer(self, read: Callable[[], tuple[str, int] | None]) -> None:
        """Submit what ``read`` finds: a line or entry with no count is only tallied,
        one that does not parse (``Malformed``) tallied as such."""
        try:
            found = read()
        except Malformed:
            self.tally.note("malformed")
            return
        if found is None:
            self.tally.note("unreported")
            return
        self.submit(found)

    def submit(self, found: tuple[str, int]) -> None:
        if len(self.running) >= self.limit:
            self.tally.note("dropped")
            return
        task = asyncio.get_running_loop().create_task(self._one(*found))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _one(self, reservation: str, tokens: int) -> None:
        try:
            counted = await self.report(reservation, tokens)
        except Exception:  # the budget's fault, not the sender's: counted, summed up
            self.tally.note("failed")
        else:
            self.tally.note("counted" if counted else "ignored")

    async def close(self, grace: float) -> None:
        """Let the reports under way finish, up to ``grace`` seconds; cancel the rest."""
        if self.running:
            await asyncio.wait(set(self.running), timeout=grace)
        for task in list(self.running):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
