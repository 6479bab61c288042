import pytest

from keystile.core.clientip import TrustedProxies, parse_networks

TRUSTED = TrustedProxies(parse_networks(["127.0.0.0/8", "::1/128", "10.0.0.0/8"]))


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        # an untrusted peer's X-Forwarded-For is ignored entirely
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
        # a spoofed leftmost entry never counts: the first untrusted hop from the right wins
        ("127.0.0.1", "1.1.1.1, 198.51.100.7, 10.0.0.5", "198.51.100.7"),
        ("127.0.0.1", "10.0.0.9, 10.0.0.5", "10.0.0.9"),
        ("127.0.0.1", "garbage, 198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "198.51.100.7, garbage", None),
        ("::1", "2001:db8::1", "2001:db8::1"),
        ("::ffff:127.0.0.1", "198.51.100.7", "198.51.100.7"),
    ],
)
def test_client_ip(peer: str, xff: str | None, client: str | None) -> None:
    assert TRUSTED.client_ip(peer, xff) == client


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        ("127.0.0.1", {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}, "198.51.100.7"),
        ("127.0.0.1", {"X-Real-IP": "198.51.100.8", "X-Forwarded-For": "6.6.6.6"},
         "198.51.100.8"),
        ("203.0.113.5", {"X-Real-IP": "6.6.6.6", "X-Forwarded-For": "6.6.6.6"}, "203.0.113.5"),
    ],
)  # fmt: skip
def test_nginx_adapter_client_ip(peer: str, headers: dict[str, str], client: str) -> None:
    from multidict import CIMultiDict

    from keystile.serve.adapters.base import Inbound
    from keystile.serve.adapters.nginx import facts

    request = Inbound(
        "GET", "/auth/nginx", "keystile", CIMultiDict({"X-Original-URI": "/v1", **headers}), peer
    )
    assert facts(request, TRUSTED).client_ip == client


def test_bad_network_is_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300/8'"):
        parse_networks(["10.0.0.300/8"])
