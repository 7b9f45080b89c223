"""The user simulator, in the two steps of the paper's released code.

1. The **satisfaction check** plays the user (golden persona, scene description) and decides,
   after each assistant reply, whether the conversation met the user's goal. It may see the
   scene's ``expected_response`` as a reference ("another assistant's expected answer").
2. The **follow-up writer** plays the same user and writes the next message when the check
   says no. It sees the persona, the scene description, the scene context (facts the user
   knows) and the dialogue, and **never** the expected response, so it cannot coach the
   chatbot toward the reference.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from aipersona.core import LLMClient, LLMError, StructuredOutputError

from .clients import last_reply
from .data import Scene
from .roles import dumps, lang_name, marker, render_dialogue

log = logging.getLogger(__name__)

SATISFACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"satisfied": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["satisfied", "reason"],
    "additionalProperties": False,
}

FOLLOW_UP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
    "additionalProperties": False,
}


def satisfaction_messages(
    persona: dict[str, Any], scene: Scene, dialogue: list[dict[str, str]]
) -> list[dict[str, str]]:
    system = (
        f"{marker('satisfaction')}\n"
        "You play a real person, the user described below, who is talking to their everyday "
        "AI assistant. Understand the persona and the scene, put yourself in the user's "
        "place, and decide whether the conversation so far has reached what you (this user) "
        "wanted in this scene.\n\n"
        f"<persona>\n{dumps(persona)}\n</persona>\n\n"
        f"<scene>\n{scene.scene_type}\n{scene.scene_desc}\n</scene>\n\n"
        "<reference>(the answer another personalized assistant was expected to give; use it "
        "as a reference, the decision is yours)\n"
        f"{scene.expected_response}\n</reference>\n\n"
        'Reply with JSON only: {"satisfied": true|false, "reason": "<one sentence>"}'
    )
    user = f"<dialogue>\n{render_dialogue(dialogue)}\n</dialogue>\n\nAre you satisfied?"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def follow_up_messages(
    persona: dict[str, Any], scene: Scene, dialogue: list[dict[str, str]], lang: str
) -> list[dict[str, str]]:
    system = (
        f"{marker('follow-up')}\n"
        "You play a real person, the user described below, in a conversation with their "
        "everyday AI assistant on their device (apps, web search, conversation; nothing "
        "magical). Stay in character and never say that you are simulated.\n\n"
        f"<persona>\n{dumps(persona)}\n</persona>\n\n"
        f"<scene>\n{scene.scene_type}\n{scene.scene_desc}\n</scene>\n\n"
        "<context>(facts you know; a reference, not a script: share one only when the "
        f"assistant asks for it or needs it)\n{scene.scene_context}\n</context>\n\n"
        "The assistant knows you well, so do not restate who you are; only when its reply "
        "does not fit you or the situation, say what is missing. Do not be overly polite and "
        "do not ask the assistant what it needs: let it ask, then answer. People do not say "
        "everything at once: keep it to one short, natural message, in "
        f"{lang_name(lang)}. "
        'Reply with JSON only: {"message": "<your next message to the assistant>"}'
    )
    user = (
        f"<dialogue>\n{render_dialogue(dialogue)}\n</dialogue>\n\n"
        "You were not satisfied yet. Write your next message."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


@dataclass
class Satisfaction:
    satisfied: bool
    reason: str = ""
    error: str | None = None


@dataclass
class FollowUp:
    message: str
    error: str | None = None


@dataclass
class SimulatedUser:
    """The user of one session: the persona and scene both steps play."""

    llm: LLMClient
    persona: dict[str, Any]
    scene: Scene
    lang: str
    max_tokens: int

    async def check(self, dialogue: list[dict[str, str]]) -> Satisfaction:
        """Step 1: is the user satisfied with the conversation so far?"""
        messages = satisfaction_messages(self.persona, self.scene, dialogue)
        try:
            data = await self._ask(messages, SATISFACTION_SCHEMA, "satisfaction")
        except StructuredOutputError as exc:  # e.g. cut short by max_tokens: read the verdict
            match = re.search(r'"satisfied"\s*:\s*(true|false)', last_reply())
            if match is None:
                log.warning("satisfaction check failed: %s", exc)
                return Satisfaction(False, error=str(exc))
            data = {"satisfied": match.group(1) == "true", "reason": "(reply cut short)"}
        except LLMError as exc:
            log.warning("satisfaction check failed: %s", exc)
            return Satisfaction(False, error=str(exc))
        satisfied = data.get("satisfied")
        if isinstance(satisfied, str):
            satisfied = satisfied.strip().lower() in ("true", "yes", "1", "满意")
        if not isinstance(satisfied, bool):
            return Satisfaction(False, error="the satisfaction check gave no true/false")
        return Satisfaction(satisfied, str(data.get("reason") or ""))

    async def follow_up(self, dialogue: list[dict[str, str]]) -> FollowUp:
        """Step 2 (never shown the expected response): the user's next message."""
        messages = follow_up_messages(self.persona, self.scene, dialogue, self.lang)
        try:
            data = await self._ask(messages, FOLLOW_UP_SCHEMA, "follow_up")
        except LLMError as exc:
            log.warning("follow-up writer failed: %s", exc)
            return FollowUp("", error=str(exc))
        message = str(data.get("message") or "").strip()
        return FollowUp(message, None if message else "the follow-up writer wrote nothing")

    async def _ask(
        self, messages: list[dict[str, str]], schema: dict[str, Any], name: str
    ) -> dict[str, Any]:
        data, _ = await self.llm.complete_json(
            messages, schema=schema, name=name, max_tokens=self.max_tokens
        )
        return data if isinstance(data, dict) else {}
