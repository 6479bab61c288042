"""The admin REST API under /api/v1: one endpoint table feeds the router and the
OpenAPI document, so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from keystile.admin import accounts as acc
from keystile.admin import keys
from keystile.admin import usage as usage_api
from keystile.admin.context import ADMIN_CONTEXT
from keystile.admin.http import MAX_BODY, errors, reply
from keystile.admin.openapi import _list_of, _ref, document
from keystile.admin.validation import INPUTS, compile_document
from keystile.manage.context import ContextHolder
from keystile.manage.fields import CURSOR, FILTER, IDEMPOTENCY_KEY, INSTANT, PAGE, SEQ

PREFIX = "/api/v1"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    response: dict[str, Any]
    status: int = 200
    body: dict[str, Any] | None = None
    query: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    public: bool = False


DOCUMENT = web.AppKey("admin_document", dict)  # the OpenAPI document this app serves


async def openapi(request: web.Request) -> web.Response:
    return reply(request.config_dict[DOCUMENT])


KEY_QUERY = {"owner": FILTER, "user_id": FILTER, "team_id": FILTER, "group_id": FILTER,
             "state": {"enum": ["active", "expired", "disabled", "revoked", "deleted"]},
             "q": FILTER, "all": {"enum": ["0", "1", "true", "false"]}, "cursor": CURSOR,
             "limit": PAGE}  # fmt: skip
AUDIT_QUERY = {"target_type": FILTER, "target_id": FILTER, "actor": FILTER, "action": FILTER,
               "after": SEQ, "limit": PAGE}  # fmt: skip
K, T, U, G = f"{PREFIX}/keys", f"{PREFIX}/teams", f"{PREFIX}/users", f"{PREFIX}/groups"

ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", f"{PREFIX}/openapi.json", openapi, "This document", {"type": "object"},
             public=True),
    Endpoint("POST", K, keys.create_key, "Create a key (shown in this response only)",
             _ref("Key"), 201, body=_ref("KeyCreate")),
    Endpoint("GET", K, keys.list_keys, "List keys (never a key or its hash)", _ref("KeyList"),
             query=KEY_QUERY),
    Endpoint("GET", K + "/{key_id}", keys.get_key, "A key, its groups and reachable routes",
             _ref("Key")),
    Endpoint("PATCH", K + "/{key_id}", keys.update_key, "Change a key", _ref("Key"),
             body=_ref("KeyInput")),
    Endpoint("DELETE", K + "/{key_id}", keys.delete_key, "Delete a key (history stays)",
             _ref("Key")),
    Endpoint("POST", K + "/{key_id}/revoke", keys.revoke_key, "Revoke a key", _ref("Key")),
    Endpoint("POST", K + "/{key_id}/expire", keys.expire_key, "Expire a key now", _ref("Key")),
    Endpoint("POST", K + "/{key_id}/rotate", keys.rotate_key,
             "Replace a key; the old one works during the grace", _ref("Rotation"), 201,
             body=_ref("Rotate"), headers={"Idempotency-Key": IDEMPOTENCY_KEY}),
    Endpoint("GET", K + "/{key_id}/usage", keys.key_usage,
             "Requests of a key: allowed, denied by reason, per route, per hour",
             {"type": "object", "required": ["key_id", "allowed"]}, query={"since": INSTANT}),
    Endpoint("POST", f"{PREFIX}/usage", usage_api.report_usage,
             "Report tokens spent (scope usage:write): by reservation, or by key and "
             "request id; idempotent", usage_api.USAGE_RESULT,
             body=_ref("UsageReports")),
    Endpoint("GET", f"{PREFIX}/spend", usage_api.spend_report,
             "Tokens reported per key, route and hour, and their cost (routes' "
             "price_per_1k_tokens); since defaults to this month's start",
             {"type": "object", "required": ["since", "tokens"]},
             query={"team_id": FILTER, "user_id": FILTER, "key_id": FILTER, "since": INSTANT}),
    Endpoint("POST", f"{PREFIX}/explain", keys.explain_request,
             "What keystile would decide for a key on a request, and why (counts nothing)",
             {"type": "object", "required": ["allowed", "reason", "why"]},
             body=_ref("Explain")),
    Endpoint("POST", T, acc.create_team, "Create a team", _ref("Team"), 201,
             body=_ref("TeamCreate")),
    Endpoint("GET", T, acc.list_teams, "List teams", _list_of("Team")),
    Endpoint("GET", T + "/{team_id}", acc.get_team, "A team", _ref("Team")),
    Endpoint("PATCH", T + "/{team_id}", acc.update_team, "Change a team", _ref("Team"),
             body=_ref("TeamInput")),
    Endpoint("POST", U, acc.create_user, "Create a user", _ref("User"), 201,
             body=_ref("UserCreate")),
    Endpoint("GET", U, acc.list_users, "List users", _list_of("User"),
             query={"team_id": FILTER}),
    Endpoint("GET", U + "/{user_id}", acc.get_user, "A user", _ref("User")),
    Endpoint("PATCH", U + "/{user_id}", acc.update_user,
             "Change a user's role, email, team or disabled (passwords: CLI only)",
             _ref("User"), body=_ref("UserInput")),
    Endpoint("GET", U + "/{user_id}/sessions", acc.list_sessions, "A user's open sessions",
             _list_of("Session")),
    Endpoint("DELETE", U + "/{user_id}/sessions", acc.end_user_sessions,
             "End every session of a user", _ref("SessionsEnded")),
    Endpoint("GET", f"{PREFIX}/sessions", acc.list_sessions, "Open browser sessions",
             _list_of("Session"), query={"user_id": FILTER}),
    Endpoint("DELETE", f"{PREFIX}/sessions/{{session_id}}", acc.revoke_session,
             "End one session", _ref("Session")),
    Endpoint("POST", G, acc.create_group, "Create a group", _ref("Group"), 201,
             body=_ref("GroupCreate")),
    Endpoint("GET", G, acc.list_groups, "List groups", _list_of("Group")),
    Endpoint("GET", G + "/{group_id}", acc.get_group, "A group", _ref("Group")),
    Endpoint("PATCH", G + "/{group_id}", acc.update_group, "Rename a group or change its scopes",
             _ref("Group"), body=_ref("GroupInput")),
    Endpoint("DELETE", G + "/{group_id}", acc.delete_group, "Delete a group", _ref("Group")),
    Endpoint("PUT", G + "/{group_id}/users/{user_id}", acc.add_group_user,
             "Add a user to a group (their sessions get its scopes)", _ref("UserMembership")),
    Endpoint("DELETE", G + "/{group_id}/users/{user_id}", acc.remove_group_user,
             "Remove a user from a group", _ref("UserMembership")),
    Endpoint("PUT", G + "/{group_id}/keys/{key_id}", acc.add_group_key, "Add a key to a group",
             _ref("Membership")),
    Endpoint("DELETE", G + "/{group_id}/keys/{key_id}", acc.remove_group_key,
             "Remove a key from a group", _ref("Membership")),
    Endpoint("GET", f"{PREFIX}/routes", acc.list_routes, "Configured routes (no secret values)",
             _list_of("Route", {"unmatched": {"enum": ["allow", "deny"]}})),
    Endpoint("GET", f"{PREFIX}/audit", acc.list_audit, "The audit log",
             _list_of("AuditEntry", {"next_after": {"type": ["integer", "null"]}}),
             query=AUDIT_QUERY),
]  # fmt: skip


def admin_app(credentials: Collection[str] = ()) -> web.Application:
    """The admin API as an application, mounted at /api/v1 or served on its own listener.
    ``credentials``: the configured upstream credentials' names, which the document
    lists as the values a ``credential`` field may take."""
    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY)
    app[ADMIN_CONTEXT] = ContextHolder()
    app[DOCUMENT] = document(ENDPOINTS, credentials)
    app[INPUTS] = compile_document(app[DOCUMENT])  # requests are checked against it
    for ep in ENDPOINTS:
        app.router.add_route(ep.method, ep.path[len(PREFIX) :], ep.handler)
    return app
