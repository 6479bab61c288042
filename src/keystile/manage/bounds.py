"""What one key may do that another may not: the test a self-service key's changes pass.

A key's rights are its scopes (its own and its groups'), its rate limits and
quotas, its IP allowlist, its expiry and whether it is enabled. ``proposed`` is
within ``bound`` when it is no looser in any of them:

- every scope it is granted is granted to ``bound`` (``*`` covers all but admin);
- every limit ``bound`` has, it has too, no higher (a missing limit is no limit);
- every network of its allowlist lies inside one of ``bound``'s (no allowlist is
  any address: only within a bound that has none);
- it expires no later than ``bound`` (never: only within a bound that never does);
- it is enabled only if ``bound`` is.

Team limits and allowlists are not compared: a key's team comes from its user,
which a self-service caller cannot choose, so its new keys share its team and
the team's limits bind them as they bind the caller.

Pure: no I/O, no framework.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from keystile.core.durations import format_instant
from keystile.core.model import ADMIN_SCOPE, ALL_SCOPES, KeyRecord
from keystile.manage.fields import LIMIT_NAMES


def covers(granted: Iterable[str], scope: str) -> bool:
    """``scope`` is among ``granted``, or ``*`` is and the scope is not admin."""
    held = set(granted)
    return scope in held or (ALL_SCOPES in held and scope != ADMIN_SCOPE)


def excess(proposed: KeyRecord, bound: KeyRecord) -> dict[str, str]:
    """Field -> what ``proposed`` allows beyond ``bound``; empty when it is within it."""
    found: dict[str, str] = {}
    extra = [s for s in proposed.granted if not covers(bound.granted, s) or s == ADMIN_SCOPE]
    if extra:
        found["scopes"] = f"{sorted(extra)} (yours: {sorted(bound.granted)})"
    for name in LIMIT_NAMES:
        most = bound.limits.get(name)
        if most is not None:
            mine = proposed.limits.get(name)
            if mine is None or mine > most:
                shown = "no limit" if mine is None else mine
                found[f"limits.{name}"] = f"{shown} (yours: {most})"
    if not networks_within(proposed.allowed_ips, bound.allowed_ips):
        found["allowed_ips"] = f"{_networks(proposed.allowed_ips)} (yours: " \
                               f"{_networks(bound.allowed_ips)})"  # fmt: skip
    if bound.expires_at is not None and (
        proposed.expires_at is None or proposed.expires_at > bound.expires_at
    ):
        shown = "never" if proposed.expires_at is None else format_instant(proposed.expires_at)
        found["expires_at"] = f"{shown} (yours: {format_instant(bound.expires_at)})"
    if proposed.enabled and not bound.enabled:
        found["enabled"] = "enabled (it was off)"
    return found


def networks_within(inner: tuple[str, ...] | None, outer: tuple[str, ...] | None) -> bool:
    """Every network of ``inner`` lies inside one of ``outer``; None is any address."""
    if outer is None:
        return True
    if inner is None:
        return False
    outer_nets = [ipaddress.ip_network(text, strict=False) for text in outer]
    for text in inner:
        net = ipaddress.ip_network(text, strict=False)
        if not any(net.version == o.version and net.subnet_of(o) for o in outer_nets):  # type: ignore[arg-type]
            return False
    return True


def _networks(networks: tuple[str, ...] | None) -> str:
    return "any address" if networks is None else ", ".join(networks) or "none"
