"""Envoy ``ext_authz`` gRPC service (``envoy.service.auth.v3.Authorization/Check``).

Envoy sends ``attributes.request.http``: the method, the path with its query
(as the client sent it, decoded once, here), the host and the headers, in
``headers`` or, with ``encode_raw_headers``, in ``header_map`` (values then in
``raw_value``). The client address is ``attributes.source``, Envoy's own
downstream peer: not a header, so a client cannot write it; believed, like
everything else, only when the gRPC peer (Envoy) is a trusted proxy.

Status OK allows: ``ok_response.headers`` are set by overwrite, ``headers_to_remove``
drops what keystile speaks for but did not set. Any other status denies, as
403 unless ``denied_response.status`` says otherwise, so every denial carries
its HTTP status, the safe headers and the JSON body of the HTTP dialects.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import (
    CheckRequest,
    CheckResponse,
    DeniedHttpResponse,
    OkHttpResponse,
)
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.rpc import code_pb2
from google.rpc.status_pb2 import Status
from multidict import CIMultiDict

from keystile.core.clientip import TrustedProxies
from keystile.core.decide import Decision, Facts, Grant
from keystile.serve.adapters.base import deny_reply, rate_headers

NAME = "envoy_grpc"
OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD  # older Envoy appended by default
# a bare non-OK status would reach the client as 403: denied_response.status says which
CODES = {401: code_pb2.UNAUTHENTICATED, 403: code_pb2.PERMISSION_DENIED,
         429: code_pb2.RESOURCE_EXHAUSTED, 503: code_pb2.UNAVAILABLE}  # fmt: skip


def facts(request: CheckRequest, peer: str | None, trusted: TrustedProxies) -> Facts:
    """``peer``: the gRPC peer's address (Envoy's), without port."""
    http = request.attributes.request.http
    raw = http.header_map.headers
    if raw:
        headers = CIMultiDict([(h.key, h.value or h.raw_value.decode("latin-1")) for h in raw])
    else:  # by key: a third faster than the map's items()
        mapped = http.headers
        headers = CIMultiDict([(name, mapped[name]) for name in mapped])
    if not trusted.trusts(peer):
        return Facts(NAME, http.method, http.host, None, headers, peer, False)
    source = request.attributes.source.address.socket_address.address
    return Facts(NAME, http.method, http.host, http.path or None, headers, source or None)


def _options(headers: Iterable[tuple[str, str]]) -> list[HeaderValueOption]:
    return [HeaderValueOption(header=HeaderValue(key=name, value=value), append_action=OVERWRITE)
            for name, value in headers]  # fmt: skip


def to_client(headers: Iterable[tuple[str, str]]) -> CheckResponse:
    """An OK answer that only adds ``headers`` to the client's response: serialized
    after another OK answer, protobuf merges it into that one."""
    ok = OkHttpResponse(response_headers_to_add=_options(headers))
    return CheckResponse(ok_response=ok)


def render(decision: Decision, grant: Grant | None) -> CheckResponse:
    """The answer; an allow's ``X-RateLimit-*`` go to the client with the upstream's reply."""
    if grant is not None:
        # Envoy refuses to remove Host or a pseudo-header (and keystile never asks)
        remove = [name for name in grant.strip if name != "host" and not name.startswith(":")]
        upstream = list(grant.upstream)
        if decision.cookie:  # the client's cookies without keystile's
            upstream.append(("cookie", decision.cookie))
        elif decision.cookie is not None:  # keystile's was the only one
            remove.append("cookie")
        ok = OkHttpResponse(headers=_options(upstream), headers_to_remove=remove,
                            response_headers_to_add=_options(rate_headers(decision)))  # fmt: skip
        return CheckResponse(status=Status(code=code_pb2.OK), ok_response=ok)
    reply = deny_reply(decision)
    denied = DeniedHttpResponse(
        status=HttpStatus(code=reply.status),
        headers=_options(reply.headers),
        body=reply.body.decode(),
    )
    code = CODES.get(reply.status, code_pb2.UNAUTHENTICATED)  # 302: to the sign-in page
    return CheckResponse(status=Status(code=code), denied_response=denied)
