"""Platforms across processes: two ``aipersona run`` worker processes on one PostgreSQL
schema, driven through the real discord.py and python-telegram-bot against the loopback
fakes, with the FakeOpenAI model server in this process (the workers reach it over HTTP).

- Discord: two processes split one bot's shards (``shard_ids`` [0] and [1] of 2); each
  guild's messages reach and are answered by the process running its shard, DMs by shard 0's.
- Telegram: two webhook workers behind one URL (a round-robin reverse proxy, as nginx's
  ``upstream``); one person's messages alternate between them and are still answered in
  order, each seeing the others in its history (the person lock across processes); a
  stopping worker finishes the update it acknowledged, the proxy skips it, and the webhook
  stays registered.

Each worker uses its own model name, so the model requests tell which process served what.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

from aipersona.core import Identity, PersonaCore
from tests import postgres
from tests.conftest import make_config
from tests.fakes.discord import FakeChannel, FakeDiscord, FakeGuild, subprocess_env
from tests.fakes.openai_server import FakeOpenAI, kind_of, last_user_text
from tests.fakes.telegram import FakeTelegramAPI

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ helpers


async def until(
    predicate: Callable[[], T | Awaitable[T]],
    what: str,
    within: float = 15.0,
    alive: Sequence[Worker] = (),
) -> T:
    """Wait until ``predicate()`` (sync or async) is truthy, checked every 20 ms, and return
    it; fail at once, with its output, if one of the ``alive`` workers died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        check_alive(*alive)
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_config(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class HeldOpenAI(FakeOpenAI):
    """FakeOpenAI whose chat reply to a text in ``held`` waits until that event is set;
    ``arrived`` lists the chat texts in the order their requests came in."""

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[str, asyncio.Event] = {}
        self.arrived: list[str] = []

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()  # aiohttp keeps the body: the fake reads it again
        if kind_of(body) == "chat":
            text = last_user_text(body)
            self.arrived.append(text)
            event = self.held.get(text)
            if event is not None:
                await event.wait()
        return await super()._completions(request)

    def request_for(self, text: str) -> dict[str, Any]:
        (req,) = [r for r in self.chat_requests() if last_user_text(r) == text]
        return req


class Worker:
    """``python -m aipersona.core.cli run --config FILE`` in a subprocess."""

    def __init__(self, name: str, config: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.log = config.with_suffix(".log")
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Worker:
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aipersona.core.cli", "-v", "run",
                "--config", str(self.config),
                cwd=ROOT, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 20.0) -> int:  # noqa: ASYNC109
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self) -> int:
        self.terminate()
        code = await self.wait()
        assert code == 0, f"{self.name} exited with {code}:\n{self.output()}"
        return code

    async def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def workers(*items: Worker) -> AsyncIterator[tuple[Worker, ...]]:
    """Start the workers; on the way out kill those still running (after a failure)."""
    try:
        for worker in items:
            await worker.start()
        yield items
    finally:
        for worker in items:
            await worker.kill()


def check_alive(*items: Worker) -> None:
    for worker in items:
        assert worker.alive, f"{worker.name} died:\n{worker.output()}"


