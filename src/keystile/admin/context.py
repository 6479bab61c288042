"""What admin handlers work with, kept on the app under one typed key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from keystile.accounts import AccountService
from keystile.admin.auth import Caller, authenticate
from keystile.clientip import TrustedProxies
from keystile.gate import Authorizer
from keystile.routes import RouteTable
from keystile.service import KeyService
from keystile.sessions import SessionService
from keystile.usage import UsageMeter


@dataclass
class AdminContext:
    keys: KeyService
    accounts: AccountService
    authorizer: Authorizer
    trusted: TrustedProxies
    usage: UsageMeter
    sessions: SessionService

    @property
    def routes(self) -> RouteTable:
        return self.authorizer.rules.routes


class ContextHolder:
    """Set on the admin app when it is built; filled when the store is open."""

    context: AdminContext | None = None


ADMIN_CONTEXT = web.AppKey("admin_context", ContextHolder)


async def caller_of(request: web.Request) -> tuple[AdminContext, Caller]:
    ctx = request.config_dict[ADMIN_CONTEXT].context
    assert ctx is not None, "the admin API is served only once the store is open"
    return ctx, await authenticate(request, ctx.authorizer, ctx.trusted)
