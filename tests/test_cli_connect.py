"""``keystile config check --connect``: each item tried for real (an SQLite file,
PostgreSQL, Redis, an OpenID provider, the listening ports), ok or what is wrong
and what to do."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from keystile import config
from keystile.cli.connect import connect_all
from tests.backends import POSTGRES, _admin, in_schema
from tests.e2e.harness import KEYSTILE
from tests.test_oidc import FakeIdP, idp

from .redis_server import closed_port, redis_url

__all__ = ["idp"]  # the fixture, used by name


def check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``keystile [--create-store] config check --connect [--json]``."""
    first = [arg for arg in args if arg == "--create-store"]
    last = [arg for arg in args if arg != "--create-store"]
    return subprocess.run([str(KEYSTILE), *first, "config", "check", "--connect", *last],
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "XDG_DATA_HOME": str(tmp_path), **env},
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_a_fresh_machine_is_told_to_start_serve_once(tmp_path: Path) -> None:
    done = check(tmp_path)
    assert done.returncode == 1, done.stdout
    assert "FAIL store: no SQLite store at" in done.stdout
    assert "start `keystile serve` once" in done.stdout
    made = check(tmp_path, "--create-store")
    assert made.returncode == 0, made.stdout
    assert "ok   store:" in made.stdout and "Everything answers." in made.stdout


def test_redis_down_and_up(tmp_path: Path) -> None:
    db = {"KEYSTILE_DB": str(tmp_path / "k.db")}
    down = check(tmp_path, "--create-store", KEYSTILE_REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0",
                 **db)  # fmt: skip
    assert down.returncode == 1
    assert "FAIL redis:" in down.stdout and "refused (503 limits_unavailable)" in down.stdout
    up = check(tmp_path, KEYSTILE_REDIS_URL=redis_url(), **db)
    assert up.returncode == 0, up.stdout
    assert "ok   redis:" in up.stdout and "answers PING" in up.stdout


async def test_postgresql_with_and_without_its_schema() -> None:
    (await _admin()).terminate()  # skips (fails in CI) without a server
    missing = config.load({"KEYSTILE_DB": in_schema(POSTGRES, "keystile_absent_schema")})
    (store, *_) = await connect_all(missing, create=False)
    assert not store.ok and 'CREATE SCHEMA "keystile_absent_schema"' in store.what
    present = config.load({"KEYSTILE_DB": POSTGRES})
    (store, *_) = await connect_all(present, create=False)
    assert store.ok, store


@pytest.fixture
async def oidc_env(idp: FakeIdP) -> AsyncIterator[dict[str, str]]:
    yield {"KEYSTILE_OIDC_ISSUER": idp.issuer, "KEYSTILE_OIDC_CLIENT_ID": "keystile",
           "KEYSTILE_OIDC_CLIENT_SECRET": "s3cret-client", "KEYSTILE_OIDC_EXTERNAL_URL":
           "http://127.0.0.1:8080"}  # fmt: skip


async def test_the_openid_provider_is_fetched(tmp_path: Path, oidc_env: dict[str, str]) -> None:
    settings = config.load({"KEYSTILE_DB": str(tmp_path / "k.db"), **oidc_env})
    found = {f.item: f for f in await connect_all(settings, create=True)}
    assert found["oidc"].ok and "signing key" in found["oidc"].what, found["oidc"]
    wrong = config.load({"KEYSTILE_DB": str(tmp_path / "k.db"), **oidc_env,
                         "KEYSTILE_OIDC_ISSUER": f"http://127.0.0.1:{closed_port()}"})  # fmt: skip
    found = {f.item: f for f in await connect_all(wrong, create=True)}
    assert not found["oidc"].ok and "oidc.issuer" in found["oidc"].fix


def test_a_taken_port_is_named_and_json_lists_every_item(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = check(tmp_path, "--create-store", "--json", KEYSTILE_LISTEN=f"127.0.0.1:{port}")
    assert done.returncode == 1
    items = {item["item"]: item for item in orjson.loads(done.stdout)["connect"]}
    assert items["store"]["ok"] and not items["listen"]["ok"]
    assert "in use" in items["listen"]["what"].lower()
