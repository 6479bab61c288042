"""Structured logs: one JSON object per line. Never a key, a hash or an upstream secret."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from keystile.decide import Decision, Facts

decisions_log = logging.getLogger("keystile.decisions")
log = logging.getLogger("keystile")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            data.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            data["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return orjson.dumps(data).decode()


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name, name_level in (("keystile", level), ("aiohttp", "WARNING")):
        # aiohttp logs a client's malformed request with a traceback; ours is one line
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(name_level)
        logger.propagate = False


def log_denial(facts: Facts, decision: Decision) -> None:
    """One line per denial: reason code and key id, path without its query."""
    reason = decision.reason
    if reason is None or not decisions_log.isEnabledFor(logging.INFO):
        return
    target = facts.target or ""
    fields = {
        "event": "deny",
        "adapter": facts.adapter,
        "reason": reason.code,
        "status": reason.outcome.value,
        "method": facts.method,
        "path": target.partition("?")[0][:256],
        "client_ip": facts.client_ip,
        "key_id": decision.record.id if decision.record else None,
        "route": decision.route.name if decision.route else None,
    }
    decisions_log.info("deny %s", reason.code, extra={"fields": fields})
