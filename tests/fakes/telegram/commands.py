"""Bot commands: setMyCommands, getMyCommands and deleteMyCommands per scope and language."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .models import ApiError, JSONDict, _norm_chat_id
from .state import TelegramState

_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")


class CommandsMixin(TelegramState):
    """The command methods and :meth:`commands_for`."""

    def commands_for(
        self, scope: Mapping[str, Any] | None = None, language_code: str | None = None
    ) -> list[JSONDict] | None:
        """Commands stored by setMyCommands for that scope/language (None if never set)."""
        return self.commands.get(_scope_key(scope, language_code))

    async def _set_my_commands(self, params: JSONDict) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        cleaned: list[JSONDict] = []
        for cmd in commands:
            if not isinstance(cmd, dict):
                raise ApiError(400, "Bad Request: can't parse commands JSON object")
            command = str(cmd.get("command", "")).removeprefix("/")
            description = str(cmd.get("description", ""))
            if not _COMMAND_RE.fullmatch(command):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(description) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": command, "description": description})
        key = _scope_key(params.get("scope"), params.get("language_code"))
        if cleaned:
            self.commands[key] = cleaned
        else:
            self.commands.pop(key, None)
        return True

    async def _get_my_commands(self, params: JSONDict) -> list[JSONDict]:
        key = _scope_key(params.get("scope"), params.get("language_code"))
        return list(self.commands.get(key, []))

    async def _delete_my_commands(self, params: JSONDict) -> bool:
        self.commands.pop(_scope_key(params.get("scope"), params.get("language_code")), None)
        return True


def _scope_key(scope: Mapping[str, Any] | None, language_code: str | None = None) -> str:
    """``default``, ``all_private_chats``, ``chat:<id>``, ``chat_member:<chat>:<user>`` …

    A language code is appended as ``/<code>``.
    """
    if not scope:
        key = "default"
    else:
        key = str(scope.get("type", "default"))
        if scope.get("chat_id") is not None:
            key += f":{_norm_chat_id(scope['chat_id'])}"
        if scope.get("user_id") is not None:
            key += f":{scope['user_id']}"
    if language_code:
        key += f"/{language_code}"
    return key
