import pytest
from multidict import CIMultiDict

from keystile.core.methods import (
    KNOWN_METHODS,
    OVERRIDE_HEADERS,
    UnknownOverride,
    canonical_method,
    method_overrides,
)

from .conftest import CountingHeaders


@pytest.mark.parametrize("method", sorted(KNOWN_METHODS))
def test_known_methods_are_judged(method: str) -> None:
    assert canonical_method(method) == method


def test_known_methods() -> None:
    assert {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} == KNOWN_METHODS


@pytest.mark.parametrize(
    "method",
    [
        "get", "Get", "gET", "post", "", " ", "GET ", " GET", "GET\r\n", "G ET", "\tGET",
        "CONNECT", "connect", "TRACE", "TRACK", "PROPFIND", "PURGE", "DEBUG", "FOO",
        "GET\x00", "GE\u0422", "\uff27\uff25\uff34", "POST,GET", "*",
    ],
)  # fmt: skip
def test_other_methods_are_not_judged(method: str) -> None:
    assert canonical_method(method) is None


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


PLAIN = headers(("Host", "api"), ("Authorization", "Bearer k"), ("Content-Type", "a/b"))


@pytest.mark.parametrize(
    ("pairs", "query"),
    [
        ((), ""),
        (
            (("Host", "api"), ("Authorization", "Bearer k"), ("X-Request-Id", "1"),
             ("X-Http-Method-Override-Not", "DELETE"), ("X-HTTP-Methods", "DELETE"),
             ("X-Original-Method", "DELETE"), ("Method", "DELETE"), ("X-Method", "DELETE")),
            "",
        ),
        ((), "method=DELETE"),
        ((), "http_method=DELETE&methods=PUT&_method_=PUT&x_method=PUT&_methods=PUT"),
        ((), "a=_method&b=%5Fmethod"),
        ((), "q=%20&_methodx=DELETE&__method=DELETE"),
        ((), "stream=true&model=gpt"),
        ((), "_method[]=DELETE"),
        ((), "+method=DELETE&%20method=PUT"),  # PHP strips leading spaces: "method"
    ],
)  # fmt: skip
def test_no_override(pairs: tuple[tuple[str, str], ...], query: str) -> None:
    assert method_overrides(headers(*pairs), query) is None


@pytest.mark.parametrize(
    ("pairs", "query", "methods"),
    [
        ((("X-HTTP-Method-Override", "DELETE"),), "", ("DELETE",)),
        ((("x-http-method-override", "delete"),), "", ("DELETE",)),
        ((("X-HTTP-Method", "PUT"),), "", ("PUT",)),
        ((("X-Method-Override", "Patch"),), "", ("PATCH",)),
        ((("X_HTTP_Method_Override", "DELETE"),), "", ("DELETE",)),
        ((("x_http_method", "DELETE"),), "", ("DELETE",)),
        ((("X-Method_Override", "DELETE"),), "", ("DELETE",)),
        ((("X.HTTP.Method.Override", "DELETE"),), "", ("DELETE",)),
        ((("x~http+method", "PUT"),), "", ("PUT",)),
        ((("X-HTTP-METHOD-OVERRIDE", " DELETE "),), "", ("DELETE",)),
        ((("X-HTTP-Method-Override", "GET"),), "", ("GET",)),
        ((("X-HTTP-Method-Override", "POST"),), "", ("POST",)),
        (
            (("X-HTTP-Method-Override", "DELETE"), ("x-http-method-override", "PUT"),
             ("X_HTTP_METHOD_OVERRIDE", "delete"), ("X-HTTP-Method", "PATCH")),
            "",
            ("DELETE", "PUT", "PATCH"),
        ),
        ((), "_method=DELETE", ("DELETE",)),
        ((), "_METHOD=delete", ("DELETE",)),
        ((), "_Method=put", ("PUT",)),
        ((), "%5Fmethod=DELETE", ("DELETE",)),
        ((), "%5fMETHOD=DELETE", ("DELETE",)),
        ((), "_%6Dethod=DELETE", ("DELETE",)),
        ((), "%5F%6D%65%74%68%6F%64=DELETE", ("DELETE",)),
        ((), ".method=DELETE", ("DELETE",)),
        ((), "%20%20_method=DELETE", ("DELETE",)),
        ((), "[method=DELETE", ("DELETE",)),  # PHP drops it; '[' -> '_' errs on the safe side
        ((), "_method%00ignored=DELETE", ("DELETE",)),
        ((), "_method=%44ELETE", ("DELETE",)),
        ((), "_method=+DELETE+", ("DELETE",)),
        ((), "a=1&_method=DELETE&b=2", ("DELETE",)),
        ((), "a=1;_method=DELETE", ("DELETE",)),
        ((), "_method=DELETE&_method=PUT&_METHOD=delete", ("DELETE", "PUT")),
        (
            (("X-HTTP-Method-Override", "PUT"),),
            "_method=DELETE&_method=PUT",
            ("PUT", "DELETE"),
        ),
    ],
)  # fmt: skip
def test_overrides(
    pairs: tuple[tuple[str, str], ...], query: str, methods: tuple[str, ...]
) -> None:
    assert method_overrides(headers(*pairs), query) == methods


@pytest.mark.parametrize(
    ("pairs", "query"),
    [
        ((("X-HTTP-Method-Override", "TRACE"),), ""),
        ((("X-HTTP-Method-Override", "CONNECT"),), ""),
        ((("X-HTTP-Method-Override", "PROPFIND"),), ""),
        ((("X-HTTP-Method-Override", ""),), ""),
        ((("X-HTTP-Method-Override", "DELETE, PUT"),), ""),
        ((("X-HTTP-Method-Override", "DELETE,PUT"),), ""),
        ((("X-HTTP-Method-Override", "DEL ETE"),), ""),
        ((("X-HTTP-Method", "dele\u0131e"),), ""),
        ((("X-Method-Override", "po\u017ft"),), ""),
        ((("X_Method_Override", "\uff30\uff35\uff34"),), ""),
        ((("X-HTTP-Method-Override", "DELETE"), ("X-HTTP-Method-Override", "nope")), ""),
        ((), "_method=TRACE"),
        ((), "_method=connect"),
        ((), "_method="),
        ((), "_method"),
        ((), "_method=%2544ELETE"),
        ((), "_method=DELETE%00"),
        ((), "_method=%FF"),
        ((), "_method=po%C5%BFt"),
        ((), "_method=DELETE&_method=MOVE"),
        ((), "%5Fmethod=FOO"),
        ((("X-HTTP-Method-Override", "PUT"),), "_method=TRACE"),
    ],
)  # fmt: skip
def test_unknown_override_values_raise(pairs: tuple[tuple[str, str], ...], query: str) -> None:
    with pytest.raises(UnknownOverride, match="names no known method"):
        method_overrides(headers(*pairs), query)


def test_error_message_does_not_echo_the_value() -> None:
    with pytest.raises(UnknownOverride) as caught:
        method_overrides(headers(("X_HTTP_Method", "sk-secret\r\nX: y")), "")
    assert "secret" not in str(caught.value)
    assert "x-http-method" in str(caught.value)


def test_override_headers_are_lower_case_dash_spelled() -> None:
    assert all(name == name.lower() and "_" not in name for name in OVERRIDE_HEADERS)


def test_no_lookups_without_an_override() -> None:
    counting = CountingHeaders(["Host", "Authorization", "X-Request-Id", "X-HTTP-Methods"])
    assert method_overrides(counting, "stream=true") is None
    assert counting.getalls == 0
