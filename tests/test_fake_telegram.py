"""Tests proving the loopback Telegram Bot API fake works with the real python-telegram-bot."""

from __future__ import annotations

import asyncio
import datetime as dtm
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from telegram import (
    BotCommand,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Update,
)
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, EndPointNotFound, Forbidden, RetryAfter
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.helpers import escape_markdown

try:  # works whether or not tests/ is a package
    from tests.fakes.telegram import ApiError, FakeTelegramAPI, parse_html, parse_markdown_v2
except ImportError:  # pragma: no cover - rootdir-less import mode
    from fakes.telegram import (  # type: ignore[no-redef]
        ApiError,
        FakeTelegramAPI,
        parse_html,
        parse_markdown_v2,
    )

TOKEN = "123456:TEST-TOKEN"
pytestmark = pytest.mark.timeout(30)


# ------------------------------------------------------------------ fixtures / helpers


async def _echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_text(f"echo: {update.effective_message.text}")


async def _persona(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_text(
        f"persona: {' '.join(context.args or [])}",
        reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("forget", callback_data="f")]]),
    )


async def _button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    assert query is not None
    await query.answer("done")
    await query.edit_message_text(f"pressed {query.data}")


def build_app(fake: FakeTelegramAPI) -> Application:
    app = (
        Application.builder()
        .token(TOKEN)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
        .build()
    )
    app.add_handler(CommandHandler("persona", _persona))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, _echo))
    app.add_handler(CallbackQueryHandler(_button))
    return app


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI() as api:
        yield api


@pytest.fixture
async def app(fake: FakeTelegramAPI) -> AsyncIterator[Application]:
    """An initialized Application (bot usable, not polling)."""
    application = build_app(fake)
    async with application:
        yield application


@pytest.fixture
async def polling_app(fake: FakeTelegramAPI) -> AsyncIterator[Application]:
    """A started Application polling the fake."""
    application = build_app(fake)
    async with application:
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0, timeout=dtm.timedelta(seconds=1))
        try:
            yield application
        finally:
            if application.updater.running:
                await application.updater.stop()
            if application.running:
                await application.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _raw_call(fake: FakeTelegramAPI, method: str, **params: object) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake.base_url}{TOKEN}/{method}", json=params) as resp,
    ):
        return resp.status, await resp.json()


# ------------------------------------------------------------------ bot identity / polling


async def test_initialize_calls_get_me(fake: FakeTelegramAPI, app: Application) -> None:
    assert app.bot.id == 999000
    assert app.bot.username == "persona_test_bot"
    assert app.bot.first_name == "PersonaBot"
    assert fake.calls[0][0] == "getMe"


async def test_custom_bot_identity() -> None:
    async with FakeTelegramAPI(bot_id=4242, bot_username="other_bot", bot_first_name="O") as f:
        async with build_app(f) as application:
            assert (application.bot.id, application.bot.username) == (4242, "other_bot")


async def test_polling_echo_private_chat(fake: FakeTelegramAPI, polling_app: Application) -> None:
    first = fake.push_message(42, 42, "hello there", username="alice")
    sent = await fake.wait_for_sent(42)
    assert sent[0]["text"] == "echo: hello there"
    assert sent[0]["from"]["id"] == 999000
    assert sent[0]["chat"]["id"] == 42
    # private chats: PTB does not quote by default
    assert "reply_parameters" not in sent[0]
    # message ids increase per chat, shared by inbound and outbound messages
    assert sent[0]["message_id"] == first["message"]["message_id"] + 1

    fake.push_message(42, 42, "second")
    sent = await fake.wait_for_sent(42, count=2)
    assert [m["text"] for m in sent] == ["echo: hello there", "echo: second"]
    assert sent[1]["message_id"] > sent[0]["message_id"]
    assert fake.sent_texts(43) == []


