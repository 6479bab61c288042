"""A browser through the shipped nginx config: what a person's browser gets.

Plain ``def`` tests only: see the ``browser`` fixture on why (Playwright's sync API).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

from tests.e2e.browser import browser, screenshot
from tests.e2e.harness import Stack, running_stack
from tests.e2e.test_proxies import CONFIG, UPSTREAM_SECRET, create_key

if TYPE_CHECKING:
    from playwright.sync_api import Browser

__all__ = ["browser"]  # a fixture, used by name

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("browser-e2e")
    (workdir / "keystile.toml").write_text(CONFIG)
    env = {"KEYSTILE_DB": str(workdir / "keystile.db"),
           "KEYSTILE_CONFIG": str(workdir / "keystile.toml"),
           "E2E_UPSTREAM_KEY": UPSTREAM_SECRET}  # fmt: skip
    yield from running_stack(workdir, env, "nginx")


def test_a_page_behind_nginx_shows_the_identity_keystile_injected(
    stack: Stack, browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = create_key(stack.keystile, "--name", "browser client", "--scope", "chat",
                        "--owner", "ana")  # fmt: skip
    url = f"http://127.0.0.1:{stack.proxy.port}/v1/chat/welcome.html"
    context = browser.new_context(extra_http_headers={"X-Api-Key": key})
    try:
        page = context.new_page()
        response = page.goto(url)
        assert response is not None and response.status == 200
        assert page.locator("h1").inner_text() == "Reached the upstream"
        assert page.locator("#x-keystile-key-name").inner_text() == "browser client"
        assert page.locator("#x-keystile-owner").inner_text() == "ana"
        assert page.locator("#x-keystile-route").inner_text() == "chat"
        assert key not in page.content() and UPSTREAM_SECRET not in page.content()
        monkeypatch.setenv("KEYSTILE_SCREENSHOTS", str(tmp_path / "shots"))
        written = screenshot(page, "identity page")
    finally:
        context.close()
    assert [p.name for p in written] == ["identity_page.png", "identity_page.png"]
    assert written[1].parent == tmp_path / "shots"
    for path in written:
        assert path.read_bytes().startswith(PNG) and path.stat().st_size > 1000
    (seen,) = [s for s in stack.upstream.seen if s.path == "/v1/chat/welcome.html"]
    assert seen.header("Authorization") == [f"Bearer {UPSTREAM_SECRET}"]


def test_without_a_key_the_browser_gets_the_json_denial(stack: Stack, browser: Browser) -> None:
    page = browser.new_page()
    try:
        response = page.goto(f"http://127.0.0.1:{stack.proxy.port}/v1/chat/welcome.html")
        assert response is not None and response.status == 401
        error = orjson.loads(page.locator("body").inner_text())["error"]
        assert error["code"] == "missing_api_key"
        for path in screenshot(page, "denied"):
            assert path.read_bytes().startswith(PNG)
    finally:
        page.close()
