"""The Redis the shared-limits tests run against: 127.0.0.1:6379, or the URL in
KEYSTILE_TEST_REDIS_URL. Unreachable: the test is skipped (failed when
KEYSTILE_E2E_REQUIRED=1, as CI sets), never faked."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

from tests.e2e.harness import unavailable

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def redis_url() -> str:
    """The test Redis's URL, once something answers PING there."""
    url = os.environ.get("KEYSTILE_TEST_REDIS_URL") or DEFAULT_URL
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 6379)
    try:
        with socket.create_connection(address, timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        unavailable(f"no Redis at {address[0]}:{address[1]} ({exc.strerror or exc}); start one "
                    "or set KEYSTILE_TEST_REDIS_URL")  # fmt: skip
    # +PONG, or -NOAUTH when the URL carries a password: either way Redis is there
    if not answer.startswith((b"+PONG", b"-NOAUTH")):
        unavailable(f"{address[0]}:{address[1]} does not answer as Redis: {answer[:40]!r}")
    return url


def unique_prefix() -> str:
    """A key prefix of one test's own, so that parallel runs never share counters."""
    return f"keystile-test:{uuid.uuid4().hex}:"


async def delete_prefix(url: str, prefix: str) -> int:
    """Delete every Redis key under ``prefix``; how many there were."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        found = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if found:
            await client.delete(*found)
        return len(found)
    finally:
        await client.aclose()


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
