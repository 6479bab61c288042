"""The key store: records, migrations, and its SQLite and PostgreSQL backends."""

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
from keystile.store.sql import Audit
from keystile.store.store import Store, is_postgres

__all__ = ["STATES", "Audit", "AuditEntry", "Group", "KeyFilter", "KeyRecord", "Session", "Store",
           "Team", "User", "is_postgres"]  # fmt: skip
