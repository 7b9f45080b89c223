"""PersonaCore: the platform-neutral core every adapter talks to, and where it is put together.

It builds the parts (plugins and hooks, the persona schema, storage, the LLM client, the
Tool Executor, the Personalized Chatbot, the persona optimizer) and hands them to the three
moving rooms: ``turn`` (a chat turn), ``learning`` (persona updates and idle sessions) and
``editing`` (every persona change). Its methods are the façade adapters and the CLI use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .chatbot import Chatbot
from .config import Config
from .editing import PersonaEditor
from .edits import Change, Edit, Rejected
from .errors import FieldValidationError, PersonaNotFound, PluginError
from .hooks import Hooks, PerPlugin, PluginHost, make_plugin_manager, register_plugin, short_name
from .learning import LearningLoop
from .llm import LLMClient
from .local_model import MODEL_ALIAS, LocalModelServer
from .locks import PersonLock
from .metrics import Metrics
from .operator import Operator
from .optimizer import PersonaOptimizer
from .persona_tool import persona_tool
from .schema import FieldSpec, PersonaSchema
from .storage import SessionRules, Storage, keyring_for, open_storage
from .tools import Tool, ToolExecutor
from .turn import OnDelta, TurnRunner
from .types import HistoryEntry, Identity, Persona, Reply, Usage

log = logging.getLogger(__name__)

MAX_ROW_ID = 2**63 - 1  # the largest id (and count) SQL databases store: larger is unknown

_frozen = False
# failed turns counted per day in the store (the dashboard's overview), by ``Reply.error``
DAILY_COUNTED = {"llm_unavailable": "chat_llm_errors", "budget": "budget_refusals"}


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
class PluginInfo:
    """A loaded plugin and what it adds (for ``aipersona plugins``)."""

    name: str
    fields: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)


class PersonaCore:
    """Create with a Config, then ``await core.start()`` (or ``async with``)."""

    def __init__(
        self,
        config: Config,
        *,
        plugins: list[object] | tuple[object, ...] = (),
        llm: LLMClient | None = None,
    ) -> None:
        self.config = config
        self._extra_plugins = list(plugins)
        self.llm = llm
        self._own_llm = llm is None
        self.local_model: LocalModelServer | None = None
        self.started = False
        self._storage: Storage | None = None
        self._plugin_info: dict[str, PluginInfo] = {}
        self.metrics = Metrics()  # this core's Prometheus series (the dashboard's /metrics)
        self.operator = Operator(self)  # operators' views and edits by persona id

    # -- life cycle -----------------------------------------------------------------------

    async def start(
        self, *, run_pending: bool = True, sweep: bool = True, chat: bool = True
    ) -> PersonaCore:
        """Load plugins, open and migrate storage, start the model client, then the learning
        loop. ``chat=False`` starts only storage and plugins (for the persona admin
        commands): no model is contacted or started, no updates run, no sweeper."""
        cfg = self.config
        pm = make_plugin_manager(
            cfg.plugins.modules,
            entry_points=cfg.plugins.entry_points,
            disabled=cfg.plugins.disabled,
            extra=self._extra_plugins,
        )
        self.hooks = Hooks(pm)
        self._plugin_info = {
            name: PluginInfo(name) for name in (pm.get_name(p) or repr(p) for p in pm.get_plugins())
        }
        self.schema = PersonaSchema.build(
            await self._plugin_fields(),
            disabled=[*cfg.persona.disabled_fields, *await self._plugin_disabled_fields()],
        )
        rules = SessionRules(
            idle_seconds=cfg.sessions.idle_minutes * 60,
            update_every=cfg.persona.update_every,
            history_messages=cfg.sessions.history_messages,
            history_token_budget=cfg.sessions.history_token_budget,
        )
        self._storage = await open_storage(cfg.database, rules, keyring_for(cfg.privacy))
        self.locks = PersonLock(self._storage.person_lock)
        try:
            await self._storage.migrate()
            await self._build(self._storage, chat=chat)
            host = PluginHost(
                config=cfg,
                schema=self.schema,
                data_dir=cfg.data_dir(),
                register=lambda plugin: register_plugin(pm, plugin),
            )
            self._host = host
            await self.hooks.notify(
                "aipersona_startup",
                host=host,
                settings=PerPlugin(lambda name: cfg.plugins.settings_for(short_name(name))),
            )
            await self.learning.start(run_pending=chat and run_pending, sweep=chat and sweep)
        except BaseException:
            await self._close_resources()
            raise
        self.started = True
        return self

    async def _build(self, storage: Storage, *, chat: bool) -> None:
        cfg = self.config
        use_tools = cfg.tools.enabled and cfg.llm.tools
        if self.llm is None and not chat:
            self.llm = LLMClient(cfg.llm, base_url="http://127.0.0.1:9/unused")
        if self.llm is None:
            self.llm = await self._make_llm()
            if self.local_model is not None:
                use_tools = False  # the 135M model cannot call tools; keep its prompt short
        self.llm.observers.append(self.metrics.llm_call)
        self.executor = ToolExecutor(self.hooks, default_timeout=cfg.tools.timeout_seconds)
        builtin = persona_tool(self.schema, cfg.tools.disabled)
        for tool in [*([builtin] if builtin else []), *await self._plugin_tools()]:
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
        self.editor = PersonaEditor(storage, self.schema, self.hooks)
        self.learning = LearningLoop(
            storage,
            self.optimizer,
            self.editor,
            self.hooks,
            self.locks,
            max_attempts=cfg.persona.max_update_attempts,
            lease_seconds=cfg.persona.update_lease_seconds,
            sweep_seconds=cfg.sessions.sweep_seconds,
            recheck_seconds=cfg.persona.update_recheck_seconds,
            tokens_per_user_per_day=cfg.limits.tokens_per_user_per_day,
            keep_messages_seconds=cfg.privacy.keep_messages_days * 86_400,
            purge_every_seconds=cfg.privacy.purge_every_minutes * 60,
            metrics=self.metrics,
        )
        self.turns = TurnRunner(
            storage,
            self.chatbot,
            self.editor,
            self.learning,
            self.hooks,
            self.locks,
            chat=cfg.chat,
            max_input_chars=cfg.sessions.max_input_chars,
            limits=cfg.limits,
            notice=cfg.privacy.notice,
        )

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

    async def _plugin_fields(self) -> list[FieldSpec]:
        out: list[FieldSpec] = []
        for name, specs in await self.hooks.collect("aipersona_persona_fields"):
            for spec in specs:
                if isinstance(spec, dict):
                    spec = FieldSpec(**{"source": name, **spec})
                if not isinstance(spec, FieldSpec):
                    raise PluginError(
                        f"plugin {name} returned {type(spec).__name__} from "
                        "aipersona_persona_fields; expected FieldSpec or dict"
                    )
                out.append(spec)
                self._info(name).fields.append(spec.name)
        return out

    async def _plugin_disabled_fields(self) -> list[str]:
        out: list[str] = []
        for name, names in await self.hooks.collect("aipersona_disabled_fields"):
            if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
                raise PluginError(
                    f"plugin {name} returned {type(names).__name__} from "
                    "aipersona_disabled_fields; expected a list of field names"
                )
            out += names
        return out

    async def _plugin_tools(self) -> list[Tool]:
        out: list[Tool] = []
        for name, tools in await self.hooks.collect("aipersona_tools"):
            for tool in tools:
                if not isinstance(tool, Tool):
                    raise PluginError(f"plugin {name} returned a non-Tool tool")
                if tool.source == "builtin":
                    tool.source = name
                out.append(tool)
                self._info(name).tools.append(tool.name)
        return out

    def _info(self, name: str) -> PluginInfo:
        return self._plugin_info.setdefault(name, PluginInfo(name))

    async def close(self) -> None:
        if not self.started:
            return
        self.started = False
        await self.learning.close()
        await self.hooks.notify("aipersona_shutdown", host=self._host)
        await self._close_resources()

    async def _close_resources(self) -> None:
        if self.llm is not None and self.metrics.llm_call in self.llm.observers:
            self.llm.observers.remove(self.metrics.llm_call)  # a host's client outlives us
        if self.llm is not None and self._own_llm:
            await self.llm.close()
        if self.local_model is not None:
            await self.local_model.stop()
        if self._storage is not None:
            await self._storage.close()

    async def __aenter__(self) -> PersonaCore:
        if not self.started:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            raise RuntimeError("the core is not started")
        return self._storage

    @property
    def max_input_chars(self) -> int:
        """The one limit on the length of a user message (``[sessions] max_input_chars``)."""
        return self.config.sessions.max_input_chars

    def plugins(self) -> list[PluginInfo]:
        """The loaded plugins with the fields and tools they add and the hooks they use."""
        pm = self.hooks.pm
        for plugin in pm.get_plugins():
            info = self._info(pm.get_name(plugin) or repr(plugin))
            info.hooks = sorted(c.name for c in pm.get_hookcallers(plugin) or [])
        return sorted(self._plugin_info.values(), key=lambda i: i.name)

    # -- the chat turn --------------------------------------------------------------------

    async def respond(
        self, identity: Identity, chat_id: str, text: str, *, on_delta: OnDelta | None = None
    ) -> Reply:
        """Store the user's message, answer it with their persona, store the answer.

        With ``on_delta`` the reply is streamed and each text piece is passed to it. If the
        model fails the user's message stays stored and ``Reply.ok`` is False with a short
        apology as text. A message that is empty or longer than ``max_input_chars`` is
        refused (``Reply.error`` "empty" or "too_long") and not stored.
        """
        started = time.perf_counter()
        try:
            reply = await self.turns.respond(identity, str(chat_id), text, on_delta)
        except Exception:
            self.metrics.turn("error", time.perf_counter() - started)
            raise
        self.metrics.turn(reply.error or "ok", time.perf_counter() - started)
        counter = DAILY_COUNTED.get(reply.error or "")
        if counter is not None and reply.persona_id is not None:
            try:
                await self.storage.record_counts(reply.persona_id, {counter: 1}, time.time())
            except Exception:  # a count is not worth failing the reply for
                log.exception("counting a failed turn failed")
        return reply

    def tool_names(self) -> set[str]:
        """The names of the tools the chatbot is offered now."""
        return set(self.executor.tools)

    @contextlib.contextmanager
    def extra_tools(self, tools: list[Tool]) -> Iterator[None]:
        """Offer more tools to the chatbot until the block ends (e.g. the bench's per-scene
        simulated APIs). A name already in use raises ValueError."""
        with self.executor.scoped(tools):
            yield

    # -- persona commands (used by the CLI and the adapters) --------------------------------

    async def edit_persona(
        self, identity: Identity, edits: list[Edit], *, source: str = "user"
    ) -> tuple[list[Change], list[Rejected]]:
        persona_id = await self.storage.resolve_persona(identity)
        async with self.locks.hold(persona_id):
            result = await self.editor.apply(persona_id, edits, source=source)
        return result.changes, result.rejected

    async def end_session(self, identity: Identity, chat_id: str) -> int | None:
        persona_id = await self.storage.find_persona(identity)
        if persona_id is None:
            return None
        async with self.locks.hold(persona_id):
            sid = await self.storage.end_open_session(
                persona_id, identity.platform, str(chat_id), "explicit", time.time()
            )
        if sid is not None:
            context = self.editor.context(persona_id, identity, str(chat_id), sid)
            await self.learning.sessions_ended(context, [sid], "explicit")
        return sid

    async def persona(self, identity: Identity) -> Persona | None:
        persona_id = await self.storage.find_persona(identity)
        if persona_id is None:
            return None
        try:
            return await self.storage.load_persona(persona_id)
        except PersonaNotFound:
            return None

    async def forget_field(self, identity: Identity, field_name: str) -> bool:
        """Delete one field; raises FieldValidationError for an unknown field name."""
        self.schema.get(field_name)
        persona_id = await self.storage.find_persona(identity)
        if persona_id is None:
            return False
        return await self.operator.forget_field(
            persona_id, field_name, source="user", evidence="user asked to forget"
        )

    async def forget_all(self, identity: Identity) -> bool:
        """Delete the person's persona, history, sessions, messages and updates (all linked
        identities)."""
        persona_id = await self.storage.find_persona(identity)
        if persona_id is None:
            return False
        return await self.operator.forget_all(persona_id)

    async def export(self, identity: Identity) -> dict[str, Any] | None:
        persona_id = await self.storage.find_persona(identity)
        if persona_id is None:
            return None
        async with self.locks.hold(persona_id):
            try:
                return await self.storage.export(persona_id)
            except PersonaNotFound:
                return None

    async def history(
        self,
        identity: Identity,
        field_name: str | None = None,
        *,
        limit: int = 200,
        offset: int = 0,
    ) -> list[HistoryEntry]:
        """The person's versions, newest first (``offset``: skip that many, for pages)."""
        persona_id = await self.storage.find_persona(identity)
        if persona_id is None:
            return []
        if field_name:
            try:
                field_name = self.schema.get(field_name).name
            except FieldValidationError:
                pass  # a field no longer in the schema still has its history
        limit, offset = min(max(limit, 0), MAX_ROW_ID), min(max(offset, 0), MAX_ROW_ID)
        return await self.storage.history(persona_id, field=field_name, limit=limit, offset=offset)

    async def undo(self, identity: Identity, version_id: int | None = None) -> list[Change]:
        """Revert the person's newest version, or ``version_id``: its field goes back to its
        value before, as a new version by the user (so the undo can be undone). Nothing to
        undo: []. PersonaNotFound if ``version_id`` is not one of this person's versions."""
        persona_id = await self.storage.find_persona(identity)
        unknown = version_id is not None and not 0 < version_id <= MAX_ROW_ID
        if persona_id is None or unknown:
            if version_id is not None:
                raise PersonaNotFound(f"no history entry {version_id} for this user")
            return []
        async with self.locks.hold(persona_id):
            result = await self.storage.undo(persona_id, version_id)
        return await self.editor.announce(result, "user")

    async def correct(self, identity: Identity, field_name: str, value: str) -> list[Change]:
        """Set a field to the user's own value (a list field takes items separated by commas),
        validated like any edit. The optimizer and the persona tools leave a value the user
        set alone until the user changes or forgets it. FieldValidationError with the reason
        for an unknown field or a bad value."""
        spec = self.schema.get(field_name)
        raw: Any = value.strip()
        if spec.type == "string_list":
            raw = [item.strip() for item in re.split(r"[,;]", raw) if item.strip()]
        edit = Edit(spec.name, "set", raw, "corrected by the user")
        persona_id = await self.storage.resolve_persona(identity)
        async with self.locks.hold(persona_id):
            result = await self.editor.apply(persona_id, [edit], source="user")
        if result.rejected:
            raise FieldValidationError(result.rejected[0].reason)
        return result.changes

    async def set_learning(self, identity: Identity, on: bool) -> bool:
        """Switch learning for the person: while off, the optimizer and the persona tools
        change nothing and no optimizer call is made for them. True if it changed."""
        persona_id = await self.storage.resolve_persona(identity)
        async with self.locks.hold(persona_id):
            return await self.storage.set_learning(persona_id, on)

    async def usage(self, identity: Identity, chat_id: str) -> Usage:
        """The person's tokens today and this month (UTC), the chat's today, and the
        budgets."""
        limits = self.config.limits
        persona_id = await self.storage.find_persona(identity)
        used = Usage()
        if persona_id is not None:
            used = await self.storage.usage(
                persona_id, identity.platform, str(chat_id), time.time()
            )
        return dataclasses.replace(
            used,
            user_limit=limits.tokens_per_user_per_day,
            chat_limit=limits.tokens_per_chat_per_day,
        )

    async def usage_report(self, since: float) -> list[dict[str, Any]]:
        """Token usage per person, chat, UTC day and role since ``since`` (operators)."""
        return await self.storage.usage_report(since)

    async def purge_expired_messages(self, now: float | None = None) -> int:
        """Delete the message texts learned from more than ``[privacy] keep_messages_days``
        before ``now``; return how many. The sweeper does this on its own."""
        return await self.learning.purge_expired_messages(now)

    async def rollback(self, identity: Identity, version_id: int) -> list[Change]:
        persona_id = await self.storage.find_persona(identity)
        if persona_id is None:
            raise PersonaNotFound(f"no persona for {identity.platform}:{identity.user_id}")
        if not 0 < version_id <= MAX_ROW_ID:
            raise PersonaNotFound(f"no history entry {version_id} for this user")
        return await self.operator.rollback(persona_id, version_id)

    async def link(self, primary: Identity, other: Identity) -> int:
        return await self.storage.link(primary, other)

    # -- learning ---------------------------------------------------------------------------

    async def wait_for_updates(self) -> None:
        """Wait until no persona update is running (for the CLI and tests)."""
        await self.learning.wait()

    async def run_pending_updates(self) -> None:
        """Run every pending persona update now (retrying failed attempts) and wait."""
        await self.learning.run_pending()
        await self.learning.wait()

    async def sweep_idle_sessions(self, now: float | None = None) -> int:
        """End every session idle past ``[sessions] idle_minutes``; return how many."""
        return await self.learning.sweep_idle_sessions(now)
