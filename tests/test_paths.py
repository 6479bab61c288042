import pytest

from keystile.core.paths import AmbiguousPath, checked_path, parse_target


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/v1/chat/completions", "/v1/chat/completions", ""),
        ("/v1/chat?stream=true&x=%2F", "/v1/chat", "stream=true&x=%2F"),
        ("/v1/caf%C3%A9", "/v1/caf\u00e9", ""),
        ("/v1/%C2%A0", "/v1/\u00a0", ""),
        ("/v1/a%20b", "/v1/a b", ""),
        ("/v1/100%25", "/v1/100%", ""),
        ("/v1/images/", "/v1/images/", ""),
        ("/", "/", ""),
        ("/v1/...", "/v1/...", ""),
        ("/v1/.well-known/x", "/v1/.well-known/x", ""),
        ("/v1/a..b", "/v1/a..b", ""),
        # queries: printable ASCII, anything percent-encoded
        ("/v1?", "/v1", ""),
        ("/v1?q=caf%C3%A9&r=%FF%00%0A", "/v1", "q=caf%C3%A9&r=%FF%00%0A"),
        ("/v1?a=1;b=2", "/v1", "a=1;b=2"),
        ("/v1?x=~!$'()*+,/:;=?@[]\\^`{|}", "/v1", "x=~!$'()*+,/:;=?@[]\\^`{|}"),
        ("/v1?a=%20b+c", "/v1", "a=%20b+c"),
    ],
)
def test_plain_targets(target: str, path: str, query: str) -> None:
    parsed = parse_target(target)
    assert (parsed.path, parsed.query) == (path, query)


@pytest.mark.parametrize(
    "target",
    [
        "", "v1/chat", "http://evil/v1", "/v1/../admin", "/v1/./chat", "/..", "/v1/%2e%2e/admin",
        "/v1/%2E%2E/admin", "/v1/.%2e/admin", "/v1%2fchat", "/v1%2Fchat", "/v1%5cchat",
        "/v1\\chat", "/v1/x%00", "/v1/\x00", "/v1/#frag", "/v1?x#frag", "/v1//chat",
        "/v1/%252e%252e/admin", "/v1/%2541", "/v1/%0a", "/v1/%ff", "/v1/a b", "/v1/\r\nX: y",
        "/" + "a" * 9000, "/v1/%7f", "/v1/\x7f", "/v1/\t", "/v1/%ed%a0%80",
    ],
)  # fmt: skip
def test_ambiguous_targets_are_refused(target: str) -> None:
    with pytest.raises(AmbiguousPath):
        parse_target(target)


# Class 1: path parameters. Servlet upstreams (Tomcat, Jetty, Spring) drop ";..."
# from every segment: "/public/..;/admin/x" would be judged as "/public/..;/..."
# and served as "/admin/x".
SEMICOLON_PATHS = [
    "/public/..;/admin/x", "/public/..;x/admin", "/public/..;jsessionid=1/admin",
    "/public/.;/admin", "/public/.;x/admin", "/public/%2e%2e;/admin", "/public/%2E%2E%3B/admin",
    "/public/..%3b/admin", "/public/..%3Bx/admin", "/public/.%3B/admin", "/..;",
    "/public/..;/..;/admin",
]  # fmt: skip
LITERAL_SEMICOLON_PATHS = [
    "/v1;jsessionid=ABC", "/v1/a;b", "/v1/chat;", "/;/admin", "/v1/;x/y", "/v1/a%3bb",
    "/v1/a%3Bb", "/admin;x=1/secret", "/v1/...;x", "/v1/a.;b", "/v1/..a;b",
]  # fmt: skip


@pytest.mark.parametrize("target", SEMICOLON_PATHS + LITERAL_SEMICOLON_PATHS)
def test_semicolons_are_refused_by_default(target: str) -> None:
    with pytest.raises(AmbiguousPath, match=r"';'|dot segment"):
        parse_target(target)


@pytest.mark.parametrize("target", LITERAL_SEMICOLON_PATHS)
def test_semicolon_path_message(target: str) -> None:
    with pytest.raises(AmbiguousPath, match=r"';' \(a path parameter"):
        parse_target(target)


@pytest.mark.parametrize("target", SEMICOLON_PATHS)
def test_dot_segments_with_parameters_are_refused_even_when_literal(target: str) -> None:
    with pytest.raises(AmbiguousPath, match="dot segment"):
        parse_target(target, semicolons=True)


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/v1;jsessionid=ABC", "/v1;jsessionid=ABC"),
        ("/v1/a;b", "/v1/a;b"),
        ("/v1/a%3bb", "/v1/a;b"),
        ("/v1/a%3Bb", "/v1/a;b"),
        ("/v1/;x/y", "/v1/;x/y"),
        ("/v1/...;x", "/v1/...;x"),
        ("/v1/a.;b", "/v1/a.;b"),
        ("/v1/..a;b", "/v1/..a;b"),
    ],
)
def test_semicolons_allowed_when_literal(target: str, path: str) -> None:
    assert parse_target(target, semicolons=True).path == path


