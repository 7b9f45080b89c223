"""The settings every platform table (``[discord]``, ``[telegram]``, ...) has.

The length limit of a user message is not here: there is one, the core's
``[sessions] max_input_chars`` (``PersonaCore.max_input_chars``).
"""

from __future__ import annotations

import os
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aipersona.core import ConfigError


class AdapterSettings(BaseModel):
    """Settings every platform section has; a platform's model extends it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    token_env: str = ""
    allowed_users: list[str] = []
    allowed_chats: list[str] = []
    reply_channels: list[str] = []
    rate_limit_per_minute: int = Field(20, ge=0)
    stream_edits: bool = False
    stream_edit_interval: float = Field(1.0, gt=0)
    typing: bool = True

    @field_validator("allowed_users", "allowed_chats", "reply_channels", mode="before")
    @classmethod
    def _ids_as_strings(cls, value: Any) -> Any:
        return ids_as_strings(value)

    def token(self) -> str:
        """The bot token from the environment variable named by ``token_env``."""
        if not self.token_env:
            raise ConfigError("token_env is not set")
        value = os.environ.get(self.token_env, "").strip()
        if not value:
            raise ConfigError(f"environment variable {self.token_env} (the bot token) is empty")
        return value

    @classmethod
    def parse(cls, section: str, data: dict[str, Any]) -> Self:
        """Validate the ``[section]`` table; ``ConfigError`` names every bad key."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{section}.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"invalid [{section}] config: {problems}") from None


def ids_as_strings(value: Any) -> Any:
    """Platform ids may be written as TOML integers; they are compared as strings."""
    if isinstance(value, list):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value
