"""Which addresses keystile takes and when two are the same person (keystile.emails),
tried over all of Unicode with Hypothesis: a look-alike of an address (KELVIN SIGN for
K, full-width or mathematical letters, dotless i, ligatures) is never taken, so it can
never be matched to the address it imitates."""

from __future__ import annotations

import string
import sys
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from keystile.core.emails import (
    InvalidEmail,
    domain_of,
    email_key,
    fold,
    key_or_none,
    parse_email,
)
from keystile.identity.sso import email_domain_allowed


def _look_alikes() -> dict[str, list[str]]:
    """ASCII letter or digit -> the other characters that Python's lower(), upper(),
    casefold() or NFKC turn into it (U+212A KELVIN SIGN -> k, U+FF21 -> A, ...)."""
    found: dict[str, list[str]] = {}
    for point in [*range(0x80, 0x3000), *range(0xFB00, 0x10000), *range(0x1D400, 0x1D800)]:
        ch = chr(point)
        for image in (ch.lower(), ch.upper(), ch.casefold(), unicodedata.normalize("NFKC", ch)):
            for target in {image, image.lower()}:
                if len(target) == 1 and target in string.ascii_letters + string.digits:
                    found.setdefault(target.lower(), []).append(ch)
    return found


LOOK_ALIKES = _look_alikes()
# hypothesis' addresses are RFC 5322 dot-atoms with DNS domains: ours, up to the length
ADDRESSES = st.emails().filter(lambda a: len(a) <= 254 and len(a.partition("@")[0]) <= 64)


def test_the_look_alike_table_holds_the_known_ones() -> None:
    assert "\u212a" in LOOK_ALIKES["k"]  # KELVIN SIGN
    assert "\uff4b" in LOOK_ALIKES["k"]  # FULLWIDTH LATIN SMALL LETTER K
    assert "\u0131" in LOOK_ALIKES["i"]  # LATIN SMALL LETTER DOTLESS I (upper: I)
    assert "\u017f" in LOOK_ALIKES["s"]  # LATIN SMALL LETTER LONG S (upper: S)


@given(ADDRESSES)
def test_a_valid_address_is_compared_ascii_lower_cased(address: str) -> None:
    assert parse_email(address) == address
    key = email_key(address)
    assert key == address.encode("ascii").lower().decode("ascii")
    assert email_key(key) == key == email_key(address.upper()) == key_or_none(address.swapcase())
    assert domain_of(key) == address.rpartition("@")[2].lower()


@given(ADDRESSES, st.data())
def test_a_look_alike_of_a_valid_address_is_refused(address: str, data: st.DataObject) -> None:
    places = [i for i, ch in enumerate(address) if ch.lower() in LOOK_ALIKES]
    chosen = data.draw(st.lists(st.sampled_from(places), min_size=1, unique=True))
    chars = list(address)
    for i in chosen:
        chars[i] = data.draw(st.sampled_from(LOOK_ALIKES[chars[i].lower()]))
    forged = "".join(chars)
    with pytest.raises(InvalidEmail):
        parse_email(forged)
    assert key_or_none(forged) is None


@given(st.text(st.characters(codec=None), max_size=300))
@example("Kim@example.com".replace("K", "\u212a"))
@example("ana@evil.com@example.com")
@example('"ana"@example.com')
@example("ana@example.com\n")
@example("ana@example.com\u200b")
@example("ana@1.2.3.4")
def test_what_is_taken_is_ascii_stable_under_nfkc_with_one_at(text: str) -> None:
    try:
        taken = parse_email(text)
    except InvalidEmail as exc:  # never another exception
        assert exc.reason and repr(text)[:40] in str(exc)
        assert key_or_none(text) is None
        return
    assert taken == text and text.isascii()
    assert unicodedata.normalize("NFKC", text) == text
    assert text.count("@") == 1 and len(text) <= 254
    local, _, domain = text.partition("@")
    assert 1 <= len(local) <= 64 and '"' not in local and ".." not in text
    assert not any(ch in text for ch in string.whitespace + "()[]<>,;:\\")
    assert "." in domain and not domain.rpartition(".")[2].isdigit()
    assert all(0 < len(label) <= 63 and not label.startswith("-") for label in domain.split("."))


@given(st.text(st.characters(codec=None), max_size=50),
       st.text(st.characters(codec=None), max_size=50))  # fmt: skip
def test_two_texts_are_the_same_person_only_when_equal_ascii_lower_cased(a: str, b: str) -> None:
    same = key_or_none(a) is not None and key_or_none(a) == key_or_none(b)
    if same:
        assert a.isascii() and b.isascii() and a.lower() == b.lower()


@given(st.text(st.characters(codec=None)))
@example("\u212a\u0130\u017f\u00c0KIM")
def test_fold_lower_cases_a_to_z_and_nothing_else(text: str) -> None:
    folded = fold(text)
    assert len(folded) == len(text) and fold(folded) == folded
    for before, after in zip(text, folded, strict=True):
        assert after == (before.lower() if "A" <= before <= "Z" else before)


@given(ADDRESSES, st.lists(st.from_regex(r"\A[A-Za-z0-9-]{1,10}\.[A-Za-z]{2,5}\Z"), max_size=3))
def test_the_domain_allowlist_compares_the_domain_of_the_key_exactly(
    address: str, domains: list[str]
) -> None:
    configured = frozenset(d.lower() for d in domains)
    allowed = email_domain_allowed(email_key(address), configured)
    assert allowed == (not configured or address.rpartition("@")[2].lower() in configured)


def test_a_refusal_says_which_rule() -> None:
    cases = {
        "Kim@example.com".replace("K", "\u212a"): ("not_normalised", "U+212A KELVIN SIGN"),
        "k\u0131m@example.com": ("not_ascii", "U+0131"),
        "ana@evil.com@example.com": ("two_at", "more than one @"),
        '"ana"@example.com': ("bad_local_part", "no quotes"),
        "ana@example.com\n": ("bad_domain", "example.com"),
        "ana": ("no_at", "one @"),
        "a" * 65 + "@example.com": ("too_long", "at most 64"),
    }
    for text, (reason, words) in cases.items():
        with pytest.raises(InvalidEmail) as caught:
            parse_email(text)
        assert caught.value.reason == reason and words in str(caught.value), text


def test_no_unicode_digit_or_letter_outside_ascii_is_taken() -> None:
    """Every character beyond ASCII, on its own in an address, is refused."""
    for point in range(0x80, sys.maxunicode + 1, 7):  # a sample of every block
        with pytest.raises(InvalidEmail):
            parse_email(f"a{chr(point)}@example.com")
