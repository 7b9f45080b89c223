"""Example plugin: time zone and locale persona fields, and a ``current_time`` tool.

Enable with ``[plugins] modules = ["aipersona.plugins.timezone"]``. The chatbot learns the
user's IANA time zone (e.g. "Europe/Lisbon") like any other field and can call
``current_time`` to answer "what time is it?" in the user's zone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from aipersona.core import Edit, FieldSpec, Persona, Tool, ToolContext, hookimpl

TIMEZONE_FIELD = "Locale.Timezone"


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Lisbon"
        ) from None


async def current_time(ctx: ToolContext, timezone: str = "") -> dict[str, Any]:
    """The current time in ``timezone``, else the user's stored zone, else UTC."""
    if not timezone and ctx.load_persona is not None:
        persona = await ctx.load_persona()
        timezone = persona.values.get(TIMEZONE_FIELD, "")
    zone = _zone(timezone) if timezone else UTC
    now = datetime.now(zone)
    return {
        "timezone": timezone or "UTC",
        "iso": now.isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
    }


@hookimpl
def aipersona_persona_fields() -> list[FieldSpec]:
    return [
        FieldSpec(
            TIMEZONE_FIELD,
            "string",
            "The user's IANA time zone, e.g. Europe/Lisbon (only if stated or clear).",
            max_chars=64,
            source="timezone",
        ),
        FieldSpec(
            "Locale.Locale",
            "string",
            "Preferred locale for dates, numbers and units, e.g. pt-PT or en-US.",
            max_chars=35,
            source="timezone",
        ),
    ]


@hookimpl
def aipersona_tools() -> list[Tool]:
    return [
        Tool(
            "current_time",
            "Current date and time, in the user's time zone unless another IANA zone is given.",
            {
                "type": "object",
                "properties": {"timezone": {"type": "string", "description": "IANA zone"}},
                "additionalProperties": False,
            },
            current_time,
            timeout=2.0,
        )
    ]


@hookimpl
def aipersona_before_persona_update(updates: list[Edit]) -> None:
    """Drop time zone edits that are not real IANA zones (the rest of the update stays)."""
    zones = available_timezones()
    updates[:] = [
        e
        for e in updates
        if e.field.casefold() != TIMEZONE_FIELD.casefold()
        or e.op == "delete"
        or (isinstance(e.value, str) and e.value in zones)
    ]


@hookimpl
def aipersona_build_prompt(persona: Persona) -> str | None:
    zone = persona.values.get(TIMEZONE_FIELD)
    if not zone:
        return None
    try:
        now = datetime.now(_zone(zone))
    except ValueError:
        return None
    return f"## Local time\nThe user's local time is {now:%A %Y-%m-%d %H:%M} ({zone})."
