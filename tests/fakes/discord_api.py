"""Loopback fake of the Discord gateway (websocket) and REST API for the real discord.py.

The fake is an ``aiohttp.web`` server on 127.0.0.1 (ephemeral port) that speaks enough of the
Discord v10 protocol for ``discord.Client`` / ``commands.Bot`` / ``AutoShardedBot`` to log in,
connect, shard, resume, receive messages and interactions, and call the REST routes a chat bot
uses.  Point discord.py at it with :func:`patched_discord`::

    async with FakeDiscord() as fake:
        with patched_discord(fake):
            bot = commands.Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.1)
            async with running_bot(bot):
                await fake.send_message(5001, 42, "hello")
                sent = await fake.wait_for(lambda: fake.sent_messages(5001))

Behaviour that mirrors real Discord (and that adapters must cope with):

* the bot's own messages are echoed back as ``MESSAGE_CREATE`` (``echo_bot_messages``);
* guild messages arrive with empty content unless the MESSAGE_CONTENT intent was identified
  (DMs, messages mentioning the bot and the bot's own messages keep their content);
* events are only delivered for identified intents (GUILD_MESSAGES / DIRECT_MESSAGES);
* guild events go to the shard ``(guild_id >> 22) % num_shards``; DMs go to shard 0;
* content over 2000 characters is rejected with the 50035 "Invalid Form Body" error;
* a second response to the same interaction fails with 40060, unknown interactions with 10062.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import inspect
import json
import logging
import mimetypes
import re
import secrets
import socket
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import discord
import discord.asset
import discord.gateway
import discord.http
import yarl
from aiohttp import BodyPartReader, WSMsgType, web

__all__ = [
    "DEFAULT_EVERYONE_PERMISSIONS",
    "EPHEMERAL",
    "FAKE_TOKEN",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeRole",
    "InteractionResponse",
    "RecordedFile",
    "RecordedRequest",
    "SentMessage",
    "patched_discord",
    "running_bot",
]

_log = logging.getLogger(__name__)

FAKE_TOKEN = "FAKE.DISCORD.TOKEN"
DISCORD_EPOCH_MS = 1_420_070_400_000

# Gateway intents (https://discord.com/developers/docs/events/gateway#gateway-intents).
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Permission bits.
PERM_ADMINISTRATOR = 1 << 3
PERM_VIEW_CHANNEL = 1 << 10
PERM_SEND_MESSAGES = 1 << 11
PERM_ATTACH_FILES = 1 << 15
ALL_PERMISSIONS = (1 << 51) - 1
DEFAULT_EVERYONE_PERMISSIONS = (
    (1 << 0)  # CREATE_INSTANT_INVITE
    | (1 << 6)  # ADD_REACTIONS
    | PERM_VIEW_CHANNEL
    | PERM_SEND_MESSAGES
    | (1 << 14)  # EMBED_LINKS
    | PERM_ATTACH_FILES
    | (1 << 16)  # READ_MESSAGE_HISTORY
    | (1 << 18)  # USE_EXTERNAL_EMOJIS
    | (1 << 20)  # CONNECT
    | (1 << 21)  # SPEAK
    | (1 << 26)  # CHANGE_NICKNAME
    | (1 << 31)  # USE_APPLICATION_COMMANDS
    | (1 << 35)  # CREATE_PUBLIC_THREADS
    | (1 << 38)  # SEND_MESSAGES_IN_THREADS
)
DM_PERMISSIONS = (
    PERM_VIEW_CHANNEL | PERM_SEND_MESSAGES | (1 << 14) | PERM_ATTACH_FILES | (1 << 16) | (1 << 6)
)

# Message flags.
EPHEMERAL = 1 << 6
LOADING = 1 << 7

# GATEWAY_PRESENCE_LIMITED | GATEWAY_GUILD_MEMBERS_LIMITED | GATEWAY_MESSAGE_CONTENT_LIMITED
DEFAULT_APPLICATION_FLAGS = (1 << 13) | (1 << 15) | (1 << 19)
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
_MAX_BUFFERED_EVENTS = 2000
_CLOSE_TIMEOUT = 3.0

_T = TypeVar("_T")
_Handler = Callable[..., Awaitable[web.StreamResponse]]
_MENTION_RE = re.compile(r"<@!?(\d+)>")
_COMMAND_NAME_RE = re.compile(r"^[-_\w]{1,32}$")
# 1x1 transparent PNG served for any CDN asset.
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


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


# --------------------------------------------------------------------------- gateway plumbing


def _zstd_compressor() -> Callable[[bytes], bytes] | None:
    """Streaming zstd compressor matching discord.py's zstd-stream decoder, if available."""
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            return None
        std = zstd.ZstdCompressor()
        return lambda raw: std.compress(raw, mode=zstd.ZstdCompressor.FLUSH_BLOCK)
    cobj = zstandard.ZstdCompressor().compressobj()
    return lambda raw: cobj.compress(raw) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)


class _GatewayConn:
    """One websocket connection; serialises (and optionally compresses) outgoing frames."""

    def __init__(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        self.ws = ws
        self.compress = compress
        self.session: _Session | None = None
        self.closing = False
        self.lock = asyncio.Lock()
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd = _zstd_compressor() if compress == "zstd-stream" else None
        if compress not in (None, "zlib-stream", "zstd-stream") or (
            compress == "zstd-stream" and self._zstd is None
        ):
            raise ValueError(f"unsupported gateway compression {compress!r}")

    @property
    def alive(self) -> bool:
        return not self.closing and not self.ws.closed

    async def send(self, payload: Mapping[str, Any]) -> None:
        raw = json.dumps(payload, separators=(",", ":"))
        async with self.lock:
            if self._zlib is not None:
                data = self._zlib.compress(raw.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)
            elif self._zstd is not None:
                await self.ws.send_bytes(self._zstd(raw.encode()))
            else:
                await self.ws.send_str(raw)

    async def close(self, code: int, reason: str = "") -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode()), _CLOSE_TIMEOUT
            )


@dataclass
class _Session:
    session_id: str
    shard: tuple[int, int]
    intents: int
    order: int
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    conn: _GatewayConn | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ended: bool = False


# --------------------------------------------------------------------------- helpers


def _json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """JSON response with Content-Type exactly ``application/json`` (discord.py checks it)."""
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    return web.Response(status=status, body=json.dumps(data).encode(), headers=hdrs)


def _error(status: int, code: int, message: str, errors: Any = None) -> web.Response:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return _json_response(body, status)


