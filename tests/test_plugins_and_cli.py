"""Plugins and hooks at work, the example plugins, and the command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from aipersona.core import Edit, FieldSpec, Identity, PersonaCore, Tool, hookimpl
from aipersona.core.storage.sqlite import bundled_migrations
from tests.conftest import make_config, run_cli
from tests.fakes.openai_server import FakeOpenAI, Json, Tools, system_text, updates

ALICE = Identity("cli", "alice")
ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    """A third-party plugin written as a class, recording every hook it receives."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def aipersona_persona_fields(self) -> list[dict[str, Any]]:
        return [{"name": "Hobby.Pet_Name", "type": "string", "description": "pet's name"}]

    @hookimpl
    def aipersona_tools(self) -> list[Tool]:
        def boom(ctx: Any) -> None:
            raise RuntimeError("kaput")

        async def slow(ctx: Any) -> str:
            await asyncio.sleep(5)
            return "late"

        return [
            Tool("boom", "always fails", {"type": "object", "properties": {}}, boom),
            Tool("slow", "too slow", {"type": "object", "properties": {}}, slow, timeout=0.1),
        ]

    @hookimpl
    def aipersona_message_received(self, text: str) -> None:
        self.events.append(("message", text))

    @hookimpl
    def aipersona_before_persona_update(self, updates: list[Edit], source: str) -> bool | None:
        self.events.append(("before", source))
        if any(e.field == "Demographics.Name" and e.value == "Veto" for e in updates):
            return False
        for e in updates:
            if e.field == "Hobby.Pet_Name" and isinstance(e.value, str):
                e.value = e.value.title()
        return None

    @hookimpl
    def aipersona_after_persona_update(self, changes: list[Any], source: str) -> None:
        self.events.append(("after", [(c.field, c.new_value, source) for c in changes]))

    @hookimpl
    def aipersona_before_tool_call(self, name: str, arguments: dict[str, Any]) -> Any:
        self.events.append(("before_tool", name))
        forget = name == "persona" and arguments.get("op") == "delete"
        return {"refused": True} if forget else None

    @hookimpl
    def aipersona_after_tool_call(self, name: str, error: str | None) -> None:
        self.events.append(("after_tool", (name, error)))

    @hookimpl
    def aipersona_build_prompt(self) -> str:
        return "## House rules\nAlways answer in haiku."

    @hookimpl
    def aipersona_session_ended(self, session_id: int, reason: str) -> None:
        self.events.append(("ended", reason))


async def test_plugin_fields_tools_and_hooks(fake_llm: FakeOpenAI, db_path: Path) -> None:
    rec = Recorder()
    cfg = make_config(db_path, fake_llm.base_url, persona={"update_every": 1})
    fake_llm.push(
        "chat",
        Tools([("boom", {}), ("slow", {}), ("persona", {"op": "delete", "field": "Age"})]),
        "done",
    )
    fake_llm.push(
        "json",
        Json(
            {
                "updates": [
                    {
                        "field": "Hobby.Pet_Name",
                        "op": "set",
                        "value": "rex",
                        "evidence": "my dog rex",
                    }
                ]
            }
        ),
        Json(
            {
                "updates": [
                    {"field": "Demographics.Name", "op": "set", "value": "Veto", "evidence": ""}
                ]
            }
        ),
    )
    async with PersonaCore(cfg, plugins=[rec]) as core:
        reply = await core.respond(ALICE, "c", "my dog rex")
        assert reply.ok and reply.text == "done"
        errors = [r.error for r in reply.tool_results]
        assert "kaput" in errors[0] and "timed out" in errors[1] and errors[2] is None
        assert reply.tool_results[2].result == {"refused": True}
        req = fake_llm.chat_requests()[0]
        assert "Always answer in haiku." in system_text(req)
        assert {t["function"]["name"] for t in req["tools"]} >= {"boom", "persona"}
        await core.end_session(ALICE, "c")
        await core.wait_for_updates()
        persona = await core.persona(ALICE)
        assert persona is not None and persona.values == {"Hobby.Pet_Name": "Rex"}
        # a vetoed update changes nothing
        await core.respond(ALICE, "c", "call me Veto")
        await core.end_session(ALICE, "c")
        await core.wait_for_updates()
        persona = await core.persona(ALICE)
        assert persona is not None and "Demographics.Name" not in persona.values
        assert "Pet_Name" in json.dumps(core.optimizer.messages({}, [])[0]["content"])
    kinds = [e[0] for e in rec.events]
    assert kinds.count("message") == 2 and kinds.count("ended") == 2
    assert ("after", [("Hobby.Pet_Name", "Rex", "optimizer")]) in rec.events
    assert ("after_tool", ("boom", errors[0])) in rec.events
    assert kinds.count("before") == 2 and kinds.count("after") == 1


