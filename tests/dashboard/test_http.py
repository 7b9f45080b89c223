"""The dashboard over HTTP (aiohttp's test client against the real application): the token,
the login cookie, CSRF, security headers, 404s, escaping, the pages' content, edits only when
allowed, and /metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from aipersona.core import ConfigError, Identity, PersonaCore
from aipersona.dashboard.auth import SESSION_COOKIE, Auth, Throttle
from aipersona.dashboard.settings import DashboardSettings
from tests.conftest import run_cli
from tests.dashboard.conftest import (
    ALICE,
    BEARER,
    TOKEN,
    People,
    client_for,
    csrf_of,
    sign_in,
)

pytestmark = pytest.mark.timeout(120)

Client = TestClient[web.Request, web.Application]
DATA_PATHS = (
    "/",
    "/personas",
    "/personas/1",
    "/optimizer",
    "/plugins",
    "/metrics",
    "/api/overview",
    "/api/personas",
    "/api/personas/1",
    "/api/optimizer",
)


@pytest.fixture
async def read_only(populated: tuple[PersonaCore, People]) -> AsyncIterator[Client]:
    client = await client_for(populated[0], allow_edits=False)
    yield client
    await client.close()


@pytest.fixture
async def editable(populated: tuple[PersonaCore, People]) -> AsyncIterator[Client]:
    client = await client_for(populated[0], allow_edits=True)
    yield client
    await client.close()


# -- the token ---------------------------------------------------------------------------------


def test_no_token_no_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIPERSONA_DASHBOARD_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="needs an access token"):
        DashboardSettings().token()
    monkeypatch.setenv("AIPERSONA_DASHBOARD_TOKEN", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        DashboardSettings().token()
    monkeypatch.setenv("AIPERSONA_DASHBOARD_TOKEN", TOKEN)
    assert DashboardSettings().token() == TOKEN


def test_the_command_refuses_to_start_without_a_token(tmp_path: object) -> None:
    code, out, err = run_cli(
        "dashboard", "--database", f"{tmp_path}/x.db", env={"AIPERSONA_DASHBOARD_TOKEN": ""}
    )
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "aipersona: the dashboard needs an access token: put one in the environment variable"
        " AIPERSONA_DASHBOARD_TOKEN (e.g. the output of `aipersona keys generate`); it has no"
        " default"
    ]


async def test_nothing_is_shown_without_the_token(read_only: Client) -> None:
    for path in DATA_PATHS:
        answer = await read_only.get(path, allow_redirects=False)
        body = await answer.text()
        assert "Alice" not in body and "nurse" not in body, path
        if path.startswith(("/api/", "/metrics")):
            assert (answer.status, body) == (401, "401: Unauthorized"), path
        else:  # a browser is sent to the login page, which shows nothing else
            assert answer.status == 303, path
            assert answer.headers["Location"].startswith("/login?next="), path


async def test_a_wrong_token_gets_401_and_nothing_else(read_only: Client) -> None:
    # three tries (more would be slowed down, see below): a page, the API, the metrics
    for path, header in (
        ("/personas/1", "Bearer wrong-token-but-long-enough"),
        ("/api/personas", "Basic dXNlcjpwYXNz"),
        ("/metrics", "Bearer"),
    ):
        answer = await read_only.get(path, headers={"Authorization": header})
        assert answer.status == 401, path
        assert await answer.text() == "401: Unauthorized"
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert SESSION_COOKIE not in answer.cookies
    assert await sign_in(read_only, "not-the-token-at-all") == 401
    page = await read_only.get("/login")
    assert "Alice" not in await page.text()


async def test_repeated_failures_are_slowed_down(read_only: Client) -> None:
    wrong = {"Authorization": "Bearer wrong-token-but-long-enough"}
    started = time.monotonic()
    for _ in range(3):  # the first few failures answer at once
        assert (await read_only.get("/api/overview", headers=wrong)).status == 401
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    assert (await read_only.get("/api/overview", headers=wrong)).status == 401
    assert time.monotonic() - started >= 0.95  # the fourth waits a second
    started = time.monotonic()
    assert (await read_only.get("/api/overview", headers=BEARER)).status == 200
    assert time.monotonic() - started >= 1.9  # the right token waits too, then clears it
    started = time.monotonic()
    assert (await read_only.get("/api/overview", headers=BEARER)).status == 200
    assert time.monotonic() - started < 1.0


async def test_the_throttle_grows_is_capped_and_forgets() -> None:
    throttle = Throttle(free=2, max_delay=8)
    assert throttle.delay("a", 0) == 0
    for n in range(6):
        throttle.failed("a", n)
    assert throttle.delay("a", 6) == 8  # 2**(6-2) = 16, capped at 8
    assert throttle.delay("b", 6) == 0  # per address
    assert throttle.delay("a", 6 + 10_000) == 0  # forgotten after a quiet while
    throttle.succeeded("a")
    assert throttle.delay("a", 7) == 0


# -- the session cookie and CSRF ---------------------------------------------------------------


async def test_login_sets_a_signed_httponly_strict_cookie(read_only: Client) -> None:
    form = await read_only.get("/login")
    assert 'type="password"' in await form.text()
    csrf = csrf_of(await form.text())
    answer = await read_only.post(
        "/login", data={"token": TOKEN, "csrf": csrf, "next": "/plugins"}, allow_redirects=False
    )
    assert answer.status == 303 and answer.headers["Location"] == "/plugins"
    set_cookie = next(
        v for v in answer.headers.getall("Set-Cookie") if v.startswith(SESSION_COOKIE)
    )
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    page = await read_only.get("/")
    assert page.status == 200 and "Overview" in await page.text()
    # a tampered cookie is no login
    cookie = read_only.session.cookie_jar.filter_cookies(read_only.make_url("/"))[SESSION_COOKIE]
    forged = cookie.value[:-1] + ("0" if cookie.value[-1] != "0" else "1")
    read_only.session.cookie_jar.clear()
    read_only.session.cookie_jar.update_cookies({SESSION_COOKIE: forged})
    answer = await read_only.get("/", allow_redirects=False)
    assert answer.status == 303


def test_session_cookies_expire_and_name_their_token() -> None:
    auth = Auth(TOKEN, session_seconds=60)
    cookie = auth.new_session(now=1000)
    assert auth.session_valid(cookie, now=1059)
    assert not auth.session_valid(cookie, now=1061)  # expired
    assert not Auth("another-token-0123456789", session_seconds=60).session_valid(cookie, now=1)
    assert not auth.session_valid("", now=1) and not auth.session_valid("1.2.3", now=1)


async def test_login_goes_nowhere_but_this_site(read_only: Client) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        form = await read_only.get("/login")  # each login uses up its form
        answer = await read_only.post(
            "/login",
            data={"token": TOKEN, "csrf": csrf_of(await form.text()), "next": target},
            allow_redirects=False,
        )
        assert answer.status == 303, await answer.text()
        assert answer.headers["Location"] == "/"


async def test_forms_need_the_csrf_token(
    editable: Client, populated: tuple[PersonaCore, People]
) -> None:
    core, people = populated
    form = await editable.get("/login")  # the login form has one too
    answer = await editable.post("/login", data={"token": TOKEN, "csrf": "x" * 64})
    assert answer.status == 403 and SESSION_COOKIE not in answer.cookies
    assert csrf_of(await form.text())
    assert await sign_in(editable) == 303
    before = (await core.operator.persona(people.alice)).persona.values
    target = f"/personas/{people.alice}/rollback/{people.career_entry}"
    for data in ({}, {"csrf": "wrong"}):
        answer = await editable.post(target, data=data, allow_redirects=False)
        assert answer.status == 403
    page = await editable.get(target)
    csrf = csrf_of(await page.text())
    answer = await editable.post(
        target, data={"csrf": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert answer.status == 403 and "another site" in await answer.text()
    assert (await core.operator.persona(people.alice)).persona.values == before
    answer = await editable.post("/logout", data={}, allow_redirects=False)
    assert answer.status == 403  # even signing out needs it


async def test_every_response_carries_the_security_headers(read_only: Client) -> None:
    await sign_in(read_only)
    for path in ("/login", "/", "/personas/999999", "/nowhere", "/static/dashboard.css"):
        answer = await read_only.get(path, allow_redirects=False)
        csp = answer.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, path
        assert "script-src" not in csp  # no script at all
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "same-origin"
    answer = await read_only.get("/api/overview", headers={"Authorization": "Bearer nope-nope"})
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert (await read_only.get("/personas")).headers["Cache-Control"] == "no-store"


# -- pages ----------------------------------------------------------------------------------


async def test_unknown_personas_are_404(
    read_only: Client, populated: tuple[PersonaCore, People]
) -> None:
    for path in (
        "/personas/999999",
        "/personas/abc",
        "/personas/-1",
        "/personas/" + "9" * 30,
        "/api/personas/999999",
        f"/personas/{populated[1].alice}/nothing",
    ):
        answer = await read_only.get(path, headers=BEARER)
        assert answer.status == 404, path
        assert "Alice" not in await answer.text()


async def test_search_text_is_escaped_in_html_and_in_sql(
    read_only: Client, populated: tuple[PersonaCore, People]
) -> None:
    people = populated[1]
    await sign_in(read_only)
    page = await (await read_only.get("/personas", params={"q": "<script>"})).text()
    assert "<script>" not in page  # neither the search nor the name comes back as markup
    assert '<q id="searched">&lt;script&gt;</q>' in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert f'href="/personas/{people.hostile}"' in page
    # LIKE wildcards and quotes are characters like any other (as patterns, "%" would
    # match everyone and "100_" would match "100%_done")
    for text, found in (("%", False), ("100_", False), ("100%", True), ("100%_", True)):
        page = await (await read_only.get("/personas", params={"q": text})).text()
        assert ("100%_done" in page) is found, text
        assert "Alice" not in page and "Carol" not in page
    injection = "x' OR '1'='1"
    page = await (await read_only.get("/personas", params={"q": injection})).text()
    assert "Nobody found" in page
    page = await (await read_only.get("/personas", params={"q": "ALI"})).text()
    assert "Alice Nurse" in page and "Carol" not in page  # ASCII case folded
    answer = await read_only.get("/personas", params={"q": "4", "by": "user_id"})
    assert "Carol" in await answer.text() and "Alice" not in await answer.text()
    answer = await read_only.get("/personas", params={"after": "not-a-cursor"})
    assert answer.status == 400 and "cursor" in await answer.text()
    answer = await read_only.get("/personas", params={"by": "email"})
    assert answer.status == 400


async def test_persona_page_shows_what_was_learned(
    read_only: Client, populated: tuple[PersonaCore, People]
) -> None:
    people = populated[1]
    answer = await read_only.get(f"/personas/{people.alice}", headers=BEARER)
    page = await answer.text()
    assert answer.status == 200
    for shown in (
        "Demographics.Career_Information",
        "nurse",
        "I work night shifts as a nurse",  # the evidence quote
        "from sessions #1, #2, #3",  # its source sessions
        "climbing",
        "Alice Nurse",  # the identity
        f"#{people.career_entry}",
    ):
        assert shown in page, shown
    assert "Roll back" not in page and "Forget" not in page  # edits are off here
    carol = await (await read_only.get(f"/personas/{people.carol}", headers=BEARER)).text()
    assert "Carol" in carol and "Nothing learned yet" in carol


async def test_optimizer_log_filters_by_outcome(
    read_only: Client, populated: tuple[PersonaCore, People]
) -> None:
    applied = await (await read_only.get("/optimizer?outcome=applied", headers=BEARER)).text()
    assert "cli:alice (Alice Nurse)" in applied and "Carol" not in applied
    assert "I work night shifts as a nurse" in applied  # the edit with its evidence
    assert "unknown persona field" in applied  # the refused edit with its reason
    failed = await (await read_only.get("/optimizer?outcome=failed", headers=BEARER)).text()
    assert "telegram:42 (Carol)" in failed and "HTTP 500" in failed and "Alice" not in failed
    every = await (await read_only.get("/optimizer", headers=BEARER)).text()
    assert "Carol" in every and "Alice" in every
    bad = await read_only.get("/optimizer?outcome=maybe", headers=BEARER)
    assert bad.status == 400
    mine = await read_only.get(f"/optimizer?persona={populated[1].carol}", headers=BEARER)
    assert "Alice" not in await mine.text()


async def test_overview_counts_the_day(read_only: Client) -> None:
    data = await (await read_only.get("/api/overview", headers=BEARER)).json()
    today = data["counts"][data["days"][-1]]
    assert data["users"] == 4 and data["open_sessions"] == 0
    assert today["messages"] == 11 and today["new_users"] == 4
    assert today["updates_applied"] == 2 and today["updates_failed"] == 1
    assert today["edits_applied"] == 2 and today["edits_refused"] == 1
    assert today["optimizer_calls"] == 2 and today["chat_calls"] == 11
    assert data["cost_per_day"][-1] > 0
    page = await (await read_only.get("/?days=7", headers=BEARER)).text()
    assert '<span class="n" id="users">4</span>' in page
    assert page.count("<svg") >= 5 and "<script" not in page
    assert (await read_only.get("/?days=1000", headers=BEARER)).status == 400


async def test_plugins_page_lists_fields_and_tools(read_only: Client) -> None:
    page = await (await read_only.get("/plugins", headers=BEARER)).text()
    assert "built-in" in page and "Demographics.Age" in page
    assert "<tr><td>persona</td><td>Record a lasting fact" in page  # the built-in tool


async def test_pagination_follows_the_next_link(
    read_only: Client, populated: tuple[PersonaCore, People]
) -> None:
    core = populated[0]
    for i in range(12):
        await core.storage.resolve_persona(Identity("cli", f"user{i:02}", f"Pat {i:02}"))
    client = await client_for(core, allow_edits=False, page_size=5)
    seen: list[str] = []
    url = "/personas?q=pat"
    while url:
        page = await (await client.get(url, headers=BEARER)).text()
        seen += [n for n in (f"Pat {i:02}" for i in range(12)) if n in page]
        found = page.split('rel="next" href="')
        url = found[1].split('"')[0].replace("&amp;", "&") if len(found) > 1 else ""
    await client.close()
    assert seen == [f"Pat {i:02}" for i in range(12)]


# -- edits ------------------------------------------------------------------------------------


async def test_edits_are_refused_when_not_allowed(
    read_only: Client, populated: tuple[PersonaCore, People]
) -> None:
    core, people = populated
    await sign_in(read_only)
    page = await (await read_only.get(f"/personas/{people.alice}")).text()
    csrf = csrf_of(page)  # the sign-out form's
    before = (await core.operator.persona(people.alice)).persona.values
    for path in (
        f"/personas/{people.alice}/rollback/{people.career_entry}",
        f"/personas/{people.alice}/forget?field=Demographics.Career_Information",
        f"/personas/{people.alice}/delete",
    ):
        assert (await read_only.get(path)).status == 403
        answer = await read_only.post(
            path.split("?")[0], data={"csrf": csrf, "field": "Demographics.Career_Information"}
        )
        assert answer.status == 403 and "allow_edits" in await answer.text()
    assert (await core.operator.persona(people.alice)).persona.values == before


async def test_rollback_with_edits_allowed(
    editable: Client, populated: tuple[PersonaCore, People]
) -> None:
    core, people = populated
    await core.correct(ALICE, "Demographics.Career_Information", "doctor")
    await sign_in(editable)
    page = await (await editable.get(f"/personas/{people.alice}")).text()
    assert f'/personas/{people.alice}/rollback/{people.career_entry}"' in page
    confirm = await editable.get(f"/personas/{people.alice}/rollback/{people.career_entry}")
    text = await confirm.text()
    assert "doctor" in text and "nurse" in text and "Roll back" in text
    answer = await editable.post(
        f"/personas/{people.alice}/rollback/{people.career_entry}",
        data={"csrf": csrf_of(text)},
        allow_redirects=False,
    )
    assert answer.status == 303
    assert answer.headers["Location"] == f"/personas/{people.alice}?done=rolled_back"
    detail = await core.operator.persona(people.alice)
    assert detail.persona.values["Demographics.Career_Information"] == "nurse"
    assert detail.history[0].source == "rollback"


async def test_rollback_of_another_persons_version_is_refused(
    editable: Client, populated: tuple[PersonaCore, People]
) -> None:
    core, people = populated
    await sign_in(editable)
    csrf = csrf_of(await (await editable.get(f"/personas/{people.carol}")).text())
    target = f"/personas/{people.carol}/rollback/{people.career_entry}"  # Alice's entry
    assert (await editable.get(target)).status == 404
    answer = await editable.post(target, data={"csrf": csrf})
    assert answer.status == 404 and "no history entry" in await answer.text()
    assert (await core.operator.persona(people.carol)).persona.values == {}
    answer = await editable.post(f"/personas/{people.carol}/rollback/99999", data={"csrf": csrf})
    assert answer.status == 404


async def test_forget_a_field_and_everything(
    editable: Client, populated: tuple[PersonaCore, People]
) -> None:
    core, people = populated
    await sign_in(editable)
    confirm = await editable.get(
        f"/personas/{people.alice}/forget?field=Demographics.Career_Information"
    )
    csrf = csrf_of(await confirm.text())
    answer = await editable.post(
        f"/personas/{people.alice}/forget",
        data={"csrf": csrf, "field": "Demographics.Career_Information"},
        allow_redirects=False,
    )
    assert answer.headers["Location"] == f"/personas/{people.alice}?done=forgotten"
    detail = await core.operator.persona(people.alice)
    assert "Demographics.Career_Information" not in detail.persona.values
    assert detail.history[0].source == "operator"
    bad = await editable.post(
        f"/personas/{people.alice}/forget", data={"csrf": csrf, "field": "No.Such"}
    )
    assert bad.status == 400
    answer = await editable.post(
        f"/personas/{people.carol}/delete", data={"csrf": csrf}, allow_redirects=False
    )
    assert answer.headers["Location"] == "/personas?done=deleted"
    assert (await editable.get(f"/personas/{people.carol}")).status == 404


# -- for scripts ------------------------------------------------------------------------------


async def test_metrics_are_prometheus_text_behind_the_token(read_only: Client) -> None:
    answer = await read_only.get("/metrics", headers=BEARER)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await answer.text()
    for line in (
        'aipersona_messages_total{outcome="ok"} 11.0',
        'aipersona_llm_calls_total{role="chat"} 11.0',
        'aipersona_llm_calls_total{role="optimizer"} 3.0',
        'aipersona_llm_errors_total{kind="http",role="optimizer"} 1.0',
        'aipersona_persona_updates_total{outcome="applied"} 2.0',
        'aipersona_persona_updates_total{outcome="failed"} 1.0',
        "aipersona_active_sessions 0.0",
        'aipersona_refusals_total{reason="rate_limit"} 0.0',
        "aipersona_message_seconds_count 11.0",
    ):
        assert line in text, line
    assert 'aipersona_llm_tokens_total{kind="prompt",role="optimizer"}' in text


async def test_json_api_for_scripts(
    read_only: Client, populated: tuple[PersonaCore, People]
) -> None:
    people = populated[1]
    found = await (await read_only.get("/api/personas?q=ali", headers=BEARER)).json()
    assert [r["persona_id"] for r in found["rows"]] == [people.alice] and found["next"] == ""
    detail = await (await read_only.get(f"/api/personas/{people.alice}", headers=BEARER)).json()
    assert detail["persona"]["values"]["Demographics.Career_Information"] == "nurse"
    log = await (await read_only.get("/api/optimizer?outcome=failed", headers=BEARER)).json()
    assert [e["update"]["persona_id"] for e in log["entries"]] == [people.carol]
