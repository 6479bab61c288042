import pytest

from keystile.core.clientip import ip_allowed
from keystile.limits.policy import RateCheck, SlidingWindowLimiter
from keystile.store import KeyRecord
from keystile.store.records import TeamPolicy


def hit(limiter: SlidingWindowLimiter, record: KeyRecord, now: float) -> RateCheck:
    """Check one request and count it when it fits, as the gate does after an allow."""
    check = limiter.check(record, now)
    if check.allowed:
        limiter.take(check)
    return check


def key(limits: dict[str, int] | None = None, ips: tuple[str, ...] | None = None,
        team: TeamPolicy | None = None) -> KeyRecord:  # fmt: skip
    return KeyRecord(id="key_1", key_hash="h", hash_scheme="sha256", display_prefix="ks_x",
                     name="k", created_at=0, updated_at=0, limits=limits or {},
                     allowed_ips=ips, team=team)  # fmt: skip


def admitted(limiter: SlidingWindowLimiter, record: KeyRecord, times: list[float]) -> int:
    return sum(hit(limiter, record, t).allowed for t in times)


def test_burst_up_to_the_limit_then_429_with_retry_after() -> None:
    limiter, record = SlidingWindowLimiter(), key({"per_minute": 10})
    verdicts = [hit(limiter, record, 6000.0 + i * 0.01) for i in range(12)]
    assert [v.allowed for v in verdicts] == [True] * 10 + [False] * 2
    assert [v.rate.remaining for v in verdicts[:10]] == list(range(9, -1, -1))
    assert verdicts[10].retry_after is not None and 1 <= verdicts[10].retry_after <= 120
    assert verdicts[0].rate.limit == 10 and 1 <= verdicts[0].rate.reset <= 60


def test_refill_as_the_window_slides() -> None:
    limiter, record = SlidingWindowLimiter(), key({"per_minute": 60})
    # 30 at the start of a minute, 30 half a minute later
    assert admitted(limiter, record, [6000.0 + i * 0.01 for i in range(30)]) == 30
    assert admitted(limiter, record, [6030.0 + i * 0.01 for i in range(40)]) == 30
    # a minute after the first 30 they have left the window, the later 30 have not
    assert admitted(limiter, record, [6061.5 + i * 0.01 for i in range(40)]) == 30
    # long after, everything has rolled off
    assert admitted(limiter, record, [6300.0 + i * 0.01 for i in range(70)]) == 60


@pytest.mark.parametrize("start", [6000.0, 6059.999, 6030.5])
def test_any_span_of_one_period_admits_at_most_the_limit(start: float) -> None:
    limiter, record = SlidingWindowLimiter(), key({"per_minute": 100})
    times = [start + i * 0.05 for i in range(60 * 20 * 3)]  # 20/s for three minutes
    allowed = [t for t in times if hit(limiter, record, t).allowed]
    for i, first in enumerate(allowed):
        in_span = sum(1 for t in allowed[i:] if t < first + 60)
        assert in_span <= 101, (first, in_span)


def test_the_tightest_of_key_and_team_limits_applies() -> None:
    limiter = SlidingWindowLimiter()
    record = key(
        {"per_second": 100, "per_hour": 1000}, team=TeamPolicy("team_1", {"per_minute": 3})
    )
    results = [hit(limiter, record, 7200.0 + i * 0.001) for i in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert results[2].rate.limit == 3 and results[2].rate.remaining == 0


def test_a_denied_request_is_not_counted() -> None:
    limiter, record = SlidingWindowLimiter(), key({"per_second": 1, "per_minute": 100})
    assert hit(limiter, record, 10.0).allowed
    for _ in range(50):
        assert not hit(limiter, record, 10.5).allowed
    assert hit(limiter, record, 12.0).allowed  # the minute window saw 2, not 52


def test_prune_forgets_old_windows() -> None:
    limiter, record = SlidingWindowLimiter(), key({"per_second": 5})
    hit(limiter, record, 100.0)
    limiter.prune(100.5)
    assert limiter._windows
    limiter.prune(102.5)
    assert not limiter._windows


@pytest.mark.parametrize(
    ("ips", "team_ips", "client", "allowed"),
    [
        (None, None, "203.0.113.9", True),
        (("10.0.0.0/8",), None, "10.1.2.3", True),
        (("10.0.0.0/8",), None, "11.1.2.3", False),
        (("10.0.0.0/8",), None, None, False),
        (("10.0.0.0/8",), None, "not-an-ip", False),
        (("2001:db8::/32",), None, "2001:db8::7", True),
        (("2001:db8::/32",), None, "::ffff:10.1.2.3", False),
        (("10.0.0.0/8", "192.0.2.1/32"), None, "192.0.2.1", True),
        (None, ("10.0.0.0/8",), "11.0.0.1", False),
        (("0.0.0.0/0",), ("10.0.0.0/8",), "10.9.9.9", True),
    ],
)
def test_ip_allowlists(ips, team_ips, client, allowed) -> None:  # type: ignore[no-untyped-def]
    team = TeamPolicy("team_1", {}, team_ips) if team_ips else None
    assert ip_allowed(key(ips=ips, team=team), client) is allowed
