"""Reading the key forms (create and edit) into the service layer's arguments.

Values are checked by the service layer (:mod:`keystile.fields`), the same checks
as the admin API and the CLI; this module only turns form fields into them, numbers
with the parsers of :mod:`keystile.numbers` that the API and the CLI use too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from multidict import MultiDictProxy

from keystile.core import numbers
from keystile.core.durations import parse_day
from keystile.core.errors import InvalidInput
from keystile.core.model import ADMIN_SCOPE
from keystile.core.routes import RouteTable
from keystile.manage.bounds import covers
from keystile.manage.fields import LIMIT_NAMES
from keystile.manage.service import UNSET
from keystile.web.ui.common import Viewer, text, words

DAY = 86400.0
PRESETS = (7, 30, 90, 180)  # days, offered as the expiry choices


def grantable_scopes(who: Viewer, routes: RouteTable, groups: Iterable[Any]) -> list[str]:
    """The scopes the form offers: those the routes and groups name, and the viewer's
    own; for a member only those they hold themselves (never admin)."""
    known = {scope for route in routes.routes for scope in route.scopes}
    for group in groups:
        known.update(group.scopes)
    known.update(who.granted)
    if who.is_admin:
        return sorted(known)
    return sorted(s for s in known if s != ADMIN_SCOPE and covers(who.granted, s))


def key_values(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """What was typed, to show the form again after a refusal."""
    return {
        "name": text(form, "name"),
        "user_id": text(form, "user_id"),
        "scopes": form.getall("scope", []),
        "extra_scopes": text(form, "extra_scopes"),
        "group_ids": form.getall("group_id", []),
        "expiry": text(form, "expiry"),
        "expires_on": text(form, "expires_on"),
        "allowed_ips": text(form, "allowed_ips"),
        "credential": text(form, "credential"),
        **{f"limit_{n}": text(form, f"limit_{n}") for n in LIMIT_NAMES},
    }


def scopes_of(form: MultiDictProxy[Any], who: Viewer) -> list[str]:
    chosen = [s for s in form.getall("scope", []) if isinstance(s, str)]
    if who.is_admin:
        chosen += words(text(form, "extra_scopes"))
    return sorted(set(chosen))


def limits_of(form: MultiDictProxy[Any]) -> dict[str, int]:
    limits = {}
    for name in LIMIT_NAMES:
        value = text(form, f"limit_{name}")
        if value:
            limits[name] = numbers.limit(name, value)
    return limits


def ips_of(form: MultiDictProxy[Any]) -> list[str] | None:
    """None (any address) when left empty."""
    return words(text(form, "allowed_ips")) or None


def expiry_of(form: MultiDictProxy[Any], now: float) -> Any:
    """Unix seconds, None for never, or ``"keep"`` (edit form: leave it as it is)."""
    choice = text(form, "expiry") or "never"
    if choice in ("keep", "never"):
        return None if choice == "never" else "keep"
    if choice == "date":
        day = text(form, "expires_on")
        if not day:
            raise InvalidInput("expires_on", "pick a date, or another expiry")
        try:  # the end of that day, UTC
            return parse_day(day) + DAY
        except ValueError as exc:
            raise InvalidInput("expires_on", str(exc)) from None
    preset = numbers.choice("expiry", choice, PRESETS, also=("never", "date"))
    return now + preset * DAY


def credential_of(form: MultiDictProxy[Any], current: str | None = None) -> Any:
    """The binding the form asks for: a name, None for none, or UNSET when the form
    has no such field (none configured) or leaves the binding as it is."""
    if "credential" not in form:
        return UNSET
    chosen = text(form, "credential") or None
    return UNSET if chosen == current else chosen


def key_fields(form: MultiDictProxy[Any], who: Viewer) -> dict[str, Any]:
    """KeyService.create's arguments (plus user_id and group_ids, for admins)."""
    expires = expiry_of(form, time.time())
    return {
        "name": text(form, "name"),
        "scopes": scopes_of(form, who),
        "expires_at": expires,
        "limits": limits_of(form),
        "allowed_ips": ips_of(form),
        "user_id": text(form, "user_id") or None,
        "group_ids": [g for g in form.getall("group_id", []) if isinstance(g, str)],
        # only an admin binds a key to an upstream credential
        "credential": credential_of(form) if who.is_admin else UNSET,
    }
