"""Messages: building and storing message objects (mentions, attachments, references,
interaction metadata), applying edits, validating content, incoming user messages
(``send_message``) and the views of what the bot sent.
"""

from __future__ import annotations

import copy
import mimetypes
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .constants import EPHEMERAL, LOADING
from .gateway import GatewayMixin
from .models import RecordedFile, SentMessage, _Interaction
from .responses import _error, _form_error
from .state import _now_iso

_MENTION_RE = re.compile(r"<@!?(\d+)>")


class MessagesMixin(GatewayMixin):
    """The message model shared by the channel routes and interactions."""

    # ------------------------------------------------------------------ public inspection

    def sent_messages(self, channel_id: int | None = None) -> list[SentMessage]:
        """Messages the bot posted via ``POST /channels/{id}/messages`` (optionally filtered)."""
        return [m for m in self._sent if channel_id is None or m.channel_id == channel_id]

    def message(self, message_id: int) -> dict[str, Any] | None:
        """A stored (non-ephemeral) message by id."""
        return self._messages.get(message_id)

    def attachment_bytes(self, attachment_id: int | str) -> bytes:
        """Bytes of an uploaded attachment."""
        return self._blobs[int(attachment_id)]

    # ------------------------------------------------------------------ message objects

    def _mentions_in(self, content: str) -> list[dict[str, Any]]:
        seen: list[int] = []
        for raw in _MENTION_RE.findall(content or ""):
            uid = int(raw)
            if uid not in seen:
                seen.append(uid)
        return [copy.deepcopy(self._ensure_user(uid)) for uid in seen]

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
