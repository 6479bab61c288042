"""``keystile explain`` and ``POST /api/v1/explain``: what keystile would decide for a
key on a request, and why, without counting it against any limit."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from keystile import fields
from keystile.access import reachable_routes
from keystile.errors import InvalidInput
from keystile.gate import Authorizer
from keystile.model import KeyRecord
from keystile.paths import AmbiguousPath, parse_target


async def explain(
    authorizer: Authorizer, record: KeyRecord, method: str, url: str, client_ip: str | None
) -> dict[str, Any]:
    for name, check, value in (("url", fields.url, url), ("method", fields.method, method),
                               ("client_ip", fields.address, client_ip)):  # fmt: skip
        try:
            if value is not None:
                check(value)
        except ValueError as exc:
            raise InvalidInput(name, str(exc)) from None
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        path = parse_target(target, semicolons=authorizer.rules.semicolons).path
    except AmbiguousPath as exc:
        return {"allowed": False, "reason": "route_not_allowed", "why": f"ambiguous path: {exc}"}
    now = authorizer.clock()
    # the limits as they stand, without counting this request against them
    limits = (await authorizer.limits(record, now))[0] if record.limited else None
    rules = authorizer.rules
    decision = rules.judge(record, method.upper(), parts.netloc, path, client_ip, limits, now)
    route = decision.route
    answer: dict[str, Any] = {
        "allowed": decision.allowed,
        "reason": decision.reason.code if decision.reason else None,
        "why": decision.reason.message if decision.reason else "allowed",
        "key_id": record.id,
        "state": record.state(now),
        "route": route.name if route else None,
        "granted_scopes": list(record.granted),
        "client_ip": client_ip,
        "allowed_ips": None if record.allowed_ips is None else list(record.allowed_ips),
        "team_allowed_ips": (list(record.team.allowed_ips)
                             if record.team and record.team.allowed_ips is not None else None),
    }  # fmt: skip
    if route is not None:
        answer["required_scopes"] = sorted(route.scopes)
        reachable = {r["name"]: r["via"] for r in reachable_routes(record, rules.routes)}
        answer["via"] = reachable.get(route.name)
    if decision.retry_after is not None:
        answer["retry_after"] = decision.retry_after
    return answer