async def test_example_plugins_timezone_and_audit_log(
    fake_llm: FakeOpenAI, db_path: Path, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    cfg = make_config(
        db_path,
        fake_llm.base_url,
        plugins={
            "modules": ["aipersona.plugins.timezone", "aipersona.plugins.audit_log"],
            "audit_log": {"path": str(audit)},
        },
    )
    fake_llm.push(
        "chat",
        Tools(
            [
                ("persona", {"op": "set", "field": "Timezone", "value": "Mars/Olympus"}),
                ("persona", {"op": "set", "field": "Timezone", "value": "Asia/Tokyo"}),
                ("current_time", {}),
            ]
        ),
        "It is late in Tokyo.",
    )
    async with PersonaCore(cfg) as core:
        reply = await core.respond(ALICE, "c", "I live in Tokyo, what time is it?")
        assert reply.text == "It is late in Tokyo."
        results = reply.tool_results
        assert results[0].error is not None  # vetoed by the plugin's before-hook: no change
        assert results[1].result["changed"] is True
        assert results[2].result["timezone"] == "Asia/Tokyo"
        assert results[2].result["iso"].endswith("+09:00")
        await core.respond(ALICE, "c", "and now?")
        assert "(Asia/Tokyo)" in system_text(fake_llm.chat_requests()[-1])
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    updates = [e for e in events if e["event"] == "persona_update"]
    assert [(e["field"], e["new_value"], e["source"]) for e in updates] == [
        ("Locale.Timezone", "Asia/Tokyo", "tool")
    ]
    assert [e["tool"] for e in events if e["event"] == "tool_call"] == [
        "persona",
        "persona",
        "current_time",
    ]


async def test_versions_rollback_link_delete(core: PersonaCore) -> None:
    await core.edit_persona(ALICE, [Edit("Demographics.Age", "set", 30)])
    await core.edit_persona(ALICE, [Edit("Demographics.Age", "set", 31)])
    await core.edit_persona(ALICE, [Edit("Personality.Values_and_Interests", "append", "chess")])
    await core.edit_persona(ALICE, [Edit("Personality.Values_and_Interests", "append", ["go"])])
    await core.edit_persona(ALICE, [Edit("Personality.Values_and_Interests", "remove", "chess")])
    hist = await core.history(ALICE, "Demographics.Age")
    assert [(h.version, h.old_value, h.new_value) for h in hist] == [
        (2, 30, 31),
        (1, None, 30),
    ]
    await core.rollback(ALICE, hist[1].id)
    persona = await core.persona(ALICE)
    assert persona is not None
    assert persona.values == {"Demographics.Age": 30, "Personality.Values_and_Interests": ["go"]}
    assert persona.versions["Demographics.Age"] == 3
    # link a telegram identity: both see one persona
    tg = Identity("telegram", "42")
    await core.link(ALICE, tg)
    tg_persona = await core.persona(tg)
    assert tg_persona is not None and tg_persona.values == persona.values
    await core.respond(tg, "tgchat", "hello from telegram")
    data = await core.export(ALICE)
    assert data is not None
    assert {i["platform"] for i in data["identities"]} == {"cli", "telegram"}
    assert data["persona"]["Demographics"]["Age"] == 30
    assert [m["platform"] for m in data["messages"]] == ["telegram", "telegram"]
    assert await core.forget_all(tg)
    assert await core.persona(ALICE) is None and await core.export(tg) is None
    assert await core.history(ALICE) == [] and await core.persona(tg) is None


async def test_cli_chat_commands_and_persona_admin(fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text(
        f'[database]\npath = "p.db"\n[llm]\nbase_url = "{fake_llm.base_url}"\n'
        'api_key_env = "TEST_ONLY_KEY"\nmax_retries = 0\n[persona]\nupdate_every = 2\n',
        encoding="utf-8",
    )
    fake_llm.push(
        "json",
        updates(("Demographics.Name", "set", "Alice", "I'm Alice")),
    )
    script = "/help\nI'm Alice\n/end\nhello\n/end\n/persona\n"
    code, out, err = await asyncio.to_thread(
        run_cli,
        "chat",
        "--config",
        str(cfg),
        "--user",
        "alice",
        stdin=script,
        env={"TEST_ONLY_KEY": "sk-test-secret-value"},
    )
    assert code == 0, err
    assert "/forget" in out and "bot> echo: I'm Alice" in out and "Session ended." in out
    assert "Name: Alice" in out
    assert "sk-test-secret-value" not in out + err
    code, out, _ = await asyncio.to_thread(
        run_cli, "persona", "show", "--config", str(cfg), "-p", "cli", "-u", "alice", "--json"
    )
    assert code == 0 and json.loads(out) == {"Demographics": {"Name": "Alice"}}
    code, out, _ = await asyncio.to_thread(
        run_cli, "persona", "history", "--config", str(cfg), "-p", "cli", "-u", "alice"
    )
    assert code == 0 and "Demographics.Name v1 set by optimizer" in out
    export = tmp_path / "out.json"
    code, out, _ = await asyncio.to_thread(
        run_cli,
        "persona",
        "export",
        "--config",
        str(cfg),
        "-p",
        "cli",
        "-u",
        "alice",
        "-o",
        str(export),
    )
    data = json.loads(export.read_text())
    assert code == 0 and len(data["messages"]) == 4 and data["history"][0]["evidence"]
    code, out, err = await asyncio.to_thread(
        run_cli, "persona", "delete", "--config", str(cfg), "-p", "cli", "-u", "alice"
    )
    assert code == 2 and "--yes" in err
    code, out, err = await asyncio.to_thread(
        run_cli, "persona", "delete", "--config", str(cfg), "-p", "cli", "-u", "alice", "--yes"
    )
    assert code == 0
    code, out, err = await asyncio.to_thread(
        run_cli, "persona", "show", "--config", str(cfg), "-p", "cli", "-u", "alice"
    )
    assert code == 2 and "no persona for cli:alice" in err
    code, out, err = await asyncio.to_thread(run_cli, "migrate", "--config", str(cfg))
    assert code == 0 and f"is at version {bundled_migrations()[-1].version}" in out


def test_cli_reports_bad_config_clearly(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[llm]\ntemperature = 9\nbogus = 1\n", encoding="utf-8")
    code, _, err = run_cli("migrate", "--config", str(cfg))
    assert code == 2
    assert "llm.temperature" in err and "llm.bogus" in err and "Traceback" not in err


def test_example_config_is_valid_and_documents_every_key() -> None:
    from aipersona.core.config import Config

    text = (ROOT / "bot.example.toml").read_text(encoding="utf-8")
    cfg = Config.load(ROOT / "bot.example.toml")
    for section in ("database", "llm", "persona", "sessions", "chat", "tools", "plugins"):
        model = getattr(cfg, section)
        for name, info in type(model).model_fields.items():
            key = info.alias or name  # as written in TOML
            assert f"{key} =" in text or f"[{section}.{key}]" in text, f"{section}.{key}"
    from aipersona.adapters.discord import DiscordSettings
    from aipersona.adapters.telegram import TelegramSettings

    for name, settings_cls in (("discord", DiscordSettings), ("telegram", TelegramSettings)):
        section = getattr(cfg, name)
        settings_cls.parse(name, section)  # valid
        assert set(section) == set(settings_cls.model_fields), name


def test_field_spec_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match=r"Category\.Field"):
        FieldSpec("nodot")


def test_version_and_plugins_commands(tmp_path: Path) -> None:
    from aipersona.core import __version__

    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"aipersona {__version__}"
    cfg = tmp_path / "bot.toml"
    cfg.write_text(
        '[database]\npath = "p.db"\n[plugins]\n'
        'modules = ["aipersona.plugins.timezone", "aipersona.plugins.audit_log"]\n',
        encoding="utf-8",
    )
    code, out, err = run_cli("plugins", "--config", str(cfg))
    assert code == 0, err
    assert "aipersona.plugins.timezone\n  fields: Locale.Timezone, Locale.Locale\n" in out
    assert "  tools: current_time\n" in out
    code, out, _ = run_cli("plugins", "--config", str(cfg), "--json")
    infos = {i["name"]: i for i in json.loads(out)}
    assert infos["aipersona.plugins.audit_log"]["hooks"] == ["aipersona_startup"]
    assert "aipersona_before_persona_update" in infos["aipersona.plugins.timezone"]["hooks"]


def test_config_tables_belong_to_installed_packages(tmp_path: Path) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text('[slack]\ntoken_env = "X"\n', encoding="utf-8")
    code, _, err = run_cli("migrate", "--config", str(cfg), "--database", str(tmp_path / "d.db"))
    assert code == 2 and "unknown config section [slack]" in err
    assert "discord" in err and "telegram" in err and "bench" in err  # the installed owners
    cfg.write_text("[telegram]\nbogus = 1\n[discord]\nshard_count = -1\n", encoding="utf-8")
    code, _, err = run_cli("migrate", "--config", str(cfg))
    assert code == 2 and "Traceback" not in err
    assert "telegram.bogus" in err or "discord.shard_count" in err


THIRD_PARTY = '''
"""A platform from another package: only the kit and the public face."""
import asyncio
from pathlib import Path

from aipersona.adapters.kit import AdapterSettings, AdapterSpec


class ToySettings(AdapterSettings):
    token_env: str = "TOY_TOKEN"
    greeting: str = "hi"


async def run(core, settings, stop):
    marker = Path(core.config.data_dir()) / "toy.state"
    marker.write_text(f"running {settings.greeting} {core.started}")
    await stop.wait()
    marker.write_text("stopped")


ADAPTER = AdapterSpec("toy", ToySettings, run)
'''


async def test_a_third_party_package_adds_a_platform(tmp_path: Path) -> None:
    """``aipersona run`` finds a platform through the ``aipersona.adapters`` entry points,
    its [toy] table is validated by the package's own settings, and core names no platform."""
    site = tmp_path / "site"
    (site / "toyplatform").mkdir(parents=True)
    (site / "toyplatform" / "__init__.py").write_text(THIRD_PARTY, encoding="utf-8")
    dist = site / "toyplatform-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplatform\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aipersona.adapters]\ntoy = toyplatform:ADAPTER\n")
    env = {"PYTHONPATH": str(site), "TOY_TOKEN": "not-a-secret"}
    cfg = tmp_path / "bot.toml"
    cfg.write_text('[database]\npath = "bot.db"\n[toy]\ngreeting = "bonjour"\nbogus = 1\n')
    code, _, err = await asyncio.to_thread(run_cli, "run", "--config", str(cfg), env=env)
    assert code == 2 and "toy.bogus" in err and "Traceback" not in err
    cfg.write_text(
        '[database]\npath = "bot.db"\n[llm]\nbase_url = "http://127.0.0.1:9/v1"\n'
        '[toy]\ngreeting = "bonjour"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aipersona.core.cli", "run", "--config", str(cfg),
        env={**os.environ, **env}, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    state = tmp_path / "toy.state"
    for _ in range(200):
        if state.exists() and state.read_text().startswith("running"):
            break
        await asyncio.sleep(0.05)
    assert state.read_text() == "running bonjour True"
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert state.read_text() == "stopped"
