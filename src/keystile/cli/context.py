"""What CLI commands work with."""

from __future__ import annotations

from dataclasses import dataclass

from keystile.config import Settings
from keystile.identity.sessions import SessionService
from keystile.manage.accounts import AccountService
from keystile.manage.service import KeyService


@dataclass(frozen=True)
class Cli:
    keys: KeyService
    accounts: AccountService
    settings: Settings
    sessions: SessionService
