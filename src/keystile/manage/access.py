"""Which routes a key can reach, and through what: its own scopes or a group."""

from __future__ import annotations

from typing import Any

from keystile.core.decide import has_scopes
from keystile.core.routes import RouteTable
from keystile.store import KeyRecord


def route_view(route: Any) -> dict[str, Any]:
    """A route as listings show it: never the injected values."""
    return {
        "name": route.name,
        "path": route.pattern,
        "methods": sorted(route.methods),
        "host": route.host,
        "scopes": sorted(route.scopes),
        "injects": [name for name, _ in route.inject],
    }


def reachable_routes(record: KeyRecord, routes: RouteTable) -> list[dict[str, Any]]:
    """Every configured route the key may use, with where each required scope comes from."""
    found = []
    for route in routes.routes:
        if not has_scopes(record.granted, route.scopes):
            continue
        via: dict[str, list[str]] = {}
        for scope in sorted(route.scopes):
            sources = ["key"] if scope in record.scopes else []
            sources += [f"group:{name}" for _, name, scopes in record.groups if scope in scopes]
            via[scope] = sources or ["*"]
        found.append({**route_view(route), "via": via})
    return found
