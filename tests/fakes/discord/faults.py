"""Fault injection: make the next matching REST requests fail (429 with rate-limit headers by
default).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .models import _Fault
from .responses import _json_response
from .state import DiscordState


class FaultsMixin(DiscordState):
    """``fail_next`` and the lookup the REST router uses."""

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int = 429,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        times: int = 1,
        retry_after: float = 0.01,
    ) -> None:
        """Make the next ``times`` matching REST requests fail.

        ``method`` may be ``*``; ``path_regex`` is searched in the path relative to
        ``/api/v10`` (e.g. ``r"/channels/5001/messages$"``). A 429 gets Discord's rate-limit
        body and ``X-RateLimit-*``/``Retry-After`` headers (plus ``Via``, without which
        discord.py treats a 429 as a Cloudflare ban) so discord.py sleeps ``retry_after``
        seconds and retries.
        """
        hdrs: dict[str, str] = {}
        if status == 429:
            if body is None:
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": retry_after,
                    "global": False,
                }
            hdrs = {
                "Retry-After": str(max(1, int(retry_after + 0.999))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                "X-RateLimit-Bucket": "fake-bucket",
                "X-RateLimit-Scope": "user",
                "Via": "1.1 google",
            }
        elif body is None:
            body = {"message": f"{status}: Injected failure", "code": 0}
        hdrs.update(headers or {})
        self._faults.append(
            _Fault(method.upper(), re.compile(path_regex), status, body, hdrs, times)
        )

    def _take_fault(self, method: str, path: str) -> web.Response | None:
        for fault in self._faults:
            if fault.method in ("*", method) and fault.pattern.search(path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                if isinstance(fault.body, (dict, list)):
                    return _json_response(fault.body, fault.status, fault.headers)
                body = fault.body.encode() if isinstance(fault.body, str) else fault.body
                return web.Response(status=fault.status, body=body, headers=fault.headers)
        return None
