"""/api/v1/keys: create (the key is shown in that response only), list, show with
groups and reachable routes, update, revoke, expire, delete, rotate."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from keystile.admin.context import caller_of
from keystile.admin.http import MISSING, expiry, iso, reply
from keystile.admin.usage import iso_hours
from keystile.admin.validation import read_body, read_headers, read_query
from keystile.core.durations import parse_duration, parse_instant
from keystile.core.errors import NotFound
from keystile.core.model import KeyRecord
from keystile.limits.usage import spend_of, summarize
from keystile.manage.access import reachable_routes
from keystile.manage.context import AdminContext
from keystile.manage.explain import explain
from keystile.manage.once import once
from keystile.manage.permissions import Caller
from keystile.manage.queries import KeyFilter, encode_cursor
from keystile.manage.refusal import ApiError
from keystile.manage.service import UNSET, Rotation


def view(record: KeyRecord, **extra: Any) -> dict[str, Any]:
    return {**iso(record.public(time.time())), **extra}


async def _owned(ctx: AdminContext, caller: Caller, key_id: str) -> KeyRecord:
    """The key, if the caller may see it; another owner's key is simply not found."""
    record = await ctx.keys.get(key_id)
    if not caller.owns(record):
        raise NotFound(f"no key with id {key_id!r}")
    return record


def _no_binding(caller: Caller, body: dict[str, Any]) -> None:
    """Only admins bind keys to upstream credentials (who pays is not a member's call)."""
    if not caller.is_admin and "credential" in body:
        raise ApiError(403, "permission_error", "credential_not_grantable",
                       "only an admin can bind a key to an upstream credential")  # fmt: skip


async def create_key(request: web.Request) -> web.Response:
    ctx, caller = await caller_of(request)
    body = await read_body(request)
    _no_binding(caller, body)
    user_id, owner = body.get("user_id"), body.get("owner")
    if not caller.is_admin:  # self-service keys create keys for their own owner only
        user_id, owner = caller.record.user_id, caller.record.owner
    expires = expiry(body)
    issued = await ctx.keys.create(
        body["name"], scopes=body.get("scopes", ()), owner=owner, user_id=user_id,
        expires_at=None if expires is MISSING else expires, metadata=body.get("metadata"),
        allowed_ips=body.get("allowed_ips"), limits=body.get("limits"), actor=caller.actor,
        guard=caller.guard, credential=body.get("credential"),
    )  # fmt: skip
    # read back with what the store joins in (its team through the user, its groups),
    # so the answer shows what a later GET shows
    stored = await ctx.keys.store.get_key(issued.record.id)
    return reply(view(stored, key=issued.key), status=201, no_store=True)


async def list_keys(request: web.Request) -> web.Response:
    ctx, caller = await caller_of(request)
    q = read_query(request)
    limit: int = q.get("limit", 100)
    owner, user_id = q.get("owner"), q.get("user_id")
    if not caller.is_admin:
        user_id = caller.record.user_id
        owner = caller.record.owner if user_id is None else None
    wanted = KeyFilter(
        include_inactive=q.get("all") in ("1", "true"), state=q.get("state"), owner=owner,
        user_id=user_id, team_id=q.get("team_id"), group_id=q.get("group_id"), name=q.get("q"),
        cursor=q.get("cursor"), limit=limit + 1,
    )  # fmt: skip
    records = await ctx.keys.store.find_keys(wanted, time.time())
    page, more = records[:limit], len(records) > limit
    return reply({"data": [view(r) for r in page],
                  "next_cursor": encode_cursor(page[-1]) if more else None})  # fmt: skip


async def get_key(request: web.Request) -> web.Response:
    ctx, caller = await caller_of(request)
    record = await _owned(ctx, caller, request.match_info["key_id"])
    return reply(view(record, routes=reachable_routes(record, ctx.routes)))


