"""ID-token verification (OpenID Connect Core 3.1.3.7), pure: no I/O.

:func:`verify` checks a compact JWS against a key set the caller fetched: the
signature (asymmetric algorithms only: never ``none``, never an HMAC that a
client secret could forge), then ``iss``, ``aud`` (a string, or a list that
must hold the client id, with ``azp`` naming the client when it holds several),
``exp`` and ``iat`` (each with a bounded clock skew) and the ``nonce`` this
browser was given. A failure raises :class:`BadIdToken` with a ``detail`` a
person (and a test) can tell apart; the token itself is never in a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from keystile.core.errors import KeystileError

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
              "EdDSA")  # fmt: skip
MAX_TOKEN = 16 * 1024
# Google documents that its ID tokens' iss is https://accounts.google.com "or"
# accounts.google.com; every other issuer must match exactly.
ISSUER_ALIASES = {"https://accounts.google.com": ("accounts.google.com",)}


class BadIdToken(KeystileError):
    """The ID token is not acceptable; ``detail`` says which check failed."""

    def __init__(self, detail: str, message: str) -> None:
        super().__init__(message)
        self.detail = detail
        self.message = message


class UnknownKey(BadIdToken):
    """The token names a key id the key set does not hold (re-fetch the set once)."""


def header_of(token: str) -> dict[str, Any]:
    """The token's protected header, unverified (for its ``kid`` and ``alg``)."""
    if len(token) > MAX_TOKEN:
        raise BadIdToken("malformed", f"the ID token is longer than {MAX_TOKEN} bytes")
    try:
        return dict(jws.extract_compact(token.encode()).protected)
    except (JoseError, ValueError, UnicodeError):
        raise BadIdToken("malformed", "the ID token is not a signed JWT") from None


def _signed_claims(token: str, keys: KeySet) -> dict[str, Any]:
    header = header_of(token)
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in ALGORITHMS:
        raise BadIdToken("algorithm", f"the ID token is signed with {str(alg)[:20]!r}; "
                         f"accepted: {', '.join(ALGORITHMS)}")  # fmt: skip
    if kid is not None:
        try:
            candidates = [keys.get_by_kid(str(kid))]
        except JoseError:
            raise UnknownKey(
                "unknown_key", f"the provider's keys have no key {str(kid)[:64]!r}"
            ) from None
    else:
        candidates = [key for key in keys if key.get("use") != "enc"]
    for key in candidates:
        try:
            claims = jwt.decode(token, key, algorithms=[alg]).claims
        except JoseError:
            continue
        if not isinstance(claims, dict):
            break
        return claims
    raise BadIdToken("signature", "the ID token's signature does not verify with the "
                     "provider's keys")  # fmt: skip


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadIdToken(name, f"the ID token has no numeric {name!r} claim")
    return float(value)


def check_claims(claims: Mapping[str, Any], *, issuer: str, client_id: str, nonce: str,
                 now: float, skew: float) -> None:  # fmt: skip
    """Raise BadIdToken unless the (verified) claims are for this client, now, this browser."""
    if claims.get("iss") != issuer and claims.get("iss") not in ISSUER_ALIASES.get(issuer, ()):
        raise BadIdToken("issuer", f"the ID token was issued by {str(claims.get('iss'))[:200]!r}, "
                         f"not {issuer!r}")  # fmt: skip
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        raise BadIdToken("audience", f"the ID token is not meant for client {client_id!r}")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise BadIdToken("azp", f"the ID token's authorized party is not client {client_id!r}")
    if _number(claims, "exp") + skew <= now:
        raise BadIdToken("exp", "the ID token has expired (is the server's clock right?)")
    if _number(claims, "iat") - skew > now:
        raise BadIdToken("iat", "the ID token was issued in the future (is the server's clock "
                         "right?)")  # fmt: skip
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise BadIdToken("sub", "the ID token names no subject")
    if claims.get("nonce") != nonce:
        raise BadIdToken("nonce", "the ID token was not issued for this sign-in (nonce)")


def verify(token: str, keys: KeySet, *, issuer: str, client_id: str, nonce: str, now: float,
           skew: float) -> dict[str, Any]:  # fmt: skip
    """The claims of a valid ID token; BadIdToken (UnknownKey for an unknown ``kid``)."""
    claims = _signed_claims(token, keys)
    check_claims(claims, issuer=issuer, client_id=client_id, nonce=nonce, now=now, skew=skew)
    return claims
