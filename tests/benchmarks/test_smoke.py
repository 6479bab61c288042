"""The benchmark harness runs (a few seconds) so that it does not rot.
Figures come from the full run: python -m tests.benchmarks.bench"""

import subprocess
import sys

from tests.e2e.harness import ROOT, find_binary


def test_benchmark_smoke_run() -> None:
    find_binary("nginx")
    find_binary("wrk")
    find_binary("envoy")
    done = subprocess.run([sys.executable, "-m", "tests.benchmarks.bench", "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for scenario in ("nginx-noauth", "nginx-floor", "nginx-keystile", "envoy-noauth",
                     "envoy-floor", "envoy-keystile"):  # fmt: skip
        assert scenario in done.stdout
