"""Where a browser goes after signing in: only somewhere safe.

A return URL (``rd``) comes from the address bar, so it is the attacker's
choice. Accepted: a path on this site that starts with exactly one ``/``, or
an absolute ``https``/``http`` URL whose host is exactly one of the allowed
hosts (an entry ``.example.com`` admits sub-domains of example.com, never
``evilexample.com``). Everything else, and anything odd (backslashes,
whitespace or control bytes, raw or encoded, ``javascript:``, user info,
``//host``), sends the browser to ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

HOME = "/"
MAX_LENGTH = 2048
# Characters no safe return URL holds: raw, whitespace, control bytes and
# backslashes (browsers drop tabs and newlines, and read "\\" as "/");
# decoded, the same but for a space (an encoded space inside a path is fine).
_RAW_ODD = re.compile(r"[\x00-\x20\x7f-\x9f\\]")
_DECODED_ODD = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def _odd(text: str) -> bool:
    if _RAW_ODD.search(text):
        return True
    decoded = text
    for _ in range(3):  # %2F%2F, %252F...: look through repeated encodings
        decoded, previous = unquote(decoded), decoded
        if _DECODED_ODD.search(decoded) or decoded.lstrip(" ").startswith("//"):
            return True
        if decoded == previous:
            break
    return False


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower()
        if entry.startswith("."):
            if host.endswith(entry) and len(host) > len(entry):
                return True
        elif host == entry:
            return True
    return False


def safe_return(target: str | None, allowed_hosts: Iterable[str] = ()) -> str:
    """``target`` if it is safe to send a browser to, else ``/``."""
    if not target or len(target) > MAX_LENGTH or _odd(target):
        return HOME
    if target.startswith("/"):
        if target.startswith("//"):
            return HOME
        return target
    try:
        parts = urlsplit(target)
    except ValueError:
        return HOME
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return HOME
    if "@" in parts.netloc or "%" in parts.netloc or not parts.netloc.isascii():
        return HOME  # user info, or a host name that is not plain ASCII as sent
    if parts.hostname is None:
        return HOME
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return HOME
    if not host_allowed(parts.hostname, allowed_hosts):
        return HOME
    return target
