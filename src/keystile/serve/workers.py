"""``keystile serve --workers N``: N processes, one event loop each, on shared ports.

Every worker binds the listen (and admin, and gRPC) address with SO_REUSEPORT,
so the kernel spreads new connections across them. The parent checks that no
other process holds those addresses (SO_REUSEPORT would let the workers share
them with another keystile's, silently), migrates the store once, forks the
workers, passes SIGTERM/SIGINT on, and replaces a worker that dies after it had
started; one that dies at start (port taken, store unreadable) stops them all.

Each worker has its own cache, kept coherent through the store's change log (a
revocation reaches every worker within ``poll_interval``). What a worker
counts in memory is its own: rate limits and quotas allow up to N times their
figure. /metrics shows the sum over the workers (keystile.workermetrics),
through snapshot files in a directory the parent makes here and removes at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from keystile.config import Settings
from keystile.serve import ports, workermetrics
from keystile.store import Store

STARTUP = 5.0  # a worker that dies sooner failed to start: stop, do not respawn

log = logging.getLogger("keystile.workers")


async def _prepare(settings: Settings) -> None:
    """Create and migrate the store once, before the workers open it."""
    store = await Store.open(settings.db)
    await store.close()


def supervise(settings: Settings, run_worker: Callable[[Settings, int, Path], None]) -> int:
    """Run ``settings.workers`` forked workers until a signal; the exit code."""
    ports.claim([("listen", settings.listen), ("admin_listen", settings.admin_listen),
                 ("grpc_listen", settings.grpc_listen)])  # fmt: skip
    ports.claim([("usage_syslog_listen", settings.usage_syslog_listen)], datagram=True)
    asyncio.run(_prepare(settings))
    metrics_dir = Path(tempfile.mkdtemp(prefix="keystile-metrics-"))
    try:
        return _run(settings, run_worker, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _run(settings: Settings, run_worker: Callable[[Settings, int, Path], None],
         metrics_dir: Path) -> int:  # fmt: skip
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker number, started)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            _kill(pid)

    def start(worker: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: its event loop installs its own signal handlers
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                run_worker(settings, worker, metrics_dir)
            except BaseException as exc:
                log.error("worker %d failed: %s", worker, exc)
                code = 1
            finally:
                os._exit(code)
        children[pid] = (worker, time.monotonic())

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in range(settings.workers):
        start(worker)
    log.info("%d workers on http://%s:%d", settings.workers, *settings.listen)
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        worker, started = children.pop(pid)
        workermetrics.retire(metrics_dir, pid)
        if stopping:
            continue
        exit_code = os.waitstatus_to_exitcode(status)
        if time.monotonic() - started < STARTUP:
            log.error("worker %d exited at start (%d); stopping", worker, exit_code)
            code = 1
            stop(signal.SIGTERM, None)
            continue
        log.error("worker %d exited (%d); starting another", worker, exit_code)
        start(worker)
    return code


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
