"""Cross-site request refusal for cookie-authenticated requests (CSRF).

The algorithm of Go 1.25's ``http.CrossOriginProtection``, on the request
facts: a safe method (GET, HEAD, OPTIONS) passes; otherwise, when the browser
sent ``Sec-Fetch-Site``, only ``same-origin`` and ``none`` (typed in the
address bar, a bookmark) pass, or an ``Origin`` that is one of the trusted
origins; else an ``Origin``, when sent, must name this host (or a trusted
one); a request with neither header comes from something that is not a
browser (a browser form always sends one of them).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from keystile.core.credentials import Headers

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cross_site(
    method: str,
    host: str,
    headers: Headers,
    trusted_origins: frozenset[str] = frozenset(),
    also: Iterable[str] = (),
) -> bool:
    """True when a browser sent this unsafe request from another site. ``also``:
    other methods the request may turn out to be (an override header)."""
    if method in SAFE_METHODS and all(other in SAFE_METHODS for other in also):
        return False
    origin = headers.get("origin")
    if origin is not None and origin.strip().lower() in trusted_origins:
        return False
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site.strip().lower() not in ("same-origin", "none")
    if origin is None:
        return False
    origin = origin.strip()
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return True
    return netloc.lower() != host.strip().lower() or not netloc
