"""Issue 11 end to end, through the core and the real openai client against the loopback fake:
encryption at rest (raw database bytes scanned for a marker), keys rotation and sealing of
old plaintext, retention with an injected clock, budgets from the fake's reported usage,
the learning switch, corrections the optimizer may not overwrite, and the notice."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from aipersona.core import (
    ConfigError,
    Edit,
    FieldValidationError,
    Identity,
    PersonaCore,
    PersonaNotFound,
    StorageError,
)
from aipersona.core.config import DEFAULT_NOTICE
from tests.conftest import make_config, run_cli
from tests.fakes.openai_server import FakeOpenAI, Tools, updates

pytestmark = pytest.mark.timeout(60)

ALICE = Identity("cli", "alice")
BOB = Identity("cli", "bob")
MARK = "quokka-marker-5521"
KEY_ENV = "AIPERSONA_TEST_MASTER_KEY"
NEW_KEY_ENV = "AIPERSONA_TEST_NEW_MASTER_KEY"
KEY = base64.b64encode(bytes(range(32))).decode()
NEW_KEY = base64.b64encode(bytes(range(50, 82))).decode()
DAY = 86_400
JOB = "Demographics.Career_Information"
AGE = "Demographics.Age"


def files_with(db_path: Path, marker: str = MARK) -> list[str]:
    """The database files (main, WAL, shared memory) whose raw bytes hold ``marker``."""
    found = []
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = Path(str(db_path) + suffix)
        if path.exists() and marker.encode() in path.read_bytes():
            found.append(path.name)
    return found


def digest(db_path: Path) -> str:
    return hashlib.sha256(db_path.read_bytes()).hexdigest()


async def session(core: PersonaCore, ident: Identity, text: str, chat: str = "c") -> None:
    await core.respond(ident, chat, text)
    await core.end_session(ident, chat)
    await core.wait_for_updates()


def encrypted(db_path: Path, base_url: str, **overrides: Any) -> Any:
    return make_config(db_path, base_url, privacy={"encryption_key_env": KEY_ENV}, **overrides)


@pytest.fixture
def master_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


# -- encryption at rest -------------------------------------------------------------------------


async def test_with_encryption_no_value_or_message_is_in_the_database_files(
    fake_llm: FakeOpenAI, db_path: Path, master_key: str
) -> None:
    cfg = encrypted(db_path, fake_llm.base_url, persona={"update_every": 1})
    fake_llm.push("json", updates((JOB, "set", f"{MARK} keeper", f"I keep {MARK}s")))
    fake_llm.push("chat", Tools([("persona", {"op": "set", "field": AGE, "value": 33})]))
    async with PersonaCore(cfg) as core:
        reply = await core.respond(ALICE, "c", f"I keep {MARK}s and I am 33")
        assert reply.ok
        await core.end_session(ALICE, "c")
        await core.wait_for_updates()
        await core.respond(ALICE, "c", f"still about {MARK}")  # an open session, too
        persona = await core.persona(ALICE)
        assert persona is not None and persona.values[JOB] == f"{MARK} keeper"
        assert persona.values[AGE] == 33
        assert files_with(db_path) == []  # while running: WAL and shared memory included
        data = await core.export(ALICE)
        assert data is not None and data["encryption"]["on"] is True
        assert f"still about {MARK}" in [m["content"] for m in data["messages"]]
        assert data["history"][-1]["evidence"] == f"I keep {MARK}s"
    assert files_with(db_path) == []
    # and the prompt still had the persona in clear: encryption is at rest only
    assert MARK in json.dumps(fake_llm.chat_requests()[-1])


async def test_wrong_or_missing_key_gives_a_clear_error_and_changes_nothing(
    fake_llm: FakeOpenAI, db_path: Path, master_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = encrypted(db_path, fake_llm.base_url)
    async with PersonaCore(cfg) as core:
        await core.respond(ALICE, "c", f"hello {MARK}")
    before = digest(db_path)

    monkeypatch.setenv(KEY_ENV, NEW_KEY)  # another key
    with pytest.raises(StorageError, match="another key"):
        await PersonaCore(cfg).start()
    monkeypatch.setenv(KEY_ENV, "")  # the variable is empty
    with pytest.raises(ConfigError, match=KEY_ENV):
        await PersonaCore(cfg).start()
    monkeypatch.setenv(KEY_ENV, base64.b64encode(b"short").decode())
    with pytest.raises(ConfigError, match="not 32"):
        await PersonaCore(cfg).start()
    plain = make_config(db_path, fake_llm.base_url)  # encryption off in the config
    with pytest.raises(StorageError, match="is encrypted"):
        await PersonaCore(plain).start()
    code, _out, err = run_cli("persona", "show", "--database", str(db_path), "-p", "cli", "-u", "x")
    assert code == 2 and "is encrypted" in err and "Traceback" not in err
    assert digest(db_path) == before
    assert KEY not in err and NEW_KEY not in err


async def test_keys_rotate_rewraps_under_the_new_key_and_retires_the_old(
    fake_llm: FakeOpenAI, db_path: Path, tmp_path: Path, master_key: str
) -> None:
    cfg_file = tmp_path / "bot.toml"
    cfg_file.write_text(
        f'[database]\npath = "{db_path}"\n[privacy]\nencryption_key_env = "{KEY_ENV}"\n'
        f'[llm]\nbase_url = "{fake_llm.base_url}"\nmodel = "fake-model"\n'
    )
    cfg = encrypted(db_path, fake_llm.base_url)
    async with PersonaCore(cfg) as core:
        for who in (ALICE, BOB):
            await core.respond(who, "c", f"{who.user_id} says {MARK}")
    env = {KEY_ENV: KEY, NEW_KEY_ENV: NEW_KEY}
    code, out, err = run_cli(
        "keys", "rotate", "-c", str(cfg_file), "--new-key-env", NEW_KEY_ENV, env=env
    )
    assert code == 0, err
    assert "re-wrapped 2 data key(s)" in out and KEY not in out + err and NEW_KEY not in out + err

    code, _, err = run_cli(
        "persona", "export", "-c", str(cfg_file), "-p", "cli", "-u", "bob", env=env
    )
    assert code == 2 and "another key" in err  # the old key no longer opens it
    env = {KEY_ENV: NEW_KEY}
    code, out, err = run_cli(
        "persona", "export", "-c", str(cfg_file), "-p", "cli", "-u", "bob", env=env
    )
    assert code == 0, err
    assert json.loads(out)["messages"][0]["content"] == f"bob says {MARK}"
    assert files_with(db_path) == []

    code, _, err = run_cli(
        "keys", "rotate", "-c", str(cfg_file), "--new-key-env", "NOPE_UNSET", env=env
    )
    assert code == 2 and "NOPE_UNSET" in err


async def test_keys_encrypt_seals_what_was_stored_before_encryption(
    fake_llm: FakeOpenAI, db_path: Path, tmp_path: Path
) -> None:
    plain = make_config(db_path, fake_llm.base_url)
    async with PersonaCore(plain) as core:
        await core.respond(ALICE, "c", f"plain {MARK}")
        await core.edit_persona(ALICE, [Edit(JOB, "set", f"{MARK} tamer", f"said {MARK}")])
    assert files_with(db_path) != []
    cfg_file = tmp_path / "bot.toml"
    cfg_file.write_text(
        f'[database]\npath = "{db_path}"\n[privacy]\nencryption_key_env = "{KEY_ENV}"\n'
    )
    code, out, err = run_cli("keys", "encrypt", "-c", str(cfg_file), env={KEY_ENV: KEY})
    assert code == 0, err
    assert "encrypted 5 text(s)" in out  # 2 messages, the value, a version's new value + evidence
    assert files_with(db_path) == []  # secure_delete and a truncated WAL: nothing left behind
    code, out, err = run_cli(
        "persona", "export", "-c", str(cfg_file), "-p", "cli", "-u", "alice", env={KEY_ENV: KEY}
    )
    assert code == 0, err
    assert json.loads(out)["persona"]["Demographics"]["Career_Information"] == f"{MARK} tamer"
    code, out, err = run_cli("keys", "generate")
    assert code == 0 and len(base64.b64decode(out.strip())) == 32


async def test_forget_all_destroys_the_data_key(
    fake_llm: FakeOpenAI, db_path: Path, master_key: str
) -> None:
    cfg = encrypted(db_path, fake_llm.base_url)
    async with PersonaCore(cfg) as core:
        await core.respond(ALICE, "c", f"hi {MARK}")
        data = await core.export(ALICE)
        assert data is not None and data["encryption"]["on"]
        assert await core.forget_all(ALICE)
        assert await core.export(ALICE) is None
        rows = await core.storage.read_rows("persona_keys", ["persona_id"], None, 10)
        assert rows == []


# -- retention ----------------------------------------------------------------------------------


async def test_texts_are_deleted_the_configured_days_after_the_update_that_learned_them(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    cfg = make_config(
        db_path, fake_llm.base_url, persona={"update_every": 2}, privacy={"keep_messages_days": 90}
    )
    async with PersonaCore(cfg) as core:
        await session(core, ALICE, f"first {MARK}")
        await session(core, ALICE, f"second {MARK}")  # k = 2: learned now
        await session(core, ALICE, "third, not learned yet")
        await core.respond(ALICE, "c", "the open session")
        now = time.time()
        assert await core.purge_expired_messages(now + 89 * DAY) == 0
        assert files_with(db_path) != []
        assert await core.purge_expired_messages(now + 91 * DAY) == 4  # 2 sessions x 2
        assert files_with(db_path) == []  # overwritten, and the WAL truncated
        data = await core.export(ALICE)
        assert data is not None
        users = [m["content"] for m in data["messages"] if m["role"] == "user"]
        assert users == ["third, not learned yet", "the open session"]


async def test_zero_days_means_right_after_the_update(fake_llm: FakeOpenAI, database: Any) -> None:
    cfg = make_config(
        database, fake_llm.base_url, persona={"update_every": 1}, privacy={"keep_messages_days": 0}
    )
    fake_llm.push("json", updates((JOB, "set", "nurse", "I am a nurse")))
    async with PersonaCore(cfg) as core:
        await session(core, ALICE, "I am a nurse")
        await core.respond(ALICE, "c", "next session, still open")
        data = await core.export(ALICE)
        assert data is not None and data["persona"]["Demographics"]["Career_Information"] == "nurse"
        assert [m["content"] for m in data["messages"]] == [
            "next session, still open",
            "echo: next session, still open",
        ]


# -- budgets ------------------------------------------------------------------------------------


async def test_spent_user_budget_answers_politely_without_calling_the_model(
    fake_llm: FakeOpenAI, database: Any
) -> None:
    cfg = make_config(database, fake_llm.base_url, limits={"tokens_per_user_per_day": 30})
    async with PersonaCore(cfg) as core:
        first = await core.respond(ALICE, "c", "hello")
        assert first.ok and first.prompt_tokens > 30  # the fake reports chars / 4
        calls = len(fake_llm.chat_requests())
        second = await core.respond(ALICE, "c", "are you there?")
        assert (second.ok, second.error) == (False, "budget")
        assert second.text == cfg.limits.budget_message
        assert len(fake_llm.chat_requests()) == calls  # no model call
        other = await core.respond(BOB, "c2", "hi")  # another user has their own budget
        assert other.ok
        data = await core.export(ALICE)
        assert data is not None
        assert [m["content"] for m in data["messages"] if m["role"] == "user"] == [
            "hello",
            "are you there?",
        ]
        used = await core.usage(ALICE, "c")
        assert used.today == first.prompt_tokens + first.completion_tokens
        assert used.month == used.today and used.user_limit == 30


async def test_spent_chat_budget_stops_everyone_in_that_chat_only(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    cfg = make_config(db_path, fake_llm.base_url, limits={"tokens_per_chat_per_day": 30})
    async with PersonaCore(cfg) as core:
        assert (await core.respond(ALICE, "group", "hello all")).ok
        assert (await core.respond(BOB, "group", "hi")).error == "budget"
        assert (await core.respond(BOB, "dm", "hi")).ok
        used = await core.usage(BOB, "group")
        assert used.chat_today > 30 and used.chat_limit == 30


async def test_optimizer_tokens_count_and_wait_for_the_budget(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    cfg = make_config(db_path, fake_llm.base_url, persona={"update_every": 1})
    async with PersonaCore(cfg) as core:
        await session(core, ALICE, "I am a nurse")
        [optimizer] = [r for r in await core.usage_report(time.time()) if r["role"] == "optimizer"]
        assert optimizer["prompt_tokens"] > 100 and optimizer["calls"] == 1
        used = await core.usage(ALICE, "c")
        chat = [r for r in await core.usage_report(time.time()) if r["role"] == "chat"]
        assert used.today == sum(
            r["prompt_tokens"] + r["completion_tokens"] for r in [optimizer, *chat]
        )

    tight = make_config(
        db_path,
        fake_llm.base_url,
        persona={"update_every": 1},
        limits={"tokens_per_user_per_day": 10},
    )
    async with PersonaCore(tight) as core:
        json_calls = len(fake_llm.json_requests())
        await core.end_session(ALICE, "c")
        await session(core, ALICE, "over budget now")  # answered politely, session ends
        assert len(fake_llm.json_requests()) == json_calls  # no optimizer call either
        data = await core.export(ALICE)
        assert data is not None
        assert [(u["status"], u["attempts"]) for u in data["persona_updates"]][-1] == ("pending", 0)


async def test_streamed_replies_count_the_reported_usage(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    cfg = make_config(db_path, fake_llm.base_url, llm={"stream": True})
    async with PersonaCore(cfg) as core:
        pieces: list[str] = []

        async def on_delta(piece: str) -> None:
            pieces.append(piece)

        reply = await core.respond(ALICE, "c", "stream me", on_delta=on_delta)
        assert reply.ok and "".join(pieces) == "echo: stream me"
        request = fake_llm.chat_requests()[-1]
        assert request["stream_options"] == {"include_usage": True}
        prompt = sum(len(str(m.get("content") or "")) for m in request["messages"]) // 4
        assert (reply.prompt_tokens, reply.completion_tokens) == (
            prompt,
            len("echo: stream me") // 4,
        )
        assert (await core.usage(ALICE, "c")).today == reply.prompt_tokens + reply.completion_tokens


async def test_usage_command_reports_per_user_chat_and_day(
    fake_llm: FakeOpenAI, db_path: Path
) -> None:
    cfg = make_config(db_path, fake_llm.base_url)
    async with PersonaCore(cfg) as core:
        await core.respond(ALICE, "group", "hello")
        await core.respond(BOB, "group", "hi")
        await core.respond(BOB, "dm", "hey")
    code, out, err = run_cli("usage", "--database", str(db_path), "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert sorted((r["who"], r["chat"], r["calls"]) for r in rows) == [
        ("cli:alice", "cli:group", 1),
        ("cli:bob", "cli:dm", 1),
        ("cli:bob", "cli:group", 1),
    ]
    code, out, err = run_cli("usage", "--database", str(db_path), "--by", "chat", "--json")
    assert code == 0, err
    assert {r["chat"]: r["calls"] for r in json.loads(out)} == {"cli:group": 2, "cli:dm": 1}
    code, out, err = run_cli("usage", "--database", str(db_path), "--by", "user")
    assert code == 0, err
    assert out.splitlines()[0].split() == [
        "who",
        "calls",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
    ]
    assert "cli:alice" in out and "cli:bob" in out


# -- learning switch, corrections, undo, notice ---------------------------------------------------


async def test_learning_off_makes_no_optimizer_call_and_no_tool_change(
    fake_llm: FakeOpenAI, database: Any
) -> None:
    cfg = make_config(database, fake_llm.base_url, persona={"update_every": 1})
    async with PersonaCore(cfg) as core:
        assert await core.set_learning(ALICE, False) is True
        fake_llm.push("chat", Tools([("persona", {"op": "set", "field": AGE, "value": 40})]))
        reply = await core.respond(ALICE, "c", "I am 40")
        assert reply.ok and "learning is off" in (reply.tool_results[0].error or "")
        await core.end_session(ALICE, "c")
        await core.wait_for_updates()
        assert fake_llm.json_requests() == []  # no optimizer call for her
        persona = await core.persona(ALICE)
        assert persona is not None and persona.values == {} and persona.learning is False
        data = await core.export(ALICE)
        assert data is not None and "learning is off" in data["persona_updates"][0]["notes"]
        await core.correct(ALICE, AGE, "40")  # her own changes still work
        assert await core.set_learning(ALICE, True) is True
        await session(core, ALICE, "back on")
        assert len(fake_llm.json_requests()) == 1


async def test_correct_validates_and_wins_over_the_optimizer(
    fake_llm: FakeOpenAI, database: Any
) -> None:
    cfg = make_config(database, fake_llm.base_url, persona={"update_every": 1})
    async with PersonaCore(cfg) as core:
        with pytest.raises(FieldValidationError, match="unknown persona field"):
            await core.correct(ALICE, "Demographics.Shoe_Size", "42")
        with pytest.raises(FieldValidationError, match="integer"):
            await core.correct(ALICE, AGE, "forty")
        [change] = await core.correct(ALICE, "age", " 41 ")
        assert (change.field, change.new_value, change.source) == (AGE, 41, "user")
        await core.correct(ALICE, "Personality.Values_and_Interests", "chess, hiking; jazz")
        fake_llm.push(
            "json", updates((AGE, "set", 25, "I feel 25"), (JOB, "set", "chef", "a chef"))
        )
        await session(core, ALICE, "I feel 25 and I'm a chef")
        persona = await core.persona(ALICE)
        assert persona is not None
        assert persona.values[AGE] == 41 and persona.values[JOB] == "chef"
        assert persona.values["Personality.Values_and_Interests"] == ["chess", "hiking", "jazz"]
        data = await core.export(ALICE)
        assert (
            data is not None and f"{AGE}: set by the user" in data["persona_updates"][-1]["notes"]
        )
        history = await core.history(ALICE, "age")
        assert [(h.new_value, h.source) for h in history] == [(41, "user")]
        # forgetting gives the field back to learning
        await core.forget_field(ALICE, AGE)
        fake_llm.push("json", updates((AGE, "set", 26, "I'm 26")))
        await session(core, ALICE, "I'm 26")
        persona = await core.persona(ALICE)
        assert persona is not None and persona.values[AGE] == 26


async def test_undo_through_the_core_and_bad_versions(fake_llm: FakeOpenAI, db_path: Path) -> None:
    cfg = make_config(db_path, fake_llm.base_url)
    async with PersonaCore(cfg) as core:
        assert await core.undo(ALICE) == []  # nobody yet: nothing to undo
        with pytest.raises(PersonaNotFound):
            await core.undo(ALICE, 1)
        await core.correct(ALICE, AGE, "30")
        await core.correct(ALICE, AGE, "31")
        [undone] = await core.undo(ALICE)
        assert (undone.old_value, undone.new_value) == (31, 30)
        [redone] = await core.undo(ALICE)
        assert redone.new_value == 31
        await core.correct(BOB, AGE, "50")
        [bobs] = await core.history(BOB)
        with pytest.raises(PersonaNotFound):
            await core.undo(ALICE, bobs.id)  # not hers
        persona = await core.persona(BOB)
        assert persona is not None and persona.values[AGE] == 50
        # ids and counts beyond what SQL stores (64-bit) are unknown, not a crash
        for bad in (0, -1, 2**63, 10**19):
            with pytest.raises(PersonaNotFound):
                await core.undo(ALICE, bad)
            with pytest.raises(PersonaNotFound):
                await core.rollback(ALICE, bad)
        assert len(await core.history(ALICE, limit=10**19)) == 4
        assert await core.history(ALICE, offset=10**19) == []
        assert await core.history(ALICE, limit=-5) == []


async def test_the_notice_comes_once_on_first_contact(fake_llm: FakeOpenAI, db_path: Path) -> None:
    async with PersonaCore(make_config(db_path, fake_llm.base_url)) as core:
        first = await core.respond(ALICE, "c", "hi")
        assert first.notice == DEFAULT_NOTICE
        assert all(cmd in DEFAULT_NOTICE for cmd in ("/persona", "/forget", "/learning"))
        assert (await core.respond(ALICE, "other chat", "hi again")).notice is None
    quiet = make_config(db_path, fake_llm.base_url, privacy={"notice": ""})
    async with PersonaCore(quiet) as core:
        assert (await core.respond(BOB, "c", "hi")).notice is None
