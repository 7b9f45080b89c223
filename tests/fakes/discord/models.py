"""Records of the Discord fake: guild configuration (``FakeGuild`` and its channels, roles and
members), recorded requests, sent messages and interaction responses, and internal records.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .constants import DEFAULT_EVERYONE_PERMISSIONS, EPHEMERAL

_Handler = Callable[..., Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------- configuration


@dataclass
class FakeChannel:
    """A guild channel (type 0 text, 2 voice, 4 category, 5 announcement)."""

    id: int
    name: str = "general"
    type: int = 0
    position: int = 0
    parent_id: int | None = None
    topic: str | None = None
    nsfw: bool = False


@dataclass
class FakeRole:
    """A guild role (the @everyone role is added automatically)."""

    id: int
    name: str
    permissions: int = 0
    position: int = 1
    managed: bool = False


@dataclass
class FakeMember:
    """A guild member (the bot is added automatically)."""

    id: int
    username: str = "user"
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    bot: bool = False
    global_name: str | None = None


def _default_channels() -> list[FakeChannel]:
    return [FakeChannel(5001, "general")]


def _default_members() -> list[FakeMember]:
    return [FakeMember(42, "alice"), FakeMember(43, "bob")]


@dataclass
class FakeGuild:
    """A guild the bot is in. Default: guild 5000 with text channel 5001, alice(42), bob(43)."""

    id: int = 5000
    name: str = "Fake Guild"
    channels: list[FakeChannel] = field(default_factory=_default_channels)
    members: list[FakeMember] = field(default_factory=_default_members)
    roles: list[FakeRole] = field(default_factory=list)
    everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS
    owner_id: int = 42
    bot_roles: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------- recordings


@dataclass
class RecordedFile:
    """A file part of a multipart request."""

    field: str
    filename: str
    data: bytes
    content_type: str | None = None


@dataclass
class RecordedRequest:
    """One REST request as the fake saw it (path is relative to ``/api/v10``)."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: list[RecordedFile] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0
    injected: bool = False

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status}"


@dataclass
class SentMessage:
    """A message the bot created with ``POST /channels/{id}/messages``."""

    id: int
    channel_id: int
    payload: dict[str, Any]
    files: list[RecordedFile]
    message: dict[str, Any]
    reference_message_id: int | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False

    @property
    def content(self) -> str:
        """Current content (after edits)."""
        return str(self.message.get("content") or "")

    @property
    def attachments(self) -> list[dict[str, Any]]:
        """Attachment objects of the current message."""
        return list(self.message.get("attachments") or [])

    @property
    def embeds(self) -> list[dict[str, Any]]:
        """Embeds of the current message."""
        return list(self.message.get("embeds") or [])


@dataclass
class InteractionResponse:
    """An interaction callback, an ``@original`` edit/delete or a followup.

    ``kind`` is one of ``callback``, ``edit_original``, ``delete_original``, ``followup``,
    ``edit_followup``, ``delete_followup``. ``data`` is the callback ``data`` object (for
    callbacks) or the webhook JSON payload (for the others).
    """

    kind: str
    interaction_id: int
    token: str
    type: int | None
    data: dict[str, Any]
    files: list[RecordedFile] = field(default_factory=list)
    message: dict[str, Any] | None = None

    @property
    def flags(self) -> int:
        """Message flags requested (64 = ephemeral)."""
        return int(self.data.get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        """Whether the response/followup was requested as ephemeral."""
        return bool(self.flags & EPHEMERAL)

    @property
    def content(self) -> str | None:
        """Requested content, if any."""
        return self.data.get("content")


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    headers: dict[str, str]
    times: int


@dataclass
class _Interaction:
    id: int
    token: str
    name: str
    guild_id: int | None
    channel_id: int
    user: dict[str, Any]
    payload: dict[str, Any]
    responded: bool = False
    response_type: int | None = None
    original: dict[str, Any] | None = None
    followups: dict[int, dict[str, Any]] = field(default_factory=dict)
