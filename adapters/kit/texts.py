"""Every sentence the adapters say to a user, in one place (ready for translation).

Templates are plain ``str.format`` strings; the functions below fill them in. Nothing else in
``aipersona.adapters`` writes user-facing prose: platforms pick a sentence from here. The one
exception is the model-down apology, which is ``[chat] apology`` from the config and reaches
the user as the core returns it.
"""

from __future__ import annotations

from collections.abc import Iterable

# -- help -------------------------------------------------------------------------------------

INTRO = "I remember what you tell me about yourself (a persona) to personalize my answers."
HOW_TO_TALK = "Talk to me in a private chat, mention me in a group, or reply to one of my messages."
HOW_TO_LEAVE_TERMINAL = "End with Ctrl-D (end of input)."
COMMANDS_HEADING = "Commands:"
HELP_LINE = "  {usage} - {description}"

# command descriptions: one line each, at most 100 characters (Discord's limit), shown in
# command menus, slash commands and the help text
DESCRIBE_PERSONA = "Show what I know about you (sent privately)"
DESCRIBE_FORGET = (
    "Forget one field of your persona (e.g. Demographics.Age), or 'all' to forget everything"
)
DESCRIBE_FORGET_FIELD = "A field such as Demographics.Age, or 'all' to delete everything"
DESCRIBE_EXPORT = "Get all your data as a JSON file (sent privately)"
DESCRIBE_END = "End the current conversation session now"
DESCRIBE_HELP = "What I do and my commands"

# -- command answers --------------------------------------------------------------------------

PERSONA_EMPTY = "I don't know anything about you yet."
PERSONA_HEADING = "What I know about you:"
PERSONA_LINE = "- {field}: {value}"
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
