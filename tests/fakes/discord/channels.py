"""Channel and message routes: read channels and history, create, edit and delete messages,
typing and reactions (with Discord's permission and validation errors).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .constants import EPHEMERAL, PERM_ATTACH_FILES, PERM_SEND_MESSAGES, PERM_VIEW_CHANNEL
from .messages import MessagesMixin
from .models import RecordedRequest, SentMessage
from .responses import _error, _form_error, _json_response


class ChannelsMixin(MessagesMixin):
    """``/channels/...`` REST routes."""

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
