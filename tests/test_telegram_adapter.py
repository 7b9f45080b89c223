"""The Telegram adapter end to end: real python-telegram-bot against the loopback Bot API fake,
a real PersonaCore on a temporary SQLite file and the loopback OpenAI fake.

What every platform does alike (chat, commands, the gate, splitting, streaming) is the
adapter contract (tests/contract); here is what is Telegram's own: updates and entities,
captions and albums, HTML, flood control, the private-chat fallback, the command menu,
embedding, webhooks and the token in logs."""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from aipersona.adapters.kit import COMMANDS, texts
from aipersona.adapters.telegram import (
    FloodLimiter,
    TelegramSettings,
    build_application,
    html_chunks,
    markdown_to_html,
    outbox,
    register_persona_handlers,
    run_telegram,
    setup_commands,
)
from aipersona.adapters.telegram.flood import leaky_bucket
from aipersona.core import Config, ConfigError, Edit, Identity, PersonaCore
from tests.conftest import make_config
from tests.fakes.openai_server import (
    FakeOpenAI,
    Hang,
    last_user_text,
)
from tests.fakes.telegram import FakeTelegramAPI, parse_html

TOKEN = "123456:TEST-TOKEN"
BOT = "persona_test_bot"
ALICE, BOB = 11, 22
GROUP = -100123
ALICE_ID = Identity("telegram", str(ALICE))
BOB_ID = Identity("telegram", str(BOB))

pytestmark = pytest.mark.timeout(30)

TABLE = [spec.name for spec in COMMANDS]  # the kit's commands, in menu order


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture
async def core(fake_llm: FakeOpenAI, db_path: Path) -> AsyncIterator[PersonaCore]:
    """The core without the privacy notice (the tests about it turn it on)."""
    config = make_config(db_path, fake_llm.base_url, privacy={"notice": ""})
    async with PersonaCore(config) as c:
        yield c


@pytest.fixture
async def tg(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeTelegramAPI]:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    async with FakeTelegramAPI(bot_username=BOT) as api:
        yield api


def tg_settings(fake: FakeTelegramAPI, **values: Any) -> TelegramSettings:
    return TelegramSettings(base_url=fake.origin, poll_timeout=1, **values)


