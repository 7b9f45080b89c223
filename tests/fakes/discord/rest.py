"""REST plumbing (recording, body parsing, auth, routing, fault application), the attachment and
CDN routes, and the user, application, gateway and guild routes.
"""

from __future__ import annotations

import copy
import json
import logging
import mimetypes
import re
from typing import Any

from aiohttp import BodyPartReader, web

from .faults import FaultsMixin
from .models import RecordedFile, RecordedRequest, _Handler
from .responses import _error, _form_error, _json_response, _truthy

_log = logging.getLogger(__name__)

# 1x1 transparent PNG served for any CDN asset.
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


class RestMixin(FaultsMixin):
    """Request handling and the routes that only read or create users, DMs and guilds."""

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        """Recorded requests matching a method (or ``*``) and a path regex."""
        pat = re.compile(path_regex)
        return [
            r
            for r in self.requests
            if (method == "*" or r.method == method.upper()) and pat.search(r.path)
        ]

    # ------------------------------------------------------------------ REST plumbing

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