async def update_key(request: web.Request) -> web.Response:
    ctx, caller = await caller_of(request)
    record = await _owned(ctx, caller, request.match_info["key_id"])
    body = await read_body(request)
    _no_binding(caller, body)
    expires = expiry(body)
    updated = await ctx.keys.update(
        record.id, name=body.get("name"), scopes=body.get("scopes"),
        expires_at=UNSET if expires is MISSING else expires, metadata=body.get("metadata"),
        enabled=body.get("enabled"), allowed_ips=body.get("allowed_ips", UNSET),
        limits=body.get("limits"), actor=caller.actor, guard=caller.guard,
        credential=body.get("credential", UNSET),
    )  # fmt: skip
    return reply(view(updated))


async def revoke_key(request: web.Request) -> web.Response:
    ctx, caller = await caller_of(request)
    record = await _owned(ctx, caller, request.match_info["key_id"])
    return reply(view(await ctx.keys.revoke(record.id, actor=caller.actor)))


async def expire_key(request: web.Request) -> web.Response:
    ctx, caller = await caller_of(request)
    record = await _owned(ctx, caller, request.match_info["key_id"])
    return reply(view(await ctx.keys.expire(record.id, actor=caller.actor)))


async def delete_key(request: web.Request) -> web.Response:
    ctx, caller = await caller_of(request)
    record = await _owned(ctx, caller, request.match_info["key_id"])
    return reply(view(await ctx.keys.delete(record.id, actor=caller.actor)))


async def rotate_key(request: web.Request) -> web.Response:
    """A retry with the same Idempotency-Key returns the first answer again, without the
    new key: keystile never stores a key in plain text, so it is shown once only."""
    ctx, caller = await caller_of(request)
    record = await _owned(ctx, caller, request.match_info["key_id"])
    body = await read_body(request)
    grace = body.get("grace", 0)
    seconds = parse_duration(grace) if isinstance(grace, str) else float(grace)
    idempotency = read_headers(request).get("Idempotency-Key")

    async def rotate() -> Rotation:
        return await ctx.keys.rotate(record.id, seconds, actor=caller.actor, guard=caller.guard)

    def answer(rotation: Rotation) -> dict[str, Any]:
        return {
            "id": rotation.new.record.id,
            "old_id": rotation.old.id,
            "old_expires_at": iso({"expires_at": rotation.old.expires_at})["expires_at"],
            "new": view(rotation.new.record),
            "replayed": False,
        }

    if not idempotency:
        rotation = await rotate()
        return reply({**answer(rotation), "key": rotation.new.key}, status=201, no_store=True)
    # a retry (even one overlapping the first) gets the first answer, without the key
    done = await once(ctx.keys.store, f"rotate:{record.id}:{idempotency}", rotate, answer)
    if done.made is None:
        return reply({**done.answer, "key": None, "replayed": True}, status=201, no_store=True)
    return reply({**done.answer, "key": done.made.new.key}, status=201, no_store=True)


async def key_usage(request: web.Request) -> web.Response:
    """Usage of one key; counts still in memory are written first, so nothing is missing."""
    ctx, caller = await caller_of(request)
    record = await _owned(ctx, caller, request.match_info["key_id"])
    text = read_query(request).get("since")
    since = 0.0 if text is None else parse_instant(text)
    await ctx.usage.flush(ctx.keys.store)
    record = await ctx.keys.store.get_key(record.id)  # with the last-used time just written
    summary = summarize(await ctx.keys.store.usage(record.id, since))
    summary["hours"] = [iso({**row, "at": row.pop("hour")}) for row in summary["hours"]]  # type: ignore[attr-defined]
    tokens = iso_hours(await spend_of(ctx.keys.store, [record.id], since, ctx.routes.routes))
    return reply({"key_id": record.id, "last_used_at": iso(view(record))["last_used_at"],
                  **summary, **tokens})  # fmt: skip


async def explain_request(request: web.Request) -> web.Response:
    ctx, caller = await caller_of(request)
    body = await read_body(request)
    record = await _owned(ctx, caller, body["key_id"])
    record = await ctx.keys.store.get_key(record.id)
    return reply(await explain(ctx.authorizer, record, body.get("method") or "GET", body["url"],
                               body.get("client_ip"), body.get("headers")))  # fmt: skip