def _form_error(path: Sequence[str], code: str, message: str) -> web.Response:
    """Discord's 50035 "Invalid Form Body" error with a nested ``errors`` tree."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path):
        errors = {key: errors}
    return _error(400, 50035, "Invalid Form Body", errors)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _infer_option_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


# --------------------------------------------------------------------------- the fake


class FakeDiscord:
    """Loopback Discord gateway + REST API (see the module docstring)."""

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

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeDiscord:
        """Start serving on an ephemeral port."""
        if self._runner is not None:
            return self
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/", self._ws_handler)
        app.router.add_route("*", "/api/{tail:.*}", self._rest_handler)
        app.router.add_get(
            "/attachments/{channel_id}/{attachment_id}/{filename}", self._attachment_handler
        )
        app.router.add_get("/cdn/{tail:.*}", self._cdn_handler)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner
        return self

    async def stop(self) -> None:
        """Close all gateway connections and stop the server."""
        conns = list(self._conns)
        for conn in conns:
            conn.closing = True
        await asyncio.gather(*(c.close(1001, "Going away") for c in conns))
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

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

    # ------------------------------------------------------------------ public inspection

    def sent_messages(self, channel_id: int | None = None) -> list[SentMessage]:
        """Messages the bot posted via ``POST /channels/{id}/messages`` (optionally filtered)."""
        return [m for m in self._sent if channel_id is None or m.channel_id == channel_id]

    @property
    def synced_commands(self) -> dict[int | None, list[dict[str, Any]]]:
        """Registered application commands by guild id (``None`` = global)."""
        return {k: copy.deepcopy(v) for k, v in self._commands.items()}

    def command_id(self, name: str, guild_id: int | None = None) -> int:
        """Id the fake assigned to a synced command."""
        for cmd in self._commands.get(guild_id, []):
            if cmd["name"] == name:
                return int(cmd["id"])
        raise KeyError(f"command {name!r} is not synced for guild {guild_id}")

    def followups(self) -> list[InteractionResponse]:
        """Interaction followup messages only."""
        return [r for r in self.interaction_responses if r.kind == "followup"]

    def message(self, message_id: int) -> dict[str, Any] | None:
        """A stored (non-ephemeral) message by id."""
        return self._messages.get(message_id)

    def attachment_bytes(self, attachment_id: int | str) -> bytes:
        """Bytes of an uploaded attachment."""
        return self._blobs[int(attachment_id)]

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        """Recorded requests matching a method (or ``*``) and a path regex."""
        pat = re.compile(path_regex)
        return [
            r
            for r in self.requests
            if (method == "*" or r.method == method.upper()) and pat.search(r.path)
        ]

    @property
    def connected_shards(self) -> list[tuple[int, int]]:
        """``(shard_id, shard_count)`` of sessions with a live websocket."""
        return sorted(
            s.shard for s in self._sessions.values() if s.conn is not None and s.conn.alive
        )

    async def wait_for(
        self,
        predicate: Callable[..., _T],
        timeout: float = 5.0,  # noqa: ASYNC109 (part of the requested API)
    ) -> _T:
        """Wait until ``predicate()`` (or ``predicate(fake)``) is truthy and return its value.

        Re-evaluated on every recorded request / gateway event and every 50 ms; raises
        ``AssertionError`` listing recent requests on timeout.
        """
        try:
            wants_arg = len(inspect.signature(predicate).parameters) > 0
        except (TypeError, ValueError):
            wants_arg = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate(self) if wants_arg else predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(self._timeout_report(timeout))
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.05))

    def _timeout_report(self, timeout: float) -> str:
        lines = [f"FakeDiscord.wait_for timed out after {timeout}s. Recent requests:"]
        lines += [f"  {r}" for r in self.requests[-20:]] or ["  (none)"]
        if self.unknown_requests:
            lines.append("Unknown routes: " + ", ".join(str(r) for r in self.unknown_requests))
        if self.errors:
            lines.append("Fake errors: " + ", ".join(repr(e) for e in self.errors))
        lines.append(f"Gateway: identifies={len(self.identifies)} resumes={len(self.resumes)}")
        for s in self._sessions.values():
            state = "connected" if s.conn is not None and s.conn.alive else "DISCONNECTED"
            lines.append(
                f"  session shard={s.shard} {state} intents={s.intents} seq={s.seq}"
                " (events for a disconnected session are buffered until RESUME)"
            )
        return "\n".join(lines)

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int = 429,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        times: int = 1,
        retry_after: float = 0.01,
    ) -> None:
        """Make the next ``times`` matching REST requests fail.

        ``method`` may be ``*``; ``path_regex`` is searched in the path relative to
        ``/api/v10`` (e.g. ``r"/channels/5001/messages$"``). A 429 gets Discord's rate-limit
        body and ``X-RateLimit-*``/``Retry-After`` headers (plus ``Via``, without which
        discord.py treats a 429 as a Cloudflare ban) so discord.py sleeps ``retry_after``
        seconds and retries.
        """
        hdrs: dict[str, str] = {}
        if status == 429:
            if body is None:
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": retry_after,
                    "global": False,
                }
            hdrs = {
                "Retry-After": str(max(1, int(retry_after + 0.999))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                "X-RateLimit-Bucket": "fake-bucket",
                "X-RateLimit-Scope": "user",
                "Via": "1.1 google",
            }
        elif body is None:
            body = {"message": f"{status}: Injected failure", "code": 0}
        hdrs.update(headers or {})
        self._faults.append(
            _Fault(method.upper(), re.compile(path_regex), status, body, hdrs, times)
        )

    def _take_fault(self, method: str, path: str) -> web.Response | None:
        for fault in self._faults:
            if fault.method in ("*", method) and fault.pattern.search(path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                if isinstance(fault.body, (dict, list)):
                    return _json_response(fault.body, fault.status, fault.headers)
                body = fault.body.encode() if isinstance(fault.body, str) else fault.body
                return web.Response(status=fault.status, body=body, headers=fault.headers)
        return None

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

    def _application_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot_name,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": self.application_flags,
            "owner": copy.deepcopy(self._users[self.owner_id]),
            "team": None,
            "hook": True,
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "tags": [],
            "bot": self.bot_user,
            "approximate_guild_count": len(self._guilds),
            "integration_types_config": {"0": {}},
        }

    def _mentions_in(self, content: str) -> list[dict[str, Any]]:
        seen: list[int] = []
        for raw in _MENTION_RE.findall(content or ""):
            uid = int(raw)
            if uid not in seen:
                seen.append(uid)
        return [copy.deepcopy(self._ensure_user(uid)) for uid in seen]

    def _resolve_location(
        self, guild_id: int | None, channel_id: int | None, user_id: int
    ) -> tuple[int | None, int]:
        """(guild_id, channel_id) for an incoming event; unknown non-guild channels are DMs."""
        if channel_id is not None:
            channel = self._channels.get(channel_id)
            if channel is not None and "guild_id" in channel:
                gid = int(channel["guild_id"])
                if guild_id is not None and guild_id != gid:
                    raise ValueError(f"channel {channel_id} belongs to guild {gid}, not {guild_id}")
                return gid, channel_id
            if guild_id is not None:
                raise ValueError(f"unknown channel {channel_id} in guild {guild_id}")
            if channel is not None and channel["type"] == 1:
                return None, channel_id
            return None, int(self._ensure_dm(user_id, channel_id)["id"])
        if guild_id is not None:
            if guild_id not in self._guilds:
                raise ValueError(f"unknown guild {guild_id}")
            text = [c for c in self._guilds[guild_id].channels if c.type in (0, 5)]
            if not text:
                raise ValueError(f"guild {guild_id} has no text channel")
            return guild_id, text[0].id
        return None, int(self._ensure_dm(user_id)["id"])

    def _make_attachments(
        self,
        channel_id: int,
        meta: Sequence[Mapping[str, Any]] | None,
        files: Sequence[RecordedFile],
    ) -> list[dict[str, Any]]:
        by_index = {str(m.get("id")): m for m in meta or [] if isinstance(m, Mapping)}
        out: list[dict[str, Any]] = []
        for i, f in enumerate(files):
            match = re.fullmatch(r"files\[(\d+)\]", f.field)
            info = by_index.get(match.group(1) if match else str(i), {})
            filename = str(info.get("filename") or f.filename)
            aid = self._snowflake()
            self._blobs[aid] = f.data
            url = f"{self.base_url}/attachments/{channel_id}/{aid}/{quote(filename)}"
            attachment: dict[str, Any] = {
                "id": str(aid),
                "filename": filename,
                "size": len(f.data),
                "url": url,
                "proxy_url": url,
                "content_type": mimetypes.guess_type(filename)[0] or "application/octet-stream",
            }
            if info.get("description"):
                attachment["description"] = info["description"]
            out.append(attachment)
        return out

    def _build_message(
        self,
        *,
        channel_id: int,
        guild_id: int | None,
        author_id: int,
        content: str,
        attachments: list[dict[str, Any]] | None = None,
        embeds: list[Any] | None = None,
        components: list[Any] | None = None,
        mentions: list[dict[str, Any]] | None = None,
        flags: int = 0,
        msg_type: int = 0,
        reference: dict[str, Any] | None = None,
        webhook_id: int | None = None,
        interaction: _Interaction | None = None,
        tts: bool = False,
        nonce: Any = None,
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "id": str(self._snowflake()),
            "channel_id": str(channel_id),
            "author": copy.deepcopy(self._users[author_id]),
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": tts,
            "mention_everyone": False,
            "mentions": mentions if mentions is not None else self._mentions_in(content),
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": embeds or [],
            "pinned": False,
            "type": msg_type,
            "flags": flags,
            "components": components or [],
        }
        if guild_id is not None:
            msg["guild_id"] = str(guild_id)
            if author_id in self._members.get(guild_id, {}):
                msg["member"] = self._member_payload(guild_id, author_id, with_user=False)
        if nonce is not None:
            msg["nonce"] = nonce
        if reference is not None:
            msg["message_reference"] = reference
            ref_id = reference.get("message_id")
            referenced = self._messages.get(int(ref_id)) if ref_id else None
            msg["referenced_message"] = copy.deepcopy(referenced)
        if webhook_id is not None:
            msg["webhook_id"] = str(webhook_id)
            msg["application_id"] = str(self.application_id)
        if interaction is not None:
            owners = {"0": str(interaction.guild_id or 0)}
            msg["interaction_metadata"] = {
                "id": str(interaction.id),
                "type": 2,
                "name": interaction.name,
                "command_type": 1,
                "user": copy.deepcopy(interaction.user),
                "authorizing_integration_owners": owners,
            }
            msg["interaction"] = {
                "id": str(interaction.id),
                "type": 2,
                "name": interaction.name,
                "user": copy.deepcopy(interaction.user),
            }
        return msg

    def _store_message(self, msg: dict[str, Any]) -> None:
        if int(msg.get("flags") or 0) & EPHEMERAL:
            return
        self._messages[int(msg["id"])] = msg
        channel = self._channels.get(int(msg["channel_id"]))
        if channel is not None and "last_message_id" in channel:
            channel["last_message_id"] = msg["id"]

    @staticmethod
    def _validate_content(
        body: Mapping[str, Any],
        files: Sequence[RecordedFile],
        *,
        prefix: Sequence[str] = (),
        require: bool = True,
    ) -> web.Response | None:
        content = body.get("content")
        if content is not None and not isinstance(content, str):
            return _form_error([*prefix, "content"], "BASE_TYPE_STRING", "Must be a string.")
        if content is not None and len(content) > 2000:
            return _form_error(
                [*prefix, "content"], "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length."
            )
        embeds = body.get("embeds") or []
        if len(embeds) > 10:
            return _form_error(
                [*prefix, "embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."
            )
        has_any = (
            content
            or embeds
            or files
            or body.get("sticker_ids")
            or body.get("components")
            or body.get("poll")
        )
        if require and not has_any:
            return _error(400, 50006, "Cannot send an empty message")
        return None

    # ------------------------------------------------------------------ gateway: routing

    def _session_for(self, guild_id: int | None) -> _Session | None:
        """Most recent live session whose shard owns ``guild_id`` (shard 0 for DMs)."""
        best: _Session | None = None
        for s in self._sessions.values():
            if s.ended:
                continue
            index, count = s.shard
            owned = index == 0 if guild_id is None else (guild_id >> 22) % count == index
            if owned and (best is None or s.order > best.order):
                best = s
        return best

    async def _send_locked(self, session: _Session, event: str, data: Any) -> None:
        """Send a DISPATCH (caller holds ``session.lock``); buffered for RESUME replay."""
        session.seq += 1
        payload = {"op": 0, "t": event, "s": session.seq, "d": copy.deepcopy(data)}
        if event not in ("READY", "RESUMED"):
            session.events.append(payload)
            del session.events[:-_MAX_BUFFERED_EVENTS]
        conn = session.conn
        if conn is not None and conn.alive:
            try:
                await conn.send(payload)
            except (ConnectionError, RuntimeError) as exc:  # replayed on RESUME
                _log.debug("fake gateway: dropped %s: %r", event, exc)

    async def dispatch(
        self, event: str, data: Any, *, guild_id: int | None = None, required: bool = True
    ) -> bool:
        """Send a raw DISPATCH event to the session owning ``guild_id`` (shard 0 if None).

        Returns False (or raises ``RuntimeError`` when ``required``) if no bot is identified.
        """
        session = self._session_for(guild_id)
        if session is None:
            if required:
                raise RuntimeError(
                    f"FakeDiscord: no gateway session for guild {guild_id} to send {event}"
                )
            return False
        async with session.lock:
            await self._send_locked(session, event, data)
        self._notify()
        return True

    async def _dispatch_message_event(
        self, event: str, msg: dict[str, Any], *, required: bool
    ) -> bool:
        """MESSAGE_* dispatch honouring GUILD_MESSAGES/DIRECT_MESSAGES/MESSAGE_CONTENT."""
        guild_id = int(msg["guild_id"]) if msg.get("guild_id") else None
        session = self._session_for(guild_id)
        if session is None:
            if required:
                raise RuntimeError(f"FakeDiscord: no gateway session to deliver {event}")
            return False
        needed = INTENT_GUILD_MESSAGES if guild_id is not None else INTENT_DIRECT_MESSAGES
        if not session.intents & needed:
            return False
        data = msg
        author_id = int(msg.get("author", {}).get("id", 0))
        mentioned = any(int(u["id"]) == self.bot_id for u in msg.get("mentions") or [])
        if (
            guild_id is not None
            and event != "MESSAGE_DELETE"
            and not session.intents & INTENT_MESSAGE_CONTENT
            and author_id != self.bot_id
            and not mentioned
        ):
            data = {**msg, "content": "", "embeds": [], "attachments": [], "components": []}
            data.pop("poll", None)
        async with session.lock:
            await self._send_locked(session, event, data)
        self._notify()
        return True

    async def _echo(self, event: str, msg: dict[str, Any]) -> None:
        if self.echo_bot_messages and not int(msg.get("flags") or 0) & EPHEMERAL:
            await self._dispatch_message_event(event, msg, required=False)

    # ------------------------------------------------------------------ gateway: control

    async def disconnect_all(self, code: int = 4000) -> None:
        """Close every gateway websocket with ``code`` (4000 → discord.py RESUMEs)."""
        conns = list(self._conns)
        for conn in conns:
            conn.closing = True
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None
        await asyncio.gather(*(c.close(code, "Forced disconnect") for c in conns))

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT on every connection (discord.py closes and RESUMEs)."""
        for conn in list(self._conns):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.send({"op": 7, "d": None, "s": None, "t": None})

    async def invalidate_sessions(self, *, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION; non-resumable sessions are forgotten (→ re-IDENTIFY)."""
        for conn in list(self._conns):
            if not resumable and conn.session is not None:
                conn.session.ended = True
                self._sessions.pop(conn.session.session_id, None)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.send({"op": 9, "d": resumable, "s": None, "t": None})

    # ------------------------------------------------------------------ gateway: protocol

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0, timeout=_CLOSE_TIMEOUT)
        await ws.prepare(request)
        self.connections += 1
        self.gateway_queries.append(dict(request.query))
        try:
            conn = _GatewayConn(ws, request.query.get("compress"))
        except ValueError as exc:
            await ws.close(code=4000, message=str(exc).encode())
            return ws
        self._conns.add(conn)
        try:
            hello = {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake-gw"]}
            await conn.send({"op": 10, "d": hello, "s": None, "t": None})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    await conn.close(4002, "Error while decoding payload.")
                    break
                try:
                    payload = json.loads(msg.data)
                except ValueError:
                    await conn.close(4002, "Error while decoding payload.")
                    break
                await self._on_gateway_payload(conn, payload)
                self._notify()
        except (ConnectionError, RuntimeError) as exc:
            _log.debug("fake gateway: connection error %r", exc)
        except Exception as exc:
            self.errors.append(exc)
            _log.exception("fake gateway handler failed")
        finally:
            self._conns.discard(conn)
            self.gateway_closes.append(ws.close_code)
            session = conn.session
            if session is not None:
                if session.conn is conn:
                    session.conn = None
                # A clean close by the client ends the session; other codes keep it resumable.
                if ws.close_code in (1000, 1001) and not conn.closing:
                    session.ended = True
                    self._sessions.pop(session.session_id, None)
            self._notify()
        return ws

    async def _on_gateway_payload(self, conn: _GatewayConn, payload: Any) -> None:
        op = payload.get("op") if isinstance(payload, dict) else None
        data = payload.get("d") if isinstance(payload, dict) else None
        if op == 1:
            self.heartbeats += 1
            await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, data)
        elif op == 6:
            await self._resume(conn, data)
        elif op == 3:
            self.presence_updates.append(data)
        elif op == 8:
            await self._request_members(conn, data)
        elif op in (4, 31):  # voice state / request soundboard sounds
            pass
        else:
            await conn.close(4001, "Unknown opcode.")

    async def _identify(self, conn: _GatewayConn, data: Any) -> None:
        if not isinstance(data, dict):
            await conn.close(4002, "Error while decoding payload.")
            return
        if conn.session is not None:
            await conn.close(4005, "Already authenticated.")
            return
        token = data.get("token")
        if not token or (self.token is not None and token != self.token):
            await conn.close(4004, "Authentication failed.")
            return
        shard_val = data.get("shard")
        index, count = (int(shard_val[0]), int(shard_val[1])) if shard_val else (0, 1)
        if not 0 <= index < count:
            await conn.close(4010, "Invalid shard.")
            return
        if data.get("intents") is None:
            await conn.close(4013, "Invalid intent(s).")
            return
        intents = int(data["intents"])
        if self.allowed_intents is not None and intents & PRIVILEGED_INTENTS & ~(
            self.allowed_intents
        ):
            await conn.close(4014, "Disallowed intent(s).")
            return
        self.identifies.append(data)
        self._session_counter += 1
        session = _Session(secrets.token_hex(16), (index, count), intents, self._session_counter)
        for stale in list(self._sessions.values()):
            if stale.shard == session.shard and stale.conn is None:
                stale.ended = True
                self._sessions.pop(stale.session_id, None)
        self._sessions[session.session_id] = session
        guild_ids = [gid for gid in self._guilds if (gid >> 22) % count == index]
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**self.bot_user, "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(gid), "unavailable": True} for gid in guild_ids],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": self.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": ["fake"],
            "auth": {},
            "_trace": ["fake-gw"],
        }
        if shard_val:
            ready["shard"] = [index, count]
        async with session.lock:
            session.conn = conn
            conn.session = session
            await self._send_locked(session, "READY", ready)
            for gid in guild_ids:
                await self._send_locked(
                    session, "GUILD_CREATE", self._guild_payload(gid, intents=intents)
                )

    async def _resume(self, conn: _GatewayConn, data: Any) -> None:
        data = data if isinstance(data, dict) else {}
        session = self._sessions.get(str(data.get("session_id")))
        token_ok = self.token is None or data.get("token") == self.token
        if session is None or session.ended or not token_ok:
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return
        self.resumes.append(data)
        old = session.conn
        if old is not None and old is not conn:
            old.closing = True
            task = asyncio.get_running_loop().create_task(old.close(4000, "Resumed elsewhere"))
            self._bg_tasks.add(task)
            task.add_done_callback(self._bg_tasks.discard)
        seq = int(data.get("seq") or 0)
        async with session.lock:
            session.conn = conn
            conn.session = session
            for event in [e for e in session.events if e["s"] > seq]:
                await conn.send(event)
            await self._send_locked(session, "RESUMED", {"_trace": ["fake-gw"]})

    async def _request_members(self, conn: _GatewayConn, data: Any) -> None:
        session = conn.session
        if session is None or not isinstance(data, dict):
            await conn.close(4003, "Not authenticated.")
            return
        raw_ids = data.get("guild_id")
        guild_ids = raw_ids if isinstance(raw_ids, list) else [raw_ids]
        for raw in guild_ids:
            gid = int(raw)
            members = self._members.get(gid, {})
            wanted = data.get("user_ids")
            query = str(data.get("query") or "").lower()
            limit = int(data.get("limit") or 0)
            if wanted is not None:
                wanted_ids = [int(u) for u in (wanted if isinstance(wanted, list) else [wanted])]
                ids = [u for u in wanted_ids if u in members]
                not_found = [str(u) for u in wanted_ids if u not in members]
            else:
                ids = [u for u in members if self._users[u]["username"].lower().startswith(query)]
                not_found = []
                if limit:
                    ids = ids[:limit]
            chunk: dict[str, Any] = {
                "guild_id": str(gid),
                "members": [self._member_payload(gid, u) for u in ids],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": not_found,
            }
            if data.get("nonce") is not None:
                chunk["nonce"] = data["nonce"]
            if data.get("presences"):
                chunk["presences"] = []
            async with session.lock:
                await self._send_locked(session, "GUILD_MEMBERS_CHUNK", chunk)

    # ------------------------------------------------------------------ incoming events

    async def send_message(
        self,
        channel_id: int,
        author_id: int,
        content: str,
        *,
        guild_id: int | None = None,
        author_name: str | None = None,
        mentions_bot: bool = False,
        reference_message_id: int | None = None,
        bot_author: bool = False,
        attachments: Sequence[tuple[str, bytes]] = (),
        embeds: Sequence[dict[str, Any]] = (),
        stickers: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Dispatch a MESSAGE_CREATE from a user and return the message payload.

        The guild is inferred from ``channel_id``; a channel that is not a guild channel is a
        DM with ``author_id`` (created and recorded in ``dm_channels`` if new; DM messages carry
        no ``guild_id``). ``mentions_bot`` adds the bot to ``mentions`` (content is left as
        given). ``attachments`` are ``(filename, bytes)`` pairs served by the fake; ``stickers``
        are sticker names, sent as ``sticker_items``.
        """
        gid, cid = self._resolve_location(guild_id, channel_id, author_id)
        self._ensure_user(author_id, author_name, bot=bot_author)
        if gid is not None:
            self._ensure_member(gid, author_id)
        mentions = self._mentions_in(content)
        if mentions_bot and all(int(u["id"]) != self.bot_id for u in mentions):
            mentions.append(self.bot_user)
        reference = None
        if reference_message_id is not None:
            reference = {"type": 0, "message_id": str(reference_message_id), "channel_id": str(cid)}
            if gid is not None:
                reference["guild_id"] = str(gid)
        files = [RecordedFile(f"files[{i}]", n, d) for i, (n, d) in enumerate(attachments)]
        msg = self._build_message(
            channel_id=cid,
            guild_id=gid,
            author_id=author_id,
            content=content,
            attachments=self._make_attachments(cid, None, files),
            embeds=list(embeds),
            mentions=mentions,
            msg_type=19 if reference else 0,
            reference=reference,
            nonce=str(self._snowflake()),
        )
        if stickers:
            msg["sticker_items"] = [
                {"id": str(self._snowflake()), "name": name, "format_type": 1} for name in stickers
            ]
        self._store_message(msg)
        self.incoming_messages.append(msg)
        await self._dispatch_message_event("MESSAGE_CREATE", msg, required=True)
        return msg

    async def send_interaction(
        self,
        name: str,
        user_id: int,
        *,
        options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        user_name: str | None = None,
        locale: str = "en-US",
    ) -> dict[str, Any]:
        """Dispatch INTERACTION_CREATE (type 2) invoking the synced command ``name``.

        Guild commands for the guild win over global ones. ``options`` is either a raw list
        of option objects or a ``{name: value}`` mapping (types taken from the synced
        definition; user/role/channel values get ``resolved`` data). Without ``guild_id`` and
        ``channel_id`` the interaction comes from the user's DM with the bot.
        """
        gid, cid = self._resolve_location(guild_id, channel_id, user_id)
        cmd = self._find_command(name, gid)
        user = copy.deepcopy(self._ensure_user(user_id, user_name))
        if gid is not None:
            self._ensure_member(gid, user_id)
        iid = self._snowflake()
        token = f"fake-interaction-token-{iid}-{secrets.token_hex(8)}"
        cmd_data: dict[str, Any] = {"id": cmd["id"], "name": cmd["name"], "type": cmd["type"]}
        opts, resolved = self._build_options(cmd, options, gid)
        if opts:
            cmd_data["options"] = opts
        if resolved:
            cmd_data["resolved"] = resolved
        if cmd.get("guild_id"):
            cmd_data["guild_id"] = cmd["guild_id"]
        channel = copy.deepcopy(self._channels[cid])
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": 2,
            "data": cmd_data,
            "channel_id": str(cid),
            "channel": channel,
            "token": token,
            "version": 1,
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }
        if gid is not None:
            perms = self._permissions(gid, user_id)
            channel["permissions"] = str(perms)
            member = self._member_payload(gid, user_id)
            member["permissions"] = str(perms)
            payload.update(
                guild_id=str(gid),
                guild={"id": str(gid), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=member,
                app_permissions=str(self._permissions(gid, self.bot_id)),
                authorizing_integration_owners={"0": str(gid)},
                context=0,
            )
        else:
            payload.update(
                user=user,
                app_permissions=str(DM_PERMISSIONS),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        self._interactions[iid] = inter = _Interaction(iid, token, name, gid, cid, user, payload)
        self._interactions_by_token[token] = inter
        self.interactions.append(payload)
        await self.dispatch("INTERACTION_CREATE", payload, guild_id=gid)
        return payload

    def _find_command(self, name: str, guild_id: int | None) -> dict[str, Any]:
        scopes = ([guild_id] if guild_id is not None else []) + [None]
        for scope in scopes:
            for cmd in self._commands.get(scope, []):
                if cmd["name"] == name and cmd["type"] == 1:
                    return cmd
        synced = {k: [c["name"] for c in v] for k, v in self._commands.items()}
        raise LookupError(f"command {name!r} is not synced for guild {guild_id}; synced: {synced}")

    def _build_options(
        self,
        cmd: Mapping[str, Any],
        options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
        guild_id: int | None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        if not options:
            return [], {}
        if not isinstance(options, Mapping):
            return [dict(o) for o in options], {}
        specs = {o["name"]: o for o in cmd.get("options") or []}
        out: list[dict[str, Any]] = []
        resolved: dict[str, dict[str, Any]] = {}
        for name, value in options.items():
            spec = specs.get(name)
            otype = int(spec["type"]) if spec else _infer_option_type(value)
            if otype in (6, 7, 8, 9):
                value = str(int(value))
                self._resolve_snowflake(otype, int(value), guild_id, resolved)
            out.append({"name": name, "type": otype, "value": value})
        return out, resolved

    def _resolve_snowflake(
        self, otype: int, sid: int, guild_id: int | None, resolved: dict[str, dict[str, Any]]
    ) -> None:
        guild = self._guilds.get(guild_id) if guild_id is not None else None
        roles = {r.id: r for r in guild.roles} if guild else {}
        if otype in (8, 9) and guild is not None and (sid in roles or sid == guild.id):
            role = next(r for r in self._roles_payload(guild) if int(r["id"]) == sid)
            resolved.setdefault("roles", {})[str(sid)] = role
        elif otype == 7 and sid in self._channels:
            channel = copy.deepcopy(self._channels[sid])
            channel["permissions"] = str(ALL_PERMISSIONS)
            resolved.setdefault("channels", {})[str(sid)] = channel
        elif otype in (6, 9):
            resolved.setdefault("users", {})[str(sid)] = copy.deepcopy(self._ensure_user(sid))
            if guild_id is not None and sid in self._members.get(guild_id, {}):
                member = self._member_payload(guild_id, sid, with_user=False)
                member["permissions"] = str(self._permissions(guild_id, sid))
                resolved.setdefault("members", {})[str(sid)] = member

    # ------------------------------------------------------------------ REST plumbing

    def _build_routes(self) -> None:
        snow = r"(?P<{}>\d+)"
        ch, msg = snow.format("channel_id"), snow.format("message_id")
        app, gid = snow.format("app_id"), snow.format("guild_id")
        hook = rf"/webhooks/{app}/(?P<token>[^/]+)"
        add = self._add_route
        add("GET", r"/users/@me", self._r_get_me)
        add("GET", rf"/users/{snow.format('user_id')}", self._r_get_user)
        add("POST", r"/users/@me/channels", self._r_create_dm)
        add("GET", r"/oauth2/applications/@me", self._r_get_application)
        add("GET", r"/applications/@me", self._r_get_application)
        add("GET", r"/gateway", self._r_gateway, auth=False)
        add("GET", r"/gateway/bot", self._r_gateway_bot)
        add("GET", rf"/channels/{ch}", self._r_get_channel)
        add("GET", rf"/channels/{ch}/messages", self._r_get_messages)
        add("POST", rf"/channels/{ch}/messages", self._r_post_message)
        add("GET", rf"/channels/{ch}/messages/{msg}", self._r_get_message)
        add("PATCH", rf"/channels/{ch}/messages/{msg}", self._r_edit_message)
        add("DELETE", rf"/channels/{ch}/messages/{msg}", self._r_delete_message)
        add("POST", rf"/channels/{ch}/typing", self._r_typing)
        reaction = rf"/channels/{ch}/messages/{msg}/reactions/(?P<emoji>[^/]+)/@me"
        add("PUT", reaction, self._r_add_reaction)
        add("DELETE", reaction, self._r_remove_reaction)
        add("GET", rf"/guilds/{gid}", self._r_get_guild)
        add("GET", rf"/guilds/{gid}/channels", self._r_get_guild_channels)
        add("GET", rf"/guilds/{gid}/members/{snow.format('user_id')}", self._r_get_member)
        for prefix in (rf"/applications/{app}", rf"/applications/{app}/guilds/{gid}"):
            add("GET", rf"{prefix}/commands", self._r_get_commands)
            add("PUT", rf"{prefix}/commands", self._r_put_commands)
            add("POST", rf"{prefix}/commands", self._r_post_command)
        callback = rf"/interactions/{snow.format('interaction_id')}/(?P<token>[^/]+)/callback"
        add("POST", callback, self._r_interaction_callback, auth=False)
        add("POST", hook, self._r_webhook_execute, auth=False)
        hook_msg = rf"{hook}/messages/(?P<message_id>@original|\d+)"
        add("GET", hook_msg, self._r_webhook_get, auth=False)
        add("PATCH", hook_msg, self._r_webhook_edit, auth=False)
        add("DELETE", hook_msg, self._r_webhook_delete, auth=False)

    def _add_route(
        self, method: str, pattern: str, handler: _Handler, *, auth: bool = True
    ) -> None:
        self._routes.append((method, re.compile(pattern), handler, auth))

    async def _rest_handler(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "")
        path = "/" + re.sub(r"^v\d+/", "", tail)
        rec = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            headers=dict(request.headers),
        )
        try:
            await self._parse_body(request, rec)
            self.requests.append(rec)
            response = await self._route(request, rec)
        except Exception as exc:  # a bug in the fake: fail fast (a 500 makes discord.py retry)
            self.errors.append(exc)
            _log.exception("fake REST handler failed for %s %s", rec.method, rec.path)
            response = _error(400, 0, f"FakeDiscord internal error: {exc!r}")
        rec.status = response.status
        self._notify()
        return response

    async def _parse_body(self, request: web.Request, rec: RecordedRequest) -> None:
        if not request.body_exists:
            return
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                data = bytes(await part.read(decode=True))
                name = part.name or ""
                if name == "payload_json":
                    rec.json = json.loads(data)
                elif part.filename is not None:
                    ctype = part.headers.get("Content-Type")
                    rec.files.append(RecordedFile(name, part.filename, data, ctype))
                else:
                    rec.form[name] = data.decode("utf-8", "replace")
            return
        raw = await request.read()
        if raw:
            try:
                rec.json = json.loads(raw)
            except ValueError:
                rec.form["_raw"] = raw.decode("utf-8", "replace")

    async def _route(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        fault = self._take_fault(rec.method, rec.path)
        if fault is not None:
            rec.injected = True
            return fault
        method_mismatch = False
        for method, pattern, handler, auth in self._routes:
            match = pattern.fullmatch(rec.path)
            if match is None:
                continue
            if method != rec.method:
                method_mismatch = True
                continue
            if auth and not self._authorized(request):
                return _error(401, 0, "401: Unauthorized")
            return await handler(rec, **match.groupdict())
        self.unknown_requests.append(rec)
        if method_mismatch:
            return _error(405, 0, "405: Method Not Allowed")
        return _error(404, 0, "404: Not Found")

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bot ") or len(header) <= 4:
            return False
        return self.token is None or header == f"Bot {self.token}"

    async def _attachment_handler(self, request: web.Request) -> web.StreamResponse:
        blob = self._blobs.get(int(request.match_info["attachment_id"]))
        if blob is None:
            return web.Response(status=404, text="Not Found")
        ctype = mimetypes.guess_type(request.match_info["filename"])[0]
        return web.Response(body=blob, content_type=ctype or "application/octet-stream")

    async def _cdn_handler(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=_PNG, content_type="image/png")

    def _channel_or_404(self, channel_id: str) -> dict[str, Any] | web.Response:
        channel = self._channels.get(int(channel_id))
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        return channel

    def _check_send_permissions(
        self, channel: Mapping[str, Any], *, files: bool
    ) -> web.Response | None:
        if "guild_id" not in channel:
            return None
        perms = self._permissions(int(channel["guild_id"]), self.bot_id)
        needed = PERM_VIEW_CHANNEL | PERM_SEND_MESSAGES | (PERM_ATTACH_FILES if files else 0)
        if perms & needed != needed:
            return _error(403, 50013, "Missing Permissions")
        return None

    # ------------------------------------------------------------------ REST: users/app/gateway

    async def _r_get_me(self, rec: RecordedRequest) -> web.Response:
        return _json_response(
            {**self.bot_user, "verified": True, "mfa_enabled": False, "locale": "en-US"}
        )

    async def _r_get_user(self, rec: RecordedRequest, user_id: str) -> web.Response:
        return _json_response(copy.deepcopy(self._ensure_user(int(user_id))))

    async def _r_create_dm(self, rec: RecordedRequest) -> web.Response:
        body = rec.json if isinstance(rec.json, dict) else {}
        if body.get("recipient_id") is None:
            return _form_error(["recipient_id"], "BASE_TYPE_REQUIRED", "This field is required")
        return _json_response(copy.deepcopy(self._ensure_dm(int(body["recipient_id"]))))

    async def _r_get_application(self, rec: RecordedRequest) -> web.Response:
        return _json_response(self._application_payload())

    async def _r_gateway(self, rec: RecordedRequest) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def _r_gateway_bot(self, rec: RecordedRequest) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}
        return _json_response(
            {"url": self.gateway_url, "shards": self.shard_count, "session_start_limit": limit}
        )

    # ------------------------------------------------------------------ REST: channels/messages

    async def _r_get_channel(self, rec: RecordedRequest, channel_id: str) -> web.Response:
        channel = self._channel_or_404(channel_id)
        if isinstance(channel, web.Response):
            return channel
        return _json_response(copy.deepcopy(channel))

    async def _r_get_messages(self, rec: RecordedRequest, channel_id: str) -> web.Response:
        channel = self._channel_or_404(channel_id)
        if isinstance(channel, web.Response):
            return channel
        limit = int(rec.query.get("limit", "50"))
        before = int(rec.query.get("before", "0")) or None
        after = int(rec.query.get("after", "0")) or None
        ids = sorted(
            (i for i, m in self._messages.items() if m["channel_id"] == channel_id), reverse=True
        )
        if before is not None:
            ids = [i for i in ids if i < before]
        if after is not None:
            ids = sorted(i for i in ids if i > after)[:limit][::-1]
        return _json_response([copy.deepcopy(self._messages[i]) for i in ids[:limit]])

    async def _r_post_message(self, rec: RecordedRequest, channel_id: str) -> web.Response:
        channel = self._channel_or_404(channel_id)
        if isinstance(channel, web.Response):
            return channel
        body = rec.json if isinstance(rec.json, dict) else {}
        error = self._validate_content(body, rec.files) or self._check_send_permissions(
            channel, files=bool(rec.files)
        )
        if error is not None:
            return error
        cid = int(channel_id)
        gid = int(channel["guild_id"]) if "guild_id" in channel else None
        reference = body.get("message_reference")
        ref_id: int | None = None
        if isinstance(reference, dict) and reference.get("message_id"):
            ref_id = int(reference["message_id"])
            target = self._messages.get(ref_id)
            if target is None or target["channel_id"] != channel_id:
                if reference.get("fail_if_not_exists", True):
                    return _form_error(
                        ["message_reference"],
                        "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                        "Unknown message",
                    )
                reference, ref_id = None, None
            else:
                reference = {
                    "type": int(reference.get("type") or 0),
                    "message_id": str(ref_id),
                    "channel_id": channel_id,
                    **({"guild_id": str(gid)} if gid is not None else {}),
                }
        else:
            reference = None
        msg = self._build_message(
            channel_id=cid,
            guild_id=gid,
            author_id=self.bot_id,
            content=body.get("content") or "",
            attachments=self._make_attachments(cid, body.get("attachments"), rec.files),
            embeds=body.get("embeds"),
            components=body.get("components"),
            flags=int(body.get("flags") or 0) & ~EPHEMERAL,
            msg_type=19 if reference else 0,
            reference=reference,
            tts=bool(body.get("tts")),
            nonce=body.get("nonce"),
        )
        self._store_message(msg)
        self._sent.append(
            SentMessage(int(msg["id"]), cid, copy.deepcopy(body), list(rec.files), msg, ref_id)
        )
        await self._echo("MESSAGE_CREATE", msg)
        return _json_response(msg)

    def _bot_message_or_error(
        self, channel_id: str, message_id: str
    ) -> dict[str, Any] | web.Response:
        msg = self._messages.get(int(message_id))
        if int(channel_id) not in self._channels:
            return _error(404, 10003, "Unknown Channel")
        if msg is None or msg["channel_id"] != channel_id:
            return _error(404, 10008, "Unknown Message")
        return msg

    async def _r_get_message(
        self, rec: RecordedRequest, channel_id: str, message_id: str
    ) -> web.Response:
        msg = self._bot_message_or_error(channel_id, message_id)
        if isinstance(msg, web.Response):
            return msg
        return _json_response(copy.deepcopy(msg))

    def _apply_edit(
        self, msg: dict[str, Any], body: Mapping[str, Any], files: Sequence[RecordedFile]
    ) -> None:
        for key in ("content", "embeds", "components"):
            if key in body:
                msg[key] = body[key] if body[key] is not None else ([] if key != "content" else "")
        if "attachments" in body or files:
            meta = body.get("attachments") or []
            if "attachments" in body:
                keep_ids = {str(a.get("id")) for a in meta}
                kept = [a for a in msg["attachments"] if a["id"] in keep_ids]
            else:
                kept = list(msg["attachments"])
            kept_ids = {a["id"] for a in kept}
            new_meta = [a for a in meta if str(a.get("id")) not in kept_ids]
            msg["attachments"] = kept + self._make_attachments(
                int(msg["channel_id"]), new_meta, files
            )
        if "content" in body:
            msg["mentions"] = self._mentions_in(msg["content"])
        msg["flags"] = int(msg.get("flags") or 0) & ~LOADING
        msg["edited_timestamp"] = _now_iso()

    async def _r_edit_message(
        self, rec: RecordedRequest, channel_id: str, message_id: str
    ) -> web.Response:
        msg = self._bot_message_or_error(channel_id, message_id)
        if isinstance(msg, web.Response):
            return msg
        if int(msg["author"]["id"]) != self.bot_id:
            return _error(403, 50005, "Cannot edit a message authored by another user")
        body = rec.json if isinstance(rec.json, dict) else {}
        error = self._validate_content(body, rec.files, require=False)
        if error is not None:
            return error
        self._apply_edit(msg, body, rec.files)
        for sent in self._sent:
            if sent.id == int(message_id):
                sent.edits.append(copy.deepcopy(body))
                sent.files.extend(rec.files)
        await self._echo("MESSAGE_UPDATE", msg)
        return _json_response(msg)

    async def _r_delete_message(
        self, rec: RecordedRequest, channel_id: str, message_id: str
    ) -> web.Response:
        msg = self._bot_message_or_error(channel_id, message_id)
        if isinstance(msg, web.Response):
            return msg
        del self._messages[int(message_id)]
        for sent in self._sent:
            if sent.id == int(message_id):
                sent.deleted = True
        event = {"id": message_id, "channel_id": channel_id}
        if msg.get("guild_id"):
            event["guild_id"] = msg["guild_id"]
        await self._echo("MESSAGE_DELETE", event)
        return web.Response(status=204)

    async def _r_typing(self, rec: RecordedRequest, channel_id: str) -> web.Response:
        channel = self._channel_or_404(channel_id)
        if isinstance(channel, web.Response):
            return channel
        self.typing_calls.append(int(channel_id))
        return web.Response(status=204)

    async def _r_add_reaction(
        self, rec: RecordedRequest, channel_id: str, message_id: str, emoji: str
    ) -> web.Response:
        msg = self._bot_message_or_error(channel_id, message_id)
        if isinstance(msg, web.Response):
            return msg
        self.reactions.append((int(channel_id), int(message_id), emoji))
        return web.Response(status=204)

    async def _r_remove_reaction(
        self, rec: RecordedRequest, channel_id: str, message_id: str, emoji: str
    ) -> web.Response:
        key = (int(channel_id), int(message_id), emoji)
        if key in self.reactions:
            self.reactions.remove(key)
        return web.Response(status=204)

    # ------------------------------------------------------------------ REST: guilds

    async def _r_get_guild(self, rec: RecordedRequest, guild_id: str) -> web.Response:
        if int(guild_id) not in self._guilds:
            return _error(404, 10004, "Unknown Guild")
        payload = self._guild_payload(int(guild_id))
        if _truthy(rec.query.get("with_counts")):
            payload["approximate_member_count"] = len(self._members[int(guild_id)])
            payload["approximate_presence_count"] = 0
        return _json_response(payload)

    async def _r_get_guild_channels(self, rec: RecordedRequest, guild_id: str) -> web.Response:
        guild = self._guilds.get(int(guild_id))
        if guild is None:
            return _error(404, 10004, "Unknown Guild")
        return _json_response([copy.deepcopy(self._channels[c.id]) for c in guild.channels])

    async def _r_get_member(
        self, rec: RecordedRequest, guild_id: str, user_id: str
    ) -> web.Response:
        if int(guild_id) not in self._guilds:
            return _error(404, 10004, "Unknown Guild")
        if int(user_id) not in self._members[int(guild_id)]:
            return _error(404, 10007, "Unknown Member")
        return _json_response(self._member_payload(int(guild_id), int(user_id)))

    # ------------------------------------------------------------------ REST: app commands

    def _commands_scope(self, app_id: str, guild_id: str | None) -> int | web.Response | None:
        if int(app_id) != self.application_id:
            return _error(403, 50001, "Missing Access")
        if guild_id is None:
            return None
        if int(guild_id) not in self._guilds:
            return _error(403, 50001, "Missing Access")
        return int(guild_id)

    def _normalise_command(
        self, raw: Mapping[str, Any], scope: int | None, previous: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        ctype = int(raw.get("type") or 1)
        old = next((c for c in previous if c["name"] == raw["name"] and c["type"] == ctype), None)
        cmd: dict[str, Any] = {
            "id": old["id"] if old else str(self._snowflake()),
            "application_id": str(self.application_id),
            "version": str(self._snowflake()),
            "type": ctype,
            "name": raw["name"],
            "name_localizations": raw.get("name_localizations"),
            "description": raw.get("description") or "",
            "description_localizations": raw.get("description_localizations"),
            "options": copy.deepcopy(raw.get("options") or []),
            "default_member_permissions": raw.get("default_member_permissions"),
            "dm_permission": raw.get("dm_permission", True),
            "nsfw": bool(raw.get("nsfw", False)),
            "contexts": raw.get("contexts"),
            "integration_types": raw.get("integration_types") or [0],
        }
        if scope is not None:
            cmd["guild_id"] = str(scope)
        return cmd

    @staticmethod
    def _validate_command(raw: Any, index: int | None) -> web.Response | None:
        path = [] if index is None else [str(index)]
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            return _form_error([*path, "name"], "BASE_TYPE_REQUIRED", "This field is required")
        name, ctype = raw["name"], int(raw.get("type") or 1)
        if ctype == 1:
            if not _COMMAND_NAME_RE.fullmatch(name) or name != name.lower():
                return _form_error(
                    [*path, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                )
            description = raw.get("description") or ""
            if not 1 <= len(description) <= 100:
                return _form_error(
                    [*path, "description"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                )
        if len(raw.get("options") or []) > 25:
            return _form_error(
                [*path, "options"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
            )
        return None

    async def _r_get_commands(
        self, rec: RecordedRequest, app_id: str, guild_id: str | None = None
    ) -> web.Response:
        scope = self._commands_scope(app_id, guild_id)
        if isinstance(scope, web.Response):
            return scope
        return _json_response(self._commands.get(scope, []))

    async def _r_put_commands(
        self, rec: RecordedRequest, app_id: str, guild_id: str | None = None
    ) -> web.Response:
        scope = self._commands_scope(app_id, guild_id)
        if isinstance(scope, web.Response):
            return scope
        if not isinstance(rec.json, list):
            return _error(400, 50109, "The request body contains invalid JSON.")
        if len(rec.json) > 100:
            return _form_error([], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        seen: set[tuple[str, int]] = set()
        for index, raw in enumerate(rec.json):
            error = self._validate_command(raw, index)
            if error is not None:
                return error
            key = (raw["name"], int(raw.get("type") or 1))
            if key in seen:
                return _form_error(
                    [str(index), "name"],
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    "Application command names must be unique",
                )
            seen.add(key)
        previous = self._commands.get(scope, [])
        self._commands[scope] = [self._normalise_command(r, scope, previous) for r in rec.json]
        return _json_response(self._commands[scope])

    async def _r_post_command(
        self, rec: RecordedRequest, app_id: str, guild_id: str | None = None
    ) -> web.Response:
        scope = self._commands_scope(app_id, guild_id)
        if isinstance(scope, web.Response):
            return scope
        error = self._validate_command(rec.json, None)
        if error is not None:
            return error
        previous = self._commands.setdefault(scope, [])
        cmd = self._normalise_command(rec.json, scope, previous)
        created = not any(c["id"] == cmd["id"] for c in previous)
        self._commands[scope] = [c for c in previous if c["id"] != cmd["id"]] + [cmd]
        return _json_response(cmd, 201 if created else 200)

    # ------------------------------------------------------------------ REST: interactions

    async def _r_interaction_callback(
        self, rec: RecordedRequest, interaction_id: str, token: str
    ) -> web.Response:
        inter = self._interactions.get(int(interaction_id))
        if inter is None or inter.token != token:
            return _error(404, 10062, "Unknown interaction")
        body = rec.json if isinstance(rec.json, dict) else {}
        rtype = body.get("type")
        if rtype not in (1, 4, 5, 6, 7, 8, 9, 10, 12):
            return _form_error(["type"], "BASE_TYPE_CHOICES", "Value must be one of {1, 4, 5}.")
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        if rtype in (4, 7):
            error = self._validate_content(data, rec.files, prefix=["data"], require=rtype == 4)
            if error is not None:
                return error
        if inter.responded:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        inter.responded, inter.response_type = True, rtype
        flags = int(data.get("flags") or 0)
        message: dict[str, Any] | None = None
        if rtype in (4, 5):
            message = self._build_message(
                channel_id=inter.channel_id,
                guild_id=inter.guild_id,
                author_id=self.bot_id,
                content=(data.get("content") or "") if rtype == 4 else "",
                attachments=self._make_attachments(
                    inter.channel_id, data.get("attachments"), rec.files
                ),
                embeds=data.get("embeds") if rtype == 4 else [],
                components=data.get("components") if rtype == 4 else [],
                flags=(flags & EPHEMERAL) | (LOADING if rtype == 5 else 0),
                msg_type=20,
                webhook_id=self.application_id,
                interaction=inter,
            )
            inter.original = message
            self._store_message(message)
        self.interaction_responses.append(
            InteractionResponse(
                "callback", inter.id, token, rtype, copy.deepcopy(data), list(rec.files), message
            )
        )
        if message is not None:
            await self._echo("MESSAGE_CREATE", message)
        if not _truthy(rec.query.get("with_response")):
            return web.Response(status=204)
        callback: dict[str, Any] = {"id": str(inter.id), "type": 2}
        response: dict[str, Any] = {"interaction": callback}
        if message is not None:
            callback.update(
                response_message_id=message["id"],
                response_message_loading=rtype == 5,
                response_message_ephemeral=bool(message["flags"] & EPHEMERAL),
            )
            response["resource"] = {"type": rtype, "message": message}
        elif rtype in (6, 7):
            response["resource"] = {"type": rtype}
        return _json_response(response)

    def _webhook_interaction(self, app_id: str, token: str) -> _Interaction | web.Response:
        inter = self._interactions_by_token.get(token)
        if inter is None or int(app_id) != self.application_id:
            return _error(404, 10015, "Unknown Webhook")
        return inter

    def _webhook_target(
        self, inter: _Interaction, message_id: str
    ) -> tuple[str, dict[str, Any]] | web.Response:
        if message_id == "@original":
            if inter.original is None:
                return _error(404, 10008, "Unknown Message")
            return "original", inter.original
        msg = inter.followups.get(int(message_id))
        if msg is None:
            if inter.original is not None and inter.original["id"] == message_id:
                return "original", inter.original
            return _error(404, 10008, "Unknown Message")
        return "followup", msg

    async def _r_webhook_execute(
        self, rec: RecordedRequest, app_id: str, token: str
    ) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        if isinstance(inter, web.Response):
            return inter
        body = rec.json if isinstance(rec.json, dict) else {}
        error = self._validate_content(body, rec.files)
        if error is not None:
            return error
        original = inter.original
        if original is not None and int(original.get("flags") or 0) & LOADING:
            # The first followup after a deferred response replaces the "thinking" message.
            self._apply_edit(original, body, rec.files)
            original["edited_timestamp"] = None
            message = original
            await self._echo("MESSAGE_UPDATE", message)
        else:
            message = self._build_message(
                channel_id=inter.channel_id,
                guild_id=inter.guild_id,
                author_id=self.bot_id,
                content=body.get("content") or "",
                attachments=self._make_attachments(
                    inter.channel_id, body.get("attachments"), rec.files
                ),
                embeds=body.get("embeds"),
                components=body.get("components"),
                flags=int(body.get("flags") or 0) & (EPHEMERAL | (1 << 2) | (1 << 12)),
                msg_type=20,
                webhook_id=self.application_id,
                interaction=inter,
            )
            inter.followups[int(message["id"])] = message
            self._store_message(message)
            await self._echo("MESSAGE_CREATE", message)
        self.interaction_responses.append(
            InteractionResponse(
                "followup", inter.id, token, None, copy.deepcopy(body), list(rec.files), message
            )
        )
        if _truthy(rec.query.get("wait")):
            return _json_response(message)
        return web.Response(status=204)

    async def _r_webhook_get(
        self, rec: RecordedRequest, app_id: str, token: str, message_id: str
    ) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        if isinstance(inter, web.Response):
            return inter
        target = self._webhook_target(inter, message_id)
        if isinstance(target, web.Response):
            return target
        return _json_response(target[1])

    async def _r_webhook_edit(
        self, rec: RecordedRequest, app_id: str, token: str, message_id: str
    ) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        if isinstance(inter, web.Response):
            return inter
        target = self._webhook_target(inter, message_id)
        if isinstance(target, web.Response):
            return target
        kind, msg = target
        body = rec.json if isinstance(rec.json, dict) else {}
        error = self._validate_content(body, rec.files, require=False)
        if error is not None:
            return error
        self._apply_edit(msg, body, rec.files)
        self.interaction_responses.append(
            InteractionResponse(
                f"edit_{kind}", inter.id, token, None, copy.deepcopy(body), list(rec.files), msg
            )
        )
        await self._echo("MESSAGE_UPDATE", msg)
        return _json_response(msg)

    async def _r_webhook_delete(
        self, rec: RecordedRequest, app_id: str, token: str, message_id: str
    ) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        if isinstance(inter, web.Response):
            return inter
        target = self._webhook_target(inter, message_id)
        if isinstance(target, web.Response):
            return target
        kind, msg = target
        if kind == "original":
            inter.original = None
        else:
            inter.followups.pop(int(msg["id"]), None)
        self._messages.pop(int(msg["id"]), None)
        self.interaction_responses.append(
            InteractionResponse(f"delete_{kind}", inter.id, token, None, {}, [], msg)
        )
        event = {"id": msg["id"], "channel_id": msg["channel_id"]}
        if msg.get("guild_id"):
            event["guild_id"] = msg["guild_id"]
        await self._echo("MESSAGE_DELETE", {**event, "flags": msg.get("flags", 0)})
        return web.Response(status=204)


# --------------------------------------------------------------------------- discord.py glue


async def _fast_before_identify_hook(
    self: discord.Client, shard_id: int | None, *, initial: bool = False
) -> None:
    """Replacement for ``Client.before_identify_hook`` without the 5 s non-initial sleep."""
    return None


@contextlib.contextmanager
def patched_discord(fake: FakeDiscord, *, fast_identify: bool = True) -> Iterator[FakeDiscord]:
    """Point discord.py at ``fake`` (REST base, gateway URL, CDN) and restore afterwards.

    With ``fast_identify`` the default ``Client.before_identify_hook`` (which sleeps 5 s
    before every non-initial IDENTIFY, e.g. shard 1 or a re-identify) becomes a no-op;
    subclasses that override the hook are unaffected.
    """
    route_cls = discord.http.Route
    ws_cls = discord.gateway.DiscordWebSocket
    asset_cls = discord.asset.Asset
    saved = (
        route_cls.BASE,
        ws_cls.DEFAULT_GATEWAY,
        asset_cls.BASE,
        discord.Client.__dict__["before_identify_hook"],
    )
    route_cls.BASE = fake.api_base
    ws_cls.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    asset_cls.BASE = f"{fake.base_url}/cdn"
    if fast_identify:
        discord.Client.before_identify_hook = _fast_before_identify_hook  # type: ignore[method-assign]
    try:
        yield fake
    finally:
        route_cls.BASE, ws_cls.DEFAULT_GATEWAY, asset_cls.BASE = saved[:3]
        discord.Client.before_identify_hook = saved[3]  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def running_bot(
    bot: discord.Client, token: str = FAKE_TOKEN, *, ready_timeout: float = 10.0
) -> AsyncIterator[asyncio.Task[None]]:
    """Log ``bot`` in, run ``connect()`` in a task until ready, and close it cleanly on exit.

    Yields the connect task. Raises the connect error (e.g. ``LoginFailure``,
    ``PrivilegedIntentsRequired``) if the bot dies before becoming ready.
    """
    await bot.login(token)
    task = asyncio.create_task(bot.connect(reconnect=True), name="fake-discord-bot-connect")
    ready = asyncio.create_task(bot.wait_until_ready(), name="fake-discord-bot-ready")
    try:
        done, _ = await asyncio.wait(
            {task, ready}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            if task in done:
                task.result()
                raise RuntimeError("bot.connect() returned before the bot became ready")
            raise TimeoutError(f"bot not ready after {ready_timeout}s")
        yield task
    finally:
        ready.cancel()
        await bot.close()
        done, _ = await asyncio.wait({task}, timeout=5.0)
        if not done:
            task.cancel()
            await asyncio.wait({task})
        elif not task.cancelled() and task.exception() is not None:
            _log.debug("bot connect task ended with %r", task.exception())
