"""An OpenID Connect relying party: discovery, keys, the authorization URL, the code
exchange and the ID token (authorization code flow with PKCE S256).

HTTP goes through one ``aiohttp.ClientSession`` with a total timeout per call.
The discovery document is cached for ``metadata_ttl``; the provider's keys
(JWKS) are cached until a token names a key id they lack, then fetched again
once (a provider rotating its signing key). Nothing secret is ever logged or
put in an error message: not the client secret, the code, the tokens, nor the
provider's answer bodies (only its OAuth ``error`` code).

    OIDCFailure                  a sign-in cannot go on; ``code`` is the reason
    ├── code provider_unreachable  discovery, keys, token or userinfo endpoint down or slow
    ├── code provider_error        the provider answered something unusable
    ├── code invalid_client        the token endpoint refused our client id/secret
    ├── code code_rejected         invalid_grant: the code expired, was used, or PKCE failed
    └── code bad_id_token          the ID token failed a check (``detail`` says which)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlencode

import aiohttp
import orjson
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from keystile.core.errors import KeystileError
from keystile.identity import idtoken

log = logging.getLogger("keystile.oidc")
MAX_BODY = 256 * 1024  # bytes read from any provider answer


class OIDCFailure(KeystileError):
    def __init__(self, code: str, message: str, detail: str | None = None, *,
                 email: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail  # which check, or the provider's OAuth error code
        self.email = email  # who it was, when the provider said (for the audit log)


@dataclass(frozen=True, slots=True)
class OIDCConfig:
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    client_auth: str = "client_secret_basic"  # or client_secret_post
    skew: float = 60.0
    timeout: float = 10.0
    metadata_ttl: float = 3600.0


@dataclass(frozen=True, slots=True)
class Metadata:
    """The parts of the discovery document keystile uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None


@dataclass(frozen=True, slots=True)
class Tokens:
    id_token: str = field(repr=False)
    access_token: str | None = field(repr=False)


