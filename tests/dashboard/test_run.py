"""The dashboard inside ``aipersona run`` (``[dashboard] enabled = true``): the bot's own core
behind it, so /metrics counts the bot's messages; and the config checks before anything
starts."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import aiohttp
import pytest

from aipersona.adapters import cli as run_cli
from aipersona.core import Config, ConfigError, LLMSettings, cli
from aipersona.dashboard.settings import DashboardSettings, dashboard_settings
from tests.dashboard.conftest import BEARER, TOKEN
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.telegram import FakeTelegramAPI

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bot_toml(tmp_path: Path, llm: str, telegram: str, port: int) -> Path:
    cfg = tmp_path / "bot.toml"
    cfg.write_text(
        f'[database]\npath = "bot.db"\n[llm]\nbase_url = "{llm}"\nmax_retries = 0\n'
        f'[telegram]\ntoken_env = "TEST_TELEGRAM_TOKEN"\nbase_url = "{telegram}"\n'
        f"poll_timeout = 1\n[dashboard]\nenabled = true\nport = {port}\n",
        encoding="utf-8",
    )
    return cfg


async def test_run_serves_the_dashboard_of_the_bots_core(
    fake_llm: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TELEGRAM_TOKEN", "123456:TEST-TOKEN")
    monkeypatch.setenv("AIPERSONA_DASHBOARD_TOKEN", TOKEN)
    port = free_port()
    async with FakeTelegramAPI() as tg:
        args = cli.build_parser().parse_args(
            ["run", "--config", str(bot_toml(tmp_path, fake_llm.base_url, tg.origin, port))]
        )
        task = asyncio.create_task(run_cli._run(args))
        await tg.wait_for(lambda: tg.calls_to("getUpdates"), timeout=15)
        tg.push_message(11, 11, "hello from telegram")
        await tg.wait_for_sent(11, timeout=10)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(headers=BEARER) as http:
            async with http.get(base + "/metrics") as answer:
                metrics = await answer.text()
            async with http.get(base + "/api/personas", params={"platform": "telegram"}) as answer:
                people = await answer.json()
        async with aiohttp.ClientSession() as http, http.get(base + "/api/overview") as answer:
            assert answer.status == 401
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(task, 20) == 0
    assert 'aipersona_messages_total{outcome="ok"} 1.0' in metrics
    assert 'aipersona_llm_calls_total{role="chat"} 1.0' in metrics
    assert [(r["platform"], r["user_id"]) for r in people["rows"]] == [("telegram", "11")]


async def test_run_refuses_to_start_the_dashboard_without_a_token(
    fake_llm: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TELEGRAM_TOKEN", "123456:TEST-TOKEN")
    monkeypatch.delenv("AIPERSONA_DASHBOARD_TOKEN", raising=False)
    cfg = bot_toml(tmp_path, fake_llm.base_url, "http://127.0.0.1:9", free_port())
    args = cli.build_parser().parse_args(["run", "--config", str(cfg)])
    with pytest.raises(ConfigError, match="AIPERSONA_DASHBOARD_TOKEN"):
        await run_cli._run(args)
    assert not (tmp_path / "bot.db").exists()  # refused before the store was opened


def test_config_table_is_checked_and_documented(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[dashboard]\nport = 0\nallow_edit = true\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        Config.load(cfg)
    assert "dashboard.port" in str(caught.value) and "dashboard.allow_edit" in str(caught.value)
    example = Config.load(ROOT / "bot.example.toml")
    assert set(example.table("dashboard")) == set(DashboardSettings.model_fields)
    assert dashboard_settings(example) == DashboardSettings()  # the defaults, as documented
    assert example.llm.cost(1_000, 1_000) is None  # no prices: no cost shown
    priced = LLMSettings(input_price_per_mtok=0.15, output_price_per_mtok=0.6)
    assert priced.cost(2_000_000, 1_000_000) == pytest.approx(0.9)
