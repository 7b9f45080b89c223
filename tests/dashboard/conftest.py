"""A core with people who have learned something (and whose names try to break pages), and
its dashboard: for the HTTP tests (aiohttp's test client) and the browser tests (a real
server on 127.0.0.1)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aipersona.core import Identity, PersonaCore
from aipersona.dashboard.server import build_app
from aipersona.dashboard.settings import DashboardSettings
from tests.conftest import make_config
from tests.fakes.openai_server import Error, FakeOpenAI, updates

TOKEN = "test-dashboard-token-0123456789"  # a test value, never a real token
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ALICE = Identity("cli", "alice", "Alice Nurse")
# names that would break a page or a query if they were not escaped
HOSTILE = Identity("telegram", "666", "<script>alert('x')</script>")
PERCENT = Identity("discord", "100", "100%_done")
CAROL = Identity("telegram", "42", "Carol")


@dataclass
class People:
    """Who is in the store and what was learned (ids and history entries)."""

    alice: int
    hostile: int
    percent: int
    carol: int
    career_entry: int  # the history entry that set Alice's career to "nurse"
    hobby_entry: int  # the later entry that set her hobbies


async def sessions(core: PersonaCore, ident: Identity, texts: list[str]) -> None:
    for text in texts:
        await core.respond(ident, "chat", text)
        await core.end_session(ident, "chat")


async def populate(core: PersonaCore, fake: FakeOpenAI) -> People:
    """Alice: an applied update (with one refused edit), then a second one; the hostile and
    the percent names: one message each; Carol: an update that failed for good."""
    fake.push(
        "json",
        updates(
            ("Demographics.Career_Information", "set", "nurse", "I work night shifts as a nurse"),
            ("Made.Up_Field", "set", "x", "nothing"),
        ),
        updates(("Personality.Values_and_Interests", "append", ["climbing"], "I love climbing")),
    )
    await sessions(core, ALICE, ["I work night shifts as a nurse", "hi", "hello"])
    await core.wait_for_updates()
    await sessions(core, ALICE, ["I love climbing", "more", "again"])
    await core.wait_for_updates()
    await sessions(core, HOSTILE, ["hello"])
    await sessions(core, PERCENT, ["hello"])
    fake.push("json", Error(500, {"error": "down"}))
    await sessions(core, CAROL, ["one", "two", "three"])
    await core.wait_for_updates()
    history = await core.history(ALICE)
    by_field = {h.field: h.id for h in history}
    ids = [await core.storage.find_persona(i) for i in (ALICE, HOSTILE, PERCENT, CAROL)]
    assert all(i is not None for i in ids)
    return People(
        *[int(i) for i in ids if i is not None],
        career_entry=by_field["Demographics.Career_Information"],
        hobby_entry=by_field["Personality.Values_and_Interests"],
    )


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIPERSONA_DASHBOARD_TOKEN", TOKEN)
    return TOKEN


@pytest.fixture
async def populated(
    fake_llm: FakeOpenAI, tmp_path: Path
) -> AsyncIterator[tuple[PersonaCore, People]]:
    cfg = make_config(
        tmp_path / "dashboard.db",
        fake_llm.base_url,
        llm={"input_price_per_mtok": 0.15, "output_price_per_mtok": 0.6},
        persona={"max_update_attempts": 1},
    )
    async with PersonaCore(cfg) as core:
        yield core, await populate(core, fake_llm)


def app_for(core: PersonaCore, *, allow_edits: bool, page_size: int = 50) -> web.Application:
    settings = DashboardSettings(allow_edits=allow_edits, page_size=page_size)
    return build_app(core, settings, TOKEN)


async def client_for(
    core: PersonaCore, *, allow_edits: bool, page_size: int = 50
) -> TestClient[web.Request, web.Application]:
    app = app_for(core, allow_edits=allow_edits, page_size=page_size)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the form"
    return found.group(1)


async def sign_in(client: TestClient[web.Request, web.Application], token: str = TOKEN) -> int:
    """Log in through the form like a browser; the status of the answer to the post."""
    form = await client.get("/login")
    csrf = csrf_of(await form.text())
    answer = await client.post(
        "/login",
        data={"token": token, "csrf": csrf, "next": "/"},
        allow_redirects=False,
    )
    return answer.status
