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

:class:`FakeTelegramAPI` (``server``) is composed of one mixin per concern: ``updates``
(inbound updates and getUpdates), ``files`` (stored files, sendDocument, getFile, downloads),
``messages`` (the bot's messages and chat actions), ``webhook``, ``commands`` and ``faults``,
all on the shared state of ``state``. ``formatting`` validates HTML and MarkdownV2 and
``models`` holds the records and the error type.
"""

from .formatting import parse_html, parse_markdown_v2
from .models import ApiError, InjectedFault, StoredDocument, UploadedFile
from .server import FakeTelegramAPI

__all__ = [
    "ApiError",
    "FakeTelegramAPI",
    "InjectedFault",
    "StoredDocument",
    "UploadedFile",
    "parse_html",
    "parse_markdown_v2",
]
