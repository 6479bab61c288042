import re

import pytest

from keystile.core import keys
from keystile.core.keys import BASE62, Hasher, KeyFormat, Shape

FMT = KeyFormat("ks")


def test_generated_key_matches_the_documented_scanner_regex() -> None:
    key = keys.generate()
    assert re.fullmatch(keys.scanner_regex("ks"), key)
    assert re.fullmatch(r"ks_[0-9A-Za-z]{49}", key)
    assert FMT.shape(key) is Shape.OURS


def test_ten_thousand_keys_are_unique_and_valid() -> None:
    generated = {keys.generate() for _ in range(10_000)}
    assert len(generated) == 10_000
    assert all(FMT.shape(k) is Shape.OURS for k in generated)


def test_every_single_character_mutation_is_rejected() -> None:
    key = keys.generate()
    alphabet = BASE62 + "_-.!~ "
    for position, original in enumerate(key):
        for replacement in alphabet:
            if replacement == original:
                continue
            mutated = key[:position] + replacement + key[position + 1 :]
            assert FMT.shape(mutated) is Shape.MALFORMED, (position, replacement)
    for position in range(len(key)):
        assert FMT.shape(key[:position] + key[position + 1 :]) is Shape.MALFORMED
        assert FMT.shape(key[:position] + "A" + key[position:]) is Shape.MALFORMED


@pytest.mark.parametrize(
    "token",
    [
        "ks_short",
        "ks_" + "a" * 49,  # right shape, wrong checksum
        "ks_" + "a" * 48 + "\u00e9",
        "ks_abc\r\nX-Injected: 1",
        "ks_" + "a" * 10_000,
        "sk" * 300,
        "",
        "tiny",
        "caf\u00e9-legacy-key",
    ],
)
def test_malformed_tokens(token: str) -> None:
    assert FMT.shape(token) is Shape.MALFORMED


def test_other_prefix_is_rejected_unless_accepted() -> None:
    other = keys.generate("old")
    assert FMT.shape(other) is Shape.MALFORMED
    assert KeyFormat("ks", frozenset({"old"})).shape(other) is Shape.OURS


def test_foreign_format_is_told_apart() -> None:
    assert FMT.shape("sk-legacy-0123456789abcdef") is Shape.FOREIGN


def test_display_prefix_is_short_and_not_the_key() -> None:
    key = keys.generate()
    shown = keys.display_prefix(key)
    assert key.startswith(shown)
    assert len(shown) == len("ks_") + keys.DISPLAY_SECRET_CHARS


def test_invalid_prefix_names_the_value() -> None:
    with pytest.raises(ValueError, match="'Bad_'"):
        keys.validate_prefix("Bad_")


def test_hash_schemes() -> None:
    key = keys.generate()
    plain, peppered = Hasher(), Hasher(b"p" * 32)
    assert plain.scheme == keys.SCHEME_SHA256
    assert peppered.scheme == keys.SCHEME_HMAC_SHA256
    assert plain.digest(key) != peppered.digest(key)
    # a peppered hasher still finds keys stored before the pepper was set
    assert (keys.SCHEME_SHA256, plain.digest(key)) in peppered.candidates(key)
    with pytest.raises(ValueError, match="KEYSTILE_PEPPER"):
        plain.digest(key, keys.SCHEME_HMAC_SHA256)
