"""Every parser of a number people type (keystile.numbers, and the pages', the CLI's and
the durations' use of them), tried over all of Unicode with Hypothesis: a value is taken
exactly when it is ASCII digits in range, and anything else is a clear refusal naming
the field and the value (InvalidInput, argparse's error or ValueError), never another
exception (``'²'.isdigit()`` is true and ``int('²')`` raises; ``int('١٢')`` is 12)."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from multidict import MultiDict, MultiDictProxy

from keystile.cli import args as cli_args
from keystile.core import numbers
from keystile.core.durations import parse_day, parse_duration, parse_instant
from keystile.core.errors import InvalidInput
from keystile.manage import fields
from keystile.web.ui import forms
from keystile.web.ui.keys import key_filter

ASCII_NUMBER = re.compile(r"[0-9]{1,20}")
# what people type, what Unicode calls digits, and what int() and isdigit() disagree on
UNICODE_DIGITS = st.sampled_from([
    "\u00b2", "\u00b3", "\u00b9", "\u0661", "\u06f3", "\u0967", "\uff10", "\uff19", "\U0001d7d8",
    "\u2460", "\u2167", "\u096f", "\u1369", "\U0001f101", "\u00bd", "_", "+", "-", " ", "e", ".",
])  # fmt: skip
TEXTS = (st.text(st.characters(codec=None), max_size=25)
         | st.text(st.sampled_from("0123456789") | UNICODE_DIGITS, min_size=1, max_size=22)
         | st.integers(-(10**13), 10**13).map(str))  # fmt: skip
NOW = time.time()
_WIDE = str.maketrans("0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19")
DATES = st.dates().map(str).flatmap(lambda d: st.sampled_from([d, d.translate(_WIDE)]))


def _form(**values: str) -> MultiDictProxy[str]:
    return MultiDictProxy(MultiDict(values))


def outcome(parse: Callable[[str], Any], text: str) -> tuple[bool, Any]:
    """(taken, value or the message); any exception but a refusal fails the test."""
    try:
        return True, parse(text)
    except (InvalidInput, argparse.ArgumentTypeError, ValueError) as exc:
        return False, str(exc)


def expected(text: str, least: int, most: int) -> int | None:
    if ASCII_NUMBER.fullmatch(text) and least <= int(text) <= most:
        return int(text)
    return None


# parser, its least and most, and the field its refusal names
PARSERS: list[tuple[str, Callable[[str], Any], int, int, str]] = [
    ("limit", lambda t: numbers.limit("per_minute", t), 1, 10**12, "limits.per_minute"),
    ("days", lambda t: numbers.days("expiring", t), 1, 36525, "expiring"),
    ("page_size", lambda t: numbers.page_size("limit", t), 1, 1000, "limit"),
    ("ui_limit", lambda t: forms.limits_of(_form(limit_per_minute=t))["per_minute"], 1, 10**12,
     "limits.per_minute"),
    ("ui_team_limit", lambda t: forms.limits_of(_form(limit_quota_day=t))["quota_day"], 1,
     10**12, "limits.quota_day"),
    ("ui_expiring", lambda t: key_filter(_viewer(), {"expiring": t}, NOW).expires_before, 1,
     36525, "expiring"),
    ("ui_unused", lambda t: key_filter(_viewer(), {"unused": t}, NOW).unused_since, 1, 36525,
     "unused"),
    ("cli_limit", lambda t: cli_args.limit(f"per_minute={t}")[1], 1, 10**12, "per_minute"),
    ("cli_page_size", cli_args.page_size, 1, 1000, "1000"),
    ("cli_workers", cli_args.positive_int, 1, 10**6, "1000000"),
]  # fmt: skip


def _viewer() -> Any:
    class Admin:
        is_admin = True
        user_id = "user_root"

    return Admin()


@pytest.mark.parametrize(("name", "parse", "least", "most", "field"), PARSERS,
                         ids=[p[0] for p in PARSERS])  # fmt: skip
@given(text=TEXTS)
@example(text="\u00b2")
@example(text="\u00b3")
@example(text="\u0661\u0662")
@example(text="0")
@example(text="007")
@example(text="9" * 21)
def test_a_number_is_taken_exactly_when_it_is_ascii_digits_in_range(
    name: str, parse: Callable[[str], Any], least: int, most: int, field: str, text: str
) -> None:
    if name in ("ui_limit", "ui_team_limit"):
        if not text.strip():
            return  # an empty field is no limit: left out
        text = text.strip()  # a form's fields are read stripped (web.ui.common.text)
    if name in ("ui_expiring", "ui_unused") and not text:
        return  # no filter
    taken, value = outcome(parse, text)
    want = expected(text, least, most)
    assert taken == (want is not None), (name, text, value)
    if not taken:
        assert field in value, (name, value)
        if not name.startswith("cli_"):  # argparse shows the value in its own line
            assert repr(text)[:20] in value, (name, value)
    elif name in ("ui_expiring", "ui_unused"):
        assert abs(value - NOW) == pytest.approx(want * 86400)
    else:
        assert value == want


@given(st.integers(1, 10**12), st.integers(0, 3))
def test_every_value_in_range_is_taken_with_or_without_leading_zeros(n: int, zeros: int) -> None:
    text = "0" * zeros + str(n)
    assert numbers.limit("per_day", text) == n
    assert forms.limits_of(_form(limit_per_day=text)) == {"per_day": n}
    assert cli_args.limit(f"per_day={text}") == ("per_day", n)


@given(TEXTS)
@example("\u00b3")
@example("30")
@example("never")
def test_the_expiry_choice_is_one_of_the_offered_or_a_named_refusal(text: str) -> None:
    taken, value = outcome(lambda t: forms.expiry_of(_form(expiry=t), NOW), text)
    text = text.strip()  # as the form is read
    if text in ("", "never", "keep"):
        assert taken
    elif expected(text, 1, 10**6) in forms.PRESETS:
        assert taken and value == NOW + int(text) * 86400
    else:
        assert not taken and "expiry" in value and repr(text)[:20] in value


@given(st.text(st.characters(codec=None), max_size=12) | DATES)
@example("2099-01-31x")
@example("2099-01-\u0663\u0661")
def test_a_day_is_taken_only_as_ascii_yyyy_mm_dd(text: str) -> None:
    taken, value = outcome(lambda t: forms.expiry_of(_form(expiry="date", expires_on=t), NOW),
                           text)  # fmt: skip
    text = text.strip()  # as the form is read
    if taken:
        assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text)
        assert value == parse_day(text) + 86400
    else:
        assert "expires_on" in value


@given(st.text(st.characters(codec=None), max_size=30)
       | st.text(st.sampled_from("0123456789smhdw") | UNICODE_DIGITS, max_size=12))  # fmt: skip
@example("\u00b3d")
@example("\u0663d")
def test_durations_and_instants_take_ascii_digits_only(text: str) -> None:
    for parse in (parse_duration, fields.lifetime, fields.duration, parse_instant,
                  fields.instant, fields.expiry, parse_day):  # fmt: skip
        taken, _ = outcome(parse, text)
        if taken:
            assert text.isascii(), (parse, text)
