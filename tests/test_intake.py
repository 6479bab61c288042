"""Usage intake (token budgets): nginx's syslog datagrams and Envoy's access-log
stream, parsed strictly and handed to a ``report`` callable; garbage, floods and
unknown reservations cost a counter bump each and never break anything."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from aiohttp import web
from envoy.data.accesslog.v3.accesslog_pb2 import HTTPAccessLogEntry
from envoy.service.accesslog.v3.als_pb2 import StreamAccessLogsMessage, StreamAccessLogsResponse
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from keystile import config
from keystile.core.clientip import TrustedProxies, parse_networks
from keystile.core.errors import ConfigError
from keystile.core.keys import Hasher
from keystile.manage.service import KeyService
from keystile.serve.grpc_listener import peer_address
from keystile.serve.intake import MAX_TOKENS, Intake, Malformed, usage
from keystile.serve.intake.accesslog import AccessLogService, entry_usage
from keystile.serve.intake.syslog import SyslogIntake, SyslogListener, parse
from keystile.server import AUTHORIZER, make_app, make_grpc_listener, usage_report
from keystile.store import Store
from tests.e2e.harness import KEYSTILE, Keystile, free_port
from tests.waiting import wait_until_async

RES = "key_AbC123.1796700000.nonce.sig"
# what nginx 1.22 sends for the shipped keystile_usage format (captured from it)
LINE = b"<190>Dec  7 17:52:28 keystile: usage1 %s %s 8cade30891cd605a304246a522a473c8"
STREAM = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"


def line(reservation: str = RES, tokens: str = "1874") -> bytes:
    return LINE % (reservation.encode(), tokens.encode())


class Recorder:
    """A ``report`` that remembers its calls; answers ``answer`` (or raises it)."""

    def __init__(self, answer: bool | Exception = True) -> None:
        self.calls: list[tuple[str, int]] = []
        self.answer = answer
        self.arrived = asyncio.Event()

    async def __call__(self, reservation: str, tokens: int) -> bool:
        self.calls.append((reservation, tokens))
        self.arrived.set()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


# -- the shared checks ---------------------------------------------------------------


def test_usage_takes_a_reservation_and_a_count() -> None:
    assert usage(RES, "1874") == (RES, 1874)
    assert usage(RES, "0") == (RES, 0)
    assert usage(RES, str(MAX_TOKENS)) == (RES, MAX_TOKENS)
    assert usage("a" * 120, "7") == ("a" * 120, 7)


@pytest.mark.parametrize(("reservation", "tokens"), [(RES, "-"), (RES, ""), ("-", "12"),
                                                     ("", "12"), ("-", "-")])  # fmt: skip
def test_nothing_to_report_without_a_count_or_a_reservation(reservation: str, tokens: str) -> None:
    assert usage(reservation, tokens) is None


@pytest.mark.parametrize(
    ("reservation", "tokens"),
    [
        (RES, "-1"),
        (RES, "1.5"),
        (RES, "1e3"),
        (RES, " 12"),
        (RES, "12,13"),
        (RES, "0x10"),
        (RES, str(MAX_TOKENS + 1)),
        (RES, "99999999999"),
        (RES, "١٢"),  # Arabic-Indic digits: int() would take them
        ("a" * 121, "12"),
        ("key AbC", "12"),
        ("key/AbC", "12"),
        ('key"AbC', "12"),
        ("key\\x22AbC", "12"),
        ("kéy", "12"),
        ("key\nAbC", "12"),
    ],
)
def test_anything_else_is_malformed(reservation: str, tokens: str) -> None:
    with pytest.raises(Malformed):
        usage(reservation, tokens)


# -- nginx: syslog datagrams ---------------------------------------------------------


def test_the_line_nginx_sends() -> None:
    assert parse(line()) == (RES, 1874)
    assert parse(line(tokens="0")) == (RES, 0)
    assert parse(line(tokens="-")) is None  # the upstream sent no count
    assert parse(line(reservation="-")) is None
    # a syslog relay's trailing newline; a config without nohostname
    assert parse(line() + b"\n") == (RES, 1874)
    with_host = b"<190>Dec 17 07:02:28 gw-1.example keystile: usage1 " + RES.encode() + b" 5 -"
    assert parse(with_host) == (RES, 5)


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\x00" * 64,
        b"\xff\xfe garbage",
        b"<190>Dec  7 17:52:28 nginx: usage1 %s 12 id" % RES.encode(),  # another tag
        b"<190>Dec  7 17:52:28 keystile: usage2 %s 12 id" % RES.encode(),  # another format
        b"<190>Dec  7 17:52:28 keystile: %s 12 id" % RES.encode(),
        b"<190>Dec  7 17:52:28 keystile: usage1 %s 12" % RES.encode(),  # a field short
        b"<190>Dec  7 17:52:28 keystile: usage1 %s 12 id extra" % RES.encode(),
        b"<190>Dec  7 17:52:28 keystile: usage1 %s  12 id" % RES.encode(),
        b"<190>Dec  7 17:52:28 keystile: usage1 %s 1 2 id" % RES.encode(),  # a header "1 2"
        b"<190>Dec  7 17:52:28 keystile: usage1 a\\x22b\\x5Cc \\xC3\\xA9 - id",  # escaped junk
        b"Dec  7 17:52:28 keystile: usage1 %s 12 id" % RES.encode(),  # no PRI
        b"<1900>Dec  7 17:52:28 keystile: usage1 %s 12 id" % RES.encode(),
        b"<190>2026-12-07T17:52:28Z keystile: usage1 %s 12 id" % RES.encode(),  # RFC 5424
        line(tokens="-3"),
        line(tokens=str(MAX_TOKENS + 1)),
        line(reservation="r" * 121),
        line() + b"\n\n",
        line() + b" " * 600,
        b"<190>Dec  7 17:52:28 keystile: usage1 " + b"r" * 100_000 + b" 1 id",
    ],
)
def test_every_other_datagram_is_malformed(datagram: bytes) -> None:
    with pytest.raises(Malformed):
        parse(datagram)


@pytest.fixture
async def syslog() -> AsyncIterator[tuple[SyslogListener, Recorder, socket.socket]]:
    recorder = Recorder()
    listener = SyslogListener(recorder)
    port = free_port()
    await listener.start(("127.0.0.1", port), reuse_port=False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(("127.0.0.1", port))
    yield listener, recorder, sender
    sender.close()
    await listener.close(1.0)


async def settle(listener: SyslogListener, sent: int, interval: float = 0.01) -> None:
    """Until every one of ``sent`` datagrams was taken and its report has run."""
    intake = listener.intake

    def taken() -> tuple[int, int]:  # (datagrams taken, reports still running)
        return sum(intake.tally.counts.values()), len(intake.running)

    await wait_until_async(taken, lambda seen: seen[0] >= sent and not seen[1],
                           interval=interval, what=f"{sent} datagrams taken")  # fmt: skip


async def test_a_datagram_becomes_a_report(
    syslog: tuple[SyslogListener, Recorder, socket.socket],
) -> None:
    listener, recorder, sender = syslog
    sender.send(line())
    sender.send(line(reservation="other.1.n.s", tokens="-"))  # nothing to report
    await settle(listener, 2)
    assert recorder.calls == [(RES, 1874)]
    assert listener.intake.tally.counts == {"counted": 1, "unreported": 1}


async def test_a_flood_of_garbage_is_counted_not_logged(
    syslog: tuple[SyslogListener, Recorder, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    listener, recorder, sender = syslog
    caplog.set_level(logging.INFO)
    garbage = [b"", b"\x00" * 512, b"x" * 8000, line(tokens="-1"), b"<190>" + bytes(range(256))]
    for batch in range(1, 401):
        for datagram in garbage:
            sender.send(datagram)
        # each batch taken before the next is sent: never more than a kernel buffer's
        # worth waiting, so none is lost however slowly the loop gets to run
        await settle(listener, batch * len(garbage), interval=0.001)
    sender.send(line())
    await settle(listener, 2001)
    assert recorder.calls == [(RES, 1874)]
    assert listener.intake.tally.counts == {"malformed": 2000, "counted": 1}
    said = [r for r in caplog.records if r.name.startswith("keystile")]
    assert len(said) == 1, said  # one summary, not a line per datagram
    assert "malformed" in said[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("answer", [False, RuntimeError("budget store down")])
async def test_unknown_or_failing_reports_break_nothing(
    syslog: tuple[SyslogListener, Recorder, socket.socket], answer: bool | Exception
) -> None:
    listener, recorder, sender = syslog
    recorder.answer = answer
    for n in range(5):
        sender.send(line(reservation=f"forged.{n}.n.s"))
    await settle(listener, 5)
    outcome = "ignored" if answer is False else "failed"
    assert listener.intake.tally.counts == {outcome: 5}
    recorder.answer = True  # and the listener still works
    sender.send(line())
    await settle(listener, 6)
    assert recorder.calls[-1] == (RES, 1874)


async def test_reports_run_a_bounded_number_at_a_time() -> None:
    release = asyncio.Event()
    calls = []

    async def slow(reservation: str, tokens: int) -> bool:
        calls.append(reservation)
        await release.wait()
        return True

    intake = Intake(slow, "test", limit=3)
    protocol = SyslogIntake(intake)
    for n in range(10):
        protocol.datagram_received(line(reservation=f"r.{n}"), ("127.0.0.1", 5000))
    await wait_until_async(lambda: len(calls), lambda n: n >= 3, what="3 reports started")
    assert len(calls) == 3  # started in one go: a fourth would have started with them
    assert intake.tally.counts == {"dropped": 7}
    release.set()
    await intake.close(1.0)
    assert intake.tally.counts == {"dropped": 7, "counted": 3}


async def test_a_datagram_from_off_the_machine_is_dropped() -> None:
    recorder = Recorder()
    intake = Intake(recorder, "test")
    protocol = SyslogIntake(intake)
    protocol.datagram_received(line(), ("192.0.2.9", 514))
    protocol.datagram_received(line(), ("::ffff:192.0.2.9", 514, 0, 0))
    protocol.datagram_received(line(), ("::1", 514, 0, 0))
    await intake.close(1.0)
    assert intake.tally.counts == {"untrusted": 2, "counted": 1}


async def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        for reuse_port in (False, True):  # alone, and as one of --workers N
            with pytest.raises(ConfigError, match=f"usage_syslog_listen 127.0.0.1:{port}: "
                               "Address already in use"):  # fmt: skip
                await SyslogListener(Recorder()).start(("127.0.0.1", port), reuse_port)


async def test_workers_share_the_port() -> None:
    port = free_port()
    first, second = SyslogListener(Recorder()), SyslogListener(Recorder())
    await first.start(("127.0.0.1", port), reuse_port=True)
    try:
        await second.start(("127.0.0.1", port), reuse_port=True)
        await second.close(1.0)
    finally:
        await first.close(1.0)


# -- settings ------------------------------------------------------------------------


def test_the_syslog_address_must_be_loopback(tmp_path: Path) -> None:
    env = {"KEYSTILE_DB": str(tmp_path / "k.db")}
    assert config.load(env).usage_syslog_listen is None
    for given, wanted in (("127.0.0.1:8702", ("127.0.0.1", 8702)), ("[::1]:8702", ("::1", 8702)),
                          ("127.0.0.5:9", ("127.0.0.5", 9))):  # fmt: skip
        loaded = config.load({**env, "KEYSTILE_USAGE_SYSLOG_LISTEN": given})
        assert loaded.usage_syslog_listen == wanted
    for given in ("0.0.0.0:8702", "192.0.2.1:8702", "[::]:8702", "localhost:8702", "8702"):
        with pytest.raises(ConfigError, match="KEYSTILE_USAGE_SYSLOG_LISTEN"):
            config.load({**env, "KEYSTILE_USAGE_SYSLOG_LISTEN": given})
    toml = tmp_path / "k.toml"
    toml.write_text('[usage]\nsyslog_listen = "127.0.0.1:8702"\ntokens_header = "X-Total"\n')
    loaded = config.load({**env, "KEYSTILE_CONFIG": str(toml)})
    assert loaded.usage_syslog_listen == ("127.0.0.1", 8702)
    assert loaded.usage_tokens_header == "x-total"
    assert ("KEYSTILE_USAGE_SYSLOG_LISTEN", "127.0.0.1:8702") in [
        row[:2] for row in config.describe(loaded)
    ]


def test_the_tokens_header_is_a_header_name(tmp_path: Path) -> None:
    env = {"KEYSTILE_DB": str(tmp_path / "k.db")}
    assert config.load(env).usage_tokens_header == "x-usage-total-tokens"
    for given in ("x tokens", "x_tokens", "x-tökens", "a:b"):
        with pytest.raises(ConfigError, match="KEYSTILE_USAGE_TOKENS_HEADER"):
            config.load({**env, "KEYSTILE_USAGE_TOKENS_HEADER": given})


# -- Envoy: the access-log service ---------------------------------------------------


def entry(reservation: str | None = RES, tokens: str | None = "1874",
          header: str = "x-usage-total-tokens") -> HTTPAccessLogEntry:  # fmt: skip
    made = HTTPAccessLogEntry()
    if reservation is not None:
        made.request.request_headers["x-keystile-reservation"] = reservation
    if tokens is not None:
        made.response.response_headers[header] = tokens
    return made


def test_an_entry_s_usage() -> None:
    header = "x-usage-total-tokens"
    assert entry_usage(entry(), header) == (RES, 1874)
    assert entry_usage(entry(tokens=None), header) is None
    assert entry_usage(entry(reservation=None), header) is None
    assert entry_usage(entry(header="x-other"), "x-other") == (RES, 1874)
    assert entry_usage(entry(header="x-other"), header) is None
    for reservation, tokens in ((RES, "12,13"), (RES, "-4"), ("bad res", "1"), ("r" * 121, "1")):
        with pytest.raises(Malformed):
            entry_usage(entry(reservation, tokens), header)


def message(*entries: HTTPAccessLogEntry) -> StreamAccessLogsMessage:
    made = StreamAccessLogsMessage()
    made.identifier.log_name = "keystile_usage"
    made.http_logs.log_entry.extend(entries)
    return made


@pytest.fixture
async def als() -> AsyncIterator[tuple[AccessLogService, Recorder, int]]:
    recorder = Recorder()
    service = AccessLogService(recorder, TrustedProxies(parse_networks(["127.0.0.1/32"])),
                               peer_address, "X-Usage-Total-Tokens")  # fmt: skip
    server = grpc.aio.server()
    service.add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield service, recorder, port
    await server.stop(1.0)
    await service.close(1.0)


async def send(port: int, *messages: StreamAccessLogsMessage) -> StreamAccessLogsResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_unary(
            STREAM,
            request_serializer=StreamAccessLogsMessage.SerializeToString,
            response_deserializer=StreamAccessLogsResponse.FromString,
        )
        answer: StreamAccessLogsResponse = await call(iter(messages), timeout=5)
        return answer


async def test_a_stream_of_entries_becomes_reports(
    als: tuple[AccessLogService, Recorder, int],
) -> None:
    service, recorder, port = als
    second = message(entry("b.2.n.s", "7"), entry(tokens="-1"), entry("-", "9"))
    await send(port, message(entry(), entry(tokens=None)), second)
    await service.intake.close(1.0)
    assert sorted(recorder.calls) == [("b.2.n.s", 7), (RES, 1874)]
    assert service.tally.counts == {"counted": 2, "unreported": 2, "malformed": 1}


async def test_an_untrusted_peer_is_refused() -> None:
    recorder = Recorder()
    service = AccessLogService(recorder, TrustedProxies(parse_networks(["10.0.0.0/8"])),
                               peer_address)  # fmt: skip
    server = grpc.aio.server()
    service.add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await send(port, message(entry()))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await server.stop(1.0)
    assert recorder.calls == []
    assert service.tally.counts == {"untrusted": 1}


CHECK = "/envoy.service.auth.v3.Authorization/Check"


async def reservation_for(port: int, key: str) -> str:
    """The reservation keystile's gRPC listener hands Envoy on an allow of ``key``."""
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "POST", "/v1/chat/completions", "api"
    http.headers["x-api-key"] = key
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(CHECK, request_serializer=CheckRequest.SerializeToString,
                                   response_deserializer=CheckResponse.FromString)  # fmt: skip
        response: CheckResponse = await call(request, timeout=5)
    assert response.status.code == 0, response
    found = [option.header.value for option in response.ok_response.headers
             if option.header.key == "x-keystile-reservation"]  # fmt: skip
    assert len(found) == 1, response
    return found[0]


