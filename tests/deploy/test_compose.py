"""deploy/compose/: three keystile replicas behind nginx, checked without an engine.

The compose file is parsed and its references followed; nginx.conf goes through
the real ``nginx -t`` with the service names made local; ``docker compose
config`` (Compose's own validation, no engine needed) runs where the docker CLI
has the compose plugin, and is skipped otherwise, also in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import DEPLOY, binary, run, yamllint
from tests.e2e.harness import ROOT

COMPOSE = DEPLOY / "compose"
ENV = {"POSTGRES_PASSWORD": "p", "KEYSTILE_PEPPER": "0123456789abcdef", "KEYSTILE_ADMIN_KEY": "a"}


def services() -> dict[str, dict[str, object]]:
    services: dict[str, dict[str, object]] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())[
        "services"
    ]
    return services


def test_yamllint_is_clean() -> None:
    yamllint(COMPOSE / "compose.yaml")


def test_three_keystile_replicas_share_postgres_and_redis() -> None:
    found = services()
    replicas = sorted(name for name in found if name.startswith("keystile-"))
    assert replicas == ["keystile-1", "keystile-2", "keystile-3"]
    for name in replicas:
        env = found[name]["environment"]
        assert isinstance(env, dict)
        assert (
            env["KEYSTILE_DB"].startswith("postgresql://")
            and "@postgres:5432/" in env["KEYSTILE_DB"]
        )
        assert env["KEYSTILE_REDIS_URL"] == "redis://redis:6379/0"
        assert found[name]["read_only"] is True
    assert {"nginx", "postgres", "redis", "upstream"} <= set(found)


def test_every_referenced_file_exists() -> None:
    found = services()
    build = found["keystile-1"]["build"]
    assert isinstance(build, dict) and (COMPOSE / build["context"] / "Dockerfile").is_file()
    for service in found.values():
        for volume in service.get("volumes", []):  # type: ignore[attr-defined]
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).is_file(), volume


def test_nginx_round_robins_over_the_replicas() -> None:
    conf = (COMPOSE / "nginx.conf").read_text()
    upstream = re.search(r"upstream keystile \{(.*?)\}", conf, re.S)
    assert upstream is not None
    servers = re.findall(r"server (\S+):8700", upstream.group(1))
    assert servers == sorted(n for n in services() if n.startswith("keystile-"))
    assert not re.search(r"\b(hash|ip_hash|least_conn|random)\b", upstream.group(1))


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    """nginx -t on the config, the snippets it includes being the shipped ones."""
    conf = (COMPOSE / "nginx.conf").read_text()
    conf = re.sub(r"keystile-\d:8700", "127.0.0.1:8700", conf).replace(
        "upstream:9000", "127.0.0.1:9000"
    )
    conf = conf.replace("/etc/nginx/", f"{ROOT / 'nginx'}/").replace("/tmp/nginx.pid", "nginx.pid")
    (tmp_path / "nginx.conf").write_text(conf)
    run(binary("nginx"), "-t", "-p", str(tmp_path), "-c", "nginx.conf", "-e", "stderr")


def test_docker_compose_config_accepts_it() -> None:
    docker = shutil.which("docker")
    plugin = (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    )
    if not plugin:
        pytest.skip("docker compose is not available (the docker CLI with its compose plugin)")
    assert docker is not None
    env = {**os.environ, **ENV}
    done = subprocess.run([docker, "compose", "-f", "compose.yaml", "config", "--quiet"],
                          cwd=COMPOSE, env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
