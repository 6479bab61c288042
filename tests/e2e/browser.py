"""A real browser for end-to-end UI tests: Debian's Chromium driven by Playwright.

Import the fixture into a test module (``from tests.e2e.browser import browser``)
and take screenshots with :func:`screenshot`. Playwright's own browser builds are
never downloaded (no ``playwright install``): the browser is the ``chromium``
package, which ``scripts/test`` installs. Missing Chromium or Playwright skips
the test, or fails it under ``KEYSTILE_E2E_REQUIRED=1``.

Screenshots go to a ``screenshots`` folder under pytest's temporary directory,
and also to ``$KEYSTILE_SCREENSHOTS`` when that is set (for a person or CI to
look at).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.harness import find_binary, unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SCREENSHOTS_ENV = "KEYSTILE_SCREENSHOTS"
_shots: list[Path] = []  # the tmp folder of this session, once the first browser started


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Chromium, one per test module, through Playwright's **sync** API.

    Why sync, and why per module: the sync API runs its own event loop in a
    greenlet and, between calls, marks that loop as *running* in the calling
    thread. An asyncio loop started in that thread meanwhile (pytest-aiohttp's,
    for an ``async def`` test or fixture) would fail with "Cannot run the event
    loop while another loop is running". So a module that uses ``browser`` holds
    only plain ``def`` tests (as the other e2e tests are: the harness is
    synchronous), and the browser is stopped when the module ends, before the
    async tests of other modules run. Should a UI test ever need asyncio, use
    Playwright's async API in an ``async def`` test instead of this fixture.

    Chromium runs with ``--no-sandbox`` (Playwright's default, ``chromium_sandbox``
    off): its sandbox refuses to start as root, which is how tests run here.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    executable = find_binary("chromium")  # Debian's /usr/bin/chromium
    if not _shots:
        _shots.append(tmp_path_factory.mktemp("screenshots", numbered=False))
    with sync_playwright() as playwright:
        # --disable-dev-shm-usage: a container's /dev/shm may be too small for Chromium
        launched = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=["--disable-dev-shm-usage"])  # fmt: skip
        try:
            yield launched
        finally:
            launched.close()


def screenshot(page: Page, name: str) -> list[Path]:
    """Save a full-page PNG of ``page`` as ``<name>.png`` in the session's screenshot
    folder and, when ``$KEYSTILE_SCREENSHOTS`` names a folder, there too."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "page"
    folders = list(_shots)
    extra = os.environ.get(SCREENSHOTS_ENV)
    if extra:
        folders.append(Path(extra))
    assert folders, "screenshot() needs the browser fixture"
    image = page.screenshot(full_page=True)
    written = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.png"
        path.write_bytes(image)
        written.append(path)
    return written
