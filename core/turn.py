"""The chat turn: one user message in, one reply out.

check the text -> resolve the person -> (their lock) storage stores the message and returns
the persona and history -> the token budgets -> hooks -> the chatbot answers (tools,
streaming) -> storage stores the reply and the tokens it cost. The user's message is stored
before the model is called, so a failing model, or a spent budget, loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from .chatbot import Chatbot, TurnResult
from .config import ChatSettings, LimitSettings
from .editing import PersonaEditor
from .errors import LLMError, PersonaNotFound
from .hooks import Hooks
from .learning import LearningLoop
from .locks import PersonLock
from .schema import clean_text
from .storage import Storage, Tokens
from .types import Identity, Reply, TurnStart

log = logging.getLogger(__name__)

OnDelta = Callable[[str], Awaitable[None]]


def too_long_text(length: int, limit: int) -> str:
    return (
        f"Your message is too long ({length:,} characters; the limit is {limit:,}). "
        "Please shorten it."
    )


class TurnRunner:
    def __init__(
        self,
        storage: Storage,
        chatbot: Chatbot,
        editor: PersonaEditor,
        learning: LearningLoop,
        hooks: Hooks,
        locks: PersonLock,
        *,
        chat: ChatSettings,
        max_input_chars: int,
        limits: LimitSettings | None = None,
        notice: str = "",
    ) -> None:
        self.storage = storage
        self.chatbot = chatbot
        self.editor = editor
        self.learning = learning
        self.hooks = hooks
        self.locks = locks
        self.chat = chat
        self.max_input_chars = max_input_chars
        self.limits = limits or LimitSettings()
        self.notice = notice.strip()

    def checked(self, text: str) -> tuple[str, Reply | None]:
        """The cleaned text, or the reply to a message that cannot be taken (empty or too
        long: ``Reply.error`` is "empty" or "too_long")."""
        limit = self.max_input_chars
        if len(text) <= 4 * limit:  # far over the limit: refuse before cleaning megabytes
            text = clean_text(text)
            if not text:
                return text, Reply("Your message is empty.", ok=False, error="empty")
        if len(text) > limit:
            return text, Reply(too_long_text(len(text), limit), ok=False, error="too_long")
        return text, None

    async def respond(
        self, identity: Identity, chat_id: str, text: str, on_delta: OnDelta | None = None
    ) -> Reply:
        text, refused = self.checked(text or "")
        if refused is not None:
            return refused
        for _attempt in range(3):
            persona_id = await self.storage.resolve_persona(identity)
            async with self.locks.hold(persona_id):
                start = await self.storage.begin_turn(
                    persona_id, identity, chat_id, text, time.time()
                )
                if start is not None:
                    return await self._answer(identity, chat_id, text, on_delta, start)
            # the identity was linked or forgotten meanwhile: resolve it again
        raise PersonaNotFound(f"identity {identity.platform}:{identity.user_id} keeps changing")

    async def _answer(
        self,
        identity: Identity,
        chat_id: str,
        text: str,
        on_delta: OnDelta | None,
        start: TurnStart,
    ) -> Reply:
        """Hooks, prompt, model call, reply stored. The caller holds the persona lock."""
        context = self.editor.context(start.persona_id, identity, chat_id, start.session_id)
        if start.ended_sessions:  # the previous session went idle: it ends now
            await self.learning.sessions_ended(context, start.ended_sessions, "idle")
        notice = self.notice if start.first_contact and self.notice else None
        if await self._over_budget(start.persona_id, identity.platform, chat_id):
            text = self.limits.budget_message
            return Reply(text, False, "budget", start.persona_id, start.session_id, notice=notice)
        hooks = self.hooks
        if hooks.has("aipersona_message_received"):
            await hooks.notify("aipersona_message_received", context=context, text=text)
        sections: list[str] = []
        if hooks.has("aipersona_build_prompt"):
            sections = [
                section
                for _, section in await hooks.collect(
                    "aipersona_build_prompt", persona=start.persona, context=context
                )
                if isinstance(section, str)
            ]
        messages = self.chatbot.messages(
            self.chat.system_prompt, start.persona, sections, start.history, text
        )
        reply = Reply("", persona_id=start.persona_id, session_id=start.session_id, notice=notice)
        turn = TurnResult("")
        try:
            if on_delta is None:
                turn = await self.chatbot.reply(messages, context)
            else:
                async for delta in self.chatbot.stream(messages, context, turn):
                    await on_delta(delta)
        except LLMError as exc:
            log.warning("chat reply failed for persona %s: %s", start.persona_id, exc)
            reply.text, reply.ok, reply.error = self.chat.apology, False, "llm_unavailable"
            return reply
        reply.text = turn.text.strip() or "…"
        reply.tool_results = turn.tool_results
        reply.prompt_tokens, reply.completion_tokens = turn.prompt_tokens, turn.completion_tokens
        tokens = Tokens(turn.prompt_tokens, turn.completion_tokens)
        await self.storage.add_reply(
            start.persona_id, identity.platform, chat_id, reply.text, time.time(), tokens
        )
        return reply

    async def _over_budget(self, persona_id: int, platform: str, chat_id: str) -> bool:
        """True if the person's or the chat's tokens today reached its budget (one read, only
        when a budget is set)."""
        per_user, per_chat = (
            self.limits.tokens_per_user_per_day,
            self.limits.tokens_per_chat_per_day,
        )
        if per_user <= 0 and per_chat <= 0:
            return False
        used = await self.storage.usage(persona_id, platform, chat_id, time.time())
        return (0 < per_user <= used.today) or (0 < per_chat <= used.chat_today)
