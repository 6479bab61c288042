"""``POST /api/v1/usage``: token usage reported by a gateway or an upstream.

For callers that know what each request spent: a batch of reports, each naming
either the reservation keystile handed out with the allow (``X-Keystile-Reservation``)
or the key and a request id of the caller's own. Idempotent: a reservation is
reconciled once; a request id is remembered in the store, so the same report
sent again (a retry, another replica) is a ``duplicate``, never counted twice.

The caller needs scope ``usage:write`` (or ``admin``): a gateway's key that can
report usage for any key, and do nothing else.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from aiohttp import web

from keystile.admin.auth import authenticate
from keystile.admin.context import ADMIN_CONTEXT, caller_of
from keystile.admin.http import iso, reply
from keystile.admin.validation import read_body, read_query
from keystile.core.durations import parse_instant
from keystile.core.errors import Conflict, NotFound
from keystile.limits.quotas import period
from keystile.limits.usage import spend_of
from keystile.manage.permissions import ADMIN
from keystile.manage.queries import KeyFilter
from keystile.manage.refusal import ApiError

USAGE_WRITE = "usage:write"
USAGE_RESULT = {"type": "object", "required": ["counted", "duplicate", "ignored", "results"]}


async def report_usage(request: web.Request) -> web.Response:
    ctx = request.config_dict[ADMIN_CONTEXT].context
    assert ctx is not None, "the admin API is served only once the store is open"
    await authenticate(request, ctx.authorizer, ctx.trusted, scopes=(ADMIN, USAGE_WRITE))
    budgets = ctx.authorizer.ledger
    if budgets is None:
        raise ApiError(503, "api_error", "auth_unavailable", "token budgets are not running")
    body = await read_body(request)
    now = time.time()
    results: list[dict[str, Any]] = []
    for index, item in enumerate(body["reports"]):
        tokens = int(item["tokens"])
        if "reservation" in item:
            known = await budgets.report(item["reservation"], tokens, now)
            results.append({"index": index, "status": "counted" if known else "ignored"})
            continue
        try:
            record = await ctx.keys.store.get_key(item["key_id"])
        except NotFound:
            results.append({"index": index, "status": "ignored", "why": "unknown_key"})
            continue
        try:  # once per key and request id, whichever replica hears it
            await ctx.keys.store.remember(f"usage:{record.id}:{item['request_id']}",
                                          {"tokens": tokens})  # fmt: skip
        except Conflict:
            results.append({"index": index, "status": "duplicate"})
            continue
        await budgets.charge(record, item.get("route", ""), tokens, now)
        results.append({"index": index, "status": "counted"})
    tally = Counter(result["status"] for result in results)
    return reply({"counted": tally["counted"], "duplicate": tally["duplicate"],
                  "ignored": tally["ignored"], "results": results})  # fmt: skip


async def spend_report(request: web.Request) -> web.Response:
    """Tokens per key (and cost) over a team, a user, a key or every key; a keys:self
    caller sees its own keys only."""
    ctx, caller = await caller_of(request)
    query = read_query(request)
    text = query.get("since")
    since = period("quota_month", time.time())[0] if text is None else parse_instant(text)
    user_id = query.get("user_id")
    if not caller.is_admin:  # its own keys: those of its user (or owner)
        user_id = caller.record.user_id
    keys = await ctx.keys.store.find_keys(
        KeyFilter(include_inactive=True, team_id=query.get("team_id"), user_id=user_id), 0.0
    )
    keys = [k for k in keys if caller.owns(k)]
    if query.get("key_id"):
        keys = [k for k in keys if k.id == query["key_id"]]
    await ctx.usage.flush(ctx.keys.store)  # tokens still in memory: written first
    found = await spend_of(ctx.keys.store, [k.id for k in keys], since, ctx.routes.routes)
    return reply({"since": iso({"at": since})["at"], **iso_hours(found)})


def iso_hours(found: dict[str, Any]) -> dict[str, Any]:
    """:func:`~keystile.usage.spend`'s hours as ISO-8601 instants, as the API shows times."""
    return {**found, "token_hours": [iso({"at": row["hour"], "tokens": row["tokens"]})
                                     for row in found["token_hours"]]}  # fmt: skip
