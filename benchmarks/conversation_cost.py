"""Conversation cost: LLM calls and exact prompt tokens per user message, every call counted.

    .venv/bin/python benchmarks/conversation_cost.py                 # 30 x 4, k = 3, tools on
    .venv/bin/python benchmarks/conversation_cost.py --tools off
    .venv/bin/python benchmarks/conversation_cost.py --tool-calls    # the model records facts

One scripted user (tests/fakes/conversation.py): 30 sessions of 4 messages, 19 facts stated
now and then and 6 of them changed later. ``PersonaCore`` talks through the real ``openai``
client to the loopback fake OpenAI server of the tests (aiohttp on 127.0.0.1). The fake chat
model answers every message with the same ~45-token reply (with ``--tool-calls`` it first
calls the persona tool for each fact a message states); the fake optimizer returns the edits
for the scripted facts found in the transcripts it is sent (an ideal optimizer: what is
measured is the cost and what the schema can hold, not a model's judgement). Prompt tokens
are counted exactly with the o200k vocabulary of ``bpe-openai`` (tests/fakes/prompt_tokens.py)
over the request bodies the server received, every call counted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import config, machine

from aipersona.core import Config
from tests.fakes.conversation import SESSIONS, TURNS, Played, coverage, play, role_of
from tests.fakes.prompt_tokens import RequestTokens, request_tokens

ROLES = ("chat", "tool round", "optimizer")


@dataclass
class Tally:
    messages: int = 0
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    parts: dict[str, RequestTokens] = field(
        default_factory=lambda: {role: RequestTokens() for role in ROLES}
    )

    def add(self, body: dict[str, Any]) -> None:
        role = role_of(body)
        counted = request_tokens(body)
        self.calls[role] += 1
        self.tokens[role] += counted.total
        self.parts[role].add(counted)

    def average(self, role: str) -> str:
        n, parts = max(1, self.calls[role]), self.parts[role]
        return (
            f"system prompt {parts.system / n:,.0f}, schemas {parts.schemas / n:,.0f}, "
            f"history {parts.history / n:,.0f}, last message {parts.last / n:,.0f} tokens"
        )

    def per_message(self, what: dict[str, int]) -> dict[str, float]:
        return {role: what[role] / max(1, self.messages) for role in ROLES}


@dataclass
class Run:
    total: Tally
    by_session: list[Tally]
    optimizer_prompts: list[int]
    persona: dict[str, Any]

    @classmethod
    def of(cls, played: Played, turns: int) -> Run:
        by_session = []
        for requests in played.requests:
            tally = Tally(messages=turns)
            for body in requests:
                tally.add(body)
            by_session.append(tally)
        optimizer = [
            request_tokens(b).total for r in played.requests for b in r if role_of(b) == "optimizer"
        ]
        return cls(merged(by_session), by_session, optimizer, played.persona)


def merged(tallies: list[Tally]) -> Tally:
    out = Tally()
    for t in tallies:
        out.messages += t.messages
        for role in ROLES:
            out.calls[role] += t.calls[role]
            out.tokens[role] += t.tokens[role]
            out.parts[role].add(t.parts[role])
    return out


def row(label: str, tally: Tally) -> str:
    calls, toks = tally.per_message(tally.calls), tally.per_message(tally.tokens)
    return (
        f"| {label} | {calls['chat']:.2f} / {calls['tool round']:.2f} / "
        f"{calls['optimizer']:.3f} | **{sum(calls.values()):.3f}** | {toks['chat']:,.0f} / "
        f"{toks['tool round']:,.0f} / {toks['optimizer']:,.0f} | **{sum(toks.values()):,.0f}** |"
    )


def report(run: Run, window: int) -> list[str]:
    total = run.total
    first = merged(run.by_session[:window])
    last = merged(run.by_session[-window:])
    held, of, stale = coverage(run.persona)
    whole = sum(total.tokens.values())
    opt = run.optimizer_prompts
    return [
        "| messages | LLM calls / msg: chat / tool rounds / optimizer | calls / msg |"
        " prompt tokens / msg: chat / tool rounds / optimizer | prompt tokens / msg |",
        "|---|---|---|---|---|",
        row(f"all {total.messages}", total),
        row(f"sessions 1-{window}", first),
        row(f"sessions {len(run.by_session) - window + 1}-{len(run.by_session)}", last),
        "",
        f"whole conversation: {whole:,} prompt tokens in {sum(total.calls.values())} calls",
        f"a chat call on average: {total.average('chat')}",
        f"an optimizer call on average: {total.average('optimizer')}",
        f"optimizer calls: {len(opt)}, prompt tokens first {opt[0] if opt else 0:,}, "
        f"last {opt[-1] if opt else 0:,}",
        f"facts held at the end (current form): {held}/{of}; stale values still held: {stale}",
    ]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=SESSIONS)
    ap.add_argument("--turns", type=int, default=TURNS)
    ap.add_argument("--update-every", type=int, default=3)
    ap.add_argument("--tools", choices=("on", "off"), default="on")
    ap.add_argument("--tool-calls", action="store_true", help="the model records facts")
    ap.add_argument("--window", type=int, default=3, help="sessions compared first vs last")
    args = ap.parse_args()
    print(machine())
    records = ", the model records facts with the persona tool" if args.tool_calls else ""
    print(
        f"{args.sessions} sessions x {args.turns} messages, k = {args.update_every}, "
        f"tools {args.tools}{records}"
    )

    def config_for(db: Path, base_url: str) -> Config:
        return config(
            db,
            base_url=base_url,
            persona={"update_every": args.update_every},
            tools={"enabled": args.tools == "on"},
        )

    played = await play(
        config_for, sessions=args.sessions, turns=args.turns, record_facts=args.tool_calls
    )
    run = Run.of(played, args.turns)
    print("\n".join(report(run, args.window)))


if __name__ == "__main__":
    asyncio.run(main())
