"""The adapter contract for the users' own controls (issue 11): every persona command on
every platform.

``/persona`` and its paged history, ``/undo``, ``/correct``, ``/learning``, ``/usage``, the
privacy notice and the daily token budget, driven through each platform's real adapter on a
real core and checked both in what the users see and, through the core's API, in what is
stored. Persona commands answer privately, in a group too, and never touch (or show) another
person's data.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from aipersona.adapters.kit import texts
from aipersona.core import Edit, HistoryEntry, Persona
from tests.fakes.openai_server import last_user_text, updates

from .discord_driver import slash_options
from .driver import GROUPS, RATE_LIMIT, Driver

pytestmark = pytest.mark.timeout(60)

CAREER = "Demographics.Career_Information"
AGE = "Demographics.Age"
INTERESTS = "Personality.Values_and_Interests"  # a list field
NURSE = Edit(CAREER, "set", "nurse")
PILOT = Edit(CAREER, "set", "airline pilot")
NOTICE = "NOTICE-TEXT: I learn about you from our chats; /forget deletes it."
ENTRY = re.compile(r"(?m)^#(\d+) ")  # the first line of a history entry
WHEN = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC")


# -- helpers --------------------------------------------------------------------------------


@asynccontextmanager
async def serving(driver: Driver, **settings: Any) -> AsyncIterator[None]:
    """The adapter running without the per-user rate limit (the scenarios give many
    commands in a row; the terminal has none) and, on Telegram, without the group flood
    control (5 messages into a group at once, then one every 4 s: a scenario's dozen
    "sent privately" pointers would take most of a minute)."""
    if RATE_LIMIT not in driver.lacks:
        settings.setdefault("rate_limit_per_minute", 0)
    if driver.name == "telegram":
        settings.setdefault("flood_group_messages", 0)
    async with driver.running(**settings):
        yield


async def privately(driver: Driver, user: str, name: str, arg: str = "", **kw: bool) -> str:
    """Give a command and return its answer, which must reach ``user`` privately (a chat
    others see gets at most the "sent privately" notice)."""
    before = len(driver.private(user))
    await driver.command(user, name, arg, **kw)
    return (await driver.wait(lambda: driver.private(user)[before:]))[0]


async def three_sessions(driver: Driver, user: str = "alice") -> None:
    """Three chats, each ended by /end (a persona update is due after three), then the
    update (if any) finished."""
    for i in range(3):
        said = f"session {i}: I am a nurse and I love football"
        assert await driver.ask(user, said) == f"echo: {said}"
        assert await driver.run(user, "end") == texts.SESSION_ENDED
    await driver.core.wait_for_updates()


async def persona_of(driver: Driver, user: str) -> Persona:
    persona = await driver.core.persona(driver.identity(user))
    assert persona is not None
    return persona


async def history_ids(driver: Driver, user: str, field: str | None = None) -> list[int]:
    entries = await driver.core.history(driver.identity(user), field, limit=1000)
    return [e.id for e in entries]


def shown_ids(text: str) -> list[int]:
    return [int(i) for i in ENTRY.findall(text)]


def when(entry: HistoryEntry) -> str:
    return datetime.fromtimestamp(entry.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def sentence_around(template: str, shown: str, *parts: str) -> None:
    """``shown`` is ``template`` (one ``{placeholder}``) filled in, and mentions ``parts``."""
    before, _, after = re.split(r"(\{\w+(?:![rs])?\})", template, maxsplit=1)
    assert shown.startswith(before) and shown.endswith(after), shown
    for part in parts:
        assert part in shown, (part, shown)


# -- the Discord driver fills in slash options as users do ------------------------------------


@pytest.mark.parametrize(
    ("name", "line", "options"),
    [
        ("persona", "", None),
        ("persona", "history", {"show": "history"}),
        ("persona", "history 2", {"show": "history", "page": "2"}),
        (
            "persona",
            "history Demographics.Age 2",
            {"show": "history", "field": "Demographics.Age", "page": "2"},
        ),
        ("persona", "history Foo.Bar", {"show": "history", "field": "Foo.Bar"}),
        ("correct", "Personality.Values_and_Interests chess, go", None),
        ("correct", "Demographics.Age", {"field": "Demographics.Age"}),
        ("undo", "", None),
        ("undo", "#5", {"version": "#5"}),
        ("undo", "12", {"version": "12"}),
        ("learning", "off", {"state": "off"}),
        ("usage", "", None),
        ("forget", "all", {"field": "all"}),
    ],
)
def test_slash_options_take_every_commands_arguments(
    name: str, line: str, options: dict[str, str] | None
) -> None:
    if name == "correct" and options is None:
        options = {"field": INTERESTS, "value": "chess, go"}
    assert slash_options(name, line) == options


# -- /persona and its history ---------------------------------------------------------------


async def test_persona_history_shows_who_changed_what_when_and_why(driver: Driver) -> None:
    alice = driver.identity("alice")
    driver.llm.push("json", updates((CAREER, "set", "nurse", "I am a nurse")))
    async with serving(driver):
        assert await privately(driver, "alice", "persona", "history") == texts.HISTORY_EMPTY
        await three_sessions(driver)
        assert (await persona_of(driver, "alice")).values == {CAREER: "nurse"}
        learned = await privately(driver, "alice", "persona", "history")
        assert "set by you" not in learned and "by you" not in learned
        corrected = await privately(driver, "alice", "correct", f"{CAREER} head nurse")
        assert corrected == texts.corrected(CAREER, "head nurse")
        shown = await privately(driver, "alice", "persona", "history")
    newest, oldest = await driver.core.history(alice)
    assert (newest.source, oldest.source) == ("user", "optimizer")
    assert learned.startswith(texts.HISTORY_HEADING)
    assert shown_ids(learned) == [oldest.id]
    assert shown.startswith(texts.HISTORY_HEADING)
    assert shown_ids(shown) == [newest.id, oldest.id]  # newest first
    first, second = shown.split(f"#{oldest.id} ")
    assert f"#{newest.id} {CAREER}: nurse → head nurse" in first
    assert f"by you, {when(newest)}; set by you; I won't overwrite it" in first
    assert f"{CAREER}: {texts.HISTORY_NO_VALUE} → nurse" in second
    assert f"by optimizer, {when(oldest)}" in second and "set by you" not in second
    assert "“I am a nurse”" in second
    assert len(WHEN.findall(shown)) == 2
    if driver.message_limit:
        assert len(shown) <= driver.message_limit


async def test_persona_history_pages_fit_and_cover_every_change_once(driver: Driver) -> None:
    alice = driver.identity("alice")
    core = driver.core
    # mostly long evidence: a page is cut by the platform's message limit (not only by
    # its 10 entries) where messages are short
    because = "the user said so in a long message, " * 8
    for i in range(32):
        if i % 5 == 4:
            await core.correct(alice, "Demographics.Name", f"Name {i}")
            continue
        field, value = (CAREER, f"job number {i}") if i % 2 else (AGE, 20 + i)
        evidence = f"said #{i}" if i % 4 == 0 else f"{because}#{i}"
        _, rejected = await core.edit_persona(
            alice, [Edit(field, "set", value, evidence)], source="optimizer"
        )
        assert rejected == []
    expected = await history_ids(driver, "alice")
    assert len(expected) == 32
    pages: list[str] = []
    async with serving(driver):
        while True:
            page = len(pages) + 1
            arg = "history" if page == 1 else f"history {page}"
            text = await privately(driver, "alice", "persona", arg)
            pages.append(text)
            more = texts.history_footer(page, None, more=True)
            if not text.endswith(more):
                # the last page: its footer ends the one message the page is
                assert page == 1 or text.endswith(texts.history_footer(page, None, False))
                break
            assert page < 40, "the pages never end"
        # one message per page: no page was split by the platform
        await driver.settle()
        assert driver.private("alice") == pages
    assert len(pages) >= 3
    assert pages[1] != pages[0] and shown_ids(pages[1])[0] < shown_ids(pages[0])[-1]
    collected = [i for text in pages for i in shown_ids(text)]
    assert collected == expected  # newest first, none lost, none repeated
    for text in pages:
        assert text.startswith(texts.HISTORY_HEADING)
        assert 1 <= len(shown_ids(text)) <= 10
        if driver.message_limit:
            assert len(text) <= driver.message_limit


async def test_persona_history_of_one_field_and_its_bad_input(driver: Driver) -> None:
    alice = driver.identity("alice")
    core = driver.core
    async with serving(driver):
        empty = await privately(driver, "alice", "persona", f"history {AGE}")
        assert empty == texts.history_empty(AGE)
        for edit in (NURSE, Edit(AGE, "set", 30), PILOT, Edit(AGE, "set", 31)):
            await core.edit_persona(alice, [edit])
        ages = await history_ids(driver, "alice", AGE)
        assert len(ages) == 2
        shown = await privately(driver, "alice", "persona", f"history {AGE}")
        assert shown.startswith(texts.history_heading(AGE))
        assert shown_ids(shown) == ages and CAREER not in shown
        assert f"#{ages[0]} {AGE}: 30 → 31" in shown
        # a field by its short name, in any case
        assert await privately(driver, "alice", "persona", "history age") == shown
        unknown = await privately(driver, "alice", "persona", "history Foo.Bar")
        sentence_around(texts.HISTORY_BAD_FIELD, unknown, "Foo.Bar")
        no_page = {
            "history 0": texts.history_no_page(0),
            "history 9": texts.history_no_page(9),
            f"history {AGE} 2": texts.history_no_page(2),
            "history 99999999999999999999999": texts.history_no_page("99999999999999999999999"),
            "history 999999999999999999": texts.history_no_page(999999999999999999),
            f"history {AGE} {CAREER}": texts.PERSONA_USAGE,
        }
        for arg, expected in no_page.items():
            assert await privately(driver, "alice", "persona", arg) == expected, arg
        # the persona itself, with every field's current value
        persona = await privately(driver, "alice", "persona")
    assert persona == texts.persona_text([(AGE, "31"), (CAREER, "airline pilot")])


# -- /undo ----------------------------------------------------------------------------------


async def test_undo_reverts_the_newest_or_a_given_change_and_undoes_itself(
    driver: Driver,
) -> None:
    alice = driver.identity("alice")
    core = driver.core
    async with serving(driver):
        assert await privately(driver, "alice", "undo") == texts.UNDO_NOTHING
        await core.edit_persona(alice, [NURSE])
        await core.edit_persona(alice, [PILOT])
        await core.edit_persona(alice, [Edit(AGE, "set", 31)])
        nurse_to_pilot = (await history_ids(driver, "alice", CAREER))[0]

        assert await privately(driver, "alice", "undo") == texts.undone(AGE, None)
        assert AGE not in (await persona_of(driver, "alice")).values
        # the revert is a version of its own: undoing it restores the value
        assert await privately(driver, "alice", "undo") == texts.undone(AGE, 31)
        assert (await persona_of(driver, "alice")).values[AGE] == 31
        [redo, revert, *_] = await core.history(alice)
        assert (redo.source, redo.new_value, revert.new_value) == ("user", 31, None)

        done = await privately(driver, "alice", "undo", f"#{nurse_to_pilot}")
        assert done == texts.undone(CAREER, "nurse")
        assert (await persona_of(driver, "alice")).values == {CAREER: "nurse", AGE: 31}
        again = await privately(driver, "alice", "undo", str(nurse_to_pilot))
        assert again == texts.undone(CAREER, "nurse") or again == texts.UNDO_NOTHING
        assert (await persona_of(driver, "alice")).values[CAREER] == "nurse"

        for bad in ("abc", "#", "1.5", "-3", "#x2"):
            assert await privately(driver, "alice", "undo", bad) == texts.undo_bad_version(bad)
        for unknown in (987654, 99999999999999999):
            shown = await privately(driver, "alice", "undo", f"#{unknown}")
            assert shown == texts.undo_unknown(unknown)
        shown = await privately(driver, "alice", "undo", "9" * 30)
        assert shown in (texts.undo_bad_version("9" * 30), texts.undo_unknown("9" * 30))
    assert (await persona_of(driver, "alice")).values == {CAREER: "nurse", AGE: 31}


# -- /correct -------------------------------------------------------------------------------


async def test_correct_sets_the_users_value_which_learning_leaves_alone(driver: Driver) -> None:
    alice = driver.identity("alice")
    driver.llm.push(
        "json",
        updates(
            (INTERESTS, "set", ["football"], "I love football"),
            (INTERESTS, "append", "football", "I love football"),
            (CAREER, "set", "nurse", "I am a nurse"),
        ),
    )
    async with serving(driver):
        done = await privately(driver, "alice", "correct", f"{INTERESTS} chess, go")
        assert done == texts.corrected(INTERESTS, ["chess", "go"])
        persona = await persona_of(driver, "alice")
        assert persona.values == {INTERESTS: ["chess", "go"]} and persona.set_by_user(INTERESTS)

        await three_sessions(driver)
        assert len(driver.llm.json_requests()) == 1
        persona = await persona_of(driver, "alice")
        assert persona.values == {INTERESTS: ["chess", "go"], CAREER: "nurse"}
        assert persona.set_by_user(INTERESTS) and not persona.set_by_user(CAREER)

        history = await privately(driver, "alice", "persona", f"history {INTERESTS}")
        [entry] = await driver.core.history(alice, INTERESTS)
        assert shown_ids(history) == [entry.id]
        assert f"{INTERESTS}: {texts.HISTORY_NO_VALUE} → chess, go" in history
        assert f"by you, {when(entry)}; set by you; I won't overwrite it" in history

        same = await privately(driver, "alice", "correct", f"{INTERESTS} chess, go")
        assert same == texts.correct_same(INTERESTS, ["chess", "go"])
        for arg in ("", INTERESTS, f"  {AGE}  "):
            assert await privately(driver, "alice", "correct", arg) == texts.CORRECT_USAGE
        unknown = await privately(driver, "alice", "correct", "Foo.Bar 3")
        sentence_around(texts.CORRECT_BAD, unknown, "Foo.Bar")
        bad = await privately(driver, "alice", "correct", f"{AGE} very old")
        sentence_around(texts.CORRECT_BAD, bad, AGE)
    data = await driver.core.export(alice)
    assert data is not None
    notes = " ".join(str(u["notes"]) for u in data["persona_updates"])
    assert f"{INTERESTS}: set by the user" in notes
    assert (await persona_of(driver, "alice")).values == {
        INTERESTS: ["chess", "go"],
        CAREER: "nurse",
    }


# -- /learning ------------------------------------------------------------------------------


async def test_learning_off_means_no_optimizer_call_while_chat_goes_on(driver: Driver) -> None:
    alice = driver.identity("alice")
    async with serving(driver):
        assert await privately(driver, "alice", "learning") == texts.learning_status(True)
        # learned (a value the user set would be left alone by learning anyway)
        await driver.core.edit_persona(alice, [NURSE], source="optimizer")
        assert await privately(driver, "alice", "learning", "off") == texts.learning_switched(
            False, True
        )
        assert await privately(driver, "alice", "learning", "off") == texts.learning_switched(
            False, False
        )
        assert await privately(driver, "alice", "learning") == texts.learning_status(False)
        assert await privately(driver, "alice", "learning", "maybe") == texts.LEARNING_USAGE
        shown = await privately(driver, "alice", "persona")
        assert f"{CAREER}: nurse" in shown and texts.PERSONA_LEARNING_OFF in shown

        driver.llm.push("json", updates((CAREER, "set", "pilot", "I fly planes")))
        await three_sessions(driver)
        assert driver.llm.json_requests() == []
        assert len(driver.llm.chat_requests()) == 3  # every message was answered
        assert (await persona_of(driver, "alice")).values == {CAREER: "nurse"}

        assert await privately(driver, "alice", "learning", "on") == texts.learning_switched(
            True, True
        )
        assert await privately(driver, "alice", "learning") == texts.learning_status(True)
        shown = await privately(driver, "alice", "persona")
        assert f"{CAREER}: nurse" in shown and texts.PERSONA_LEARNING_OFF not in shown
        await three_sessions(driver)
    assert len(driver.llm.json_requests()) == 1
    assert (await persona_of(driver, "alice")).values == {CAREER: "pilot"}


# -- /usage and the budget ------------------------------------------------------------------


@pytest.mark.parametrize(
    "core_settings",
    [
        {"privacy": {"notice": ""}},
        {
            "privacy": {"notice": ""},
            "limits": {"tokens_per_user_per_day": 100_000, "tokens_per_chat_per_day": 200_000},
        },
    ],
    ids=["unlimited", "limited"],
)
async def test_usage_shows_the_tokens_of_the_chats(
    driver: Driver, core_settings: dict[str, dict[str, Any]]
) -> None:
    alice = driver.identity("alice")
    limits = core_settings.get("limits", {})
    user_limit = limits.get("tokens_per_user_per_day", 0)
    async with serving(driver):
        before = await privately(driver, "alice", "usage")
        assert await driver.ask("alice", "how many tokens was that?") == (
            "echo: how many tokens was that?"
        )
        after = await privately(driver, "alice", "usage")
    used = await driver.core.usage(alice, "any chat")
    assert used.today > 0 and used.month == used.today
    if user_limit:
        assert texts.USAGE_TODAY.format(used=0, limit=user_limit) in before
        assert texts.USAGE_TODAY.format(used=used.today, limit=user_limit) in after
        # the private chat's tokens today are the person's
        assert texts.USAGE_CHAT.format(used=used.today, limit=200_000) in after
    else:
        assert before == texts.usage_text(0, 0, 0, 0, 0)
        assert after == texts.usage_text(used.today, used.month, 0, 0, 0)
    assert texts.USAGE_MONTH.format(used=used.month) in after


BUDGET = "BUDGET-SPENT: see you tomorrow."


@pytest.mark.parametrize(
    "core_settings",
    [
        {
            "privacy": {"notice": ""},
            "limits": {"tokens_per_user_per_day": 5, "budget_message": BUDGET},
        }
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["posted", "streamed"])
async def test_a_spent_budget_is_told_as_is_without_calling_the_model(
    driver: Driver, stream: bool
) -> None:
    alice = driver.identity("alice")
    settings: dict[str, Any] = {}
    if stream:
        settings = {"stream_edits": True, "stream_edit_interval": driver.stream_interval}

    async def say(text: str, expected: str, user: str = "alice") -> None:
        before = driver.private(user)
        await driver.send(user, text)
        await driver.wait(lambda: driver.private(user) == [*before, expected])

    async with serving(driver, **settings):
        await say("first one", "echo: first one")
        assert (await driver.core.usage(alice, "")).today >= 5
        await say("second one", BUDGET)
        await say("third one", BUDGET)
        shown = await privately(driver, "alice", "usage")
        if GROUPS not in driver.lacks:  # bob has a budget of his own
            await say("bob here", "echo: bob here", "bob")
    assert [last_user_text(r) for r in driver.llm.chat_requests()][:1] == ["first one"]
    assert len(driver.llm.chat_requests()) == (1 if GROUPS in driver.lacks else 2)
    assert "of 5" in shown
    data = await driver.core.export(alice)
    assert data is not None  # the messages are kept, unanswered
    said = [m["content"] for m in data["messages"] if m["role"] == "user"]
    assert said == ["first one", "second one", "third one"]


@pytest.mark.parametrize(
    "core_settings",
    [
        {
            "privacy": {"notice": ""},
            "limits": {"tokens_per_chat_per_day": 5, "budget_message": BUDGET},
        }
    ],
)
async def test_a_spent_chat_budget_is_the_whole_groups(driver: Driver) -> None:
    driver.need(GROUPS)
    async with serving(driver):
        assert await driver.ask("alice", "hi all", group=True) == "echo: hi all"
        assert await driver.ask("bob", "and me?", group=True) == BUDGET
        assert await driver.ask("bob", "privately?") == "echo: privately?"
    assert [last_user_text(r) for r in driver.llm.chat_requests()] == ["hi all", "privately?"]


# -- the privacy notice ---------------------------------------------------------------------


@pytest.mark.parametrize("core_settings", [{"privacy": {"notice": NOTICE}}])
async def test_privacy_notice_comes_once_after_the_first_reply(driver: Driver) -> None:
    async with serving(driver):
        await driver.send("alice", "hello")
        await driver.wait(lambda: len(driver.private("alice")) >= 2)
        assert await driver.ask("alice", "hello again") == "echo: hello again"
        await driver.run("alice", "end")
        assert await driver.ask("alice", "a new session") == "echo: a new session"
        await driver.settle()
    assert driver.private("alice") == [
        "echo: hello",
        NOTICE,
        "echo: hello again",
        texts.SESSION_ENDED,
        "echo: a new session",
    ]
    assert driver.public() == []


@pytest.mark.parametrize("core_settings", [{"privacy": {"notice": NOTICE}}])
async def test_privacy_notice_of_a_group_message_goes_to_the_speaker_only(
    driver: Driver,
) -> None:
    driver.need(GROUPS)
    await driver.core.edit_persona(driver.identity("alice"), [NURSE])
    async with serving(driver):
        assert await driver.ask("alice", "hi, alice here", group=True) == "echo: hi, alice here"
        await driver.wait(lambda: driver.private("alice"))
        assert await driver.ask("bob", "hey, bob here", group=True) == "echo: hey, bob here"
        await driver.wait(lambda: driver.private("bob"))
        assert await driver.ask("alice", "me again", group=True) == "echo: me again"
        # bob's first private message: he has had his notice already
        assert await driver.ask("bob", "just us") == "echo: just us"
        await driver.settle()
    assert driver.public() == ["echo: hi, alice here", "echo: hey, bob here", "echo: me again"]
    assert driver.private("alice") == [NOTICE]
    assert driver.private("bob") == [NOTICE, "echo: just us"]


# -- groups: each person's commands act on their own data only ------------------------------


async def test_commands_in_a_group_touch_and_show_only_the_speakers_data(
    driver: Driver,
) -> None:
    driver.need(GROUPS)
    core = driver.core
    alice, bob = driver.identity("alice"), driver.identity("bob")
    await core.edit_persona(alice, [NURSE])
    await core.edit_persona(alice, [Edit(AGE, "set", 30, "I turned thirty")])
    await core.edit_persona(bob, [PILOT])  # the newest version of all is bob's
    bob_before = await core.history(bob)
    [bob_version] = [e.id for e in bob_before]

    async def ask(name: str, arg: str = "") -> str:
        return await privately(driver, "alice", name, arg, group=True)

    async with serving(driver):
        assert await driver.ask("bob", "bob's own chat", group=True) == "echo: bob's own chat"
        shown = await ask("persona")
        assert f"{CAREER}: nurse" in shown and "pilot" not in shown
        shown = await ask("persona", "history")
        assert shown_ids(shown) == await history_ids(driver, "alice")
        assert bob_version not in shown_ids(shown) and "pilot" not in shown
        assert await ask("undo") == texts.undone(AGE, None)  # hers, not bob's newer one
        assert await ask("undo", f"#{bob_version}") == texts.undo_unknown(bob_version)
        assert await ask("correct", f"{AGE} 31") == texts.corrected(AGE, 31)
        assert await ask("learning", "off") == texts.learning_switched(False, True)
        assert await ask("learning") == texts.learning_status(False)
        shown = await ask("usage")
        assert shown.startswith(texts.USAGE_HEADING)
        assert await ask("forget", CAREER) == texts.forgot_field(CAREER, True)
        assert (await persona_of(driver, "alice")).values == {AGE: 31}
        assert await ask("forget", "all") == texts.forgot_all(True)
        await driver.settle()
    assert await core.persona(alice) is None
    kept = await persona_of(driver, "bob")
    assert kept.values == {CAREER: "airline pilot"} and kept.learning
    assert await core.history(bob) == bob_before
    assert driver.private("bob") == []
    public = driver.public()
    assert public[0] == "echo: bob's own chat"
    assert set(public[1:]) <= {texts.SENT_PRIVATELY}  # nothing of alice's, only pointers
    for secret in ("nurse", "Demographics", "31", "Learning", "tokens"):
        assert not any(secret in t for t in public), secret
