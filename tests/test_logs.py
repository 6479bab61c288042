import logging

import orjson
import pytest

from keystile import reasons
from keystile.decide import Decision, Facts
from keystile.logs import DenialLog, JsonFormatter

from .conftest import Clock


def facts(target: str = "/v1/chat?secret=1") -> Facts:
    return Facts("nginx", "POST", "api", target, {}, "198.51.100.7")  # type: ignore[arg-type]


def test_a_denial_is_one_line_without_the_query(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "keystile.decisions")
    DenialLog(clock=Clock())(facts(), Decision(reasons.INVALID_API_KEY))
    (record,) = caplog.records
    line = orjson.loads(JsonFormatter().format(record))
    assert line["reason"] == "invalid_api_key" and line["path"] == "/v1/chat"
    assert "secret" not in str(line)


def test_a_flood_of_denials_is_capped_and_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "keystile.decisions")
    clock = Clock()
    denials = DenialLog(per_second=10, clock=clock)
    for _ in range(1000):
        denials(facts(), Decision(reasons.INVALID_API_KEY))
    denials(facts(), Decision(reasons.MISSING_API_KEY))
    assert len(caplog.records) == 10
    clock.now += 1.0
    denials.tick()  # a quiet second still reports what was left out
    summary = caplog.records[-1]
    assert summary.levelno == logging.WARNING and "991 more denials" in summary.getMessage()
    assert summary.fields["not_logged"] == {"invalid_api_key": 990, "missing_api_key": 1}  # type: ignore[attr-defined]
    denials(facts(), Decision(reasons.INVALID_API_KEY))
    assert len(caplog.records) == 12  # a new second, a new allowance
