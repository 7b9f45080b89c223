"""Scale on PostgreSQL: N personas with history; persona load latency, start-up, a full turn.

    PGPASSWORD=... .venv/bin/python benchmarks/scale_postgres.py \\
        --url postgresql://aipersona@127.0.0.1:5432/aipersona_dev --personas 1000000

The same shape as ``scale.py`` (one identity, 6 persona fields with a version each, 3
sessions of 2 messages, one finished update per persona), built with set-based SQL
(``generate_series``) into the real schema, created by the real migrations, in a schema of its
own (``--schema``, kept for reruns with ``--keep``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import StubLLM, config, machine
from scale import FIELDS, measure, print_measured

from aipersona.core import PersonaCore

SERIES = "generate_series($1::bigint, $2::bigint) AS n(i)"


def pg_expr(sqlite_expr: str) -> str:
    """scale.py's SQLite value expressions, in PostgreSQL."""
    return (
        sqlite_expr.replace("printf('\"User %d\"', i)", "format('\"User %s\"', i)")
        .replace("CAST(18 + i % 60 AS TEXT)", "(18 + i % 60)::text")
        .replace(
            "printf('\"nurse in city %d\"', i % 997)", "format('\"nurse in city %s\"', i % 997)"
        )
        .replace(
            'printf(\'["climbing","jazz","topic %d"]\', i % 313)',
            'format(\'["climbing","jazz","topic %s"]\', i % 313)',
        )
    )


async def build(conn: object, personas: int, chunk: int = 100_000) -> float:
    t0 = time.perf_counter()
    now = time.time() - 86_400
    for lo in range(1, personas + 1, chunk):
        hi = min(personas, lo + chunk - 1)
        async with conn.transaction():  # type: ignore[attr-defined]
            q = conn.execute  # type: ignore[attr-defined]
            await q(f"INSERT INTO personas SELECT i, $3, $3 FROM {SERIES}", lo, hi, now)
            await q(
                "INSERT INTO identities SELECT 'telegram', i::text, i, 'user' || i, $3"
                f" FROM {SERIES}",
                lo, hi, now,
            )  # fmt: skip
            await q(
                "INSERT INTO persona_updates (id, persona_id, status, session_ids, attempts,"
                " created_at, finished_at) SELECT i, i, 'done', format('[%s,%s]', 3*i-2, 3*i-1),"
                f" 1, $3, $3 FROM {SERIES}",
                lo, hi, now,
            )  # fmt: skip
            for fi, (name, expr) in enumerate(FIELDS):
                value = pg_expr(expr)
                await q(
                    f"INSERT INTO persona_fields SELECT i, $3, {value}, 1, $4 FROM {SERIES}",
                    lo, hi, name, now,
                )  # fmt: skip
                await q(
                    "INSERT INTO persona_versions (id, persona_id, field, version, op, old_value,"
                    f" new_value, source, session_ids, evidence, created_at) SELECT"
                    f" 6*(i-1)+{fi}+1, i, $3, 1, 'set', NULL, {value}, 'optimizer',"
                    f" format('[%s,%s]', 3*i-2, 3*i-1), 'said so', $4 FROM {SERIES}",
                    lo, hi, name, now,
                )  # fmt: skip
            for s in range(3):
                ended = "$3::float8" if s < 2 else "NULL::float8"
                await q(
                    f"INSERT INTO sessions SELECT 3*(i-1)+{s}+1, i, 'telegram', i::text, $3, $3,"
                    f" {ended}, {'$$idle$$' if s < 2 else 'NULL'}, {'i' if s < 2 else 'NULL'}"
                    f" FROM {SERIES}",
                    lo, hi, now,
                )  # fmt: skip
                for r, role in enumerate(("user", "assistant")):
                    text = (
                        f"format('session {s}: I am a nurse and I love climbing, what should I"
                        " cook tonight? (%s)', i)"
                        if role == "user"
                        else "format('Since you like climbing, try a protein-rich pasta. (%s)', i)"
                    )
                    await q(
                        f"INSERT INTO messages SELECT 6*(i-1)+{2 * s + r}+1, 3*(i-1)+{s}+1, i,"
                        f" '{role}', {text}, 'telegram', i::text, $3 FROM {SERIES}",
                        lo, hi, now,
                    )  # fmt: skip
        print(f"  built {hi:,} personas ({time.perf_counter() - t0:.0f} s)", flush=True)
    for table in ("personas", "persona_versions", "persona_updates", "sessions", "messages"):
        await conn.execute(  # type: ignore[attr-defined]
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
        )
    await conn.execute("ANALYZE")  # type: ignore[attr-defined]
    return time.perf_counter() - t0


async def main() -> None:
    import asyncpg

    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--password-env", default="PGPASSWORD")
    ap.add_argument("--schema", default="")
    ap.add_argument("--personas", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--keep", action="store_true", help="keep the schema for a rerun")
    args = ap.parse_args()
    schema = args.schema or f"scale_{args.personas}"
    database = {"url": args.url, "password_env": args.password_env, "schema": schema}
    admin = await asyncpg.connect(args.url, password=os.environ.get(args.password_env))
    print(machine())
    exists = await admin.fetchval(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = $1"
        " AND table_name = 'personas'",
        schema,
    )
    if not exists:
        await admin.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        cfg = config("unused.db", database=database)
        async with PersonaCore(cfg, llm=StubLLM(cfg)):
            pass  # the real migrations
        await admin.execute(f"SET search_path = {schema}")
        secs = await build(admin, args.personas)
        print(f"build: {args.personas:,} personas in {secs:.0f} s")
    size = await admin.fetchval(
        "SELECT SUM(pg_total_relation_size(quote_ident($1) || '.' || quote_ident(table_name)))"
        " FROM information_schema.tables WHERE table_schema = $1",
        schema,
    )
    size = int(size or 0)
    print(f"size: {size / 1e6:,.0f} MB, {size / args.personas:,.0f} bytes per user")
    r = await measure(Path("unused.db"), args.personas, args.samples, database)
    print_measured(r, args.samples)
    if not args.keep:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
