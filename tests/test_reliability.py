"""Fault tolerance: a failing model endpoint, SIGKILL mid-transaction, two writer processes,
and isolation between 200 concurrent users. Deterministic and bounded in time."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import openai._base_client
import pytest

from aipersona.core.db import Database, Migration, bundled_migrations
from aipersona.core.edits import Edit
from aipersona.core.engine import PersonaCore
from aipersona.core.personas import Identity
from tests.conftest import make_config
from tests.fakes.openai_server import (
    CutStream,
    Error,
    FakeOpenAI,
    Hang,
    Json,
    Raw,
    Tools,
    system_text,
)

pytestmark = pytest.mark.timeout(60)

ALICE = Identity("cli", "alice")
BOB = Identity("cli", "bob")
KNOWN = {"Demographics.Name": "Alice", "Demographics.Age": 30}
UPDATE = Json(
    {
        "updates": [
            {"field": "Demographics.Name", "op": "set", "value": "Alicia", "evidence": "call me"},
            {"field": "Demographics.Age", "op": "set", "value": 31, "evidence": "I'm 31"},
            {
                "field": "Personality.Values_and_Interests",
                "op": "append",
                "value": ["climbing"],
                "evidence": "I climb",
            },
        ]
    }
)
AFTER = {
    "Demographics.Name": "Alicia",
    "Demographics.Age": 31,
    "Personality.Values_and_Interests": ["climbing"],
}


@pytest.fixture
async def raw_fake() -> Any:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def tiny_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """openai's default backoff is 0.5 s, 1 s...: make retries without Retry-After fast."""
    monkeypatch.setattr(openai._base_client, "INITIAL_RETRY_DELAY", 0.01)


async def known_persona(core: PersonaCore) -> None:
    await core.edit_persona(
        ALICE,
        [Edit("Demographics.Name", "set", "Alice"), Edit("Demographics.Age", "set", 30)],
    )


async def assert_message_kept_persona_untouched(core: PersonaCore, texts: list[str]) -> None:
    persona = await core.persona(ALICE)
    assert persona is not None and persona.values == KNOWN
    data = await core.export(ALICE)
    assert data is not None
    assert [m["content"] for m in data["messages"] if m["role"] == "user"] == texts
    assert [h["source"] for h in data["history"]] == ["user", "user"]


# -- a failing model endpoint ----------------------------------------------------------------

# item scripted for every request; how many requests max_retries=2 allows (HTTP failures are
# retried twice; a 200 whose body is unusable is not retried by the openai client)
FAILURES: dict[str, tuple[Any, int]] = {
    "500": (Error(500, headers={"retry-after-ms": "10"}), 3),
    "429_retry_after": (Error(429, headers={"Retry-After": "0.05"}), 3),
    "hang_past_timeout": (Hang(1.0), 3),
    "invalid_json_body": (Raw(200, "this is not json {"), 1),
    "not_a_completion": (Raw(200, '{"choices": [{"message": 5}]}'), 1),
}


@pytest.mark.parametrize("case", list(FAILURES))
async def test_endpoint_failure_is_short_bounded_and_keeps_the_message(
    case: str, raw_fake: FakeOpenAI, db_path: Path, tiny_backoff: None
) -> None:
    cfg = make_config(db_path, raw_fake.base_url, llm={"max_retries": 2, "timeout_seconds": 0.3})
    async with PersonaCore(cfg) as core:
        await known_persona(core)
        item, expected = FAILURES[case]
        raw_fake.push("chat", *[item] * expected)
        t0 = time.monotonic()
        reply = await core.respond(ALICE, "c1", "hello?")
        elapsed = time.monotonic() - t0
        assert not reply.ok and reply.error == "llm_unavailable"
        assert reply.text == cfg.chat.apology and len(reply.text) < 120
        assert len(raw_fake.chat_requests()) == expected
        assert elapsed < 3.0
        if case == "429_retry_after":
            assert elapsed >= 0.1  # the two waits honoured Retry-After: 0.05 s each
        await assert_message_kept_persona_untouched(core, ["hello?"])
        # and the endpoint recovering is enough: the next message works
        reply = await core.respond(ALICE, "c1", "and now?")
        assert reply.ok and reply.text == "echo: and now?"


async def test_transient_500s_then_success_is_one_good_reply(
    raw_fake: FakeOpenAI, db_path: Path
) -> None:
    cfg = make_config(db_path, raw_fake.base_url, llm={"max_retries": 2})
    async with PersonaCore(cfg) as core:
        raw_fake.push("chat", *[Error(503, headers={"retry-after-ms": "5"})] * 2)
        reply = await core.respond(ALICE, "c1", "hi")
        assert reply.ok and reply.text == "echo: hi"
        assert len(raw_fake.chat_requests()) == 3
        data = await core.export(ALICE)
    assert data is not None and [m["role"] for m in data["messages"]] == ["user", "assistant"]


