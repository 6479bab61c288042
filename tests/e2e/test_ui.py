"""The web UI end to end: real Chromium through real nginx with the shipped config.

Each flow is clicked once as an admin and once as a member. A key appears only on
the answer that creates or rotates it: never in a listing, a key's page, the page
source after navigating away (or back), or keystile's log. A member reaching
another person's key by its URL gets a 404. Every page is photographed (into
``$KEYSTILE_SCREENSHOTS`` when set: ``docs/images`` for docs/ui.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.browser import browser, screenshot  # noqa: F401 - the shared fixture
from tests.e2e.harness import Stack, request, running_stack

ADMIN_PW = "root pass phrase 4711"
MEMBER_PW = "bea pass phrase 0815"
UI = "/_keystile/ui"
CONFIG = """
[sessions]
trusted_origins = []
member_scopes = ["chat"]

[credentials.openai-a]
value = "sk-provider-a-canary-111"
format = "Bearer {}"

[credentials.openai-b]
env = "UI_PROVIDER_B"
format = "Bearer {}"

[[routes]]
name = "chat"
path = "/v1/chat/*"
scopes = ["chat"]
price_per_1k_tokens = 0.002
[routes.inject]
Authorization = { credentials = ["openai-a", "openai-b"], default = "openai-a" }

[[routes]]
name = "images"
path = "/v1/images/*"
scopes = ["images"]
"""
PROVIDER_VALUES = ("sk-provider-a-canary-111", "sk-provider-b-canary-222")
KEY_RE = re.compile(r"ks_[0-9A-Za-z]{49}")
shown: list[str] = []  # every key the UI showed, checked against everything else


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("ui")
    (workdir / "keystile.toml").write_text(CONFIG)
    env = {"KEYSTILE_DB": str(workdir / "keystile.db"),
           "KEYSTILE_CONFIG": str(workdir / "keystile.toml"),
           "UI_PROVIDER_B": PROVIDER_VALUES[1]}  # fmt: skip
    for running in running_stack(workdir, env, "nginx"):
        for name, role, password in (("root", "admin", ADMIN_PW), ("bea", "member", MEMBER_PW)):
            assert running.keystile.cli("users", "create", name, "--role", role).returncode == 0
            done = running.keystile.cli("users", "set-password", name, "--stdin",
                                        input_text=password + "\n")  # fmt: skip
            assert done.returncode == 0, done.stderr
        yield running


def snap(page: Any, name: str, tmp_path: Path) -> None:
    """Into the session's screenshots, and $KEYSTILE_SCREENSHOTS (docs/images) when set."""
    screenshot(page, f"ui-{name}")


def signed_in(browser: Any, stack: Stack, name: str, password: str, width: int = 1100) -> Any:  # noqa: F811
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{stack.proxy.port}{UI}/")
    page.wait_for_url(re.compile(r"/_keystile/login\?rd="))
    page.fill("#username", name)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/_keystile/ui/keys$"))
    return page


def go(page: Any, stack: Stack, path: str) -> Any:
    return page.goto(f"http://127.0.0.1:{stack.proxy.port}{UI}{path}")


def never_shown_here(page: Any) -> None:
    content = page.content()
    for secret in (*shown, *PROVIDER_VALUES):  # keys after their one page; credentials ever
        assert secret not in content, page.url


def back_to_the_answer(page: Any) -> None:
    """Back to the form's answer: Chromium does not show a no-store answer to a POST
    again (ERR_CACHE_MISS, "Confirm Form Resubmission"); whatever it shows, no key."""
    try:
        page.go_back()
    except Exception as exc:  # playwright's Error
        assert "ERR_CACHE_MISS" in str(exc)
    page.wait_for_load_state()
    page.wait_for_timeout(200)  # the browser's own error page settles
    never_shown_here(page)


def the_key(page: Any) -> str:
    key = page.input_value("#the-key")
    assert KEY_RE.fullmatch(key)
    shown.append(key)
    page.click("button.copy-button")
    page.wait_for_selector("#copied:has-text('Copied')")
    return key


