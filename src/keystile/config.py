"""Settings: one table of (name, env var, TOML key, default, help), read once at start.

Environment variables win over the TOML file named by ``KEYSTILE_CONFIG``. Every
error is collected and reported together, each naming the setting and the value
(secrets are never echoed).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keystile.core import keys
from keystile.core.clientip import DEFAULT_TRUSTED
from keystile.core.errors import ConfigError, InvalidInput
from keystile.core.routes import RouteTable, load_routes
from keystile.core.urls import redact

MIN_PEPPER_LEN = 16


def default_db_path(env: Mapping[str, str]) -> str:
    """``$XDG_DATA_HOME/keystile/keystile.db``, falling back to ``~/.local/share``."""
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "keystile", "keystile.db")


def _listen(value: Any) -> tuple[str, int]:
    text = str(value)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError("use HOST:PORT, e.g. 127.0.0.1:8700")
    return host.strip("[]"), int(port)


def parse_db(value: Any) -> Path | str:
    """An SQLite file (a path or sqlite:///path), or a postgresql:// URL (kept as text)."""
    text = str(value)
    if text.startswith(("postgresql://", "postgres://")):
        try:
            urlsplit(text).port  # noqa: B018 -- raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"not a PostgreSQL URL: {exc}") from None
        return text
    if text.startswith("sqlite:///"):
        text = text[len("sqlite://") :]
    elif "://" in text:
        raise ValueError("give an SQLite file (a path or sqlite:///path) or a "
                         "postgresql://user@host/database URL")  # fmt: skip
    if not text:
        raise ValueError("must not be empty")
    return Path(text).expanduser()


def _prefix(value: Any) -> str:
    return keys.validate_prefix(str(value))


def _prefixes(value: Any) -> frozenset[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return frozenset(keys.validate_prefix(str(item).strip()) for item in items if str(item).strip())


def _networks(value: Any) -> tuple[Any, ...]:
    from keystile.core.clientip import parse_networks

    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return parse_networks(items)


def _sources(value: Any) -> tuple[Any, ...]:
    from keystile.core.credentials import CredentialSource

    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    sources = tuple(CredentialSource.parse(item) for item in items if item.strip())
    if not sources:
        raise ValueError("name at least one header")
    return sources


def _tokens(value: Any) -> int:
    try:
        if not str(value).isascii():  # int() reads other scripts' digits too
            raise ValueError
        number = int(str(value))
    except ValueError:
        raise ValueError("a whole number of tokens, e.g. 1000") from None
    if not 0 <= number <= 10**9:
        raise ValueError("from 0 to 1000000000")
    return number


def _positive(kind: type[int] | type[float]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        try:
            if isinstance(value, str) and not value.strip().isascii():
                raise ValueError  # int() and float() read other scripts' digits too
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be a {kind.__name__}") from None
        if number <= 0:
            raise ValueError("must be greater than 0")
        return number

    return parse


def _unmatched(value: Any) -> str:
    if value not in ("allow", "deny"):
        raise ValueError("use 'allow' or 'deny'")
    return str(value)


def _non_negative_int(value: Any) -> int:
    try:
        if isinstance(value, str) and not value.strip().isascii():
            raise ValueError  # int() reads other scripts' digits too
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError("must be a whole number") from None
    if number < 0 or isinstance(value, bool):
        raise ValueError("must be 0 or more")
    return number


def _semicolons(value: Any) -> bool:
    """True when ';' in a path is a plain character for the upstream."""
    if value not in ("refuse", "literal"):
        raise ValueError("use 'refuse' or 'literal'")
    return bool(value == "literal")


def _names(value: Any) -> frozenset[str]:
    from keystile.core.copies import credential_names

    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return credential_names(item.strip() for item in items if item.strip())


def _text(value: Any) -> str:
    return str(value)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError("use true or false")


def _seconds(least: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        from keystile.core.durations import parse_duration

        seconds = float(value) if isinstance(value, int | float) else parse_duration(str(value))
        if seconds < least:
            raise ValueError(f"must be at least {least:g} seconds")
        return seconds

    return parse


def _words(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return tuple(item.strip() for item in items if item.strip())


def _origins(value: Any) -> frozenset[str]:
    origins = set()
    for item in _words(value):
        if not item.startswith(("https://", "http://")) or item.count("/") != 2:
            raise ValueError(f"{item!r} is not an origin such as https://app.example.com")
        origins.add(item.lower())
    return frozenset(origins)


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _web_url(value: Any, *, origin_only: bool) -> str:
    """An https URL (http only on a loopback host, for tests), without a trailing slash."""
    from urllib.parse import urlsplit

    text = str(value).strip().rstrip("/")
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        raise ValueError("is not a URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError("use an https:// URL")
    if parts.scheme == "http" and host not in LOOPBACK_HOSTS:
        raise ValueError("use https:// (http:// only for localhost/127.0.0.1 in tests)")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError("give it without query, fragment or user info")
    if origin_only and parts.path not in ("", "/"):
        raise ValueError("give scheme, host and port only (keystile's pages live at "
                         "/_keystile/ of it)")  # fmt: skip
    return text


def _issuer(value: Any) -> str:
    return _web_url(value, origin_only=False)


def _external_url(value: Any) -> str:
    return _web_url(value, origin_only=True)


def _oidc_scopes(value: Any) -> tuple[str, ...]:
    items = value.replace(",", " ").split() if isinstance(value, str) else [str(v) for v in value]
    if "openid" not in items:
        raise ValueError("must include 'openid'")
    return tuple(dict.fromkeys(items))


def _client_auth(value: Any) -> str:
    if value not in ("client_secret_basic", "client_secret_post"):
        raise ValueError("use 'client_secret_basic' or 'client_secret_post'")
    return str(value)


def _domains(value: Any) -> frozenset[str]:
    domains = set()
    from keystile.core.emails import fold

    for item in _words(value):
        domain = fold(item).lstrip("@")  # as emails are compared: A-Z folded, nothing else
        if not domain.isascii():
            raise ValueError(f"{item!r} is not an ASCII domain (write an IDN as xn--...)")
        if "." not in domain or "@" in domain or " " in domain:
            raise ValueError(f"{item!r} is not a domain such as example.com")
        domains.add(domain)
    return frozenset(domains)


def _group_map(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise ValueError('use a table: { "claim value" = "keystile group name" }')
    return tuple((str(claim), str(group)) for claim, group in value.items())


def _skew(value: Any) -> float:
    seconds = _seconds(0)(value)
    if seconds > 600:
        raise ValueError("must be at most 10m (a larger skew accepts stale tokens)")
    return seconds


def _key_scopes(value: Any) -> tuple[str, ...]:
    from keystile.core.model import ADMIN_SCOPE, ALL_SCOPES
    from keystile.manage.fields import check_scopes

    scopes = _words(value)
    if ADMIN_SCOPE in scopes or ALL_SCOPES in scopes:
        raise ValueError("self-service keys cannot hold 'admin' or '*'")
    try:
        return tuple(check_scopes(scopes))
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None


def _expiry(value: Any) -> float:
    return _seconds(60)(value)


def _redis_url(value: Any) -> str:
    """A Redis URL (it may hold a password: errors never echo it, see Setting.secret)."""
    from urllib.parse import urlsplit

    text = str(value).strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("is not a URL such as redis://:PASSWORD@HOST:6379/0") from None
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ValueError("use redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS) "
                         "or unix:///PATH")  # fmt: skip
    return text


def _redis_unavailable(value: Any) -> str:
    if value not in ("deny", "local"):
        raise ValueError("use 'deny' or 'local'")
    return str(value)


def _loopback_listen(value: Any) -> tuple[str, int]:
    """HOST:PORT on loopback: syslog over UDP proves nothing about its sender."""
    from keystile.serve.intake.syslog import loopback

    host, port = _listen(value)
    if not loopback(host):
        raise ValueError("must be a loopback address (127.0.0.1:PORT or [::1]:PORT): anyone "
                         "who can send it a datagram could report any usage")  # fmt: skip
    return host, port


def _header_name(value: Any) -> str:
    text = str(value).strip().lower()
    if not text or not all(c.isalnum() or c == "-" for c in text) or not text.isascii():
        raise ValueError("use a header name of letters, digits and '-', e.g. x-usage-total-tokens")
    return text


def _static_keys(value: Any) -> tuple[str, ...]:
    return tuple(item.strip() for item in str(value).split(",") if item.strip())


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    env: str | None
    toml: str | None  # dotted path in the TOML file
    default: Any
    help: str
    parse: Callable[[Any], Any] = _text
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("config", "KEYSTILE_CONFIG", None, None,
            "Path of the TOML config file.", _text),
    Setting("listen", "KEYSTILE_LISTEN", "server.listen", "127.0.0.1:8700",
            "Address the server listens on, HOST:PORT.", _listen),
    Setting("workers", "KEYSTILE_WORKERS", "server.workers", "1",
            "Server processes sharing the listen ports (SO_REUSEPORT), one event loop each.",
            _positive(int)),
    Setting("admin_listen", "KEYSTILE_ADMIN_LISTEN", "server.admin_listen", None,
            "Serve the admin API (/api/v1) on this HOST:PORT only; unset: on the main "
            "listener.", _listen),
    Setting("grpc_listen", "KEYSTILE_GRPC_LISTEN", "server.grpc_listen", None,
            "Serve Envoy's ext_authz over gRPC (and the gRPC health service) on this "
            "HOST:PORT; unset: no gRPC listener.", _listen),
    Setting("db", "KEYSTILE_DB", "store.db", default_db_path,
            "Key store: an SQLite file path (or sqlite:///path; created 0600, folder 0700), or "
            "a postgresql://user:password@host:port/database URL (see docs/scale-out.md).",
            parse_db),
    Setting("pepper", "KEYSTILE_PEPPER", None, None,
            "Server-side secret: new keys are hashed with HMAC-SHA256 under it. "
            f"At least {MIN_PEPPER_LEN} characters.", _text, secret=True),
    Setting("pepper_file", "KEYSTILE_PEPPER_FILE", "store.pepper_file", None,
            "File holding the pepper (used when KEYSTILE_PEPPER is unset).", _text),
    Setting("admin_key", "KEYSTILE_ADMIN_KEY", None, None,
            "Static admin key (scope 'admin'), checked after the database.", _text, secret=True),
    Setting("static_keys", "KEYSTILE_STATIC_KEYS", None, "",
            "Comma-separated static client keys, checked after the database.",
            _static_keys, secret=True),
    Setting("key_prefix", "KEYSTILE_KEY_PREFIX", "keys.prefix", "ks",
            "Prefix of new keys: 1-16 lower-case letters or digits.", _prefix),
    Setting("accepted_prefixes", "KEYSTILE_ACCEPTED_PREFIXES", "keys.accepted_prefixes",
            "", "Other key prefixes still accepted (after a prefix change).", _prefixes),
    Setting("trusted_proxies", "KEYSTILE_TRUSTED_PROXIES", "auth.trusted_proxies",
            ",".join(DEFAULT_TRUSTED),
            "Peers whose X-Original-*/X-Forwarded-*/X-Real-IP headers are believed (CIDRs).",
            _networks),
    Setting("credential_headers", "KEYSTILE_CREDENTIAL_HEADERS", "auth.credential_headers",
            "authorization,x-api-key",
            "Headers a key is read from; Authorization takes 'Bearer <key>'.", _sources),
    Setting("path_semicolons", "KEYSTILE_PATH_SEMICOLONS", "auth.path_semicolons", "refuse",
            "'refuse' a ';' in a request path (servlet-style upstreams cut ';params' from "
            "segments) or 'literal' when the upstream treats it as a plain character.",
            _semicolons),
    Setting("credential_params", "KEYSTILE_CREDENTIAL_PARAMS", "auth.credential_params",
            "api_key,apikey,api-key,x-api-key,access_token",
            "Query parameter names that hold a credential: a request carrying one is refused "
            "(keystile cannot strip it from the URL).", _names),
    Setting("credential_cookies", "KEYSTILE_CREDENTIAL_COOKIES", "auth.credential_cookies",
            "api_key,apikey,api-key,x-api-key,access_token",
            "Cookie names that hold a credential: a request carrying one is refused "
            "(an empty list in the TOML file: no check).", _names),
    Setting("invalid_key_limit", "KEYSTILE_INVALID_KEY_LIMIT", "auth.invalid_key_limit", "300",
            "Unknown keys a client address may send per minute before further unknown keys "
            "from it are answered 429 (valid keys are never held back); 0: off.",
            _non_negative_int),
    Setting("unmatched", None, "auth.unmatched", None,
            "'allow' or 'deny' a valid key on a path no route matches "
            "(default: deny when routes exist, allow when there are none).", _unmatched),
    Setting("session_cookie_secure", "KEYSTILE_SESSION_COOKIE_SECURE", "sessions.cookie_secure",
            "true", "Session cookie named __Host-keystile with the Secure flag (browsers send it "
            "over HTTPS only). false: cookie keystile_session without Secure, for plain-HTTP "
            "development only.", _flag),
    Setting("session_idle_timeout", None, "sessions.idle_timeout", "1h",
            "A browser session ends after this long without a request (at least 1m).",
            _seconds(60)),
    Setting("session_absolute_timeout", None, "sessions.absolute_timeout", "12h",
            "A browser session ends this long after sign-in, however busy (at least 5m).",
            _seconds(300)),
    Setting("session_member_scopes", None, "sessions.member_scopes", "",
            "Scopes every signed-in member has (admins have every scope); groups add more.",
            _words),
    Setting("session_trusted_origins", None, "sessions.trusted_origins", "",
            "Origins besides the request's own host whose pages may send unsafe requests "
            "with the session cookie (https://app.example.com).", _origins),
    Setting("return_hosts", None, "sessions.return_hosts", "",
            "Hosts an absolute return URL after sign-in may name ('.example.com' also "
            "admits its sub-domains); relative paths are always fine.", _words),
    Setting("login_attempts", None, "sessions.login_attempts", "5",
            "Failed sign-ins for one user name from one address before that pair is locked "
            "out for login_lockout.", _positive(int)),
    Setting("login_lockout", None, "sessions.login_lockout", "15m",
            "How long a locked user name and address pair waits (and the window failures "
            "are counted in).", _seconds(1)),
    Setting("oidc_issuer", "KEYSTILE_OIDC_ISSUER", "oidc.issuer", None,
            "OpenID Connect provider's issuer URL (https://accounts.google.com); its "
            "/.well-known/openid-configuration is read from there.", _issuer),
    Setting("oidc_client_id", "KEYSTILE_OIDC_CLIENT_ID", "oidc.client_id", None,
            "Client id keystile was given when registered at the provider.", _text),
    Setting("oidc_client_secret", "KEYSTILE_OIDC_CLIENT_SECRET", None, None,
            "Client secret from the provider (never shown or logged).", _text, secret=True),
    Setting("oidc_client_secret_file", "KEYSTILE_OIDC_CLIENT_SECRET_FILE",
            "oidc.client_secret_file", None,
            "File holding the client secret (used when KEYSTILE_OIDC_CLIENT_SECRET is unset).",
            _text),
    Setting("oidc_external_url", "KEYSTILE_OIDC_EXTERNAL_URL", "oidc.external_url", None,
            "The address browsers reach the proxy at (https://app.example.com); the redirect "
            "URI to register is this + /_keystile/oidc/callback.", _external_url),
    Setting("oidc_name", "KEYSTILE_OIDC_NAME", "oidc.name", "OpenID Connect",
            "The provider's name on the sign-in button: 'Sign in with <name>'.", _text),
    Setting("oidc_scopes", "KEYSTILE_OIDC_SCOPES", "oidc.scopes", "openid email profile",
            "Scopes asked of the provider (must include openid).", _oidc_scopes),
    Setting("oidc_client_auth", "KEYSTILE_OIDC_CLIENT_AUTH", "oidc.client_auth",
            "client_secret_basic", "How keystile authenticates at the token endpoint: "
            "client_secret_basic or client_secret_post.", _client_auth),
    Setting("oidc_email_domains", "KEYSTILE_OIDC_EMAIL_DOMAINS", "oidc.email_domains", "",
            "Email domains allowed to sign in (exact match after the @, comma-separated); "
            "empty: any verified email.", _domains),
    Setting("oidc_groups_claim", None, "oidc.groups_claim", "groups",
            "ID-token (or userinfo) claim whose values admin_values and group_map read.",
            _text),
    Setting("oidc_admin_values", None, "oidc.admin_values", "",
            "Values of groups_claim that make a user admin (set: the role follows the claim "
            "at every sign-in; empty: roles are left alone).", _words),
    Setting("oidc_group_map", None, "oidc.group_map", None,
            "Table of groups_claim value = keystile group name: membership follows the claim "
            "at every sign-in (only the groups named here are touched).", _group_map),
    Setting("oidc_clock_skew", None, "oidc.clock_skew", "60s",
            "Clock difference tolerated in the ID token's exp and iat (at most 10m).", _skew),
    Setting("oidc_timeout", None, "oidc.timeout", "10s",
            "Longest wait for each call to the provider.", _seconds(1)),
    Setting("oidc_metadata_ttl", None, "oidc.metadata_ttl", "1h",
            "How long the provider's discovery document is cached.", _seconds(1)),
    Setting("sso_key_name", None, "oidc.key_name", "sso",
            "Name of the keys signed-in people make themselves at /_keystile/keys/sso.", _text),
    Setting("sso_key_expires_in", None, "oidc.key_expires_in", "30d",
            "Such a key expires this long after it is made.", _expiry),
    Setting("sso_key_scopes", None, "oidc.key_scopes", "",
            "Scopes of such a key (never admin or *).", _key_scopes),
    Setting("sso_key_limit", None, "oidc.key_limit", "3",
            "Most active such keys per person (the oldest is named when they hit it); "
            "0: no self-service keys.", _non_negative_int),
    Setting("cache_ttl", None, "cache.ttl", "30",
            "Seconds a key record stays cached.", _positive(float)),
    Setting("cache_size", None, "cache.size", "100000",
            "Most key records cached.", _positive(int)),
    Setting("negative_ttl", None, "cache.negative_ttl", "5",
            "Seconds an unknown key stays remembered as unknown.", _positive(float)),
    Setting("negative_size", None, "cache.negative_size", "100000",
            "Most unknown keys remembered.", _positive(int)),
    Setting("poll_interval", None, "cache.poll_interval", "0.5",
            "Seconds between reads of the store's change log.", _positive(float)),
    Setting("usage_flush_interval", None, "usage.flush_interval", "2",
            "Seconds between writes of usage counts (and once more at shutdown).",
            _positive(float)),
    Setting("token_estimate", "KEYSTILE_TOKEN_ESTIMATE", "usage.token_estimate", "0",
            "Tokens a request of a key with a token budget reserves until its usage is "
            "reported, on routes that set no token_estimate (see docs/token-budgets.md).",
            _tokens),
    Setting("reservation_timeout", None, "usage.reservation_timeout", "300",
            "Seconds a token reservation waits for its usage report before its estimate "
            "is given back.", _positive(float)),
    Setting("max_staleness", None, "cache.max_staleness", "5",
            "Seconds without a change-log read after which cached keys are not trusted "
            "(fail closed while the store is down).", _positive(float)),
    Setting("redis_url", "KEYSTILE_REDIS_URL", "redis.url", None,
            "Redis where every worker and replica shares rate limits and quotas "
            "(redis://[:PASSWORD@]HOST:PORT/DB); unset: each process counts its own, so N "
            "processes admit up to N times each limit. Shown without its password.",
            _redis_url, secret=True),
    Setting("redis_prefix", "KEYSTILE_REDIS_PREFIX", "redis.prefix", "keystile:",
            "Prefix of every Redis key keystile writes.", _text),
    Setting("redis_unavailable", "KEYSTILE_REDIS_UNAVAILABLE", "redis.unavailable", "deny",
            "When Redis fails or takes over redis.timeout: 'deny' refuses keys with rate limits or "
            "quotas (503 limits_unavailable); 'local' counts in each process instead "
            "(logged as an error).", _redis_unavailable),
    Setting("redis_timeout", "KEYSTILE_REDIS_TIMEOUT", "redis.timeout", "0.5",
            "Seconds a request waits for Redis (a connection and the script) before "
            "redis.unavailable applies.", _positive(float)),
    Setting("usage_syslog_listen", "KEYSTILE_USAGE_SYSLOG_LISTEN", "usage.syslog_listen", None,
            "Take nginx's usage lines (syslog over UDP, see docs/token-budgets.md) on this "
            "loopback HOST:PORT; unset: off.", _loopback_listen),
    Setting("usage_tokens_header", "KEYSTILE_USAGE_TOKENS_HEADER", "usage.tokens_header",
            "x-usage-total-tokens", "The upstream's response header with the request's total "
            "tokens, read from Envoy's access-log stream (nginx names it in its log_format).",
            _header_name),
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every setting's value; defaults live in :data:`SETTINGS` alone (made by :func:`load`)."""

    listen: tuple[str, int]
    admin_listen: tuple[str, int] | None
    grpc_listen: tuple[str, int] | None
    workers: int
    db: Path | str
    pepper: str | None = field(repr=False)
    pepper_file: str | None
    admin_key: str | None = field(repr=False)
    static_keys: tuple[str, ...] = field(repr=False)
    key_prefix: str
    accepted_prefixes: frozenset[str]
    config: str | None
    trusted_proxies: tuple[Any, ...]
    credential_headers: tuple[Any, ...]
    invalid_key_limit: int
    path_semicolons: bool
    credential_params: frozenset[str]
    credential_cookies: frozenset[str]
    unmatched: str | None
    cache_ttl: float
    cache_size: int
    negative_ttl: float
    negative_size: int
    poll_interval: float
    max_staleness: float
    usage_flush_interval: float
    token_estimate: int
    reservation_timeout: float
    session_cookie_secure: bool
    session_idle_timeout: float
    session_absolute_timeout: float
    session_member_scopes: tuple[str, ...]
    session_trusted_origins: frozenset[str]
    return_hosts: tuple[str, ...]
    login_attempts: int
    login_lockout: float
    oidc_issuer: str | None
    oidc_client_id: str | None
    oidc_client_secret: str | None = field(repr=False)
    oidc_client_secret_file: str | None
    oidc_external_url: str | None
    oidc_name: str
    oidc_scopes: tuple[str, ...]
    oidc_client_auth: str
    oidc_email_domains: frozenset[str]
    oidc_groups_claim: str
    oidc_admin_values: tuple[str, ...]
    oidc_group_map: tuple[tuple[str, str], ...] | None
    oidc_clock_skew: float
    oidc_timeout: float
    oidc_metadata_ttl: float
    sso_key_name: str
    sso_key_expires_in: float
    sso_key_scopes: tuple[str, ...]
    sso_key_limit: int
    redis_url: str | None = field(repr=False)
    redis_prefix: str
    redis_unavailable: str
    redis_timeout: float
    usage_syslog_listen: tuple[str, int] | None
    usage_tokens_header: str
    routes: RouteTable = field(default_factory=RouteTable)

    @property
    def session_cookie(self) -> str:
        from keystile.core.cookies import PLAIN_NAME, SECURE_NAME

        return SECURE_NAME if self.session_cookie_secure else PLAIN_NAME

    @property
    def oidc_missing(self) -> list[str]:
        """The OpenID Connect settings still unset (all four set: sign-in is on)."""
        wanted = (("KEYSTILE_OIDC_ISSUER", self.oidc_issuer),
                  ("KEYSTILE_OIDC_CLIENT_ID", self.oidc_client_id),
                  ("KEYSTILE_OIDC_CLIENT_SECRET", self.oidc_client_secret),
                  ("KEYSTILE_OIDC_EXTERNAL_URL", self.oidc_external_url))  # fmt: skip
        return [name for name, value in wanted if not value]

    @property
    def oidc_enabled(self) -> bool:
        return not self.oidc_missing

    @property
    def key_format(self) -> keys.KeyFormat:
        return keys.KeyFormat(self.key_prefix, self.accepted_prefixes)

    def hasher(self) -> keys.Hasher:
        return keys.Hasher(self.pepper.encode() if self.pepper else None)


def _toml_value(document: Mapping[str, Any], dotted: str) -> Any:
    node: Any = document
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"KEYSTILE_CONFIG={path!r}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"KEYSTILE_CONFIG={path!r}: not valid TOML: {exc}") from None


def _known_toml_paths() -> set[str]:
    return {s.toml for s in SETTINGS if s.toml} | {"routes", "credentials"}


def _did_you_mean(name: str) -> str:
    """("; did you mean 'routes'?") for a TOML key close to a known one, else ""."""
    import difflib

    paths = _known_toml_paths()
    known = sorted(paths | {path.rsplit(".", 1)[0] for path in paths if "." in path})
    close: list[str] = []
    if "." in name:  # a known key in the wrong section: server.db -> store.db
        leaf = name.rsplit(".", 1)[1]
        close = [path for path in sorted(paths) if path.rsplit(".", 1)[-1] == leaf][:1]
    close = close or difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_keys(document: Mapping[str, Any], prefix: str = "") -> list[str]:
    known = _known_toml_paths()
    sections = {path.rsplit(".", 1)[0] for path in known if "." in path}
    found = []
    for key, value in document.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and dotted in sections:
            found.extend(_unknown_keys(value, dotted + "."))
        elif dotted not in known:
            found.append(dotted)
    return found


def load(env: Mapping[str, str] | None = None, *, secrets: bool = True) -> Settings:
    """Settings from ``env`` (default: os.environ) and the TOML file it names.

    ``secrets=False`` (the CLI's commands other than ``serve``): the routes'
    injected values are not read (their env vars and files need not exist
    there), only checked for shape; such settings can decide, never serve."""
    env = os.environ if env is None else env
    config_path = env.get("KEYSTILE_CONFIG") or None
    document = _read_toml(config_path) if config_path else {}
    errors = [f"{config_path}: unknown setting {name!r}{_did_you_mean(name)}"
              for name in _unknown_keys(document)]  # fmt: skip
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw, source = None, None
        if setting.env and env.get(setting.env):
            raw, source = env[setting.env], setting.env
        elif setting.toml and _toml_value(document, setting.toml) is not None:
            raw, source = _toml_value(document, setting.toml), f"{config_path}: {setting.toml}"
        if raw is None:
            default = setting.default(env) if callable(setting.default) else setting.default
            values[setting.name] = None if default is None else setting.parse(default)
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            shown = "(secret)" if setting.secret else repr(redact(str(raw)))
            errors.append(f"{source}={shown}: {exc}")
    for error in (_resolve_pepper(values), _resolve_client_secret(values)):
        if error:
            errors.append(error)
    values["routes"], route_errors = load_routes(
        document.get("routes"), env, values["unmatched"], secrets=secrets,
        credentials=document.get("credentials"),
    )  # fmt: skip
    errors.extend(f"{config_path}: {error}" for error in route_errors)
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return Settings(**values)


def _resolve_pepper(values: dict[str, Any]) -> str | None:
    """Read the pepper file if no pepper is set; return an error message or None."""
    if not values.get("pepper") and values.get("pepper_file"):
        path = values["pepper_file"]
        try:
            values["pepper"] = Path(path).read_text("utf-8").strip()
        except OSError as exc:
            return f"KEYSTILE_PEPPER_FILE={path!r}: cannot read it: {exc.strerror}"
    pepper = values.get("pepper")
    if pepper and len(pepper) < MIN_PEPPER_LEN:
        return f"KEYSTILE_PEPPER: must be at least {MIN_PEPPER_LEN} characters (got {len(pepper)})"
    return None


def _resolve_client_secret(values: dict[str, Any]) -> str | None:
    """Read the OIDC client secret file if no secret is set; an error message or None."""
    if not values.get("oidc_client_secret") and values.get("oidc_client_secret_file"):
        path = values["oidc_client_secret_file"]
        try:
            values["oidc_client_secret"] = Path(path).read_text("utf-8").strip() or None
        except OSError as exc:
            return f"KEYSTILE_OIDC_CLIENT_SECRET_FILE={path!r}: cannot read it: {exc.strerror}"
    return None


ADDRESSES = ("listen", "admin_listen", "grpc_listen", "usage_syslog_listen")  # HOST:PORT


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(env var, effective value, help) for every setting, secrets masked."""
    rows = []
    for setting in SETTINGS:
        value = getattr(settings, setting.name)
        if setting.name == "redis_url" and value:  # a secret only in its password
            shown = redact(value)
        elif setting.secret:
            shown = "(set)" if value else "(not set)"
        elif isinstance(value, tuple) and setting.name in ADDRESSES:
            shown = f"{value[0]}:{value[1]}"
        elif isinstance(value, frozenset) or (
            isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        ):
            shown = ",".join(sorted(value)) or "-"
        elif setting.name == "path_semicolons":
            shown = "literal" if value else "refuse"
        elif setting.name == "credential_headers":
            shown = ",".join(source.header for source in value)
        elif setting.name == "oidc_group_map":
            shown = ",".join(f"{claim}={group}" for claim, group in value or ()) or "-"
        elif setting.name == "trusted_proxies":
            shown = ",".join(str(network) for network in value) or "-"
        else:  # a URL's password (the store's, Redis's) is never shown
            shown = "-" if value is None else redact(str(value))
        rows.append((setting.env or setting.toml or setting.name, shown, setting.help))
    return rows
