"""The all-in configuration trades exactly as backtesting.py does on SPY's daily sample.

Same strategy (SMA fast/slow crossover, long/flat, all-in, decided on a bar's close and filled at the
next open) and the same cost model in both: 1 bp commission on notional per side, no slippage
(backtesting.py's ``spread`` is charged on entries only, a model the engine does not have). Sizes
differ by design (backtesting.py sizes on the fill price, the engine on the decision bar's close), so
the test compares what both must agree on: the number of trades, each entry and exit date and each
fill price.
"""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from hflite.engine.run import backtest
from tests.conftest import make_settings

FAST, SLOW, BPS, CASH = 20, 100, 1.0, 1_000_000.0
START, END = "2005-01-03", "2024-12-31"
HISTORY = "2004-01-02"  # warm-up for the slow average before START

pytest.importorskip("backtesting", reason="backtesting.py is not installed (pip install -e .[test])")


def peer_trades(bars: pd.DataFrame) -> tuple[pd.DataFrame, list[pd.Timestamp]]:
    """backtesting.py on ``bars``: its closed trades and the entry dates of trades still open at the end."""
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    data = pd.DataFrame(
        {c.capitalize(): bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume")},
        index=pd.DatetimeIndex(bars["ts"]).tz_localize(None),
    )
    first_live = pd.Timestamp(START)

    class SmaCross(Strategy):
        def init(self) -> None:
            close = pd.Series(self.data.Close)
            self.fast = self.I(lambda: close.rolling(FAST).mean().to_numpy())
            self.slow = self.I(lambda: close.rolling(SLOW).mean().to_numpy())

        def next(self) -> None:
            if self.data.index[-1] < first_live:
                return
            if crossover(self.fast, self.slow) and not self.position:
                self.buy()
            elif crossover(self.slow, self.fast) and self.position:
                self.position.close()

    bt = Backtest(data, SmaCross, cash=CASH, commission=BPS / 1e4)
    with warnings.catch_warnings():  # the peer's own notices (a trade still open, pandas deprecations)
        warnings.simplefilter("ignore")
        stats = bt.run()
    still_open = [t.entry_time for t in stats._strategy.trades]
    return stats._trades, still_open


def test_all_in_sma_cross_trades_on_the_same_dates_and_prices_as_backtesting_py(sample_store):
    settings = make_settings(
        sample_store,
        run={"symbols": ["SPY"], "start": START, "end": END, "initial_cash": CASH, "benchmarks": []},
        strategy={"name": "trend", "fast": FAST, "slow": SLOW, "stop_atr": 0},
        risk={
            "profile": "minimal",
            "sizing": "percent_equity",
            "percent_equity": 100,
            "max_position_pct": 100,
            "max_drawdown_pct": 100,
        },
        execution={
            "fees": {c: {"model": "bps", "bps": BPS} for c in ("equity", "etf", "crypto", "fx")},
            "slippage": {"model": "fixed", "bps": {"etf": 0.0}},
            "max_volume_share": 1.0,
        },
    )
    ours = backtest(settings, sample_store, run_id="peers").trades
    theirs, still_open = peer_trades(sample_store.read_bars("SPY", "1d", HISTORY, END))

    closed = ours[~ours["is_open"]]
    assert len(closed) == len(theirs) > 20
    assert list(closed["entry_ts"].dt.date) == list(theirs["EntryTime"].dt.date)
    assert list(closed["exit_ts"].dt.date) == list(theirs["ExitTime"].dt.date)
    assert closed["entry_price"].to_numpy() == pytest.approx(theirs["EntryPrice"].to_numpy(), rel=1e-12)
    assert closed["exit_price"].to_numpy() == pytest.approx(theirs["ExitPrice"].to_numpy(), rel=1e-12)
    assert list(ours.loc[ours["is_open"], "entry_ts"].dt.date) == [t.date() for t in still_open]
