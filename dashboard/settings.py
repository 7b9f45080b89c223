"""The ``[dashboard]`` config table (validated when the file is loaded, through the
``aipersona.sections`` entry point)."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aipersona.core import Config, ConfigError

MIN_TOKEN_CHARS = 16


class DashboardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # also serve the dashboard inside `aipersona run` (each worker serves its own /metrics)
    enabled: bool = False
    # loopback by default; anything else has to be written here or given with --host
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=1, le=65535)
    # the environment variable holding the access token (no default token: without one the
    # dashboard does not start)
    token_env: str = "AIPERSONA_DASHBOARD_TOKEN"
    # show rollback and forget buttons (each asks for confirmation)
    allow_edits: bool = False
    # how long a login lasts
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    # mark the login cookie Secure (set it when an HTTPS proxy serves the dashboard)
    secure_cookie: bool = False
    page_size: int = Field(50, ge=5, le=500)

    def token(self) -> str:
        """The access token from ``token_env``; ConfigError (the dashboard refuses to
        start) when it is missing or too short to resist guessing."""
        if not self.token_env:
            raise ConfigError("[dashboard] token_env is empty: name the variable with the token")
        value = os.environ.get(self.token_env, "").strip()
        if not value:
            raise ConfigError(
                f"the dashboard needs an access token: put one in the environment variable "
                f"{self.token_env} (e.g. the output of `aipersona keys generate`); it has "
                "no default"
            )
        if len(value) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"the dashboard token in {self.token_env} is {len(value)} characters; use at "
                f"least {MIN_TOKEN_CHARS} random ones (e.g. `aipersona keys generate`)"
            )
        return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dashboard_settings(config: Config) -> DashboardSettings:
    """The validated ``[dashboard]`` table of ``config`` (defaults if it has none)."""
    settings: DashboardSettings = SECTION.validate_section("dashboard", config.table("dashboard"))
    return settings


class _DashboardSection:
    """Validates ``[dashboard]`` (entry point ``aipersona.sections``)."""

    def validate_section(self, name: str, data: dict[str, Any]) -> DashboardSettings:
        try:
            return DashboardSettings.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{name}.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"invalid [{name}] config: {problems}") from None


SECTION = _DashboardSection()
