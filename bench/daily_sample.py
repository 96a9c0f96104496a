"""(b) The trend strategy through the full engine on every daily symbol of the sample over 10 years.

ETH-USD has only 7 years of history (from 2017-11-09), so the 10-year window 2015-01-02 ..
2024-12-06 runs the other 24 daily symbols. Run with ``make bench``.

``run_s`` is the whole ``backtest`` call in a fresh process (so its first uses count: the DuckDB
connection, each file's hash check on first read, the NYSE calendar, lazy imports): loading, signals,
the engine, the result frames and the LLM pass of the default ``[llm]`` (replay), no report.
``outside_loop_s`` is ``run_s`` minus the engine loop. Target: ``run_s`` < 0.5 s.
"""

from __future__ import annotations

import tempfile
import time

from _common import numpy_reference, peak_rss_mb, process_seconds, write

from hflite.config import load_settings
from hflite.data.sample import ensure_sample, sample_symbols
from hflite.data.store import Store
from hflite.engine.run import backtest


def main() -> dict[str, float]:
    store = Store(tempfile.mkdtemp(prefix="hflite-bench-"))
    ensure_sample(store)
    symbols = [s for s in sample_symbols("1d") if s != "ETH-USD"]
    settings = load_settings(
        None,
        {
            "run": {"symbols": symbols, "start": "2015-01-02", "end": "2024-12-06", "benchmarks": []},
            "strategy": {"name": "trend", "fast": 20, "slow": 100, "stop_atr": 3.0},
            "data": {"dir": store.root},
        },
    )
    t0 = time.perf_counter()
    result = backtest(settings, store, run_id="bench")
    t_run = time.perf_counter() - t0
    bars = int(result.stats["bars"])
    t0 = time.perf_counter()
    for sym in symbols:
        px = result.prices[sym]
        numpy_reference({c: px[c].to_numpy() for c in ("open", "close")}, 20, 100, cost_bps=2.0)
    t_ref = time.perf_counter() - t0
    return {
        "symbols": len(symbols),
        "bars": bars,
        "timeline_points": int(result.stats["timeline_points"]),
        "orders": len(result.orders),
        "fills": len(result.fills),
        "steps": int(result.stats["steps"]),
        "engine_loop_s": result.stats["engine_seconds"],
        "run_s": t_run,
        "outside_loop_s": t_run - result.stats["engine_seconds"],
        "reference_s": t_ref,
        "bars_per_s": bars / t_run,
        "loop_bars_per_s": bars / result.stats["engine_seconds"],
        "ratio_to_reference": t_run / t_ref,
        "peak_rss_mb": peak_rss_mb(),
        "process_s": process_seconds(),
        "final_equity": float(result.equity.iloc[-1]),
    }


if __name__ == "__main__":
    print(write("daily_sample", main()))
