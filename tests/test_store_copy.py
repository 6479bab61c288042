"""``keystile store copy``: a populated SQLite store to PostgreSQL and back, for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from keystile.core.keys import Hasher
from keystile.identity.sessions import LoginThrottle, SessionService
from keystile.manage.accounts import AccountService
from keystile.manage.service import KeyService
from keystile.store import KeyFilter, Store
from keystile.store.copy import NOT_COPIED, TABLES
from tests.backends import dump, postgres_schema

PASSWORD = "correct horse battery staple"


async def populate(store: Store) -> dict[str, str]:
    """One of everything the store holds."""
    keys = KeyService(store, Hasher(), "ks")
    accounts = AccountService(keys)
    team = await accounts.create_team("ml", limits={"per_minute": 10})
    user = await accounts.create_user("ana", team.id, role="admin", email="ana@example.com",
                                      password=PASSWORD)  # fmt: skip
    group = await accounts.create_group("readers", ["chat"])
    issued = await keys.create("k1", scopes=["chat"], user_id=user.id)
    await accounts.set_membership(group.id, issued.record.id, True)
    await accounts.set_user_membership(group.id, user.id, True)
    await keys.create("k2", owner="bob")
    await keys.revoke((await keys.create("k3")).record.id)
    await store.add_usage({(issued.record.id, 1_800_000_000 - 1_800_000_000 % 3600, "chat",
                            "allow"): 7}, {issued.record.id: 1_800_000_100.5})  # fmt: skip
    signing = SessionService(store, idle=3600, absolute=43200, throttle=LoginThrottle(5, 900))
    signed = await signing.sign_in("ana", PASSWORD, "192.0.2.1", "agent")
    await store.remember("idem-1", {"status": 201})
    return {"key": issued.key, "token": signed.token}


async def table_rows(store: Store) -> dict[str, list[tuple[object, ...]]]:
    found = {}
    for table, key in TABLES:
        columns = sorted(await store._columns(table))
        rows = await store._fetch("", f"SELECT {', '.join(columns)} FROM {table}"
                                      f" ORDER BY {', '.join(key)}")  # fmt: skip
        found[table] = [tuple(row) for row in rows]
    return found


def keystile(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    return subprocess.run([sys.executable, "-m", "keystile", *args], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


async def test_copy_round_trips_a_populated_store_and_can_run_again(tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    async with await Store.open(source) as store:
        secrets = await populate(store)
        before = await table_rows(store)
    assert all(before[table] for table in ("teams", "users", "keys", "sessions", "usage",
                                           "audit_log", "key_groups", "user_groups"))  # fmt: skip
    async with postgres_schema() as url:
        first = keystile("store", "copy", str(source), url, "--json")
        assert first.returncode == 0, first.stderr
        report = orjson.loads(first.stdout)
        counts = {t["table"]: t["copied"] for t in report["tables"]}
        assert counts == {table: len(rows) for table, rows in before.items()}
        again = keystile("store", "copy", str(source), url)  # safe to re-run: same rows
        assert again.returncode == 0, again.stderr
        assert "every one read back and found equal" in again.stdout
        async with await Store.open(url) as pg:
            assert await table_rows(pg) == before
            stored = await dump(pg)
            assert secrets["key"] not in stored and secrets["token"] not in stored
            assert PASSWORD not in stored
            # the copy works as a store: the key's record and the user's session
            (record,) = await pg.find_keys(KeyFilter(name="k1"), 0)
            assert record.team is not None and record.groups
        back = tmp_path / "back.db"
        home = keystile("store", "copy", url, f"sqlite:///{back}")
        assert home.returncode == 0, home.stderr
    async with await Store.open(back) as store:
        assert await table_rows(store) == before


def test_every_table_is_copied_or_said_not_to_be(tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    from keystile.store.sqlite import migrate_file

    path = tmp_path / "k.db"
    migrate_file(path)
    with closing(sqlite3.connect(path)) as conn, conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    tables.discard("sqlite_sequence")
    assert tables == {table for table, _ in TABLES} | NOT_COPIED


def test_copy_refuses_a_missing_source_and_hides_passwords(tmp_path: Path) -> None:
    missing = keystile("store", "copy", str(tmp_path / "nope.db"), str(tmp_path / "d.db"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert not (tmp_path / "d.db").exists()
    bad = keystile("store", "copy", str(tmp_path / "nope.db"),
                   "postgresql://u:hunter2@127.0.0.1:1/x")  # fmt: skip
    assert bad.returncode != 0 and "hunter2" not in bad.stderr + bad.stdout
    unreachable = tmp_path / "s.db"
    assert keystile("store", "copy", str(tmp_path / "d.db"), str(unreachable)).returncode == 2
    closed = keystile("store", "copy", str(tmp_path / "nope.db"), "mysql://x")
    assert closed.returncode == 2 and "DST 'mysql://x'" in closed.stderr
    assert "Traceback" not in missing.stderr + bad.stderr + closed.stderr
