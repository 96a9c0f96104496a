"""One engine: a backtest (which jumps over quiet bars) and a replay through the asyncio live
runtime (which steps every bar as it arrives) give identical orders, fills and equity."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest

from hflite.engine.replay import replay
from hflite.engine.run import backtest
from tests.conftest import make_settings

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
    # Every risk rule on, into the 2020 crash, with human commands scheduled in the config.
    "risk_rules_and_commands": {
        "run": {
            "symbols": ["SPY", "QQQ", "IWM", "XLE", "AAPL", "MSFT", "JPM", "BAC", "XOM", "CVX", "BTC-USD"],
            "start": "2019-06-03",
            "end": "2020-06-30",
        },
        "strategy": {"name": "trend", "fast": 10, "slow": 40, "ma": "ema", "stop_atr": 3.0},
        "risk": {
            "risk_pct": 1.0,
            "max_open_positions": 9,
            "max_gross_exposure": 2.0,
            "max_net_exposure": 2.0,
            "max_leverage": 2.0,
            "drawdown_reduce_pct": 4.0,
            "max_drawdown_pct": 8.0,
            "events": [
                {"at": "2019-09-03T20:00:00Z", "action": "pause", "reason": "holiday"},
                {"at": "2019-09-20T20:00:00Z", "action": "resume"},
                {"at": "2019-11-01T20:00:00Z", "action": "close_all", "reason": "rebalance"},
                {"at": "2020-04-01T20:00:00Z", "action": "resume", "reason": "after the halt"},
            ],
        },
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
    "risk_rules_and_commands": lambda r: (
        all(
            any(rule in rules.split(";") for rules in r.verdicts.rules)
            for rule in ("pause", "drawdown_reduce", "correlation", "sector_cap", "circuit_breaker", "regime")
        )
        and r.halted_at is not None
        and r.trades.exit_reason.str.startswith("close-all").sum() >= 3
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
    pd.testing.assert_frame_equal(bt.verdicts, rp.verdicts)  # every check's value, every reason
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


@pytest.mark.slow
def test_a_scheduled_kill_flattens_and_stops_both_modes_alike(sample_store, tmp_path: Path):
    settings = make_settings(
        sample_store,
        run={"symbols": ["SPY", "QQQ", "XLE", "BTC-USD"], "start": "2019-01-02", "end": "2020-12-31"},
        strategy={"name": "trend", "fast": 10, "slow": 40, "ma": "ema", "stop_atr": 3.0},
        risk={"events": [{"at": "2020-01-15T20:00:00Z", "action": "kill", "reason": "test the switch"}]},
    )
    bt = backtest(settings, sample_store, run_id="bt")
    rp = asyncio.run(replay(settings, sample_store, run_id="rp", journal_path=tmp_path / "j.sqlite"))

    kill = pd.Timestamp("2020-01-15T20:00:00Z")
    killed = bt.orders[bt.orders.reason == "kill: test the switch"]
    assert len(killed) >= 2 and (killed.status == "filled").all()  # every open position flattened
    assert (bt.orders.created_ts <= kill + pd.Timedelta(days=1)).all()  # nothing new after the kill
    assert (bt.positions.iloc[-1] == 0).all()
    pd.testing.assert_frame_equal(_frames(bt)[0], _frames(rp)[0])
    pd.testing.assert_frame_equal(_frames(bt)[1], _frames(rp)[1])
    # the live runtime stopped once flat; the backtest values the flat tail as cash
    assert rp.equity.index[-1] < pd.Timestamp("2020-01-20", tz="UTC")
    pd.testing.assert_series_equal(bt.equity[: rp.equity.index[-1]], rp.equity, rtol=1e-12)
    assert bt.equity.iloc[-1] == rp.equity.iloc[-1]
