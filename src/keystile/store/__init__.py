"""The key store: records, migrations and the SQLite backend."""

from keystile.store.base import Audit
from keystile.store.keys import KeyFilter
from keystile.store.records import (
    STATES,
    UNKNOWN,
    AuditEntry,
    Group,
    KeyRecord,
    Team,
    Unknown,
    User,
)
from keystile.store.sqlite import Store

__all__ = ["STATES", "UNKNOWN", "Audit", "AuditEntry", "Group", "KeyFilter", "KeyRecord", "Store",
           "Team", "Unknown", "User"]  # fmt: skip
