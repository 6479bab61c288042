"""OpenID Connect end to end: real Chromium, nginx with the shipped config, keystile,
and a real provider (npm oidc-provider, tests/e2e/oidc/provider.mjs) on loopback.

Signing in with the provider's own login and consent pages, landing back signed in,
a self-service key shown once that works on the auth path, the cap naming the
oldest key; and each refusal produced for real: consent denied, unverified email,
a disallowed domain, a replayed, tampered or foreign state, an expired code, a
wrong client secret, the provider down, and a signing key rotated at the provider.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

from tests.e2e.browser import browser, screenshot  # noqa: F401 - the shared fixture
from tests.e2e.harness import (
    ROOT,
    Keystile,
    Proxy,
    Upstream,
    find_binary,
    free_port,
    request,
    stop_process,
    wait_for_port,
)

pytestmark = pytest.mark.e2e
HERE = ROOT / "tests" / "e2e" / "oidc"
CLIENT_ID, SECRET = "keystile-e2e", "e2e-client-secret-3f9a7c1d"
CONFIG = """
[oidc]
name = "Test IdP"
email_domains = ["example.com"]
admin_values = ["idp-admins"]
key_scopes = ["chat"]
key_limit = 2
key_expires_in = "7d"

[[routes]]
name = "chat"
path = "/v1/chat/*"
scopes = ["chat"]

[[routes]]
name = "home"
path = "/*"
methods = ["GET", "HEAD"]
sessions = true
"""


def missing(message: str) -> None:
    if os.environ.get("KEYSTILE_E2E_REQUIRED") == "1":
        pytest.fail(message + " and KEYSTILE_E2E_REQUIRED=1")
    pytest.skip(message)


class IdP:
    """``node provider.mjs``: a new signing key at every start."""

    def __init__(self, workdir: Path, redirect_uri: str) -> None:
        self.node = shutil.which("node") or missing("node is not installed (apt-get install "
                                                    "nodejs)")  # fmt: skip
        if not (HERE / "node_modules" / "oidc-provider").is_dir():
            missing("npm oidc-provider is not installed (scripts/test installs it; or "
                    "npm ci --prefix tests/e2e/oidc)")  # fmt: skip
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.redirect_uri = redirect_uri
        self.log_path = workdir / "oidc-provider.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, secret: str = SECRET) -> IdP:
        env = {**os.environ, "PORT": str(self.port), "CLIENT_ID": CLIENT_ID,
               "CLIENT_SECRET": secret, "REDIRECT_URI": self.redirect_uri}  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([str(self.node), "provider.mjs"], cwd=HERE, env=env,
                                         stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        wait_for_port(self.port, timeout=15, proc=self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM)
        self.proc = None


@dataclass
class World:
    upstream: Upstream
    keystile: Keystile
    proxy: Proxy
    idp: IdP

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    find_binary("nginx")
    workdir = tmp_path_factory.mktemp("oidc")
    (workdir / "keystile.toml").write_text(CONFIG)
    upstream = Upstream().start()
    env = {"KEYSTILE_DB": str(workdir / "keystile.db"),
           "KEYSTILE_CONFIG": str(workdir / "keystile.toml"),
           "KEYSTILE_OIDC_CLIENT_ID": CLIENT_ID, "KEYSTILE_OIDC_CLIENT_SECRET": SECRET}  # fmt: skip
    keystile = Keystile(workdir, env)
    proxy = Proxy("nginx", workdir, keystile.port, upstream.port)
    origin = f"http://127.0.0.1:{proxy.port}"
    idp = IdP(workdir, origin + "/_keystile/oidc/callback")
    keystile.env["KEYSTILE_OIDC_ISSUER"] = idp.issuer
    keystile.env["KEYSTILE_OIDC_EXTERNAL_URL"] = origin
    try:
        idp.start()
        keystile.start()
        proxy.start()
        yield World(upstream, keystile, proxy, idp)
    finally:
        proxy.stop()
        keystile.stop()
        idp.stop()
        upstream.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:  # noqa: F811
    context = browser.new_context()
    # the provider's dev pages import a web font; there is no internet here
    context.route(re.compile(r"^https://fonts\."), lambda route: route.abort())
    opened = context.new_page()
    yield opened
    context.close()


def at_provider(world: World, account: str, page: Any, consent: bool = True) -> None:
    """On the provider's dev pages: log in as ``account``, then allow (or cancel)."""
    page.wait_for_url(lambda url: url.startswith(world.idp.issuer + "/interaction/"))
    page.fill("input[name=login]", account)
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Continue")
    if consent:
        page.click("button:has-text('Continue')")
    else:
        page.click("text=[ Cancel ]")


