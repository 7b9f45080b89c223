"""Results JSON and the Markdown report: a table shaped like the paper's Table 1, every
column with its scale, the deviations from the paper, and the accounting."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import deviations
from .metrics import combined, spread, summarize, update_failed, win_rate
from .plot import PLOT_FILE, plot
from .settings import BenchSettings, Price, parse_learned

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
SERIES_KEYS = ("utterances", "combined", "similarity", "lexical_similarity")


def series(
    items: Sequence[Mapping[str, Any]], conditions: Sequence[str]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per condition, per metric, per session index: mean, SD and n across personas."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for cond in conditions:
        rows = [i for i in items if i["condition"] == cond]
        if not rows:
            continue
        last = max(i["scene_index"] for i in rows)
        per: dict[str, list[dict[str, Any]]] = {k: [] for k in SERIES_KEYS}
        for idx in range(last + 1):
            at = [i for i in rows if i["scene_index"] == idx]
            per["utterances"].append(spread(i.get("utterances") for i in at))
            per["combined"].append(spread(combined(i) for i in at))
            per["similarity"].append(spread(i.get("similarity") for i in at))
            per["lexical_similarity"].append(spread(i.get("lexical_similarity") for i in at))
        out[cond] = per
    return out


def row_label(condition: str, items: Sequence[Mapping[str, Any]]) -> str:
    """The condition's name, and for ``rag`` the retriever its sessions used."""
    if condition != "rag":
        return condition
    used = Counter(i["retriever"] for i in items if i.get("retriever"))
    if not used:
        return condition
    (main, _), *others = used.most_common()
    label = f"rag (retriever: {main}"
    if others:
        label += "; " + "; ".join(f"{name} in {n} session(s)" for name, n in others)
    return label + ")"


def _retriever_text(label: str) -> str | None:
    prefix = "rag (retriever: "
    return label[len(prefix) : -1] if label.startswith(prefix) else None


def usage_table(
    rows: Sequence[Mapping[str, Any]], prices: Mapping[str, Price]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        acc = out.setdefault(
            row["role"],
            {
                "model": row.get("model"),
                "priced_as": row.get("priced_as", row["role"]),
                "calls": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
            },
        )
        for key in ("calls", "prompt_tokens", "completion_tokens"):
            acc[key] += int(row.get(key) or 0)
    for acc in out.values():
        price = prices.get(acc["priced_as"])
        if price is not None and price.configured:
            acc["cost_usd"] = round(price.cost(acc["prompt_tokens"], acc["completion_tokens"]), 6)
    return out


def build_results(
    *,
    items: list[dict[str, Any]],
    conditions: Sequence[str],
    settings: BenchSettings,
    public: dict[str, Any],
    models: dict[str, dict[str, str]],
    data_path: str,
    personas: list[str],
    runs: list[dict[str, Any]],
    usage: list[dict[str, Any]],
    discarded: list[dict[str, Any]],
    prices: Mapping[str, Price],
) -> dict[str, Any]:
    order = {c: n for n, c in enumerate(conditions)}
    items = sorted(
        items, key=lambda i: (order.get(i["condition"], 99), i["persona_id"], i["scene_index"])
    )
    by_cond = {c: [i for i in items if i["condition"] == c] for c in conditions}
    summary = {c: summarize(rows) for c, rows in by_cond.items()}
    wins: dict[str, Any] = {}
    golden = by_cond.get("golden_persona") or []
    if golden:
        for cond in conditions:
            if parse_learned(cond) is not None:
                wins[f"{cond}_vs_golden_persona"] = win_rate(
                    by_cond[cond], golden, group_size=settings.group_size
                )
    table = usage_table(usage, prices)
    costs = [row["cost_usd"] for row in table.values() if "cost_usd" in row]
    discarded_tokens = sum(
        u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)
        for d in discarded
        for u in (d.get("tokens") or {}).values()
    )
    rag_label = row_label("rag", by_cond.get("rag") or [])
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": data_path,
        "personas": personas,
        "conditions": list(conditions),
        "labels": {c: row_label(c, rows) for c, rows in by_cond.items()},
        "config": public,
        "models": models,
        "max_turns": settings.max_turns,
        "summary": summary,
        "win_rates": wins,
        "series": series(items, conditions),
        "usage": table,
        "cost_usd": round(sum(costs), 6) if costs else None,
        "discarded": {"sessions": len(discarded), "tokens": discarded_tokens},
        "failed_jobs": (runs[-1].get("failed_jobs") or []) if runs else [],
        "deviations": deviations.as_json(settings, _retriever_text(rag_label)),
        "runs": runs,
        "items": items,
    }


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _model_line(models: Mapping[str, Mapping[str, str]]) -> str:
    """``chatbot, judge = `m` (endpoint); ...``: roles sharing a model and endpoint together."""
    groups: dict[tuple[str, str], list[str]] = {}
    for role, m in models.items():
        groups.setdefault((m["model"], m["endpoint"]), []).append(role)
    return "; ".join(
        f"{', '.join(roles)} = `{model}` ({endpoint})"
        for (model, endpoint), roles in groups.items()
    )


