"""Scale: N personas with history in SQLite; persona load latency, bytes per user, start-up.

    .venv/bin/python benchmarks/scale.py --personas 100000
    .venv/bin/python benchmarks/scale.py --personas 1000000 --db /tmp/aipersona-1m.db

The database is built with bulk SQL (recursive CTEs, in C) into the real schema, created by
the real migrations. Each persona gets one identity, 6 persona fields with one version row
each, 3 sessions of 2 messages (user + assistant; 2 ended and scheduled, 1 open) and one
finished optimizer update. ``--pending`` personas also get a pending update (start-up must
find them through the partial index without scanning the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import StubLLM, config, machine, ms, pct

from aipersona.core import Identity, PersonaCore

FIELDS = [
    ("Demographics.Name", "printf('\"User %d\"', i)"),
    ("Demographics.Age", "CAST(18 + i % 60 AS TEXT)"),
    ("Demographics.Career_Information", "printf('\"nurse in city %d\"', i % 997)"),
    ("Demographics.Language", '\'["English","Portuguese"]\''),
    ("Personality.Values_and_Interests", 'printf(\'["climbing","jazz","topic %d"]\', i % 313)'),
    ("Preference.Preferred_Styles", "'\"short answers, friendly tone\"'"),
]
SERIES = "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i < ?)"


def build(path: Path, personas: int, pending: int, chunk: int = 200_000) -> float:
    t0 = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    now = time.time() - 86_400
    for lo in range(1, personas + 1, chunk):
        hi = min(personas, lo + chunk - 1)
        conn.execute("BEGIN")
        conn.execute(f"{SERIES} INSERT INTO personas SELECT i, ?, ? FROM n", (lo, hi, now, now))
        conn.execute(
            f"{SERIES} INSERT INTO identities SELECT 'telegram', CAST(i AS TEXT), i,"
            " printf('user%d', i), ? FROM n",
            (lo, hi, now),
        )
        # one finished update per persona, id = persona id
        conn.execute(
            f"{SERIES} INSERT INTO persona_updates (id, persona_id, status, session_ids,"
            " attempts, created_at, finished_at) SELECT i, i, 'done',"
            " printf('[%d,%d]', 3*i-2, 3*i-1), 1, ?, ? FROM n",
            (lo, hi, now, now),
        )
        for fi, (name, expr) in enumerate(FIELDS):
            conn.execute(
                f"{SERIES} INSERT INTO persona_fields SELECT i, ?, {expr}, 1, ? FROM n",
                (lo, hi, name, now),
            )
            conn.execute(
                f"{SERIES} INSERT INTO persona_versions (id, persona_id, field, version, op,"
                " old_value, new_value, source, session_ids, evidence, created_at)"
                f" SELECT 6*(i-1)+{fi}+1, i, ?, 1, 'set', NULL, {expr}, 'optimizer',"
                " printf('[%d,%d]', 3*i-2, 3*i-1), 'said so', ? FROM n",
                (lo, hi, name, now),
            )
        for s in range(3):
            ended, reason, upd = ("?", "'idle'", "i") if s < 2 else ("NULL", "NULL", "NULL")
            conn.execute(
                f"{SERIES} INSERT INTO sessions SELECT 3*(i-1)+{s}+1, i, 'telegram',"
                f" CAST(i AS TEXT), ?, ?, {ended}, {reason}, {upd} FROM n",
                (lo, hi, now, now, *((now,) if s < 2 else ())),
            )
            for r, role in enumerate(("user", "assistant")):
                text = (
                    "printf('session %d: I am a nurse and I love climbing, what should I cook"
                    " tonight? (%d)', s, i)"
                    if role == "user"
                    else "printf('Since you like climbing, try a protein-rich pasta. (%d)', i)"
                )
                conn.execute(
                    f"{SERIES}, v(s) AS (SELECT {s}) INSERT INTO messages SELECT"
                    f" 6*(i-1)+{2 * s + r}+1, 3*(i-1)+{s}+1, i, '{role}', {text}, 'telegram',"
                    " CAST(i AS TEXT), ? FROM n, v",
                    (lo, hi, now),
                )
        conn.execute("COMMIT")
        print(f"  built {hi:,} personas ({time.perf_counter() - t0:.0f} s)", flush=True)
    # a few pending updates (the start-up must find them via the partial index)
    rng = random.Random(7)
    for pid in rng.sample(range(1, personas + 1), min(pending, personas)):
        conn.execute(
            "INSERT INTO persona_updates (persona_id, status, session_ids, created_at)"
            " VALUES (?, 'pending', '[]', ?)",
            (pid, now),
        )
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    return time.perf_counter() - t0


async def create_schema(path: Path) -> None:
    cfg = config(path)
    async with PersonaCore(cfg, llm=StubLLM(cfg)):
        pass


def query_plans(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    out = []
    for label, sql, params in [
        (
            "pending_updates (start-up)",
            "SELECT id, persona_id, session_ids, attempts FROM persona_updates"
            " WHERE status = 'pending' ORDER BY id",
            (),
        ),
        ("applied migrations (start-up)", "SELECT version, name FROM schema_migrations", ()),
        (
            "idle sweep",
            "SELECT id, persona_id, last_message_at FROM sessions"
            " WHERE ended_at IS NULL AND last_message_at < ?",
            (0,),
        ),
        (
            "identity",
            "SELECT persona_id FROM identities WHERE platform = ? AND platform_user_id = ?",
            ("telegram", "1"),
        ),
        (
            "persona load",
            "SELECT field, value, version FROM persona_fields WHERE persona_id = ?",
            (1,),
        ),
        (
            "open session",
            "SELECT id, last_message_at FROM sessions WHERE persona_id = ? AND platform = ?"
            " AND chat_id = ? AND ended_at IS NULL ORDER BY id DESC LIMIT 1",
            (1, "telegram", "1"),
        ),
    ]:
        plan = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        out.append(f"{label}: " + "; ".join(r[-1] for r in plan))
    conn.close()
    return out


async def measure(
    path: Path, personas: int, samples: int, database: dict[str, Any] | None = None
) -> dict[str, float]:
    """Start-up, persona load, uncached identity lookup and a full turn (stub LLM) on the
    SQLite file ``path``, or on the store described by ``database``."""
    cfg = config(path, database=database or {})
    llm = StubLLM(cfg)
    t0 = time.perf_counter()
    core = PersonaCore(cfg, llm=llm)
    await core.start(run_pending=True, sweep=True)
    start_s = time.perf_counter() - t0
    rng = random.Random(3)
    ids = [rng.randint(1, personas) for _ in range(samples)]
    lat_load, lat_resolve, lat_turn = [], [], []
    for pid in ids:
        t = time.perf_counter()
        p = await core.storage.load_persona(pid)
        lat_load.append(time.perf_counter() - t)
        assert len(p.values) == 6
    for pid in ids[: samples // 2]:
        t = time.perf_counter()
        await core.storage.find_persona(
            Identity("telegram", str(pid))
        )  # not cached yet: one lookup
        lat_resolve.append(time.perf_counter() - t)
    for pid in ids[: min(2000, samples)]:
        t = time.perf_counter()
        reply = await core.respond(Identity("telegram", str(pid)), str(pid), "hello again")
        lat_turn.append(time.perf_counter() - t)
        assert reply.ok
    await core.wait_for_updates()
    await core.close()
    await llm.close()
    return {
        "start_s": start_s,
        "load_p50": pct(lat_load, 50),
        "load_p99": pct(lat_load, 99),
        "find_p50": pct(lat_resolve, 50),
        "find_p99": pct(lat_resolve, 99),
        "turn_p50": pct(lat_turn, 50),
        "turn_p99": pct(lat_turn, 99),
    }


def print_measured(r: dict[str, float], samples: int) -> None:
    print(
        f"start-up (migrate check + pending scan + plugins): {r['start_s'] * 1000:.1f} ms\n"
        f"persona load (random ids, {samples:,}): p50 {ms(r['load_p50'])} ms,"
        f" p99 {ms(r['load_p99'])} ms\n"
        f"identity lookup (uncached): p50 {ms(r['find_p50'])} ms, p99 {ms(r['find_p99'])} ms\n"
        f"full turn on an existing persona (stub LLM): p50 {ms(r['turn_p50'])} ms,"
        f" p99 {ms(r['turn_p99'])} ms"
    )


async def sweep_backlog(path: Path, personas: int, batches: int) -> str:
    """An idle-session backlog (every persona has an open session a day old): time the first
    ``batches`` sweep transactions while other users keep chatting. Mutates the database."""
    cfg = config(path)
    llm = StubLLM(cfg)
    core = PersonaCore(cfg, llm=llm)
    await core.start(run_pending=False, sweep=False)
    lat: list[float] = []
    batch_s: list[float] = []
    stop = asyncio.Event()

    async def chat() -> None:
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            await core.respond(Identity("telegram", str(personas - i % 1000)), "x", "hi")
            lat.append(time.perf_counter() - t)
            i += 1

    chatter = asyncio.create_task(chat())
    now = time.time()
    swept = 0
    t0 = time.perf_counter()
    for _ in range(batches):
        t = time.perf_counter()
        ended = await core.storage.sweep_idle(now, batch=100)
        batch_s.append(time.perf_counter() - t)
        swept += len(ended)
    wall = time.perf_counter() - t0
    stop.set()
    await chatter
    await core.close()
    await llm.close()
    return (
        f"idle sweep backlog: {swept:,} sessions in {batches} transactions, {wall:.2f} s"
        f" ({swept / wall:,.0f} sessions/s); per batch p50 {ms(pct(batch_s, 50))} ms,"
        f" max {ms(max(batch_s))} ms; {len(lat):,} messages from other users meanwhile:"
        f" p50 {ms(pct(lat, 50))} ms, p99 {ms(pct(lat, 99))} ms"
    )


def drop_page_cache_hint(path: Path) -> None:
    """Evict the file from the OS page cache where possible (cold-start figure)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    except (OSError, AttributeError):
        pass


