"""Several bot processes on one database, each with its own openai client.

    .venv/bin/python benchmarks/multiprocess.py --procs 2 --users 500 --messages 5000
    PGPASSWORD=... .venv/bin/python benchmarks/multiprocess.py --series \
        --postgres postgresql://aipersona@127.0.0.1:5432/aipersona_dev

One fake LLM process (fastfake.py); P worker processes share one database (a SQLite file in
WAL mode, or PostgreSQL), each runs U users in a closed loop through PersonaCore and the real
openai client. Prints each worker's throughput and the aggregate (total messages / wall time
of the slowest worker). ``--series`` runs, in one invocation, one process on SQLite and 1, 2
and 4 processes on PostgreSQL (each PostgreSQL run in a fresh schema, dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import config, machine, ms, pct
from fastfake import start_subprocess

from aipersona.core import Identity, PersonaCore


async def worker(
    database: dict[str, Any], base_url: str, proc: int, users: int, total: int, http: str
) -> None:
    cfg = config("unused.db", base_url, llm={"http_client": http}, database=database)
    lat: list[float] = []
    async with PersonaCore(cfg) as core:
        idents = [Identity("mp", f"p{proc}-u{i}") for i in range(users)]

        async def user(ident: Identity) -> None:
            for i in range(total // users):
                t = time.perf_counter()
                reply = await core.respond(ident, "c", f"message {i}")
                lat.append(time.perf_counter() - t)
                assert reply.ok, reply.error

        await asyncio.gather(*[user(x) for x in idents[: min(20, users)]])  # warm-up
        lat.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*[user(x) for x in idents])
        wall = time.perf_counter() - t0
    print(json.dumps({"n": len(lat), "wall": wall, "p50": pct(lat, 50), "p99": pct(lat, 99)}))


async def run(
    database: dict[str, Any], url: str, procs: int, args: argparse.Namespace
) -> list[dict[str, Any]]:
    async with PersonaCore(config("unused.db", url, database=database)):
        pass  # migrate once
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--users",
            str(args.users),
            "--messages",
            str(args.messages),
            "--http-client",
            args.http_client,
            "--worker",
            json.dumps(database),
            url,
            str(p),
            stdout=asyncio.subprocess.PIPE,
        )
        for p in range(procs)
    ]
    return [json.loads((await w.communicate())[0]) for w in workers]


async def fresh_schema(url: str, password_env: str) -> tuple[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(url, password=os.environ.get(password_env))
    schema = f"bench_{secrets.token_hex(4)}"
    await conn.execute(f"CREATE SCHEMA {schema}")
    return schema, conn


def report(label: str, outs: list[dict[str, Any]]) -> str:
    total = sum(r["n"] for r in outs)
    per = " / ".join(f"{r['n'] / r['wall']:,.0f}" for r in outs)
    p50 = max(r["p50"] for r in outs)
    p99 = max(r["p99"] for r in outs)
    return (
        f"| {label} | {total / max(r['wall'] for r in outs):,.0f} | {per} | {ms(p50)} | {ms(p99)} |"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, nargs="+", default=[2])
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--messages", type=int, default=5000, help="per process")
    ap.add_argument("--http-client", choices=["httpx", "aiohttp"], default="httpx")
    ap.add_argument("--postgres", help="a postgresql:// URL (password from --password-env)")
    ap.add_argument("--password-env", default="PGPASSWORD")
    ap.add_argument("--series", action="store_true", help="SQLite x1, PostgreSQL x1, x2, x4")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        database, url, proc = args.worker
        await worker(
            json.loads(database), url, int(proc), args.users, args.messages, args.http_client
        )
        return
    plan: list[tuple[str, int]] = []
    if args.series:
        plan = [("sqlite", 1), ("postgres", 1), ("postgres", 2), ("postgres", 4)]
    else:
        backend = "postgres" if args.postgres else "sqlite"
        plan = [(backend, p) for p in args.procs]
    if any(b == "postgres" for b, _ in plan) and not args.postgres:
        ap.error("--postgres URL is needed for PostgreSQL runs")
    fake, port = await start_subprocess()
    url = f"http://127.0.0.1:{port}/v1"
    rows = []
    try:
        for backend, procs in plan:
            if backend == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    outs = await run({"path": str(Path(tmp) / "mp.db")}, url, procs, args)
            else:
                schema, admin = await fresh_schema(args.postgres, args.password_env)
                try:
                    database = {
                        "url": args.postgres,
                        "password_env": args.password_env,
                        "schema": schema,
                        "pool_max_size": 10,
                    }
                    outs = await run(database, url, procs, args)
                finally:
                    await admin.execute(f"DROP SCHEMA {schema} CASCADE")
                    await admin.close()
            label = f"{procs} process{'es' if procs > 1 else ''} on {backend}"
            rows.append(report(label, outs))
            print(rows[-1], file=sys.stderr, flush=True)
    finally:
        fake.kill()
        await fake.wait()
    print(machine())
    print(
        f"{args.users} users per process, {args.messages:,} messages per process,"
        f" openai client ({args.http_client}) -> fastfake in its own process"
    )
    print("| run | aggregate msg/s | per process msg/s | p50 ms (worst) | p99 ms (worst) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
