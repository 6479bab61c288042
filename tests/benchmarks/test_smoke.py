"""The benchmark harnesses run (a few seconds each) so that they do not rot.
Figures come from the full runs: python -m tests.benchmarks.bench / .cold"""

import re
import subprocess
import sys

from tests.e2e.harness import ROOT, find_binary


def smoke(module: str) -> str:
    done = subprocess.run([sys.executable, "-m", module, "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_throughput_suite_smoke_run() -> None:
    find_binary("nginx")
    find_binary("wrk")
    find_binary("envoy")
    out = smoke("tests.benchmarks.bench")
    for proxy in ("nginx", "envoy", "envoy-grpc"):
        for scenario in ("floor", "keystile", "keystile2w"):
            assert f"{proxy}-{scenario} " in out
    assert "nginx-noauth " in out and "envoy-noauth " in out
    assert "the gRPC floor answers" in out


def test_cold_suite_smoke_run() -> None:
    find_binary("wrk")
    out = smoke("tests.benchmarks.cold")
    for row in ("cache-miss latency", "unknown-key spray", "RSS with"):
        assert row in out
    # the miss run really missed: once per distinct key it sent (a fast run goes round).
    # wrk counts completed replies; the one request in flight on its single connection
    # when the run ends reached keystile (and missed) but is not in wrk's count.
    found = re.search(r"misses: (\d+) of (\d+) distinct", out)
    assert found, out
    missed, distinct = int(found.group(1)), int(found.group(2))
    assert distinct > 0
    assert distinct <= missed <= distinct + 1
