"""The two LLM judges: the first response of a session (helpfulness and personalization on the
paper's 10/7/5/3/0 rubric), and the learned persona against the golden one (persona
similarity, 0-10, field by field and overall, by meaning and across languages)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from aipersona.core import LLMClient, LLMError, StructuredOutputError, flatten

from .clients import last_reply
from .data import Scene
from .metrics import parse_labeled_scores, parse_rubric, parse_score
from .roles import dumps, marker

log = logging.getLogger(__name__)

# -- the response judge ---------------------------------------------------------------------------

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "helpfulness": {"type": "integer", "enum": [0, 3, 5, 7, 10]},
        "personalization": {"type": "integer", "enum": [0, 3, 5, 7, 10]},
        "reason": {"type": "string"},
    },
    "required": ["helpfulness", "personalization", "reason"],
    "additionalProperties": False,
}

JUDGE_PROMPT = (
    marker("judge") + "\n"
    "You are a strict evaluator of a personalized AI assistant. You see the user's true "
    "persona, the scene, a reference of what an ideal answer does, the user's message and the "
    "assistant's response. Score the response on two criteria with this rubric only:\n"
    "10 = fully meets the criterion, as well as the reference or better;\n"
    "7 = mostly meets it, minor gaps;\n"
    "5 = partly meets it, clear gaps;\n"
    "3 = barely meets it;\n"
    "0 = does not meet it at all or is irrelevant.\n"
    "Helpfulness: does the response solve the user's request (correct, complete, actionable)?\n"
    "Personalization: is it tailored to this user's persona (background, personality, "
    "patterns, preferred style, format and workflow) rather than generic?\n"
    'Reply with JSON only: {"helpfulness": <0|3|5|7|10>, "personalization": <0|3|5|7|10>, '
    '"reason": "<one or two sentences>"}'
)


@dataclass
class Judgement:
    helpfulness: int | None
    personalization: int | None
    reason: str = ""
    error: str | None = None


async def judge_response(
    llm: LLMClient,
    persona: dict[str, Any],
    scene: Scene,
    query: str,
    response: str,
    *,
    max_tokens: int,
) -> Judgement:
    user = (
        f"<persona>\n{dumps(persona)}\n</persona>\n\n"
        f"<scene>\n{scene.scene_type}\n{scene.scene_desc}\n</scene>\n\n"
        f"<reference>\n{scene.expected_response}\n</reference>\n\n"
        f"<user_message>\n{query}\n</user_message>\n\n"
        f"<assistant_response>\n{response}\n</assistant_response>\n\nReturn the JSON now."
    )
    messages = [{"role": "system", "content": JUDGE_PROMPT}, {"role": "user", "content": user}]
    try:
        data, completion = await llm.complete_json(
            messages, schema=JUDGE_SCHEMA, name="judgement", max_tokens=max_tokens, temperature=0
        )
    except StructuredOutputError as exc:  # e.g. cut short by max_tokens: salvage the scores
        labeled = parse_labeled_scores(last_reply())
        h, p = labeled["helpfulness"], labeled["personalization"]
        if h is not None and p is not None:
            return Judgement(h, p, "(scores read from a reply that was not valid JSON)")
        log.warning("judge failed: %s", exc)
        return Judgement(None, None, error=str(exc))
    except LLMError as exc:
        log.warning("judge failed: %s", exc)
        return Judgement(None, None, error=str(exc))
    h, p = parse_rubric(data.get("helpfulness")), parse_rubric(data.get("personalization"))
    if h is None or p is None:
        labeled = parse_labeled_scores(completion.content)
        h = h if h is not None else labeled["helpfulness"]
        p = p if p is not None else labeled["personalization"]
    error = None if h is not None and p is not None else "judge gave no usable score"
    return Judgement(h, p, str(data.get("reason") or ""), error)


# -- the persona-similarity judge ------------------------------------------------------------

SIMILARITY_PROMPT = (
    marker("similarity-judge") + "\n"
    "You compare two descriptions of one user of an AI assistant: the GOLDEN persona (the "
    "truth) and a LEARNED persona (what the assistant inferred from their conversations). "
    "Rate how well the learned persona describes the same person as the golden one, on a "
    "scale from 0 to 10:\n"
    "10 = describes this person exactly (same facts, traits and preferences);\n"
    "7 = mostly right, minor gaps or small inaccuracies;\n"
    "5 = about half of it is right;\n"
    "3 = a little is right;\n"
    "0 = nothing is right, the field is missing, or it contradicts the golden persona.\n"
    "Judge meaning, never wording: the two may be written in different languages (for "
    "example Chinese and English), use synonyms, paraphrases, abbreviations or another order "
    "('女' = '女性' = 'female'; 'ENFP' letters compare one by one). Score EVERY golden field "
    "by its dotted name; a golden field absent from the learned persona scores 0. Fields "
    "only in the learned persona neither add nor subtract, unless they contradict the "
    "golden persona. Then give one overall score for the whole person (your judgement, not "
    "necessarily the mean).\n"
    'Reply with JSON only: {"fields": {"<Category.Field>": <0-10>, ...}, "overall": <0-10>, '
    '"reason": "<one or two sentences>"}'
)

SIMILARITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "fields": {
            "type": "object",
            "additionalProperties": {"type": "number", "minimum": 0, "maximum": 10},
        },
        "overall": {"type": "number", "minimum": 0, "maximum": 10},
        "reason": {"type": "string"},
    },
    "required": ["fields", "overall", "reason"],
}


@dataclass
class Similarity:
    """A judged persona similarity: ``overall`` and ``fields`` on 0-10 (None = no score)."""

    overall: float | None
    fields: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    method: str = "llm_judge"  # or "empty": an empty learned persona scores 0 without a call
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall,
            "fields": self.fields,
            "reason": self.reason,
            "method": self.method,
            "error": self.error,
        }


def _present(persona: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flatten(persona).items() if v not in (None, "", [])}


async def judge_similarity(
    llm: LLMClient, learned: dict[str, Any], golden: dict[str, Any], *, max_tokens: int
) -> Similarity:
    gold, mine = _present(golden), _present(learned)
    if not gold:
        return Similarity(None, error="the golden persona is empty")
    if not mine:
        return Similarity(0.0, dict.fromkeys(gold, 0.0), "nothing learned", method="empty")
    user = (
        f"<golden_persona>\n{dumps(gold)}\n</golden_persona>\n\n"
        f"<learned_persona>\n{dumps(mine)}\n</learned_persona>\n\nReturn the JSON now."
    )
    messages = [
        {"role": "system", "content": SIMILARITY_PROMPT},
        {"role": "user", "content": user},
    ]
    try:
        data, _ = await llm.complete_json(
            messages,
            schema=SIMILARITY_SCHEMA,
            name="persona_similarity",
            max_tokens=max_tokens,
            temperature=0,
        )
    except StructuredOutputError as exc:  # e.g. cut short by max_tokens: salvage the scores
        data = salvage_similarity(last_reply(), list(gold))
        if data is None:
            log.warning("similarity judge failed: %s", exc)
            return Similarity(None, error=str(exc))
    except LLMError as exc:
        log.warning("similarity judge failed: %s", exc)
        return Similarity(None, error=str(exc))
    raw_fields = data.get("fields") if isinstance(data.get("fields"), dict) else {}
    fields: dict[str, float] = {}
    for name in gold:
        score = parse_score(raw_fields.get(name))
        if score is not None:
            fields[name] = score
    overall = parse_score(data.get("overall"))
    if overall is None and fields:
        overall = round(sum(fields.values()) / len(fields), 2)  # the judge gave no overall
    error = None if overall is not None else "the similarity judge gave no usable score"
    return Similarity(overall, fields, str(data.get("reason") or ""), error=error)


def _number_after(key: str, text: str) -> str | None:
    match = re.search(rf'"{re.escape(key)}"\s*:\s*"?(-?\d+(?:\.\d+)?)', text)
    return match.group(1) if match else None


def salvage_similarity(text: str, fields: list[str]) -> dict[str, Any] | None:
    """The scores in a similarity reply that is not valid JSON (e.g. cut short), or None."""
    found = {name: _number_after(name, text) for name in fields}
    scores = {name: value for name, value in found.items() if value is not None}
    overall = _number_after("overall", text)
    if not scores and overall is None:
        return None
    return {"fields": scores, "overall": overall, "reason": "(read from a reply cut short)"}
