"""``/_keystile/login``, ``/_keystile/logout`` and ``/_keystile/whoami``.

The sign-in form posts the user name and password; a success sets the session
cookie (``__Host-`` prefixed, HttpOnly, Secure, SameSite=Lax, Path=/) and
sends the browser back to where it was going (a return URL checked by
:func:`keystile.returnurl.safe_return`). A wrong name and a wrong password
get the same page; repeated failures lock the name and address for a while.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from keystile.core.clientip import TrustedProxies
from keystile.core.cookies import cookie_line, session_token
from keystile.core.decide import Decision
from keystile.core.errors import StoreError
from keystile.core.model import ACTIVE, SESSION, KeyRecord
from keystile.core.returnurl import safe_return
from keystile.identity.sessions import SessionService, SignInRefused
from keystile.serve.cache import CachedLookup
from keystile.web.pages import (
    MAX_FORM,
    SECURITY_HEADERS,
    STATIC,
    BadForm,
    client_address,
    from_elsewhere,
    page,
    read_form,
    secured,
    setup_templates,
)

PREFIX = "/_keystile"
LOGIN = PREFIX + "/login"
log = logging.getLogger("keystile.web")


@dataclass(slots=True)
class SignIn:
    """What the pages need, set once the store is open."""

    sessions: SessionService
    cache: CachedLookup  # sessions by token hash
    trusted: TrustedProxies
    cookie: str  # the session cookie's name
    secure: bool
    return_hosts: tuple[str, ...]
    trusted_origins: frozenset[str]
    absolute: float
    oidc_name: str | None = None  # "Sign in with <name>" when OpenID Connect is on
    # the auth path's judgement of a caller of keystile itself (Authorizer.admit): the
    # session's state, its team's allowlist and limits, as the admin API judges keys
    admit: Callable[[KeyRecord, str | None], Awaitable[Decision]] | None = None


class Refused(Exception):
    """A signed-in person the rules refuse here and now (an allowlist, a limit)."""

    def __init__(self, decision: Decision) -> None:
        assert decision.reason is not None
        super().__init__(decision.reason.message)
        self.decision = decision
        self.reason = decision.reason


def refused_message(refused: Refused) -> str:
    """What a signed-in person refused by their rules is told (the reason's own
    message speaks of an API key)."""
    reason, retry = refused.reason, refused.decision.retry_after
    if reason.code == "ip_not_allowed":
        return (
            "Your account (or its team) may use keystile only from certain addresses, "
            "and this is not one of them. Ask an administrator if that is wrong."
        )
    if retry is not None:
        return f"Too many requests from your account for now: try again in {retry} seconds."
    return f"Your account may not use keystile right now ({reason.code})."


SIGN_IN = web.AppKey("sign_in", SignIn)
# the app holding SIGN_IN (set by the server once the store is open)
HOLDER = web.AppKey("sign_in_holder", dict[str, SignIn])


def _ctx(request: web.Request) -> SignIn:
    return request.app[HOLDER]["current"]


async def signed_in(request: web.Request, ctx: SignIn) -> Any:
    """The active session record of the request's cookie, or None; :class:`Refused`
    when the rules every door applies refuse that person from here (their team's
    allowlist, a limit)."""
    token = session_token(cookie_line(request.headers), ctx.cookie)
    if token is None:
        return None
    entry = await ctx.cache.find(token)
    if entry is None:
        return None
    record = entry.record
    now = ctx.sessions.clock()
    if record.kind != SESSION or record.state(now) != ACTIVE:
        return None
    if ctx.admit is not None:
        client_ip = ctx.trusted.client_ip(request.remote, request.headers.get("X-Forwarded-For"))
        decision = await ctx.admit(record, client_ip)
        if decision.reason is not None:
            raise Refused(decision)
    return record


def _form_page(request: web.Request, rd: str, *, error: str | None = None,
               notice: str | None = None, name: str = "", status: int = 200,
               user: Any = None) -> web.Response:  # fmt: skip
    oidc_name = _ctx(request).oidc_name
    return page(request, "login.html",
                {"rd": rd, "error": error, "notice": notice, "name": name, "user": user,
                 "oidc_name": oidc_name}, status)  # fmt: skip


def see_other(location: str) -> web.Response:
    """303 to ``location``: after a form, the browser GETs it."""
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location})


async def login_page(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    rd = safe_return(request.query.get("rd"), ctx.return_hosts)
    notice = "You have signed out." if "signed_out" in request.query else None
    try:
        user = await signed_in(request, ctx)
    except (StoreError, Refused):
        user = None
    return _form_page(request, rd, notice=notice, user=user)


async def login(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    if from_elsewhere(request, ctx.trusted_origins):
        return _form_page(request, "/", error="This sign-in came from another site and was "
                          "refused.", status=403)  # fmt: skip
    try:
        form = await read_form(request)
    except BadForm as bad:
        return _form_page(request, "/", error=bad.message, status=bad.status)
    name, password = form.get("username", ""), form.get("password", "")
    rd = safe_return(form.get("rd") or None, ctx.return_hosts)
    if not name or not password:
        return _form_page(request, rd, error="Enter your user name and password.", name=name,
                          status=400)  # fmt: skip
    address = client_address(request, ctx.trusted)
    try:
        signed = await ctx.sessions.sign_in(name, password, address,
                                            request.headers.get("User-Agent"))  # fmt: skip
    except SignInRefused as refused:
        log.info("sign-in refused: %s (address %s)", refused.code, address)
        status = 429 if refused.code in ("locked_out", "busy") else 401
        return _form_page(request, rd, error=refused.message, name=name, status=status)
    except StoreError as exc:
        log.warning("sign-in failed, store unavailable: %s", exc)
        return _form_page(request, rd, error="Signing in is unavailable right now; try again "
                          "in a moment.", name=name, status=503)  # fmt: skip
    log.info("signed in: user %s, session %s", signed.user.id, signed.session.id)
    response = see_other(rd)
    response.set_cookie(ctx.cookie, signed.token, max_age=int(ctx.absolute), path="/",
                        secure=ctx.secure, httponly=True, samesite="Lax")  # fmt: skip
    return response


async def logout(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    if from_elsewhere(request, ctx.trusted_origins):
        return _form_page(request, "/", error="This sign-out came from another site and was "
                          "refused.", status=403)  # fmt: skip
    token = session_token(cookie_line(request.headers), ctx.cookie)
    if token is not None:
        try:
            await ctx.sessions.sign_out(token)
        except StoreError as exc:
            log.warning("sign-out failed, store unavailable: %s", exc)
            return _form_page(request, "/", error="Signing out is unavailable right now; try "
                              "again in a moment.", status=503)  # fmt: skip
    response = see_other(LOGIN + "?signed_out=1")
    response.del_cookie(ctx.cookie, path="/", secure=ctx.secure, httponly=True, samesite="Lax")
    return response


async def whoami(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    try:
        record = await signed_in(request, ctx)
    except StoreError:
        return web.json_response({"signed_in": False, "error": "auth_unavailable"}, status=503,
                                 headers=SECURITY_HEADERS)  # fmt: skip
    except Refused as refused:
        return web.json_response({"signed_in": True, "error": refused.reason.code,
                                  "detail": refused.reason.detail},
                                 status=refused.reason.outcome.value,
                                 headers=SECURITY_HEADERS)  # fmt: skip
    if record is None:
        return web.json_response({"signed_in": False}, status=401, headers=SECURITY_HEADERS)
    body = {"signed_in": True,
            "user": {"id": record.user_id, "name": record.name, "email": record.owner,
                     "role": record.role},
            "scopes": list(record.granted), "groups": [name for _, name, _ in record.groups],
            "session": {"id": record.id, "expires_at": record.expires_at}}  # fmt: skip
    return web.json_response(body, headers=SECURITY_HEADERS)


def sign_in_app() -> web.Application:
    """The pages under ``/_keystile`` (mounted by the server on the main listener)."""
    app = web.Application(client_max_size=MAX_FORM, middlewares=[secured])
    app[HOLDER] = {}
    setup_templates(app)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/whoami", whoami)
    app.router.add_static("/static", STATIC, append_version=False)
    return app
