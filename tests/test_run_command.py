"""``aipersona run``: Discord and Telegram bots in one process on one core, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from aipersona.adapters import cli as run_cli
from aipersona.core import ConfigError, cli
from aipersona.core.config import DEFAULT_NOTICE
from tests.fakes.discord import FAKE_TOKEN, FakeDiscord, patched_discord
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.telegram import FakeTelegramAPI

pytestmark = pytest.mark.timeout(60)


async def test_run_serves_both_platforms_and_stops_on_sigterm(
    fake_llm: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_DISCORD_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("TEST_TELEGRAM_TOKEN", "123456:TEST-TOKEN")
    async with FakeTelegramAPI() as tg, FakeDiscord() as dc:
        cfg = tmp_path / "bot.toml"
        cfg.write_text(
            f'[database]\npath = "bot.db"\n'
            f'[llm]\nbase_url = "{fake_llm.base_url}"\nmax_retries = 0\n'
            f'[discord]\ntoken_env = "TEST_DISCORD_TOKEN"\n'
            f'[telegram]\ntoken_env = "TEST_TELEGRAM_TOKEN"\nbase_url = "{tg.origin}"\n'
            "poll_timeout = 1\n",
            encoding="utf-8",
        )
        args = cli.build_parser().parse_args(["run", "--config", str(cfg)])
        with patched_discord(dc):
            task = asyncio.create_task(run_cli._run(args))
            await dc.wait_for(lambda: dc.connected_shards, timeout=15)
            await tg.wait_for(lambda: tg.calls_to("getUpdates"), timeout=15)
            tg.push_message(11, 11, "hello from telegram")
            await dc.send_message(7042, 42, "hello from discord")
            # the reply, then the privacy notice (the default one: a first contact)
            await tg.wait_for(lambda: len(tg.sent_texts(11)) >= 2, timeout=10)
            await dc.wait_for(lambda: len(dc.sent_messages(7042)) >= 2, timeout=10)
            os.kill(os.getpid(), signal.SIGTERM)
            assert await asyncio.wait_for(task, 20) == 0
    assert tg.sent_texts(11) == ["echo: hello from telegram", DEFAULT_NOTICE]
    assert [m.content for m in dc.sent_messages(7042)] == [
        "echo: hello from discord",
        DEFAULT_NOTICE,
    ]
    users = sorted(r["messages"][-1]["content"] for r in fake_llm.chat_requests())
    assert users == ["hello from discord", "hello from telegram"]


async def test_run_without_platforms_or_token_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text('[llm]\nbase_url = "http://127.0.0.1:9/v1"\n', encoding="utf-8")
    args = cli.build_parser().parse_args(["run", "--config", str(cfg)])
    with pytest.raises(ConfigError, match="nothing to run"):
        await run_cli._run(args)
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    cfg.write_text(
        '[llm]\nbase_url = "http://127.0.0.1:9/v1"\n[telegram]\ntoken_env = "NO_SUCH_TOKEN_VAR"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="NO_SUCH_TOKEN_VAR"):
        await run_cli._run(args)
