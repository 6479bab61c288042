"""/api/v1/teams, /users, /groups (with key membership), /routes and /audit. Admin only."""

from __future__ import annotations

from aiohttp import web

from keystile.admin.auth import require_admin
from keystile.admin.context import caller_of
from keystile.admin.http import iso, reply
from keystile.admin.validation import read_body, read_query
from keystile.manage.access import route_view
from keystile.manage.queries import Session
from keystile.manage.service import UNSET


async def _admin(request: web.Request):  # type: ignore[no-untyped-def]
    ctx, caller = await caller_of(request)
    require_admin(caller)
    return ctx, caller


async def create_team(request: web.Request) -> web.Response:
    ctx, caller = await _admin(request)
    body = await read_body(request)
    team = await ctx.accounts.create_team(body["name"], body.get("limits"),
                                          actor=caller.actor,
                                          allowed_ips=body.get("allowed_ips"),
                                          credential=body.get("credential"))  # fmt: skip
    return reply(iso(team.public()), status=201)


async def list_teams(request: web.Request) -> web.Response:
    ctx, _ = await _admin(request)
    return reply({"data": [iso(t.public()) for t in await ctx.keys.store.list_teams()]})


async def get_team(request: web.Request) -> web.Response:
    ctx, _ = await _admin(request)
    return reply(iso((await ctx.keys.store.get_team(request.match_info["team_id"])).public()))


async def update_team(request: web.Request) -> web.Response:
    ctx, caller = await _admin(request)
    body = await read_body(request)
    ips = body.get("allowed_ips", UNSET)
    team = await ctx.accounts.update_team(request.match_info["team_id"], body.get("name"),
                                          body.get("limits"), actor=caller.actor,
                                          allowed_ips=ips,
                                          credential=body.get("credential", UNSET))  # fmt: skip
    return reply(iso(team.public()))


async def create_user(request: web.Request) -> web.Response:
    ctx, caller = await _admin(request)
    body = await read_body(request)
    user = await ctx.accounts.create_user(body["external_id"], body.get("team_id"),
                                          actor=caller.actor, role=body.get("role", "member"),
                                          email=body.get("email"))  # fmt: skip
    return reply(iso(user.public()), status=201)


async def update_user(request: web.Request) -> web.Response:
    """Role, email, team, disabled (a disabled user's sessions and keys stop). No
    password here: passwords are set with the CLI, never sent to an API."""
    ctx, caller = await _admin(request)
    body = await read_body(request)
    user = await ctx.accounts.update_user(
        request.match_info["user_id"], role=body.get("role"),
        email=body.get("email", UNSET), team_id=body.get("team_id", UNSET),
        disabled=body.get("disabled"), actor=caller.actor,
    )  # fmt: skip
    return reply(iso(user.public()))


def _session_view(session: Session) -> dict[str, object]:
    return iso(session.public())


async def list_sessions(request: web.Request) -> web.Response:
    ctx, _ = await _admin(request)
    user_id = request.match_info.get("user_id") or read_query(request).get("user_id")
    if user_id is not None:
        await ctx.keys.store.get_user(user_id)  # 404 for an unknown user
    return reply({"data": [_session_view(s) for s in await ctx.sessions.list(user_id)]})


async def end_user_sessions(request: web.Request) -> web.Response:
    ctx, caller = await _admin(request)
    user_id = request.match_info["user_id"]
    ended = await ctx.sessions.revoke_user(user_id, caller.actor)
    return reply({"user_id": user_id, "ended": ended})


async def revoke_session(request: web.Request) -> web.Response:
    ctx, caller = await _admin(request)
    return reply(_session_view(await ctx.sessions.revoke(request.match_info["session_id"],
                                                         caller.actor)))  # fmt: skip


async def add_group_user(request: web.Request) -> web.Response:
    return await _membership(request, True, "user")


async def remove_group_user(request: web.Request) -> web.Response:
    return await _membership(request, False, "user")


async def list_users(request: web.Request) -> web.Response:
    ctx, _ = await _admin(request)
    users = await ctx.keys.store.list_users(read_query(request).get("team_id"))
    return reply({"data": [iso(u.public()) for u in users]})


async def get_user(request: web.Request) -> web.Response:
    ctx, _ = await _admin(request)
    return reply(iso((await ctx.keys.store.get_user(request.match_info["user_id"])).public()))


async def create_group(request: web.Request) -> web.Response:
    ctx, caller = await _admin(request)
    body = await read_body(request)
    group = await ctx.accounts.create_group(body["name"], body.get("scopes", ()),
                                            actor=caller.actor)  # fmt: skip
    return reply(iso(group.public()), status=201)


async def list_groups(request: web.Request) -> web.Response:
    ctx, _ = await _admin(request)
    return reply({"data": [iso(g.public()) for g in await ctx.keys.store.list_groups()]})


async def get_group(request: web.Request) -> web.Response:
    ctx, _ = await _admin(request)
    return reply(iso((await ctx.keys.store.get_group(request.match_info["group_id"])).public()))


async def update_group(request: web.Request) -> web.Response:
    ctx, caller = await _admin(request)
    body = await read_body(request)
    group = await ctx.accounts.update_group(
        request.match_info["group_id"],
        body.get("name"),
        body.get("scopes"),
        actor=caller.actor,
    )
    return reply(iso(group.public()))


async def delete_group(request: web.Request) -> web.Response:
    ctx, caller = await _admin(request)
    group = await ctx.accounts.delete_group(request.match_info["group_id"], actor=caller.actor)
    return reply(iso(group.public()))


async def add_group_key(request: web.Request) -> web.Response:
    return await _membership(request, True, "key")


async def remove_group_key(request: web.Request) -> web.Response:
    return await _membership(request, False, "key")


async def _membership(request: web.Request, member: bool, kind: str) -> web.Response:
    """A key or a user in or out of a group."""
    ctx, caller = await _admin(request)
    group_id, item = request.match_info["group_id"], request.match_info[f"{kind}_id"]
    change = ctx.accounts.set_membership if kind == "key" else ctx.accounts.set_user_membership
    changed = await change(group_id, item, member, actor=caller.actor)
    return reply({"group_id": group_id, f"{kind}_id": item, "member": member,
                  "changed": changed})  # fmt: skip


async def list_routes(request: web.Request) -> web.Response:
    ctx, _ = await caller_of(request)
    return reply({"data": [route_view(r) for r in ctx.routes.routes],
                  "unmatched": "allow" if ctx.routes.allow_unmatched else "deny"})  # fmt: skip


async def list_audit(request: web.Request) -> web.Response:
    ctx, _ = await _admin(request)
    q = read_query(request)
    limit: int = q.get("limit", 100)
    entries = await ctx.keys.store.list_audit(
        target_type=q.get("target_type"), target_id=q.get("target_id"), actor=q.get("actor"),
        action=q.get("action"), after_seq=q.get("after", 0), limit=limit,
    )  # fmt: skip
    data = [iso(e.public()) for e in entries]
    return reply({"data": data, "next_after": data[-1]["seq"] if len(data) == limit else None})
