"""Platforms are found by name through the entry-point group ``aipersona.adapters``.

Each entry is an :class:`AdapterSpec`: the platform's ``[name]`` config table is validated by
its own settings model (``validate_section``, which the core's config loading calls) and
``run`` serves the platform until a stop event is set. A third-party package adds a platform
by registering its own spec; the core names no platform.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from aipersona.core import PersonaCore

from .settings import AdapterSettings

GROUP = "aipersona.adapters"

Runner = Callable[[PersonaCore, Any, asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    settings: type[AdapterSettings]  # the model of the [name] table
    run: Runner  # run(core, settings, stop_event)

    def validate_section(self, name: str, data: dict[str, Any]) -> AdapterSettings:
        return self.settings.parse(name, data)


def installed_adapters() -> dict[str, AdapterSpec]:
    """Every installed platform, by name."""
    return {ep.name: ep.load() for ep in entry_points(group=GROUP)}
