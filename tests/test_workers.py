"""``keystile serve --workers 2`` as users run it: the real command, real processes."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keystile.serve.workers import STARTUP
from tests.e2e.harness import KEYSTILE, Keystile, free_port
from tests.waiting import wait_until


def children(pid: int) -> set[int]:
    """Live (not zombie) child processes of ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, ppid = (entry / "stat").read_text().rpartition(")")[2].split()[:2]
            except (OSError, ValueError):
                continue
            if int(ppid) == pid and state != "Z":
                found.add(int(entry.name))
    return found


def ask(port: int, key: str) -> tuple[int, str]:
    """One request on a fresh connection, so the kernel may pick any worker."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/auth/nginx", headers={"X-Original-URI": "/v1/x",
                                                         "X-Api-Key": key})  # fmt: skip
        response = connection.getresponse()
        response.read()
        return response.status, response.headers.get("X-Keystile-Reason", "")
    finally:
        connection.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Keystile]:
    keystile = Keystile(tmp_path, {"KEYSTILE_DB": str(tmp_path / "k.db"), "KEYSTILE_WORKERS": "2"})
    keystile.start()
    yield keystile
    keystile.stop()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_two_workers_stay_coherent_and_are_replaced(served: Keystile) -> None:
    assert served.proc is not None
    parent, started = served.proc.pid, time.monotonic()
    deadline = started + 10
    while len(children(parent)) != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = children(parent)
    assert len(workers) == 2, served.log()
    key = orjson.loads(served.cli("keys", "create", "--name", "w", "--json").stdout)
    assert all(ask(served.port, key["key"])[0] == 200 for _ in range(40))  # both caches warm

    served.cli("keys", "revoke", key["id"])
    revoked = time.monotonic()

    def answers() -> set[tuple[int, str]]:
        return {ask(served.port, key["key"]) for _ in range(40)}  # both workers asked

    def refused_everywhere(seen: set[tuple[int, str]]) -> bool:
        return seen == {(401, "revoked_api_key")}

    # the promise: revoked everywhere within 2 s, measured. A round that started at
    # ``asked`` and found every answer refused shows the revocation had arrived by then.
    asked = time.monotonic()
    while not refused_everywhere(seen := answers()):
        assert time.monotonic() - revoked < 10, (seen, served.log())
        asked = time.monotonic()
    assert asked - revoked <= 2.0, f"still allowed {asked - revoked:.2f} s after the revocation"
    assert refused_everywhere(answers())  # and it stays so

    # a worker that dies within STARTUP of its start is taken for one that failed to
    # start (all stop): a wait on the clock by design, not on how fast the machine is
    time.sleep(max(0.0, started + STARTUP + 0.5 - time.monotonic()))
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while (len(children(parent)) != 2 or victim in children(parent)) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    tree = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:24,etime,cmd", "--ppid", str(parent)],
                          capture_output=True, text=True).stdout  # fmt: skip
    assert len(children(parent)) == 2 and victim not in children(parent), (tree, served.log())
    other = orjson.loads(served.cli("keys", "create", "--name", "x", "--json").stdout)["key"]
    assert all(ask(served.port, other)[0] == 200 for _ in range(20))
    assert "worker 0" in served.log() or "worker 1" in served.log()

    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=15) == 0
    assert not children(parent)


@pytest.mark.parametrize(
    ("variable", "setting"),
    [("KEYSTILE_LISTEN", "listen"), ("KEYSTILE_GRPC_LISTEN", "grpc_listen")],
)
def test_a_taken_port_stops_every_worker_with_a_clear_message(
    tmp_path: Path, variable: str, setting: str
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env.update(KEYSTILE_DB=str(tmp_path / "k.db"), KEYSTILE_LISTEN=f"127.0.0.1:{free_port()}")
    env[variable] = f"127.0.0.1:{port}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        for workers in ("1", "2"):
            done = subprocess.run([str(KEYSTILE), "serve", "--workers", workers], env=env,
                                  capture_output=True, text=True, timeout=30)  # fmt: skip
            assert done.returncode != 0
            message = f"{setting} 127.0.0.1:{port}: Address already in use"
            assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
            assert "add_port.cc" not in done.stderr  # grpcio's own line, before ours


def test_workers_must_be_a_positive_number(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env["KEYSTILE_DB"] = str(tmp_path / "k.db")
    done = subprocess.run([str(KEYSTILE), "serve", "--workers", "0"], env=env,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 2 and "'0'" in done.stderr
    env["KEYSTILE_WORKERS"] = "many"
    done = subprocess.run([str(KEYSTILE), "serve"], env=env, capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 2 and "KEYSTILE_WORKERS" in done.stderr and "many" in done.stderr


def scrape(port: int) -> dict[str, float]:
    """/metrics on a fresh connection: sample name with labels -> value."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[str, float], prefix: str) -> float:
    return sum(value for name, value in samples.items() if name.startswith(prefix + "["))


