"""The OpenAPI 3.1 document, built from the same endpoint table as the router."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from keystile import __version__
from keystile.limits.tokens import MAX_REPORT
from keystile.manage import fields

NULLABLE_STRING = {"type": ["string", "null"]}
TIME = {"type": ["string", "null"], "format": "date-time"}
STRINGS = {"type": "array", "items": {"type": "string"}}
NOT_BOTH_EXPIRIES = {"required": ["expires_at", "expires_in"],
                     "description": "give expires_at or expires_in, not both"}  # fmt: skip
KEY_FIELDS = {
    "name": fields.text_schema("the key's name"), "scopes": fields.SCOPES,
    "expires_at": fields.EXPIRY, "expires_in": fields.LIFETIME, "metadata": fields.METADATA,
    "allowed_ips": fields.NETWORKS, "limits": fields.LIMITS, "credential": fields.CREDENTIAL,
}  # fmt: skip
TEAM_FIELDS = {"name": fields.text_schema("the team's name"), "limits": fields.LIMITS,
               "allowed_ips": {**fields.NETWORKS, "type": ["array", "null"]},
               "credential": fields.CREDENTIAL}  # fmt: skip
GROUP_FIELDS = {"name": fields.GROUP_NAME, "scopes": fields.SCOPES}
ROLE = {"enum": ["admin", "member"]}
EMAIL = fields.EMAIL


def _body(properties: dict[str, Any], required: tuple[str, ...] = (),
          excluded: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """A request body: an object with these fields and no others (``excluded``: a
    combination that is not allowed)."""
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False,
                              "properties": properties}  # fmt: skip
    if required:
        schema["required"] = list(required)
    if excluded:
        schema["not"] = excluded
    return schema


# POST /usage: token reports (admin/usage.py)
MAX_REPORTS = 100  # the largest valid batch stays within the API's 64 KiB body limit
REPORT = {
    "type": "object", "additionalProperties": False, "required": ["tokens"],
    "properties": {
        "tokens": {"type": "integer", "minimum": 0, "maximum": MAX_REPORT},
        "reservation": {"type": "string", "minLength": 1, "maxLength": 120,
                        "pattern": "^[A-Za-z0-9._-]+$"},
        "key_id": fields.ID, "request_id": fields.IDEMPOTENCY_KEY,
        "route": {"type": "string", "maxLength": 64, "pattern": "^[a-z0-9_.-]*$"},
    },
    # a reservation, or a key and the caller's request id: one of them
    "oneOf": [{"required": ["reservation"], "not": {"anyOf": [{"required": ["key_id"]},
                                                              {"required": ["request_id"]}]}},
              {"required": ["key_id", "request_id"], "not": {"required": ["reservation"]}}],
}  # fmt: skip
USAGE_REPORTS = {
    "type": "object", "additionalProperties": False, "required": ["reports"],
    "properties": {"reports": {"type": "array", "minItems": 1, "maxItems": MAX_REPORTS,
                               "items": REPORT}},
}  # fmt: skip


# Request bodies: the API validates every request against these (admin/validation.py).
REQUESTS: dict[str, Any] = {
    "KeyCreate": _body({**KEY_FIELDS, "owner": fields.text_schema("who the key is for"),
                        "user_id": fields.ID}, ("name",), NOT_BOTH_EXPIRIES),
    "KeyInput": _body({**KEY_FIELDS, "enabled": {"type": "boolean"}}, (), NOT_BOTH_EXPIRIES),
    "Rotate": _body({"grace": fields.GRACE}),
    "UsageReports": USAGE_REPORTS,
    "Explain": _body({"key_id": fields.ID, "url": fields.URL, "method": fields.METHOD,
                      "client_ip": fields.ADDRESS,
                      # the request's headers, screened as the auth path screens them
                      "headers": {"type": "object", "maxProperties": 50,
                                  "additionalProperties": {"type": "string",
                                                           "maxLength": 8192}}},
                     ("key_id", "url")),
    "TeamCreate": _body(TEAM_FIELDS, ("name",)),
    "TeamInput": _body(TEAM_FIELDS),
    "UserCreate": _body({"external_id": fields.text_schema("e.g. an email address"),
                         "team_id": fields.ID, "role": ROLE, "email": EMAIL},
                        ("external_id",)),
    "UserInput": _body({"role": ROLE, "email": {**EMAIL, "type": ["string", "null"]},
                        "team_id": {**fields.ID, "type": ["string", "null"]},
                        "disabled": {"type": "boolean"}}),
    "GroupCreate": _body(GROUP_FIELDS, ("name",)),
    "GroupInput": _body(GROUP_FIELDS),
}  # fmt: skip

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["message", "type", "code"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "code": {"type": "string"}},
        }},
    },
    "Key": {
        "type": "object",
        "required": ["id", "name", "display_prefix", "state", "scopes", "granted_scopes"],
        "properties": {
            "id": {"type": "string"}, "name": {"type": "string"},
            "display_prefix": {"type": "string"}, "owner": NULLABLE_STRING,
            "user_id": NULLABLE_STRING, "scopes": STRINGS, "granted_scopes": STRINGS,
            "groups": STRINGS, "metadata": {"type": "object"},
            "state": {"enum": ["active", "expired", "disabled", "revoked", "deleted"]},
            "enabled": {"type": "boolean"}, "created_at": TIME, "updated_at": TIME,
            "last_used_at": TIME, "expires_at": TIME, "revoked_at": TIME, "deleted_at": TIME,
            "allowed_ips": {"type": ["array", "null"], "items": {"type": "string"}},
            "limits": {"type": "object"}, "origin": {"type": "string"},
            "hash_scheme": {"type": "string"}, "rotated_from": NULLABLE_STRING,
            "replaced_by": NULLABLE_STRING, "team_id": NULLABLE_STRING,
            "credential": NULLABLE_STRING,
            "routes": {"type": "array", "items": {"$ref": "#/components/schemas/Route"}},
            "key": {"type": "string", "description": "The key: in the create response only."},
        },
    },
    "KeyList": {"type": "object", "required": ["data"], "properties": {
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Key"}},
        "next_cursor": NULLABLE_STRING}},
    "Rotation": {"type": "object", "required": ["id", "old_id", "new"], "properties": {
        "id": {"type": "string"}, "old_id": {"type": "string"}, "old_expires_at": TIME,
        "key": NULLABLE_STRING, "replayed": {"type": "boolean"},
        "new": {"$ref": "#/components/schemas/Key"}}},
    "Team": {"type": "object", "required": ["id", "name"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "limits": {"type": "object"},
        "allowed_ips": {"type": ["array", "null"], "items": {"type": "string"}},
        "credential": NULLABLE_STRING, "created_at": TIME, "updated_at": TIME}},
    "User": {"type": "object", "required": ["id", "external_id", "role"], "properties": {
        "id": {"type": "string"}, "external_id": {"type": "string"}, "team_id": NULLABLE_STRING,
        "role": ROLE, "email": NULLABLE_STRING, "has_password": {"type": "boolean"},
        "disabled": {"type": "boolean"}, "disabled_at": TIME,
        "created_at": TIME, "updated_at": TIME}},
    "Session": {"type": "object", "required": ["id", "user_id"], "properties": {
        "id": {"type": "string"}, "user_id": {"type": "string"}, "created_at": TIME,
        "last_seen_at": TIME, "expires_at": TIME, "revoked_at": TIME,
        "client_ip": NULLABLE_STRING, "user_agent": NULLABLE_STRING}},
    "SessionsEnded": {"type": "object", "required": ["user_id", "ended"], "properties": {
        "user_id": {"type": "string"}, "ended": {"type": "integer"}}},
    "UserMembership": {"type": "object", "properties": {
        "group_id": {"type": "string"}, "user_id": {"type": "string"},
        "member": {"type": "boolean"}, "changed": {"type": "boolean"}}},
    "Group": {"type": "object", "required": ["id", "name", "scopes"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "scopes": STRINGS,
        "created_at": TIME, "updated_at": TIME}},
    "Membership": {"type": "object", "properties": {
        "group_id": {"type": "string"}, "key_id": {"type": "string"},
        "member": {"type": "boolean"}, "changed": {"type": "boolean"}}},
    "Route": {"type": "object", "required": ["name", "path"], "properties": {
        "name": {"type": "string"}, "path": {"type": "string"}, "methods": STRINGS,
        "host": NULLABLE_STRING, "scopes": STRINGS, "injects": STRINGS,
        "via": {"type": "object", "additionalProperties": STRINGS}}},
    "AuditEntry": {"type": "object", "required": ["seq", "at", "actor", "action"], "properties": {
        "seq": {"type": "integer"}, "at": TIME, "actor": {"type": "string"},
        "action": {"type": "string"}, "target_type": {"type": "string"},
        "target_id": {"type": "string"}, "before": {"type": ["object", "null"]},
        "after": {"type": ["object", "null"]}}},
    **REQUESTS,
}  # fmt: skip


def _list_of(name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": ["data"], "properties": {
        "data": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}},
        **(extra or {})}}  # fmt: skip


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


# Where the ids a create returns can be used next (lets clients and fuzzers follow them).
LINKS = {
    "create_key": {op: {"operationId": op, "parameters": {"key_id": "$response.body#/id"}}
                   for op in ("get_key", "update_key", "revoke_key", "expire_key", "rotate_key",
                              "delete_key")},
    "create_team": {"get_team": {"operationId": "get_team",
                                 "parameters": {"team_id": "$response.body#/id"}}},
    "create_user": {"get_user": {"operationId": "get_user",
                                 "parameters": {"user_id": "$response.body#/id"}}},
    "create_group": {op: {"operationId": op, "parameters": {"group_id": "$response.body#/id"}}
                     for op in ("get_group", "update_group", "delete_group")},
}  # fmt: skip


BINDABLE = ("KeyCreate", "KeyInput", "TeamCreate", "TeamInput")


def _schemas(credentials: Collection[str]) -> dict[str, Any]:
    """SCHEMAS with ``credential`` fields naming the configured credentials (or null)."""
    names = {**fields.CREDENTIAL, "enum": [*sorted(credentials), None]}
    schemas = dict(SCHEMAS)
    for name in BINDABLE:
        body = SCHEMAS[name]
        schemas[name] = {**body, "properties": {**body["properties"], "credential": names}}
    return schemas


def document(endpoints: list[Any], credentials: Collection[str] = ()) -> dict[str, Any]:
    """The document; ``credentials``: the names a ``credential`` field may take."""
    schemas = _schemas(credentials)
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        operation: dict[str, Any] = {
            "operationId": ep.handler.__name__,
            "summary": ep.summary,
            "tags": [ep.path.split("/")[3]],
            "responses": {
                str(ep.status): {"description": "OK", **_json(ep.response)},
                "default": {"description": "Error", **_json(_ref("Error"))},
            },
        }
        params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in _path_params(ep.path)]  # fmt: skip
        params += [{"name": name, "in": "query", "required": False, "allowEmptyValue": True,
                    "schema": schema} for name, schema in ep.query.items()]  # fmt: skip
        params += [{"name": name, "in": "header", "required": False, "schema": schema}
                   for name, schema in ep.headers.items()]  # fmt: skip
        if params:
            operation["parameters"] = params
        if ep.handler.__name__ in LINKS:
            operation["responses"][str(ep.status)]["links"] = LINKS[ep.handler.__name__]
        if ep.body is not None:
            schema = schemas[ep.body["$ref"].rsplit("/", 1)[1]] if "$ref" in ep.body else ep.body
            required = bool(schema.get("required"))  # a create needs its body
            operation["requestBody"] = {"required": required, **_json(ep.body)}
        if not ep.public:
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
        paths.setdefault(ep.path, {})[ep.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "keystile admin API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
