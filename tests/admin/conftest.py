from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from keystile.server import make_app
from tests.admin.helpers import admin_settings


@pytest.fixture
async def api(aiohttp_client, tmp_path: Path, db_location: Path | str) -> TestClient:  # type: ignore[no-untyped-def]
    """The whole app (auth path and admin API) on a real SQLite file, or a real
    PostgreSQL schema in modules with ``BACKENDS = BOTH``."""
    return await aiohttp_client(make_app(admin_settings(tmp_path, db_location)))
