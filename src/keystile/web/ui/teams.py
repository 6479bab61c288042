"""Teams for administrators: their limits and allowlist, their people and keys."""

from __future__ import annotations

from aiohttp import web

from keystile.core.errors import Conflict, InvalidInput, NotFound
from keystile.manage.fields import LIMIT_NAMES
from keystile.manage.queries import KeyFilter
from keystile.web.ui import forms
from keystile.web.ui.common import form_of, problem, render, see_other, services, text, viewer


async def list_teams(
    request: web.Request,
    error: str | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    teams = await services(request).keys.store.list_teams()
    return render(
        request,
        "ui/teams.html",
        {
            "title": "Teams",
            "teams": teams,
            "error": error,
            "values": values or {},
            "limit_names": LIMIT_NAMES,
            "credentials": sorted(services(request).routes.credentials),
        },
        status,
    )


async def create_team(request: web.Request) -> web.Response:
    who, ctx = viewer(request), services(request)
    form = await form_of(request)
    values = {
        n: text(form, n)
        for n in ("name", "allowed_ips", "credential", *(f"limit_{n}" for n in LIMIT_NAMES))
    }
    try:
        team = await ctx.accounts.create_team(
            values["name"],
            forms.limits_of(form),
            actor=who.actor,
            allowed_ips=forms.ips_of(form),
            credential=values["credential"] or None,
        )
    except (InvalidInput, Conflict) as exc:
        return await list_teams(request, problem(exc), values, 422)
    return see_other(f"{who.base}/teams/{team.id}?done=created")


async def show_team(
    request: web.Request, error: str | None = None, status: int = 200
) -> web.Response:
    ctx = services(request)
    store = ctx.keys.store
    team = await store.get_team(request.match_info["team_id"])
    keys = await store.find_keys(KeyFilter(team_id=team.id), ctx.keys.clock())
    return render(
        request,
        "ui/team.html",
        {
            "title": team.name,
            "team": team,
            "users": await store.list_users(team.id),
            "keys": keys,
            "error": error,
            "limit_names": LIMIT_NAMES,
            "credentials": sorted(ctx.routes.credentials),
        },
        status,
    )


async def edit_team(request: web.Request) -> web.Response:
    who, ctx = viewer(request), services(request)
    team_id = request.match_info["team_id"]
    team = await ctx.keys.store.get_team(team_id)
    form = await form_of(request)
    try:
        await ctx.accounts.update_team(
            team_id,
            text(form, "name") or None,
            forms.limits_of(form),
            actor=who.actor,
            allowed_ips=forms.ips_of(form),
            credential=forms.credential_of(form, team.credential),
        )
    except (InvalidInput, Conflict, NotFound) as exc:
        return await show_team(request, problem(exc), 422)
    return see_other(f"{who.base}/teams/{team_id}?done=saved")
