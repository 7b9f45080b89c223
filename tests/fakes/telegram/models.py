"""Records the Telegram fake stores or returns, its error type, limits and chat-id helpers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

JSONDict = dict[str, Any]

MAX_MESSAGE_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


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
