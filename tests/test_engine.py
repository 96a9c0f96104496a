"""Engine scenarios with a scripted strategy on hand-made bars: every number worked out by hand."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from hflite.domain.instrument import AssetClass, Calendar, Instrument, VolumeUnit
from hflite.domain.order import TimeInForce
from hflite.domain.signal import Exits
from hflite.engine.core import Engine, StrategyError, run_backtest
from hflite.engine.market import build_market
from hflite.engine.runtime import LiveRuntime, RecordedFeed
from hflite.engine.signals import checked_signals
from hflite.execution.costs import BpsCommission, FixedBpsSlippage
from hflite.execution.venues.sim import SimVenue
from hflite.risk.gate import RiskLimits
from hflite.strategy.base import BarArrays, SignalSet

COIN = Instrument("COIN", AssetClass.CRYPTO, "USD", Calendar.ALWAYS, 0.01, 1.0, volume_unit=VolumeUnit.UNITS)
DAY = pd.Timedelta(days=1).value


class Scripted:
    """Emits the given targets at the given bars; constant ATR."""

    name = "scripted"

    def __init__(self, targets: dict[int, float], atr: float = 1.0, exits: Exits | None = None) -> None:
        self.targets, self.atr, self.exits = targets, atr, exits or Exits()

    def warmup(self) -> int:
        return 0

    def signals(self, bars: BarArrays) -> SignalSet:
        n = len(bars)
        target = np.full(n, np.nan)
        for k, v in self.targets.items():
            if k < n:
                target[k] = v
        return SignalSet(
            target,
            np.full(n, self.atr),
            self.exits,
            {"close": bars.close},
            {1: "buy at {close}", 0: "sell at {close}", -1: "short at {close}"},
        )


def frame(opens, highs=None, lows=None, closes=None, volume=1e9, start="2021-01-01"):
    opens = np.asarray(opens, float)
    closes = np.asarray(closes if closes is not None else opens, float)
    highs = np.asarray(highs if highs is not None else np.maximum(opens, closes), float)
    lows = np.asarray(lows if lows is not None else np.minimum(opens, closes), float)
    ts = pd.date_range(start, periods=len(opens), freq="D", tz="UTC")
    return pd.DataFrame(
        {
            "ts": ts,
            "open": opens,
            "high": highs,
            "low": lows,
            "close": closes,
            "volume": np.full(len(opens), volume),
        }
    )


def run(
    df,
    strategy,
    *,
    fee_bps=0.0,
    slip_bps=0.0,
    limits=None,
    cash=10_000.0,
    tif=TimeInForce.GTC,
    max_volume_share=1.0,
    inst=COIN,
):
    md = build_market(
        {inst.symbol: df}, {inst.symbol: inst}, [inst.symbol], "1d", df.ts.iloc[0], df.ts.iloc[-1]
    )
    sig = {
        inst.symbol: checked_signals(
            strategy, inst.symbol, md.bars[inst.symbol].arrays(), md.bars[inst.symbol].ts
        )
    }
    venue = SimVenue(
        {inst.symbol: inst}, BpsCommission(fee_bps), FixedBpsSlippage(slip_bps), max_volume_share
    )
    eng = Engine(
        md,
        sig,
        strategy_name="s",
        limits=limits or RiskLimits.minimal(sizing="percent_equity", percent_equity=50, max_position_pct=100),
        venue=venue,
        initial_cash=cash,
        tif=tif,
    )
    return run_backtest(eng)


def test_an_order_decided_on_a_bar_fills_at_the_next_bar_open_with_costs():
    # signal at bar 1 (close 101) -> buy at bar 2 open 102 + 10 bps slippage = 102.102
    # size: 50% of 10,000 at the decision close 101 -> 49.5 -> 49 units; fee 10 bps of 49*102.102
    eng = run(frame([100, 101, 102, 103, 104]), Scripted({1: 1.0}), fee_bps=10, slip_bps=10)
    (fill,) = eng.fills
    assert fill.bar_index == 2 and fill.qty == 49
    assert fill.price == pytest.approx(102.102)
    assert fill.fee == pytest.approx(49 * 102.102 * 0.001)
    # equity at the end: cash + 49 * last close 104
    assert eng.equity[-1] == pytest.approx(10_000 - 49 * 102.102 - fill.fee + 49 * 104)


def test_nothing_fills_when_the_signal_is_on_the_last_bar():
    eng = run(frame([100, 101, 102]), Scripted({2: 1.0}))
    assert eng.fills == [] and [o.status.value for o in eng.orders.values()] == ["accepted"]


def test_a_stop_loss_fills_at_the_trigger_or_at_a_worse_gap_open():
    # buy at bar 1 open 100; ATR 2, stop 1.5 ATR -> 97.0; bar 3 trades down to 96 from an open of 99
    df = frame([100, 100, 100, 99, 95], lows=[100, 99, 98, 96, 94], closes=[100, 100, 99, 97, 95])
    eng = run(df, Scripted({0: 1.0}, atr=2.0, exits=Exits(stop_atr=1.5)))
    stop_fill = eng.fills[-1]
    assert (stop_fill.bar_index, stop_fill.price) == (3, 97.0)
    # gap: open 95 already below a 97 stop -> fills at the open (worse)
    df_gap = frame([100, 100, 100, 95, 95], lows=[100, 99, 98, 94, 94], closes=[100, 100, 99, 95, 95])
    assert run(df_gap, Scripted({0: 1.0}, atr=2.0, exits=Exits(stop_atr=1.5))).fills[-1].price == 95.0


def test_a_stop_can_hit_on_the_entry_bar_itself_after_the_open():
    # enter at bar 1 open 100; stop 98; bar 1 low is 97 -> stopped at 98 on the same bar
    df = frame([100, 100, 100], lows=[100, 97, 99], closes=[100, 99, 100])
    eng = run(df, Scripted({0: 1.0}, atr=1.0, exits=Exits(stop_atr=2.0)))
    assert [(f.bar_index, f.price) for f in eng.fills] == [(1, 100.0), (1, 98.0)]


def test_a_trailing_stop_only_ever_moves_in_the_trade_s_favour():
    highs = [100, 101, 110, 105, 120, 108]
    df = frame(
        [100, 100, 105, 104, 110, 100],
        highs=highs,
        lows=[99, 99, 104, 103, 109, 95],
        closes=[100, 101, 108, 104, 118, 100],
    )
    eng = run(df, Scripted({0: 1.0}, atr=2.0, exits=Exits(stop_atr=2.0, trailing=True)))
    stop = next(o for o in eng.orders.values() if o.reason == "stop-loss")
    # entry 100 -> stop 96; after bar1 high 101 -> 97; bar2 110 -> 106; bar3 105 -> stays 106;
    # bar 3 low 103 <= 106: stopped at 106 on bar 3 (open 104 is not below 106 -> gap rule: open 104 worse)
    assert stop.status.value == "filled"
    assert eng.fills[-1].bar_index == 3
    assert eng.fills[-1].price == 104.0  # bar 3 opened at 104, below the 106 stop: the worse price


def test_a_time_stop_exits_at_the_next_open_after_n_bars():
    eng = run(frame(list(range(100, 110))), Scripted({0: 1.0}, exits=Exits(time_stop_bars=3)))
    entry, exit_ = eng.fills
    # entered at bar 1; held 3 bars at the close of bar 4 -> exit at bar 5 open (105)
    assert (entry.bar_index, exit_.bar_index, exit_.price) == (1, 5, 105.0)
    assert eng.portfolio.trades[0].exit_reason.startswith("time stop: 3 bars held")


def test_a_short_round_trip_books_the_profit_of_a_falling_price():
    inst = Instrument("SHORTY", AssetClass.EQUITY, "USD", Calendar.ALWAYS, 0.01, 1.0)
    eng = run(frame([100, 100, 90, 80, 80]), Scripted({0: -1.0, 2: 0.0}), inst=inst)
    trade = eng.portfolio.trades[0]
    # 50% of 10,000 at 100 -> 50 units short at 100 (bar 1), covered at 80 (bar 3)
    assert (trade.direction, trade.qty, trade.entry_price, trade.exit_price) == (-1, 50, 100.0, 80.0)
    assert trade.pnl == pytest.approx(1_000.0)
    assert eng.equity[-1] == pytest.approx(11_000.0)


def test_volume_caps_split_an_order_and_day_orders_expire_the_rest():
    # 50% of 10,000 at 10 = 500 units; 10% of a 2,000-unit bar = 200 per bar
    df = frame([10.0] * 6, volume=2_000)
    eng = run(df, Scripted({0: 1.0}), max_volume_share=0.1, tif=TimeInForce.DAY)
    assert [f.qty for f in eng.fills] == [200.0]
    assert [o.status.value for o in eng.orders.values()] == ["expired"]
    eng = run(df, Scripted({0: 1.0}), max_volume_share=0.1, tif=TimeInForce.GTC)
    assert [f.qty for f in eng.fills] == [200.0, 200.0, 100.0] and all(
        f.liquidity_capped for f in eng.fills[:2]
    )


def test_missing_bars_are_skipped_and_reported():
    df = frame([100, 101, 102, 103, 104, 105]).drop(index=[2, 3]).reset_index(drop=True)
    md = build_market({"COIN": df}, {"COIN": COIN}, ["COIN"], "1d", df.ts.iloc[0], df.ts.iloc[-1])
    assert md.length == 4
    assert any("2 missing bars vs the 24/7 calendar (2021-01-03, 2021-01-04)" in w for w in md.warnings)


def test_nan_prices_are_dropped_with_a_warning_naming_the_date():
    df = frame([100, 101, 102, 103])
    df.loc[1, "close"] = np.nan
    md = build_market({"COIN": df}, {"COIN": COIN}, ["COIN"], "1d", df.ts.iloc[0], df.ts.iloc[-1])
    assert md.bars["COIN"].n == 3
    assert any("dropped 1 bars with NaN or non-positive prices (first 2021-01-02" in w for w in md.warnings)


class Exploding(Scripted):
    def signals(self, bars: BarArrays) -> SignalSet:
        if len(bars) > 3:
            raise ZeroDivisionError("boom")
        return super().signals(bars)


def test_a_strategy_that_raises_stops_the_run_naming_the_symbol_and_bar():
    with pytest.raises(StrategyError, match=r"raised on COIN at bar 3 \(2021-01-05.*ZeroDivisionError: boom"):
        run(frame([100, 101, 102, 103, 104]), Exploding({}))


def test_a_strategy_that_returns_garbage_targets_is_refused():
    with pytest.raises(StrategyError, match="gave target 2.0 for COIN at bar 1"):
        run(frame([100, 101, 102]), Scripted({1: 2.0}))


def test_the_live_runtime_names_the_bar_when_a_strategy_raises():
    df = frame([100, 101, 102, 103, 104])
    md = build_market({"COIN": df}, {"COIN": COIN}, ["COIN"], "1d", df.ts.iloc[0], df.ts.iloc[-1])
    venue = SimVenue({"COIN": COIN}, BpsCommission(0), FixedBpsSlippage(0))

    def make(m, s):
        return Engine(m, s, strategy_name="x", limits=RiskLimits.minimal(), venue=venue, initial_cash=1e4)

    runtime = LiveRuntime(md, Exploding({}), make)
    with pytest.raises(StrategyError, match=r"raised on COIN at bar 3 \(2021-01-05"):
        asyncio.run(runtime.run(RecordedFeed(md)))


def test_a_usdjpy_position_is_valued_in_usd_at_the_current_rate():
    usdjpy = Instrument(
        "USDJPY",
        AssetClass.FX,
        "JPY",
        Calendar.ALWAYS,
        0.001,
        1.0,
        base_currency="USD",
        volume_unit=VolumeUnit.NONE,
    )
    df = frame([150.0, 150.0, 150.0, 160.0])
    eng = run(df, Scripted({0: 1.0}), inst=usdjpy)
    # 50% of 10,000 USD at 150 JPY, fx 1/150 -> 5,000 USD = 5,000 units, bought at 150 JPY
    # at 160: position 5,000*160 JPY, cash -750,000 JPY; in USD: (800,000 - 750,000)/160 = 312.5
    assert eng.fills[0].qty == 5_000
    assert eng.equity[-1] == pytest.approx(10_000 + 312.5)
