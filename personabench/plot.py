"""``plot.png``: utterances, scores and persona similarity over sessions, per condition.

Each panel states its scale on the y axis. Sessions are integers; a point is the mean across
personas, with a band of one standard deviation where there are two or more values; the n
most points have is in the panel's title and any other n is printed at its point. Missing
values leave gaps.
Conditions get their own marker and a small horizontal offset, so lines that coincide stay
visible.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

PLOT_FILE = "plot.png"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
DODGE = 0.07  # sessions between neighbouring conditions


def panels(max_turns: int) -> list[tuple[str, str, str, tuple[float, float]]]:
    """(series key, title, y label with scale, y limits)."""
    return [
        (
            "utterances",
            "Utterances per session (lower is better)",
            f"user messages (1–{max_turns})",
            (0.8, max_turns + 0.2),
        ),
        (
            "combined",
            "Helpfulness + personalization (first response)",
            "judge score (0–20)",
            (-0.5, 20.5),
        ),
        (
            "similarity",
            "Persona similarity, LLM judge",
            "similarity (0–10)",
            (-0.3, 10.3),
        ),
        (
            "lexical_similarity",
            "Lexical overlap (secondary)",
            "overlap (0–1)",
            (-0.03, 1.03),
        ),
    ]


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = figure(results)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure(results: dict[str, Any]) -> Any:
    """The plot as a matplotlib Figure (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    conds = list(results["series"])
    labels = results.get("labels", {})
    sessions = max((len(per["utterances"]) for per in results["series"].values()), default=1)
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    for (key, title, ylabel, ylim), ax in zip(
        panels(results.get("max_turns", 3)), axes.flat, strict=True
    ):
        placed: list[tuple[float, float, int]] = []  # (x, y, n) of every point drawn
        for ci, cond in enumerate(conds):
            points = results["series"][cond][key]
            offset = (ci - (len(conds) - 1) / 2) * DODGE
            xs = [i + 1 + offset for i in range(len(points))]
            ys = [_nan(p["mean"]) for p in points]
            (line,) = ax.plot(
                xs,
                ys,
                marker=MARKERS[ci % len(MARKERS)],
                markersize=5,
                linewidth=1.4,
                label=labels.get(cond, cond),
            )
            low = [_nan(p["mean"] - p["sd"]) if p["sd"] is not None else math.nan for p in points]
            high = [_nan(p["mean"] + p["sd"]) if p["sd"] is not None else math.nan for p in points]
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.12, linewidth=0)
            placed += [(x, y, p["n"]) for x, y, p in zip(xs, ys, points, strict=True) if p["n"]]
        counts = Counter(n for _, _, n in placed)
        suffix = ""
        if counts:
            usual = counts.most_common(1)[0][0]
            suffix = f" — n = {usual} per point" + (", others marked" if len(counts) > 1 else "")
            for x, y, n in placed:
                if n != usual and not math.isnan(y):  # the exceptions, printed at the point
                    ax.annotate(
                        f"n={n}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(0, 6),
                        ha="center",
                        fontsize=7,
                        color="0.3",
                    )
        ax.set_title(title + suffix, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("session")
        ax.set_ylim(*ylim)
        ax.set_xlim(0.5, sessions + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, names = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize="small")
    fig.suptitle(
        f"PersonaBench — {len(results.get('personas', []))} persona(s); points are means "
        "across personas, bands ± 1 SD",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(names) - 1) // 4), 1, 0.97))
    return fig