async def test_stream_cut_half_way(raw_fake: FakeOpenAI, db_path: Path) -> None:
    cfg = make_config(db_path, raw_fake.base_url, llm={"max_retries": 2, "stream": True})
    pieces: list[str] = []

    async def on_delta(delta: str) -> None:
        pieces.append(delta)

    async with PersonaCore(cfg) as core:
        await known_persona(core)
        raw_fake.push("chat", CutStream("a partial answer that is cut"))
        reply = await core.respond(ALICE, "c1", "tell me a story", on_delta=on_delta)
        assert not reply.ok and reply.error == "llm_unavailable"
        assert len(raw_fake.chat_requests()) <= 3
        await assert_message_kept_persona_untouched(core, ["tell me a story"])
        data = await core.export(ALICE)
        assert data is not None and all(m["role"] == "user" for m in data["messages"])


async def test_invalid_tool_arguments_leave_persona_valid(
    raw_fake: FakeOpenAI, db_path: Path
) -> None:
    cfg = make_config(db_path, raw_fake.base_url, llm={"max_retries": 2})
    async with PersonaCore(cfg) as core:
        await known_persona(core)
        raw_fake.push(
            "chat",
            Tools(
                [
                    ("update_persona_field", "{not json"),
                    ("update_persona_field", "[1, 2]"),
                    ("update_persona_field", {"field": "Demographics.Age", "value": "old"}),
                    ("update_persona_field", {"field": "No.Such", "value": "x"}),
                    ("update_persona_field", {"value": 3}),
                    ("forget_persona_field", {"field": 7}),
                ]
            ),
            "done",
        )
        reply = await core.respond(ALICE, "c1", "hello")
        assert reply.ok and reply.text == "done"
        assert len(reply.tool_results) == 6 and all(r.error for r in reply.tool_results)
        persona = await core.persona(ALICE)
        assert persona is not None and persona.values == KNOWN


async def test_invalid_optimizer_json_is_bounded_and_changes_nothing(
    raw_fake: FakeOpenAI, db_path: Path
) -> None:
    cfg = make_config(db_path, raw_fake.base_url, persona={"update_every": 1})
    raw_fake.json_default = lambda req: "not json at all {"
    async with PersonaCore(cfg) as core:
        await known_persona(core)
        for i in range(3):  # three attempts (max_update_attempts) at the same update
            await core.respond(ALICE, "c1", f"message {i}")
            if i == 0:
                await core.end_session(ALICE, "c1")
            else:
                update = (await core.sessions.pending_updates())[0]
                await core.run_update(update)
            await core.wait_for_updates()
        persona = await core.persona(ALICE)
        assert persona is not None and persona.values == KNOWN
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT status, attempts FROM persona_updates").fetchall()
    assert rows == [("failed", 3)]
    assert len(raw_fake.json_requests()) == 3


# -- SIGKILL in the middle of a transaction --------------------------------------------------

UPDATE_CHILD = """
import asyncio, sys
from aipersona.core import personas
from aipersona.core.config import Config
from aipersona.core.engine import PersonaCore

db_path, base_url = sys.argv[1], sys.argv[2]
original = personas.PersonaStore._write_changes

async def write_then_block(self, conn, persona_id, persona, changes):
    await original(self, conn, persona_id, persona, changes)
    await conn.execute("PRAGMA cache_spill = ON")
    print("MID-TRANSACTION", flush=True)  # the changes are written, not committed
    await asyncio.sleep(3600)

personas.PersonaStore._write_changes = write_then_block

async def main():
    cfg = Config.from_dict({
        "database": {"path": db_path},
        "llm": {"base_url": base_url, "model": "fake-model", "max_retries": 0},
        "sessions": {"sweep_seconds": 3600},
    })
    async with PersonaCore(cfg) as core:  # start-up runs the pending update
        await core.wait_for_updates()
    print("FINISHED", flush=True)

asyncio.run(main())
"""

MIGRATION_CHILD = """
import asyncio, sys, time
from aipersona.core.db import Database, Migration, bundled_migrations

SQL = sys.stdin.read()

def pause():
    print("MID-MIGRATION", flush=True)
    time.sleep(3600)

async def main():
    db = await Database.open(sys.argv[1])
    await db.conn.create_function("pause", 0, pause)
    await db.migrate([*bundled_migrations(), Migration(2, "notes", SQL)])
    print("FINISHED", flush=True)

asyncio.run(main())
"""

MIGRATION_SQL = """
ALTER TABLE personas ADD COLUMN note TEXT;
UPDATE personas SET note = 'migrated';
CREATE TABLE notes (persona_id INTEGER PRIMARY KEY, body TEXT NOT NULL);
INSERT INTO notes SELECT id, 'n' || id FROM personas;
SELECT pause();
CREATE INDEX notes_body ON notes(body);
"""


