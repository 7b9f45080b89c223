"""Platforms are found by name through the entry-point group ``aipersona.adapters``.

Each entry is an ``AdapterSpec``: the platform's ``[name]`` config table is validated by its
own settings model (``validate_section``, called when the config is loaded) and ``run``
serves the platform until a stop event is set. A third-party package adds a platform by
registering its own spec; core names no platform.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from aipersona.core import PersonaCore

GROUP = "aipersona.adapters"

Runner = Callable[[PersonaCore, Any, asyncio.Event], Awaitable[None]]


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    settings: Any  # the pydantic settings model of the [name] table (has .parse)
    run: Runner  # run(core, settings, stop_event)

    def validate_section(self, name: str, data: dict[str, Any]) -> Any:
        return self.settings.parse(name, data)


def installed_adapters() -> dict[str, AdapterSpec]:
    """Every installed platform, by name."""
    return {ep.name: ep.load() for ep in entry_points(group=GROUP)}
