"""Every deadline holds when a peer goes silent, not only when it refuses.

A real ``keystile serve`` talks to the real PostgreSQL, or the real Redis, through
a TCP forwarder of the test's own (:mod:`tests.forwarder`). Under a steady load of
auth requests and ``/readyz`` probes the forwarder is paused (SIGSTOP: the network
goes quiet, as in a partition or a hung server) or killed (connections closed and
refused), then resumed or restarted; or the connections open at one moment go
silent for good while new ones work (a failover, a NAT that forgot them). Every
request must be answered within its documented bound, the answers during the
outage must be the documented ones, and everything must work again soon after:

- PostgreSQL: an uncached key waits at most ``LOOKUP_TIMEOUT`` (0.25 s), then 503
  ``auth_unavailable``/``store_unavailable``; cached keys keep answering 200 (within
  ``cache.max_staleness``); ``/readyz`` answers 503 within ``READY_TIMEOUT`` (1 s).
- Redis (``redis.unavailable = deny``): a key with a rate limit waits at most
  ``redis.timeout`` (0.5 s), then 503 ``limits_unavailable``; keys without limits
  never ask Redis and keep answering 200; ``/readyz`` reports Redis: 503.
- Back within ``RECOVERY`` (1 s) of the peer's return: fresh keys 200, ``/readyz`` 200.

The machine may be busy (two cores, other suites beside this one): each bound gets
``MARGIN`` on top, recovery ``RECOVERY_MARGIN``; waits are on conditions, with a
deadline, never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from keystile.core.keys import Hasher
from keystile.limits.shared_limits import LIMITS_TIMEOUT
from keystile.manage.service import KeyService
from keystile.server import READY_TIMEOUT, SYNC_TIMEOUT
from keystile.store import Store
from keystile.store.base import LOOKUP_TIMEOUT
from keystile.store.postgres import ACQUIRE_TIMEOUT
from tests.backends import postgres_schema
from tests.e2e.harness import Keystile
from tests.forwarder import Forwarder
from tests.redis_server import delete_prefix, redis_url, unique_prefix

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

MARGIN = 0.75  # seconds past a request's bound that a busy two-core machine may add
RECOVERY = 1.0  # seconds from the peer's return to the first good answer of each kind
RECOVERY_MARGIN = 1.0
OUTAGE = READY_TIMEOUT + MARGIN + 0.5  # seconds at least: longer than every bound
LOG_AGE = 1.0  # seconds since the last change-log read past which the poll is stuck
GIVE_UP = 20.0  # seconds a condition may take before the test fails (with the facts)
Outage = Literal["pause", "kill"]


def through(url: str, forwarder: Forwarder) -> str:
    """``url`` with its host and port replaced by the forwarder's (user, password,
    path and query kept)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@" if credentials else ""
    return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{forwarder.port}"))


@contextmanager
def forwarding(url: str, default_port: int) -> Iterator[Forwarder]:
    parts = urlsplit(url)
    forwarder = Forwarder(parts.hostname or "127.0.0.1", parts.port or default_port).start()
    try:
        yield forwarder
    finally:
        forwarder.kill()  # stopped or not


@dataclass(frozen=True)
class Answer:
    kind: str
    sent: float  # time.monotonic() when the request went out
    took: float  # seconds until its answer (inf: none)
    status: int  # 0: no answer
    detail: str  # X-Keystile-Detail, or the /readyz body

    @property
    def answered(self) -> float:
        return self.sent + self.took


def matches(answer: Answer, expected: str) -> bool:
    """``expected``: "200", or a text the detail (the /readyz body) of a 503 holds."""
    if expected == "200":
        return answer.status == 200
    return answer.status == 503 and expected in answer.detail


