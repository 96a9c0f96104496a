"""(a) The trend strategy through the full engine on 1 symbol x 1,000,000 synthetic minute bars.

Full engine = market assembly, signals, risk gate, OMS, sim venue, accounting and result frames.
Run with ``make bench`` (or ``python bench/engine_minutes.py [n_bars]``).
"""

from __future__ import annotations

import sys
import time

T_IMPORT = time.perf_counter()

import numpy as np  # noqa: E402
from _common import numpy_reference, peak_rss_mb, process_seconds, synthetic_minutes, write  # noqa: E402

from hflite.domain.instrument import AssetClass, Calendar, Instrument  # noqa: E402
from hflite.engine.core import Engine, run_backtest  # noqa: E402
from hflite.engine.market import market_from_arrays  # noqa: E402
from hflite.engine.signals import compute_signals  # noqa: E402
from hflite.execution.costs import BpsCommission, FixedBpsSlippage  # noqa: E402
from hflite.execution.venues.sim import SimVenue  # noqa: E402
from hflite.risk.gate import RiskLimits  # noqa: E402
from hflite.strategy.builtin import make_strategy  # noqa: E402

FAST, SLOW = 50, 200


def main(n: int) -> dict[str, float]:
    bars = synthetic_minutes(n)
    inst = Instrument("SYN", AssetClass.CRYPTO, "USD", Calendar.ALWAYS, 0.01, 1e-4)
    start_ns = 1_577_836_800 * 10**9  # 2020-01-01 00:00 UTC
    ts = start_ns + (np.arange(n, dtype=np.int64) + 1) * 60 * 10**9  # known at each minute's close

    t0 = time.perf_counter()
    reference = numpy_reference(bars, FAST, SLOW, cost_bps=2.0)
    t_ref = time.perf_counter() - t0

    t0 = time.perf_counter()
    md = market_from_arrays({"SYN": {"ts": ts, **bars}}, {"SYN": inst}, ["SYN"])
    strategy = make_strategy("trend", {"fast": FAST, "slow": SLOW, "stop_atr": 0})
    engine = Engine(
        md,
        compute_signals(strategy, md),
        strategy_name="trend",
        limits=RiskLimits.minimal(sizing="percent_equity", percent_equity=100, max_position_pct=100),
        venue=SimVenue({"SYN": inst}, BpsCommission(1.0), FixedBpsSlippage(1.0)),
        initial_cash=1e6,
    )
    t_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_backtest(engine)
    t_loop = time.perf_counter() - t0
    t_engine = t_setup + t_loop
    orders = len(engine.orders)
    return {
        "bars": n,
        "orders": orders,
        "fills": len(engine.fills),
        "steps": engine.steps,
        "final_equity": float(engine.equity[-1]),
        "reference_final_multiple": reference,
        "engine_s": t_engine,
        "setup_s": t_setup,
        "loop_s": t_loop,
        "reference_s": t_ref,
        "bars_per_s": n / t_engine,
        "ratio_to_reference": t_engine / t_ref,
        "overhead_us_per_order": (t_engine - t_ref) / max(orders, 1) * 1e6,
        "loop_us_per_order": t_loop / max(orders, 1) * 1e6,
        "import_s": T_IMPORT and (time.perf_counter() - T_IMPORT) - t_engine - t_ref,
        "peak_rss_mb": peak_rss_mb(),
        "process_s": process_seconds(),
        "ok_finite": bool(np.isfinite(engine.equity).all()),
    }


if __name__ == "__main__":
    figures = main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
    print(write("engine_minutes", figures))
