"""Envoy ext_authz (HTTP) dialect specifics."""

import orjson

from keystile.core import reasons
from keystile.core.decide import Decision, Grant
from keystile.serve.adapters.envoy_http import REMOVE_HEADER, facts
from keystile.serve.adapters.envoy_http import render as render_reply

from .conftest import TRUSTED, mocked, viewing

render = viewing(render_reply)


def test_target_is_what_follows_the_prefix_undecoded() -> None:
    headers = {"Host": "api.example.com", "X-Forwarded-For": "6.6.6.6, 198.51.100.7"}
    request = mocked("POST", "/auth/envoy/v1/chat%20x/completions?stream=true&a=%2F", headers)
    seen = facts(request, TRUSTED)
    assert seen.target == "/v1/chat%20x/completions?stream=true&a=%2F"  # decoded later, once
    assert (seen.method, seen.host, seen.client_ip) == ("POST", "api.example.com", "198.51.100.7")


def test_untrusted_peer_gets_no_target() -> None:
    request = mocked("GET", "/auth/envoy/v1/chat", {}, peer="203.0.113.9")
    assert not facts(request, TRUSTED).trusted


def test_allow_is_exactly_200_and_removes_unset_managed_headers() -> None:
    grant = Grant((("Authorization", "Bearer up"),), ("x-api-key", "x-keystile-owner"))
    response = render(Decision(None), grant)
    assert response.status == 200
    assert response.headers["Authorization"] == "Bearer up"
    assert response.headers[REMOVE_HEADER] == "x-api-key,x-keystile-owner"


def test_denials_keep_their_status_and_carry_only_safe_headers() -> None:
    for reason, status in ((reasons.INVALID_API_KEY, 401), (reasons.INSUFFICIENT_SCOPE, 403),
                           (reasons.RATE_LIMITED, 429), (reasons.UNAVAILABLE, 503)):  # fmt: skip
        response = render(Decision(reason, retry_after=3 if status == 429 else None))
        assert response.status == status
        assert orjson.loads(response.body)["error"]["code"] == reason.code
        names = {name.lower() for name in response.headers}
        assert names <= {"www-authenticate", "retry-after", "content-type", "cache-control",
                         "x-keystile-detail",
                         "x-keystile-reason"}, names  # fmt: skip
