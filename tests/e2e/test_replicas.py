"""Three replicas on one PostgreSQL and one Redis behind nginx round-robin, run by
deploy/compose/native.py (compose.yaml's topology, natively): a key revoked
through one replica is refused by every replica within a second, even when
their listening connections are killed; a rate limit holds across them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.backends import postgres_schema_sync
from tests.e2e.harness import KEYSTILE, ROOT, find_binary, free_port, request, stop_process
from tests.redis_server import delete_prefix, redis_url, unique_prefix
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

ADMIN = "admin-" + uuid.uuid4().hex
CONFIG = """
[[routes]]
name = "api"
path = "/v1/*"
scopes = ["chat"]
"""
TRIALS = 20
BOUND = 1.0  # seconds: a revocation reaches every replica within this, at p100


@dataclass
class Topology:
    nginx: int
    replicas: list[int]
    env: dict[str, str]
    schema_url: str
    run_dir: Path

    def keystile(self, *args: str) -> str:
        done = subprocess.run([str(KEYSTILE), *args], env=self.env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def create_key(self, *extra: str) -> tuple[str, str]:
        made = json.loads(self.keystile("keys", "create", "--name", "k", "--scope", "chat",
                                        *extra, "--json"))  # fmt: skip
        return made["id"], made["key"]

    def revoke_through(self, replica: int, key_id: str) -> None:
        headers = [("Authorization", f"Bearer {ADMIN}"), ("Content-Length", "0")]
        reply = request(replica, "POST", f"/api/v1/keys/{key_id}/revoke", headers)
        assert reply.status == 200, reply.text()


def ask(port: int, key: str) -> int:
    """keystile's own answer, asked the way nginx asks it."""
    return request(port, "GET", "/auth/nginx", [("Authorization", f"Bearer {key}"),
                   ("X-Original-URI", "/v1/chat"), ("X-Original-Method", "GET"),
                   ("X-Real-IP", "192.0.2.9")]).status  # fmt: skip


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    find_binary("nginx")
    redis = redis_url()
    prefix = unique_prefix()
    workdir = tmp_path_factory.mktemp("replicas")
    config = workdir / "keystile.toml"
    config.write_text(CONFIG)
    with postgres_schema_sync() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
        env.update(KEYSTILE_DB=url, KEYSTILE_REDIS_URL=redis, KEYSTILE_CONFIG=str(config),
                   KEYSTILE_REDIS_PREFIX=prefix, KEYSTILE_ADMIN_KEY=ADMIN,
                   KEYSTILE_PEPPER="pepper-" + uuid.uuid4().hex,
                   PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}:/usr/sbin",
                   )  # fmt: skip
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "deploy" / "compose" / "native.py"), "--db", url,
             "--redis", redis, "--listen", str(port), "--config", str(config),
             "--run-dir", str(workdir / "run")],
            env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, f"native.py exited with {proc.wait()}"
            started = json.loads(line)
            replicas = [int(address.rpartition(":")[2]) for address in started["replicas"]]
            yield Topology(port, replicas, env, url, workdir / "run")
        finally:
            stop_process(proc, signal.SIGTERM)  # type: ignore[arg-type]
            if proc.stdout is not None:
                proc.stdout.close()
            asyncio.run(delete_prefix(redis, prefix))


