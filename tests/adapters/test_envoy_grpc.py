"""Envoy ext_authz (gRPC) dialect specifics, on messages built from Envoy's own classes."""

import orjson
import pytest
from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import code_pb2

from keystile.core import reasons
from keystile.core.decide import Decision, Grant
from keystile.core.model import RateInfo
from keystile.serve.adapters.envoy_grpc import facts, render
from keystile.serve.grpc_listener import peer_address

from .conftest import TRUSTED

OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def check_request(
    headers: dict[str, str] | None = None,
    raw: list[tuple[str, bytes]] | None = None,
    path: str = "/v1/chat%20x/completions?stream=true&a=%2F",
    source: str = "198.51.100.7",
) -> CheckRequest:
    http = AttributeContext.HttpRequest(method="POST", path=path, host="api.example.com",
                                        headers=headers or {})  # fmt: skip
    for name, value in raw or []:
        http.header_map.headers.add(key=name, raw_value=value)
    request = CheckRequest()
    request.attributes.request.http.CopyFrom(http)
    request.attributes.source.address.socket_address.address = source
    return request


def test_facts_from_the_headers_map() -> None:
    request = check_request({"authorization": "Bearer k", "x-forwarded-for": "6.6.6.6"})
    seen = facts(request, "127.0.0.1", TRUSTED)
    assert seen.target == "/v1/chat%20x/completions?stream=true&a=%2F"  # decoded later, once
    assert (seen.method, seen.host) == ("POST", "api.example.com")
    assert seen.headers.get("Authorization") == "Bearer k"  # looked up case-insensitively
    # the address Envoy saw, never one a client wrote in X-Forwarded-For
    assert seen.client_ip == "198.51.100.7" and seen.trusted


def test_facts_from_the_header_map_of_encode_raw_headers() -> None:
    raw = [("x-api-key", b"ks_abc"), ("x-custom", b"caf\xe9")]
    seen = facts(check_request(raw=raw), "127.0.0.1", TRUSTED)
    assert seen.headers.get("X-Api-Key") == "ks_abc"
    assert seen.headers.get("x-custom") == "caf\xe9"  # bytes taken as they are (latin-1)


def test_header_map_values_may_be_strings_and_repeat() -> None:
    # only one of value / raw_value is set; a repeated header arrives as two entries
    request = check_request(raw=[("x-api-key", b"ks_one")])
    request.attributes.request.http.header_map.headers.add(key="x-api-key", value="ks_two")
    seen = facts(request, "127.0.0.1", TRUSTED)
    assert seen.headers.getall("x-api-key") == ["ks_one", "ks_two"]


def test_an_untrusted_grpc_peer_gets_no_target() -> None:
    seen = facts(check_request({"x-api-key": "k"}), "203.0.113.9", TRUSTED)
    assert not seen.trusted and seen.target is None
    assert facts(check_request(), None, TRUSTED).target is None


def test_no_path_is_an_unknown_target() -> None:
    assert facts(check_request(path=""), "127.0.0.1", TRUSTED).target is None


@pytest.mark.parametrize(
    ("peer", "address"),
    [("ipv4:127.0.0.1:5000", "127.0.0.1"), ("ipv6:%5B::1%5D:5000", "::1"),
     ("ipv6:[2001:db8::1]:443", "2001:db8::1"), ("unix:/run/k.sock", None), ("", None)],
)  # fmt: skip
def test_peer_address(peer: str, address: str | None) -> None:
    assert peer_address(peer) == address
    if address is not None:
        assert TRUSTED.trusts(address) == address.startswith("127.")


def test_allow_overwrites_headers_and_removes_unset_managed_ones() -> None:
    grant = Grant((("Authorization", "Bearer up"), ("X-Keystile-Key-Id", "key_1")),
                  ("host", ":path", "x-api-key", "x-keystile-owner"))  # fmt: skip
    response = render(Decision(None), grant)
    assert response.status.code == code_pb2.OK
    assert response.WhichOneof("http_response") == "ok_response"
    ok = response.ok_response
    assert [(h.header.key, h.header.value) for h in ok.headers] == list(grant.upstream)
    assert {h.append_action for h in ok.headers} == {OVERWRITE}
    assert list(ok.headers_to_remove) == ["x-api-key", "x-keystile-owner"]  # never Host or ':'
    assert list(ok.response_headers_to_add) == []


def test_an_allow_under_a_rate_limit_tells_the_client_its_figures() -> None:
    decision = Decision(None, rate=RateInfo(limit=10, remaining=9, reset=60))
    ok = render(decision, Grant((), ())).ok_response
    figures = {h.header.key: h.header.value for h in ok.response_headers_to_add}
    assert figures == {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "9",
                       "X-RateLimit-Reset": "60"}  # fmt: skip
    assert {h.append_action for h in ok.response_headers_to_add} == {OVERWRITE}


SAFE = {"www-authenticate", "retry-after", "content-type", "cache-control", "x-keystile-detail",
        "x-keystile-reason", "x-ratelimit-limit", "x-ratelimit-remaining",
        "x-ratelimit-reset"}  # fmt: skip


@pytest.mark.parametrize(
    ("reason", "status", "code"),
    [(reasons.MISSING_API_KEY, 401, code_pb2.UNAUTHENTICATED),
     (reasons.REVOKED_API_KEY, 401, code_pb2.UNAUTHENTICATED),
     (reasons.INSUFFICIENT_SCOPE, 403, code_pb2.PERMISSION_DENIED),
     (reasons.UNTRUSTED_PEER, 403, code_pb2.PERMISSION_DENIED),
     (reasons.RATE_LIMITED, 429, code_pb2.RESOURCE_EXHAUSTED),
     (reasons.QUOTA_EXCEEDED, 429, code_pb2.RESOURCE_EXHAUSTED),
     (reasons.STORE_UNAVAILABLE, 503, code_pb2.UNAVAILABLE)],
)  # fmt: skip
def test_each_denial_carries_its_http_status_safe_headers_and_the_json_body(
    reason: reasons.Reason, status: int, code: int
) -> None:
    limited = status == 429
    decision = Decision(reason, retry_after=7 if limited else None,
                        rate=RateInfo(5, 0, 7) if limited else None)  # fmt: skip
    response = CheckResponse.FromString(render(decision, None).SerializeToString())
    assert response.status.code == code  # a bare non-OK status would be a 403
    assert response.WhichOneof("http_response") == "denied_response"
    denied = response.denied_response
    assert denied.status.code == status
    headers = {h.header.key.lower(): h.header.value for h in denied.headers}
    assert set(headers) <= SAFE, headers
    assert headers["content-type"] == "application/json"
    assert headers["x-keystile-reason"] == reason.code
    assert ("www-authenticate" in headers) == (status == 401)
    if limited:
        assert headers["retry-after"] == "7" and headers["x-ratelimit-remaining"] == "0"
    assert orjson.loads(denied.body) == {
        "error": {"message": reason.message, "type": reason.type, "code": reason.code}}  # fmt: skip
