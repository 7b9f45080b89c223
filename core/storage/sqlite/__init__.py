"""The SQLite backend (the embedded default): one file, shared by the processes of one
machine."""

from ..shared import EXPORTED_TABLES
from .backend import SQLiteStorage
from .migrations import Migration, bundled_migrations

__all__ = ["EXPORTED_TABLES", "Migration", "SQLiteStorage", "bundled_migrations"]
