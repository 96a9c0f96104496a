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
Metrics: total return 217,400.72 / 100,000 - 1 = 117.40%; CAGR exp(ln(2.174007) / 6.9295) - 1
= 11.86%; Calmar 0.118588 / 0.304236 = 0.390.
"""

from __future__ import annotations

import pytest
from tests.conftest import REPO

from hflite.analytics.metrics import run_metrics
from hflite.config import load_settings
from hflite.engine.run import backtest

GOLDEN = {
    "total_return": 1.1740071673411037,
    "cagr": 0.11858841219668936,
    "volatility": 0.14788284389184922,
    "max_drawdown": -0.30423583780261654,
    "calmar": 0.3897910681831891,
    "hit_rate": 0.3902439024390244,
    "profit_factor": 9.119606083424667,
    "trades": 41.0,
    "open_trades": 0.0,
    "fees_usd": 299.97499952850336,
    "final_equity": 217400.71673411038,
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
    stop = demo.orders[demo.orders.order_id == "trend-GLD-b3-1-sl"].iloc[0]
    assert (stop.status, stop.price) == ("cancelled", 122.15)
    verdict = demo.verdicts.iloc[0]
    assert verdict.status == "resized" and verdict.qty_approved == 200.0
    assert "cut by position cap 25% of equity" in verdict.reason


@pytest.mark.slow
def test_the_demo_says_which_data_versions_it_read(demo, sample_store):
    assert demo.data_versions["bars/SPY/1d"] == sample_store.version("bars/SPY/1d")
    assert set(demo.data_versions) >= {f"bars/{s}/1d" for s in demo.symbols}


@pytest.mark.slow
def test_the_demo_shows_the_drawdown_halt_acting_and_says_so(demo):
    # the crypto sell-off of May-June 2021 takes the portfolio 29.66% below its peak; the next entry
    # (TLT, 2021-06-29) is refused and every entry after it, until a human resets the halt
    assert str(demo.halted_at) == "2021-06-29 20:00:00+00:00"
    assert demo.warnings[0].startswith(
        "risk: new entries halted from 2021-06-29 20:00:00+00:00 (drawdown 29.66% reached the 25% limit)"
    )
    after = demo.verdicts[demo.verdicts.ts >= demo.halted_at]
    entries, exits = (
        after[after.reason != "exit: always allowed"],
        after[after.reason == "exit: always allowed"],
    )
    assert (entries.status == "rejected").all() and len(entries) > 10
    assert (exits.status == "approved").all() and len(exits) > 0  # positions can still be closed
