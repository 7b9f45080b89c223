"""Interactions: incoming slash-command invocations (``send_interaction``), interaction
callbacks, and followups and ``@original`` edits/deletes through the interaction webhook.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from .commands import CommandsMixin
from .constants import ATTACHMENT_SIZE_LIMIT, DM_PERMISSIONS, EPHEMERAL, LOADING
from .messages import MessagesMixin
from .models import InteractionResponse, RecordedRequest, _Interaction
from .responses import _error, _form_error, _json_response, _truthy


class InteractionsMixin(CommandsMixin, MessagesMixin):
    """Interaction events and the interaction callback/webhook routes."""

    def followups(self) -> list[InteractionResponse]:
        """Interaction followup messages only."""
        return [r for r in self.interaction_responses if r.kind == "followup"]

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
