"""Sessions below the HTTP layer: the store, the service, the lookup the cache uses,
the sign-in throttle, and how the core judges a session."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from multidict import CIMultiDict

from keystile.core import reasons
from keystile.core.decide import Facts, Presented, Rules, SessionRules
from keystile.core.errors import InvalidInput
from keystile.core.keys import Hasher, KeyFormat
from keystile.core.model import ACTIVE, EXPIRED, REVOKED, SESSION
from keystile.core.routes import load_routes
from keystile.identity.sessions import (
    LoginThrottle,
    SessionLookup,
    SessionService,
    SignInRefused,
    new_token,
)
from keystile.manage.accounts import AccountService
from keystile.manage.service import KeyService
from keystile.serve.cache import CachedLookup
from keystile.serve.lookup import KeyLookup
from keystile.serve.static_keys import StaticKeys
from keystile.store import Store
from tests.backends import BOTH, dump
from tests.conftest import Clock

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL

PASSWORD = "correct horse battery"
IDLE, ABSOLUTE = 600.0, 3600.0


@pytest.fixture
def accounts(service: KeyService) -> AccountService:
    return AccountService(service)


@pytest.fixture
def sessions(store: Store, clock: Clock) -> SessionService:
    return SessionService(store, idle=IDLE, absolute=ABSOLUTE,
                          throttle=LoginThrottle(3, 60.0), clock=clock)  # fmt: skip


@pytest.fixture
async def alice(accounts: AccountService) -> str:
    user = await accounts.create_user("alice", email="alice@example.com", password=PASSWORD)
    return user.id


async def lookup_of(store: Store, token: str):  # type: ignore[no-untyped-def]
    lookup = SessionLookup(store, IDLE, ["chat"])
    return await lookup.find_stored(lookup.hasher.candidates(token))


async def test_sign_in_stores_only_a_hash_and_the_record_is_the_user_s(
    store: Store, sessions: SessionService, alice: str, clock: Clock, db_path: Path
) -> None:
    signed = await sessions.sign_in("alice", PASSWORD, "192.0.2.1", "test-agent")
    assert len(signed.token) == 43
    stored = await dump(store)
    assert "alice" in stored and signed.token not in stored and PASSWORD not in stored
    record = await lookup_of(store, signed.token)
    assert record is not None and record.kind == SESSION
    assert (record.user_id, record.name, record.owner) == (alice, "alice", "alice@example.com")
    assert record.granted == ("chat",) and record.role == "member"
    assert record.state(clock.now) == ACTIVE
    assert record.state(clock.now + IDLE + 1) == EXPIRED  # idle
    again = await sessions.sign_in("alice", PASSWORD, "192.0.2.1")
    assert again.token != signed.token  # a new token at every sign-in


async def test_a_wrong_password_and_an_unknown_name_are_refused_alike(
    sessions: SessionService, alice: str
) -> None:
    answers = []
    for name in ("alice", "mallory"):
        with pytest.raises(SignInRefused) as refused:
            await sessions.sign_in(name, "not the password", "192.0.2.1")
        answers.append((refused.value.code, refused.value.message))
    assert answers[0] == answers[1]


async def test_failures_lock_the_name_and_address_pair_for_a_while(
    sessions: SessionService, alice: str, clock: Clock, store: Store
) -> None:
    for _ in range(3):
        with pytest.raises(SignInRefused):
            await sessions.sign_in("alice", "wrong password!", "192.0.2.1")
    with pytest.raises(SignInRefused) as refused:
        await sessions.sign_in("alice", PASSWORD, "192.0.2.1")
    assert refused.value.code == "locked_out"
    await sessions.sign_in("alice", PASSWORD, "192.0.2.2")  # another address is not locked
    clock.now += 61
    await sessions.sign_in("alice", PASSWORD, "192.0.2.1")
    audit = await store.list_audit(action="session.login_failed")
    assert len(audit) == 4 and all(PASSWORD not in str(e.public()) for e in audit)


async def test_ending_sessions_reaches_the_record(
    store: Store, sessions: SessionService, accounts: AccountService, alice: str, clock: Clock
) -> None:
    one = await sessions.sign_in("alice", PASSWORD, "192.0.2.1")
    two = await sessions.sign_in("alice", PASSWORD, "192.0.2.1")
    three = await sessions.sign_in("alice", PASSWORD, "192.0.2.1")
    await sessions.sign_out(one.token)
    assert (await lookup_of(store, one.token)).state(clock.now) == REVOKED
    await sessions.revoke(two.session.id, "admin")
    assert (await lookup_of(store, two.token)).state(clock.now) == REVOKED
    await accounts.update_user(alice, disabled=True)
    assert (await lookup_of(store, three.token)).state(clock.now) == REVOKED  # ended
    with pytest.raises(SignInRefused) as refused:
        await sessions.sign_in("alice", PASSWORD, "192.0.2.1")
    assert refused.value.code == "user_disabled"
    assert await sessions.revoke_user(alice, "admin") == 0  # disabling ended them all
    assert await sessions.list(alice) == []


async def test_every_change_that_ends_a_session_is_in_the_change_log(
    store: Store, sessions: SessionService, accounts: AccountService, alice: str
) -> None:
    """Other servers learn of it within one poll: the cache drops the session's hash."""
    signed = await sessions.sign_in("alice", PASSWORD, "192.0.2.1")
    cache = CachedLookup(SessionLookup(store, IDLE, ()))
    await cache.start()
    assert (await cache.find(signed.token)) is not None
    group = await accounts.create_group("readers", ["read"])
    for change in (
        lambda: accounts.set_user_membership(group.id, alice, True),
        lambda: accounts.update_group(group.id, scopes=["read", "write"]),
        lambda: accounts.update_user(alice, role="admin"),
        lambda: sessions.revoke_user(alice, "admin"),
    ):
        before = cache.seq
        await change()
        assert await cache.sync() >= 1, change
        assert cache.seq > before
    entry = await cache.find(signed.token)
    assert entry is not None and entry.record.revoked_at is not None
    assert "admin" in entry.record.granted and "write" in entry.record.granted


