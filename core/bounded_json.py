"""JSON from untrusted sources (model replies, tool-call arguments), parsed within bounds.

``json.loads`` recurses once per nesting level: ``[[[[...]]]]`` 200,000 deep raises
``RecursionError`` (not a ``ValueError``), and a value nested a few hundred levels deep
parses but then breaks any code that walks it recursively. Nothing a model legitimately
sends here is deeper than a handful of levels or longer than a few hundred kilobytes, so the
text is measured *before* it is parsed, in linear time and without recursion.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32
MAX_CHARS = 256_000

# a JSON string (escapes included) or one bracket; everything else is skipped by finditer
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class JSONBoundsError(ValueError):
    """The text is too long or nested too deeply to be parsed."""


def nesting_depth(text: str, stop_above: int | None = None) -> int:
    """The deepest bracket nesting of ``text`` outside strings (stops early past a bound)."""
    depth = deepest = 0
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        elif token in "]}":
            depth -= 1
    return deepest


def check_bounds(text: str, *, max_chars: int = MAX_CHARS, max_depth: int = MAX_DEPTH) -> None:
    """Raise JSONBoundsError if ``text`` is longer or deeper than allowed."""
    if len(text) > max_chars:
        raise JSONBoundsError(f"JSON text of {len(text):,} characters (limit {max_chars:,})")
    if "[" in text or "{" in text:
        depth = nesting_depth(text, stop_above=max_depth)
        if depth > max_depth:
            raise JSONBoundsError(f"JSON nested more than {max_depth} levels deep")


def loads(text: str, *, max_chars: int = MAX_CHARS, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` within bounds; every failure is a ``ValueError`` (JSONBoundsError or
    json.JSONDecodeError).

    Control characters inside strings are accepted (``strict=False``): models write raw
    newlines inside string values, and the text is validated field by field afterwards.
    """
    check_bounds(text, max_chars=max_chars, max_depth=max_depth)
    try:
        return json.loads(text, strict=False)
    except RecursionError:  # unreachable within the bounds; kept as a last line of defence
        raise JSONBoundsError("JSON nested too deeply") from None