def start_sign_in(world: World, page: Any, target: str = "/") -> None:
    page.goto(world.origin + target)
    page.wait_for_url(lambda url: "/_keystile/login?rd=" in url)
    page.click("#oidc")


def sign_in(world: World, page: Any, account: str, target: str = "/") -> None:
    start_sign_in(world, page, target)
    at_provider(world, account, page)


def held_callback(world: World, page: Any, account: str) -> str:
    """Sign in up to the provider's redirect back; the callback URL, not yet visited.

    Playwright cannot hold a request reached by a redirect (the callback is one), so
    the consent form's POST is held instead and its redirects are followed here, in
    the browser context's own cookie jar, up to the callback's address."""
    caught: list[str] = []

    def hold(route: Any) -> None:
        if "prompt=consent" not in (route.request.post_data or ""):
            route.continue_()
            return
        answer = route.fetch(max_redirects=0)
        for _ in range(5):
            location = urljoin(route.request.url, answer.headers["location"])
            if "/_keystile/oidc/callback" in location:
                caught.append(location)
                break
            answer = page.context.request.get(location, max_redirects=0)
        route.fulfill(status=200, content_type="text/plain", body="held by the test")

    page.route(re.compile(r"/interaction/[^/?]+$"), hold)
    start_sign_in(world, page)
    at_provider(world, account, page)
    page.wait_for_selector("text=held by the test")
    page.unroute(re.compile(r"/interaction/[^/?]+$"))
    assert caught, "the provider never sent the browser back"
    return caught[0]


def failure(page: Any, code: str) -> None:
    assert page.locator(".reason code").first.inner_text() == code, page.content()
    assert page.locator("a.button", has_text="Try again").count() == 1
    assert "Traceback" not in page.content()


def test_login_page_offers_the_provider(world: World, page: Any, tmp_path: Path) -> None:
    page.goto(world.origin + "/_keystile/login?rd=/docs")
    button = page.locator("#oidc")
    assert button.inner_text() == "Sign in with Test IdP"
    assert button.get_attribute("href") == "/_keystile/oidc/start?rd=/docs"
    screenshot(page, "oidc-login")


def test_sign_in_get_a_key_shown_once_and_use_it(world: World, page: Any,
                                                 tmp_path: Path) -> None:  # fmt: skip
    world.upstream.seen.clear()
    sign_in(world, page, "alice", "/reports?week=3")
    page.wait_for_url(world.origin + "/reports?week=3")
    arrived = [seen for seen in world.upstream.seen if seen.path == "/reports?week=3"]
    assert arrived and arrived[-1].header("X-Keystile-User") == ["alice@example.com"]
    assert arrived[-1].header("X-Keystile-User-Role") == ["admin"]  # from the groups claim

    page.goto(world.origin + "/_keystile/keys/sso")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#make-key")
    assert answer.value.status == 201
    assert answer.value.headers["cache-control"] == "no-store"
    key = page.locator("#key").inner_text().strip()
    assert re.fullmatch(r"ks_[0-9A-Za-z]{49}", key)
    assert "Save it now" in page.content() and key[:9] in page.content()
    screenshot(page, "oidc-sso-key")

    used = request(world.proxy.port, "POST", "/v1/chat/completions",
                   [("Authorization", f"Bearer {key}")], b"{}")  # fmt: skip
    assert used.status == 200, used.text()
    assert world.upstream.seen[-1].header("X-Keystile-Key-Name") == ["sso"]
    page.goto(world.origin + "/_keystile/keys/sso")
    assert key not in page.content() and key[:9] in page.content()  # shown once

    page.click("#make-key")
    second = page.locator("#key").inner_text().strip()
    assert second != key
    page.goto(world.origin + "/_keystile/keys/sso")
    assert page.locator("#make-key").is_disabled()
    screenshot(page, "oidc-sso-key-limit")
    full = page.request.post(world.origin + "/_keystile/keys/sso",
                             headers={"Origin": world.origin})  # fmt: skip
    assert full.status == 409
    listed = json.loads(world.keystile.cli("keys", "list", "--json").stdout)
    oldest = min(listed, key=lambda record: record["created_at"])
    assert oldest["id"] in full.text() and oldest["display_prefix"] == key[:9]  # named...
    assert oldest["id"] in page.locator(".notice").inner_text()
    assert (
        request(
            world.proxy.port,
            "POST",
            "/v1/chat/completions",
            [("Authorization", f"Bearer {key}")],
            b"{}",
        ).status
        == 200
    )  # ...not deleted


