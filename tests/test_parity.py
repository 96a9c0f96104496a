"""One engine: a backtest (which jumps over quiet bars) and a replay through the asyncio live
runtime (which steps every bar as it arrives) give identical orders, fills and equity."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import make_settings

from hflite.engine.replay import replay
from hflite.engine.run import backtest

CASES = {
    "trend_trailing_multi_asset": {
        "run": {
            "symbols": ["SPY", "TLT", "GLD", "BTC-USD", "EURUSD", "USDJPY"],
            "start": "2017-01-03",
            "end": "2021-12-31",
        },
        "strategy": {
            "name": "trend",
            "fast": 10,
            "slow": 40,
            "ma": "ema",
            "trailing": True,
            "stop_atr": 2.5,
            "allow_short": True,
        },
        "risk": {"max_gross_exposure": 2.0},
    },
    "breakout_with_take_profit": {
        "run": {"symbols": ["QQQ", "XLE", "ETH-USD"], "start": "2018-01-02", "end": "2022-12-30"},
        "strategy": {
            "name": "breakout",
            "entry_period": 20,
            "exit_period": 10,
            "take_profit_atr": 4.0,
            "allow_short": True,
        },
    },
    "mean_reversion_time_stop_partial_fills": {
        "run": {"symbols": ["AAPL", "KO", "BTC-USD"], "start": "2016-01-04", "end": "2020-12-31"},
        "strategy": {"name": "mean_reversion", "mode": "bollinger", "time_stop_bars": 5},
        "risk": {"sizing": "percent_equity", "percent_equity": 30, "max_position_pct": 40},
        "execution": {"tif": "day", "max_volume_share": 0.0000002},
    },
}


#: What each case must exercise, so the parity cannot pass vacuously.
EXERCISES = {
    "trend_trailing_multi_asset": lambda r: (
        (r.trades.direction == "short").sum() > 10 and (r.trades.exit_reason == "stop-loss").sum() > 10
    ),
    "breakout_with_take_profit": lambda r: (r.trades.exit_reason == "take-profit").sum() > 10,
    "mean_reversion_time_stop_partial_fills": lambda r: (
        r.fills.liquidity_capped.sum() > 10
        and r.trades.exit_reason.str.startswith("time stop").sum() > 10
        and (r.orders.status == "expired").any()
    ),
}


def _frames(result):
    return result.orders.reset_index(drop=True), result.fills.reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_backtest_and_replay_produce_identical_orders_fills_and_equity(case, sample_store, tmp_path: Path):
    settings = make_settings(sample_store, **CASES[case])
    bt = backtest(settings, sample_store, run_id="bt")
    rp = asyncio.run(replay(settings, sample_store, run_id="rp", journal_path=tmp_path / "journal.sqlite"))

    assert EXERCISES[case](bt), f"{case} no longer exercises what it is named for"
    bt_orders, bt_fills = _frames(bt)
    rp_orders, rp_fills = _frames(rp)
    pd.testing.assert_frame_equal(bt_orders, rp_orders)
    pd.testing.assert_frame_equal(bt_fills, rp_fills)
    pd.testing.assert_frame_equal(bt.trades, rp.trades)
    pd.testing.assert_series_equal(bt.equity, rp.equity, check_exact=False, rtol=1e-12)
    assert bt.equity.iloc[-1] == pytest.approx(rp.equity.iloc[-1], rel=1e-12)
    # the backtest really did skip quiet bars: otherwise the parity would prove nothing
    assert bt.stats["steps"] < rp.stats["steps"]


def test_replay_journals_every_order_before_and_after_it_is_sent(sample_store, tmp_path: Path):
    settings = make_settings(
        sample_store,
        run={"symbols": ["SPY"], "start": "2019-01-02", "end": "2020-12-31"},
        strategy={"name": "trend", "fast": 5, "slow": 20},
    )
    path = tmp_path / "j.sqlite"
    result = asyncio.run(replay(settings, sample_store, run_id="rp", journal_path=path))

    import sqlite3

    with sqlite3.connect(path) as db:
        statuses = dict(db.execute("SELECT id, status FROM orders").fetchall())
        first_event = db.execute(
            "SELECT kind FROM events WHERE ref = ? ORDER BY seq LIMIT 1", (result.orders.order_id.iloc[0],)
        ).fetchone()[0]
    assert statuses == dict(zip(result.orders.order_id, result.orders.status, strict=True))
    assert first_event == "order_created"