@dataclass
class Load:
    """Auth requests and /readyz probes, kept going until :meth:`stop`; every answer
    recorded with when its request was sent and how long it took."""

    session: aiohttp.ClientSession
    port: int
    answers: list[Answer] = field(default_factory=list)
    _tasks: set[asyncio.Future[None]] = field(default_factory=set)
    _running: bool = True

    async def ask(self, kind: str, path: str, key: str | None = None) -> None:
        headers = {"X-Original-URI": "/v1/x"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        url, sent = f"http://127.0.0.1:{self.port}{path}", time.monotonic()
        try:
            async with self.session.get(url, headers=headers) as response:
                body = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.answers.append(Answer(kind, sent, float("inf"), 0, repr(exc)))
            return
        detail = response.headers.get("X-Keystile-Detail", body if key is None else "")
        self.answers.append(Answer(kind, sent, time.monotonic() - sent, response.status, detail))

    async def ask_log(self) -> None:
        """How long ago the server last read the change log (/metrics): answered as
        200 while that is under LOG_AGE seconds (the poll reads it every 0.5 s), as
        a 503 with the age otherwise (a read is stuck, or failing)."""
        url, sent = f"http://127.0.0.1:{self.port}/metrics", time.monotonic()
        async with self.session.get(url) as response:
            found = re.search(r"^keystile_cache_sync_age_seconds (\S+)$", await response.text(),
                              re.M)  # fmt: skip
        assert found, "no keystile_cache_sync_age_seconds in /metrics"
        age = float(found[1])
        status = 200 if age < LOG_AGE else 503
        self.answers.append(Answer("log", sent, time.monotonic() - sent, status, f"age {age}"))

    def every(self, gap: float, ask: Callable[[], Awaitable[None]]) -> None:
        """``ask()`` every ``gap`` seconds, whether or not the last one was answered
        (requests keep arriving while earlier ones wait, as behind a proxy)."""

        async def run() -> None:
            while self._running:
                self._spawn(ask())
                await asyncio.sleep(gap)

        self._spawn(run())

    def steadily(self, ask: Callable[[], Awaitable[None]], workers: int) -> None:
        """``workers`` clients, each asking again as soon as it is answered."""

        async def run() -> None:
            while self._running:
                await ask()
                await asyncio.sleep(0.005)  # leave the two cores to the server, mostly

        for _ in range(workers):
            self._spawn(run())

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def since(self, kind: str, start: float, end: float = float("inf")) -> list[Answer]:
        """Answers of ``kind`` to requests sent at ``start`` or later, answered before ``end``."""
        return [a for a in self.answers
                if a.kind == kind and a.sent >= start and a.answered < end]  # fmt: skip

    def shows(self, kind: str, start: float, expected: str) -> Callable[[], bool]:
        """Whether a request of ``kind`` sent at ``start`` or later was answered so."""
        return lambda: any(matches(a, expected) for a in self.since(kind, start))

    async def until(self, why: str, condition: Callable[[], bool]) -> float:
        """Wait until ``condition()`` holds; when it did (monotonic). Fails after
        GIVE_UP seconds, with what was answered so far."""
        deadline = time.monotonic() + GIVE_UP
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"not within {GIVE_UP} s: {why}\n{self.summary()}")
            await asyncio.sleep(0.01)
        return time.monotonic()

    async def stop(self) -> None:
        """No new requests; every one sent is answered (or timed out) by now."""
        self._running = False
        while self._tasks:
            await asyncio.gather(*self._tasks)

    def summary(self) -> str:
        lines = []
        for kind in sorted({a.kind for a in self.answers}):
            mine = [a for a in self.answers if a.kind == kind]
            worst = max(mine, key=lambda a: a.took)
            statuses = sorted({a.status for a in mine})
            lines.append(f"{kind}: {len(mine)} answers, statuses {statuses}, slowest "
                         f"{worst.took:.3f} s ({worst.status} {worst.detail[:90]})")  # fmt: skip
        return "\n".join(lines)


@asynccontextmanager
async def loaded(port: int) -> AsyncIterator[Load]:
    # keep-alive connections, as nginx's upstream keepalive; a client timeout so that
    # a request the server never answers shows up as such, not as a hang
    timeout, connector = aiohttp.ClientTimeout(total=GIVE_UP), aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        load = Load(session, port)
        try:
            yield load
        finally:
            await load.stop()


@dataclass(frozen=True)
class Timeline:
    down: float  # the peer is silent (or gone) from here
    up: float  # and back from here (frozen connections: new ones worked all along)
    recovered: dict[str, float]  # kind -> seconds after ``up`` its good run began


def good_since(load: Load, kind: str, up: float, expected: str) -> list[Answer]:
    """The answers of ``kind`` since ``up`` after its last one that was not as
    ``expected`` (by when they were sent): its good run, up to now."""
    mine = sorted(load.since(kind, up), key=lambda a: a.sent)
    bad = [n for n, answer in enumerate(mine) if not matches(answer, expected)]
    return mine[bad[-1] + 1 :] if bad else mine


