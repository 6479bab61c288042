"""Envoy ``ext_authz`` HTTP service at ``/auth/envoy/...`` (``path_prefix: /auth/envoy``).

Envoy sends the client's method, our prefix plus the original path and query
(as the client sent it: decoded once, here), the Host, and the headers its
``allowed_headers`` names. Only 200 allows (202/204 deny). On a deny Envoy
passes the status, the body and (with ``allowed_client_headers``) the headers
to the client, so a deny carries nothing but the safe headers.
"""

from __future__ import annotations

from keystile.core.clientip import TrustedProxies
from keystile.core.decide import Decision, Facts, Grant
from keystile.serve.adapters.base import Adapter, Inbound, Reply, deny_reply

PREFIX = "/auth/envoy"
REMOVE_HEADER = "x-envoy-auth-headers-to-remove"


def facts(request: Inbound, trusted: TrustedProxies) -> Facts:
    headers = request.headers
    peer = request.peer
    raw = request.target
    target = raw[len(PREFIX) :] if raw.startswith(PREFIX + "/") else None
    client_ip = trusted.client_ip(peer, headers.get("X-Forwarded-For"))
    # an allow carries upstream secrets: only our proxies get one
    return Facts("envoy", request.method, request.host, target, headers, client_ip,
                 trusted.trusts(peer))  # fmt: skip


def render(decision: Decision, grant: Grant | None) -> Reply:
    if grant is not None:
        headers = list(grant.upstream)
        strip = grant.strip
        if decision.cookie:  # the client's cookies without keystile's
            headers.append(("cookie", decision.cookie))
        elif decision.cookie is not None:  # keystile's was the only one
            strip = (*strip, "cookie")
        if strip:
            # only headers we do not set: Envoy may apply removals after setting
            headers.append((REMOVE_HEADER, ",".join(strip)))
        return Reply(200, headers)
    return deny_reply(decision)


ADAPTER = Adapter(name="envoy", path=PREFIX + "/{tail:.*}", facts=facts, render=render)
