"""Streaming a reply by editing messages: the one algorithm, for every platform.

The first piece of text is sent at once; later pieces edit the messages at most every
``interval`` seconds; text beyond one message continues in new messages (``chunker`` decides
the split). ``finish`` puts the exact final text in place and deletes drafts it no longer
needs. The platform gives three callables:

* ``send(chunk, index, final)``: post a new message (``index`` 0 is the first of the reply),
  return a handle for later edits, or None if the platform refused (then nothing more is
  tried, e.g. without permission to post);
* ``edit(handle, chunk, final)``: replace a posted message's text;
* ``delete(handle)``: remove a draft.

While drafting (``final`` False) a failed send or edit is logged and streaming goes on (the
final render tries again); a callable may raise :class:`Pause` to hold the drafts back for a
while (flood control). The final render's errors reach the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Send = Callable[[str, int, bool], Awaitable[Any]]
Edit = Callable[[Any, str, bool], Awaitable[None]]
Delete = Callable[[Any], Awaitable[None]]
Chunker = Callable[[str], list[str]]


class Pause(Exception):
    """Raised by a draft send or edit: show no drafts for ``seconds`` (the text keeps coming)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"pause drafts for {seconds:.1f} s")
        self.seconds = seconds


class EditStream:
    """One reply shown while it is generated. Feed :meth:`feed` to the core's ``on_delta``."""

    def __init__(
        self,
        send: Send,
        edit: Edit,
        delete: Delete,
        chunker: Chunker,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send, self._edit, self._delete = send, edit, delete
        self._chunker = chunker
        self.interval = interval
        self._clock = clock
        self.text = ""  # everything fed so far
        self._posted: list[Any] = []
        self._shown: list[str] = []
        self._next = float("-inf")
        self._refused = False

    @property
    def posted(self) -> list[Any]:
        """The handles of the messages that make up the reply now."""
        return list(self._posted)

    async def feed(self, delta: str) -> None:
        self.text += delta
        now = self._clock()
        if now < self._next or not self.text.strip():
            return
        self._next = now + self.interval
        try:
            await self._render(self.text, final=False)
        except Pause as pause:
            self._next = now + pause.seconds
        except Exception as exc:  # a draft failed: the model keeps going, finish() retries
            log.warning("streaming draft failed: %s", exc)

    async def finish(self, text: str) -> list[Any]:
        """Show exactly ``text``; returns the handles of its messages."""
        await self._render(text, final=True)
        return self.posted

    async def _render(self, text: str, *, final: bool) -> None:
        if self._refused:
            return
        chunks = self._chunker(text)
        for i, chunk in enumerate(chunks):
            if i < len(self._posted):
                if self._shown[i] != chunk:
                    await self._edit(self._posted[i], chunk, final)
                    self._shown[i] = chunk
                continue
            handle = await self._send(chunk, i, final)
            if handle is None:
                self._refused = True
                return
            self._posted.append(handle)
            self._shown.append(chunk)
        if final:
            while len(self._posted) > len(chunks):
                extra = self._posted.pop()
                self._shown.pop()
                try:
                    await self._delete(extra)
                except Exception as exc:
                    log.warning("could not delete a draft message: %s", exc)
