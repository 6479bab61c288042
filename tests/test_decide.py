"""The decision core on its own: pure functions, records built in memory, no store."""

from __future__ import annotations

import subprocess
import sys

import pytest
from multidict import CIMultiDict

from keystile.core import reasons
from keystile.core.decide import Decision, Facts, Limits, Presented, Rules, has_scopes
from keystile.core.model import KeyRecord, RateInfo, TeamPolicy
from keystile.core.reasons import Outcome
from keystile.core.routes import load_routes

NOW = 1_800_000_000.0
ROUTES = [
    {"name": "chat", "path": "/v1/chat/*", "scopes": ["chat"], "methods": ["POST"],
     "inject": {"Authorization": {"value": "sk-up", "format": "Bearer {}"}}},
    {"name": "models", "path": "/v1/models"},
]  # fmt: skip
TABLE, _ = load_routes(ROUTES, {}, None)
RULES = Rules(TABLE)


def record(**fields: object) -> KeyRecord:
    base: dict[str, object] = {
        "id": "key_1", "key_hash": "h", "hash_scheme": "sha256", "display_prefix": "ks_abc",
        "name": "bot", "created_at": 0.0, "updated_at": 0.0, "scopes": ("chat",),
    }  # fmt: skip
    base.update(fields)
    return KeyRecord(**base)  # type: ignore[arg-type]


def presented(path: str = "/v1/chat/completions", method: str = "POST",
              ip: str | None = "10.1.2.3") -> Presented:  # fmt: skip
    return Presented("ks_token", method, "api.local", path, ip)


def code(decision: Decision) -> str | None:
    return decision.reason.code if decision.reason else None


TABLE_CASES = [
    # (name, record fields, request, limits, expected code, expected detail)
    ("allowed", {}, presented(), None, None, None),
    ("no such key", None, presented(), None, "invalid_api_key", "unknown_key"),
    ("expired", {"expires_at": NOW - 1}, presented(), None, "expired_api_key", "expired"),
    ("revoked", {"revoked_at": 1.0}, presented(), None, "revoked_api_key", "revoked"),
    ("disabled", {"enabled": False}, presented(), None, "revoked_api_key", "disabled"),
    ("deleted", {"deleted_at": 1.0}, presented(), None, "invalid_api_key", "unknown_key"),
    ("scope", {"scopes": ("memory",)}, presented(), None, "insufficient_scope", "missing_scope"),
    ("method", {}, presented(method="DELETE"), None, "route_not_allowed", "no_route"),
    ("no route", {}, presented("/v2/x"), None, "route_not_allowed", "no_route"),
    ("open route", {"scopes": ()}, presented("/v1/models", "GET"), None, None, None),
    ("key allowlist", {"allowed_ips": ("192.0.2.0/24",)}, presented(), None, "ip_not_allowed",
     "ip_allowlist"),
    ("team allowlist", {"team": TeamPolicy("team_1", allowed_ips=("192.0.2.0/24",))},
     presented(), None, "ip_not_allowed", "ip_allowlist"),
    ("unknown client ip", {"allowed_ips": ("10.0.0.0/8",)}, presented(ip=None), None,
     "ip_not_allowed", "ip_allowlist"),
    ("quota", {"limits": {"quota_day": 1}}, presented(), Limits(quota_retry=60),
     "quota_exceeded", "quota"),
    ("rate", {"limits": {"per_minute": 1}}, presented(),
     Limits(rate_retry=5, rate=RateInfo(1, 0, 5)), "rate_limited", "rate_limit"),
    ("within limits", {"limits": {"per_minute": 9}}, presented(),
     Limits(rate=RateInfo(9, 8, 60)), None, None),
]  # fmt: skip


@pytest.mark.parametrize(("name", "fields", "request_", "limits", "want", "detail"),
                         TABLE_CASES, ids=[c[0] for c in TABLE_CASES])  # fmt: skip
def test_decide(
    name: str, fields: dict[str, object] | None, request_: Presented, limits: Limits | None,
    want: str | None, detail: str | None,
) -> None:  # fmt: skip
    decision = RULES.decide(request_, None if fields is None else record(**fields), limits, NOW)
    assert code(decision) == want
    assert (decision.reason.detail if decision.reason else None) == detail


def test_rate_figures_travel_on_the_allow_and_retry_on_the_denial() -> None:
    allowed = RULES.decide(presented(), record(), Limits(rate=RateInfo(9, 8, 60)), NOW)
    assert allowed.allowed and allowed.rate == RateInfo(9, 8, 60)
    denied = RULES.decide(presented(), record(), Limits(rate_retry=5), NOW)
    assert denied.outcome is Outcome.RATE_LIMITED and denied.retry_after == 5


def facts(target: str | None, *headers: tuple[str, str], trusted: bool = True) -> Facts:
    return Facts("test", "POST", "api.local", target, CIMultiDict(headers), "10.1.2.3", trusted)


SCREEN_CASES = [
    ("untrusted peer", facts("/v1/chat/x", ("x-api-key", "k"), trusted=False), "untrusted_peer"),
    ("target unknown", facts(None, ("x-api-key", "k")), "target_unknown"),
    ("dot segment", facts("/v1/chat/../admin", ("x-api-key", "k")), "ambiguous_path"),
    ("imitated header", facts("/v1/chat/x", ("x-api-key", "k"), ("X_Keystile_Owner", "x")),
     "imitated_header"),
    ("dot imitation", facts("/v1/chat/x", ("x-api-key", "k"), ("X.Keystile.Owner", "x")),
     "imitated_header"),
    ("two keys", facts("/v1/chat/x", ("x-api-key", "a"), ("Authorization", "Bearer b")),
     "conflicting_keys"),
    ("no key", facts("/v1/chat/x"), "no_key"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "given", "detail"), SCREEN_CASES,
                         ids=[c[0] for c in SCREEN_CASES])  # fmt: skip
