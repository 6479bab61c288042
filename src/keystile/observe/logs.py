"""Structured logs: one JSON object per line, for keystile's records and every
library's (asyncpg, redis, grpc, aiohttp: a traceback is one ``error`` field, never
lines of its own). Never a key, a hash or an upstream secret; a password in a URL
that a library puts in its message is masked."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from keystile.core.decide import Decision, Facts

decisions_log = logging.getLogger("keystile.decisions")
log = logging.getLogger("keystile")


# scheme://user:password@host in a library's message (a database or Redis URL)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")


def masked(text: str) -> str:
    """``text`` with the password of any URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text) if "://" in text else text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not record.name.startswith("keystile"):
            message = masked(message)
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
        }
        fields = getattr(record, "fields", None)
        if fields:
            data.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            data["error"] = masked(f"{record.exc_info[0].__name__}: {record.exc_info[1]}")
        return orjson.dumps(data).decode()


def setup(level: str = "INFO") -> None:
    """keystile's records at ``level``, every other library's from WARNING, all of
    them through one handler as JSON lines (the root logger's, so a library that
    logs a traceback, as asyncpg's pool does, still writes one line)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("WARNING")
    logging.captureWarnings(True)  # warnings.warn from a library: a record, not raw text
    for name, name_level in (("keystile", level), ("aiohttp", "WARNING")):
        # aiohttp logs a client's malformed request with a traceback; ours is one line
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(name_level)
        logger.propagate = False


DENIALS_PER_SECOND = 50  # lines; past it, denials are counted and summed up


class DenialLog:
    """One line per denial (reason code, key id, path without its query), at most
    ``per_second`` lines a second: a spray of bad keys must not turn into a flood
    of log lines that costs more than answering it. What is left out is summed up
    in one line per reason; the metrics count every denial."""

    def __init__(
        self, per_second: int = DENIALS_PER_SECOND, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_second = per_second
        self.clock = clock
        self.window = clock()
        self.left = per_second
        self.dropped: Counter[str] = Counter()

    def __call__(self, facts: Facts, decision: Decision) -> None:
        reason = decision.reason
        if reason is None or not decisions_log.isEnabledFor(logging.INFO):
            return
        self.tick()
        if self.left <= 0:
            self.dropped[reason.code] += 1
            return
        self.left -= 1
        target = facts.target or ""
        fields = {
            "event": "deny",
            "adapter": facts.adapter,
            "reason": reason.code,
            "detail": reason.detail,
            "status": reason.outcome.value,
            "method": facts.method,
            "path": target.partition("?")[0][:256],
            "client_ip": facts.client_ip,
            "key_id": decision.record.id if decision.record else None,
            "route": decision.route.name if decision.route else None,
        }
        decisions_log.info("deny %s", reason.code, extra={"fields": fields})

    def tick(self) -> None:
        """Start a new second if the last one is over (also called when no request comes)."""
        if self.clock() - self.window >= 1.0:
            self.flush()

    def flush(self) -> None:
        """Start a new second; sum up what the last one left out."""
        if self.dropped:
            total = sum(self.dropped.values())
            fields = {"event": "deny_summary", "not_logged": dict(self.dropped)}
            decisions_log.warning("%d more denials not logged (over %d lines a second)", total,
                                  self.per_second, extra={"fields": fields})  # fmt: skip
            self.dropped.clear()
        self.window, self.left = self.clock(), self.per_second
