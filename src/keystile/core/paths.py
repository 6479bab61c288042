"""Deciding on the path the upstream will serve, and refusing ambiguous ones.

A request target is split at ``?``, percent-decoded once, and refused when an
upstream could read it differently from us: dot segments (raw or encoded),
encoded slashes or backslashes, NUL and control characters, a raw ``#``,
backslashes, doubled slashes, anything still percent-encoded after one
decoding pass (double encoding), path parameters (``;``, raw or ``%3B``)
unless the upstream is known to read them literally, and any raw character
outside printable ASCII in the path or the query.

Also here: splitting a query into parameters and reading their names the way
the most lenient upstream does (:func:`query_params`, :func:`param_key`), for
the checks in :mod:`keystile.methods` and :mod:`keystile.copies`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, unquote_plus

# Raw (before decoding) path: only printable ASCII but '#' and '\'. Everything
# else is either invalid in a request-target (space, controls, DEL) or bytes
# that no proxy should have passed on undecoded: a raw 0xFF reaches us as
# '\xff' (latin-1 head) or '\udcff' (surrogateescape), and must be refused
# exactly like its percent-encoded, not-UTF-8 form '%FF'.
_DANGEROUS_RAW = re.compile(r"[^\x21-\x7e]|[#\\]")
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|00)", re.IGNORECASE)
_LEFT_ENCODED = re.compile(r"%[0-9a-fA-F]{2}")
# Decoded path: C0 and C1 controls and DEL (%0A, %7F, %C2%85 ...).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DOT_SEGMENTS = (".", "..")
MAX_TARGET_LEN = 8192
# PHP turns ' ', '.' and an unclosed '[' in a parameter or cookie name into '_'.
_PHP_MANGLE = str.maketrans(" .[", "___")


class AmbiguousPath(ValueError):
    """The target could mean another path to the upstream; deny instead of guessing."""


@dataclass(frozen=True, slots=True)
class Target:
    path: str  # decoded once, as the upstream will route it
    query: str  # raw, without the "?"


def parse_target(target: str, *, semicolons: bool = False) -> Target:
    """Split and check a request target such as ``/v1/chat?x=1``.

    The path is checked by :func:`checked_path` (see there, and for
    ``semicolons``). The raw query must be printable ASCII without ``#``: no
    space, control character, DEL, or raw byte >= 0x80 (which reaches us as a
    character >= U+0080 or a lone surrogate); percent-encoded, anything goes.
    Raises :class:`AmbiguousPath`.
    """
    if not target or len(target) > MAX_TARGET_LEN:
        raise AmbiguousPath("empty or over-long target")
    raw_path, _, query = target.partition("?")
    if query:
        if "#" in query:
            raise AmbiguousPath("'#' in the query")
        # printable ASCII but space: what [^\x21-\x7e] says, at a third of the cost
        if not (query.isascii() and query.isprintable()) or " " in query:
            raise AmbiguousPath("space, control or non-ASCII character in the query")
    # One argument in the usual case: lru_cache then keys on the string itself.
    path = checked_path(raw_path, True) if semicolons else checked_path(raw_path)
    return Target(path, query)


@lru_cache(maxsize=4096)
def checked_path(raw_path: str, semicolons: bool = False) -> str:
    """The path decoded once, or :class:`AmbiguousPath`.

    Refused: a path not starting with ``/``; any raw character outside
    printable ASCII (space, controls, DEL, raw bytes >= 0x80 whether they
    arrive as latin-1 characters or lone surrogates), raw ``#`` or ``\\``;
    ``%2F``, ``%5C`` or ``%00``; percent-encoding that is not UTF-8; C0/C1
    controls or ``%XX`` left after decoding; ``//``; ``.`` and ``..`` segments.

    ``;`` (raw, or ``%3B`` which decodes to it) is refused unless
    ``semicolons`` is true: servlet containers (Tomcat, Jetty, Spring) drop
    ``;params`` from every segment, so ``/public/..;/admin`` would be judged
    under ``/public`` and served as ``/admin``. Set ``semicolons`` only when
    the upstream reads ``;`` as a literal character; even then a segment that
    is a dot segment once ``;...`` is cut off (``..;``, ``.;x``) is refused,
    since no upstream should ever see one.

    Cached, keyed on the path and the flag (``checked_path(p)`` and
    ``checked_path(p, False)`` are two entries with the same answer): clients
    repeat the same few paths.
    """
    if not raw_path.startswith("/"):
        raise AmbiguousPath("target is not an absolute path")
    bad = _DANGEROUS_RAW.search(raw_path)
    if bad:
        if bad.group() in "#\\":
            raise AmbiguousPath("'#' or backslash in the path")
        raise AmbiguousPath("space, control or non-ASCII character in the path")
    if _ENCODED_SEPARATOR.search(raw_path):
        raise AmbiguousPath("encoded slash, backslash or NUL in the path")
    try:
        path = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise AmbiguousPath("percent-encoding that is not UTF-8") from None
    if _LEFT_ENCODED.search(path):
        raise AmbiguousPath("double percent-encoding in the path")
    if _CONTROL.search(path):
        raise AmbiguousPath("encoded control character in the path")
    if "//" in path:
        raise AmbiguousPath("empty path segment")
    if ";" in path and not semicolons:
        raise AmbiguousPath("';' (a path parameter to servlet upstreams) in the path")
    for segment in path.split("/"):
        # "..;x" is ".." to a servlet upstream; without a ';' this is the segment itself
        if segment.partition(";")[0] in _DOT_SEGMENTS:
            raise AmbiguousPath("dot segment in the path")
    return path


def query_params(query: str) -> Iterator[tuple[str, str]]:
    """The raw ``(name, value)`` pairs of a query, neither decoded.

    Split at ``&`` and at ``;`` (Rack before 3 and Python before 3.9.2 split at
    both), so a name after a ``;`` is seen even by an upstream that would not.
    A pair without ``=`` has the value ``""``; empty pairs are skipped.
    """
    if ";" in query:
        query = query.replace(";", "&")
    for pair in query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            yield name, value


def param_key(name: str) -> str:
    """A query parameter or cookie name as the most lenient upstream reads it,
    for comparing names: form-decoded once (``+`` is a space, ``%XX`` a byte,
    bad UTF-8 becomes U+FFFD), cut at a NUL and stripped of leading spaces, with
    ``' '``, ``'.'`` and ``'['`` turned into ``'_'`` (PHP does all three to
    query and cookie names: ``?.method=`` is ``$_GET['_method']``; see
    CVE-2022-31629), lower-cased. It errs towards matching: PHP drops a name
    starting with ``[`` and no longer decodes cookie names, this does not.
    """
    if "%" in name or "+" in name:
        name = unquote_plus(name, errors="replace")
    if "\x00" in name:
        name = name.partition("\x00")[0]
    if " " in name or "." in name or "[" in name:
        name = name.lstrip(" ").translate(_PHP_MANGLE)
    return name.lower()


def form_value(value: str) -> str:
    """A query parameter value decoded once as a form (``+`` is a space)."""
    if "%" in value or "+" in value:
        return unquote_plus(value, errors="replace")
    return value
