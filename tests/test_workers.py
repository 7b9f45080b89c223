"""Many worker processes on one database (PostgreSQL, and a SQLite file shared on one machine):
every message kept, every persona update applied exactly once and whole, no person's data in
another's request, one person's turns in order across processes, and a worker killed in the
middle of an update replaced."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aipersona.core import Identity, PersonaCore
from tests.conftest import make_config
from tests.fakes.openai_server import FakeOpenAI, Hang, Json, last_user_text

pytestmark = pytest.mark.timeout(240)

WORKER = """
import asyncio, json, sys
from aipersona.core import Config, Identity, PersonaCore

database, base_url, worker, users, messages, shared = json.loads(sys.argv[1])

async def main():
    cfg = Config.from_dict({
        "database": database,
        "llm": {"base_url": base_url, "model": "fake", "max_retries": 0, "timeout_seconds": 60,
                "tools": False},
        "persona": {"update_every": 2, "update_recheck_seconds": 0.5},
        "sessions": {"sweep_seconds": 3600},
    })
    async with PersonaCore(cfg) as core:
        print("READY", flush=True)
        async def talk(u):
            ident = Identity("tg", f"u{u:03d}")
            chat = "shared" if u < shared else f"chat-{worker}"
            for i in range(messages):
                reply = await core.respond(ident, chat, f"u{u:03d} w{worker} m{i}")
                assert reply.ok, reply.error
                if i % 2 == 1:
                    await core.end_session(ident, chat)
        await asyncio.gather(*(talk(u) for u in range(users)))
        await core.wait_for_updates()
    print("DONE", flush=True)

asyncio.run(main())
"""


def optimizer_reply(counter: Counter[str]) -> Any:
    """An update whose two edits name the sessions it came from and the call that made it:
    applying one update twice would leave two versions for the same sessions."""

    def reply(request: dict[str, Any]) -> Json:
        counter["calls"] += 1
        sessions = re.findall(r'\{"session":(\d+)\}', request["messages"][-1]["content"])
        tag = f"sessions {','.join(sessions)} call {counter['calls']}"
        return Json(
            {
                "updates": [
                    {"field": "Pattern.Usage_Pattern", "op": "set", "value": tag, "evidence": "x"},
                    {
                        "field": "Pattern.Emotion_Pattern",
                        "op": "set",
                        "value": tag,
                        "evidence": "x",
                    },
                ]
            }
        )

    return reply


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """The workers a test starts; killed at the end whatever happened (a worker left
    running would hold its database connections)."""
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def start_worker(
    script: Path, args: list[Any], started: list[asyncio.subprocess.Process]
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), json.dumps(args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    started.append(proc)
    assert proc.stdout is not None and proc.stderr is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"READY", (line, await proc.stderr.read())
    return proc


def section(database: Path | dict[str, Any]) -> dict[str, Any]:
    return database if isinstance(database, dict) else {"path": str(database)}


async def test_four_workers_two_hundred_users(
    fake_llm: FakeOpenAI, database: Any, tmp_path: Path, processes: list[Any]
) -> None:
    workers, users, messages, shared = 4, 200, 4, 20
    database = section(database)
    counter: Counter[str] = Counter()
    fake_llm.json_default = optimizer_reply(counter)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER), encoding="utf-8")
    procs = [
        await start_worker(
            script, [database, fake_llm.base_url, w, users, messages, shared], processes
        )
        for w in range(workers)
    ]
    outs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 200)
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err.decode()[-3000:]
        assert out.strip() == b"DONE"

    async with PersonaCore(make_config(database, fake_llm.base_url)) as core:
        await core.run_pending_updates()  # whatever a finishing worker left to others
        exports = {}
        for u in range(users):
            data = await core.export(Identity("tg", f"u{u:03d}"))
            assert data is not None
            exports[u] = data
        assert await core.storage.pending_updates() == []

    total_updates = 0
    for u, data in exports.items():
        texts = [m["content"] for m in data["messages"] if m["role"] == "user"]
        # no lost message: every worker's every message, once
        assert sorted(texts) == sorted(
            f"u{u:03d} w{w} m{i}" for w in range(workers) for i in range(messages)
        )
        # one person's turns never interleave, even in a chat several processes serve
        for session in data["sessions"]:
            roles = [m["role"] for m in data["messages"] if m["session_id"] == session["id"]]
            assert roles == ["user", "assistant"] * (len(roles) // 2), (u, roles)
        # every update exactly once and whole: one version of each field per update
        updates = data["persona_updates"]
        assert [x["status"] for x in updates] == ["done"] * len(updates)
        ended = [s for s in data["sessions"] if s["ended_at"] is not None]
        assert len(updates) == len(ended) // 2 >= 1  # k = 2: every pair of ended sessions
        if u >= shared:  # own chats: every worker ended 2 sessions
            assert len(ended) == workers * messages // 2
        for x in updates:
            versions = [h for h in data["history"] if h["session_ids"] == x["session_ids"]]
            assert sorted(h["field"] for h in versions) == [
                "Pattern.Emotion_Pattern",
                "Pattern.Usage_Pattern",
            ], (u, x, versions)
            assert versions[0]["new_value"] == versions[1]["new_value"]  # from one call
        total_updates += len(updates)
    assert counter["calls"] == total_updates  # no update proposed twice

    # no cross-user leak: each chat request holds only its own person's text
    for request in fake_llm.chat_requests():
        who = last_user_text(request).split()[0]
        seen = set(re.findall(r"u\d{3}", json.dumps(request["messages"])))
        assert seen == {who}, (who, seen)


KILLED = """
import asyncio, json, sys
from aipersona.core import Config, PersonaCore

