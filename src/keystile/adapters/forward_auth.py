"""Traefik ForwardAuth and Caddy ``forward_auth`` at ``/auth/forward``.

The proxy sends a GET with the original request in ``X-Forwarded-Method``,
``-Proto``, ``-Host`` and ``-Uri`` (believed only from a trusted proxy). Any
non-2xx answer goes to the client as it is, so a rate limit is a real 429.
On 2xx the proxy copies the listed response headers onto the request; every
header keystile speaks for but does not set this time is sent empty, so a
proxy that copies only headers present in the answer (Caddy before 2.10)
still overwrites a client's forged or leftover value.
"""

from __future__ import annotations

from aiohttp import web

from keystile.adapters.base import Adapter, deny_response, rate_headers
from keystile.clientip import TrustedProxies
from keystile.decide import Decision, Facts


def facts(request: web.Request, trusted: TrustedProxies) -> Facts:
    headers = request.headers
    peer = request.remote
    client_ip = trusted.client_ip(peer, headers.get("X-Forwarded-For"))
    if not trusted.trusts(peer):
        return Facts("forward", request.method, request.host, None, headers, client_ip)
    return Facts(
        adapter="forward",
        method=(headers.get("X-Forwarded-Method") or "GET").upper(),
        host=headers.get("X-Forwarded-Host") or request.host,
        target=headers.get("X-Forwarded-Uri"),
        headers=headers,
        client_ip=client_ip,
    )


def render(decision: Decision) -> web.Response:
    reason = decision.reason
    if reason is None:
        headers = [*decision.upstream, *((name, "") for name in decision.strip),
                   *rate_headers(decision)]  # fmt: skip
        return web.Response(status=200, headers=headers)
    return deny_response(decision)


ADAPTER = Adapter(name="forward", path="/auth/forward", facts=facts, render=render)
