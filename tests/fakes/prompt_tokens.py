"""Exact prompt-token counts of chat-completion requests, with the o200k vocabulary.

``bpe-openai`` ships the vocabulary inside the package, so this works offline (tiktoken
downloads it at run time). A request is counted the way OpenAI's cookbook counts chat
prompts: every message's content (and the names and arguments of its tool calls) plus 3
tokens per message and 3 that prime the reply; the tool schemas and a structured-output
schema (``response_format``) as their compact JSON, as the client sends them (a server turns
them into its own text or grammar of about that size). What is counted is the request body as
the fake server received it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

with warnings.catch_warnings():  # bpe-openai 0.1 reads its vocabularies with a deprecated call
    warnings.simplefilter("ignore", DeprecationWarning)
    from bpe_openai import get_encoding

    O200K = get_encoding("o200k_base")
PER_MESSAGE = 3
REPLY_PRIMING = 3


def tokens(text: str) -> int:
    return len(O200K.encode(text))


def message_tokens(message: dict[str, Any]) -> int:
    content = message.get("content")
    text = content if isinstance(content, str) else json.dumps(content or "")
    n = PER_MESSAGE + tokens(text)
    for call in message.get("tool_calls") or []:
        n += tokens(call["function"]["name"]) + tokens(call["function"]["arguments"])
    return n


@dataclass
class RequestTokens:
    """One request's prompt tokens, by part."""

    system: int = 0
    schemas: int = 0  # tool schemas, or the optimizer's response_format
    history: int = 0  # everything between the system prompt and the last message
    last: int = 0  # the last message: the user's, or a tool result

    def add(self, other: RequestTokens) -> None:
        self.system += other.system
        self.schemas += other.schemas
        self.history += other.history
        self.last += other.last

    @property
    def total(self) -> int:
        return self.system + self.schemas + self.history + self.last + REPLY_PRIMING


def request_tokens(body: dict[str, Any]) -> RequestTokens:
    messages = body.get("messages") or []
    out = RequestTokens()
    for key in ("tools", "response_format"):
        if body.get(key):
            out.schemas += tokens(json.dumps(body[key], separators=(",", ":")))
    if messages and messages[0].get("role") == "system":
        out.system = message_tokens(messages[0])
        messages = messages[1:]
    if messages:
        out.last = message_tokens(messages[-1])
        out.history = sum(message_tokens(m) for m in messages[:-1])
    return out
