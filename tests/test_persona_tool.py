"""The built-in ``persona`` tool: one schema with an ``op``, through the real openai client. A
tool-following model records and replaces facts with it; ops can be switched off."""

from __future__ import annotations

from pathlib import Path

import pytest

from aipersona.core import Identity, PersonaCore
from tests.conftest import make_config
from tests.fakes.openai_server import FakeOpenAI, Tools, system_text

ALICE = Identity("cli", "alice")


async def test_a_tool_following_model_records_and_replaces_facts(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    fake_llm.push(
        "chat",
        Tools([("persona", {"op": "set", "field": "Location", "value": "Lyon"})]),
        "Noted.",
        Tools(
            [
                ("persona", {"op": "set", "field": "Location", "value": "Berlin"}),
                ("persona", {"op": "append", "field": "Facts", "value": ["partner: Sam"]}),
                ("persona", {"op": "get"}),
            ]
        ),
        "Welcome to Berlin!",
    )
    async with PersonaCore(make_config(db_path, fake_llm.base_url)) as core:
        await core.respond(ALICE, "c", "I live in Lyon.")
        reply = await core.respond(ALICE, "c", "Sam and I just moved to Berlin!")
        persona = await core.persona(ALICE)
        history = await core.history(ALICE, "Demographics.Location")
    assert reply.text == "Welcome to Berlin!"
    assert [r.error for r in reply.tool_results] == [None, None, None]
    moved, _, read = reply.tool_results
    assert moved.result["field"] == "Demographics.Location" and moved.result["changed"]
    assert read.result["Memory"] == {"Facts": ["partner: Sam"]}
    assert persona is not None and persona.values["Demographics.Location"] == "Berlin"
    assert [(h.old_value, h.new_value, h.source) for h in history] == [
        ("Lyon", "Berlin", "tool"),
        (None, "Lyon", "tool"),
    ]
    # one tool, described once: by its schema, not again in the system prompt
    request = fake_llm.chat_requests()[0]
    [tool] = request["tools"]
    params = tool["function"]["parameters"]
    assert tool["function"]["name"] == "persona" and params["required"] == ["op"]
    assert params["properties"]["op"]["enum"] == ["get", "set", "append", "remove", "delete"]
    assert {"Location", "Facts", "Career_Information"} <= set(params["properties"]["field"]["enum"])
    assert tool["function"]["description"] not in system_text(request)


@pytest.mark.parametrize("disabled", [["persona.delete"], ["forget_persona_field"]])
async def test_an_op_can_be_switched_off(
    fake_llm: FakeOpenAI, db_path: Path, disabled: list[str]
) -> None:
    fake_llm.push(
        "chat",
        Tools(
            [
                ("persona", {"op": "set", "field": "Age", "value": 40}),
                ("persona", {"op": "delete", "field": "Age"}),
            ]
        ),
        "ok",
    )
    cfg = make_config(db_path, fake_llm.base_url, tools={"disabled": disabled})
    async with PersonaCore(cfg) as core:
        reply = await core.respond(ALICE, "c", "I'm 40; forget my age")
        persona = await core.persona(ALICE)
    [tool] = fake_llm.chat_requests()[0]["tools"]
    assert "delete" not in tool["function"]["parameters"]["properties"]["op"]["enum"]
    kept, refused = reply.tool_results
    assert kept.error is None and refused.error is not None and "op must be one of" in refused.error
    assert persona is not None and persona.values == {"Demographics.Age": 40}


async def test_the_persona_tool_can_be_switched_off(fake_llm: FakeOpenAI, db_path: Path) -> None:
    cfg = make_config(db_path, fake_llm.base_url, tools={"disabled": ["persona"]})
    async with PersonaCore(cfg) as core:
        assert (await core.respond(ALICE, "c", "hello")).ok
    assert "tools" not in fake_llm.chat_requests()[0]
