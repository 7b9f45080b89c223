"""The LLM client: the ``openai`` library against any OpenAI-compatible endpoint.

Retries with exponential backoff (honouring ``Retry-After``) and timeouts are the openai
client's own (``max_retries``, ``timeout``). Every failure is raised as ``LLMError`` whose
message is safe to log: it never contains the API key or the prompt.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI

from . import bounded_json
from .config import LLMSettings
from .errors import LLMError, StructuredOutputError

log = logging.getLogger(__name__)


# whose model call this is, for the observers ("chat" unless the caller says otherwise: the
# learning loop sets "optimizer" around its call)
llm_role: ContextVar[str] = ContextVar("aipersona_llm_role", default="chat")
# (role, prompt tokens, completion tokens, the error if it failed, seconds) of one request
CallObserver = Callable[[str, int, int, LLMError | None, float], None]


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text, as the model wrote it


@dataclass
class Completion:
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False  # the endpoint reported no usage: counted as chars / 4

    def estimate_missing_usage(self, messages: list[dict[str, Any]]) -> None:
        """Without the endpoint's usage (some servers send none when streaming), budgets
        still count: about 4 characters per token."""
        if self.prompt_tokens or self.completion_tokens:
            return
        sent = sum(len(str(m.get("content") or "")) for m in messages)
        made = len(self.content) + sum(len(t.arguments) for t in self.tool_calls)
        self.prompt_tokens, self.completion_tokens = sent // 4 + 1, made // 4 + 1
        self.usage_estimated = True

    def assistant_message(self) -> dict[str, Any]:
        """The reply as a message to put back into the conversation."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": tc.arguments},
                }
                for tc in self.tool_calls
            ]
        elif msg["content"] is None:
            msg["content"] = ""
        return msg


@dataclass
class StreamEvent:
    """A piece of a streamed reply: a text delta, or (at the end) the whole completion."""

    delta: str = ""
    completion: Completion | None = None


def describe_error(exc: BaseException) -> str:
    """A short, secret-free description of an openai exception."""
    if isinstance(exc, openai.APITimeoutError):
        return "the model endpoint timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "cannot reach the model endpoint"
    if isinstance(exc, openai.RateLimitError):
        return "the model endpoint is rate limiting (429)"
    if isinstance(exc, openai.AuthenticationError):
        return "the model endpoint refused the API key (401); check the api_key_env variable"
    if isinstance(exc, openai.APIStatusError):
        return f"the model endpoint answered HTTP {exc.status_code}"
    return f"model call failed: {type(exc).__name__}"


RAW_PARAMS = ("messages", "tools", "response_format")
MALFORMED_REPLY = "the model endpoint answered something that is not a chat completion"

_JSON_BLOCK_RE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


def extract_json_object(text: str) -> Any:
    """Parse a JSON object from model text: whole text, a fenced block, or the first {...}.

    The text and every candidate are parsed within ``bounded_json``'s size and depth limits:
    a reply too long or nested too deeply is a StructuredOutputError like any other
    unusable reply (retryable), never a RecursionError.
    """
    text = (text or "").strip()
    if len(text) > bounded_json.MAX_CHARS:
        raise StructuredOutputError(
            f"the model reply is {len(text):,} characters, over the "
            f"{bounded_json.MAX_CHARS:,} a JSON reply may have",
            retryable=True,
        )
    candidates = [text]
    candidates += _JSON_BLOCK_RE.findall(text)
    start = text.find("{")
    if start >= 0:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(text)):
            ch = text[i]
            if in_str:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == '"':
                    in_str = False
            elif ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    candidates.append(text[start : i + 1])
                    break
    too_deep: bounded_json.JSONBoundsError | None = None
    for cand in candidates:
        try:
            value = bounded_json.loads(cand)
        except bounded_json.JSONBoundsError as exc:
            too_deep = exc
            continue
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    if too_deep is not None:
        raise StructuredOutputError(f"the model reply is unusable: {too_deep}", retryable=True)
    raise StructuredOutputError("the model reply holds no JSON object", retryable=True)


