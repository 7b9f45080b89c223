"""The ``[bench]`` config section: models per role, evaluation and generation knobs.

Each role (chatbot, simulator, judge, tool_simulator, generator, embedder) is the main
``[llm]`` table with the keys of ``[bench.ROLE]`` laid over it, so a role names only what
differs. Three extra keys per role: ``input_price_per_mtok`` and ``output_price_per_mtok``
price its tokens (US dollars per million tokens), and ``context_window`` is the model's window
in tokens (0 = unknown; the embedded model's is ``[llm.local] n_ctx``), against which every
prompt is checked before it is sent. ``tool_simulator`` falls back to ``simulator``;
``embedder`` (the ``rag`` condition's ``/v1/embeddings``) falls back to the chatbot's endpoint
with the model ``text-embedding-3-small`` unless it names its own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aipersona.core import Config, ConfigError, LLMSettings

ROLES = ("chatbot", "simulator", "judge", "tool_simulator", "generator", "embedder")
PRICE_KEYS = ("input_price_per_mtok", "output_price_per_mtok")
ROLE_EXTRA_KEYS = (*PRICE_KEYS, "context_window")
BASE_CONDITIONS = ("no_persona", "golden_persona", "rag", "learned")
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"


class Price(BaseModel):
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0

    @property
    def configured(self) -> bool:
        return bool(self.input_price_per_mtok or self.output_price_per_mtok)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_price_per_mtok
            + completion_tokens * self.output_price_per_mtok
        ) / 1e6


class GenerateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_personas: int = Field(10, ge=1)
    common_scenes: int = Field(6, ge=0)
    specific_scenes: int = Field(4, ge=0)
    seeds: str = ""  # a JSON/JSONL file of seed personas; "" = the shared PersonaBench seeds
    examples_per_prompt: int = Field(3, ge=1)
    max_attempts: int = Field(4, ge=1)
    temperature: float = Field(0.9, ge=0, le=2)
    max_tokens: int = Field(1500, ge=64)


class BenchSettings(BaseModel):
    """Everything under ``[bench]`` except the role tables."""

    model_config = ConfigDict(extra="forbid")

    lang: str = "zh"
    seed: int = 0  # generation only: which seeds and common scenes are drawn
    concurrency: int = Field(4, ge=1)
    max_turns: int = Field(3, ge=1)
    conditions: list[str] = list(BASE_CONDITIONS)
    k: list[int] = [1, 3, 5]
    personas: int = Field(0, ge=0)  # 0 = all
    scenes: int = Field(0, ge=0)  # 0 = all
    # the chatbot's view of the scene description: "paper" = as the released code (with the
    # scene's APIs, so only scenes that have APIs), "always", or "never"
    chatbot_scene: Literal["paper", "always", "never"] = "paper"
    rag_retriever: Literal["auto", "embedding", "word_overlap"] = "auto"
    rag_top_k: int = Field(5, ge=1)
    group_size: int = Field(3, ge=1)  # sessions per win-rate group
    persona_tools: bool = False  # let the chatbot edit the persona with the built-in tools
    chatbot_prompt: str = ""  # "" = the bench default (paper-style personalized assistant)
    judge_max_tokens: int = Field(400, ge=16)
    similarity_max_tokens: int = Field(800, ge=16)
    simulator_max_tokens: int = Field(400, ge=16)
    tool_max_tokens: int = Field(300, ge=16)
    update_retries: int = Field(2, ge=0)  # retries of a failed persona update, in the run
    data: str = ""  # default --data
    generate: GenerateSettings = GenerateSettings()

    def expanded_conditions(self) -> list[str]:
        out: list[str] = []
        for cond in self.conditions:
            if cond == "learned":
                out += [f"learned_k{k}" for k in self.k]
            elif cond in BASE_CONDITIONS or parse_learned(cond) is not None:
                out.append(cond)
            else:
                raise ConfigError(
                    f"unknown bench condition {cond!r}; use no_persona, golden_persona, rag, "
                    "learned (one per k) or learned_kN"
                )
        return list(dict.fromkeys(out))


def parse_learned(condition: str) -> int | None:
    """``learned_k3`` -> 3; anything else -> None."""
    if condition.startswith("learned_k") and condition[9:].isdigit():
        return max(1, int(condition[9:]))
    return None


class RoleSettings(BaseModel):
    llm: LLMSettings
    price: Price
    context_window: int = 0  # tokens; 0 = unknown

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def window(self) -> int:
        """The window prompts are checked against: the configured one, else the embedded
        model's ``n_ctx`` for a role without an endpoint, else 0 (unknown)."""
        if self.context_window:
            return self.context_window
        return 0 if self.llm.base_url else self.llm.local.n_ctx


def load_bench(config: Config) -> tuple[BenchSettings, dict[str, RoleSettings]]:
    raw = dict(config.table("bench"))
    role_tables = {r: dict(raw.pop(r, {}) or {}) for r in ROLES}
    try:
        settings = BenchSettings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid [bench] section: {_problems(exc)}") from None
    base = config.llm.model_dump()
    roles: dict[str, RoleSettings] = {}
    for role in ROLES:
        parent = base
        table = role_tables[role]
        if role == "tool_simulator":
            parent = roles["simulator"].llm.model_dump()
            for key in PRICE_KEYS:
                table.setdefault(key, getattr(roles["simulator"].price, key))
            table.setdefault("context_window", roles["simulator"].context_window)
        elif role == "embedder":
            parent = roles["chatbot"].llm.model_dump()
            table.setdefault("model", DEFAULT_EMBEDDING_MODEL)
        price = Price(**{k: table.pop(k) for k in PRICE_KEYS if k in table})
        window = table.pop("context_window", 0)
        merged = _merge(parent, table)
        try:
            roles[role] = RoleSettings(
                llm=LLMSettings.model_validate(merged), price=price, context_window=window
            )
        except ValidationError as exc:
            raise ConfigError(f"invalid [bench.{role}] section: {_problems(exc)}") from None
    return settings, roles


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in exc.errors()
    )


class _BenchSection:
    """Validates the ``[bench]`` table when the config is loaded (entry point
    ``aipersona.sections``). The role tables are checked key by key here; their values are
    validated against ``[llm]`` by ``load_bench``."""

    def validate_section(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        raw = dict(data)
        role_tables = {r: raw.pop(r, {}) or {} for r in ROLES}
        try:
            BenchSettings.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"invalid [{name}] section: {_problems(exc)}") from None
        allowed = set(LLMSettings.model_fields) | set(ROLE_EXTRA_KEYS)
        for role, table in role_tables.items():
            if not isinstance(table, dict):
                raise ConfigError(f"invalid [{name}.{role}] section: must be a table")
            unknown = sorted(set(table) - allowed)
            if unknown:
                raise ConfigError(f"invalid [{name}.{role}] section: unknown keys {unknown}")
            window = table.get("context_window", 0)
            if not isinstance(window, int) or isinstance(window, bool) or window < 0:
                raise ConfigError(
                    f"invalid [{name}.{role}] section: context_window must be a whole number "
                    ">= 0 (tokens; 0 = unknown)"
                )
        return data


SECTION = _BenchSection()
