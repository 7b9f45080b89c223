"""Connecting to PostgreSQL: the URL, the password from the environment, a pool, and errors
that are one clear line.

Driver: asyncpg. It speaks PostgreSQL's binary protocol natively on asyncio, prepares and
caches statements per connection on its own, and ships its own pool; measured per message it
costs the fewest round trips and the least CPU of the asyncio drivers (psycopg 3 would do,
with its pool package; asyncpg is one dependency and faster here).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ...errors import ConfigError, StorageError

try:
    import asyncpg
except ImportError:  # the [postgres] extra
    asyncpg = None  # type: ignore[assignment]  # checked before any use: INSTALL_HINT

INSTALL_HINT = (
    "[database] url is a PostgreSQL URL, but the PostgreSQL driver is not installed: "
    "pip install 'aipersona[postgres]'"
)


def safe_url(url: str) -> str:
    """The URL without a password (for messages and ``Storage.location``)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_url(url: str) -> None:
    """Refuse a URL that carries a password: passwords come from the environment."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"[database] url must start with postgresql://, got {safe_url(url)}")
    if parts.password or any(k == "password" for k, _ in parse_qsl(parts.query)):
        raise ConfigError(
            f"[database] url {safe_url(url)} contains a password: remove it and put the "
            "password in PGPASSWORD (or the variable named by [database] password_env)"
        )


def _reason(exc: BaseException) -> str:
    if asyncpg is not None:
        if isinstance(
            exc,
            asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError,
        ):
            return "the server refused the user name or password"
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return "the database does not exist"
    if isinstance(exc, TimeoutError):
        return "no answer from the server"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _login(password_env: str, schema: str, application: str) -> tuple[str | None, dict[str, str]]:
    """The password from the environment, and the session settings (name, schema)."""
    settings = {"application_name": application}
    if schema:
        settings["search_path"] = schema
    return os.environ.get(password_env or "PGPASSWORD") or None, settings


async def create_pool(
    url: str,
    *,
    password_env: str,
    schema: str = "",
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 10.0,
) -> Any:
    """An asyncpg pool; StorageError (one line, no secret) if the server is unreachable or
    refuses the credentials."""
    if asyncpg is None:
        raise StorageError(INSTALL_HINT)
    check_url(url)
    password, settings = _login(password_env, schema, "aipersona")
    try:
        return await asyncpg.create_pool(
            url,
            password=password,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            command_timeout=max(connect_timeout, 60.0),
            server_settings=settings,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise StorageError(f"cannot connect to {safe_url(url)}: {_reason(exc)}") from None


async def connect(
    url: str, *, password_env: str, schema: str = "", connect_timeout: float = 10.0
) -> Any:
    """One connection outside the pool (for a worker's presence lock)."""
    assert asyncpg is not None
    password, settings = _login(password_env, schema, "aipersona-presence")
    try:
        return await asyncpg.connect(
            url, password=password, timeout=connect_timeout, server_settings=settings
        )
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise StorageError(f"cannot connect to {safe_url(url)}: {_reason(exc)}") from None
