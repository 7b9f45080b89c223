"""Shared helpers for the benchmarks: configs, an in-process LLM stub, percentiles."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from aipersona.core import Completion, Config, LLMClient

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"Python {sys.version.split()[0]}, SQLite {__import__('sqlite3').sqlite_version}, "
        f"{platform.system()} {platform.release()}, "
        + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    )


def config(db_path: Path | str, base_url: str = "http://127.0.0.1:9/v1", **over: Any) -> Config:
    data: dict[str, Any] = {
        "database": {"path": str(db_path)},
        "llm": {"base_url": base_url, "model": "fake-model", "max_retries": 0},
        "sessions": {"sweep_seconds": 3600},
    }
    for section, values in over.items():
        data.setdefault(section, {}).update(values)
    return Config.from_dict(data)


class StubLLM(LLMClient):
    """Answers in-process with a canned completion: no HTTP, no openai client."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg.llm)
        self.calls = 0
        self.json_calls = 0
        self.prompt_chars: list[int] = []
        self.record = False

    async def complete(self, messages: list[dict[str, Any]], **kw: Any) -> Completion:  # type: ignore[override]
        self.calls += 1
        if kw.get("response_format"):
            self.json_calls += 1
            return Completion(self.optimizer_reply(messages), finish_reason="stop")
        if self.record:
            self.prompt_chars.append(sum(len(str(m.get("content") or "")) for m in messages))
        return Completion("Sure, happy to help.", finish_reason="stop", prompt_tokens=100)

    def optimizer_reply(self, messages: list[dict[str, Any]]) -> str:
        return '{"updates": []}'


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"