async def run_child_until(
    script: str, args: list[str], marker: str, tmp: Path, stdin: bytes = b""
) -> None:
    """Start a child, wait for ``marker`` on its stdout, then SIGKILL it."""
    path = tmp / "child.py"
    path.write_text(textwrap.dedent(script), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(path),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.decode().strip() == marker, (line, await proc.stderr.read())  # type: ignore[union-attr]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL


def integrity_ok(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


async def test_sigkill_during_persona_update_then_restart_reruns_it(
    fake_llm: FakeOpenAI, db_path: Path, tmp_path: Path
) -> None:
    cfg = make_config(db_path, fake_llm.base_url, persona={"update_every": 1})
    fake_llm.push("json", Error(503))  # the first attempt fails: the update stays pending
    async with PersonaCore(cfg) as core:
        await known_persona(core)
        await core.respond(ALICE, "c1", "call me Alicia, I'm 31 and I climb")
        await core.end_session(ALICE, "c1")
        await core.wait_for_updates()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT status, attempts FROM persona_updates").fetchall() == [
            ("pending", 1)
        ]
        versions_before = conn.execute("SELECT COUNT(*) FROM persona_versions").fetchone()[0]

    fake_llm.push("json", UPDATE)
    await run_child_until(
        UPDATE_CHILD, [str(db_path), fake_llm.base_url], "MID-TRANSACTION", tmp_path
    )

    integrity_ok(db_path)
    with sqlite3.connect(db_path) as conn:
        fields = dict(conn.execute("SELECT field, value FROM persona_fields").fetchall())
        status = conn.execute("SELECT status, attempts FROM persona_updates").fetchall()
        versions = conn.execute("SELECT COUNT(*) FROM persona_versions").fetchone()[0]
    # before the update, entirely: no field, no version row, no status change
    assert {k: json.loads(v) for k, v in fields.items()} == KNOWN
    assert versions == versions_before
    assert status == [("pending", 1)]

    fake_llm.push("json", UPDATE)
    async with PersonaCore(cfg) as core:  # restart: the pending update runs again
        await core.wait_for_updates()
        persona = await core.persona(ALICE)
        assert persona is not None and persona.values == AFTER
    integrity_ok(db_path)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT status, attempts FROM persona_updates").fetchall() == [
            ("done", 2)
        ]
    assert len(fake_llm.json_requests()) == 3


async def test_sigkill_during_migration_rolls_back_then_reapplies(
    db_path: Path, tmp_path: Path
) -> None:
    db = await Database.open(db_path)
    await db.migrate()
    async with db.write() as conn:
        for i in range(50):
            await conn.execute(
                "INSERT INTO personas (created_at, updated_at) VALUES (?, ?)", (i, i)
            )
    await db.close()

    await run_child_until(
        MIGRATION_CHILD, [str(db_path)], "MID-MIGRATION", tmp_path, MIGRATION_SQL.encode()
    )

    integrity_ok(db_path)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        columns = [r[1] for r in conn.execute("PRAGMA table_info(personas)")]
        assert "note" not in columns
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'notes'").fetchall() == []
        assert conn.execute("SELECT COUNT(*) FROM personas").fetchone() == (50,)

    db = await Database.open(db_path)
    await db.conn.create_function("pause", 0, lambda: None)
    applied = await db.migrate([*bundled_migrations(), Migration(2, "notes", MIGRATION_SQL)])
    await db.close()
    assert [m.version for m in applied] == [2]
    integrity_ok(db_path)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM notes").fetchone() == (50,)
        assert conn.execute("SELECT DISTINCT note FROM personas").fetchall() == [("migrated",)]


# -- two processes on one database file ------------------------------------------------------

WRITER_CHILD = """
import asyncio, sys
from aipersona.core.config import Config
from aipersona.core.edits import Edit
from aipersona.core.engine import PersonaCore
from aipersona.core.llm import Completion, LLMClient
from aipersona.core.personas import Identity

db_path, proc, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

class Stub(LLMClient):
    async def complete(self, messages, **kw):
        return Completion("ok " + messages[-1]["content"], finish_reason="stop")

async def main():
    cfg = Config.from_dict({
        "database": {"path": db_path, "busy_timeout_ms": 5000},
        "llm": {"base_url": "http://127.0.0.1:9/v1", "tools": False},
        "sessions": {"sweep_seconds": 3600},
    })
    async with PersonaCore(cfg, llm=Stub(cfg.llm)) as core:
        shared = Identity("cli", "shared")

        async def talk(u):
            for i in range(n):
                reply = await core.respond(Identity("cli", f"p{proc}-u{u}"), "c", f"{proc}/{u}/{i}")
                assert reply.ok, reply.error
                await core.respond(shared, f"chat-{proc}", f"{proc}/shared/{u}/{i}")

        async def learn():
            for i in range(10):
                changes, rejected = await core.edit_persona(
                    shared, [Edit("Personality.Values_and_Interests", "append", f"p{proc} #{i}")]
                )
                assert changes and not rejected, rejected

        await asyncio.gather(*[talk(u) for u in range(5)], learn())
    print("FINISHED", flush=True)

asyncio.run(main())
"""


