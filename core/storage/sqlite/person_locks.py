"""One person's turns, one at a time, across the processes that share a database file.

A POSIX record lock (``fcntl.lockf``) on one byte of a side file (``<database>-locks``): the
byte at offset = persona id. Record locks belong to the process, so the core's own per-person
lock serializes turns within a process and this one across processes; the kernel releases a
killed process's locks. An uncontended lock is one system call to take and one to release;
a held one is polled with a short backoff.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from types import TracebackType

RETRY_SECONDS = (0.002, 0.005, 0.01, 0.02, 0.05)


class _Held:
    __slots__ = ("_fd", "_offset")

    def __init__(self, fd: int, offset: int) -> None:
        self._fd, self._offset = fd, offset

    async def __aenter__(self) -> None:
        attempt = 0
        while True:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self._offset)
                return
            except OSError:  # another process holds this person: wait our turn
                await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
                attempt += 1

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self._offset)


class PersonLocks:
    def __init__(self, db_path: str) -> None:
        self.path = f"{db_path}-locks"
        self._fd: int | None = None

    def hold(self, persona_id: int) -> _Held:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return _Held(self._fd, persona_id)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
