"""What the doors (admin API, pages, CLI) ask the service layer for when they read:
filters, records, page cursors. The store defines them; the doors name them here,
so that no door imports the store (ARCHITECTURE.md)."""

from keystile.store import KeyFilter, Session, Store
from keystile.store.copy import Copied, copy_store
from keystile.store.keys import encode_cursor
from keystile.store.records import ROLES

__all__ = ["ROLES", "Copied", "KeyFilter", "Session", "Store", "copy_store", "encode_cursor"]
