from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from keystile import config
from keystile.core.keys import Hasher
from keystile.manage.service import KeyService
from keystile.store import Store
from tests.backends import postgres_schema

# The test run's own switches, not keystile settings: CI makes missing tools fail
# instead of skip; tests/e2e/browser.py copies screenshots to a folder; the Redis
# the shared-limits tests use (tests/redis_server.py); the PostgreSQL server of
# tests/backends.py.
TEST_SETTINGS = frozenset({"KEYSTILE_E2E_REQUIRED", "KEYSTILE_SCREENSHOTS",
                           "KEYSTILE_TEST_POSTGRES_URL", "KEYSTILE_TEST_REDIS_URL"})  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's KEYSTILE_* settings or home folder."""
    import os

    for name in list(os.environ):
        if name.startswith("KEYSTILE_") and name not in TEST_SETTINGS:
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "keystile.db"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module with ``BACKENDS = BOTH`` (tests/backends.py) runs its store tests
    on SQLite and on PostgreSQL."""
    backends = getattr(metafunc.module, "BACKENDS", None)
    if backends and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
async def db_location(backend: str, db_path: Path) -> AsyncIterator[Path | str]:
    """Where the test's store lives: an SQLite file, or a PostgreSQL schema of its own."""
    if backend == "sqlite":
        yield db_path
        return
    async with postgres_schema() as url:
        yield url


@pytest.fixture
async def store(db_location: Path | str) -> AsyncIterator[Store]:
    async with await Store.open(db_location) as opened:
        yield opened


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(store: Store, clock: Clock) -> KeyService:
    return KeyService(store, Hasher(), "ks", clock=clock)


UPSTREAM_SECRET = "sk-up-secret"
SERVER_CONFIG = """
[[routes]]
name = "chat"
path = "/v1/chat/*"
scopes = ["chat"]
[routes.inject]
Authorization = { env = "UPSTREAM", format = "Bearer {}" }
"""


@pytest.fixture
def settings(tmp_path: Path, db_path: Path) -> config.Settings:
    """A server whose one route needs scope ``chat`` and injects UPSTREAM_SECRET."""
    toml = tmp_path / "keystile.toml"
    toml.write_text(SERVER_CONFIG)
    env = {"KEYSTILE_DB": str(db_path), "KEYSTILE_CONFIG": str(toml), "UPSTREAM": UPSTREAM_SECRET}
    return config.load(env)


@pytest.fixture
async def key(db_path: Path) -> str:
    """A stored key with scope ``chat``."""
    async with await Store.open(db_path) as store:
        return (await KeyService(store, Hasher()).create("svc", scopes=["chat"])).key


class CountingHeaders:
    """Headers that count getall calls; iterating them fails when no names are given
    (a check that must not scan the headers)."""

    def __init__(self, names: list[str] | None = None) -> None:
        self.names = names
        self.getalls = 0

    def get(self, key: str, /) -> str | None:
        raise AssertionError("not used")

    def getall(self, key: str, default: list[str], /) -> list[str]:
        self.getalls += 1
        return default

    def __iter__(self) -> Iterator[str]:
        if self.names is None:
            raise AssertionError("headers are not scanned")
        return iter(self.names)
