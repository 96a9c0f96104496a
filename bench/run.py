"""Run every benchmark in its own process (so process time and peak memory are its own) and
print the figures with their targets. Results: bench/results/<name>.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
BENCHES = [
    (
        "engine_minutes",
        "(a) 1 symbol x 1,000,000 minute bars, full engine",
        [
            ("bars_per_s", ">=", 1_000_000),
            ("process_s", "<=", 2.0),
            ("overhead_us_per_order", "<=", 10.0),
            ("peak_rss_mb", "<=", 1024),
        ],
    ),
    ("daily_sample", "(b) 24 daily symbols x 10 years, full engine", []),
    ("sweep", "(c) 100 (fast, slow) pairs x 100,000 bars", [("process_s", "<=", 5.0)]),
    (
        "ingest",
        "store: ingest 1M minute bars; query 30 symbols x 10 years",
        [("rows_per_s", ">=", 1_000_000), ("query_ms", "<=", 50.0)],
    ),
    (
        "risk_gate",
        "risk gate per entry, 30 positions held (vs the engine per bar)",
        [("check_us_per_intent", "<=", 50.0)],
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
]
#: Figures shown when a benchmark reports them, in this order (then any other figure with a target).
SHOWN = [
    "bars", "bars_per_s", "ratio_to_reference", "process_s", "process_wall_s", "peak_rss_mb",
    "orders", "overhead_us_per_order", "loop_us_per_order", "pairs", "sweep_s",
    "check_us_per_intent", "context_us_per_intent", "evaluate_us_per_intent", "engine_us_per_bar",
    "check_to_engine_bar", "engine_check_us_per_entry", "rows", "columns", "naive_pandas_s",
    "ratio_to_naive", "windows", "features", "s_per_window", "features_ms", "decide_ms",
    "amortised_ms_per_bar", "decisions", "recorded_replies", "replay_ms_per_decision",
    "rule_ms_per_decision", "replay_to_rule", "lookup_us", "explain_s_per_decision", "tokens_per_s",
    "prompt_tokens", "completion_tokens", "llm_to_replay",
]  # fmt: skip


def main() -> int:
    console = Console()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), str(HERE)])}
    table = Table(title="hflite benchmarks (this machine)", show_lines=True)
    for col in ("benchmark", "figure", "value", "target"):
        table.add_column(col)
    failed = False
    for name, title, targets in BENCHES:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / f"{name}.py")], env=env, check=False)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            table.add_row(title, "error", f"exit {done.returncode}", "")
            failed = True
            continue
        path = HERE / "results" / f"{name}.json"
        figures = json.loads(path.read_text())
        figures["process_wall_s"] = wall  # spawn to exit, measured from outside
        path.write_text(json.dumps(figures, indent=2) + "\n")
        wanted = {k: (op, v) for k, op, v in targets}
        shown = [k for k in SHOWN if k in figures] + [k for k in wanted if k in figures and k not in SHOWN]
        for key in shown:
            value = figures[key]
            target = ""
            if key in wanted:
                op, limit = wanted[key]
                met = value >= limit if op == ">=" else value <= limit
                target = f"{op} {limit:,} [{'green' if met else 'red'}]{'met' if met else 'missed'}[/]"
            shown = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
            table.add_row(title, key, shown, target)
            title = ""
    console.print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
