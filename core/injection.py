"""Prompt-injection defences for text that ends up inside prompts.

Two independent layers:

- ``instruction_reason(text)`` says whether a persona *value* reads as an order to the
  assistant (an override, a role prefix, a chat-template role tag, an instruction heading).
  Values are facts about the user; such text is refused before it is stored. The check runs
  on a *folded* copy of the text (NFKC, zero-width characters removed, Latin look-alikes from
  other scripts mapped to Latin, diacritics dropped, case folded), so ``Іgnore`` written with
  a Cyrillic ``І`` or ``ｉｇｎｏｒｅ`` in full-width letters is caught like ``ignore``. The
  stored value itself is never altered by folding.
- ``quote_json(value)`` renders data quoted into a ``<persona>``/``<sessions>`` block as JSON
  in which no angle bracket appears literally (``<`` becomes ``\\u003c``, still the same JSON
  value), so nothing inside a block can close it or open a tag of its own.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

# Letters of other scripts that render like Latin ones (from Unicode's confusables data,
# restricted to look-alikes of a-z). Upper case is folded to lower case before this map.
_CONFUSABLES = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j",
    "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t", "у": "y",
    "х": "x", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ɡ": "g", "ү": "y",
    "ԍ": "g", "ѡ": "w", "ь": "b", "ƅ": "b",
    # Greek
    "α": "a", "β": "b", "ε": "e", "ζ": "z", "η": "n", "ι": "i", "κ": "k", "μ": "u",
    "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ϲ": "c", "ϳ": "j",
    "ω": "w", "γ": "y",
    # Armenian
    "օ": "o", "ս": "u", "ց": "g", "հ": "h", "ո": "n", "ա": "w", "զ": "q",
    # Latin variants NFKC leaves alone
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɩ": "i", "ʀ": "r", "ʏ": "y", "ᴀ": "a", "ʙ": "b",
    "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j", "ᴋ": "k",
    "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u",
    "ᴠ": "v", "ᴡ": "w", "ᴢ": "z",
}  # fmt: skip
_CONFUSABLE_TABLE = str.maketrans(_CONFUSABLES)
_SPACES = re.compile(r"[^\S\n]+")


def fold(text: str) -> str:
    """The comparison form of ``text``: what it looks like, not how it is encoded."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")  # zero-width etc.
    text = text.casefold().translate(_CONFUSABLE_TABLE)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))  # ï -> i
    return _SPACES.sub(" ", text.replace("\r", "\n"))


_ROLES = r"(?:system|assistant|user|human|developer|instructions?|response)"
_BLOCKS = r"(?:persona|sessions)"

# (reason, pattern) on folded text. The reason is stored with a refused edit.
_FAMILIES: tuple[tuple[str, str], ...] = (
    (
        "an order to ignore earlier instructions",
        r"\b(?:ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}"
        r"\b(?:previous|prior|above|earlier|preceding|former|your|system|initial|original|all)"
        r"\b[^.\n]{0,20}\b(?:instruction|prompt|rule|directive|guideline|command|context)s?\b",
    ),
    (
        "a reference to the system prompt",
        r"\bsystem\s+(?:prompt|instruction)s?\b|\bdeveloper\s+(?:prompt|message)s?\b",
    ),
    ("new instructions", r"\bnew\s+(?:instructions?|system\s+prompt)\s*:"),
    ("an order to the assistant", r"\byou\s+(?:are|will)\s+now\b"),
    (
        "an order to the assistant",
        r"\b(?:you|assistant)\s+(?:must|shall|have\s+to|are\s+required\s+to)\s+"
        r"(?:always\s+|never\s+|only\s+|now\s+)?(?:answer|reply|respond|speak|write|talk|"
        r"say|obey|follow|pretend|act|behave|ignore|reveal)\b",
    ),
    (
        "an order to the assistant",
        r"\bfrom\s+now\s+on\b[^.\n]{0,40}\b(?:you|reply|respond|answer|speak|write|talk|act)\b",
    ),
    (
        "a request for other users' data",
        r"\b(?:reveal|show|print|dump|leak)\b.{0,40}\b(?:other|all|every)\s+"
        r"(?:user|person|people|persona)s?\b",
    ),
    # "SYSTEM: ...", "\n\nAssistant: ...", "### Instruction:" at the start of a line
    ("a chat role prefix", rf"(?:^|\n)\s*(?:#+\s*)?{_ROLES}\s*:"),
    (
        "an instruction heading",
        r"(?:^|\n)\s*#{1,6}\s*(?:system|instructions?|rules|prompt|directives?|assistant|"
        r"important|override|new instructions?)\b",
    ),
    # chat-template role tags and special tokens: ChatML <|im_start|>, Llama 3
    # <|start_header_id|>, Zephyr/Phi <|system|> <|end|>, DeepSeek <|...|>
    ("a chat-template role tag", r"<\|[^|<>\n]{1,40}\|>"),
    # Llama 2 / Mistral [INST] [/INST] <<SYS>> <s> </s>, Mistral v3 [SYSTEM_PROMPT]...
    (
        "a chat-template role tag",
        r"\[/?(?:inst|sys|system_prompt|available_tools|tool_calls|tool_results)\]",
    ),
    ("a chat-template role tag", r"<</?sys>>|</?s>"),
    ("a chat-template role tag", r"<(?:start|end)_of_turn>"),  # Gemma
    ("a chat-template role tag", rf"</?\s*(?:{_ROLES}|im_start|im_end|tool|function)\s*>"),
    ("a prompt data-block tag", rf"</?\s*{_BLOCKS}\b"),
)
_COMPILED = tuple((reason, re.compile(pattern, re.DOTALL)) for reason, pattern in _FAMILIES)


def instruction_reason(text: str) -> str | None:
    """Why ``text`` reads as an instruction to the assistant, or None if it does not."""
    folded = fold(text)
    for reason, pattern in _COMPILED:
        if pattern.search(folded):
            return reason
    return None


# Characters that could be read as an angle bracket; none of them appears in JSON syntax,
# so escaping them inside strings keeps the JSON value identical.
_ANGLES = {ord(ch): f"\\u{ord(ch):04x}" for ch in "<>\uff1c\uff1e\ufe64\ufe65"}


def quote_json(value: Any, *, indent: int | None = None) -> str:
    """Compact JSON of ``value`` for a prompt data block, with no literal angle brackets."""
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(value, ensure_ascii=False, indent=indent, separators=separators)
    return text.translate(_ANGLES)
