"""Side by side with peers: backtesting.py (and vectorbt where it is installed) on exactly the bars and
strategy of ``bench/engine_minutes.py``: 1 symbol x 1,000,000 synthetic minute bars
(``_common.synthetic_minutes``, the same seed), an SMA 50/200 crossover, long/flat, all-in, decided on
a bar's close and filled at the next bar's open.

All in this one process, so the multiples compare like with like on a shared machine:

1. our full engine, as ``engine_minutes.main`` runs it (both risk profiles when it reports them; when
   it reports no full-profile figure, the full profile is measured here: ``RiskLimits()``, every rule
   at its default, with the all-in sizing);
2. backtesting.py (``Backtest(...).run()``: its indicators, its bar loop and its statistics);
3. vectorbt, twice: cold (numba compiles its kernels) and warm (the figure used);
4. our engine again, then the better of our two runs.

Costs as close as the peers' models allow: 1 bp commission a side everywhere; slippage 1 bp a side in
ours and in vectorbt, and in backtesting.py its ``spread`` of 2 bp, which it charges once per round
trip (at entry). Also the all-in trades (ours with the ``minimal`` profile) are compared with each
peer's, entry and exit bar by bar. Target: ``x_backtesting_full`` (our bar-events per second with the
full risk manager on / backtesting.py's) >= 5. Run with ``make bench`` or
``python bench/peers.py [n_bars]``.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bar

import engine_minutes  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _common import peak_rss_mb, process_seconds, sma, synthetic_minutes, write  # noqa: E402

from hflite.domain.instrument import AssetClass, Calendar, Instrument  # noqa: E402
from hflite.engine.core import Engine, run_backtest  # noqa: E402
from hflite.engine.market import market_from_arrays  # noqa: E402
from hflite.engine.signals import compute_signals  # noqa: E402
from hflite.execution.costs import BpsCommission, FixedBpsSlippage  # noqa: E402
from hflite.execution.venues.sim import SimVenue  # noqa: E402
from hflite.risk.gate import RiskLimits  # noqa: E402
from hflite.strategy.builtin import make_strategy  # noqa: E402

FAST, SLOW = engine_minutes.FAST, engine_minutes.SLOW
CASH, FEE_BPS, SLIP_BPS = 1e6, 1.0, 1.0
START_NS = 1_577_836_800 * 10**9  # 2020-01-01 00:00 UTC, as in engine_minutes
TARGET_X_BACKTESTING = 5.0


def bar_times(n: int) -> np.ndarray:
    return START_NS + (np.arange(n, dtype=np.int64) + 1) * 60 * 10**9  # each minute's close


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def ours(n: int) -> dict[str, float]:
    """``engine_minutes.main``'s figures: bar-events per second per risk profile (and the rest)."""
    return engine_minutes.main(n)


#: The all-in configuration (what the peers run), and the full profile with the same all-in sizing
#: (used only when engine_minutes reports no full-profile figure of its own).
ALL_IN = {"sizing": "percent_equity", "percent_equity": 100, "max_position_pct": 100}
LIMITS = {"minimal": RiskLimits.minimal(**ALL_IN), "full": RiskLimits(**ALL_IN)}  # type: ignore[arg-type]


def our_run(bars: dict[str, np.ndarray], profile: str) -> tuple[float, Engine]:
    """Our full engine on ``bars`` (market assembly, signals, the loop): seconds, and the engine."""
    inst = Instrument("SYN", AssetClass.CRYPTO, "USD", Calendar.ALWAYS, 0.01, 1e-4)
    t0 = time.perf_counter()
    md = market_from_arrays({"SYN": {"ts": bar_times(len(bars["close"])), **bars}}, {"SYN": inst}, ["SYN"])
    strategy = make_strategy("trend", {"fast": FAST, "slow": SLOW, "stop_atr": 0})
    engine = Engine(
        md,
        compute_signals(strategy, md),
        strategy_name="trend",
        limits=LIMITS[profile],
        venue=SimVenue({"SYN": inst}, BpsCommission(FEE_BPS), FixedBpsSlippage(SLIP_BPS)),
        initial_cash=CASH,
    )
    run_backtest(engine)
    return time.perf_counter() - t0, engine


def our_all_in_trades(bars: dict[str, np.ndarray]) -> list[tuple[int, int | None]]:
    """(entry bar, exit bar or None) of each trade of the all-in configuration (minimal profile)."""
    _, engine = our_run(bars, "minimal")
    # one symbol, every bar live: the timeline index is the bar index
    return [(t.entry_bar, None if t.is_open else t.exit_bar) for t in engine.portfolio.trades]


def peer_frame(bars: dict[str, np.ndarray]) -> pd.DataFrame:
    index = pd.DatetimeIndex(bar_times(len(bars["close"])).view("M8[ns]"))
    return pd.DataFrame({c.capitalize(): bars[c] for c in ("open", "high", "low", "close", "volume")}, index)


def run_backtesting(frame: pd.DataFrame) -> tuple[float, list[tuple[int, int | None]]]:
    """backtesting.py on ``frame``: seconds (construction and run) and (entry bar, exit bar) per trade."""
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    class SmaCross(Strategy):
        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, FAST)
            self.slow = self.I(sma, self.data.Close, SLOW)

        def next(self) -> None:
            if crossover(self.fast, self.slow):
                if not self.position:
                    self.buy()
            elif crossover(self.slow, self.fast) and self.position:
                self.position.close()

    with warnings.catch_warnings():  # its notices: a trade still open at the end, pandas deprecations
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        bt = Backtest(frame, SmaCross, cash=CASH, commission=FEE_BPS / 1e4, spread=2 * SLIP_BPS / 1e4)
        stats = bt.run()
        seconds = time.perf_counter() - t0
    done = stats["_trades"]
    trades: list[tuple[int, int | None]] = list(
        zip(done["EntryBar"].astype(int).tolist(), done["ExitBar"].astype(int).tolist(), strict=True)
    )
    trades += [(int(t.entry_bar), None) for t in stats["_strategy"].trades]
    return seconds, trades


