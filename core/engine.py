"""PersonaCore: the platform-neutral core every adapter talks to.

It wires storage, the Historical Session Manager, the Tool Executor, the Personalized Chatbot,
the persona optimizer and the plugin hooks. Adapters call ``respond()`` with a platform
identity and text, and the persona commands (``persona``, ``forget``, ``export``...).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import pluggy

from .chatbot import Chatbot, TurnResult, build_system_prompt
from .config import Config
from .db import Database
from .edits import Change, Edit, Rejected
from .hooks import make_plugin_manager, plugin_name
from .llm import LLMClient, LLMError
from .local_model import MODEL_ALIAS, LocalModelServer
from .locks import KeyedLocks
from .optimizer import PersonaOptimizer
from .personas import Identity, Persona, PersonaNotFound, PersonaStore
from .schema import FieldSpec, FieldValidationError, PersonaSchema, clean_text
from .sessions import SWEEP_BATCH, SessionManager, StoredMessage
from .tools import Tool, ToolContext, ToolExecutor, ToolResult, builtin_tools

log = logging.getLogger(__name__)

OnDelta = Callable[[str], Awaitable[None]]


_frozen = False


def freeze_startup_objects() -> None:
    """Once per process, after the core started: move everything loaded so far (modules,
    plugins, schema, clients) out of the cyclic collector's reach, so full collections scan
    only per-message garbage. Roughly halves the p99 per-message latency under load
    (BENCHMARKS.md). Collected first, so no garbage is frozen.

    This changes the whole process's garbage collector, so the core never does it on its
    own: the standalone commands (``aipersona run``/``chat``) call it, and a host bot that
    embeds the core may call it after its own start-up."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


