"""Envoy ``ext_authz`` HTTP service at ``/auth/envoy/...`` (``path_prefix: /auth/envoy``).

Envoy sends the client's method, our prefix plus the original path and query
(as the client sent it: decoded once, here), the Host, and the headers its
``allowed_headers`` names. Only 200 allows (202/204 deny). On a deny Envoy
passes the status, the body and (with ``allowed_client_headers``) the headers
to the client, so a deny carries nothing but the safe headers.
"""

from __future__ import annotations

from aiohttp import web

from keystile.adapters.base import Adapter, deny_response, rate_headers
from keystile.clientip import TrustedProxies
from keystile.decide import Decision, Facts

PREFIX = "/auth/envoy"
REMOVE_HEADER = "x-envoy-auth-headers-to-remove"


def facts(request: web.Request, trusted: TrustedProxies) -> Facts:
    headers = request.headers
    peer = request.remote
    raw = request.raw_path
    target = raw[len(PREFIX) :] if raw.startswith(PREFIX + "/") else None
    if not trusted.trusts(peer):
        target = None  # an allow carries upstream secrets: only our proxies get one
    client_ip = trusted.client_ip(peer, headers.get("X-Forwarded-For"))
    return Facts("envoy", request.method, request.host, target, headers, client_ip)


def render(decision: Decision) -> web.Response:
    reason = decision.reason
    if reason is None:
        headers = [*decision.upstream, *rate_headers(decision)]
        if decision.strip:
            # only headers we do not set: Envoy may apply removals after setting
            headers.append((REMOVE_HEADER, ",".join(decision.strip)))
        return web.Response(status=200, headers=headers)
    return deny_response(decision)


ADAPTER = Adapter(name="envoy", path=PREFIX + "/{tail:.*}", facts=facts, render=render)
