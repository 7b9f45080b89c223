"""The bot's outgoing messages: sendMessage, editMessageText, deleteMessage, sendChatAction,
answerCallbackQuery, the message/chat store they share with inbound updates, and the
``sent_messages`` views tests assert on.
"""

from __future__ import annotations

import time
from typing import Any

from .formatting import _parse_formatted
from .models import (
    MAX_MESSAGE_LENGTH,
    ApiError,
    JSONDict,
    _norm_chat_id,
    _require_chat_id,
)
from .state import TelegramState

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


class MessagesMixin(TelegramState):
    """Bot API message methods and the chat/message store."""

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

    # ---------------------------------------------------------------- Bot API methods

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
