"""Finding the caller's API key in the request headers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol


class Headers(Protocol):
    """Case-insensitive, multi-valued headers (multidict's CIMultiDict fits)."""

    def get(self, key: str, /) -> str | None: ...
    def getall(self, key: str, default: list[str], /) -> list[str]: ...
    def __iter__(self) -> Iterator[str]: ...


class ConflictingCredentials(ValueError):
    """The request carries two different keys."""


@dataclass(frozen=True, slots=True)
class CredentialSource:
    """Where keys are read from: a header, and whether it holds ``Bearer <key>``."""

    header: str
    bearer: bool

    @classmethod
    def parse(cls, header: str) -> CredentialSource:
        name = header.strip().lower()
        return cls(name, name == "authorization")


DEFAULT_SOURCES = (CredentialSource("authorization", True), CredentialSource("x-api-key", False))


def extract(headers: Headers, sources: Sequence[CredentialSource] = DEFAULT_SOURCES) -> str | None:
    """The one key the request presents, None if it has none.

    ``Authorization`` values of schemes other than Bearer are not ours and are
    ignored. The same key sent twice is fine; two different keys raise.
    """
    found: str | None = None
    for source in sources:
        for value in headers.getall(source.header, []):
            if source.bearer:
                scheme, _, token = value.strip().partition(" ")
                if scheme.lower() != "bearer":
                    continue
                value = token
            value = value.strip()
            if not value:
                continue
            if found is not None and value != found:
                raise ConflictingCredentials("two different API keys in one request")
            found = value
    return found
