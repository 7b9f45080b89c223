"""Splitting a long text into messages a platform accepts (``split_message``)."""

from __future__ import annotations

import re

_FENCE = "```"
_LANG_RE = re.compile(r"[\w+#.-]{0,32}")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


def split_message(text: str, limit: int) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters.

    Prefers paragraph breaks, then line breaks, then sentence ends, then spaces; cuts hard
    only inside a single over-long word. A code fence open at a cut is closed at the end of
    the chunk and reopened (with its language) at the start of the next, so each chunk
    renders as valid Markdown on its own.
    """
    if limit < 16:
        raise ValueError("limit too small")
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    chunks: list[str] = []
    rest = text
    reopen = ""
    while rest:
        budget = limit - len(reopen)
        if len(rest) <= budget and not _open_fence(reopen + rest):
            chunks.append(reopen + rest)
            break
        budget -= len(_FENCE) + 1  # room to close a fence
        cut = _best_cut(rest, max(budget, limit // 2))
        piece, rest = rest[:cut].rstrip(), rest[cut:].lstrip("\n ")
        chunk = reopen + piece
        lang = _open_fence(chunk)
        if lang is not None:
            chunk += "\n" + _FENCE
            reopen = _FENCE + lang + "\n"
        else:
            reopen = ""
        chunks.append(chunk)
    return [c for c in chunks if c.strip()]


def _best_cut(text: str, budget: int) -> int:
    window = text[: budget + 1]
    for sep in ("\n\n", "\n"):
        pos = window.rfind(sep)
        if pos > budget // 3:
            return pos
    ends = [m.start() for m in _SENTENCE_END.finditer(window) if m.start() > budget // 3]
    if ends:
        return ends[-1]
    pos = window.rfind(" ")
    if pos > budget // 3:
        return pos
    return budget


def _open_fence(text: str) -> str | None:
    """If ``text`` ends inside a ``` block, return that block's language tag ('' if none)."""
    lang: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(_FENCE):
            if lang is None:
                tag = stripped[3:].strip()
                # only a short identifier is a language tag; code on the fence line is not
                lang = tag if _LANG_RE.fullmatch(tag) else ""
            else:
                lang = None
    return lang
