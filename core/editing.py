"""Persona editing: the one path every change takes, whoever asks for it (the optimizer, a
persona tool, a user command, a plugin).

before-hook (plugins may edit the list in place or veto) -> storage writes the changes in one
transaction (with the update that produced them, if any) -> after-hook with the new persona.
The caller holds the persona's lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

from .edits import Change, Edit, Rejected
from .errors import FieldValidationError
from .hooks import Hooks
from .schema import PersonaSchema
from .storage import Storage, UpdateOutcome
from .tools import ToolContext
from .types import EditResult, Identity, Persona

log = logging.getLogger(__name__)


class PersonaEditor:
    def __init__(self, storage: Storage, schema: PersonaSchema, hooks: Hooks) -> None:
        self.storage = storage
        self.schema = schema
        self.hooks = hooks

    async def apply(
        self,
        persona_id: int,
        edits: list[Edit],
        *,
        source: str,
        session_ids: list[int] | None = None,
        persona: Persona | None = None,
        outcome: UpdateOutcome | None = None,
    ) -> EditResult:
        """Apply ``edits`` (``persona``: the caller's current copy, saves a read)."""
        if persona is None:
            persona = await self.storage.load_persona(persona_id)
        for edit in edits:  # plugins see every field by its full name, however it was asked
            if isinstance(edit, Edit) and isinstance(edit.field, str):
                with contextlib.suppress(FieldValidationError):
                    edit.field = self.schema.get(edit.field).name
        requested, edits = list(edits), list(edits)
        answers = await self.hooks.collect(
            "aipersona_before_persona_update", persona=persona, updates=edits, source=source
        )
        refused = [
            Rejected(e, f"{getattr(e, 'field', '?')}: dropped by a plugin")
            for e in requested
            if not any(e is kept for kept in edits)
        ]
        refused += [
            Rejected(e, f"a plugin put a {type(e).__name__} into the updates, not an Edit")
            for e in edits
            if not isinstance(e, Edit)
        ]
        edits = [e for e in edits if isinstance(e, Edit)]
        vetoes = [name for name, answer in answers if answer is False]
        if vetoes:
            refused = [Rejected(e, f"{e.field}: vetoed by {', '.join(vetoes)}") for e in edits]
            if outcome is not None:
                notes = (*outcome.notes, *(r.reason for r in refused))
                await self.storage.finish_update(outcome.update_id, notes, seconds=outcome.seconds)
            self._log(persona_id, source, refused)
            return EditResult([], refused, persona)
        if outcome is not None and refused:  # the tokens and the latency stay with it
            outcome = dataclasses.replace(
                outcome, notes=(*outcome.notes, *(r.reason for r in refused))
            )
        result = await self.storage.apply_edits(
            persona_id, edits, self.schema, source=source, session_ids=session_ids, outcome=outcome
        )
        result.rejected = refused + result.rejected
        self._log(persona_id, source, result.rejected)
        await self.announce(result, source)
        return result

    async def announce(self, result: EditResult, source: str) -> list[Change]:
        """Tell plugins about committed changes (``aipersona_after_persona_update``), also of
        those made outside ``apply`` (rollback, undo); return the changes."""
        if result.changes:
            await self.hooks.notify(
                "aipersona_after_persona_update",
                persona=result.persona,
                changes=result.changes,
                source=source,
            )
        return result.changes

    @staticmethod
    def _log(persona_id: int, source: str, rejected: list[Rejected]) -> None:
        for rej in rejected:
            log.info("persona %s: edit rejected (%s): %s", persona_id, source, rej.reason)

    def context(
        self, persona_id: int, identity: Identity, chat_id: str, session_id: int | None
    ) -> ToolContext:
        """The ``ToolContext`` of a turn: persona tools act on this person only."""

        async def load() -> Persona:
            return await self.storage.load_persona(persona_id)

        async def apply(edits: list[Edit], source: str) -> tuple[list[Change], list[Rejected]]:
            result = await self.apply(
                persona_id, edits, source=source, session_ids=[session_id] if session_id else []
            )
            return result.changes, result.rejected

        return ToolContext(
            persona_id,
            identity,
            chat_id,
            session_id,
            load_persona=load,
            apply_edits=apply,
            schema=self.schema,
        )
