"""One scripted user, the fake models that answer them, and a way to play the conversation.

30 sessions of 4 messages, 19 facts stated now and then, 6 of them changing later. Each
fact-bearing message carries the edits an ideal optimizer (or a tool-following chat model)
makes for it, in ``(field, op, value)`` form. ``play`` runs it through ``PersonaCore`` and the
real ``openai`` client against ``FakeOpenAI``: the chat model answers every message with the
same ~45-token reply (``record_facts``: it first calls the persona tool for each fact a
message states); the optimizer returns the edits of the scripted facts it finds in the
transcripts it is sent. ``benchmarks/conversation_cost.py`` and the prompt-budget test use it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aipersona.core import Config, Identity, PersonaCore
from tests.fakes.openai_server import FakeOpenAI, Json, Tools, kind_of

SESSIONS = 30
TURNS = 4

Edit = tuple[str, str, Any]


@dataclass(frozen=True)
class Said:
    session: int  # 1-based
    turn: int  # 1-based
    text: str
    edits: tuple[Edit, ...]
    change: bool = False  # a fact that replaces an earlier one


FACTS = "Memory.Facts"

SCRIPT: tuple[Said, ...] = (
    Said(1, 1, "Hi! I'm Ana, by the way.", (("Demographics.Name", "set", "Ana"),)),
    Said(
        2,
        2,
        "I'm 34 and I work as a nurse at a children's hospital.",
        (
            ("Demographics.Age", "set", 34),
            ("Demographics.Career_Information", "set", "nurse at a children's hospital"),
        ),
    ),
    Said(3, 1, "I live in Lyon, near the old town.", (("Demographics.Location", "set", "Lyon"),)),
    Said(4, 3, "My partner Sam is cooking tonight.", ((FACTS, "append", ["partner: Sam"]),)),
    Said(5, 2, "I'm vegetarian, so no meat please.", ((FACTS, "append", ["vegetarian"]),)),
    Said(
        6,
        1,
        "I speak French and English at home.",
        (("Demographics.Language", "append", ["French", "English"]),),
    ),
    Said(7, 4, "I'm Portuguese originally.", (("Demographics.Nationality", "set", "Portuguese"),)),
    Said(
        8,
        2,
        "I love climbing on weekends.",
        (("Personality.Values_and_Interests", "append", ["climbing"]),),
    ),
    Said(
        9,
        3,
        "Jazz is my favourite music.",
        (("Personality.Values_and_Interests", "append", ["jazz"]),),
    ),
    Said(10, 1, "Our cat Miso knocked over my coffee.", ((FACTS, "append", ["cat: Miso"]),)),
    Said(
        11,
        2,
        "Keep answers short, please.",
        (("Preference.Preferred_Styles", "set", "short answers"),),
    ),
    Said(
        12,
        3,
        "Bullet lists work best for me.",
        (("Preference.Preferred_Formats", "set", "bullet lists"),),
    ),
    Said(
        13,
        1,
        "I'm training for a marathon in October.",
        ((FACTS, "append", ["training for a marathon in October"]),),
    ),
    Said(
        14,
        4,
        "My sister's wedding is on 12 June.",
        ((FACTS, "append", ["sister's wedding on 12 June"]),),
    ),
    Said(
        15,
        2,
        "I'm quite introverted, honestly.",
        (("Personality.Extraversion_or_Introversion", "set", "I"),),
    ),
    Said(
        16,
        1,
        "As a woman in healthcare I get that a lot.",
        (("Demographics.Gender", "set", "woman"),),
    ),
    Said(17, 3, "My birthday is on 3 March.", ((FACTS, "append", ["birthday: 3 March"]),)),
    Said(18, 2, "I started learning German.", ((FACTS, "append", ["learning German"]),)),
    # the changes
    Said(
        20,
        2,
        "Big news: we moved to Berlin last week.",
        (("Demographics.Location", "set", "Berlin"),),
        change=True,
    ),
    Said(21, 1, "It was my birthday, I'm 35 now.", (("Demographics.Age", "set", 35),), change=True),
    Said(
        23,
        3,
        "I'm head nurse on my ward now.",
        (("Demographics.Career_Information", "set", "head nurse at a children's hospital"),),
        change=True,
    ),
    Said(
        24,
        2,
        "I switched from vegetarian to pescatarian.",
        ((FACTS, "remove", ["vegetarian"]), (FACTS, "append", ["pescatarian"])),
        change=True,
    ),
    Said(
        26,
        1,
        "Actually, I now prefer detailed answers.",
        (("Preference.Preferred_Styles", "set", "detailed answers"),),
        change=True,
    ),
    Said(
        28,
        4,
        "The marathon is done; now I'm training for a triathlon.",
        (
            (FACTS, "remove", ["training for a marathon in October"]),
            (FACTS, "append", ["training for a triathlon"]),
        ),
        change=True,
    ),
)

FILLER = (
    "Can you suggest a quick dinner for tonight?",
    "What's a good way to stay focused in the afternoon?",
    "Any tips for sleeping better after a night shift?",
    "How do I keep houseplants alive in winter?",
    "Recommend a podcast for my commute.",
    "What should I pack for a weekend trip?",
    "How can I stretch after a long day on my feet?",
    "Give me an idea for a rainy Sunday.",
    "How do I make my coffee less bitter?",
    "What is a nice gift for a colleague who is leaving?",
    "Explain compound interest simply.",
    "How long should I rest between workouts?",
    "Write a two-line birthday wish for a friend.",
    "What's a healthy snack for a night shift?",
    "How do I get better at small talk?",
    "Suggest a book for a long train ride.",
    "How can I tidy my flat in 20 minutes?",
    "What's the best way to learn new words every day?",
    "How do I plan a budget for the month?",
)

REPLY = (
    "Here are a few ideas that might suit you: keep it simple, pick one thing to try first, "
    "and see how it feels before adding more. If you tell me a bit more about your day, I "
    "can tailor the suggestions further."
)


@dataclass
class Conversation:
    """The 120 user messages in order, with the fact each carries (if any)."""

    messages: list[tuple[int, str, Said | None]] = field(default_factory=list)

    @classmethod
    def build(cls, sessions: int = SESSIONS, turns: int = TURNS) -> Conversation:
        by_slot = {(s.session, s.turn): s for s in SCRIPT}
        conv = cls()
        n = 0
        for session in range(1, sessions + 1):
            for turn in range(1, turns + 1):
                said = by_slot.get((session, turn))
                text = said.text if said else FILLER[n % len(FILLER)]
                n += 0 if said else 1
                conv.messages.append((session, text, said))
        return conv


def said_in(text: str) -> list[Said]:
    """The scripted facts whose messages appear in ``text`` (an optimizer request)."""
    return [s for s in SCRIPT if s.text in text]


# (field, value it must hold at the end): 19 facts, 6 of them in their changed form. For a
# list field the value must be among the items.
FINAL: tuple[tuple[str, Any], ...] = (
    ("Demographics.Name", "Ana"),
    ("Demographics.Age", 35),
    ("Demographics.Career_Information", "head nurse at a children's hospital"),
    ("Demographics.Location", "Berlin"),
    ("Demographics.Language", "French"),
    ("Demographics.Nationality", "Portuguese"),
    ("Demographics.Gender", "woman"),
    ("Personality.Values_and_Interests", "climbing"),
    ("Personality.Values_and_Interests", "jazz"),
    ("Personality.Extraversion_or_Introversion", "I"),
    ("Preference.Preferred_Styles", "detailed answers"),
    ("Preference.Preferred_Formats", "bullet lists"),
    (FACTS, "partner: Sam"),
    (FACTS, "pescatarian"),
    (FACTS, "cat: Miso"),
    (FACTS, "training for a triathlon"),
    (FACTS, "sister's wedding on 12 June"),
    (FACTS, "birthday: 3 March"),
    (FACTS, "learning German"),
)
# values that were true once and must not be shown beside their replacement
STALE: tuple[tuple[str, Any], ...] = (
    ("Demographics.Location", "Lyon"),
    ("Demographics.Age", 34),
    (FACTS, "vegetarian"),
    (FACTS, "training for a marathon in October"),
    ("Preference.Preferred_Styles", "short answers"),
)


def _holds(values: dict[str, Any], name: str, want: Any) -> bool:
    have = values.get(name)
    return want in have if isinstance(have, list) else have == want


def coverage(values: dict[str, Any]) -> tuple[int, int, int]:
    """(facts held in their current form, facts in all, stale values still held)."""
    held = sum(_holds(values, name, want) for name, want in FINAL)
    stale = sum(_holds(values, name, want) for name, want in STALE)
    return held, len(FINAL), stale


# -- the fake models ----------------------------------------------------------------------------


def role_of(body: dict[str, Any]) -> str:
    """What a request was: a ``chat`` call, a ``tool round`` (it ends with a tool result) or
    the ``optimizer``."""
    if kind_of(body) == "json":
        return "optimizer"
    last = (body.get("messages") or [{}])[-1]
    return "tool round" if last.get("role") == "tool" else "chat"


def tool_calls_for(said: Said, tool_names: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """The persona-tool calls a tool-following model makes for one stated fact (with the
    three tools of before issue 12 too, so the same script measures both)."""
    calls: list[tuple[str, dict[str, Any]]] = []
    for name, op, value in said.edits:
        if "persona" in tool_names:
            calls.append(("persona", {"op": op, "field": name, "value": value}))
        elif "update_persona_field" in tool_names:
            calls.append(("update_persona_field", {"field": name, "value": value, "op": op}))
    return calls


def chat_model(record_facts: bool) -> Callable[[dict[str, Any]], Any]:
    facts = {said.text: said for said in SCRIPT}

    def answer(body: dict[str, Any]) -> Any:
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        said = facts.get(str(last.get("content"))) if last.get("role") == "user" else None
        if record_facts and said is not None and body.get("tools"):
            calls = tool_calls_for(said, {t["function"]["name"] for t in body["tools"]})
            if calls:
                return Tools(calls)
        return REPLY

    return answer


def optimizer_model(body: dict[str, Any]) -> Json:
    transcripts = str(body["messages"][-1]["content"])
    return Json(
        {
            "updates": [
                {"field": name, "op": op, "value": value, "evidence": said.text}
                for said in said_in(transcripts)
                for name, op, value in said.edits
            ]
        }
    )


# -- playing it ---------------------------------------------------------------------------------


@dataclass
class Played:
    """What the server received, session by session (an optimizer call counts toward the
    session whose end started it), and the persona at the end."""

    requests: list[list[dict[str, Any]]]
    persona: dict[str, Any]
    messages: int


async def play(
    config_for: Callable[[Path, str], Config],
    *,
    sessions: int = SESSIONS,
    turns: int = TURNS,
    record_facts: bool = False,
) -> Played:
    """Play the conversation; ``config_for(db_path, base_url)`` makes the core's config."""
    conv = Conversation.build(sessions, turns)
    ident = Identity("script", "ana")
    by_session: list[list[dict[str, Any]]] = []
    async with FakeOpenAI() as fake:
        fake.chat_default = chat_model(record_facts)
        fake.json_default = optimizer_model
        with tempfile.TemporaryDirectory() as tmp:
            async with PersonaCore(config_for(Path(tmp) / "script.db", fake.base_url)) as core:
                for session in range(1, sessions + 1):
                    seen = len(fake.requests)
                    for s, text, _ in conv.messages:
                        if s == session:
                            reply = await core.respond(ident, "dm", text)
                            assert reply.ok, reply.error
                    await core.end_session(ident, "dm")
                    await core.wait_for_updates()
                    by_session.append(fake.requests[seen:])
                persona = await core.persona(ident)
    return Played(by_session, persona.values if persona else {}, len(conv.messages))
