"""The gateway: the websocket protocol (HELLO, IDENTIFY, RESUME, heartbeats, member requests),
sessions and shard routing, event dispatch honouring intents, and forced disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import secrets
from typing import Any

from aiohttp import WSMsgType, web

from .connection import _GatewayConn, _Session
from .constants import (
    _CLOSE_TIMEOUT,
    _MAX_BUFFERED_EVENTS,
    EPHEMERAL,
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MESSAGES,
    INTENT_MESSAGE_CONTENT,
    PRIVILEGED_INTENTS,
)
from .state import DiscordState

_log = logging.getLogger(__name__)


class GatewayMixin(DiscordState):
    """Gateway sessions, dispatch and the websocket handler."""

    @property
    def connected_shards(self) -> list[tuple[int, int]]:
        """``(shard_id, shard_count)`` of sessions with a live websocket."""
        return sorted(
            s.shard for s in self._sessions.values() if s.conn is not None and s.conn.alive
        )

    # ------------------------------------------------------------------ gateway: routing

    def _session_for(self, guild_id: int | None) -> _Session | None:
        """Most recent live session whose shard owns ``guild_id`` (shard 0 for DMs)."""
        best: _Session | None = None
        for s in self._sessions.values():
            if s.ended:
                continue
            index, count = s.shard
            owned = index == 0 if guild_id is None else (guild_id >> 22) % count == index
            if owned and (best is None or s.order > best.order):
                best = s
        return best

    async def _send_locked(self, session: _Session, event: str, data: Any) -> None:
        """Send a DISPATCH (caller holds ``session.lock``); buffered for RESUME replay."""
        session.seq += 1
        payload = {"op": 0, "t": event, "s": session.seq, "d": copy.deepcopy(data)}
        if event not in ("READY", "RESUMED"):
            session.events.append(payload)
            del session.events[:-_MAX_BUFFERED_EVENTS]
        conn = session.conn
        if conn is not None and conn.alive:
            try:
                await conn.send(payload)
            except (ConnectionError, RuntimeError) as exc:  # replayed on RESUME
                _log.debug("fake gateway: dropped %s: %r", event, exc)

    async def dispatch(
        self, event: str, data: Any, *, guild_id: int | None = None, required: bool = True
    ) -> bool:
        """Send a raw DISPATCH event to the session owning ``guild_id`` (shard 0 if None).

        Returns False (or raises ``RuntimeError`` when ``required``) if no bot is identified.
        """
        session = self._session_for(guild_id)
        if session is None:
            if required:
                raise RuntimeError(
                    f"FakeDiscord: no gateway session for guild {guild_id} to send {event}"
                )
            return False
        async with session.lock:
            await self._send_locked(session, event, data)
        self._notify()
        return True

    async def _dispatch_message_event(
        self, event: str, msg: dict[str, Any], *, required: bool
    ) -> bool:
        """MESSAGE_* dispatch honouring GUILD_MESSAGES/DIRECT_MESSAGES/MESSAGE_CONTENT."""
        guild_id = int(msg["guild_id"]) if msg.get("guild_id") else None
        session = self._session_for(guild_id)
        if session is None:
            if required:
                raise RuntimeError(f"FakeDiscord: no gateway session to deliver {event}")
            return False
        needed = INTENT_GUILD_MESSAGES if guild_id is not None else INTENT_DIRECT_MESSAGES
        if not session.intents & needed:
            return False
        data = msg
        author_id = int(msg.get("author", {}).get("id", 0))
        mentioned = any(int(u["id"]) == self.bot_id for u in msg.get("mentions") or [])
        if (
            guild_id is not None
            and event != "MESSAGE_DELETE"
            and not session.intents & INTENT_MESSAGE_CONTENT
            and author_id != self.bot_id
            and not mentioned
        ):
            data = {**msg, "content": "", "embeds": [], "attachments": [], "components": []}
            data.pop("poll", None)
        async with session.lock:
            await self._send_locked(session, event, data)
        self._notify()
        return True

    async def _echo(self, event: str, msg: dict[str, Any]) -> None:
        if self.echo_bot_messages and not int(msg.get("flags") or 0) & EPHEMERAL:
            await self._dispatch_message_event(event, msg, required=False)

    # ------------------------------------------------------------------ gateway: control

    async def disconnect_all(self, code: int = 4000) -> None:
        """Close every gateway websocket with ``code`` (4000 → discord.py RESUMEs)."""
        conns = list(self._conns)
        for conn in conns:
            conn.closing = True
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None
        await asyncio.gather(*(c.close(code, "Forced disconnect") for c in conns))

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT on every connection (discord.py closes and RESUMEs)."""
        for conn in list(self._conns):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.send({"op": 7, "d": None, "s": None, "t": None})

    async def invalidate_sessions(self, *, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION; non-resumable sessions are forgotten (→ re-IDENTIFY)."""
        for conn in list(self._conns):
            if not resumable and conn.session is not None:
                conn.session.ended = True
                self._sessions.pop(conn.session.session_id, None)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.send({"op": 9, "d": resumable, "s": None, "t": None})

    # ------------------------------------------------------------------ gateway: protocol

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0, timeout=_CLOSE_TIMEOUT)
        await ws.prepare(request)
        self.connections += 1
        self.gateway_queries.append(dict(request.query))
        try:
            conn = _GatewayConn(ws, request.query.get("compress"))
        except ValueError as exc:
            await ws.close(code=4000, message=str(exc).encode())
            return ws
        self._conns.add(conn)
        try:
            hello = {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake-gw"]}
            await conn.send({"op": 10, "d": hello, "s": None, "t": None})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    await conn.close(4002, "Error while decoding payload.")
                    break
                try:
                    payload = json.loads(msg.data)
                except ValueError:
                    await conn.close(4002, "Error while decoding payload.")
                    break
                await self._on_gateway_payload(conn, payload)
                self._notify()
        except (ConnectionError, RuntimeError) as exc:
            _log.debug("fake gateway: connection error %r", exc)
        except Exception as exc:
            self.errors.append(exc)
            _log.exception("fake gateway handler failed")
        finally:
            self._conns.discard(conn)
            self.gateway_closes.append(ws.close_code)
            session = conn.session
            if session is not None:
                if session.conn is conn:
                    session.conn = None
                # A clean close by the client ends the session; other codes keep it resumable.
                if ws.close_code in (1000, 1001) and not conn.closing:
                    session.ended = True
                    self._sessions.pop(session.session_id, None)
            self._notify()
        return ws

    async def _on_gateway_payload(self, conn: _GatewayConn, payload: Any) -> None:
        op = payload.get("op") if isinstance(payload, dict) else None
        data = payload.get("d") if isinstance(payload, dict) else None
        if op == 1:
            self.heartbeats += 1
            await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, data)
        elif op == 6:
            await self._resume(conn, data)
        elif op == 3:
            self.presence_updates.append(data)
        elif op == 8:
            await self._request_members(conn, data)
        elif op in (4, 31):  # voice state / request soundboard sounds
            pass
        else:
            await conn.close(4001, "Unknown opcode.")

    async def _identify(self, conn: _GatewayConn, data: Any) -> None:
        if not isinstance(data, dict):
            await conn.close(4002, "Error while decoding payload.")
            return
        if conn.session is not None:
            await conn.close(4005, "Already authenticated.")
            return
        token = data.get("token")
        if not token or (self.token is not None and token != self.token):
            await conn.close(4004, "Authentication failed.")
            return
        shard_val = data.get("shard")
        index, count = (int(shard_val[0]), int(shard_val[1])) if shard_val else (0, 1)
        if not 0 <= index < count:
            await conn.close(4010, "Invalid shard.")
            return
        if data.get("intents") is None:
            await conn.close(4013, "Invalid intent(s).")
            return
        intents = int(data["intents"])
        if self.allowed_intents is not None and intents & PRIVILEGED_INTENTS & ~(
            self.allowed_intents
        ):
            await conn.close(4014, "Disallowed intent(s).")
            return
        self.identifies.append(data)
        self._session_counter += 1
        session = _Session(secrets.token_hex(16), (index, count), intents, self._session_counter)
        for stale in list(self._sessions.values()):
            if stale.shard == session.shard and stale.conn is None:
                stale.ended = True
                self._sessions.pop(stale.session_id, None)
        self._sessions[session.session_id] = session
        guild_ids = [gid for gid in self._guilds if (gid >> 22) % count == index]
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**self.bot_user, "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(gid), "unavailable": True} for gid in guild_ids],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": self.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": ["fake"],
            "auth": {},
            "_trace": ["fake-gw"],
        }
        if shard_val:
            ready["shard"] = [index, count]
        async with session.lock:
            session.conn = conn
            conn.session = session
            await self._send_locked(session, "READY", ready)
            for gid in guild_ids:
                await self._send_locked(
                    session, "GUILD_CREATE", self._guild_payload(gid, intents=intents)
                )

    async def _resume(self, conn: _GatewayConn, data: Any) -> None:
        data = data if isinstance(data, dict) else {}
        session = self._sessions.get(str(data.get("session_id")))
        token_ok = self.token is None or data.get("token") == self.token
        if session is None or session.ended or not token_ok:
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return
        self.resumes.append(data)
        old = session.conn
        if old is not None and old is not conn:
            old.closing = True
            task = asyncio.get_running_loop().create_task(old.close(4000, "Resumed elsewhere"))
            self._bg_tasks.add(task)
            task.add_done_callback(self._bg_tasks.discard)
        seq = int(data.get("seq") or 0)
        async with session.lock:
            session.conn = conn
            conn.session = session
            for event in [e for e in session.events if e["s"] > seq]:
                await conn.send(event)
            await self._send_locked(session, "RESUMED", {"_trace": ["fake-gw"]})

    async def _request_members(self, conn: _GatewayConn, data: Any) -> None:
        session = conn.session
        if session is None or not isinstance(data, dict):
            await conn.close(4003, "Not authenticated.")
            return
        raw_ids = data.get("guild_id")
        guild_ids = raw_ids if isinstance(raw_ids, list) else [raw_ids]
        for raw in guild_ids:
            gid = int(raw)
            members = self._members.get(gid, {})
            wanted = data.get("user_ids")
            query = str(data.get("query") or "").lower()
            limit = int(data.get("limit") or 0)
            if wanted is not None:
                wanted_ids = [int(u) for u in (wanted if isinstance(wanted, list) else [wanted])]
                ids = [u for u in wanted_ids if u in members]
                not_found = [str(u) for u in wanted_ids if u not in members]
            else:
                ids = [u for u in members if self._users[u]["username"].lower().startswith(query)]
                not_found = []
                if limit:
                    ids = ids[:limit]
            chunk: dict[str, Any] = {
                "guild_id": str(gid),
                "members": [self._member_payload(gid, u) for u in ids],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": not_found,
            }
            if data.get("nonce") is not None:
                chunk["nonce"] = data["nonce"]
            if data.get("presences"):
                chunk["presences"] = []
            async with session.lock:
                await self._send_locked(session, "GUILD_MEMBERS_CHUNK", chunk)
