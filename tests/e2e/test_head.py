"""HEAD through every shipped proxy: a denial's head and no body, so the proxy's
kept-alive connection to keystile stays in step (Envoy counted a protocol error
and tore the connection down for every HEAD denial when keystile sent a body)."""

from __future__ import annotations

import re
import urllib.request

from tests.e2e import test_proxies
from tests.e2e.harness import Stack

stack, keys = test_proxies.stack, test_proxies.keys  # the shared stacks and keys (fixtures)


def envoy_stat(running: Stack, name: str) -> int:
    admin_block = running.proxy.config.read_text().partition("\nadmin:")[2]
    admin = re.search(r"port_value: (\d+)", admin_block)
    assert admin is not None, "no admin address in the shipped envoy.yaml"
    url = f"http://127.0.0.1:{admin.group(1)}/stats?filter={re.escape(name)}$"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    found = re.search(rf"^{re.escape(name)}: (\d+)$", text, re.M)
    return int(found.group(1)) if found else 0


def test_head_denials_and_allows_keep_the_connection_in_step(
    stack: Stack,
    keys: dict[str, tuple[str, str]],
) -> None:
    _, chat = keys["chat"]
    envoy = stack.proxy.kind in ("envoy", "envoy-grpc")
    before = envoy_stat(stack, "cluster.keystile.upstream_cx_protocol_error") if envoy else 0
    for _ in range(20):
        denied = stack.request("HEAD", "/v1/chat/completions", [("Authorization", "Bearer nope")])
        assert denied.status == 401 and denied.body == b""
        allowed = stack.request("HEAD", "/v1/models", [("Authorization", f"Bearer {chat}")])
        assert allowed.status == 200
    if envoy:
        after = envoy_stat(stack, "cluster.keystile.upstream_cx_protocol_error")
        assert after == before, f"{after - before} protocol errors on Envoy's keystile cluster"
