"""The dashboard in a real browser: Debian's Chromium, headless, driven by Selenium through
chromedriver, against the dashboard served on 127.0.0.1. It logs in, searches a user, opens
their persona, checks the evidence shown, rolls a field back (edits allowed) and finds edits
refused when they are not, and saves a screenshot of the pages.

The browser is the one ``.ci/run`` installs (``apt-get install chromium chromium-driver``).
Without it these tests are skipped with the reason, and under ``CI=true`` they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from aipersona.core import Identity, PersonaCore
from aipersona.core.storage import Tokens
from tests.dashboard.conftest import ALICE, TOKEN, People, app_for

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if missing:
        message = (
            f"the browser tests need {', '.join(missing)}"
            " (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " (CI=true: a missing browser fails the run)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.add_argument("--disable-dev-shm-usage")
    browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


class Browser:
    """The Selenium driver, each blocking call on a thread (the server runs on this loop)."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver, self.base = driver, base

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def open(self, path: str) -> None:
        await self.call(self.driver.get, self.base + path)

    async def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return await self.call(self.driver.find_element, By.CSS_SELECTOR, css)

    async def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        found: list[Any] = await self.call(self.driver.find_elements, By.CSS_SELECTOR, css)
        return found

    async def click(self, css: str) -> None:
        """Click something that loads another page, and wait until it has."""
        await self._navigate(await self.find(css))

    async def click_link(self, text: str) -> None:
        from selenium.webdriver.common.by import By

        element = await self.call(self.driver.find_element, By.PARTIAL_LINK_TEXT, text)
        await self._navigate(element)

    async def _navigate(self, element: Any) -> None:
        from selenium.webdriver.support.expected_conditions import staleness_of
        from selenium.webdriver.support.wait import WebDriverWait

        page = await self.find("html")
        await self.call(element.click)
        await self.call(WebDriverWait(self.driver, 15).until, staleness_of(page))
        await self.call(WebDriverWait(self.driver, 15).until, _loaded)

    async def type(self, css: str, text: str) -> None:
        element = await self.find(css)
        await self.call(element.clear)
        await self.call(element.send_keys, text)

    async def text(self, css: str = "body") -> str:
        element = await self.find(css)
        found: str = await self.call(lambda: element.text)
        return found

    async def path(self) -> str:
        """Where the browser is (asked on a thread: the browser may be waiting for us)."""
        url: str = await self.call(lambda: self.driver.current_url)
        return url[len(self.base) :]

    async def sign_in(self) -> None:
        await self.open("/")
        assert (await self.path()).startswith("/login")
        await self.type("#token", TOKEN)
        await self.click("section.login button[type=submit]")
        assert (await self.path()) == "/", await self.path()

    async def screenshot(self, name: str, tmp: Path) -> Path:
        """A full-page PNG, in ``tmp`` (and in docs/ with AIPERSONA_SCREENSHOTS=docs)."""
        height = await self.call(self.driver.execute_script, "return document.body.scrollHeight")
        await self.call(self.driver.set_window_size, 1280, min(int(height) + 40, 4000))
        png: bytes = await self.call(self.driver.get_screenshot_as_png)
        await self.call(self.driver.set_window_size, 1280, 1000)
        targets = [tmp / name]
        if os.environ.get("AIPERSONA_SCREENSHOTS") == "docs":
            DOCS.mkdir(exist_ok=True)
            targets.append(DOCS / name)
        for target in targets:
            target.write_bytes(png)
        return targets[0]


def _loaded(driver: Any) -> bool:
    return bool(driver.execute_script("return document.readyState") == "complete")


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def browse(driver: Any, core: PersonaCore, *, allow_edits: bool) -> AsyncIterator[Browser]:
    """A dashboard of ``core`` served for the browser, which starts signed out."""
    runner, base = await serve(app_for(core, allow_edits=allow_edits))
    await asyncio.to_thread(driver.delete_all_cookies)
    yield Browser(driver, base)
    await runner.cleanup()


@pytest.fixture
async def read_only(driver: Any, populated: tuple[PersonaCore, People]) -> AsyncIterator[Browser]:
    async for browser in browse(driver, populated[0], allow_edits=False):
        yield browser


@pytest.fixture
async def editable(driver: Any, populated: tuple[PersonaCore, People]) -> AsyncIterator[Browser]:
    async for browser in browse(driver, populated[0], allow_edits=True):
        yield browser


