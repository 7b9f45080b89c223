"""The adapter kit: what every chat platform shares, written once and platform-neutral.

A platform adapter is a translator between its library and this kit: it turns a platform
event into an :class:`Incoming`, hands it to its :class:`Bridge` (``on_message`` or
``on_command``) with an outlet (:class:`ReplyOutlet`, :class:`AnswerOutlet`) that posts,
edits and deletes messages and delivers command answers, renders the command table
(``COMMANDS``, each command with its arguments) as the platform's commands, and registers
an :class:`AdapterSpec` under the entry-point group ``aipersona.adapters``. Everything
else (allow-lists, rate limit and its notices, the "only text" notice, the commands and
their answers, private delivery, the privacy notice, every sentence, splitting, paging,
streaming by edits) is here. The kit imports only ``aipersona.core``.
"""

from . import texts
from .bridge import Bridge, Usage
from .commands import (
    COMMANDS,
    EXPORT_FILENAME,
    Answer,
    Argument,
    CommandCall,
    CommandSpec,
    File,
    command_line,
    persona_fields,
    slash_usage,
)
from .gate import Action, Gate, RateLimiter, Verdict
from .incoming import Incoming
from .outlets import AnswerOutlet, ReplyOutlet
from .registry import AdapterSpec, Runner, installed_adapters
from .settings import AdapterSettings, ids_as_strings
from .splitting import split_message
from .streaming import EditStream, Pause

__all__ = [
    "COMMANDS",
    "EXPORT_FILENAME",
    "Action",
    "AdapterSettings",
    "AdapterSpec",
    "Answer",
    "AnswerOutlet",
    "Argument",
    "Bridge",
    "CommandCall",
    "CommandSpec",
    "EditStream",
    "File",
    "Gate",
    "Incoming",
    "Pause",
    "RateLimiter",
    "ReplyOutlet",
    "Runner",
    "Usage",
    "Verdict",
    "command_line",
    "ids_as_strings",
    "installed_adapters",
    "persona_fields",
    "slash_usage",
    "split_message",
    "texts",
]
