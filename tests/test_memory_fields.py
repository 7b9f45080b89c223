"""Demographics.Location and Memory.Facts: facts no other field holds are kept, a changed
fact replaces the old one (the version history keeps it), the list is bounded and free of
duplicates, and a plugin can switch either field off. Through the real openai client and a
scripted optimizer on the loopback fake."""

from __future__ import annotations

from pathlib import Path

from aipersona.core import Edit, Identity, PersonaCore, hookimpl
from tests.conftest import make_config
from tests.fakes.openai_server import FakeOpenAI, system_text, updates

ALICE = Identity("cli", "alice")
CITY, FACTS = "Demographics.Location", "Memory.Facts"


async def session(core: PersonaCore, *texts: str) -> None:
    for text in texts:
        assert (await core.respond(ALICE, "c", text)).ok
    await core.end_session(ALICE, "c")
    await core.wait_for_updates()


async def test_a_move_and_a_family_fact_reach_the_persona_and_the_prompt(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    fake_llm.push(
        "json",
        updates(
            (CITY, "set", "Lyon", "I live in Lyon"),
            (FACTS, "append", ["vegetarian"], "I'm vegetarian"),
        ),
        updates(
            (CITY, "set", "Berlin", "we moved to Berlin"),
            (FACTS, "append", ["partner: Sam"], "my partner Sam"),
            (FACTS, "remove", ["vegetarian"], "now pescatarian"),
            (FACTS, "append", ["pescatarian"], "now pescatarian"),
        ),
    )
    cfg = make_config(db_path, fake_llm.base_url, persona={"update_every": 1})
    async with PersonaCore(cfg) as core:
        await session(core, "I live in Lyon and I'm vegetarian.")
        await session(core, "We moved to Berlin! My partner Sam and I are pescatarian now.")
        await core.respond(ALICE, "c", "Any dinner idea?")
        persona = await core.persona(ALICE)
        city = await core.history(ALICE, CITY)
        facts = await core.history(ALICE, FACTS)

    # the new facts are in the persona, the contradicted ones are not
    assert persona is not None
    assert persona.values[CITY] == "Berlin"
    assert persona.values[FACTS] == ["partner: Sam", "pescatarian"]
    # ...and in the prompt of the next turn
    prompt = system_text(fake_llm.chat_requests()[-1])
    assert '"Location":"Berlin"' in prompt and '"Facts":["partner: Sam","pescatarian"]' in prompt
    assert "Lyon" not in prompt and "vegetarian" not in prompt
    # the version history keeps what was replaced
    assert [(h.old_value, h.new_value) for h in city] == [("Lyon", "Berlin"), (None, "Lyon")]
    assert ["vegetarian"] in [h.old_value for h in facts] + [h.new_value for h in facts]
    # the optimizer saw both fields and was told to replace, not to add beside
    first, second = fake_llm.json_requests()
    instructions = first["messages"][0]["content"]
    assert f"- {CITY}:" in instructions and f"- {FACTS} (list):" in instructions
    assert "A changed fact replaces the old one" in instructions
    assert '"Location":"Lyon"' in second["messages"][1]["content"]  # what it may replace


async def test_memory_facts_drop_duplicates_and_stay_bounded(core: PersonaCore) -> None:
    changes, _ = await core.edit_persona(ALICE, [Edit(FACTS, "append", ["Has a cat called Miso."])])
    assert len(changes) == 1
    changes, rejected = await core.edit_persona(
        ALICE, [Edit(FACTS, "append", ["has a cat  called miso", "HAS A CAT CALLED MISO!"])]
    )
    assert changes == [] and rejected == []  # the same fact, worded the same: nothing new
    many = [f"fact {i}" for i in range(29)]
    changes, _ = await core.edit_persona(ALICE, [Edit(FACTS, "append", many)])
    persona = await core.persona(ALICE)
    assert persona is not None and len(persona.values[FACTS]) == 30
    changes, rejected = await core.edit_persona(ALICE, [Edit(FACTS, "append", ["one more"])])
    assert changes == [] and "the limit is 30" in rejected[0].reason
    changes, _ = await core.edit_persona(ALICE, [Edit(FACTS, "remove", ["FACT 3."])])
    assert changes and "fact 3" not in changes[0].new_value and len(changes[0].new_value) == 29


class NoMemory:
    @hookimpl
    def aipersona_disabled_fields(self) -> list[str]:
        return [CITY, FACTS]


async def test_a_plugin_can_switch_location_and_memory_off(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    fake_llm.push("json", updates((CITY, "set", "Berlin", "I live in Berlin")))
    cfg = make_config(db_path, fake_llm.base_url, persona={"update_every": 1})
    async with PersonaCore(cfg, plugins=[NoMemory()]) as core:
        assert CITY not in core.schema and FACTS not in core.schema
        await session(core, "I live in Berlin")
        persona = await core.persona(ALICE)
        data = await core.export(ALICE)
    assert persona is not None and persona.is_empty()
    assert data is not None and "unknown persona field" in str(data["persona_updates"][0]["notes"])
    [chat] = fake_llm.chat_requests()
    [tool] = chat["tools"]
    assert not {"Location", "Facts"} & set(
        tool["function"]["parameters"]["properties"]["field"]["enum"]
    )
    assert CITY not in fake_llm.json_requests()[0]["messages"][0]["content"]