async def test_log_in_search_open_a_persona_and_read_the_evidence(
    read_only: Browser, populated: tuple[PersonaCore, People], tmp_path: Path
) -> None:
    b, people = read_only, populated[1]
    await b.open(f"/personas/{people.alice}")
    assert (await b.path()).startswith("/login?next=")  # nothing without the token
    assert "Alice" not in await b.text()
    await b.type("#token", "wrong-token-wrong-token")
    await b.click("section.login button[type=submit]")
    assert "Wrong token." in await b.text(".error")
    await b.sign_in()
    nav = [await b.call(lambda e=e: e.text) for e in await b.all("header nav a")]
    assert nav == ["Overview", "Personas", "Optimizer", "Plugins"]
    assert await b.text("#users") == "4"
    await b.click_link("Personas")
    await b.type("#q", "ali")
    await b.click("form.search button")
    rows = await b.all("#people tbody tr")
    assert len(rows) == 1 and "Alice Nurse" in await b.call(lambda: rows[0].text)
    await b.click_link("alice")
    assert (await b.path()) == f"/personas/{people.alice}"
    assert "nurse" in await b.text("#fields")
    career = await b.text(f"#v{people.career_entry}")
    assert "Demographics.Career_Information" in career and "by optimizer" in career
    assert await b.text(f"#v{people.career_entry} blockquote.evidence") == (
        "I work night shifts as a nurse"
    )
    assert "from sessions #1, #2, #3" in career
    assert await b.all("a.button") == []  # read-only: no rollback or forget buttons
    # the optimizer log and the plugins, through the navigation bar
    await b.click_link("optimizer log")
    assert "unknown persona field" in await b.text("#updates")
    await b.click_link("Plugins")
    tools = await b.text("table.tools")
    assert tools.splitlines()[1].startswith("persona Record a lasting fact")  # the built-in tool
    # a hostile display name is text, not markup
    await b.open("/personas?q=%3Cscript")
    assert "<script>alert('x')</script>" in await b.text("#people")


async def test_roll_back_a_field_with_edits_allowed(
    editable: Browser, populated: tuple[PersonaCore, People]
) -> None:
    b, (core, people) = editable, populated
    await core.correct(ALICE, "Demographics.Career_Information", "doctor")
    await b.sign_in()
    await b.open(f"/personas/{people.alice}")
    assert "doctor" in await b.text("#fields")
    # forgetting asks first; cancelling changes nothing
    await b.click("#fields a.button")
    assert (await b.path()).startswith(f"/personas/{people.alice}/forget?field=")
    await b.click_link("Cancel")
    assert "doctor" in await b.text("#fields")
    await b.click(f"#v{people.career_entry} a.button")
    assert (await b.path()) == f"/personas/{people.alice}/rollback/{people.career_entry}"
    facts = await b.text("dl.facts")
    assert "doctor" in facts and "nurse" in facts and "I work night shifts as a nurse" in facts
    await b.click("#confirm")
    assert (await b.path()) == f"/personas/{people.alice}?done=rolled_back"
    assert "Rolled back" in await b.text(".flash")
    assert "nurse" in await b.text("#fields") and "doctor" not in await b.text("#fields")
    newest = await b.all("#history > li")
    assert "by rollback" in await b.call(lambda: newest[0].text)
    persona = await core.persona(ALICE)
    assert persona is not None and persona.values["Demographics.Career_Information"] == "nurse"


async def test_edits_are_refused_when_not_allowed(
    read_only: Browser, populated: tuple[PersonaCore, People]
) -> None:
    b, (core, people) = read_only, populated
    await b.sign_in()
    await b.open(f"/personas/{people.alice}/rollback/{people.career_entry}")
    assert "allow_edits" in await b.text()
    await b.open(f"/personas/{people.alice}")
    assert await b.all("#confirm") == [] and await b.all("a.button") == []
    assert "read-only" in await b.text("footer")
    persona = await core.persona(ALICE)
    assert persona is not None and persona.values["Demographics.Career_Information"] == "nurse"


async def test_screenshot_of_the_dashboard(
    read_only: Browser, populated: tuple[PersonaCore, People], tmp_path: Path
) -> None:
    """Two weeks of traffic (through the store, at past times), then the overview and a
    persona page, saved as PNG (the README shows docs/dashboard.png)."""
    b, (core, people) = read_only, populated
    now = time.time()
    for day in range(1, 14):
        at = now - day * 86_400
        for n in range((day * 7) % 11 + 3):
            ident = Identity("telegram", f"demo{day}-{n}", f"Demo {day}-{n}")
            pid = await core.storage.resolve_persona(ident)
            start = await core.storage.begin_turn(pid, ident, "chat", "hello", at + n)
            assert start is not None
            tokens = Tokens(900 + 40 * n, 120 + 9 * day)
            await core.storage.add_reply(pid, "telegram", "chat", "hi!", at + n, tokens)
        await core.storage.record_counts(pid, {"chat_llm_errors": day % 3}, at)
    await b.sign_in()
    await b.open("/?days=14")
    shot = await b.screenshot("dashboard.png", tmp_path)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    await b.open(f"/personas/{people.alice}")
    shot = await b.screenshot("dashboard-persona.png", tmp_path)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
