"""Every sentence the adapters say to a user, in one place (ready for translation).

Templates are plain ``str.format`` strings; the functions below fill them in. Nothing else in
``aipersona.adapters`` writes user-facing prose: platforms pick a sentence from here. The one
exception is the model-down apology, which is ``[chat] apology`` from the config and reaches
the user as the core returns it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

# -- help -------------------------------------------------------------------------------------

INTRO = "I remember what you tell me about yourself (a persona) to personalize my answers."
HOW_TO_TALK = "Talk to me in a private chat, mention me in a group, or reply to one of my messages."
HOW_TO_LEAVE_TERMINAL = "End with Ctrl-D (end of input)."
COMMANDS_HEADING = "Commands:"
HELP_LINE = "  {usage} - {description}"

# command descriptions: one line each, at most 100 characters (Discord's limit), shown in
# command menus, slash commands and the help text
DESCRIBE_PERSONA = "Show what I know about you, or its history of changes (sent privately)"
DESCRIBE_PERSONA_SHOW = "'history': the changes to your persona, newest first"
DESCRIBE_PERSONA_FIELD = "Only the changes of this field (e.g. Demographics.Age)"
DESCRIBE_PERSONA_PAGE = "Which page of the history (1 is the newest)"
DESCRIBE_UNDO = "Undo your newest persona change, or the change #VERSION from /persona history"
DESCRIBE_UNDO_VERSION = "The change's number (#12 in /persona history); empty: the newest"
DESCRIBE_CORRECT = "Set a field of your persona yourself; I won't overwrite it"
DESCRIBE_CORRECT_FIELD = "A field such as Demographics.Age"
DESCRIBE_CORRECT_VALUE = "Its value (a list takes items separated by commas)"
DESCRIBE_LEARNING = "Turn my learning about you off or on, or see whether it is on"
DESCRIBE_LEARNING_STATE = "'off' to stop learning about you, 'on' to start again"
DESCRIBE_USAGE = "How many tokens your chats used today and this month (sent privately)"
DESCRIBE_FORGET = (
    "Forget one field of your persona (e.g. Demographics.Age), or 'all' to forget everything"
)
DESCRIBE_FORGET_FIELD = "A field such as Demographics.Age, or 'all' to delete everything"
DESCRIBE_EXPORT = "Get all your data as a JSON file (sent privately)"
DESCRIBE_END = "End the current conversation session now"
DESCRIBE_HELP = "What I do and my commands"

# how help texts write a command's arguments: a required one as is, an optional one in
# brackets; an optional keyword (such as "history") encloses the arguments after it
OPTIONAL_ARGUMENT = "[{argument}]"
CHOICES_SEPARATOR = "|"

# -- command answers --------------------------------------------------------------------------

PERSONA_EMPTY = "I don't know anything about you yet."
PERSONA_HEADING = "What I know about you:"
PERSONA_LINE = "- {field}: {value}"
PERSONA_LEARNING_OFF = (
    "Learning is off: I don't learn anything new about you. /learning on turns it back on."
)
PERSONA_USAGE = (
    "Use /persona to see what I know about you, or /persona history [FIELD] [PAGE] for the changes."
)
HISTORY_KEYWORD = "history"  # /persona history: the word (not translated: it is typed)
HISTORY_HEADING = "Changes to what I know about you, newest first (/undo N reverts change #N):"
HISTORY_FIELD_HEADING = "Changes of {field}, newest first (/undo N reverts change #N):"
HISTORY_ENTRY = "#{id} {field}: {old} → {new}"
HISTORY_BY = "by {who}, {when}"
HISTORY_PROTECTED = "set by you; I won't overwrite it"
HISTORY_EVIDENCE = "“{evidence}”"
HISTORY_EMPTY = "There are no changes to what I know about you yet."
HISTORY_FIELD_EMPTY = "There are no changes of {field} yet."
HISTORY_NO_PAGE = "There is no page {page} of your history. /persona history shows the first."
HISTORY_MORE = "Page {page} — older changes: {command}"
HISTORY_LAST_PAGE = "Page {page} (the oldest changes)."
HISTORY_BAD_FIELD = "I can't show that: {reason}. /persona shows the field names."
HISTORY_COMMAND = "/persona history"
HISTORY_WHEN = "%Y-%m-%d %H:%M UTC"
HISTORY_NO_VALUE = "(nothing)"
# who made a version, by its source; other sources are shown by name (optimizer, tool...)
SOURCE_NAMES = {"user": "you"}
UNDO_DONE = "Undone: {field} is {value} again."
UNDO_CLEARED = "Undone: {field} is empty again."
UNDO_REDO = "(/undo again reverts this.)"
UNDO_NOTHING = "Nothing to undo."
UNDO_UNKNOWN = "There is no change #{version} in your history. /persona history shows them."
UNDO_BAD_VERSION = (
    "{version!r} is not a change number: use /undo for the newest change, or /undo 12 for "
    "change #12 of /persona history."
)
CORRECT_USAGE = (
    "Tell me the field and its value: /correct FIELD VALUE (e.g. /correct Demographics.Age 31; "
    "a list takes items separated by commas)."
)
CORRECTED = "Done: {field} is now {value}. You set it, so I won't overwrite it."
CORRECT_SAME = "{field} already is {value}."
CORRECT_BAD = "I can't set that: {reason}. /persona shows the field names."
LEARNING_IS_ON = "Learning is on: I learn about you from our chats. /learning off stops it."
LEARNING_IS_OFF = "Learning is off: I don't learn anything new about you. /learning on starts it."
LEARNING_NOW_OFF = (
    "Learning is off now: I won't learn anything new about you (what I know stays; /forget "
    "deletes it). /learning on starts it again."
)
LEARNING_NOW_ON = "Learning is on again: I'll learn about you from our chats."
LEARNING_ALREADY_OFF = "Learning was already off."
LEARNING_ALREADY_ON = "Learning was already on."
LEARNING_USAGE = "Use /learning off, /learning on, or /learning to see whether it is on."
LEARNING_WORDS_OFF = ("off", "no", "false", "0", "stop")  # what /learning takes, typed
LEARNING_WORDS_ON = ("on", "yes", "true", "1", "start")
USAGE_HEADING = "Tokens your chats used (UTC days):"
USAGE_TODAY = "- today: {used:,} tokens of {limit:,}"
USAGE_TODAY_UNLIMITED = "- today: {used:,} tokens (no daily limit)"
USAGE_MONTH = "- this month: {used:,} tokens"
USAGE_CHAT = "- this chat today (everyone in it): {used:,} tokens of {limit:,}"
FORGET_USAGE = (
    "Tell me what to forget: /forget FIELD (e.g. /forget Demographics.Age) or /forget all."
)
FORGOT_FIELD = "Forgot {field}."
FORGET_FIELD_EMPTY = "I had nothing stored for {field}."
FORGET_BAD_FIELD = "I can't forget that: {reason}. /persona shows the field names."
FORGOT_ALL = "Done: I deleted everything I stored about you (persona, history, messages)."
FORGOT_NOTHING = "I had nothing stored about you."
EXPORT_CAPTION = "All the data I keep about you (persona, history, messages)."
EXPORT_NOTHING = "I have no data about you."
SESSION_ENDED = "Session ended. I'll learn from it in the background."
NO_OPEN_SESSION = "There is no open session here."

# -- private delivery -------------------------------------------------------------------------

SENT_PRIVATELY = "I've sent it to you privately."
DM_CLOSED = (
    "{mention} I couldn't send you a DM (your DMs are closed for me). Use the slash command "
    "/{command} instead; only you will see the answer."
)
OPEN_PRIVATE_CHAT = (
    "I can't message you privately yet. Open a private chat with me (@{bot}), press Start, "
    "then send /{command} again."
)

# -- the gate and the core's refusals ---------------------------------------------------------

RATE_LIMITED = "You're sending messages quickly; please wait {seconds} s and try again."
ONLY_TEXT = "Sorry, I can only understand text messages, so please type what you want to say."
TOO_LONG = (
    "Your message is too long ({length:,} characters; the limit is {limit:,}). Please shorten it."
)
EMPTY = "Your message is empty."
SOMETHING_WENT_WRONG = "Sorry, something went wrong. Please try again."
BAD_COMMAND_INPUT = "{problem} See {help}."

# -- the terminal -----------------------------------------------------------------------------

TERMINAL_GREETING = "aipersona chat as {user!r}. /help for commands."
INVALID_UTF8 = "(your input had bytes that are not valid UTF-8; they were replaced by \ufffd)"
FILE_SAVED = "(saved as {path})"


def help_text(lines: Iterable[tuple[str, str]], how_to_talk: str = HOW_TO_TALK) -> str:
    """The help: what the bot does, how to talk to it, and one ``(usage, description)`` line
    per command."""
    listed = [HELP_LINE.format(usage=usage, description=text) for usage, text in lines]
    return "\n".join([INTRO, how_to_talk, COMMANDS_HEADING, *listed])


def persona_text(fields: list[tuple[str, str]]) -> str:
    """The persona command's answer from ``(field, shown value)`` pairs."""
    if not fields:
        return PERSONA_EMPTY
    return "\n".join([PERSONA_HEADING, *(PERSONA_LINE.format(field=f, value=v) for f, v in fields)])