database, base_url = json.loads(sys.argv[1])

async def main():
    cfg = Config.from_dict({
        "database": database,
        "llm": {"base_url": base_url, "model": "fake", "max_retries": 0, "timeout_seconds": 600},
        "persona": {"update_recheck_seconds": 0.5},
        "sessions": {"sweep_seconds": 3600},
    })
    async with PersonaCore(cfg) as core:
        print("READY", flush=True)
        await asyncio.Event().wait()  # runs updates until killed

asyncio.run(main())
"""


async def test_a_worker_killed_mid_update_is_replaced(
    fake_llm: FakeOpenAI, database: Any, tmp_path: Path, processes: list[Any]
) -> None:
    database = section(database)
    cfg = make_config(database, fake_llm.base_url, persona={"update_every": 1})
    alice = Identity("tg", "alice")
    async with PersonaCore(cfg, llm=None) as core:
        await core.respond(alice, "c", "I'm a nurse")
        # the session ends with no worker running updates: the update waits, unclaimed
        await core.learning.close()
        await core.end_session(alice, "c")
        [update] = await core.storage.pending_updates()

    fake_llm.push("json", Hang(600))  # the first worker's optimizer call never answers
    fake_llm.json_default = lambda req: Json(
        {"updates": [{"field": "Demographics.Career_Information", "op": "set",
                      "value": "nurse", "evidence": "I'm a nurse"}]}
    )  # fmt: skip
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED), encoding="utf-8")
    first = await start_worker(script, [database, fake_llm.base_url], processes)
    await fake_llm.wait_for_requests("json", 1, within=30)  # it claimed the update and asked
    await start_worker(script, [database, fake_llm.base_url], processes)  # a second worker
    await asyncio.sleep(1.5)  # the live first worker's claim keeps the second away
    assert len(fake_llm.json_requests()) == 1
    os.kill(first.pid, signal.SIGKILL)
    await first.wait()
    await fake_llm.wait_for_requests("json", 2, within=30)  # the second takes it over
    async with PersonaCore(make_config(database, fake_llm.base_url)) as core:
        for _ in range(100):
            data = await core.export(alice)
            assert data is not None
            if data["persona_updates"][0]["status"] == "done":
                break
            await asyncio.sleep(0.1)
    [row] = data["persona_updates"]
    assert (row["id"], row["status"], row["attempts"]) == (update.id, "done", 1)
    assert data["persona"] == {"Demographics": {"Career_Information": "nurse"}}
    assert [h["field"] for h in data["history"]] == ["Demographics.Career_Information"]
