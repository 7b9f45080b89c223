"""Prompt cost: tokens per turn as one user's history grows, vs sending the full history.

    .venv/bin/python benchmarks/prompt_cost.py                  # 1,000 sessions, k = 3
    .venv/bin/python benchmarks/prompt_cost.py --sessions 1000 --update-every 5

One user talks for S sessions of 2 messages each (a session ends explicitly). The LLM is an
in-process stub that records every chat prompt; the optimizer stub learns a little each run
(sets a recent-topic field, keeps the last 8 topics as interests, so the persona changes
but is bounded by the schema). Tokens are counted exactly (o200k, tests/fakes/prompt_tokens.py);
the whole prompt includes the tool schema. The "full history" baseline is what a bot without
a persona would send to remember everything: the instructions plus every earlier message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import StubLLM, config, machine

from aipersona.core import Identity, PersonaCore
from tests.fakes.prompt_tokens import message_tokens, request_tokens, tokens

TOPICS = ["climbing", "jazz", "sourdough", "chess", "kayaking", "rust", "tango", "birding"]


class LearningStub(StubLLM):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.updates = 0
        self.system_tokens: list[int] = []
        self.prompt_tokens: list[int] = []

    async def complete(self, messages: list[dict[str, Any]], **kw: Any):  # type: ignore[override]
        if not kw.get("response_format"):
            counted = request_tokens({"messages": messages, "tools": kw.get("tools")})
            self.system_tokens.append(counted.system)
            self.prompt_tokens.append(counted.total)
        return await super().complete(messages, **kw)

    def optimizer_reply(self, messages: list[dict[str, Any]]) -> str:
        self.updates += 1
        n = self.updates
        recent = [f"{TOPICS[i % len(TOPICS)]} {i}" for i in range(max(0, n - 8), n)]
        return json.dumps(
            {
                "updates": [
                    {
                        "field": "Pattern.Behavior_Engagement_Pattern",
                        "op": "set",
                        "value": f"lately asks about {TOPICS[n % len(TOPICS)]} (run {n})",
                        "evidence": "asked",
                    },
                    {
                        "field": "Personality.Values_and_Interests",
                        "op": "set",
                        "value": recent,
                        "evidence": "said so",
                    },
                    {
                        "field": "Demographics.Career_Information",
                        "op": "set",
                        "value": "nurse in Lisbon",
                        "evidence": "I am a nurse",
                    },
                ]
            }
        )


async def run(sessions: int, k: int, checkpoints: list[int]) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp) / "p.db", persona={"update_every": k})
        llm = LearningStub(cfg)
        ident = Identity("bench", "ana")
        full_history = 0
        messages = 0
        async with PersonaCore(cfg, llm=llm) as core:
            base_system = message_tokens({"role": "system", "content": cfg.chat.system_prompt})
            for s in range(1, sessions + 1):
                for m in range(2):
                    text = (
                        f"(session {s}, message {m}) I went {TOPICS[s % len(TOPICS)]} again "
                        "this weekend; can you suggest something to try next time?"
                    )
                    # baseline: instructions + every earlier message + this one
                    said = message_tokens({"role": "user", "content": text})
                    baseline = base_system + full_history + said + 3
                    reply = await core.respond(ident, "c", text)
                    messages += 1
                    full_history += said + tokens(reply.text) + 3
                if s in checkpoints:
                    rows.append(
                        f"| {s:,} | {llm.system_tokens[-1]:,} |"
                        f" {llm.prompt_tokens[-1]:,} | {baseline:,} |"
                        f" {llm.json_calls:,} | {(llm.calls) / messages:.3f} |"
                    )
                    print(rows[-1], flush=True)
                await core.end_session(ident, "c")
                await core.wait_for_updates()
        await llm.close()
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--update-every", type=int, default=3)
    args = ap.parse_args()
    marks = (1, 2, 3, 10, 30, 100, 300, 1000, args.sessions)
    checkpoints = [c for c in marks if c <= args.sessions]
    print(machine())
    print(
        f"k = {args.update_every}; 2 user messages per session\n"
        "| sessions so far | system prompt (persona incl.) tokens | whole prompt tokens"
        " (our turn) | full-history baseline tokens | optimizer calls so far |"
        " LLM calls per message (chat + optimizer) |\n|---|---|---|---|---|---|"
    )
    await run(args.sessions, args.update_every, sorted(set(checkpoints)))


if __name__ == "__main__":
    asyncio.run(main())
