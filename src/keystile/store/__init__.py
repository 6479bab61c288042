"""The key store: records, migrations and the SQLite backend."""

from keystile.store.records import STATES, KeyRecord
from keystile.store.sqlite import Store

__all__ = ["STATES", "KeyRecord", "Store"]