async def test_keystile_s_grpc_listener_settles_its_own_reservations(
    settings: config.Settings, db_path: Path
) -> None:
    async with await Store.open(db_path) as store:
        made = await KeyService(store, Hasher()).create(
            "llm", scopes=["chat"], limits={"tokens_per_day": 1000}
        )
    app = make_app(dataclasses.replace(settings, usage_tokens_header="x-tokens"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listener = make_grpc_listener(app, reuse_port=False)
    port = free_port()
    await listener.start(("127.0.0.1", port))
    (usage,) = listener.companions
    assert isinstance(usage, AccessLogService)
    try:
        first, second = [await reservation_for(port, made.key) for _ in range(2)]
        await send(port, message(
            entry(first, "300", header="x-tokens"),
            entry(second, "20"),  # not the header keystile was told to read
            entry("forged.1796700000.n.s", "5", header="x-tokens"),
        ))  # fmt: skip
        await send(port, message(entry(first, "300", header="x-tokens")))  # once only
        await usage.intake.close(1.0)
        assert usage.tally.counts == {"counted": 1, "unreported": 1, "ignored": 2}
    finally:
        await listener.close(1.0)
        await runner.cleanup()


def test_usage_report_without_budgets_ignores() -> None:
    app = web.Application()
    app[AUTHORIZER] = SimpleNamespace(ledger=None)  # type: ignore[assignment]
    assert asyncio.run(usage_report(app)(RES, 5)) is False


# -- `keystile serve` as users run it -------------------------------------------------


def test_serve_takes_usage_lines_and_a_second_one_cannot_take_the_port(tmp_path: Path) -> None:
    udp = free_udp_port()
    env = {"KEYSTILE_DB": str(tmp_path / "k.db"),
           "KEYSTILE_USAGE_SYSLOG_LISTEN": f"127.0.0.1:{udp}"}  # fmt: skip
    first = Keystile(tmp_path, env).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for datagram in (line(), b"garbage" * 100):  # no budgets: ignored, no harm
                sender.sendto(datagram, ("127.0.0.1", udp))
        for workers in ("1", "2"):  # the parent of --workers N checks before forking
            second = {k: v for k, v in first.env.items() if not k.startswith("KEYSTILE_")}
            second.update(env, KEYSTILE_LISTEN=f"127.0.0.1:{free_port()}",
                          KEYSTILE_WORKERS=workers)  # fmt: skip
            done = subprocess.run([str(KEYSTILE), "serve"], env=second, capture_output=True,
                                  text=True, timeout=30)  # fmt: skip
            assert done.returncode != 0, done.stderr
            taken = f"usage_syslog_listen 127.0.0.1:{udp}: Address already in use"
            assert taken in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
        assert first.proc is not None and first.proc.poll() is None
    finally:
        first.stop()
    assert f"usage lines (syslog) on udp 127.0.0.1:{udp}" in first.log()
    assert "Traceback" not in first.log()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
