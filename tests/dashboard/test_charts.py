"""The server-rendered charts: bar geometry stays inside the plot, scales are round."""

from __future__ import annotations

from aipersona.dashboard.charts import nice_max, stacked_bars


def test_scales_are_round_numbers_at_or_above_the_top() -> None:
    cases = {0: 1, 0.0034: 0.005, 1: 1, 3: 5, 11: 20, 99: 100, 2500: 5000, 20_000: 20_000}
    for value, top in cases.items():
        assert abs(nice_max(value) - top) < 1e-12, value


def test_stacked_bars_fit_the_plot() -> None:
    days = [f"2024-05-{d:02}" for d in range(1, 15)]
    ok = [float(d % 5) for d in range(14)]
    bad = [float(d % 3) for d in range(14)]
    chart = stacked_bars("Updates", days, [("applied", "ok", ok), ("failed", "bad", bad)])
    assert not chart.empty and len(chart.bars) == sum(1 for v in ok + bad if v > 0)
    for bar in chart.bars:
        assert chart.left <= bar.x and bar.x + bar.width <= chart.width
        assert 0 <= bar.y and bar.y + bar.height <= chart.baseline + 1e-6
    # stacked: one day's bars touch, the tallest day reaches at most the top
    tallest = max(range(14), key=lambda i: ok[i] + bad[i])
    mine = [b for b in chart.bars if b.title.startswith(days[tallest])]
    assert abs(sum(b.height for b in mine) - (chart.baseline - min(b.y for b in mine))) < 1e-6
    assert chart.labels[0][1] == "05-01" and chart.ticks[-1][1] == "5"  # the top day is 5
    assert stacked_bars("None", days, [("x", "c1", [0.0] * 14)]).empty
