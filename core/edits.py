"""Field-level persona edits: what the optimizer, tools and commands ask for, and their effect."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

from .errors import FieldValidationError
from .schema import FieldSpec, PersonaSchema, clean_text, item_key

Op = Literal["set", "append", "remove", "delete"]
OPS: tuple[str, ...] = ("set", "append", "remove", "delete")
MAX_EVIDENCE_CHARS = 500
_MISSING: Any = object()


@dataclass
class Edit:
    """A requested change of one field."""

    field: str
    op: Op
    value: Any = None
    evidence: str = ""

    @classmethod
    def from_json(cls, raw: Any) -> Edit:
        """Build from untrusted JSON (an LLM reply or tool arguments)."""
        if not isinstance(raw, dict):
            raise FieldValidationError(f"an edit must be an object, got {type(raw).__name__}")
        name = raw.get("field")
        op = raw.get("op", "set")
        if not isinstance(name, str) or not name.strip():
            raise FieldValidationError("an edit needs a 'field' string")
        if op not in OPS:
            raise FieldValidationError(f"{name}: op must be one of {', '.join(OPS)}, got {op!r}")
        evidence = raw.get("evidence", "")
        if not isinstance(evidence, str):
            evidence = json.dumps(evidence, ensure_ascii=False)
        return cls(name.strip(), op, raw.get("value"), clean_text(evidence)[:MAX_EVIDENCE_CHARS])


@dataclass
class Change:
    """An applied edit: one new version of one field."""

    field: str
    op: str
    old_value: Any
    new_value: Any  # None when the field was deleted
    evidence: str = ""
    source: str = ""
    session_ids: list[int] = dataclasses.field(default_factory=list)
    version: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "op": self.op,
            "old_value": self.old_value,
            "new_value": self.new_value,
            "evidence": self.evidence,
            "source": self.source,
            "session_ids": self.session_ids,
            "version": self.version,
        }


@dataclass
class Rejected:
    """An edit that was not applied, and why."""

    edit: Any
    reason: str


def resolve(edit: Edit, schema: PersonaSchema, current: dict[str, Any]) -> tuple[FieldSpec, Any]:
    """Return (spec, new value) for ``edit`` on ``current`` (None means: delete the field).

    Raises FieldValidationError with a readable reason when the edit does not fit the schema.
    A result equal to the current value means: nothing to do.
    """
    spec = schema.get(edit.field)
    old = current.get(spec.name, _MISSING)
    if edit.op == "delete":
        return spec, None
    if edit.value is None:
        raise FieldValidationError(f"{spec.name}: op {edit.op!r} needs a value")
    if edit.op == "set":
        return spec, spec.validate(edit.value)
    if edit.op == "append":
        if spec.type == "string_list":
            base = old if isinstance(old, list) else []
            return spec, spec.validate([*base, *spec.validate(edit.value)])
        if spec.type == "string":
            addition = spec.validate(edit.value)
            if old is _MISSING or not old:
                return spec, addition
            if addition.casefold() in str(old).casefold():
                return spec, old
            return spec, spec.validate(f"{old}; {addition}")
        raise FieldValidationError(f"{spec.name}: cannot append to a {spec.type} field")
    # remove
    if spec.type != "string_list":
        raise FieldValidationError(
            f"{spec.name}: 'remove' works on list fields; use 'delete' to clear a {spec.type}"
        )
    gone = {item_key(v) for v in spec.validate(edit.value)}
    base = old if isinstance(old, list) else []
    kept = [v for v in base if item_key(v) not in gone]
    return spec, (kept or None)


def plan_changes(
    edits: list[Edit],
    schema: PersonaSchema,
    current: dict[str, Any],
    *,
    source: str,
    session_ids: list[int] | None = None,
) -> tuple[list[Change], list[Rejected]]:
    """The changes ``edits`` make to the values ``current``, in order, and the refused edits.

    Pure: storage calls it inside its write transaction with the values read there, so the
    plan and the write see the same persona. Edits that change nothing are dropped.
    """
    values = dict(current)
    changes: list[Change] = []
    rejected: list[Rejected] = []
    for edit in edits:
        try:
            spec, new = resolve(edit, schema, values)
        except FieldValidationError as exc:
            rejected.append(Rejected(edit, str(exc)))
            continue
        old = values.get(spec.name)
        if new == old:
            continue
        if new is None:
            values.pop(spec.name, None)
        else:
            values[spec.name] = new
        changes.append(
            Change(spec.name, edit.op, old, new, edit.evidence, source, session_ids or [])
        )
    return changes, rejected
