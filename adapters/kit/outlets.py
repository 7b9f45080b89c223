"""What a platform implements: the way back from the kit to one chat.

A translator makes an :class:`Incoming` of a platform event and hands it to the
:class:`~.bridge.Bridge` with an outlet for answering it: a :class:`ReplyOutlet` for chat
messages (post, edit and delete messages, show "typing…") and an :class:`AnswerOutlet` for
commands (deliver an :class:`~.commands.Answer` where it was asked or privately). A message
based platform implements both in one class; Discord's slash commands only the second.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from .commands import Answer


class ReplyOutlet(Protocol):
    """Posting into the chat a message came from."""

    @property
    def delivery_errors(self) -> tuple[type[Exception], ...]:
        """The platform's errors for a failed send: logged by the kit, never answered."""
        ...

    def chunks(self, text: str, *, formatted: bool) -> list[str]:
        """``text`` split into messages the platform accepts. ``formatted`` texts are the
        model's Markdown (a platform may convert it); the kit's own texts are plain."""
        ...

    async def send(self, chunk: str, *, first: bool, formatted: bool, final: bool) -> Any:
        """Post one chunk (the ``first`` one of a reply may quote the message it answers).

        Returns a handle for :meth:`edit` and :meth:`delete`, or None if the platform
        refused (nothing more of this reply is sent). ``final`` is False for a streaming
        draft, which must not wait long (e.g. for flood control): raise
        :class:`~.streaming.Pause` instead.
        """
        ...

    async def edit(self, sent: Any, chunk: str, *, formatted: bool, final: bool) -> None: ...

    async def delete(self, sent: Any) -> None: ...

    def typing(self) -> AbstractAsyncContextManager[None]:
        """Show that the bot is working while the block runs (never failing the turn)."""
        ...

    async def send_private(self, text: str) -> bool:
        """Send ``text`` (plain, the kit's own) to the speaker's private chat with the bot;
        False if the platform can't (the private chat is closed to the bot, or there is
        none). Used for the privacy notice of a message said in a group."""
        ...


class AnswerOutlet(Protocol):
    """Answering a command."""

    @property
    def delivery_errors(self) -> tuple[type[Exception], ...]: ...

    @property
    def must_answer(self) -> bool:
        """True where silence is an error (a slash command): repeated rate-limit notices
        are then given again instead of being left out."""
        ...

    async def acknowledge(self) -> None:
        """The command was accepted and its answer may take a moment (e.g. defer a slash
        command); most platforms do nothing."""
        ...

    async def answer(self, answer: Answer, *, privately: bool) -> bool:
        """Deliver ``answer`` (its text, split as needed, and its file): where the command was
        given, or with ``privately`` to the user's private chat. Returns False if the private
        chat is closed to the bot."""
        ...

    def private_closed(self, command: str) -> str:
        """The notice (from ``texts``) for a user whose private chat is closed to the bot."""
        ...
