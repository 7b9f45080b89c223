"""``aipersona bench generate`` and ``aipersona bench run``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from aipersona.core import Config

from .data import DataError


async def _generate(args: argparse.Namespace) -> int:
    from .generate import GenerateOptions, generate

    cfg = Config.load(args.config)
    try:
        summary = await generate(
            cfg,
            GenerateOptions(
                out=args.out,
                n_personas=args.n_personas,
                lang=args.lang,
                common_scenes=args.common_scenes,
                specific_scenes=args.specific_scenes,
                seeds=args.seeds,
                shared=args.shared,
            ),
        )
    except FileNotFoundError as exc:
        raise DataError(str(exc)) from None
    print(json.dumps({k: v for k, v in summary.items() if k != "usage"}, ensure_ascii=False))
    return 0


async def _run(args: argparse.Namespace) -> int:
    from .evaluate import RunOptions, run_bench
    from .report import REPORT_FILE

    cfg = Config.load(args.config)
    results = await run_bench(
        cfg,
        RunOptions(
            data=args.data or "",
            out=args.out,
            personas=args.personas,
            scenes=args.scenes,
            conditions=args.conditions,
            k=args.k,
        ),
    )
    table: dict[str, Any] = results["summary"]
    for cond, row in table.items():
        cells = ", ".join(
            f"{name}={_cell(row[key])}"
            for key, name in (
                ("helpfulness", "helpfulness(0-10)"),
                ("personalization", "personalization(0-10)"),
                ("utterances", f"utterances(1-{results['max_turns']})"),
                ("persona_similarity", "similarity(0-10)"),
                ("lexical_similarity", "lexical(0-1)"),
                ("n", "n"),
            )
        )
        print(f"{results['labels'].get(cond, cond)}: {cells}")
    errored = sum(row["with_errors"] for row in table.values())
    if errored:
        print(f"{errored} session(s) had errors (see the report)", file=sys.stderr)
    print(f"report: {args.out}/{REPORT_FILE}")
    if results["failed_jobs"]:
        print(
            f"{len(results['failed_jobs'])} job(s) failed (see the report); rerun the same "
            "command to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def register(sub: argparse._SubParsersAction) -> None:
    """The ``bench`` sub-command (entry point ``aipersona.commands``)."""
    bench = sub.add_parser("bench", help="PersonaBench: generate data, run the evaluation")
    bsub = bench.add_subparsers(dest="bench_command", required=True)

    p = bsub.add_parser("generate", help="generate a PersonaBench dataset (5 resumable stages)")
    p.add_argument("--config", "-c", help="TOML config file ([llm], [bench.*])")
    p.add_argument("--out", "-o", required=True, help="output directory (resumable)")
    p.add_argument("--n-personas", type=int, help="personas to synthesize")
    p.add_argument("--lang", help="language of the data: zh (default) or en")
    p.add_argument("--common-scenes", type=int, help="common scenes per persona")
    p.add_argument("--specific-scenes", type=int, help="persona-specific scenes per persona")
    p.add_argument("--seeds", help="seed personas file (JSON list or JSONL)")
    p.add_argument("--shared", help="directory with scene_settings.json and scene_api_dict.json")
    p.set_defaults(func=_generate)

    p = bsub.add_parser("run", help="evaluate the conditions on PersonaBench data")
    p.add_argument("--config", "-c", help="TOML config file ([llm], [bench.*])")
    p.add_argument("--data", help="PersonaBench JSONL file or directory ([bench] data)")
    p.add_argument("--out", "-o", required=True, help="output directory (resumable)")
    p.add_argument("--personas", type=int, help="use the first N personas")
    p.add_argument("--scenes", type=int, help="use the first N scenes of each persona")
    p.add_argument(
        "--conditions",
        nargs="+",
        help="no_persona golden_persona rag learned (one per k) or learned_kN",
    )
    p.add_argument("--k", nargs="+", type=int, help="update intervals for 'learned'")
    p.set_defaults(func=_run)
