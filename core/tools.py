"""The Tool Executor: OpenAI function calling with the built-in persona tool and plugin tools.

A tool that raises, times out, or gets malformed arguments produces an error *result* that is
given back to the model; the turn goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import bounded_json
from .edits import Change, Edit, Rejected
from .errors import FieldValidationError
from .hooks import HookFailed, Hooks
from .schema import PersonaSchema
from .types import Identity, Persona, ToolResult

log = logging.getLogger(__name__)

MAX_ARGUMENT_CHARS = 64_000


ApplyEdits = Callable[[list[Edit], str], Awaitable[tuple[list[Change], list[Rejected]]]]


@dataclass
class ToolContext:
    """Who a turn is for. Persona tools act only on this person; there is no way to name
    another user in a tool call."""

    persona_id: int
    identity: Identity
    chat_id: str
    session_id: int | None = None
    load_persona: Callable[[], Awaitable[Persona]] | None = None
    apply_edits: (
        Callable[[list[Edit], str], Awaitable[tuple[list[Change], list[Rejected]]]] | None
    ) = None
    schema: PersonaSchema | None = None


Handler = Callable[..., Any]


@dataclass
class Tool:
    """A function the chatbot may call. ``handler(context, **arguments)`` may be async."""

    name: str
    description: str
    parameters: dict[str, Any]
    handler: Handler
    timeout: float | None = None
    source: str = "builtin"

    def openai_spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class ToolExecutor:
    """Runs tool calls: the built-in persona tools, plugin tools and scoped extra tools."""

    def __init__(self, hooks: Hooks, default_timeout: float = 15.0) -> None:
        self.hooks = hooks
        self.default_timeout = default_timeout
        self.tools: dict[str, Tool] = {}

    def register(self, tool: Tool) -> None:
        if tool.name in self.tools:
            raise ValueError(
                f"tool {tool.name!r} is registered twice ({self.tools[tool.name].source} and "
                f"{tool.source})"
            )
        self.tools[tool.name] = tool

    @contextlib.contextmanager
    def scoped(self, tools: list[Tool]) -> Iterator[None]:
        """Offer ``tools`` to the model until the block ends (ValueError on a name clash)."""
        added: list[str] = []
        try:
            for tool in tools:
                self.register(tool)
                added.append(tool.name)
            yield
        finally:
            for name in added:
                self.tools.pop(name, None)

    def specs(self) -> list[dict[str, Any]]:
        return [t.openai_spec() for t in self.tools.values()]

    async def call(
        self, context: ToolContext, call_id: str, name: str, raw_arguments: str
    ) -> ToolResult:
        """Run one tool call; never raises for tool failures."""
        result = ToolResult(call_id, name, {})
        tool = self.tools.get(name)
        try:
            args = bounded_json.loads(raw_arguments or "{}", max_chars=MAX_ARGUMENT_CHARS)
            if not isinstance(args, dict):
                raise ValueError("arguments must be a JSON object")
            result.arguments = args
        except ValueError as exc:
            result.error = f"invalid arguments for {name}: {exc}"
        if tool is None and result.error is None:
            result.error = f"unknown tool {name!r}; available: {', '.join(self.tools) or 'none'}"
        if result.error is None and tool is not None:
            try:
                override = await self.hooks.first(
                    "aipersona_before_tool_call",
                    fail_closed=True,
                    context=context,
                    name=name,
                    arguments=result.arguments,
                )
                if override is not None:
                    result.result = override
                else:
                    result.result = await self._run(tool, context, result.arguments)
            except asyncio.CancelledError:
                raise
            except HookFailed as exc:
                result.error = f"tool {name} refused: {exc}"
            except TimeoutError:
                result.error = f"tool {name} timed out"
            except FieldValidationError as exc:  # a refused edit: expected, told to the model
                log.info("tool %s refused: %s", name, exc)
                result.error = f"tool {name} refused: {exc}"
            except TypeError as exc:
                result.error = f"bad arguments for {name}: {exc}"
            except Exception as exc:
                log.warning("tool %s failed: %s", name, exc, exc_info=True)
                result.error = f"tool {name} failed: {type(exc).__name__}: {exc}"
        await self.hooks.notify(
            "aipersona_after_tool_call",
            context=context,
            name=name,
            arguments=result.arguments,
            result=result.result,
            error=result.error,
        )
        return result

    async def _run(self, tool: Tool, context: ToolContext, args: dict[str, Any]) -> Any:
        timeout = tool.timeout or self.default_timeout

        async def invoke() -> Any:
            value = tool.handler(context, **args)
            if inspect.isawaitable(value):
                value = await value
            return value

        async with asyncio.timeout(timeout):
            return await invoke()
