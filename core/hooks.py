"""pluggy hook specifications and plugin loading.

A plugin is any module or object with functions marked ``@aipersona.core.hooks.hookimpl``.
Plugins are found through the ``aipersona`` entry-point group and the ``[plugins] modules``
list in the config. Hooks are called with keyword arguments; implementations may take any
subset of them.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .edits import Change, Edit
    from .personas import Persona
    from .schema import FieldSpec
    from .tools import Tool, ToolContext

PROJECT = "aipersona"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

log = logging.getLogger(__name__)


class PersonaHookSpecs:
    """The hooks aipersona calls. Every argument is passed by keyword."""

    @hookspec
    def aipersona_startup(self, core: Any, settings: dict[str, Any]) -> None:
        """Called once when the core starts. ``settings`` is the plugin's own
        ``[plugins.<name>]`` config table (empty if absent)."""

    @hookspec
    def aipersona_shutdown(self, core: Any) -> None:
        """Called once when the core stops."""

    @hookspec
    def aipersona_persona_fields(self) -> list[FieldSpec] | None:
        """Return extra persona fields (``FieldSpec`` objects or dicts with the same keys:
        ``name`` as ``Category.Field``, ``type`` string/integer/string_list/enum,
        ``description``, ``choices``...). They are validated, shown, learned and exported
        like the built-in fields."""

    @hookspec
    def aipersona_tools(self) -> list[Tool] | None:
        """Return tools (``aipersona.core.tools.Tool``) the chatbot may call."""

    @hookspec
    def aipersona_build_prompt(self, persona: Persona, context: ToolContext) -> str | None:
        """Return a section to add to the system prompt for this turn, or None."""

    @hookspec
    def aipersona_message_received(self, context: ToolContext, text: str) -> None:
        """A user message was received and stored (before the chatbot answers)."""

    @hookspec
    def aipersona_before_persona_update(
        self, persona: Persona, updates: list[Edit], source: str
    ) -> bool | None:
        """Called before edits are applied. Implementations may change ``updates`` in
        place (remove, edit, add items). Returning ``False`` vetoes the whole update."""

    @hookspec
    def aipersona_after_persona_update(
        self, persona: Persona, changes: list[Change], source: str
    ) -> None:
        """Called after edits were committed; ``persona`` holds the new values and
        ``changes`` one entry per changed field (old value, new value, evidence)."""

    @hookspec(firstresult=True)
    def aipersona_before_tool_call(
        self, context: ToolContext, name: str, arguments: dict[str, Any]
    ) -> Any:
        """Called before a tool runs. Return a non-None value to skip the tool and use that
        value as its result (e.g. a policy refusal); raise to make the call fail."""

    @hookspec
    def aipersona_after_tool_call(
        self,
        context: ToolContext,
        name: str,
        arguments: dict[str, Any],
        result: Any,
        error: str | None,
    ) -> None:
        """Called after every tool call, with its result or the error text."""

    @hookspec
    def aipersona_session_ended(self, context: ToolContext, session_id: int, reason: str) -> None:
        """A session ended (idle timeout, explicit end, or shutdown)."""


def make_plugin_manager(
    modules: list[str] = (),  # type: ignore[assignment]
    *,
    entry_points: bool = True,
    disabled: list[str] = (),  # type: ignore[assignment]
    extra: list[object] = (),  # type: ignore[assignment]
) -> pluggy.PluginManager:
    """Build the plugin manager: hookspecs, entry-point plugins, configured modules."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(PersonaHookSpecs)
    for name in disabled:
        pm.set_blocked(name)
    if entry_points:
        pm.load_setuptools_entrypoints(PROJECT)
    for dotted in modules:
        if pm.is_blocked(dotted) or pm.get_plugin(dotted) is not None:
            continue
        try:
            module = importlib.import_module(dotted)
        except ImportError as exc:
            raise ImportError(f"cannot import plugin module {dotted!r}: {exc}") from exc
        pm.register(module, name=dotted)
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


def plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    return pm.get_name(plugin) or repr(plugin)
