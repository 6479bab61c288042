"""Deciding on the path the upstream will serve, and refusing ambiguous ones.

A request target is split at ``?``, percent-decoded once, and refused when an
upstream could read it differently from us: dot segments (raw or encoded),
encoded slashes or backslashes, NUL and control characters, a raw ``#``,
backslashes, doubled slashes, or anything still percent-encoded after one
decoding pass (double encoding).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

_DANGEROUS_RAW = re.compile(r"[\x00-\x20\x7f#\\]")
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|00)", re.IGNORECASE)
_LEFT_ENCODED = re.compile(r"%[0-9a-fA-F]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_TARGET_LEN = 8192


class AmbiguousPath(ValueError):
    """The target could mean another path to the upstream; deny instead of guessing."""


@dataclass(frozen=True, slots=True)
class Target:
    path: str  # decoded once, as the upstream will route it
    query: str  # raw, without the "?"


def parse_target(target: str) -> Target:
    """Split and check a request target such as ``/v1/chat?x=1``."""
    if not target or len(target) > MAX_TARGET_LEN:
        raise AmbiguousPath("empty or over-long target")
    raw_path, _, query = target.partition("?")
    if "#" in query:
        raise AmbiguousPath("'#' in the query")
    return Target(checked_path(raw_path), query)


@lru_cache(maxsize=4096)
def checked_path(raw_path: str) -> str:
    """The decoded path, or AmbiguousPath. Cached: clients repeat the same few paths."""
    if not raw_path.startswith("/"):
        raise AmbiguousPath("target is not an absolute path")
    if _DANGEROUS_RAW.search(raw_path):
        raise AmbiguousPath("control character, space, '#' or backslash in the path")
    if _ENCODED_SEPARATOR.search(raw_path):
        raise AmbiguousPath("encoded slash, backslash or NUL in the path")
    try:
        path = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise AmbiguousPath("percent-encoding that is not UTF-8") from None
    if _LEFT_ENCODED.search(path) or _CONTROL.search(path):
        raise AmbiguousPath("double percent-encoding in the path")
    if "//" in path:
        raise AmbiguousPath("empty path segment")
    for segment in path.split("/"):
        if segment in (".", ".."):
            raise AmbiguousPath("dot segment in the path")
    return path
