"""Admin API plumbing: JSON in and out, one error shape (input: validation.py).

Errors are ``{"error": {"message", "type", "code"}}`` with the status that fits:
400 unreadable body, 401/403 who is asking, 404 unknown id, 409 conflicting
state, 413 body too large, 422 a field with a bad value (named in the message
and in ``code``), 503 store unavailable. Bad input never becomes a 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from keystile.core.durations import format_instant, parse_duration, parse_instant
from keystile.core.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from keystile.manage.refusal import ApiError

MAX_BODY = 64 * 1024
TIME_FIELDS = ("created_at", "updated_at", "last_used_at", "expires_at", "revoked_at",
               "deleted_at", "at", "last_seen_at", "disabled_at")  # fmt: skip
log = logging.getLogger("keystile.admin")


def iso(data: dict[str, Any]) -> dict[str, Any]:
    """Unix seconds in the known time fields as ISO-8601 UTC."""
    for name in TIME_FIELDS:
        if isinstance(data.get(name), int | float):
            data[name] = format_instant(data[name])
    return data


def reply(data: Any, status: int = 200, no_store: bool = False) -> web.Response:
    headers = {"Cache-Control": "no-store"} if no_store else None
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")  # fmt: skip


def error(status: int, type_: str, code: str, message: str) -> web.Response:
    body = {"error": {"message": message, "type": type_, "code": code}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store"})  # fmt: skip


def expiry(body: Mapping[str, Any]) -> Any:
    """expires_at (ISO-8601, or null to clear) or expires_in (a duration) of a validated
    body, as Unix seconds or None; absent: MISSING."""
    try:
        if body.get("expires_in") is not None:
            return time.time() + parse_duration(body["expires_in"])
        if "expires_at" in body:
            value = body["expires_at"]
            return None if value is None else parse_instant(value)
    except ValueError as exc:
        field = "expires_in" if "expires_in" in body else "expires_at"
        raise InvalidInput(field, str(exc)) from None
    return MISSING


MISSING: Any = object()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error(exc.status, exc.type, exc.code, exc.message)
    except InvalidInput as exc:
        return error(422, "invalid_request_error", exc.field, str(exc))
    except NotFound as exc:
        return error(404, "not_found_error", "not_found", str(exc))
    except Conflict as exc:
        return error(409, "conflict_error", "conflict", str(exc))
    except StoreUnavailable:
        log.exception("store unavailable")
        return error(503, "api_error", "store_unavailable", "the key store is unavailable")
    except web.HTTPRequestEntityTooLarge:
        return error(413, "invalid_request_error", "body_too_large",
                     f"request bodies are limited to {MAX_BODY} bytes")  # fmt: skip
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        response = error(exc.status, "invalid_request_error", code, exc.reason)
        if "Allow" in exc.headers:  # 405 names the methods that work
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:  # a bug: say so in JSON, log it, show no detail
        log.exception("admin API error on %s %s", request.method, request.path)
        return error(500, "api_error", "internal_error", "internal error (logged)")
