"""Gateway websocket plumbing: one connection (framing and zlib/zstd compression) and the
resumable session it carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .constants import _CLOSE_TIMEOUT


def _zstd_compressor() -> Callable[[bytes], bytes] | None:
    """Streaming zstd compressor matching discord.py's zstd-stream decoder, if available."""
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            return None
        std = zstd.ZstdCompressor()
        return lambda raw: std.compress(raw, mode=zstd.ZstdCompressor.FLUSH_BLOCK)
    cobj = zstandard.ZstdCompressor().compressobj()
    return lambda raw: cobj.compress(raw) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)


class _GatewayConn:
    """One websocket connection; serialises (and optionally compresses) outgoing frames."""

    def __init__(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        self.ws = ws
        self.compress = compress
        self.session: _Session | None = None
        self.closing = False
        self.lock = asyncio.Lock()
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd = _zstd_compressor() if compress == "zstd-stream" else None
        if compress not in (None, "zlib-stream", "zstd-stream") or (
            compress == "zstd-stream" and self._zstd is None
        ):
            raise ValueError(f"unsupported gateway compression {compress!r}")

    @property
    def alive(self) -> bool:
        return not self.closing and not self.ws.closed

    async def send(self, payload: Mapping[str, Any]) -> None:
        raw = json.dumps(payload, separators=(",", ":"))
        async with self.lock:
            if self._zlib is not None:
                data = self._zlib.compress(raw.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)
            elif self._zstd is not None:
                await self.ws.send_bytes(self._zstd(raw.encode()))
            else:
                await self.ws.send_str(raw)

    async def close(self, code: int, reason: str = "") -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode()), _CLOSE_TIMEOUT
            )


@dataclass
class _Session:
    session_id: str
    shard: tuple[int, int]
    intents: int
    order: int
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    conn: _GatewayConn | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ended: bool = False
