"""The aiohttp app of the Telegram fake: routing and method dispatch, request parsing,
start/stop, recorded calls and the waiting helpers; :class:`FakeTelegramAPI` is composed here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from .commands import CommandsMixin
from .faults import FaultsMixin
from .files import FilesMixin
from .messages import MessagesMixin
from .models import ApiError, JSONDict, UploadedFile
from .updates import UpdatesMixin
from .webhook import WebhookMixin

T = TypeVar("T")


# Form fields that are plain strings even if they look like JSON (e.g. text "123").
_STRING_FIELDS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "url",
        "secret_token",
        "language_code",
        "action",
        "file_id",
        "inline_message_id",
        "description",
        "short_description",
        "name",
        "title",
        "emoji",
        "query",
        "ip_address",
        "business_connection_id",
        "message_effect_id",
        "data",
        "username",
    }
)

# Methods that are accepted and simply answered with ``True``.
_ACK_METHODS = frozenset(
    {"setmydescription", "setmyshortdescription", "setmyname", "setchatmenubutton"}
)


class FakeTelegramAPI(
    UpdatesMixin, FilesMixin, MessagesMixin, WebhookMixin, CommandsMixin, FaultsMixin
):
    """In-process fake Telegram Bot API server on 127.0.0.1 (ephemeral port)."""

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        """Value for ``ApplicationBuilder.base_url`` (PTB appends the token)."""
        return f"{self.origin}/bot"

    @property
    def base_file_url(self) -> str:
        """Value for ``ApplicationBuilder.base_file_url``."""
        return f"{self.origin}/file/bot"

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise RuntimeError("FakeTelegramAPI is not started")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Start listening on an ephemeral loopback port."""
        if self._runner is not None:
            return
        self._closing = False
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Wake pending long polls and shut the server down."""
        self._closing = True
        self._bump()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeTelegramAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- waiting and recorded calls

    async def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 5.0,  # noqa: ASYNC109 - documented test-helper API
    ) -> T:
        """Wait until ``predicate()`` is truthy and return its value.

        Re-evaluated on every API call / injected update (and every 50 ms);
        raises AssertionError listing recent calls on timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"FakeTelegramAPI.wait_for timed out after {timeout}s; "
                    f"recent calls (getUpdates omitted):\n{self.describe_calls()}"
                )
            await self._wait_changed(min(remaining, 0.05))

    async def wait_for_sent(
        self,
        chat_id: int | str | None = None,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - documented test-helper API
    ) -> list[JSONDict]:
        """Wait until at least ``count`` messages were sent (to ``chat_id``); return them."""

        def enough() -> list[JSONDict]:
            msgs = self.sent_messages(chat_id)
            return msgs if len(msgs) >= count else []

        return await self.wait_for(enough, timeout)

    def describe_calls(self, limit: int = 15) -> str:
        """Human readable list of the most recent non-getUpdates calls."""
        calls = [c for c in self.calls if c[0].lower() != "getupdates"][-limit:]
        if not calls:
            return "  (no calls)"
        return "\n".join(f"  {method} {_short(params)}" for method, params in calls)

    def timed_calls(self, method: str | None = None) -> list[tuple[float, str, JSONDict]]:
        """``(arrival time, method, params)`` of all calls (to ``method``, case-insensitive)."""
        lower = None if method is None else method.lower()
        return [
            (at, name, params)
            for at, (name, params) in zip(self.call_times, self.calls, strict=True)
            if lower is None or name.lower() == lower
        ]

    def calls_to(self, method: str) -> list[JSONDict]:
        """Params of all calls to ``method`` (case-insensitive)."""
        lower = method.lower()
        return [params for name, params in self.calls if name.lower() == lower]

    # ---------------------------------------------------------------- HTTP handlers

    async def _handle_api(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        method = request.match_info["method"]
        token = request.match_info["token"]
        params = await self._read_params(request)
        self.calls.append((method, params))
        self.call_times.append(arrived)
        try:
            if self.token is not None and token != self.token:
                raise ApiError(401, "Unauthorized")
            fault = self._take_fault(method.lower())
            if fault is not None:
                raise ApiError(fault.error_code, fault.description, fault.parameters)
            result = await self._dispatch(method, params)
        except ApiError as err:
            body = err.envelope()
            status = err.error_code
        else:
            body = {"ok": True, "result": result}
            status = 200
        finally:
            self._bump()
        return web.json_response(body, status=status)

    async def _read_params(self, request: web.Request) -> JSONDict:
        params: JSONDict = {k: _decode_form_value(k, v) for k, v in request.query.items()}
        if request.method != "POST" or not request.can_read_body:
            return params
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
            return params
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                params[key] = UploadedFile(
                    field=key,
                    filename=value.filename,
                    content_type=value.content_type,
                    data=value.file.read(),
                )
            else:
                params[key] = _decode_form_value(key, str(value))
        return params

    async def _dispatch(self, method: str, params: JSONDict) -> Any:
        name = method.lower()
        handler = self._handlers().get(name)
        if handler is not None:
            return await handler(params)
        if name in _ACK_METHODS:
            return True
        self.unknown_methods.append(method)
        raise ApiError(404, f"Not Found: method {method}")

    def _handlers(self) -> dict[str, Callable[[JSONDict], Awaitable[Any]]]:
        return {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "deletemessage": self._delete_message,
            "sendchataction": self._send_chat_action,
            "senddocument": self._send_document,
            "getfile": self._get_file,
            "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands,
            "deletemycommands": self._delete_my_commands,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "close": self._true,
            "logout": self._true,
            "answercallbackquery": self._answer_callback_query,
        }

    # ---------------------------------------------------------------- method implementations

    async def _true(self, params: JSONDict) -> bool:
        return True

    async def _get_me(self, params: JSONDict) -> JSONDict:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }


def _decode_form_value(key: str, value: str) -> Any:
    """Form values are strings; PTB JSON-encodes every non-string parameter."""
    if key in _STRING_FIELDS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _short(params: JSONDict, limit: int = 200) -> str:
    shown = {
        k: (f"<file {v.filename!r} {len(v.data)}B>" if isinstance(v, UploadedFile) else v)
        for k, v in params.items()
    }
    text = json.dumps(shown, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
