"""Email addresses: which ones keystile takes, and the one way two of them are compared.

keystile takes the common form of an address and nothing else: ASCII only, one
``@``, a local part of dot-separated atoms (letters, digits and
``!#$%&'*+/=?^_`{|}~-``; no quoted strings, comments or spaces), and a domain of at
least two dot-separated labels of letters, digits and inner hyphens, the last not
all digits (an internationalised domain in its ``xn--`` form). At most 64 characters before the
``@`` and 254 in all (RFC 5321).

Two addresses are the same person when they are equal after ASCII lower-casing
(:func:`email_key`), and only then. Never Python's ``str.lower()`` or
``casefold()`` on text that may hold other characters, nor SQL's ``lower()``:
those fold U+212A KELVIN SIGN to ``k`` (and PostgreSQL's does too), so an address
someone else controls would match an existing admin's. An address that Unicode
normalisation (NFKC) would change is refused with its own reason, before the
ASCII rule: it names the character that looks like another.

:func:`parse_email` returns the address as given or raises :class:`InvalidEmail`
(a ValueError whose ``reason`` is a short code for logs and pages).
:func:`fold` is the same ASCII lower-casing for names that are not addresses
(the sign-in throttle's user names). Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata

MAX_EMAIL = 254
MAX_LOCAL = 64
MAX_LABEL = 63
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_RE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = rf"[A-Za-z0-9](?:[A-Za-z0-9-]{{0,{MAX_LABEL - 2}}}[A-Za-z0-9])?"
# the last label (the top-level domain) is not all digits: 1.2.3.4 is an address, not a domain
_DOMAIN_RE = re.compile(rf"(?:{_LABEL}\.)+(?![0-9]+\Z){_LABEL}")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
DESCRIPTION = ("an email address: ASCII, one @, no quoted or commented local part, a domain "
               "with a dot (xn-- form for international ones); at most 254 characters")  # fmt: skip


class InvalidEmail(ValueError):
    """Not an address keystile takes; ``reason`` says which rule it broke."""

    def __init__(self, text: str, reason: str, why: str) -> None:
        super().__init__(f"{_show(text)} is not an email address keystile accepts: {why}")
        self.reason = reason


def _show(text: str) -> str:
    return repr(text) if len(text) <= 80 else f"{text[:80]!r}... ({len(text)} characters)"


def _named(ch: str) -> str:
    return f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed character')}"


def fold(text: str) -> str:
    """``text`` with A-Z made a-z and every other character left as it is."""
    return text.translate(_ASCII_LOWER)


def parse_email(text: str) -> str:
    """``text`` unchanged when it is an address keystile takes; InvalidEmail otherwise."""
    if len(text) > MAX_EMAIL:  # first: nothing below runs on a long text
        raise InvalidEmail(text, "too_long", f"{len(text)} characters, at most {MAX_EMAIL}")
    if unicodedata.normalize("NFKC", text) != text:
        # the character that changes alone, else (a combining mark) the first non-ASCII one:
        # ASCII text is NFKC already
        changed = next((ch for ch in text if unicodedata.normalize("NFKC", ch) != ch), None)
        changed = changed or next(ch for ch in text if not ch.isascii())
        raise InvalidEmail(text, "not_normalised", f"{_named(changed)} is a look-alike "
                           "(Unicode normalisation changes it)")  # fmt: skip
    if not text.isascii():
        other = next(ch for ch in text if not ch.isascii())
        raise InvalidEmail(text, "not_ascii", f"{_named(other)}: keystile takes ASCII "
                           "addresses only")  # fmt: skip
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise InvalidEmail(text, "no_at", "it needs one @ with a name before it")
    if "@" in local:
        raise InvalidEmail(text, "two_at", "it has more than one @")
    if not _LOCAL_RE.fullmatch(local):
        raise InvalidEmail(text, "bad_local_part", "before the @ only letters, digits, "
                           "!#$%&'*+/=?^_`{|}~- and single inner dots (no quotes, spaces, "
                           "comments or line breaks)")  # fmt: skip
    if len(local) > MAX_LOCAL:
        raise InvalidEmail(text, "too_long", f"{len(local)} characters before the @, at most "
                           f"{MAX_LOCAL}")  # fmt: skip
    if not _DOMAIN_RE.fullmatch(domain):
        raise InvalidEmail(text, "bad_domain", "after the @ a domain such as example.com: "
                           "labels of letters, digits and inner hyphens, with a dot")  # fmt: skip
    return text


def email_key(text: str) -> str:
    """The form two addresses are compared in: ``text`` checked, then ASCII-lower-cased."""
    return fold(parse_email(text))


def key_or_none(text: str | None) -> str | None:
    """:func:`email_key` of ``text``, or None when it is none or not an address (a stored
    sign-in name that is a plain name, or an address from before these rules)."""
    if text is None:
        return None
    try:
        return email_key(text)
    except InvalidEmail:
        return None


def domain_of(key: str) -> str:
    """The domain of an address already checked (the part after its one @)."""
    return key.rpartition("@")[2]
