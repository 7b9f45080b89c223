"""Templates: Jinja2 from the package, every value autoescaped, and the filters the pages
use to show times, values and numbers."""

from __future__ import annotations

import json
import time
from typing import Any

import jinja2

from aipersona.core import __version__


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _value(value: Any) -> str:
    """A persona value as text: lists joined, none as a dash."""
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(empty list)"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _number(value: float | int | None) -> str:
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def _money(value: float | None) -> str:
    return "—" if value is None else f"{value:,.4f}"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("aipersona.dashboard", "templates"),
        autoescape=True,  # every {{ value }} is HTML-escaped, in attributes too
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, value=_value, number=_number, money=_money, seconds=_seconds)
    env.globals["version"] = __version__
    return env
