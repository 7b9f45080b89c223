"""The dashboard at scale: page render latency with 1M personas (SQLite), over HTTP.

    .venv/bin/python benchmarks/dashboard_scale.py                       # 1M personas
    .venv/bin/python benchmarks/dashboard_scale.py --personas 100000 --samples 200
    .venv/bin/python benchmarks/dashboard_scale.py --keep                # keep the database

The database is created by the real migrations and filled with recursive-CTE ``INSERT ...
SELECT`` (as ``scale.py`` does): per persona one identity (every 20th a second one, linked),
display names from 200 first names x 100 surnames, 3 fields, 4 versions with evidence, 2
sessions of 2 messages, one persona update (applied, unchanged, rejected with notes, or failed;
2,000 still pending) spread over 90 days, token usage per day, and the day counters the way
migration 0004 carries old rows over. Then the dashboard is served on 127.0.0.1 by the real
application (``aipersona.dashboard.server.build_app`` over a ``PersonaCore``) and every page
kind is requested over HTTP with the Bearer token: first with the database's pages dropped
from the OS cache (cold), then warm. Every SQL statement the pages ran is checked with
``EXPLAIN QUERY PLAN``: none may scan a big table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from aiohttp import web
from common import StubLLM, config, machine, pct
from scale import create_schema, drop_page_cache_hint

from aipersona.core import PersonaCore

TOKEN = "benchmark-token-0123456789abcdef"
SERIES = "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
FIRST = (
    "Ana Ben Carla Dario Elena Felix Gina Hugo Ines Jonas Karin Lukas Maria Nico Olga Paul"
    " Quinn Rosa Sven Tina Uwe Vera Walter Xenia Yusuf Zoe"
).split()
FIRST = [f"{name}{suffix}" for suffix in ("", "a", "o", "i", "e", "n", "y", "s") for name in FIRST][
    :200
]
LAST = [f"{c}{v}{d}" for c in "BDFGKLMPRST" for v in "aeiou" for d in "lnr"][:100]
OUTCOMES = (  # by persona id % 10: the optimizer log's mix
    "applied applied applied applied applied applied unchanged unchanged rejected failed"
).split()
DAY = 86_400
BIG_TABLES = (
    "personas",
    "identities",
    "persona_fields",
    "persona_versions",
    "persona_updates",
    "sessions",
    "messages",
    "token_usage",
)


def build(path: Path, personas: int, chunk: int = 200_000) -> float:
    """Fill the migrated, empty database at ``path``."""
    t0 = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    conn.execute("CREATE TEMP TABLE first(k INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("CREATE TEMP TABLE last(k INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO first VALUES (?, ?)", enumerate(FIRST))
    conn.executemany("INSERT INTO last VALUES (?, ?)", enumerate(LAST))
    conn.execute("CREATE TEMP TABLE outcome(k INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO outcome VALUES (?, ?)", enumerate(OUTCOMES))
    now = time.time()
    # persona i was created (90 - i % 90) days ago, talked then, was learned from a day later
    born = f"({now} - (i % 90) * {DAY} - 3600 - (i % 3000))"
    for lo in range(1, personas + 1, chunk):
        hi = min(personas, lo + chunk - 1)
        conn.execute("BEGIN")

        def run(sql: str, lo: int = lo, hi: int = hi) -> None:
            conn.execute(f"{SERIES} {sql}", (lo, hi))

        run(f"INSERT INTO personas (id, created_at, updated_at) SELECT i, {born}, {born} FROM n")
        run(
            "INSERT INTO identities SELECT CASE WHEN i % 20 < 12 THEN 'telegram'"
            " WHEN i % 20 < 19 THEN 'discord' ELSE 'cli' END,"
            " CAST(5000000000 + i * 17 AS TEXT), i,"
            " f.name || ' ' || l.name || (i % 1000),"
            f" {born} FROM n JOIN first f ON f.k = i % 200 JOIN last l ON l.k = (i / 200) % 100"
        )
        run(
            "INSERT INTO identities SELECT 'discord', 'linked' || i, i, NULL,"
            f" {born} + 60 FROM n WHERE i % 20 = 0"
        )
        run(
            "INSERT INTO persona_updates (id, persona_id, status, session_ids, attempts, error,"
            " created_at, finished_at, outcome, edits_applied, edits_refused, prompt_tokens,"
            " completion_tokens, seconds) SELECT i, i,"
            " CASE WHEN o.name = 'failed' THEN 'failed' ELSE 'done' END,"
            " printf('[%d,%d]', 2*i-1, 2*i), CASE WHEN o.name = 'failed' THEN 3 ELSE 1 END,"
            " CASE o.name WHEN 'rejected' THEN 'Demographics.Age: expected an integer'"
            " WHEN 'failed' THEN 'the model endpoint answered HTTP 500' END,"
            f" {born}, {born} + {DAY}, o.name,"
            " CASE WHEN o.name = 'applied' THEN 3 ELSE 0 END,"
            " CASE WHEN o.name = 'rejected' THEN 1 ELSE 0 END,"
            " 1800 + i % 500, 90 + i % 60, 1.5 + (i % 100) / 50.0"
            " FROM n JOIN outcome o ON o.k = i % 10"
        )
        for f, (field, value) in enumerate(
            [
                ("Demographics.Name", "printf('\"%s\"', fn.name)"),
                ("Demographics.Age", "CAST(18 + i % 60 AS TEXT)"),
                ("Demographics.Career_Information", "printf('\"nurse in ward %d\"', i % 97)"),
            ]
        ):
            run(
                f"INSERT INTO persona_fields SELECT i, ?, {value}, 1, {born}, 'optimizer'"
                " FROM n JOIN first fn ON fn.k = i % 200".replace("?", f"'{field}'", 1)
            )
            run(
                "INSERT INTO persona_versions (id, persona_id, field, version, op, old_value,"
                " new_value, source, session_ids, evidence, created_at, update_id)"
                f" SELECT 4*(i-1)+{f}+1, i, '{field}', 1, 'set', NULL, {value}, 'optimizer',"
                " printf('[%d,%d]', 2*i-1, 2*i),"
                f" printf('I told you about it (%d)', i), {born} + {DAY}, i"
                " FROM n JOIN first fn ON fn.k = i % 200"
            )
        run(
            "INSERT INTO persona_versions (id, persona_id, field, version, op, old_value,"
            " new_value, source, session_ids, evidence, created_at)"
            " SELECT 4*(i-1)+4, i, 'Preference.Preferred_Styles', 1, 'set', NULL,"
            f" '\"short answers\"', 'user', '[]', '', {born} + 2 * {DAY} FROM n"
        )
        for s in range(2):
            run(
                f"INSERT INTO sessions SELECT 2*(i-1)+{s}+1, i, 'telegram', CAST(i AS TEXT),"
                f" {born} + {s * 600}, {born} + {s * 600 + 60}, {born} + {s * 600 + 60},"
                " 'idle', i FROM n"
            )
            for r, (role, text) in enumerate(
                [
                    ("user", "printf('I am a nurse and I love climbing, what now? (%d)', i)"),
                    ("assistant", "'Since you like climbing, try the new gym downtown.'"),
                ]
            ):
                run(
                    f"INSERT INTO messages SELECT 4*(i-1)+{2 * s + r}+1, 2*(i-1)+{s}+1, i,"
                    f" '{role}', {text}, 'telegram', CAST(i AS TEXT), {born} + {s * 600 + r}"
                    " FROM n"
                )
        run(
            "INSERT INTO token_usage SELECT i, 'telegram', CAST(i AS TEXT),"
            f" strftime('%Y-%m-%d', {born}, 'unixepoch'), 'chat', 2, 2 * (900 + i % 400),"
            " 2 * (80 + i % 90) FROM n"
        )
        conn.execute("COMMIT")
        print(f"  built {hi:,} personas ({time.perf_counter() - t0:.0f} s)", flush=True)
    rng = random.Random(5)
    conn.execute("BEGIN")
    for pid in rng.sample(range(1, personas + 1), min(2000, personas)):  # still to run
        conn.execute(
            "INSERT INTO persona_updates (persona_id, status, session_ids, created_at)"
            " VALUES (?, 'pending', '[]', ?)",
            (pid, now - 60),
        )
    for p in range(min(500, personas)):  # people talking right now
        conn.execute(
            "INSERT INTO sessions (persona_id, platform, chat_id, started_at, last_message_at)"
            " VALUES (?, 'telegram', 'live', ?, ?)",
            (p + 1, now - 30, now - 10),
        )
    # the day counters, carried over from the rows as migration 0004 does
    day_of = "strftime('%Y-%m-%d', {}, 'unixepoch')"
    for day, name, value, rest in (
        (day_of.format("created_at"), "'messages'", "COUNT(*)", "messages WHERE role = 'user'"),
        (day_of.format("created_at"), "'new_users'", "COUNT(*)", "personas"),
        ("day", "role || '_calls'", "SUM(calls)", "token_usage"),
        ("day", "role || '_prompt_tokens'", "SUM(prompt_tokens)", "token_usage"),
        ("day", "role || '_completion_tokens'", "SUM(completion_tokens)", "token_usage"),
        (
            day_of.format("finished_at"),
            "'updates_' || outcome",
            "COUNT(*)",
            "persona_updates WHERE outcome IS NOT NULL",
        ),
        (
            day_of.format("finished_at"),
            "'optimizer_calls'",
            "COUNT(*)",
            "persona_updates WHERE outcome IS NOT NULL",
        ),
        (
            day_of.format("finished_at"),
            "'optimizer_prompt_tokens'",
            "SUM(prompt_tokens)",
            "persona_updates WHERE outcome IS NOT NULL",
        ),
    ):
        conn.execute(
            f"INSERT INTO daily_stats (day, name, shard, value) SELECT {day}, {name}, 0, {value}"
            f" FROM {rest} GROUP BY 1, 2"
        )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    return time.perf_counter() - t0


PARTIAL = ("sessions_idle", "sessions_open", "persona_updates_pending")  # small by design


def full_scan(sql: str, step: str) -> bool:
    """A query-plan step that reads a whole big table or one of its full indexes. A walk of
    the primary key in ``ORDER BY id ... LIMIT n`` stops after n rows, and a partial index
    holds only the rows it is for (open sessions, pending updates): neither is a full scan."""
    words = step.split()
    if len(words) < 2 or words[0] != "SCAN" or words[1] not in BIG_TABLES:
        return False
    if any(index in step for index in PARTIAL):
        return False
    bounded = re.search(r"ORDER BY id DESC LIMIT \d+$", sql) and "USING" not in step
    return not bounded


def file_size(path: Path) -> int:
    return sum(
        Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists()
    )


def remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-locks"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def scenarios(
    personas: int, rng: random.Random, n: int, deep: dict[str, str]
) -> dict[str, list[str]]:
    """Page kind -> the URLs to request (``deep``: cursors of far pages, found beforehand)."""

    def people(**q: Any) -> str:
        return "/personas?" + urlencode(q)

    ids = [rng.randint(1, personas) for _ in range(n)]
    names = [rng.choice(FIRST)[:2] for _ in range(n)]
    return {
        "overview (14 days)": ["/?days=14"] * n,
        "overview (90 days)": ["/?days=90"] * n,
        "personas: newest first": [people()] * n,
        "personas: page 1,000 (keyset)": [people(after=deep["newest"])] * n,
        "personas: name prefix (2 letters)": [people(q=x) for x in names],
        "personas: name prefix, deep page": [people(q="ma", after=deep["name"])] * n,
        "personas: name on one platform": [people(q=x, platform="cli") for x in names],
        "personas: user id prefix": [
            people(q=str(5000000000 + i * 17)[:7], by="user_id") for i in ids
        ],
        "personas: one platform": [people(platform="cli")] * n,
        "persona page": [f"/personas/{i}" for i in ids],
        "persona page, older history": [f"/personas/{i}?before={4 * i - 1}" for i in ids],
        "optimizer log": ["/optimizer"] * n,
        "optimizer log: failed": ["/optimizer?outcome=failed"] * n,
        "optimizer log: pending": ["/optimizer?outcome=pending"] * n,
        "optimizer log: deep page": [f"/optimizer?before={personas // 2}"] * n,
        "optimizer log: one persona": [f"/optimizer?persona={i}" for i in ids],
        "plugins": ["/plugins"] * n,
        "metrics": ["/metrics"] * n,
    }


async def deep_cursors(core: PersonaCore) -> dict[str, str]:
    """The cursor of the 1,000th page of everyone, and of the 20th page of names "ma"."""
    from aipersona.core import PersonaQuery

    out = {}
    for key, query, pages in (("newest", PersonaQuery(), 1000), ("name", PersonaQuery("ma"), 20)):
        after = ""
        for _ in range(pages):
            page = await core.operator.personas(
                PersonaQuery(query.text, query.by, query.platform, after, 50)
            )
            after = page.next
        out[key] = after
    return out


async def message_path(messages: int = 6000, people: int = 100) -> None:
    """The storage path of one message (``begin_turn`` + ``add_reply``), which now also adds
    to the day counters: CPU and latency per message. Uses only storage calls older than
    the dashboard, so the same loop runs on the commit before it for comparison."""
    import tempfile

    from aipersona.core import Identity
    from aipersona.core.storage import SessionRules, Tokens
    from aipersona.core.storage.sqlite import SQLiteStorage

    with tempfile.TemporaryDirectory() as tmp:
        store = await SQLiteStorage.open(f"{tmp}/m.db", SessionRules())
        await store.migrate()
        who = [Identity("cli", f"u{i}") for i in range(people)]
        ids = [await store.resolve_persona(i) for i in who]
        lat = []
        cpu = time.process_time()
        for n in range(messages):
            k = n % people
            t = time.perf_counter()
            await store.begin_turn(ids[k], who[k], "c", "hello there", time.time())
            await store.add_reply(ids[k], "cli", "c", "hi!", time.time(), Tokens(100, 20))
            lat.append(time.perf_counter() - t)
        cpu = (time.process_time() - cpu) / messages
        await store.close()
    lat = lat[messages // 6 :]  # after warming up
    print(
        f"message path: CPU {cpu * 1e6:.0f} us, p50 {pct(lat, 50) * 1e6:.0f} us,"
        f" p99 {pct(lat, 99) * 1e6:.0f} us per message"
    )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--personas", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path)
    ap.add_argument("--samples", type=int, default=300, help="requests per page kind (warm)")
    ap.add_argument("--cold", type=int, default=20, help="requests per page kind (cold)")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the database")
    ap.add_argument("--message-path", action="store_true", help="only the per-message storage cost")
    args = ap.parse_args()
    if args.message_path:  # runs on the commit before the dashboard too
        print(machine())
        return await message_path()
    from aipersona.core import freeze_startup_objects
    from aipersona.dashboard.server import build_app
    from aipersona.dashboard.settings import DashboardSettings

    path = args.db or Path(f"/tmp/aipersona-dashboard-{args.personas}.db")
    print(machine())
    if not path.exists():
        await create_schema(path)
        print(f"building {args.personas:,} personas into {path}")
        print(f"  built in {build(path, args.personas):.0f} s")
    size = file_size(path)
    print(f"database {size / 1e6:,.0f} MB")

    os.environ["AIPERSONA_DASHBOARD_TOKEN"] = TOKEN
    cfg = config(path)
    core = PersonaCore(cfg, llm=StubLLM(cfg))
    await core.start(chat=False)
    freeze_startup_objects()  # as `aipersona dashboard` and `aipersona run` do
    app = build_app(core, DashboardSettings(), TOKEN)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    statements: list[str] = []
    reader = None
    try:
        deep = await deep_cursors(core)
        reader = core.storage._reader  # type: ignore[attr-defined]  # benchmark: trace SQL
        await reader.read(lambda conn: conn.set_trace_callback(statements.append))
        rng = random.Random(11)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        rows = []
        async with aiohttp.ClientSession(headers=headers) as http:

            async def timed(urls: list[str]) -> list[float]:
                out = []
                for url in urls:
                    t = time.perf_counter()
                    async with http.get(base + url) as answer:
                        await answer.read()
                        assert answer.status == 200, (url, answer.status)
                    out.append(time.perf_counter() - t)
                return out

            cold = scenarios(args.personas, random.Random(23), args.cold, deep)
            warm = scenarios(args.personas, rng, args.samples, deep)
            for kind in warm:
                drop_page_cache_hint(path)
                cold_s = await timed(cold[kind])
                warm_s = await timed(warm[kind])
                rows.append((kind, cold_s, warm_s))
                print(
                    f"  {kind:36} cold p50 {pct(cold_s, 50) * 1000:6.1f} max"
                    f" {max(cold_s) * 1000:6.1f} ms | warm p50 {pct(warm_s, 50) * 1000:6.2f}"
                    f" p99 {pct(warm_s, 99) * 1000:6.2f} max {max(warm_s) * 1000:6.2f} ms",
                    flush=True,
                )
        await reader.read(lambda conn: conn.set_trace_callback(None))
    finally:
        await runner.cleanup()
        await core.close()
    warm_all = [s for _, _, w in rows for s in w]
    print(f"\nall pages: {len(warm_all):,} warm requests, p99 {pct(warm_all, 99) * 1000:.1f} ms")
    print("\n| page | cold p50 / max (ms) | warm p50 / p99 / max (ms) |\n|---|---|---|")
    for kind, c, w in rows:
        print(
            f"| {kind} | {pct(c, 50) * 1000:.1f} / {max(c) * 1000:.1f} |"
            f" {pct(w, 50) * 1000:.2f} / {pct(w, 99) * 1000:.2f} / {max(w) * 1000:.2f} |"
        )
    print("\nquery plans (every distinct statement the pages ran):")
    conn = sqlite3.connect(path)
    scans = []
    seen: set[str] = set()
    for sql in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            continue
        shape = re.sub(r"\((\?, )+\?\)", "(?, ...)", re.sub(r"'[^']*'|\b\d+(\.\d+)?\b", "?", sql))
        if shape in seen:
            continue
        seen.add(shape)
        plan = [r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql)]
        bad = [p for p in plan if full_scan(sql, p)]
        print(f"  {'FULL SCAN ' if bad else ''}{sql[:110]}\n      -> {'; '.join(plan)}")
        scans += bad
    conn.close()
    print(f"\nfull scans of a big table: {len(scans)}")
    if not args.keep:
        remove(path)


if __name__ == "__main__":
    asyncio.run(main())
