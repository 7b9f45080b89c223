"""HTTP response helpers of the Discord fake: JSON bodies and Discord's error envelopes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web


def _json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """JSON response with Content-Type exactly ``application/json`` (discord.py checks it)."""
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    return web.Response(status=status, body=json.dumps(data).encode(), headers=hdrs)


def _error(status: int, code: int, message: str, errors: Any = None) -> web.Response:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return _json_response(body, status)


def _form_error(path: Sequence[str], code: str, message: str) -> web.Response:
    """Discord's 50035 "Invalid Form Body" error with a nested ``errors`` tree."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path):
        errors = {key: errors}
    return _error(400, 50035, "Invalid Form Body", errors)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")
