import pytest
from multidict import CIMultiDict

from keystile.core.copies import (
    DEFAULT_CREDENTIAL_COOKIES,
    DEFAULT_CREDENTIAL_PARAMS,
    credential_copies,
    credential_names,
)
from keystile.core.paths import form_value, param_key, query_params

from .conftest import CountingHeaders

NO_HEADERS: CIMultiDict[str] = CIMultiDict()


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("api_key", "api_key"), ("API_KEY", "api_key"), ("Api-Key", "api-key"),
        ("api%5Fkey", "api_key"), ("%61pi_key", "api_key"), ("api.key", "api_key"),
        ("api+key", "api_key"), ("api%20key", "api_key"), ("  api_key", "api_key"),
        ("+api_key", "api_key"), ("api[key", "api_key"), ("api_key%00x", "api_key"),
        ("api_key\x00", "api_key"), ("%ff", "\ufffd"), ("", ""), ("%", "%"),
        ("%2541pi", "%41pi"), ("a.b.c", "a_b_c"),
    ],
)  # fmt: skip
def test_param_key(name: str, key: str) -> None:
    assert param_key(name) == key


@pytest.mark.parametrize(
    ("query", "pairs"),
    [
        ("", []),
        ("a=1", [("a", "1")]),
        ("a=1&b=2", [("a", "1"), ("b", "2")]),
        ("a=1;b=2", [("a", "1"), ("b", "2")]),
        ("&&a&=x&b==c;", [("a", ""), ("", "x"), ("b", "=c")]),
        ("a=%26&b=+", [("a", "%26"), ("b", "+")]),
    ],
)
def test_query_params(query: str, pairs: list[tuple[str, str]]) -> None:
    assert list(query_params(query)) == pairs


@pytest.mark.parametrize(
    ("value", "decoded"),
    [("DELETE", "DELETE"), ("a+b", "a b"), ("%41", "A"), ("%2541", "%41"), ("%ff", "\ufffd")],
)
def test_form_value(value: str, decoded: str) -> None:
    assert form_value(value) == decoded


def test_defaults() -> None:
    assert {"api_key", "apikey", "api-key", "x-api-key", "access_token"} == (
        DEFAULT_CREDENTIAL_PARAMS
    )
    assert "key" not in DEFAULT_CREDENTIAL_PARAMS
    assert "token" not in DEFAULT_CREDENTIAL_PARAMS
    # a key copied into a cookie of the query's names is refused by default too
    assert DEFAULT_CREDENTIAL_PARAMS == DEFAULT_CREDENTIAL_COOKIES
    assert credential_names(DEFAULT_CREDENTIAL_PARAMS) == DEFAULT_CREDENTIAL_PARAMS


def test_credential_names() -> None:
    assert credential_names(["API_KEY", " Session.Key ", "", "  ", "my%2Dkey"]) == {
        "api_key",
        "session_key",
        "my-key",
    }


@pytest.mark.parametrize(
    "query",
    [
        "api_key=sk-1", "API_KEY=sk-1", "apiKey=sk-1", "ApiKey=sk-1", "api-key=sk-1",
        "x-api-key=sk-1", "X-Api-Key=sk-1", "access_token=sk-1", "Access_Token=sk-1",
        "api_key=", "api_key", "a=1&api_key=sk-1", "a=1;api_key=sk-1", "api_key=1&api_key=2",
        "api%5Fkey=sk-1", "api%5fkey=sk-1", "%61%70%69%5f%6b%65%79=sk-1", "api.key=sk-1",
        "api+key=sk-1", "api%20key=sk-1", "+api_key=sk-1", "api_key%00=sk-1",
        "stream=true&model=x&apikey=sk-1",
    ],
)  # fmt: skip
def test_query_copies_with_default_names(query: str) -> None:
    assert credential_copies(query, NO_HEADERS) == "query"


@pytest.mark.parametrize(
    "query",
    [
        "", "stream=true", "key=abc", "token=abc", "page_token=x", "sort_key=x", "api=key",
        "q=api_key", "q=api_key%3Dsk-1", "api_keys=x", "my_api_key=x", "api__key=x",
        "apikey2=x", "api%255Fkey=x", "access-token=x", "x_api_key_id=x",
    ],
)  # fmt: skip
def test_no_query_copy_with_default_names(query: str) -> None:
    assert credential_copies(query, NO_HEADERS) is None


@pytest.mark.parametrize(
    ("query", "params", "place"),
    [
        ("key=AIza", frozenset({"key"}), "query"),
        ("KEY=AIza", credential_names(["key"]), "query"),
        ("api_key=x", frozenset(), None),
        ("api_key=x", frozenset({"token"}), None),
        ("Token=x", credential_names(["token"]), "query"),
    ],
)
def test_configured_params(query: str, params: frozenset[str], place: str | None) -> None:
    assert credential_copies(query, NO_HEADERS, params=params) == place


KS = credential_names(["ks_key"])


@pytest.mark.parametrize(
    "cookies",
    [
        ["ks_key=sk-1"], ["KS_KEY=sk-1"], ["Ks_Key=sk-1"], ["session=abc; ks_key=sk-1"],
        ["session=abc;ks_key=sk-1"], ["session=abc ;  ks_key = sk-1 ;"], ["ks_key="],
        ["ks_key"], ["a=1", "ks_key=sk-1"], ["a=1, ks_key=sk-1"], ["ks.key=sk-1"],
        ["ks%5Fkey=sk-1"], ["ks+key=sk-1"], ["a=\"x;ks_key=sk-1\""], [";;ks_key=1;;"],
    ],
)  # fmt: skip
def test_cookie_copies(cookies: list[str]) -> None:
    headers = CIMultiDict(("Cookie", value) for value in cookies)
    assert credential_copies("", headers, cookies=KS) == "cookie"


@pytest.mark.parametrize(
    "cookies",
    [[], [""], ["session=ks_key"], ["ks_keys=1"], ["my_ks_key=1"], ["a=1; b=2"], ["ks-key=1"]],
)
def test_no_cookie_copy(cookies: list[str]) -> None:
    headers = CIMultiDict(("Cookie", value) for value in cookies)
    assert credential_copies("", headers, cookies=KS) is None


def test_cookies_are_not_read_when_no_cookie_name_is_configured() -> None:
    headers = CIMultiDict([("Cookie", "api_key=sk-1; ks_key=sk-1")])
    assert credential_copies("", headers, cookies=frozenset()) is None


def test_a_key_copied_into_a_cookie_of_a_default_name_is_refused_by_default() -> None:
    for name in ("api_key", "API_KEY", "x-api-key", "access_token", "apikey"):
        headers = CIMultiDict([("Cookie", f"theme=dark; {name}=ks_abc")])
        assert credential_copies("", headers) == "cookie", name
    assert credential_copies("", CIMultiDict([("Cookie", "session=1; csrf=2")])) is None


def test_cookie_header_name_is_case_insensitive() -> None:
    headers = CIMultiDict([("COOKIE", "ks_key=1")])
    assert credential_copies("", headers, cookies=KS) == "cookie"


def test_query_is_reported_before_cookie() -> None:
    headers = CIMultiDict([("Cookie", "ks_key=1")])
    assert credential_copies("api_key=1", headers, cookies=KS) == "query"
    assert credential_copies("a=1", headers, cookies=KS) == "cookie"


def test_cheap_without_query_or_cookie_names() -> None:
    counting = CountingHeaders()
    assert credential_copies("", counting, cookies=frozenset()) is None
    assert counting.getalls == 0
    assert credential_copies("", counting, cookies=KS) is None
    assert counting.getalls == 1