def test_screen_refuses_before_any_lookup(name: str, given: Facts, detail: str) -> None:
    screened = RULES.screen(given)
    assert isinstance(screened, Decision) and screened.reason is not None
    assert screened.reason.detail == detail


def test_screen_passes_the_key_and_the_decoded_path() -> None:
    screened = RULES.screen(facts("/v1/chat/%63ompletions?x=1", ("x-api-key", "k")))
    assert screened == Presented("k", "POST", "api.local", "/v1/chat/completions", "10.1.2.3")


def test_grant_sets_identity_and_injection_and_strips_the_rest() -> None:
    decision = RULES.decide(presented(), record(owner="ana"), None, NOW)
    grant = RULES.grant(record(owner="ana"), decision.route)
    assert dict(grant.upstream) == {
        "X-Keystile-Key-Id": "key_1", "X-Keystile-Key-Name": "bot", "X-Keystile-Scopes": "chat",
        "X-Keystile-Owner": "ana", "X-Keystile-Route": "chat", "Authorization": "Bearer sk-up",
    }  # fmt: skip
    assert "x-api-key" in grant.strip and "proxy-authorization" in grant.strip
    assert "authorization" not in grant.strip


def test_admit_judges_the_key_without_a_route() -> None:
    assert RULES.admit(record(), "10.1.2.3", None, NOW).allowed
    denied = RULES.admit(record(allowed_ips=("192.0.2.0/24",)), "10.1.2.3", None, NOW)
    assert code(denied) == "ip_not_allowed"


def test_has_scopes() -> None:
    assert has_scopes(("chat",), frozenset())
    assert has_scopes(("chat", "x"), frozenset({"chat"}))
    assert not has_scopes(("chat",), frozenset({"chat", "memory"}))
    assert has_scopes(("*",), frozenset({"chat", "memory"}))
    assert not has_scopes(("*",), frozenset({"admin"}))
    assert has_scopes(("*", "admin"), frozenset({"admin"}))


def test_every_reason_has_a_detail_and_details_are_distinct_per_cause() -> None:
    pairs = [(r.code, r.detail) for r in reasons.REASONS]
    assert len(pairs) == len(set(pairs))
    assert {r.code for r in reasons.REASONS} >= set(reasons.DENIAL_CODES)


def test_the_core_imports_no_framework_store_or_cache() -> None:
    """Importing the core loads neither aiohttp nor aiosqlite, nor any keystile package
    but the core itself (import-linter checks the same statically)."""
    probe = ("import sys, keystile.core.decide; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('aiohttp', 'aiosqlite', 'sqlite3', 'cachetools') or (m.startswith('keystile.') "
             "and not m.startswith('keystile.core'))))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout.strip()  # fmt: skip
    assert loaded == "[]"


HOSTILE_SCREENS = [
    # the path parameter trick servlet-style upstreams fall for
    ("dot-dot-semicolon", "POST", "/v1/models/..;/chat/x", (), "ambiguous_path"),
    ("encoded semicolon", "POST", "/v1/chat/x%3bjsessionid=1", (), "ambiguous_path"),
    ("raw non-ASCII", "POST", "/v1/chat/\xff\xfe", (), "ambiguous_path"),
    ("raw non-ASCII query", "POST", "/v1/chat/x?q=\xe9", (), "ambiguous_path"),
    ("lower-case method", "post", "/v1/chat/x", (), "bad_method"),
    ("CONNECT", "CONNECT", "/", (), "bad_method"),
    ("unknown override", "POST", "/v1/chat/x", (("X-HTTP-Method-Override", "NUKE"),),
     "method_override"),
    ("key in the query", "POST", "/v1/chat/x?api_key=ks_x", (), "credential_copy"),
    ("key in the query, odd case", "POST", "/v1/chat/x?API.KEY=1", (), "credential_copy"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "method", "target", "extra", "detail"), HOSTILE_SCREENS,
                         ids=[c[0] for c in HOSTILE_SCREENS])  # fmt: skip
def test_hostile_requests_are_refused_before_any_lookup(
    name: str, method: str, target: str, extra: tuple[tuple[str, str], ...], detail: str
) -> None:
    given = Facts("test", method, "api.local", target,
                  CIMultiDict((("x-api-key", "k"), *extra)), "10.1.2.3")  # fmt: skip
    screened = RULES.screen(given)
    assert isinstance(screened, Decision) and screened.reason is not None
    assert screened.reason.detail == detail


def test_semicolons_can_be_declared_literal() -> None:
    literal = Rules(TABLE, semicolons=True)
    given = facts("/v1/chat/x;v=1", ("x-api-key", "k"))
    assert isinstance(literal.screen(given), Presented)
    assert isinstance(RULES.screen(given), Decision)


def test_a_method_override_is_judged_as_each_method_it_may_become() -> None:
    """A key allowed to POST on chat may not turn the POST into a DELETE."""
    override = ("X-HTTP-Method-Override", "DELETE")
    screened = RULES.screen(facts("/v1/chat/x", ("x-api-key", "k"), override))
    assert isinstance(screened, Presented) and screened.overrides == ("DELETE",)
    decision = RULES.decide(screened, record(), None, NOW)
    assert code(decision) == "route_not_allowed"  # chat allows POST only
    same = RULES.screen(facts("/v1/chat/x?_method=POST", ("x-api-key", "k")))
    assert isinstance(same, Presented) and RULES.decide(same, record(), None, NOW).allowed
