"""discord.py glue: point discord.py's REST base, gateway URL and CDN at a running fake, and
run a bot against it until ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import discord
import discord.asset
import discord.gateway
import discord.http
import yarl

from .constants import FAKE_TOKEN
from .server import FakeDiscord

_log = logging.getLogger(__name__)


async def _fast_before_identify_hook(
    self: discord.Client, shard_id: int | None, *, initial: bool = False
) -> None:
    """Replacement for ``Client.before_identify_hook`` without the 5 s non-initial sleep."""
    return None


@contextlib.contextmanager
def patched_discord(fake: FakeDiscord, *, fast_identify: bool = True) -> Iterator[FakeDiscord]:
    """Point discord.py at ``fake`` (REST base, gateway URL, CDN) and restore afterwards.

    With ``fast_identify`` the default ``Client.before_identify_hook`` (which sleeps 5 s
    before every non-initial IDENTIFY, e.g. shard 1 or a re-identify) becomes a no-op;
    subclasses that override the hook are unaffected.
    """
    route_cls = discord.http.Route
    ws_cls = discord.gateway.DiscordWebSocket
    asset_cls = discord.asset.Asset
    saved = (
        route_cls.BASE,
        ws_cls.DEFAULT_GATEWAY,
        asset_cls.BASE,
        discord.Client.__dict__["before_identify_hook"],
    )
    route_cls.BASE = fake.api_base
    ws_cls.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    asset_cls.BASE = f"{fake.base_url}/cdn"
    if fast_identify:
        discord.Client.before_identify_hook = _fast_before_identify_hook  # type: ignore[method-assign]
    try:
        yield fake
    finally:
        route_cls.BASE, ws_cls.DEFAULT_GATEWAY, asset_cls.BASE = saved[:3]
        discord.Client.before_identify_hook = saved[3]  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def running_bot(
    bot: discord.Client, token: str = FAKE_TOKEN, *, ready_timeout: float = 10.0
) -> AsyncIterator[asyncio.Task[None]]:
    """Log ``bot`` in, run ``connect()`` in a task until ready, and close it cleanly on exit.

    Yields the connect task. Raises the connect error (e.g. ``LoginFailure``,
    ``PrivilegedIntentsRequired``) if the bot dies before becoming ready.
    """
    await bot.login(token)
    task = asyncio.create_task(bot.connect(reconnect=True), name="fake-discord-bot-connect")
    ready = asyncio.create_task(bot.wait_until_ready(), name="fake-discord-bot-ready")
    try:
        done, _ = await asyncio.wait(
            {task, ready}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            if task in done:
                task.result()
                raise RuntimeError("bot.connect() returned before the bot became ready")
            raise TimeoutError(f"bot not ready after {ready_timeout}s")
        yield task
    finally:
        ready.cancel()
        await bot.close()
        done, _ = await asyncio.wait({task}, timeout=5.0)
        if not done:
            task.cancel()
            await asyncio.wait({task})
        elif not task.cancelled() and task.exception() is not None:
            _log.debug("bot connect task ended with %r", task.exception())