def markdown(results: dict[str, Any]) -> str:
    turns = results["max_turns"]
    lines = [
        "# PersonaBench results",
        "",
        f"Data: `{results['data']}`, {len(results['personas'])} persona(s). "
        f"Models: {_model_line(results['models'])}.",
        "",
        "## Table 1",
        "",
        f"| Condition | Helpfulness (0–10) ↑ | Personalization (0–10) ↑ | Utterances (1–{turns}) ↓ "
        "| Satisfied (0–1) ↑ | Persona similarity, LLM judge (0–10) ↑ | Lexical overlap (0–1) "
        "| n (judged sessions) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cond, row in results["summary"].items():
        lines.append(
            f"| {results['labels'].get(cond, cond)} | {_fmt(row['helpfulness'])} | "
            f"{_fmt(row['personalization'])} | {_fmt(row['utterances'])} | "
            f"{_fmt(row['satisfied_rate'])} | {_fmt(row['persona_similarity'])} | "
            f"{_fmt(row['lexical_similarity'], 3)} | {row['n']} |"
        )
    lines += [
        "",
        "- **Helpfulness, Personalization** (0–10): the judge's scores of the first response of "
        "each session on the paper's rubric 0/3/5/7/10; mean over the n judged sessions.",
        f"- **Utterances** (1–{turns}, lower is better): user messages per session by the "
        "paper's rule (its released code): the neutralized query included, at most "
        f"`max_turns` = {turns}, also when the user was never satisfied; mean over the "
        "sessions not cut short by an error.",
        "- **Satisfied** (0–1): the share of those sessions whose simulated user was satisfied.",
        "- **Persona similarity** (0–10, the paper's Table-1 column): an LLM judge rates how "
        "well the persona after each user's last session describes the same person as the "
        "golden one (field by field and overall, by meaning, across languages); mean over "
        "personas. An empty persona scores 0 without a call.",
        "- **Lexical overlap** (0–1, secondary, not in the paper): exact match / Jaccard / "
        "soft set-F1 of the wording per golden field, averaged; it rewards the same language "
        "and phrasing, not recovery.",
        "- **n**: judged sessions (helpfulness and personalization both scored).",
    ]
    if results["win_rates"]:
        groups: list[str] = []
        for wr in results["win_rates"].values():
            groups += [g for g in wr if g not in groups]
        lines += [
            "",
            "## Win rate vs golden persona (0–1, by session group; tie = 0.5)",
            "",
            "| Condition | " + " | ".join(f"sessions {g}" for g in groups) + " |",
            "| --- |" + " ---: |" * len(groups),
        ]
        for name, wr in results["win_rates"].items():
            cells = [
                f"{wr[g]['win_rate']:.2f} (n={int(wr[g]['n'])})" if g in wr else "–" for g in groups
            ]
            short = name.removesuffix("_vs_golden_persona")
            lines.append(f"| {short} | " + " | ".join(cells) + " |")
    lines += _accounting(results)
    lines += ["", "## Deviations from the paper", ""]
    lines += [f"- **{d['topic']}.** {d['text']}" for d in results["deviations"]]
    lines += [
        "",
        "## Plot",
        "",
        f"![utterances, scores and persona similarity over sessions]({PLOT_FILE})",
        "",
    ]
    return "\n".join(lines)


def _accounting(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    summary = results["summary"]
    learned = [c for c in summary if parse_learned(c) is not None]
    if learned:
        lines += ["", "## Persona updates", ""]
        for cond in learned:
            failed = [i for i in results["items"] if i["condition"] == cond and update_failed(i)]
            scheduled = sum(
                1 for i in results["items"] if i["condition"] == cond and i.get("persona_update")
            )
            text = f"- {cond}: {scheduled} update(s) scheduled, {len(failed)} failed after retries"
            if failed:
                text += (
                    " (the persona was measured without them: "
                    + ", ".join(
                        f"{i['persona_id']} after session {i['scene_index'] + 1}"
                        for i in failed[:5]
                    )
                    + (" ..." if len(failed) > 5 else "")
                    + ")"
                )
            lines.append(text)
    errored = [i for i in results["items"] if i.get("errors")]
    if errored:
        lines += ["", "## Sessions with errors", ""]
        counts = Counter(i["condition"] for i in errored)
        first = list(dict.fromkeys(e for i in errored for e in i["errors"]))[:3]
        lines.append(
            "- "
            + ", ".join(f"{cond}: {n}" for cond, n in counts.items())
            + " session(s) (see `errors` in results.json); first errors: "
            + "; ".join(first)
        )
    if results["usage"]:
        lines += [
            "",
            "## Token usage (every attempt, interrupted ones included)",
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
    discarded = results["discarded"]
    if discarded["sessions"]:
        lines += [
            "",
            f"Discarded attempts: {discarded['sessions']} session(s) were interrupted, "
            f"discarded and rerun from their start; their {discarded['tokens']} tokens are "
            "counted above.",
        ]
    if results.get("failed_jobs"):
        lines += ["", "## Failed jobs (last run; rerun the same command to retry them)", ""]
        lines += [
            f"- {f['condition']} / {f['persona_id']}: {f['error']}" for f in results["failed_jobs"]
        ]
    return lines


def write_all(results: dict[str, Any], out: Path) -> None:
    (out / RESULTS_FILE).write_text(
        json.dumps(results, ensure_ascii=False, indent=1, default=str), encoding="utf-8"
    )
    (out / REPORT_FILE).write_text(markdown(results), encoding="utf-8")
    plot(results, out / PLOT_FILE)
