from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keystile.keys import Hasher
from keystile.service import KeyService
from keystile.store import Store


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's KEYSTILE_* settings or home folder."""
    import os

    for name in list(os.environ):
        if name.startswith("KEYSTILE_") and name != "KEYSTILE_E2E_REQUIRED":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "keystile.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(db_path) as opened:
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
