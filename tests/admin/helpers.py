"""What the admin API tests share: an admin key, a config with two routes, a caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from keystile import config
from keystile.admin import PREFIX

ADMIN = "admin-key-for-tests-0123456789"
CONFIG = """
[[routes]]
name = "chat"
path = "/v1/chat/*"
scopes = ["chat"]

[[routes]]
name = "images"
path = "/v1/images/*"
scopes = ["images"]
"""


def admin_settings(tmp_path: Path, db_path: Path | str) -> config.Settings:
    toml = tmp_path / "keystile.toml"
    toml.write_text(CONFIG)
    return config.load({"KEYSTILE_DB": str(db_path), "KEYSTILE_CONFIG": str(toml),
                        "KEYSTILE_ADMIN_KEY": ADMIN})  # fmt: skip


def auth(key: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def call(client: TestClient, method: str, path: str, status: int | None = None,
               key: str = ADMIN, **kwargs: Any) -> Any:  # fmt: skip
    """The JSON answer of ``method path``; with ``status``, asserts that status."""
    response = await client.request(method, PREFIX + path, headers=auth(key), **kwargs)
    body = await response.json()
    if status is not None:
        assert response.status == status, body
    return body


async def status_of(client: TestClient, method: str, path: str, key: str = ADMIN,
                    **kwargs: Any) -> tuple[int, Any]:  # fmt: skip
    headers = {**auth(key), **kwargs.pop("headers", {})}
    response = await client.request(method, PREFIX + path, headers=headers, **kwargs)
    return response.status, await response.json()
