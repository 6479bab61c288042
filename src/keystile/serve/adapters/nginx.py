"""nginx ``auth_request`` at ``/auth/nginx``.

nginx sends the client's headers (no body) plus, from our shipped config,
``X-Original-URI``, ``X-Original-Method``, ``X-Original-Host`` (nginx's
``$host``: the host it routed by, which the upstream receives) and ``X-Real-IP``
(else ``X-Forwarded-For``, read right to left); these are believed only from a
trusted proxy. The Host header (``$http_host``, port included, for Origin
checks) naming another host than ``X-Original-Host`` is refused as ambiguous.
nginx allows on 2xx, denies on 401/403 and turns every other status into a 500,
so a rate limit travels as 403 with ``X-Keystile-Status: 429`` and "go and sign
in" as 401 with a ``Location``; the shipped config turns them into a 429 and a
302. On an allow of a request with cookies, ``X-Keystile-Cookie`` holds the
``Cookie`` line for the upstream (keystile's session cookie taken out); the
shipped config sets it.
"""

from __future__ import annotations

from keystile.core.clientip import TrustedProxies
from keystile.core.decide import Decision, Facts, Grant
from keystile.core.reasons import Outcome
from keystile.serve.adapters.base import Adapter, Inbound, Reply, deny_reply


def facts(request: Inbound, trusted: TrustedProxies) -> Facts:
    headers = request.headers
    peer = request.peer
    if trusted.trusts(peer):
        routed = headers.get("X-Original-Host")
        return Facts(
            adapter="nginx",
            method=headers.get("X-Original-Method") or request.method,  # judged as sent
            host=request.host,
            target=headers.get("X-Original-URI"),
            headers=headers,
            client_ip=headers.get("X-Real-IP")
            or trusted.client_ip(peer, headers.get("X-Forwarded-For")),
            ambiguous_host=routed is not None and not same_host(routed, request.host),
        )
    return Facts("nginx", request.method, request.host, None, headers, peer, False)


def same_host(routed: str, host: str) -> bool:
    """nginx's ``$host`` (lower-cased, no port: the request line's host if it had one,
    else the Host header's, else the server name) names the Host header's host. No
    Host header (HTTP/1.0): nothing to disagree with; routes naming a host refuse it."""
    if not host:
        return True
    name = host[1 : host.find("]")] if host.startswith("[") else host.rpartition(":")[0] or host
    if host.startswith("[") or host.count(":") == 1:
        return routed.strip("[]").lower() == name.lower()
    return routed.strip("[]").lower() == host.lower()


def render(decision: Decision, grant: Grant | None) -> Reply:
    if grant is not None:
        if decision.cookie is not None:
            return Reply(200, [*grant.upstream, ("X-Keystile-Cookie", decision.cookie)])
        return Reply(200, grant.upstream)
    reason = decision.reason
    assert reason is not None
    extra = {"X-Keystile-Message": reason.message}
    if decision.location is not None:
        return deny_reply(decision, status=401, extra=extra)  # a 302 would be a 500
    if reason.outcome is Outcome.RATE_LIMITED:
        extra["X-Keystile-Status"] = "429"
        # 403, not 429: nginx turns any status but 2xx/401/403 into a 500
        return deny_reply(decision, status=403, extra=extra)
    return deny_reply(decision, extra=extra)


ADAPTER = Adapter(name="nginx", path="/auth/nginx", facts=facts, render=render)
