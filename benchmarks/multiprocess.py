"""Several bot processes on one database file, each with its own openai client.

    .venv/bin/python benchmarks/multiprocess.py --procs 2 --users 500 --messages 5000

One fake LLM process (fastfake.py); P worker processes share one SQLite file (WAL), each
runs U users in a closed loop through PersonaCore and the real openai client. Prints each
worker's throughput and the aggregate (total messages / wall time of the slowest worker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import config, machine, ms, pct
from fastfake import start_subprocess

from aipersona.core import Identity, PersonaCore


async def worker(db: str, base_url: str, proc: int, users: int, total: int, http: str) -> None:
    cfg = config(db, base_url, llm={"http_client": http})
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


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--messages", type=int, default=5000, help="per process")
    ap.add_argument("--http-client", choices=["httpx", "aiohttp"], default="httpx")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        db, url, proc, _ = args.worker
        await worker(db, url, int(proc), args.users, args.messages, args.http_client)
        return
    fake, port = await start_subprocess()
    url = f"http://127.0.0.1:{port}/v1"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = str(Path(tmp) / "mp.db")
            async with PersonaCore(config(db, url)):
                pass  # migrate once
            procs = [
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
                    db,
                    url,
                    str(p),
                    "x",
                    stdout=asyncio.subprocess.PIPE,
                )
                for p in range(args.procs)
            ]
            outs = [json.loads((await p.communicate())[0]) for p in procs]
    finally:
        fake.kill()
        await fake.wait()
    print(machine())
    for i, r in enumerate(outs):
        print(
            f"process {i}: {r['n']:,} messages, {r['n'] / r['wall']:,.0f} msg/s,"
            f" p50 {ms(r['p50'])} ms, p99 {ms(r['p99'])} ms"
        )
    total = sum(r["n"] for r in outs)
    print(
        f"aggregate ({args.procs} processes x {args.users} users, {args.http_client}):"
        f" {total / max(r['wall'] for r in outs):,.0f} msg/s"
    )


if __name__ == "__main__":
    asyncio.run(main())
