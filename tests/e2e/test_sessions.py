"""Browser sessions end to end: real Chromium, each proxy with its shipped config,
keystile, and the shipped example dashboard (deploy/dashboard/site) served by a
recording upstream. The upstream's key is injected by the proxy and must never
reach the browser; keystile's session cookie must never reach the upstream."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest

from tests.backends import postgres_schema_sync
from tests.e2e.browser import browser, screenshot
from tests.e2e.harness import ROOT, Stack, Upstream, request, running_stack
from tests.e2e.test_proxies import PROXIES

__all__ = ["browser"]  # the fixture, used by name
CANARY = "sk-canary-upstream-9f8e7d6c5b4a3210"
PASSWORD = "a long pass phrase 42"
SITE = ROOT / "deploy" / "dashboard" / "site"
CONFIG = """
[sessions]
trusted_origins = []

[[routes]]
name = "api"
path = "/api/*"
sessions = true
[routes.inject]
Authorization = { env = "E2E_UPSTREAM_KEY", format = "Bearer {}" }

[[routes]]
name = "site"
path = "/*"
methods = ["GET", "HEAD"]
sessions = true
"""


@pytest.fixture(scope="module", params=PROXIES)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    kind, _, backend = request.param.partition("+")
    workdir = tmp_path_factory.mktemp(f"{kind}-{backend or 'sqlite'}-sessions")
    (workdir / "keystile.toml").write_text(CONFIG)
    env = {"KEYSTILE_DB": str(workdir / "keystile.db"),
           "KEYSTILE_CONFIG": str(workdir / "keystile.toml"),
           "E2E_UPSTREAM_KEY": CANARY}  # fmt: skip
    with contextlib.ExitStack() as cleanup:
        if backend == "postgresql":
            env["KEYSTILE_DB"] = cleanup.enter_context(postgres_schema_sync())
        yield from _with_alice(running_stack(workdir, env, kind, site=SITE))


def _with_alice(stacks: Iterator[Stack]) -> Iterator[Stack]:
    for running in stacks:
        running.keystile.cli("users", "create", "alice", "--email", "alice@example.com")
        done = running.keystile.cli("users", "set-password", "alice", "--stdin",
                                    input_text=PASSWORD + "\n")  # fmt: skip
        assert done.returncode == 0
        yield running


@pytest.fixture
def upstream(stack: Stack) -> Upstream:
    stack.upstream.seen.clear()
    return stack.upstream


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    yield context
    context.close()


def api_calls(upstream: Upstream) -> list[Any]:
    return [seen for seen in upstream.seen if seen.path.startswith("/api/")]


def origin(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.proxy.port}"


def at_sign_in(url: str) -> bool:
    return "/_keystile/login?rd=" in url


def sign_in(page: Any, stack: Stack, target: str = "/") -> None:
    page.goto(origin(stack) + target)
    page.wait_for_url(at_sign_in)
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")


class Witness:
    """Every response the browser received: status, headers and body."""

    def __init__(self, page: Any) -> None:
        self.seen: list[str] = []
        page.on("response", self.record)

    def record(self, response: Any) -> None:
        text = f"{response.status} {response.url}\n{response.headers_array()}\n"
        if not 300 <= response.status < 400:  # a redirect has no body to read
            text += response.body().decode("latin-1")
        self.seen.append(text)


def no_secret_in_browser(page: Any, context: Any, witness: Witness) -> None:
    assert witness.seen
    for text in witness.seen:
        assert CANARY not in text
    assert CANARY not in page.content()
    assert CANARY not in str(context.cookies())
    storage = page.evaluate("JSON.stringify([Object.entries(localStorage),"
                            " Object.entries(sessionStorage)])")  # fmt: skip
    assert CANARY not in storage


def test_sign_in_then_the_dashboard_s_calls_carry_the_injected_key(
    stack: Stack, upstream: Upstream, context: Any
) -> None:
    page = context.new_page()
    witness = Witness(page)
    page.goto(origin(stack) + "/")
    page.wait_for_url(at_sign_in)
    page.wait_for_selector("#username")
    screenshot(page, f"sessions-login-{stack.proxy.kind}")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(origin(stack) + "/")
    page.wait_for_selector("#usage[data-state=loaded]")
    page.wait_for_function("document.getElementById('who').textContent.includes('alice')")
    screenshot(page, f"sessions-dashboard-{stack.proxy.kind}")

    calls = [seen for seen in upstream.seen if seen.path.startswith("/api/usage")]
    assert len(calls) == 1
    call = calls[0]
    assert call.header("Authorization") == [f"Bearer {CANARY}"]
    assert call.header("X-Keystile-User") == ["alice"]
    assert call.header("X-Keystile-User-Email") == ["alice@example.com"]
    assert call.header("X-Keystile-User-Role") == ["member"]
    assert call.header("X-Keystile-Key-Id") in ([], [""])
    for seen in upstream.seen:  # the page, its script and style, the API call
        for cookie in seen.header("Cookie"):
            assert "keystile" not in cookie, (seen.path, cookie)
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["__Host-keystile"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Lax"
    assert session["path"] == "/"
    no_secret_in_browser(page, context, witness)


def test_other_cookies_reach_the_upstream_without_keystile_s(
    stack: Stack, upstream: Upstream, context: Any
) -> None:
    page = context.new_page()
    context.add_cookies([{"name": "theme", "value": "dark", "url": origin(stack)}])
    sign_in(page, stack)
    page.wait_for_selector("#usage[data-state=loaded]")
    call = next(seen for seen in upstream.seen if seen.path.startswith("/api/usage"))
    assert call.header("Cookie") == ["theme=dark"]


def test_a_deep_link_returns_there_after_sign_in(stack: Stack, context: Any) -> None:
    page = context.new_page()
    sign_in(page, stack, "/index.html?tab=usage")
    page.wait_for_url(origin(stack) + "/index.html?tab=usage")
    page.wait_for_selector("#usage[data-state=loaded]")


def test_a_script_without_a_session_gets_401_json_not_a_redirect(
    stack: Stack, upstream: Upstream
) -> None:
    reply = stack.request("GET", "/api/usage", [("Accept", "application/json")])
    assert reply.status == 401
    assert b'"login_required"' in reply.body
    assert reply.header("Location") is None
    page = stack.request("GET", "/", [("Accept", "text/html")])
    assert page.status == 302
    assert page.header(
        "Location",
    ).endswith("/_keystile/login?rd=/")  # type: ignore[union-attr]
    assert upstream.seen == []


def test_the_sign_in_redirect_never_names_a_host_the_client_chose(
    stack: Stack, upstream: Upstream
) -> None:
    """nginx built the 302 from the client's Host (absolute_redirect): Host: evil.example
    got Location: http://evil.example:PORT/_keystile/login. Every shipped config
    answers a path, or a URL of a host it was configured with."""
    for host in ("evil.example", f"evil.example:{stack.proxy.port}"):
        with socket.create_connection(("127.0.0.1", stack.proxy.port), timeout=10) as sock:
            sock.sendall(f"GET /deep/page HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\n"
                         "Connection: close\r\n\r\n".encode())  # fmt: skip
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        locations = [line.split(":", 1)[1].strip() for line in head.split("\r\n")
                     if line.lower().startswith("location:")]  # fmt: skip
        assert all("evil.example" not in location for location in locations), head
    assert upstream.seen == []


def test_sign_out_ends_access_at_once(stack: Stack, upstream: Upstream, context: Any) -> None:
    page = context.new_page()
    sign_in(page, stack)
    page.wait_for_selector("#usage[data-state=loaded]")
    token = next(c["value"] for c in context.cookies() if c["name"] == "__Host-keystile")
    page.click("#sign-out")
    page.wait_for_url(lambda url: url.endswith("/_keystile/login?signed_out=1"))
    assert "signed out" in page.content()
    upstream.seen.clear()
    # the token the browser held, replayed (by a thief who copied it)
    reply = stack.request("GET", "/api/usage", [("Cookie", f"__Host-keystile={token}")])
    assert reply.status == 401
    assert upstream.seen == []


def test_an_ended_session_sends_the_browser_to_sign_in_again(
    stack: Stack, upstream: Upstream, context: Any
) -> None:
    page = context.new_page()
    sign_in(page, stack)
    page.wait_for_selector("#usage[data-state=loaded]")
    stack.keystile.cli("users", "end-sessions", "alice")
    upstream.seen.clear()
    page.wait_for_timeout(1200)  # every server drops it within one change-log poll
    page.goto(origin(stack) + "/")
    page.wait_for_url(at_sign_in)
    assert upstream.seen == []


@pytest.fixture(scope="module")
def evil_site() -> Iterator[dict[str, Any]]:
    """Another origin on the same machine (same site: Lax cookies go along) whose
    page posts a form to the proxy when loaded."""
    state: dict[str, Any] = {"target": ""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (f'<form id="f" method="post" action="{state["target"]}">'
                    '<input name="prompt" value="pwned"></form>'
                    '<script>document.getElementById("f").submit()</script>').encode()  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["origin"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def test_a_cross_site_form_post_is_refused_before_the_upstream(
    stack: Stack, upstream: Upstream, context: Any, evil_site: dict[str, Any]
) -> None:
    page = context.new_page()
    sign_in(page, stack)
    page.wait_for_selector("#usage[data-state=loaded]")
    upstream.seen.clear()
    evil_site["target"] = origin(stack) + "/api/ask"
    attack = context.new_page()
    with attack.expect_response(evil_site["target"]) as answer:
        attack.goto(evil_site["origin"] + "/")
    response = answer.value
    assert response.status == 403
    assert b"cross_site_request" in response.body()
    assert api_calls(upstream) == []  # (the browser may still fetch /favicon.ico)
    # the dashboard's own POST (same origin) works
    page.click("#ask button")
    page.wait_for_selector("#answer[data-state=loaded]")
    assert [seen.method for seen in api_calls(upstream)] == ["POST"]


OPEN_REDIRECTS = [
    "//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example",
    "https://evil.example/", "http://127.0.0.1.evil.example/", "javascript:alert(1)",
    "JaVaScRiPt:alert(1)", "/%2F%2Fevil.example", "/%5Cevil.example", "%2F%2Fevil.example",
    "/%09/evil.example", "%0d%0a//evil.example", "/\t/evil.example", " //evil.example",
    "https:evil.example", "//evil.example@127.0.0.1", "https://user@evil.example",
    "data:text/html,hi", "/%252F%252Fevil.example",
]  # fmt: skip


def test_return_urls_that_leave_the_site_land_on_the_home_page(stack: Stack, context: Any) -> None:
    page = context.new_page()
    for evil in OPEN_REDIRECTS[:6]:  # through the browser: a few; all below
        page.goto(origin(stack) + "/_keystile/login?rd=" + quote(evil, safe=""))
        page.fill("#username", "alice")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(origin(stack) + "/")
        page.goto("about:blank")  # the dashboard's own calls must not navigate meanwhile
        context.clear_cookies()
    for evil in OPEN_REDIRECTS:
        form = f"username=alice&password={quote(PASSWORD)}&rd={quote(evil, safe='')}".encode()
        reply = request(stack.proxy.port, "POST", "/_keystile/login",
                        [("Content-Type", "application/x-www-form-urlencoded"),
                         ("Origin", origin(stack))], form)  # fmt: skip
        assert reply.status == 303, (evil, reply.text())
        assert reply.header("Location") == "/", evil


def test_a_wrong_password_and_an_unknown_user_get_the_same_page(stack: Stack) -> None:
    answers = []
    for name, password in (("alice", "wrong password 1"), ("nobody-here", "wrong password 1")):
        form = f"username={name}&password={quote(password)}&rd=/".encode()
        reply = request(stack.proxy.port, "POST", "/_keystile/login",
                        [("Content-Type", "application/x-www-form-urlencoded"),
                         ("X-Forwarded-For", "203.0.113.9")], form)  # fmt: skip
        assert reply.status == 401
        assert reply.header("Set-Cookie") is None
        answers.append(reply.body.replace(name.encode(), b"NAME"))
    assert answers[0] == answers[1]


def test_made_up_client_addresses_do_not_reset_the_sign_in_lock(stack: Stack) -> None:
    """Each guess claims another address in every header a client can write; the
    proxy's own view of the client (loopback here) is what counts."""
    statuses = []
    for i in range(7):  # sessions.login_attempts is 5
        form = f"username=mallory&password=wrong+guess+{i}&rd=/".encode()
        reply = request(stack.proxy.port, "POST", "/_keystile/login",
                        [("Content-Type", "application/x-www-form-urlencoded"),
                         ("X-Real-IP", f"198.51.100.{i}"),
                         ("X-Forwarded-For", f"203.0.113.{i}")], form)  # fmt: skip
        statuses.append(reply.status)
    assert statuses[-1] == 429, statuses
