"""The Dockerfile: hadolint-clean, multi-stage, non-root, healthy on /healthz.

No Docker engine runs where the tests do, so the image is not built here:
hadolint reads the file, and the assertions below check what a build would use.
"""

from __future__ import annotations

import re
import tomllib

from tests.deploy.tools import binary, run
from tests.e2e.harness import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and line[0] != "#")
    ]


def test_hadolint_finds_nothing() -> None:
    run(binary("hadolint"), "--failure-threshold", "info", str(DOCKERFILE))


def test_a_wheel_is_built_in_one_stage_and_installed_in_a_slim_one() -> None:
    steps = instructions()
    stages = [args for name, args in steps if name == "FROM"]
    assert len(stages) == 2 and stages[0].endswith(" AS build"), stages
    assert all("-slim" in stage for stage in stages)
    runtime = steps[[name for name, _ in steps].index("FROM", 1) :]
    assert ("COPY", "--from=build /wheels /wheels") in runtime
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    install = next(args for name, args in runtime if name == "RUN" and "pip install" in args)
    assert f"keystile=={version}" in install and "--no-index" in install


def test_the_runtime_runs_as_a_numeric_non_root_user() -> None:
    users = [args for name, args in instructions() if name == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and not users[-1].startswith("0")


def test_defaults_port_volume_and_health_check() -> None:
    steps = dict(instructions())
    env = steps["ENV"]
    assert "KEYSTILE_LISTEN=0.0.0.0:8700" in env
    assert "KEYSTILE_DB=/var/lib/keystile/keystile.db" in env
    assert steps["VOLUME"] == "/var/lib/keystile"
    assert steps["EXPOSE"] == "8700"
    assert "http://127.0.0.1:8700/healthz" in steps["HEALTHCHECK"]
    assert "curl" not in steps["HEALTHCHECK"]  # python -c urllib: the slim image has no curl
    assert steps["ENTRYPOINT"] == '["keystile"]' and steps["CMD"] == '["serve"]'


def test_the_build_context_leaves_out_the_venv_and_databases() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "*.db"} <= set(ignored)
