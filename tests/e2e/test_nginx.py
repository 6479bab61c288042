"""nginx specifics, through real nginx running the shipped config. The checks every
proxy shares are in test_proxies.py."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests import waiting
from tests.e2e.harness import (
    ROOT,
    Keystile,
    Proxy,
    Reply,
    Stack,
    Upstream,
    request,
    running_stack,
    wait_for_port,
)
from tests.e2e.test_proxies import CONFIG, UPSTREAM_SECRET, create_key


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("nginx-e2e")
    config = workdir / "keystile.toml"
    config.write_text(CONFIG)
    env = {
        "KEYSTILE_DB": str(workdir / "keystile.db"),
        "KEYSTILE_CONFIG": str(config),
        "E2E_UPSTREAM_KEY": UPSTREAM_SECRET,
    }
    yield from running_stack(workdir, env)


@pytest.fixture
def upstream(stack: Stack) -> Upstream:
    stack.upstream.seen.clear()
    return stack.upstream


@pytest.fixture(scope="module")
def chat_key(stack: Stack) -> tuple[str, str]:
    return create_key(stack.keystile, "--name", "chat client", "--scope", "chat", "--owner", "ana")


def error_of(reply: Reply) -> dict[str, str]:
    data = orjson.loads(reply.body)
    assert set(data["error"]) == {"message", "type", "code"}
    return data["error"]


def assert_no_secret(reply: Reply, *secrets: str) -> None:
    for secret in (UPSTREAM_SECRET, *secrets):
        assert secret not in reply.text()


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ([], "missing_api_key"),
        ([("Authorization", "Bearer ks_" + "A" * 49)], "invalid_api_key"),
        ([("Authorization", "Bearer not-a-key-at-all")], "invalid_api_key"),
        ([("x-api-key", "ks_short")], "invalid_api_key"),
    ],
)
def test_missing_or_invalid_key_is_401_json_and_never_forwarded(
    stack: Stack, upstream: Upstream, headers: list[tuple[str, str]], code: str
) -> None:
    reply = stack.request("POST", "/v1/chat/completions", headers, body=b"{}")
    assert reply.status == 401, reply.text()
    assert reply.header("Content-Type") == "application/json"
    assert reply.header(
        "WWW-Authenticate",
    ).startswith("Bearer")
    error = error_of(reply)
    assert error["code"] == code and error["type"] == "authentication_error"
    assert upstream.seen == []
    assert_no_secret(reply)


@pytest.mark.parametrize(
    "target",
    [
        "/v1/chat/../admin",
        "/v1/chat/%2e%2e/admin",
        "/v1/chat%2fcompletions",
        "/v1/chat/./completions",
        "/v1//chat/completions",
        "/v1/chat/%252e%252e/admin",
        "/v1/chat/x%00y",
        "/v1/chat/x%5cy",
    ],
)
def test_ambiguous_paths_are_refused(
    stack: Stack, upstream: Upstream, chat_key: tuple[str, str], target: str
) -> None:
    reply = stack.request("GET", target, [("x-api-key", chat_key[1])])
    assert reply.status in (400, 403), (target, reply.text())
    assert upstream.seen == []


def test_keystile_stopped_means_503_and_no_upstream_hit(
    tmp_path: Path, chat_key: tuple[str, str], stack: Stack
) -> None:
    # a stack of its own: stopping keystile must not disturb the other tests
    env = dict(stack.keystile.env)
    env.pop("KEYSTILE_LISTEN")
    for own in running_stack(tmp_path, env):
        own.upstream.seen.clear()
        assert own.request("GET", "/v1/chat/x", [("x-api-key", chat_key[1])]).status == 200
        own.keystile.stop()
        own.upstream.seen.clear()
        reply = own.request("GET", "/v1/chat/x", [("x-api-key", chat_key[1])])
        assert reply.status == 503, reply.text()
        assert error_of(reply)["code"] == "auth_unavailable"
        assert own.upstream.seen == []


def test_revocation_by_cli_is_seen_within_two_seconds_under_load(stack: Stack) -> None:
    key_id, key = create_key(stack.keystile, "--name", "to revoke", "--scope", "chat")
    answered: list[list[tuple[float, int]]] = [[] for _ in range(4)]  # (when, status) per client
    stop = threading.Event()

    def hammer(mine: list[tuple[float, int]]) -> None:
        while not stop.is_set():
            status = request(stack.proxy.port, "GET", "/v1/chat/x", [("x-api-key", key)]).status
            mine.append((time.monotonic(), status))

    workers = [threading.Thread(target=hammer, args=(mine,)) for mine in answered]
    for worker in workers:
        worker.start()
    try:  # under load: every client allowed, over 50 answers in all
        waiting.wait_until(lambda: [sum(s == 200 for _, s in mine) for mine in answered],
                           lambda allowed: min(allowed) > 0 and sum(allowed) > 50,
                           timeout=30, what="every client allowed, over 50 in all")  # fmt: skip
        stack.keystile.cli("keys", "revoke", key_id)
        revoked_at = time.monotonic()

        def refused_in_a_row() -> list[int]:  # each client's last answers: 401s since revoked_at
            return [next((n for n, (t, s) in enumerate(reversed(mine))
                          if s != 401 or t <= revoked_at), len(mine))
                    for mine in answered]  # fmt: skip

        # until every client has been refused 20 times in a row: seen, and it holds
        waiting.wait_until(refused_in_a_row, lambda runs: min(runs) >= 20, timeout=30,
                           what="20 refusals in a row for every client")  # fmt: skip
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    results = sorted(answer for mine in answered for answer in mine)
    late_allows = [t - revoked_at for t, status in results if status == 200 and t > revoked_at]
    assert len(results) > 50
    assert max(late_allows, default=0.0) < 2.0, max(late_allows)  # the promise, measured
    assert results[-1][1] == 401


def test_no_secret_in_keystile_or_nginx_logs(stack: Stack, chat_key: tuple[str, str]) -> None:
    logs = stack.keystile.log() + stack.proxy.log()
    assert UPSTREAM_SECRET not in logs
    assert chat_key[1] not in logs
    assert not re.search(r"ks_[0-9A-Za-z]{20,}", logs)
    assert '"event":"deny"' in logs  # denials are logged, with reason codes


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


NGINX_WRITES = ["nginx.pid", "error.log", "access.log", "client_body_temp", "proxy_temp",
                "fastcgi_temp", "uwsgi_temp", "scgi_temp"]  # fmt: skip


def unprivileged_user() -> pwd.struct_passwd | None:
    """Whom to run nginx as: ``nobody`` when the tests run as root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("the tests run as root and there is no user 'nobody' to run nginx as")


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie left for a reaper that never comes does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def test_shipped_nginx_conf_runs_unprivileged_from_its_prefix_and_stops_with_quit(
    tmp_path: Path,
) -> None:
    # docs/nginx.md's commands, as any user: start (nginx goes to the background),
    # reload, stop with -s quit. The prefix is the shipped folder with only the ports
    # changed, owned by that user, in a folder it can reach (pytest's tmp_path is
    # root's alone).
    guide = (ROOT / "docs" / "nginx.md").read_text()
    for step in ("", " -s reload", " -s quit"):
        assert f'nginx -p "$PWD/nginx" -c nginx.conf{step}' in guide, step
    user = unprivileged_user()
    as_user: dict[str, Any] = {}
    if user is not None:
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    (tmp_path / "keystile.toml").write_text(CONFIG)
    env = {"KEYSTILE_DB": str(tmp_path / "keystile.db"),
           "KEYSTILE_CONFIG": str(tmp_path / "keystile.toml"),
           "E2E_UPSTREAM_KEY": UPSTREAM_SECRET}  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="keystile-nginx-"))
    upstream = Upstream().start()
    keystile = Keystile(tmp_path, env)
    master = 0
    try:
        keystile.start()
        _, key = create_key(keystile, "--name", "chat", "--scope", "chat")
        proxy = Proxy("nginx", workdir, keystile.port, upstream.port)
        prefix = proxy.prefix
        if user is not None:
            for path in [workdir, *workdir.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)
        nginx = [proxy.binary, "-p", str(prefix), "-c", "nginx.conf"]

        started = subprocess.run(nginx, capture_output=True, text=True, timeout=30, **as_user)
        assert started.returncode == 0, started.stdout + started.stderr
        pid_file = prefix / "nginx.pid"
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip()), sorted(
            p.name for p in prefix.iterdir()
        )
        master = int(pid_file.read_text())
        wait_for_port(proxy.port)
        if user is not None:
            uids = Path(f"/proc/{master}/status").read_text().split("\nUid:\t")[1].split()
            assert int(uids[0]) == user.pw_uid, uids  # the master itself is unprivileged

        reply = request(proxy.port, "GET", "/v1/chat/x", [("x-api-key", key)])
        assert reply.status == 200, reply.text()
        assert len(upstream.seen) == 1
        assert sorted(NGINX_WRITES) == sorted(
            p.name for p in prefix.iterdir() if p.name in NGINX_WRITES
        )
        # nginx logs a request just after answering it
        assert wait_until(lambda: "/v1/chat/x" in (prefix / "access.log").read_text())

        reloaded = subprocess.run([*nginx, "-s", "reload"], capture_output=True, text=True,
                                  timeout=30, **as_user)  # fmt: skip
        assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
        reply = request(proxy.port, "GET", "/v1/chat/x", [("x-api-key", key)])
        assert reply.status == 200, reply.text()
        assert alive(master)  # a reload keeps the master

        stopped = subprocess.run([*nginx, "-s", "quit"], capture_output=True, text=True,
                                 timeout=30, **as_user)  # fmt: skip
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert wait_until(lambda: not alive(master)), f"nginx {master} still runs after -s quit"
        assert wait_until(lambda: not pid_file.exists())
        assert "[emerg]" not in (prefix / "error.log").read_text()
    finally:
        if master and alive(master):  # the test failed: stop it as `-s stop` would, workers too
            os.kill(master, signal.SIGTERM)
            if not wait_until(lambda: not alive(master)):
                os.kill(master, signal.SIGKILL)
        keystile.stop()
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)
