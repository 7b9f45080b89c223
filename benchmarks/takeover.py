"""How long a killed worker's persona update waits before another worker completes it.

    PGPASSWORD=... .venv/bin/python benchmarks/takeover.py \
        --postgres postgresql://aipersona@127.0.0.1:5432/aipersona_dev --recheck 15 1

Worker A claims a pending update and asks the model, which never answers it; A is then
killed with SIGKILL. Worker B (already running) finds the update on its next re-check
(``[persona] update_recheck_seconds``), sees that A's claim belongs to a dead worker (its
presence lock is gone on PostgreSQL, its process on SQLite), takes it over and completes it.
The figure is the time from the kill to the update being done, per backend and re-check
interval, a few runs each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import config, machine
from fastfake import completion_body

from aipersona.core import Identity, PersonaCore

WORKER = """
import asyncio, json, sys
from aipersona.core import Config, PersonaCore
database, base_url, recheck = json.loads(sys.argv[1])
async def main():
    cfg = Config.from_dict({
        "database": database,
        "llm": {"base_url": base_url, "model": "m", "max_retries": 0, "timeout_seconds": 3600},
        "persona": {"update_recheck_seconds": recheck},
        "sessions": {"sweep_seconds": 3600},
    })
    async with PersonaCore(cfg) as core:
        print("READY", flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""

UPDATE = {"updates": [{"field": "Demographics.Age", "op": "set", "value": 30, "evidence": "30"}]}


class Model:
    """The first optimizer request never gets an answer; the later ones do."""

    def __init__(self) -> None:
        self.json_requests = 0
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("response_format"):
            self.json_requests += 1
            self.changed.set()
            if self.json_requests == 1:
                await asyncio.sleep(3600)
            content = json.dumps(UPDATE)
        else:
            content = "ok"
        body = completion_body(content, "chatcmpl-takeover")
        return web.Response(body=body, content_type="application/json")


async def start_worker(script: Path, args: list[Any]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), json.dumps(args), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"READY"
    return proc


async def one_run(database: dict[str, Any], recheck: float, script: Path) -> float:
    model = Model()
    runner = web.AppRunner(web.Application(), handler_cancellation=True)
    runner.app.router.add_post("/v1/chat/completions", model.handle)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base_url = f"http://127.0.0.1:{port}/v1"
    cfg = config("unused.db", base_url, database=database, persona={"update_every": 1})
    ident = Identity("bench", secrets.token_hex(4))
    async with PersonaCore(cfg) as core:
        await core.learning.close()  # schedule the update without running it here
        await core.respond(ident, "c", "I'm 30")
        await core.end_session(ident, "c")
    workers = []
    try:
        workers.append(await start_worker(script, [database, base_url, recheck]))
        while model.json_requests < 1:  # A claimed the update and asked the model
            model.changed.clear()
            await asyncio.wait_for(model.changed.wait(), 60)
        workers.append(await start_worker(script, [database, base_url, recheck]))
        os.kill(workers[0].pid, signal.SIGKILL)
        killed = time.perf_counter()
        await workers[0].wait()
        async with PersonaCore(cfg, llm=None) as watcher:
            await watcher.learning.close()
            while True:
                data = await watcher.export(ident)
                if data and data["persona_updates"][0]["status"] == "done":
                    return time.perf_counter() - killed
                await asyncio.sleep(0.02)
    finally:
        for proc in workers:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await runner.cleanup()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--postgres", help="postgresql:// URL (password from --password-env)")
    ap.add_argument("--password-env", default="PGPASSWORD")
    ap.add_argument("--recheck", type=float, nargs="+", default=[15.0, 1.0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(machine())
    print("| backend | update_recheck_seconds | kill -9 -> update done, s (each run) | median |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "worker.py"
        script.write_text(textwrap.dedent(WORKER), encoding="utf-8")
        backends: list[tuple[str, dict[str, Any]]] = [("sqlite", {"path": f"{tmp}/t.db"})]
        admin = None
        if args.postgres:
            import asyncpg

            admin = await asyncpg.connect(args.postgres, password=os.environ.get(args.password_env))
            schema = f"takeover_{secrets.token_hex(4)}"
            await admin.execute(f"CREATE SCHEMA {schema}")
            backends.append(
                (
                    "postgres",
                    {"url": args.postgres, "password_env": args.password_env, "schema": schema},
                )
            )
        try:
            for name, database in backends:
                for recheck in args.recheck:
                    times = [await one_run(database, recheck, script) for _ in range(args.runs)]
                    each = ", ".join(f"{t:.2f}" for t in times)
                    print(
                        f"| {name} | {recheck:g} | {each} | {statistics.median(times):.2f} |",
                        flush=True,
                    )
        finally:
            if admin is not None:
                await admin.execute(f"DROP SCHEMA {schema} CASCADE")
                await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
