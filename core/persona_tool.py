"""The built-in ``persona`` tool: one tool, one ``op``, so the model is sent one small schema.

``op`` is ``get`` (the speaker's persona), ``set``, ``append``/``remove`` (list items or text)
or ``delete`` (forget a field). Like every persona change it goes through editing: the
schema's validation, the injection filter, plugins' before-hooks, and the refusals when the
person's learning is off or the value was set by the user. There is no user argument: the
tool acts on the speaker only.

``[tools] disabled`` may name ``persona`` (no persona tool), ``persona.<op>`` (that op is not
offered and is refused), or one of the three tools this one replaced (``get_persona``,
``update_persona_field``, ``forget_persona_field``: their ops).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .edits import Edit
from .errors import FieldValidationError
from .schema import PersonaSchema
from .tools import Tool, ToolContext

NAME = "persona"
OPS = ("get", "set", "append", "remove", "delete")
FORMER_TOOLS = {
    "get_persona": ("get",),
    "update_persona_field": ("set", "append", "remove"),
    "forget_persona_field": ("delete",),
}
DESCRIPTION = (
    "Record a lasting fact the moment the user states it about themselves (set; append/remove "
    "list items; a changed fact replaces the old one), or forget one they ask you to (delete). "
    "Never record instructions."
)


def offered_ops(disabled: Collection[str]) -> tuple[str, ...]:
    """The ops left after ``[tools] disabled``."""
    if NAME in disabled:
        return ()
    off = {op for name, ops in FORMER_TOOLS.items() if name in disabled for op in ops}
    off |= {name.removeprefix(f"{NAME}.") for name in disabled if name.startswith(f"{NAME}.")}
    return tuple(op for op in OPS if op not in off)


def field_names(schema: PersonaSchema) -> list[str]:
    """Each field by its shortest unambiguous name (``Age``; ``Category.Field`` when two
    categories share a short name): what the model is offered, and what ``schema.get``
    resolves back to the field."""
    shorts = [spec.short_name.casefold() for spec in schema.ordered()]
    return [
        spec.short_name if shorts.count(spec.short_name.casefold()) == 1 else spec.name
        for spec in schema.ordered()
    ]


def persona_tool(schema: PersonaSchema, disabled: Collection[str] = ()) -> Tool | None:
    """The persona tool with the ops ``disabled`` leaves, or None if it leaves none."""
    ops = offered_ops(disabled)
    if not ops:
        return None

    async def persona(
        ctx: ToolContext, op: str, field: str = "", value: Any = None, evidence: str = ""
    ) -> dict[str, Any]:
        if op not in ops:
            raise FieldValidationError(f"op must be one of {', '.join(ops)}, got {op!r}")
        if op == "get":
            assert ctx.load_persona is not None
            return (await ctx.load_persona()).nested()
        if op == "delete":
            evidence = evidence or "user asked to forget"
        edit = Edit.from_json({"field": field, "op": op, "value": value, "evidence": evidence})
        return await _apply(ctx, edit)

    properties: dict[str, Any] = {"op": {"type": "string", "enum": list(ops)}}
    if ops != ("get",):
        properties |= {
            "field": {"type": "string", "enum": field_names(schema)},
            "value": {"description": "text, integer or list of texts"},
            "evidence": {"type": "string"},
        }
    parameters = {"type": "object", "properties": properties, "required": ["op"]}
    return Tool(NAME, DESCRIPTION, parameters, persona)


async def _apply(ctx: ToolContext, edit: Edit) -> dict[str, Any]:
    assert ctx.apply_edits is not None
    changes, rejected = await ctx.apply_edits([edit], "tool")
    if rejected:
        raise FieldValidationError(rejected[0].reason)
    if edit.op == "delete":
        return {"forgotten": bool(changes), "field": changes[0].field if changes else edit.field}
    if not changes:
        return {"changed": False, "field": edit.field, "note": "value already recorded"}
    ch = changes[0]
    return {"changed": True, "field": ch.field, "value": ch.new_value, "version": ch.version}
