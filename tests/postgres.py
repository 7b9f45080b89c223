"""A PostgreSQL server for the tests: where it is, whether it answers, and a fresh schema
per test (so tests never see each other's rows and need no cleanup of their own).

The server comes from ``AIPERSONA_TEST_PG_URL`` (default
``postgresql://aipersona_test@127.0.0.1:5432/aipersona_test``) with the password in
``AIPERSONA_TEST_PG_PASSWORD``; ``.ci/run`` starts one and creates that role and database.
Under ``CI=true`` a missing server fails the run; elsewhere the Postgres tests are skipped
with a message that says why.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

URL = os.environ.get(
    "AIPERSONA_TEST_PG_URL", "postgresql://aipersona_test@127.0.0.1:5432/aipersona_test"
)
PASSWORD_ENV = "AIPERSONA_TEST_PG_PASSWORD"

_available: str | None = None  # "" when reachable, else the reason it is not


async def _probe() -> str:
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[test]')"
    try:
        conn = await asyncpg.connect(URL, password=os.environ.get(PASSWORD_ENV), timeout=5)
    except Exception as exc:
        return f"cannot connect to {URL}: {type(exc).__name__}: {exc}"
    await conn.close()
    return ""


async def require() -> None:
    """Skip (locally) or fail (in CI) the calling test when no server answers."""
    global _available
    if _available is None:
        _available = await _probe()
    if _available:
        message = f"PostgreSQL tests need a server: {_available}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI=true: a missing server fails the run)")
        pytest.skip(message + "; set AIPERSONA_TEST_PG_URL and AIPERSONA_TEST_PG_PASSWORD")


@asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A new, empty schema for one test; dropped with everything in it afterwards."""
    import asyncpg

    await require()
    name = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(URL, password=os.environ.get(PASSWORD_ENV), timeout=5)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        yield name
    finally:
        # a worker killed by a test may still hold locks for a moment
        for _ in range(50):
            try:
                await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
                break
            except asyncpg.PostgresError:
                await asyncio.sleep(0.1)
        await conn.close()


def database_section(schema: str) -> dict[str, Any]:
    """The ``[database]`` table of a config that uses ``schema`` on the test server."""
    return {"url": URL, "password_env": PASSWORD_ENV, "schema": schema}
