"""The production request path (Authorizer: resolve, gather, core, count) over a real
SQLite store: one table of requests and what is decided."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from multidict import CIMultiDict

from keystile.core import keys
from keystile.core.decide import Decision, Facts, Rules
from keystile.core.errors import StoreError
from keystile.core.keys import Hasher, KeyFormat
from keystile.core.reasons import Outcome
from keystile.core.routes import load_routes
from keystile.limits.policy import InvalidKeyThrottle
from keystile.manage.service import KeyService
from keystile.serve.cache import CachedLookup
from keystile.serve.gate import Authorizer
from keystile.serve.lookup import KeyLookup
from keystile.serve.static_keys import StaticKeys
from keystile.store import Store
from tests.backends import BOTH

from .conftest import Clock

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL

ROUTES = [
    {"name": "chat", "path": "/v1/chat/*", "scopes": ["chat"],
     "inject": {"Authorization": {"env": "UP", "format": "Bearer {}"}}},
    {"name": "admin", "path": "/admin/*", "scopes": ["admin"]},
    {"name": "open", "path": "/v1/models"},
]  # fmt: skip


@dataclass
class World:
    authorizer: Authorizer
    keys: dict[str, str]
    ids: dict[str, str]
    clock: Clock


@pytest.fixture
async def world(store: Store, clock: Clock) -> World:
    service = KeyService(store, Hasher(), clock=clock)
    made = {
        "chat": await service.create("chat", scopes=["chat"], owner="ana"),
        "memory": await service.create("memory", scopes=["memory"]),
        "expiring": await service.create("exp", scopes=["chat"], expires_at=clock.now + 60),
        "revoked": await service.create("rev", scopes=["chat"]),
        "disabled": await service.create("dis", scopes=["chat"]),
        "deleted": await service.create("del", scopes=["chat"]),
        "office": await service.create("office", scopes=["chat"], allowed_ips=["10.0.0.0/8"]),
        "limited": await service.create("lim", scopes=["chat"], limits={"per_minute": 1}),
    }
    await service.revoke(made["revoked"].record.id)
    await service.update(made["disabled"].record.id, enabled=False)
    await service.delete(made["deleted"].record.id)
    clock.now += 120  # "expiring" is now expired
    lookup = KeyLookup(store, Hasher(), KeyFormat(), StaticKeys("admin-static-key", ("static-k",)))
    table, errors = load_routes(ROUTES, {"UP": "sk-upstream"}, None)
    assert not errors
    cache = CachedLookup(lookup)
    await cache.start()
    authorizer = Authorizer(Rules(table), cache, clock=clock)
    return World(authorizer, {k: v.key for k, v in made.items()},
                 {k: v.record.id for k, v in made.items()}, clock)  # fmt: skip


def facts(target: str | None, *headers: tuple[str, str], method: str = "POST") -> Facts:
    return Facts("test", method, "api.local", target, CIMultiDict(headers), "192.0.2.1")


async def decide(world: World, facts: Facts) -> Decision:
    return (await world.authorizer.authorize(facts))[0]


def bearer(key: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {key}")


CASES = [
    # (name, target, credential(name -> header), outcome, reason)
    ("valid", "/v1/chat/completions", "chat", Outcome.ALLOW, None),
    ("no key", "/v1/chat/completions", None, Outcome.UNAUTHENTICATED, "missing_api_key"),
    ("unknown", "/v1/chat/completions", "unknown", Outcome.UNAUTHENTICATED, "invalid_api_key"),
    ("bad checksum", "/v1/chat/x", "mistyped", Outcome.UNAUTHENTICATED, "invalid_api_key"),
    ("expired", "/v1/chat/x", "expiring", Outcome.UNAUTHENTICATED, "expired_api_key"),
    ("revoked", "/v1/chat/x", "revoked", Outcome.UNAUTHENTICATED, "revoked_api_key"),
    ("disabled", "/v1/chat/x", "disabled", Outcome.UNAUTHENTICATED, "revoked_api_key"),
    ("deleted", "/v1/chat/x", "deleted", Outcome.UNAUTHENTICATED, "invalid_api_key"),
    ("wrong scope", "/v1/chat/x", "memory", Outcome.FORBIDDEN, "insufficient_scope"),
    ("no scope needed", "/v1/models", "memory", Outcome.ALLOW, None),
    ("unmatched", "/v2/other", "chat", Outcome.FORBIDDEN, "route_not_allowed"),
    ("dot-dot", "/v1/chat/../../admin/x", "chat", Outcome.FORBIDDEN, "route_not_allowed"),
    ("unknown target", None, "chat", Outcome.FORBIDDEN, "route_not_allowed"),
    ("static key", "/v1/chat/x", "static", Outcome.ALLOW, None),
    ("static not admin", "/admin/x", "static", Outcome.FORBIDDEN, "insufficient_scope"),
    ("static admin", "/admin/x", "static-admin", Outcome.ALLOW, None),
    ("ip not allowed", "/v1/chat/x", "office", Outcome.FORBIDDEN, "ip_not_allowed"),
]


@pytest.mark.parametrize(("name", "target", "who", "outcome", "reason"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
async def test_decisions(
    world: World, name: str, target: str | None, who: str | None, outcome: Outcome,
    reason: str | None,
) -> None:  # fmt: skip
    tokens = {
        **world.keys,
        "unknown": keys.generate(),
        "mistyped": world.keys["chat"][:-1] + ("x" if world.keys["chat"][-1] != "x" else "y"),
        "static": "static-k",
        "static-admin": "admin-static-key",
    }
    headers = [bearer(tokens[who])] if who else []
    decision = await decide(world, facts(target, *headers))
    assert decision.outcome is outcome
    assert (decision.reason.code if decision.reason else None) == reason
    if outcome is not Outcome.ALLOW:
        assert decision.route is None or decision.reason is not None


async def test_allow_carries_identity_and_injection(world: World) -> None:
    decision = await decide(world, facts("/v1/chat/completions", bearer(world.keys["chat"])))
    assert decision.record is not None
    grant = world.authorizer.rules.grant(decision.record, decision.route)
    assert dict(grant.upstream) == {
        "X-Keystile-Key-Id": world.ids["chat"],
        "X-Keystile-Key-Name": "chat",
        "X-Keystile-Scopes": "chat",
        "X-Keystile-Owner": "ana",
        "X-Keystile-Route": "chat",
        "Authorization": "Bearer sk-upstream",
    }


@pytest.mark.parametrize(
    "name", ["X_Keystile_Owner", "x-keystile_route", "X_API_KEY", "X.Keystile.Owner",
             "x+api~key", "Proxy.Authorization", "X-Keystile-Key|Id"],
)  # fmt: skip
async def test_alias_spellings_of_managed_headers_are_denied(world: World, name: str) -> None:
    decision = await decide(
        world, facts("/v1/chat/x", bearer(world.keys["chat"]), (name, "forged"))
    )
    assert decision.reason is not None and decision.reason.outcome is Outcome.FORBIDDEN


async def test_unrelated_alias_headers_are_fine(world: World) -> None:
    unrelated = [("X_Trace_Id", "1"), ("X.Request.Id", "2")]
    decision = await decide(world, facts("/v1/chat/x", bearer(world.keys["chat"]), *unrelated))
    assert decision.allowed


async def test_rate_limit_denies_with_retry_after_and_counts_only_allowed(world: World) -> None:
    first = await decide(world, facts("/v1/chat/x", bearer(world.keys["limited"])))
    assert first.allowed and first.rate is not None and first.rate.remaining == 0
    second = await decide(world, facts("/v1/chat/x", bearer(world.keys["limited"])))
    assert second.reason is not None and second.reason.code == "rate_limited"
    assert second.outcome is Outcome.RATE_LIMITED and second.retry_after >= 1
    # another key is not affected
    assert (await decide(world, facts("/v1/chat/x", bearer(world.keys["chat"])))).allowed


async def test_two_keys_deny_even_if_both_valid(world: World) -> None:
    both = (bearer(world.keys["chat"]), ("x-api-key", world.keys["memory"]))
    decision = await decide(world, facts("/v1/models", *both))
    assert decision.reason is not None and decision.reason.code == "invalid_api_key"


async def test_store_failure_fails_closed(world: World, store: Store) -> None:
    await store.close()
    with pytest.raises(StoreError):  # Gate.answer turns it into a 503 (test_server)
        await decide(world, facts("/v1/chat/x", bearer(keys.generate())))


async def test_concurrent_requests_that_wait_for_the_store_never_exceed_a_limit(
    store: Store, clock: Clock
) -> None:
    """300 first requests at once: each awaits the shared key read and the quota read
    (real interleaving at the store), and still exactly the limit is admitted."""
    service = KeyService(store, Hasher(), clock=clock)
    issued = await service.create("burst", scopes=["chat"],
                                  limits={"per_minute": 50, "quota_day": 1000})  # fmt: skip
    lookup = KeyLookup(store, Hasher(), KeyFormat(), StaticKeys())
    cache = CachedLookup(lookup)
    await cache.start()
    table, _ = load_routes(ROUTES, {"UP": "sk-upstream"}, None)
    authorizer = Authorizer(Rules(table), cache, clock=clock)
    request = facts("/v1/chat/x", bearer(issued.key))
    answers = await asyncio.gather(*(authorizer.authorize(request) for _ in range(300)))
    codes = [d.reason.code if d.reason else "allow" for d, _ in answers]
    assert codes.count("allow") == 50 and codes.count("rate_limited") == 250
    assert cache.stats.misses == 1


async def test_an_address_sending_unknown_keys_is_told_to_back_off_but_valid_keys_pass(
    world: World,
) -> None:
    throttle = InvalidKeyThrottle(per_minute=3)
    authorizer = Authorizer(world.authorizer.rules, world.authorizer.keys, clock=world.clock,
                            invalid=throttle)  # fmt: skip
    codes = []
    for _ in range(5):
        decision, _ = await authorizer.authorize(facts("/v1/chat/x", bearer(keys.generate())))
        codes.append((decision.reason.code, decision.reason.detail) if decision.reason else None)
    assert codes[:3] == [("invalid_api_key", "unknown_key")] * 3
    assert codes[3:] == [("rate_limited", "invalid_keys")] * 2
    throttled, _ = await authorizer.authorize(facts("/v1/chat/x", bearer(keys.generate())))
    assert throttled.retry_after is not None and 1 <= throttled.retry_after <= 61
    # the same address with a valid key: judged as usual
    assert (await authorizer.authorize(facts("/v1/chat/x", bearer(world.keys["chat"]))))[0].allowed
    world.clock.now += 62  # the window has moved on
    again, _ = await authorizer.authorize(facts("/v1/chat/x", bearer(keys.generate())))
    assert again.reason is not None and again.reason.code == "invalid_api_key"
