"""The aiohttp app of the Discord fake: start/stop, addresses, the REST route table and the
waiting helpers; :class:`FakeDiscord` is composed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from .channels import ChannelsMixin
from .commands import CommandsMixin
from .faults import FaultsMixin
from .gateway import GatewayMixin
from .interactions import InteractionsMixin
from .messages import MessagesMixin
from .rest import RestMixin
from .state import DiscordState

_T = TypeVar("_T")


class FakeDiscord(
    InteractionsMixin,
    CommandsMixin,
    ChannelsMixin,
    MessagesMixin,
    GatewayMixin,
    RestMixin,
    FaultsMixin,
    DiscordState,
):
    """Loopback Discord gateway + REST API (see the package docstring)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeDiscord:
        """Start serving on an ephemeral port."""
        if self._runner is not None:
            return self
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/", self._ws_handler)
        app.router.add_route("*", "/api/{tail:.*}", self._rest_handler)
        app.router.add_get(
            "/attachments/{channel_id}/{attachment_id}/{filename}", self._attachment_handler
        )
        app.router.add_get("/cdn/{tail:.*}", self._cdn_handler)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner
        return self

    async def stop(self) -> None:
        """Close all gateway connections and stop the server."""
        conns = list(self._conns)
        for conn in conns:
            conn.closing = True
        await asyncio.gather(*(c.close(1001, "Going away") for c in conns))
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ waiting

    async def wait_for(
        self,
        predicate: Callable[..., _T],
        timeout: float = 5.0,  # noqa: ASYNC109 (part of the requested API)
    ) -> _T:
        """Wait until ``predicate()`` (or ``predicate(fake)``) is truthy and return its value.

        Re-evaluated on every recorded request / gateway event and every 50 ms; raises
        ``AssertionError`` listing recent requests on timeout.
        """
        try:
            wants_arg = len(inspect.signature(predicate).parameters) > 0
        except (TypeError, ValueError):
            wants_arg = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate(self) if wants_arg else predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(self._timeout_report(timeout))
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.05))

    def _timeout_report(self, timeout: float) -> str:
        lines = [f"FakeDiscord.wait_for timed out after {timeout}s. Recent requests:"]
        lines += [f"  {r}" for r in self.requests[-20:]] or ["  (none)"]
        if self.unknown_requests:
            lines.append("Unknown routes: " + ", ".join(str(r) for r in self.unknown_requests))
        if self.errors:
            lines.append("Fake errors: " + ", ".join(repr(e) for e in self.errors))
        lines.append(f"Gateway: identifies={len(self.identifies)} resumes={len(self.resumes)}")
        for s in self._sessions.values():
            state = "connected" if s.conn is not None and s.conn.alive else "DISCONNECTED"
            lines.append(
                f"  session shard={s.shard} {state} intents={s.intents} seq={s.seq}"
                " (events for a disconnected session are buffered until RESUME)"
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ REST route table

    def _build_routes(self) -> None:
        snow = r"(?P<{}>\d+)"
        ch, msg = snow.format("channel_id"), snow.format("message_id")
        app, gid = snow.format("app_id"), snow.format("guild_id")
        hook = rf"/webhooks/{app}/(?P<token>[^/]+)"
        add = self._add_route
        add("GET", r"/users/@me", self._r_get_me)
        add("GET", rf"/users/{snow.format('user_id')}", self._r_get_user)
        add("POST", r"/users/@me/channels", self._r_create_dm)
        add("GET", r"/oauth2/applications/@me", self._r_get_application)
        add("GET", r"/applications/@me", self._r_get_application)
        add("GET", r"/gateway", self._r_gateway, auth=False)
        add("GET", r"/gateway/bot", self._r_gateway_bot)
        add("GET", rf"/channels/{ch}", self._r_get_channel)
        add("GET", rf"/channels/{ch}/messages", self._r_get_messages)
        add("POST", rf"/channels/{ch}/messages", self._r_post_message)
        add("GET", rf"/channels/{ch}/messages/{msg}", self._r_get_message)
        add("PATCH", rf"/channels/{ch}/messages/{msg}", self._r_edit_message)
        add("DELETE", rf"/channels/{ch}/messages/{msg}", self._r_delete_message)
        add("POST", rf"/channels/{ch}/typing", self._r_typing)
        reaction = rf"/channels/{ch}/messages/{msg}/reactions/(?P<emoji>[^/]+)/@me"
        add("PUT", reaction, self._r_add_reaction)
        add("DELETE", reaction, self._r_remove_reaction)
        add("GET", rf"/guilds/{gid}", self._r_get_guild)
        add("GET", rf"/guilds/{gid}/channels", self._r_get_guild_channels)
        add("GET", rf"/guilds/{gid}/members/{snow.format('user_id')}", self._r_get_member)
        for prefix in (rf"/applications/{app}", rf"/applications/{app}/guilds/{gid}"):
            add("GET", rf"{prefix}/commands", self._r_get_commands)
            add("PUT", rf"{prefix}/commands", self._r_put_commands)
            add("POST", rf"{prefix}/commands", self._r_post_command)
        callback = rf"/interactions/{snow.format('interaction_id')}/(?P<token>[^/]+)/callback"
        add("POST", callback, self._r_interaction_callback, auth=False)
        add("POST", hook, self._r_webhook_execute, auth=False)
        hook_msg = rf"{hook}/messages/(?P<message_id>@original|\d+)"
        add("GET", hook_msg, self._r_webhook_get, auth=False)
        add("PATCH", hook_msg, self._r_webhook_edit, auth=False)
        add("DELETE", hook_msg, self._r_webhook_delete, auth=False)
