"""The keys table (a member's own keys, an admin's every key) with filters kept in
the URL, and creating a key: shown once, on the answer to the form itself."""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from keystile.core import numbers
from keystile.core.errors import InvalidInput, NotFound
from keystile.core.model import STATES, KeyRecord
from keystile.manage.access import reachable_routes
from keystile.manage.fields import LIMIT_NAMES
from keystile.manage.once import once
from keystile.manage.queries import KeyFilter, encode_cursor
from keystile.manage.refusal import ApiError
from keystile.manage.service import UNSET, Issued
from keystile.web.ui import forms
from keystile.web.ui.common import (
    Viewer,
    form_of,
    problem,
    render,
    see_other,
    services,
    text,
    viewer,
)

PAGE_SIZE = 25
DAY = 86400.0
FILTERS = ("state", "user", "team", "group", "expiring", "unused", "q")


async def home(request: web.Request) -> web.Response:
    return see_other(viewer(request).base + "/keys")


def _days(value: str, field: str) -> int | None:
    return numbers.days(field, value) if value else None


def key_filter(who: Viewer, query: dict[str, str], now: float) -> KeyFilter:
    """The listing the URL asks for, narrowed to the viewer's own keys for a member
    (the admin API's rule: a member's listing is their user's keys only)."""
    state = query.get("state") or None
    if state not in (None, "all", *STATES):
        raise InvalidInput("state", f"{state!r} is not one of all, {', '.join(STATES)}")
    expiring, unused = (
        _days(query.get("expiring", ""), "expiring"),
        _days(query.get("unused", ""), "unused"),
    )
    user_id = query.get("user") or None
    if not who.is_admin:
        user_id = who.user_id
    return KeyFilter(
        include_inactive=state == "all",
        state=None if state == "all" else state,
        user_id=user_id,
        team_id=(query.get("team") or None) if who.is_admin else None,
        group_id=(query.get("group") or None) if who.is_admin else None,
        name=query.get("q") or None,
        expires_before=None if expiring is None else now + expiring * DAY,
        unused_since=None if unused is None else now - unused * DAY,
        cursor=query.get("cursor") or None,
        limit=PAGE_SIZE + 1,
    )


async def list_keys(request: web.Request) -> web.Response:
    who, ctx = viewer(request), services(request)
    query = {name: request.query.get(name, "").strip()[:200] for name in (*FILTERS, "cursor")}
    await ctx.usage.flush(ctx.keys.store)  # last-used times still in memory: written first
    now = time.time()
    error = None
    try:
        records = await ctx.keys.store.find_keys(key_filter(who, query, now), now)
    except InvalidInput as exc:
        error, records = problem(exc), []
    shown, more = records[:PAGE_SIZE], len(records) > PAGE_SIZE
    kept = {name: query[name] for name in FILTERS if query[name]}
    names = await _names(request) if who.is_admin else {}
    rows = [_row(r, ctx.routes, names, now) for r in shown]
    return render(
        request,
        "ui/keys.html",
        {
            "title": "All keys" if who.is_admin else "My API keys",
            "rows": rows,
            "query": query,
            "filtered": bool(kept),
            "error": error,
            "states": STATES,
            **names,
            "next_page": "?" + urlencode({**kept, "cursor": encode_cursor(shown[-1])})
            if more
            else None,
            "first_page": "?" + urlencode(kept) if query["cursor"] else None,
        },
        422 if error else 200,
    )


def _row(record: KeyRecord, routes: Any, names: dict[str, Any], now: float) -> dict[str, Any]:
    team = record.team.id if record.team else None
    return {
        "record": record,
        "state": record.state(now),
        "routes": len(reachable_routes(record, routes)),
        "team": names.get("team_names", {}).get(team, team),
    }


async def _names(request: web.Request) -> dict[str, Any]:
    """Users, teams and groups for the filters and selects (admins only)."""
    store = services(request).keys.store
    users, teams, groups = (
        await store.list_users(),
        await store.list_teams(),
        await store.list_groups(),
    )
    return {
        "users": users,
        "teams": teams,
        "groups": groups,
        "team_names": {t.id: t.name for t in teams},
    }


async def new_key(request: web.Request) -> web.Response:
    return await _form(request, {})


async def _form(
    request: web.Request, values: dict[str, Any], error: str | None = None, status: int = 200
) -> web.Response:
    who, ctx = viewer(request), services(request)
    names = await _names(request) if who.is_admin else {}
    return render(
        request,
        "ui/key_new.html",
        {
            "title": "Create a key",
            "values": values,
            "error": error,
            "once": secrets.token_urlsafe(18),
            "scopes": forms.grantable_scopes(who, ctx.routes, names.get("groups", [])),
            "limit_names": LIMIT_NAMES,
            "presets": forms.PRESETS,
            "credentials": sorted(ctx.routes.credentials),
            **names,
        },
        status,
    )


async def create_key(request: web.Request) -> web.Response:
    """Create, then show the key on this answer only (no-store). The form's one-time
    token makes a resent form (reload, back) land on the key's page, never a second key."""
    who, ctx = viewer(request), services(request)
    form = await form_of(request)
    values = forms.key_values(form)

    async def create() -> Issued:
        fields = forms.key_fields(form, who)
        user_id, group_ids = fields.pop("user_id"), fields.pop("group_ids")
        if fields["credential"] is UNSET:
            fields["credential"] = None
        if not who.is_admin:  # a member's keys are their own, groups are for admins
            user_id, group_ids = who.user_id, []
        groups = [await ctx.keys.store.get_group(g) for g in group_ids]
        guard = _guard_with_groups(who, groups)
        issued = await ctx.keys.create(user_id=user_id, actor=who.actor, guard=guard, **fields)
        for group in groups:
            await ctx.accounts.set_membership(group.id, issued.record.id, True, actor=who.actor)
        return issued

    memo = f"ui:create:{who.session.id}:{text(form, 'once')[:64]}"
    try:  # a resent or overlapping form waits for the first and lands on its key
        done = await once(ctx.keys.store, memo, create, _id_of_issued)
    except (InvalidInput, ApiError, NotFound) as exc:
        return await _form(request, values, problem(exc), 422)
    issued = done.made
    if issued is None:
        return see_other(f"{who.base}/keys/{done.answer['id']}?done=already")
    record = await ctx.keys.store.get_key(issued.record.id)
    return render(
        request, "ui/key_shown.html", {"record": record, "key": issued.key, "title": "Key created"}
    )


def _id_of_issued(issued: Issued) -> dict[str, Any]:
    return {"id": issued.record.id}


def _guard_with_groups(who: Viewer, groups: list[Any]) -> Any:
    """The admin API's guard, judging the key with the groups it is about to join."""
    from dataclasses import replace

    joined = tuple((g.id, g.name, g.scopes) for g in groups)

    def guard(proposed: KeyRecord, current: KeyRecord | None) -> None:
        who.caller.guard(replace(proposed, groups=joined), current)

    return guard