def key_id_of(page: Any) -> str:
    href = page.get_attribute("a.button[href*='/keys/key_']", "href")
    return href.rsplit("/", 1)[-1]


def test_admin_flows(browser: Any, stack: Stack, tmp_path: Path) -> None:  # noqa: F811
    page = signed_in(browser, stack, "root", ADMIN_PW)
    assert "No keys yet" in page.content()
    snap(page, "keys-empty", tmp_path)
    # a team, a group, a person in both
    go(page, stack, "/teams")
    page.fill("#name", "ml")
    page.fill("#limit_per_minute", "600")
    page.fill("#limit_tokens_per_day", "100000")
    page.click("text=Create the team")
    page.wait_for_url(re.compile(r"/teams/team_"))
    go(page, stack, "/teams")
    snap(page, "teams", tmp_path)
    go(page, stack, "/groups")
    page.fill("#name", "artists")
    page.fill("#scopes", "images")
    page.click("text=Create the group")
    page.wait_for_url(re.compile(r"/groups/group_"))
    go(page, stack, "/users")
    page.click("a:text-is('bea')")
    page.select_option("#team_id", label="ml")
    page.click("text=Save")
    page.wait_for_selector("text=Saved.")
    page.select_option("#join-group", label="artists")
    page.click("button:text-is('Add')")
    page.wait_for_selector("a:text-is('artists')")
    # a key for bea, in the group, shown once
    go(page, stack, "/keys/new")
    snap(page, "key-new", tmp_path)
    page.fill("#name", "bea's notebook")
    page.select_option("#user_id", label="bea")
    page.check("input[name=scope][value=chat]")
    page.check("input[name=group_id]")
    page.check("input[name=expiry][value='90']")
    page.select_option("#credential", "openai-b")  # the upstream account, by name
    page.click("text=Create the key")
    page.wait_for_selector("text=Save it now")
    admin_key = the_key(page)
    assert not any(value in page.content() for value in PROVIDER_VALUES)
    snap(page, "key-created", tmp_path)
    key_id = key_id_of(page)
    # the key works through nginx; a denied request counts too
    for path, expected in (("/v1/chat/completions", 200), ("/v1/images/x", 200),
                           ("/v1/admin", 403)):  # fmt: skip
        reply = stack.request("GET", path, [("Authorization", f"Bearer {admin_key}")])
        assert reply.status == expected, path
    chat = next(s for s in stack.upstream.seen if s.path == "/v1/chat/completions")
    assert chat.header("Authorization") == [f"Bearer {PROVIDER_VALUES[1]}"]  # its binding
    assert stack.request("GET", "/v1/chat/x", [("Authorization", "Bearer ks_" + "0" * 49)]
                         ).status == 401  # fmt: skip
    go(page, stack, "/keys")
    never_shown_here(page)
    assert "bea&#39;s notebook" in page.content() or "bea's notebook" in page.inner_text("table")
    snap(page, "keys", tmp_path)
    back_to_the_answer(page)
    go(page, stack, f"/keys/{key_id}")
    never_shown_here(page)
    assert "group artists" in page.inner_text("body")  # images, granted through the group
    assert "openai-b" in page.inner_text("body")  # the binding, by name
    assert "2 allowed" in page.inner_text("body")
    snap(page, "key", tmp_path)
    page.fill("#name", "bea notebook")
    page.click("text=Save changes")
    page.wait_for_selector("text=Saved.")
    page.click("button[aria-label='Remove from group artists']")
    page.wait_for_selector("text=Removed from the group.")
    # rotate: the new key once, the old one for the grace
    page.click("text=Rotate…")
    page.select_option("#grace", "1h")
    snap(page, "rotate", tmp_path)
    page.click("button:text-is('Rotate')")
    page.wait_for_selector("text=Save it now")
    new_key = the_key(page)
    assert new_key != admin_key
    new_id = key_id_of(page)
    go(page, stack, f"/keys/{new_id}")
    never_shown_here(page)
    page.click("text=Revoke…")
    snap(page, "confirm", tmp_path)
    page.click("button:text-is('Revoke')")
    page.wait_for_selector("text=The key is revoked")
    assert stack.request("GET", "/v1/chat/x", [("Authorization", f"Bearer {new_key}")]
                         ).status == 401  # fmt: skip
    # a gateway reports what the key's requests spent (POST /api/v1/usage)
    made = stack.keystile.cli("keys", "create", "--name", "gateway", "--scope", "usage:write",
                              "--json")  # fmt: skip
    gateway = orjson.loads(made.stdout)["key"]
    body = orjson.dumps({"reports": [{"key_id": new_id, "request_id": "r-1", "tokens": 1500,
                                      "route": "chat"}]})  # fmt: skip
    sent = request(stack.keystile.port, "POST", "/api/v1/usage",
                   [("Authorization", f"Bearer {gateway}"),
                    ("Content-Type", "application/json")], body)  # fmt: skip
    assert sent.status == 200, sent.text()
    go(page, stack, "/activity")
    assert "Busiest keys" in page.content() and "Tokens reported" in page.content()
    assert "0.0030" in page.content()  # 1,500 tokens at 0.002 per 1,000
    snap(page, "activity", tmp_path)
    go(page, stack, f"/keys/{new_id}")
    assert "1500 tokens reported (cost 0.0030)" in page.content()
    never_shown_here(page)
    for path, name in (("/users", "users"), ("/groups", "groups")):
        go(page, stack, path)
        never_shown_here(page)
        snap(page, name, tmp_path)
    page.click("a:text-is('artists')")
    snap(page, "group", tmp_path)
    page.context.close()


