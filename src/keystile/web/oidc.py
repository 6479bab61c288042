"""``/_keystile/oidc/start``, ``/_keystile/oidc/callback`` and ``/_keystile/keys/sso``.

"Sign in with <provider>" links to ``start``, which stores the sign-in (see
:mod:`keystile.sso`), sets a short-lived cookie binding it to this browser and
sends the browser to the provider. The provider sends it back to ``callback``,
which finishes the sign-in and starts a browser session. Every refusal is a
page with a reason code, what to do, and a link to try again; never a traceback.

``/_keystile/keys/sso`` lets a signed-in person make themselves a key, shown once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from keystile.core.cookies import cookie_line, session_token
from keystile.core.errors import StoreError
from keystile.core.returnurl import safe_return
from keystile.identity.oidc import OIDCFailure, new_secret
from keystile.identity.sso import AtLimit, SelfServiceKeys, SingleSignOn
from keystile.web.pages import BadForm, client_address, from_elsewhere, page, read_form
from keystile.web.signin import (
    HOLDER,
    LOGIN,
    PREFIX,
    Refused,
    SignIn,
    refused_message,
    see_other,
    signed_in,
)

log = logging.getLogger("keystile.web.oidc")
START = PREFIX + "/oidc/start"
CALLBACK = PREFIX + "/oidc/callback"
KEYS_PAGE = PREFIX + "/keys/sso"
BINDING_AGE = 600  # seconds: the browser-binding cookie lives as long as a pending sign-in
SECURE_BINDING, PLAIN_BINDING = "__Host-keystile-oidc", "keystile_oidc"


@dataclass(slots=True)
class OIDCPages:
    sso: SingleSignOn | None  # None: OpenID Connect is off
    keys: SelfServiceKeys | None  # None: no self-service keys
    issuer: str
    email_domains: tuple[str, ...]


OIDC_HOLDER = web.AppKey("oidc_holder", dict[str, OIDCPages])

# reason code: (status, title, what the person can do)
FAILURES: dict[str, tuple[int, str, str]] = {
    "oidc_off": (404, "Single sign-on is not set up",
                 "Sign in with your user name and password instead."),
    "provider_unreachable": (502, "The identity provider could not be reached",
                             "Try again in a minute. If it keeps failing, the administrator "
                             "should check that keystile can reach the provider."),
    "provider_error": (502, "The identity provider gave an answer keystile cannot use",
                       "Try again; if it keeps failing, tell the administrator the reason "
                       "code below."),
    "invalid_client": (502, "The identity provider refused keystile's client credentials",
                       "This is a setting on the server (client id or secret), not something "
                       "you did: tell the administrator. Trying again will not help until it "
                       "is fixed."),
    "code_rejected": (400, "The sign-in code expired or was already used",
                      "Start the sign-in again."),
    "code_missing": (400, "The provider sent no sign-in code", "Start the sign-in again."),
    "state_missing": (400, "This sign-in link is incomplete", "Start the sign-in again."),
    "state_unknown": (400, "This sign-in link was already used or has expired",
                      "A sign-in link works once, for 10 minutes. Start the sign-in again."),
    "state_mismatch": (400, "This sign-in was started in another browser",
                       "Start the sign-in again in this browser (and allow its cookies)."),
    "state_expired": (400, "This sign-in took too long",
                      "Finish signing in within 10 minutes: start again."),
    "issuer_mismatch": (400, "The answer came from another identity provider",
                        "Start the sign-in again."),
    "consent_denied": (403, "You did not allow keystile to see your account",
                       "To sign in, start again and allow access at the provider."),
    "email_missing": (403, "The provider did not share your email address",
                      "Start again and allow keystile to see your email address."),
    "email_invalid": (403, "Your email address is not one keystile accepts",
                      "Sign in with an account whose address is plain ASCII, such as "
                      "name@example.com, or ask an administrator."),
    "email_not_verified": (403, "Your email address is not verified",
                           "Verify your email address with the identity provider, then "
                           "sign in again."),
    "domain_not_allowed": (403, "Your email domain may not sign in here",
                           "Sign in with an account of an allowed domain."),
    "user_disabled": (403, "Your account is disabled",
                      "Ask an administrator to enable it."),
    "bad_id_token": (502, "The identity provider's ID token failed a check",
                     "Try again; if it keeps failing, tell the administrator the reason "
                     "code and detail below (a wrong clock on the server is a common cause)."),
    "cross_site": (403, "This request came from another site",
                   "Open the page yourself and press its button there."),
    "store_unavailable": (503, "Signing in is unavailable right now",
                          "Try again in a moment."),
    "not_allowed_here": (403, "Not allowed from here",
                         "Your team's rules refuse this from where you are (an address "
                         "allowlist or a limit); ask an administrator if that is wrong."),
    "bad_form": (400, "The form could not be read",
                 "Open the page again and press its button there."),
    "internal_error": (503, "Something went wrong on keystile's side",
                       "Try again; if it keeps failing, tell the administrator (the server "
                       "log has the details)."),
}  # fmt: skip


def _pages(request: web.Request) -> OIDCPages:
    return request.app[OIDC_HOLDER]["current"]


def _signin(request: web.Request) -> SignIn:
    return request.app[HOLDER]["current"]


def binding_cookie(ctx: SignIn) -> str:
    return SECURE_BINDING if ctx.secure else PLAIN_BINDING


def failure_page(request: web.Request, code: str, *, message: str | None = None,
                 detail: str | None = None, rd: str = "/") -> web.Response:  # fmt: skip
    status, title, advice = FAILURES[code]
    pages = _pages(request)
    if code == "domain_not_allowed" and pages.email_domains:
        advice = f"Sign in with an account of {', '.join(pages.email_domains)}."
    retry = START + "?rd=" + quote(rd, safe="/") if pages.sso is not None else None
    context = {
        "title": title,
        "message": message,
        "advice": advice,
        "code": code,
        "detail": detail,
        "retry": retry,
        "login": LOGIN + "?rd=" + quote(rd, safe="/"),
    }
    return page(request, "oidc_failure.html", context, status)  # fmt: skip


async def _refused(request: web.Request, failure: OIDCFailure, rd: str = "/") -> web.Response:
    sso = _pages(request).sso
    address = client_address(request, _signin(request).trusted)
    log.info("OIDC sign-in refused: %s (%s), address %s", failure.code, failure.detail, address)
    if sso is not None:
        try:
            await sso.refused(failure, address)
        except StoreError as exc:
            log.warning("audit of a refused OIDC sign-in failed: %s", exc)
    return failure_page(request, failure.code, message=failure.message, detail=failure.detail,
                        rd=rd)  # fmt: skip


async def start(request: web.Request) -> web.Response:
    ctx, sso = _signin(request), _pages(request).sso
    if sso is None:
        return failure_page(request, "oidc_off")
    rd = safe_return(request.query.get("rd"), ctx.return_hosts)
    cookie = binding_cookie(ctx)
    # reuse this browser's binding: two tabs signing in at once both finish
    browser = session_token(cookie_line(request.headers), cookie)
    if browser is None or len(browser) != 43:
        browser = new_secret()
    try:
        url = await sso.begin(rd, browser)
    except OIDCFailure as failure:
        return await _refused(request, failure, rd)
    except StoreError as exc:
        log.warning("OIDC sign-in could not start, store unavailable: %s", exc)
        return failure_page(request, "store_unavailable", rd=rd)
    response = see_other(url)
    response.set_cookie(cookie, browser, max_age=BINDING_AGE, path="/", secure=ctx.secure,
                        httponly=True, samesite="Lax")  # fmt: skip
    return response


async def callback(request: web.Request) -> web.Response:
    ctx, pages = _signin(request), _pages(request)
    sso = pages.sso
    if sso is None:
        return failure_page(request, "oidc_off")
    query = request.query
    cookie = binding_cookie(ctx)
    browser = session_token(cookie_line(request.headers), cookie)
    address = client_address(request, ctx.trusted)
    rd = "/"
    try:
        try:
            error = query.get("error")
            if error is not None:  # the sign-in ends here: its state is used up too
                with contextlib.suppress(OIDCFailure):
                    rd = (await sso.take(query.get("state"), browser)).return_to
                raise _provider_refusal(error)
            pending = await sso.take(query.get("state"), browser)
            rd = pending.return_to
            iss = query.get("iss")  # RFC 9207: which provider answered (mix-up defence)
            if iss is not None and iss != pages.issuer:
                raise OIDCFailure("issuer_mismatch", "The answer names another provider.")
            signed = await sso.finish(pending, query.get("code"), address,
                                      request.headers.get("User-Agent"))  # fmt: skip
        except OIDCFailure as failure:
            response = await _refused(request, failure, rd)
            response.del_cookie(cookie, path="/", secure=ctx.secure, httponly=True,
                                samesite="Lax")  # fmt: skip
            return response
    except StoreError as exc:
        log.warning("OIDC sign-in failed, store unavailable: %s", exc)
        return failure_page(request, "store_unavailable", rd=rd)
    log.info("signed in with OIDC: user %s, session %s", signed.user.id, signed.session.id)
    response = see_other(rd)
    response.set_cookie(ctx.cookie, signed.token, max_age=int(ctx.absolute), path="/",
                        secure=ctx.secure, httponly=True, samesite="Lax")  # fmt: skip
    response.del_cookie(cookie, path="/", secure=ctx.secure, httponly=True, samesite="Lax")
    return response


def _provider_refusal(error: str) -> OIDCFailure:
    if error == "access_denied":
        return OIDCFailure("consent_denied", "The provider says access was not allowed.", error)
    shown = "".join(ch for ch in error[:64] if ch.isalnum() or ch in "_-.")
    return OIDCFailure("provider_error", f"The provider refused the sign-in ({shown}).", shown)


# -- self-service keys ----------------------------------------------------------------------


async def _keys_context(request: web.Request) -> tuple[SelfServiceKeys | None, Any]:
    keys = _pages(request).keys
    if keys is None:
        return None, None
    return keys, await signed_in(request, _signin(request))  # Refused: the door's rules say no


def _not_here(request: web.Request, refused: Refused) -> web.Response:
    reason = refused.reason
    return failure_page(request, "not_allowed_here", message=refused_message(refused),
                        detail=f"{reason.code}/{reason.detail}", rd=KEYS_PAGE)  # fmt: skip


async def keys_page(request: web.Request) -> web.Response:
    try:
        keys, record = await _keys_context(request)
        if keys is None:
            return failure_page(request, "oidc_off")
        if record is None:
            return see_other(LOGIN + "?rd=" + quote(KEYS_PAGE, safe="/"))
        active = await keys.active(record.user_id)
    except StoreError:
        return failure_page(request, "store_unavailable", rd=KEYS_PAGE)
    except Refused as refused:
        return _not_here(request, refused)
    if len(active) >= keys.policy.limit:  # say why the button is off, and what to delete
        return _render_keys(request, keys, record, active, oldest=active[0],
                            error=at_limit(keys.policy.limit))  # fmt: skip
    return _render_keys(request, keys, record, active)


def _render_keys(request: web.Request, keys: SelfServiceKeys, record: Any, active: list[Any],
                 *, issued: Any = None, oldest: Any = None, error: str | None = None,
                 status: int = 200) -> web.Response:  # fmt: skip
    context = {
        "user": record,
        "active": active,
        "policy": keys.policy,
        "issued": issued,
        "oldest": oldest,
        "error": error,
        "days": keys.policy.expires_in / 86400,
    }
    return page(request, "sso_keys.html", context, status)  # fmt: skip


def at_limit(limit: int) -> str:
    return (f"You have {limit} active keys already, the most allowed. Delete one (the "
            "oldest is named below) to make a new one.")  # fmt: skip


async def make_key(request: web.Request) -> web.Response:
    ctx = _signin(request)
    if from_elsewhere(request, ctx.trusted_origins):
        return failure_page(request, "cross_site", rd=KEYS_PAGE)
    try:
        keys, record = await _keys_context(request)
        if keys is None:
            return failure_page(request, "oidc_off")
        if record is None:
            return see_other(LOGIN + "?rd=" + quote(KEYS_PAGE, safe="/"))
        try:
            form = await read_form(request)
        except BadForm as bad:
            log.info("self-service key form refused: %s", bad.message)
            return failure_page(request, "bad_form", rd=KEYS_PAGE)
        if form.get("delete"):
            return await _delete_key(request, keys, record, form["delete"])
        try:
            issued = await keys.issue(record.user_id, record.name)
        except AtLimit as full:
            active = await keys.active(record.user_id)
            return _render_keys(
                request,
                keys,
                record,
                active,
                oldest=full.oldest,
                status=409,
                error=at_limit(full.limit),
            )
        active = await keys.active(record.user_id)
    except StoreError:
        return failure_page(request, "store_unavailable", rd=KEYS_PAGE)
    except Refused as refused:
        return _not_here(request, refused)
    log.info("self-service key %s made for user %s", issued.record.id, record.user_id)
    return _render_keys(request, keys, record, active, issued=issued, status=201)


async def _delete_key(request: web.Request, keys: SelfServiceKeys, record: Any,
                      key_id: str) -> web.Response:  # fmt: skip
    active = await keys.active(record.user_id)
    if key_id not in {key.id for key in active}:
        return _render_keys(request, keys, record, active, status=404,
                            error="No such key of yours (deleted already?).")  # fmt: skip
    await keys.keys.delete(key_id, actor=record.name)
    return see_other(KEYS_PAGE)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def guarded(handler: Handler) -> Handler:
    """A bug shows a plain page with a reason code, never a traceback (it is logged)."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return failure_page(request, "internal_error")

    return run


def add_routes(app: web.Application) -> None:
    """Register the pages on the sign-in pages' app (mounted at /_keystile)."""
    app[OIDC_HOLDER] = {}
    app.router.add_get("/oidc/start", guarded(start))
    app.router.add_get("/oidc/callback", guarded(callback))
    app.router.add_get("/keys/sso", guarded(keys_page))
    app.router.add_post("/keys/sso", guarded(make_key))
