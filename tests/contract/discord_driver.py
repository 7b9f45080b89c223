"""The contract's driver for Discord: the standalone bot (real discord.py) on FakeDiscord.

Private = the user's DM channel plus the ephemeral answers to their slash commands; the
group = guild channel 5001, where a message is addressed to the bot by mentioning it.
Commands are given as slash commands (the prefix form is covered in test_discord_adapter).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aipersona.adapters.discord import DiscordSettings, build_bot
from aipersona.adapters.kit import COMMANDS
from aipersona.core import Identity
from tests.fakes.discord import FakeDiscord, SentMessage, patched_discord, running_bot

from .driver import Driver

BOT = 1000
GUILD, CHANNEL = 5000, 5001
USERS = {"alice": 42, "bob": 43}
DMS = {"alice": 7042, "bob": 7043}
PNG = bytes.fromhex("89504e470d0a1a0a")


class DiscordDriver(Driver):
    name = "discord"
    message_limit = 2000
    stream_interval = 0.02
    fake: FakeDiscord

    @classmethod
    @asynccontextmanager
    async def open(cls, core: Any, llm: Any, **fixtures: Any) -> AsyncIterator[Any]:
        driver = cls(core, llm)
        async with FakeDiscord() as driver.fake:
            # each user's DM channel exists from the start, under its known id: a DM the bot
            # opens first (the privacy notice of a guild message) lands where ``private``
            # looks, not in a channel of a new id
            for user, user_id in USERS.items():
                driver.fake._ensure_dm(user_id, DMS[user])
            with patched_discord(driver.fake):
                yield driver

    @asynccontextmanager
    async def running(self, **settings: Any) -> AsyncIterator[None]:
        bot = build_bot(self.core, DiscordSettings(**settings), guild_ready_timeout=0.1)
        async with running_bot(bot):
            yield

    def identity(self, user: str) -> Identity:
        return Identity("discord", str(USERS[user]))

    def group_id(self) -> str:
        return str(CHANNEL)

    async def send(
        self, user: str, text: str, *, group: bool = False, addressed: bool = True
    ) -> None:
        if not group:
            await self.fake.send_message(DMS[user], USERS[user], text)
        elif addressed:
            await self.fake.send_message(
                CHANNEL, USERS[user], f"<@{BOT}> {text}", mentions_bot=True
            )
        else:
            await self.fake.send_message(CHANNEL, USERS[user], text)

    async def send_media(self, user: str, *, group: bool = False, addressed: bool = True) -> None:
        where = CHANNEL if group else DMS[user]
        content = f"<@{BOT}>" if group and addressed else ""
        await self.fake.send_message(
            where,
            USERS[user],
            content,
            mentions_bot=group and addressed,
            attachments=[("a.png", PNG)],
        )

    async def command(self, user: str, name: str, arg: str = "", *, group: bool = False) -> None:
        where: dict[str, Any] = {"guild_id": GUILD} if group else {"channel_id": DMS[user]}
        await self.fake.send_interaction(
            name, USERS[user], options=slash_options(name, arg), **where
        )

    def _dm(self, user: str) -> list[SentMessage]:
        return [m for m in self.fake.sent_messages(DMS[user]) if not m.deleted]

    def _ephemeral(self, user: str) -> list[tuple[int, str, list[Any]]]:
        """(message id, content, files) of the answers to ``user``'s slash commands."""
        mine = {int(i["id"]) for i in self.fake.interactions if _user_of(i) == USERS[user]}
        return [
            (int(r.message["id"]) if r.message else 0, r.content, r.files)
            for r in self.fake.interaction_responses
            if r.interaction_id in mine and r.content
        ]

    def private(self, user: str) -> list[str]:
        seen = [(m.id, m.content) for m in self._dm(user)]
        seen += [(i, content) for i, content, _ in self._ephemeral(user)]
        return [content for _, content in sorted(seen)]

    def public(self) -> list[str]:
        return [m.content for m in self.fake.sent_messages(CHANNEL) if not m.deleted]

    def files(self, user: str) -> list[tuple[str, bytes]]:
        found = [f for m in self._dm(user) for f in m.files]
        found += [f for _, _, files in self._ephemeral(user) for f in files]
        return [(f.filename, f.data) for f in found]

    def public_files(self) -> list[str]:
        return [f.filename for m in self.fake.sent_messages(CHANNEL) for f in m.files]

    def edited(self, user: str) -> bool:
        return any(m.edits for m in self._dm(user))

    async def wait(self, predicate: Any, within: float = 10.0) -> Any:
        return await self.fake.wait_for(predicate, timeout=within)


def _user_of(interaction: dict[str, Any]) -> int:
    user = interaction.get("user") or interaction.get("member", {}).get("user", {})
    return int(user.get("id", 0))


def slash_options(name: str, line: str) -> dict[str, str] | None:
    """The options a user fills in for ``/name line``: one word per option, the last option
    the rest (a keyword option such as ``show: history`` only when the word is its
    choice)."""
    arguments = next(spec.arguments for spec in COMMANDS if spec.name == name)
    options: dict[str, str] = {}
    rest = line.strip()
    for i, argument in enumerate(arguments):
        if not rest:
            break
        if i == len(arguments) - 1:
            options[argument.name] = rest
            break
        word, _, after = rest.partition(" ")
        if argument.choices and word not in argument.choices:
            continue
        if not argument.choices and word.isdecimal() and arguments[-1].name == "page":
            continue  # a page number without a field
        options[argument.name], rest = word, after.strip()
    return options or None
