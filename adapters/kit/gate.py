"""The gate: which messages and commands get an answer, and which only a notice.

In order: the allow-lists (``allowed_users``, ``allowed_chats``: others get silence, so the
bot cannot be used to probe who is allowed or to spam a chat); whether a group message is
meant for the bot (addressed, or in a ``reply_channels`` chat); the per-user rate limit,
whose notice is given once per wait; and the "only text" notice for media without words,
once per message and once per album. The length of a text is the core's to judge
(``PersonaCore.respond`` refuses an over-long message and stores nothing).

Every decision is made without awaiting, so a platform that handles messages concurrently
still sees them decided in arrival order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from . import texts
from .incoming import Incoming
from .settings import AdapterSettings

ALBUM_MEMORY = 120.0  # seconds an album is remembered as answered
_MAX_KEYS = 10_000  # past this many remembered users, forget the idle ones


class Action(Enum):
    IGNORE = "ignore"  # say nothing
    NOTICE = "notice"  # say ``Verdict.text`` (a notice of the kit), nothing else
    PASS = "pass"  # answer it: chat with ``Verdict.text``, or run the command


@dataclass(frozen=True)
class Verdict:
    action: Action
    text: str = ""
    repeat: bool = False  # a rate-limit notice already given during this wait


IGNORE = Verdict(Action.IGNORE)


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
        if len(self._events) > _MAX_KEYS:
            for k in [k for k, v in self._events.items() if not v or now - v[-1] >= self.window]:
                del self._events[k]
        return 0.0


class Gate:
    """The admission rules of one platform (one per adapter instance)."""

    def __init__(
        self, settings: AdapterSettings, on_limited: Callable[[], None] | None = None
    ) -> None:
        self.settings = settings
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self.on_limited = on_limited  # told of each event refused by the rate limit
        self._told_until: dict[str, float] = {}  # user -> end of the wait they were told of
        self._albums: dict[str, float] = {}  # "chat:album" answered -> when first seen

    def allows(self, msg: Incoming) -> bool:
        """The allow-lists: ``allowed_users`` by user id, ``allowed_chats`` by chat id."""
        s = self.settings
        if s.allowed_users and msg.identity.user_id not in s.allowed_users:
            return False
        return not s.allowed_chats or any(c in s.allowed_chats for c in msg.chat_ids)

    def addressed(self, msg: Incoming) -> bool:
        """Private, mentioning or replying to the bot, or in a ``reply_channels`` chat."""
        if msg.private or msg.addressed:
            return True
        return any(c in self.settings.reply_channels for c in msg.chat_ids)

    def admit(self, msg: Incoming) -> Verdict:
        """A chat message: IGNORE, a NOTICE (rate limit, only text) or PASS with its text."""
        if not (self.allows(msg) and self.addressed(msg)):
            return IGNORE
        if msg.album is not None and not self._first_of_album(f"{msg.chat_id}:{msg.album}"):
            if msg.media_only:
                return IGNORE  # the album got its answer with its first item
        limited = self._rate(msg)
        if limited is not None:
            return IGNORE if limited.repeat else limited
        if msg.media_only:
            return Verdict(Action.NOTICE, texts.ONLY_TEXT)
        return Verdict(Action.PASS, msg.text)

    def admit_command(self, msg: Incoming, *, limited: bool) -> Verdict:
        """A command: IGNORE (not allowed), a rate-limit NOTICE (maybe a repeat) or PASS."""
        if not self.allows(msg):
            return IGNORE
        notice = self._rate(msg) if limited else None
        return notice or Verdict(Action.PASS)

    def _rate(self, msg: Incoming) -> Verdict | None:
        """Count one event of the sender; over the limit, the notice (``repeat`` if the
        sender was already told during this wait)."""
        key = msg.identity.user_id
        wait = self.limiter.hit(key)
        if not wait:
            self._told_until.pop(key, None)
            return None
        if self.on_limited is not None:
            self.on_limited()
        now = time.monotonic()
        repeat = self._told_until.get(key, 0.0) > now
        if not repeat:
            self._told_until[key] = now + wait
            if len(self._told_until) > _MAX_KEYS:
                self._told_until = {k: t for k, t in self._told_until.items() if t > now}
        return Verdict(Action.NOTICE, texts.rate_limited(wait), repeat=repeat)

    def _first_of_album(self, album: str) -> bool:
        """Mark an album as answered; False if it already was."""
        now = time.monotonic()
        if len(self._albums) > 1000:
            self._albums = {k: t for k, t in self._albums.items() if now - t < ALBUM_MEMORY}
        seen = self._albums.get(album)
        if seen is not None and now - seen < ALBUM_MEMORY:
            return False
        self._albums[album] = now
        return True
