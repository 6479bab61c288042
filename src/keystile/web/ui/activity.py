"""Activity from the usage accounting: request volume over time, routes reached,
denials by reason and the error rate, for the keys a filter picks (user, team, one
key, a time range). A member sees only their own keys."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from aiohttp import web

from keystile.core.errors import NotFound
from keystile.limits.usage import spend_of
from keystile.manage.queries import KeyFilter
from keystile.web.ui import charts
from keystile.web.ui.common import render, services, viewer


async def show_activity(request: web.Request) -> web.Response:
    who, ctx = viewer(request), services(request)
    store = ctx.keys.store
    q = {n: request.query.get(n, "").strip()[:200] for n in ("user", "team", "key", "range")}
    user_id = (q["user"] or None) if who.is_admin else who.user_id
    team_id = (q["team"] or None) if who.is_admin else None
    keys = await store.find_keys(
        KeyFilter(include_inactive=True, user_id=user_id, team_id=team_id), time.time()
    )
    if q["key"]:
        keys = [k for k in keys if k.id == q["key"]]
        if not keys:  # not one of the viewer's (or the filter's) keys
            raise NotFound(f"no key with id {q['key']!r}")
    await ctx.usage.flush(store)
    name, start, bucket = charts.range_of(q["range"] or None)
    rows = await store.usage_of([k.id for k in keys], start)
    totals = _totals(rows)
    tokens = await spend_of(store, [k.id for k in keys], start, ctx.routes.routes)
    token_rows = [(row["hour"], "allow", row["tokens"]) for row in tokens["token_hours"]]
    token_chart = None
    if tokens["tokens"]:
        series = charts.buckets(token_rows, start, bucket)
        token_chart = charts.volume_svg(series, bucket, "Tokens")
    names = {k.id: k.name for k in keys}
    context: dict[str, Any] = {
        "title": "Activity",
        "q": q,
        "range": name,
        "ranges": list(charts.RANGES),
        "chart": charts.volume_svg(
            charts.buckets([(h, o, c) for _, h, _, o, c in rows], start, bucket), bucket, "Requests"
        ),
        "keys": keys,
        "names": names,
        "tokens": tokens,
        "token_chart": token_chart,
        **totals,
    }
    if who.is_admin:
        context.update(users=await store.list_users(), teams=await store.list_teams())
    return render(request, "ui/activity.html", context)


def _totals(rows: list[tuple[str, int, str, str, int]]) -> dict[str, Any]:
    allowed, denied = 0, 0
    routes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    per_key: Counter[str] = Counter()
    denied_per_key: Counter[str] = Counter()
    for key_id, _, route, outcome, count in rows:
        per_key[key_id] += count
        if outcome == "allow":
            allowed += count
            routes[route or "(no route)"] += count
        else:
            denied += count
            reasons[outcome] += count
            denied_per_key[key_id] += count
    total = allowed + denied
    return {
        "allowed": allowed,
        "denied": denied,
        "total": total,
        "error_rate": f"{100 * denied / total:.1f}%" if total else "none",
        "routes": routes.most_common(),
        "reasons": reasons.most_common(),
        "per_key": [(k, n, denied_per_key[k]) for k, n in per_key.most_common(20)],
    }
