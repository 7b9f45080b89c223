"""One person at a time: their turns, commands and persona updates run one after another,
different people in parallel.

The locks are class-based context managers, not ``@asynccontextmanager`` generators: they
sit on every message's path, and each generator layer cost several microseconds there
(BENCHMARKS.md, section 7).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from contextlib import AbstractAsyncContextManager
from types import TracebackType


class _Held:
    """Holding one key of a ``KeyedLocks``."""

    __slots__ = ("_key", "_lock", "_owner")

    def __init__(self, owner: KeyedLocks, key: Hashable) -> None:
        self._owner, self._key = owner, key
        self._lock: asyncio.Lock | None = None

    async def __aenter__(self) -> None:
        locks = self._owner._locks
        lock, users = locks.get(self._key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        locks[self._key] = (lock, users + 1)
        self._lock = lock
        try:
            await lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._lock is not None
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        locks = self._owner._locks
        lock, users = locks[self._key]
        if users <= 1:
            del locks[self._key]
        else:
            locks[self._key] = (lock, users - 1)


class KeyedLocks:
    """A lock per key, created on first use and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    def hold(self, key: Hashable) -> AbstractAsyncContextManager[None]:
        return _Held(self, key)

    def __len__(self) -> int:
        return len(self._locks)


class _PersonHeld:
    __slots__ = ("_local", "_shared")

    def __init__(
        self, local: AbstractAsyncContextManager[None], shared: AbstractAsyncContextManager[None]
    ) -> None:
        self._local, self._shared = local, shared

    async def __aenter__(self) -> None:
        await self._local.__aenter__()
        try:
            await self._shared.__aenter__()
        except BaseException as exc:
            await self._local.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._shared.__aexit__(kind, exc, tb)
        finally:
            await self._local.__aexit__(kind, exc, tb)


class PersonLock:
    """A person's lock: within this process (asyncio), then across every process sharing the
    store (``Storage.person_lock``). Everything that reads and then writes one person's
    sessions or persona holds it, so two workers never interleave one person's turn."""

    def __init__(self, shared: Callable[[int], AbstractAsyncContextManager[None]]) -> None:
        self._local = KeyedLocks()
        self._shared = shared

    def hold(self, persona_id: int) -> AbstractAsyncContextManager[None]:
        return _PersonHeld(self._local.hold(persona_id), self._shared(persona_id))

    def __len__(self) -> int:
        return len(self._local)