class Load:
    """Steady traffic through nginx with another key while the trials run."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.stop = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(4)]

    def _run(self) -> None:
        while not self.stop.is_set():
            status = request(self.port, "GET", "/v1/chat",
                             [("Authorization", f"Bearer {self.key}")]).status  # fmt: skip
            self.statuses[status] += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def refused_everywhere_after(topology: Topology, key_id: str, key: str, through: int) -> float:
    """Revoke through replica ``through``; seconds until every replica refuses."""
    for port in topology.replicas:
        assert ask(port, key) == 200  # cached on every replica
    started = time.monotonic()
    topology.revoke_through(topology.replicas[through], key_id)
    pending = set(topology.replicas)
    while pending:
        pending = {port for port in pending if ask(port, key) != 401}
        assert time.monotonic() - started < 10, f"still allowed on {pending}"
    return time.monotonic() - started


def test_a_revocation_reaches_every_replica_within_a_second_under_load(
    topology: Topology,
) -> None:
    _, busy = topology.create_key()
    took = []
    with Load(topology.nginx, busy) as load:
        for trial in range(TRIALS):
            key_id, key = topology.create_key()
            took.append(refused_everywhere_after(topology, key_id, key, trial % 3))
    assert load.statuses[200] > 100 and set(load.statuses) == {200}, load.statuses
    print(
        f"revocation, {TRIALS} trials: median {statistics.median(took) * 1000:.0f} ms,"
        f" max {max(took) * 1000:.0f} ms"
    )
    assert max(took) < BOUND, took


async def _kill_listeners(url: str) -> int:
    schema = url.rpartition("search_path=")[2]
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1", f"keystile-listen {schema}",
        ))  # fmt: skip
    finally:
        await conn.close()


async def _listeners(url: str) -> set[int]:
    """Server pids of the replicas' listening connections."""
    schema = url.rpartition("search_path=")[2]
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                                f"keystile-listen {schema}")  # fmt: skip
        return {int(row["pid"]) for row in rows}
    finally:
        await conn.close()


def test_killed_listening_connections_refuse_within_the_bound_and_listen_again(
    topology: Topology,
) -> None:
    killed = asyncio.run(_listeners(topology.schema_url))
    assert asyncio.run(_kill_listeners(topology.schema_url)) == 3  # one per replica
    key_id, key = topology.create_key()
    assert refused_everywhere_after(topology, key_id, key, 0) < BOUND
    # they reconnect (their first retry comes after 0.1 s): three new connections
    wait_until(lambda: asyncio.run(_listeners(topology.schema_url)),
               lambda pids: len(pids) == 3 and not pids & killed,
               what="three new listening connections")  # fmt: skip
    assert asyncio.run(_kill_listeners(topology.schema_url)) == 3
    logs = "".join(p.read_text() for p in sorted(topology.run_dir.glob("keystile-*.log")))
    assert "the connection listening for changes" in logs and "caches flushed" in logs


async def _notifications(url: str, on: bool) -> None:
    conn = await asyncpg.connect(url)
    try:
        how = "ENABLE" if on else "DISABLE"
        await conn.execute(f"ALTER TABLE key_events {how} TRIGGER key_events_notify")
    finally:
        await conn.close()


def test_without_notifications_the_poll_still_refuses_within_the_bound(
    topology: Topology,
) -> None:
    # notifications lost without any connection failing: the version poll alone
    asyncio.run(_notifications(topology.schema_url, on=False))
    try:
        took = []
        for trial in range(5):
            key_id, key = topology.create_key()
            took.append(refused_everywhere_after(topology, key_id, key, trial % 3))
    finally:
        asyncio.run(_notifications(topology.schema_url, on=True))
    print(f"revocation by poll alone: max {max(took) * 1000:.0f} ms")
    assert max(took) < BOUND, took


def test_a_rate_limit_holds_across_replicas(topology: Topology) -> None:
    limit = 300
    _, key = topology.create_key("--limit", f"per_minute={limit}")

    def one(_: int) -> int:
        return request(topology.nginx, "GET", "/v1/chat",
                       [("Authorization", f"Bearer {key}")]).status  # fmt: skip

    with ThreadPoolExecutor(max_workers=200) as pool:
        statuses = Counter(pool.map(one, range(1000)))
    print(f"per_minute={limit} over 3 replicas, 1000 requests from 200 clients: {statuses}")
    assert set(statuses) <= {200, 429}, statuses
    assert limit <= statuses[200] <= limit * 1.01, statuses
