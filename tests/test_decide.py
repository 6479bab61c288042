"""The decision core on its own: one table of requests and what is decided."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from multidict import CIMultiDict

from keystile import keys
from keystile.cache import CachedLookup
from keystile.decide import Decider, Facts, has_scopes
from keystile.keys import Hasher, KeyFormat
from keystile.lookup import KeyLookup
from keystile.reasons import Outcome
from keystile.routes import load_routes
from keystile.service import KeyService
from keystile.static_keys import StaticKeys
from keystile.store import Store

from .conftest import Clock

ROUTES = [
    {"name": "chat", "path": "/v1/chat/*", "scopes": ["chat"],
     "inject": {"Authorization": {"env": "UP", "format": "Bearer {}"}}},
    {"name": "admin", "path": "/admin/*", "scopes": ["admin"]},
    {"name": "open", "path": "/v1/models"},
]  # fmt: skip


@dataclass
class World:
    decider: Decider
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
    decider = Decider(cache, table, clock=clock)
    return World(decider, {k: v.key for k, v in made.items()},
                 {k: v.record.id for k, v in made.items()}, clock)  # fmt: skip


def facts(target: str | None, *headers: tuple[str, str], method: str = "POST") -> Facts:
    return Facts("test", method, "api.local", target, CIMultiDict(headers), "192.0.2.1")


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
    decision = await world.decider.decide(facts(target, *headers))
    assert decision.outcome is outcome
    assert (decision.reason.code if decision.reason else None) == reason
    if outcome is not Outcome.ALLOW:
        assert decision.upstream == ()  # nothing for the upstream on a deny


async def test_allow_carries_identity_and_injection(world: World) -> None:
    decision = await world.decider.decide(facts("/v1/chat/completions", bearer(world.keys["chat"])))
    assert dict(decision.upstream) == {
        "X-Keystile-Key-Id": world.ids["chat"],
        "X-Keystile-Key-Name": "chat",
        "X-Keystile-Scopes": "chat",
        "X-Keystile-Owner": "ana",
        "X-Keystile-Route": "chat",
        "Authorization": "Bearer sk-upstream",
    }


@pytest.mark.parametrize("name", ["X_Keystile_Owner", "x-keystile_route", "X_API_KEY"])
async def test_underscore_spellings_of_managed_headers_are_denied(world: World, name: str) -> None:
    decision = await world.decider.decide(
        facts("/v1/chat/x", bearer(world.keys["chat"]), (name, "forged"))
    )
    assert decision.reason is not None and decision.reason.outcome is Outcome.FORBIDDEN


async def test_unrelated_underscore_headers_are_fine(world: World) -> None:
    decision = await world.decider.decide(
        facts("/v1/chat/x", bearer(world.keys["chat"]), ("X_Trace_Id", "1"))
    )
    assert decision.allowed


async def test_rate_limit_denies_with_retry_after_and_counts_only_allowed(world: World) -> None:
    first = await world.decider.decide(facts("/v1/chat/x", bearer(world.keys["limited"])))
    assert first.allowed and first.rate is not None and first.rate.remaining == 0
    second = await world.decider.decide(facts("/v1/chat/x", bearer(world.keys["limited"])))
    assert second.reason is not None and second.reason.code == "rate_limited"
    assert second.outcome is Outcome.RATE_LIMITED and second.retry_after >= 1
    # another key is not affected
    assert (await world.decider.decide(facts("/v1/chat/x", bearer(world.keys["chat"])))).allowed


async def test_two_keys_deny_even_if_both_valid(world: World) -> None:
    both = (bearer(world.keys["chat"]), ("x-api-key", world.keys["memory"]))
    decision = await world.decider.decide(facts("/v1/models", *both))
    assert decision.reason is not None and decision.reason.code == "invalid_api_key"


async def test_store_failure_fails_closed(world: World, store: Store) -> None:
    await store.close()
    decision = await world.decider.decide(facts("/v1/chat/x", bearer(keys.generate())))
    assert decision.outcome is Outcome.UNAVAILABLE


def test_has_scopes() -> None:
    assert has_scopes(("chat",), frozenset())
    assert has_scopes(("chat", "x"), frozenset({"chat"}))
    assert not has_scopes(("chat",), frozenset({"chat", "memory"}))
    assert has_scopes(("*",), frozenset({"chat", "memory"}))
    assert not has_scopes(("*",), frozenset({"admin"}))
    assert has_scopes(("*", "admin"), frozenset({"admin"}))
