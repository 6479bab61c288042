"""What CLI commands work with."""

from __future__ import annotations

from dataclasses import dataclass

from keystile.accounts import AccountService
from keystile.config import Settings
from keystile.service import KeyService
from keystile.sessions import SessionService


@dataclass(frozen=True)
class Cli:
    keys: KeyService
    accounts: AccountService
    settings: Settings
    sessions: SessionService
