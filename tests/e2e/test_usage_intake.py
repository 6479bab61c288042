"""Token budgets' usage intake, end to end: real keystile (``keystile serve``) makes
the reservations, real proxies running the shipped configs carry them and the
upstream's token count back (nginx: syslog datagrams to KEYSTILE_USAGE_SYSLOG_LISTEN;
Envoy, both dialects: the access-log stream to keystile's gRPC listener), and the
key's spend shows exactly what the upstream reported."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from keystile import config
from tests.e2e.harness import ROOT, Keystile, Proxy, find_binary, request
from tests.redis_server import delete_prefix, redis_url, unique_prefix
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e
FORGED = "key_AbC123.1796700000.nonce.sig"
CONFIG = """
[usage]
token_estimate = 100
flush_interval = 0.2

[[routes]]
name = "chat"
path = "/v1/chat/*"
scopes = ["chat"]
"""


@dataclass
class TokenUpstream:
    """An API that answers ``x-usage-total-tokens: N`` for a path ending in
    ``/tokens/N`` (no such header otherwise) and records the headers it got."""

    seen: list[dict[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> int:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                upstream.seen.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                count = re.search(r"/tokens/([^/?]+)$", self.path)
                if count:
                    self.send_header("X-Usage-Total-Tokens", count.group(1))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Setup:
    keystile: Keystile
    proxy: Proxy
    upstream: TokenUpstream
    key_id: str
    key: str

    def ask(self, path: str, *headers: tuple[str, str]) -> int:
        return request(self.proxy.port, "GET", path, list(headers)).status

    def tokens(self) -> int:
        shown = orjson.loads(self.keystile.cli("usage", self.key_id, "--json").stdout)
        return int(shown["tokens"])


@pytest.fixture(params=["nginx", "nginx-workers", "envoy", "envoy-grpc"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    kind = request.param.removesuffix("-workers")
    (tmp_path / "keystile.toml").write_text(CONFIG)
    env = {"KEYSTILE_DB": str(tmp_path / "keystile.db"),
           "KEYSTILE_CONFIG": str(tmp_path / "keystile.toml")}  # fmt: skip
    prefix = None
    if request.param.endswith("-workers"):  # every worker takes lines on the one port;
        env["KEYSTILE_WORKERS"] = "2"  # budgets shared by the workers in Redis
        prefix = unique_prefix()
        env.update(KEYSTILE_REDIS_URL=redis_url(), KEYSTILE_REDIS_PREFIX=prefix)
    udp = free_udp_port()
    if kind == "nginx":
        env["KEYSTILE_USAGE_SYSLOG_LISTEN"] = f"127.0.0.1:{udp}"
    # gRPC for Envoy: its checks (envoy-grpc) or only its access log (envoy)
    keystile = Keystile(tmp_path, env, grpc=kind != "nginx")
    budget = ("--limit", "tokens_per_day=100000")
    made = orjson.loads(keystile.cli("keys", "create", "--json", "--name", "llm", "--scope",
                                     "chat", *budget).stdout)  # fmt: skip
    upstream = TokenUpstream()
    api_port = upstream.start()
    proxy: Proxy | None = None
    try:
        keystile.start()
        usage_port = udp if kind == "nginx" else keystile.grpc_port
        checks = keystile.grpc_port if kind == "envoy-grpc" else keystile.port
        proxy = Proxy(kind, tmp_path, checks, api_port, keystile.port,
                      usage_port=usage_port).start()  # fmt: skip
        yield Setup(keystile, proxy, upstream, made["id"], made["key"])
    finally:
        if proxy is not None:
            proxy.stop()
        keystile.stop()
        upstream.stop()
        if prefix is not None:
            asyncio.run(delete_prefix(redis_url(), prefix))


def test_the_upstream_s_token_count_reaches_the_key_s_spend(setup: Setup) -> None:
    key = ("X-Api-Key", setup.key)
    assert setup.ask("/v1/chat/tokens/1874", key) == 200
    # a client's own reservation never counts, nor reaches the upstream
    assert setup.ask("/v1/chat/tokens/7", key, ("X-Keystile-Reservation", FORGED)) == 200
    assert setup.ask("/v1/chat/no-count", key) == 200  # nothing to report: it lapses
    assert setup.ask("/v1/chat/tokens/5", ("X-Keystile-Reservation", FORGED)) == 401
    sent = [seen.get("x-keystile-reservation") for seen in setup.upstream.seen]
    # Then a request whose report comes after all of theirs, in order: nginx's one
    # worker sends its datagrams from one socket (so with two keystile workers, all
    # to the same one), Envoy its entries on one access-log stream. Once its 1000
    # tokens are counted, so is all the requests above reported: 1874 + 7, no more.
    assert setup.ask("/v1/chat/tokens/1000", key) == 200
    spent = wait_until(setup.tokens, lambda spent: spent >= 2881, timeout=30, interval=0.2,
                       what="the last request's tokens counted")  # fmt: skip
    assert spent == 2881, (spent, setup.keystile.log(), setup.proxy.log())
    # every proxy hands the upstream keystile's own reservation, one per request (a
    # gateway behind it may report by POST /api/v1/usage); never the client's
    assert len(sent) == 3 and FORGED not in sent, sent
    assert all(value and value.startswith(setup.key_id) for value in sent), sent
    assert len(set(sent)) == 3
    log = setup.keystile.log()
    assert "usage intake" not in log, log  # nothing refused: every line was well formed
    assert "Traceback" not in log


def test_a_team_s_daily_budget_refuses_once_reported_usage_reaches_it(setup: Setup) -> None:
    """A team of 2,000 tokens a day: what the upstream reported counts against it,
    and once too little is left for the route's estimate (100), the client gets 429
    with Retry-After at midnight UTC, through the proxy."""
    cli = setup.keystile.cli
    team = orjson.loads(cli("teams", "create", "ml", "--limit", "tokens_per_day=2000",
                            "--json").stdout)  # fmt: skip
    user = orjson.loads(cli("users", "create", "ana", "--team", team["id"], "--json").stdout)
    made = orjson.loads(cli("keys", "create", "--json", "--name", "ana", "--scope", "chat",
                            "--user", user["id"]).stdout)  # fmt: skip
    key = ("X-Api-Key", made["key"])

    def team_tokens() -> int:
        spent = orjson.loads(cli("spend", "--team", team["id"], "--json").stdout)
        return int(spent["tokens"])

    def settle(expected: int) -> None:
        deadline = time.monotonic() + 15
        while team_tokens() < expected:
            assert time.monotonic() < deadline, (setup.keystile.log(), setup.proxy.log())
            time.sleep(0.2)

    deadline = time.monotonic() + 10  # the new key reaches keystile's cache
    while setup.ask("/v1/chat/tokens/1500", key) != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    settle(1500)
    assert setup.ask("/v1/chat/tokens/450", key) == 200  # 500 left >= 100
    settle(1950)
    refused = request(setup.proxy.port, "GET", "/v1/chat/tokens/1", [key])  # 50 left < 100
    assert refused.status == 429, (refused.status, refused.text())
    assert "tokens_per_day" in refused.text()
    assert 0 < int(refused.header("Retry-After") or 0) <= 86400


@pytest.mark.parametrize("name", ["envoy.yaml", "envoy-grpc.yaml"])
def test_the_shipped_envoy_configs_validate_and_log_usage(name: str) -> None:
    path = ROOT / "envoy" / name
    done = subprocess.run([find_binary("envoy"), "--mode", "validate", "-c", str(path),
                           "--log-level", "warn", "--use-dynamic-base-id"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    text = path.read_text()
    default = config.load({"KEYSTILE_DB": "unused.db"}).usage_tokens_header
    assert f"additional_response_headers_to_log: [{default}]" in text
    assert "additional_request_headers_to_log: [x-keystile-reservation]" in text


def test_the_shipped_nginx_config_logs_the_default_tokens_header() -> None:
    default = config.load({"KEYSTILE_DB": "unused.db"}).usage_tokens_header
    http = (ROOT / "nginx" / "keystile-http.conf").read_text()
    variable = "$upstream_http_" + default.replace("-", "_")
    assert f"'usage1 $ks_reservation {variable} $request_id'" in http
