"""nginx specifics, through real nginx running the shipped config. The checks every
proxy shares are in test_proxies.py."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.e2e.harness import Reply, Stack, Upstream, request, running_stack
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
    results: list[tuple[float, int]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            status = request(stack.proxy.port, "GET", "/v1/chat/x", [("x-api-key", key)]).status
            results.append((time.monotonic(), status))

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    stack.keystile.cli("keys", "revoke", key_id)
    revoked_at = time.monotonic()
    time.sleep(2.5)
    stop.set()
    for worker in workers:
        worker.join()
    late_allows = [t - revoked_at for t, status in results if status == 200 and t > revoked_at]
    assert len(results) > 50
    assert max(late_allows, default=0.0) < 2.0, max(late_allows)
    assert results[-1][1] == 401


def test_no_secret_in_keystile_or_nginx_logs(stack: Stack, chat_key: tuple[str, str]) -> None:
    logs = stack.keystile.log() + stack.proxy.log()
    assert UPSTREAM_SECRET not in logs
    assert chat_key[1] not in logs
    assert not re.search(r"ks_[0-9A-Za-z]{20,}", logs)
    assert '"event":"deny"' in logs  # denials are logged, with reason codes


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
