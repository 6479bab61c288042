"""The same black-box checks through every proxy, each running our shipped config:
a request gets the same decision whichever proxy asked."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import orjson
import pytest

from keystile.core.aliases import ALIAS_CHARS
from tests.backends import postgres_schema_sync
from tests.e2e.harness import Keystile, Reply, Stack, Upstream, running_stack
from tests.waiting import wait_until

UPSTREAM_SECRET = "sk-upstream-provider-secret-0123456789"
# every proxy on an SQLite file; nginx and Envoy's gRPC dialect on PostgreSQL too
PROXIES = ["nginx", "envoy", "envoy-grpc", "caddy", "traefik", "nginx+postgresql",
           "envoy-grpc+postgresql"]  # fmt: skip
CONFIG = """
[[routes]]
name = "chat"
path = "/v1/chat/*"
methods = ["GET", "POST"]
scopes = ["chat"]
[routes.inject]
Authorization = { env = "E2E_UPSTREAM_KEY", format = "Bearer {}" }

[[routes]]
name = "models"
path = "/v1/models"
[routes.inject]
X-Api-Key = { env = "E2E_UPSTREAM_KEY" }

[[routes]]
name = "hosted"
path = "/hosted/*"
host = "good.example"
"""
IDENTITY = ["X-Keystile-Key-Id", "X-Keystile-Key-Name", "X-Keystile-Owner", "X-Keystile-Scopes",
            "X-Keystile-Route"]  # fmt: skip


def create_key(keystile: Keystile, *args: str) -> tuple[str, str]:
    data = orjson.loads(keystile.cli("keys", "create", "--json", *args).stdout)
    return data["id"], data["key"]


@pytest.fixture(scope="module", params=PROXIES)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    kind, _, backend = request.param.partition("+")
    workdir = tmp_path_factory.mktemp(f"{kind}-{backend or 'sqlite'}-e2e")
    (workdir / "keystile.toml").write_text(CONFIG)
    env = {"KEYSTILE_DB": str(workdir / "keystile.db"),
           "KEYSTILE_CONFIG": str(workdir / "keystile.toml"),
           "E2E_UPSTREAM_KEY": UPSTREAM_SECRET}  # fmt: skip
    if backend != "postgresql":
        yield from running_stack(workdir, env, kind)
        return
    with postgres_schema_sync() as url:
        yield from running_stack(workdir, {**env, "KEYSTILE_DB": url}, kind)


@pytest.fixture
def upstream(stack: Stack) -> Upstream:
    stack.upstream.seen.clear()
    return stack.upstream


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, tuple[str, str]]:
    ks = stack.keystile
    expiry = time.time() + 6  # made first: its expiry must still lie ahead when it is made
    made = {
        "expiring": create_key(ks, "--name", "short", "--scope", "chat", "--expires-at",
                               time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))),
        "chat": create_key(ks, "--name", "chat client", "--scope", "chat", "--owner", "ana"),
        "memory": create_key(ks, "--name", "memory only", "--scope", "memory"),
        "revoked": create_key(ks, "--name", "gone", "--scope", "chat"),
        "other": create_key(ks, "--name", "other", "--scope", "chat"),
    }  # fmt: skip
    ks.cli("keys", "revoke", made["revoked"][0])
    synced_since(ks, time.monotonic())  # the new keys and the revocation are seen
    time.sleep(max(0.0, expiry + 0.1 - time.time()))  # "expiring" expires: a date, not a wait
    return made


def last_sync(keystile: Keystile) -> tuple[float, float]:
    """Bounds (time.monotonic()) of when keystile last finished reading the store's
    change log: /metrics says how long ago, as of some moment during the scrape."""
    asked = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{keystile.port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    answered = time.monotonic()
    (line,) = [x for x in text.splitlines() if x.startswith("keystile_cache_sync_age_seconds ")]
    age = float(line.split()[1])
    return asked - age, answered - age


def synced_since(keystile: Keystile, moment: float) -> None:
    """Until keystile has read the change log from scratch after ``moment``: a read
    that ended after it (it may have begun before), then a later one."""
    ended = wait_until(lambda: last_sync(keystile), lambda at: at[0] > moment,
                       what="a change-log read ending after the moment")  # fmt: skip
    wait_until(lambda: last_sync(keystile), lambda at: at[0] > ended[1],
               what="the next change-log read")  # fmt: skip


def error_of(reply: Reply) -> dict[str, str]:
    data = orjson.loads(reply.body)
    assert set(data["error"]) == {"message", "type", "code"}, data
    return data["error"]


def no_secret_in(reply: Reply, *secrets: str) -> None:
    for secret in (UPSTREAM_SECRET, *secrets):
        assert secret not in reply.text()


def test_valid_key_reaches_upstream_with_credential_and_identity(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]]
) -> None:
    key_id, key = keys["chat"]
    reply = stack.request("POST", "/v1/chat/completions?stream=false",
                          [("Authorization", f"Bearer {key}")], b'{"model": "x"}')  # fmt: skip
    assert reply.status == 200, reply.text()
    no_secret_in(reply, key)
    (seen,) = upstream.seen
    assert (seen.method, seen.path, seen.body) == (
        "POST", "/v1/chat/completions?stream=false", b'{"model": "x"}')  # fmt: skip
    assert seen.header("Authorization") == [f"Bearer {UPSTREAM_SECRET}"]
    assert seen.header("X-Keystile-Key-Id") == [key_id]
    assert seen.header("X-Keystile-Owner") == ["ana"]
    assert seen.header("X-Keystile-Scopes") == ["chat"]
    assert seen.header("X-Keystile-Route") == ["chat"]
    assert not any(key in value for _, value in seen.headers)


def test_x_api_key_is_replaced_by_the_injected_one(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]]
) -> None:
    _, key = keys["chat"]
    reply = stack.request("GET", "/v1/models", [("x-api-key", key)])
    assert reply.status == 200, reply.text()
    (seen,) = upstream.seen
    assert seen.header("X-Api-Key") == [UPSTREAM_SECRET]
    assert [v for v in seen.header("Authorization") if v] == []
    assert not any(key in value for _, value in seen.headers)


@pytest.mark.parametrize(
    ("who", "code"),
    [(None, "missing_api_key"), ("bogus", "invalid_api_key"), ("foreign", "invalid_api_key"),
     ("revoked", "revoked_api_key"), ("expiring", "expired_api_key")],
)  # fmt: skip
def test_bad_keys_are_401_json_and_never_forwarded(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]], who: str | None, code: str
) -> None:
    tokens = {"bogus": "ks_" + "A" * 49, "foreign": "not-a-keystile-key",
              **{name: pair[1] for name, pair in keys.items()}}  # fmt: skip
    headers = [("Authorization", f"Bearer {tokens[who]}")] if who else []
    reply = stack.request("POST", "/v1/chat/completions", headers, b"{}")
    assert reply.status == 401, reply.text()
    assert (reply.header("WWW-Authenticate") or "").startswith("Bearer")
    assert error_of(reply)["code"] == code
    assert upstream.seen == []
    no_secret_in(reply)
    assert not any(reply.header(name) for name in IDENTITY)


def test_wrong_scope_and_unmatched_route_are_403(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]]
) -> None:
    wrong = stack.request("POST", "/v1/chat/completions", [("x-api-key", keys["memory"][1])])
    assert wrong.status == 403 and error_of(wrong)["code"] == "insufficient_scope"
    unmatched = stack.request("GET", "/admin", [("x-api-key", keys["chat"][1])])
    assert unmatched.status == 403 and error_of(unmatched)["code"] == "route_not_allowed"
    assert upstream.seen == []
    for reply in (wrong, unmatched):
        no_secret_in(reply)
        assert not any(reply.header(name) for name in IDENTITY)


def test_two_different_keys_are_denied(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]]
) -> None:
    both = [("Authorization", f"Bearer {keys['chat'][1]}"), ("x-api-key", keys["other"][1])]
    reply = stack.request("GET", "/v1/chat/x", both)
    assert reply.status == 401 and error_of(reply)["code"] == "invalid_api_key"
    assert upstream.seen == []


def test_forged_identity_and_credentials_never_reach_upstream(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]]
) -> None:
    key_id, key = keys["other"]  # no owner: X-Keystile-Owner has no real value
    forged = [("x-api-key", key), ("X-Keystile-Key-Id", "key_forged"),
              ("x-keystile-owner", "root"), ("X-KEYSTILE-SCOPES", "admin")]  # fmt: skip
    reply = stack.request("POST", "/v1/chat/completions", forged, b"{}")
    assert reply.status == 200, reply.text()
    (seen,) = upstream.seen
    assert seen.header("X-Keystile-Key-Id") == [key_id]
    assert seen.header("X-Keystile-Scopes") == ["chat"]
    assert [v for v in seen.header("X-Keystile-Owner") if v] == []
    assert [v for v in seen.header("X-Api-Key") if v] == []  # the client's key is gone
    assert "forged" not in str(seen.headers) and "root" not in str(seen.headers)


def test_proxy_authorization_never_reaches_upstream(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]]
) -> None:
    # some clients repeat their key in Proxy-Authorization (the gateway set as their
    # HTTP proxy): the proxy must not hand it to the API
    _, key = keys["chat"]
    both = [("Authorization", f"Bearer {key}"), ("Proxy-Authorization", f"Bearer {key}")]
    reply = stack.request("GET", "/v1/chat/x", both)
    assert reply.status == 200, reply.text()
    (seen,) = upstream.seen
    assert seen.header("Proxy-Authorization") == [], seen.headers
    assert seen.header("Authorization") == [f"Bearer {UPSTREAM_SECRET}"]
    assert not any(key in value for _, value in seen.headers)


def test_ip_allowlists_see_a_loopback_client_as_127_0_0_1(stack: Stack, upstream: Upstream) -> None:
    # every proxy here listens on loopback: whichever proxy asks, keystile must see the
    # client as 127.0.0.1, and a client-sent X-Forwarded-For must not change that
    _, loopback = create_key(stack.keystile, "--name", "loopback only", "--scope", "chat",
                             "--allowed-ip", "127.0.0.1")  # fmt: skip
    _, office = create_key(stack.keystile, "--name", "office only", "--scope", "chat",
                           "--allowed-ip", "10.0.0.0/8")  # fmt: skip
    for forged in ([], [("X-Forwarded-For", "10.1.2.3")]):
        allowed = stack.request("GET", "/v1/chat/x", [("x-api-key", loopback), *forged])
        assert allowed.status == 200, (forged, allowed.text())
        denied = stack.request("GET", "/v1/chat/x", [("x-api-key", office), *forged])
        assert denied.status == 403, (forged, denied.text())
        assert error_of(denied)["code"] == "ip_not_allowed"
    assert len(upstream.seen) == 2


@pytest.mark.parametrize(
    "name", ["X_Keystile_Owner", "x-keystile_route", "X_Api_Key", "X.Keystile.Owner",
             "X+Api~Key", "Proxy.Authorization", "x-http-method.override"],
)  # fmt: skip
def test_alias_spellings_never_reach_upstream(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]], name: str
) -> None:
    # WSGI, CGI and PHP upstreams read X.Keystile.Owner and X_Keystile_Owner as
    # X-Keystile-Owner (every character of a name but letters and digits is "_" there)
    reply = stack.request("GET", "/v1/chat/x", [("x-api-key", keys["chat"][1]), (name, "forged")])
    for seen in upstream.seen:  # refused by the proxy or by keystile, or dropped
        aliases = [h for h, _ in seen.headers if set(h) & set(ALIAS_CHARS)]
        assert aliases == [], seen.headers
    assert reply.status in (200, 400, 403), reply.text()


@pytest.mark.parametrize(
    "target",
    ["/v1/chat/../admin", "/v1/chat/%2e%2e/admin", "/v1/chat%2fcompletions",
     "/v1/chat/%252e%252e/admin", "/v1/chat/x%00y", "/v1/chat/x%5cy", "/v1//chat/x",
     "/v1/chat/./x"],
)  # fmt: skip
def test_path_tricks_never_reach_a_path_outside_the_route(
    stack: Stack, upstream: Upstream, keys: dict[str, tuple[str, str]], target: str
) -> None:
    reply = stack.request("GET", target, [("x-api-key", keys["chat"][1])])
    if reply.status == 200:  # a proxy that normalises first decides on what it forwards
        (seen,) = upstream.seen
        assert seen.path.startswith("/v1/chat/"), seen.path
        assert not any(bad in seen.path.lower() for bad in ("..", "%2f", "%5c", "%00", "//"))
    else:
        assert reply.status in (400, 403), reply.text()
        assert upstream.seen == []


def test_keystile_down_means_no_upstream_hit(
    stack: Stack, keys: dict[str, tuple[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {k: v for k, v in stack.keystile.env.items() if k.startswith(("KEYSTILE_", "E2E_"))}
    env.pop("KEYSTILE_LISTEN")
    workdir = tmp_path_factory.mktemp(f"{stack.proxy.kind}-down")
    for own in running_stack(workdir, env, stack.proxy.kind):
        assert own.request("GET", "/v1/chat/x", [("x-api-key", keys["chat"][1])]).status == 200
        own.keystile.stop()
        own.upstream.seen.clear()
        reply = own.request("GET", "/v1/chat/x", [("x-api-key", keys["chat"][1])])
        # Traefik answers a forwardAuth it cannot reach with a bare 500, whatever the config
        assert reply.status in ((500,) if stack.proxy.kind == "traefik" else (502, 503)), (
            reply.text())  # fmt: skip
        assert own.upstream.seen == []
        no_secret_in(reply, keys["chat"][1])


def test_rate_limit_reaches_the_client_as_429(stack: Stack, upstream: Upstream) -> None:
    _, key = create_key(stack.keystile, "--name", "metered", "--scope", "chat",
                        "--limit", "per_hour=1")  # fmt: skip
    first = stack.request("GET", "/v1/chat/x", [("x-api-key", key)])
    assert first.status == 200, first.text()
    # forward auth (Caddy, Traefik) cannot pass the auth answer's headers to the client
    # on an allow: only onto the upstream request
    if stack.proxy.kind not in ("caddy", "traefik"):
        assert first.header("X-RateLimit-Limit") == "1"
        assert first.header("X-RateLimit-Remaining") == "0"
    limited = stack.request("GET", "/v1/chat/x", [("x-api-key", key)])
    assert limited.status == 429, limited.text()
    assert error_of(limited)["code"] == "rate_limited"
    assert int(limited.header("Retry-After") or 0) >= 1
    assert limited.header("X-RateLimit-Remaining") == "0"
    assert len(upstream.seen) == 1
    no_secret_in(limited, key)


def handovers(keystile: Keystile) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{keystile.port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    (line,) = [x for x in text.splitlines() if x.startswith("keystile_wire_handovers_total ")]
    return float(line.split()[1])


def test_the_proxy_s_subrequests_take_the_fast_path(
    stack: Stack, keys: dict[str, tuple[str, str]]
) -> None:
    # what the proxy sends keystile is plain enough for the wire path: none is handed
    # to aiohttp (which would answer the same, only slower)
    before = handovers(stack.keystile)
    _, key = keys["chat"]
    for headers in ([("Authorization", f"Bearer {key}")], [], [("X-Api-Key", "ks_nope")]):
        stack.request("POST", "/v1/chat/completions", headers, b"{}")
    assert handovers(stack.keystile) == before + 1  # the /metrics read itself is aiohttp's
