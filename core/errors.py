"""The errors aipersona raises for callers to handle. All derive from ``AipersonaError``.

Every message is one line, fit to show to a user or an operator, and never contains a
secret (API keys and tokens stay in the environment).
"""

from __future__ import annotations


class AipersonaError(Exception):
    """Base class of every error aipersona raises on purpose."""


class ConfigError(AipersonaError, ValueError):
    """The configuration file is missing, unreadable or invalid."""


class FieldValidationError(AipersonaError, ValueError):
    """A value or edit does not fit the persona schema."""


class PersonaNotFound(AipersonaError, LookupError):
    """No persona for that identity or id (or no such history entry of it)."""


class PluginError(AipersonaError, RuntimeError):
    """A plugin cannot be loaded or registered (bad import, bad hook implementation)."""


class LLMError(AipersonaError, RuntimeError):
    """The endpoint failed, timed out, or answered something unusable."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status_code: int | None = None
        self.detail = ""


class StructuredOutputError(LLMError):
    """The reply was not the JSON that was asked for."""


class LocalModelError(AipersonaError, RuntimeError):
    """The embedded model cannot be started."""


class StorageError(AipersonaError, RuntimeError):
    """The database cannot be used."""


class NotAnAipersonaDatabase(StorageError):
    """The file is not SQLite, is damaged, or belongs to another program."""


class DatabaseTooNew(StorageError):
    """The database was migrated by a newer aipersona than this one."""


class MigrationError(StorageError):
    """A migration failed and was rolled back."""
