"""People and sessions through the real console script: the first admin on a fresh
install, passwords never in argv or output, sessions listed and ended."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson

from keystile.identity.sessions import LoginThrottle, SessionService
from keystile.store import Store

SCRIPT = Path(sys.executable).with_name("keystile")
PASSWORD = "a long pass phrase 42"


Done = subprocess.CompletedProcess[str]


def run(db: Path, *args: str, stdin: str | None = None, ok: bool = True) -> Done:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env["KEYSTILE_DB"] = str(db)
    done = subprocess.run([str(SCRIPT), *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    assert "Traceback" not in done.stdout + done.stderr
    assert (done.returncode == 0) is ok, done.stderr
    return done


def sign_in(db: Path, name: str, password: str) -> str:
    async def go() -> str:
        async with await Store.open(db) as store:
            service = SessionService(store, idle=600, absolute=3600,
                                     throttle=LoginThrottle(5, 60))  # fmt: skip
            return (await service.sign_in(name, password, "192.0.2.1")).session.id

    return asyncio.run(go())


def test_a_fresh_install_gets_its_first_admin(tmp_path: Path) -> None:
    db = tmp_path / "new" / "keystile.db"
    done = run(db, "users", "create-admin", "root", "--json")
    made = orjson.loads(done.stdout)
    assert made["role"] == "admin" and made["has_password"] is True
    assert sign_in(db, "root", made["password"]).startswith("ses_")
    listed = run(db, "users", "list", "--json").stdout
    assert made["password"] not in listed and "argon2" not in listed
    run(db, "users", "create-admin", "root", ok=False)  # once


def test_passwords_come_from_stdin_or_a_prompt_never_argv(tmp_path: Path) -> None:
    db = tmp_path / "keystile.db"
    run(db, "--create-store", "users", "create", "ana", "--email", "ana@example.com")
    done = run(db, "users", "set-password", "ana", "--stdin", stdin=PASSWORD + "\n")
    assert PASSWORD not in done.stdout + done.stderr
    short = run(db, "users", "set-password", "ana", "--stdin", stdin="short\n", ok=False)
    assert "password" in short.stderr and "short" not in short.stderr
    usage = run(db, "users", "set-password", "ana", PASSWORD, ok=False)
    assert usage.returncode == 2
    assert sign_in(db, "ana", PASSWORD)


def test_sessions_are_listed_and_ended(tmp_path: Path) -> None:
    db = tmp_path / "keystile.db"
    run(db, "--create-store", "users", "create", "ana")
    run(db, "users", "set-password", "ana", "--stdin", stdin=PASSWORD + "\n")
    first, second = sign_in(db, "ana", PASSWORD), sign_in(db, "ana", PASSWORD)
    listed = orjson.loads(run(db, "sessions", "list", "--user", "ana", "--json").stdout)
    assert {s["id"] for s in listed} == {first, second}
    run(db, "sessions", "revoke", first)
    listed = orjson.loads(run(db, "users", "sessions", "ana", "--json").stdout)
    assert [s["id"] for s in listed] == [second]
    ended = orjson.loads(run(db, "users", "end-sessions", "ana", "--json").stdout)
    assert ended["ended"] == 1
    disabled = orjson.loads(run(db, "users", "disable", "ana", "--json").stdout)
    assert disabled["disabled"] is True
    run(db, "users", "update", "ana", "--role", "boss", ok=False)
    run(db, "sessions", "revoke", "ses_nope", ok=False)
