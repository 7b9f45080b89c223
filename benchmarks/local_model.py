"""The embedded model (SmolLM2-135M-Instruct, Q4_1 GGUF) through llama_cpp.server.

    .venv/bin/python benchmarks/local_model.py
    .venv/bin/python benchmarks/local_model.py --replies 10 --max-tokens 128

PersonaCore with an empty ``[llm] base_url`` starts ``python -m llama_cpp.server`` itself
(core/local_model.py). Measured: time to start the core (model server up and answering
/v1/models), first-reply latency, then per reply latency and completion tokens/s (tokens
as counted by the server's ``usage``), plain and streamed (time to first delta).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine

from aipersona.core import Config, Identity, PersonaCore

QUESTIONS = [
    "Hi! I'm Ana, a nurse in Lisbon. What could I cook tonight?",
    "Suggest a short weekend trip near Lisbon.",
    "Give me three tips to sleep better after night shifts.",
    "What is a good beginner climbing exercise?",
]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replies", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config.from_dict(
            {
                "database": {"path": str(Path(tmp) / "local.db")},
                "llm": {
                    "max_tokens": args.max_tokens,
                    "temperature": 0.2,
                    "local": {"n_ctx": 2048, "n_threads": args.threads},
                },
                "sessions": {"history_messages": 4, "sweep_seconds": 3600},
            }
        )
        ident = Identity("bench", "ana")
        t0 = time.perf_counter()
        core = PersonaCore(cfg)
        await core.start(sweep=False)
        start_s = time.perf_counter() - t0
        try:
            rows = []
            for i in range(args.replies):
                text = QUESTIONS[i % len(QUESTIONS)]
                t = time.perf_counter()
                reply = await core.respond(ident, f"c{i}", text)
                secs = time.perf_counter() - t
                assert reply.ok, reply.error
                rows.append((secs, reply.prompt_tokens, reply.completion_tokens))
            core.config.llm.stream = True
            ttft: list[float] = []
            for i in range(min(3, args.replies)):
                first: list[float] = []
                t = time.perf_counter()

                async def on_delta(delta: str, t: float = t, first: list[float] = first) -> None:
                    if not first:
                        first.append(time.perf_counter() - t)

                reply = await core.respond(
                    ident, f"s{i}", QUESTIONS[i % len(QUESTIONS)], on_delta=on_delta
                )
                if first:
                    ttft.append(first[0])
        finally:
            await core.close()
    print(machine())
    print(f"start (llama_cpp.server up, model loaded): {start_s:.2f} s")
    print("| reply | latency s | prompt tokens | completion tokens | completion tokens/s |")
    print("|---|---|---|---|---|")
    for i, (secs, pt, ct) in enumerate(rows):
        print(f"| {i + 1} | {secs:.2f} | {pt} | {ct} | {ct / secs:.1f} |")
    later = rows[1:] or rows
    print(
        f"first reply {rows[0][0]:.2f} s; later replies median"
        f" {statistics.median(r[0] for r in later):.2f} s,"
        f" {sum(r[2] for r in later) / sum(r[0] for r in later):.1f} completion tokens/s"
        " (end to end, prompt processing included)"
    )
    if ttft:
        print(f"streamed: time to first delta median {statistics.median(ttft):.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