def new_secret() -> str:
    """256 random bits, URL-safe: state, nonce, PKCE verifier, browser binding."""
    return secrets.token_urlsafe(32)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(verifier)) without padding."""
    raw = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Provider:
    """One configured provider, as keystile talks to it."""

    def __init__(self, config: OIDCConfig, http: aiohttp.ClientSession,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.config = config
        self.http = http
        self.clock = clock
        self._metadata: tuple[float, Metadata] | None = None
        self._keys: KeySet | None = None
        self._lock = asyncio.Lock()

    # -- discovery and keys ---------------------------------------------------------------

    async def metadata(self) -> Metadata:
        """The discovery document, from the cache while it is younger than metadata_ttl."""
        now = self.clock()
        if self._metadata is not None and now - self._metadata[0] < self.config.metadata_ttl:
            return self._metadata[1]
        async with self._lock:
            if self._metadata is None or now - self._metadata[0] >= self.config.metadata_ttl:
                url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
                document = await self._get_json(url, "the discovery document")
                self._metadata = (now, _parse_metadata(document, self.config.issuer))
        return self._metadata[1]

    async def keys(self, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            meta = await self.metadata()
            document = await self._get_json(meta.jwks_uri, "the provider's keys (JWKS)")
            try:
                self._keys = KeySet.import_key_set(document)
            except (JoseError, ValueError, TypeError, KeyError):
                raise OIDCFailure("provider_error", "The provider's keys (JWKS) could not be "
                                  "read.", "jwks") from None  # fmt: skip
        return self._keys

    # -- the flow -----------------------------------------------------------------------

    async def authorization_url(self, state: str, nonce: str, verifier: str) -> str:
        meta = await self.metadata()
        query = urlencode({
            "response_type": "code", "client_id": self.config.client_id,
            "redirect_uri": self.config.redirect_uri, "scope": " ".join(self.config.scopes),
            "state": state, "nonce": nonce, "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        })  # fmt: skip
        joiner = "&" if "?" in meta.authorization_endpoint else "?"
        return meta.authorization_endpoint + joiner + query

    async def exchange(self, code: str, verifier: str) -> Tokens:
        """Trade the code for tokens at the token endpoint (client_secret_basic or _post)."""
        meta = await self.metadata()
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": self.config.redirect_uri, "code_verifier": verifier}  # fmt: skip
        headers = {"Accept": "application/json"}
        if self.config.client_auth == "client_secret_post":
            form.update(client_id=self.config.client_id, client_secret=self.config.client_secret)
        else:
            headers["Authorization"] = basic_auth(self.config.client_id, self.config.client_secret)
        status, body = await self._call("POST", meta.token_endpoint, "the token endpoint",
                                        data=form, headers=headers)  # fmt: skip
        if status != 200 or not isinstance(body, dict):
            error = str(body.get("error", "")) if isinstance(body, dict) else ""
            raise _token_failure(status, error)
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise OIDCFailure("provider_error", "The provider's token answer holds no ID token.",
                              "no_id_token")  # fmt: skip
        access = body.get("access_token")
        return Tokens(id_token, access if isinstance(access, str) else None)

    async def verify(self, token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims once every check passed (OIDCFailure bad_id_token)."""
        config = self.config

        def check(keys: KeySet) -> dict[str, Any]:
            return idtoken.verify(token, keys, issuer=config.issuer, client_id=config.client_id,
                                  nonce=nonce, now=self.clock(), skew=config.skew)  # fmt: skip

        try:
            try:
                return check(await self.keys())
            except idtoken.UnknownKey:  # rotated at the provider: fetch the keys once more
                log.info("ID token signed with a key not in the cached JWKS: fetching it again")
                return check(await self.keys(refresh=True))
        except idtoken.BadIdToken as bad:
            raise OIDCFailure("bad_id_token", bad.message, bad.detail) from None

    async def userinfo(self, access_token: str | None, subject: str) -> dict[str, Any]:
        """The userinfo claims (when the ID token lacks the email), for the same subject."""
        meta = await self.metadata()
        if meta.userinfo_endpoint is None or access_token is None:
            return {}
        headers = {"Authorization": f"Bearer {access_token}"}
        status, body = await self._call("GET", meta.userinfo_endpoint, "the userinfo endpoint",
                                        headers=headers)  # fmt: skip
        if status != 200 or not isinstance(body, dict):
            raise OIDCFailure("provider_error", f"The provider's userinfo endpoint answered "
                              f"{status}.", "userinfo")  # fmt: skip
        if body.get("sub") != subject:
            raise OIDCFailure("bad_id_token", "The userinfo answer is about someone else "
                              "than the ID token.", "userinfo_sub")  # fmt: skip
        return body

    # -- HTTP ---------------------------------------------------------------------------

    async def _get_json(self, url: str, what: str) -> Any:
        status, body = await self._call("GET", url, what)
        if status != 200 or not isinstance(body, dict):
            raise OIDCFailure("provider_error", f"{what[0].upper()}{what[1:]} answered {status}"
                              " or not with JSON.", "discovery")  # fmt: skip
        return body

    async def _call(self, method: str, url: str, what: str, **kwargs: Any) -> tuple[int, Any]:
        """(status, parsed JSON or None); OIDCFailure provider_unreachable on a network error."""
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        try:
            async with self.http.request(method, url, timeout=timeout, allow_redirects=False,
                                         **kwargs) as response:  # fmt: skip
                raw = await response.content.read(MAX_BODY)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("OIDC: %s at %s unreachable: %s", what, url, type(exc).__name__)
            raise OIDCFailure("provider_unreachable", f"The identity provider could not be "
                              f"reached ({what}).", type(exc).__name__) from None  # fmt: skip
        try:
            return status, orjson.loads(raw)
        except ValueError:
            return status, None


def basic_auth(client_id: str, secret: str) -> str:
    """RFC 6749 2.3.1: id and secret each form-encoded, then HTTP Basic."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _token_failure(status: int, error: str) -> OIDCFailure:
    log.warning("OIDC: token endpoint answered %d, error %r", status, error[:64])
    if status == 401 or error == "invalid_client":
        return OIDCFailure("invalid_client", "The identity provider refused keystile's client "
                           "id or secret.", error or str(status))  # fmt: skip
    if error == "invalid_grant":
        return OIDCFailure("code_rejected", "The identity provider refused the sign-in code: "
                           "it expired or was already used.", error)  # fmt: skip
    return OIDCFailure("provider_error", f"The identity provider's token endpoint answered "
                       f"{status}.", error[:64] or str(status))  # fmt: skip


def _parse_metadata(document: dict[str, Any], issuer: str) -> Metadata:
    if document.get("issuer") != issuer:
        raise OIDCFailure("provider_error", f"The discovery document names issuer "
                          f"{str(document.get('issuer'))[:200]!r}, not the configured "
                          f"{issuer!r}.", "discovery_issuer")  # fmt: skip
    try:
        endpoints = [str(document[name]) for name in
                     ("authorization_endpoint", "token_endpoint", "jwks_uri")]  # fmt: skip
    except KeyError as missing:
        raise OIDCFailure("provider_error", f"The discovery document lacks {missing}.",
                          "discovery") from None  # fmt: skip
    userinfo = document.get("userinfo_endpoint")
    authorization, token, jwks = endpoints
    return Metadata(issuer, authorization, token, jwks, str(userinfo) if userinfo else None)
