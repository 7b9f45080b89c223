"""The operator's API on a core (``PersonaCore.operator``): what the dashboard shows and the
few changes it makes, by persona id. Reads go to the store's operator queries; rollback and
forgetting take the person's lock and tell plugins, like the same commands from a chat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .edits import Change, Edit
from .errors import FieldValidationError, PersonaNotFound
from .insights import OverviewData, PersonaDetail, PersonaPage, PersonaQuery, UpdateLog
from .schema import FieldSpec
from .tools import Tool
from .types import HistoryEntry

if TYPE_CHECKING:
    from .engine import PersonaCore

MAX_OVERVIEW_DAYS = 90


@dataclass
class PluginReport:
    """A plugin (or the built-ins) with the fields and tools it adds and the hooks it uses."""

    name: str
    fields: list[FieldSpec] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)


class Operator:
    """Operators' views and edits of a started core."""

    def __init__(self, core: PersonaCore) -> None:
        self.core = core

    # -- reading ----------------------------------------------------------------------------

    async def overview(self, days: int = 14, *, now: float | None = None) -> OverviewData:
        """Totals now, and the counters of the last ``days`` UTC days (today included)."""
        days = max(1, min(days, MAX_OVERVIEW_DAYS))
        now = time.time() if now is None else now
        return await self.core.storage.overview(now - (days - 1) * 86_400, now)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """The estimated cost of those tokens at the ``[llm]`` prices (None: none set)."""
        return self.core.config.llm.cost(prompt_tokens, completion_tokens)

    async def personas(self, query: PersonaQuery) -> PersonaPage:
        return await self.core.storage.search_personas(query)

    async def platforms(self) -> list[str]:
        return await self.core.storage.platforms()

    async def persona(
        self, persona_id: int, *, history_before: int | None = None, history_limit: int = 50
    ) -> PersonaDetail:
        """One person in full; PersonaNotFound if there is no such persona."""
        return await self.core.storage.persona_detail(
            persona_id, history_limit=history_limit, history_before=history_before
        )

    async def version(self, persona_id: int, version_id: int) -> HistoryEntry:
        """History entry ``version_id`` of this persona; PersonaNotFound if it is not one of
        this persona's (another persona's entry included)."""
        found = await self.core.storage.history(persona_id, limit=1, version_id=version_id)
        if not found:
            raise PersonaNotFound(f"no history entry {version_id} for persona {persona_id}")
        return found[0]

    async def optimizer_log(
        self,
        *,
        outcome: str | None = None,
        persona_id: int | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> UpdateLog:
        return await self.core.storage.optimizer_log(
            outcome=outcome, persona_id=persona_id, before=before, limit=limit
        )

    def plugins(self) -> list[PluginReport]:
        """The built-in fields and tools, then each loaded plugin's."""
        schema, tools = self.core.schema, self.core.executor.tools
        reports = [
            PluginReport(
                "built-in",
                [s for s in schema.ordered() if s.source == "builtin"],
                [t for t in tools.values() if t.source == "builtin"],
            )
        ]
        for info in self.core.plugins():
            reports.append(
                PluginReport(
                    info.name,
                    [schema.fields[f] for f in info.fields if f in schema.fields],
                    [tools[t] for t in info.tools if t in tools],
                    info.hooks,
                )
            )
        return reports

    async def metrics(self) -> bytes:
        """The core's Prometheus series, with the open sessions read from the store now."""
        self.core.metrics.active_sessions.set(await self.core.storage.open_sessions())
        return self.core.metrics.exposition()

    # -- changing -----------------------------------------------------------------------------

    async def rollback(self, persona_id: int, version_id: int) -> list[Change]:
        """Return a field to its value right after history entry ``version_id`` (a new
        version, source ``rollback``). PersonaNotFound if that entry is not this persona's."""
        core = self.core
        async with core.locks.hold(persona_id):
            result = await core.storage.rollback(persona_id, version_id)
        return await core.editor.announce(result, "rollback")

    async def forget_field(
        self,
        persona_id: int,
        name: str,
        *,
        source: str = "operator",
        evidence: str = "forgotten by the operator",
    ) -> bool:
        """Delete one field (a version by ``source``); False if it had no value.
        FieldValidationError for an unknown field, PersonaNotFound for an unknown persona."""
        spec = self.core.schema.get(name)
        edit = Edit(spec.name, "delete", None, evidence)
        async with self.core.locks.hold(persona_id):
            result = await self.core.editor.apply(persona_id, [edit], source=source)
        if result.rejected:
            raise FieldValidationError(result.rejected[0].reason)
        return bool(result.changes)

    async def forget_all(self, persona_id: int) -> bool:
        """Delete the person's persona, history, sessions, messages and updates (every
        linked identity); False if there was no such persona."""
        async with self.core.locks.hold(persona_id):
            self.core.learning.cancel(persona_id)
            return await self.core.storage.delete_persona(persona_id)
