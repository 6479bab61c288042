"""Cross-site refusal for cookie-authenticated unsafe requests (Go 1.25's algorithm)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from keystile.core.crossorigin import cross_site

HOST = "app.example.com:8443"
CASES = [
    # (method, headers, cross-site?)
    ("GET", {"Sec-Fetch-Site": "cross-site"}, False),
    ("HEAD", {"Origin": "https://evil.example"}, False),
    ("POST", {"Sec-Fetch-Site": "same-origin"}, False),
    ("POST", {"Sec-Fetch-Site": "none"}, False),
    ("POST", {"Sec-Fetch-Site": "same-site"}, True),
    ("POST", {"Sec-Fetch-Site": "cross-site", "Origin": f"https://{HOST}"}, True),
    ("DELETE", {"Sec-Fetch-Site": "cross-site"}, True),
    ("POST", {"Origin": f"https://{HOST}"}, False),
    ("POST", {"Origin": "https://app.example.com"}, True),  # another port: another origin
    ("POST", {"Origin": "https://evil.example"}, True),
    ("POST", {"Origin": "null"}, True),
    ("POST", {}, False),  # neither header: not a browser
    ("PUT", {"Origin": "https://trusted.example.net"}, False),
    ("POST", {"Origin": "https://trusted.example.net", "Sec-Fetch-Site": "same-site"}, False),
    ("POST", {"Origin": "https://other.example.net", "Sec-Fetch-Site": "same-site"}, True),
]


@pytest.mark.parametrize(("method", "headers", "expected"), CASES)
def test_cross_site(method: str, headers: dict[str, str], expected: bool) -> None:
    trusted = frozenset({"https://trusted.example.net"})
    assert cross_site(method, HOST, CIMultiDict(headers), trusted) is expected


def test_an_override_to_an_unsafe_method_is_checked() -> None:
    headers = CIMultiDict({"Sec-Fetch-Site": "cross-site"})
    assert cross_site("GET", HOST, headers, also=("DELETE",))
