"""Header names as CGI, WSGI and PHP upstreams read them.

Such an upstream turns a header name into a variable: upper case, and every
character that is not a letter or a digit made ``_``. So ``X-Api-Key``,
``X_Api_Key``, ``X.Api.Key`` and ``X~Api~Key`` are one header there, while
Caddy, Envoy and Traefik (unless told otherwise) pass each as a header of its
own: a client could send a second value of a header keystile judges or sets
under a name no proxy rule strips.
"""

from __future__ import annotations

# The characters RFC 9110 allows in a header name besides letters, digits and "-".
ALIAS_CHARS = "!#$%&'*+.^_`|~"
_TO_DASH = str.maketrans(dict.fromkeys(ALIAS_CHARS, "-"))

# Header names repeat from request to request: one dict lookup instead of
# lower() and translate() per name (a spray of new names only refills it).
_KEYS: dict[str, str] = {}
_KEYS_MAX = 4096


def header_key(name: str) -> str:
    """``name`` lower-cased, every alias character made ``-``: ``X.Api_Key`` is
    ``x-api-key``."""
    key = _KEYS.get(name)
    if key is None:
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        key = _KEYS[name] = name.lower().translate(_TO_DASH)
    return key