def running(load: Load, kind: str, up: float, expected: str) -> Callable[[], bool]:
    """Whether the good run of ``kind`` since ``up`` is three answers long yet."""
    return lambda: len(good_since(load, kind, up, expected)) >= 3


async def back(load: Load, up: float, healthy: dict[str, str]) -> dict[str, float]:
    """Wait until the last three answers (at least) of each kind are as ``healthy``
    says; how long after ``up`` each kind's good run began (its first answer)."""
    for kind, expected in healthy.items():
        await load.until(f"{kind} answers {expected} again (three times running)",
                         running(load, kind, up, expected))  # fmt: skip
    return {kind: min(a.answered for a in good_since(load, kind, up, expected)) - up
            for kind, expected in healthy.items()}  # fmt: skip


async def outage(load: Load, forwarder: Forwarder, how: Outage, failing: dict[str, str],
                 healthy: dict[str, str]) -> Timeline:  # fmt: skip
    """Take the peer away (``how``) for at least OUTAGE seconds and until each kind in
    ``failing`` has answered as it must, then bring it back and wait until each kind
    answers as ``healthy`` says again. Kinds map to what :func:`matches` expects."""
    if how == "pause":
        forwarder.pause()
    else:
        forwarder.kill()
    down = time.monotonic()
    for kind, expected in failing.items():
        await load.until(f"{kind} answers {expected} after the peer went away",
                         load.shows(kind, down, expected))  # fmt: skip
    await load.until("the outage lasted long enough", lambda: time.monotonic() - down >= OUTAGE)
    if how == "pause":
        forwarder.resume()
    else:
        forwarder.start()
    up = time.monotonic()
    return Timeline(down, up, await back(load, up, healthy))


def assert_bounded(load: Load, kind: str, bound: float, allowed: set[str]) -> None:
    """Every request of ``kind`` answered within ``bound`` + MARGIN, as ``allowed``."""
    mine = [a for a in load.answers if a.kind == kind]
    assert mine, f"no {kind} requests\n{load.summary()}"
    late = [a for a in mine if a.took > bound + MARGIN]
    assert not late, f"{len(late)} {kind} answers past {bound} s + {MARGIN} s: {late[:5]}"
    wrong = [a for a in mine if not any(matches(a, e) for e in allowed)]
    assert not wrong, f"{kind}: answers other than {allowed}: {wrong[:5]}"


def assert_refused_meanwhile(load: Load, timeline: Timeline, failing: dict[str, str]) -> None:
    """Requests sent after the peer went away, answered before it came back: refused."""
    for kind, expected in failing.items():
        during = load.since(kind, timeline.down, timeline.up)
        assert during, f"no {kind} answers during the outage\n{load.summary()}"
        wrong = [a for a in during if not matches(a, expected)]
        assert not wrong, f"{kind} during the outage: {wrong[:5]}"


def assert_recovered(load: Load, timeline: Timeline, within: float) -> None:
    """Each kind good again, and good from then on, ``within`` seconds of the peer's return."""
    slow = {kind: round(took, 3) for kind, took in timeline.recovered.items() if took > within}
    assert not slow, f"recovered after more than {within} s: {slow}\n{load.summary()}"


def report(name: str, load: Load, timeline: Timeline, failing: dict[str, str]) -> None:
    """The measured figures, printed (pytest -s, or with a failure) for the record."""
    print(f"\n{name}: outage {timeline.up - timeline.down:.2f} s")
    for kind, expected in failing.items():
        refused = [a.took for a in load.since(kind, timeline.down) if matches(a, expected)]
        if refused:
            print(f"  {kind}: {len(refused)} x {expected}, slowest {max(refused):.3f} s, "
                  f"median {sorted(refused)[len(refused) // 2]:.3f} s")  # fmt: skip
    for kind, took in timeline.recovered.items():
        print(f"  {kind}: good again {took:.3f} s after the peer came back")
    print("  " + load.summary().replace("\n", "\n  "))


async def make_keys(db: str, count: int, **limits: int) -> list[str]:
    """``count`` new keys in the store at ``db`` (before keystile starts: every one
    in its hash filter, none in its cache)."""
    async with await Store.open(db) as store:
        keys = KeyService(store, Hasher())
        return [(await keys.create(f"k{n}", limits=limits or None)).key for n in range(count)]


