"""The bridge between a platform's translator and the core: written once, used by all.

A message: the gate decides (silence, a notice, or chat) -> the speaker's turn in that chat
(their messages are answered in order) -> ``PersonaCore.respond`` with "typing…" shown ->
the reply posted, split, or streamed by edits -> the core's refusals ("too_long",
"empty") told in the kit's words (a spent budget and the model-down apology are the
core's, shown as they are) -> on a person's first message ever, the privacy notice, after
the reply (privately when it was said in a group and the platform can). A command: the
gate (allow-lists, rate limit) -> the command's handler -> its answer delivered, privately
when it shows persona data and the command came from a chat others see. Errors never
reach the platform library: failed sends are logged, anything else is logged and the user
told that something went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from aipersona.core import PersonaCore, Reply

from . import texts
from .commands import COMMANDS, Answer, CommandCall, CommandSpec, slash_usage
from .gate import Action, Gate
from .incoming import Incoming
from .outlets import AnswerOutlet, ReplyOutlet
from .settings import AdapterSettings
from .streaming import EditStream

log = logging.getLogger(__name__)

Usage = Callable[[CommandSpec], str]


class Bridge:
    """One platform's kit: its gate, its command table and the turn order of its chats.

    ``usage`` writes a command as the platform's users type it (for the help text),
    ``how_to_talk`` is the help's sentence on how to reach the bot, and ``message_limit``
    the platform's longest message (0: none), which a command answer that comes in pages
    (the persona history) fits in.
    """

    def __init__(
        self,
        core: PersonaCore,
        settings: AdapterSettings,
        *,
        commands: Sequence[CommandSpec] = COMMANDS,
        usage: Usage = slash_usage,
        how_to_talk: str = texts.HOW_TO_TALK,
        message_limit: int = 0,
    ) -> None:
        self.core = core
        self.settings = settings
        self.gate = Gate(settings, on_limited=lambda: core.metrics.refused("rate_limit"))
        self.commands = tuple(commands)
        self._by_name = {spec.name: spec for spec in self.commands}
        self._usage = usage
        self._how_to_talk = how_to_talk
        self.message_limit = message_limit
        self._turns: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # -- what translators call --------------------------------------------------------------

    async def on_message(self, msg: Incoming, outlet: ReplyOutlet) -> None:
        """Answer a chat message (or say nothing, or give a notice)."""
        verdict = self.gate.admit(msg)  # decided before any await: arrival order holds
        if verdict.action is Action.IGNORE:
            return
        if verdict.action is Action.NOTICE:
            work = self._post(outlet, verdict.text, formatted=False)
        else:
            work = self._chat(msg, verdict.text, outlet)
        await self._guarded(work, outlet, lambda: self._post(outlet, texts.SOMETHING_WENT_WRONG))

    async def on_command(self, name: str, arg: str, msg: Incoming, outlet: AnswerOutlet) -> None:
        """Run the command ``name`` of the table with ``arg`` and deliver its answer."""
        spec = self._by_name[name]
        verdict = self.gate.admit_command(msg, limited=spec.limited)
        if verdict.action is Action.IGNORE:
            return
        work: Coroutine[Any, Any, object]
        if verdict.action is Action.NOTICE:
            if verdict.repeat and not outlet.must_answer:
                return
            work = outlet.answer(Answer(verdict.text, private=False), privately=False)
        else:
            work = self._command(spec, arg, msg, outlet)

        def sorry() -> Coroutine[Any, Any, bool]:
            return outlet.answer(Answer(texts.SOMETHING_WENT_WRONG, private=False), privately=False)

        await self._guarded(work, outlet, sorry)

    def command(self, text: str, prefix: str = "/") -> tuple[CommandSpec, str] | None:
        """``/name arg`` as ``(spec, arg)`` if ``name`` is in the table (case-insensitive),
        else None (for platforms without their own command parser)."""
        body = text[len(prefix) :] if text.startswith(prefix) else ""
        if not body or body[0].isspace():
            return None
        head, *rest = body.split(maxsplit=1)
        spec = self._by_name.get(head.lower())
        return (spec, rest[0].strip() if rest else "") if spec is not None else None

    def help_text(self) -> str:
        lines = [(self._usage(spec), spec.description) for spec in self.commands]
        return texts.help_text(lines, self._how_to_talk)

    @contextlib.asynccontextmanager
    async def turn(self, msg: Incoming) -> AsyncIterator[None]:
        """The speaker's turn in this chat: their messages and /end run one at a time, in
        the order they came (the lock is queued for without suspending first)."""
        lock = self._turns.get(msg.speaker)
        if lock is None:
            lock = self._turns[msg.speaker] = asyncio.Lock()
        async with lock:
            yield

    # -- chat -------------------------------------------------------------------------------

    async def _chat(self, msg: Incoming, text: str, outlet: ReplyOutlet) -> None:
        s = self.settings
        async with self.turn(msg):
            typing = outlet.typing() if s.typing else contextlib.nullcontext()
            if not s.stream_edits:
                async with typing:
                    reply = await self.core.respond(msg.identity, msg.chat_id, text)
                await self._post(outlet, self._reply_text(reply, text), formatted=reply.ok)
                await self._notice(msg, reply, outlet)
            else:
                stream = EditStream(
                    lambda chunk, i, final: outlet.send(
                        chunk, first=i == 0, formatted=True, final=final
                    ),
                    lambda sent, chunk, final: outlet.edit(
                        sent, chunk, formatted=True, final=final
                    ),
                    outlet.delete,
                    lambda whole: outlet.chunks(whole, formatted=True),
                    s.stream_edit_interval,
                )
                async with typing:
                    reply = await self.core.respond(
                        msg.identity, msg.chat_id, text, on_delta=stream.feed
                    )
                final = self._reply_text(reply, text)
                if not reply.ok and stream.text.strip():
                    final = f"{stream.text.strip()}\n\n{final}"  # keep the partial answer
                await stream.finish(final)
                await self._notice(msg, reply, outlet)
        if not reply.ok:
            log.info("reply to %s not ok (%s)", msg.identity.user_id, reply.error)

    def _reply_text(self, reply: Reply, text: str) -> str:
        """The reply, or the core's refusal in the kit's words (the apology is the core's)."""
        if reply.error == "too_long":
            return texts.too_long(len(text), self.core.max_input_chars)
        if reply.error == "empty":
            return texts.EMPTY
        return reply.text

    async def _notice(self, msg: Incoming, reply: Reply, outlet: ReplyOutlet) -> None:
        """The privacy notice (``[privacy] notice``), on the person's first message only,
        as plain text: into a group's chat only when it can't be sent privately."""
        if not reply.notice:
            return
        if msg.private or not await outlet.send_private(reply.notice):
            await self._post(outlet, reply.notice)

    async def _post(self, outlet: ReplyOutlet, text: str, *, formatted: bool = False) -> None:
        """Post ``text`` as one or more messages (the first quoting where the platform does)."""
        for i, chunk in enumerate(outlet.chunks(text, formatted=formatted)):
            if await outlet.send(chunk, first=i == 0, formatted=formatted, final=True) is None:
                return

    # -- commands ---------------------------------------------------------------------------

    async def _command(
        self, spec: CommandSpec, arg: str, msg: Incoming, outlet: AnswerOutlet
    ) -> None:
        await outlet.acknowledge()
        call = CommandCall(
            self.core, msg, arg, self.help_text, lambda: self.turn(msg), self.message_limit
        )
        answer = await spec.handler(call)
        if not answer.private or msg.private:
            await outlet.answer(answer, privately=False)
            return
        if await outlet.answer(answer, privately=True):
            notice = texts.SENT_PRIVATELY
        else:
            notice = outlet.private_closed(spec.name)
        await outlet.answer(Answer(notice, private=False), privately=False)

    # -- errors -----------------------------------------------------------------------------

    @staticmethod
    async def _guarded(
        work: Coroutine[Any, Any, Any],
        outlet: ReplyOutlet | AnswerOutlet,
        sorry: Callable[[], Coroutine[Any, Any, Any]],
    ) -> None:
        """Run ``work``: a failed send is logged; anything else is logged and the user told."""
        errors = outlet.delivery_errors
        try:
            await work
            return
        except errors as exc:
            log.warning("sending failed: %s", exc)
            return
        except Exception:
            log.exception("answering failed")
        try:
            await sorry()
        except errors as exc:
            log.warning("sending failed: %s", exc)
