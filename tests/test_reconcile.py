"""A single-asset run reconciles trade by trade with an independent plain-loop backtester.

The reference below shares no code with the engine: pandas rolling means instead of TA-Lib, one
loop over bars, the documented rules (decide on the close, fill at the next open, slippage against
us, fees on notional, size = percent of equity at the decision close, whole shares).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hflite.engine.run import backtest
from tests.conftest import make_settings

FAST, SLOW, PCT, FEE_BPS, SLIP_BPS, CASH = 10, 40, 95.0, 5.0, 2.0, 100_000.0


def reference(df: pd.DataFrame, start: str) -> tuple[list[dict], float]:
    close, open_ = df["close"].to_numpy(), df["open"].to_numpy()
    fast = df["close"].rolling(FAST).mean().to_numpy()
    slow = df["close"].rolling(SLOW).mean().to_numpy()
    live = (df["ts"] >= pd.Timestamp(start, tz="UTC")).to_numpy()
    cash, qty, side, pending, trades = CASH, 0.0, 0, None, []
    for t in range(len(df)):
        if pending is not None and live[t]:
            buy = pending > 0
            price = open_[t] * (1 + SLIP_BPS / 1e4) if buy else open_[t] * (1 - SLIP_BPS / 1e4)
            fee = abs(pending) * price * FEE_BPS / 1e4
            cash -= pending * price + fee
            if buy:
                trades.append({"entry_ts": df["ts"].iloc[t], "entry_price": price, "qty": pending})
            else:
                trades[-1].update(exit_ts=df["ts"].iloc[t], exit_price=price)
            qty += pending
            pending = None
        if np.isnan(fast[t]) or np.isnan(slow[t]):
            continue
        d = fast[t] - slow[t]
        new_side = side if d == 0 else (1 if d > 0 else -1)  # ties keep the side
        crossed = side != 0 and new_side != side
        side = new_side
        if not (crossed and live[t]):
            continue
        equity = cash + qty * close[t]
        if new_side > 0 and qty == 0:
            pending = math.floor(equity * PCT / 100 / close[t] + 1e-9)
        elif new_side < 0 and qty > 0:
            pending = -qty
    return trades, cash + qty * close[-1]


def test_spy_trend_matches_an_independent_reference_trade_by_trade(sample_store):
    start, end = "2010-01-04", "2019-12-31"
    settings = make_settings(
        sample_store,
        run={"symbols": ["SPY"], "start": start, "end": end, "initial_cash": CASH},
        strategy={"name": "trend", "fast": FAST, "slow": SLOW, "stop_atr": 0},
        risk={
            "profile": "minimal",
            "sizing": "percent_equity",
            "percent_equity": PCT,
            "max_position_pct": 100,
            "max_drawdown_pct": 100,
        },
        execution={
            "fees": {c: {"model": "bps", "bps": FEE_BPS} for c in ("equity", "etf", "crypto", "fx")},
            "slippage": {"model": "fixed", "bps": {"etf": SLIP_BPS}},
            "max_volume_share": 1.0,
        },
    )
    result = backtest(settings, sample_store, run_id="reconcile")
    df = sample_store.read_bars("SPY", "1d", "2009-06-01", end)
    ref_trades, ref_equity = reference(df, start)

    ours = result.trades
    assert len(ours) == len(ref_trades) > 30
    for (_, row), ref in zip(ours.iterrows(), ref_trades, strict=True):
        assert row.entry_ts.date() >= ref["entry_ts"].date()  # our stamp is the bar's close time
        assert row.entry_ts.date() == ref["entry_ts"].date()
        assert row.qty == ref["qty"]
        assert row.entry_price == pytest.approx(ref["entry_price"], rel=1e-12)
        if "exit_ts" in ref:
            assert row.exit_ts.date() == ref["exit_ts"].date()
            assert row.exit_price == pytest.approx(ref["exit_price"], rel=1e-12)
    assert result.equity.iloc[-1] == pytest.approx(ref_equity, rel=1e-10)
