"""Side-by-side A/B of a benchmark script on two checkouts, in one run, alternating.

    git worktree add /tmp/old <commit> && python3 -m venv /tmp/old/.venv \
        && /tmp/old/.venv/bin/pip install -e /tmp/old
    .venv/bin/python benchmarks/ab.py --old /tmp/old --new . --rounds 5 \
        -- benchmarks/overhead.py --mode stub --users 1 100 --rate 1000 --seconds 3

Each checkout runs its own copy of the script with its own venv (``<dir>/.venv``). Runs
alternate in ABBA order (old, new, new, old, ...): both see the same machine load, and
neither always runs second (measured: the second run of a pair is ~15% slower in the
open-loop p50 whichever checkout it is, so a fixed order biases the result); each table row
(``| label | messages | msg/s | p50 ms | p99 ms |``) is reported as the median over the
rounds, with new/old ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path


def run(checkout: Path, script_args: list[str]) -> dict[str, tuple[float, float, float]]:
    python = checkout / ".venv" / "bin" / "python"
    out = subprocess.run(
        [str(python), *script_args], cwd=checkout, capture_output=True, text=True, check=True
    ).stdout
    rows: dict[str, tuple[float, float, float]] = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[2].replace(",", "").replace(".", "").isdigit():
            rows[cells[0]] = tuple(float(c.replace(",", "")) for c in cells[2:5])  # type: ignore[assignment]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--new", type=Path, default=Path("."))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("script", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    script = [a for a in args.script if a != "--"]
    results: dict[str, list[dict[str, tuple[float, float, float]]]] = {"old": [], "new": []}
    for i in range(args.rounds):
        for side in ("old", "new") if i % 2 == 0 else ("new", "old"):
            results[side].append(run(getattr(args, side).resolve(), script))
            print(f"round {i + 1}/{args.rounds} {side} done", file=sys.stderr, flush=True)
    print("| run | old msg/s | new msg/s | ratio | old p50 ms | new p50 ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    for label in results["old"][0]:
        med = {
            side: [
                statistics.median(r[label][k] for r in results[side] if label in r)
                for k in range(3)
            ]
            for side in ("old", "new")
        }
        o, n = med["old"], med["new"]
        print(
            f"| {label} | {o[0]:,.0f} | {n[0]:,.0f} | {n[0] / o[0]:.2f} "
            f"| {o[1]:.2f} | {n[1]:.2f} | {n[1] / o[1]:.2f} |"
        )


if __name__ == "__main__":
    main()
