"""Bar charts as geometry for server-rendered SVG (``templates/_chart.html``): no JavaScript,
no library, nothing fetched. One bar per day, series stacked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from markupsafe import Markup

WIDTH = 640
HEIGHT = 200
LEFT = 48  # room for the value axis
BOTTOM = 22  # room for the day labels
TOP = 8


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str  # the tooltip: day, series, value

    @property
    def geometry(self) -> Markup:
        """The rectangle's attributes: numbers only, so markup-safe as they are (a chart of
        90 days has hundreds of bars; escaping each number on its own is most of its cost)."""
        return Markup(
            f'x="{self.x:g}" y="{self.y:g}" width="{self.width:g}" height="{self.height:g}"'
        )


@dataclass
class Chart:
    title: str
    legend: list[tuple[str, str]]  # (css class, series name)
    bars: list[Bar] = field(default_factory=list)
    ticks: list[tuple[float, str]] = field(default_factory=list)  # (y, value label)
    labels: list[tuple[float, str]] = field(default_factory=list)  # (x, day label)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    baseline: float = HEIGHT - BOTTOM
    empty: bool = True


def nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (1 for nothing)."""
    if value <= 0:
        return 1.0
    step = 10.0 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if factor * step >= value * (1 - 1e-9):
            return factor * step
    return 10 * step


def short_number(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:.6g}"


def stacked_bars(
    title: str, days: list[str], series: list[tuple[str, str, Sequence[float]]]
) -> Chart:
    """A chart of one stacked bar per day; ``series`` is (name, css class, value per day)."""
    chart = Chart(title, [(css, name) for name, css, _ in series])
    if not days:
        return chart
    totals = [sum(values[i] for _, _, values in series) for i in range(len(days))]
    top = nice_max(max(totals))
    plot_h = chart.baseline - TOP
    slot = (WIDTH - LEFT) / len(days)
    bar_w = max(1.0, slot * 0.72)
    for i, day in enumerate(days):
        x = LEFT + i * slot + (slot - bar_w) / 2
        y = chart.baseline
        for name, css, values in series:
            value = values[i]
            if value <= 0:
                continue
            h = value / top * plot_h
            y -= h
            shown = f"{value:,.4f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
            chart.bars.append(
                Bar(
                    round(x, 2),
                    round(y, 2),
                    round(bar_w, 2),
                    round(h, 2),
                    css,
                    f"{day} {name}: {shown}",
                )
            )
            chart.empty = False
    every = max(1, round(len(days) / 8))
    chart.labels = [
        (round(LEFT + i * slot + slot / 2, 2), day[5:])
        for i, day in enumerate(days)
        if i % every == 0
    ]
    chart.ticks = [
        (round(chart.baseline - f * plot_h, 2), short_number(f * top)) for f in (0, 0.5, 1)
    ]
    return chart
