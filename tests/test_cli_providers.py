"""Upstream credential bindings through the real console script: set and shown by
name, never by value; an unknown name is a clear error naming the field and value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .test_cli import as_json
from .test_cli import run as run  # the fixture

CONFIG = """
[credentials.team-a]
env = "UP_A"

[credentials.team-b]
env = "UP_B"

[[routes]]
name = "chat"
path = "/v1/chat/*"
[routes.inject]
Authorization = { credentials = ["team-a", "team-b"], default = "team-a" }
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    toml = tmp_path / "keystile.toml"
    toml.write_text(CONFIG)
    # the CLI (other than serve) never reads the values: they need not be set here
    return {"KEYSTILE_CONFIG": str(toml)}


def test_keys_and_teams_bind_by_name(run: Any, env: dict[str, str]) -> None:
    created = as_json(run("keys", "create", "--name", "bot", "--credential", "team-b",
                          "--json", **env))  # fmt: skip
    assert created["credential"] == "team-b"
    key_id = created["id"]
    shown = run("keys", "show", key_id, **env).stdout
    assert "credential:" in shown and "team-b" in shown
    cleared = as_json(run("keys", "update", key_id, "--no-credential", "--json", **env))
    assert cleared["credential"] is None
    again = as_json(run("keys", "update", key_id, "--credential", "team-a", "--json", **env))
    assert again["credential"] == "team-a"
    untouched = as_json(run("keys", "update", key_id, "--name", "bot2", "--json", **env))
    assert untouched["credential"] == "team-a"

    team = as_json(run("teams", "create", "ml", "--credential", "team-a", "--json", **env))
    assert team["credential"] == "team-a"
    changed = as_json(run("teams", "update", team["id"], "--credential", "team-b", "--json",
                          **env))  # fmt: skip
    assert changed["credential"] == "team-b" and changed["name"] == "ml"
    listed = run("teams", "list", **env).stdout
    assert "CREDENTIAL" in listed and "team-b" in listed
    assert as_json(run("teams", "update", team["id"], "--no-credential", "--json",
                       **env))["credential"] is None  # fmt: skip
    audit = run("audit", "list", "--json", **env).stdout
    assert "team-b" in audit  # the change is audited, by name


def test_an_unknown_name_is_refused_naming_the_field_and_value(
    run: Any, env: dict[str, str]
) -> None:
    done = run("keys", "create", "--name", "bot", "--credential", "team-z", ok=False, **env)
    assert done.returncode == 2
    assert "credential: 'team-z'" in done.stderr and "team-a, team-b" in done.stderr
    done = run("teams", "create", "ml", "--credential", "team-z", ok=False, **env)
    assert done.returncode == 2 and "credential: 'team-z'" in done.stderr
    none_configured = run("keys", "create", "--name", "b", "--credential", "x", ok=False)
    assert "none are configured" in none_configured.stderr
