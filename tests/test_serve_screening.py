"""``keystile serve`` as users run it: a key inside a malformed request head is never
answered back or logged, on the main listener and on a separate admin listener."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.e2e.harness import Keystile, free_port, wait_for_port
from tests.waiting import wait_until

ADMIN_KEY = "admin-key-for-the-screening-test-0123456789"


def send(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_key_in_a_malformed_head_is_never_echoed_or_logged(tmp_path: Path) -> None:
    admin_port = free_port()
    env = {"KEYSTILE_DB": str(tmp_path / "k.db"), "KEYSTILE_ADMIN_KEY": ADMIN_KEY,
           "KEYSTILE_ADMIN_LISTEN": f"127.0.0.1:{admin_port}"}  # fmt: skip
    keystile = Keystile(tmp_path, env).start()
    try:
        wait_for_port(admin_port)
        for port, path in ((keystile.port, "/auth/nginx"), (keystile.port, "/api/v1/keys"),
                           (admin_port, "/api/v1/keys"), (admin_port, "/keys")):  # fmt: skip
            for bad in (b"\x01", b"\x7f", b"\x00"):
                head = (b"GET %s HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer %s%s\r\n\r\n"
                        % (path.encode(), ADMIN_KEY.encode(), bad))  # fmt: skip
                answer = send(port, head)
                assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 403 ")), answer
                assert ADMIN_KEY.encode() not in answer
        # a denial logged after all of those: once its line is there, so is anything
        # they made keystile log (one process, one log, in order)
        marker = "/v1/after-the-malformed-heads"
        answer = send(keystile.port, b"GET /auth/nginx HTTP/1.1\r\nHost: k\r\nX-Original-URI: "
                      + marker.encode() + b"\r\nConnection: close\r\n\r\n")  # fmt: skip
        assert answer.startswith(b"HTTP/1.1 401 "), answer
        wait_until(keystile.log, lambda log: marker in log, what="the marker's denial logged")
        assert ADMIN_KEY not in keystile.log()
    finally:
        keystile.stop()
