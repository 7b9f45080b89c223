"""Plugin hooks: the specifications, plugin loading, and the one dispatcher that calls them.

A plugin is any module or object with functions marked ``@aipersona.core.hookimpl``. Plugins
come from the ``aipersona`` entry-point group and the ``[plugins] modules`` list. Hooks are
called with keyword arguments; an implementation takes any subset of them, and may be
``async def``.

Every call site goes through ``Hooks`` (notify, collect, first), which keeps pluggy's order
(``tryfirst`` implementations first, then plain ones newest-registered first, then
``trylast``), calls each plugin on its own so that one failing plugin is logged with its
name and never stops the others or the turn, and awaits async implementations. Hook
wrappers (``wrapper=True``/``hookwrapper=True``) would need pluggy's all-or-nothing call
chain, so registering one is refused with a clear error.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from .errors import PluginError

if TYPE_CHECKING:
    from .config import Config
    from .edits import Change, Edit
    from .schema import FieldSpec, PersonaSchema
    from .tools import Tool, ToolContext
    from .types import Persona

PROJECT = "aipersona"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginHost:
    """What ``aipersona_startup`` and ``aipersona_shutdown`` get: facts about this core and a
    way to register plugin objects that belong to it (per-core state, e.g. an open file).
    Objects registered here receive the event hooks (updates, tools, messages, prompts);
    fields and tools are collected before start-up, so they come from ``aipersona_*`` hooks
    of plugins loaded the usual way."""

    config: Config
    schema: PersonaSchema
    data_dir: Path  # a directory for the plugin's files: beside the database by default
    register: Callable[[object], None]


class PersonaHookSpecs:
    """The hooks aipersona calls. Every argument is passed by keyword."""

    @hookspec
    def aipersona_startup(self, host: PluginHost, settings: dict[str, Any]) -> None:
        """Called once when the core starts. ``settings`` is the plugin's own
        ``[plugins.<name>]`` config table (empty if absent)."""

    @hookspec
    def aipersona_shutdown(self, host: PluginHost) -> None:
        """Called once when the core stops."""

    @hookspec
    def aipersona_persona_fields(self) -> list[FieldSpec] | None:
        """Return extra persona fields (``FieldSpec`` objects or dicts with the same keys:
        ``name`` as ``Category.Field``, ``type`` string/integer/string_list/enum,
        ``description``, ``choices``...). They are validated, shown, learned and exported
        like the built-in fields."""

    @hookspec
    def aipersona_disabled_fields(self) -> list[str] | None:
        """Return names of persona fields to switch off, built-in or another plugin's (e.g.
        ``["Memory.Facts"]`` for a bot that keeps no free-form memory). Added to
        ``[persona] disabled_fields``."""

    @hookspec
    def aipersona_tools(self) -> list[Tool] | None:
        """Return tools (``aipersona.core.Tool``) the chatbot may call."""

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
        """Called before edits are applied, in hook order (so a ``tryfirst`` plugin sees the
        edits first). Implementations may change ``updates`` in place (remove, edit, add
        ``Edit`` items). Returning ``False`` vetoes the whole update."""

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
        value as its result (e.g. a policy refusal). A plugin that raises makes the call
        fail (fail closed): the model gets an error result."""

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
        """A session ended (idle timeout or explicit end)."""


def _check_no_wrappers(pm: pluggy.PluginManager, plugin: object) -> None:
    for caller in pm.get_hookcallers(plugin) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper):
                name = plugin_name(pm, plugin)
                pm.unregister(plugin)
                raise PluginError(
                    f"plugin {name}: {caller.name} is a hook wrapper; aipersona calls each "
                    "plugin on its own, so wrappers are not supported (use tryfirst=True or "
                    "trylast=True to choose the order)"
                )


def _default_name(pm: pluggy.PluginManager, plugin: object) -> str:
    """A module's dotted name; for an object, its class's (``pkg.mod.ClassName``), numbered
    when several objects of one class are registered, so logs and settings can name it."""
    base = getattr(plugin, "__name__", None)
    if not isinstance(base, str):
        cls = type(plugin)
        base = f"{cls.__module__}.{cls.__qualname__.replace('<locals>.', '')}"
    name, n = base, 1
    while pm.has_plugin(name) or pm.is_blocked(name):
        n += 1
        name = f"{base}#{n}"
    return name