# --- PostgreSQL -------------------------------------------------------------------

FRESH_GAP = 0.05  # seconds between two uncached keys asked for (three requests each)
FRESH_KEYS = 200  # ten seconds of them: far more than a passing test asks for


@dataclass
class Postgres:
    """keystile on PostgreSQL through the forwarder, and the keys the load asks for."""

    keystile: Keystile
    forwarder: Forwarder
    cached: str
    fresh: Iterator[str]

    def keep_asking(self, load: Load) -> None:
        """Four clients asking for the cached key all along."""
        load.steadily(lambda: load.ask("cached", "/auth/nginx", self.cached), workers=4)

    def probe(self, load: Load) -> None:
        """An uncached key every FRESH_GAP, three requests at once (as one client's
        parallel calls: one shared lookup); /readyz every 0.1 s."""

        async def uncached() -> None:
            key = next(self.fresh, None)
            if key is None:  # all used: the test waits in vain, and says what it saw
                return
            await asyncio.gather(*(load.ask("uncached", "/auth/nginx", key) for _ in range(3)))

        load.every(FRESH_GAP, uncached)
        load.every(0.1, lambda: load.ask("ready", "/readyz"))


@asynccontextmanager
async def postgres(tmp_path: Path) -> AsyncIterator[Postgres]:
    async with postgres_schema() as direct:  # skips (fails in CI) without PostgreSQL
        cached, *fresh = await make_keys(direct, 1 + FRESH_KEYS)
        with forwarding(direct, 5432) as forwarder:
            keystile = Keystile(tmp_path, {"KEYSTILE_DB": through(direct, forwarder)}).start()
            try:
                yield Postgres(keystile, forwarder, cached, iter(fresh))
            finally:
                keystile.stop()


async def warmed(load: Load, served: Postgres) -> None:
    """The cached key in the cache, then the load on, answering 200 throughout."""
    await load.ask("cached", "/auth/nginx", served.cached)
    start = time.monotonic()
    served.keep_asking(load)
    served.probe(load)
    await load.until("uncached keys and /readyz answer 200 before the outage", lambda: (
        len([a for a in load.since("uncached", start) if a.status == 200]) >= 6
        and any(a.status == 200 for a in load.since("ready", start))))  # fmt: skip


@pytest.mark.parametrize("how", ["pause", "kill"])
async def test_postgres_going_away_keeps_every_deadline(tmp_path: Path, how: Outage) -> None:
    failing = {"uncached": "store_unavailable", "ready": '"store": "unreachable"'}
    async with postgres(tmp_path) as served, loaded(served.keystile.port) as load:
        await warmed(load, served)
        timeline = await outage(load, served.forwarder, how, failing,
                                {"uncached": "200", "ready": "200", "cached": "200"})  # fmt: skip
        await load.stop()
    report(f"PostgreSQL {how}", load, timeline, failing)
    assert_bounded(load, "uncached", LOOKUP_TIMEOUT, {"200", "store_unavailable"})
    assert_bounded(load, "ready", READY_TIMEOUT, {"200", failing["ready"]})
    if how == "pause":  # within cache.max_staleness, cached keys never ask the store
        assert_bounded(load, "cached", 0.0, {"200"})
    else:  # the listening connection closed: the caches were flushed (changes may have
        # been missed meanwhile), so the cached key was looked up too, and refused
        assert_bounded(load, "cached", LOOKUP_TIMEOUT, {"200", "store_unavailable"})
        refused = load.since("cached", timeline.down, timeline.up)
        assert any(matches(a, "store_unavailable") for a in refused), load.summary()
    assert_refused_meanwhile(load, timeline, failing)
    assert_recovered(load, timeline, RECOVERY + RECOVERY_MARGIN)