def arguments_usage(arguments: Iterable[tuple[str, bool, tuple[str, ...]]]) -> str:
    """A command's arguments as help texts write them, from ``(placeholder, required,
    choices)``: ``FIELD VALUE``, ``[VERSION]``, ``[on|off]``, ``[history [FIELD] [PAGE]]``."""
    parts: list[str] = []
    closing = 0
    for placeholder, required, choices in arguments:
        shown = CHOICES_SEPARATOR.join(choices) if choices else placeholder
        if required:
            parts.append(shown)
        elif choices:  # an optional keyword: what follows belongs to it
            parts.append("[" + shown)
            closing += 1
        else:
            parts.append(OPTIONAL_ARGUMENT.format(argument=shown))
    if parts and closing:
        parts[-1] += "]" * closing
    return " ".join(parts)


def persona_learning_off(text: str) -> str:
    """The persona command's answer for a person whose learning is off."""
    return f"{text}\n\n{PERSONA_LEARNING_OFF}"


def shown_value(value: object, limit: int = 0) -> str:
    """A field's value in an answer (a list as "a, b"; cut to ``limit`` characters if set)."""
    if value is None:
        return HISTORY_NO_VALUE
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    if limit and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def history_entry(
    id: int,
    field: str,
    old: str,
    new: str,
    source: str,
    created_at: float,
    evidence: str,
    *,
    protected: bool,
) -> str:
    """One version in the history: what changed, who changed it and when, and the quote."""
    who = SOURCE_NAMES.get(source, source or "?")
    when = datetime.fromtimestamp(created_at, UTC).strftime(HISTORY_WHEN)
    by = HISTORY_BY.format(who=who, when=when)
    if protected:
        by = f"{by}; {HISTORY_PROTECTED}"
    lines = [HISTORY_ENTRY.format(id=id, field=field, old=old, new=new), f"  {by}"]
    if evidence:
        lines.append("  " + HISTORY_EVIDENCE.format(evidence=evidence))
    return "\n".join(lines)


