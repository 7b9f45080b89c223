"""The learning loop: runs scheduled persona updates and ends idle sessions.

Updates are scheduled by storage (every k finished sessions, in the transaction that ends
the session). Here each persona gets at most one task at a time that runs its pending
updates oldest first: claim (a lease, so another process on the same store does not run it
too), propose (one optimizer call, no lock held), apply (under the persona lock, atomically
with marking the update done). Every failed attempt counts; see ``_attempt``.

A person whose learning is off gets no optimizer call: their updates are marked done with a
note. A person over their daily token budget waits: their updates stay pending (no attempt
counted) until the next UTC day. Message texts are purged ``keep_messages_days`` after the
update that learned from them (the sweeper does it; right after the update for 0 days).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

from .editing import PersonaEditor
from .edits import Change
from .errors import LLMError, PersonaNotFound
from .hooks import Hooks
from .insights import update_outcome
from .llm import llm_role
from .locks import PersonLock
from .metrics import Metrics
from .optimizer import PersonaOptimizer
from .storage import Storage, Tokens, UpdateOutcome
from .tools import ToolContext
from .types import Identity, PendingUpdate

log = logging.getLogger(__name__)

SWEEP_BATCH = 100
LEARNING_OFF_NOTE = "learning is off for this user: no optimizer call"


class LearningLoop:
    def __init__(
        self,
        storage: Storage,
        optimizer: PersonaOptimizer,
        editor: PersonaEditor,
        hooks: Hooks,
        locks: PersonLock,
        *,
        max_attempts: int,
        lease_seconds: float,
        sweep_seconds: float,
        recheck_seconds: float = 15.0,
        tokens_per_user_per_day: int = 0,
        keep_messages_seconds: float | None = None,
        purge_every_seconds: float = 600.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.storage = storage
        self.optimizer = optimizer
        self.editor = editor
        self.hooks = hooks
        self.locks = locks
        self.max_attempts = max_attempts
        self.lease_seconds = lease_seconds
        self.sweep_seconds = sweep_seconds
        self.recheck_seconds = recheck_seconds
        self.budget = tokens_per_user_per_day
        self.keep_messages_seconds = keep_messages_seconds
        self.purge_every_seconds = purge_every_seconds
        self.metrics = metrics or Metrics()
        self._purged_at = 0.0
        # who holds a claim: storage names its workers (and can tell when one is gone)
        self.owner = storage.worker_id
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._rerun: set[int] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._rechecker: asyncio.Task[None] | None = None
        self.running = False

    # -- life cycle -------------------------------------------------------------------------

    async def start(self, *, run_pending: bool = True, sweep: bool = True) -> None:
        self.running = True
        if run_pending:
            await self.run_pending()
        if sweep:
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="aipersona-sweeper")
            self._rechecker = asyncio.create_task(
                self._recheck_loop(), name="aipersona-update-recheck"
            )

    async def close(self) -> None:
        self.running = False
        tasks = [*self._tasks.values()]
        tasks += [t for t in (self._sweeper, self._rechecker) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):  # best effort: leases run out anyway
            await self.storage.release_updates(self.owner)

    # -- updates ----------------------------------------------------------------------------

    def kick(self, persona_id: int) -> None:
        """Run the persona's pending updates now (or again, after the running pass)."""
        if not self.running:
            return
        task = self._tasks.get(persona_id)
        if task is not None and not task.done():
            self._rerun.add(persona_id)
            return
        task = asyncio.create_task(self._run(persona_id), name=f"persona-update-{persona_id}")
        self._tasks[persona_id] = task
        task.add_done_callback(functools.partial(self._done, persona_id))

    def cancel(self, persona_id: int) -> None:
        task = self._tasks.get(persona_id)
        if task is not None:
            task.cancel()

    def _done(self, persona_id: int, task: asyncio.Task[None]) -> None:
        if self._tasks.get(persona_id) is task:
            del self._tasks[persona_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("persona update task failed", exc_info=task.exception())
        elif persona_id in self._rerun:
            self._rerun.discard(persona_id)
            self.kick(persona_id)

    async def wait(self) -> None:
        """Wait until no persona update is running."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def _run(self, persona_id: int) -> None:
        """Run this persona's pending updates, oldest first.

        The run stops at the first update that fails or that another worker holds: a later
        update is never applied before an earlier one (its facts would be overwritten by
        older ones). A failed update is retried at the next session end or start, until
        ``max_attempts`` marks it ``failed``; then the later ones proceed. Other personas run
        in their own tasks, so one persona's bad update never holds up another's.
        """
        for update in await self.storage.pending_updates(persona_id):
            if await self.over_budget(persona_id):
                log.info("persona %s is over its token budget: updates wait", persona_id)
                return
            if await self.run_update(update) is None:  # still pending: keep the order
                return

    async def over_budget(self, persona_id: int) -> bool:
        """True if the person used up ``tokens_per_user_per_day`` today (UTC)."""
        if self.budget <= 0:
            return False
        used = await self.storage.usage(persona_id, "", "", time.time())
        return used.today >= self.budget

    async def run_update(self, update: PendingUpdate) -> list[Change] | None:
        """Claim and attempt one update; the changes made, or None if it is still pending
        (failed this time, or claimed by another worker)."""
        claimed = await self.storage.claim_update(
            update.id, self.owner, time.time(), self.lease_seconds
        )
        if claimed is None:  # another worker holds it (or just finished it): not ours now
            return None
        return await self._attempt(claimed)

    async def _attempt(self, update: PendingUpdate) -> list[Change] | None:
        """One attempt at a claimed update.

        Every failure, whatever the exception, counts as an attempt: the error is stored,
        and the update becomes ``failed`` after ``max_attempts``. Only cancellation
        (shutdown, forget-all) passes through; the claim is then released or runs out.
        """
        try:
            persona = await self.storage.load_persona(update.persona_id)
            if not persona.learning:
                await self.storage.finish_update(update.id, (LEARNING_OFF_NOTE,))
                self.metrics.update("rejected")
                await self._purge_now()
                return []
            transcripts = await self.storage.transcripts(update.persona_id, update.session_ids)
            started, role = time.perf_counter(), llm_role.set("optimizer")
            try:
                result = await self.optimizer.propose(persona.nested(), transcripts)
            finally:
                llm_role.reset(role)
            used = result.completion
            outcome = UpdateOutcome(
                update.id,
                tuple(r.reason for r in result.rejected),
                None if used is None else Tokens(used.prompt_tokens, used.completion_tokens),
                seconds=time.perf_counter() - started,
            )
            async with self.locks.hold(update.persona_id):
                # the before-hook sees the persona the edits were proposed for; storage
                # applies them to the values it reads in its own transaction
                edited = await self.editor.apply(
                    update.persona_id,
                    result.edits,
                    source="optimizer",
                    session_ids=update.session_ids,
                    persona=persona,
                    outcome=outcome,
                )
        except PersonaNotFound:
            return []  # forgotten meanwhile: its rows are gone with it
        except LLMError as exc:
            return await self._failed(update, str(exc))
        except Exception as exc:  # a bug or a hostile reply: still one bounded attempt
            log.exception("persona update %s raised", update.id)
            return await self._failed(update, f"{type(exc).__name__}: {exc}")
        refused = len(result.rejected) + len(edited.rejected)
        self.metrics.update(update_outcome(len(edited.changes), refused))
        log.info(
            "persona %s updated from sessions %s: %d change(s)",
            update.persona_id,
            update.session_ids,
            len(edited.changes),
        )
        await self._purge_now()
        return edited.changes

    async def _failed(self, update: PendingUpdate, error: str) -> list[Change] | None:
        final = await self.storage.fail_update(update.id, error, self.max_attempts)
        self.metrics.update("failed" if final else "retry")
        if final:
            await self._purge_now()
        log.warning(
            "persona update %s failed (attempt %d%s): %s",
            update.id,
            update.attempts + 1,
            ", giving up" if final else "",
            error,
        )
        return [] if final else None

    # -- sessions ---------------------------------------------------------------------------

    async def sessions_ended(
        self, context: ToolContext, session_ids: list[int], reason: str
    ) -> None:
        """Tell plugins, then run the updates the endings may have scheduled."""
        for sid in session_ids:
            await self.hooks.notify(
                "aipersona_session_ended", context=context, session_id=sid, reason=reason
            )
        if session_ids:
            self.kick(context.persona_id)

    async def sweep_idle_sessions(self, now: float | None = None) -> int:
        """End every idle session, batch by batch (hooks and updates of one batch before the
        next, so a backlog never holds the write lock for long); return how many."""
        now = time.time() if now is None else now
        total = 0
        while True:
            ended = await self.storage.sweep_idle(now, batch=SWEEP_BATCH)
            for persona_id, session_id in ended:
                identities = await self.storage.identities(persona_id)
                ident = identities[0] if identities else Identity("unknown", "?")
                context = self.editor.context(persona_id, ident, "", session_id)
                await self.sessions_ended(context, [session_id], "idle")
            total += len(ended)
            if len(ended) < SWEEP_BATCH:
                return total

    async def run_pending(self, *, orphans_only: bool = False) -> None:
        """Start a pass over every person with a pending update (claims decide who runs
        each: an update held by a live worker is skipped). ``orphans_only``: only updates
        never attempted or held by a claim (a dead worker's is taken over); one whose
        attempt failed waits for the next session end or start, so an outage does not use
        up its attempts in minutes."""
        pending = await self.storage.pending_updates()
        if orphans_only:
            pending = [u for u in pending if u.attempts == 0 or u.claimed_by is not None]
        for persona_id in dict.fromkeys(u.persona_id for u in pending):
            self.kick(persona_id)

    async def _recheck_loop(self) -> None:
        """Every ``recheck_seconds``: pick up updates nobody is running, e.g. those a killed
        worker had claimed (its claim is free once its process is gone) or whose earlier
        attempt failed."""
        while True:
            await asyncio.sleep(self.recheck_seconds)
            try:
                await self.run_pending(orphans_only=True)
            except Exception:
                log.exception("re-checking pending persona updates failed")

    # -- retention ----------------------------------------------------------------------------

    async def purge_expired_messages(self, now: float | None = None) -> int:
        """Delete the message texts learned from more than ``keep_messages_days`` ago (as
        of ``now``); return how many."""
        if self.keep_messages_seconds is None:
            return 0
        now = time.time() if now is None else now
        self._purged_at = now
        purged = await self.storage.purge_messages(now - self.keep_messages_seconds)
        if purged:
            log.info("retention: deleted %d message text(s)", purged)
        return purged

    async def _purge_now(self) -> None:
        """With ``keep_messages_days = 0``: the texts go right after the update."""
        if self.keep_messages_seconds == 0:
            try:
                await self.purge_expired_messages()
            except Exception:
                log.exception("retention: deleting learned message texts failed")

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                await self.sweep_idle_sessions()
            except Exception:
                log.exception("idle-session sweep failed")
            if time.time() - self._purged_at >= self.purge_every_seconds:
                try:
                    await self.purge_expired_messages()
                except Exception:
                    log.exception("retention: deleting expired message texts failed")