@dataclass
class Reply:
    """The outcome of one user message."""

    text: str
    ok: bool = True
    error: str | None = None  # "too_long", "empty", "llm_unavailable"
    persona_id: int | None = None
    session_id: int | None = None
    tool_results: list[ToolResult] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class PersonaCore:
    """Create with a Config, then ``await core.start()`` (or ``async with``)."""

    def __init__(
        self,
        config: Config,
        *,
        plugins: list[object] = (),  # type: ignore[assignment]
        llm: LLMClient | None = None,
    ) -> None:
        self.config = config
        self._extra_plugins = list(plugins)
        self.llm = llm
        self._own_llm = llm is None
        self.local_model: LocalModelServer | None = None
        self.db: Database
        self.pm: pluggy.PluginManager
        self.schema: PersonaSchema
        self.store: PersonaStore
        self.sessions: SessionManager
        self.executor: ToolExecutor
        self.chatbot: Chatbot
        self.optimizer: PersonaOptimizer
        self.locks = KeyedLocks()
        self._update_tasks: dict[int, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.started = False

    # -- life cycle -----------------------------------------------------------------------

    async def start(
        self, *, run_pending: bool = True, sweep: bool = True, chat: bool = True
    ) -> PersonaCore:
        """Open the database, load plugins, start the model client.

        ``chat=False`` starts only storage and plugins (for the persona admin commands): no
        model is contacted or started, no updates run, no sweeper.
        """
        cfg = self.config
        if not chat:
            run_pending = sweep = False
        self.pm = make_plugin_manager(
            cfg.plugins.modules,
            entry_points=cfg.plugins.entry_points,
            disabled=cfg.plugins.disabled,
            extra=self._extra_plugins,
        )
        self.schema = PersonaSchema.build(
            self._plugin_fields(), disabled=cfg.persona.disabled_fields
        )
        self.db = await Database.open(
            cfg.database.path, busy_timeout_ms=cfg.database.busy_timeout_ms
        )
        try:
            await self.db.migrate()
            self.store = PersonaStore(self.db, self.schema)
            self.sessions = SessionManager(
                self.db,
                idle_seconds=cfg.sessions.idle_minutes * 60,
                update_every=cfg.persona.update_every,
            )
            use_tools = cfg.tools.enabled and cfg.llm.tools
            if self.llm is None and not chat:
                self.llm = LLMClient(cfg.llm, base_url="http://127.0.0.1:9/unused")
            if self.llm is None:
                self.llm = await self._make_llm()
                if self.local_model is not None:
                    use_tools = False  # the 135M model cannot call tools; keep its prompt short
            self.executor = ToolExecutor(self.pm, default_timeout=cfg.tools.timeout_seconds)
            for tool in [*builtin_tools(self.schema), *self._plugin_tools()]:
                if tool.name not in cfg.tools.disabled:
                    self.executor.register(tool)
            self.chatbot = Chatbot(
                self.llm, self.executor, max_rounds=cfg.tools.max_rounds, use_tools=use_tools
            )
            self.optimizer = PersonaOptimizer(
                self.llm,
                self.schema,
                model=cfg.persona.optimizer_model or None,
                temperature=cfg.persona.optimizer_temperature,
                max_tokens=cfg.persona.optimizer_max_tokens,
                max_transcript_chars=cfg.persona.max_transcript_chars,
            )
            for impl in self.pm.hook.aipersona_startup.get_hookimpls():
                settings = cfg.plugins.settings_for(impl.plugin_name.rsplit(".", 1)[-1])
                impl.function(
                    **{
                        k: v
                        for k, v in {"core": self, "settings": settings}.items()
                        if k in impl.argnames
                    }
                )
        except BaseException:
            await self._close_resources()
            raise
        self.started = True
        if run_pending:
            for update in await self.sessions.pending_updates():
                self._kick_updates(update["persona_id"])
        if sweep:
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="aipersona-sweeper")
        return self

    async def _make_llm(self) -> LLMClient:
        cfg = self.config.llm
        if cfg.base_url:
            return LLMClient(cfg)
        self.local_model = LocalModelServer(cfg.local)
        base_url = await self.local_model.start()
        local = cfg.model_copy(
            update={
                "model": MODEL_ALIAS,
                "structured_output": (
                    "json_object" if cfg.structured_output == "auto" else cfg.structured_output
                ),
            }
        )
        return LLMClient(local, base_url=base_url)

    def _plugin_fields(self) -> list[FieldSpec]:
        out: list[FieldSpec] = []
        for impl in self.pm.hook.aipersona_persona_fields.get_hookimpls():
            specs = impl.function() or []
            for spec in specs:
                if isinstance(spec, dict):
                    spec = FieldSpec(**{"source": impl.plugin_name, **spec})
                if not isinstance(spec, FieldSpec):
                    raise TypeError(
                        f"plugin {impl.plugin_name} returned {type(spec).__name__} from "
                        "aipersona_persona_fields; expected FieldSpec or dict"
                    )
                out.append(spec)
        return out

    def _plugin_tools(self) -> list[Tool]:
        out: list[Tool] = []
        for impl in self.pm.hook.aipersona_tools.get_hookimpls():
            for tool in impl.function() or []:
                if not isinstance(tool, Tool):
                    raise TypeError(f"plugin {impl.plugin_name} returned a non-Tool tool")
                if tool.source == "builtin":
                    tool.source = impl.plugin_name
                out.append(tool)
        return out

    async def close(self) -> None:
        if not self.started:
            return
        self.started = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        tasks = [*self._update_tasks.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            self.pm.hook.aipersona_shutdown(core=self)
        except Exception:
            log.exception("aipersona_shutdown hook failed")
        await self._close_resources()

    async def _close_resources(self) -> None:
        if self.llm is not None and self._own_llm:
            await self.llm.close()
        if self.local_model is not None:
            await self.local_model.stop()
        db = getattr(self, "db", None)
        if db is not None:
            await db.close()

    async def __aenter__(self) -> PersonaCore:
        if not self.started:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the chat turn --------------------------------------------------------------------

    async def respond(
        self,
        identity: Identity,
        chat_id: str,
        text: str,
        *,
        on_delta: OnDelta | None = None,
    ) -> Reply:
        """Store the user's message, answer it with their persona, store the answer.

        With ``on_delta`` the reply is streamed and each text piece is passed to it. If the
        model fails the user's message stays stored and ``Reply.ok`` is False with a short
        apology as text.
        """
        chat_id = str(chat_id)
        limits = self.config.sessions
        text = text or ""
        # far over the limit: answer without cleaning megabytes on the event loop first
        if len(text) <= 4 * limits.max_input_chars:
            text = clean_text(text)
            if not text:
                return Reply("Your message is empty.", ok=False, error="empty")
        if len(text) > limits.max_input_chars:
            return Reply(
                f"Your message is too long ({len(text):,} characters; the limit is "
                f"{limits.max_input_chars:,}). Please shorten it.",
                ok=False,
                error="too_long",
            )
        for _attempt in range(3):
            persona_id = await self.store.resolve(identity)
            async with self.locks.hold(persona_id):
                begun = await self.db.transaction(
                    self._begin_turn, persona_id, identity, chat_id, text, time.time()
                )
                if begun is None:
                    # the cached identity went stale (linked or forgotten meanwhile): re-resolve
                    self.store.forget_cached(identity)
                    continue
                return await self._finish_turn(
                    persona_id, identity, chat_id, text, on_delta, *begun
                )
        raise PersonaNotFound(f"identity {identity.platform}:{identity.user_id} keeps changing")

    def _begin_turn(
        self,
        conn: sqlite3.Connection,
        persona_id: int,
        identity: Identity,
        chat_id: str,
        text: str,
        now: float,
    ) -> tuple[StoredMessage, Persona, list[dict[str, str]]] | None:
        """One write transaction on the DB thread: check the identity still maps to the
        persona (refreshing its display name), store the user message, load the persona and
        the bounded history."""
        if PersonaStore.touch_identity_in(conn, identity) != persona_id:
            return None
        stored = self.sessions.add_message_in(
            conn, persona_id, identity.platform, chat_id, "user", text, now
        )
        persona = PersonaStore.load_sync(conn, persona_id)
        limits = self.config.sessions
        history = SessionManager.history_in(
            conn,
            stored.session_id,
            limits.history_messages,
            limits.history_token_budget,
            stored.message_id,
        )
        return stored, persona, history

    async def _finish_turn(
        self,
        persona_id: int,
        identity: Identity,
        chat_id: str,
        text: str,
        on_delta: OnDelta | None,
        stored: StoredMessage,
        persona: Persona,
        history: list[dict[str, str]],
    ) -> Reply:
        """Hooks, prompt, model call, reply stored. The caller holds the persona lock."""
        context = self._context(persona_id, identity, chat_id, stored.session_id)
        self._sessions_ended(context, stored.ended_sessions, "idle")
        self._fire("aipersona_message_received", context=context, text=text)
        messages = self._prompt(persona, context, history, text)
        reply = Reply("", persona_id=persona_id, session_id=stored.session_id)
        turn = TurnResult("")
        try:
            if on_delta is None:
                turn = await self.chatbot.reply(messages, context)
            else:
                async for delta in self.chatbot.stream(messages, context, turn):
                    await on_delta(delta)
        except LLMError as exc:
            log.warning("chat reply failed for persona %s: %s", persona_id, exc)
            reply.text, reply.ok, reply.error = self.config.chat.apology, False, "llm_unavailable"
            return reply
        reply.text = turn.text.strip() or "…"
        reply.tool_results = turn.tool_results
        reply.prompt_tokens, reply.completion_tokens = (
            turn.prompt_tokens,
            turn.completion_tokens,
        )
        await self.sessions.add_message(
            persona_id, identity.platform, chat_id, "assistant", reply.text
        )
        return reply

    def _prompt(
        self,
        persona: Persona,
        context: ToolContext,
        history: list[dict[str, str]],
        text: str,
    ) -> list[dict[str, Any]]:
        sections: list[str] = []
        for result in self._fire("aipersona_build_prompt", persona=persona, context=context):
            if isinstance(result, str):
                sections.append(result)
        system = build_system_prompt(
            self.config.chat.system_prompt, persona, sections, self.chatbot.tool_docs()
        )
        return [{"role": "system", "content": system}, *history, {"role": "user", "content": text}]

    def _context(
        self, persona_id: int, identity: Identity, chat_id: str, session_id: int | None
    ) -> ToolContext:
        async def load() -> Persona:
            return await self.store.load(persona_id)

        async def apply(edits: list[Edit], source: str) -> tuple[list[Change], list[Rejected]]:
            return await self._apply_edits(
                persona_id,
                edits,
                source=source,
                session_ids=[session_id] if session_id else [],
            )

        return ToolContext(
            persona_id,
            identity,
            chat_id,
            session_id,
            load_persona=load,
            apply_edits=apply,
            schema=self.schema,
        )

    def _fire(self, hook: str, **kwargs: Any) -> list[Any]:
        """Call a notification hook; a failing plugin is logged, never fatal to a turn."""
        out = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            if impl.hookwrapper or impl.wrapper:
                continue  # notification hooks call each plugin on its own; no wrappers
            try:
                out.append(impl.function(**{k: kwargs[k] for k in impl.argnames if k in kwargs}))
            except Exception:
                log.exception("plugin %s failed in %s", plugin_name(self.pm, impl.plugin), hook)
        return out

    # -- persona edits (shared by optimizer, tools and commands) ---------------------------

    async def _apply_edits(
        self,
        persona_id: int,
        edits: list[Edit],
        *,
        source: str,
        session_ids: list[int] | None = None,
        also: Callable[[aiosqlite.Connection, list[Change], list[Rejected]], Awaitable[None]]
        | None = None,
    ) -> tuple[list[Change], list[Rejected]]:
        """Run the before-hook (veto/edit), apply in one transaction, then the after-hook.

        The caller holds the persona lock. ``also`` runs inside the same transaction.
        """
        persona = await self.store.load(persona_id)
        requested, edits = list(edits), list(edits)
        vetoes = self._fire(
            "aipersona_before_persona_update", persona=persona, updates=edits, source=source
        )
        dropped = [
            Rejected(e, f"{e.field}: dropped by a plugin")
            for e in requested
            if not any(e is kept for kept in edits)
        ]
        if any(v is False for v in vetoes):
            rejected = [Rejected(e, f"{e.field}: vetoed by a plugin") for e in requested]
            if also is not None:
                async with self.db.write() as conn:
                    await also(conn, [], rejected)
            return [], rejected
        async with self.db.write() as conn:
            changes, rejected = await self.store.apply(
                persona_id, edits, source=source, session_ids=session_ids, conn=conn
            )
            rejected = dropped + rejected
            if also is not None:
                await also(conn, changes, rejected)
        for rej in rejected:
            log.info("persona %s: edit rejected (%s): %s", persona_id, source, rej.reason)
        if changes:
            persona = await self.store.load(persona_id)
            self._fire(
                "aipersona_after_persona_update", persona=persona, changes=changes, source=source
            )
        return changes, rejected

    async def edit_persona(
        self, identity: Identity, edits: list[Edit], *, source: str = "user"
    ) -> tuple[list[Change], list[Rejected]]:
        persona_id = await self.store.resolve(identity)
        async with self.locks.hold(persona_id):
            return await self._apply_edits(persona_id, edits, source=source)

    # -- persona updates (the optimizer every k sessions) ----------------------------------

    def _sessions_ended(self, context: ToolContext, session_ids: list[int], reason: str) -> None:
        for sid in session_ids:
            self._fire("aipersona_session_ended", context=context, session_id=sid, reason=reason)
        if session_ids:
            self._kick_updates(context.persona_id)

    def _kick_updates(self, persona_id: int) -> None:
        task = self._update_tasks.get(persona_id)
        if task is not None and not task.done():
            task.rerun = True  # type: ignore[attr-defined]
            return
        task = asyncio.create_task(
            self._run_updates(persona_id), name=f"persona-update-{persona_id}"
        )
        self._update_tasks[persona_id] = task
        task.add_done_callback(lambda t, pid=persona_id: self._update_done(pid, t))

    def _update_done(self, persona_id: int, task: asyncio.Task[None]) -> None:
        if self._update_tasks.get(persona_id) is task:
            del self._update_tasks[persona_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("persona update task failed", exc_info=task.exception())
        elif getattr(task, "rerun", False) and self.started:
            self._kick_updates(persona_id)

    async def _run_updates(self, persona_id: int) -> None:
        """Run this persona's pending updates, oldest first.

        The run stops at the first update that fails: a later update is never applied before
        an earlier one (its facts would be overwritten by older ones). The failed update is
        retried at the next session end or start, until ``max_update_attempts`` marks it
        ``failed``; then the later ones proceed. Other personas run in their own tasks, so
        one persona's bad update never holds up another's.
        """
        for update in await self.sessions.pending_updates(persona_id):
            if not await self._attempt_update(update):
                return

    async def run_update(self, update: dict[str, Any]) -> list[Change]:
        """Run one scheduled optimizer update: propose (no lock), then apply atomically.

        Returns the changes made (empty if the attempt failed; the failure is stored)."""
        changes: list[Change] = []
        await self._attempt_update(update, changes)
        return changes

    async def _attempt_update(
        self, update: dict[str, Any], changes_out: list[Change] | None = None
    ) -> bool:
        """One attempt at one update; True when it is no longer pending (done, failed for
        good, or its persona gone), False when it will be retried.

        Every failure, whatever the exception, counts as an attempt: the error is stored on
        the row, which becomes ``failed`` after ``max_update_attempts``. Only cancellation
        (shutdown, forget-all) passes through, leaving the row as it was.
        """
        persona_id, update_id = update["persona_id"], update["id"]
        try:
            transcripts = await self.sessions.transcripts(update["session_ids"])
            persona = await self.store.load(persona_id)
            result = await self.optimizer.propose(persona.nested(), transcripts)

            async def mark_done(
                conn: aiosqlite.Connection, changes: list[Change], rejected: list[Rejected]
            ) -> None:
                note = "; ".join(r.reason for r in [*result.rejected, *rejected])[:2000] or None
                await conn.execute(
                    "UPDATE persona_updates SET status = 'done', attempts = attempts + 1,"
                    " error = ?, finished_at = ? WHERE id = ?",
                    (note, time.time(), update_id),
                )

            async with self.locks.hold(persona_id):
                changes, _ = await self._apply_edits(
                    persona_id,
                    result.edits,
                    source="optimizer",
                    session_ids=update["session_ids"],
                    also=mark_done,
                )
        except PersonaNotFound:
            return True  # forgotten meanwhile: its rows are gone with it
        except LLMError as exc:
            return await self._update_failed(update, str(exc))
        except Exception as exc:  # a bug or a hostile reply: still one bounded attempt
            log.exception("persona update %s raised", update_id)
            return await self._update_failed(update, f"{type(exc).__name__}: {exc}")
        if changes_out is not None:
            changes_out.extend(changes)
        log.info(
            "persona %s updated from sessions %s: %d change(s)",
            persona_id,
            update["session_ids"],
            len(changes),
        )
        return True

    async def _update_failed(self, update: dict[str, Any], error: str) -> bool:
        """Count a failed attempt and store its error; True if the update failed for good."""
        attempts = update["attempts"] + 1
        status = "failed" if attempts >= self.config.persona.max_update_attempts else "pending"
        log.warning("persona update %s failed (attempt %d): %s", update["id"], attempts, error)
        async with self.db.write() as conn:
            await conn.execute(
                "UPDATE persona_updates SET attempts = ?, status = ?, error = ? WHERE id = ?",
                (attempts, status, error[:2000], update["id"]),
            )
        return status == "failed"

    async def wait_for_updates(self) -> None:
        """Wait until no persona update is running (for the CLI and tests)."""
        while self._update_tasks:
            await asyncio.gather(*list(self._update_tasks.values()), return_exceptions=True)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sessions.sweep_seconds)
            try:
                await self.sweep_idle_sessions()
            except Exception:
                log.exception("idle-session sweep failed")

    async def sweep_idle_sessions(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        total = 0
        while True:  # batch by batch: hooks and updates of one batch before the next
            ended = await self.sessions.sweep_idle(now, more=False)
            for persona_id, session_id in ended:
                ident = (await self.store.identities(persona_id) or [Identity("unknown", "?")])[0]
                context = self._context(persona_id, ident, "", session_id)
                self._sessions_ended(context, [session_id], "idle")
            total += len(ended)
            if len(ended) < SWEEP_BATCH:
                return total

    # -- commands (used by the CLI and the adapters) ----------------------------------------

    async def end_session(self, identity: Identity, chat_id: str) -> int | None:
        persona_id = await self.store.find(identity)
        if persona_id is None:
            return None
        async with self.locks.hold(persona_id):
            sid = await self.sessions.end_open_session(persona_id, identity.platform, str(chat_id))
        if sid is not None:
            self._sessions_ended(
                self._context(persona_id, identity, str(chat_id), sid), [sid], "explicit"
            )
        return sid

    async def persona(self, identity: Identity) -> Persona | None:
        persona_id = await self.store.find(identity)
        return None if persona_id is None else await self.store.load(persona_id)

    async def forget_field(self, identity: Identity, field_name: str) -> bool:
        """Delete one field; raises FieldValidationError for an unknown field name."""
        spec = self.schema.get(field_name)
        persona_id = await self.store.find(identity)
        if persona_id is None:
            return False
        async with self.locks.hold(persona_id):
            changes, rejected = await self._apply_edits(
                persona_id,
                [Edit(spec.name, "delete", None, "user asked to forget")],
                source="user",
            )
        if rejected:
            raise FieldValidationError(rejected[0].reason)
        return bool(changes)

    async def forget_all(self, identity: Identity) -> bool:
        """Delete the person's persona, history, sessions and messages (all linked ids)."""
        persona_id = await self.store.find(identity)
        if persona_id is None:
            return False
        async with self.locks.hold(persona_id):
            task = self._update_tasks.get(persona_id)
            if task is not None:
                task.cancel()
            return await self.store.delete(persona_id)

    async def export(self, identity: Identity) -> dict[str, Any] | None:
        persona_id = await self.store.find(identity)
        if persona_id is None:
            return None
        async with self.locks.hold(persona_id):
            return await self.store.export(persona_id)

    async def history(self, identity: Identity, field_name: str | None = None) -> list[dict]:
        persona_id = await self.store.find(identity)
        if persona_id is None:
            return []
        return await self.store.history(persona_id, field_name=field_name)

    async def rollback(self, identity: Identity, version_id: int) -> list[Change]:
        persona_id = await self.store.find(identity)
        if persona_id is None:
            raise PersonaNotFound(f"no persona for {identity.platform}:{identity.user_id}")
        async with self.locks.hold(persona_id):
            changes = await self.store.rollback(persona_id, version_id)
        if changes:
            self._fire(
                "aipersona_after_persona_update",
                persona=await self.store.load(persona_id),
                changes=changes,
                source="rollback",
            )
        return changes

    async def link(self, primary: Identity, other: Identity) -> int:
        return await self.store.link(primary, other)
