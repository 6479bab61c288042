"""``keystile explain`` and ``POST /api/v1/explain``: what keystile would decide for a
key on a request, and why, without counting it against any limit.

It decides through the auth path's own steps, so that for any request the two
give the same reason code and detail: the request is screened as an adapter's
Facts are (method canonicalisation and overrides, credential copies in the query
or cookies, imitated headers, ambiguous paths), then the core decides with the
key's limits as they stand (quotas, token budgets, rate limits; in Redis when
limits are shared), looked at and never counted. The key is named by id, not
presented: when ``headers`` carry no credential, a stand-in is screened in its
place; one they carry is screened as given (two different ones are refused, as
on the auth path), and the named key is judged either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict

from keystile.core.decide import Decision, Facts
from keystile.core.errors import InvalidInput
from keystile.core.model import KeyRecord
from keystile.manage import fields
from keystile.manage.access import reachable_routes
from keystile.serve.gate import Authorizer

MAX_HEADERS = 50
STAND_IN = "explain-stand-in-for-the-key"  # screened in the key's place, never looked up


def split_url(url: str) -> tuple[str, str]:
    """(host, target as sent) of an absolute URL or a bare path: the target is taken
    raw, as a proxy hands it over (no decoding, a '#' kept for the screen to refuse)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "/" in scheme:
        return "", url
    slash = rest.find("/")
    if slash < 0:
        return rest, "/"
    return rest[:slash], rest[slash:]


def _checked(method: str, url: str, client_ip: str | None,
             headers: Mapping[str, str] | None) -> CIMultiDict[str]:  # fmt: skip
    for name, check, value in (("url", fields.url, url), ("method", fields.method, method),
                               ("client_ip", fields.address, client_ip)):  # fmt: skip
        try:
            if value is not None:
                check(value)
        except ValueError as exc:
            raise InvalidInput(name, str(exc)) from None
    given = dict(headers or {})
    if len(given) > MAX_HEADERS:
        raise InvalidInput("headers", f"at most {MAX_HEADERS} headers")
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in given.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidInput("headers", "give each header as a name and a text value")
        if not name or not name.isascii() or any(c in name for c in " \t\r\n:"):
            raise InvalidInput("headers", f"{name[:40]!r} is not a header name")
        if any(c in value for c in "\r\n\0"):
            raise InvalidInput("headers", f"the value of {name[:40]!r} has a line break or NUL")
        out.add(name, value)
    return out


async def explain(
    authorizer: Authorizer,
    record: KeyRecord,
    method: str,
    url: str,
    client_ip: str | None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What the auth path would answer ``record`` on this request, and why."""
    given = _checked(method, url, client_ip, headers)
    rules = authorizer.rules
    host, target = split_url(url)
    if "host" in given:
        host = given["host"]
    sources = rules.sources
    if sources and not any(source.header in given for source in sources):
        first = sources[0]
        given.add(first.header, f"Bearer {STAND_IN}" if first.bearer else STAND_IN)
    facts = Facts("explain", method, host, target, given, client_ip)
    screened = rules.screen(facts)
    now = authorizer.clock()
    if isinstance(screened, Decision):
        decision = screened
    elif screened.session:  # a session cookie and no key: not the key's request
        decision = rules.decide(screened, None, None, now)
    else:
        limits = await authorizer.looked(record, now)
        decision = rules.decide(screened, record, limits, now)
    return _answer(rules, decision, record, client_ip, now)


def _answer(rules: Any, decision: Decision, record: KeyRecord, client_ip: str | None,
            now: float) -> dict[str, Any]:  # fmt: skip
    route, reason = decision.route, decision.reason
    answer: dict[str, Any] = {
        "allowed": decision.allowed,
        "reason": reason.code if reason else None,
        "detail": reason.detail if reason else None,
        "why": reason.message if reason else "allowed",
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
