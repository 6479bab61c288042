"""The CLI takes the same bounds as the admin API: a value out of bounds exits non-zero
with a message naming the option and the value, and nothing stored breaks a listing."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest

SCRIPT = Path(sys.executable).with_name("keystile")


@pytest.fixture
def run(db_path: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
        env.update({"KEYSTILE_DB": str(db_path), "XDG_DATA_HOME": str(tmp_path)})
        done = subprocess.run([str(SCRIPT), "--create-store", *args], capture_output=True,
                              text=True, env=env,
                              timeout=60)  # fmt: skip
        assert "Traceback" not in done.stderr + done.stdout
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    return run


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return orjson.loads(done.stdout)


CREATE = ["keys", "create", "--name", "k"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        ([*CREATE, "--expires-in", "591732w"], ["--expires-in", "591732w"]),
        ([*CREATE, "--expires-in", "5218w"], ["--expires-in", "5218w"]),
        ([*CREATE, "--expires-in", "1H"], ["--expires-in", "1H"]),
        ([*CREATE, "--expires-at", "9999-12-31"], ["expires", "9999-12-31"]),
        ([*CREATE, "--expires-at", "1969-01-01"], ["expires", "1969-01-01"]),
        ([*CREATE, "--limit", "per_minute=1000000000001"], ["per_minute", "1000000000001"]),
        ([*CREATE, "--limit", "per_minute=0"], ["per_minute", "0"]),
        ([*CREATE, "--limit", "per_minute=" + "9" * 5000], ["per_minute"]),
        ([*CREATE, "--limit", "per_minute=\u00b2"], ["per_minute"]),
        (["keys", "create", "--name", "x" * 201], ["name", "xxxx"]),
        (["keys", "create", "--name", "a\x1bb"], ["name", "\\x1b"]),
        (["keys", "create", "--name", "a\u2028b"], ["name", "\\u2028"]),
        ([*CREATE, "--owner", "o\nx"], ["owner", "\\n"]),
        ([*CREATE, "--metadata", "k=" + "v" * 501], ["metadata", "k"]),
        ([*CREATE, "--metadata", "k" * 65 + "=v"], ["metadata", "kkkk"]),
        ([*CREATE, *[a for n in range(65) for a in ("--scope", f"s{n}")]], ["scope", "64"]),
        ([*CREATE, *[a for n in range(65) for a in ("--allowed-ip", f"10.0.{n}.0/24")]],
         ["allowed_ips", "64"]),
        ([*CREATE, "--allowed-ip", ""], ["allowed_ips", "''"]),
        (["keys", "rotate", "key_x", "--grace", "591732w"], ["--grace", "591732w"]),
        (["teams", "create", "t\x01"], ["name", "\\x01"]),
        (["teams", "create", "t", "--limit", "quota_day=1000000000001"], ["quota_day"]),
        (["users", "create", "u" * 201], ["external_id"]),
        (["audit", "list", "--limit", "100000"], ["--limit", "100000"]),
        # numbers as the pages and the API read them (keystile.numbers): ASCII digits only
        ([*CREATE, "--limit", "per_minute=\u0661\u0662"], ["per_minute=\u0661", "digits 0-9"]),
        ([*CREATE, "--limit", "per_minute=\uff17"], ["per_minute=\uff17", "digits 0-9"]),
        (["audit", "list", "--limit", "\u00b3"], ["--limit", "\u00b3"]),
        # addresses by keystile.emails' rules
        (["users", "create", "kim", "--email", "\u212aim@example.com"], ["--email", "U+212A"]),
        (["users", "create", "ana", "--email", "ana@evil.com@example.com"],
         ["--email", "more than one @"]),
        (["usage", "key_x", "--since", "99999-01-01"], ["--since", "99999-01-01"]),
    ],
)  # fmt: skip
def test_out_of_bounds_arguments_are_refused(run, args: list[str], needles: list[str]) -> None:
    done = run(*args, ok=False)
    assert done.returncode == 2, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr
    assert as_json(run("keys", "list", "--all", "--json")) == []


def test_the_bounds_themselves_are_taken(run) -> None:
    key = as_json(run(*CREATE, "--expires-in", "5217w", "--limit", "per_minute=1000000000000",
                      "--name", "x" * 200, "--metadata", "k=" + "v" * 500, "--json"))  # fmt: skip
    assert key["limits"] == {"per_minute": 10**12} and key["expires_at"] is not None
    assert as_json(run("keys", "rotate", key["id"], "--grace", "5217w", "--json"))["id"]


@pytest.mark.parametrize("stored", [1e13, -1e13, 1e300, float("inf")])
def test_stored_out_of_range_instants_never_break_a_listing(
    run, db_path: Path, stored: float
) -> None:
    key = as_json(run(*CREATE, "--json"))
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE keys SET expires_at = ?, last_used_at = ? WHERE id = ?",
                     (stored, stored, key["id"]))  # fmt: skip
    assert key["id"] in run("keys", "list", "--all").stdout
    (entry,) = as_json(run("keys", "list", "--all", "--json"))
    assert entry["expires_at"] in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z")
    assert key["id"] in run("keys", "show", key["id"]).stdout
    run("usage", key["id"])
