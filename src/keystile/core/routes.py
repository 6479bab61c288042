"""Routes: which scopes a path needs and which headers reach the upstream.

Configured as ``[[routes]]`` tables in the TOML file, validated with every error
collected, and compiled once at start-up. Injected header values come from
environment variables or files (or plain non-secret literals); they are held in
:class:`Secret` so that no repr, log line or ``config check`` can show them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_HEADER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_METHOD_RE = re.compile(r"[A-Z]{1,16}")
_HOST_RE = re.compile(r"(\*\.)?[a-z0-9.-]{1,253}(:\d{1,5})?")
_BAD_VALUE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HOP_BY_HOP = ("connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade")
RESERVED_HEADERS = frozenset({"host", "content-length", "proxy-authorization", *_HOP_BY_HOP})
RESERVED_PREFIX = "x-keystile-"
ROUTE_KEYS = frozenset({"name", "path", "methods", "host", "scopes", "inject", "sessions",
                        "token_estimate", "price_per_1k_tokens"})  # fmt: skip
MAX_TOKEN_ESTIMATE = 10**9


class Secret:
    """A header value that must never be printed."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


def compile_path(pattern: str) -> re.Pattern[str]:
    """``/v1/chat/completions`` exact; ``/v1/images/*`` that path and all beneath;
    ``*`` inside a pattern is one segment, ``**`` any number of segments."""
    subtree = pattern.endswith("/*")
    body = pattern[:-2] if subtree else pattern
    parts = []
    for piece in re.split(r"(\*\*|\*)", body):
        if piece == "**":
            parts.append(".*")
        elif piece == "*":
            parts.append("[^/]+")
        else:
            parts.append(re.escape(piece))
    regex = "".join(parts) + ("(?:/.*)?" if subtree else "")
    return re.compile(regex)


@dataclass(frozen=True, slots=True, eq=False)
class Slot:
    """An injected header filled from one of several named upstream credentials:
    the one the key (else its team) is bound to, else ``default``."""

    values: Mapping[str, Secret]  # the credentials this route may send, by name
    default: str | None = None

    def pick(self, binding: str | None) -> Secret | None:
        """The value for a key bound to ``binding`` (None: unbound); None: denied."""
        return self.values.get(binding if binding is not None else self.default or "")


