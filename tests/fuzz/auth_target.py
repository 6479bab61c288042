"""Coverage-guided fuzz target over what a proxy can hand keystile, and what people type.

One input is one case, written as text so the corpus (``tests/fuzz/corpus/``) reads
as requests and a crash input can be read and replayed by hand. The first line's
first word says what the rest is:

``nginx``, ``envoy``, ``forward``, ``grpc`` (Envoy's ``headers`` map) or ``grpc-raw``
(``header_map`` with ``raw_value``), then the peer (``-``: none) and, for gRPC, the
``attributes.source`` address; the next line is ``METHOD TARGET`` as the auth request
arrived (for gRPC: the client's method and path), then the Host, then one header a
line (``Name: value``; lines split on ``\\n`` only, so a value may hold ``\\r``)::

    nginx 127.0.0.1
    GET /auth/nginx
    api.local
    X-Original-URI: /v1/chat/completions
    Authorization: Bearer ks_fuzz_chat_0001

The adapter's ``facts``, then :meth:`Rules.screen`, a lookup in a fixed set of
records, :meth:`Rules.decide`, :meth:`Rules.grant` and the adapter's ``render``:
as :class:`keystile.gate.Gate` does, without a store. A failure is any exception,
a status of 500 or more but for a reason that means it (503 ``*_unavailable``), an
allow without one of :data:`VALID` in the request's headers or from an untrusted
peer, or a CR, LF or NUL in a rendered header the request did not bring.

``signin`` (line 2: the Content-Type, the rest: the body) is the sign-in form's
reader; ``keyform`` (the rest: a URL-encoded body) the UI's key forms, for an admin
and for a member; ``field NAME`` (the rest: the text) the field parsers
(numbers, emails, durations, return URLs). Only what each documents may escape.
Any other first word picks one of these by the input's first byte, so random bytes
reach every kind.

By hand: ``python -m tests.fuzz.auth_target [libFuzzer options] [corpus dirs]``
(atheris needed; tests/fuzz/test_fuzz.py runs it for KEYSTILE_FUZZ_SECONDS).
"""

from __future__ import annotations

import sys
from contextlib import nullcontext, suppress
from typing import Any
from urllib.parse import parse_qsl

if __name__ == "__main__":  # coverage guidance for keystile's code, when fuzzing
    import atheris

    _instrumented: Any = atheris.instrument_imports(include=["keystile"])
else:
    _instrumented = nullcontext()

with _instrumented:
    from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
    from google.rpc import code_pb2
    from multidict import CIMultiDict, MultiDict, MultiDictProxy

    from keystile.core import durations, emails, numbers, returnurl
    from keystile.core.clientip import TrustedProxies, parse_networks
    from keystile.core.decide import Decision, Facts, Presented, Rules
    from keystile.core.errors import InvalidInput
    from keystile.core.model import SESSION, KeyRecord
    from keystile.core.reasons import Outcome
    from keystile.core.routes import load_routes
    from keystile.manage.permissions import Caller
    from keystile.serve.adapters import envoy_grpc, envoy_http, forward_auth, nginx
    from keystile.serve.adapters.base import Adapter, Inbound, Reply
    from keystile.web.pages import BadForm, read_form
    from keystile.web.ui import forms
    from keystile.web.ui.common import Viewer

NOW = 1_800_000_000.0
ROUTES = [
    {"name": "chat", "path": "/v1/chat/*", "scopes": ["chat"], "methods": ["POST"],
     "inject": {"Authorization": {"value": "sk-upstream", "format": "Bearer {}"}}},
    {"name": "admin", "path": "/admin/*", "scopes": ["admin"]},
    {"name": "models", "path": "/v1/models"},
    {"name": "app", "path": "/app/*", "host": "app.local", "sessions": True},
]  # fmt: skip
TABLE, _errors = load_routes(ROUTES, {}, "deny")
assert not _errors, _errors
RULES = Rules(TABLE)
TRUSTED = TrustedProxies(parse_networks(["127.0.0.0/8", "10.0.0.0/8"]))