def history_of(request: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, content) of the user and assistant messages a model request carries."""
    return [
        (m["role"], m["content"])
        for m in request["messages"]
        if m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
    ]


async def exported_messages(schema: str, base_url: str, identity: Identity) -> list[str]:
    """Every message stored about ``identity``, through the public API of a core of its own
    on the same database."""
    config = make_config(postgres.database_section(schema), base_url)
    async with PersonaCore(config) as core:
        export = await core.export(identity)
    assert export is not None, identity
    return [m["content"] for m in sorted(export["messages"], key=lambda m: m["id"])]


# ------------------------------------------------------------------ Discord: shards


BOT = 1000
ALICE, BOB = 42, 43
GUILD0, CHANNEL0 = 5000, 5001  # (5000 >> 22) % 2 == 0
GUILD1, CHANNEL1 = (1 << 22) + 6000, 6001  # ((1 << 22) + 6000 >> 22) % 2 == 1
DM_BOB = 7043
MENTION = f"<@{BOT}>"


async def test_discord_shards_split_over_two_processes(
    pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """shard_ids [0] and [1] of shard_count 2 in two processes on one store: a guild's
    message is answered once, by the process running the guild's shard; DMs by shard 0's;
    both processes' writes are in the one store."""
    assert (GUILD0 >> 22) % 2 == 0 and (GUILD1 >> 22) % 2 == 1
    monkeypatch.setenv("TEST_DISCORD_TOKEN", "fake-discord-token")
    guilds = [
        FakeGuild(id=GUILD0, name="zero", channels=[FakeChannel(CHANNEL0, "general")]),
        FakeGuild(id=GUILD1, name="one", channels=[FakeChannel(CHANNEL1, "lobby")]),
    ]
    async with FakeDiscord(guilds=guilds, shards=2, bot_id=BOT) as fd, HeldOpenAI() as llm:

        def config(shard: int) -> Path:
            return write_config(
                tmp_path / f"shard{shard}.toml",
                {
                    "database": postgres.database_section(pg_schema),
                    "llm": {"base_url": llm.base_url, "model": f"model-shard{shard}",
                            "max_retries": 0, "timeout_seconds": 10},
                    "sessions": {"sweep_seconds": 3600},
                    "privacy": {"notice": ""},
                    "discord": {"token_env": "TEST_DISCORD_TOKEN", "shard_count": 2,
                                "shard_ids": [shard], "sync_commands": shard == 0},
                },
            )  # fmt: skip

        env = subprocess_env(fd)
        async with workers(Worker("shard0", config(0), env), Worker("shard1", config(1), env)) as (
            w0,
            w1,
        ):
            await until(
                lambda: fd.connected_shards == [(0, 2), (1, 2)],
                "both processes to connect their shard",
                alive=(w0, w1),
            )
            assert sorted(tuple(i["shard"]) for i in fd.identifies) == [(0, 2), (1, 2)]
            await fd.send_message(CHANNEL0, ALICE, f"{MENTION} hi on shard zero", mentions_bot=True)
            await fd.send_message(CHANNEL1, ALICE, f"{MENTION} hi on shard one", mentions_bot=True)
            await fd.send_message(DM_BOB, BOB, "hi in a DM")
            await fd.wait_for(
                lambda: all(fd.sent_messages(c) for c in (CHANNEL0, CHANNEL1, DM_BOB)),
                timeout=15,
            )
            await w0.stop()
            await w1.stop()

    # answered exactly once, by the process running the shard (its model name says which)
    assert [m.content for m in fd.sent_messages(CHANNEL0)] == ["echo: hi on shard zero"]
    assert [m.content for m in fd.sent_messages(CHANNEL1)] == ["echo: hi on shard one"]
    assert [m.content for m in fd.sent_messages(DM_BOB)] == ["echo: hi in a DM"]
    models = {last_user_text(r): r["model"] for r in llm.chat_requests()}
    assert models == {
        "hi on shard zero": "model-shard0",
        "hi on shard one": "model-shard1",
        "hi in a DM": "model-shard0",
    }
    assert len(llm.chat_requests()) == 3  # no process saw another's message
    assert list(fd.synced_commands) == [None]  # one process synced the slash commands
    # both processes wrote to Alice's one persona in the one store
    alice = await exported_messages(pg_schema, llm.base_url, Identity("discord", str(ALICE)))
    assert sorted(alice) == sorted(
        ["hi on shard zero", "echo: hi on shard zero", "hi on shard one", "echo: hi on shard one"]
    )
    bob = await exported_messages(pg_schema, llm.base_url, Identity("discord", str(BOB)))
    assert bob == ["hi in a DM", "echo: hi in a DM"]


# ------------------------------------------------------------------ Telegram: webhook workers