async def test_postgres_connections_silent_for_good_are_given_up(tmp_path: Path) -> None:
    """Every connection keystile holds goes silent for good; new ones work. The
    change-log read waiting on one is given up after SYNC_TIMEOUT; lookups on the
    others fail within their bound, and their connections are closed once the server
    has not acknowledged the cancel within ACQUIRE_TIMEOUT: all works again on new
    connections (the change log read again too), without the old ones ever answering."""
    async with postgres(tmp_path) as served, loaded(served.keystile.port) as load:
        await load.ask("cached", "/auth/nginx", served.cached)
        served.keep_asking(load)
        load.every(0.1, load.ask_log)

        # every pooled connection open at once, so that each of them is frozen: until
        # one burst of more lookups than the pool holds is answered 200 throughout
        # (on a busy machine, opening ten connections at once may take a few tries)
        async def burst() -> bool:
            start = time.monotonic()
            await asyncio.gather(*(load.ask("uncached", "/auth/nginx", next(served.fresh))
                                   for _ in range(12)))  # fmt: skip
            return all(a.status == 200 for a in load.since("uncached", start))

        for _ in range(5):
            if await burst():
                break
        else:
            pytest.fail(f"five bursts of lookups were refused before any outage\n{load.summary()}")
        served.forwarder.freeze()
        down = time.monotonic()
        # nothing else asks the store yet: the poll's next read takes a silent connection
        await load.until("the change-log poll waits on a silent connection",
                         load.shows("log", down, "age"))  # fmt: skip
        served.probe(load)
        failing = {"uncached": "store_unavailable", "ready": '"store": "unreachable"'}
        for kind, expected in failing.items():
            await load.until(f"{kind} answers {expected} once the connections went silent",
                             load.shows(kind, down, expected))  # fmt: skip
        healthy = {"uncached": "200", "ready": "200", "log": "200"}
        timeline = Timeline(down, down, await back(load, down, healthy))
        await load.stop()
    failing["log"] = "age"
    report("PostgreSQL connections frozen", load, timeline, failing)
    assert_bounded(load, "uncached", LOOKUP_TIMEOUT, {"200", "store_unavailable"})
    assert_bounded(load, "ready", READY_TIMEOUT, {"200", failing["ready"]})
    assert_bounded(load, "cached", LOOKUP_TIMEOUT, {"200", "store_unavailable"})
    # the slowest way back, from the freeze: the poll seen stuck (LOG_AGE) before the
    # probes start, a change-log read given up on (SYNC_TIMEOUT), and pooled
    # connections that had to be closed (ACQUIRE_TIMEOUT) before reads found new ones
    assert_recovered(load, timeline, LOG_AGE + SYNC_TIMEOUT + ACQUIRE_TIMEOUT + RECOVERY_MARGIN)


# --- Redis ------------------------------------------------------------------------


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    url, chosen = redis_url(), unique_prefix()  # skips (fails in CI) without Redis
    yield chosen
    asyncio.run(delete_prefix(url, chosen))


@pytest.mark.parametrize("how", ["pause", "kill"])
async def test_redis_going_away_keeps_every_deadline(tmp_path: Path, how: Outage,
                                                    redis_prefix: str) -> None:  # fmt: skip
    db = str(tmp_path / "keystile.db")
    [unlimited], [limited] = await make_keys(db, 1), await make_keys(db, 1, per_minute=10**6)
    failing = {"limited": "limits_unavailable", "ready": '"redis": "unreachable"'}
    with forwarding(redis_url(), 6379) as forwarder:
        env = {"KEYSTILE_DB": db, "KEYSTILE_REDIS_PREFIX": redis_prefix,
               "KEYSTILE_REDIS_URL": through(redis_url(), forwarder)}  # fmt: skip
        keystile = Keystile(tmp_path, env).start()
        try:
            async with loaded(keystile.port) as load:
                load.steadily(lambda: load.ask("unlimited", "/auth/nginx", unlimited), workers=2)
                load.steadily(lambda: load.ask("limited", "/auth/nginx", limited), workers=4)
                load.every(0.1, lambda: load.ask("ready", "/readyz"))
                start = time.monotonic()
                await load.until("the limited key and /readyz answer 200 before the outage",
                                 lambda: all(load.shows(kind, start, "200")()
                                             for kind in ("limited", "ready")))  # fmt: skip
                timeline = await outage(load, forwarder, how, failing,
                                        {"limited": "200", "ready": "200"})  # fmt: skip
                await load.stop()
        finally:
            keystile.stop()
    report(f"Redis {how}", load, timeline, failing)
    assert_bounded(load, "limited", LIMITS_TIMEOUT, {"200", "limits_unavailable"})
    assert_bounded(load, "ready", READY_TIMEOUT, {"200", failing["ready"]})
    assert_bounded(load, "unlimited", 0.0, {"200"})  # keys without limits never ask Redis
    assert_refused_meanwhile(load, timeline, failing)
    assert_recovered(load, timeline, RECOVERY + RECOVERY_MARGIN)
