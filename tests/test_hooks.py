"""The hook dispatcher: pluggy's order, wrappers refused, failures isolated per plugin with
the plugin's name, async implementations awaited, tool hooks failing closed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from aipersona.core import Edit, Identity, PersonaCore, PluginError, PluginHost, Tool, hookimpl
from tests.conftest import make_config
from tests.fakes.openai_server import FakeOpenAI, Tools, updates

ALICE = Identity("cli", "alice")


class Named:
    """A plugin that appends its name to a shared list in before_persona_update."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls


def ordered_plugin(name: str, calls: list[str], **marks: bool) -> object:
    class Plugin(Named):
        @hookimpl(**marks)
        def aipersona_before_persona_update(self, updates: list[Edit]) -> None:
            self.calls.append(self.name)
            for edit in updates:  # each plugin sees (and may change) what the earlier left
                if isinstance(edit.value, str):
                    edit.value = f"{edit.value}>{self.name}"

    return Plugin(name, calls)


async def test_hooks_run_in_pluggy_order_and_edits_chain(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    calls: list[str] = []
    plugins = [
        ordered_plugin("last", calls, trylast=True),
        ordered_plugin("plain1", calls),
        ordered_plugin("first", calls, tryfirst=True),
        ordered_plugin("plain2", calls),
    ]
    async with PersonaCore(make_config(db_path, fake_llm.base_url), plugins=plugins) as core:
        await core.edit_persona(ALICE, [Edit("Pattern.Usage_Pattern", "set", "x")])
        persona = await core.persona(ALICE)
    # tryfirst, then plain ones newest-registered first (pluggy's LIFO), then trylast
    assert calls == ["first", "plain2", "plain1", "last"]
    assert persona is not None
    assert persona.values["Pattern.Usage_Pattern"] == "x>first>plain2>plain1>last"


@pytest.mark.parametrize("marks", [{"wrapper": True}, {"hookwrapper": True}])
async def test_wrappers_are_refused_at_registration(
    marks: dict[str, bool], fake_llm: FakeOpenAI, db_path: Path
) -> None:
    class Wrapping:
        @hookimpl(**marks)
        def aipersona_session_ended(self) -> Any:
            yield

    core = PersonaCore(make_config(db_path, fake_llm.base_url), plugins=[Wrapping()])
    with pytest.raises(PluginError, match="aipersona_session_ended is a hook wrapper"):
        await core.start()


async def test_a_failing_plugin_is_isolated_and_named(
    fake_llm: FakeOpenAI, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    class Failing:
        @hookimpl(tryfirst=True)
        def aipersona_message_received(self, text: str) -> None:
            raise RuntimeError("plugin bug")

        @hookimpl
        def aipersona_build_prompt(self) -> str:
            raise ValueError("prompt bug")

        @hookimpl
        def aipersona_after_persona_update(self) -> None:
            raise KeyError("after bug")

    class Healthy:
        @hookimpl
        def aipersona_message_received(self, text: str) -> None:
            seen.append(text)

        @hookimpl
        def aipersona_build_prompt(self) -> str:
            return "## Healthy section"

    cfg = make_config(db_path, fake_llm.base_url)
    with caplog.at_level(logging.ERROR, logger="aipersona.core.hooks"):
        async with PersonaCore(cfg, plugins=[Failing(), Healthy()]) as core:
            reply = await core.respond(ALICE, "c", "hello")
            changes, _ = await core.edit_persona(ALICE, [Edit("Demographics.Age", "set", 30)])
    assert reply.ok and seen == ["hello"] and changes
    assert "## Healthy section" in fake_llm.chat_requests()[0]["messages"][0]["content"]
    failures = [r.getMessage() for r in caplog.records]
    for hook in ("message_received", "build_prompt", "after_persona_update"):
        assert any(f"failed in aipersona_{hook}" in m and "Failing" in m for m in failures)


async def test_async_implementations_are_awaited(fake_llm: FakeOpenAI, db_path: Path) -> None:
    events: list[str] = []

    class AsyncPlugin:
        @hookimpl
        async def aipersona_startup(self, host: PluginHost, settings: dict[str, Any]) -> None:
            await asyncio.sleep(0)
            events.append(f"startup {sorted(settings)} {host.data_dir == db_path.parent}")

        @hookimpl
        async def aipersona_before_persona_update(self, updates: list[Edit]) -> bool | None:
            await asyncio.sleep(0)  # e.g. ask a moderation service
            return False if any(e.value == "forbidden" for e in updates) else None

        @hookimpl
        async def aipersona_build_prompt(self) -> str:
            await asyncio.sleep(0)
            return "## From an async plugin"

        @hookimpl
        async def aipersona_session_ended(self, reason: str) -> None:
            events.append(f"ended {reason}")

    cfg = make_config(db_path, fake_llm.base_url, plugins={"AsyncPlugin": {"k": 1}})
    async with PersonaCore(cfg, plugins=[AsyncPlugin()]) as core:
        _, rejected = await core.edit_persona(
            ALICE, [Edit("Pattern.Usage_Pattern", "set", "forbidden")]
        )
        assert rejected and "vetoed by" in rejected[0].reason
        await core.respond(ALICE, "c", "hi")
        await core.end_session(ALICE, "c")
    assert "## From an async plugin" in fake_llm.chat_requests()[0]["messages"][0]["content"]
    assert events[0].startswith("startup") and "ended explicit" in events


async def test_tool_hooks_use_the_dispatcher_and_fail_closed(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    calls: list[str] = []

    class Policy:
        @hookimpl(tryfirst=True)
        async def aipersona_before_tool_call(self, name: str) -> Any:
            calls.append(f"policy {name}")
            if name == "persona":
                raise RuntimeError("policy service down")
            return None

        @hookimpl
        def aipersona_after_tool_call(self, name: str, error: str | None) -> None:
            calls.append(f"after {name} {'error' if error else 'ok'}")

    class Lenient:
        @hookimpl
        def aipersona_before_tool_call(self, name: str) -> Any:
            calls.append(f"lenient {name}")
            return None

        @hookimpl
        def aipersona_after_tool_call(self) -> None:
            raise RuntimeError("after hook bug")  # isolated: the turn goes on

    async def echo(ctx: Any, value: str) -> str:
        return value

    class Tools_:
        @hookimpl
        def aipersona_tools(self) -> list[Tool]:
            schema = {"type": "object", "properties": {"value": {"type": "string"}}}
            return [Tool("echo", "echo a value", schema, echo)]

    fake_llm.push("chat", Tools([("persona", {"op": "get"}), ("echo", {"value": "hi"})]), "done")
    plugins = [Lenient(), Policy(), Tools_()]
    async with PersonaCore(make_config(db_path, fake_llm.base_url), plugins=plugins) as core:
        reply = await core.respond(ALICE, "c", "hello")
    refused, echoed = reply.tool_results
    assert refused.error is not None and "refused" in refused.error and "Policy" in refused.error
    assert echoed.error is None and echoed.result == "hi"
    assert calls == [
        "policy persona",
        "after persona error",
        "policy echo",
        "lenient echo",
        "after echo ok",
    ]


async def test_plugins_registered_at_startup_get_event_hooks(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    got: list[Any] = []

    class PerCore:
        @hookimpl
        def aipersona_after_persona_update(self, changes: list[Any]) -> None:
            got.extend(c.new_value for c in changes)

    class Registers:
        @hookimpl
        def aipersona_startup(self, host: PluginHost) -> None:
            host.register(PerCore())

    fake_llm.push("json", updates(("Demographics.Age", "set", 30, "I'm 30")))
    cfg = make_config(db_path, fake_llm.base_url, persona={"update_every": 1})
    async with PersonaCore(cfg, plugins=[Registers()]) as core:
        await core.respond(ALICE, "c", "I'm 30")
        await core.end_session(ALICE, "c")
        await core.wait_for_updates()
        names = [p.name for p in core.plugins()]
    assert got == [30]
    assert [n.rsplit(".", 1)[-1] for n in names if "test_hooks" in n] == ["PerCore", "Registers"]
