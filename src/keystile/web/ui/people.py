"""Users (role, team, groups, disable, sessions) and groups (scopes, member keys and
users), for administrators, through AccountService and SessionService."""

from __future__ import annotations

from aiohttp import web

from keystile.core.errors import Conflict, InvalidInput, NotFound
from keystile.manage.queries import KeyFilter
from keystile.web.ui.common import (
    form_of,
    problem,
    render,
    see_other,
    services,
    text,
    viewer,
    words,
)


async def list_users(
    request: web.Request,
    error: str | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    store = services(request).keys.store
    users, teams = await store.list_users(), await store.list_teams()
    sessions = await services(request).sessions.list()
    open_by_user: dict[str, int] = {}
    for session in sessions:
        open_by_user[session.user_id] = open_by_user.get(session.user_id, 0) + 1
    return render(
        request,
        "ui/users.html",
        {
            "title": "Users",
            "users": users,
            "teams": teams,
            "open": open_by_user,
            "team_names": {t.id: t.name for t in teams},
            "error": error,
            "values": values or {},
        },
        status,
    )


async def create_user(request: web.Request) -> web.Response:
    who, ctx = viewer(request), services(request)
    form = await form_of(request)
    values = {n: text(form, n) for n in ("name", "email", "role", "team_id")}
    try:
        user = await ctx.accounts.create_user(
            values["name"],
            values["team_id"] or None,
            actor=who.actor,
            role=values["role"] or "member",
            email=values["email"] or None,
        )
    except (InvalidInput, Conflict, NotFound) as exc:
        return await list_users(request, problem(exc), values, 422)
    return see_other(f"{who.base}/users/{user.id}?done=created")


async def show_user(
    request: web.Request, error: str | None = None, status: int = 200
) -> web.Response:
    ctx = services(request)
    store = ctx.keys.store
    user = await store.get_user(request.match_info["user_id"])
    mine = await store.groups_of_user(user.id)
    member = {g.id for g in mine}
    keys = await store.find_keys(KeyFilter(user_id=user.id), ctx.keys.clock())
    return render(
        request,
        "ui/user.html",
        {
            "title": user.external_id,
            "user": user,
            "teams": await store.list_teams(),
            "groups": mine,
            "other_groups": [g for g in await store.list_groups() if g.id not in member],
            "sessions": await ctx.sessions.list(user.id),
            "active_keys": len(keys),
            "error": error,
        },
        status,
    )


async def edit_user(request: web.Request) -> web.Response:
    """``do``: save (role, email, team), disable, enable, join or leave a group."""
    who, ctx = viewer(request), services(request)
    user_id = request.match_info["user_id"]
    await ctx.keys.store.get_user(user_id)  # a 404 page for an unknown user
    form = await form_of(request)
    do = text(form, "do")
    try:
        if do == "save":
            await ctx.accounts.update_user(
                user_id,
                role=text(form, "role") or None,
                email=text(form, "email") or None,
                team_id=text(form, "team_id") or None,
                actor=who.actor,
            )
        elif do in ("disable", "enable"):
            if do == "disable" and user_id == who.user_id:
                raise InvalidInput("disabled", "you cannot disable yourself while signed in")
            await ctx.accounts.update_user(user_id, disabled=do == "disable", actor=who.actor)
        elif do in ("join", "leave"):
            group_id = text(form, "group_id")
            if not group_id:
                raise InvalidInput("group", "pick a group first")
            await ctx.accounts.set_user_membership(group_id, user_id, do == "join", actor=who.actor)
        else:
            raise InvalidInput("do", f"{do!r} is not an action of this page")
    except (InvalidInput, Conflict, NotFound) as exc:
        return await show_user(request, problem(exc), 422)
    done = {"save": "saved", "disable": "disabled", "enable": "enabled"}.get(do, "saved")
    return see_other(f"{who.base}/users/{user_id}?done={done}")


async def end_sessions(request: web.Request) -> web.Response:
    """End one session (``session_id``) or every session of the user."""
    who, ctx = viewer(request), services(request)
    user_id = request.match_info["user_id"]
    form = await form_of(request)
    session_id = text(form, "session_id")
    if session_id:
        if session_id not in {s.id for s in await ctx.sessions.list(user_id)}:
            raise NotFound(f"no open session {session_id!r} of this user")
        await ctx.sessions.revoke(session_id, who.actor)
        done = "session_ended"
    else:
        await ctx.sessions.revoke_user(user_id, who.actor)
        done = "sessions_ended"
    return see_other(f"{who.base}/users/{user_id}?done={done}")


async def list_groups(
    request: web.Request,
    error: str | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    groups = await services(request).keys.store.list_groups()
    return render(
        request,
        "ui/groups.html",
        {"title": "Groups", "groups": groups, "error": error, "values": values or {}},
        status,
    )


async def create_group(request: web.Request) -> web.Response:
    who, ctx = viewer(request), services(request)
    form = await form_of(request)
    values = {"name": text(form, "name"), "scopes": text(form, "scopes")}
    try:
        group = await ctx.accounts.create_group(
            values["name"], words(values["scopes"]), actor=who.actor
        )
    except (InvalidInput, Conflict) as exc:
        return await list_groups(request, problem(exc), values, 422)
    return see_other(f"{who.base}/groups/{group.id}?done=created")


async def show_group(
    request: web.Request, error: str | None = None, status: int = 200
) -> web.Response:
    ctx = services(request)
    store = ctx.keys.store
    group = await store.get_group(request.match_info["group_id"])
    keys = await store.find_keys(KeyFilter(group_id=group.id), ctx.keys.clock())
    users, members = await store.list_users(), []
    for user in users:
        if any(g.id == group.id for g in await store.groups_of_user(user.id)):
            members.append(user)
    member_ids = {u.id for u in members}
    return render(
        request,
        "ui/group.html",
        {
            "title": group.name,
            "group": group,
            "keys": keys,
            "members": members,
            "other_users": [u for u in users if u.id not in member_ids],
            "error": error,
        },
        status,
    )


async def edit_group(request: web.Request) -> web.Response:
    """``do``: save (name, scopes), add_key/remove_key, add_user/remove_user, delete."""
    who, ctx = viewer(request), services(request)
    group_id = request.match_info["group_id"]
    await ctx.keys.store.get_group(group_id)
    form = await form_of(request)
    do = text(form, "do")
    try:
        if do == "save":
            await ctx.accounts.update_group(
                group_id, text(form, "name") or None, words(text(form, "scopes")), actor=who.actor
            )
        elif do in ("add_key", "remove_key"):
            key_id = text(form, "key_id")
            await ctx.keys.get(key_id)  # an unknown id says so
            await ctx.accounts.set_membership(group_id, key_id, do == "add_key", actor=who.actor)
        elif do in ("add_user", "remove_user"):
            await ctx.accounts.set_user_membership(
                group_id, text(form, "user_id"), do == "add_user", actor=who.actor
            )
        elif do == "delete":
            if text(form, "confirm") != "yes":
                raise InvalidInput("confirm", "tick the box to confirm deleting the group")
            await ctx.accounts.delete_group(group_id, actor=who.actor)
            return see_other(f"{who.base}/groups?done=deleted")
        else:
            raise InvalidInput("do", f"{do!r} is not an action of this page")
    except (InvalidInput, Conflict, NotFound) as exc:
        return await show_group(request, problem(exc), 422)
    return see_other(f"{who.base}/groups/{group_id}?done=saved")
