"""The storage contract: everything the core keeps, in domain terms.

The core talks to storage only through ``Storage``; no module outside ``core/storage/``
imports a database driver or writes SQL. A backend implements every method; the contract
tests in ``tests/storage/`` run the same scenarios against each backend.

Rules every backend keeps:

- Each method is atomic: it commits completely or not at all, even if the process is
  killed half-way.
- A person's persona, sessions, messages and updates are reachable only through their
  persona id; nothing one method returns holds another persona's data.
- Ending a session and scheduling the persona update it completes happen in one transaction
  (an update is never lost between the two).
- Versions of a field count up and never go back, even across deletes; a rollback is itself
  a new version.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..edits import Edit
from ..insights import OverviewData, PersonaDetail, PersonaPage, PersonaQuery, UpdateLog
from ..schema import PersonaSchema
from ..types import (
    EditResult,
    HistoryEntry,
    Identity,
    PendingUpdate,
    Persona,
    Transcript,
    TurnStart,
    Usage,
)
from .crypto import Keyring


@dataclass(frozen=True)
class SessionRules:
    """How sessions behave; the storage applies them inside its transactions."""

    idle_seconds: float = 30 * 60
    update_every: int = 3  # k: one persona update per k finished sessions
    history_messages: int = 20
    history_token_budget: int = 3000


@dataclass(frozen=True)
class Tokens:
    """Tokens one model call used, as the endpoint reported them."""

    prompt: int = 0
    completion: int = 0


@dataclass(frozen=True)
class UpdateOutcome:
    """Marks a claimed persona update done in the same transaction as its edits."""

    update_id: int
    notes: tuple[str, ...] = ()  # why edits were refused (stored with the update)
    tokens: Tokens | None = None  # the optimizer call's usage, counted for the person
    seconds: float | None = None  # the optimizer call's latency (the optimizer log shows it)


class Storage(Protocol):
    """A persona store. All methods are coroutines and safe to call concurrently."""

    rules: SessionRules
    location: str  # what to show the user: a file path or a URL without password
    worker_id: str  # this process's name in update claims (``shared.new_owner``)

    # -- life cycle -------------------------------------------------------------------------
    async def close(self) -> None:
        """Release connections and threads."""

    async def migrate(self) -> list[str]:
        """Apply pending migrations, each atomically; return the names applied."""

    async def schema_version(self) -> int:
        """The newest applied migration number (0 for an empty store)."""

    # -- identities -------------------------------------------------------------------------
    async def find_persona(self, identity: Identity) -> int | None:
        """The persona id of an identity, or None."""

    async def resolve_persona(self, identity: Identity) -> int:
        """The persona id of an identity, creating an empty persona the first time."""

    async def identities(self, persona_id: int) -> list[Identity]:
        """Every identity that shares this persona, oldest link first."""

    async def link(self, primary: Identity, other: Identity) -> int:
        """Make ``other`` share ``primary``'s persona (merging ``other``'s own persona:
        fields the primary lacks, history, sessions, messages, updates); return its id."""

    # -- personas ---------------------------------------------------------------------------
    async def load_persona(self, persona_id: int) -> Persona:
        """The current values and versions (PersonaNotFound if it does not exist)."""

    async def apply_edits(
        self,
        persona_id: int,
        edits: list[Edit],
        schema: PersonaSchema,
        *,
        source: str,
        session_ids: list[int] | None = None,
        outcome: UpdateOutcome | None = None,
    ) -> EditResult:
        """Validate ``edits`` against ``schema`` and the values read in the transaction,
        write the changes as new versions, and (with ``outcome``) mark that update done with
        its notes plus the refusal reasons, all in one transaction."""

    async def rollback(self, persona_id: int, version_id: int) -> EditResult:
        """Return one field to its value right after history entry ``version_id`` (a new
        version, source ``rollback``). PersonaNotFound if the entry is not this persona's."""

    async def undo(self, persona_id: int, version_id: int | None = None) -> EditResult:
        """Revert a version (the newest if None): its field goes back to its value before,
        as a new version by the user. No change if there is nothing to undo (or the field
        already has that value); PersonaNotFound if ``version_id`` is not this persona's."""

    async def set_learning(self, persona_id: int, on: bool) -> bool:
        """Switch the person's learning (``Persona.learning``); True if it changed."""

    async def history(
        self,
        persona_id: int,
        *,
        field: str | None = None,
        limit: int = 200,
        offset: int = 0,
        version_id: int | None = None,
    ) -> list[HistoryEntry]:
        """Versions, newest first (``offset``: skip that many, for pages; ``version_id``: only
        that entry, if it is this persona's)."""

    async def export(self, persona_id: int) -> dict[str, Any]:
        """Everything stored about the person, as JSON-ready data."""

    async def delete_persona(self, persona_id: int) -> bool:
        """Delete the persona and everything about it, so that the deleted text is not left
        readable in the store's files; False if it did not exist."""

    # -- turns and sessions -----------------------------------------------------------------
    def person_lock(self, persona_id: int) -> AbstractAsyncContextManager[None]:
        """Held while one person's turn runs: their turns go one at a time across every
        process that shares the store (the core serializes them within a process). A
        process that dies releases its locks."""

    async def begin_turn(
        self, persona_id: int, identity: Identity, chat_id: str, text: str, now: float
    ) -> TurnStart | None:
        """Store a user message in the open session of (persona, platform, chat), ending an
        idle one and starting a new one as the rules say; refresh the identity's display
        name; return the persona and the bounded history. None if the identity no longer
        maps to ``persona_id`` (linked or deleted meanwhile): resolve it again."""

    async def add_reply(
        self,
        persona_id: int,
        platform: str,
        chat_id: str,
        text: str,
        now: float,
        tokens: Tokens | None = None,
    ) -> int:
        """Store the assistant's reply in the open session (and the tokens it cost, counted
        for the person and the chat); return the message id."""

    async def end_open_session(
        self, persona_id: int, platform: str, chat_id: str, reason: str, now: float
    ) -> int | None:
        """End the person's open session in that chat (scheduling an update when k sessions
        wait); return its id, or None if there was none."""

    async def sweep_idle(self, now: float, *, batch: int = 100) -> list[tuple[int, int]]:
        """End up to ``batch`` sessions idle past the rules' timeout, scheduling updates;
        return (persona id, session id) pairs. Safe to run in several workers at once: a
        session is ended once."""

    async def transcripts(self, persona_id: int, session_ids: list[int]) -> list[Transcript]:
        """The user and assistant messages of these sessions of the person, in order."""

    # -- usage and retention ------------------------------------------------------------------
    async def usage(self, persona_id: int, platform: str, chat_id: str, now: float) -> Usage:
        """Tokens of the person today and this month (UTC), and of the chat today."""

    async def usage_report(self, since: float) -> list[dict[str, Any]]:
        """Usage rows per person, chat, UTC day and role from ``since`` on (for operators)."""

    async def purge_messages(self, learned_before: float, *, batch: int = 500) -> int:
        """Delete the message texts of sessions whose persona update finished at or before
        ``learned_before`` (sessions not learned from yet are kept), in transactions of
        ``batch`` updates, leaving them nowhere in the store's files where the backend can
        promise it; return how many messages."""

    # -- encryption at rest -------------------------------------------------------------------
    async def rewrap_keys(self, new: Keyring) -> int:
        """Wrap every person's data key under the ``new`` master key instead of the one the
        store was opened with, in one transaction; return how many keys. StorageError when
        the store was opened without a key."""

    async def seal_plaintext(self) -> int:
        """Encrypt every text written while encryption was off, one person per transaction;
        return how many texts. StorageError when the store was opened without a key."""

    # -- persona updates --------------------------------------------------------------------
    async def pending_updates(self, persona_id: int | None = None) -> list[PendingUpdate]:
        """Updates still to run, oldest first."""

    async def claim_update(
        self, update_id: int, owner: str, now: float, lease_seconds: float
    ) -> PendingUpdate | None:
        """Take a pending update for ``owner`` until ``now + lease_seconds``; None if it is
        done, failed, gone, or held by another live owner whose lease has not run out."""

    async def release_updates(self, owner: str) -> None:
        """Give back every claim ``owner`` still holds (on shutdown)."""

    async def finish_update(
        self, update_id: int, notes: tuple[str, ...] = (), *, seconds: float | None = None
    ) -> None:
        """Mark an update done without edits (e.g. vetoed by a plugin); outcome
        ``rejected`` with notes, else ``unchanged``."""

    async def fail_update(self, update_id: int, error: str, max_attempts: int) -> bool:
        """Count a failed attempt and store the error; True if the update is now ``failed``
        for good (``max_attempts`` reached), False if it stays pending."""

    # -- operators' views (the dashboard); read-only except ``record_counts`` -------------
    async def record_counts(self, persona_id: int, counts: dict[str, int], now: float) -> None:
        """Add to today's counters (``insights.COUNTERS``) for an event no other write
        records (a chat reply the model failed, a budget refusal)."""

    async def overview(self, since: float, now: float) -> OverviewData:
        """Totals (people, open sessions, pending updates) and the counters of every UTC
        day from ``since`` to ``now``. Reads a few hundred rows whatever the store's size."""

    async def search_personas(self, query: PersonaQuery) -> PersonaPage:
        """One page of people (``PersonaQuery``), each page one range of an index (keyset
        pagination): no full scan, however deep the page. BadQuery for a foreign cursor."""

    async def platforms(self) -> list[str]:
        """The platforms people are known on, in order (a skip scan of the identity key)."""

    async def persona_detail(
        self, persona_id: int, *, history_limit: int = 50, history_before: int | None = None
    ) -> PersonaDetail:
        """One person for operators: values, identities, one page of history (entries with
        ids below ``history_before``), pending updates, latest sessions, tokens of the last
        30 days. PersonaNotFound if the persona does not exist."""

    async def optimizer_log(
        self,
        *,
        outcome: str | None = None,
        persona_id: int | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> UpdateLog:
        """Persona updates newest first (ids below ``before``), each with the versions it
        wrote and its notes opened; ``outcome``: one of ``insights.LOG_FILTERS``."""

    async def open_sessions(self) -> int:
        """How many sessions are open now (in every process that shares the store)."""

    # -- bulk access, for ``aipersona db copy`` (tables of ``shared.TABLES``) ----------------
    async def columns(self, table: str) -> list[str]:
        """The table's columns, in schema order."""

    async def count_rows(self, table: str) -> int:
        """How many rows the table has."""

    async def read_rows(
        self, table: str, columns: list[str], after: tuple[Any, ...] | None, limit: int
    ) -> list[tuple[Any, ...]]:
        """Up to ``limit`` rows in primary-key order, after the key ``after`` (None: from the
        start)."""

    async def write_rows(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        """Insert the rows, replacing a row with the same primary key (one transaction)."""

    async def after_bulk_write(self) -> None:
        """Make the store consistent after ``write_rows`` (e.g. id sequences)."""