@dataclass(frozen=True, slots=True, eq=False)  # identity: a cheap, exact key in memos
class Route:
    name: str
    pattern: str
    path_re: re.Pattern[str]
    methods: frozenset[str]  # empty: any
    host: str | None  # lower-case; "*.example.com" matches sub-domains
    scopes: frozenset[str]  # all are required
    inject: tuple[tuple[str, Secret], ...]
    sessions: bool = False  # a signed-in browser may use it (API keys always may)
    # headers whose value is the named upstream credential the key (else its team)
    # is bound to: (header, slot)
    slots: tuple[tuple[str, Slot], ...] = ()
    # token budgets: tokens reserved for a request before its usage is reported
    # (None: the usage.token_estimate setting), and its price (a cost column)
    token_estimate: int | None = None
    price_per_1k_tokens: float | None = None

    def matches(self, method: str, host: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        if self.host is not None and not _host_matches(self.host, host):
            return False
        return self.path_re.fullmatch(path) is not None


def _host_matches(wanted: str, host: str) -> bool:
    host = host.lower()
    if ":" in host and ":" not in wanted:
        host = host.rsplit(":", 1)[0]
    if wanted.startswith("*."):
        return host.endswith(wanted[1:])
    return host == wanted


class RouteTable:
    """The routes in file order, and what a request matching none gets."""

    def __init__(
        self,
        routes: tuple[Route, ...] = (),
        allow_unmatched: bool = True,
        credentials: Mapping[str, Secret] | None = None,
    ) -> None:
        self.routes = routes
        self.allow_unmatched = allow_unmatched
        # the named upstream credentials ([credentials.NAME]): names may be shown, values never
        self.credentials: Mapping[str, Secret] = credentials or {}
        # clients repeat the same few (method, host, path): remember the answers
        self.match = lru_cache(maxsize=4096)(self._match)

    def __repr__(self) -> str:
        return f"RouteTable(routes={self.routes!r}, allow_unmatched={self.allow_unmatched})"

    def _match(self, method: str, host: str, path: str) -> Route | None:
        """The first route, in file order, that matches."""
        for route in self.routes:
            if route.matches(method, host, path):
                return route
        return None

    def injected_names(self) -> frozenset[str]:
        return frozenset(name.lower() for route in self.routes
                         for name, _ in (*route.inject, *route.slots))  # fmt: skip


def _value(
    where: str, spec: Any, env: Mapping[str, str] | None, errors: list[str]
) -> Secret | None:
    """The injected value ``spec`` names; with ``env`` None only its shape is checked
    and a placeholder comes back (the CLI decides, it never injects)."""
    if isinstance(spec, str):
        spec = {"value": spec}
    if not isinstance(spec, Mapping):
        errors.append(f"{where}: must be a table with env, file or value")
        return None
    sources = [k for k in ("env", "file", "value") if k in spec]
    unknown = set(spec) - {"env", "file", "value", "format"}
    if len(sources) != 1 or unknown:
        errors.append(f"{where}: give exactly one of env, file or value (and optional format)")
        return None
    source = sources[0]
    if env is None:
        return Secret("")
    if source == "env":
        raw = env.get(str(spec["env"]))
        if not raw:
            errors.append(f"{where}: environment variable {spec['env']!r} is not set")
            return None
    elif source == "file":
        try:
            with open(str(spec["file"]), encoding="utf-8") as handle:
                raw = handle.read().strip()
        except OSError as exc:
            errors.append(f"{where}: cannot read file {spec['file']!r}: {exc.strerror}")
            return None
    else:
        raw = str(spec["value"])
    template = str(spec.get("format", "{}"))
    if template.count("{}") != 1:
        errors.append(f"{where}.format={template!r}: must contain {{}} exactly once")
        return None
    value = template.replace("{}", raw)
    if _BAD_VALUE_RE.search(value):
        errors.append(f"{where}: the value contains control characters (not shown)")
        return None
    return Secret(value)


def _slot(
    where: str, spec: Mapping[str, Any], credentials: Mapping[str, Secret], errors: list[str]
) -> Slot | None:
    """``{ credentials = ["a", "b"], default = "a" }``: names of configured credentials."""
    start = len(errors)
    errors.extend(f"{where}: unknown key {k!r} (use credentials and default)"
                  for k in sorted(set(spec) - {"credentials", "default"}))  # fmt: skip
    names = spec["credentials"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        errors.append(f"{where}.credentials={names!r}: a list of credential names")
        return None
    errors.extend(f"{where}.credentials: no [credentials.{n}] is configured"
                  for n in names if n not in credentials)  # fmt: skip
    default = spec.get("default")
    if default is not None and (not isinstance(default, str) or default not in names):
        errors.append(f"{where}.default={default!r}: must be one of the listed credentials")
    if len(errors) > start:
        return None
    return Slot({n: credentials[n] for n in names}, default)


def load_credentials(
    raw: Any, env: Mapping[str, str] | None, errors: list[str]
) -> dict[str, Secret]:
    """``[credentials.NAME]`` tables: env, file or value (and optional format), as a
    route's injected values; ``env`` None: shape only, placeholder values."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        errors.append("credentials: must be tables ([credentials.NAME])")
        return {}
    found = {}
    for name, spec in raw.items():
        where = f"credentials.{name}"
        if not _NAME_RE.fullmatch(str(name)):
            errors.append(f"{where}: name {name!r}: use lower-case letters, digits and _.-")
            continue
        if isinstance(spec, str):  # a bare literal: a secret is never written in the file
            errors.append(f"{where}: must be a table with env, file or value")
            continue
        value = _value(where, spec, env, errors)
        if value is not None:
            found[str(name)] = value
    return found


def _route(
    index: int,
    raw: Any,
    env: Mapping[str, str] | None,
    errors: list[str],
    credentials: Mapping[str, Secret],
) -> Route | None:
    where = f"routes[{index}]"
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: must be a table")
        return None
    start = len(errors)
    errors.extend(f"{where}: unknown key {k!r}" for k in sorted(set(raw) - ROUTE_KEYS))
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        errors.append(f"{where}.name={name!r}: use lower-case letters, digits and _.-")
    path = raw.get("path")
    if not isinstance(path, str) or not path.startswith("/") or "//" in path:
        errors.append(f"{where}.path={path!r}: must start with '/', e.g. /v1/chat/*")
    methods = raw.get("methods", [])
    if not isinstance(methods, list) or not all(
        isinstance(m, str) and _METHOD_RE.fullmatch(m.upper()) for m in methods
    ):
        errors.append(f"{where}.methods={methods!r}: a list such as ['GET', 'POST']")
        methods = []
    host = raw.get("host")
    if host is not None and (not isinstance(host, str) or not _HOST_RE.fullmatch(host.lower())):
        errors.append(f"{where}.host={host!r}: a host name, optionally *.domain")
    scopes = raw.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s for s in scopes):
        errors.append(f"{where}.scopes={scopes!r}: a list of scope names")
        scopes = []
    sessions = raw.get("sessions", False)
    if not isinstance(sessions, bool):
        errors.append(f"{where}.sessions={sessions!r}: true or false")
    estimate = raw.get("token_estimate")
    if estimate is not None and (isinstance(estimate, bool) or not isinstance(estimate, int)
                                 or not 0 <= estimate <= MAX_TOKEN_ESTIMATE):  # fmt: skip
        errors.append(f"{where}.token_estimate={estimate!r}: a whole number of tokens, "
                      f"0 to {MAX_TOKEN_ESTIMATE}")  # fmt: skip
    price = raw.get("price_per_1k_tokens")
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float)
                              or not 0 <= price < 10**6 or price != price):  # fmt: skip
        errors.append(f"{where}.price_per_1k_tokens={price!r}: a price such as 0.002")
    inject: list[tuple[str, Secret]] = []
    slots: list[tuple[str, Slot]] = []
    injections = raw.get("inject", {})
    if not isinstance(injections, Mapping):
        errors.append(f"{where}.inject: must be a table of header = source")
        injections = {}
    for header, spec in injections.items():
        spot = f"{where}.inject.{header}"
        lowered = str(header).lower()
        if not _HEADER_RE.fullmatch(str(header)):
            errors.append(f"{spot}: header names use letters, digits and '-' (no '_')")
        elif lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIX):
            errors.append(f"{spot}: {header!r} cannot be injected")
        elif isinstance(spec, Mapping) and "credentials" in spec:
            slot = _slot(spot, spec, credentials, errors)
            if slot is not None:
                slots.append((str(header), slot))
        else:
            value = _value(spot, spec, env, errors)
            if value is not None:
                inject.append((str(header), value))
    if len(errors) > start:
        return None
    assert isinstance(name, str) and isinstance(path, str)
    return Route(
        name=name,
        pattern=path,
        path_re=compile_path(path),
        methods=frozenset(m.upper() for m in methods),
        host=host.lower() if isinstance(host, str) else None,
        scopes=frozenset(scopes),
        inject=tuple(inject),
        sessions=sessions is True,
        slots=tuple(slots),
        token_estimate=estimate,
        price_per_1k_tokens=None if price is None else float(price),
    )


def load_routes(
    raw: Any,
    env: Mapping[str, str],
    unmatched: str | None,
    *,
    secrets: bool = True,
    credentials: Any = None,
) -> tuple[RouteTable, list[str]]:
    """Compile ``[[routes]]``, the ``[credentials.NAME]`` they may name and the
    unmatched-request policy; returns (table, errors). ``secrets=False``: injected
    values are checked for shape only, never read."""
    source_env = env if secrets else None
    errors: list[str] = []
    named = load_credentials(credentials, source_env, errors)
    if raw is None:
        raw = []
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        return RouteTable(), [*errors, "routes: must be an array of tables ([[routes]])"]
    routes = []
    for index, item in enumerate(raw):
        route = _route(index, item, source_env, errors, named)
        if route is not None:
            routes.append(route)
    names = [r.name for r in routes]
    errors.extend(f"routes: name {n!r} is used twice" for n in sorted(set(names))
                  if names.count(n) > 1)  # fmt: skip
    if unmatched not in (None, "allow", "deny"):
        errors.append(f"auth.unmatched={unmatched!r}: use 'allow' or 'deny'")
    default = "deny" if routes else "allow"
    return RouteTable(tuple(routes), (unmatched or default) == "allow", named), errors