async def test_a_session_token_is_not_an_api_key_nor_a_key_a_session(
    store: Store, sessions: SessionService, alice: str, service: KeyService
) -> None:
    signed = await sessions.sign_in("alice", PASSWORD, "192.0.2.1")
    key = (await service.create("bot", scopes=["chat"])).key
    keys = KeyLookup(store, Hasher(), KeyFormat("ks"), StaticKeys())
    assert await keys.find(signed.token) is None
    assert await lookup_of(store, key) is None
    assert await lookup_of(store, signed.token) is not None


async def test_passwords_are_checked_at_the_edge(accounts: AccountService, alice: str) -> None:
    for bad in ("short", " leading space is odd", "x" * 2000):
        with pytest.raises(InvalidInput) as refused:
            await accounts.set_password(alice, bad)
        assert refused.value.field == "password" and bad not in str(refused.value)
    with pytest.raises(InvalidInput):
        await accounts.create_user("bob", role="root")


ROUTES, _ = load_routes([
    {"name": "api", "path": "/api/*", "sessions": True},
    {"name": "keys-only", "path": "/v1/*"},
], {}, None)  # fmt: skip
RULES = Rules(ROUTES, sessions=SessionRules("__Host-keystile"))
TOKEN = "t" * 43


def facts(method: str, path: str, **headers: str) -> Facts:
    return Facts("nginx", method, "app.example.com", path,
                 CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()}))  # fmt: skip


@pytest.mark.parametrize(
    ("request_facts", "expected"),
    [
        (facts("GET", "/api/x", Cookie=f"__Host-keystile={TOKEN}"), "session"),
        (facts("GET", "/api/x", Cookie=f"__Host-keystile={TOKEN}",
               Authorization="Bearer ks_key"), "key"),
        (facts("GET", "/api/x", Accept="text/html"), "302"),
        (facts("GET", "/api/x?a=b", Sec_Fetch_Mode="navigate"), "302"),
        (facts("GET", "/api/x", Accept="application/json"), "login_required"),
        (facts("POST", "/api/x", Accept="text/html"), "login_required"),
        (facts("GET", "/v1/x", Accept="text/html"), "missing_api_key"),
        (facts("POST", "/api/x", Cookie=f"__Host-keystile={TOKEN}",
               Sec_Fetch_Site="same-site"), "cross_site_request"),
        (facts("POST", "/api/x", Cookie=f"__Host-keystile={TOKEN}",
               Origin="https://evil.example"), "cross_site_request"),
        (facts("POST", "/api/x", Cookie=f"__Host-keystile={TOKEN}",
               Origin="https://evil.example", Authorization="Bearer ks_key"), "key"),
    ],
)  # fmt: skip
def test_screening_a_browser_request(request_facts: Facts, expected: str) -> None:
    screened = RULES.screen(request_facts)
    if isinstance(screened, Presented):
        assert ("session" if screened.session else "key") == expected
        return
    if expected == "302":
        assert screened.location is not None
        assert screened.location.startswith("/_keystile/login?rd=/api/x")
        assert screened.reason is reasons.LOGIN_REQUIRED
    else:
        assert screened.reason is not None and screened.reason.code == expected
        assert screened.location is None


