"""Metrics of the evaluation (AI PERSONA, Sec. 5), as plain functions.

**Persona similarity** (the Table-1 column) is judged by an LLM on 0-10 (``judge.py``): how
well the learned persona describes the same person as the golden one, field by field and
overall, by meaning and across languages. It is measured after every session; a condition's
figure is the mean, over its personas, of the score after the persona's last session.

**Lexical overlap** (a cheap secondary column, 0-1) compares wording, not meaning, per field
of the golden persona, averaged:

- ``Demographics.Age`` and other integers, MBTI letters and other enums: exact match, 1 or 0;
- free text: Jaccard overlap of token sets. Tokens are lower-cased runs of Latin letters and
  digits plus single CJK characters (Chinese has no spaces; characters are the usual unit);
- lists (languages, interests): soft set-F1. Precision is the mean, over learned items, of the
  best Jaccard with any golden item; recall the same the other way round; F1 their harmonic
  mean. With exactly equal items this is the ordinary set-F1;
- a golden field missing from the learned persona scores 0. Fields only in the learned
  persona are ignored (the golden persona is the reference). The mean is taken over the
  golden fields (flattened ``Category.Field`` names); an empty golden persona scores 1.

It rewards the same language and phrasing: a correct English rendering of a Chinese persona
scores near 0, and so does ``女性`` against ``女``.

Rubric (the paper's): 10 fully, 7 mostly, 5 partly, 3 barely, 0 not at all; a judged number
is snapped to the nearest rubric level.

Utterances (the paper's rule, as its released code counts them): the number of user messages
in the session, the neutralized query included; at most ``max_turns`` whether or not the user
was satisfied (the satisfied rate is reported next to it).

Win rate of condition A over B in a session group: per (persona, session) the combined score
(helpfulness + personalization) of A vs B scores 1 for a win, 0.5 for a tie, 0 for a loss;
the win rate is the mean over pairs where both were judged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aipersona.core import flatten

RUBRIC = (0, 3, 5, 7, 10)
_TOKEN_RE = re.compile(r"[a-z0-9]+|[\u3400-\u9fff\uf900-\ufaff]", re.IGNORECASE)
_SCORE_RE = re.compile(r"(-?\d+(?:\.\d+)?)")


def tokens(text: Any) -> set[str]:
    if text is None:
        return set()
    if isinstance(text, list):
        text = " ".join(str(t) for t in text)
    return {t.lower() for t in _TOKEN_RE.findall(str(text))}


def jaccard(a: Any, b: Any) -> float:
    ta, tb = tokens(a), tokens(b)
    if not ta and not tb:
        return 1.0
    if not ta or not tb:
        return 0.0
    return len(ta & tb) / len(ta | tb)


def soft_set_f1(pred: Sequence[Any], gold: Sequence[Any]) -> float:
    pred = [p for p in pred if str(p).strip()]
    gold = [g for g in gold if str(g).strip()]
    if not gold and not pred:
        return 1.0
    if not gold or not pred:
        return 0.0
    precision = sum(max(jaccard(p, g) for g in gold) for p in pred) / len(pred)
    recall = sum(max(jaccard(g, p) for p in pred) for g in gold) / len(gold)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def field_similarity(learned: Any, golden: Any) -> float:
    if learned is None or learned == "" or learned == []:
        return 0.0
    if isinstance(golden, bool) or isinstance(learned, bool):
        return float(learned == golden)
    if isinstance(golden, int | float):
        try:
            return float(int(str(learned).strip()) == int(golden))
        except ValueError:
            return 0.0
    if isinstance(golden, list) or isinstance(learned, list):
        g = golden if isinstance(golden, list) else [golden]
        p = learned if isinstance(learned, list) else [learned]
        return soft_set_f1(p, g)
    gold, mine = str(golden).strip(), str(learned).strip()
    if len(gold) <= 1 and gold.isalpha():  # enum letter (MBTI axis)
        return float(gold.casefold() == mine.casefold())
    return jaccard(mine, gold)


def lexical_similarity(
    learned: Mapping[str, Any], golden: Mapping[str, Any]
) -> tuple[float, dict[str, float]]:
    """(mean, per-field scores); both personas may be nested or flat."""
    flat_gold = {k: v for k, v in flatten(golden).items() if v not in (None, "", [])}
    flat_learned = flatten(learned)
    if not flat_gold:
        return 1.0, {}
    per = {
        name: field_similarity(flat_learned.get(name), value) for name, value in flat_gold.items()
    }
    return sum(per.values()) / len(per), per


def parse_score(value: Any, top: float = 10.0) -> float | None:
    """A 0..``top`` score from a judge's JSON value or text ("7.5", "8/10"), clamped; None
    when there is no number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        match = _SCORE_RE.search(str(value))
        if not match:
            return None
        number = float(match.group(1))
    if math.isnan(number):
        return None
    return round(min(top, max(0.0, number)), 2)


