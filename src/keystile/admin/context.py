"""What admin handlers work with, kept on the app under one typed key."""

from __future__ import annotations

from aiohttp import web

from keystile.admin.auth import authenticate
from keystile.manage.context import AdminContext, ContextHolder
from keystile.manage.permissions import Caller

ADMIN_CONTEXT = web.AppKey("admin_context", ContextHolder)


async def caller_of(request: web.Request) -> tuple[AdminContext, Caller]:
    ctx = request.config_dict[ADMIN_CONTEXT].context
    assert ctx is not None, "the admin API is served only once the store is open"
    return ctx, await authenticate(request, ctx.authorizer, ctx.trusted)
