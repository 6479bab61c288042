"""One key: its page (groups, reachable routes, usage, denials, audit trail) and what
can be done to it: edit, add to or take out of groups, rotate (new key shown once),
expire, revoke, delete (each confirmed on a page of its own)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web

from keystile.core.errors import Conflict, InvalidInput, NotFound
from keystile.core.model import KeyRecord
from keystile.limits.usage import spend_of, summarize
from keystile.manage.access import reachable_routes
from keystile.manage.fields import LIMIT_NAMES
from keystile.manage.once import once
from keystile.manage.refusal import ApiError
from keystile.manage.service import UNSET, Rotation
from keystile.web.ui import charts, forms
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

GRACES = {"0": 0.0, "1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0}
RETIRE = {
    "expire": (
        "Expire this key now?",
        "It stops working at once. Its record and history stay, and it can no longer be rotated.",
        "Expire now",
        "expired",
    ),
    "revoke": (
        "Revoke this key?",
        "It stops working at once and for good. Its record and history stay.",
        "Revoke",
        "revoked",
    ),
    "delete": (
        "Delete this key?",
        "It stops working at once and leaves the listings. Its history and usage stay for audit.",
        "Delete",
        "deleted",
    ),
}


async def owned(request: web.Request, who: Viewer) -> KeyRecord:
    """The key of the URL if the viewer may see it; another owner's key is not found
    (the admin API's rule)."""
    key_id = request.match_info["key_id"]
    record = await services(request).keys.get(key_id)
    if not who.caller.owns(record):
        raise NotFound(f"no key with id {key_id!r}")
    return record


async def show_key(request: web.Request) -> web.Response:
    who = viewer(request)
    return await _detail(request, await owned(request, who))


async def _detail(
    request: web.Request, record: KeyRecord, error: str | None = None, status: int = 200
) -> web.Response:
    who, ctx = viewer(request), services(request)
    store = ctx.keys.store
    await ctx.usage.flush(store)  # counts still in memory: written first, none missing
    record = await store.get_key(record.id)
    name, start, bucket = charts.range_of(request.query.get("range"))
    summary = summarize(await store.usage(record.id, start))
    rows = [(h["hour"], h["outcome"], h["count"]) for h in summary["hours"]]  # type: ignore[attr-defined]
    series = charts.buckets(rows, start, bucket)
    team = await store.get_team(record.team.id) if record.team else None
    audit = await store.list_audit(target_type="key", target_id=record.id, limit=200)
    member_of = {group_id for group_id, _, _ in record.groups}
    groups = [g for g in await store.list_groups() if g.id not in member_of] if who.is_admin else []
    return render(
        request,
        "ui/key.html",
        {
            "title": record.name,
            "record": record,
            "state": record.state(time.time()),
            "team": team,
            "routes": reachable_routes(record, ctx.routes),
            "summary": summary,
            "tokens": await spend_of(store, [record.id], start, ctx.routes.routes),
            "chart": charts.volume_svg(series, bucket, f"Requests of {record.name}"),
            "range": name,
            "ranges": list(charts.RANGES),
            "audit": list(reversed(audit)),
            "other_groups": groups,
            "error": error,
            "limit_names": LIMIT_NAMES,
            "scopes": forms.grantable_scopes(who, ctx.routes, []),
            "presets": forms.PRESETS,
            "credentials": sorted(ctx.routes.credentials),
        },
        status,
    )


async def edit_key(request: web.Request) -> web.Response:
    """Rename, or change scopes, limits, allowed IPs and expiry (one form)."""
    who, ctx = viewer(request), services(request)
    record = await owned(request, who)
    form = await form_of(request)
    try:
        expires = forms.expiry_of(form, time.time())
        scopes = forms.scopes_of(form, who)
        if not who.is_admin:  # scopes the member may not grant, but the key has, stay
            scopes = sorted(
                {
                    *scopes,
                    *(
                        s
                        for s in record.scopes
                        if s not in forms.grantable_scopes(who, ctx.routes, [])
                    ),
                }
            )
        await ctx.keys.update(
            record.id,
            name=text(form, "name"),
            scopes=scopes,
            limits=forms.limits_of(form),
            allowed_ips=forms.ips_of(form),
            expires_at=UNSET if expires == "keep" else expires,
            actor=who.actor,
            guard=who.caller.guard,
            # only an admin binds a key to an upstream credential
            credential=forms.credential_of(form, record.credential) if who.is_admin else UNSET,
        )
    except (InvalidInput, ApiError, Conflict) as exc:
        return await _detail(request, record, problem(exc), 422)
    return see_other(f"{who.base}/keys/{record.id}?done=saved")


async def key_groups(request: web.Request) -> web.Response:
    """Add the key to a group, or take it out (admins: the admin API's rule)."""
    who, ctx = viewer(request), services(request)
    record = await owned(request, who)
    form = await form_of(request)
    group_id, join = text(form, "group_id"), text(form, "do") == "add"
    if not group_id:
        return await _detail(request, record, "Pick a group first.", 422)
    await ctx.accounts.set_membership(group_id, record.id, join, actor=who.actor)
    done = "group_added" if join else "group_removed"
    return see_other(f"{who.base}/keys/{record.id}?done={done}")


async def confirm(request: web.Request) -> web.Response:
    who = viewer(request)
    record = await owned(request, who)
    title, message, button, _ = RETIRE[request.match_info["action"]]
    return render(
        request,
        "ui/confirm.html",
        {
            "title": title,
            "message": message,
            "button": button,
            "record": record,
            "action": f"{who.base}/keys/{record.id}/{request.match_info['action']}",
            "back": f"{who.base}/keys/{record.id}",
        },
    )


async def retire(request: web.Request) -> web.Response:
    """Expire, revoke or delete, only with the confirmation page's ``confirm=yes``."""
    who, ctx = viewer(request), services(request)
    record = await owned(request, who)
    action = request.match_info["action"]
    form = await form_of(request)
    if text(form, "confirm") != "yes":
        return see_other(f"{who.base}/keys/{record.id}/{action}")
    do = {"expire": ctx.keys.expire, "revoke": ctx.keys.revoke, "delete": ctx.keys.delete}
    await do[action](record.id, actor=who.actor)
    return see_other(f"{who.base}/keys/{record.id}?done={RETIRE[action][3]}")


async def rotate_form(
    request: web.Request, error: str | None = None, status: int = 200
) -> web.Response:
    who = viewer(request)
    record = await owned(request, who)
    return render(
        request,
        "ui/rotate.html",
        {
            "title": "Rotate " + record.name,
            "record": record,
            "graces": list(GRACES),
            "once": secrets.token_urlsafe(18),
            "error": error,
        },
        status,
    )


def _id_of_new(rotation: Rotation) -> dict[str, Any]:
    return {"id": rotation.new.record.id}


async def rotate_key(request: web.Request) -> web.Response:
    """A new key with the same settings; the old one works for the grace. The new key
    is shown on this answer only; a resent form lands on the new key's page."""
    who, ctx = viewer(request), services(request)
    record = await owned(request, who)
    form = await form_of(request)
    grace = GRACES.get(text(form, "grace"))
    if grace is None:
        return await rotate_form(request, "Pick how long the old key keeps working.", 422)

    async def rotate() -> Rotation:
        return await ctx.keys.rotate(record.id, grace, actor=who.actor, guard=who.caller.guard)

    memo = f"ui:rotate:{record.id}:{text(form, 'once')[:64]}"
    try:  # a resent or overlapping form waits for the first and lands on its new key
        done = await once(ctx.keys.store, memo, rotate, _id_of_new)
    except (ApiError, Conflict) as exc:
        return await rotate_form(request, problem(exc), 422)
    rotation = done.made
    if rotation is None:
        return see_other(f"{who.base}/keys/{done.answer['id']}?done=already")
    new = await ctx.keys.store.get_key(rotation.new.record.id)
    context: dict[str, Any] = {
        "record": new,
        "key": rotation.new.key,
        "old": rotation.old,
        "title": "Key rotated",
    }
    return render(request, "ui/key_shown.html", context)
