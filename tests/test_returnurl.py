"""Return URLs after sign-in: only this site's paths and exactly the allowed hosts."""

from __future__ import annotations

import pytest

from keystile.core.returnurl import host_allowed, safe_return

ALLOWED = (".example.com", "app.partner.org")

SAFE = [
    "/",
    "/dashboard",
    "/a/b?x=1&y=%2F#top",
    "/path%20with%20space",
    "https://app.partner.org/x",
    "https://docs.example.com/",
    "http://a.b.example.com:8443/",
]
UNSAFE = [
    "", "//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example",
    "/%2F%2Fevil.example", "/%5Cevil.example", "%2F%2Fevil.example", "/%252F%252Fevil.example",
    "/%09/evil.example", "/\t/evil.example", " /x", "/x\n", "%0d%0a//evil.example", "/\x00",
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,hi", "vbscript:x",
    "https://evil.example/", "https://evilexample.com/", "https://example.com.evil.net/",
    "https://example.com/",  # the suffix rule admits sub-domains only
    "https:evil.example", "https://user@app.partner.org/", "//app.partner.org@evil.example",
    "https://app.partner.org:notaport/", "ftp://app.partner.org/", "http://[::1/",
    "/" + "a" * 3000, "https://evil.com%2F.example.com/", "https://ex\u0430mple.example.com/",
]  # fmt: skip


@pytest.mark.parametrize("target", SAFE)
def test_safe_targets_are_kept(target: str) -> None:
    assert safe_return(target, ALLOWED) == target


@pytest.mark.parametrize("target", UNSAFE)
def test_everything_else_goes_home(target: str) -> None:
    assert safe_return(target, ALLOWED) == "/"


def test_none_goes_home() -> None:
    assert safe_return(None) == "/"


def test_a_suffix_entry_never_admits_a_look_alike() -> None:
    assert host_allowed("a.example.com", [".example.com"])
    assert not host_allowed("evilexample.com", [".example.com"])
    assert not host_allowed("example.com", [".example.com"])
    assert host_allowed("APP.partner.org.", ["app.partner.org"])
