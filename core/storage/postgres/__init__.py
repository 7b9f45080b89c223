"""The PostgreSQL backend: one database shared by worker processes on any number of
machines (``[database] url``)."""

from .backend import PostgresStorage

__all__ = ["PostgresStorage"]