def test_member_flows(browser: Any, stack: Stack, tmp_path: Path) -> None:  # noqa: F811
    page = signed_in(browser, stack, "bea", MEMBER_PW, width=375)
    assert "My API keys" in page.inner_text("nav")
    assert "Users" not in page.inner_text("nav")
    snap(page, "member-keys-375", tmp_path)
    go(page, stack, "/keys/new")
    # hers: the member scope, and images through her group (never admin)
    offered = page.locator("input[name=scope]").evaluate_all("e => e.map(x => x.value)")
    assert offered == ["chat", "images"]
    assert page.locator("#user_id").count() == 0
    page.fill("#name", "bea phone")
    page.check("input[name=scope][value=chat]")
    page.check("input[name=expiry][value='7']")
    page.click("text=Create the key")
    page.wait_for_selector("text=Save it now")
    the_key(page)
    snap(page, "member-key-created-375", tmp_path)
    member_key_id = key_id_of(page)
    go(page, stack, "/keys")
    never_shown_here(page)
    back_to_the_answer(page)
    go(page, stack, f"/keys/{member_key_id}")
    never_shown_here(page)
    snap(page, "member-key-375", tmp_path)
    page.click("text=Expire now…")
    page.click("button:text-is('Expire now')")
    page.wait_for_selector("text=The key has expired")
    # another person's key, by its URL: not found; admin pages: for admins
    root_keys = stack.keystile.cli("keys", "list", "--all", "--json")
    others = [k["id"] for k in __import__("json").loads(root_keys.stdout)
              if k.get("owner") != "bea"]  # fmt: skip
    response = go(page, stack, f"/keys/{others[0]}" if others else "/keys/key_nope")
    assert response.status == 404
    snap(page, "member-not-found-375", tmp_path)
    assert go(page, stack, "/users").status == 403
    go(page, stack, "/activity")
    snap(page, "member-activity-375", tmp_path)
    page.context.close()


def test_no_key_in_keystile_s_log(stack: Stack) -> None:
    log = stack.keystile.log()
    assert shown, "the flows above showed keys"
    for key in shown:
        assert key not in log
