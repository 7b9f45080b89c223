"""Model Markdown -> Telegram HTML, and splitting into messages Telegram accepts.

Supported: ``**bold**``, ``__bold__``, ``*italic*``, ``_italic_``, ``~~strike~~``, ``inline
code``, fenced code blocks (with a language), ``[text](url)`` links, ``# headings`` (bold) and
``*``/``-`` bullets. Everything else is HTML-escaped, and the result is checked for balanced
tags (falling back to escaped plain text), so a message always parses.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from aipersona.adapters.kit import split_message

TELEGRAM_LIMIT = 4096

# fences open and close at line starts, as the kit's ``split_message`` assumes
_FENCE = re.compile(
    r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ \t]*```[^\n]*$|\Z)", re.DOTALL | re.MULTILINE
)
_INLINE_FENCE = re.compile(r"```([^`\n]+)```")
_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[([^\]\n]{1,300})\]\(((?:https?://|tg://|mailto:)[^\s()]{1,2000})\)")
_BARE_URL = re.compile(r"\bhttps?://[^\s<>()\[\]]+")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]+(.+?)[ \t#]*$")
_BULLET = re.compile(r"^([ \t]*)[*-][ \t]+(?=\S)")
_BOLD = re.compile(r"\*\*(?=\S)(.{1,1000}?)(?<=\S)\*\*")
_BOLD_UNDERSCORE = re.compile(r"(?<!\w)__(?=\S)(.{1,1000}?)(?<=\S)__(?!\w)")
_STRIKE = re.compile(r"~~(?=\S)(.{1,1000}?)(?<=\S)~~")
_ITALIC = re.compile(r"(?<![\w*])\*(?=[^\s*])(.{1,1000}?)(?<=[^\s*])\*(?![\w*])")
_ITALIC_UNDERSCORE = re.compile(r"(?<![\w_])_(?=[^\s_])(.{1,1000}?)(?<=[^\s_])_(?![\w_])")
_INLINE = (
    (_BOLD, "b"),
    (_BOLD_UNDERSCORE, "b"),
    (_STRIKE, "s"),
    (_ITALIC, "i"),
    (_ITALIC_UNDERSCORE, "i"),
)
# split_message treats the rest of a line starting with ``` as a language name and reopens it
# in every chunk; a chunk may start at any word, so every ``` with a long rest of line is
# defused (inline ```code``` becomes `code` first).
_INLINE_TRIPLE = re.compile(r"```([^`\n]+?)```")
_RISKY_FENCE = re.compile(r"```(?=[^\n]{40,})")
_PLACEHOLDER = re.compile("\x00(\\d+)\x00")
_TAG = re.compile(r"<(/?)([a-z-]+)[^>]*>")


def escape(text: str) -> str:
    return html.escape(text, quote=False)


def markdown_to_html(text: str) -> str:
    """Convert the model's Markdown subset to Telegram HTML that always parses."""
    text = source = text.replace("\x00", "")
    kept: list[str] = []

    def keep(html_text: str) -> str:
        kept.append(html_text)
        return f"\x00{len(kept) - 1}\x00"

    def sub(pattern: re.Pattern[str], make: Callable[[re.Match[str]], str], s: str) -> str:
        return pattern.sub(lambda m: keep(make(m)), s)

    text = sub(_FENCE, _pre, text)
    text = sub(_INLINE_FENCE, lambda m: f"<code>{escape(m.group(1))}</code>", text)
    text = sub(_CODE, lambda m: f"<code>{escape(m.group(1))}</code>", text)
    text = sub(_LINK, _link, text)
    text = sub(_BARE_URL, lambda m: escape(m.group(0)), text)
    out = "\n".join(_format_line(line) for line in escape(text).split("\n"))
    out = _PLACEHOLDER.sub(lambda m: kept[int(m.group(1))], out)
    return out if balanced(out) else escape(source)


def _format_line(line: str) -> str:
    """Inline formatting of one escaped line; the line stays unformatted if tags would cross."""
    out = _HEADING.sub(r"<b>\1</b>", line)
    out = _BULLET.sub("\\1• ", out)
    for pattern, tag in _INLINE:
        out = pattern.sub(rf"<{tag}>\1</{tag}>", out)
    return out if balanced(out) else line


def _pre(m: re.Match[str]) -> str:
    lang, code = m.group(1), m.group(2).rstrip("\n")
    if lang:
        return f'<pre><code class="language-{lang}">{escape(code)}</code></pre>'
    return f"<pre>{escape(code)}</pre>"


def _link(m: re.Match[str]) -> str:
    url = escape(m.group(2)).replace('"', "&quot;")
    return f'<a href="{url}">{escape(m.group(1))}</a>'


def balanced(text: str) -> bool:
    """True if every tag we produced is closed in the right order."""
    stack: list[str] = []
    for m in _TAG.finditer(text):
        closing, name = m.group(1), m.group(2)
        if not closing:
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return not stack


def html_to_plain(text: str) -> str:
    """Telegram HTML -> the plain text it shows (for the no-formatting fallback)."""
    return html.unescape(_TAG.sub("", text))


def html_chunks(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Split Markdown into messages, convert each to HTML; each result is <= ``limit`` chars.

    Splitting happens on the Markdown (paragraphs, lines, sentences; code fences are closed
    and reopened), then each chunk is converted. A chunk whose HTML grew past the limit
    (escaping, tags) is split again smaller; as a last resort it is sent as escaped text.
    """
    floor = max(96, limit // 6)  # escaping grows text at most 5x: escaped floor-size fits
    out: list[str] = []
    for piece in split_message(defuse_fences(text), limit):
        out.extend(_fit(piece, limit, floor))
    return out


def _fit(piece: str, limit: int, floor: int) -> list[str]:
    converted = markdown_to_html(piece)
    if not html_to_plain(converted).strip():  # e.g. an empty code block: show the source
        converted = escape(piece)
    if len(converted) <= limit:
        return [converted]
    if len(piece) <= floor:
        return [escape(piece)]
    smaller = max(floor, int(len(piece) * limit / len(converted) * 0.9))
    return [h for p in split_message(piece, smaller) for h in _fit(p, limit, floor)]


def plain_chunks(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Split text sent without formatting."""
    return split_message(defuse_fences(text), limit)


def defuse_fences(text: str) -> str:
    """Make ``text`` safe for ``split_message`` (see ``_RISKY_FENCE``)."""
    return _RISKY_FENCE.sub("``\u200b`", _INLINE_TRIPLE.sub(r"`\1`", text))