async def test_command_in_group_with_bot_suffix(
    fake: FakeTelegramAPI, polling_app: Application
) -> None:
    update = fake.push_message(
        -100123, 7, "/persona@persona_test_bot show me", chat_type="supergroup"
    )
    entity = update["message"]["entities"][0]
    assert entity == {"type": "bot_command", "offset": 0, "length": 25}
    sent = await fake.wait_for_sent(-100123)
    assert sent[0]["text"] == "persona: show me"
    # groups: PTB quotes the triggering message via reply_parameters
    assert sent[0]["reply_parameters"]["message_id"] == update["message"]["message_id"]
    assert sent[0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "f"
    assert sent[0]["chat"] == {"id": -100123, "type": "supergroup", "title": "Test Group"}


async def test_command_for_other_bot_is_ignored(
    fake: FakeTelegramAPI, polling_app: Application
) -> None:
    fake.push_message(-5, 7, "/persona@someone_else_bot x", chat_type="group")
    fake.push_message(-5, 7, "plain")
    sent = await fake.wait_for_sent(-5)
    await asyncio.sleep(0.1)
    assert fake.sent_texts(-5) == ["echo: plain"]
    assert sent[0]["text"] == "echo: plain"


async def test_callback_query_answer_and_edit(
    fake: FakeTelegramAPI, polling_app: Application
) -> None:
    fake.push_message(10, 10, "/persona")
    (sent,) = await fake.wait_for_sent(10)
    fake.push_callback_query(10, 10, "f")
    await fake.wait_for(lambda: fake.sent_texts(10) == ["pressed f"])
    assert fake.callback_answers[0]["text"] == "done"
    edited = fake.sent_messages(10)[0]
    assert edited["message_id"] == sent["message_id"]
    assert "edit_date" in edited
    assert "reply_markup" not in edited  # edit without markup removes the keyboard


async def test_updates_confirmed_after_stop(
    fake: FakeTelegramAPI, polling_app: Application
) -> None:
    fake.push_message(1, 1, "a")
    fake.push_message(1, 1, "b")
    await fake.wait_for_sent(1, count=2)
    assert polling_app.updater is not None
    await polling_app.updater.stop()
    await polling_app.stop()
    assert fake.pending_updates == []


async def test_stop_is_fast(fake: FakeTelegramAPI) -> None:
    application = build_app(fake)
    async with application:
        await application.start()
        assert application.updater is not None
        # a long poll of 10s; the fake caps each wait at max_poll_wait
        await application.updater.start_polling(poll_interval=0, timeout=dtm.timedelta(seconds=10))
        await fake.wait_for(lambda: fake.calls_to("getUpdates"))
        await asyncio.sleep(0.2)  # let a long poll be in flight
        started = time.monotonic()
        await application.updater.stop()
        await application.stop()
        elapsed = time.monotonic() - started
    assert elapsed < 1.5, elapsed


# ------------------------------------------------------------------ raw long polling


async def test_long_poll_wakes_on_push(fake: FakeTelegramAPI) -> None:
    async def push_later() -> None:
        await asyncio.sleep(0.1)
        fake.push_message(3, 3, "wake up")

    started = time.monotonic()
    pusher = asyncio.create_task(push_later())
    status, body = await _raw_call(fake, "getUpdates", timeout=30)
    await pusher
    assert status == 200
    assert [u["message"]["text"] for u in body["result"]] == ["wake up"]
    assert time.monotonic() - started < 0.9


async def test_long_poll_is_capped_and_offset_confirms() -> None:
    async with FakeTelegramAPI(max_poll_wait=0.2) as fake:
        started = time.monotonic()
        status, body = await _raw_call(fake, "getUpdates", timeout=30)
        assert (status, body["result"]) == (200, [])
        assert time.monotonic() - started < 1.0

        ids = [fake.push_message(1, 1, t)["update_id"] for t in ("x", "y", "z")]
        _, body = await _raw_call(fake, "getUpdates", offset=0, limit=2)
        assert [u["update_id"] for u in body["result"]] == ids[:2]
        _, body = await _raw_call(fake, "getUpdates", offset=ids[1] + 1)
        assert [u["update_id"] for u in body["result"]] == ids[2:]
        _, body = await _raw_call(fake, "getUpdates", offset=ids[2] + 1)
        assert body["result"] == []
        assert fake.pending_updates == []


async def test_stop_wakes_pending_poll() -> None:
    fake = FakeTelegramAPI(max_poll_wait=20)
    await fake.start()
    poll = asyncio.create_task(_raw_call(fake, "getUpdates", timeout=20))
    await fake.wait_for(lambda: fake.calls_to("getUpdates"))
    started = time.monotonic()
    await fake.stop()
    status, body = await asyncio.wait_for(poll, 2)
    assert (status, body["result"]) == (200, [])
    assert time.monotonic() - started < 1.5


async def test_form_encoded_params_are_decoded(fake: FakeTelegramAPI) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake.base_url}{TOKEN}/sendMessage",
            data={"chat_id": "5", "text": "123", "reply_markup": '{"inline_keyboard": []}'},
        ) as resp,
    ):
        body = await resp.json()
    assert body["ok"] is True
    assert body["result"]["text"] == "123"  # text stays a string
    assert fake.calls_to("sendMessage")[0]["chat_id"] == 5
    assert fake.sent_messages(5)[0]["reply_markup"] == {"inline_keyboard": []}


