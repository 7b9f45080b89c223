"""The state every part of the Discord fake shares: configuration, recordings, users, guilds,
members, channels and DMs, permissions, the payloads built from them, and the change
notification that wakes waiters.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import re
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from .connection import _GatewayConn, _Session
from .constants import (
    ALL_PERMISSIONS,
    DEFAULT_APPLICATION_FLAGS,
    DISCORD_EPOCH_MS,
    INTENT_GUILD_MEMBERS,
    PERM_ADMINISTRATOR,
)
from .models import (
    FakeChannel,
    FakeGuild,
    FakeRole,
    InteractionResponse,
    RecordedRequest,
    SentMessage,
    _Fault,
    _Handler,
    _Interaction,
)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class DiscordState:
    """Configuration and state of :class:`~.server.FakeDiscord` (its constructor)."""

    def __init__(
        self,
        *,
        bot_id: int = 1000,
        application_id: int | None = None,
        bot_name: str = "PersonaBot",
        guilds: Sequence[FakeGuild] | None = None,
        shards: int = 1,
        token: str | None = None,
        heartbeat_interval_ms: int = 41250,
        echo_bot_messages: bool = True,
        allowed_intents: int | None = None,
        owner_id: int = 42,
        application_flags: int = DEFAULT_APPLICATION_FLAGS,
        host: str = "127.0.0.1",
    ) -> None:
        """Configure the fake.

        ``token=None`` accepts any bot token; otherwise REST calls and IDENTIFY must use it.
        ``shards`` is the count ``GET /gateway/bot`` recommends (used by AutoShardedBot).
        ``allowed_intents`` (a mask of privileged intents the app may use; ``None`` = all)
        makes IDENTIFY with other privileged intents close with 4014.
        """
        self.bot_id = bot_id
        self.application_id = application_id if application_id is not None else bot_id
        self.bot_name = bot_name
        self.shard_count = shards
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.echo_bot_messages = echo_bot_messages
        self.allowed_intents = allowed_intents
        self.owner_id = owner_id
        self.application_flags = application_flags
        self.host = host

        # recordings
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[RecordedRequest] = []
        self.interaction_responses: list[InteractionResponse] = []
        self.typing_calls: list[int] = []
        self.dm_channels: dict[int, dict[str, Any]] = {}
        self.reactions: list[tuple[int, int, str]] = []
        self.incoming_messages: list[dict[str, Any]] = []
        self.interactions: list[dict[str, Any]] = []
        self.identifies: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.presence_updates: list[dict[str, Any]] = []
        self.gateway_closes: list[int | None] = []
        self.gateway_queries: list[dict[str, str]] = []
        self.heartbeats = 0
        self.connections = 0
        self.errors: list[BaseException] = []

        # state
        self._users: dict[int, dict[str, Any]] = {}
        self._guilds: dict[int, FakeGuild] = {}
        self._members: dict[int, dict[int, dict[str, Any]]] = {}
        self._channels: dict[int, dict[str, Any]] = {}
        self._messages: dict[int, dict[str, Any]] = {}
        self._blobs: dict[int, bytes] = {}
        self._sent: list[SentMessage] = []
        self._commands: dict[int | None, list[dict[str, Any]]] = {}
        self._interactions: dict[int, _Interaction] = {}
        self._interactions_by_token: dict[str, _Interaction] = {}
        self._sessions: dict[str, _Session] = {}
        self._session_counter = 0
        self._conns: set[_GatewayConn] = set()
        self._bg_tasks: set[asyncio.Task[None]] = set()
        self._faults: list[_Fault] = []
        self._changed = asyncio.Event()
        self._last_snowflake = 0
        self._routes: list[tuple[str, re.Pattern[str], _Handler, bool]] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

        self._ensure_user(bot_id, bot_name, bot=True)
        self._ensure_user(owner_id, "owner")
        for spec in guilds if guilds is not None else [FakeGuild()]:
            self._add_guild(copy.deepcopy(spec))
        self._build_routes()

    def _build_routes(self) -> None:
        """Fill ``_routes``; :class:`~.server.FakeDiscord` supplies the REST route table."""
        raise NotImplementedError

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("FakeDiscord is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """Value for ``discord.http.Route.BASE``."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """Value for ``DiscordWebSocket.DEFAULT_GATEWAY`` (and the advertised gateway URL)."""
        return f"ws://{self.host}:{self.port}/"

    @property
    def bot_user(self) -> dict[str, Any]:
        """The bot's user object."""
        return copy.deepcopy(self._users[self.bot_id])

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    # ------------------------------------------------------------------ state helpers

    def _snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = max((ms << 22) | (1 << 17), self._last_snowflake + 1)
        self._last_snowflake = value
        return value

    def _ensure_user(
        self, user_id: int, name: str | None = None, *, bot: bool = False
    ) -> dict[str, Any]:
        user = self._users.get(user_id)
        if user is None:
            username = name or f"user{user_id}"
            user = {
                "id": str(user_id),
                "username": username,
                "discriminator": "0",
                "global_name": None if bot else username,
                "avatar": None,
                "bot": bot,
                "public_flags": 0,
                "flags": 0,
                "banner": None,
                "accent_color": None,
            }
            self._users[user_id] = user
        elif name is not None and user["username"] != name:
            user["username"] = name
            if not user["bot"]:
                user["global_name"] = name
        return user

    def _add_guild(self, spec: FakeGuild) -> None:
        self._guilds[spec.id] = spec
        joined = _now_iso()
        members: dict[int, dict[str, Any]] = {}
        for m in spec.members:
            self._ensure_user(m.id, m.username, bot=m.bot)
            if m.global_name is not None:
                self._users[m.id]["global_name"] = m.global_name
            members[m.id] = self._member_record(m.roles, m.nick, joined)
        members.setdefault(self.bot_id, self._member_record(spec.bot_roles, None, joined))
        self._members[spec.id] = members
        for ch in spec.channels:
            self._channels[ch.id] = self._guild_channel_payload(ch, spec.id)

    @staticmethod
    def _member_record(roles: Sequence[int], nick: str | None, joined: str) -> dict[str, Any]:
        return {
            "roles": [str(r) for r in roles],
            "nick": nick,
            "avatar": None,
            "banner": None,
            "joined_at": joined,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }

    def _member_payload(
        self, guild_id: int, user_id: int, *, with_user: bool = True
    ) -> dict[str, Any]:
        member = copy.deepcopy(self._members[guild_id][user_id])
        if with_user:
            member["user"] = copy.deepcopy(self._users[user_id])
        return member

    def _ensure_member(self, guild_id: int, user_id: int) -> None:
        self._members[guild_id].setdefault(user_id, self._member_record([], None, _now_iso()))

    @staticmethod
    def _guild_channel_payload(ch: FakeChannel, guild_id: int) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": str(ch.id),
            "type": ch.type,
            "guild_id": str(guild_id),
            "name": ch.name,
            "position": ch.position,
            "permission_overwrites": [],
            "parent_id": str(ch.parent_id) if ch.parent_id else None,
            "nsfw": ch.nsfw,
            "flags": 0,
        }
        if ch.type in (0, 5):
            payload.update(
                topic=ch.topic,
                last_message_id=None,
                rate_limit_per_user=0,
                default_thread_rate_limit_per_user=0,
                default_auto_archive_duration=1440,
            )
        elif ch.type in (2, 13):
            payload.update(
                bitrate=64000,
                user_limit=0,
                rtc_region=None,
                video_quality_mode=1,
                last_message_id=None,
                rate_limit_per_user=0,
            )
        return payload

    def _ensure_dm(self, user_id: int, channel_id: int | None = None) -> dict[str, Any]:
        existing = self.dm_channels.get(user_id)
        if existing is not None and (channel_id is None or int(existing["id"]) == channel_id):
            return existing
        cid = channel_id if channel_id is not None else self._snowflake()
        channel = {
            "id": str(cid),
            "type": 1,
            "last_message_id": None,
            "flags": 0,
            "recipients": [copy.deepcopy(self._ensure_user(user_id))],
        }
        self._channels[cid] = channel
        self.dm_channels[user_id] = channel
        self._notify()
        return channel

    def _permissions(self, guild_id: int, user_id: int) -> int:
        guild = self._guilds[guild_id]
        if user_id == guild.owner_id:
            return ALL_PERMISSIONS
        perms = guild.everyone_permissions
        member = self._members[guild_id].get(user_id)
        role_perms = {r.id: r.permissions for r in guild.roles}
        for rid in member["roles"] if member else []:
            perms |= role_perms.get(int(rid), 0)
        return ALL_PERMISSIONS if perms & PERM_ADMINISTRATOR else perms

    def _roles_payload(self, guild: FakeGuild) -> list[dict[str, Any]]:
        roles = [FakeRole(guild.id, "@everyone", guild.everyone_permissions, 0), *guild.roles]
        return [
            {
                "id": str(r.id),
                "name": r.name,
                "permissions": str(r.permissions),
                "position": r.position,
                "color": 0,
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "hoist": False,
                "managed": r.managed,
                "mentionable": False,
                "icon": None,
                "unicode_emoji": None,
                "flags": 0,
                "description": None,
            }
            for r in roles
        ]

    def _guild_payload(self, guild_id: int, *, intents: int | None = None) -> dict[str, Any]:
        """REST guild object, or the full GUILD_CREATE payload when ``intents`` is given."""
        g = self._guilds[guild_id]
        text = [c for c in g.channels if c.type == 0]
        payload: dict[str, Any] = {
            "id": str(g.id),
            "name": g.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(g.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": self._roles_payload(g),
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": str(text[0].id) if text else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "widget_enabled": False,
            "incidents_data": None,
        }
        if intents is None:
            return payload
        members = self._members[guild_id]
        # Without GUILD_MEMBERS Discord only includes the bot itself.
        member_ids = list(members) if intents & INTENT_GUILD_MEMBERS else [self.bot_id]
        payload.update(
            joined_at=members[self.bot_id]["joined_at"],
            large=False,
            unavailable=False,
            lazy=True,
            member_count=len(members),
            members=[self._member_payload(guild_id, uid) for uid in member_ids],
            channels=[copy.deepcopy(self._channels[c.id]) for c in g.channels],
            threads=[],
            voice_states=[],
            presences=[],
            stage_instances=[],
            guild_scheduled_events=[],
            soundboard_sounds=[],
        )
        return payload
