"""Files: the file store, sendDocument, getFile and the ``/file/bot<token>/<path>`` download
route.
"""

from __future__ import annotations

from aiohttp import web

from .formatting import _parse_formatted
from .messages import MessagesMixin
from .models import (
    MAX_CAPTION_LENGTH,
    ApiError,
    JSONDict,
    StoredDocument,
    UploadedFile,
    _require_chat_id,
    _StoredFile,
)


class FilesMixin(MessagesMixin):
    """Stored files (uploaded by the bot or pushed by a user) and the methods serving them."""

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

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        stored = self._files_by_path.get(request.match_info["path"])
        if stored is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
            )
        return web.Response(body=stored.data, content_type=stored.mime_type)