class RoundRobinProxy:
    """A reverse proxy on 127.0.0.1 like nginx's ``upstream`` with ``proxy_next_upstream
    error``: each request goes to the next worker in turn; a worker that refuses the
    connection is skipped (the request was never sent to it, so it is safe to send on)."""

    def __init__(self, upstreams: Sequence[str]) -> None:
        self.upstreams = list(upstreams)
        self.routed: list[tuple[int, int]] = []  # (worker index, status) per request
        self.refused: list[int] = []  # workers skipped because they refused the connection
        self._turn = itertools.count()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    async def __aenter__(self) -> RoundRobinProxy:
        # no keep-alive to the workers: a stopped worker must show as a refused connection
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        keep = ("Content-Type", "X-Telegram-Bot-Api-Secret-Token")
        headers = {k: request.headers[k] for k in keep if k in request.headers}
        first = next(self._turn)
        for step in range(len(self.upstreams)):
            index = (first + step) % len(self.upstreams)
            url = self.upstreams[index] + request.path_qs
            try:
                async with self._session.request(
                    request.method, url, data=body, headers=headers
                ) as resp:
                    payload = await resp.read()
                    self.routed.append((index, resp.status))
                    return web.Response(body=payload, status=resp.status)
            except aiohttp.ClientConnectorError:
                self.refused.append(index)
        self.routed.append((-1, 502))
        return web.Response(status=502, text="no worker answered")


TG_TOKEN = "123456:TEST-TOKEN"
TG_SECRET = "shared-webhook-secret"
TG_ALICE, TG_BOB = 11, 22