async def test_two_processes_write_one_file_without_loss(db_path: Path, tmp_path: Path) -> None:
    db = await Database.open(db_path)
    await db.migrate()
    await db.close()
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER_CHILD), encoding="utf-8")
    n = 30
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            str(db_path),
            str(p),
            str(n),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for p in (1, 2)
    ]
    outs = await asyncio.wait_for(asyncio.gather(*[p.communicate() for p in procs]), 50)
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
        assert out.decode().strip() == "FINISHED"
        assert "locked" not in err.decode() and "Traceback" not in err.decode()
    integrity_ok(db_path)
    with sqlite3.connect(db_path) as conn:
        by_role = dict(conn.execute("SELECT role, COUNT(*) FROM messages GROUP BY role"))
        # per process: 5 users x n turns, each also talking as "shared": 2 messages a turn
        assert by_role == {"user": 2 * 5 * n * 2, "assistant": 2 * 5 * n * 2}
        shared_id = conn.execute(
            "SELECT persona_id FROM identities WHERE platform_user_id = 'shared'"
        ).fetchone()[0]
        (value,) = conn.execute(
            "SELECT value FROM persona_fields WHERE persona_id = ? AND field = ?",
            (shared_id, "Personality.Values_and_Interests"),
        ).fetchone()
        versions = [
            r[0]
            for r in conn.execute(
                "SELECT version FROM persona_versions WHERE persona_id = ? ORDER BY version",
                (shared_id,),
            )
        ]
        assert conn.execute("SELECT COUNT(*) FROM personas").fetchone() == (11,)
    # no lost update: 20 appends from two processes, all kept, versions 1..20 without gaps
    assert sorted(json.loads(value)) == sorted(f"p{p} #{i}" for p in (1, 2) for i in range(10))
    assert versions == list(range(1, 21))


# -- isolation under load ---------------------------------------------------------------------


async def test_200_concurrent_users_never_see_each_other(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    users = [Identity("tg", f"user{i:03d}") for i in range(200)]
    marker = {u.user_id: f"Zq{i:03d}q" for i, u in enumerate(users)}
    async with PersonaCore(make_config(db_path, fake_llm.base_url)) as core:
        await asyncio.gather(
            *[
                core.edit_persona(u, [Edit("Demographics.Name", "set", marker[u.user_id])])
                for u in users
            ]
        )

        async def talk(u: Identity) -> None:
            for turn in range(2):
                reply = await core.respond(u, "group", f"{u.user_id} turn {turn}")
                assert reply.ok and reply.text == f"echo: {u.user_id} turn {turn}"

        await asyncio.gather(*[talk(u) for u in users])
    chats = fake_llm.chat_requests()
    assert len(chats) == 400
    for req in chats:
        who = req["messages"][-1]["content"].split()[0]
        seen = set(re.findall(r"Zq\d{3}q", json.dumps(req)))
        assert seen == {marker[who]}, (who, seen)
        assert marker[who] in system_text(req)
        for msg in req["messages"][1:]:
            assert msg["content"].split()[0] in (who, "echo:")
            assert who in msg["content"]


async def test_identity_cache_notices_changes_made_by_another_process(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    """Core A caches alice -> persona; core B (think: another process) forgets her, then
    links her to bob. A's next message must follow the database, not its cache."""
    cfg = make_config(db_path, fake_llm.base_url)
    async with PersonaCore(cfg) as a, PersonaCore(cfg) as b:
        first = await a.respond(ALICE, "c", "hello")
        assert first.ok and first.persona_id is not None
        assert await b.forget_all(ALICE)
        again = await a.respond(ALICE, "c", "still there?")  # a fresh persona, no FK error
        assert again.ok
        data = await a.export(ALICE)
        assert data is not None and [m["content"] for m in data["messages"]] == [
            "still there?",
            "echo: still there?",
        ]
        await b.edit_persona(BOB, [Edit("Demographics.Name", "set", "Bob")])
        bob_id = await b.link(BOB, ALICE)
        third = await a.respond(ALICE, "c", "who am I?")
        assert third.ok and third.persona_id == bob_id
        assert '"Name":"Bob"' in system_text(fake_llm.chat_requests()[-1])
    integrity_ok(db_path)
