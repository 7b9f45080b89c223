"""Inbound updates: building and queueing user messages, media, albums, documents and
callback queries, and delivering them by getUpdates long polling.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
import time
from typing import Any

from .files import FilesMixin
from .formatting import _utf16_len
from .models import ApiError, JSONDict, _norm_chat_id

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

# bot_command / mention entities in inbound messages
_INBOUND_COMMAND_RE = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")
_INBOUND_MENTION_RE = re.compile(r"(?<![\w@/])@[A-Za-z0-9_]{5,32}\b")


class UpdatesMixin(FilesMixin):
    """``push_*`` / ``make_message_update`` and the getUpdates method."""

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

    # ---------------------------------------------------------------- getUpdates

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
