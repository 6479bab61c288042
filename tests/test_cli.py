"""The CLI through the real console script, against a real SQLite file."""

import hashlib
import os
import re
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
def run(db_path: Path, tmp_path: Path):
    def run(*args: str, ok: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
        full_env.update({"KEYSTILE_DB": str(db_path), "XDG_DATA_HOME": str(tmp_path), **env})
        create = [] if args and args[0] == "--no-create" else ["--create-store"]
        args = args[1:] if not create else args
        done = subprocess.run(
            [str(SCRIPT), *create, *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=60,
        )
        if ok:
            assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr + done.stdout
        return done

    return run


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return orjson.loads(done.stdout)


def test_console_script_is_installed() -> None:
    assert SCRIPT.exists(), "install keystile (pip install -e .) to get the console script"


def test_create_prints_the_key_once_and_list_never_shows_it(run, db_path: Path) -> None:
    created = run("keys", "create", "--name", "ci bot", "--scope", "chat", "--expires-in", "30d",
                  "--metadata", "team=ml")  # fmt: skip
    key = re.search(r"\bks_[0-9A-Za-z]{49}\b", created.stdout).group(0)
    assert "Save it now" in created.stdout
    listed = run("keys", "list").stdout + run("keys", "list", "--json", "--all").stdout
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert "ci bot" in listed
    assert key not in listed and key[3:] not in listed and digest not in listed
    (entry,) = as_json(run("keys", "list", "--json"))
    assert entry["scopes"] == ["chat"] and entry["metadata"] == {"team": "ml"}
    assert "key_hash" not in entry and "key" not in entry
    shown = run("keys", "show", entry["id"], "--json")
    assert key not in shown.stdout and digest not in shown.stdout
    assert as_json(shown)["state"] == "active"
    with closing(sqlite3.connect(db_path)) as conn, conn:
        assert conn.execute("SELECT key_hash FROM keys").fetchone()[0] == digest


def test_json_create_rotate_revoke_delete_flow(run) -> None:
    created = as_json(run("keys", "create", "--name", "svc", "--json"))
    key_id = created["id"]
    assert created["key"].startswith(created["display_prefix"])
    updated = as_json(run("keys", "update", key_id, "--add-scope", "memory", "--scope", "chat",
                          "--owner", "ana", "--json"))  # fmt: skip
    assert updated["scopes"] == ["chat", "memory"] and updated["owner"] == "ana"
    rotated = as_json(run("keys", "rotate", key_id, "--grace", "24h", "--json"))
    assert rotated["key"] != created["key"]
    assert rotated["rotated_from"] == key_id and rotated["old"]["replaced_by"] == rotated["id"]
    assert rotated["scopes"] == ["chat", "memory"] and rotated["old"]["expires_at"] is not None
    revoked = as_json(run("keys", "revoke", rotated["id"], "--json"))
    assert revoked["state"] == "revoked" and revoked["revoked_at"]
    deleted = as_json(run("keys", "delete", key_id, "--json"))
    assert deleted["state"] == "deleted"
    assert as_json(run("keys", "list", "--json")) == []
    states = {k["id"]: k["state"] for k in as_json(run("keys", "list", "--all", "--json"))}
    assert states == {key_id: "deleted", rotated["id"]: "revoked"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["keys", "create", "--name", "x", "--expires-in", "3x"], "--expires-in: '3x'"),
        (["keys", "create", "--name", "x", "--expires-at", "soon"], "--expires-at: 'soon'"),
        (["keys", "create", "--name", "x", "--scope", "Bad Scope"], "'Bad Scope'"),
        (["keys", "create", "--name", "x", "--metadata", "novalue"], "--metadata: 'novalue'"),
        (["keys", "create", "--name", ""], "name"),
        (["keys", "create"], "--name"),
        (["keys", "show", "key_doesnotexist"], "key_doesnotexist"),
        (["keys", "rotate", "key_doesnotexist", "--grace", "1y"], "--grace: '1y'"),
        (["keys", "frobnicate"], "frobnicate"),
        (["keys", "import", "/nonexistent/legacy.db"], "/nonexistent/legacy.db"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(run, args: list[str], needle: str) -> None:
    done = run(*args, ok=False)
    assert done.returncode != 0
    assert needle in done.stderr


def test_bad_environment_is_reported_not_raised(run) -> None:
    done = run("keys", "list", ok=False, KEYSTILE_KEY_PREFIX="Nope!")
    assert done.returncode == 2 and "KEYSTILE_KEY_PREFIX='Nope!'" in done.stderr
    done = run("keys", "list", ok=False, KEYSTILE_DB="/proc/forbidden/keystile.db")
    assert done.returncode == 1 and "key store" in done.stderr


def test_config_check_shows_settings_without_secrets(run) -> None:
    done = run("config", "check", KEYSTILE_PEPPER="super-secret-pepper-value",
               KEYSTILE_STATIC_KEYS="static-one,static-two")  # fmt: skip
    assert "Configuration is valid" in done.stdout
    assert "super-secret-pepper-value" not in done.stdout and "static-one" not in done.stdout
    data = as_json(run("config", "check", "--json"))
    assert data["settings"]["KEYSTILE_LISTEN"] == "127.0.0.1:8700"
    assert "OpenID Connect sign-in: off (not configured)" in done.stdout


def test_config_check_says_whether_oidc_is_on(run) -> None:
    half = run("config", "check", KEYSTILE_OIDC_ISSUER="https://accounts.google.com",
               KEYSTILE_OIDC_CLIENT_ID="123.apps.googleusercontent.com")  # fmt: skip
    assert ("off (missing: KEYSTILE_OIDC_CLIENT_SECRET, KEYSTILE_OIDC_EXTERNAL_URL)"
            in half.stdout)  # fmt: skip
    on = run("config", "check", KEYSTILE_OIDC_ISSUER="https://accounts.google.com",
             KEYSTILE_OIDC_CLIENT_ID="123.apps.googleusercontent.com",
             KEYSTILE_OIDC_CLIENT_SECRET="GOCSPX-secret-value",
             KEYSTILE_OIDC_EXTERNAL_URL="https://app.example.com")  # fmt: skip
    assert "redirect URI https://app.example.com/_keystile/oidc/callback" in on.stdout
    assert "GOCSPX-secret-value" not in on.stdout


def test_config_check_lists_routes_but_never_injected_values(run, tmp_path: Path) -> None:
    toml = tmp_path / "k.toml"
    toml.write_text(
        '[[routes]]\nname = "chat"\npath = "/v1/chat/*"\nscopes = ["chat"]\n'
        '[routes.inject]\nAuthorization = { env = "UP", format = "Bearer {}" }\n'
    )
    done = run("config", "check", KEYSTILE_CONFIG=str(toml), UP="sk-never-shown")
    assert "chat" in done.stdout and "Authorization" in done.stdout
    assert "sk-never-shown" not in done.stdout
    data = as_json(run("config", "check", "--json", KEYSTILE_CONFIG=str(toml), UP="sk-never"))
    assert data["routes"][0]["inject"] == ["Authorization"]
    missing = run("config", "check", ok=False, KEYSTILE_CONFIG=str(toml))
    assert missing.returncode == 2 and "'UP' is not set" in missing.stderr


def test_import_through_the_cli(run, tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.db"
    with closing(sqlite3.connect(legacy)) as conn, conn:
        conn.execute("CREATE TABLE api_keys (key_hash TEXT, name TEXT, scopes TEXT)")
        conn.execute("INSERT INTO api_keys VALUES (?, 'old gateway', 'chat')",
                     (hashlib.sha256(b"legacy-key-000000001").hexdigest(),))  # fmt: skip
    done = as_json(run("keys", "import", str(legacy), "--json"))
    assert done == {"read": 1, "imported": 1, "skipped": 0}
    (entry,) = as_json(run("keys", "list", "--json"))
    assert entry["origin"] == "imported" and entry["name"] == "old gateway"


def test_python_dash_m_works(db_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "keystile", "--version"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert done.stdout.startswith("keystile ")


def test_team_user_group_rotate_expire_delete_flow_with_audit(run, tmp_path: Path) -> None:
    toml = tmp_path / "k.toml"
    toml.write_text(
        '[[routes]]\nname = "chat"\npath = "/v1/chat/*"\nscopes = ["chat"]\n'
        '[[routes]]\nname = "images"\npath = "/v1/images/*"\nscopes = ["images"]\n'
    )
    env = {"KEYSTILE_CONFIG": str(toml)}
    team = as_json(run("teams", "create", "ml", "--limit", "per_minute=60", "--json", **env))
    user = as_json(run("users", "create", "ana@example.com", "--team", team["id"], "--json"))
    key = as_json(
        run("keys", "create", "--name", "bot", "--user", user["id"], "--scope", "chat",
            "--allowed-ip", "10.0.0.0/8", "--limit", "per_hour=100", "--json")
    )  # fmt: skip
    assert key["owner"] == "ana@example.com" and key["allowed_ips"] == ["10.0.0.0/8"]
    assert key["limits"] == {"per_hour": 100}
    group = as_json(run("groups", "create", "artists", "--scope", "images", "--json"))
    run("groups", "add-key", group["id"], key["id"])
    shown = as_json(run("keys", "show", key["id"], "--json", **env))
    assert shown["groups"] == ["artists"]
    assert {r["name"]: r["via"] for r in shown["routes"]} == {
        "chat": {"chat": ["key"]}, "images": {"images": ["group:artists"]}}  # fmt: skip
    assert "group:artists" in run("keys", "show", key["id"], **env).stdout
    rotated = as_json(run("keys", "rotate", key["id"], "--grace", "1h", "--json"))
    assert rotated["groups"] == ["artists"]
    assert as_json(run("keys", "expire", key["id"], "--json"))["state"] == "expired"
    assert as_json(run("keys", "delete", rotated["id"], "--json"))["state"] == "deleted"
    actions = [e["action"] for e in as_json(run("audit", "list", "--json"))]
    for action in ("team.create", "user.create", "key.create", "group.create", "group.add_key",
                   "key.rotate", "key.expire", "key.delete"):  # fmt: skip
        assert action in actions, action
    listing = run("audit", "list", "--target", key["id"]).stdout
    assert "key.expire" in listing and key["key"] not in listing
    assert [t["name"] for t in as_json(run("teams", "list", "--json"))] == ["ml"]
    assert as_json(run("users", "list", "--team", team["id"], "--json"))[0]["id"] == user["id"]


def test_cli_errors_for_accounts(run) -> None:
    done = run("users", "create", "x", "--team", "team_missing", ok=False)
    assert done.returncode == 1 and "team_missing" in done.stderr
    done = run("groups", "create", "Bad Name", ok=False)
    assert done.returncode == 2 and "'Bad Name'" in done.stderr
    done = run("keys", "create", "--name", "x", "--limit", "per_minute=lots", ok=False)
    assert done.returncode == 2 and "per_minute=lots" in done.stderr


def test_explain_and_usage(run, tmp_path: Path) -> None:
    toml = tmp_path / "k.toml"
    toml.write_text('[[routes]]\nname = "chat"\npath = "/v1/chat/*"\nscopes = ["chat"]\n')
    env = {"KEYSTILE_CONFIG": str(toml)}
    key = as_json(run("keys", "create", "--name", "office", "--scope", "memory",
                      "--allowed-ip", "10.0.0.0/8", "--json"))  # fmt: skip
    outside = as_json(run("explain", key["id"], "/v1/chat/x", "--ip", "8.8.8.8", "--json", **env))
    assert (outside["allowed"], outside["reason"]) == (False, "ip_not_allowed")
    inside = run("explain", key["id"], "/v1/chat/x", "--ip", "10.0.0.1", **env).stdout
    assert "DENY (insufficient_scope, missing_scope)" in inside and "required_scopes" in inside
    assert as_json(run("usage", key["id"], "--json"))["allowed"] == 0
    assert "0 allowed" in run("usage", key["id"]).stdout


def test_the_cli_reads_the_server_config_without_its_secrets(run, tmp_path: Path) -> None:
    """Commands other than serve follow the server's routes, and need not hold the
    secrets the server injects; without routes, explain says so."""
    toml = tmp_path / "server.toml"
    toml.write_text('[[routes]]\nname = "chat"\npath = "/v1/chat/*"\nscopes = ["chat"]\n'
                    '[routes.inject]\nAuthorization = { env = "NOT_SET_HERE" }\n')  # fmt: skip
    made = as_json(run("keys", "create", "--json", "--name", "k", "--scope", "chat",
                       KEYSTILE_CONFIG=str(toml)))  # fmt: skip
    explained = as_json(run("explain", made["id"], "/v1/models", "--json",
                            KEYSTILE_CONFIG=str(toml)))  # fmt: skip
    assert explained["allowed"] is False and explained["reason"] == "route_not_allowed"
    assert as_json(run("explain", made["id"], "/v1/chat/x", "--json",
                       KEYSTILE_CONFIG=str(toml)))["allowed"]  # fmt: skip
    bare = run("explain", made["id"], "/v1/models")
    assert "no routes loaded" in bare.stderr
    # serve and config check still need the secrets
    check = run("config", "check", ok=False, KEYSTILE_CONFIG=str(toml))
    assert check.returncode != 0 and "NOT_SET_HERE" in check.stderr


def test_commands_other_than_serve_never_create_a_store_silently(run, db_path: Path) -> None:
    refused = run("--no-create", "keys", "list", ok=False)
    assert refused.returncode == 1 and "no key store at" in refused.stderr
    assert "--create-store" in refused.stderr and not db_path.exists()
    run("keys", "list")  # with --create-store (the fixture's default)
    assert db_path.exists()
    assert run("--no-create", "keys", "list").returncode == 0  # it exists now


def test_serve_help_lists_what_a_first_run_needs() -> None:
    from keystile.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["serve"].format_help()  # type: ignore[index]
    for name in ("KEYSTILE_LISTEN", "KEYSTILE_DB", "KEYSTILE_CONFIG", "KEYSTILE_WORKERS",
                 "docs/configuration.md", "config check --connect"):  # fmt: skip
        assert name in text, name
