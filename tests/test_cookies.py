"""keystile's session cookie in a Cookie line: found, and taken out for the upstream."""

from __future__ import annotations

from multidict import CIMultiDict

from keystile.core.cookies import cookie_line, session_token, without

NAME = "__Host-keystile"


def test_the_first_non_empty_value_is_the_session() -> None:
    assert session_token(f"a=1; {NAME}=tok; {NAME}=other", NAME) == "tok"
    assert session_token(f"{NAME}=; b=2", NAME) is None
    assert session_token("a=1", NAME) is None
    assert session_token(None, NAME) is None
    assert session_token(f'{NAME}="quoted"', NAME) == "quoted"
    assert session_token(f"x{NAME}=nope", NAME) is None


def test_only_keystile_s_cookie_is_taken_out() -> None:
    assert without(f"a=1; {NAME}=tok; b=2", NAME) == "a=1; b=2"
    assert without(f"{NAME}=tok", NAME) == ""
    assert without(f"{NAME}=tok;{NAME}=x;theme=dark", NAME) == "theme=dark"
    assert without("a=1; b=2", NAME) == "a=1; b=2"
    assert without(f"x{NAME}=keep", NAME) == f"x{NAME}=keep"


def test_split_cookie_headers_are_one_line() -> None:
    assert cookie_line(CIMultiDict([("Cookie", "a=1"), ("cookie", "b=2")])) == "a=1; b=2"
    assert cookie_line(CIMultiDict()) is None