def run_vectorbt(frame: pd.DataFrame) -> tuple[float, float, list[tuple[int, int | None]]]:
    """vectorbt: seconds cold (numba compiling), seconds warm, and (entry bar, exit bar) per trade."""
    import vectorbt as vbt

    def once() -> object:
        close, open_ = frame["Close"], frame["Open"]
        fast, slow = vbt.MA.run(close, FAST), vbt.MA.run(close, SLOW)
        entries = fast.ma_crossed_above(slow).shift(1, fill_value=False)  # decided at t, filled at t+1
        exits = fast.ma_crossed_below(slow).shift(1, fill_value=False)
        return vbt.Portfolio.from_signals(
            close,
            entries,
            exits,
            price=open_,
            fees=FEE_BPS / 1e4,
            slippage=SLIP_BPS / 1e4,
            init_cash=CASH,
            size=np.inf,
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        once()
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        pf = once()
        warm = time.perf_counter() - t0
    records = pf.trades.records  # type: ignore[attr-defined]
    is_open = records["status"] == 0
    trades = [
        (int(e), None if o else int(x))
        for e, x, o in zip(records["entry_idx"], records["exit_idx"], is_open, strict=True)
    ]
    return cold, warm, trades


def same_trades(a: list[tuple[int, int | None]], b: list[tuple[int, int | None]]) -> dict[str, object]:
    """How two trade lists compare: counts, and the first trade where they part."""
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    if first is None and len(a) != len(b):
        first = min(len(a), len(b))
    return {"ours": len(a), "peer": len(b), "identical": first is None, "first_difference": first}


def _profile_rates(figures: dict[str, float]) -> dict[str, float]:
    """Our bar-events per second by risk profile, from whichever keys engine_minutes reports."""
    rates = {p: figures[f"bars_per_s_{p}"] for p in ("minimal", "full") if f"bars_per_s_{p}" in figures}
    if not rates and "bars_per_s" in figures:
        rates["minimal"] = figures["bars_per_s"]  # engine_minutes before it ran both profiles
    return {p: float(v) for p, v in rates.items()}


def _rates(n: int, bars: dict[str, np.ndarray]) -> tuple[dict[str, float], str]:
    """Our bar-events per second by profile: engine_minutes' own figures, plus the full profile
    measured here when it reports none; and where the full-profile figure came from."""
    rates = _profile_rates(ours(n))
    if "full" in rates:
        return rates, "engine_minutes"
    seconds, _ = our_run(bars, "full")
    rates["full"] = n / seconds
    return rates, "peers.py (RiskLimits() with all-in sizing; engine_minutes reported no full profile)"


def main(n: int) -> dict[str, object]:
    bars = synthetic_minutes(n)
    frame = peer_frame(bars)
    first, source = _rates(n, bars)
    out: dict[str, object] = {"bars": n, "fast": FAST, "slow": SLOW, "full_profile_source": source}

    bt_s, bt_trades = run_backtesting(frame)
    out.update(
        backtesting_version=_version("backtesting"),
        backtesting_s=bt_s,
        backtesting_bars_per_s=n / bt_s,
    )
    peers = {"backtesting": n / bt_s}
    our_trades = our_all_in_trades(bars)
    out["trades_vs_backtesting"] = same_trades(our_trades, bt_trades)
    try:
        import vectorbt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: skip it, and say why
        out["vectorbt_skipped"] = f"vectorbt not importable here ({type(exc).__name__}: {exc})"
    else:
        cold, warm, vbt_trades = run_vectorbt(frame)
        out.update(
            vectorbt_version=_version("vectorbt"),
            vectorbt_cold_s=cold,
            vectorbt_s=warm,
            vectorbt_bars_per_s=n / warm,
        )
        peers["vectorbt"] = n / warm
        out["trades_vs_vectorbt"] = same_trades(our_trades, vbt_trades)

    second, _ = _rates(n, bars)
    for profile in first:
        runs = [first[profile], second.get(profile, first[profile])]
        out[f"ours_bars_per_s_{profile}"] = max(runs)
        out[f"ours_bars_per_s_{profile}_range"] = [min(runs), max(runs)]
        for peer, rate in peers.items():
            out[f"x_{peer}_{profile}"] = max(runs) / rate
    out["target_x_backtesting"] = TARGET_X_BACKTESTING
    out["peak_rss_mb"] = peak_rss_mb()
    out["process_s"] = process_seconds()
    return out


def _say(f: dict[str, object]) -> None:
    peers = [p for p in ("backtesting", "vectorbt") if f"{p}_bars_per_s" in f]
    for p in peers:
        line = f"{p} {f.get(f'{p}_version')}: {f[f'{p}_bars_per_s']:,.0f} bar-events/s"
        for profile in ("full", "minimal"):
            if f"x_{p}_{profile}" in f:
                line += f"; ours ({profile} risk profile) = {f[f'x_{p}_{profile}']:.1f}x"
        trades = f.get(f"trades_vs_{p}")
        if isinstance(trades, dict):
            same = "identical" if trades["identical"] else f"differ from trade {trades['first_difference']}"
            line += f"; all-in trades {trades['ours']} vs {trades['peer']} ({same})"
        print(line)
    if "vectorbt_skipped" in f:
        print(f"vectorbt skipped: {f['vectorbt_skipped']}")
    print(f"full risk profile figure from: {f['full_profile_source']}")


if __name__ == "__main__":
    figures = main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
    _say(figures)
    print(write("peers", figures))
