"""Passwords: argon2id hashes (argon2-cffi), computed off the event loop.

A hash costs tens of milliseconds of CPU by design, so every hash and check
runs in a worker thread. Checking a name that has no user runs the same
check against a fixed dummy hash, so a wrong name and a wrong password take
the same time and get the same answer.
"""

from __future__ import annotations

import asyncio
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from keystile.core.errors import InvalidInput

MIN_LENGTH = 10
MAX_LENGTH = 1024  # argon2 takes any length; a megabyte "password" is a denial of service
_HASHER = PasswordHasher()  # argon2id, RFC 9106 low-memory defaults


@cache
def _dummy() -> str:
    """A hash no password matches in practice, checked when there is no user (made on
    first use: hashing at import would slow every CLI command)."""
    return _HASHER.hash("keystile: a password no user has")


def check_new(password: str) -> str:
    """A password fit to be set, or InvalidInput naming the rule (never the value)."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput("password", f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise InvalidInput("password", f"must be at most {MAX_LENGTH} characters")
    if password.strip() != password:
        raise InvalidInput("password", "must not start or end with whitespace")
    return password


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_HASHER.hash, check_new(password))


def _matches(stored: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored or _dummy(), password[:MAX_LENGTH]) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (None: no user, or no password set:
    always False, after the same work)."""
    return await asyncio.to_thread(_matches, stored, password)