def history_heading(field: str | None) -> str:
    return HISTORY_FIELD_HEADING.format(field=field) if field else HISTORY_HEADING


def history_empty(field: str | None) -> str:
    return HISTORY_FIELD_EMPTY.format(field=field) if field else HISTORY_EMPTY


def history_no_page(page: object) -> str:
    return HISTORY_NO_PAGE.format(page=page)


def history_footer(page: int, field: str | None, more: bool) -> str:
    """The line under a page: how to see the next (older) page, or that this is the last."""
    if more:
        command = " ".join(x for x in (HISTORY_COMMAND, field or "", str(page + 1)) if x)
        return HISTORY_MORE.format(page=page, command=command)
    return HISTORY_LAST_PAGE.format(page=page) if page > 1 else ""


def history_bad_field(reason: object) -> str:
    return HISTORY_BAD_FIELD.format(reason=reason)


def undone(field: str, value: object) -> str:
    done = UNDO_CLEARED if value is None else UNDO_DONE
    return f"{done.format(field=field, value=shown_value(value))} {UNDO_REDO}"


def undo_unknown(version: object) -> str:
    return UNDO_UNKNOWN.format(version=version)


def undo_bad_version(version: str) -> str:
    return UNDO_BAD_VERSION.format(version=version)


def corrected(field: str, value: object) -> str:
    return CORRECTED.format(field=field, value=shown_value(value))


def correct_same(field: str, value: object) -> str:
    return CORRECT_SAME.format(field=field, value=shown_value(value))


def correct_bad(reason: object) -> str:
    return CORRECT_BAD.format(reason=reason)


def learning_status(on: bool) -> str:
    return LEARNING_IS_ON if on else LEARNING_IS_OFF


def learning_switched(on: bool, changed: bool) -> str:
    if changed:
        return LEARNING_NOW_ON if on else LEARNING_NOW_OFF
    return LEARNING_ALREADY_ON if on else LEARNING_ALREADY_OFF


def usage_text(today: int, month: int, chat_today: int, user_limit: int, chat_limit: int) -> str:
    """The usage command's answer: the person's tokens today (against the daily budget) and
    this month, and the chat's today when the chat has a budget."""
    lines = [USAGE_HEADING]
    if user_limit:
        lines.append(USAGE_TODAY.format(used=today, limit=user_limit))
    else:
        lines.append(USAGE_TODAY_UNLIMITED.format(used=today))
    lines.append(USAGE_MONTH.format(used=month))
    if chat_limit:
        lines.append(USAGE_CHAT.format(used=chat_today, limit=chat_limit))
    return "\n".join(lines)


def forgot_field(field: str, changed: bool) -> str:
    return (FORGOT_FIELD if changed else FORGET_FIELD_EMPTY).format(field=field)


def forget_bad_field(reason: object) -> str:
    return FORGET_BAD_FIELD.format(reason=reason)


def forgot_all(deleted: bool) -> str:
    return FORGOT_ALL if deleted else FORGOT_NOTHING


def session_ended(ended: bool) -> str:
    return SESSION_ENDED if ended else NO_OPEN_SESSION


def rate_limited(wait: float) -> str:
    return RATE_LIMITED.format(seconds=max(1, round(wait)))


def too_long(length: int, limit: int) -> str:
    return TOO_LONG.format(length=length, limit=limit)


def dm_closed(mention: str, command: str) -> str:
    return DM_CLOSED.format(mention=mention, command=command)


def open_private_chat(bot: str, command: str) -> str:
    return OPEN_PRIVATE_CHAT.format(bot=bot, command=command)


def bad_command_input(problem: object, help_usage: str) -> str:
    return BAD_COMMAND_INPUT.format(problem=problem, help=help_usage)


def terminal_greeting(user: str) -> str:
    return TERMINAL_GREETING.format(user=user)


def file_saved(path: object) -> str:
    return FILE_SAVED.format(path=path)
