"""Results JSON, the Markdown report (a table shaped like the paper's Table 1) and the plot."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .metrics import combined, mean, session_group, summarize, win_rate
from .settings import BenchSettings, parse_learned

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
PLOT_FILE = "plot.png"
ITEM_KEYS = (
    "condition",
    "persona_id",
    "scene_index",
    "helpfulness",
    "personalization",
    "utterances",
    "user_turns",
    "satisfied",
    "persona_similarity",
    "chatbot_tokens",
    "errors",
)


def series(items: Sequence[dict[str, Any]], conditions: Sequence[str]) -> dict[str, Any]:
    """Per condition, per session index: mean scores, utterances and persona similarity."""
    out: dict[str, Any] = {}
    for cond in conditions:
        rows = [i for i in items if i["condition"] == cond]
        if not rows:
            continue
        n = max(i["scene_index"] for i in rows) + 1
        per: dict[str, list[float | None]] = {
            "helpfulness": [],
            "personalization": [],
            "combined": [],
            "utterances": [],
            "persona_similarity": [],
        }
        for idx in range(n):
            at = [i for i in rows if i["scene_index"] == idx]
            per["helpfulness"].append(mean(i.get("helpfulness") for i in at))
            per["personalization"].append(mean(i.get("personalization") for i in at))
            per["combined"].append(mean(combined(i) for i in at))
            per["utterances"].append(mean(i.get("utterances") for i in at))
            per["persona_similarity"].append(mean(i.get("persona_similarity") for i in at))
        out[cond] = per
    return out


def build_results(
    *,
    items: list[dict[str, Any]],
    conditions: Sequence[str],
    settings: BenchSettings,
    public: dict[str, Any],
    data_path: str,
    personas: list[str],
    runs: list[dict[str, Any]],
) -> dict[str, Any]:
    items = sorted(
        items,
        key=lambda i: (
            list(conditions).index(i["condition"]) if i["condition"] in conditions else 99,
            i["persona_id"],
            i["scene_index"],
        ),
    )
    summary = {c: summarize([i for i in items if i["condition"] == c]) for c in conditions}
    wins: dict[str, Any] = {}
    golden = [i for i in items if i["condition"] == "golden_persona"]
    if golden:
        for cond in conditions:
            if parse_learned(cond) is not None:
                mine = [i for i in items if i["condition"] == cond]
                wins[f"{cond}_vs_golden_persona"] = win_rate(
                    mine, golden, group_size=settings.group_size
                )
    usage: dict[str, dict[str, Any]] = {}
    for run in runs:
        for role, row in (run.get("usage") or {}).items():
            acc = usage.setdefault(role, {"model": row.get("model")})
            for key in ("calls", "prompt_tokens", "completion_tokens", "cost_usd"):
                if key in row:
                    acc[key] = round(acc.get(key, 0) + row[key], 6)
    costs = [row["cost_usd"] for row in usage.values() if "cost_usd" in row]
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": data_path,
        "personas": personas,
        "conditions": list(conditions),
        "config": public,
        "models": {role: r["model"] for role, r in public["roles"].items()},
        "seeds": {"seed": settings.seed, "note": "scene order is the data file's order"},
        "summary": summary,
        "win_rates": wins,
        "series": series(items, conditions),
        "usage": usage,
        "cost_usd": round(sum(costs), 6) if costs else None,
        "failed_jobs": (runs[-1].get("failed_jobs") or []) if runs else [],
        "runs": runs,
        "items": items,
    }


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# PersonaBench results",
        "",
        f"Data: `{results['data']}` — {len(results['personas'])} persona(s); "
        f"models: {', '.join(f'{k}={v}' for k, v in results['models'].items())}.",
        "",
        "Helpfulness and personalization: judge scores of the first response of each session "
        "(rubric 0/3/5/7/10). Utterances: user utterances until the simulated user was "
        "satisfied (max_turns + 1 when never; lower is better). Persona similarity: the final "
        "persona of each user vs the golden one (per-field exact / Jaccard / soft set-F1, "
        "averaged).",
        "",
        "| Condition | Helpfulness | Personalization | Utterances ↓ | Persona similarity | n |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cond, row in results["summary"].items():
        lines.append(
            f"| {cond} | {_fmt(row['helpfulness'])} | {_fmt(row['personalization'])} | "
            f"{_fmt(row['utterances'])} | {_fmt(row['persona_similarity'], 3)} | {row['n']} |"
        )
    if results["win_rates"]:
        groups: list[str] = []
        for table in results["win_rates"].values():
            groups += [g for g in table if g not in groups]
        lines += [
            "",
            "## Win rate vs golden persona (by session group; tie = 0.5)",
            "",
            "| Condition | " + " | ".join(f"sessions {g}" for g in groups) + " |",
            "| --- |" + " ---: |" * len(groups),
        ]
        for name, table in results["win_rates"].items():
            cells = [
                f"{table[g]['win_rate']:.2f} (n={int(table[g]['n'])})" if g in table else "–"
                for g in groups
            ]
            lines.append(
                f"| {name.removesuffix('_vs_golden_persona')} | " + " | ".join(cells) + " |"
            )
    if results["usage"]:
        lines += [
            "",
            "## Token usage",
            "",
            "| Role | Model | Calls | Prompt tokens | Completion tokens | Cost (USD) |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for role, row in results["usage"].items():
            lines.append(
                f"| {role} | {row.get('model')} | {row.get('calls', 0)} | "
                f"{row.get('prompt_tokens', 0)} | {row.get('completion_tokens', 0)} | "
                f"{_fmt(row.get('cost_usd'), 4)} |"
            )
        if results["cost_usd"] is not None:
            lines += ["", f"Total cost: ${results['cost_usd']:.4f}"]
    if results.get("failed_jobs"):
        lines += ["", "## Failed jobs (last run; rerun the same command to retry them)", ""]
        lines += [
            f"- {f['condition']} / {f['persona_id']}: {f['error']}" for f in results["failed_jobs"]
        ]
    lines += ["", f"![scores and utterances over sessions]({PLOT_FILE})", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = (
        ("utterances", "Utterances to satisfaction", axes[0]),
        ("combined", "Helpfulness + personalization", axes[1]),
        ("persona_similarity", "Persona similarity", axes[2]),
    )
    for key, title, ax in panels:
        for cond, per in results["series"].items():
            ys = per[key]
            xs = [i + 1 for i, y in enumerate(ys) if y is not None]
            vals = [y for y in ys if y is not None]
            if vals:
                ax.plot(xs, vals, marker="o", label=cond)
        ax.set_title(title)
        ax.set_xlabel("session")
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_all(results: dict[str, Any], out: Path) -> None:
    (out / RESULTS_FILE).write_text(
        json.dumps(results, ensure_ascii=False, indent=1, default=str), encoding="utf-8"
    )
    (out / REPORT_FILE).write_text(markdown(results), encoding="utf-8")
    plot(results, out / PLOT_FILE)


def group_label(index: int, size: int) -> str:
    return session_group(index, size)
