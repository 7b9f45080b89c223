"""PostgreSQL as a user meets it: the URL and password rules, an unreachable server, wrong
credentials, a database of another program or of a newer aipersona, and migrations that
fail. Every refusal is one line, exit status 2, nothing written."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from aipersona.core import MigrationError
from aipersona.core.storage.migration_files import Migration, bundled_migrations
from aipersona.core.storage.postgres import PostgresStorage
from tests import postgres
from tests.conftest import run_cli

pytestmark = pytest.mark.timeout(60)


def write_config(tmp_path: Path, url: str, *, schema: str = "", password_env: str = "") -> Path:
    cfg = tmp_path / "bot.toml"
    lines = ["[database]", f'url = "{url}"']
    if schema:
        lines.append(f'schema = "{schema}"')
    if password_env:
        lines.append(f'password_env = "{password_env}"')
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cfg


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return await asyncio.to_thread(run_cli, *args, env=env, timeout=40)


def one_line(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err


async def test_a_url_with_a_password_is_refused_with_a_hint(tmp_path: Path) -> None:
    for url in (
        "postgresql://bot:s3cr3t-value@127.0.0.1:5432/db",
        "postgresql://bot@127.0.0.1:5432/db?password=s3cr3t-value",
    ):
        code, out, err = await cli("migrate", "--config", str(write_config(tmp_path, url)))
        one_line(code, err, "contains a password", "PGPASSWORD")
        assert "s3cr3t-value" not in out + err
        code, out, err = await cli("migrate", "--database", url)  # the flag too
        one_line(code, err, "contains a password")
        assert "s3cr3t-value" not in out + err


async def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "postgresql://bot@127.0.0.1:9/db")
    for args in (["migrate"], ["persona", "show", "-p", "cli", "-u", "a"], ["chat"]):
        code, _, err = await cli(*args, "--config", str(cfg))
        one_line(code, err, "cannot connect to postgresql://bot@127.0.0.1:9/db")


async def test_wrong_credentials_and_missing_database(pg_schema: str, tmp_path: Path) -> None:
    url = postgres.URL
    env = {"WRONG_PASSWORD": "not-the-password"}
    cfg = write_config(tmp_path, url, schema=pg_schema, password_env="WRONG_PASSWORD")
    code, out, err = await cli("migrate", "--config", str(cfg), env=env)
    one_line(code, err, "refused the user name or password")
    assert "not-the-password" not in out + err
    missing = url.rsplit("/", 1)[0] + "/no_such_database_here"
    cfg = write_config(tmp_path, missing, password_env=postgres.PASSWORD_ENV)
    code, _, err = await cli("migrate", "--config", str(cfg))
    one_line(code, err, "does not exist")


async def schema_state(schema: str) -> list[tuple[str, str]]:
    import asyncpg

    conn = await asyncpg.connect(postgres.URL, password=os.environ.get(postgres.PASSWORD_ENV))
    try:
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = $1 ORDER BY 1, 2",
            schema,
        )
        return [(r[0], r[1]) for r in rows]
    finally:
        await conn.close()


async def run_sql(schema: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        postgres.URL,
        password=os.environ.get(postgres.PASSWORD_ENV),
        server_settings={"search_path": schema},
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("case", "sql", "expected"),
    [
        ("another program", "CREATE TABLE notes (id INT, body TEXT);", "not an aipersona database"),
        (
            "newer aipersona",
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at DOUBLE PRECISION NOT NULL);"
            " INSERT INTO schema_migrations VALUES (1, 'initial', 0), (9999, 'future', 0);",
            "newer than this aipersona",
        ),
    ],
)
async def test_foreign_or_newer_database_is_refused_untouched(
    case: str, sql: str, expected: str, pg_schema: str, tmp_path: Path
) -> None:
    await run_sql(pg_schema, sql)
    before = await schema_state(pg_schema)
    cfg = write_config(tmp_path, postgres.URL, schema=pg_schema, password_env=postgres.PASSWORD_ENV)
    for args in (["migrate"], ["persona", "show", "-p", "cli", "-u", "a"]):
        code, _, err = await cli(*args, "--config", str(cfg))
        one_line(code, err, expected)
    assert await schema_state(pg_schema) == before


async def test_migrate_and_a_failing_migration_rolls_back(pg_schema: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, postgres.URL, schema=pg_schema, password_env=postgres.PASSWORD_ENV)
    code, out, err = await cli("migrate", "--config", str(cfg))
    newest = bundled_migrations("postgres")[-1]
    assert code == 0, err
    assert f"applied {newest.label}" in out and f"is at version {newest.version}" in out
    assert postgres.URL.split("//", 1)[1] in out  # where, never a password
    store = await PostgresStorage.open(
        postgres.URL, password_env=postgres.PASSWORD_ENV, schema=pg_schema
    )
    try:
        bad = Migration(
            newest.version + 1, "broken", "CREATE TABLE t_ok (x INTEGER);\nCREATE TABLE oops (;"
        )
        with pytest.raises(MigrationError, match="broken failed and was rolled back"):
            await store.migrate([*bundled_migrations("postgres"), bad])
        assert await store.schema_version() == newest.version
    finally:
        await store.close()
    assert "t_ok" not in {table for table, _ in await schema_state(pg_schema)}
