"""What every UI page shares: who is signed in (and what they may do), rendering,
form fields, and turning the service layer's refusals into sentences.

The person signed in is judged by the admin API's own rules
(:class:`keystile.admin.auth.Caller`): an admin may do everything; a member sees
and changes only their own keys and never makes a key that may do more than
they may (:func:`keystile.bounds.excess`). One rule, two front doors.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from keystile.core.durations import format_instant
from keystile.core.errors import Conflict, InvalidInput, NotFound, StoreError
from keystile.core.model import KeyRecord
from keystile.manage.context import AdminContext, ContextHolder
from keystile.manage.permissions import Caller
from keystile.manage.refusal import ApiError
from keystile.web.pages import SECURITY_HEADERS, page
from keystile.web.signin import LOGIN, SignIn, signed_in

log = logging.getLogger("keystile.ui")
MAX_FORM = 64 * 1024
# the UI's pages may load the one script shipped beside them (the copy button)
UI_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": SECURITY_HEADERS["Content-Security-Policy"].replace(
        "default-src 'none';", "default-src 'none'; script-src 'self';"
    ),
}


@dataclass(slots=True)
class Holders:
    """Filled by the server once the store is open (shared with the sign-in pages and
    the admin API, so the UI needs no wiring of its own)."""

    sign_in: dict[str, SignIn]
    admin: ContextHolder


HOLDERS = web.AppKey("ui_holders", Holders)
BASE = web.AppKey("ui_base", str)  # where the UI is mounted: /_keystile/ui or /ui


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in person and what the admin API's rules let them do."""

    session: KeyRecord
    caller: Caller
    base: str

    @property
    def is_admin(self) -> bool:
        return self.caller.is_admin

    @property
    def user_id(self) -> str | None:
        return self.session.user_id

    @property
    def name(self) -> str:
        return self.session.name

    @property
    def actor(self) -> str:
        """Who the audit log names: the person's sign-in name."""
        return self.session.name

    @property
    def granted(self) -> tuple[str, ...]:
        return self.session.granted


# aiohttp 3.13+ wants typed request keys; older ones take a string
VIEWER_KEY: Any = (
    web.RequestKey("keystile_ui_viewer", Viewer) if hasattr(web, "RequestKey") else "ks_ui_viewer"
)


def bound_of(session: KeyRecord) -> Caller:
    """The session as a caller whose rights bound the keys they make: the person's
    scopes (role and groups) and their team's rules; not the session's own end, which
    says when this sign-in stops, not when the person's rights do."""
    return Caller(replace(session, expires_at=None))


def services(request: web.Request) -> AdminContext:
    ctx = request.config_dict[HOLDERS].admin.context
    assert ctx is not None, "the UI is served only once the store is open"
    return ctx


def sign_in_ctx(request: web.Request) -> SignIn:
    return request.config_dict[HOLDERS].sign_in["current"]


async def find_viewer(request: web.Request) -> Viewer | None:
    """The signed-in person of the request's session cookie (as ``whoami`` reads it)."""
    record = await signed_in(request, sign_in_ctx(request))
    if record is None:
        return None
    return Viewer(record, bound_of(record), request.config_dict[BASE])


def viewer(request: web.Request) -> Viewer:
    found: Viewer = request[VIEWER_KEY]
    return found


def render(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    who = request.get(VIEWER_KEY)
    base = request.config_dict[BASE]
    done = DONE.get(request.query.get("done", ""))
    response = page(
        request,
        template,
        {"viewer": who, "base": base, "done": done, "error": None, "path": request.path, **context},
        status,
    )
    response.headers.update(UI_HEADERS)
    return response


def see_other(location: str, **headers: str) -> web.Response:
    """303 after a form: the browser GETs ``location`` (POST-redirect-GET)."""
    return web.Response(status=303, headers={**UI_HEADERS, "Location": location, **headers})


def to_login(request: web.Request) -> web.Response:
    from urllib.parse import quote

    return web.Response(
        status=303,
        headers={**UI_HEADERS, "Location": f"{LOGIN}?rd={quote(request.path_qs, safe='/')}"},
    )


async def form_of(request: web.Request) -> MultiDictProxy[str | Any]:
    if (request.content_length or 0) > MAX_FORM:
        raise InvalidInput("form", "the form is larger than 64 KiB")
    return await request.post()


def text(form: MultiDictProxy[Any], name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def words(value: str) -> list[str]:
    """Items of a field written one a line or separated by commas or spaces."""
    return [item for item in value.replace(",", " ").split() if item]


def problem(exc: Exception) -> str:
    """A refusal as a sentence that says what was wrong and what to do."""
    if isinstance(exc, InvalidInput):
        return f"{exc.field}: {str(exc).split(': ', 1)[-1]}"
    if isinstance(exc, ApiError):
        if exc.code in ("scope_not_grantable", "exceeds_own_key"):
            detail = exc.message.split("itself: ", 1)[-1]
            return (
                "You cannot give a key more rights than you have yourself: "
                f"{detail}. Choose less, or ask an administrator."
            )
        return exc.message
    if isinstance(exc, Conflict | NotFound):
        return str(exc)
    return "That did not work; try again."


# what a finished action says on the page it lands on (?done=...)
DONE = {
    "renamed": "Saved.",
    "saved": "Saved.",
    "expired": "The key has expired: it no longer works.",
    "revoked": "The key is revoked: it no longer works. Its record is kept.",
    "deleted": "The key is deleted. Its history is kept.",
    "group_added": "Added to the group.",
    "group_removed": "Removed from the group.",
    "created": "Created.",
    "session_ended": "The session has ended.",
    "sessions_ended": "Every session of this person has ended.",
    "disabled": "Disabled: their sessions and keys stopped.",
    "enabled": "Enabled again.",
    "already": "That form was already sent: a key is shown only once. Here is its page.",
}


def when(seconds: float | None, never: str = "never") -> str:
    """A time as people read it: ``2025-03-04 17:05 UTC``."""
    if seconds is None:
        return never
    return format_instant(seconds)[:16].replace("T", " ") + " UTC"


def ago(seconds: float | None, never: str = "never") -> str:
    """``3 days ago``, ``in 2 hours``."""
    if seconds is None:
        return never
    delta = seconds - time.time()
    span = abs(delta)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if span >= size:
            count = int(span // size)
            phrase = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {phrase}" if delta > 0 else f"{phrase} ago"
    return "just now"


def store_failed(exc: StoreError) -> str:
    log.warning("UI: store unavailable: %s", exc)
    return "The key store is unavailable right now; try again in a moment."