async def test_a_session_on_a_route_for_keys_only_is_refused(
    store: Store, sessions: SessionService, alice: str, clock: Clock
) -> None:
    signed = await sessions.sign_in("alice", PASSWORD, "192.0.2.1")
    record = await lookup_of(store, signed.token)
    cookie = f"theme=dark; __Host-keystile={signed.token}"
    for path, expected in (("/api/x", None), ("/v1/x", reasons.SESSION_NOT_ALLOWED)):
        screened = RULES.screen(facts("GET", path, Cookie=cookie))
        assert isinstance(screened, Presented)
        decision = RULES.decide(screened, record, None, clock.now)
        assert decision.reason is expected
        if expected is None:
            assert decision.cookie == "theme=dark"
            headers = dict(RULES.grant(record, decision.route).upstream)
            assert headers["X-Keystile-User"] == "alice" and "X-Keystile-Key-Id" not in headers
    ended = RULES.decide(RULES.screen(facts("GET", "/api/x", Cookie=cookie, Accept="text/html")),  # type: ignore[arg-type]
                         None, None, clock.now)  # fmt: skip
    assert ended.reason is reasons.INVALID_SESSION and ended.location is not None


def test_the_sign_in_location_is_a_path_whatever_host_the_client_named() -> None:
    """Never built from the client's Host or X-Forwarded-Host: the shipped Traefik
    config keeps a relative Location as it is (preserveLocationHeader)."""
    headers = CIMultiDict({"Accept": "text/html"})
    for host in ("app.example.com:8443", "evil.example", "evil.example/x?"):
        told = Facts("forward", "GET", host, "/api/x", headers, scheme="https")
        decision = RULES.screen(told)
        assert not isinstance(decision, Presented)
        assert decision.location == "/_keystile/login?rd=/api/x"


async def test_a_session_made_elsewhere_is_found_at_once_even_under_a_spray(
    store: Store, sessions: SessionService, alice: str
) -> None:
    """Another process signs alice in; this one's filter has not seen the hash. A spray
    of made-up cookies must not use up the lookups her session needs."""
    cache = CachedLookup(SessionLookup(store, IDLE, ()))
    await cache.start()
    signed = await sessions.sign_in("alice", PASSWORD, "192.0.2.1")  # no on_end: "elsewhere"
    for _ in range(40):
        assert await cache.find(new_token()) is None
    await cache.sync()  # the next change-log read (every poll_interval, or woken)
    assert await cache.find(signed.token) is not None
    here = SessionService(store, idle=IDLE, absolute=ABSOLUTE, throttle=LoginThrottle(3, 60))
    here.on_end.append(cache.invalidate)
    for _ in range(40):
        await cache.find(new_token())
    mine = await here.sign_in("alice", PASSWORD, "192.0.2.1")
    assert await cache.find(mine.token) is not None  # this process: no poll needed


async def test_parallel_guesses_cannot_slip_past_the_lock(
    sessions: SessionService, alice: str
) -> None:
    results = await asyncio.gather(
        *(sessions.sign_in("alice", f"wrong password {i}", "192.0.2.7") for i in range(30)),
        return_exceptions=True,
    )
    codes = [r.code for r in results if isinstance(r, SignInRefused)]
    assert len(codes) == 30
    assert codes.count("wrong_credentials") <= 3  # the limit, however many at once


def test_a_full_throttle_locks_new_pairs_and_never_forgets_a_locked_one() -> None:
    throttle = LoginThrottle(attempts=2, window=60.0, max_entries=6)
    for _ in range(2):
        throttle.attempt("alice", "192.0.2.1", 0.0)
    assert throttle.locked("alice", "192.0.2.1", 1.0)
    for i in range(4):
        throttle.attempt(f"user{i}", f"198.51.100.{i}", 2.0)
    assert throttle.locked("newcomer", "203.0.113.1", 3.0)  # full of live entries
    assert throttle.locked("alice", "192.0.2.1", 3.0)  # still locked, not evicted
    assert not throttle.locked("newcomer", "203.0.113.1", 70.0)  # all expired
    for i in range(2):  # an IPv6 host counts by its /64
        throttle.attempt("bob", f"2001:db8::{i + 1}", 80.0)
    assert throttle.locked("bob", "2001:db8::99", 81.0)


async def test_a_new_password_or_disabling_ends_every_session(
    store: Store, sessions: SessionService, accounts: AccountService, alice: str, clock: Clock
) -> None:
    stolen = await sessions.sign_in("alice", PASSWORD, "192.0.2.1")
    await accounts.set_password(alice, "a brand new pass phrase")
    assert (await lookup_of(store, stolen.token)).state(clock.now) == REVOKED
    again = await sessions.sign_in("alice", "a brand new pass phrase", "192.0.2.1")
    await accounts.update_user(alice, disabled=True)
    await accounts.update_user(alice, disabled=False)
    assert (await lookup_of(store, again.token)).state(clock.now) == REVOKED
