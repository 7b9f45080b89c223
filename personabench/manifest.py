"""``run.json``: what a run's results depend on, so a resumed run is the same experiment.

The first run in an output directory records a fingerprint of every setting that changes a
session's outcome (the bench knobs, each role's model, endpoint, temperature and token limits,
the optimizer and history settings of the core) and a hash of each persona and scene it
uses. A rerun in the same directory is refused, with the differences named, when any of them
changed; more personas, scenes or conditions, prices, timeouts and concurrency may change.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from aipersona.core import AipersonaError, Config, __version__

from .clients import ModelPool
from .data import BenchPersona
from .settings import BenchSettings, RoleSettings

MANIFEST_FILE = "run.json"
RESULT_BENCH_KEYS = (
    "lang",
    "max_turns",
    "chatbot_scene",
    "rag_retriever",
    "rag_top_k",
    "persona_tools",
    "chatbot_prompt",
    "judge_max_tokens",
    "similarity_max_tokens",
    "simulator_max_tokens",
    "tool_max_tokens",
    "update_retries",
)
CORE_KEYS = {
    "persona": (
        "optimizer_model",
        "optimizer_temperature",
        "optimizer_max_tokens",
        "max_transcript_chars",
        "disabled_fields",
    ),
    "sessions": ("history_messages", "history_token_budget"),
    "tools": ("max_rounds",),
    "limits": ("tokens_per_user_per_day", "tokens_per_chat_per_day"),
}


class ResumeError(AipersonaError, ValueError):
    """The output directory holds a run made with other settings or other data."""


def fingerprint(
    settings: BenchSettings, config: Config, pool: ModelPool, roles: tuple[str, ...]
) -> dict[str, Any]:
    """Flat ``section.key`` -> value of everything a finished session's result depends on."""
    out: dict[str, Any] = {f"bench.{k}": getattr(settings, k) for k in RESULT_BENCH_KEYS}
    for role in roles:
        llm = pool.roles[role].llm
        described = pool.describe(role)
        out[f"{role}.model"] = described["model"]  # not the endpoint: a port may change
        out[f"{role}.temperature"] = llm.temperature
        out[f"{role}.max_tokens"] = llm.max_tokens
        out[f"{role}.structured_output"] = llm.structured_output
        if role == "chatbot":
            out["chatbot.tools"] = llm.tools
        if not llm.base_url:
            out[f"{role}.local.n_ctx"] = llm.local.n_ctx
    for section, keys in CORE_KEYS.items():
        table = getattr(config, section)
        for key in keys:
            out[f"{section}.{key}"] = getattr(table, key)
    return json.loads(json.dumps(out, default=str))


def _hash(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def data_fingerprint(personas: list[BenchPersona]) -> dict[str, dict[str, Any]]:
    return {
        p.id: {"persona": _hash(p.persona), "scenes": [_hash(s.to_json()) for s in p.scenes]}
        for p in personas
    }


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            out.append(f"{key} was not recorded, now {_show(new[key])}")
        elif key not in new:
            out.append(f"{key} was {_show(old[key])}, now not set")
        elif old[key] != new[key]:
            out.append(f"{key} was {_show(old[key])}, now {_show(new[key])}")
    return out


def data_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for pid in sorted(set(old) & set(new)):
        if old[pid]["persona"] != new[pid]["persona"]:
            out.append(f"the golden persona of {pid} changed in the data")
        for i, (a, b) in enumerate(zip(old[pid]["scenes"], new[pid]["scenes"], strict=False)):
            if a != b:
                out.append(f"scene {i + 1} of {pid} changed in the data")
    return out


def check_and_record(
    out: Path, fp: dict[str, Any], data: dict[str, dict[str, Any]], *, has_items: bool
) -> None:
    """Refuse to resume with other settings or data; record what this run uses."""
    path = out / MANIFEST_FILE
    old: dict[str, Any] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise ResumeError(f"{path} is damaged; use a new --out directory") from None
    if has_items:
        if not old:
            raise ResumeError(
                f"{out} holds results but no {MANIFEST_FILE} (a run of an older version), so "
                "its settings cannot be checked; use a new --out directory"
            )
        diffs = differences(old.get("fingerprint", {}), fp)
        diffs += data_differences(old.get("data", {}), data)
        if diffs:
            more = f"; and {len(diffs) - 6} more" if len(diffs) > 6 else ""
            shown = "; ".join(diffs[:6]) + more
            raise ResumeError(
                f"refusing to resume {out} with different settings: {shown}. Use a new --out "
                f"directory, or the settings recorded in {path}"
            )
    merged: dict[str, Any] = dict(old.get("data", {})) if has_items else {}
    for pid, entry in data.items():  # a rerun over fewer scenes keeps the longer record
        if pid not in merged or len(entry["scenes"]) >= len(merged[pid]["scenes"]):
            merged[pid] = entry
    record = {
        "created": old.get("created") if has_items else time.time(),
        "aipersona": __version__,
        "fingerprint": fp,
        "data": merged,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)


def public_config(
    settings: BenchSettings, roles: dict[str, RoleSettings], pool: ModelPool, used: tuple[str, ...]
) -> dict[str, Any]:
    """The settings as written into results: no secrets (only env variable names), the
    models the roles really used, and no ``seed`` (the evaluation draws nothing at random)."""
    bench = settings.model_dump(exclude={"seed", "generate"})
    return {
        "bench": bench,
        "roles": {
            name: {
                **pool.describe(name),
                "api_key_env": roles[name].llm.api_key_env if roles[name].llm.base_url else None,
                "temperature": roles[name].llm.temperature,
                "max_tokens": roles[name].llm.max_tokens,
                "structured_output": roles[name].llm.structured_output,
                "context_window": roles[name].window or None,
                **roles[name].price.model_dump(),
            }
            for name in used
        },
    }