def _record(id: str, **fields: Any) -> KeyRecord:
    base: dict[str, Any] = {"key_hash": "h", "hash_scheme": "sha256", "display_prefix": "ks_",
                            "name": id, "created_at": 0.0, "updated_at": 0.0}  # fmt: skip
    return KeyRecord(id=id, **{**base, **fields})


# token -> record: what the store would hold
RECORDS = {
    "ks_fuzz_chat_0001": _record("key_chat", scopes=("chat",), owner="ana@example.com"),
    "ks_fuzz_admin_0002": _record("key_admin", scopes=("*", "admin")),
    "ks_fuzz_office_0003": _record("key_office", scopes=("chat",), allowed_ips=("10.0.0.0/8",)),
    "ks_fuzz_revoked_0004": _record("key_revoked", scopes=("chat",), revoked_at=1.0),
    "ks_fuzz_expired_0005": _record("key_expired", scopes=("chat",), expires_at=NOW - 1),
    "ks_fuzz_disabled_0006": _record("key_disabled", scopes=("chat",), enabled=False),
}
SESSIONS = {
    "sess_fuzz_ana_0007": _record("sess_ana", kind=SESSION, user_id="user_ana", role="member",
                                  owner="ana@example.com", scopes=("chat",)),
    "sess_fuzz_old_0008": _record("sess_old", kind=SESSION, user_id="user_bo", role="member",
                                  expires_at=NOW - 1),
}  # fmt: skip
# the credentials an allow may be for: active, in the store
VALID = frozenset({"ks_fuzz_chat_0001", "ks_fuzz_admin_0002", "ks_fuzz_office_0003",
                   "sess_fuzz_ana_0007"})  # fmt: skip
HTTP_ADAPTERS: dict[str, Adapter] = {
    "nginx": nginx.ADAPTER, "envoy": envoy_http.ADAPTER, "forward": forward_auth.ADAPTER,
}  # fmt: skip
KINDS = ("nginx", "envoy", "forward", "grpc", "grpc-raw", "signin", "keyform", "field")
FIELDS = ("limit", "days", "page_size", "choice", "email", "duration", "instant", "day",
          "return", "format_instant")  # fmt: skip
RETURN_HOSTS = ("app.local", ".example.com")
UNSAFE = ("\r", "\n", "\0")


class Finding(AssertionError):
    """An input keystile mishandled (the fuzzer's crash)."""


def TestOneInput(data: bytes) -> None:
    # what aiohttp hands over (UTF-8, undecodable bytes kept as surrogates); the raw
    # listener's latin-1 text is a subset of what this reaches
    text = data.decode("utf-8", "surrogateescape")
    first, _, rest = text.partition("\n")
    words = first.split(" ")
    kind = words[0]
    if kind not in KINDS:
        kind = KINDS[data[0] % len(KINDS)] if data else "nginx"
    if kind in HTTP_ADAPTERS or kind.startswith("grpc"):
        auth_case(kind, words[1:], rest)
    elif kind == "signin":
        signin_case(rest)
    elif kind == "keyform":
        keyform_case(rest)
    else:
        name = words[1] if len(words) > 1 and words[1] in FIELDS else FIELDS[len(rest) % 10]
        field_case(name, rest)


# -- the auth path ---------------------------------------------------------------------------


def auth_case(kind: str, words: list[str], rest: str) -> None:
    peer = words[0] if words and words[0] != "-" else None
    source = words[1] if len(words) > 1 else ""
    request_line, _, rest = rest.partition("\n")
    method, _, target = request_line.partition(" ")
    host, _, rest = rest.partition("\n")
    pairs = [_header(line) for line in rest.split("\n") if line]
    if kind in HTTP_ADAPTERS:
        adapter = HTTP_ADAPTERS[kind]
        facts = adapter.facts(Inbound(method, target, host, CIMultiDict(pairs), peer), TRUSTED)
        decision = judge(facts)
        grant = _grant(decision)
        reply = adapter.render(decision, grant)
        check(decision, facts, pairs, reply.status, reply.headers, peer)
        _reply_types(reply)
    else:
        request = check_request(kind == "grpc-raw", method, target, host, pairs, source)
        facts = envoy_grpc.facts(request, peer, TRUSTED)
        decision = judge(facts)
        answer = envoy_grpc.render(decision, _grant(decision))
        if answer.status.code == code_pb2.OK:
            status = 200
            rendered = [(o.header.key, o.header.value) for o in answer.ok_response.headers]
        else:
            status = answer.denied_response.status.code
            rendered = [(o.header.key, o.header.value) for o in answer.denied_response.headers]
        answer.SerializeToString()  # what the server sends must encode
        check(decision, facts, pairs, status, rendered, peer)


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name, value.removeprefix(" ")


