"""A loopback fake of an OpenAI-compatible chat completions server (aiohttp on 127.0.0.1).

The real ``openai`` client talks to it over HTTP. Replies are scripted per kind of request:
``"chat"`` (no ``response_format``) and ``"json"`` (structured output, i.e. the persona
optimizer), so background optimizer calls never steal a chat reply. Script items:

- ``"text"``: an assistant message with that content;
- ``Json(obj)``: content ``json.dumps(obj)``;
- ``Tools([("name", {args}), ...])``: tool calls (arguments may be a raw string);
- ``Error(status, body, headers)``: an HTTP error;
- ``Hang(seconds)``: sleep, then answer with the default;
- ``CutStream("partial")``: (streaming) send some content then drop the connection;
- ``Raw(status, text)``: that HTTP body verbatim (even one that is not JSON);
- a callable ``(request_json) -> item``.

With an empty script the defaults answer: chat echoes the last user message, json returns
``{"updates": []}``. Every request body is recorded in ``requests``.

``/v1/embeddings`` answers with ``embed(text)`` per input (default: a hashed bag of words, so
texts sharing words are close); ``embeddings_status`` set to an HTTP status (e.g. 404) makes
it fail like an endpoint without embeddings. Its requests go to ``embedding_requests``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Json:
    value: Any


def updates(*edits: tuple[str, str, Any, str]) -> Json:
    """An optimizer reply from ``(field, op, value, evidence)`` tuples."""
    return Json(
        {
            "updates": [
                dict(zip(("field", "op", "value", "evidence"), e, strict=True)) for e in edits
            ]
        }
    )


@dataclass
class Tools:
    calls: list[tuple[str, Any]]
    content: str = ""


@dataclass
class Error:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Hang:
    seconds: float


@dataclass
class CutStream:
    partial: str = "partial"


@dataclass
class Raw:
    """A raw HTTP answer: any body, even one that is not JSON (sent as application/json)."""

    status: int
    text: str


Item = Any


EMBEDDING_DIM = 64


def bag_of_words_vector(text: str) -> list[float]:
    """A deterministic embedding: word (and CJK character) counts hashed into 64 slots."""
    vec = [0.0] * EMBEDDING_DIM
    for token in re.findall(r"[a-z0-9]+|[\u3400-\u9fff]", text.lower()):
        vec[int(hashlib.sha1(token.encode()).hexdigest(), 16) % EMBEDDING_DIM] += 1.0
    return vec


def kind_of(request: dict[str, Any]) -> str:
    return "json" if request.get("response_format") else "chat"


def last_user_text(request: dict[str, Any]) -> str:
    for msg in reversed(request.get("messages", [])):
        if msg.get("role") == "user":
            content = msg.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def system_text(request: dict[str, Any]) -> str:
    msgs = request.get("messages", [])
    return msgs[0]["content"] if msgs and msgs[0].get("role") == "system" else ""


class FakeOpenAI:
    def __init__(self, *, model: str = "fake-model") -> None:
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.scripts: dict[str, deque[Item]] = {"chat": deque(), "json": deque()}
        self.chat_default: Callable[[dict[str, Any]], Item] = lambda req: (
            f"echo: {last_user_text(req)}"
        )
        self.json_default: Callable[[dict[str, Any]], Item] = lambda req: Json({"updates": []})
        self.reject_json_schema = False
        self.embed: Callable[[str], list[float]] = bag_of_words_vector
        self.embeddings_status: int | None = None  # an HTTP error status for /v1/embeddings
        self.embedding_requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self._counter = 0
        self.port = 0
        self._changed = asyncio.Event()

    # -- set-up ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, kind: str, *items: Item) -> None:
        self.scripts[kind].extend(items)

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if kind_of(r) == "chat"]

    def json_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if kind_of(r) == "json"]

    async def start(self) -> FakeOpenAI:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/embeddings", self._embeddings)
        # a dropped connection cancels its handler, as a real server stops working on it
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for_requests(self, kind: str, count: int, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while len([r for r in self.requests if kind_of(r) == kind]) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} {kind} requests, saw {len(self.requests)} in all"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), 0.05)
            except TimeoutError:
                pass

    # -- handlers -------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.model, "object": "model"}]}
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.embedding_requests.append(body)
        if self.embeddings_status is not None:
            return web.json_response(
                {"error": {"message": "embeddings are not available here"}},
                status=self.embeddings_status,
            )
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        return web.json_response(
            {
                "object": "list",
                "model": body.get("model", self.model),
                "data": [
                    {"object": "embedding", "index": i, "embedding": self.embed(str(t))}
                    for i, t in enumerate(texts)
                ],
                "usage": {
                    "prompt_tokens": sum(len(str(t)) // 4 + 1 for t in texts),
                    "total_tokens": sum(len(str(t)) // 4 + 1 for t in texts),
                },
            }
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self._changed.set()
        kind = kind_of(body)
        rf = body.get("response_format") or {}
        if self.reject_json_schema and rf.get("type") == "json_schema":
            return web.json_response(
                {"error": {"message": "response_format json_schema is not supported"}},
                status=400,
            )
        item: Item = self.scripts[kind].popleft() if self.scripts[kind] else None
        while True:
            if item is None:
                item = (self.chat_default if kind == "chat" else self.json_default)(body)
            if callable(item) and not isinstance(item, type):
                item = item(body)
                continue
            if isinstance(item, Hang):
                await asyncio.sleep(item.seconds)
                item = None
                continue
            break
        if isinstance(item, Raw):
            return web.Response(text=item.text, status=item.status, content_type="application/json")
        if isinstance(item, Error):
            body_ = item.body if item.body is not None else {"error": {"message": "fake error"}}
            return web.json_response(body_, status=item.status, headers=item.headers)
        if body.get("stream"):
            return await self._stream(request, body, item)
        return web.json_response(self._completion(body, item))

    def _message(self, item: Item) -> tuple[dict[str, Any], str]:
        if isinstance(item, Json):
            return {"role": "assistant", "content": json.dumps(item.value)}, "stop"
        if isinstance(item, Tools):
            calls = []
            for name, args in item.calls:
                self._counter += 1
                calls.append(
                    {
                        "id": f"call_{self._counter}",
                        "type": "function",
                        "function": {
                            "name": name,
                            "arguments": args if isinstance(args, str) else json.dumps(args),
                        },
                    }
                )
            return {
                "role": "assistant",
                "content": item.content or None,
                "tool_calls": calls,
            }, "tool_calls"
        if isinstance(item, CutStream):
            return {"role": "assistant", "content": item.partial}, "stop"
        return {"role": "assistant", "content": str(item)}, "stop"

    def _completion(self, body: dict[str, Any], item: Item) -> dict[str, Any]:
        message, finish = self._message(item)
        self._counter += 1
        prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
        return {
            "id": f"chatcmpl-{self._counter}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": prompt_chars // 4,
                "completion_tokens": len(message.get("content") or "") // 4,
                "total_tokens": prompt_chars // 4 + len(message.get("content") or "") // 4,
            },
        }

    async def _stream(
        self, request: web.Request, body: dict[str, Any], item: Item
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        message, finish = self._message(item)
        base = {
            "id": "chatcmpl-stream",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", self.model),
        }

        async def send(delta: dict[str, Any], finish_reason: str | None = None) -> None:
            chunk = {
                **base,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        content = message.get("content") or ""
        for i in range(0, len(content), 7):
            await send({"content": content[i : i + 7]})
        if isinstance(item, CutStream):
            # drop the connection without a finish_reason or [DONE]
            assert request.transport is not None
            request.transport.close()
            return resp
        for index, call in enumerate(message.get("tool_calls") or []):
            args = call["function"]["arguments"]
            await send(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {
                                "name": call["function"]["name"],
                                "arguments": args[: len(args) // 2],
                            },
                        }
                    ]
                }
            )
            await send(
                {
                    "tool_calls": [
                        {"index": index, "function": {"arguments": args[len(args) // 2 :]}}
                    ]
                }
            )
        await send({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):  # as OpenAI does
            usage = self._completion(body, item)["usage"]
            last = {**base, "choices": [], "usage": usage}
            await resp.write(f"data: {json.dumps(last)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
