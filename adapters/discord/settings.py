"""The ``[discord]`` section of the config file."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from aipersona.core import Config

from ..kit import AdapterSettings, ids_as_strings

_GUILD_LISTS = ("guild_ids", "allowed_guilds")


class DiscordSettings(AdapterSettings):
    """Discord settings on top of the shared adapter settings.

    Ids may be written as TOML integers or strings; they are kept as strings.
    """

    token_env: str = "DISCORD_BOT_TOKEN"
    command_prefix: str = Field("!", min_length=1)
    sharded: bool = False
    shard_count: int = Field(0, ge=0)
    # the shards this process runs (several processes split one bot); empty = all of them
    shard_ids: list[int] = Field(default_factory=list)
    sync_commands: bool = True
    guild_ids: list[str] = Field(default_factory=list)
    allowed_guilds: list[str] = Field(default_factory=list)
    allow_dms: bool = True

    @field_validator(*_GUILD_LISTS, mode="before")
    @classmethod
    def _guild_ids_as_strings(cls, value: Any) -> Any:
        return ids_as_strings(value)

    @field_validator("shard_ids")
    @classmethod
    def _shard_ids_in_range(cls, value: list[int], info: ValidationInfo) -> list[int]:
        """Each id once, each in ``[0, shard_count)``; the count must be given with them."""
        if not value:
            return value
        count = info.data.get("shard_count")
        if count is None:  # shard_count itself is invalid (reported on its own)
            return value
        if count == 0:
            raise ValueError(
                "shard_ids needs shard_count (the total number of shards over all processes)"
            )
        bad = sorted({i for i in value if not 0 <= i < count})
        if bad:
            raise ValueError(
                f"shard ids {bad} are out of range: with shard_count = {count} they are "
                f"0 to {count - 1}"
            )
        dupes = sorted({i for i in value if value.count(i) > 1})
        if dupes:
            raise ValueError(f"shard ids {dupes} are listed more than once")
        return value

    @property
    def autosharded(self) -> bool:
        """Whether the bot is an ``AutoShardedBot`` (``sharded``, or a range of shards)."""
        return self.sharded or bool(self.shard_ids)

    @classmethod
    def from_config(cls, config: Config) -> DiscordSettings:
        """Parse ``config.discord``; raises ``ConfigError`` naming the bad keys."""
        return cls.parse("discord", config.table("discord"))

    def guild_allowed(self, guild_id: object) -> bool:
        return not self.allowed_guilds or str(guild_id) in self.allowed_guilds
