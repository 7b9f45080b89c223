"""Shared fixtures: a fake OpenAI-compatible server and a PersonaCore wired to it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aipersona.core import Config, PersonaCore
from tests import postgres
from tests.fakes.openai_server import FakeOpenAI

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def run_cli(
    *args: str, stdin: str | bytes = "", env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run the ``aipersona`` command in a subprocess: (exit status, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "aipersona.core.cli", *args],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    out, err = (b.decode("utf-8", errors="replace") for b in (proc.stdout, proc.stderr))
    return proc.returncode, out, err


def make_config(database: Path | dict[str, Any], base_url: str, **overrides: Any) -> Config:
    """A test config: ``database`` is a SQLite file path or a ``[database]`` table."""
    data: dict[str, Any] = {
        "database": dict(database) if isinstance(database, dict) else {"path": str(database)},
        "llm": {
            "base_url": base_url,
            "model": "fake-model",
            "max_retries": 0,
            "timeout_seconds": 5,
        },
        "sessions": {"sweep_seconds": 3600},
    }
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return Config.from_dict(data)


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "persona.db"


@pytest.fixture
async def core(fake_llm: FakeOpenAI, db_path: Path) -> AsyncIterator[PersonaCore]:
    async with PersonaCore(make_config(db_path, fake_llm.base_url)) as c:
        yield c


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """A fresh schema on the test PostgreSQL server (skipped locally without one)."""
    async with postgres.fresh_schema() as schema:
        yield schema


@pytest.fixture(params=["sqlite", "postgres"])
async def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Path | dict[str, Any]]:
    """Each backend in turn, as ``make_config``'s first argument (the end-to-end core tests
    run on both)."""
    if request.param == "sqlite":
        yield tmp_path / "persona.db"
        return
    async with postgres.fresh_schema() as schema:
        yield postgres.database_section(schema)
