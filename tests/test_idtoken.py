"""ID-token verification with keys made here (joserfc): every check can fail on its own."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from keystile.identity import idtoken
from keystile.identity.idtoken import BadIdToken, UnknownKey

ISSUER = "https://idp.example.com"
CLIENT = "keystile-client"
NONCE = "n-0S6_WzA2Mj"
NOW = 1_800_000_000.0
SKEW = 60.0

KEY = RSAKey.generate_key(2048, {"kid": "k1", "use": "sig", "alg": "RS256"})
OTHER = RSAKey.generate_key(2048, {"kid": "k1", "use": "sig", "alg": "RS256"})
EC = ECKey.generate_key("P-256", {"kid": "e1", "use": "sig"})


def published(*keys: Any) -> KeySet:
    return KeySet.import_key_set({"keys": [key.as_dict(private=False) for key in keys]})


def claims(**changes: Any) -> dict[str, Any]:
    base = {"iss": ISSUER, "aud": CLIENT, "sub": "248289761001", "exp": int(NOW) + 300,
            "iat": int(NOW) - 5, "nonce": NONCE, "email": "ana@example.com",
            "email_verified": True}  # fmt: skip
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def token(key: Any = KEY, header: dict[str, Any] | None = None, **changes: Any) -> str:
    return jwt.encode(header or {"alg": "RS256", "kid": "k1"}, claims(**changes), key)


def verify(value: str, keys: KeySet | None = None, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"issuer": ISSUER, "client_id": CLIENT, "nonce": NONCE, "now": NOW,
                            "skew": SKEW, **overrides}  # fmt: skip
    return idtoken.verify(value, keys or published(KEY), **args)


def refused(value: str, keys: KeySet | None = None, **overrides: Any) -> str:
    with pytest.raises(BadIdToken) as caught:
        verify(value, keys, **overrides)
    assert "eyJ" not in caught.value.message  # the token never appears in a message
    return caught.value.detail


def test_a_good_token_gives_its_claims() -> None:
    got = verify(token())
    assert got["sub"] == "248289761001" and got["email"] == "ana@example.com"


def test_an_ec_signed_token_verifies_too() -> None:
    value = token(EC, {"alg": "ES256", "kid": "e1"})
    assert verify(value, published(KEY, EC))["iss"] == ISSUER


def test_a_token_without_kid_is_tried_against_each_published_key() -> None:
    assert verify(token(header={"alg": "RS256"}), published(OTHER, KEY))["aud"] == CLIENT


def test_wrong_signature() -> None:
    assert refused(token(OTHER)) == "signature"  # same kid, another private key


def test_tampered_payload() -> None:
    head, _body, signature = token().split(".")
    forged = jwt.encode({"alg": "RS256", "kid": "k1"}, claims(sub="admin"), OTHER).split(".")[1]
    assert refused(f"{head}.{forged}.{signature}") == "signature"


def test_unknown_kid_is_its_own_failure() -> None:
    with pytest.raises(UnknownKey):
        verify(token(header={"alg": "RS256", "kid": "rotated"}))


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_none_and_hmac_are_never_accepted(alg: str) -> None:
    header = base64.urlsafe_b64encode(f'{{"alg":"{alg}","kid":"k1"}}'.encode()).rstrip(b"=")
    payload = token().split(".")[1]
    signature = "" if alg == "none" else "c2lnbmVkLXdpdGgtdGhlLWNsaWVudC1zZWNyZXQ"
    assert refused(f"{header.decode()}.{payload}.{signature}") == "algorithm"


def test_wrong_issuer() -> None:
    assert refused(token(iss="https://evil.example.com")) == "issuer"


def test_issuer_must_match_exactly() -> None:
    assert refused(token(iss=ISSUER + "/")) == "issuer"


def test_wrong_audience() -> None:
    assert refused(token(aud="someone-else")) == "audience"


def test_audience_list_holding_the_client_with_azp() -> None:
    assert verify(token(aud=["other", CLIENT], azp=CLIENT))["azp"] == CLIENT


def test_audience_list_without_azp_is_refused() -> None:
    assert refused(token(aud=["other", CLIENT])) == "azp"


def test_audience_list_with_another_azp_is_refused() -> None:
    assert refused(token(aud=["other", CLIENT], azp="other")) == "azp"


def test_audience_list_without_the_client() -> None:
    assert refused(token(aud=["other", "third"], azp="other")) == "audience"


def test_expired() -> None:
    assert refused(token(exp=int(NOW) - 61)) == "exp"


def test_expired_within_the_skew_is_accepted() -> None:
    assert verify(token(exp=int(NOW) - 30))


def test_issued_in_the_future_beyond_the_skew() -> None:
    assert refused(token(iat=int(NOW) + 120)) == "iat"


def test_issued_slightly_in_the_future_within_the_skew() -> None:
    assert verify(token(iat=int(NOW) + 30))


def test_missing_exp_or_iat() -> None:
    assert refused(token(exp=None)) == "exp"
    assert refused(token(iat=None)) == "iat"


def test_nonce_mismatch() -> None:
    assert refused(token(nonce="another-sign-in")) == "nonce"


def test_missing_nonce() -> None:
    assert refused(token(nonce=None)) == "nonce"


def test_garbage_is_malformed() -> None:
    assert refused("not.a.jwt") == "malformed"
    assert refused("x" * 20_000) == "malformed"


def test_google_issuer_without_scheme_is_accepted_for_google_only() -> None:
    google = "https://accounts.google.com"
    assert verify(token(iss="accounts.google.com"), issuer=google)
    assert refused(token(iss="idp.example.com")) == "issuer"
