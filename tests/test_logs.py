import logging

import orjson
import pytest

from keystile.core import reasons
from keystile.core.decide import Decision, Facts
from keystile.observe.logs import DenialLog, JsonFormatter

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


def test_every_library_s_record_is_one_json_line_without_a_url_password() -> None:
    """asyncpg's pool logs errors with a traceback: under keystile's set-up that is
    one JSON line (the traceback an ``error`` field), and a password in a URL in a
    library's message is masked."""
    import io
    import logging

    import orjson

    from keystile.observe import logs

    touched = [logging.getLogger(name) for name in ("", "keystile", "aiohttp")]
    saved = [(each, each.handlers[:], each.level, each.propagate) for each in touched]
    root = touched[0]
    try:
        logs.setup()
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        try:
            raise ConnectionError("connect to postgresql://app:s3cret-pw@db:5432/k failed\nline 2")
        except ConnectionError:
            logging.getLogger("asyncpg.pool").exception(
                "error on postgresql://app:s3cret-pw@db/k\nsecond line"
            )
        logging.getLogger("some.library").warning("plain")
        lines = stream.getvalue().splitlines()
    finally:
        logging.captureWarnings(False)
        for each, handlers, level, propagate in saved:
            each.handlers[:] = handlers
            each.setLevel(level)
            each.propagate = propagate
    assert len(lines) == 2, lines
    first = orjson.loads(lines[0])
    assert first["logger"] == "asyncpg.pool" and first["level"] == "error"
    assert "s3cret-pw" not in lines[0] and "app:***@db" in first["msg"]
    assert first["error"].startswith("ConnectionError: connect to postgresql://app:***@db")
    assert orjson.loads(lines[1])["msg"] == "plain"
