"""Entity parsing: simplified versions of Telegram's MarkdownV2 and HTML parsers.

They validate text sent with a ``parse_mode`` and return the plain text, raising
:class:`~.models.ApiError` with Telegram's "can't parse entities" errors.
"""

from __future__ import annotations

import re

from .models import ApiError


def _entity_error(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: can't parse entities: {detail}")


_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_markdown_v2(text: str) -> str:
    """Validate MarkdownV2 ``text`` and return the plain text; raise :class:`ApiError`."""
    out: list[str] = []
    stack: list[tuple[str, int]] = []  # (marker, index where it was opened)
    n = len(text)
    i = 0
    quote_line = False

    def toggle(marker: str) -> None:
        if stack and stack[-1][0] == marker:
            stack.pop()
        elif any(m == marker for m, _ in stack):
            raise _entity_error(
                "Can't find end of the entity starting at byte offset "
                f"{_byte_offset(text, stack[-1][1])}"
            )
        else:
            stack.append((marker, i))

    def scan_until(start: int, end_marker: str, what: str, opened_at: int) -> tuple[int, str]:
        """Scan a code/pre/url span; only ``\\`` escapes apply. Return (end index, content)."""
        j = start
        content: list[str] = []
        while j < n:
            if text[j] == "\\" and j + 1 < n:
                content.append(text[j + 1])
                j += 2
            elif text.startswith(end_marker, j):
                return j, "".join(content)
            else:
                content.append(text[j])
                j += 1
        raise _entity_error(
            f"Can't find end of {what} entity at byte offset {_byte_offset(text, opened_at)}"
        )

    while i < n:
        c = text[i]
        at_line_start = i == 0 or text[i - 1] == "\n"
        if c == "\n":
            quote_line = False
            out.append(c)
            i += 1
        elif c == "\\":
            if i + 1 < n and 1 <= ord(text[i + 1]) <= 126:
                out.append(text[i + 1])
                i += 2
            else:
                out.append(c)
                i += 1
        elif c == "`":
            if text.startswith("```", i):
                end, content = scan_until(i + 3, "```", "PreCode", i)
                first, sep, rest = content.partition("\n")
                if sep and first and re.fullmatch(r"[\w+#.-]+", first):
                    content = rest  # the first line is a language name
                out.append(content)
                i = end + 3
            else:
                end, content = scan_until(i + 1, "`", "Code", i)
                out.append(content)
                i = end + 1
        elif c == "*":
            if at_line_start and text.startswith("**>", i):
                quote_line = True  # expandable block quotation
                i += 3
            else:
                toggle("*")
                i += 1
        elif c == "_":
            if text.startswith("__", i):
                toggle("__")
                i += 2
            else:
                toggle("_")
                i += 1
        elif c == "~":
            toggle("~")
            i += 1
        elif c == "|" and text.startswith("||", i):
            closes_quote = (
                quote_line
                and not any(m == "||" for m, _ in stack)
                and (i + 2 == n or text[i + 2] == "\n")
            )
            if not closes_quote:
                toggle("||")
            i += 2
        elif c == "[":
            stack.append(("[", i))
            i += 1
        elif c == "!" and text.startswith("![", i):
            stack.append(("![", i))
            i += 2
        elif c == "]" and stack and stack[-1][0] in ("[", "!["):
            marker, opened_at = stack.pop()
            if text.startswith("(", i + 1):
                end, _url = scan_until(i + 2, ")", "a URL", i + 1)
                i = end + 1
            elif marker == "![":
                raise _entity_error(
                    "Custom emoji entity must contain a tg://emoji URL at byte offset "
                    f"{_byte_offset(text, opened_at)}"
                )
            else:
                i += 1
        elif c == ">" and at_line_start:
            quote_line = True
            i += 1
        elif c in _MDV2_RESERVED:
            raise _entity_error(
                f"Character '{c}' is reserved and must be escaped with the preceding '\\'"
            )
        else:
            out.append(c)
            i += 1

    if stack:
        raise _entity_error(
            "Can't find end of the entity starting at byte offset "
            f"{_byte_offset(text, stack[-1][1])}"
        )
    return "".join(out)


_HTML_ALLOWED_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)
_HTML_TAG_RE = re.compile(r"([A-Za-z][A-Za-z0-9-]*)(.*)", re.DOTALL)
_HTML_ATTR_RE = re.compile(
    r"""([A-Za-z_:][A-Za-z0-9_:.-]*)\s*(?:=\s*("[^"]*"|'[^']*'|[^\s"'>]+))?"""
)
_HTML_ENTITY_RE = re.compile(r"&(lt|gt|amp|quot|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});")
_HTML_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _html_attrs(raw: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for m in _HTML_ATTR_RE.finditer(raw.rstrip("/")):
        value = m.group(2) or ""
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        attrs[m.group(1).lower()] = value
    return attrs


def parse_html(text: str) -> str:
    """Validate HTML ``text`` and return the plain text; raise :class:`ApiError`."""
    out: list[str] = []
    stack: list[tuple[str, int]] = []
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c == "<":
            off = _byte_offset(text, i)
            end = text.find(">", i)
            if end < 0:
                raise _entity_error(f"Unclosed start tag at byte offset {off}")
            inner = text[i + 1 : end]
            if inner.startswith("/"):
                name = inner[1:].strip().lower()
                if not stack:
                    raise _entity_error(f'Unexpected end tag "</{name}>" at byte offset {off}')
                top = stack[-1][0]
                if name != top:
                    raise _entity_error(
                        f'Unmatched end tag at byte offset {off}, expected "</{top}>", '
                        f'found "</{name}>"'
                    )
                stack.pop()
            else:
                m = _HTML_TAG_RE.fullmatch(inner)
                name = m.group(1).lower() if m else ""
                if m is None or name not in _HTML_ALLOWED_TAGS:
                    raise _entity_error(f'Unsupported start tag "{name}" at byte offset {off}')
                attrs = _html_attrs(m.group(2))
                if name == "span" and attrs.get("class") != "tg-spoiler":
                    raise _entity_error(
                        f'Tag "span" must have class "tg-spoiler" at byte offset {off}'
                    )
                if name == "tg-emoji" and "emoji-id" not in attrs:
                    raise _entity_error(
                        f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset {off}'
                    )
                stack.append((name, i))
            i = end + 1
        elif c == "&":
            m = _HTML_ENTITY_RE.match(text, i)
            if m is None:
                raise _entity_error(
                    f"Character '&' must be escaped as '&amp;' at byte offset "
                    f"{_byte_offset(text, i)}"
                )
            ref = m.group(1)
            if ref in _HTML_NAMED:
                out.append(_HTML_NAMED[ref])
            else:
                code = int(ref[2:], 16) if ref[1] in "xX" else int(ref[1:])
                out.append(chr(code) if 0 < code <= 0x10FFFF else "\ufffd")
            i = m.end()
        elif c == ">":
            raise _entity_error(
                f"Character '>' must be escaped as '&gt;' at byte offset {_byte_offset(text, i)}"
            )
        else:
            out.append(c)
            i += 1
    if stack:
        raise _entity_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return "".join(out)


def _parse_formatted(text: str, parse_mode: str | None) -> str:
    if not parse_mode:
        return text
    mode = parse_mode.lower()
    if mode == "markdownv2":
        return parse_markdown_v2(text)
    if mode == "html":
        return parse_html(text)
    if mode == "markdown":
        return text  # legacy Markdown: not validated
    raise ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode}")
