"""Copies of a client's key in places keystile does not read.

keystile reads the key from headers (``Authorization: Bearer``, ``x-api-key``)
and the proxy replaces or strips those before the upstream sees the request.
A copy of the key elsewhere (``?api_key=`` in the query, a cookie) would reach
the upstream, its logs and whatever it hands the query to. keystile cannot
rewrite the query or the cookies through nginx ``auth_request`` or Envoy
``ext_authz``, so the rule is: a request carrying one is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from keystile.core.credentials import Headers
from keystile.core.paths import param_key, query_params

# Query parameter names (in param_key form: lower case) that carry API keys by
# convention: api_key/apikey/api-key (Swagger/OpenAPI examples, many SaaS
# APIs), x-api-key (clients that put keystile's header name in the query) and
# access_token (OAuth 2 bearer tokens in the URI, RFC 6750 2.3). PHP also reads
# "api.key" and "api key" as "api_key"; param_key covers those.
#
# Left out: "key" (Google APIs use it, but so do countless APIs for object,
# cache, sort and idempotency keys: refusing it would break ordinary requests)
# and "token" (pagination and continuation tokens). Add them when the
# upstream has no such parameters.
DEFAULT_CREDENTIAL_PARAMS = frozenset({"api_key", "apikey", "api-key", "x-api-key", "access_token"})

# Cookie names (param_key form) that carry keys: the same names as the query's. A
# browser or a client library that keeps its key in a cookie of one of these names
# would otherwise hand it to the upstream beside the header keystile strips. An
# upstream whose own cookie has such a name (an app's "access_token"): configure
# the list (an empty list in the TOML file turns the check off).
DEFAULT_CREDENTIAL_COOKIES: frozenset[str] = DEFAULT_CREDENTIAL_PARAMS

Place = Literal["query", "cookie"]
_NONE: list[str] = []


def credential_names(names: Iterable[str]) -> frozenset[str]:
    """Configured parameter or cookie names in the form :func:`credential_copies` compares."""
    return frozenset(param_key(name.strip()) for name in names if name.strip())


def credential_copies(
    query: str,
    headers: Headers,
    *,
    params: frozenset[str] = DEFAULT_CREDENTIAL_PARAMS,
    cookies: frozenset[str] = DEFAULT_CREDENTIAL_COOKIES,
) -> Place | None:
    """Where the request carries a key keystile does not read: ``"query"``,
    ``"cookie"``, or None. Rule: the core refuses the request when not None.

    ``query`` is the raw query (no ``?``); a parameter counts when its name,
    after :func:`~keystile.paths.param_key` (form-decoded once, PHP's ``.``
    and space mangling, any case), is in ``params``, whatever its value (even
    empty: the name alone shows a client putting a key where it should not).
    Pairs are split at ``&`` and ``;``.

    Cookies are read leniently from every ``Cookie`` header: pairs split at
    ``;`` and ``,``, names stripped and compared the same way against
    ``cookies``, whatever the value.

    ``params`` and ``cookies`` must be in param_key form: build them with
    :func:`credential_names`. Cheap when the query is empty and no ``Cookie``
    header is present (or ``cookies`` is empty): no parsing at all.
    """
    if query and params:
        for name, _ in query_params(query):
            if param_key(name) in params:
                return "query"
    if cookies:
        for header in headers.getall("cookie", _NONE):
            for pair in header.replace(",", ";").split(";"):
                name = pair.partition("=")[0].strip()
                if name and param_key(name) in cookies:
                    return "cookie"
    return None