@pytest.mark.parametrize(
    "target",
    ["/v1/../admin", "/v1/%2e%2e/admin", "/v1%2fchat", "/v1//chat", "/v1/\xff", "/v1/%ff",
     "/v1/a;b/\udcff", "/v1;x?q=\xff"],
)  # fmt: skip
def test_literal_semicolons_keep_every_other_refusal(target: str) -> None:
    with pytest.raises(AmbiguousPath):
        parse_target(target, semicolons=True)


def test_cache_is_keyed_on_the_semicolon_flag() -> None:
    checked_path.cache_clear()
    assert parse_target("/v1/a;b", semicolons=True).path == "/v1/a;b"
    with pytest.raises(AmbiguousPath):
        parse_target("/v1/a;b")
    with pytest.raises(AmbiguousPath):
        checked_path("/v1/a;b", False)
    assert parse_target("/v1/a;b", semicolons=True).path == "/v1/a;b"
    assert checked_path("/v1/a;b", semicolons=True) == "/v1/a;b"
    with pytest.raises(AmbiguousPath):
        parse_target("/v1/a;b")
    for _ in range(3):
        assert parse_target("/v1/chat").path == "/v1/chat"
    info = checked_path.cache_info()
    # hits: the second literal parse and two of the three "/v1/chat"; refusals
    # are not cached; the keyword call is an entry of its own
    assert (info.hits, info.currsize) == (3, 3)


# Class 2: raw bytes >= 0x80 in the original URI (what nginx forwards from
# "GET /v1/\xff\xfe"), as an HTTP server hands them over: latin-1 characters or,
# with surrogateescape, lone surrogates. Refused like their encoded form "%FF".
RAW_NON_ASCII_PATHS = [
    "/v1/\xff\xfe", "/v1/\udcff\udcfe", "/v1/caf\u00e9", "/v1/caf\udcc3\udca9", "/v1/\x80",
    "/v1/\x85", "/v1/\xa0", "/v1/\u2028", "/v1/\ufeff", "/v1/\U0001f600", "/v1/\ud800",
    "/\u0430dmin", "/v1/\uff0e\uff0e/admin", "/v1/\u2024\u2024/admin",
]  # fmt: skip


@pytest.mark.parametrize("target", RAW_NON_ASCII_PATHS)
def test_raw_non_ascii_in_the_path_is_refused(target: str) -> None:
    with pytest.raises(AmbiguousPath, match="non-ASCII character in the path"):
        parse_target(target)


RAW_BAD_QUERIES = [
    "/v1?q=\xff", "/v1?q=\udcff", "/v1?q=caf\u00e9", "/v1?q=\u2028", "/v1?\x85",
    "/v1?q=a\x00", "/v1?q=a\r\nX-Injected: 1", "/v1?q=a\tb", "/v1?q=a b", "/v1?q=\x7f",
    "/v1?\x1b[31m", "/v1? ", "/v1?a=1&b=\U0001f600",
]  # fmt: skip


@pytest.mark.parametrize("target", RAW_BAD_QUERIES)
def test_raw_non_printable_in_the_query_is_refused(target: str) -> None:
    with pytest.raises(AmbiguousPath, match="character in the query"):
        parse_target(target)


@pytest.mark.parametrize("target", ["/v1?x#frag", "/v1?#", "/v1?a=%23&b=#"])
def test_hash_in_the_query_is_refused(target: str) -> None:
    with pytest.raises(AmbiguousPath, match="'#' in the query"):
        parse_target(target)


@pytest.mark.parametrize("target", ["/v1/%C2%80", "/v1/%C2%85", "/v1/%c2%9f", "/v1/%7F"])
def test_encoded_c0_c1_controls_are_refused(target: str) -> None:
    with pytest.raises(AmbiguousPath, match="control character"):
        parse_target(target)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("v1", "not an absolute path"),
        ("/v1/#x", "'#' or backslash"),
        ("/v1\\x", "'#' or backslash"),
        ("/v1/ x", "space, control or non-ASCII"),
        ("/v1/%2F", "encoded slash"),
        ("/v1/%ff", "not UTF-8"),
        ("/v1/%2541", "double percent-encoding"),
        ("/v1//x", "empty path segment"),
        ("/v1/..", "dot segment"),
    ],
)
def test_refusals_say_why(target: str, message: str) -> None:
    with pytest.raises(AmbiguousPath, match=message):
        parse_target(target)
