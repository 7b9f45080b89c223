"""Per-message core overhead: receive -> persona load -> prompt -> LLM request -> reply stored.

    .venv/bin/python benchmarks/overhead.py                # all modes, 1/100/1000 users
    .venv/bin/python benchmarks/overhead.py --profile      # cProfile of the stub mode
    .venv/bin/python benchmarks/overhead.py --messages 20000 --users 1000 --mode stub

Modes:
  stub    the LLM is an in-process stub (no HTTP): pure aipersona overhead;
  http    the real openai client against ``fastfake.py`` (a raw asyncio server in its own
          process): what a deployment pays per message before the model thinks;
  client  the openai client alone against the same fake (no aipersona), to separate its cost.

Load shapes:
  closed  U users each send their next message as soon as the previous reply arrives
          (max throughput; latency then includes queueing: Little's law);
  open    messages arrive at a fixed total rate (Poisson) spread over U users; latency is
          per message at that offered load (the "p99 at 1,000 msg/s" figure).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import StubLLM, config, machine, ms, pct
from fastfake import start_subprocess

from aipersona.core import Edit, Identity, LLMClient, PersonaCore, freeze_startup_objects

PERSONA = [
    Edit("Demographics.Name", "set", "Alex"),
    Edit("Demographics.Age", "set", 34),
    Edit("Demographics.Career_Information", "set", "nurse in Lisbon"),
    Edit("Personality.Values_and_Interests", "set", ["climbing", "jazz", "cooking"]),
]


async def prepare(core: PersonaCore, users: int) -> list[Identity]:
    idents = [Identity("bench", f"u{i}") for i in range(users)]
    for ident in idents:
        await core.edit_persona(ident, PERSONA)
    return idents


async def timed_message(core: PersonaCore, ident: Identity, i: int, lat: list[float]) -> None:
    """One message through ``respond()``; its wall-clock latency is appended to ``lat``."""
    t = time.perf_counter()
    reply = await core.respond(ident, "chat", f"message {i}: what should I cook tonight?")
    lat.append(time.perf_counter() - t)
    assert reply.ok, reply.error


async def closed_loop(core: PersonaCore, idents: list[Identity], total: int) -> dict:
    lat: list[float] = []
    per_user = max(1, total // len(idents))

    async def user(ident: Identity) -> None:
        for i in range(per_user):
            await timed_message(core, ident, i, lat)

    gc.collect()
    t0 = time.perf_counter()
    await asyncio.gather(*[user(x) for x in idents])
    wall = time.perf_counter() - t0
    return {"n": len(lat), "msg_s": len(lat) / wall, "p50": pct(lat, 50), "p99": pct(lat, 99)}


async def open_loop(core: PersonaCore, idents: list[Identity], rate: float, seconds: float) -> dict:
    lat: list[float] = []
    rng = random.Random(1)
    tasks: list[asyncio.Task] = []

    gc.collect()
    t0 = time.perf_counter()
    next_at = t0
    i = 0
    while next_at - t0 < seconds:
        next_at += rng.expovariate(rate)
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed_message(core, rng.choice(idents), i, lat)))
        i += 1
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    return {"n": len(lat), "msg_s": len(lat) / wall, "p50": pct(lat, 50), "p99": pct(lat, 99)}


async def client_only(base_url: str, concurrency: int, total: int, http: str) -> dict:
    llm = LLMClient(config(":memory:", base_url, llm={"http_client": http}).llm)
    lat: list[float] = []
    messages = [
        {"role": "system", "content": "You are a helpful assistant. " * 40},
        {"role": "user", "content": "what should I cook tonight?"},
    ]

    async def worker(n: int) -> None:
        for _ in range(n):
            t = time.perf_counter()
            await llm.complete(messages)
            lat.append(time.perf_counter() - t)

    await worker(20)  # warm the connection pool
    lat.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*[worker(total // concurrency) for _ in range(concurrency)])
    wall = time.perf_counter() - t0
    await llm.close()
    return {"n": len(lat), "msg_s": len(lat) / wall, "p50": pct(lat, 50), "p99": pct(lat, 99)}


def row(label: str, r: dict) -> str:
    return f"| {label} | {r['n']:,} | {r['msg_s']:,.0f} | {ms(r['p50'])} | {ms(r['p99'])} |"


async def run_core(mode: str, base_url: str, users_list: list[int], total: int, args) -> list:
    rows = []
    if mode == "http":
        mode = f"http ({args.http_client})"
    for users in users_list:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = config(Path(tmp) / "bench.db", base_url, llm={"http_client": args.http_client})
            llm = StubLLM(cfg) if mode == "stub" else None
            async with PersonaCore(cfg, llm=llm) as core:
                freeze_startup_objects()  # as the standalone commands do
                idents = await prepare(core, users)
                await closed_loop(core, idents[: min(users, 50)], 200)  # warm-up
                r = await closed_loop(core, idents, max(total, users * 2))
                rows.append(row(f"{mode}, closed loop, {users} users", r))
                print(rows[-1], flush=True)
                for _ in range(args.repeat if args.rate and users > 1 else 0):
                    r = await open_loop(core, idents, args.rate, args.seconds)
                    rows.append(row(f"{mode}, open loop {args.rate:,.0f} msg/s, {users} users", r))
                    print(rows[-1], flush=True)
            if llm is not None:
                await llm.close()
    return rows


async def profile(total: int, users: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp) / "bench.db")
        llm = StubLLM(cfg)
        async with PersonaCore(cfg, llm=llm) as core:
            freeze_startup_objects()  # as the standalone commands do
            idents = await prepare(core, users)
            await closed_loop(core, idents, 200)
            prof = cProfile.Profile()
            prof.enable()
            r = await closed_loop(core, idents, total)
            prof.disable()
        await llm.close()
    print(row(f"stub under cProfile, {users} users", r))
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    print(out.getvalue())
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(40)
    print(out.getvalue())


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["stub", "http", "client", "all"], default="all")
    ap.add_argument("--users", type=int, nargs="*", default=[1, 100, 1000])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=1000.0, help="open-loop rate; 0 to skip")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=1, help="open-loop runs per user count")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--http-client", choices=["httpx", "aiohttp"], default="httpx")
    args = ap.parse_args()
    if args.profile:
        await profile(args.messages, args.users[-1])
        return
    print(machine())
    print("| run | messages | msg/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    modes = ["stub", "http", "client"] if args.mode == "all" else [args.mode]
    proc = None
    base_url = "http://127.0.0.1:9/v1"
    if set(modes) & {"http", "client"}:
        proc, port = await start_subprocess()
        base_url = f"http://127.0.0.1:{port}/v1"
    try:
        for mode in modes:
            if mode == "client":
                for c in args.users:
                    r = await client_only(base_url, min(c, 100), args.messages, args.http_client)
                    label = f"openai client ({args.http_client}) alone, {min(c, 100)} concurrent"
                    print(row(label, r), flush=True)
            else:
                await run_core(mode, base_url, args.users, args.messages, args)
    finally:
        if proc is not None:
            proc.kill()
            await proc.wait()


if __name__ == "__main__":
    asyncio.run(main())
