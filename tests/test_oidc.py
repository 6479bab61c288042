"""The relying party against a small provider served here: discovery and key caching,
the one JWKS re-fetch, token endpoint failures, and sign-ins under way in the store."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc import jwt
from joserfc.jwk import RSAKey

from keystile.identity.oidc import OIDCConfig, OIDCFailure, Provider, pkce_challenge
from keystile.identity.sessions import LoginThrottle, SessionService
from keystile.identity.sso import AtLimit, KeyPolicy, Policy, SelfServiceKeys, SingleSignOn
from keystile.manage.accounts import AccountService
from keystile.manage.service import KeyService
from keystile.store import Store
from tests.backends import BOTH
from tests.conftest import Clock

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL

CLIENT, SECRET = "keystile", "s3cret:with/odd+chars"
NOW = 1_800_000_000.0


@dataclass
class FakeIdP:
    """An OpenID provider in a few handlers; each attribute changes what it answers."""

    issuer: str = ""
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, {"kid": "one"}))
    hits: dict[str, int] = field(default_factory=dict)
    token_status: int = 200
    token_error: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    forms: list[dict[str, str]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    delay: float = 0.0
    nonce: str = ""
    userinfo: dict[str, Any] = field(default_factory=dict)

    def count(self, name: str) -> None:
        self.hits[name] = self.hits.get(name, 0) + 1

    async def discovery(self, request: web.Request) -> web.Response:
        self.count("discovery")
        return web.json_response({
            "issuer": self.issuer, "authorization_endpoint": self.issuer + "/auth",
            "token_endpoint": self.issuer + "/token", "jwks_uri": self.issuer + "/jwks",
            "userinfo_endpoint": self.issuer + "/me"})  # fmt: skip

    async def jwks(self, request: web.Request) -> web.Response:
        self.count("jwks")
        return web.json_response({"keys": [self.key.as_dict(private=False)]})

    async def token(self, request: web.Request) -> web.Response:
        self.count("token")
        await asyncio.sleep(self.delay)
        self.forms.append(dict(await request.post()))  # type: ignore[arg-type]
        self.auth.append(request.headers.get("Authorization"))
        if self.token_status != 200:
            return web.json_response({"error": self.token_error}, status=self.token_status)
        claims = {"iss": self.issuer, "aud": CLIENT, "sub": "sub-1", "iat": int(NOW),
                  "exp": int(NOW) + 300, "nonce": self.nonce, **self.claims}  # fmt: skip
        id_token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)
        return web.json_response({"id_token": id_token, "access_token": "at-1",
                                  "token_type": "Bearer"})  # fmt: skip

    async def me(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer at-1"
        return web.json_response({"sub": "sub-1", **self.userinfo})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_post("/token", self.token)
        app.router.add_get("/me", self.me)
        return app


@pytest.fixture
async def idp() -> AsyncIterator[FakeIdP]:
    fake = FakeIdP()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.issuer = f"http://127.0.0.1:{server.port}"
    yield fake
    await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def provider(idp: FakeIdP, http: aiohttp.ClientSession, clock: Clock, **changes: Any) -> Provider:
    config = OIDCConfig(**{"issuer": idp.issuer, "client_id": CLIENT, "client_secret": SECRET,
                           "redirect_uri": "https://app.example.com/_keystile/oidc/callback",
                           "timeout": 2.0, **changes})  # fmt: skip
    return Provider(config, http, clock)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


def test_pkce_s256_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


async def test_discovery_is_cached_for_its_ttl(idp: FakeIdP, http: Any, clock: Clock) -> None:
    rp = provider(idp, http, clock, metadata_ttl=60)
    await rp.metadata()
    await rp.metadata()
    assert idp.hits["discovery"] == 1
    clock.now += 61
    await rp.metadata()
    assert idp.hits["discovery"] == 2


async def test_authorization_url_carries_pkce_state_and_nonce(idp: FakeIdP, http: Any,
                                                              clock: Clock) -> None:  # fmt: skip
    url = await provider(idp, http, clock).authorization_url("st", "no", "ver")
    query = dict(item.split("=", 1) for item in url.split("?", 1)[1].split("&"))
    assert url.startswith(idp.issuer + "/auth?")
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == pkce_challenge("ver") and "ver" not in query.values()
    assert (
        query["state"] == "st"
        and query["nonce"] == "no"
        and query["scope"] == "openid+email+profile"
    )


async def test_exchange_with_basic_auth_sends_the_verifier(idp: FakeIdP, http: Any,
                                                           clock: Clock) -> None:  # fmt: skip
    idp.nonce = "n1"
    tokens = await provider(idp, http, clock).exchange("the-code", "the-verifier")
    form, auth = idp.forms[0], idp.auth[0]
    assert form["code"] == "the-code" and form["code_verifier"] == "the-verifier"
    assert "client_secret" not in form
    assert auth is not None
    user, _, password = base64.b64decode(auth.split()[1]).decode().partition(":")
    assert user == CLIENT and password == "s3cret%3Awith%2Fodd%2Bchars"  # RFC 6749 2.3.1
    assert tokens.access_token == "at-1"


async def test_exchange_with_post_auth(idp: FakeIdP, http: Any, clock: Clock) -> None:
    await provider(idp, http, clock, client_auth="client_secret_post").exchange("c", "v")
    assert idp.forms[0]["client_secret"] == SECRET and idp.auth[0] is None


@pytest.mark.parametrize(("status", "error", "code"), [
    (401, "invalid_client", "invalid_client"), (400, "invalid_client", "invalid_client"),
    (400, "invalid_grant", "code_rejected"), (500, None, "provider_error")])  # fmt: skip
async def test_token_endpoint_refusals(idp: FakeIdP, http: Any, clock: Clock, status: int,
                                       error: str | None, code: str) -> None:  # fmt: skip
    idp.token_status, idp.token_error = status, error
    with pytest.raises(OIDCFailure) as caught:
        await provider(idp, http, clock).exchange("c", "v")
    assert caught.value.code == code
    assert SECRET not in caught.value.message


async def test_token_endpoint_too_slow(idp: FakeIdP, http: Any, clock: Clock) -> None:
    await provider(idp, http, clock).metadata()
    idp.delay = 1.5
    with pytest.raises(OIDCFailure) as caught:
        await provider(idp, http, clock, timeout=1.0).exchange("c", "v")
    assert caught.value.code == "provider_unreachable"


async def test_provider_down(http: Any, clock: Clock) -> None:
    from tests.e2e.harness import free_port

    config = OIDCConfig(f"http://127.0.0.1:{free_port()}", CLIENT, SECRET, "https://x/cb")
    with pytest.raises(OIDCFailure) as caught:
        await Provider(config, http, clock).metadata()
    assert caught.value.code == "provider_unreachable"


async def test_a_rotated_key_is_fetched_once(idp: FakeIdP, http: Any, clock: Clock) -> None:
    rp = provider(idp, http, clock)
    idp.nonce = "n1"
    await rp.verify((await rp.exchange("c", "v")).id_token, "n1")
    assert idp.hits["jwks"] == 1
    idp.key = RSAKey.generate_key(2048, {"kid": "two"})  # the provider rotates
    claims = await rp.verify((await rp.exchange("c", "v")).id_token, "n1")
    assert claims["sub"] == "sub-1" and idp.hits["jwks"] == 2
    await rp.verify((await rp.exchange("c", "v")).id_token, "n1")
    assert idp.hits["jwks"] == 2  # cached again


async def test_an_unknown_kid_refetches_only_once(idp: FakeIdP, http: Any, clock: Clock) -> None:
    rp = provider(idp, http, clock)
    await rp.keys()
    stranger = RSAKey.generate_key(2048, {"kid": "nobody"})
    forged = jwt.encode({"alg": "RS256", "kid": "nobody"}, {"iss": idp.issuer}, stranger)
    with pytest.raises(OIDCFailure) as caught:
        await rp.verify(forged, "n")
    assert (caught.value.code, caught.value.detail) == ("bad_id_token", "unknown_key")
    assert idp.hits["jwks"] == 2


# -- the sign-in service -------------------------------------------------------------------


@pytest.fixture
async def sso(idp: FakeIdP, http: Any, clock: Clock, store: Store) -> SingleSignOn:
    keys = KeyService(store, __import__("keystile.core.keys").core.keys.Hasher(), clock=clock)
    sessions = SessionService(store, idle=3600, absolute=7200, throttle=LoginThrottle(5, 60),
                              clock=clock)  # fmt: skip
    policy = Policy(frozenset({"example.com"}), "groups", ("idp-admins",),
                    (("idp-artists", "artists"),))  # fmt: skip
    return SingleSignOn(provider(idp, http, clock), AccountService(keys), sessions, policy,
                        clock)  # fmt: skip


async def sign_in(sso: SingleSignOn, idp: FakeIdP, browser: str = "b" * 43) -> Any:
    url = await sso.begin("/after", browser)
    query = dict(item.split("=", 1) for item in url.split("?", 1)[1].split("&"))
    idp.nonce = query["nonce"]
    pending = await sso.take(query["state"], browser)
    return await sso.finish(pending, "code", "10.0.0.1", "test")


async def test_a_verified_email_signs_in_and_is_made_a_user(sso: SingleSignOn, idp: FakeIdP,
                                                            store: Store) -> None:  # fmt: skip
    idp.claims = {"email": "Ana@Example.com", "email_verified": True}
    signed = await sign_in(sso, idp)
    assert signed.user.external_id == "ana@example.com" and signed.user.role == "member"
    again = await sign_in(sso, idp)
    assert again.user.id == signed.user.id and again.token != signed.token


async def test_the_email_may_come_from_userinfo(sso: SingleSignOn, idp: FakeIdP) -> None:
    idp.userinfo = {"email": "bo@example.com", "email_verified": True}
    assert (await sign_in(sso, idp)).user.email == "bo@example.com"


@pytest.mark.parametrize(("claims", "code"), [
    ({"email": "ana@example.com", "email_verified": False}, "email_not_verified"),
    ({"email": "ana@example.com"}, "email_not_verified"),
    ({"email": "ana@example.com", "email_verified": "false"}, "email_not_verified"),
    ({"email": "eve@evil.com", "email_verified": True}, "domain_not_allowed"),
    ({"email": "eve@sub.example.com", "email_verified": True}, "domain_not_allowed"),
    ({"email": "eve@example.com.evil.com", "email_verified": True}, "domain_not_allowed"),
    # not an address by keystile's rules: refused before the domain is looked at
    ({"email": "ana@evil.com@example.com", "email_verified": True}, "email_invalid"),
    ({"email": '"ana@evil.com"@example.com', "email_verified": True}, "email_invalid"),
    ({"email": "ana@example.com\r\nX: y", "email_verified": True}, "email_invalid"),
    ({"email": "\u212aim@example.com", "email_verified": True}, "email_invalid"),
    ({"email": "\u212aim@example.com", "email_verified": False}, "email_invalid"),
    ({"email": " ana@example.com", "email_verified": True}, "email_invalid"),
    ({"email": "", "email_verified": True}, "email_missing"),
])  # fmt: skip
async def test_refused_people(sso: SingleSignOn, idp: FakeIdP, claims: dict[str, Any],
                              code: str, store: Store) -> None:  # fmt: skip
    idp.claims = claims
    with pytest.raises(OIDCFailure) as caught:
        await sign_in(sso, idp)
    assert caught.value.code == code
    assert await store.list_users() == []


async def test_a_look_alike_of_an_admin_s_address_is_refused(sso: SingleSignOn, idp: FakeIdP,
                                                              store: Store) -> None:  # fmt: skip
    kim = await sso.accounts.create_user("kim@example.com", role="admin", email="kim@example.com")
    idp.claims = {"email": "\u212aim@example.com", "email_verified": True}  # KELVIN SIGN
    with pytest.raises(OIDCFailure) as caught:
        await sign_in(sso, idp)
    assert (caught.value.code, caught.value.detail) == ("email_invalid", "not_normalised")
    assert "U+212A KELVIN SIGN" in caught.value.message
    idp.claims = {"email": "KIM@Example.com", "email_verified": True}  # ASCII case: the same
    assert (await sign_in(sso, idp)).user.id == kim.id
    assert [u.id for u in await store.list_users()] == [kim.id]


async def test_a_stored_look_alike_is_not_found_for_the_address_it_imitates(
    sso: SingleSignOn, idp: FakeIdP, store: Store
) -> None:
    """PostgreSQL's lower() folds KELVIN SIGN to k as Python's does: a user stored (before
    these rules, or by hand) as Kim@example.com must not be found for kim@example.com."""
    from keystile.store import User

    forged = User("user_kelvin", "\u212aim@example.com", NOW, NOW, role="admin",
                  email="\u212aim@example.com")  # fmt: skip
    await store.insert_user(forged)
    assert await store.find_user_by_email("kim@example.com") == []
    idp.claims = {"email": "kim@example.com", "email_verified": True}
    user = (await sign_in(sso, idp)).user
    assert user.id != forged.id and user.role == "member"
    assert user.external_id == "kim@example.com"


async def test_a_disabled_user_is_refused(sso: SingleSignOn, idp: FakeIdP) -> None:
    idp.claims = {"email": "ana@example.com", "email_verified": True}
    user = (await sign_in(sso, idp)).user
    await sso.accounts.update_user(user.id, disabled=True)
    with pytest.raises(OIDCFailure) as caught:
        await sign_in(sso, idp)
    assert caught.value.code == "user_disabled"


async def test_claims_map_to_role_and_groups(sso: SingleSignOn, idp: FakeIdP,
                                             store: Store) -> None:  # fmt: skip
    group = await sso.accounts.create_group("artists", ["images"])
    idp.claims = {"email": "ana@example.com", "email_verified": True,
                  "groups": ["idp-admins", "idp-artists"]}  # fmt: skip
    user = (await sign_in(sso, idp)).user
    assert (await store.get_user(user.id)).role == "admin"
    member = await store.set_membership(user.id, group.id, True, _audit(), kind="user")
    assert member is False  # a member already
    idp.claims["groups"] = []
    await sign_in(sso, idp)
    assert (await store.get_user(user.id)).role == "member"
    out = await store.set_membership(user.id, group.id, False, _audit(), kind="user")
    assert out is False  # out already


def _audit() -> Any:
    from keystile.store import Audit

    return Audit("test", "test")


async def test_state_is_single_use(sso: SingleSignOn, idp: FakeIdP) -> None:
    url = await sso.begin("/", "b" * 43)
    state = url.split("state=")[1].split("&")[0]
    await sso.take(state, "b" * 43)
    with pytest.raises(OIDCFailure) as caught:
        await sso.take(state, "b" * 43)
    assert caught.value.code == "state_unknown"


async def test_state_is_bound_to_the_browser(sso: SingleSignOn) -> None:
    url = await sso.begin("/", "b" * 43)
    state = url.split("state=")[1].split("&")[0]
    with pytest.raises(OIDCFailure) as caught:
        await sso.take(state, "c" * 43)
    assert caught.value.code == "state_mismatch"
    with pytest.raises(OIDCFailure) as caught:  # and it is gone: the real browser cannot use it
        await sso.take(state, "b" * 43)
    assert caught.value.code == "state_unknown"


async def test_state_expires_after_ten_minutes(sso: SingleSignOn, clock: Clock) -> None:
    url = await sso.begin("/", "b" * 43)
    state = url.split("state=")[1].split("&")[0]
    clock.now += 601
    with pytest.raises(OIDCFailure) as caught:
        await sso.take(state, "b" * 43)
    assert caught.value.code == "state_expired"


async def test_forged_or_missing_state(sso: SingleSignOn) -> None:
    for state, code in ((None, "state_missing"), ("forged", "state_unknown")):
        with pytest.raises(OIDCFailure) as caught:
            await sso.take(state, "b" * 43)
        assert caught.value.code == code


async def test_the_store_holds_only_the_state_hash(sso: SingleSignOn, store: Store) -> None:
    url = await sso.begin("/", "b" * 43)
    state = url.split("state=")[1].split("&")[0]
    rows = await store._fetch("test", "SELECT state_hash, browser_hash FROM oidc_pending")
    assert len(rows) == 1 and state not in rows[0][0] and "b" * 43 not in rows[0][1]


async def test_self_service_keys_stop_at_the_cap_naming_the_oldest(
    sso: SingleSignOn, idp: FakeIdP, clock: Clock
) -> None:
    idp.claims = {"email": "ana@example.com", "email_verified": True}
    user = (await sign_in(sso, idp)).user
    keys = SelfServiceKeys(sso.accounts, KeyPolicy("sso", 86400, ("chat",), 2))
    first = await keys.issue(user.id, user.external_id)
    clock.now += 1
    second = await keys.issue(user.id, user.external_id)
    assert first.record.expires_at == NOW + 86400 and first.record.scopes == ("chat",)
    with pytest.raises(AtLimit) as caught:
        await keys.issue(user.id, user.external_id)
    assert caught.value.oldest.id == first.record.id
    assert [k.id for k in await keys.active(user.id)] == [first.record.id, second.record.id]
    await keys.keys.delete(first.record.id)
    assert (await keys.issue(user.id, user.external_id)).record.name == "sso"
