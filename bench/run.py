"""Run every benchmark in its own process (so process time and peak memory are its own) and
print each figure with its target and in baselines: a fixed workload (``_common.baseline_s``) this
script times just before and just after each benchmark, so a figure can be read against the machine's
speed at that moment. Results: bench/results/<name>.json (with the baseline added).

A benchmark may report more or fewer figures than listed here (e.g. per risk profile): targets and the
shown list are ``fnmatch`` patterns, and a figure that is absent is simply not shown.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import baseline_s
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
#: (script, title, [(figure pattern, ">=" or "<=", target)]), run in this order.
BENCHES = [
    (
        "engine_minutes",
        "(a) 1 symbol x 1,000,000 minute bars, full engine, risk manager on (minimal and full profiles)",
        [
            ("bars_per_s", ">=", 1_000_000),
            ("bars_per_s_*", ">=", 1_000_000),
            ("overhead_us_per_order", "<=", 50.0),
            ("overhead_us_per_order_*", "<=", 50.0),
            ("peak_rss_mb", "<=", 1024),
            ("peak_rss_mb_*", "<=", 1024),
        ],
    ),
    (
        "peers",
        "(a) side by side: backtesting.py and vectorbt on the same bars and strategy (all in one process)",
        [("x_backtesting_full", ">=", 5.0)],
    ),
    (
        "daily_sample",
        "(b) 24 daily symbols x 10 years: load, signals, engine, results (no report)",
        [("run_s", "<=", 0.5)],
    ),
    (
        "sweep",
        "(c) 100 (fast, slow) pairs x 100,000 bars, with its full-engine equality check",
        [("process_wall_s", "<=", 5.0)],
    ),
    (
        "ingest",
        "store: ingest 1M minute bars; query 30 symbols x 10 years",
        [("rows_per_s", ">=", 1_000_000), ("query_ms", "<=", 50.0)],
    ),
    (
        "risk_gate",
        "risk gate per entry, 30 positions held: alone and inside the engine (vs the engine per bar)",
        [
            ("check_us_per_intent", "<=", 25.0),
            ("check_us_per_intent_*", "<=", 25.0),
            ("engine_check_us_per_entry", "<=", 25.0),
            ("engine_check_us_per_entry_*", "<=", 25.0),
        ],
    ),
    (
        "features",
        "AI features: 30 symbols x 10 years daily, every group (vs naive pandas)",
        [("features_s", "<=", 5.0)],
    ),
    (
        "walkforward",
        "AI walk-forward: LightGBM, monthly retraining, 10 years x 30 symbols",
        [("walkforward_s", "<=", 120.0)],
    ),
    (
        "decision",
        "AI decision for one bar-time of 30 symbols, no LLM (live path; amortised backtest path)",
        [("decision_ms_per_bar", "<=", 10.0)],
    ),
    (
        "llm",
        "LLM per decision: replay of a recorded explanation; the in-process Gemma 3 270M",
        [("replay_ms_per_decision", "<=", 1.0)],
    ),
    (
        "runtime",
        "paper/live runtime: bar in -> order out, 30 symbols x minute bars, trend, against the fake broker "
        "over loopback; reconciliation of 1,000 orders",
        [("bar_to_order_p99_ms_ex_network", "<=", 5.0), ("reconcile_1000_s", "<=", 1.0)],
    ),
    (
        "venues",
        "broker adapters against their local fakes over loopback: submit -> ack -> fill event, per order",
        [("*_overhead_us_per_order", "<=", 1000.0)],
    ),
    (
        "ops",
        "control API p99, 50 clients polling every 100 ms (hflite serve), and flooding; the loop's cost "
        "per bar of metrics and the API (hflite run --api vs without), paper run on the sample",
        [
            ("api_status_p99_ms", "<=", 20.0),
            ("api_risk_check_p99_ms", "<=", 20.0),
            ("ops_loop_cost_pct", "<=", 5.0),
        ],  # fmt: skip
    ),
    (
        "lab",
        "hflite optimize: trials/s of the trend strategy on 24 daily symbols x 10 years (full engine) and "
        "on SPY (research path); a 1,000-trial study on the research path with 2 workers; hflite validate "
        "of the demo with 1,000 Monte Carlo paths",
        [("study_1000_s", "<=", 60.0), ("validate_demo_s", "<=", 30.0)],
    ),
]
#: Figures shown when a benchmark reports them (patterns), in this order, then any other figure with a
#: target.
SHOWN = [
    "bars", "bars_per_s", "bars_per_s_*", "ratio_to_reference", "ratio_to_reference_*", "run_s",
    "engine_loop_s", "outside_loop_s", "loop_bars_per_s", "ours_bars_per_s_*", "backtesting_bars_per_s",
    "vectorbt_bars_per_s", "vectorbt_cold_s", "x_backtesting_*", "x_vectorbt_*", "trades_vs_*",
    "vectorbt_skipped", "process_s", "process_wall_s", "peak_rss_mb", "peak_rss_mb_*", "orders",
    "orders_*", "overhead_us_per_order", "overhead_us_per_order_*", "overhead_us_per_decision",
    "overhead_us_per_decision_*", "gate_us_per_entry", "gate_us_per_entry_*", "loop_us_per_order",
    "loop_us_per_order_*", "pairs", "sweep_s", "checked_against_full_engine",
    "check_us_per_intent", "check_us_per_intent_*", "check_cold_us_per_intent", "context_us_per_intent",
    "evaluate_us_per_intent", "engine_us_per_bar", "engine_us_per_bar_*", "check_to_engine_bar",
    "engine_check_us_per_entry", "engine_check_us_per_entry_*", "rows", "columns", "naive_pandas_s",
    "ratio_to_naive", "windows", "features", "s_per_window", "features_ms", "decide_ms",
    "amortised_ms_per_bar", "decisions", "recorded_replies", "replay_ms_per_decision",
    "rule_ms_per_decision", "replay_to_rule", "lookup_us", "explain_s_per_decision", "tokens_per_s",
    "prompt_tokens", "completion_tokens", "llm_to_replay",
    "bar_times", "bar_to_order_p50_ms_ex_network", "bar_to_order_p99_ms_ex_network", "bar_to_order_p99_ms",
    "phase_signals_mean_ms_ex_network", "phase_engine_mean_ms_ex_network", "reconcile_1000_s",
    "reconcile_snapshot_1000_s", "*_roundtrip_p50_ms", "*_roundtrip_p99_ms", "*_ack_p99_ms", "*_fill_p99_ms",
    "*_cpu_us_per_order", "*_transport_us_per_order", "*_overhead_us_per_order", "*_skipped",
    "api_status_p50_ms", "api_status_p99_ms", "api_risk_check_p50_ms", "api_risk_check_p99_ms",
    "api_*_flood_req_per_s", "api_*_flood_p99_ms", "loop_us_per_bar", "loop_us_per_bar_with_ops",
    "ops_loop_cost_pct",
    "engine_trials_per_s", "engine_evaluate_ms", "research_trials_per_s", "research_evaluate_ms",
    "research_overhead_ms", "research_to_engine", "study_1000_trials", "study_1000_duplicates",
    "study_1000_s", "study_1000_trials_per_s",
]  # fmt: skip


def _matching(key: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _target(key: str, targets: list[tuple[str, str, float]]) -> tuple[str, float] | None:
    """The first target whose pattern names ``key``."""
    return next(((op, limit) for p, op, limit in targets if fnmatch.fnmatchcase(key, p)), None)


def shown_keys(figures: dict[str, object], targets: list[tuple[str, str, float]]) -> list[str]:
    """The figures to show, in SHOWN's order (a pattern's matches in the benchmark's order), then any
    other figure with a target."""
    out: list[str] = []
    for pattern in [*SHOWN, *(p for p, _, _ in targets)]:
        out += [k for k in figures if fnmatch.fnmatchcase(k, pattern) and k not in out]
    return out


def in_baselines(key: str, value: object, base_s: float) -> str:
    """A time or a rate against the baseline B: a time as a multiple of B, a rate per B; "" for
    counts, ratios and memory."""
    if not isinstance(value, int | float) or isinstance(value, bool) or base_s <= 0:
        return ""
    parts = key.split("_")
    if parts[-2:] == ["per", "s"]:
        per_b = value * base_s
        return f"{per_b:,.0f} per B" if per_b >= 100 else f"{per_b:.3g} per B"
    unit = next((p for p in parts if p in ("s", "ms", "us")), None)
    if unit is None:
        return ""
    times = value / {"s": 1.0, "ms": 1e3, "us": 1e6}[unit] / base_s
    scales = ((1.0, ""), (1e-3, "m"), (1e-6, "µ"))
    scale, prefix = next(((f, p) for f, p in scales if times >= 0.1 * f), scales[-1])
    shown = times / scale
    return f"{shown:,.0f} {prefix}B" if shown >= 100 else f"{shown:.3g} {prefix}B"


def _fmt(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _verdict(value: object, op: str, limit: float) -> str:
    if not isinstance(value, int | float):
        return f"{op} {limit:,}"
    met = value >= limit if op == ">=" else value <= limit
    return f"{op} {limit:,} [{'green' if met else 'red'}]{'met' if met else 'missed'}[/]"


def run_one(name: str, env: dict[str, str]) -> tuple[dict[str, object] | None, int]:
    """Run ``bench/<name>.py`` between two baseline measurements; its figures with the baseline and
    the process's wall time added (also written back to its JSON), or None and the exit code."""
    before = baseline_s()
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(HERE / f"{name}.py")], env=env, check=False)
    wall = time.perf_counter() - t0
    after = baseline_s()
    if done.returncode != 0:
        return None, done.returncode
    path = HERE / "results" / f"{name}.json"
    figures = json.loads(path.read_text())
    figures["process_wall_s"] = wall  # spawn to exit, measured from outside
    figures["baseline_s"] = (before + after) / 2
    figures["baseline_s_before_after"] = [before, after]
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return figures, 0


