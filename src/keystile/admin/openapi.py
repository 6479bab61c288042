"""The OpenAPI 3.1 document, built from the same endpoint table as the router."""

from __future__ import annotations

from typing import Any

from keystile import __version__

NULLABLE_STRING = {"type": ["string", "null"]}
PRINTABLE = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": "^[^\\u0000-\\u001f\\u007f]*[^\\u0000-\\u0020\\u007f][^\\u0000-\\u001f\\u007f]*$",
}
SCOPE = {"type": "string", "pattern": "^[a-z0-9*][a-z0-9:._*-]{0,63}$"}
GROUP_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"}
DURATION = {"type": "string", "pattern": "^[1-9][0-9]{0,5}[smhdw]([0-9]{1,6}[smhdw]){0,4}$"}
TIME = {"type": ["string", "null"], "format": "date-time"}
STRINGS = {"type": "array", "items": {"type": "string"}}
LIMITS = {
    "type": "object",
    "properties": {name: {"type": "integer", "minimum": 1, "maximum": 10**12}
                   for name in ("per_second", "per_minute", "per_hour", "per_day", "quota_day",
                                "quota_month")},
    "additionalProperties": False,
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
            "replaced_by": NULLABLE_STRING,
            "routes": {"type": "array", "items": {"$ref": "#/components/schemas/Route"}},
            "key": {"type": "string", "description": "The key: in the create response only."},
        },
    },
    "KeyInput": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": PRINTABLE, "scopes": {"type": "array", "items": SCOPE},
            "expires_at": {"type": ["string", "null"], "format": "date-time",
                           "description": "ISO-8601, in the future; null: never"},
            "expires_in": {**DURATION, "description": "a duration such as 30d"},
            "metadata": {"type": "object", "maxProperties": 50,
                         "propertyNames": {"minLength": 1, "pattern": "[^ ]"}},
            "allowed_ips": {"type": "array", "items": {"type": "string", "minLength": 1,
                            "description": "an IPv4/IPv6 address or CIDR, or *"}},
            "limits": LIMITS, "enabled": {"type": "boolean"},
        },
        "not": {"required": ["expires_at", "expires_in"]},
    },
    "KeyCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": PRINTABLE, "scopes": {"type": "array", "items": SCOPE},
            "owner": PRINTABLE, "user_id": {"type": "string"},
            "expires_in": {**DURATION, "description": "a duration such as 30d"},
            "metadata": {"type": "object", "maxProperties": 50,
                         "propertyNames": {"minLength": 1, "pattern": "[^ ]"}},
            "allowed_ips": {"type": "array", "items": {"type": "string", "minLength": 1,
                            "description": "an IPv4/IPv6 address or CIDR, or *"}},
            "limits": LIMITS,
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
        "created_at": TIME, "updated_at": TIME}},
    "User": {"type": "object", "required": ["id", "external_id"], "properties": {
        "id": {"type": "string"}, "external_id": {"type": "string"}, "team_id": NULLABLE_STRING,
        "created_at": TIME, "updated_at": TIME}},
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


def document(endpoints: list[Any]) -> dict[str, Any]:
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
        params += [{"name": name, "in": "query", "required": False, "schema": schema}
                   for name, schema in ep.query.items()]  # fmt: skip
        params += [{"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
                   for name in ep.headers]  # fmt: skip
        if params:
            operation["parameters"] = params
        if ep.handler.__name__ in LINKS:
            operation["responses"][str(ep.status)]["links"] = LINKS[ep.handler.__name__]
        if ep.body is not None:
            schema = SCHEMAS[ep.body["$ref"].rsplit("/", 1)[1]] if "$ref" in ep.body else ep.body
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
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
