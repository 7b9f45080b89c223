"""The adapter contract's fixtures: a core with a short input limit (and no privacy notice,
unless a scenario's ``core_settings`` say otherwise), and one driver per platform (every
scenario runs against each)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aipersona.core import PersonaCore
from tests.conftest import make_config
from tests.fakes.openai_server import FakeOpenAI

from .discord_driver import DiscordDriver
from .driver import Driver
from .telegram_driver import TelegramDriver
from .terminal_driver import TerminalDriver
from .toy_driver import ToyDriver

INPUT_LIMIT = 200  # [sessions] max_input_chars of the contract's core
DRIVERS: dict[str, type[Driver]] = {
    "discord": DiscordDriver,
    "telegram": TelegramDriver,
    "terminal": TerminalDriver,
    "toy": ToyDriver,
}


@pytest.fixture
def core_settings() -> dict[str, dict[str, Any]]:
    """Config tables of the contract's core over its defaults. Without the privacy notice:
    a scenario that is about it (or about other settings) parametrizes its own."""
    return {"privacy": {"notice": ""}}


@pytest.fixture
async def core(
    fake_llm: FakeOpenAI, db_path: Path, core_settings: dict[str, dict[str, Any]]
) -> AsyncIterator[PersonaCore]:
    tables: dict[str, dict[str, Any]] = {"sessions": {"max_input_chars": INPUT_LIMIT}}
    for name, values in core_settings.items():
        tables.setdefault(name, {}).update(values)
    config = make_config(db_path, fake_llm.base_url, **tables)
    async with PersonaCore(config) as c:
        yield c


@pytest.fixture(params=list(DRIVERS))
async def driver(
    request: pytest.FixtureRequest,
    core: PersonaCore,
    fake_llm: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Driver]:
    async with DRIVERS[request.param].open(
        core, fake_llm, tmp_path=tmp_path, monkeypatch=monkeypatch
    ) as d:
        yield d
