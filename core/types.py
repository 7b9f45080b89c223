"""Value types shared by the core, storage, adapters, plugins and the bench. No I/O here.

(``Edit``, ``Change`` and ``Rejected`` live with the edit logic in ``edits``; ``FieldSpec``
with the schema.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .edits import Change, Rejected
from .schema import nest

MAX_TOOL_RESULT_CHARS = 8000


@dataclass
class Identity:
    """A person on one platform: ``(platform, user_id)``, never the display name."""

    platform: str
    user_id: str
    display_name: str | None = None

    def __post_init__(self) -> None:
        self.platform = str(self.platform).strip().lower()
        self.user_id = str(self.user_id).strip()
        if not self.platform or not self.user_id:
            raise ValueError("an identity needs a platform and a user id")

    @property
    def key(self) -> tuple[str, str]:
        return self.platform, self.user_id


@dataclass
class Persona:
    """The learned profile of one person: flat ``Category.Field`` -> value, with versions."""

    id: int
    values: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # who set each current value
    learning: bool = True  # False: the optimizer and the persona tools change nothing

    def set_by_user(self, name: str) -> bool:
        """The user set this field's current value (``/correct``, an undo): the optimizer
        and the persona tools leave it alone until the user changes or forgets it."""
        return self.sources.get(name) == "user"

    def nested(self) -> dict[str, dict[str, Any]]:
        return nest(self.values)

    def is_empty(self) -> bool:
        return not self.values


@dataclass
class ToolResult:
    """One tool call and its outcome (``error`` set when it failed)."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    result: Any = None
    error: str | None = None

    def message(self) -> dict[str, Any]:
        """The ``tool`` message that gives the outcome back to the model."""
        payload = {"error": self.error} if self.error else {"result": self.result}
        text = json.dumps(payload, ensure_ascii=False, default=str)
        if len(text) > MAX_TOOL_RESULT_CHARS:
            text = text[:MAX_TOOL_RESULT_CHARS] + "... [truncated]"
        return {"role": "tool", "tool_call_id": self.call_id, "content": text}


@dataclass
class Reply:
    """The outcome of one user message."""

    text: str
    ok: bool = True
    error: str | None = None  # "too_long", "empty", "llm_unavailable", "budget"
    persona_id: int | None = None
    session_id: int | None = None
    tool_results: list[ToolResult] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # the privacy notice (``[privacy] notice``), set on the person's first message only:
    # the adapter shows it once, with the reply
    notice: str | None = None


@dataclass(frozen=True)
class PendingUpdate:
    """A scheduled persona optimizer run over finished sessions."""

    id: int
    persona_id: int
    session_ids: list[int]
    attempts: int = 0
    claimed_by: str | None = None  # the worker running it now (or that died running it)


@dataclass
class Transcript:
    """One finished session's user and assistant messages, for the optimizer."""

    session_id: int
    started_at: float
    platform: str
    messages: list[dict[str, str]]


@dataclass
class TurnStart:
    """What storage returns when a user message is stored: where it went and the context the
    chatbot needs (the persona and the bounded history before the message)."""

    persona_id: int
    session_id: int
    message_id: int
    ended_sessions: list[int]
    persona: Persona
    history: list[dict[str, str]]
    first_contact: bool = False  # the person's first message: the privacy notice is due


@dataclass
class EditResult:
    """Edits applied in one transaction: the new versions, the refusals, the persona after."""

    changes: list[Change]
    rejected: list[Rejected]
    persona: Persona


@dataclass
class Usage:
    """Tokens the endpoint reported for one person."""

    today: int = 0
    month: int = 0
    chat_today: int = 0  # in the chat the person is talking in (all its people)
    user_limit: int = 0  # ``[limits] tokens_per_user_per_day`` (0: unlimited)
    chat_limit: int = 0  # ``[limits] tokens_per_chat_per_day`` (0: unlimited)


@dataclass
class HistoryEntry:
    """One version of one field: old and new value, why, from what, by whom, when."""

    id: int
    field: str
    version: int
    op: str
    old_value: Any
    new_value: Any
    source: str
    session_ids: list[int]
    evidence: str
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
