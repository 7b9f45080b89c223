"""The persona commands as data: one table (``COMMANDS``) that every platform renders.

Telegram makes a CommandHandler and a menu entry of each spec, Discord a hybrid (slash and
prefix) command, the terminal a ``/name`` command; every help text lists them. A new command
is one more ``CommandSpec`` here: its name, its arguments (if any), a one-line description
and a handler that turns a :class:`CommandCall` into an :class:`Answer`.

A command's arguments reach its handler as one line (``CommandCall.arg``): what the user
typed after the command, or, from a platform with named options (Discord's slash
commands), the options' values in the table's order joined by spaces. Every argument but
the last is one word; the last takes the rest of the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from aipersona.core import (
    FieldValidationError,
    HistoryEntry,
    Identity,
    Persona,
    PersonaCore,
    PersonaNotFound,
)

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
    """One run of a command: who asked where, with what arguments (one line)."""

    core: PersonaCore
    incoming: Incoming
    arg: str
    help_text: Callable[[], str]
    turn: Callable[[], AbstractAsyncContextManager[None]]  # the speaker's turn in this chat
    message_limit: int = 0  # the platform's longest message (0: no limit)

    @property
    def identity(self) -> Identity:
        return self.incoming.identity


Handler = Callable[[CommandCall], Awaitable[Answer]]


@dataclass(frozen=True)
class Argument:
    """One argument of a command (a slash command's option)."""

    name: str  # the slash-command option's name
    placeholder: str  # how help texts show it
    description: str
    suggest: Callable[[PersonaCore], list[str]] | None = None  # values to offer (autocomplete)
    # the command needs it: help texts show an optional one in brackets (a platform still
    # lets the user leave it out; the command then answers how to use it)
    required: bool = False
    choices: tuple[str, ...] = ()  # the only values it takes (a keyword such as "history")


@dataclass(frozen=True)
class CommandSpec:
    name: str
    description: str  # one line, at most 100 characters: menus, slash commands, help
    handler: Handler = field(repr=False)
    arguments: tuple[Argument, ...] = ()  # in order; the last one takes the rest of the line
    limited: bool = True  # counted by the per-user rate limit

    @property
    def usage_arguments(self) -> str:
        """The arguments as help texts write them, with a leading space (or "")."""
        shown = texts.arguments_usage(
            (a.placeholder, a.required, a.choices) for a in self.arguments
        )
        return f" {shown}" if shown else ""


def command_line(values: Sequence[str]) -> str:
    """The one argument line of a command given as named options (Discord's slash form):
    the values in the table's order, empty ones left out."""
    return " ".join(v.strip() for v in values if v and v.strip())


def persona_fields(persona: Persona | None) -> list[tuple[str, str]]:
    """``(field, shown value)`` pairs in schema order."""
    if persona is None or persona.is_empty():
        return []
    out = []
    for category, fields in persona.nested().items():
        for name, value in fields.items():
            out.append((f"{category}.{name}", texts.shown_value(value)))
    return out


# -- /persona and its history ----------------------------------------------------------------

HISTORY_PAGE_ENTRIES = 10  # at most this many versions on one page
HISTORY_VALUE_CHARS = 120  # a longer value is cut in the history (the export has it whole)
HISTORY_EVIDENCE_CHARS = 200
HISTORY_MARGIN = 16  # room a platform may need to escape a page's text
_MAX_DIGITS = 18  # a page or change number fits a 64-bit integer
_NUMBER = re.compile(r"#?(\d{1,18})")


async def persona_command(call: CommandCall) -> Answer:
    """``/persona``: what is known; ``/persona history [FIELD] [PAGE]``: the versions."""
    words = call.arg.split()
    if not words:
        return await show_persona(call)
    if words[0].casefold() == texts.HISTORY_KEYWORD:
        words = words[1:]
    return await show_history(call, words)


async def show_persona(call: CommandCall) -> Answer:
    persona = await call.core.persona(call.identity)
    text = texts.persona_text(persona_fields(persona))
    if persona is not None and not persona.learning:
        text = texts.persona_learning_off(text)
    return Answer(text)


async def show_history(call: CommandCall, words: list[str]) -> Answer:
    """One page of the person's versions, newest first, fitting one message."""
    page = 1
    if words and words[-1].isdecimal():
        number = words.pop()
        if len(number) > _MAX_DIGITS or int(number) < 1:
            return Answer(texts.history_no_page(number))
        page = int(number)
    if len(words) > 1:
        return Answer(texts.PERSONA_USAGE)
    core, identity = call.core, call.identity
    name = words[0] if words else None
    if name is not None:
        try:
            name = core.schema.get(name).name
        except FieldValidationError as exc:
            if not await core.history(identity, name, limit=1):  # nor a field it once had
                return Answer(texts.history_bad_field(exc))
    # every page holds one version at least: page N needs N of them (asked first, so that
    # a huge page number never becomes a huge query)
    if page > 1 and not await core.history(identity, name, limit=1, offset=page - 1):
        return Answer(texts.history_no_page(page))
    # each page holds at most HISTORY_PAGE_ENTRIES: this many are enough to tell whether
    # an older page follows
    entries = await core.history(identity, name, limit=page * HISTORY_PAGE_ENTRIES + 1)
    if not entries:
        return Answer(texts.history_empty(name))
    persona = await core.persona(identity)
    blocks = [_history_block(e, persona) for e in entries]
    heading = texts.history_heading(name)
    pages = _paginate(blocks, lambda n: _page_overhead(heading, n, name), call.message_limit)
    if page > len(pages):
        return Answer(texts.history_no_page(page))
    footer = texts.history_footer(page, name, more=len(pages) > page)
    return Answer("\n\n".join(x for x in (heading, *pages[page - 1], footer) if x))


def _history_block(entry: HistoryEntry, persona: Persona | None) -> str:
    protected = (
        persona is not None
        and persona.set_by_user(entry.field)
        and persona.versions.get(entry.field) == entry.version
    )
    return texts.history_entry(
        entry.id,
        entry.field,
        texts.shown_value(entry.old_value, HISTORY_VALUE_CHARS),
        texts.shown_value(entry.new_value, HISTORY_VALUE_CHARS),
        entry.source,
        entry.created_at,
        texts.shown_value(entry.evidence, HISTORY_EVIDENCE_CHARS) if entry.evidence else "",
        protected=protected,
    )


def _page_overhead(heading: str, page: int, name: str | None) -> int:
    """Characters of page ``page`` that are not its entries (heading, footer, breaks)."""
    footer = max(len(texts.history_footer(page, name, more)) for more in (True, False))
    return len(heading) + footer + 4 + HISTORY_MARGIN


def _paginate(blocks: list[str], overhead: Callable[[int], int], limit: int) -> list[list[str]]:
    """Cut the blocks into pages of at most HISTORY_PAGE_ENTRIES blocks and, with a
    ``limit``, at most ``limit`` characters each (a block too long for a page alone is
    shortened). The pages of a list's start do not depend on what follows."""
    pages: list[list[str]] = []
    current: list[str] = []
    used = 0
    for block in blocks:
        room = limit - overhead(len(pages) + 1) if limit else 0
        size = len(block) + 2
        if current and (len(current) >= HISTORY_PAGE_ENTRIES or (limit and used + size > room)):
            pages.append(current)
            current, used = [], 0
            room = limit - overhead(len(pages) + 1) if limit else 0
        if limit and size > room:
            block = block[: max(room - 3, 1)].rstrip() + "…"
            size = len(block) + 2
        current.append(block)
        used += size
    if current:
        pages.append(current)
    return pages


# -- changing the persona -------------------------------------------------------------------


async def undo(call: CommandCall) -> Answer:
    """``/undo [VERSION]``: revert the newest version, or version #VERSION."""
    raw = call.arg.strip()
    version: int | None = None
    if raw:
        number = _NUMBER.fullmatch(raw)
        if number is None:
            return Answer(texts.undo_bad_version(raw))
        version = int(number.group(1))
    try:
        changes = await call.core.undo(call.identity, version)
    except PersonaNotFound:
        return Answer(texts.undo_unknown(version))
    if not changes:
        return Answer(texts.UNDO_NOTHING)
    return Answer(texts.undone(changes[0].field, changes[0].new_value))


async def correct(call: CommandCall) -> Answer:
    """``/correct FIELD VALUE``: the user's own value, which learning then leaves alone."""
    parts = call.arg.split(maxsplit=1)
    if len(parts) < 2:
        return Answer(texts.CORRECT_USAGE)
    name, value = parts[0], parts[1].strip()
    core = call.core
    try:
        changes = await core.correct(call.identity, name, value)
        if changes:
            return Answer(texts.corrected(changes[0].field, changes[0].new_value))
        name = core.schema.get(name).name
    except FieldValidationError as exc:
        return Answer(texts.correct_bad(exc))
    persona = await core.persona(call.identity)
    current = persona.values.get(name, value) if persona is not None else value
    return Answer(texts.correct_same(name, current))


async def learning(call: CommandCall) -> Answer:
    """``/learning off|on``, or ``/learning`` for whether it is on."""
    word = call.arg.strip().casefold()
    if not word:
        persona = await call.core.persona(call.identity)
        return Answer(texts.learning_status(persona is None or persona.learning))
    if word in texts.LEARNING_WORDS_ON:
        on = True
    elif word in texts.LEARNING_WORDS_OFF:
        on = False
    else:
        return Answer(texts.LEARNING_USAGE)
    changed = await call.core.set_learning(call.identity, on)
    return Answer(texts.learning_switched(on, changed))


async def usage(call: CommandCall) -> Answer:
    """``/usage``: the person's tokens today and this month, against the budgets."""
    used = await call.core.usage(call.identity, call.incoming.chat_id)
    return Answer(
        texts.usage_text(used.today, used.month, used.chat_today, used.user_limit, used.chat_limit)
    )


async def forget(call: CommandCall) -> Answer:
    name = call.arg.strip()
    if not name:
        return Answer(texts.FORGET_USAGE)
    if name.casefold() == "all":
        deleted = await call.core.forget_all(call.identity)
        return Answer(texts.forgot_all(deleted))
    try:
        changed = await call.core.forget_field(call.identity, name)
    except FieldValidationError as exc:
        return Answer(texts.forget_bad_field(exc))
    return Answer(texts.forgot_field(name, changed))


async def export(call: CommandCall) -> Answer:
    data = await call.core.export(call.identity)
    if data is None:
        return Answer(texts.EXPORT_NOTHING)
    payload = json.dumps(data, ensure_ascii=False, indent=2, default=str).encode()
    return Answer(texts.EXPORT_CAPTION, File(EXPORT_FILENAME, payload))


async def end(call: CommandCall) -> Answer:
    """End the session; waits for a turn of this speaker in this chat that is running."""
    async with call.turn():
        ended = await call.core.end_session(call.identity, call.incoming.chat_id)
    return Answer(texts.session_ended(ended is not None), private=False)


async def show_help(call: CommandCall) -> Answer:
    return Answer(call.help_text(), private=False)


def schema_field_names(core: PersonaCore) -> list[str]:
    """Every field of the schema (what ``correct`` and ``persona history`` take)."""
    return [spec.name for spec in core.schema.ordered()]


def field_names(core: PersonaCore) -> list[str]:
    """What ``forget`` accepts: ``all`` and every field of the schema."""
    return ["all", *schema_field_names(core)]


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "persona",
        texts.DESCRIBE_PERSONA,
        persona_command,
        (
            Argument(
                "show",
                texts.HISTORY_KEYWORD,
                texts.DESCRIBE_PERSONA_SHOW,
                choices=(texts.HISTORY_KEYWORD,),
            ),
            Argument("field", "FIELD", texts.DESCRIBE_PERSONA_FIELD, schema_field_names),
            Argument("page", "PAGE", texts.DESCRIBE_PERSONA_PAGE),
        ),
    ),
    CommandSpec(
        "correct",
        texts.DESCRIBE_CORRECT,
        correct,
        (
            Argument(
                "field", "FIELD", texts.DESCRIBE_CORRECT_FIELD, schema_field_names, required=True
            ),
            Argument("value", "VALUE", texts.DESCRIBE_CORRECT_VALUE, required=True),
        ),
    ),
    CommandSpec(
        "undo",
        texts.DESCRIBE_UNDO,
        undo,
        (Argument("version", "VERSION", texts.DESCRIBE_UNDO_VERSION),),
    ),
    CommandSpec(
        "learning",
        texts.DESCRIBE_LEARNING,
        learning,
        (Argument("state", "STATE", texts.DESCRIBE_LEARNING_STATE, choices=("off", "on")),),
    ),
    CommandSpec("usage", texts.DESCRIBE_USAGE, usage),
    CommandSpec(
        "forget",
        texts.DESCRIBE_FORGET,
        forget,
        (Argument("field", "FIELD", texts.DESCRIBE_FORGET_FIELD, field_names, required=True),),
        limited=False,  # deleting one's data is never refused
    ),
    CommandSpec("export", texts.DESCRIBE_EXPORT, export),
    CommandSpec("end", texts.DESCRIBE_END, end),
    CommandSpec("help", texts.DESCRIBE_HELP, show_help),
)
"""The persona commands, in menu order."""


def slash_usage(spec: CommandSpec) -> str:
    """``/name ARG``: how most platforms write a command."""
    return f"/{spec.name}{spec.usage_arguments}"