def main(only: list[str]) -> int:
    console = Console(width=None if sys.stdout.isatty() else 160)  # a log file gets the whole table
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), str(HERE)])}
    table = Table(title="hflite benchmarks (this machine)", show_lines=True)
    for col in ("benchmark", "figure", "value", "target", "in baselines"):
        table.add_column(col)
    failed = False
    for name, title, targets in BENCHES:
        if only and name not in only:
            continue
        figures, code = run_one(name, env)
        if figures is None:
            table.add_row(title, "error", f"exit {code}", "", "")
            failed = True
            continue
        base = float(figures["baseline_s"])  # type: ignore[arg-type]
        lo, hi = figures["baseline_s_before_after"]  # type: ignore[misc]
        table.add_row(
            title, "baseline B", f"{base * 1e3:.1f} ms", "", f"before {lo * 1e3:.1f}, after {hi * 1e3:.1f}"
        )
        for key in shown_keys(figures, targets):
            value = figures[key]
            goal = _target(key, targets)
            target = _verdict(value, *goal) if goal else ""
            table.add_row("", key, _fmt(value), target, in_baselines(key, value, base))
    console.print(table)
    console.print(
        "B: a fixed plain-Python and numpy workload (bench/_common.py baseline_s) timed just before and "
        "just after each benchmark; a time in B or a rate per B moves far less with the machine's load "
        "than the raw figure. x_<peer>_<profile>: our bar-events per second over the peer's, measured in "
        "one process."
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
