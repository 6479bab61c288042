"""API key format, generation, checksum and hashing. Pure: no I/O.

A key reads ``<prefix>_<secret><checksum>``:

- ``prefix``: lower-case letters and digits, starting with a letter (default ``ks``);
- ``secret``: 32 bytes from :mod:`secrets`, base62, always 43 characters;
- ``checksum``: CRC32 of ``<prefix>_<secret>`` in base62, always 6 characters.

So a default key matches ``\\bks_[0-9A-Za-z]{49}\\b``. The checksum lets a mistyped
or random key be refused before the store is asked.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass
from enum import Enum

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SECRET_BYTES = 32
SECRET_LEN = 43  # ceil(256 / log2(62))
CHECKSUM_LEN = 6  # 62**6 > 2**32
BODY_LEN = SECRET_LEN + CHECKSUM_LEN
DISPLAY_SECRET_CHARS = 6
PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,15}")
MAX_TOKEN_LEN = 512

SCHEME_SHA256 = "sha256"
SCHEME_HMAC_SHA256 = "hmac-sha256"

_BASE62_INDEX = {c: i for i, c in enumerate(BASE62)}
_OURS_RE = re.compile(rf"([a-z][a-z0-9]{{0,15}})_([0-9A-Za-z]{{{BODY_LEN}}})")
_BODY_RE = re.compile(rf"[0-9A-Za-z]{{{BODY_LEN}}}")
# Printable ASCII without space: what a hand-made key of another format may hold.
_FOREIGN_RE = re.compile(rf"[\x21-\x7e]{{8,{MAX_TOKEN_LEN}}}")


def scanner_regex(prefix: str = "ks") -> str:
    """The regex a secret scanner can use to find leaked keys with this prefix."""
    return rf"\b{re.escape(prefix)}_[0-9A-Za-z]{{{BODY_LEN}}}\b"


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a valid key prefix, else raise ValueError naming it."""
    if not PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"key prefix {prefix!r} is invalid: use 1-16 lower-case letters or digits, "
            "starting with a letter"
        )
    return prefix


def _encode62(number: int, width: int) -> str:
    chars = []
    while number:
        number, rest = divmod(number, 62)
        chars.append(BASE62[rest])
    if len(chars) > width:
        raise ValueError(f"{number} does not fit in {width} base62 characters")
    return "".join(reversed(chars)).rjust(width, BASE62[0])


def _decode62(text: str) -> int:
    number = 0
    for char in text:
        number = number * 62 + _BASE62_INDEX[char]
    return number


def checksum(prefix: str, secret: str) -> str:
    """The 6-character checksum of a key with this prefix and secret."""
    crc = zlib.crc32(f"{prefix}_{secret}".encode("ascii"))
    return _encode62(crc, CHECKSUM_LEN)


def generate(prefix: str = "ks") -> str:
    """A new random key: shown to its owner once, stored only as a hash."""
    validate_prefix(prefix)
    secret = _encode62(int.from_bytes(secrets.token_bytes(SECRET_BYTES), "big"), SECRET_LEN)
    return f"{prefix}_{secret}{checksum(prefix, secret)}"


def display_prefix(token: str) -> str:
    """The short, non-secret part of a key that humans use to recognise it."""
    head, sep, body = token.rpartition("_")
    if sep and _OURS_RE.fullmatch(token):
        return f"{head}_{body[:DISPLAY_SECRET_CHARS]}"
    return token[:DISPLAY_SECRET_CHARS]


class Shape(Enum):
    """What a presented token looks like, decided without the store."""

    OURS = "ours"  # keystile format, accepted prefix, checksum correct
    FOREIGN = "foreign"  # another format: only an imported key can match it
    MALFORMED = "malformed"  # never valid: wrong prefix, bad checksum, bad characters, size


@dataclass(frozen=True, slots=True)
class KeyFormat:
    """The prefixes this deployment issues and accepts."""

    prefix: str = "ks"
    accepted_prefixes: frozenset[str] = frozenset()

    def shape(self, token: str) -> Shape:
        """Classify ``token``. Only OURS (and FOREIGN, where imported keys exist) go on."""
        if len(token) > MAX_TOKEN_LEN:
            return Shape.MALFORMED
        match = _OURS_RE.fullmatch(token)
        if match is None:
            if self._claims_ours(token):
                return Shape.MALFORMED
            return Shape.FOREIGN if _FOREIGN_RE.fullmatch(token) else Shape.MALFORMED
        prefix, body = match.groups()
        if prefix != self.prefix and prefix not in self.accepted_prefixes:
            return Shape.MALFORMED
        secret, check = body[:SECRET_LEN], body[SECRET_LEN:]
        if _decode62(check) != zlib.crc32(f"{prefix}_{secret}".encode("ascii")):
            return Shape.MALFORMED
        return Shape.OURS

    def _claims_ours(self, token: str) -> bool:
        """A near miss of our format: a mistyped key, never a foreign one."""
        _, sep, body = token.rpartition("_")
        if sep and len(body) == BODY_LEN and _BODY_RE.fullmatch(body):
            return True  # keystile body under a wrong or mistyped prefix
        for prefix in self._prefixes():
            if token.startswith(prefix + "_"):
                return True
            if token.startswith(prefix) and abs(len(token) - len(prefix) - 1 - BODY_LEN) <= 1:
                return True  # the "_" mistyped, dropped or doubled
        return False

    def _prefixes(self) -> frozenset[str]:
        return self.accepted_prefixes | {self.prefix}


class Hasher:
    """Turns a presented key into the digests it may be stored under.

    With a pepper, new keys are stored as HMAC-SHA256(pepper, key); keys stored
    before the pepper was set (or imported) stay plain SHA-256 and still match.
    """

    __slots__ = ("_pepper",)

    def __init__(self, pepper: bytes | None = None) -> None:
        self._pepper = pepper or None

    @property
    def scheme(self) -> str:
        """The scheme new keys are stored with."""
        return SCHEME_HMAC_SHA256 if self._pepper else SCHEME_SHA256

    def digest(self, token: str, scheme: str | None = None) -> str:
        """Hex digest of ``token`` under ``scheme`` (default: the scheme for new keys)."""
        scheme = scheme or self.scheme
        data = token.encode("utf-8", "surrogateescape")
        if scheme == SCHEME_SHA256:
            return hashlib.sha256(data).hexdigest()
        if scheme == SCHEME_HMAC_SHA256:
            if not self._pepper:
                raise ValueError("hash scheme hmac-sha256 needs KEYSTILE_PEPPER")
            return hmac.digest(self._pepper, data, "sha256").hex()
        raise ValueError(f"unknown hash scheme {scheme!r}")

    def candidates(self, token: str) -> tuple[tuple[str, str], ...]:
        """Every (scheme, digest) under which ``token`` may be stored, preferred first."""
        data = token.encode("utf-8", "surrogateescape")
        plain = (SCHEME_SHA256, hashlib.sha256(data).hexdigest())
        if self._pepper is None:
            return (plain,)
        return ((SCHEME_HMAC_SHA256, hmac.digest(self._pepper, data, "sha256").hex()), plain)
