"""Traefik ForwardAuth and Caddy ``forward_auth`` at ``/auth/forward``.

The proxy sends a GET with the original request in ``X-Forwarded-Method``,
``-Proto``, ``-Host`` and ``-Uri`` (believed only from a trusted proxy). Any
non-2xx answer goes to the client as it is, so a rate limit is a real 429.
On 2xx the proxy copies the listed response headers onto the request; every
header keystile speaks for but does not set this time is sent empty, so a
proxy that copies only headers present in the answer (Caddy before 2.10)
still overwrites a client's forged or leftover value. (Traefik deletes every
listed header first, so there the empty ones reach the upstream empty.) A
request with cookies gets its ``Cookie`` line back without keystile's session
cookie (the shipped configs copy ``Cookie``); "go and sign in" is a 302 to the
sign-in page.
"""

from __future__ import annotations

from keystile.core.clientip import TrustedProxies
from keystile.core.decide import Decision, Facts, Grant
from keystile.serve.adapters.base import Adapter, Inbound, Reply, deny_reply


def facts(request: Inbound, trusted: TrustedProxies) -> Facts:
    headers = request.headers
    peer = request.peer
    client_ip = trusted.client_ip(peer, headers.get("X-Forwarded-For"))
    if not trusted.trusts(peer):
        return Facts("forward", request.method, request.host, None, headers, client_ip, False)
    return Facts(
        adapter="forward",
        method=headers.get("X-Forwarded-Method") or request.method,  # judged as sent
        host=headers.get("X-Forwarded-Host") or request.host,
        target=headers.get("X-Forwarded-Uri"),
        headers=headers,
        client_ip=client_ip,
        scheme=headers.get("X-Forwarded-Proto"),
    )


def render(decision: Decision, grant: Grant | None) -> Reply:
    if grant is not None:
        headers = [*grant.upstream, *((name, "") for name in grant.strip)]
        if decision.cookie is not None:  # the client's cookies without keystile's
            headers.append(("Cookie", decision.cookie))
        return Reply(200, headers)
    return deny_reply(decision)


ADAPTER = Adapter(name="forward", path="/auth/forward", facts=facts, render=render)
