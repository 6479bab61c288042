"""URLs that may carry a password (a database's, Redis's): shown only redacted."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def redact(url: str) -> str:
    """``url`` without its password (in the user info or a ``password=`` parameter);
    text that is no URL (a file path) comes back as it is."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            netloc = f"{user}:***@" + netloc.rpartition("@")[2]
        query = parts.query
        if "password" in query:
            query = urlencode([(k, "***" if k == "password" else v)
                               for k, v in parse_qsl(query, keep_blank_values=True)])  # fmt: skip
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "(unreadable URL)"


def password_of(url: str) -> str | None:
    """The password a Redis URL holds, to scrub it from error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.password:
        return parts.password
    found = dict(parse_qsl(parts.query)).get("password")
    return found or None
