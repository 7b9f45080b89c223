"""The ``[discord]`` section of the config file."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

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
    sync_commands: bool = True
    guild_ids: list[str] = Field(default_factory=list)
    allowed_guilds: list[str] = Field(default_factory=list)
    allow_dms: bool = True

    @field_validator(*_GUILD_LISTS, mode="before")
    @classmethod
    def _guild_ids_as_strings(cls, value: Any) -> Any:
        return ids_as_strings(value)

    @classmethod
    def from_config(cls, config: Config) -> DiscordSettings:
        """Parse ``config.discord``; raises ``ConfigError`` naming the bad keys."""
        return cls.parse("discord", config.table("discord"))

    def guild_allowed(self, guild_id: object) -> bool:
        return not self.allowed_guilds or str(guild_id) in self.allowed_guilds
