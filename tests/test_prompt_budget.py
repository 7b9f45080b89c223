"""The prompt budget of issue 12, counted exactly (o200k, ``bpe-openai``) over what the fake
endpoint received: the scripted conversation of ``benchmarks/conversation_cost.py`` (30
sessions of 4 messages, tools on, k = 3) stays within 600 prompt tokens and 1.10 LLM calls
per user message, every call counted, and every fact said is learned in its latest form."""

from __future__ import annotations

from pathlib import Path

from aipersona.core import Config
from tests.conftest import make_config
from tests.fakes.conversation import SCRIPT, coverage, play, role_of
from tests.fakes.prompt_tokens import request_tokens

SESSIONS = 6


def config_for(db: Path, base_url: str, **over: object) -> Config:
    return make_config(db, base_url, persona={"update_every": 3}, **over)


async def test_prompt_tokens_and_calls_per_message_stay_within_budget() -> None:
    played = await play(config_for)
    requests = [body for session in played.requests for body in session]
    roles = [role_of(body) for body in requests]
    assert roles.count("optimizer") == 10 and "tool round" not in roles
    assert len(requests) / played.messages <= 1.10
    per_message = sum(request_tokens(body).total for body in requests) / played.messages
    assert per_message <= 600, per_message
    chat = next(body for body in requests if role_of(body) == "chat")
    assert request_tokens(chat).schemas <= 250  # the one persona tool
    held, facts, stale = coverage(played.persona)
    assert (held, stale) == (facts, 0)


async def test_a_tool_following_model_records_the_facts_before_any_optimizer_call() -> None:
    def no_optimizer(db: Path, base_url: str) -> Config:
        return make_config(db, base_url, persona={"update_every": 1000})

    played = await play(no_optimizer, sessions=SESSIONS, record_facts=True)
    requests = [body for session in played.requests for body in session]
    stated = [said for said in SCRIPT if said.session <= SESSIONS]  # no change among them
    assert [role_of(b) for b in requests].count("tool round") == len(stated)
    assert {name for said in stated for name, _, _ in said.edits} == set(played.persona)
