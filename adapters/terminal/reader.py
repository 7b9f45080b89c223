"""Reading the terminal: lines of a file descriptor, on a daemon thread."""

from __future__ import annotations

import asyncio
import os
import threading


class LineReader:
    """Lines of a file descriptor, read on a daemon thread.

    A daemon thread (not the loop's default executor) so that Ctrl-C or SIGTERM never waits
    for the user to type a line: asyncio.run joins executor threads on exit. It reads the
    raw descriptor with ``os.read``: a thread blocked inside ``sys.stdin.buffer`` would hold
    the buffer's lock, and interpreter shutdown aborts on that lock. Bytes that are not
    UTF-8 are replaced by U+FFFD, visibly, instead of being dropped.
    """

    def __init__(self, fd: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._lines: asyncio.Queue[tuple[str, bool] | None] = asyncio.Queue()
        self._fd = fd
        threading.Thread(target=self._read, name="aipersona-stdin", daemon=True).start()

    def _put(self, item: tuple[str, bool] | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._lines.put_nowait, item)
        except RuntimeError:
            pass  # the loop is closed: nobody is listening any more

    def _emit(self, raw: bytes) -> None:
        try:
            self._put((raw.decode("utf-8"), False))
        except UnicodeDecodeError:
            self._put((raw.decode("utf-8", errors="replace"), True))

    def _read(self) -> None:
        pending = b""
        try:
            while chunk := os.read(self._fd, 65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._emit(raw + b"\n")
        except OSError:
            pass  # the descriptor was closed
        if pending:
            self._emit(pending)
        self._put(None)

    async def readline(self) -> tuple[str, bool] | None:
        """(line, had invalid bytes), or None at end of input."""
        return await self._lines.get()
