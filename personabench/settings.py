"""The ``[bench]`` config section: models per role, evaluation and generation knobs.

Each role (chatbot, simulator, judge, tool_simulator, generator) is the main ``[llm]`` table
with the keys of ``[bench.ROLE]`` laid over it, so a role names only what differs. Two extra
keys per role price its tokens (US dollars per million tokens): ``input_price_per_mtok`` and
``output_price_per_mtok``. ``tool_simulator`` falls back to ``simulator``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aipersona.core import Config, ConfigError, LLMSettings

ROLES = ("chatbot", "simulator", "judge", "tool_simulator", "generator")
PRICE_KEYS = ("input_price_per_mtok", "output_price_per_mtok")
BASE_CONDITIONS = ("no_persona", "golden_persona", "rag", "learned")


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
    seed: int = 0
    concurrency: int = Field(4, ge=1)
    max_turns: int = Field(3, ge=1)
    conditions: list[str] = list(BASE_CONDITIONS)
    k: list[int] = [1, 3, 5]
    personas: int = Field(0, ge=0)  # 0 = all
    scenes: int = Field(0, ge=0)  # 0 = all
    rag_top_k: int = Field(5, ge=1)
    group_size: int = Field(3, ge=1)  # sessions per win-rate group
    persona_tools: bool = False  # let the chatbot edit the persona with the built-in tools
    chatbot_prompt: str = ""  # "" = the bench default (paper-style personalized assistant)
    judge_max_tokens: int = Field(400, ge=16)
    simulator_max_tokens: int = Field(400, ge=16)
    tool_max_tokens: int = Field(300, ge=16)
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

    model_config = ConfigDict(arbitrary_types_allowed=True)


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
        if role == "tool_simulator":
            parent = roles["simulator"].llm.model_dump()
            for key in PRICE_KEYS:
                role_tables[role].setdefault(key, getattr(roles["simulator"].price, key))
        table = role_tables[role]
        price = Price(**{k: table.pop(k) for k in PRICE_KEYS if k in table})
        merged = _merge(parent, table)
        try:
            roles[role] = RoleSettings(llm=LLMSettings.model_validate(merged), price=price)
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


def public_config(settings: BenchSettings, roles: dict[str, RoleSettings]) -> dict[str, Any]:
    """The settings as written into results: no secrets (only env variable names)."""
    return {
        "bench": settings.model_dump(),
        "roles": {
            name: {
                "base_url": r.llm.base_url or "(embedded local model)",
                "model": r.llm.model,
                "api_key_env": r.llm.api_key_env,
                "temperature": r.llm.temperature,
                "max_tokens": r.llm.max_tokens,
                "structured_output": r.llm.structured_output,
                **r.price.model_dump(),
            }
            for name, r in roles.items()
        },
    }


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
        allowed = set(LLMSettings.model_fields) | set(PRICE_KEYS)
        for role, table in role_tables.items():
            if not isinstance(table, dict):
                raise ConfigError(f"invalid [{name}.{role}] section: must be a table")
            unknown = sorted(set(table) - allowed)
            if unknown:
                raise ConfigError(f"invalid [{name}.{role}] section: unknown keys {unknown}")
        return data


SECTION = _BenchSection()
