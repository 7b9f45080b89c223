"""Application commands: the synced command registry and its REST routes, and turning
``send_interaction`` options into option objects with ``resolved`` data.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from .constants import ALL_PERMISSIONS
from .models import RecordedRequest
from .responses import _error, _form_error, _json_response
from .state import DiscordState

_COMMAND_NAME_RE = re.compile(r"^[-_\w]{1,32}$")


def _infer_option_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


class CommandsMixin(DiscordState):
    """Application command registry and routes."""

    @property
    def synced_commands(self) -> dict[int | None, list[dict[str, Any]]]:
        """Registered application commands by guild id (``None`` = global)."""
        return {k: copy.deepcopy(v) for k, v in self._commands.items()}

    def command_id(self, name: str, guild_id: int | None = None) -> int:
        """Id the fake assigned to a synced command."""
        for cmd in self._commands.get(guild_id, []):
            if cmd["name"] == name:
                return int(cmd["id"])
        raise KeyError(f"command {name!r} is not synced for guild {guild_id}")

    def _find_command(self, name: str, guild_id: int | None) -> dict[str, Any]:
        scopes = ([guild_id] if guild_id is not None else []) + [None]
        for scope in scopes:
            for cmd in self._commands.get(scope, []):
                if cmd["name"] == name and cmd["type"] == 1:
                    return cmd
        synced = {k: [c["name"] for c in v] for k, v in self._commands.items()}
        raise LookupError(f"command {name!r} is not synced for guild {guild_id}; synced: {synced}")

    def _build_options(
        self,
        cmd: Mapping[str, Any],
        options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
        guild_id: int | None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        if not options:
            return [], {}
        if not isinstance(options, Mapping):
            return [dict(o) for o in options], {}
        specs = {o["name"]: o for o in cmd.get("options") or []}
        out: list[dict[str, Any]] = []
        resolved: dict[str, dict[str, Any]] = {}
        for name, value in options.items():
            spec = specs.get(name)
            otype = int(spec["type"]) if spec else _infer_option_type(value)
            if otype in (6, 7, 8, 9):
                value = str(int(value))
                self._resolve_snowflake(otype, int(value), guild_id, resolved)
            out.append({"name": name, "type": otype, "value": value})
        return out, resolved

    def _resolve_snowflake(
        self, otype: int, sid: int, guild_id: int | None, resolved: dict[str, dict[str, Any]]
    ) -> None:
        guild = self._guilds.get(guild_id) if guild_id is not None else None
        roles = {r.id: r for r in guild.roles} if guild else {}
        if otype in (8, 9) and guild is not None and (sid in roles or sid == guild.id):
            role = next(r for r in self._roles_payload(guild) if int(r["id"]) == sid)
            resolved.setdefault("roles", {})[str(sid)] = role
        elif otype == 7 and sid in self._channels:
            channel = copy.deepcopy(self._channels[sid])
            channel["permissions"] = str(ALL_PERMISSIONS)
            resolved.setdefault("channels", {})[str(sid)] = channel
        elif otype in (6, 9):
            resolved.setdefault("users", {})[str(sid)] = copy.deepcopy(self._ensure_user(sid))
            if guild_id is not None and sid in self._members.get(guild_id, {}):
                member = self._member_payload(guild_id, sid, with_user=False)
                member["permissions"] = str(self._permissions(guild_id, sid))
                resolved.setdefault("members", {})[str(sid)] = member

    # ------------------------------------------------------------------ REST: app commands

    def _commands_scope(self, app_id: str, guild_id: str | None) -> int | web.Response | None:
        if int(app_id) != self.application_id:
            return _error(403, 50001, "Missing Access")
        if guild_id is None:
            return None
        if int(guild_id) not in self._guilds:
            return _error(403, 50001, "Missing Access")
        return int(guild_id)

    def _normalise_command(
        self, raw: Mapping[str, Any], scope: int | None, previous: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        ctype = int(raw.get("type") or 1)
        old = next((c for c in previous if c["name"] == raw["name"] and c["type"] == ctype), None)
        cmd: dict[str, Any] = {
            "id": old["id"] if old else str(self._snowflake()),
            "application_id": str(self.application_id),
            "version": str(self._snowflake()),
            "type": ctype,
            "name": raw["name"],
            "name_localizations": raw.get("name_localizations"),
            "description": raw.get("description") or "",
            "description_localizations": raw.get("description_localizations"),
            "options": copy.deepcopy(raw.get("options") or []),
            "default_member_permissions": raw.get("default_member_permissions"),
            "dm_permission": raw.get("dm_permission", True),
            "nsfw": bool(raw.get("nsfw", False)),
            "contexts": raw.get("contexts"),
            "integration_types": raw.get("integration_types") or [0],
        }
        if scope is not None:
            cmd["guild_id"] = str(scope)
        return cmd

    @staticmethod
    def _validate_command(raw: Any, index: int | None) -> web.Response | None:
        path = [] if index is None else [str(index)]
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            return _form_error([*path, "name"], "BASE_TYPE_REQUIRED", "This field is required")
        name, ctype = raw["name"], int(raw.get("type") or 1)
        if ctype == 1:
            if not _COMMAND_NAME_RE.fullmatch(name) or name != name.lower():
                return _form_error(
                    [*path, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                )
            description = raw.get("description") or ""
            if not 1 <= len(description) <= 100:
                return _form_error(
                    [*path, "description"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                )
        if len(raw.get("options") or []) > 25:
            return _form_error(
                [*path, "options"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
            )
        return None

    async def _r_get_commands(
        self, rec: RecordedRequest, app_id: str, guild_id: str | None = None
    ) -> web.Response:
        scope = self._commands_scope(app_id, guild_id)
        if isinstance(scope, web.Response):
            return scope
        return _json_response(self._commands.get(scope, []))

    async def _r_put_commands(
        self, rec: RecordedRequest, app_id: str, guild_id: str | None = None
    ) -> web.Response:
        scope = self._commands_scope(app_id, guild_id)
        if isinstance(scope, web.Response):
            return scope
        if not isinstance(rec.json, list):
            return _error(400, 50109, "The request body contains invalid JSON.")
        if len(rec.json) > 100:
            return _form_error([], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        seen: set[tuple[str, int]] = set()
        for index, raw in enumerate(rec.json):
            error = self._validate_command(raw, index)
            if error is not None:
                return error
            key = (raw["name"], int(raw.get("type") or 1))
            if key in seen:
                return _form_error(
                    [str(index), "name"],
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    "Application command names must be unique",
                )
            seen.add(key)
        previous = self._commands.get(scope, [])
        self._commands[scope] = [self._normalise_command(r, scope, previous) for r in rec.json]
        return _json_response(self._commands[scope])

    async def _r_post_command(
        self, rec: RecordedRequest, app_id: str, guild_id: str | None = None
    ) -> web.Response:
        scope = self._commands_scope(app_id, guild_id)
        if isinstance(scope, web.Response):
            return scope
        error = self._validate_command(rec.json, None)
        if error is not None:
            return error
        previous = self._commands.setdefault(scope, [])
        cmd = self._normalise_command(rec.json, scope, previous)
        created = not any(c["id"] == cmd["id"] for c in previous)
        self._commands[scope] = [c for c in previous if c["id"] != cmd["id"]] + [cmd]
        return _json_response(cmd, 201 if created else 200)
