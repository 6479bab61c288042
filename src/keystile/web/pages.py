"""What every page shares: the template environment, security headers, the
client's address and the cross-site check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from keystile.clientip import TrustedProxies
from keystile.crossorigin import cross_site

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


def setup_templates(app: web.Application) -> jinja2.Environment:
    return aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )


def page(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def secured(request: web.Request, handler: Any) -> web.StreamResponse:
    """Security headers on every answer, errors included."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def client_address(request: web.Request, trusted: TrustedProxies) -> str:
    """The browser's address: from the proxy's headers when the peer is a trusted proxy."""
    peer = request.remote
    if trusted.trusts(peer):
        real = request.headers.get("X-Real-IP")
        if real:
            return real.strip()[:64]
    return trusted.client_ip(peer, request.headers.get("X-Forwarded-For")) or "unknown"


def from_elsewhere(request: web.Request, trusted_origins: frozenset[str]) -> bool:
    """An unsafe request a page of another site made the browser send."""
    return cross_site(request.method, request.host, request.headers, trusted_origins)
