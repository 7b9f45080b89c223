"""Soak: many messages across many users, memory (RSS) sampled; not part of CI.

    .venv/bin/python benchmarks/soak.py                           # 100,000 msgs, 1,000 users
    .venv/bin/python benchmarks/soak.py --messages 20000 --users 1000   # a shorter run

Real path: PersonaCore -> openai client -> ``fastfake.py`` (own process). Every user ends
a session every ``--session-len`` messages, so the optimizer runs (k = 3) as in production.
RSS is read from /proc/self/status once a second; the table shows it at every tenth of the
run. At the end: database size, open per-user structures (locks, update tasks, identity
cache) and ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import StubLLM, config, machine, ms, pct
from fastfake import start_subprocess

from aipersona.core import Identity, PersonaCore, freeze_startup_objects


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def inspect_db(db_path: Path) -> tuple[int, str, dict[str, int], int]:
    size = sum(
        os.path.getsize(str(db_path) + s) for s in ("", "-wal") if os.path.exists(str(db_path) + s)
    )
    with sqlite3.connect(db_path) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        updates = dict(conn.execute("SELECT status, COUNT(*) FROM persona_updates GROUP BY 1"))
        stored = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    return size, integrity, updates, stored


async def soak(args: argparse.Namespace, base_url: str, tmp: str) -> None:
    db_path = Path(tmp) / "soak.db"
    cfg = config(db_path, base_url, persona={"update_every": 3})
    llm = StubLLM(cfg) if args.stub else None
    users = [Identity("soak", f"u{i}") for i in range(args.users)]
    per_user = args.messages // args.users
    done = 0
    lat: list[float] = []
    samples: list[tuple[float, int, float]] = []
    t0 = time.perf_counter()

    async def sampler() -> None:
        while True:
            samples.append((time.perf_counter() - t0, done, rss_mb()))
            await asyncio.sleep(1)

    async with PersonaCore(cfg, llm=llm) as core:
        freeze_startup_objects()  # as the standalone commands do
        gc.collect()
        base_rss = rss_mb()
        sampling = asyncio.create_task(sampler())

        async def user(ident: Identity) -> None:
            nonlocal done
            for i in range(per_user):
                t = time.perf_counter()
                reply = await core.respond(ident, "chat", f"message {i}: I like topic {i % 7}")
                lat.append(time.perf_counter() - t)
                assert reply.ok, reply.error
                done += 1
                if (i + 1) % args.session_len == 0:
                    await core.end_session(ident, "chat")

        await asyncio.gather(*[user(u) for u in users])
        await core.wait_for_updates()
        wall = time.perf_counter() - t0
        sampling.cancel()
        samples.append((wall, done, rss_mb()))
        storage: Any = core.storage  # the SQLite backend's identity cache
        leftovers = (len(core.locks), len(core.learning._tasks), len(storage._ids))
    if llm is not None:
        await llm.close()
    size, integrity, updates, stored = inspect_db(db_path)
    print(machine())
    print(
        f"{done:,} messages, {args.users:,} users, {wall:.0f} s, {done / wall:,.0f} msg/s;"
        f" latency p50 {ms(pct(lat, 50))} ms, p99 {ms(pct(lat, 99))} ms"
        f" (closed loop, {args.users} concurrent)"
    )
    print(f"RSS after start-up: {base_rss:.0f} MB")
    print("| elapsed s | messages | RSS MB |\n|---|---|---|")
    step = max(1, len(samples) // 10)
    for elapsed, n, rss in [*samples[::step], samples[-1]]:
        print(f"| {elapsed:.0f} | {n:,} | {rss:.0f} |")
    print(
        f"db {size / 1e6:.0f} MB ({stored:,} messages); optimizer updates {updates};"
        f" integrity {integrity}; left open: locks {leftovers[0]}, update tasks"
        f" {leftovers[1]}, cached identities {leftovers[2]}"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--session-len", type=int, default=10)
    ap.add_argument("--stub", action="store_true", help="in-process LLM stub instead of HTTP")
    args = ap.parse_args()
    proc, port = await start_subprocess()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            await soak(args, f"http://127.0.0.1:{port}/v1", tmp)
    finally:
        proc.kill()
        await proc.wait()


if __name__ == "__main__":
    asyncio.run(main())
