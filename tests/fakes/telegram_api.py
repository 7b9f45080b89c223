"""Loopback fake of the Telegram Bot API for tests (aiohttp server on 127.0.0.1).

Point python-telegram-bot at it with::

    async with FakeTelegramAPI() as fake:
        app = (
            Application.builder()
            .token("123456:TEST-TOKEN")
            .base_url(fake.base_url)
            .base_file_url(fake.base_file_url)
            .build()
        )

PTB posts parameters either as ``application/x-www-form-urlencoded`` (non-string values
JSON-encoded) or, when files are uploaded, as ``multipart/form-data``; JSON bodies and query
strings are accepted too.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from yarl import URL

JSONDict = dict[str, Any]
T = TypeVar("T")

__all__ = [
    "ApiError",
    "FakeTelegramAPI",
    "InjectedFault",
    "StoredDocument",
    "UploadedFile",
    "parse_html",
    "parse_markdown_v2",
]

MAX_MESSAGE_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# Form fields that are plain strings even if they look like JSON (e.g. text "123").
_STRING_FIELDS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "url",
        "secret_token",
        "language_code",
        "action",
        "file_id",
        "inline_message_id",
        "description",
        "short_description",
        "name",
        "title",
        "emoji",
        "query",
        "ip_address",
        "business_connection_id",
        "message_effect_id",
        "data",
        "username",
    }
)

_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)

# push_media kinds: (file name, mime type or None, extra fields, may have a caption)
_MEDIA_KINDS: dict[str, tuple[str, str | None, JSONDict, bool]] = {
    "photo": ("photo.jpg", None, {"width": 90, "height": 90}, True),
    "video": ("video.mp4", "video/mp4", {"width": 320, "height": 240, "duration": 3}, True),
    "animation": ("anim.mp4", "video/mp4", {"width": 320, "height": 240, "duration": 2}, True),
    "audio": ("song.mp3", "audio/mpeg", {"duration": 30}, True),
    "voice": ("voice.ogg", "audio/ogg", {"duration": 2}, True),
    "video_note": ("note.mp4", None, {"length": 240, "duration": 2}, False),
    "sticker": (
        "sticker.webp",
        None,
        {"type": "regular", "width": 512, "height": 512, "is_animated": False, "is_video": False},
        False,
    ),
}

# Methods that are accepted and simply answered with ``True``.
_ACK_METHODS = frozenset(
    {"setmydescription", "setmyshortdescription", "setmyname", "setchatmenubutton"}
)

_DEFAULT_ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Bad Request: injected failure",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running",
    500: "Internal Server Error",
    502: "Bad Gateway",
}

_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
# bot_command / mention entities in inbound messages
_INBOUND_COMMAND_RE = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")
_INBOUND_MENTION_RE = re.compile(r"(?<![\w@/])@[A-Za-z0-9_]{5,32}\b")


class ApiError(Exception):
    """A Bot API error answered with Telegram's error envelope."""

    def __init__(
        self, error_code: int, description: str, parameters: JSONDict | None = None
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters = parameters

    def envelope(self) -> JSONDict:
        """The JSON body Telegram would send."""
        body: JSONDict = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _entity_error(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: can't parse entities: {detail}")


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class StoredDocument:
    """A document sent by the bot via sendDocument."""

    chat_id: int | str
    filename: str
    data: bytes
    mime_type: str
    caption: str | None
    file_id: str
    message: JSONDict


@dataclass
class InjectedFault:
    """A pending failure for one method (see :meth:`FakeTelegramAPI.fail_next`)."""

    error_code: int
    description: str
    parameters: JSONDict | None = None
    times: int = 1


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    filename: str
    mime_type: str


@dataclass
class _Webhook:
    url: str = ""
    secret_token: str | None = None
    max_connections: int = 40
    allowed_updates: list[str] | None = None
    ip_address: str | None = None
    has_custom_certificate: bool = False
    extra: JSONDict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Entity parsing (simplified versions of Telegram's MarkdownV2 / HTML parsers)
# --------------------------------------------------------------------------------------------

_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_markdown_v2(text: str) -> str:
    """Validate MarkdownV2 ``text`` and return the plain text; raise :class:`ApiError`."""
    out: list[str] = []
    stack: list[tuple[str, int]] = []  # (marker, index where it was opened)
    n = len(text)
    i = 0
    quote_line = False

    def toggle(marker: str) -> None:
        if stack and stack[-1][0] == marker:
            stack.pop()
        elif any(m == marker for m, _ in stack):
            raise _entity_error(
                "Can't find end of the entity starting at byte offset "
                f"{_byte_offset(text, stack[-1][1])}"
            )
        else:
            stack.append((marker, i))

    def scan_until(start: int, end_marker: str, what: str, opened_at: int) -> tuple[int, str]:
        """Scan a code/pre/url span; only ``\\`` escapes apply. Return (end index, content)."""
        j = start
        content: list[str] = []
        while j < n:
            if text[j] == "\\" and j + 1 < n:
                content.append(text[j + 1])
                j += 2
            elif text.startswith(end_marker, j):
                return j, "".join(content)
            else:
                content.append(text[j])
                j += 1
        raise _entity_error(
            f"Can't find end of {what} entity at byte offset {_byte_offset(text, opened_at)}"
        )

    while i < n:
        c = text[i]
        at_line_start = i == 0 or text[i - 1] == "\n"
        if c == "\n":
            quote_line = False
            out.append(c)
            i += 1
        elif c == "\\":
            if i + 1 < n and 1 <= ord(text[i + 1]) <= 126:
                out.append(text[i + 1])
                i += 2
            else:
                out.append(c)
                i += 1
        elif c == "`":
            if text.startswith("```", i):
                end, content = scan_until(i + 3, "```", "PreCode", i)
                first, sep, rest = content.partition("\n")
                if sep and first and re.fullmatch(r"[\w+#.-]+", first):
                    content = rest  # the first line is a language name
                out.append(content)
                i = end + 3
            else:
                end, content = scan_until(i + 1, "`", "Code", i)
                out.append(content)
                i = end + 1
        elif c == "*":
            if at_line_start and text.startswith("**>", i):
                quote_line = True  # expandable block quotation
                i += 3
            else:
                toggle("*")
                i += 1
        elif c == "_":
            if text.startswith("__", i):
                toggle("__")
                i += 2
            else:
                toggle("_")
                i += 1
        elif c == "~":
            toggle("~")
            i += 1
        elif c == "|" and text.startswith("||", i):
            closes_quote = (
                quote_line
                and not any(m == "||" for m, _ in stack)
                and (i + 2 == n or text[i + 2] == "\n")
            )
            if not closes_quote:
                toggle("||")
            i += 2
        elif c == "[":
            stack.append(("[", i))
            i += 1
        elif c == "!" and text.startswith("![", i):
            stack.append(("![", i))
            i += 2
        elif c == "]" and stack and stack[-1][0] in ("[", "!["):
            marker, opened_at = stack.pop()
            if text.startswith("(", i + 1):
                end, _url = scan_until(i + 2, ")", "a URL", i + 1)
                i = end + 1
            elif marker == "![":
                raise _entity_error(
                    "Custom emoji entity must contain a tg://emoji URL at byte offset "
                    f"{_byte_offset(text, opened_at)}"
                )
            else:
                i += 1
        elif c == ">" and at_line_start:
            quote_line = True
            i += 1
        elif c in _MDV2_RESERVED:
            raise _entity_error(
                f"Character '{c}' is reserved and must be escaped with the preceding '\\'"
            )
        else:
            out.append(c)
            i += 1

    if stack:
        raise _entity_error(
            "Can't find end of the entity starting at byte offset "
            f"{_byte_offset(text, stack[-1][1])}"
        )
    return "".join(out)


_HTML_ALLOWED_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)
_HTML_TAG_RE = re.compile(r"([A-Za-z][A-Za-z0-9-]*)(.*)", re.DOTALL)
_HTML_ATTR_RE = re.compile(
    r"""([A-Za-z_:][A-Za-z0-9_:.-]*)\s*(?:=\s*("[^"]*"|'[^']*'|[^\s"'>]+))?"""
)
_HTML_ENTITY_RE = re.compile(r"&(lt|gt|amp|quot|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});")
_HTML_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _html_attrs(raw: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for m in _HTML_ATTR_RE.finditer(raw.rstrip("/")):
        value = m.group(2) or ""
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        attrs[m.group(1).lower()] = value
    return attrs


def parse_html(text: str) -> str:
    """Validate HTML ``text`` and return the plain text; raise :class:`ApiError`."""
    out: list[str] = []
    stack: list[tuple[str, int]] = []
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c == "<":
            off = _byte_offset(text, i)
            end = text.find(">", i)
            if end < 0:
                raise _entity_error(f"Unclosed start tag at byte offset {off}")
            inner = text[i + 1 : end]
            if inner.startswith("/"):
                name = inner[1:].strip().lower()
                if not stack:
                    raise _entity_error(f'Unexpected end tag "</{name}>" at byte offset {off}')
                top = stack[-1][0]
                if name != top:
                    raise _entity_error(
                        f'Unmatched end tag at byte offset {off}, expected "</{top}>", '
                        f'found "</{name}>"'
                    )
                stack.pop()
            else:
                m = _HTML_TAG_RE.fullmatch(inner)
                name = m.group(1).lower() if m else ""
                if m is None or name not in _HTML_ALLOWED_TAGS:
                    raise _entity_error(f'Unsupported start tag "{name}" at byte offset {off}')
                attrs = _html_attrs(m.group(2))
                if name == "span" and attrs.get("class") != "tg-spoiler":
                    raise _entity_error(
                        f'Tag "span" must have class "tg-spoiler" at byte offset {off}'
                    )
                if name == "tg-emoji" and "emoji-id" not in attrs:
                    raise _entity_error(
                        f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset {off}'
                    )
                stack.append((name, i))
            i = end + 1
        elif c == "&":
            m = _HTML_ENTITY_RE.match(text, i)
            if m is None:
                raise _entity_error(
                    f"Character '&' must be escaped as '&amp;' at byte offset "
                    f"{_byte_offset(text, i)}"
                )
            ref = m.group(1)
            if ref in _HTML_NAMED:
                out.append(_HTML_NAMED[ref])
            else:
                code = int(ref[2:], 16) if ref[1] in "xX" else int(ref[1:])
                out.append(chr(code) if 0 < code <= 0x10FFFF else "\ufffd")
            i = m.end()
        elif c == ">":
            raise _entity_error(
                f"Character '>' must be escaped as '&gt;' at byte offset {_byte_offset(text, i)}"
            )
        else:
            out.append(c)
            i += 1
    if stack:
        raise _entity_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return "".join(out)


def _parse_formatted(text: str, parse_mode: str | None) -> str:
    if not parse_mode:
        return text
    mode = parse_mode.lower()
    if mode == "markdownv2":
        return parse_markdown_v2(text)
    if mode == "html":
        return parse_html(text)
    if mode == "markdown":
        return text  # legacy Markdown: not validated
    raise ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode}")


# --------------------------------------------------------------------------------------------
# The fake server
# --------------------------------------------------------------------------------------------


class FakeTelegramAPI:
    """In-process fake Telegram Bot API server on 127.0.0.1 (ephemeral port)."""

    def __init__(
        self,
        *,
        bot_id: int = 999000,
        bot_username: str = "persona_test_bot",
        bot_first_name: str = "PersonaBot",
        token: str | None = None,
        host: str = "127.0.0.1",
        max_poll_wait: float = 1.0,
    ) -> None:
        if host not in LOOPBACK_HOSTS:
            raise ValueError("FakeTelegramAPI only listens on loopback")
        self.bot_user: JSONDict = {
            "id": bot_id,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        self.token = token  # if set, other tokens get 401 Unauthorized
        self.host = host
        self.max_poll_wait = max_poll_wait
        self.port: int | None = None

        # recordings
        self.calls: list[tuple[str, JSONDict]] = []
        self.call_times: list[float] = []  # time.monotonic() each call arrived, as in calls
        self.unknown_methods: list[str] = []
        self.documents: list[StoredDocument] = []
        self.chat_actions: list[tuple[int | str, str]] = []
        self.commands: dict[str, list[JSONDict]] = {}
        self.callback_answers: list[JSONDict] = []
        self.webhook_deliveries: list[tuple[JSONDict, int]] = []

        self._pending: list[JSONDict] = []
        self._next_update_id = 1000
        self._allowed_updates: list[str] | None = None
        self._faults: dict[str, list[InjectedFault]] = {}
        self._chats: dict[int | str, JSONDict] = {}
        self._next_message_id: dict[int | str, int] = {}
        self._messages: dict[tuple[int | str, int], JSONDict] = {}
        self._sent: list[JSONDict] = []
        self._files: dict[str, _StoredFile] = {}
        self._files_by_path: dict[str, _StoredFile] = {}
        self._next_file = 1
        self._next_callback = 1
        self._next_media_group = 1
        self.webhook = _Webhook()

        self._changed = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        """Value for ``ApplicationBuilder.base_url`` (PTB appends the token)."""
        return f"{self.origin}/bot"

    @property
    def base_file_url(self) -> str:
        """Value for ``ApplicationBuilder.base_file_url``."""
        return f"{self.origin}/file/bot"

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise RuntimeError("FakeTelegramAPI is not started")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Start listening on an ephemeral loopback port."""
        if self._runner is not None:
            return
        self._closing = False
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Wake pending long polls and shut the server down."""
        self._closing = True
        self._bump()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeTelegramAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- state change notification

    def _bump(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _wait_changed(self, seconds: float) -> None:
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass

    async def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 5.0,  # noqa: ASYNC109 - documented test-helper API
    ) -> T:
        """Wait until ``predicate()`` is truthy and return its value.

        Re-evaluated on every API call / injected update (and every 50 ms);
        raises AssertionError listing recent calls on timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"FakeTelegramAPI.wait_for timed out after {timeout}s; "
                    f"recent calls (getUpdates omitted):\n{self.describe_calls()}"
                )
            await self._wait_changed(min(remaining, 0.05))

    async def wait_for_sent(
        self,
        chat_id: int | str | None = None,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - documented test-helper API
    ) -> list[JSONDict]:
        """Wait until at least ``count`` messages were sent (to ``chat_id``); return them."""

        def enough() -> list[JSONDict]:
            msgs = self.sent_messages(chat_id)
            return msgs if len(msgs) >= count else []

        return await self.wait_for(enough, timeout)

    def describe_calls(self, limit: int = 15) -> str:
        """Human readable list of the most recent non-getUpdates calls."""
        calls = [c for c in self.calls if c[0].lower() != "getupdates"][-limit:]
        if not calls:
            return "  (no calls)"
        return "\n".join(f"  {method} {_short(params)}" for method, params in calls)

    # ---------------------------------------------------------------- fault injection

    def fail_next(
        self,
        method: str,
        error_code: int = 429,
        description: str | None = None,
        retry_after: int | None = None,
        *,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with Telegram's error envelope."""
        parameters: JSONDict | None = None
        if error_code == 429:
            retry_after = 1 if retry_after is None else retry_after
            description = description or f"Too Many Requests: retry after {retry_after}"
        else:
            description = description or _DEFAULT_ERROR_DESCRIPTIONS.get(
                error_code, f"Error {error_code}"
            )
        if retry_after is not None:
            parameters = {"retry_after": retry_after}
        self._faults.setdefault(method.lower(), []).append(
            InjectedFault(error_code, description, parameters, times)
        )

    def _take_fault(self, method: str) -> InjectedFault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        return fault

    # ---------------------------------------------------------------- inbound updates

    def push_update(self, update: JSONDict) -> JSONDict:
        """Queue an arbitrary update (``update_id`` assigned if missing) for getUpdates."""
        if "update_id" not in update:
            update["update_id"] = self._next_update_id
        self._next_update_id = max(self._next_update_id, int(update["update_id"])) + 1
        self._index_update(update)
        self._pending.append(update)
        self._bump()
        return update

    def _index_update(self, update: JSONDict) -> None:
        """Remember messages of raw updates so replies/edits can refer to them."""
        for key in ("message", "channel_post", "edited_message", "business_message"):
            message = update.get(key)
            if not isinstance(message, dict) or "chat" not in message:
                continue
            chat_key = _norm_chat_id(message["chat"].get("id"))
            mid = message.get("message_id")
            if isinstance(mid, int):
                self._messages.setdefault((chat_key, mid), message)
                self._next_message_id[chat_key] = max(
                    self._next_message_id.get(chat_key, 1), mid + 1
                )
            self._chats.setdefault(chat_key, dict(message["chat"]))

    def make_message_update(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        chat_type: str = "private",
        username: str | None = None,
        first_name: str = "User",
        last_name: str | None = None,
        reply_to_message_id: int | None = None,
        chat_title: str | None = None,
        entities: list[JSONDict] | None = None,
        message_thread_id: int | None = None,
    ) -> JSONDict:
        """Build (but do not queue) an Update carrying a user's text message."""
        message = self._inbound_message(
            chat_id,
            user_id,
            chat_type=chat_type,
            username=username,
            first_name=first_name,
            last_name=last_name,
            reply_to_message_id=reply_to_message_id,
            chat_title=chat_title,
            message_thread_id=message_thread_id,
        )
        message["text"] = text
        ents = entities if entities is not None else self._detect_entities(text)
        if ents:
            message["entities"] = ents
        return self._wrap_message(message, chat_type)

    def push_message(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        chat_type: str = "private",
        username: str | None = None,
        first_name: str = "User",
        last_name: str | None = None,
        reply_to_message_id: int | None = None,
        chat_title: str | None = None,
        entities: list[JSONDict] | None = None,
        message_thread_id: int | None = None,
    ) -> JSONDict:
        """Queue an Update with a text message from a user; returns the Update dict.

        ``bot_command`` and ``mention`` entities are detected automatically unless
        ``entities`` is given.
        """
        return self.push_update(
            self.make_message_update(
                chat_id,
                user_id,
                text,
                chat_type=chat_type,
                username=username,
                first_name=first_name,
                last_name=last_name,
                reply_to_message_id=reply_to_message_id,
                chat_title=chat_title,
                entities=entities,
                message_thread_id=message_thread_id,
            )
        )

    def push_document(
        self,
        chat_id: int,
        user_id: int,
        filename: str,
        data: bytes,
        *,
        caption: str | None = None,
        mime_type: str | None = None,
        chat_type: str = "private",
        username: str | None = None,
        first_name: str = "User",
        chat_title: str | None = None,
    ) -> JSONDict:
        """Queue an Update with a document sent by a user (downloadable via getFile)."""
        mime = mime_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        stored = self._store_file(filename, data, mime)
        message = self._inbound_message(
            chat_id,
            user_id,
            chat_type=chat_type,
            username=username,
            first_name=first_name,
            chat_title=chat_title,
        )
        message["document"] = self._document_dict(stored)
        if caption is not None:
            message["caption"] = caption
        return self.push_update(self._wrap_message(message, chat_type))

    def push_media(
        self,
        chat_id: int,
        user_id: int,
        kind: str = "photo",
        *,
        caption: str | None = None,
        media_group_id: str | None = None,
        chat_type: str = "private",
        username: str | None = None,
        first_name: str = "User",
        reply_to_message_id: int | None = None,
        chat_title: str | None = None,
    ) -> JSONDict:
        """Queue an Update with a ``photo``, ``video``, ``animation``, ``audio``, ``voice``,
        ``video_note`` or ``sticker`` from a user (downloadable via getFile).

        A caption gets ``caption_entities`` (mentions, commands) like a text's entities.
        """
        filename, mime, extra, captioned = _MEDIA_KINDS[kind]
        if caption is not None and not captioned:
            raise ValueError(f"a {kind} has no caption")
        stored_mime = mime or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        stored = self._store_file(filename, b"media:" + kind.encode(), stored_mime)
        media: JSONDict = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            **extra,
        }
        if mime is not None:
            media["mime_type"] = mime
        message = self._inbound_message(
            chat_id,
            user_id,
            chat_type=chat_type,
            username=username,
            first_name=first_name,
            reply_to_message_id=reply_to_message_id,
            chat_title=chat_title,
        )
        message[kind] = [media] if kind == "photo" else media
        if caption is not None:
            message["caption"] = caption
            entities = self._detect_entities(caption)
            if entities:
                message["caption_entities"] = entities
        if media_group_id is not None:
            message["media_group_id"] = media_group_id
        return self.push_update(self._wrap_message(message, chat_type))

    def push_album(
        self,
        chat_id: int,
        user_id: int,
        count: int,
        *,
        caption: str | None = None,
        **kwargs: Any,
    ) -> list[JSONDict]:
        """Queue an album: ``count`` photo Updates sharing a ``media_group_id``, the caption on
        the first (as Telegram clients send it). ``kwargs`` go to :meth:`push_media`."""
        group = f"1390{self._next_media_group:08d}"
        self._next_media_group += 1
        return [
            self.push_media(
                chat_id,
                user_id,
                "photo",
                caption=caption if i == 0 else None,
                media_group_id=group,
                **kwargs,
            )
            for i in range(count)
        ]

    def push_callback_query(
        self,
        chat_id: int,
        user_id: int,
        data: str,
        *,
        message_id: int | None = None,
        username: str | None = None,
        first_name: str = "User",
    ) -> JSONDict:
        """Queue a callback_query update (button press on a bot message)."""
        query: JSONDict = {
            "id": str(8_000_000 + self._next_callback),
            "from": self._user_dict(user_id, first_name, username),
            "chat_instance": f"{abs(chat_id)}42",
            "data": data,
        }
        self._next_callback += 1
        target: JSONDict | None = None
        if message_id is not None:
            target = self._messages.get((_norm_chat_id(chat_id), message_id))
        else:
            sent = self.sent_messages(chat_id)
            target = sent[-1] if sent else None
        if target is not None:
            query["message"] = self._public_message(target)
        return self.push_update({"callback_query": query})

    @property
    def pending_updates(self) -> list[JSONDict]:
        """Updates not yet confirmed by a getUpdates offset."""
        return list(self._pending)

    def _user_dict(
        self,
        user_id: int,
        first_name: str,
        username: str | None,
        last_name: str | None = None,
    ) -> JSONDict:
        user: JSONDict = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        user["language_code"] = "en"
        return user

    def _inbound_message(
        self,
        chat_id: int,
        user_id: int,
        *,
        chat_type: str,
        username: str | None,
        first_name: str,
        last_name: str | None = None,
        reply_to_message_id: int | None = None,
        chat_title: str | None = None,
        message_thread_id: int | None = None,
    ) -> JSONDict:
        if chat_type == "private":
            chat: JSONDict = {"id": chat_id, "type": "private", "first_name": first_name}
            if last_name:
                chat["last_name"] = last_name
            if username:
                chat["username"] = username
        else:
            chat = {"id": chat_id, "type": chat_type, "title": chat_title or "Test Group"}
        self._chats[_norm_chat_id(chat_id)] = chat
        message: JSONDict = {
            "message_id": self._new_message_id(chat_id),
            "date": int(time.time()),
            "chat": dict(chat),
        }
        if chat_type == "channel":
            message["sender_chat"] = dict(chat)
        else:
            message["from"] = self._user_dict(user_id, first_name, username, last_name)
        if message_thread_id is not None:
            message["message_thread_id"] = message_thread_id
        if reply_to_message_id is not None:
            message["reply_to_message"] = self._reply_target(chat_id, reply_to_message_id)
        self._messages[(_norm_chat_id(chat_id), message["message_id"])] = message
        return message

    @staticmethod
    def _wrap_message(message: JSONDict, chat_type: str) -> JSONDict:
        key = "channel_post" if chat_type == "channel" else "message"
        return {key: message}

    def _detect_entities(self, text: str) -> list[JSONDict]:
        entities: list[JSONDict] = []
        covered: list[tuple[int, int]] = []
        for m in _INBOUND_COMMAND_RE.finditer(text):
            entities.append(
                {
                    "type": "bot_command",
                    "offset": _utf16_len(text[: m.start()]),
                    "length": _utf16_len(m.group()),
                }
            )
            covered.append(m.span())
        for m in _INBOUND_MENTION_RE.finditer(text):
            if any(a <= m.start() < b for a, b in covered):
                continue
            entities.append(
                {
                    "type": "mention",
                    "offset": _utf16_len(text[: m.start()]),
                    "length": _utf16_len(m.group()),
                }
            )
        entities.sort(key=lambda e: e["offset"])
        return entities

    # ---------------------------------------------------------------- recorded state helpers

    def sent_messages(self, chat_id: int | str | None = None) -> list[JSONDict]:
        """Text messages sent by the bot (current state after edits), oldest first.

        Each dict has ``text`` exactly as sent, plus ``parse_mode``, ``entities``,
        ``reply_markup``, ``reply_parameters`` when given and ``parsed_text``.
        """
        wanted = None if chat_id is None else _norm_chat_id(chat_id)
        return [
            m
            for m in self._sent
            if "text" in m
            and not m.get("deleted")
            and (wanted is None or _norm_chat_id(m["chat"]["id"]) == wanted)
        ]

    def sent_texts(self, chat_id: int | str | None = None) -> list[str]:
        """The ``text`` of :meth:`sent_messages`."""
        return [m["text"] for m in self.sent_messages(chat_id)]

    def timed_calls(self, method: str | None = None) -> list[tuple[float, str, JSONDict]]:
        """``(arrival time, method, params)`` of all calls (to ``method``, case-insensitive)."""
        lower = None if method is None else method.lower()
        return [
            (at, name, params)
            for at, (name, params) in zip(self.call_times, self.calls, strict=True)
            if lower is None or name.lower() == lower
        ]

    def calls_to(self, method: str) -> list[JSONDict]:
        """Params of all calls to ``method`` (case-insensitive)."""
        lower = method.lower()
        return [params for name, params in self.calls if name.lower() == lower]

    def commands_for(
        self, scope: Mapping[str, Any] | None = None, language_code: str | None = None
    ) -> list[JSONDict] | None:
        """Commands stored by setMyCommands for that scope/language (None if never set)."""
        return self.commands.get(_scope_key(scope, language_code))

    @property
    def webhook_url(self) -> str:
        """URL registered via setWebhook ('' if none)."""
        return self.webhook.url

    # ---------------------------------------------------------------- webhook delivery

    async def deliver_webhook(
        self,
        update: JSONDict,
        *,
        secret_token: str | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - passed to aiohttp.ClientTimeout
    ) -> int:
        """POST ``update`` to the registered webhook (loopback only); return the HTTP status.

        The registered secret token is sent unless ``secret_token`` overrides it.
        """
        if not self.webhook.url:
            raise RuntimeError("no webhook registered via setWebhook")
        url = URL(self.webhook.url)
        if url.host not in LOOPBACK_HOSTS:
            raise ValueError(f"refusing to deliver to non-loopback webhook {url}")
        if "update_id" not in update:
            update["update_id"] = self._next_update_id
        self._next_update_id = max(self._next_update_id, int(update["update_id"])) + 1
        self._pending = [u for u in self._pending if u.get("update_id") != update["update_id"]]
        headers: dict[str, str] = {}
        token = secret_token if secret_token is not None else self.webhook.secret_token
        if token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = token
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(url, json=update, headers=headers) as resp,
        ):
            await resp.read()
            status = resp.status
        self.webhook_deliveries.append((update, status))
        self._bump()
        return status

    # ---------------------------------------------------------------- HTTP handlers

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        stored = self._files_by_path.get(request.match_info["path"])
        if stored is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        return web.Response(body=stored.data, content_type=stored.mime_type)

    async def _handle_api(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        method = request.match_info["method"]
        token = request.match_info["token"]
        params = await self._read_params(request)
        self.calls.append((method, params))
        self.call_times.append(arrived)
        try:
            if self.token is not None and token != self.token:
                raise ApiError(401, "Unauthorized")
            fault = self._take_fault(method.lower())
            if fault is not None:
                raise ApiError(fault.error_code, fault.description, fault.parameters)
            result = await self._dispatch(method, params)
        except ApiError as err:
            body = err.envelope()
            status = err.error_code
        else:
            body = {"ok": True, "result": result}
            status = 200
        finally:
            self._bump()
        return web.json_response(body, status=status)

    async def _read_params(self, request: web.Request) -> JSONDict:
        params: JSONDict = {k: _decode_form_value(k, v) for k, v in request.query.items()}
        if request.method != "POST" or not request.can_read_body:
            return params
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
            return params
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                params[key] = UploadedFile(
                    field=key,
                    filename=value.filename,
                    content_type=value.content_type,
                    data=value.file.read(),
                )
            else:
                params[key] = _decode_form_value(key, str(value))
        return params

    async def _dispatch(self, method: str, params: JSONDict) -> Any:
        name = method.lower()
        handler = self._handlers().get(name)
        if handler is not None:
            return await handler(params)
        if name in _ACK_METHODS:
            return True
        self.unknown_methods.append(method)
        raise ApiError(404, f"Not Found: method {method}")

    def _handlers(self) -> dict[str, Callable[[JSONDict], Awaitable[Any]]]:
        return {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "deletemessage": self._delete_message,
            "sendchataction": self._send_chat_action,
            "senddocument": self._send_document,
            "getfile": self._get_file,
            "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands,
            "deletemycommands": self._delete_my_commands,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "close": self._true,
            "logout": self._true,
            "answercallbackquery": self._answer_callback_query,
        }

    # ---------------------------------------------------------------- method implementations

    async def _true(self, params: JSONDict) -> bool:
        return True

    async def _get_me(self, params: JSONDict) -> JSONDict:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, params: JSONDict) -> list[JSONDict]:
        if self.webhook.url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = max(1, min(100, int(params.get("limit") or 100)))
        timeout = float(params.get("timeout") or 0)
        if params.get("allowed_updates") is not None:
            self._allowed_updates = list(params["allowed_updates"]) or None
        if offset > 0:
            self._pending = [u for u in self._pending if u["update_id"] >= offset]
        elif offset < 0:
            self._pending = self._pending[offset:]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout, 0.0), self.max_poll_wait)
        while True:
            batch = self._deliverable()[:limit]
            if batch or self._closing:
                return batch
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            await self._wait_changed(remaining)

    def _deliverable(self) -> list[JSONDict]:
        allowed = self._allowed_updates
        if allowed:
            self._pending = [
                u for u in self._pending if any(k in allowed for k in u if k != "update_id")
            ]
        return list(self._pending)

    async def _send_message(self, params: JSONDict) -> JSONDict:
        chat_id = _require_chat_id(params)
        text = params.get("text")
        parse_mode = params.get("parse_mode")
        parsed = self._validate_text(text, parse_mode)
        message = self._outgoing_message(chat_id, params)
        message["text"] = text
        message["parsed_text"] = parsed
        for key in ("parse_mode", "entities", "reply_markup", "reply_parameters"):
            if params.get(key) is not None:
                message[key] = params[key]
        if params.get("link_preview_options") is not None:
            message["link_preview_options"] = params["link_preview_options"]
        self._record_sent(message)
        return self._public_message(message)

    async def _edit_message_text(self, params: JSONDict) -> JSONDict | bool:
        text = params.get("text")
        parse_mode = params.get("parse_mode")
        parsed = self._validate_text(text, parse_mode)
        if params.get("inline_message_id"):
            return True
        chat_id = _require_chat_id(params)
        message_id = params.get("message_id")
        if message_id is None:
            raise ApiError(400, "Bad Request: message identifier is not specified")
        message = self._messages.get((_norm_chat_id(chat_id), int(message_id)))
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if message.get("from", {}).get("id") != self.bot_user["id"] or "text" not in message:
            raise ApiError(400, "Bad Request: message can't be edited")
        if (
            message.get("text") == text
            and message.get("parse_mode") == parse_mode
            and message.get("entities") == params.get("entities")
            and message.get("reply_markup") == params.get("reply_markup")
        ):
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a content and reply markup of the "
                "current message",
            )
        message["text"] = text
        message["parsed_text"] = parsed
        message["edit_date"] = int(time.time())
        for key in ("parse_mode", "entities", "reply_markup", "link_preview_options"):
            if params.get(key) is not None:
                message[key] = params[key]
            else:
                message.pop(key, None)
        return self._public_message(message)

    async def _delete_message(self, params: JSONDict) -> bool:
        chat_id = _require_chat_id(params)
        key = (_norm_chat_id(chat_id), int(params.get("message_id") or 0))
        message = self._messages.pop(key, None)
        if message is None:
            raise ApiError(400, "Bad Request: message to delete not found")
        message["deleted"] = True
        return True

    async def _send_chat_action(self, params: JSONDict) -> bool:
        chat_id = _require_chat_id(params)
        action = params.get("action")
        if action not in _CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        self.chat_actions.append((chat_id, action))
        return True

    async def _send_document(self, params: JSONDict) -> JSONDict:
        chat_id = _require_chat_id(params)
        doc = params.get("document")
        if isinstance(doc, str) and doc.startswith("attach://"):
            doc = params.get(doc.removeprefix("attach://"))
        if isinstance(doc, UploadedFile):
            if not doc.data:
                raise ApiError(400, "Bad Request: file must be non-empty")
            mime = doc.content_type or "application/octet-stream"
            stored = self._store_file(doc.filename, doc.data, mime)
        elif isinstance(doc, str) and doc in self._files:
            stored = self._files[doc]
        else:
            raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        caption = params.get("caption")
        if caption is not None:
            plain = _parse_formatted(caption, params.get("parse_mode"))
            if len(plain) > MAX_CAPTION_LENGTH:
                raise ApiError(400, "Bad Request: message caption is too long")
        message = self._outgoing_message(chat_id, params)
        message["document"] = self._document_dict(stored)
        if caption is not None:
            message["caption"] = caption
        for key in ("parse_mode", "caption_entities", "reply_markup", "reply_parameters"):
            if params.get(key) is not None:
                message[key] = params[key]
        self._record_sent(message)
        self.documents.append(
            StoredDocument(
                chat_id=chat_id,
                filename=stored.filename,
                data=stored.data,
                mime_type=stored.mime_type,
                caption=caption,
                file_id=stored.file_id,
                message=message,
            )
        )
        return self._public_message(message)

    async def _get_file(self, params: JSONDict) -> JSONDict:
        stored = self._files.get(str(params.get("file_id")))
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": stored.file_path,
        }

    async def _set_my_commands(self, params: JSONDict) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        cleaned: list[JSONDict] = []
        for cmd in commands:
            if not isinstance(cmd, dict):
                raise ApiError(400, "Bad Request: can't parse commands JSON object")
            command = str(cmd.get("command", "")).removeprefix("/")
            description = str(cmd.get("description", ""))
            if not _COMMAND_RE.fullmatch(command):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(description) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": command, "description": description})
        key = _scope_key(params.get("scope"), params.get("language_code"))
        if cleaned:
            self.commands[key] = cleaned
        else:
            self.commands.pop(key, None)
        return True

    async def _get_my_commands(self, params: JSONDict) -> list[JSONDict]:
        key = _scope_key(params.get("scope"), params.get("language_code"))
        return list(self.commands.get(key, []))

    async def _delete_my_commands(self, params: JSONDict) -> bool:
        self.commands.pop(_scope_key(params.get("scope"), params.get("language_code")), None)
        return True

    async def _set_webhook(self, params: JSONDict) -> bool:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if secret is not None and not _SECRET_RE.fullmatch(str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        if url:
            parsed = URL(url)
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise ApiError(400, "Bad Request: bad webhook: invalid webhook URL specified")
        if params.get("drop_pending_updates"):
            self._pending.clear()
        if not url:
            self.webhook = _Webhook()
            return True
        self.webhook = _Webhook(
            url=url,
            secret_token=str(secret) if secret else None,
            max_connections=int(params.get("max_connections") or 40),
            allowed_updates=params.get("allowed_updates"),
            ip_address=params.get("ip_address"),
            has_custom_certificate=params.get("certificate") is not None,
        )
        return True

    async def _delete_webhook(self, params: JSONDict) -> bool:
        if params.get("drop_pending_updates"):
            self._pending.clear()
        self.webhook = _Webhook()
        return True

    async def _get_webhook_info(self, params: JSONDict) -> JSONDict:
        info: JSONDict = {
            "url": self.webhook.url,
            "has_custom_certificate": self.webhook.has_custom_certificate,
            "pending_update_count": len(self._pending),
        }
        if self.webhook.url:
            info["max_connections"] = self.webhook.max_connections
            if self.webhook.allowed_updates:
                info["allowed_updates"] = self.webhook.allowed_updates
            if self.webhook.ip_address:
                info["ip_address"] = self.webhook.ip_address
        return info

    async def _answer_callback_query(self, params: JSONDict) -> bool:
        if not params.get("callback_query_id"):
            raise ApiError(400, "Bad Request: query is too old and response timeout expired")
        self.callback_answers.append(params)
        return True

    # ---------------------------------------------------------------- message building

    def _validate_text(self, text: Any, parse_mode: str | None) -> str:
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        parsed = _parse_formatted(text, parse_mode)
        if not parsed.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(parsed) > MAX_MESSAGE_LENGTH:
            raise ApiError(400, "Bad Request: message is too long")
        return parsed

    def _new_message_id(self, chat_id: int | str) -> int:
        key = _norm_chat_id(chat_id)
        mid = self._next_message_id.get(key, 1)
        self._next_message_id[key] = mid + 1
        return mid

    def _chat_for(self, chat_id: int | str) -> JSONDict:
        key = _norm_chat_id(chat_id)
        chat = self._chats.get(key)
        if chat is None:
            if isinstance(key, int) and key > 0:
                chat = {"id": key, "type": "private", "first_name": "User"}
            elif isinstance(key, int):
                chat = {"id": key, "type": "supergroup", "title": "Test Group"}
            else:  # "@channelusername"
                chat = {"id": -1001000000000, "type": "channel", "title": key, "username": key}
            self._chats[key] = chat
        return dict(chat)

    def _outgoing_message(self, chat_id: int | str, params: JSONDict) -> JSONDict:
        message: JSONDict = {
            "message_id": self._new_message_id(chat_id),
            "from": dict(self.bot_user),
            "chat": self._chat_for(chat_id),
            "date": int(time.time()),
        }
        if params.get("message_thread_id") is not None:
            message["message_thread_id"] = params["message_thread_id"]
        reply_to: Any = None
        reply_parameters = params.get("reply_parameters")
        if isinstance(reply_parameters, dict):
            reply_to = reply_parameters.get("message_id")
        elif params.get("reply_to_message_id") is not None:
            reply_to = params["reply_to_message_id"]
        if reply_to is not None:
            target = self._messages.get((_norm_chat_id(chat_id), int(reply_to)))
            allow = isinstance(reply_parameters, dict) and reply_parameters.get(
                "allow_sending_without_reply"
            )
            if target is None and not allow:
                raise ApiError(400, "Bad Request: message to be replied not found")
            if target is not None:
                message["reply_to_message"] = self._public_message(target, nested=True)
        return message

    def _record_sent(self, message: JSONDict) -> None:
        self._sent.append(message)
        self._messages[(_norm_chat_id(message["chat"]["id"]), message["message_id"])] = message

    def _reply_target(self, chat_id: int | str, message_id: int) -> JSONDict:
        target = self._messages.get((_norm_chat_id(chat_id), message_id))
        if target is not None:
            return self._public_message(target, nested=True)
        return {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat_for(chat_id),
        }

    def _public_message(self, message: JSONDict, *, nested: bool = False) -> JSONDict:
        """The Message as Telegram would return it (plain text, inline markup only)."""
        public = {
            k: v
            for k, v in message.items()
            if k not in ("parse_mode", "reply_parameters", "parsed_text", "deleted")
        }
        if "parsed_text" in message:
            public["text"] = message["parsed_text"]
        markup = public.get("reply_markup")
        if not (isinstance(markup, dict) and "inline_keyboard" in markup):
            public.pop("reply_markup", None)
        if nested:
            public.pop("reply_to_message", None)
        return public

    def _store_file(self, filename: str, data: bytes, mime_type: str) -> _StoredFile:
        n = self._next_file
        self._next_file += 1
        ext = ""
        if "." in filename:
            ext = "." + filename.rsplit(".", 1)[1]
        stored = _StoredFile(
            file_id=f"BQACAgIAAxkDFAKE{n:06d}",
            file_unique_id=f"AgADFAKE{n:04d}",
            file_path=f"documents/file_{n}{ext}",
            data=data,
            filename=filename,
            mime_type=mime_type,
        )
        self._files[stored.file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored

    @staticmethod
    def _document_dict(stored: _StoredFile) -> JSONDict:
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": stored.filename,
            "mime_type": stored.mime_type,
            "file_size": len(stored.data),
        }


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _decode_form_value(key: str, value: str) -> Any:
    """Form values are strings; PTB JSON-encodes every non-string parameter."""
    if key in _STRING_FIELDS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _norm_chat_id(chat_id: Any) -> int | str:
    if isinstance(chat_id, bool):
        return str(chat_id)
    if isinstance(chat_id, int):
        return chat_id
    text = str(chat_id)
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _require_chat_id(params: JSONDict) -> int | str:
    chat_id = params.get("chat_id")
    if chat_id is None or chat_id == "":
        raise ApiError(400, "Bad Request: chat_id is empty")
    return _norm_chat_id(chat_id)


def _scope_key(scope: Mapping[str, Any] | None, language_code: str | None = None) -> str:
    """``default``, ``all_private_chats``, ``chat:<id>``, ``chat_member:<chat>:<user>`` …

    A language code is appended as ``/<code>``.
    """
    if not scope:
        key = "default"
    else:
        key = str(scope.get("type", "default"))
        if scope.get("chat_id") is not None:
            key += f":{_norm_chat_id(scope['chat_id'])}"
        if scope.get("user_id") is not None:
            key += f":{scope['user_id']}"
    if language_code:
        key += f"/{language_code}"
    return key


def _short(params: JSONDict, limit: int = 200) -> str:
    shown = {
        k: (f"<file {v.filename!r} {len(v.data)}B>" if isinstance(v, UploadedFile) else v)
        for k, v in params.items()
    }
    text = json.dumps(shown, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
