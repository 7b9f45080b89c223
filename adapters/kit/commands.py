"""The persona commands as data: one table (``COMMANDS``) that every platform renders.

Telegram makes a CommandHandler and a menu entry of each spec, Discord a hybrid (slash and
prefix) command, the terminal a ``/name`` command; every help text lists them. A new command
is one more ``CommandSpec`` here: its name, its argument (if any), a one-line description
and a handler that turns a :class:`CommandCall` into an :class:`Answer`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from aipersona.core import FieldValidationError, Identity, Persona, PersonaCore

from . import texts
from .incoming import Incoming

EXPORT_FILENAME = "aipersona-export.json"


@dataclass(frozen=True)
class File:
    """A file to send with an answer."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Answer:
    """What a command answers, whatever the platform.

    ``private`` answers show persona data: a platform never posts them into a chat others
    see (it sends them to the user's private chat, or answers ephemerally).
    """

    text: str
    file: File | None = None
    private: bool = True


@dataclass(frozen=True)
class CommandCall:
    """One run of a command: who asked where, with what argument."""

    core: PersonaCore
    incoming: Incoming
    arg: str
    help_text: Callable[[], str]
    turn: Callable[[], AbstractAsyncContextManager[None]]  # the speaker's turn in this chat

    @property
    def identity(self) -> Identity:
        return self.incoming.identity


Handler = Callable[[CommandCall], Awaitable[Answer]]


@dataclass(frozen=True)
class Argument:
    """A command's one argument (the rest of the command line)."""

    name: str  # the slash-command option's name
    placeholder: str  # how help texts show it
    description: str
    suggest: Callable[[PersonaCore], list[str]] | None = None  # values to offer (autocomplete)


@dataclass(frozen=True)
class CommandSpec:
    name: str
    description: str  # one line, at most 100 characters: menus, slash commands, help
    handler: Handler = field(repr=False)
    argument: Argument | None = None
    limited: bool = True  # counted by the per-user rate limit


def persona_fields(persona: Persona | None) -> list[tuple[str, str]]:
    """``(field, shown value)`` pairs in schema order."""
    if persona is None or persona.is_empty():
        return []
    out = []
    for category, fields in persona.nested().items():
        for name, value in fields.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            out.append((f"{category}.{name}", shown))
    return out


async def show_persona(call: CommandCall) -> Answer:
    persona = await call.core.persona(call.identity)
    return Answer(texts.persona_text(persona_fields(persona)))


async def forget(call: CommandCall) -> Answer:
    name = call.arg.strip()
    if not name:
        return Answer(texts.FORGET_USAGE, private=False)
    if name.casefold() == "all":
        deleted = await call.core.forget_all(call.identity)
        return Answer(texts.forgot_all(deleted), private=False)
    try:
        changed = await call.core.forget_field(call.identity, name)
    except FieldValidationError as exc:
        return Answer(texts.forget_bad_field(exc), private=False)
    return Answer(texts.forgot_field(name, changed), private=False)


async def export(call: CommandCall) -> Answer:
    data = await call.core.export(call.identity)
    if data is None:
        return Answer(texts.EXPORT_NOTHING, private=False)
    payload = json.dumps(data, ensure_ascii=False, indent=2, default=str).encode()
    return Answer(texts.EXPORT_CAPTION, File(EXPORT_FILENAME, payload))


async def end(call: CommandCall) -> Answer:
    """End the session; waits for a turn of this speaker in this chat that is running."""
    async with call.turn():
        ended = await call.core.end_session(call.identity, call.incoming.chat_id)
    return Answer(texts.session_ended(ended is not None), private=False)


async def show_help(call: CommandCall) -> Answer:
    return Answer(call.help_text(), private=False)


def field_names(core: PersonaCore) -> list[str]:
    """What ``forget`` accepts: ``all`` and every field of the schema."""
    return ["all", *(spec.name for spec in core.schema.ordered())]


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("persona", texts.DESCRIBE_PERSONA, show_persona),
    CommandSpec(
        "forget",
        texts.DESCRIBE_FORGET,
        forget,
        Argument("field", "FIELD", texts.DESCRIBE_FORGET_FIELD, field_names),
        limited=False,  # deleting one's data is never refused
    ),
    CommandSpec("export", texts.DESCRIBE_EXPORT, export),
    CommandSpec("end", texts.DESCRIBE_END, end),
    CommandSpec("help", texts.DESCRIBE_HELP, show_help),
)
"""The persona commands, in menu order."""


def slash_usage(spec: CommandSpec) -> str:
    """``/name ARG``: how most platforms write a command."""
    arg = f" {spec.argument.placeholder}" if spec.argument else ""
    return f"/{spec.name}{arg}"
