"""The adapter kit's pieces where a platform cannot steer them: the streaming renderer's
drafts, albums at the gate, command parsing and the registry. (Everything a user sees is
checked on every platform by the adapter contract, tests/contract.)"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from aipersona.adapters.kit import (
    COMMANDS,
    AdapterSettings,
    AdapterSpec,
    Bridge,
    EditStream,
    Gate,
    Incoming,
    Pause,
    command_line,
    installed_adapters,
    texts,
)
from aipersona.adapters.kit.gate import Action
from aipersona.core import ConfigError, Identity, PersonaCore


class Screen:
    """Messages as a platform would keep them, with a clock the test moves."""

    def __init__(self, refuse_after: int | None = None, pause_drafts: float = 0.0) -> None:
        self.messages: list[list[str]] = []  # each message's text history
        self.deleted: list[int] = []
        self.now = 0.0
        self.refuse_after = refuse_after
        self.pause_drafts = pause_drafts

    async def send(self, chunk: str, index: int, final: bool) -> int | None:
        if self.refuse_after is not None and len(self.messages) >= self.refuse_after:
            return None
        if self.pause_drafts and not final:
            raise Pause(self.pause_drafts)
        self.messages.append([chunk])
        return len(self.messages) - 1

    async def edit(self, handle: int, chunk: str, final: bool) -> None:
        self.messages[handle].append(chunk)

    async def delete(self, handle: int) -> None:
        self.deleted.append(handle)

    def shown(self) -> list[str]:
        return [m[-1] for i, m in enumerate(self.messages) if i not in self.deleted]

    def stream(self, interval: float = 1.0) -> EditStream:
        def chunker(text: str) -> list[str]:
            return [text[i : i + 10] for i in range(0, len(text), 10)]

        return EditStream(
            self.send, self.edit, self.delete, chunker, interval, clock=lambda: self.now
        )


async def test_drafts_are_throttled_then_the_final_text_is_exact() -> None:
    screen = Screen()
    stream = screen.stream()
    await stream.feed("Hello")  # the first piece is shown at once
    await stream.feed(" world")  # within the interval: not shown yet
    assert screen.shown() == ["Hello"]
    screen.now = 1.0
    await stream.feed(", and more")  # overflows into a second message
    assert screen.shown() == ["Hello worl", "d, and mor", "e"]
    await stream.finish("Hello!")  # shorter than the drafts: extra drafts are deleted
    assert screen.shown() == ["Hello!"] and screen.deleted == [2, 1]
    assert screen.messages[0] == ["Hello", "Hello worl", "Hello!"]


async def test_a_pause_holds_the_drafts_and_a_refusal_stops_everything() -> None:
    paused = Screen(pause_drafts=5.0)
    stream = paused.stream(interval=0.1)
    await stream.feed("a")
    paused.now, paused.pause_drafts = 1.0, 0.0
    await stream.feed("b")  # still within the 5 s pause
    assert paused.shown() == []
    await stream.finish("ab")
    assert paused.shown() == ["ab"]

    refused = Screen(refuse_after=1)
    stream = refused.stream()
    await stream.finish("x" * 25)
    assert refused.shown() == ["x" * 10]  # the second message was refused: nothing more


def incoming(text: str = "", *, album: str | None = None, media: bool = False) -> Incoming:
    ident = Identity("test", "alice")
    return Incoming(ident, "chat", text, addressed=True, media_only=media, album=album)


def test_an_album_gets_one_answer_and_its_caption_decides() -> None:
    gate = Gate(AdapterSettings())
    verdicts = [gate.admit(incoming(media=True, album="a")) for _ in range(3)]
    assert [v.action for v in verdicts] == [Action.NOTICE, Action.IGNORE, Action.IGNORE]
    assert verdicts[0].text == texts.ONLY_TEXT
    captioned = [
        gate.admit(incoming("look!", album="b")),
        gate.admit(incoming(media=True, album="b")),
    ]
    assert [v.action for v in captioned] == [Action.PASS, Action.IGNORE]


def test_allow_lists_match_a_chat_by_its_aliases() -> None:
    gate = Gate(AdapterSettings(allowed_chats=[7], reply_channels=[9]))
    thread = Incoming(Identity("test", "bob"), "5003", "hi", aliases=("9",))
    assert not gate.allows(thread)
    dm = Incoming(Identity("test", "bob"), "dm-1", "hi", private=True, aliases=("7",))
    assert gate.allows(dm) and gate.addressed(dm)
    assert Gate(AdapterSettings(reply_channels=[9])).addressed(thread)


async def test_commands_are_parsed_from_the_table(core: PersonaCore) -> None:
    bridge = Bridge(core, AdapterSettings())
    parsed = bridge.command("/FORGET  Demographics.Age ")
    assert parsed is not None and parsed[0].name == "forget" and parsed[1] == "Demographics.Age"
    assert bridge.command("/nosuch thing") is None and bridge.command("forget all") is None
    assert bridge.command("/") is None and bridge.command("/ forget all") is None
    parsed = bridge.command("/correct\tDemographics.Hobbies  chess,\nGo ")
    assert parsed is not None and parsed[0].name == "correct"
    assert parsed[1] == "Demographics.Hobbies  chess,\nGo"  # the rest of the line, as typed
    assert [line.split(" - ")[0].strip() for line in bridge.help_text().splitlines()[3:]] == [
        "/persona [history [FIELD] [PAGE]]",
        "/correct FIELD VALUE",
        "/undo [VERSION]",
        "/learning [off|on]",
        "/usage",
        "/forget FIELD",
        "/export",
        "/end",
        "/help",
    ]
    assert [spec.name for spec in COMMANDS] == [
        "persona", "correct", "undo", "learning", "usage", "forget", "export", "end", "help"
    ]  # fmt: skip
    forget = next(spec for spec in COMMANDS if spec.name == "forget")
    [field] = forget.arguments
    assert field.suggest is not None and field.suggest(core)[:2] == ["all", "Demographics.Name"]
    correct = next(spec for spec in COMMANDS if spec.name == "correct")
    assert [a.name for a in correct.arguments] == ["field", "value"]
    suggest = correct.arguments[0].suggest
    assert suggest is not None and suggest(core)[0] == "Demographics.Name"  # no "all"
    for spec in COMMANDS:  # Discord's limits
        assert len(spec.description) <= 100
        assert all(len(a.description) <= 100 and a.name.islower() for a in spec.arguments)
    # a platform with named options gives the kit the same line a user would type
    assert command_line(["history", "", "2"]) == "history 2"
    assert command_line(["Demographics.Age ", " 31"]) == "Demographics.Age 31"
    assert command_line([]) == ""


def test_platforms_are_found_by_name_and_validate_their_table() -> None:
    adapters = installed_adapters()
    assert {"discord", "telegram"} <= set(adapters)
    spec: AdapterSpec = adapters["telegram"]
    settings: Any = spec.validate_section("telegram", {"allowed_users": [1, "2"]})
    assert settings.allowed_users == ["1", "2"]
    with pytest.raises(ConfigError, match=r"telegram\.max_input_chars"):
        spec.validate_section("telegram", {"max_input_chars": 10})  # the core's limit only


def test_the_kit_imports_only_the_core_public_face() -> None:
    kit = Path(__file__).resolve().parents[1] / "adapters" / "kit"
    for path in sorted(kit.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in {"discord", "telegram"}, f"{path.name} imports {name}"
                if name.startswith("aipersona."):
                    assert name == "aipersona.core", f"{path.name} imports {name}"