# ------------------------------------------------------------------ entities of inbound messages


def test_inbound_entities(fake: FakeTelegramAPI) -> None:
    upd = fake.make_message_update(1, 1, "hey @persona_test_bot what's up /start")
    assert upd["message"]["entities"] == [
        {"type": "mention", "offset": 4, "length": 17},
        {"type": "bot_command", "offset": 32, "length": 6},
    ]
    upd = fake.make_message_update(1, 1, "🙂 /persona@persona_test_bot")
    # offsets/lengths are in UTF-16 code units (the emoji counts 2)
    assert upd["message"]["entities"] == [{"type": "bot_command", "offset": 3, "length": 25}]
    assert "entities" not in fake.make_message_update(1, 1, "no entities here")["message"]
    assert fake.pending_updates == []  # make_* does not queue


async def test_reply_to_message_is_embedded(
    fake: FakeTelegramAPI, polling_app: Application
) -> None:
    fake.push_message(8, 8, "first")
    (bot_msg,) = await fake.wait_for_sent(8)
    upd = fake.push_message(8, 8, "reply", reply_to_message_id=bot_msg["message_id"])
    reply_to = upd["message"]["reply_to_message"]
    assert reply_to["from"]["id"] == 999000
    assert reply_to["text"] == "echo: first"
    # let the reply be handled: stopping PTB while a getUpdates response is being read can
    # leave its single-connection pool blocked for pool_timeout (1s) - a PTB/httpcore race
    await fake.wait_for_sent(8, count=2)


async def test_media_and_album_updates_parse_in_ptb(
    fake: FakeTelegramAPI, app: Application
) -> None:
    photo = fake.push_media(5, 5, "photo", caption="hi @persona_test_bot")
    sticker = fake.push_media(-100, 5, "sticker", chat_type="supergroup")
    voice = fake.push_media(5, 5, "voice")
    album = fake.push_album(5, 5, 3, caption="trip")
    with pytest.raises(ValueError, match="no caption"):
        fake.push_media(5, 5, "sticker", caption="stickers have none")
    parsed = [Update.de_json(u, app.bot).message for u in (photo, sticker, voice, *album)]
    assert all(m is not None for m in parsed)
    p, s, v, *items = [m for m in parsed if m is not None]
    assert p.photo and p.text is None and p.caption == "hi @persona_test_bot"
    assert list(p.parse_caption_entities().values()) == ["@persona_test_bot"]
    assert s.sticker is not None and s.sticker.type == "regular" and s.chat.type == "supergroup"
    assert v.voice is not None and v.voice.mime_type == "audio/ogg"
    assert {m.media_group_id for m in items} == {items[0].media_group_id} != {None}
    assert [m.caption for m in items] == ["trip", None, None]
    assert items[0].media_group_id != fake.push_album(5, 5, 2)[0]["message"]["media_group_id"]
    tg_file = await app.bot.get_file(v.voice.file_id)  # the media is stored like documents
    assert bytes(await tg_file.download_as_bytearray()) == b"media:voice"


async def test_calls_are_timed(fake: FakeTelegramAPI, app: Application) -> None:
    before = time.monotonic()
    await app.bot.send_message(1, "first")
    await asyncio.sleep(0.2)
    await app.bot.send_chat_action(1, ChatAction.TYPING)
    assert len(fake.call_times) == len(fake.calls)
    ((first, name, params),) = fake.timed_calls("sendMessage")
    ((second, _, _),) = fake.timed_calls("SENDCHATACTION")
    assert name == "sendMessage" and params["text"] == "first"
    assert before <= first and second - first >= 0.2 and second <= time.monotonic()


# ------------------------------------------------------------------ bot methods via PTB


