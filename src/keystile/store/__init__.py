"""The key store: records, migrations and the SQLite backend."""

from keystile.store.base import Audit
from keystile.store.keys import KeyFilter
from keystile.store.records import (
    STATES,
    AuditEntry,
    Group,
    KeyRecord,
    Session,
    Team,
    User,
)
from keystile.store.sqlite import Store

__all__ = ["STATES", "Audit", "AuditEntry", "Group", "KeyFilter", "KeyRecord", "Session", "Store",
           "Team", "User"]  # fmt: skip
