"""The core's Prometheus series and daily counters, fed by real turns against the fake model
endpoint and by the adapter kit (the toy platform): messages and latency, model calls, errors
and tokens by role, persona updates by outcome, refusals, and one registry per core."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from aipersona.adapters.kit import AdapterSettings
from aipersona.core import Identity, PersonaCore
from tests.conftest import make_config
from tests.contract.toy import ToyAdapter, ToyPlatform
from tests.fakes.openai_server import Error, FakeOpenAI, updates

ALICE = Identity("cli", "alice", "Alice")


def samples(core: PersonaCore) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the core's exposition, parsed back by prometheus_client."""
    out = {}
    for family in text_string_to_metric_families(core.metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(core: PersonaCore, name: str, **labels: str) -> float:
    return samples(core).get((name, tuple(sorted(labels.items()))), 0.0)


async def today(core: PersonaCore) -> dict[str, int]:
    data = await core.operator.overview(1)
    return data.counts[data.days[-1]]


async def test_turns_model_calls_and_updates_are_counted(
    fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path / "m.db", fake_llm.base_url, persona={"max_update_attempts": 2})
    async with PersonaCore(cfg) as core:
        fake_llm.push("chat", Error(500, {"error": "down"}))
        reply = await core.respond(ALICE, "c", "hello")
        assert reply.error == "llm_unavailable"
        assert value(core, "aipersona_messages_total", outcome="llm_unavailable") == 1
        assert value(core, "aipersona_llm_errors_total", role="chat", kind="http") == 1
        assert (await today(core))["chat_llm_errors"] == 1
        empty = await core.respond(ALICE, "c", "   ")
        assert empty.error == "empty"
        assert value(core, "aipersona_messages_total", outcome="empty") == 1
        # an update that fails once (retry), then one that applies
        fake_llm.push("json", Error(500, {"error": "down"}))
        fake_llm.push("json", updates(("Demographics.Age", "set", 30, "I am 30")))
        for i in range(3):
            await core.respond(ALICE, "c", f"I am 30, session {i}")
            await core.end_session(ALICE, "c")
        await core.wait_for_updates()
        assert value(core, "aipersona_persona_updates_total", outcome="retry") == 1
        await core.run_pending_updates()
        assert value(core, "aipersona_persona_updates_total", outcome="applied") == 1
        assert value(core, "aipersona_llm_calls_total", role="optimizer") == 2
        assert value(core, "aipersona_llm_errors_total", role="optimizer", kind="http") == 1
        assert value(core, "aipersona_llm_tokens_total", role="optimizer", kind="prompt") > 0
        assert value(core, "aipersona_llm_calls_total", role="chat") == 4
        assert value(core, "aipersona_messages_total", outcome="ok") == 3
        assert value(core, "aipersona_message_seconds_count") == 5  # every handled message
        counts = await today(core)
        assert counts["update_attempts_failed"] == 1 and counts["updates_applied"] == 1
        assert counts["messages"] == 4  # the empty one was never stored


async def test_budget_and_rate_limit_refusals(fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "m.db", fake_llm.base_url, limits={"tokens_per_user_per_day": 1})
    async with PersonaCore(cfg) as core:
        assert (await core.respond(ALICE, "c", "spend it")).ok
        assert (await core.respond(ALICE, "c", "and more")).error == "budget"
        assert value(core, "aipersona_refusals_total", reason="budget") == 1
        assert value(core, "aipersona_messages_total", outcome="budget") == 1
        assert (await today(core))["budget_refusals"] == 1
        toy = ToyAdapter(core, AdapterSettings(rate_limit_per_minute=1), ToyPlatform())
        await toy.receive("bob", "bob", "one")
        await toy.receive("bob", "bob", "two")  # over the limit: told once
        await toy.receive("bob", "bob", "three")  # over the limit: not told again
        assert value(core, "aipersona_refusals_total", reason="rate_limit") == 2


async def test_each_core_counts_its_own(fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    first = PersonaCore(make_config(tmp_path / "a.db", fake_llm.base_url))
    second = PersonaCore(make_config(tmp_path / "b.db", fake_llm.base_url))
    async with first, second:
        await first.respond(ALICE, "c", "hi")
        assert value(first, "aipersona_messages_total", outcome="ok") == 1
        assert value(second, "aipersona_messages_total", outcome="ok") == 0
        start = await second.storage.resolve_persona(ALICE)
        await second.storage.begin_turn(start, ALICE, "c", "open", time.time())
        text = (await second.operator.metrics()).decode()
        assert "aipersona_active_sessions 1.0" in text
        assert "aipersona_active_sessions 1.0" in (await first.operator.metrics()).decode()
