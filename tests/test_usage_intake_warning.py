"""The trap of token budgets with no proxy reporting usage: every budgeted key is
refused once its reservations fill the budget, silently. ``serve`` warns at start
when budgets exist and nothing listens; ``config check`` says where reports arrive."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson

from tests.e2e.harness import KEYSTILE, Keystile, free_port

WARNING = "Token budgets are set, but no proxy intake is listening"


def check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KEYSTILE, "config", "check", *env.pop("ARGS", "").split()],
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "KEYSTILE_DB": str(tmp_path / "k.db"), **env},
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip


def test_config_check_says_no_intake_listens(tmp_path: Path) -> None:
    out = check(tmp_path).stdout
    assert "Token usage reports: no proxy intake is listening" in out
    assert "usage.syslog_listen" in out and "server.grpc_listen" in out


def test_config_check_names_each_intake(tmp_path: Path) -> None:
    out = check(tmp_path, KEYSTILE_USAGE_SYSLOG_LISTEN="127.0.0.1:5514",
                KEYSTILE_GRPC_LISTEN="127.0.0.1:9001").stdout  # fmt: skip
    assert "nginx's usage lines on udp 127.0.0.1:5514" in out
    assert "Envoy's access-log service on 127.0.0.1:9001" in out
    data = orjson.loads(check(tmp_path, ARGS="--json",
                              KEYSTILE_USAGE_SYSLOG_LISTEN="127.0.0.1:5514").stdout)  # fmt: skip
    assert len(data["usage_intake"]["receivers"]) == 1


def serve_log(tmp_path: Path, limit: str, **env: str) -> str:
    tmp_path.mkdir(exist_ok=True)
    keystile = Keystile(tmp_path, {"KEYSTILE_DB": str(tmp_path / "k.db"), **env})
    keystile.cli("keys", "create", "--name", "b", "--limit", limit)
    keystile.start()
    keystile.stop()
    return keystile.log()


def test_serve_warns_of_budgets_with_no_intake(tmp_path: Path) -> None:
    log = serve_log(tmp_path, "tokens_per_day=1000")
    line = next(line for line in log.splitlines() if WARNING in line)
    assert orjson.loads(line)["level"] == "warning"


def test_serve_is_quiet_without_budgets_or_with_an_intake(tmp_path: Path) -> None:
    assert WARNING not in serve_log(tmp_path / "a", "per_minute=10")
    syslog = f"127.0.0.1:{free_port()}"
    assert WARNING not in serve_log(tmp_path / "b", "tokens_per_day=1000",
                                    KEYSTILE_USAGE_SYSLOG_LISTEN=syslog)  # fmt: skip