async def test_send_document_stores_bytes_and_is_downloadable(
    fake: FakeTelegramAPI, app: Application
) -> None:
    payload = b"persona export\x00\x01\x02" * 100
    msg = await app.bot.send_document(
        chat_id=42, document=payload, filename="persona.json", caption="your data"
    )
    (doc,) = fake.documents
    assert doc.data == payload
    assert doc.filename == "persona.json"
    assert doc.mime_type == "application/json"
    assert doc.caption == "your data"
    assert doc.chat_id == 42
    assert msg.document is not None
    assert msg.document.file_name == "persona.json"
    assert msg.document.file_size == len(payload)

    tg_file = await app.bot.get_file(msg.document.file_id)
    assert bytes(await tg_file.download_as_bytearray()) == payload

    # resending by file_id reuses the stored file
    await app.bot.send_document(chat_id=43, document=msg.document.file_id)
    assert fake.documents[1].data == payload
    with pytest.raises(BadRequest, match="Wrong file identifier"):
        await app.bot.send_document(chat_id=43, document="no-such-file-id")


async def test_commands_roundtrip(fake: FakeTelegramAPI, app: Application) -> None:
    assert await app.bot.set_my_commands(
        [("persona", "Show your persona"), BotCommand("forget", "Forget me")]
    )
    cmds = await app.bot.get_my_commands()
    assert [(c.command, c.description) for c in cmds] == [
        ("persona", "Show your persona"),
        ("forget", "Forget me"),
    ]
    assert fake.commands["default"][0] == {"command": "persona", "description": "Show your persona"}

    await app.bot.set_my_commands([("admin", "Admin only")], scope=BotCommandScopeChat(42))
    assert fake.commands_for({"type": "chat", "chat_id": 42}) == [
        {"command": "admin", "description": "Admin only"}
    ]
    assert [c.command for c in await app.bot.get_my_commands(scope=BotCommandScopeChat(42))] == [
        "admin"
    ]
    await app.bot.set_my_commands([("hallo", "Hallo")], language_code="de")
    assert fake.commands["default/de"][0]["command"] == "hallo"

    assert await app.bot.delete_my_commands()
    assert await app.bot.get_my_commands() == ()
    assert "chat:42" in fake.commands

    with pytest.raises(BadRequest, match="Bot_command_invalid"):
        await app.bot.set_my_commands([("Persona", "uppercase is invalid")])


async def test_markdown_v2_validation(fake: FakeTelegramAPI, app: Application) -> None:
    with pytest.raises(BadRequest, match=r"character '\.' is reserved"):
        await app.bot.send_message(42, "Hello.", parse_mode=ParseMode.MARKDOWN_V2)

    raw = "Hello. (1+1=2)! _under_ [x] #tag {a|b} ~ `code` > end-"
    escaped = escape_markdown(raw, version=2)
    msg = await app.bot.send_message(42, escaped, parse_mode=ParseMode.MARKDOWN_V2)
    assert msg.text == raw  # the API answers with the parsed plain text
    stored = fake.sent_messages(42)[-1]
    assert stored["text"] == escaped  # the fake records what was sent
    assert stored["parse_mode"] == "MarkdownV2"

    ok = "*bold* _it_ __u__ ~s~ ||sp|| `a.b` [link](https://e.x/a_(b\\)) \\."
    msg = await app.bot.send_message(42, ok, parse_mode=ParseMode.MARKDOWN_V2)
    assert msg.text == "bold it u s sp a.b link ."

    with pytest.raises(BadRequest, match="can't find end of the entity"):
        await app.bot.send_message(42, "*unclosed", parse_mode=ParseMode.MARKDOWN_V2)
    assert len(fake.sent_messages(42)) == 2  # failed sends are not stored


