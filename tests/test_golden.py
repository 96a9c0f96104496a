"""The demo backtest, checked by hand once and pinned (backtesting.py / Lean habit).

Hand check (against ../shared/data/market/daily/GLD.csv), the first trade:
- signal: EMA(20) crossed above EMA(100) on the 2018-01-03 close (124.82);
- entry: 2018-01-04 open 124.889999 + slippage (1 bps = 0.01248900, plus 2% of the 2018-01-03
  range 125.089996 - 124.099998 = 0.01979996) = 124.92228796;
- size: 0.75% of 100,000 = 750 USD over a 3 ATR stop -> 270.99 shares, cut by the 25% position
  cap to 25,000 / 124.82 -> 200 shares; fee 200 x 0.005 = 1.00 -> the 1.00 USD minimum;
- exit: EMA(20) crossed below EMA(100) on the 2018-05-14 close; 2018-05-15 opened at 122.82
  (a gap): sold at 122.82 - (0.012282 + 2% x (125.209999 - 124.440002)) = 122.79231806, before
  the 122.15 stop that the same bar's low (122.129997) would also have reached;
  P&L (122.79231806 - 124.92228796) x 200 = -425.99.
The risk manager at its defaults (docs/risk.md) sizes every later entry: its correlation, regime,
volatility, position and gross cuts are pinned below; the 2020 crash locks entries twice for a week
(5% weekly loss limit), and the drawdown never reaches the 15% halt (worst 10.43%).
Metrics: total return 152,842.63 / 100,000 - 1 = 52.84%; CAGR exp(ln(1.528426) / 6.9295) - 1
= 6.31%; Calmar 0.063135 / 0.104330 = 0.605.
"""

from __future__ import annotations

from collections import Counter

import pytest

from hflite.analytics.metrics import run_metrics
from hflite.config import load_settings
from hflite.engine.run import backtest
from tests.conftest import REPO

GOLDEN = {
    "total_return": 0.5284262991255257,
    "cagr": 0.0631350226048304,
    "volatility": 0.06312103340814981,
    "max_drawdown": -0.10433008478244221,
    "calmar": 0.6051468542030307,
    "hit_rate": 0.3132530120481928,
    "profit_factor": 2.4042820994170455,
    "trades": 83.0,
    "open_trades": 6.0,
    "fees_usd": 395.8930192948791,
    "final_equity": 152842.62991255257,
}


@pytest.fixture(scope="module")
def demo(sample_store):
    settings = load_settings(REPO / "configs" / "demo.toml", {"data": {"dir": str(sample_store.root)}})
    return backtest(settings, sample_store, run_id="golden")


@pytest.mark.slow
def test_the_demo_metrics_match_the_pinned_golden_values(demo):
    metrics = run_metrics(demo)
    for key, value in GOLDEN.items():
        assert metrics[key] == pytest.approx(value, rel=1e-9), key


@pytest.mark.slow
def test_the_first_demo_trade_matches_the_hand_computation(demo):
    t = demo.trades.iloc[0]
    assert (t.symbol, t.direction, t.qty) == ("GLD", "long", 200.0)
    assert str(t.entry_ts) == "2018-01-04 21:00:00+00:00"
    assert t.entry_price == pytest.approx(124.92228796, abs=1e-8)
    assert str(t.exit_ts) == "2018-05-15 20:00:00+00:00"
    assert t.exit_price == pytest.approx(122.79231806, abs=1e-8)
    assert t.pnl == pytest.approx(-425.99398, abs=1e-5)
    assert t.exit_reason == "EMA(20) 125.1456 crossed below EMA(100) 125.1704"
    stop = demo.orders[demo.orders.order_id == "trend-GLD-20180103T210000-e1-sl"].iloc[0]
    assert (stop.status, stop.price) == ("cancelled", 122.15)
    verdict = demo.verdicts.iloc[0]
    assert verdict.status == "resized" and verdict.qty_approved == 200.0
    assert "cut by position cap 25% of equity" in verdict.reason


@pytest.mark.slow
def test_the_demo_says_which_data_versions_it_read(demo, sample_store):
    assert demo.data_versions["bars/SPY/1d"] == sample_store.version("bars/SPY/1d")
    assert set(demo.data_versions) >= {f"bars/{s}/1d" for s in demo.symbols}


@pytest.mark.slow
def test_the_demo_shows_the_risk_manager_acting(demo):
    assert demo.halted_at is None
    rules = Counter(r for cell in demo.verdicts.rules.fillna("") for r in cell.split(";") if r)
    assert rules == {
        "correlation": 48,
        "volatility": 35,
        "regime": 23,
        "position_cap": 19,
        "gross_cap": 14,
        "circuit_breaker": 3,
        "leverage_cap": 3,
        "market_breaker": 1,
    }
    weekly = demo.risk_events[demo.risk_events.kind == "weekly_loss"]
    assert [str(t.date()) for t in weekly.ts] == ["2020-02-28", "2020-03-13"]
    exits = demo.verdicts[demo.verdicts.kind == "exit"]
    assert (exits.status == "approved").all() and len(exits) > 40  # risk never blocks an exit