async def test_telegram_webhook_workers_behind_one_url(
    pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two webhook workers behind a round-robin proxy on one store: one person's messages
    alternate between the workers, are answered once each and in order, and each turn sees
    the earlier ones (a turn on the other worker waits for the person's lock); a stopping
    worker finishes the update it took, the proxy skips it, the webhook stays registered."""
    monkeypatch.setenv("TEST_TG_TOKEN", TG_TOKEN)
    monkeypatch.setenv("TEST_TG_SECRET", TG_SECRET)
    ports = [free_port(), free_port()]
    async with (
        FakeTelegramAPI() as tg,
        HeldOpenAI() as llm,
        RoundRobinProxy([f"http://127.0.0.1:{p}" for p in ports]) as proxy,
    ):
        public_url = proxy.url("tg-hook")

        def config(i: int) -> Path:
            return write_config(
                tmp_path / f"worker{i}.toml",
                {
                    "database": postgres.database_section(pg_schema),
                    "llm": {"base_url": llm.base_url, "model": f"model-worker{i}",
                            "max_retries": 0, "timeout_seconds": 10},
                    "sessions": {"sweep_seconds": 3600},
                    "privacy": {"notice": ""},
                    "telegram": {"token_env": "TEST_TG_TOKEN", "base_url": tg.origin,
                                 "mode": "webhook", "webhook_url": public_url,
                                 "webhook_listen": "127.0.0.1", "webhook_port": ports[i],
                                 "webhook_path": "tg-hook", "webhook_secret_env": "TEST_TG_SECRET",
                                 "webhook_shared": True},
                },
            )  # fmt: skip

        async with workers(Worker("worker0", config(0)), Worker("worker1", config(1))) as (w0, w1):

            async def ready() -> bool:
                registered = len(tg.calls_to("setWebhook")) == 2
                return registered and all([await listening(p) for p in ports])

            await until(ready, "both workers to register and listen", 20, alive=(w0, w1))
            # every worker registered the same webhook: the second registration changed nothing
            first, second = tg.calls_to("setWebhook")
            assert first == second
            assert first["url"] == public_url and first["secret_token"] == TG_SECRET
            assert first["allowed_updates"] == ["message"] and first["max_connections"] == 40
            assert "drop_pending_updates" not in first
            import asyncpg  # the test extra (pg_schema has skipped the test without it)

            pg = await asyncpg.connect(
                postgres.URL, password=os.environ.get(postgres.PASSWORD_ENV), timeout=5
            )
            try:
                await converse(tg, llm, proxy, pg, pg_schema, (w0, w1), ports)
            finally:
                await pg.close()
            await w1.stop()

    # every message answered exactly once, in order; both workers' writes in the one store
    alice = ["one", "two", "three", "four", "five", "six", "seven"]
    assert tg.sent_texts(TG_ALICE) == [f"echo: {t}" for t in alice]
    assert tg.sent_texts(TG_BOB) == ["echo: bob one", "echo: bob two"]
    assert sorted(llm.arrived) == sorted([*alice, "bob one", "bob two"])
    stored = await exported_messages(pg_schema, llm.base_url, Identity("telegram", str(TG_ALICE)))
    assert stored == [x for t in alice for x in (t, f"echo: {t}")]


async def converse(
    tg: FakeTelegramAPI,
    llm: HeldOpenAI,
    proxy: RoundRobinProxy,
    pg: Any,
    schema: str,
    both: tuple[Worker, Worker],
    ports: list[int],
) -> None:
    w0 = both[0]

    async def deliver(user: int, text: str, worker: int) -> None:
        """One update through the proxy; Telegram sends a chat's next update only after
        this one was acknowledged, as here."""
        status = await tg.deliver_webhook(tg.make_message_update(user, user, text))
        assert status == 200 and proxy.routed[-1] == (worker, 200), proxy.routed

    async def answered(user: int, count: int) -> None:
        await tg.wait_for_sent(user, count, timeout=15)

    async def waits_for_lock(user: int) -> bool:
        """A worker waits for the person lock of ``user`` (an advisory lock not granted)."""
        persona = await pg.fetchval(
            f'SELECT persona_id FROM "{schema}".identities'
            " WHERE platform = 'telegram' AND platform_user_id = $1",
            str(user),
        )
        # the person-lock namespace of this schema (pg_locks shows the int4 key as an oid)
        waiting = await pg.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid::bigint = (hashtext($2 || '/person')::bigint + 4294967296) % 4294967296"
            " AND objid = $1 AND objsubid = 2",
            persona,
            schema,
        )
        return bool(waiting)

    async def until_waiting(user: int) -> None:
        await until(lambda: waits_for_lock(user), "a worker to wait for the lock", alive=both)

    # 1. "one" on worker 0 is in the model call (holding Alice's lock) when "two" reaches
    # worker 1, which waits for the lock and then sees "one" and its answer
    llm.held["one"] = release_one = asyncio.Event()
    await deliver(TG_ALICE, "one", 0)
    await until(lambda: "one" in llm.arrived, '"one" to reach the model')
    await deliver(TG_ALICE, "two", 1)
    await until_waiting(TG_ALICE)
    assert "two" not in llm.arrived
    release_one.set()
    await answered(TG_ALICE, 2)
    assert llm.request_for("one")["model"] == "model-worker0"
    two = llm.request_for("two")
    assert two["model"] == "model-worker1"
    assert history_of(two) == [("user", "one"), ("assistant", "echo: one"), ("user", "two")]

    # 2. one message at a time, alternating: each sees everything before it
    await deliver(TG_ALICE, "three", 0)
    await answered(TG_ALICE, 3)
    await deliver(TG_ALICE, "four", 1)
    await answered(TG_ALICE, 4)
    four = llm.request_for("four")
    assert four["model"] == "model-worker1"
    assert [c for _, c in history_of(four)] == [
        "one", "echo: one", "two", "echo: two", "three", "echo: three", "four"
    ]  # fmt: skip
    await deliver(TG_BOB, "bob one", 0)  # another user, either worker
    await answered(TG_BOB, 1)
    await deliver(TG_BOB, "bob two", 1)
    await answered(TG_BOB, 2)
    assert [c for _, c in history_of(llm.request_for("bob two"))] == [
        "bob one", "echo: bob one", "bob two"
    ]  # fmt: skip

    # 3. worker 0 is told to stop while it answers "five" (acknowledged to Telegram, which
    # will not send it again): it stops listening at once, finishes "five", then exits
    llm.held["five"] = release_five = asyncio.Event()
    await deliver(TG_ALICE, "five", 0)
    await until(lambda: "five" in llm.arrived, '"five" to reach the model')
    w0.terminate()

    async def closed() -> bool:
        return not await listening(ports[0])

    await until(closed, "worker 0 to stop listening", alive=(w0,))  # still answering "five"
    await deliver(TG_ALICE, "six", 1)
    await until_waiting(TG_ALICE)  # "six" waits for "five"
    release_five.set()
    await answered(TG_ALICE, 6)
    assert await w0.wait() == 0, w0.output()
    assert [c for _, c in history_of(llm.request_for("six"))][-3:] == ["five", "echo: five", "six"]

    # 4. the next update is the stopped worker's turn: the proxy skips it (connection
    # refused) and worker 1 answers; the webhook is still registered, nobody deleted it
    await deliver(TG_ALICE, "seven", 1)
    assert proxy.refused == [0]
    await answered(TG_ALICE, 7)
    assert tg.webhook_url == proxy.url("tg-hook") and tg.webhook.secret_token == TG_SECRET
    assert tg.calls_to("deleteWebhook") == []
