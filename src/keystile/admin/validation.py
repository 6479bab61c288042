"""Requests checked against the OpenAPI document the API serves.

Each operation's request body, query parameters and headers are validated
against the schemas the served document gives them, with the formats of
:data:`keystile.fields.FORMATS` asserted: a request passes exactly when it is
valid against ``/api/v1/openapi.json``. The first failure becomes an
:class:`~keystile.errors.InvalidInput` naming the field (``limits.per_minute``)
and showing the value, which the API answers with a 422.

Query values arrive as text: one that a parameter's schema wants as an integer
is read by :func:`keystile.numbers.whole_number` within the schema's bounds, as
the pages and the CLI read numbers; an empty value counts as absent (the
document says ``allowEmptyValue``). A header given empty is invalid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema_rs
import orjson
from aiohttp import web

from keystile.core import numbers
from keystile.core.errors import InvalidInput
from keystile.manage.fields import FORMATS, format_predicates


@dataclass(frozen=True)
class Check:
    """One schema, compiled, and the schema itself (to explain a failure)."""

    schema: dict[str, Any]
    validator: Any

    @classmethod
    def of(cls, schema: dict[str, Any]) -> Check:
        validator = jsonschema_rs.validator_for(schema, formats=format_predicates(),
                                                validate_formats=True)  # fmt: skip
        return cls(schema, validator)

    def __call__(self, instance: Any) -> None:
        for error in self.validator.iter_errors(instance):
            raise _invalid(error, self.schema)


@dataclass(frozen=True)
class OperationInputs:
    body: Check | None
    query: Check | None
    query_integers: dict[str, tuple[int, int]]  # name -> (minimum, maximum)
    headers: Check | None
    header_names: tuple[str, ...]


INPUTS = web.AppKey("admin_inputs", dict)  # operationId -> OperationInputs


def compile_document(document: dict[str, Any]) -> dict[str, OperationInputs]:
    """What each operation of ``document`` accepts, by operationId (the handler's name)."""
    schemas = document["components"]["schemas"]
    found = {}
    for operations in document["paths"].values():
        for operation in operations.values():
            body = None
            if "requestBody" in operation:
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                body = Check.of(_resolve(schema, schemas))
            params = operation.get("parameters", [])
            query = {p["name"]: p["schema"] for p in params if p["in"] == "query"}
            headers = {p["name"]: p["schema"] for p in params if p["in"] == "header"}
            found[operation["operationId"]] = OperationInputs(
                body=body,
                query=Check.of(_object(query)) if query else None,
                query_integers={n: _bounds(s) for n, s in query.items() if _wants_integer(s)},
                headers=Check.of(_object(headers)) if headers else None,
                header_names=tuple(headers),
            )
    return found


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """A request body's schema: a reference to a component, or given in place."""
    if "$ref" in schema:
        return dict(schemas[schema["$ref"].rsplit("/", 1)[1]])
    return schema


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def _bounds(schema: dict[str, Any]) -> tuple[int, int]:
    """An integer parameter's (minimum, maximum); the document gives both for each."""
    return int(schema["minimum"]), int(schema["maximum"])


def _wants_integer(schema: dict[str, Any]) -> bool:
    wanted = schema.get("type")
    return wanted == "integer" or (isinstance(wanted, list) and "integer" in wanted)


def _inputs(request: web.Request) -> OperationInputs:
    return request.config_dict[INPUTS][request.match_info.handler.__name__]  # type: ignore[no-any-return]


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object in the body, valid against the operation's documented schema."""
    body: Any = {}
    if request.can_read_body:
        raw = await request.read()
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise _unreadable("body is not JSON") from None
    if not isinstance(body, dict):
        raise _unreadable("body must be a JSON object")
    check = _inputs(request).body
    if check is not None:
        check(body)
    return body


def _unreadable(message: str) -> Exception:
    from keystile.manage.refusal import ApiError

    return ApiError(400, "invalid_request_error", "invalid_json", message)


def read_query(request: web.Request) -> dict[str, Any]:
    """The documented query parameters given (an empty value is absent), validated;
    integers read as such."""
    inputs = _inputs(request)
    values: dict[str, Any] = {}
    for name, value in request.query.items():
        if value == "" or name in values:
            continue
        bounds = inputs.query_integers.get(name)
        # read as the pages and the CLI read a number (keystile.numbers): ASCII digits only
        values[name] = value if bounds is None else numbers.whole_number(name, value, *bounds)
    if inputs.query is not None:
        inputs.query(values)
    return values


def read_headers(request: web.Request) -> dict[str, str]:
    """The documented headers given, validated (an empty one is invalid)."""
    inputs = _inputs(request)
    values = {name: request.headers[name] for name in inputs.header_names
              if name in request.headers}  # fmt: skip
    if inputs.headers is not None:
        inputs.headers(values)
    return values


# -- what went wrong, in words ---------------------------------------------------------------
_RULES = {
    "MaxLength": "is longer than {limit} characters",
    "MinLength": "is shorter than {limit} characters",
    "MaxItems": "has more than {limit} entries",
    "MinItems": "has fewer than {limit} entries",
    "MaxProperties": "has more than {limit} entries",
    "Maximum": "is above {limit}",
    "Minimum": "is below {limit}",
    "Pattern": "has the wrong form",
}


def _invalid(error: Any, schema: dict[str, Any]) -> InvalidInput:
    path = list(error.schema_path)
    names = [str(path[i + 1]) for i, part in enumerate(path[:-1]) if part == "properties"]
    kind, detail = type(error.kind).__name__, error.kind.as_dict()
    hint = _description(schema, path)
    if kind == "PropertyNames":  # a bad key of an object (metadata)
        return _invalid_key(error.kind.error, names, hint)
    if kind == "AdditionalProperties":
        known = ", ".join(_at(schema, path[:-1]).get("properties", {})) or "none"
        field = ".".join([*names, detail["unexpected"][0]])
        return InvalidInput(field, f"unknown field (expected one of {known})")
    if kind == "Required":
        return InvalidInput(".".join([*names, detail["property"]]), "is required")
    if kind == "Not":  # the one use: two fields that exclude each other
        excluded = detail["schema"]
        return InvalidInput(excluded["required"][0], excluded.get("description", "not allowed"))
    field = ".".join(names) or "body"
    if kind == "Format":
        try:
            FORMATS[detail["format"]](error.instance)
        except ValueError as exc:
            return InvalidInput(field, str(exc))
    if kind == "Type":
        rule = f"is not {' or '.join(detail['types'])}"
    elif kind == "Enum":
        rule = f"is not one of {', '.join(map(str, detail['options']))}"
    elif kind in _RULES:
        rule = _RULES[kind].format(limit=detail.get("limit"))
    else:
        rule = "is not valid"
    return InvalidInput(field, f"{_show(error.instance)} {rule}" + (f" ({hint})" if hint else ""))


def _invalid_key(error: Any, names: list[str], hint: str | None) -> InvalidInput:
    kind, detail = type(error.kind).__name__, error.kind.as_dict()
    rule = _RULES.get(kind, "is not valid").format(limit=detail.get("limit"))
    return InvalidInput(".".join(names), f"key {_show(error.instance)} {rule}"
                        + (f" ({hint})" if hint else ""))  # fmt: skip


def _at(schema: Any, path: list[Any]) -> Any:
    for part in path:
        schema = schema[part]
    return schema


def _description(schema: dict[str, Any], path: list[Any]) -> str | None:
    """The description nearest to the failing keyword, if the schema gives one."""
    found, node = None, schema
    for part in path[:-1]:
        node = node[part]
        if isinstance(node, dict) and isinstance(node.get("description"), str):
            found = node["description"]
    return found


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= 80 else f"{text[:80]}... ({len(text)} characters)"