@asynccontextmanager
async def running(core: PersonaCore, settings: TelegramSettings) -> AsyncIterator[None]:
    """``run_telegram`` in a task; stopped (cleanly, checked) when the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_telegram(core, settings, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@asynccontextmanager
async def polling(core: PersonaCore, fake: FakeTelegramAPI, **values: Any) -> AsyncIterator[None]:
    async with running(core, tg_settings(fake, **values)):
        await fake.wait_for(lambda: fake.calls_to("getUpdates"))
        yield


def shown(fake: FakeTelegramAPI, chat: int) -> list[str]:
    """What the user sees (parsed text of each message, after edits)."""
    return [m["parsed_text"] for m in fake.sent_messages(chat)]


async def wait_text(
    fake: FakeTelegramAPI, chat: int, fragment: str, count: int = 1, within: float = 5.0
) -> None:
    await fake.wait_for(lambda: sum(fragment in t for t in shown(fake, chat)) >= count, within)


def chat_request_for(fake_llm: FakeOpenAI, text: str) -> dict[str, Any]:
    (req,) = [r for r in fake_llm.chat_requests() if last_user_text(r) == text]
    return req


async def set_job(core: PersonaCore, ident: Identity, job: str) -> None:
    await core.edit_persona(ident, [Edit("Demographics.Career_Information", "set", job)])


async def wait_listening(port: int) -> None:
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return
    raise AssertionError(f"nothing listens on port {port}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ conversations


async def test_private_replies_show_typing_and_key_the_persona_by_id(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    async with polling(core, tg):
        tg.push_message(ALICE, ALICE, "hello", first_name="Alice")
        await wait_text(tg, ALICE, "echo: hello")
        tg.push_message(ALICE, ALICE, "/end", first_name="Alice")
        await wait_text(tg, ALICE, texts.SESSION_ENDED)
    # typing was shown while the model worked; private replies do not quote
    assert (ALICE, "typing") in tg.chat_actions
    assert all("reply_parameters" not in m for m in tg.sent_messages(ALICE))
    # the persona is keyed by the user id, the display name is only stored alongside
    data = await core.export(ALICE_ID)
    assert data is not None
    assert [(i["user_id"], i["display_name"]) for i in data["identities"]] == [("11", "Alice")]


async def test_group_mentions_in_any_case_and_replies_to_the_bot_address_it(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    async with polling(core, tg):
        tg.push_message(GROUP, ALICE, "just chatting among us", chat_type="supergroup")
        asked = tg.push_message(
            GROUP, ALICE, f"@{BOT} hi from alice", chat_type="supergroup", first_name="Alice"
        )
        await wait_text(tg, GROUP, "echo: hi from alice")
        bot_reply = tg.sent_messages(GROUP)[0]
        # bob answers the bot's message: that addresses the bot too
        tg.push_message(
            GROUP,
            BOB,
            "and what about me?",
            chat_type="supergroup",
            reply_to_message_id=bot_reply["message_id"],
        )
        await wait_text(tg, GROUP, "echo: and what about me?")
        tg.push_message(GROUP, BOB, "still nothing for the bot", chat_type="supergroup")
        tg.push_message(GROUP, ALICE, f"thanks @{BOT.upper()}", chat_type="supergroup")
        await wait_text(tg, GROUP, "echo: thanks")

    assert shown(tg, GROUP) == ["echo: hi from alice", "echo: and what about me?", "echo: thanks"]
    assert [last_user_text(r) for r in fake_llm.chat_requests()] == [
        "hi from alice",
        "and what about me?",
        "thanks",
    ]
    # replies quote the message they answer
    assert bot_reply["reply_parameters"]["message_id"] == asked["message"]["message_id"]


async def test_ignored_updates_and_access_control(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    async with polling(core, tg, allowed_users=[str(ALICE), str(BOB)], allowed_chats=[str(ALICE)]):
        bot_msg = tg.make_message_update(ALICE, 5, "I am another bot")
        bot_msg["message"]["from"]["is_bot"] = True
        tg.push_update(bot_msg)
        edited = tg.make_message_update(ALICE, ALICE, "edited text")
        tg.push_update({"edited_message": edited["message"]})
        tg.push_document(BOB, BOB, "notes.txt", b"not text")  # chat not allowed
        tg.push_message(33, 33, "stranger in private")  # user not allowed
        tg.push_message(BOB, BOB, "allowed user, chat not allowed")
        tg.push_message(ALICE, ALICE, "hello")
        await wait_text(tg, ALICE, "echo: hello")
        await asyncio.sleep(0.2)
    assert shown(tg, ALICE) == ["echo: hello"]
    assert tg.sent_messages(33) == [] and tg.sent_messages(BOB) == []
    assert [last_user_text(r) for r in fake_llm.chat_requests()] == ["hello"]


async def test_long_reply_is_split_into_valid_html_messages(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    paragraph = (
        "**Tip** number {i}: use `x < y && y > z` and read [the docs](https://example.com/?a=1&b=2)"
        " — *really* worth it & more.\n\n"
    )
    paragraphs = [paragraph.format(i=i) for i in range(200)]
    code = "```python\n" + "\n".join(f"print({i} < {i + 1})" for i in range(150)) + "\n```\n\n"
    reply = "".join([*paragraphs[:40], code, *paragraphs[40:]])
    while len(reply) > 10_000:
        reply = reply[: reply.rindex("**Tip**")]
    assert len(reply) > 9_500
    fake_llm.push("chat", reply)
    async with polling(core, tg):
        tg.push_message(ALICE, ALICE, "give me a long answer")
        await tg.wait_for(lambda: len(tg.sent_messages(ALICE)) >= 3)
        await asyncio.sleep(0.3)
    sent = tg.sent_messages(ALICE)
    assert len(sent) == len(html_chunks(reply))
    for message in sent:
        assert message["parse_mode"] == "HTML"  # the fake validated it; no plain fallback
        assert len(message["text"]) <= 4096 and len(message["parsed_text"]) <= 4096
    shown = "".join(m["parsed_text"] for m in sent)
    assert "Tip number 0: use x < y && y > z and read the docs" in shown
    assert "print(100 < 101)" in shown
    assert "**" not in shown


async def test_streaming_by_edits_overflows_into_new_messages(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    reply = " ".join(f"word{i} **bold{i}**" for i in range(700))  # ~9,000 characters
    fake_llm.push("chat", reply)
    async with polling(core, tg, stream_edits=True, stream_edit_interval=0.2):
        tg.push_message(ALICE, ALICE, "stream please")
        expected = html_chunks(reply)
        await tg.wait_for(lambda: [m["text"] for m in tg.sent_messages(ALICE)] == expected)
    assert len(expected) >= 2
    assert tg.calls_to("editMessageText")  # drafts were edited while the model wrote
    assert all(m["parse_mode"] == "HTML" for m in tg.sent_messages(ALICE))
    data = await core.export(ALICE_ID)
    assert data is not None
    assert [m["content"] for m in data["messages"] if m["role"] == "assistant"] == [reply]


async def test_html_rejected_falls_back_to_plain_and_send_errors_do_not_crash(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    fake_llm.push("chat", "**bold** answer", "second answer")
    async with polling(core, tg):
        tg.fail_next("sendMessage", 400, "Bad Request: can't parse entities: test")
        tg.push_message(ALICE, ALICE, "first")
        await wait_text(tg, ALICE, "bold answer")
        tg.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
        tg.push_message(ALICE, ALICE, "second")
        await tg.wait_for(lambda: len(tg.calls_to("sendMessage")) >= 3)
        tg.push_message(ALICE, ALICE, "third")
        await wait_text(tg, ALICE, "echo: third")
    first = tg.sent_messages(ALICE)[0]
    assert first["text"] == "bold answer" and "parse_mode" not in first
    assert shown(tg, ALICE) == ["bold answer", "echo: third"]


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # PTB's own
async def test_flood_control_is_waited_out_and_typing_repeats(
    core: PersonaCore,
    fake_llm: FakeOpenAI,
    tg: FakeTelegramAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox, "TYPING_EVERY", 0.2)
    fake_llm.push("chat", Hang(1.0))
    async with polling(core, tg):
        tg.fail_next("sendMessage", 429, retry_after=1)
        tg.push_message(ALICE, ALICE, "slow question")
        await wait_text(tg, ALICE, "echo: slow question", within=8)
    assert len(tg.calls_to("sendMessage")) == 2  # refused once, then sent
    assert tg.chat_actions.count((ALICE, "typing")) >= 4


def max_in_window(times: list[float], window: float) -> int:
    """The most of ``times`` that fall in any closed interval ``window`` seconds long."""
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_leaky_bucket_never_exceeds_the_limit_in_a_window() -> None:
    # burst + drain over the window = the limit (aiolimiter's own numbers would allow 2x)
    assert leaky_bucket(30, 1.0) == (7.0, 7 / 23)
    assert leaky_bucket(20, 60.0) == (5.0, 20.0)
    assert leaky_bucket(1, 5.0) == (1.0, 5.0)
    assert leaky_bucket(0, 60.0) == (0, 0)


async def test_standalone_bot_has_the_flood_limiter(core: PersonaCore, tg: FakeTelegramAPI) -> None:
    limiter = build_application(core, tg_settings(tg, flood_max_retries=2)).bot.rate_limiter
    assert isinstance(limiter, FloodLimiter) and limiter.max_retries == 2
    off = tg_settings(tg, flood_overall_messages=0, flood_group_messages=0, flood_max_retries=0)
    assert build_application(core, off).bot.rate_limiter is None


async def test_flood_limits_hold_in_every_window_and_every_reply_arrives(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    users = list(range(101, 110))
    limits = {
        "flood_overall_messages": 5,
        "flood_overall_seconds": 1.0,
        "flood_group_messages": 3,
        "flood_group_seconds": 2.0,
        "typing": False,
    }
    async with polling(core, tg, **limits):
        for user in users:  # 9 private replies at once: over the overall limit
            tg.push_message(user, user, f"hi from {user}")
        await tg.wait_for(lambda: len(tg.sent_messages()) == 9, timeout=10)
        for user in users[:4]:  # 4 replies into one group at once: over its limit
            tg.push_message(GROUP, user, f"@{BOT} group hi from {user}", chat_type="supergroup")
        await tg.wait_for(lambda: len(tg.sent_messages()) == 13, timeout=10)
    for user in users:
        assert shown(tg, user) == [f"echo: hi from {user}"]
    assert sorted(shown(tg, GROUP)) == sorted(f"echo: group hi from {u}" for u in users[:4])
    sends = [(at, p["chat_id"]) for at, _, p in tg.timed_calls() if "chat_id" in p]
    assert len(sends) == 13
    # times of arrival at the server; 50 ms off the window allow for loopback jitter
    assert max_in_window([at for at, _ in sends], 1.0 - 0.05) <= 5
    assert max_in_window([at for at, chat in sends if chat == GROUP], 2.0 - 0.05) <= 3


async def test_typing_does_not_use_up_a_groups_flood_limit(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "TYPING_EVERY", 0.1)
    fake_llm.push("chat", Hang(1.0))
    # one message per 10 s into a group: a counted "typing…" would hold the reply back 10 s
    async with polling(core, tg, flood_group_messages=1, flood_group_seconds=10.0):
        asked = tg.push_message(GROUP, ALICE, f"@{BOT} slow one", chat_type="supergroup")
        await wait_text(tg, GROUP, "echo: slow one", within=4)
    assert tg.chat_actions.count((GROUP, "typing")) >= 5
    (sent,) = tg.sent_messages(GROUP)
    assert sent["reply_parameters"]["message_id"] == asked["message"]["message_id"]


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # PTB's own
async def test_retry_after_is_waited_out_and_the_reply_sent_once(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    async with polling(core, tg):
        tg.fail_next("sendMessage", 429, retry_after=1)
        tg.push_message(ALICE, ALICE, "are you flooded?")
        await wait_text(tg, ALICE, "echo: are you flooded?", within=8)
        await asyncio.sleep(0.5)
    refused, sent = tg.timed_calls("sendMessage")
    assert sent[0] - refused[0] >= 1.0  # Telegram's retry_after was honoured
    assert shown(tg, ALICE) == ["echo: are you flooded?"]


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_outbox_does_not_retry_what_the_limiter_gave_up(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    async with polling(core, tg, flood_max_retries=1):
        tg.fail_next("sendMessage", 429, retry_after=1, times=2)
        tg.push_message(ALICE, ALICE, "still flooded?")
        await tg.wait_for(lambda: len(tg.calls_to("sendMessage")) == 2, timeout=8)
        await asyncio.sleep(1.6)  # an extra wait-and-retry would have come by now
    assert len(tg.calls_to("sendMessage")) == 2  # the first try and flood_max_retries = 1
    assert shown(tg, ALICE) == []


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_embedded_without_a_rate_limiter_the_outbox_waits_out_flood_control(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    app = Application.builder().token(TOKEN).base_url(tg.base_url).build()
    register_persona_handlers(app, core, tg_settings(tg), menu=False)
    assert app.bot.rate_limiter is None
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=dtm.timedelta(seconds=1))
        try:
            tg.fail_next("sendMessage", 429, retry_after=1)
            tg.push_message(ALICE, ALICE, "host without limiter")
            await wait_text(tg, ALICE, "echo: host without limiter", within=8)
        finally:
            await app.updater.stop()
            await app.stop()
    refused, sent = tg.timed_calls("sendMessage")
    assert sent[0] - refused[0] >= 1.0
    assert shown(tg, ALICE) == ["echo: host without limiter"]


# ------------------------------------------------------------------ non-text messages


async def test_a_caption_is_answered_as_text(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    async with polling(core, tg):
        tg.push_media(ALICE, ALICE, "photo", caption="what a view from the summit")
        await wait_text(tg, ALICE, "echo: what a view from the summit")
        tg.push_document(ALICE, ALICE, "plan.pdf", b"%PDF-1.4", caption="please check my plan")
        await wait_text(tg, ALICE, "echo: please check my plan")
    assert shown(tg, ALICE) == ["echo: what a view from the summit", "echo: please check my plan"]
    assert [last_user_text(r) for r in fake_llm.chat_requests()] == [
        "what a view from the summit",
        "please check my plan",
    ]


async def test_sticker_voice_and_video_note_get_one_notice_each(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    async with polling(core, tg):
        tg.push_media(ALICE, ALICE, "sticker")
        tg.push_media(ALICE, ALICE, "voice")
        tg.push_media(BOB, BOB, "video_note")
        await wait_text(tg, ALICE, texts.ONLY_TEXT, count=2)
        await wait_text(tg, BOB, texts.ONLY_TEXT)
        tg.push_message(ALICE, ALICE, "and now in words")  # handled after the media
        await wait_text(tg, ALICE, "echo: and now in words")
        await asyncio.sleep(0.2)
    assert shown(tg, ALICE) == [texts.ONLY_TEXT, texts.ONLY_TEXT, "echo: and now in words"]
    assert shown(tg, BOB) == [texts.ONLY_TEXT]
    assert [last_user_text(r) for r in fake_llm.chat_requests()] == ["and now in words"]


async def test_an_album_gets_one_answer(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    async with polling(core, tg):
        tg.push_album(ALICE, ALICE, 10)
        tg.push_album(BOB, BOB, 4, caption="our trip to Lisbon")
        await wait_text(tg, ALICE, texts.ONLY_TEXT)
        await wait_text(tg, BOB, "echo: our trip to Lisbon")
        tg.push_message(ALICE, ALICE, "sync")  # handled after every album item
        await wait_text(tg, ALICE, "echo: sync")
        await asyncio.sleep(0.2)
    assert shown(tg, ALICE) == [texts.ONLY_TEXT, "echo: sync"]
    assert shown(tg, BOB) == ["echo: our trip to Lisbon"]
    assert [last_user_text(r) for r in fake_llm.chat_requests()] == ["our trip to Lisbon", "sync"]


async def test_group_media_is_answered_only_when_addressed_to_the_bot(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    listed = -100456
    group = {"chat_type": "supergroup"}
    async with polling(core, tg, reply_channels=[str(listed)]):
        # not for the bot: nothing, not even a notice
        tg.push_media(GROUP, ALICE, "photo", **group)
        tg.push_media(GROUP, ALICE, "photo", caption="look at my cat", **group)
        tg.push_album(GROUP, BOB, 5, **group)
        tg.push_media(GROUP, BOB, "sticker", **group)
        # a caption mentioning the bot is a question for it
        tg.push_media(GROUP, ALICE, "photo", caption=f"@{BOT} what breed is this?", **group)
        await wait_text(tg, GROUP, "echo: what breed is this?")
        bot_reply = tg.sent_messages(GROUP)[0]["message_id"]
        # media replying to the bot, or in a reply channel: one notice (per album)
        voice = tg.push_media(GROUP, BOB, "voice", reply_to_message_id=bot_reply, **group)
        await wait_text(tg, GROUP, texts.ONLY_TEXT)
        tg.push_album(GROUP, BOB, 3, reply_to_message_id=bot_reply, **group)
        await wait_text(tg, GROUP, texts.ONLY_TEXT, count=2)
        tg.push_media(listed, ALICE, "sticker", chat_type="group")
        await wait_text(tg, listed, texts.ONLY_TEXT)
        tg.push_message(GROUP, ALICE, f"@{BOT} sync", **group)
        await wait_text(tg, GROUP, "echo: sync")
        await asyncio.sleep(0.2)
    assert shown(tg, GROUP) == [
        "echo: what breed is this?",
        texts.ONLY_TEXT,
        texts.ONLY_TEXT,
        "echo: sync",
    ]
    notice = tg.sent_messages(GROUP)[1]
    assert notice["reply_parameters"]["message_id"] == voice["message"]["message_id"]
    assert shown(tg, listed) == [texts.ONLY_TEXT]
    assert [last_user_text(r) for r in fake_llm.chat_requests()] == ["what breed is this?", "sync"]


# ------------------------------------------------------------------ persona commands


async def test_persona_in_group_goes_to_private_chat(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    await set_job(core, ALICE_ID, "nurse")
    await set_job(core, BOB_ID, "pilot")
    async with polling(core, tg):
        tg.push_message(GROUP, ALICE, f"/persona@{BOT}", chat_type="supergroup")
        await wait_text(tg, GROUP, "I've sent it to you privately")
        await wait_text(tg, ALICE, "Career_Information: nurse")

        tg.push_message(GROUP, ALICE, "/export", chat_type="supergroup")
        await tg.wait_for(lambda: tg.documents)
        await wait_text(tg, GROUP, "I've sent it to you privately", count=2)

        # bob never opened a private chat with the bot
        tg.fail_next("sendMessage", 403, "Forbidden: bot can't initiate conversation with a user")
        tg.push_message(GROUP, BOB, "/persona", chat_type="supergroup")
        await wait_text(tg, GROUP, "Open a private chat")

        tg.push_message(ALICE, ALICE, "/persona")
        await wait_text(tg, ALICE, "Career_Information: nurse", count=2)
    group = " ".join(shown(tg, GROUP))
    assert "nurse" not in group and "pilot" not in group
    assert f"@{BOT}" in group
    assert tg.documents[0].chat_id == ALICE
    assert tg.sent_messages(BOB) == []


async def test_the_command_menu_is_the_command_table(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    async with polling(core, tg):
        tg.push_message(ALICE, ALICE, "/help")
        await wait_text(tg, ALICE, texts.INTRO)
    assert tg.commands["default"] == [
        {"command": spec.name, "description": spec.description} for spec in COMMANDS
    ]


# ------------------------------------------------------------------ embedded and webhook modes


async def test_embedded_in_a_host_application(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI
) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text("host start")

    async def host_help(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text("host help")

    async def host_echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text(f"host saw: {update.message.text}")

    async def host_init(app: Application) -> None:
        await app.bot.set_my_commands([("start", "Start the host bot")])

    app = (
        Application.builder()
        .token(TOKEN)
        .base_url(tg.base_url)
        .base_file_url(tg.base_file_url)
        .post_init(host_init)
        .build()
    )
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("help", host_help))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, host_echo))
    register_persona_handlers(app, core, tg_settings(tg))

    async with app:
        assert app.post_init is not None
        await app.post_init(app)  # what run_polling does
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=dtm.timedelta(seconds=1))
        try:
            tg.push_message(ALICE, ALICE, "/start")
            await wait_text(tg, ALICE, "host start")
            tg.push_message(ALICE, ALICE, "hello both")
            await wait_text(tg, ALICE, "echo: hello both")
            await wait_text(tg, ALICE, "host saw: hello both")
            tg.push_message(ALICE, ALICE, "/help")
            await wait_text(tg, ALICE, "host help")
            tg.push_message(ALICE, ALICE, "/end")
            await wait_text(tg, ALICE, "Session ended")
        finally:
            await app.updater.stop()
            await app.stop()
    assert not any(texts.INTRO in t for t in shown(tg, ALICE))
    assert [c["command"] for c in tg.commands["default"]] == ["start", *TABLE]
    assert tg.commands["default"][0]["description"] == "Start the host bot"


async def test_setup_commands_keeps_host_commands(tg: FakeTelegramAPI) -> None:
    app = Application.builder().token(TOKEN).base_url(tg.base_url).build()
    async with app:
        await app.bot.set_my_commands([("help", "Host help"), ("start", "Start")])
        menu = await setup_commands(app.bot)
        calls = len(tg.calls_to("setMyCommands"))
        await setup_commands(app.bot)  # idempotent: nothing to write
    # the host's own help stays first and ours is not added twice
    assert [c.command for c in menu] == ["help", "start", *(n for n in TABLE if n != "help")]
    assert tg.commands["default"][0] == {"command": "help", "description": "Host help"}
    assert len(tg.calls_to("setMyCommands")) == calls


async def test_webhook_mode(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TG_WEBHOOK_SECRET", "s3cret-token")
    port = free_port()
    settings = tg_settings(
        tg,
        mode="webhook",
        webhook_port=port,
        webhook_path="tg-hook",
        webhook_url=f"http://127.0.0.1:{port}/tg-hook",
        webhook_secret_env="TG_WEBHOOK_SECRET",
    )
    async with running(core, settings):
        await tg.wait_for(lambda: tg.webhook_url)
        await wait_listening(port)
        assert tg.webhook.secret_token == "s3cret-token"
        assert await tg.deliver_webhook(tg.make_message_update(ALICE, ALICE, "via hook")) == 200
        await wait_text(tg, ALICE, "echo: via hook")
        forged = tg.make_message_update(ALICE, ALICE, "forged")
        assert await tg.deliver_webhook(forged, secret_token="wrong") == 403
        await asyncio.sleep(0.1)
    assert shown(tg, ALICE) == ["echo: via hook"]
    (registered,) = tg.calls_to("setWebhook")
    assert registered["max_connections"] == 40 and "drop_pending_updates" not in registered
    # stopping leaves the webhook registered: other workers may serve it, Telegram keeps
    # the updates for a stopped bot
    assert tg.calls_to("deleteWebhook") == [] and tg.webhook_url == settings.webhook_url


async def test_a_stopping_webhook_worker_answers_what_it_acknowledged(
    core: PersonaCore, fake_llm: FakeOpenAI, tg: FakeTelegramAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped while the model is still answering an update it has acknowledged (Telegram
    will not send it again): the webhook server closes at once, the reply still goes out."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/tg-hook"
    settings = tg_settings(
        tg, mode="webhook", webhook_port=port, webhook_path="tg-hook", webhook_url=url,
        webhook_max_connections=7,
    )  # fmt: skip
    fake_llm.push("chat", Hang(1.0))
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="aipersona.adapters.telegram"):
        task = asyncio.create_task(run_telegram(core, settings, stop))
        await tg.wait_for(lambda: tg.webhook_url)
        await wait_listening(port)
        assert await tg.deliver_webhook(tg.make_message_update(ALICE, ALICE, "slow")) == 200
        await fake_llm.wait_for_requests("chat", 1)
        stop.set()
        await tg.wait_for(lambda: not task.done() and tg.sent_texts(ALICE), 5)
        await asyncio.wait_for(task, 10)
    assert tg.sent_texts(ALICE) == ["echo: slow"]
    assert tg.calls_to("setWebhook")[0]["max_connections"] == 7
    assert tg.calls_to("deleteWebhook") == [] and tg.webhook_url == url
    # a random secret per run: said clearly that only one worker may serve the URL
    (warning,) = [r.getMessage() for r in caplog.records if "random secret" in r.getMessage()]
    assert "webhook_secret_env" in warning and "webhook_shared" in warning


async def test_run_stops_on_event_within_a_running_loop(
    core: PersonaCore, tg: FakeTelegramAPI
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run_telegram(core, tg_settings(tg), stop))
    await tg.wait_for(lambda: tg.calls_to("getUpdates"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert loop.time() - started < 3
    assert core.started  # the core belongs to the caller


# ------------------------------------------------------------------ settings and formatting


def test_settings_from_config_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config.from_dict({"telegram": {"mode": "webhook", "base_url": "http://h:8081/bot/"}})
    s = TelegramSettings.from_config(cfg)
    assert s.token_env == "TELEGRAM_BOT_TOKEN" and s.mode == "webhook"
    assert s.api_urls() == ("http://h:8081/bot", "http://h:8081/file/bot")
    assert TelegramSettings().api_urls() is None
    with pytest.raises(ConfigError, match="webhook_url is required"):
        s.check_webhook()
    with pytest.raises(ConfigError, match=r"telegram\.mode"):
        TelegramSettings.from_config(Config.from_dict({"telegram": {"mode": "carrier-pigeon"}}))
    with pytest.raises(ConfigError, match=r"telegram\.tokn_env"):
        TelegramSettings.from_config(Config.from_dict({"telegram": {"tokn_env": "X"}}))
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN"):
        s.token()
    monkeypatch.setenv("BAD_SECRET", "has spaces")
    with pytest.raises(ConfigError, match="BAD_SECRET"):
        TelegramSettings(webhook_secret_env="BAD_SECRET").webhook_secret()
    assert len(TelegramSettings().webhook_secret()) >= 32  # random when not configured


def test_shared_webhook_settings_need_one_secret_for_all_workers() -> None:
    shared = {"mode": "webhook", "webhook_shared": True, "webhook_secret_env": "TG_SECRET"}
    s = TelegramSettings.parse("telegram", shared)
    assert s.webhook_shared and s.webhook_max_connections == 40
    no_secret = {**shared, "webhook_secret_env": ""}
    with pytest.raises(ConfigError, match=r"telegram\.webhook_shared: .*webhook_secret_env"):
        TelegramSettings.parse("telegram", no_secret)
    with pytest.raises(ConfigError, match=r"telegram\.webhook_shared: .*mode = \"webhook\""):
        TelegramSettings.parse("telegram", {**shared, "mode": "polling"})
    with pytest.raises(ConfigError, match=r"telegram\.webhook_max_connections"):
        TelegramSettings.parse("telegram", {"webhook_max_connections": 101})
    with pytest.raises(ConfigError, match=r"telegram\.webhook_shared"):  # at load already
        Config.from_dict({"telegram": no_secret})


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("**bold** and *it* and _it_", "<b>bold</b> and <i>it</i> and <i>it</i>"),
        ("snake_case_name and 2*3*4", "snake_case_name and 2*3*4"),
        ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
        ("`x<y>`", "<code>x&lt;y&gt;</code>"),
        (
            "```py\nif a < b:\n    pass\n```",
            '<pre><code class="language-py">if a &lt; b:\n    pass</code></pre>',
        ),
        ("[docs](https://e.x/?a=1&b=2)", '<a href="https://e.x/?a=1&amp;b=2">docs</a>'),
        ("https://x.com/_a_", "https://x.com/_a_"),
        ("# Title\n* one\n- two", "<b>Title</b>\n• one\n• two"),
        ("**a *b** c*", "**a *b** c*"),  # crossing markers: left as text
        ("~~old~~ __new__", "<s>old</s> <b>new</b>"),
        ("[js](javascript:alert(1))", "[js](javascript:alert(1))"),
    ],
)
def test_markdown_to_html(markdown: str, html: str) -> None:
    assert markdown_to_html(markdown) == html
    parse_html(html)


_MARKDOWNISH = st.lists(
    st.sampled_from(
        [
            "a",
            "b",
            " ",
            "\n",
            "*",
            "**",
            "_",
            "__",
            "`",
            "```",
            "```py\n",
            "[",
            "]",
            "(",
            ")",
            "https://e.x/a_b",
            "](https://e.x)",
            "<",
            ">",
            "&",
            "#",
            "- ",
            "~~",
            "é",
            "🙂",
        ]
    ),
    max_size=80,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_MARKDOWNISH)
def test_markdown_to_html_always_parses(text: str) -> None:
    html = markdown_to_html(text)
    if html.strip():
        parse_html(html)


@settings(max_examples=25, deadline=None)
@given(st.lists(_MARKDOWNISH, min_size=50, max_size=200).map("\n".join))
def test_html_chunks_fit_and_parse(text: str) -> None:
    limit = 1024
    for chunk in html_chunks(text, limit):
        assert len(chunk) <= limit
        assert parse_html(chunk).strip()


@pytest.mark.parametrize(
    "text",
    [
        "```" + "x" * 5000,  # a "language name" longer than a message
        "`" * 20000,
        "word " * 900 + "```python and then " + "z " * 3000,
        "[" * 20000 + "](",
        "**a " * 5000,
        "```\n\n```",
    ],
)
def test_html_chunks_pathological_input(text: str) -> None:
    chunks = html_chunks(text)
    assert chunks
    for chunk in chunks:
        assert len(chunk) <= 4096
        assert parse_html(chunk).strip()


async def test_token_is_redacted_from_http_logs(
    core: PersonaCore, tg: FakeTelegramAPI, caplog: pytest.LogCaptureFixture
) -> None:
    build_application(core, tg_settings(tg))
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info('HTTP Request: POST %s "200 OK"', f"{tg.base_url}{TOKEN}/x")
    assert TOKEN not in caplog.text
    assert "/bot<bot-token>/x" in caplog.text
