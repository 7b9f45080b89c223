"""Configuration: one TOML file (see bot.example.toml), validated with pydantic.

The core validates its own sections. Any other top-level table (``[discord]``,
``[telegram]``, ``[bench]``, a third-party ``[slack]``...) belongs to an installed package
that registers it under the entry-point group ``aipersona.adapters`` or
``aipersona.sections``: the registered object's ``validate_section(name, data)`` checks it
when the file is loaded, so a typo is reported at once and the core names no platform.

Secrets never live in the file: it names environment variables (``api_key_env``,
``token_env``) and the values are read from the environment when needed.
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    path: str = "aipersona.db"
    busy_timeout_ms: int = Field(10_000, ge=0)
    # PostgreSQL instead of the SQLite file: postgresql://user@host:port/database (no
    # password in the URL: it comes from the environment variable named by password_env)
    url: str = ""
    password_env: str = "PGPASSWORD"
    schema_name: str = Field("", alias="schema")
    pool_min_size: int = Field(1, ge=0)
    pool_max_size: int = Field(10, ge=1)
    connect_timeout_seconds: float = Field(10.0, gt=0)


class LocalModelSettings(_Section):
    model_path: str = ""
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    n_ctx: int = Field(4096, ge=512)
    n_threads: int = Field(0, ge=0)
    startup_timeout_seconds: float = Field(180.0, gt=0)


class LLMSettings(_Section):
    base_url: str = ""
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    timeout_seconds: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(1024, ge=1)
    stream: bool = False
    structured_output: Literal["auto", "json_schema", "json_object", "text"] = "auto"
    # HTTP transport of the openai client: "aiohttp" (openai's DefaultAioHttpClient) costs
    # less CPU per request than the default httpx one; see BENCHMARKS.md
    http_client: Literal["httpx", "aiohttp"] = "httpx"
    tools: bool = True
    # what the endpoint charges, in any currency per million tokens (0: unknown); the
    # dashboard shows the estimated cost per day from them
    input_price_per_mtok: float = Field(0.0, ge=0)
    output_price_per_mtok: float = Field(0.0, ge=0)
    local: LocalModelSettings = LocalModelSettings()

    def api_key(self) -> str:
        """The key from the environment; local servers accept any placeholder."""
        return os.environ.get(self.api_key_env, "") or "not-needed"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """The estimated cost of those tokens at these prices (None when no price is set)."""
        if not (self.input_price_per_mtok or self.output_price_per_mtok):
            return None
        return (
            prompt_tokens * self.input_price_per_mtok
            + completion_tokens * self.output_price_per_mtok
        ) / 1e6


class PersonaSettings(_Section):
    update_every: int = Field(3, ge=1)
    disabled_fields: list[str] = []
    optimizer_model: str = ""
    optimizer_temperature: float = Field(0.2, ge=0, le=2)
    optimizer_max_tokens: int = Field(1500, ge=64)
    max_transcript_chars: int = Field(24_000, ge=1000)
    max_update_attempts: int = Field(3, ge=1)
    update_lease_seconds: float = Field(600.0, gt=0)
    update_recheck_seconds: float = Field(15.0, gt=0)


class SessionSettings(_Section):
    idle_minutes: float = Field(30.0, gt=0)
    sweep_seconds: float = Field(60.0, gt=0)
    history_messages: int = Field(20, ge=0)
    history_token_budget: int = Field(3000, ge=0)
    max_input_chars: int = Field(8000, ge=1)


class ChatSettings(_Section):
    # how to use the persona is said next to it in every prompt (core/chatbot.py)
    system_prompt: str = "You are a helpful, friendly assistant."
    apology: str = "Sorry, I can't answer right now. Your message is saved; please try again."


DEFAULT_NOTICE = (
    "Hi! I learn about you from our chats (a persona) to personalize my answers. "
    "/persona shows what I know, /forget deletes it, and /learning off stops me learning."
)


class PrivacySettings(_Section):
    # message texts are deleted this many days after the persona update that learned from
    # them (0: right after that update); sessions not learned from yet are kept
    keep_messages_days: int = Field(90, ge=0)
    # the environment variable with the 32-byte master key (base64): persona values,
    # versions, evidence and messages are then encrypted at rest (empty: off)
    encryption_key_env: str = ""
    # sent once, on a user's first message (empty: none)
    notice: str = DEFAULT_NOTICE
    purge_every_minutes: float = Field(10.0, gt=0)


class LimitSettings(_Section):
    # tokens the endpoint reports (prompt + completion), per UTC day; 0 means unlimited.
    # A user's optimizer calls count toward their own budget.
    tokens_per_user_per_day: int = Field(0, ge=0)
    tokens_per_chat_per_day: int = Field(0, ge=0)
    budget_message: str = (
        "I've reached today's limit for our chats, so I can't answer until tomorrow (UTC). "
        "Your message is saved."
    )


class ToolSettings(_Section):
    enabled: bool = True
    max_rounds: int = Field(4, ge=1, le=20)
    timeout_seconds: float = Field(15.0, gt=0)
    disabled: list[str] = []


class PluginSettings(_Section):
    model_config = ConfigDict(extra="allow")

    modules: list[str] = []
    entry_points: bool = True
    disabled: list[str] = []

    def settings_for(self, name: str) -> dict[str, Any]:
        """Settings of one plugin: the ``[plugins.NAME]`` table."""
        value = (self.model_extra or {}).get(name, {})
        return value if isinstance(value, dict) else {}


SECTION_GROUPS = ("aipersona.adapters", "aipersona.sections")


class ConfigSection(Protocol):
    """What a package registers for a top-level config table it owns."""

    def validate_section(self, name: str, data: dict[str, Any]) -> Any:
        """Return the validated settings; raise ConfigError naming the bad keys."""


@cache
def section_owners() -> dict[str, EntryPoint]:
    """Installed owners of top-level tables, by table name."""
    owners: dict[str, EntryPoint] = {}
    for group in SECTION_GROUPS:
        for ep in entry_points(group=group):
            owners.setdefault(ep.name, ep)
    return owners


def section_owner(name: str) -> ConfigSection:
    ep = section_owners().get(name)
    if ep is None:
        known = ", ".join(sorted(section_owners())) or "none installed"
        raise ConfigError(
            f"unknown config section [{name}] (sections of installed packages: {known})"
        )
    try:
        owner: ConfigSection = ep.load()
    except ImportError as exc:
        raise ConfigError(f"config section [{name}] needs {ep.value}, which fails: {exc}") from None
    return owner


class Config(_Section):
    model_config = ConfigDict(extra="allow")

    database: DatabaseSettings = DatabaseSettings()
    llm: LLMSettings = LLMSettings()
    persona: PersonaSettings = PersonaSettings()
    sessions: SessionSettings = SessionSettings()
    chat: ChatSettings = ChatSettings()
    privacy: PrivacySettings = PrivacySettings()
    limits: LimitSettings = LimitSettings()
    tools: ToolSettings = ToolSettings()
    plugins: PluginSettings = PluginSettings()
    logging: dict[str, Any] = {}

    source: str = Field("", exclude=True)

    def tables(self) -> dict[str, dict[str, Any]]:
        """The top-level tables that belong to other packages (adapters, the bench...)."""
        return dict(self.model_extra or {})

    def table(self, name: str) -> dict[str, Any]:
        """One such table (empty if absent)."""
        value = (self.model_extra or {}).get(name, {})
        return value if isinstance(value, dict) else {}

    def section(self, name: str) -> Any:
        """The table ``name`` validated by the package that owns it."""
        return section_owner(name).validate_section(name, self.table(name))

    def data_dir(self) -> Path:
        """Where plugins keep files: beside the database file, else beside the config."""
        path = self.database.path
        if path and path != ":memory:" and not path.startswith("file:") and "://" not in path:
            return Path(path).expanduser().resolve().parent
        if self.source not in ("", "<dict>"):
            return Path(self.source).resolve().parent
        return Path.cwd()

    @classmethod
    def load(cls, path: str | Path | None, *, database: str | None = None) -> Config:
        """Load a TOML file; ``None`` gives the defaults (local model, ./aipersona.db).
        ``database`` overrides ``[database] path`` (the commands' ``--database``)."""
        if path is None:
            cfg = cls()
        else:
            p = Path(path)
            try:
                data = tomllib.loads(p.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise ConfigError(f"config file not found: {p}") from None
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config {p}: {exc}") from None
            cfg = cls.from_dict(data, source=str(p))
        if database:  # a file path, or a postgresql:// URL
            if "://" in database:
                cfg.database.url = database
            else:
                cfg.database.path, cfg.database.url = database, ""
        return cfg

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> Config:
        try:
            cfg = cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(f"invalid config {source}: {problems}") from None
        cfg.source = source
        for name, value in cfg.tables().items():
            if not isinstance(value, dict):
                raise ConfigError(f"invalid config {source}: {name} must be a [{name}] table")
            cfg.section(name)
        if cfg.database.path != ":memory:" and source not in ("<dict>", ""):
            db = Path(cfg.database.path).expanduser()
            if not db.is_absolute():
                cfg.database.path = str(Path(source).resolve().parent / db)
        return cfg
