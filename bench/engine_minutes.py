"""(a) The trend strategy through the full engine on 1 symbol x 1,000,000 synthetic minute bars.

Full engine = market assembly, signals, risk gate, OMS, sim venue, accounting and result frames.
Run with ``make bench`` (or ``python bench/engine_minutes.py [n_bars]``).

Two risk profiles, each in its own process (its own peak memory): ``minimal`` (the unsuffixed
figures, as before) and ``full`` (every rule on; figures suffixed ``_full``). The synthetic walk
loses money, so under ``full`` the drawdown halt trips early and most later entries are refused:
an order is then rarer than a decision, and ``overhead_us_per_decision`` (every intent: entries
refused or not, and exits) says what the engine costs per verdict. ``gate_us_per_entry`` is the
risk gate's time per entry inside the engine (``RiskManager.check``: market context and verdict).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

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
PROFILES = ("minimal", "full")
#: The sizing both profiles use: the whole account in the one position (the full profile's other
#: caps, crypto at 20% of equity among them, cut it).
SIZING = {"sizing": "percent_equity", "percent_equity": 100, "max_position_pct": 100}


def limits_for(profile: str) -> RiskLimits:
    return RiskLimits.minimal(**SIZING) if profile == "minimal" else RiskLimits(**SIZING)  # type: ignore[arg-type]


def main(n: int, profile: str = "minimal") -> dict[str, object]:
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
        limits=limits_for(profile),
        venue=SimVenue({"SYN": inst}, BpsCommission(1.0), FixedBpsSlippage(1.0)),
        initial_cash=1e6,
    )
    t_setup = time.perf_counter() - t0
    check, gate = engine.risk.check, [0.0, 0]

    def timed(*args: object) -> object:  # the gate's own time inside the run
        t = time.perf_counter()
        out = check(*args)  # type: ignore[arg-type]
        gate[0] += time.perf_counter() - t
        gate[1] += 1
        return out

    engine.risk.check = timed  # type: ignore[method-assign]
    t0 = time.perf_counter()
    run_backtest(engine)
    t_loop = time.perf_counter() - t0
    t_engine = t_setup + t_loop
    orders = len(engine.orders)
    decisions = len(engine.decisions)
    return {
        "profile": profile,
        "bars": n,
        "orders": orders,
        "fills": len(engine.fills),
        "decisions": decisions,
        "verdicts": dict(Counter(d.verdict.status.value for d in engine.decisions)),
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
        "overhead_us_per_decision": (t_engine - t_ref) / max(decisions, 1) * 1e6,
        "loop_us_per_order": t_loop / max(orders, 1) * 1e6,
        "gate_entries": gate[1],
        "gate_us_per_entry": gate[0] / max(gate[1], 1) * 1e6,
        "import_s": T_IMPORT and (time.perf_counter() - T_IMPORT) - t_engine - t_ref,
        "peak_rss_mb": peak_rss_mb(),
        "process_s": process_seconds(),
        "ok_finite": bool(np.isfinite(engine.equity).all()),
    }


def in_own_process(n: int, profile: str) -> dict[str, object]:
    """``main(n, profile)`` in a fresh interpreter: its own imports, memory and timings."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(n), "--profile", profile, "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    figures: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n_bars = int(args[0]) if args else 1_000_000
    if "--json" in sys.argv:  # a child: one profile, figures on stdout
        chosen = sys.argv[sys.argv.index("--profile") + 1]
        print(json.dumps(main(n_bars, chosen), default=float))
        sys.exit(0)
    figures = main(n_bars, "minimal")
    full = in_own_process(n_bars, "full")
    figures.update({f"{k}_full": v for k, v in full.items() if k not in ("profile", "bars")})
    figures["bars_per_s_minimal"] = figures["bars_per_s"]
    figures["overhead_us_per_order_minimal"] = figures["overhead_us_per_order"]
    for p, f in (("minimal", figures), ("full", full)):
        print(
            f"{p:8s} {f['bars_per_s']:>12,.0f} bars/s  {f['overhead_us_per_order']:6.1f} us/order "
            f"({f['orders']} orders)  {f['overhead_us_per_decision']:6.1f} us/decision "
            f"({f['decisions']})  gate {f['gate_us_per_entry']:5.1f} us/entry  "
            f"peak RSS {f['peak_rss_mb']:.0f} MB"
        )
    print(write("engine_minutes", figures))
