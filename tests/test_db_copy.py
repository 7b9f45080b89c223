"""``aipersona db copy``: SQLite to PostgreSQL and back, everything kept, verified, safe to run
again, and the copy usable right away."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from aipersona.core import Edit, Identity, PersonaCore
from tests import postgres
from tests.conftest import make_config, run_cli
from tests.fakes.openai_server import FakeOpenAI, updates

pytestmark = pytest.mark.timeout(120)

PEOPLE = [Identity("telegram", str(i), f"User {i}") for i in range(12)]


async def fill(core: PersonaCore) -> None:
    """Personas with versions, linked identities, ended and open sessions, done and pending
    updates (everything a store holds)."""
    for i, ident in enumerate(PEOPLE):
        await core.edit_persona(ident, [Edit("Demographics.Age", "set", 20 + i)])
        for s in range(3):
            await core.respond(ident, "c", f"{ident.user_id} says hello {s} ünïcödé 🎉")
            await core.end_session(ident, "c")
        await core.wait_for_updates()
        await core.respond(ident, "c", "still talking")  # an open session
    await core.link(PEOPLE[0], Identity("discord", "77", "Also Zero"))


def pg_url(schema: str) -> str:
    return f"{postgres.URL}?search_path={schema}"


def comparable(export: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in export.items() if k != "exported_at"}


async def exports(database: Any, base_url: str) -> dict[str, Any]:
    async with PersonaCore(make_config(database, base_url)) as core:
        return {
            f"{i.platform}:{i.user_id}": comparable(await core.export(i) or {})
            for i in [*PEOPLE, Identity("discord", "77")]
        }


async def exports_of(database: Any, base_url: str) -> list[dict[str, Any]]:
    async with PersonaCore(make_config(database, base_url)) as core:
        found = [await core.export(Identity("cli", n)) for n in "abc"]
    return [comparable(x) for x in found if x is not None]


async def cli(*args: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(run_cli, *args, timeout=90)


async def test_copy_sqlite_to_postgres_and_back(
    fake_llm: FakeOpenAI, pg_schema: str, tmp_path: Path
) -> None:
    fake_llm.push("json", updates(("Demographics.Name", "set", "Zed", "call me Zed")))
    sqlite_db = tmp_path / "bot.db"
    cfg = make_config(sqlite_db, fake_llm.base_url, persona={"update_every": 2})
    async with PersonaCore(cfg) as core:
        await fill(core)
    before = await exports(sqlite_db, fake_llm.base_url)
    assert any(x["persona_updates"] for x in before.values())

    pg = pg_url(pg_schema)
    env_args = ("--to-password-env", postgres.PASSWORD_ENV)
    code, out, err = await cli("db", "copy", "--from", str(sqlite_db), "--to", pg, *env_args)
    assert code == 0, err
    assert "verified:" in out and "MISMATCH" not in out
    assert "messages" in err and "/" in err  # the progress bar
    pg_db = postgres.database_section(pg_schema)
    assert await exports(pg_db, fake_llm.base_url) == before

    # again: safe, nothing doubled
    code, out2, err = await cli("db", "copy", "--from", str(sqlite_db), "--to", pg, *env_args)
    assert code == 0, err
    assert out2.splitlines()[-1] == out.splitlines()[-1]
    assert await exports(pg_db, fake_llm.base_url) == before

    # the copy is live: new rows get new ids after the copied ones
    async with PersonaCore(make_config(pg_db, fake_llm.base_url)) as core:
        reply = await core.respond(PEOPLE[1], "c", "hello from the new database")
        assert reply.ok
        data = await core.export(PEOPLE[1])
        assert data is not None and data["messages"][-1]["content"] == reply.text
        await core.respond(Identity("telegram", "new"), "c", "a new person")

    # and back into a new SQLite file
    back = tmp_path / "back.db"
    code, _, err = await cli(
        "db", "copy", "--from", pg, "--to", str(back), "--from-password-env", postgres.PASSWORD_ENV
    )
    assert code == 0, err
    assert await exports(back, fake_llm.base_url) == await exports(pg_db, fake_llm.base_url)


async def test_copy_refuses_a_target_holding_other_data(
    fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    one, other = tmp_path / "one.db", tmp_path / "other.db"
    async with PersonaCore(make_config(one, fake_llm.base_url)) as core:
        await core.respond(Identity("cli", "a"), "c", "in one")
    async with PersonaCore(make_config(other, fake_llm.base_url)) as core:
        for name in ("b", "c"):
            await core.respond(Identity("cli", name), "c", "in the other")
    before = await exports_of(other, fake_llm.base_url)
    code, _, err = await cli("db", "copy", "--from", str(one), "--to", str(other))
    assert code == 2 and "is not a copy of" in err and "Traceback" not in err
    assert await exports_of(other, fake_llm.base_url) == before  # nothing written
    code, _, err = await cli("db", "copy", "--from", str(one), "--to", str(one))
    assert code == 2 and "the same store" in err


async def test_an_encrypted_store_copies_as_ciphertext_and_opens_with_its_key(
    fake_llm: FakeOpenAI, pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    monkeypatch.setenv("AIPERSONA_TEST_COPY_KEY", base64.b64encode(bytes(range(32))).decode())
    privacy = {"encryption_key_env": "AIPERSONA_TEST_COPY_KEY"}
    sqlite_db = tmp_path / "bot.db"
    async with PersonaCore(make_config(sqlite_db, fake_llm.base_url, privacy=privacy)) as core:
        await fill(core)
    # the copy needs no key: it moves the sealed texts and the wrapped data keys as they are
    pg = pg_url(pg_schema)
    code, _out, err = await cli(
        "db",
        "copy",
        "--from",
        str(sqlite_db),
        "--to",
        pg,
        "--to-password-env",
        postgres.PASSWORD_ENV,
    )
    assert code == 0, err
    pg_db = postgres.database_section(pg_schema)
    async with PersonaCore(make_config(pg_db, fake_llm.base_url, privacy=privacy)) as core:
        data = await core.export(PEOPLE[3])
    assert data is not None and data["encryption"]["on"]
    assert "3 says hello 0 ünïcödé 🎉" in [m["content"] for m in data["messages"]]
