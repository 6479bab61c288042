"""What every page shares: the template environment, security headers, the
client's address and the cross-site check."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp_jinja2
import jinja2
from aiohttp import web

from keystile.core.clientip import TrustedProxies
from keystile.core.crossorigin import cross_site

log = logging.getLogger("keystile.web")
HERE = Path(__file__).parent
STATIC = HERE / "static"
# no script, no inline style, nothing from elsewhere; forms post to this site only
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")  # fmt: skip
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def timestamp(at: float | None) -> str:
    """A stored time for people: UTC, to the minute; None is "never"."""
    return "never" if at is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def setup_templates(app: web.Application) -> jinja2.Environment:
    return aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
        filters={"timestamp": timestamp},
    )


def page(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers.update(SECURITY_HEADERS)
    return response


MAX_FORM = 8 * 1024  # a sign-in form is a few hundred bytes
FORM_TYPE = "application/x-www-form-urlencoded"


class BadForm(Exception):
    """A form body keystile will not read; ``status`` and a message a person can act on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_form(request: web.Request, fields: int = 16) -> dict[str, str]:
    """The fields of a URL-encoded UTF-8 form body of at most MAX_FORM bytes (the first
    value of each name). Anything else is BadForm, never an exception from a parser."""
    body = await request.content.read(MAX_FORM + 1)
    if len(body) > MAX_FORM:
        raise BadForm(413, "The form is too large.")
    if not body:  # a form of buttons only
        return {}
    kind = request.headers.get("Content-Type", "")
    media, _, params = kind.partition(";")
    charset = params.strip().lower().removeprefix("charset=").strip('"') if params else "utf-8"
    if media.strip().lower() != FORM_TYPE or charset not in ("utf-8", "utf8"):
        raise BadForm(415, "Send the form as a web browser does (URL-encoded UTF-8).")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                          max_num_fields=fields, errors="strict")  # fmt: skip
    except (UnicodeDecodeError, ValueError):
        raise BadForm(400, "The form could not be read.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


@web.middleware
async def secured(request: web.Request, handler: Any) -> web.StreamResponse:
    """Security headers on every answer, errors included; a fault of ours is a 503
    page (logged), never a 500 with a traceback."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    except Exception:
        log.exception("page %s failed", request.path)
        return web.Response(status=503, text="keystile: this page is unavailable right now; "
                            "try again in a moment.\n", headers=SECURITY_HEADERS)  # fmt: skip
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def client_address(request: web.Request, trusted: TrustedProxies) -> str:
    """The browser's address: ``X-Forwarded-For`` read right to left through trusted
    proxies, as on the auth path (never ``X-Real-IP``: some proxies pass a client's own)."""
    forwarded = ", ".join(request.headers.getall("X-Forwarded-For", [])) or None
    return trusted.client_ip(request.remote, forwarded) or "unknown"


def from_elsewhere(request: web.Request, trusted_origins: frozenset[str]) -> bool:
    """An unsafe request a page of another site made the browser send."""
    return cross_site(request.method, request.host, request.headers, trusted_origins)