@pytest.mark.parametrize(
    "text",
    [
        "a.b",
        "1-2",
        "x!",
        "(a)",
        "a|b",
        "#tag",
        "*a _b* c_",
        "`no end",
        "[text](url",
        ">quote\nnot > quote",
    ],
)
def test_markdown_v2_rejects(text: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_markdown_v2(text)
    assert err.value.error_code == 400
    assert err.value.description.startswith("Bad Request: can't parse entities: ")


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("plain text", "plain text"),
        ("a\\.b", "a.b"),
        ("```python\nprint(1)\n```", "print(1)\n"),
        ("`a_b*c`", "a_b*c"),
        (">quote line\n>second", "quote line\nsecond"),
        ("**>expandable\n>quote||", "expandable\nquote"),
        ("![👍](tg://emoji?id=5368324170671202286)", "👍"),
        ("*bold _italic bold_*", "bold italic bold"),
    ],
)
def test_markdown_v2_accepts(text: str, plain: str) -> None:
    assert parse_markdown_v2(text) == plain


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("<b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</b></i>", "Unmatched end tag"),
        ("<div>x</div>", 'Unsupported start tag "div"'),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler"'),
        ("a < b", "Unclosed start tag at byte offset 2"),
        ("1 < 2 and 3 > 2", 'Unsupported start tag "" at byte offset 2'),
        ("a > b", "Character '>' must be escaped"),
        ("Tom & Jerry", "Character '&' must be escaped"),
        ("</b>", "Unexpected end tag"),
    ],
)
def test_html_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ApiError, match=fragment):
        parse_html(text)


async def test_html_via_ptb(fake: FakeTelegramAPI, app: Application) -> None:
    text = (
        '<b>b</b> <strong>s</strong> <i>i</i> <a href="https://e.x/?a=1&amp;b=2">l</a> '
        '<span class="tg-spoiler">sp</span> <tg-spoiler>t</tg-spoiler> '
        '<pre><code class="language-python">x = 1 &lt; 2</code></pre> '
        "<blockquote expandable>q</blockquote> &amp; &#33; &#x41;"
    )
    msg = await app.bot.send_message(1, text, parse_mode=ParseMode.HTML)
    assert msg.text == "b s i l sp t x = 1 < 2 q & ! A"
    with pytest.raises(BadRequest, match="Can't parse entities"):
        await app.bot.send_message(1, "<b>x</i>", parse_mode=ParseMode.HTML)


async def test_message_length_and_empty(fake: FakeTelegramAPI, app: Application) -> None:
    await app.bot.send_message(1, "x" * 4096)
    with pytest.raises(BadRequest, match="Message is too long"):
        await app.bot.send_message(1, "x" * 4097)
    # the limit applies after entity parsing
    await app.bot.send_message(1, "*" + "x" * 4096 + "*", parse_mode=ParseMode.MARKDOWN_V2)
    with pytest.raises(BadRequest, match="Message text is empty"):
        await app.bot.send_message(1, "")
    with pytest.raises(BadRequest, match="Message text is empty"):
        await app.bot.send_message(1, "<b> </b>", parse_mode=ParseMode.HTML)
    assert len(fake.sent_messages(1)) == 2


async def test_edit_message_text(fake: FakeTelegramAPI, app: Application) -> None:
    msg = await app.bot.send_message(5, "draft…")
    edited = await app.bot.edit_message_text("final *answer*", 5, msg.message_id, parse_mode="HTML")
    assert isinstance(edited, type(msg))
    assert edited.text == "final *answer*"
    (stored,) = fake.sent_messages(5)
    assert stored["text"] == "final *answer*"
    assert stored["parse_mode"] == "HTML"
    with pytest.raises(BadRequest, match="Message is not modified"):
        await app.bot.edit_message_text("final *answer*", 5, msg.message_id, parse_mode="HTML")
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await app.bot.edit_message_text("x", 5, 9999)
    with pytest.raises(BadRequest, match="Can't parse entities"):
        await app.bot.edit_message_text("bad.", 5, msg.message_id, parse_mode="MarkdownV2")


async def test_chat_action_and_delete(fake: FakeTelegramAPI, app: Application) -> None:
    assert await app.bot.send_chat_action(42, ChatAction.TYPING)
    assert fake.chat_actions == [(42, "typing")]
    msg = await app.bot.send_message(42, "temp")
    assert await app.bot.delete_message(42, msg.message_id)
    assert fake.sent_messages(42) == []
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await app.bot.delete_message(42, msg.message_id)


async def test_reply_to_unknown_message(fake: FakeTelegramAPI, app: Application) -> None:
    with pytest.raises(BadRequest, match="Message to be replied not found"):
        await app.bot.send_message(3, "hi", reply_to_message_id=77)
    msg = await app.bot.send_message(
        3, "hi", reply_to_message_id=77, allow_sending_without_reply=True
    )
    assert msg.reply_to_message is None
    fake.push_message(3, 3, "question")
    question_id = fake.pending_updates[-1]["message"]["message_id"]
    answer = await app.bot.send_message(3, "answer", reply_to_message_id=question_id)
    assert answer.reply_to_message is not None
    assert answer.reply_to_message.text == "question"