def describe(path: Path, personas: int) -> str:
    size = os.path.getsize(path)
    conn = sqlite3.connect(path)
    tables = (
        "personas",
        "identities",
        "persona_fields",
        "persona_versions",
        "sessions",
        "messages",
        "persona_updates",
    )
    counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
    conn.close()
    return f"rows: {counts}\nfile: {size / 1e6:,.0f} MB, {size / personas:,.0f} bytes per user"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--personas", type=int, default=100_000)
    ap.add_argument("--db", default="")
    ap.add_argument("--pending", type=int, default=5)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--keep", action="store_true", help="keep the database file")
    ap.add_argument(
        "--sweep-batches", type=int, default=0, help="then time N idle-sweep batches (mutates)"
    )
    args = ap.parse_args()
    path = Path(args.db or f"/tmp/aipersona-scale-{args.personas}.db")
    print(machine())
    if not os.path.exists(path):  # noqa: ASYNC240 (before any loop work)
        await create_schema(path)
        secs = build(path, args.personas, args.pending)
        print(f"build: {args.personas:,} personas in {secs:.0f} s")
    print(describe(path, args.personas))
    for line in query_plans(path):
        print("plan", line)
    drop_page_cache_hint(path)
    print_measured(await measure(path, args.personas, args.samples), args.samples)
    if args.sweep_batches:
        print(await sweep_backlog(path, args.personas, args.sweep_batches))
    if not args.keep and not args.db:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(path) + suffix)


if __name__ == "__main__":
    asyncio.run(main())