def test_consent_denied(world: World, page: Any, tmp_path: Path) -> None:
    start_sign_in(world, page)
    at_provider(world, "bob", page, consent=False)
    page.wait_for_url(lambda url: "/_keystile/oidc/callback" in url)
    failure(page, "consent_denied")
    screenshot(page, "oidc-failure")


@pytest.mark.parametrize(("account", "code"), [("uma", "email_not_verified"),
                                               ("dora", "domain_not_allowed")])  # fmt: skip
def test_people_the_provider_vouches_for_but_keystile_refuses(
    world: World, page: Any, account: str, code: str
) -> None:
    sign_in(world, page, account)
    page.wait_for_url(lambda url: "/_keystile/oidc/callback" in url)
    failure(page, code)
    if code == "domain_not_allowed":
        assert "example.com" in page.content()
    users = world.keystile.cli("users", "list", "--json").stdout
    assert f"{account}@" not in users


def test_a_replayed_or_tampered_state_is_refused(world: World, page: Any) -> None:
    callback = held_callback(world, page, "bob")
    page.goto(callback)
    page.wait_for_url(world.origin + "/")  # signed in
    page.goto(callback)  # the same answer again
    failure(page, "state_unknown")
    tampered = re.sub(r"state=[^&]+", "state=" + "A" * 43, callback)
    page.goto(tampered)
    failure(page, "state_unknown")


def test_a_state_from_another_browser_is_refused(world: World, page: Any, browser: Any) -> None:  # noqa: F811
    callback = held_callback(world, page, "bob")
    other = browser.new_context()
    try:
        elsewhere = other.new_page()
        elsewhere.goto(callback)
        failure(elsewhere, "state_mismatch")
    finally:
        other.close()
    page.goto(callback)  # and the sign-in it belonged to cannot be finished now either
    failure(page, "state_unknown")


def test_an_expired_code_is_refused(world: World, page: Any) -> None:
    callback = held_callback(world, page, "late")  # its codes live 1 s at the provider
    page.wait_for_timeout(1500)
    page.goto(callback)
    failure(page, "code_rejected")


def test_wrong_client_secret_then_a_rotated_signing_key(world: World, page: Any) -> None:
    world.idp.stop()
    world.idp.start(secret="the-provider-now-expects-another")
    try:
        sign_in(world, page, "bob")
        page.wait_for_url(lambda url: "/_keystile/oidc/callback" in url)
        failure(page, "invalid_client")
    finally:
        world.idp.stop()
        world.idp.start()  # the right secret again, and a new signing key
    page.context.clear_cookies()
    sign_in(world, page, "bob")
    page.wait_for_url(world.origin + "/")
    assert "fetching it again" in world.keystile.log()


def test_provider_down_at_the_callback(world: World, page: Any) -> None:
    callback = held_callback(world, page, "bob")
    world.idp.stop()
    try:
        page.goto(callback)
        failure(page, "provider_unreachable")
    finally:
        world.idp.start()


def test_every_refusal_is_audited_and_no_secret_is_logged(world: World) -> None:
    audit = world.keystile.cli("audit", "list", "--action", "oidc.login_failed", "--json").stdout
    for code in (
        "consent_denied",
        "email_not_verified",
        "domain_not_allowed",
        "state_unknown",
        "state_mismatch",
        "code_rejected",
        "invalid_client",
        "provider_unreachable",
    ):
        assert f'"{code}"' in audit, code
    assert "dora@elsewhere.test" in audit
    log = world.keystile.log()
    assert SECRET not in log and SECRET not in audit
    assert "code=" not in log and "id_token" not in log
