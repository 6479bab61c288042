"""``keystile explain`` and ``POST /api/v1/explain``: what keystile would decide for a
key on a request, and why, without counting it against any limit."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from keystile.access import reachable_routes
from keystile.decide import Decider
from keystile.errors import InvalidInput
from keystile.paths import AmbiguousPath, parse_target
from keystile.store import KeyRecord


async def explain(
    decider: Decider, record: KeyRecord, method: str, url: str, client_ip: str | None
) -> dict[str, Any]:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    if not target.startswith("/"):
        raise InvalidInput("url", f"{url!r} has no path: give e.g. /v1/chat/completions")
    try:
        path = parse_target(target).path
    except AmbiguousPath as exc:
        return {"allowed": False, "reason": "route_not_allowed", "why": f"ambiguous path: {exc}"}
    decision = await decider.judge(record, method.upper(), parts.netloc, path, client_ip,
                                   dry_run=True)  # fmt: skip
    route = decision.route
    answer: dict[str, Any] = {
        "allowed": decision.allowed,
        "reason": decision.reason.code if decision.reason else None,
        "why": decision.reason.message if decision.reason else "allowed",
        "key_id": record.id,
        "state": record.state(decider.clock()),
        "route": route.name if route else None,
        "granted_scopes": list(record.granted),
        "client_ip": client_ip,
        "allowed_ips": None if record.allowed_ips is None else list(record.allowed_ips),
        "team_allowed_ips": (list(record.team.allowed_ips)
                             if record.team and record.team.allowed_ips is not None else None),
    }  # fmt: skip
    if route is not None:
        answer["required_scopes"] = sorted(route.scopes)
        reachable = {r["name"]: r["via"] for r in reachable_routes(record, decider.routes)}
        answer["via"] = reachable.get(route.name)
    if decision.retry_after is not None:
        answer["retry_after"] = decision.retry_after
    return answer
