"""Which request methods keystile judges, and methods smuggled in as overrides.

Pure functions, no framework: the decision core calls them on what an adapter
learned about the original request.
"""

from __future__ import annotations

from keystile.core.aliases import header_key
from keystile.core.credentials import Headers
from keystile.core.paths import form_value, param_key, query_params

# The methods keystile judges. Anything else is denied before any route is looked at.
#
# TRACE is left out: the upstream echoes the request it received, and that
# request carries the headers keystile had the proxy inject (the upstream's own
# Authorization, identity headers), so a TRACE would hand them to the client.
#
# CONNECT is left out and must never be added: it names a host:port, not a path
# (RFC 9110 9.3.6), and reaches keystile through forward auth as the path "/"
# (or no path at all), so it would be judged as the route of "/" while the proxy
# opens a tunnel to wherever the client asked. No route rule can express that.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Headers that frameworks read as "treat this POST as <method>": Express's
# method-override, Symfony/Laravel, Google APIs (X-HTTP-Method-Override), OData
# and ASP.NET (X-HTTP-Method), others (X-Method-Override). Lower case, '-' form.
OVERRIDE_HEADERS = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
# Query parameters that do the same (Laravel, Symfony, Spring's
# HiddenHttpMethodFilter, method-override('_method')), in param_key form.
OVERRIDE_PARAMS = frozenset({"_method"})

# A header name can only be one of OVERRIDE_HEADERS if its length is one of
# theirs: one int lookup per header rejects almost every name without lower().
_OVERRIDE_LENGTHS = frozenset(len(name) for name in OVERRIDE_HEADERS)
_NONE: list[str] = []


class UnknownOverride(ValueError):
    """A method override names no method keystile judges (or is malformed): deny."""


def canonical_method(text: str) -> str | None:
    """The method if keystile judges it, else None (the core then denies).

    Methods are case-sensitive (RFC 9110 9.1): ``get`` is not ``GET`` but an
    unknown method that some servers upper-case and some refuse, so it is not
    judged; nor is anything with whitespace, an empty string, TRACE, CONNECT or
    any method outside :data:`KNOWN_METHODS`. Give it the method exactly as the
    client sent it, before any ``.upper()``.
    """
    return text if text in KNOWN_METHODS else None


def _override(value: str, where: str) -> str:
    """The method an override value names, upper-cased as the frameworks do."""
    if value.isascii():
        method = value.strip(" \t").upper()
        if method in KNOWN_METHODS:
            return method
    # Not ASCII: refused outright, not upper-cased, since upper() maps some
    # non-ASCII letters onto ASCII ones (U+0131 to "I", U+017F to "S") and so do Java
    # and JavaScript, while PHP does not.
    raise UnknownOverride(f"method override in {where} names no known method")


def method_overrides(headers: Headers, query: str) -> tuple[str, ...] | None:
    """The distinct methods a request asks the upstream to treat it as, or None.

    Rule: a request carrying an override is judged for its own method and for
    every override method; any denial denies. This holds whatever the
    request's own method is (most frameworks honour overrides on POST only,
    some on any method, and judging more is never less safe).

    Overrides are read from the headers in :data:`OVERRIDE_HEADERS`, in any
    case and with ``_``, ``.`` or any other alias character for ``-``
    (``X_HTTP_Method_Override``, ``X.HTTP.Method.Override``, which WSGI, CGI and
    PHP read as the same header: :mod:`keystile.aliases`), and from the query
    parameters in
    :data:`OVERRIDE_PARAMS` (``_method=``, name compared after
    :func:`~keystile.paths.param_key`: any case, percent-encoded, PHP's
    ``.method``; the pair separators are ``&`` and ``;``; repeats all count).
    Values are upper-cased, as frameworks do, and returned in order of first
    appearance, headers first.

    Raises :class:`UnknownOverride` when any override value (empty, not ASCII,
    several comma-separated, TRACE, CONNECT, ...) is not in
    :data:`KNOWN_METHODS`: the core denies.

    Cheap when there is no override: one length test per header name, and for
    a query without ``%`` one substring test.
    """
    lengths = _OVERRIDE_LENGTHS  # a local: this loop runs on every request
    for name in headers:
        if len(name) in lengths and header_key(name) in OVERRIDE_HEADERS:
            break
    else:
        # Every spelling of "_method" but a percent-encoded one holds "method".
        if not query or ("%" not in query and "method" not in query.lower()):
            return None
    return _collect(headers, query)


def _collect(headers: Headers, query: str) -> tuple[str, ...] | None:
    found: dict[str, None] = {}  # an ordered set
    spellings: set[str] = set()
    for name in headers:
        if len(name) not in _OVERRIDE_LENGTHS:
            continue
        key = header_key(name)
        spelled = name.lower()
        if key not in OVERRIDE_HEADERS or spelled in spellings:
            continue
        spellings.add(spelled)  # getall gives every value of a repeated header at once
        for value in headers.getall(name, _NONE):
            found[_override(value, f"header {key}")] = None
    if query:
        for name, value in query_params(query):
            if param_key(name) in OVERRIDE_PARAMS:
                found[_override(form_value(value), "the query")] = None
    return tuple(found) if found else None