class LLMClient:
    """A thin async wrapper over ``openai.AsyncOpenAI`` chat completions."""

    def __init__(self, settings: LLMSettings, *, base_url: str | None = None) -> None:
        self.settings = settings
        self.base_url = base_url or settings.base_url or None
        http_client = None
        if settings.http_client == "aiohttp":
            factory = getattr(openai, "DefaultAioHttpClient", None)
            if factory is None:
                raise LLMError(
                    "[llm] http_client = 'aiohttp' needs a newer openai package", retryable=False
                )
            http_client = factory()
        self.client = AsyncOpenAI(
            api_key=settings.api_key(),
            base_url=self.base_url,
            timeout=settings.timeout_seconds,
            max_retries=settings.max_retries,
            http_client=http_client,
        )
        # in "auto" mode: the structured-output mode this server was found to accept
        self._json_mode: str | None = None
        self.observers: list[CallObserver] = []  # told of every request (metrics)

    def _observe(self, started: float, out: Completion | None, error: LLMError | None) -> None:
        seconds = time.perf_counter() - started
        role = llm_role.get()
        for observer in self.observers:
            if out is not None:
                observer(role, out.prompt_tokens, out.completion_tokens, None, seconds)
            else:
                observer(role, 0, 0, error, seconds)

    async def close(self) -> None:
        await self.client.close()

    async def _create(self, params: dict[str, Any]) -> Any:
        """``chat.completions.create`` with the bulky JSON params passed through untouched.

        The openai client "transforms" typed params by walking every message and every tool
        schema with typing introspection: 2-4 ms of CPU per request with a 20-message
        history and the tool specs, several times aipersona's own per-message work. These
        values are plain JSON already (nothing to rename or encode), so they go in
        ``extra_body``, which is sent as-is and takes precedence over the typed field.
        """
        raw = {key: params.pop(key) for key in RAW_PARAMS if key in params}
        return await self.client.chat.completions.create(**params, messages=[], extra_body=raw)

    def _params(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None,
        model: str | None,
        temperature: float | None,
        max_tokens: int | None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": model or self.settings.model,
            "messages": messages,
            "temperature": self.settings.temperature if temperature is None else temperature,
            "max_tokens": max_tokens or self.settings.max_tokens,
        }
        if tools:
            params["tools"] = tools
        if extra:
            params.update(extra)
        return params

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Completion:
        extra = {"response_format": response_format} if response_format else None
        params = self._params(
            messages,
            tools=tools,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            extra=extra,
        )
        started = time.perf_counter()
        try:
            out = await self._request(params)
        except LLMError as exc:
            self._observe(started, None, exc)
            raise
        out.estimate_missing_usage(messages)
        self._observe(started, out, None)
        return out

    async def _request(self, params: dict[str, Any]) -> Completion:
        try:
            resp = await self._create(params)
        except openai.OpenAIError as exc:
            raise self._wrap(exc) from exc
        except (ValueError, TypeError, RecursionError) as exc:  # a 2xx body that is not JSON
            raise LLMError(MALFORMED_REPLY) from exc
        try:
            return _parse_completion(resp)
        except (AttributeError, TypeError, ValueError, IndexError, KeyError, RecursionError) as exc:
            raise LLMError(MALFORMED_REPLY) from exc

    async def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Yield text deltas as they arrive, then one event carrying the full completion."""
        params = self._params(
            messages, tools=tools, model=model, temperature=temperature, max_tokens=max_tokens
        )
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}  # the usage, in a last chunk
        started = time.perf_counter()
        try:
            async for event in self._stream(params, messages):
                if event.completion is not None:
                    self._observe(started, event.completion, None)
                yield event
        except LLMError as exc:
            self._observe(started, None, exc)
            raise

    async def _stream(
        self, params: dict[str, Any], messages: list[dict[str, Any]]
    ) -> AsyncIterator[StreamEvent]:
        out = Completion()
        calls: dict[int, dict[str, str]] = {}
        try:
            stream = await self._create(params)
            async for chunk in stream:
                if getattr(chunk, "usage", None):
                    out.prompt_tokens = chunk.usage.prompt_tokens or 0
                    out.completion_tokens = chunk.usage.completion_tokens or 0
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta
                if choice.finish_reason:
                    out.finish_reason = choice.finish_reason
                if delta is None:
                    continue
                if delta.content:
                    out.content += delta.content
                    yield StreamEvent(delta=delta.content)
                for tc in delta.tool_calls or []:
                    slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    if tc.id:
                        slot["id"] = tc.id
                    if tc.function is not None:
                        slot["name"] += tc.function.name or ""
                        slot["arguments"] += tc.function.arguments or ""
        except openai.OpenAIError as exc:
            raise self._wrap(exc) from exc
        except (AttributeError, TypeError, ValueError, IndexError, KeyError, RecursionError) as exc:
            raise LLMError(MALFORMED_REPLY) from exc
        if out.finish_reason is None and not out.content and not calls:
            raise LLMError("the model stream ended before any answer")
        for index in sorted(calls):
            slot = calls[index]
            out.tool_calls.append(
                ToolCall(slot["id"] or f"call_{index}", slot["name"], slot["arguments"] or "{}")
            )
        out.estimate_missing_usage(messages)
        yield StreamEvent(completion=out)

    async def complete_json(
        self,
        messages: list[dict[str, Any]],
        *,
        schema: dict[str, Any],
        name: str,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> tuple[Any, Completion]:
        """Ask for a JSON object matching ``schema``; return (parsed object, completion).

        Mode ``json_schema`` sends ``response_format={"type": "json_schema", ...}``; a server
        that rejects it (HTTP 400/422) is retried with ``json_object`` and then with plain
        text, from which the first JSON object is extracted. In ``auto`` mode the working
        mode is remembered for the rest of the process.
        """
        if self.settings.structured_output != "auto":
            modes: list[str] = [self.settings.structured_output]
        else:
            modes = ["json_schema", "json_object", "text"]
            if self._json_mode is not None:
                modes = modes[modes.index(self._json_mode) :]
        last: LLMError | None = None
        for mode in modes:
            response_format: dict[str, Any] | None = None
            if mode == "json_schema":
                response_format = {
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema, "strict": False},
                }
            elif mode == "json_object":
                # "schema" is honoured by llama.cpp (grammar-constrained), ignored elsewhere
                response_format = {"type": "json_object", "schema": schema}
            try:
                completion = await self.complete(
                    messages,
                    model=model,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    response_format=response_format,
                )
            except LLMError as exc:
                if mode != "text" and _rejects_response_format(exc):
                    log.info("endpoint rejected response_format %s; falling back", mode)
                    last = exc
                    continue
                raise
            if self.settings.structured_output == "auto":
                self._json_mode = mode
            return extract_json_object(completion.content), completion
        raise last or LLMError("no structured output mode worked")

    def _wrap(self, exc: openai.OpenAIError) -> LLMError:
        status = getattr(exc, "status_code", None)
        retryable = not isinstance(
            exc, openai.AuthenticationError | openai.PermissionDeniedError | openai.NotFoundError
        )
        err = LLMError(describe_error(exc), retryable=retryable)
        err.status_code = status
        err.detail = str(getattr(exc, "body", None) or "")[:1000]
        return err


def _rejects_response_format(exc: LLMError) -> bool:
    """Did the server refuse the request because of ``response_format``?"""
    status = exc.status_code
    if status in (400, 404, 415, 422):
        return True
    detail = exc.detail
    return status == 500 and ("response_format" in detail or "json_schema" in detail)


def _parse_completion(resp: Any) -> Completion:
    """The Completion in an openai response object (raises on a malformed one)."""
    if not getattr(resp, "choices", None):
        raise LLMError("the model endpoint returned no choices")
    choice = resp.choices[0]
    msg = choice.message
    out = Completion(content=msg.content or "", finish_reason=choice.finish_reason)
    for tc in msg.tool_calls or []:
        fn = getattr(tc, "function", None)
        if fn is None:
            continue
        out.tool_calls.append(
            ToolCall(tc.id or f"call_{len(out.tool_calls)}", fn.name, fn.arguments or "{}")
        )
    if resp.usage:
        out.prompt_tokens = resp.usage.prompt_tokens or 0
        out.completion_tokens = resp.usage.completion_tokens or 0
    return out
