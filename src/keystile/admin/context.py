"""What admin handlers work with, kept on the app under one typed key."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from keystile.accounts import AccountService
from keystile.admin.auth import Caller, authenticate
from keystile.cache import CachedLookup
from keystile.credentials import CredentialSource
from keystile.decide import Decider
from keystile.routes import RouteTable
from keystile.service import KeyService
from keystile.usage import UsageMeter


@dataclass
class AdminContext:
    keys: KeyService
    accounts: AccountService
    lookup: CachedLookup
    routes: RouteTable
    sources: tuple[CredentialSource, ...]
    decider: Decider
    usage: UsageMeter


class ContextHolder:
    """Set on the admin app when it is built; filled when the store is open."""

    context: AdminContext | None = None


ADMIN_CONTEXT = web.AppKey("admin_context", ContextHolder)


async def caller_of(request: web.Request) -> tuple[AdminContext, Caller]:
    ctx = request.config_dict[ADMIN_CONTEXT].context
    assert ctx is not None, "the admin API is served only once the store is open"
    return ctx, await authenticate(request, ctx.lookup, ctx.sources, time.time())
