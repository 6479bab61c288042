"""``keystile serve`` notices its SQLite file replaced (a restore from backup) or
deleted under it: a replaced file is reopened, a deleted one fails closed."""

from __future__ import annotations

import http.client
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import orjson

from tests.e2e.harness import Keystile

CONFIG = '[[routes]]\nname = "chat"\npath = "/v1/chat/*"\nscopes = ["chat"]\n'


def status(port: int, key: str, path: str = "/auth/nginx") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}",
                                           "X-Original-URI": "/v1/chat/completions"})  # fmt: skip
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def within(seconds: float, check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_a_replaced_store_is_reopened_and_a_deleted_one_fails_closed(tmp_path: Path) -> None:
    db = tmp_path / "keystile.db"
    (tmp_path / "keystile.toml").write_text(CONFIG)
    keystile = Keystile(tmp_path, {"KEYSTILE_DB": str(db),
                                   "KEYSTILE_CONFIG": str(tmp_path / "keystile.toml")})  # fmt: skip
    made = orjson.loads(keystile.cli("keys", "create", "--json", "--name", "k",
                                     "--scope", "chat").stdout)  # fmt: skip
    keystile.start()
    try:
        assert status(keystile.port, made["key"]) == 200
        # a restore from backup: a copy taken now replaces the file the server has open
        backup = tmp_path / "backup.db"
        with closing(sqlite3.connect(db)) as source, closing(sqlite3.connect(backup)) as target:
            source.backup(target)
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        os.replace(backup, db)
        keystile.cli("keys", "revoke", made["id"])  # written to the restored file
        assert within(3, lambda: status(keystile.port, made["key"]) == 401), "still allowed"
        assert "replaced" in keystile.log()
        # deleted: nothing is allowed, and /readyz says why
        fresh = orjson.loads(keystile.cli("keys", "create", "--json", "--name", "x",
                                          "--scope", "chat").stdout)  # fmt: skip
        assert within(3, lambda: status(keystile.port, fresh["key"]) == 200)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        assert within(3, lambda: status(keystile.port, fresh["key"]) == 503), "still allowed"
        assert status(keystile.port, fresh["key"], "/readyz") == 503
        assert "deleted" in keystile.log()
    finally:
        keystile.stop()
