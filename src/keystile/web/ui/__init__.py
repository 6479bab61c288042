"""The web UI: keys, groups, users, teams and activity in a browser.

Served at ``/_keystile/ui/`` on the main listener (so every shipped proxy config
reaches it with no change), or at ``/ui/`` on the admin listener when
``KEYSTILE_ADMIN_LISTEN`` is set. Signed in with the browser session; pages are
plain HTML forms (POST, then redirect to a GET), no script needed. Every page
goes through the service layer with the admin API's permission rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from keystile.core.errors import NotFound, StoreError
from keystile.manage.context import ContextHolder
from keystile.web.pages import from_elsewhere, setup_templates
from keystile.web.signin import Refused, SignIn, refused_message
from keystile.web.ui import activity, key_actions, keys, people, teams
from keystile.web.ui.common import (
    BASE,
    HOLDERS,
    MAX_FORM,
    VIEWER_KEY,
    Holders,
    ago,
    find_viewer,
    render,
    sign_in_ctx,
    store_failed,
    to_login,
    viewer,
    when,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True, slots=True)
class Page:
    method: str
    path: str
    handler: Handler
    admin: bool = False  # for administrators only (members get a 403 page)


PAGES: list[Page] = [
    Page("GET", "/", keys.home),
    Page("GET", "/keys", keys.list_keys),
    Page("GET", "/keys/new", keys.new_key),
    Page("POST", "/keys/new", keys.create_key),
    Page("GET", "/keys/{key_id}", key_actions.show_key),
    Page("POST", "/keys/{key_id}", key_actions.edit_key),
    Page("GET", "/keys/{key_id}/rotate", key_actions.rotate_form),
    Page("POST", "/keys/{key_id}/rotate", key_actions.rotate_key),
    Page("GET", "/keys/{key_id}/{action:expire|revoke|delete}", key_actions.confirm),
    Page("POST", "/keys/{key_id}/{action:expire|revoke|delete}", key_actions.retire),
    Page("POST", "/keys/{key_id}/groups", key_actions.key_groups, admin=True),
    Page("GET", "/users", people.list_users, admin=True),
    Page("POST", "/users", people.create_user, admin=True),
    Page("GET", "/users/{user_id}", people.show_user, admin=True),
    Page("POST", "/users/{user_id}", people.edit_user, admin=True),
    Page("POST", "/users/{user_id}/sessions", people.end_sessions, admin=True),
    Page("GET", "/groups", people.list_groups, admin=True),
    Page("POST", "/groups", people.create_group, admin=True),
    Page("GET", "/groups/{group_id}", people.show_group, admin=True),
    Page("POST", "/groups/{group_id}", people.edit_group, admin=True),
    Page("GET", "/teams", teams.list_teams, admin=True),
    Page("POST", "/teams", teams.create_team, admin=True),
    Page("GET", "/teams/{team_id}", teams.show_team, admin=True),
    Page("POST", "/teams/{team_id}", teams.edit_team, admin=True),
    Page("GET", "/activity", activity.show_activity),
]


def _admin_only(handler: Handler) -> Handler:
    async def checked(request: web.Request) -> web.StreamResponse:
        if not viewer(request).is_admin:
            return render(
                request,
                "ui/error.html",
                {
                    "title": "For administrators",
                    "message": "This page is for administrators. Your keys are under My API keys.",
                },
                403,
            )
        return await handler(request)

    return checked


@web.middleware
async def signed_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every page: a signed-in person (else the sign-in page), a same-site form, and
    errors as pages that say what to do next."""
    try:
        who = await find_viewer(request)
    except StoreError as exc:
        return render(
            request, "ui/error.html", {"title": "Unavailable", "message": store_failed(exc)}, 503
        )
    except Refused as refused:  # the rules every door applies: an allowlist, a limit
        return render(request, "ui/error.html",
                      {"title": "Not allowed from here", "message": refused_message(refused),
                       "no_links": True}, refused.reason.outcome.value)  # fmt: skip
    if who is None:
        if request.method in SAFE_METHODS:
            return to_login(request)
        return render(
            request,
            "ui/error.html",
            {
                "title": "Signed out",
                "message": "Your session has ended. Sign in again, then "
                "repeat what you were doing.",
            },
            401,
        )
    request[VIEWER_KEY] = who
    if request.method not in SAFE_METHODS and from_elsewhere(
        request, sign_in_ctx(request).trusted_origins
    ):
        return render(
            request,
            "ui/error.html",
            {
                "title": "Refused",
                "message": "This form came from another site and was refused. "
                "Open the page here and send it again.",
            },
            403,
        )
    try:
        return await handler(request)
    except (NotFound, web.HTTPNotFound):
        return render(
            request,
            "ui/error.html",
            {
                "title": "Not found",
                "message": "There is nothing here, or it is not yours to "
                "see. Go back to the list and pick again.",
            },
            404,
        )
    except StoreError as exc:
        return render(
            request, "ui/error.html", {"title": "Unavailable", "message": store_failed(exc)}, 503
        )


def ui_app(base: str, sign_in: dict[str, SignIn], admin: ContextHolder) -> web.Application:
    """The UI as an application mounted at ``base``; it reads the sign-in pages' and the
    admin API's contexts (filled by the server once the store is open)."""
    app = web.Application(client_max_size=MAX_FORM, middlewares=[signed_in])
    app[HOLDERS] = Holders(sign_in, admin)
    app[BASE] = base
    env = setup_templates(app)
    env.filters.update(when=when, ago=ago)
    for each in PAGES:
        handler = _admin_only(each.handler) if each.admin else each.handler
        app.router.add_route(each.method, each.path, handler)
    return app