# ------------------------------------------------------------------ faults / unknown methods


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_429_surfaces_as_retry_after(fake: FakeTelegramAPI, app: Application) -> None:
    fake.fail_next("sendMessage", 429, retry_after=3)
    with pytest.raises(RetryAfter) as err:
        await app.bot.send_message(1, "hi")
    retry_after = err.value.retry_after  # int, or timedelta with PTB_TIMEDELTA=1
    seconds = retry_after.total_seconds() if isinstance(retry_after, dtm.timedelta) else retry_after
    assert seconds == 3
    # only the next call fails
    await app.bot.send_message(1, "hi")
    assert fake.sent_texts(1) == ["hi"]
    assert len(fake.calls_to("sendMessage")) == 2


async def test_other_faults(fake: FakeTelegramAPI, app: Application) -> None:
    fake.fail_next("sendMessage", 403)
    fake.fail_next("sendChatAction", 400, "Bad Request: chat not found", times=2)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await app.bot.send_message(1, "hi")
    for _ in range(2):
        with pytest.raises(BadRequest, match="Chat not found"):
            await app.bot.send_chat_action(1, ChatAction.TYPING)
    assert await app.bot.send_chat_action(1, ChatAction.TYPING)


async def test_polling_survives_get_updates_fault(
    fake: FakeTelegramAPI, polling_app: Application
) -> None:
    fake.fail_next("getUpdates", 502)
    fake.push_message(9, 9, "after fault")
    await fake.wait_for_sent(9)
    assert fake.sent_texts(9) == ["echo: after fault"]


async def test_unknown_method(fake: FakeTelegramAPI, app: Application) -> None:
    status, body = await _raw_call(fake, "sendTelepathy", chat_id=1)
    assert status == 404
    assert body == {
        "ok": False,
        "error_code": 404,
        "description": "Not Found: method sendTelepathy",
    }
    with pytest.raises(EndPointNotFound):
        await app.bot.do_api_request("fooBar", api_kwargs={"x": 1})
    assert fake.unknown_methods == ["sendTelepathy", "fooBar"]
    assert ("fooBar", {"x": 1}) in fake.calls


async def test_wrong_token_is_unauthorized() -> None:
    from telegram.error import InvalidToken

    async with FakeTelegramAPI(token="999:OTHER-TOKEN") as fake:
        with pytest.raises(InvalidToken):
            async with build_app(fake):
                pass


async def test_wait_for_timeout_lists_calls(fake: FakeTelegramAPI, app: Application) -> None:
    await app.bot.send_message(1, "something")
    with pytest.raises(AssertionError, match=r"(?s)timed out.*sendMessage"):
        await fake.wait_for(lambda: False, timeout=0.2)


# ------------------------------------------------------------------ webhook mode


async def test_webhook_mode(fake: FakeTelegramAPI) -> None:
    port = _free_port()
    application = build_app(fake)
    async with application:
        await application.start()
        assert application.updater is not None
        await application.updater.start_webhook(
            listen="127.0.0.1",
            port=port,
            url_path="tg-hook",
            webhook_url=f"http://127.0.0.1:{port}/tg-hook",
            secret_token="s3cret-token",
        )
        try:
            assert fake.webhook_url == f"http://127.0.0.1:{port}/tg-hook"
            info = await application.bot.get_webhook_info()
            assert info.url == fake.webhook_url
            # getUpdates conflicts while a webhook is set
            status, _ = await _raw_call(fake, "getUpdates")
            assert status == 409

            update = fake.make_message_update(77, 77, "via webhook")
            assert await fake.deliver_webhook(update) == 200
            sent = await fake.wait_for_sent(77)
            assert sent[0]["text"] == "echo: via webhook"

            bad = fake.make_message_update(77, 77, "forged")
            assert await fake.deliver_webhook(bad, secret_token="wrong") == 403
            await asyncio.sleep(0.1)
            assert fake.sent_texts(77) == ["echo: via webhook"]
        finally:
            started = time.monotonic()
            await application.updater.stop()
            await application.stop()
            assert time.monotonic() - started < 3
    assert [s for _, s in fake.webhook_deliveries] == [200, 403]
