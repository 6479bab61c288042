"""Traefik/Caddy forward-auth dialect specifics."""

from keystile.core import reasons
from keystile.core.decide import Decision, Grant
from keystile.serve.adapters.forward_auth import facts
from keystile.serve.adapters.forward_auth import render as render_reply

from .conftest import TRUSTED, mocked, viewing

FORWARDED = {"X-Forwarded-Method": "POST", "X-Forwarded-Proto": "https",
             "X-Forwarded-Host": "api.example.com", "X-Forwarded-Uri": "/v1/chat?x=1",
             "X-Forwarded-For": "198.51.100.7"}  # fmt: skip

render = viewing(render_reply)


def test_original_request_comes_from_forwarded_headers() -> None:
    seen = facts(mocked("GET", "/auth/forward", FORWARDED), TRUSTED)
    assert (seen.method, seen.host, seen.target, seen.client_ip) == (
        "POST", "api.example.com", "/v1/chat?x=1", "198.51.100.7")  # fmt: skip


def test_the_method_is_passed_as_sent_for_the_core_to_judge() -> None:
    # the upstream gets "post" as written: judging it as POST would be judging
    # another request (the core refuses methods that are not canonical)
    seen = facts(mocked("GET", "/auth/forward", {**FORWARDED, "X-Forwarded-Method": "post"}),
                 TRUSTED)  # fmt: skip
    assert seen.method == "post"


def test_forwarded_headers_from_an_untrusted_peer_are_ignored() -> None:
    seen = facts(mocked("GET", "/auth/forward", FORWARDED, peer="203.0.113.9"), TRUSTED)
    assert not seen.trusted and seen.client_ip == "203.0.113.9"


def test_allow_sends_unset_managed_headers_empty() -> None:
    response = render(Decision(None), Grant((("X-Keystile-Key-Id", "key_1"),),
                                            ("authorization", "x-keystile-owner")))  # fmt: skip
    assert response.status == 200
    assert response.headers["X-Keystile-Key-Id"] == "key_1"
    assert response.headers["Authorization"] == "" and response.headers["X-Keystile-Owner"] == ""


def test_rate_limit_is_a_real_429() -> None:
    response = render(Decision(reasons.RATE_LIMITED, retry_after=12))
    assert response.status == 429 and response.headers["Retry-After"] == "12"
