"""What operators look at: the value types of the read-only queries behind the dashboard
(counters per day, the people list, one person in full, the optimizer log) and the few rules
both storage backends and the learning loop share. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import AipersonaError
from .types import HistoryEntry, Persona

# how a finished persona update ended (the optimizer log's filter; ``pending`` is the status
# of one still to run)
OUTCOMES = ("applied", "rejected", "unchanged", "failed")
LOG_FILTERS = ("pending", *OUTCOMES)

# the counters kept per UTC day (``daily_stats``), whatever happens to the rows they count
# (retention deletes message texts; the counts stay)
COUNTERS = (
    "messages",  # user messages stored
    "new_users",  # personas created (a person's first contact)
    "users_removed",  # personas deleted (forget all) or merged into another by a link
    "chat_calls",
    "chat_prompt_tokens",
    "chat_completion_tokens",
    "optimizer_calls",
    "optimizer_prompt_tokens",
    "optimizer_completion_tokens",
    "updates_applied",
    "updates_rejected",
    "updates_unchanged",
    "updates_failed",
    "update_attempts_failed",  # every failed optimizer attempt, retried or not
    "edits_applied",
    "edits_refused",
    "chat_llm_errors",  # chat replies the model endpoint failed (the user got the apology)
    "budget_refusals",  # messages answered with [limits] budget_message
)
STAT_SHARDS = 16  # a counter row per shard: workers counting at once rarely wait on one row


class BadQuery(AipersonaError):
    """An operator query that cannot be run as given (a bad page cursor, an unknown filter)."""


def check_log_filter(outcome: str | None) -> None:
    """BadQuery unless ``outcome`` is None (all) or one of ``LOG_FILTERS``."""
    if outcome is not None and outcome not in LOG_FILTERS:
        raise BadQuery(f"outcome must be one of {', '.join(LOG_FILTERS)}, not {outcome!r}")


def update_outcome(applied: int, refused: int) -> str:
    """How a finished update ended: ``applied`` (at least one change), else ``rejected``
    (edits, or the whole update, refused with a reason), else ``unchanged`` (nothing new)."""
    if applied:
        return "applied"
    return "rejected" if refused else "unchanged"


def stat_shard(persona_id: int) -> int:
    return persona_id % STAT_SHARDS


def fold_ascii(text: str) -> str:
    """Lower-case ASCII letters only: exactly what both backends' ``lower()`` does to a
    display name in the index (SQLite's, and PostgreSQL's under the "C" collation)."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """``(low, high)`` so that ``low <= s < high`` (code point order, which is the byte order
    of UTF-8) holds exactly for the strings ``s`` that start with ``prefix``; ``high`` is None
    when there is no upper bound. A search is a range on an index, never a pattern: ``%``,
    ``_`` or a backslash in the text are characters like any other."""
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            step = 0xE000 if last == 0xD7FF else last + 1  # skip the surrogates
            return prefix, "".join(chars[:-1]) + chr(step)
        chars.pop()
    return prefix, None


# -- the people list ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PersonaQuery:
    """A page of the people list. ``text`` matches the start of a display name (ASCII letters
    in any case) or of a user id (``by``); ``platform`` narrows to one platform; ``after`` is
    the cursor of the previous page (``PersonaPage.next``)."""

    text: str = ""
    by: str = "name"  # "name" or "user_id"
    platform: str = ""
    after: str = ""
    limit: int = 50

    def __post_init__(self) -> None:
        if self.by not in ("name", "user_id"):
            raise BadQuery(f"search by 'name' or 'user_id', not {self.by!r}")
        if not 1 <= self.limit <= 500:
            raise BadQuery("a page holds 1 to 500 rows")

    @property
    def mode(self) -> str:
        """Which index serves the query: ``newest`` (no text, no platform: newest people
        first), ``platform`` (no text: one platform by user id), ``name`` or ``user_id``."""
        if self.text:
            return self.by
        return "platform" if self.platform else "newest"


@dataclass(frozen=True)
class IdentityRow:
    """One identity in the people list (a persona with several identities has several)."""

    persona_id: int
    platform: str
    user_id: str
    display_name: str | None


@dataclass
class PersonaPage:
    rows: list[IdentityRow]
    next: str = ""  # the cursor of the next page ("" on the last one)


def encode_cursor(mode: str, key: list[Any]) -> str:
    raw = json.dumps([mode, *key], ensure_ascii=False, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, mode: str, types: tuple[type, ...]) -> list[Any] | None:
    """The key in ``cursor`` (None for the first page); BadQuery for a cursor that is not one
    of this query's (tampered, or from another search)."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise BadQuery("the page cursor is not valid: start the search again") from None
    if (
        not isinstance(value, list)
        or len(value) != len(types) + 1
        or value[0] != mode
        or not all(type(v) is t for v, t in zip(value[1:], types, strict=True))
    ):
        raise BadQuery("the page cursor does not belong to this search: start it again")
    return value[1:]


# -- one person --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkedIdentity:
    platform: str
    user_id: str
    display_name: str | None
    linked_at: float


@dataclass(frozen=True)
class SessionRow:
    id: int
    platform: str
    chat_id: str
    started_at: float
    last_message_at: float
    ended_at: float | None
    end_reason: str | None
    update_id: int | None
    messages: int  # message texts still stored (retention deletes them after learning)


@dataclass(frozen=True)
class UpdateRow:
    """A persona update as the person's page and the optimizer log show it."""

    id: int
    persona_id: int
    status: str  # pending, done, failed
    outcome: str | None  # OUTCOMES; None while pending
    session_ids: list[int]
    attempts: int
    notes: str  # why edits were refused, or the last error (opened if encrypted)
    created_at: float
    finished_at: float | None
    edits_applied: int = 0
    edits_refused: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float | None = None  # the optimizer call's latency

    @property
    def reasons(self) -> list[str]:
        """The notes one reason a line (stored joined by "; ")."""
        return [part for part in self.notes.split("; ") if part]


@dataclass
class PersonaDetail:
    persona: Persona
    created_at: float
    updated_at: float
    identities: list[LinkedIdentity]
    history: list[HistoryEntry]  # newest first, one page
    more_history: bool  # older entries exist (``history_before`` = the last id shown)
    pending: list[UpdateRow]
    sessions: list[SessionRow]  # newest first, the latest few
    tokens_30_days: int


# -- the optimizer log -------------------------------------------------------------------------


@dataclass
class LogEntry:
    """One persona update with the versions it wrote."""

    update: UpdateRow
    who: str  # the person's first identity, "platform:user id (name)"
    changes: list[HistoryEntry] = field(default_factory=list)


@dataclass
class UpdateLog:
    entries: list[LogEntry]
    next_before: int | None  # the ``before`` of the next page, None on the last


# -- the overview ------------------------------------------------------------------------------


@dataclass
class OverviewData:
    """Totals now, and each counter of ``COUNTERS`` per UTC day (missing days are zero).
    ``users`` is every ``new_users`` ever less every ``users_removed``: the number of
    personas, read from a few counter rows instead of counting a million."""

    users: int
    open_sessions: int
    pending_updates: int
    days: list[str]  # oldest first
    counts: dict[str, dict[str, int]]  # day -> counter -> value

    def series(self, *names: str) -> list[int]:
        """Per day, oldest first, the sum of these counters."""
        return [sum(self.counts.get(day, {}).get(n, 0) for n in names) for day in self.days]
