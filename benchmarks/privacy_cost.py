"""What users-in-control costs per message (issue 11): encryption at rest, token budgets.

    .venv/bin/python benchmarks/privacy_cost.py                 # 100 users, 4,000 messages
    .venv/bin/python benchmarks/privacy_cost.py --users 1000 --messages 10000 --rounds 3

Each variant is the stub mode of ``overhead.py`` (the LLM answers in-process, so only
aipersona's own work is timed: SQLite, prompt, reply stored) in a closed loop. Variants
run interleaved (A B C D D C B A ...) so drift of the machine hits them alike; the table
gives the median over rounds. The micro rows time sealing and opening one text alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import StubLLM, config, machine, ms
from overhead import closed_loop, prepare

from aipersona.core import PersonaCore, freeze_startup_objects
from aipersona.core.storage.crypto import Keyring

KEY_ENV = "AIPERSONA_BENCH_MASTER_KEY"
VARIANTS = {
    "baseline (encryption off, no budgets)": {},
    "encryption on": {"privacy": {"encryption_key_env": KEY_ENV}},
    "budgets on (user + chat)": {
        "limits": {"tokens_per_user_per_day": 10**9, "tokens_per_chat_per_day": 10**9}
    },
    "encryption + budgets": {
        "privacy": {"encryption_key_env": KEY_ENV},
        "limits": {"tokens_per_user_per_day": 10**9, "tokens_per_chat_per_day": 10**9},
    },
}


async def one_run(over: dict, users: int, messages: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        privacy = {"notice": "", **over.get("privacy", {})}
        limits = over.get("limits", {})
        cfg = config(Path(tmp) / "bench.db", privacy=privacy, limits=limits)
        async with PersonaCore(cfg, llm=StubLLM(cfg)) as core:
            freeze_startup_objects()
            idents = await prepare(core, users)
            await closed_loop(core, idents[: min(users, 50)], 200)  # warm-up
            return await closed_loop(core, idents, max(messages, users * 2))


def micro() -> list[str]:
    keyring = Keyring(os.urandom(32))
    key, _ = keyring.new_data_key(1)
    sealer = keyring.sealer(key, 1)
    rows = []
    for size in (100, 2000):
        text = "x" * size
        n = 20_000
        t = time.perf_counter()
        for _ in range(n):
            sealed = sealer.seal(text)
        seal_us = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        for _ in range(n):
            sealer.open(sealed)
        open_us = (time.perf_counter() - t) / n * 1e6
        grow = len(sealed) - size
        rows.append(
            f"| seal / open one {size:,}-character text | {seal_us:.1f} µs | {open_us:.1f} µs "
            f"| +{grow} bytes stored |"
        )
    return rows


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--messages", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    os.environ[KEY_ENV] = base64.b64encode(os.urandom(32)).decode()  # a throwaway key
    order = list(VARIANTS)
    results: dict[str, list[dict]] = {name: [] for name in order}
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else reversed(order):
            results[name].append(await one_run(VARIANTS[name], args.users, args.messages))
    print(f"machine: {machine()}")
    print(f"{args.users} users, {args.messages:,} messages per run, median of {args.rounds} runs\n")
    print("| variant | msg/s | p50 | p99 | per message vs baseline |")
    print("|---|---|---|---|---|")
    base = statistics.median(1 / r["msg_s"] for r in results[order[0]])
    for name in order:
        runs = results[name]
        per_msg = statistics.median(1 / r["msg_s"] for r in runs)
        p50 = statistics.median(r["p50"] for r in runs)
        p99 = statistics.median(r["p99"] for r in runs)
        delta = (per_msg - base) * 1e6
        print(
            f"| {name} | {1 / per_msg:,.0f} | {ms(p50)} | {ms(p99)} | "
            f"{'—' if name == order[0] else f'{delta:+.0f} µs ({delta / (base * 1e6):+.0%})'} |"
        )
    print("\n| micro | seal | open | size |")
    print("|---|---|---|---|")
    for line in micro():
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
