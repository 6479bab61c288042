"""The fuzz target (tests/fuzz/auth_target.py): its corpus replayed in-process, then
atheris for KEYSTILE_FUZZ_SECONDS (60 by default) in a subprocess. See docs/fuzzing.md."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import unavailable

from .auth_target import TestOneInput

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"
SECONDS = int(os.environ.get("KEYSTILE_FUZZ_SECONDS", "60"))


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.iterdir()))
def test_the_corpus_replays(name: str) -> None:
    """Every committed input, through the target without atheris: a fast regression check."""
    TestOneInput((CORPUS / name).read_bytes())


def test_the_corpus_stays_small() -> None:
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 200_000


@pytest.mark.timeout(SECONDS + 120)
def test_atheris_finds_nothing(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        unavailable("atheris is not installed (pip install -e '.[test]')")
    found = tmp_path / "found"  # new inputs the fuzzer keeps; the committed corpus is read only
    crashes = tmp_path / "crashes"
    found.mkdir()
    crashes.mkdir()
    command = [sys.executable, "-m", "tests.fuzz.auth_target", f"-max_total_time={SECONDS}",
               "-timeout=10", "-rss_limit_mb=2048", "-max_len=8192", "-print_final_stats=1",
               f"-dict={HERE / 'auth.dict'}", f"-artifact_prefix={crashes}/",
               str(found), str(CORPUS)]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, errors="replace",
                         timeout=SECONDS + 90, check=False)  # fmt: skip
    found_inputs = sorted(crashes.iterdir())
    if run.returncode != 0 or found_inputs:
        shown = "\n".join(f"{p.name}: {p.read_bytes()!r}" for p in found_inputs)
        pytest.fail(f"the fuzzer failed (exit {run.returncode}); inputs:\n{shown or '(none)'}\n"
                    f"replay: python -m tests.fuzz.auth_target <file>\n"
                    f"output (tail):\n{run.stderr[-6000:]}")  # fmt: skip
    assert "Done" in run.stderr or "stat::number_of_executed_units" in run.stderr, run.stderr