def register_plugin(pm: pluggy.PluginManager, plugin: object, name: str | None = None) -> None:
    """Register one plugin, refusing hook wrappers (PluginError)."""
    try:
        pm.register(plugin, name=name or _default_name(pm, plugin))
    except (ValueError, pluggy.PluginValidationError) as exc:
        raise PluginError(f"cannot register plugin {name or plugin!r}: {exc}") from None
    _check_no_wrappers(pm, plugin)


def make_plugin_manager(
    modules: list[str] | tuple[str, ...] = (),
    *,
    entry_points: bool = True,
    disabled: list[str] | tuple[str, ...] = (),
    extra: list[object] | tuple[object, ...] = (),
) -> pluggy.PluginManager:
    """Build the plugin manager: hookspecs, entry-point plugins, configured modules."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(PersonaHookSpecs)
    for name in disabled:
        pm.set_blocked(name)
    if entry_points:
        try:
            pm.load_setuptools_entrypoints(PROJECT)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"cannot load an entry-point plugin: {exc}") from None
        for plugin in pm.get_plugins():
            _check_no_wrappers(pm, plugin)
    for dotted in modules:
        if pm.is_blocked(dotted) or pm.get_plugin(dotted) is not None:
            continue
        try:
            module = importlib.import_module(dotted)
        except ImportError as exc:
            raise PluginError(f"cannot import plugin module {dotted!r}: {exc}") from exc
        register_plugin(pm, module, dotted)
    for plugin in extra:
        register_plugin(pm, plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from None
    return pm


def plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    return pm.get_name(plugin) or repr(plugin)


def short_name(name: str) -> str:
    """``aipersona.plugins.audit_log`` -> ``audit_log`` (the ``[plugins.<name>]`` key)."""
    return name.split("#", 1)[0].rsplit(".", 1)[-1]


@dataclass(frozen=True)
class PerPlugin:
    """A hook argument whose value depends on the plugin being called (by its name)."""

    value_for: Callable[[str], Any]


class HookFailed(Exception):
    """A plugin raised in a fail-closed hook call (see ``Hooks.first``)."""

    def __init__(self, plugin: str, hook: str, error: BaseException) -> None:
        super().__init__(f"plugin {plugin} failed in {hook}: {type(error).__name__}: {error}")
        self.plugin = plugin


class Hooks:
    """The one hook dispatcher (see the module docstring)."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    def has(self, hook: str) -> bool:
        """Whether any plugin implements ``hook`` (lets hot paths skip building arguments)."""
        return bool(getattr(self.pm.hook, hook).get_hookimpls())

    def implementations(self, hook: str) -> list[pluggy.HookImpl]:
        """The hook's implementations in pluggy's call order."""
        return list(reversed(getattr(self.pm.hook, hook).get_hookimpls()))

    async def _call(
        self, impl: pluggy.HookImpl, hook: str, kwargs: dict[str, Any], *, fail_closed: bool
    ) -> Any:
        name = plugin_name(self.pm, impl.plugin)
        args = {}
        for key in impl.argnames:
            if key in kwargs:
                value = kwargs[key]
                args[key] = value.value_for(name) if isinstance(value, PerPlugin) else value
        try:
            result = impl.function(**args)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as exc:
            log.exception("plugin %s failed in %s", name, hook)
            if fail_closed:
                raise HookFailed(name, hook, exc) from exc
            return None

    async def notify(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation, in order; failures are logged and skipped."""
        for impl in self.implementations(hook):
            await self._call(impl, hook, kwargs, fail_closed=False)

    async def collect(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """(plugin name, result) of every implementation that returned non-None, in order."""
        out = []
        for impl in self.implementations(hook):
            result = await self._call(impl, hook, kwargs, fail_closed=False)
            if result is not None:
                out.append((plugin_name(self.pm, impl.plugin), result))
        return out

    async def first(self, hook: str, *, fail_closed: bool = False, **kwargs: Any) -> Any:
        """The first non-None result, in order (the rest are not called). With
        ``fail_closed`` a failing plugin raises HookFailed instead of being skipped."""
        for impl in self.implementations(hook):
            result = await self._call(impl, hook, kwargs, fail_closed=fail_closed)
            if result is not None:
                return result
        return None
