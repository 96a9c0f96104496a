"""(c) A sweep of 100 (fast, slow) pairs on 100,000 bars, each pair through the engine's rules.

Uses the research path ``hflite.engine.sweep`` (same signals, risk gate and cost models as the
engine; tests/test_sweep.py proves each pair equals a full-engine run), spread over 2 processes.
This script also re-runs one pair through the full engine and checks it agrees.

Target: the whole process (imports, the sweep, the equality check) under 5 s: ``process_wall_s``, which
``bench/run.py`` measures from outside (``process_s`` is the same from inside, before exit).
"""

from __future__ import annotations

import sys
import time

import pandas as pd
from _common import numpy_reference, peak_rss_mb, process_seconds, synthetic_minutes, write

from hflite.domain.instrument import AssetClass, Calendar, Instrument
from hflite.engine.core import Engine, run_backtest
from hflite.engine.market import build_market
from hflite.engine.signals import compute_signals
from hflite.engine.sweep import SweepSpec, sweep
from hflite.execution.costs import BpsCommission, FixedBpsSlippage
from hflite.execution.venues.sim import SimVenue
from hflite.risk.gate import RiskLimits
from hflite.strategy.builtin import make_strategy

PAIRS = [
    (f, s)
    for f in (5, 8, 10, 13, 16, 20, 25, 30, 40, 50)
    for s in (60, 80, 100, 120, 150, 180, 200, 250, 300, 400)
]
REFERENCE_EVERY = 10
LIMITS = RiskLimits.minimal(sizing="percent_equity", percent_equity=100, max_position_pct=100)


def main(n: int, workers: int) -> dict[str, object]:
    bars = synthetic_minutes(n, seed=11)
    inst = Instrument("SYN", AssetClass.CRYPTO, "USD", Calendar.ALWAYS, 0.01, 1e-4)
    frame = pd.DataFrame({"ts": pd.date_range("2021-01-01", periods=n, freq="1min", tz="UTC"), **bars})
    md = build_market({"SYN": frame}, {"SYN": inst}, ["SYN"], "1m", frame.ts.iloc[0], frame.ts.iloc[-1])
    commission, slippage = BpsCommission(1.0), FixedBpsSlippage(1.0)
    spec = SweepSpec(md.bars["SYN"], LIMITS, commission, slippage, 1e6, params={"stop_atr": 0})

    t0 = time.perf_counter()
    results = sweep(spec, PAIRS, workers=workers)
    t_sweep = time.perf_counter() - t0
    # the numpy reference on every 10th pair, scaled to 100: a yardstick, not part of the sweep's process
    t0 = time.perf_counter()
    for f, s in PAIRS[::REFERENCE_EVERY]:
        numpy_reference(bars, f, s, cost_bps=2.0)
    t_ref = (time.perf_counter() - t0) * REFERENCE_EVERY

    checked = []  # tests/test_sweep.py proves every pair; here one spot check in the same process
    for res in [min(results, key=lambda r: len(r.fills))]:
        strategy = make_strategy("trend", {"fast": res.fast, "slow": res.slow, "stop_atr": 0})
        eng = run_backtest(
            Engine(
                md,
                compute_signals(strategy, md),
                strategy_name="trend",
                limits=LIMITS,
                venue=SimVenue({"SYN": inst}, commission, slippage, 1.0),
                initial_cash=1e6,
            )
        )
        assert eng.equity[-1] == res.final_equity, (res.fast, res.slow)
        checked.append([res.fast, res.slow])
    best = max(results, key=lambda r: r.final_equity)
    return {
        "bars": n,
        "pairs": len(PAIRS),
        "workers": workers,
        "fills": sum(len(r.fills) for r in results),
        "sweep_s": t_sweep,
        "reference_s": t_ref,
        "bars_per_s": n * len(PAIRS) / t_sweep,
        "ratio_to_reference": t_sweep / t_ref,
        "checked_against_full_engine": checked,
        "best_pair": [best.fast, best.slow],
        "best_final_equity": best.final_equity,
        "peak_rss_mb": peak_rss_mb(),
        "process_s": process_seconds(),
    }


if __name__ == "__main__":
    print(
        write(
            "sweep",
            main(
                int(sys.argv[1]) if len(sys.argv) > 1 else 100_000,
                int(sys.argv[2]) if len(sys.argv) > 2 else 2,
            ),
        )
    )
