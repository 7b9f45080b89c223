"""What the Discord and Telegram adapters share: settings, access control, rate limiting,
message splitting and the user-facing texts. Platform code stays in the sub-packages."""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aipersona.core import ConfigError, Persona

HELP_TEXT = (
    "I remember what you tell me about yourself (a persona) to personalize my answers.\n"
    "Commands:\n"
    "  persona - show what I know about you (sent privately)\n"
    "  forget FIELD - forget one field, e.g. forget Demographics.Age\n"
    "  forget all - delete everything I stored about you (persona, history, messages)\n"
    "  export - get all your data as a JSON file\n"
    "  end - end the current conversation session now\n"
    "  help - this text"
)


class AdapterSettings(BaseModel):
    """Settings every platform section (``[discord]``, ``[telegram]``) has."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    token_env: str = ""
    allowed_users: list[str] = []
    allowed_chats: list[str] = []
    reply_channels: list[str] = []
    rate_limit_per_minute: int = Field(20, ge=0)
    max_input_chars: int = Field(4000, ge=1)
    stream_edits: bool = False
    stream_edit_interval: float = Field(1.0, gt=0)
    typing: bool = True

    @field_validator("allowed_users", "allowed_chats", "reply_channels", mode="before")
    @classmethod
    def _ids_as_strings(cls, value: Any) -> Any:
        return ids_as_strings(value)

    def token(self) -> str:
        """The bot token from the environment variable named by ``token_env``."""
        if not self.token_env:
            raise ConfigError("token_env is not set")
        value = os.environ.get(self.token_env, "").strip()
        if not value:
            raise ConfigError(f"environment variable {self.token_env} (the bot token) is empty")
        return value

    @classmethod
    def parse(cls, section: str, data: dict[str, Any]) -> Any:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{section}.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"invalid [{section}] config: {problems}") from None

    def user_allowed(self, user_id: object) -> bool:
        return not self.allowed_users or str(user_id) in self.allowed_users

    def chat_allowed(self, chat_id: object) -> bool:
        return not self.allowed_chats or str(chat_id) in self.allowed_chats


def ids_as_strings(value: Any) -> Any:
    """Platform ids may be written as TOML integers; they are compared as strings."""
    if isinstance(value, list):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


class RateLimiter:
    """At most ``per_minute`` events per key in any 60-second window (0 = unlimited)."""

    def __init__(self, per_minute: int, window: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window = window
        self._events: dict[str, deque[float]] = {}

    def hit(self, key: object, now: float | None = None) -> float:
        """Record an event; return 0 if allowed, else seconds until one is allowed."""
        if self.per_minute <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        events = self._events.setdefault(str(key), deque())
        while events and now - events[0] >= self.window:
            events.popleft()
        if len(events) >= self.per_minute:
            return max(0.0, self.window - (now - events[0]))
        events.append(now)
        if len(self._events) > 10_000:  # forget idle keys
            for k in [k for k, v in self._events.items() if not v or now - v[-1] >= self.window]:
                del self._events[k]
        return 0.0


def rate_limited_text(wait: float) -> str:
    return f"You're sending messages quickly; please wait {max(1, round(wait))} s and try again."


ONLY_TEXT = "Sorry, I can only understand text messages, so please type what you want to say."


def too_long_text(length: int, limit: int) -> str:
    return (
        f"Your message is too long ({length:,} characters; the limit is {limit:,}). "
        "Please shorten it."
    )


_FENCE = "```"
_LANG_RE = re.compile(r"[\w+#.-]{0,32}")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


def split_message(text: str, limit: int) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters.

    Prefers paragraph breaks, then line breaks, then sentence ends, then spaces; cuts hard
    only inside a single over-long word. A code fence open at a cut is closed at the end of
    the chunk and reopened (with its language) at the start of the next, so each chunk
    renders as valid Markdown on its own.
    """
    if limit < 16:
        raise ValueError("limit too small")
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    chunks: list[str] = []
    rest = text
    reopen = ""
    while rest:
        budget = limit - len(reopen)
        if len(rest) <= budget and not _open_fence(reopen + rest):
            chunks.append(reopen + rest)
            break
        budget -= len(_FENCE) + 1  # room to close a fence
        cut = _best_cut(rest, max(budget, limit // 2))
        piece, rest = rest[:cut].rstrip(), rest[cut:].lstrip("\n ")
        chunk = reopen + piece
        lang = _open_fence(chunk)
        if lang is not None:
            chunk += "\n" + _FENCE
            reopen = _FENCE + lang + "\n"
        else:
            reopen = ""
        chunks.append(chunk)
    return [c for c in chunks if c.strip()]


def _best_cut(text: str, budget: int) -> int:
    window = text[: budget + 1]
    for sep in ("\n\n", "\n"):
        pos = window.rfind(sep)
        if pos > budget // 3:
            return pos
    ends = [m.start() for m in _SENTENCE_END.finditer(window) if m.start() > budget // 3]
    if ends:
        return ends[-1]
    pos = window.rfind(" ")
    if pos > budget // 3:
        return pos
    return budget


def _open_fence(text: str) -> str | None:
    """If ``text`` ends inside a ``` block, return that block's language tag ('' if none)."""
    lang: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(_FENCE):
            if lang is None:
                tag = stripped[3:].strip()
                # only a short identifier is a language tag; code on the fence line is not
                lang = tag if _LANG_RE.fullmatch(tag) else ""
            else:
                lang = None
    return lang


def persona_lines(persona: Persona | None) -> list[tuple[str, str]]:
    """(field, shown value) pairs in schema order, for the 'persona' command."""
    if persona is None or persona.is_empty():
        return []
    out = []
    for category, fields in persona.nested().items():
        for name, value in fields.items():
            shown = ", ".join(value) if isinstance(value, list) else str(value)
            out.append((f"{category}.{name}", shown))
    return out


def persona_text(persona: Persona | None) -> str:
    lines = persona_lines(persona)
    if not lines:
        return "I don't know anything about you yet."
    return "What I know about you:\n" + "\n".join(f"- {k}: {v}" for k, v in lines)


def any_in(values: Iterable[object], allowed: list[str]) -> bool:
    return any(str(v) in allowed for v in values)