def check_request(raw: bool, method: str, path: str, host: str, pairs: list[tuple[str, str]],
                  source: str) -> CheckRequest:  # fmt: skip
    request = CheckRequest()
    http = request.attributes.request.http
    # protobuf strings are Unicode without surrogates (Envoy sends valid UTF-8)
    http.method, http.path, http.host = _proto(method), _proto(path), _proto(host)
    if raw:
        for name, value in pairs:
            raw_value = value.encode("utf-8", "surrogateescape")
            http.header_map.headers.add(key=_proto(name).lower(), raw_value=raw_value)
    else:
        for name, value in pairs:  # a map: Envoy joins repeated headers with ","
            key = _proto(name).lower()
            old = http.headers.get(key)
            http.headers[key] = _proto(value) if old is None else f"{old},{_proto(value)}"
    request.attributes.source.address.socket_address.address = _proto(source)
    return request


def _proto(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def judge(facts: Facts) -> Decision:
    """The gate's path with the store replaced by :data:`RECORDS` and :data:`SESSIONS`."""
    screened = RULES.screen(facts)
    if isinstance(screened, Decision):
        return screened
    assert isinstance(screened, Presented)
    record = (SESSIONS if screened.session else RECORDS).get(screened.token)
    return RULES.decide(screened, record, None, NOW)


def _grant(decision: Decision) -> Any:
    if decision.reason is None and decision.record is not None:
        return RULES.grant(decision.record, decision.route, decision.reservation)
    return None


def check(decision: Decision, facts: Facts, pairs: list[tuple[str, str]], status: int,
          headers: Any, peer: str | None) -> None:  # fmt: skip
    reason = decision.reason
    if status >= 500 and (reason is None or reason.outcome is not Outcome.UNAVAILABLE):
        raise Finding(f"status {status} for {reason.code if reason else 'an allow'}")
    if reason is None:
        if not facts.trusted or not TRUSTED.trusts(peer):
            raise Finding(f"an allow from an untrusted peer {peer!r}")
        if decision.record is None:
            raise Finding("an allow without a record")
        if not any(token in value for _, value in pairs for token in VALID):
            raise Finding(f"an allow ({decision.record.id}) without a valid credential")
        if status != 200:
            raise Finding(f"an allow rendered as {status}")
    brought = any(c in value for _, value in pairs for c in UNSAFE)
    for name, value in headers:
        if not isinstance(name, str) or not isinstance(value, str):
            raise Finding(f"a header that is not text: {name!r}: {value!r}")
        if not brought and any(c in name or c in value for c in UNSAFE):
            raise Finding(f"a rendered header with CR, LF or NUL: {name!r}: {value!r}")


def _reply_types(reply: Reply) -> None:
    if not isinstance(reply.status, int) or not isinstance(reply.body, bytes):
        raise Finding(f"a reply that is not (int, ..., bytes): {reply!r}")


# -- the sign-in and key forms ---------------------------------------------------------------


class _Content:
    def __init__(self, body: bytes) -> None:
        self.body = body

    async def read(self, n: int) -> bytes:
        return self.body[:n]


class _Request:
    """What :func:`read_form` reads of an aiohttp request."""

    def __init__(self, content_type: str, body: bytes) -> None:
        self.headers = CIMultiDict([("Content-Type", content_type)])
        self.content = _Content(body)


def signin_case(rest: str) -> None:
    content_type, _, body = rest.partition("\n")
    coroutine = read_form(_Request(content_type, body.encode("utf-8", "surrogateescape")))  # type: ignore[arg-type]
    try:
        coroutine.send(None)  # never suspends: the body is all there
    except StopIteration as done:
        form = done.value
    except BadForm:
        return
    else:
        raise Finding("read_form suspended")
    if not isinstance(form, dict) or len(form) > 16:
        raise Finding(f"read_form returned {form!r}")
    rd = form.get("rd") or None
    check_return(rd, returnurl.safe_return(rd, RETURN_HOSTS))


ADMIN = Viewer(SESSIONS["sess_fuzz_ana_0007"], Caller(RECORDS["ks_fuzz_admin_0002"]), "/")
MEMBER = Viewer(SESSIONS["sess_fuzz_ana_0007"], Caller(RECORDS["ks_fuzz_chat_0001"]), "/")


def keyform_case(rest: str) -> None:
    try:
        pairs = parse_qsl(rest, keep_blank_values=True, max_num_fields=64)
    except ValueError:
        return  # read_form's BadForm: never reaches the parsers below
    form = MultiDictProxy(MultiDict(pairs))
    forms.key_values(form)
    for who in (ADMIN, MEMBER):
        try:
            fields = forms.key_fields(form, who)
        except InvalidInput:
            continue
        if not who.is_admin and fields["credential"] is not forms.UNSET:
            raise Finding("a member's form binds a credential")
        for value in fields["limits"].values():
            if not 1 <= value <= numbers.MAX_LIMIT:
                raise Finding(f"a limit out of bounds: {value}")
    with suppress(InvalidInput):
        forms.credential_of(form, "current")


# -- the field parsers -----------------------------------------------------------------------


def field_case(name: str, text: str) -> None:
    try:
        checked_field(name, text)
    except InvalidInput:
        if name not in ("limit", "days", "page_size", "choice"):
            raise
    except emails.InvalidEmail:
        if name != "email":
            raise
    except ValueError as exc:
        if isinstance(exc, InvalidInput | emails.InvalidEmail):
            raise
        if name not in ("duration", "instant", "day"):
            raise


def checked_field(name: str, text: str) -> None:
    ascii_digits = text.isascii() and text.isdigit()
    if name == "limit":
        value = numbers.limit("per_minute", text)
        assert ascii_digits and 1 <= value <= numbers.MAX_LIMIT, (text, value)
    elif name == "days":
        value = numbers.days("expiring", text)
        assert ascii_digits and 1 <= value <= numbers.MAX_DAYS, (text, value)
    elif name == "page_size":
        value = numbers.page_size("limit", text)
        assert ascii_digits and 1 <= value <= numbers.MAX_PAGE, (text, value)
    elif name == "choice":
        value = numbers.choice("expiry", text, forms.PRESETS, also=("never",))
        assert value in forms.PRESETS, (text, value)
    elif name == "email":
        emails.key_or_none(text)
        emails.fold(text)
        address = emails.parse_email(text)
        key = emails.email_key(text)
        assert address == text and text.isascii() and key == emails.fold(text), text
        assert key.count("@") == 1 and "\n" not in key, key
    elif name == "duration":
        seconds = durations.parse_duration(text)
        assert 0 <= seconds <= durations.MAX_DURATION, (text, seconds)
    elif name == "instant":
        durations.parse_instant(text)
    elif name == "day":
        durations.parse_day(text)
    elif name == "return":
        check_return(text, returnurl.safe_return(text, RETURN_HOSTS))
    else:
        try:
            seconds = float(text)
        except ValueError:
            seconds = float(len(text)) * 1e15
        durations.format_instant(seconds)
        durations.format_instant(-seconds)


def check_return(target: str | None, result: str) -> None:
    if result == returnurl.HOME:
        return
    if result != target:
        raise Finding(f"safe_return changed {target!r} into {result!r}")
    if result.startswith("//") or "\\" in result or any(ord(c) < 0x21 for c in result):
        raise Finding(f"safe_return let {target!r} through")
    if not result.startswith("/"):
        host = returnurl.urlsplit(result).hostname or ""
        if not returnurl.host_allowed(host, RETURN_HOSTS):
            raise Finding(f"safe_return sends to another host: {target!r}")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