def snap_rubric(value: float) -> int:
    """The nearest rubric level (ties go to the lower level)."""
    value = min(10.0, max(0.0, float(value)))
    return min(RUBRIC, key=lambda level: (abs(level - value), level))


def parse_rubric(value: Any) -> int | None:
    """A rubric score from a judge's JSON value or text ("7", "Score: 7/10", 6.8)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return None if math.isnan(float(value)) else snap_rubric(value)
    match = _SCORE_RE.search(str(value))
    return snap_rubric(float(match.group(1))) if match else None


def parse_labeled_scores(text: str) -> dict[str, int | None]:
    """Scores from free text such as ``Helpfulness: 7\\nPersonalization: 5``."""
    out: dict[str, int | None] = {}
    for key in ("helpfulness", "personalization"):
        match = re.search(rf"{key}\W{{0,5}}(-?\d+(?:\.\d+)?)", text or "", re.IGNORECASE)
        out[key] = snap_rubric(float(match.group(1))) if match else None
    return out


def combined(item: Mapping[str, Any]) -> float | None:
    h, p = item.get("helpfulness"), item.get("personalization")
    if h is None or p is None:
        return None
    return float(h) + float(p)


def session_group(index: int, group_size: int) -> str:
    """0-based session index -> label like ``1-3``."""
    start = (index // group_size) * group_size
    return f"{start + 1}-{start + group_size}"


def win_rate(
    items_a: Iterable[Mapping[str, Any]],
    items_b: Iterable[Mapping[str, Any]],
    *,
    group_size: int,
) -> dict[str, dict[str, float]]:
    """Win rate of A over B per session group: {group: {"win_rate", "n"}} (+ "all")."""
    b_by_key = {(i["persona_id"], i["scene_index"]): i for i in items_b}
    groups: dict[str, list[float]] = {}
    for a in items_a:
        b = b_by_key.get((a["persona_id"], a["scene_index"]))
        if b is None:
            continue
        sa, sb = combined(a), combined(b)
        if sa is None or sb is None:
            continue
        outcome = 1.0 if sa > sb else 0.5 if sa == sb else 0.0
        groups.setdefault(session_group(a["scene_index"], group_size), []).append(outcome)
        groups.setdefault("all", []).append(outcome)
    return {
        g: {"win_rate": sum(v) / len(v), "n": float(len(v))}
        for g, v in sorted(groups.items(), key=lambda kv: _group_order(kv[0]))
    }


def _group_order(label: str) -> int:
    return 10**9 if label == "all" else int(label.split("-")[0])


def mean(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def spread(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (None below two values) and n of the known values."""
    vals = [float(v) for v in values if v is not None]
    n = len(vals)
    avg = sum(vals) / n if n else None
    sd = None
    if n >= 2 and avg is not None:
        sd = math.sqrt(sum((v - avg) ** 2 for v in vals) / (n - 1))
    return {"mean": avg, "sd": sd, "n": n}


def judged(item: Mapping[str, Any]) -> bool:
    return item.get("helpfulness") is not None and item.get("personalization") is not None


def final_items(items: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The item of each persona's last session."""
    last: dict[str, Mapping[str, Any]] = {}
    for item in items:
        prev = last.get(item["persona_id"])
        if prev is None or item["scene_index"] > prev["scene_index"]:
            last[item["persona_id"]] = item
    return list(last.values())


def update_failed(item: Mapping[str, Any]) -> bool:
    return bool((item.get("persona_update") or {}).get("failed"))


def summarize(items: Sequence[Mapping[str, Any]]) -> dict[str, float | int | None]:
    """One row of the Table-1-shaped summary for one condition's items.

    ``n`` counts the judged items (helpfulness and personalization both scored); ``sessions``
    all items. Persona similarity and lexical overlap are means over personas of the value
    after each persona's last session (``similarity_n`` personas had a judged value).
    """
    scored = [i for i in items if judged(i)]
    finals = final_items(items)
    return {
        "n": len(scored),
        "sessions": len(items),
        "helpfulness": mean(i["helpfulness"] for i in scored),
        "personalization": mean(i["personalization"] for i in scored),
        "utterances": mean(i.get("utterances") for i in items),
        "satisfied_rate": mean(
            float(bool(i.get("satisfied"))) for i in items if i.get("utterances") is not None
        ),
        "persona_similarity": mean(i.get("similarity") for i in finals),
        "similarity_n": sum(1 for i in finals if i.get("similarity") is not None),
        "lexical_similarity": mean(i.get("lexical_similarity") for i in finals),
        "failed_updates": sum(1 for i in items if update_failed(i)),
        "with_errors": sum(1 for i in items if i.get("errors")),
    }
