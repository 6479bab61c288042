"""keystile's session cookie inside a ``Cookie`` header: find it, and take it out.

Pure text handling, no I/O. The cookie is keystile's alone: it is read here,
and the ``Cookie`` line the upstream gets is the client's without it (other
cookies kept, in their order).
"""

from __future__ import annotations

from keystile.core.credentials import Headers

SECURE_NAME = "__Host-keystile"  # Secure, Path=/, no Domain: only this origin sets it
PLAIN_NAME = "keystile_session"  # plain-HTTP development (sessions.cookie_secure = false)


def cookie_line(headers: Headers) -> str | None:
    """The request's cookies as one line (HTTP/2 may split them over several)."""
    values = headers.getall("cookie", [])
    if not values:
        return None
    return values[0] if len(values) == 1 else "; ".join(values)


def pairs(line: str) -> list[tuple[str, str]]:
    found = []
    for piece in line.split(";"):
        name, sep, value = piece.strip().partition("=")
        if sep and name:
            found.append((name.strip(), value.strip()))
    return found


def session_token(line: str | None, name: str) -> str | None:
    """The value of the first cookie called ``name`` (browsers send the most specific
    first), or None. Empty values do not count."""
    if line is None or name not in line:
        return None
    for cookie, value in pairs(line):
        if cookie == name and value:
            return value.strip('"')
    return None


def without(line: str, name: str) -> str:
    """``line`` with every cookie called ``name`` removed; '' when nothing is left."""
    if name not in line:
        return line
    kept = [piece.strip() for piece in line.split(";")
            if piece.strip() and piece.strip().partition("=")[0].strip() != name]  # fmt: skip
    return "; ".join(kept)
