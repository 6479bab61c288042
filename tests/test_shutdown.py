"""SIGTERM under load: ``keystile serve`` stops deciding, finishes what is in
flight, then writes usage, so every request a client saw allowed is counted
exactly once."""

from __future__ import annotations

import http.client
import signal
import threading
from pathlib import Path

import orjson

from tests.e2e.harness import Keystile
from tests.waiting import wait_until

CONFIG = '[[routes]]\nname = "chat"\npath = "/v1/chat/*"\nscopes = ["chat"]\n'


def hammer(port: int, key: str, seen: list[int], stop: threading.Event) -> None:
    """Requests on one kept-alive connection until the server goes away."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {key}", "X-Original-URI": "/v1/chat/completions"}
    try:
        while not stop.is_set():
            conn.request("GET", "/auth/nginx", headers=headers)
            response = conn.getresponse()
            response.read()
            seen.append(response.status)
    except (OSError, http.client.HTTPException):
        pass  # the server closed the connection: shutting down
    finally:
        conn.close()


def test_every_allowed_request_is_counted_once_across_sigterm(tmp_path: Path) -> None:
    (tmp_path / "keystile.toml").write_text(CONFIG)
    env = {
        "KEYSTILE_DB": str(tmp_path / "k.db"),
        "KEYSTILE_CONFIG": str(tmp_path / "keystile.toml"),
    }
    keystile = Keystile(tmp_path, env)
    made = orjson.loads(keystile.cli("keys", "create", "--json", "--name", "load",
                                     "--scope", "chat").stdout)  # fmt: skip
    keystile.start()
    seen: list[list[int]] = [[] for _ in range(50)]
    stop = threading.Event()
    threads = [threading.Thread(target=hammer, args=(keystile.port, made["key"], s, stop))
               for s in seen]  # fmt: skip
    for thread in threads:
        thread.start()
    # under load: every connection has had answers, over 100 in all
    wait_until(lambda: [len(s) for s in seen], lambda n: min(n) > 0 and sum(n) > 100,
               timeout=30, what="answers on all 50 connections, over 100 in all")  # fmt: skip
    assert keystile.proc is not None
    keystile.proc.send_signal(signal.SIGTERM)
    assert keystile.proc.wait(timeout=20) == 0
    stop.set()
    for thread in threads:
        thread.join(timeout=20)
    allowed = sum(status == 200 for statuses in seen for status in statuses)
    assert allowed > 100 and all(s == 200 for statuses in seen for s in statuses)
    usage = orjson.loads(keystile.cli("usage", made["id"], "--json").stdout)
    assert usage["allowed"] == allowed