def published(shared: Path, prefix: str) -> list[int]:
    """Decisions in each worker's snapshot file (``live-``: running workers' only)."""
    counts = []
    for path in sorted(shared.glob(f"{prefix}*.json")):
        try:  # renamed (live- to gone-) by the parent meanwhile: read at the next poll
            counts.append(sum(row[-1] for row in orjson.loads(path.read_bytes())["decisions"]))
        except FileNotFoundError:
            counts.append(0)
    return counts


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_metrics_are_the_sum_over_the_workers_whichever_answers(tmp_path: Path) -> None:
    env = {"KEYSTILE_DB": str(tmp_path / "k.db"), "KEYSTILE_WORKERS": "2",
           "TMPDIR": str(tmp_path)}  # fmt: skip
    served = Keystile(tmp_path, env)
    key = orjson.loads(served.cli("keys", "create", "--name", "m", "--json").stdout)["key"]
    served.start()
    try:
        assert served.proc is not None
        started, parent = time.monotonic(), served.proc.pid
        while len(children(parent)) != 2 and time.monotonic() < started + 10:
            time.sleep(0.1)
        allowed = sum(ask(served.port, key)[0] == 200 for _ in range(150))
        denied = sum(ask(served.port, "ks_wrong")[0] == 401 for _ in range(50))
        assert (allowed, denied) == (150, 50)
        (shared,) = tmp_path.glob("keystile-metrics-*")
        # each worker publishes every PUBLISH_INTERVAL: until both files hold all 200
        served_by = wait_until(lambda: published(shared, "live-"), lambda by: sum(by) == 200,
                               what="the workers' files to hold all 200 decisions")  # fmt: skip
        assert len(served_by) == 2 and all(served_by), served_by  # both workers answered
        last = 0.0
        for _ in range(12):  # fresh connections: either worker answers each scrape
            samples = scrape(served.port)
            decided = total(samples, "keystile_decisions_total")
            assert decided == 200, samples
            assert total(samples, "keystile_decision_seconds_count") == 200
            assert samples["keystile_decisions_total" + str(sorted(
                {"adapter": "nginx", "outcome": "allow", "reason": "", "detail": ""}.items()
            ))] == 150  # fmt: skip
            lookups = total(samples, "keystile_cache_lookups_total")  # the valid key's
            assert lookups >= 150 and lookups == (last or lookups)
            last = lookups

        time.sleep(max(0.0, started + STARTUP + 0.5 - time.monotonic()))  # past the start-up window
        victim = min(children(parent))
        os.kill(victim, signal.SIGKILL)  # its counts stay in the sum: no counter reset
        deadline = time.monotonic() + 20
        while (len(children(parent)) != 2 or victim in children(parent)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert (shared / f"gone-{victim}.json").exists(), served.log()
        assert ask(served.port, key)[0] == 200
        # whichever worker answered publishes it within PUBLISH_INTERVAL
        wait_until(lambda: published(shared, ""), lambda by: sum(by) == 201,
                   what="the files (the dead worker's kept) to hold all 201 decisions")  # fmt: skip
        for _ in range(6):
            assert total(scrape(served.port), "keystile_decisions_total") == 201
    finally:
        served.stop()
    assert not shared.exists()  # the parent removes the directory at exit
