"""The SQLite backend (the embedded default): one file, shared by the processes of one
machine."""

from .backend import SQLiteStorage
from .migrations import Migration, bundled_migrations
from .persona_queries import EXPORTED_TABLES

__all__ = ["EXPORTED_TABLES", "Migration", "SQLiteStorage", "bundled_migrations"]
