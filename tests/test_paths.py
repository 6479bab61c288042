import pytest

from keystile.paths import AmbiguousPath, parse_target


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/v1/chat/completions", "/v1/chat/completions", ""),
        ("/v1/chat?stream=true&x=%2F", "/v1/chat", "stream=true&x=%2F"),
        ("/v1/caf%C3%A9", "/v1/caf\u00e9", ""),
        ("/v1/a%20b", "/v1/a b", ""),
        ("/v1/100%25", "/v1/100%", ""),
        ("/v1/images/", "/v1/images/", ""),
        ("/", "/", ""),
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
        "/" + "a" * 9000,
    ],
)  # fmt: skip
def test_ambiguous_targets_are_refused(target: str) -> None:
    with pytest.raises(AmbiguousPath):
        parse_target(target)
