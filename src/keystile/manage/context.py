"""The services every door works with (the admin API, the pages): one object,
filled once the store is open."""

from __future__ import annotations

from dataclasses import dataclass

from keystile.core.clientip import TrustedProxies
from keystile.core.routes import RouteTable
from keystile.identity.sessions import SessionService
from keystile.limits.usage import UsageMeter
from keystile.manage.accounts import AccountService
from keystile.manage.service import KeyService
from keystile.serve.gate import Authorizer


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
