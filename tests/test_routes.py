from pathlib import Path

import pytest

from keystile.core.routes import compile_path, load_routes


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("/v1/models", ["/v1/models"], ["/v1/models/x", "/v1/model", "/v1/modelsx"]),
        ("/v1/images/*", ["/v1/images", "/v1/images/", "/v1/images/a/b"], ["/v1/imagesx"]),
        ("/v1/*/files", ["/v1/a/files"], ["/v1/a/b/files", "/v1//files"]),
        ("/v1/**/files", ["/v1/a/b/files"], ["/v2/a/files"]),
    ],
)
def test_patterns(pattern: str, yes: list[str], no: list[str]) -> None:
    regex = compile_path(pattern)
    assert all(regex.fullmatch(p) for p in yes)
    assert not any(regex.fullmatch(p) for p in no)


def test_routes_match_in_order_with_methods_and_host(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    raw = [
        {"name": "chat", "path": "/v1/chat/*", "methods": ["post"], "host": "*.example.com",
         "scopes": ["chat"], "inject": {"Authorization": {"env": "UP", "format": "Bearer {}"}}},
        {"name": "files", "path": "/v1/**", "inject": {"X-Key": {"file": str(secret_file)},
                                                        "X-Org": "org-1"}},
    ]  # fmt: skip
    table, errors = load_routes(raw, {"UP": "sk-up"}, None)
    assert errors == []
    assert not table.allow_unmatched
    chat = table.match("POST", "api.example.com:443", "/v1/chat/completions")
    assert chat is not None and chat.name == "chat"
    assert [(n, s.value) for n, s in chat.inject] == [("Authorization", "Bearer sk-up")]
    files = table.match("GET", "api.example.com", "/v1/chat/completions")
    assert files is not None and files.name == "files"
    assert dict((n, s.value) for n, s in files.inject) == {"X-Key": "from-file", "X-Org": "org-1"}
    assert table.match("GET", "x", "/v2/x") is None
    assert "sk-up" not in repr(table) and "from-file" not in repr(table)


def test_every_error_is_collected_and_names_the_field() -> None:
    raw = [
        {"name": "Bad Name", "path": "v1", "methods": "GET", "colour": "blue"},
        {"name": "ok", "path": "/x", "inject": {"X_Under": "v", "Host": "h",
                                                 "X-Keystile-Key-Id": "v", "A": {"env": "NOPE"},
                                                 "B": {"value": "v", "format": "no placeholder"}}},
        {"name": "ok", "path": "/y"},
    ]  # fmt: skip
    _, errors = load_routes(raw, {}, "maybe")
    text = "\n".join(errors)
    for needle in ["routes[0].name='Bad Name'", "routes[0].path='v1'", "routes[0].methods",
                   "unknown key 'colour'", "inject.X_Under", "inject.Host",
                   "inject.X-Keystile-Key-Id", "'NOPE' is not set", "inject.B.format",
                   "auth.unmatched='maybe'"]:  # fmt: skip
        assert needle in text, needle


def test_no_routes_allows_any_path_by_default() -> None:
    table, errors = load_routes(None, {}, None)
    assert errors == [] and table.allow_unmatched and table.routes == ()
