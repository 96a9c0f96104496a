"""Momentum strategies: time-series (tsmom) and cross-sectional (xsmom) with volatility-scaled size.

Hand-checked values on small series, the no-look-ahead truncation check (for xsmom: the strategy's
own history cut at bar k AND every other symbol cut at that bar's time), and backtest == replay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hflite.config import ConfigError
from hflite.domain.instrument import instrument_for
from hflite.engine.market import MarketData, SymbolBars
from hflite.engine.replay import replay
from hflite.engine.run import backtest, prepare
from hflite.strategy import make_strategy
from hflite.strategy.base import BarArrays, SignalSet, attach_market
from hflite.strategy.momentum import (
    XSMom,
    XSMomParams,
    as_of,
    decision_bars,
    realised_vol,
    trailing_return,
    vol_size,
)
from tests.conftest import make_settings, synthetic_bars

DAY = 86_400_000_000_000
T0 = int(pd.Timestamp("2024-01-01", tz="UTC").value)


def _ts(n: int, offset: int = 0) -> np.ndarray:
    return T0 + DAY * np.arange(n, dtype=np.int64) + offset


def _bars(close: list[float], ts: np.ndarray | None = None, symbol: str = "") -> BarArrays:
    c = np.asarray(close, dtype=float)
    return BarArrays(c, c * 1.01, c * 0.99, c, np.full(len(c), 1e6), ts, symbol)


def _frame_bars(df: pd.DataFrame, symbol: str = "") -> BarArrays:
    arrays = (df[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume"))
    return BarArrays(*arrays, pd.DatetimeIndex(df["ts"]).as_unit("ns").asi8, symbol)


def _market(closes: dict[str, list[float]], offsets: dict[str, int] | None = None) -> MarketData:
    """A MarketData with just what a strategy reads: each symbol's bars (all traded)."""
    bars = {}
    for sym, close in closes.items():
        b = _bars(close, _ts(len(close), (offsets or {}).get(sym, 0)), sym)
        n = len(close)
        bars[sym] = SymbolBars(
            instrument_for(sym), b.ts, b.open, b.high, b.low, b.close, b.volume, np.arange(n), n=n
        )
    return MarketData(np.empty(0, np.int64), bars, list(closes), np.empty((0, len(closes))), {}, {})


def _as_of(md: MarketData, t: int) -> MarketData:
    """``md`` as a live runtime holds it at time ``t``: each symbol's bars with ts <= t."""
    cut = {
        s: dataclasses.replace(b, n=int(np.searchsorted(b.ts[: b.n], t, "right"))) for s, b in md.bars.items()
    }
    return dataclasses.replace(md, bars=cut)


def assert_causal(make, bars: BarArrays, checks: list[int], md: MarketData | None = None) -> int:
    """Every checked bar's target, size and values equal those computed on the history cut at that bar
    (and, with ``md``, on every other symbol cut at that bar's time). Returns how many targets were set."""
    full_strategy = make()
    if md is not None:
        attach_market(full_strategy, md)
    full = full_strategy.signals(bars)
    for k in checks:
        strategy = make()
        if md is not None:
            attach_market(strategy, _as_of(md, int(bars.ts[k])))
        head = strategy.signals(bars.head(k + 1))
        _same(head, full, k)
    return int((~np.isnan(full.target)).sum())


def _same(head: SignalSet, full: SignalSet, k: int) -> None:
    np.testing.assert_equal(head.target[k], full.target[k], err_msg=f"target at bar {k}")
    np.testing.assert_allclose(head.atr[k], full.atr[k], rtol=1e-12, err_msg=f"atr at bar {k}")
    if full.size is not None:
        assert head.size is not None
        np.testing.assert_allclose(head.size[k], full.size[k], rtol=1e-12, err_msg=f"size at bar {k}")
    for name, arr in full.values.items():
        np.testing.assert_allclose(head.values[name][k], arr[k], rtol=1e-12, err_msg=f"{name} at bar {k}")


# -- the pieces, by hand --------------------------------------------------------------------------------
def test_trailing_return_over_a_five_bar_lookback():
    close = np.array([100.0, 101.0, 103.0, 102.0, 105.0, 110.0, 108.0])
    out = trailing_return(close, 5)
    np.testing.assert_array_equal(np.isnan(out), [True] * 5 + [False] * 2)
    assert out[5] == pytest.approx(110 / 100 - 1)  # 0.10
    assert out[6] == pytest.approx(108 / 101 - 1)  # 0.0693


def test_trailing_return_skips_the_most_recent_bars():
    close = np.array([100.0, 101.0, 103.0, 102.0, 105.0, 110.0, 108.0])
    out = trailing_return(close, 5, skip=1)
    np.testing.assert_array_equal(np.isnan(out), [True] * 6 + [False])
    assert out[6] == pytest.approx(110 / 100 - 1)  # close[5] / close[0]


def test_rolling_volatility_of_alternating_one_percent_moves():
    close = 100 * np.cumprod([1.0, 1.01, 0.99, 1.01, 0.99])  # returns +1%, -1%, +1%, -1%
    vol = realised_vol(close, "rolling", com=60, window=4, bars_per_year=252)
    returns = np.array([0.01, -0.01, 0.01, -0.01])
    # sample std of the four returns: sqrt(sum((r - 0)^2) / 3) = 0.011547, annualised x sqrt(252)
    assert returns.mean() == pytest.approx(0.0)
    assert vol[4] == pytest.approx(math.sqrt(4 * 0.0001 / 3) * math.sqrt(252))
    assert np.isnan(vol[:4]).all()


def test_ewma_volatility_is_the_weighted_variance_around_the_weighted_mean():
    close = 100 * np.cumprod([1.0, 1.02, 0.99, 1.03])  # returns +2%, -1%, +3%
    vol = realised_vol(close, "ewma", com=1.0, window=3, bars_per_year=252)
    # centre of mass 1: alpha = 1/2, weights of the returns oldest first 1/4, 1/2, 1
    w, r = np.array([0.25, 0.5, 1.0]), np.array([0.02, -0.01, 0.03])
    mean = (w * r).sum() / w.sum()  # 0.03 / 1.75 = 0.017143
    var = (w * (r - mean) ** 2).sum() / w.sum()
    assert mean == pytest.approx(0.03 / 1.75)
    assert vol[3] == pytest.approx(math.sqrt(var * 252), rel=1e-12)
    assert np.isnan(vol[:3]).all()


def test_size_is_the_volatility_target_over_realised_volatility_capped_at_one():
    size = vol_size(np.array([0.2, 0.4, 0.8, 0.0, np.nan]), 0.4)
    np.testing.assert_array_equal(size, [1.0, 1.0, 0.5, 1.0, np.nan])


def test_monthly_and_weekly_reviews_fall_on_the_first_bar_of_each_period():
    days = ["2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02", "2024-02-05", "2024-03-01"]
    ts = pd.DatetimeIndex(days, tz="UTC").as_unit("ns").asi8
    np.testing.assert_array_equal(decision_bars(ts, 6, "month"), [True, False, True, False, False, True])
    # 2024-01-30 is a Tuesday: weeks start on the Mondays 2024-01-29, 2024-02-05 and 2024-02-26
    np.testing.assert_array_equal(decision_bars(ts, 6, "week"), [True, False, False, False, True, True])
    np.testing.assert_array_equal(decision_bars(None, 3, "bar"), [True, True, True])
    with pytest.raises(ValueError, match="needs the bars' times"):
        decision_bars(None, 3, "month")


def test_values_are_quoted_as_of_the_last_review():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    decide = np.array([False, True, False, False, True])
    np.testing.assert_array_equal(as_of(values, decide), [np.nan, 2.0, 2.0, 2.0, 5.0])


# -- tsmom ---------------------------------------------------------------------------------------------
# Returns 0, +1%, +1%, +1%, +1%, -5%, -5%, +1%: a 5-bar lookback is positive until bar 6.
CLOSE = [100.0, 100.0, 101.0, 102.01, 103.0301, 104.060401, 98.857381, 93.914512, 94.853657]


def _tsmom(**params: object):
    base = {"lookback": 5, "vol_estimator": "rolling", "vol_window": 5, "rebalance": "bar"}
    return make_strategy("tsmom", {**base, **params})


def test_tsmom_is_long_while_the_trailing_return_is_positive_and_flat_after():
    sig = _tsmom().signals(_bars(CLOSE))
    mom = [CLOSE[k] / CLOSE[k - 5] - 1 for k in range(5, 9)]  # +4.06%, -1.14%, -7.01%, -7.02%
    assert mom[0] > 0 > mom[1]
    np.testing.assert_array_equal(sig.target, [np.nan] * 5 + [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(sig.values["momentum"][5:], mom, rtol=1e-12)


def test_tsmom_goes_short_on_a_negative_return_when_allowed():
    sig = _tsmom(allow_short=True).signals(_bars(CLOSE))
    np.testing.assert_array_equal(sig.target, [np.nan] * 5 + [1.0, -1.0, -1.0, -1.0])


def test_tsmom_size_is_the_target_over_the_rolling_volatility():
    sig = _tsmom(target_vol=0.05).signals(_bars(CLOSE))
    returns = np.diff(np.asarray(CLOSE)) / np.asarray(CLOSE)[:-1]
    vol_5 = returns[:5].std(ddof=1) * math.sqrt(252)  # the five returns known at bar 5
    assert sig.values["vol"][5] == pytest.approx(vol_5)
    assert sig.size is not None
    assert sig.size[5] == pytest.approx(min(1.0, 0.05 / vol_5))
    assert sig.size[5] < 1.0


def test_tsmom_monthly_review_holds_the_decision_until_the_next_month():
    close = [100.0 + k for k in range(10)] + [109.0 - 3 * k for k in range(1, 7)]  # up to bar 9, then down
    ts = pd.date_range("2024-01-24", periods=16, freq="D", tz="UTC").as_unit("ns").asi8  # Feb 1 = bar 8
    monthly = _tsmom(rebalance="month").signals(_bars(close, ts))
    daily = _tsmom().signals(_bars(close, ts))
    # bars 5-7 are known but no review; the review of 2024-02-01 reads 108 / 103 - 1 = +4.85%
    assert np.isnan(monthly.target[:8]).all()
    np.testing.assert_array_equal(monthly.target[8:], [1.0] * 8)
    assert monthly.values["momentum"][15] == monthly.values["momentum"][8] == pytest.approx(108 / 103 - 1)
    # read every bar, the rule is flat from bar 11 (103 / 106 - 1 < 0)
    np.testing.assert_array_equal(daily.target[10:], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0])


def test_tsmom_reason_quotes_the_return_and_the_size():
    sig = _tsmom(target_vol=0.05).signals(_bars(CLOSE))
    reason = sig.reason(5)
    assert reason.startswith("5-bar return +4.06% is positive: long at ")
    assert f"at {sig.size[5]:.2f} of the risk size" in reason  # type: ignore[index]
    assert sig.reason(6) == "5-bar return -1.14% is not positive: flat"


def test_tsmom_defaults_follow_the_paper():
    p = make_strategy("tsmom", {}).p  # type: ignore[attr-defined]
    assert (p.lookback, p.skip, p.rebalance, p.target_vol, p.vol_estimator, p.vol_com) == (
        252,
        0,
        "month",
        0.40,
        "ewma",
        60.0,
    )
    assert (p.stop_atr, p.time_stop_bars, p.allow_short) == (0.0, 21, False)


def test_tsmom_signals_equal_those_on_history_cut_at_each_bar(sample_store):
    spy = _frame_bars(sample_store.read_bars("SPY", "1d", "2016-01-01", "2020-12-31"), "SPY")

    def make():
        return make_strategy(
            "tsmom", {"lookback": 63, "allow_short": True, "vol_window": 20, "rebalance": "week"}
        )

    full = make().signals(spy)
    changes = np.flatnonzero(np.diff(np.nan_to_num(full.target, nan=9.0))) + 1
    assert len(changes) > 5, "the configuration must change its mind on this data"
    checks = sorted(set(changes.tolist()) | set(range(make().warmup() - 2, len(spy), 41)))
    assert assert_causal(make, spy, checks) > 500


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(30, 199))
def test_tsmom_never_changes_when_future_bars_are_rewritten(seed, cut):
    a, b = synthetic_bars(200, seed=seed), synthetic_bars(200, seed=seed + 1)
    spliced = pd.concat([a.iloc[:cut], b.iloc[cut:]], ignore_index=True)
    spliced["ts"] = a["ts"]
    strategy = make_strategy("tsmom", {"lookback": 20, "vol_window": 10, "allow_short": True})
    x, y = strategy.signals(_frame_bars(a)), strategy.signals(_frame_bars(spliced))
    np.testing.assert_array_equal(x.target[:cut], y.target[:cut])
    assert x.size is not None and y.size is not None
    np.testing.assert_array_equal(x.size[:cut], y.size[:cut])
    entries = ~np.isnan(x.target) & (x.target != 0)
    assert ((x.size[entries] > 0) & (x.size[entries] <= 1)).all()


# -- xsmom ---------------------------------------------------------------------------------------------
# Four symbols, one bar a day, a 2-bar lookback; returns known from bar 2, volatility from bar 5:
#   bar 5: QQQ +20%, SPY +10%, TLT +5%, GLD +1%   -> QQQ 1, SPY 2, TLT 3, GLD 4
#   bar 6: SPY +21%, TLT +5%, GLD +1.98%, QQQ 0%  -> SPY 1, TLT 2, GLD 3, QQQ 4
#   bar 7: TLT +33.3%, SPY +10%, GLD +1.98%, QQQ -16.7% -> TLT 1, SPY 2, GLD 3, QQQ 4
UNIVERSE = {
    "SPY": [100.0, 100, 100, 100, 100, 110, 121, 121],
    "TLT": [100.0, 100, 100, 100, 100, 105, 105, 140],
    "GLD": [100.0, 100, 100, 100, 100, 101, 102, 103],
    "QQQ": [100.0, 100, 100, 100, 100, 120, 100, 100],
}
XS = {
    "lookback": 2,
    "skip": 0,
    "vol_estimator": "rolling",
    "vol_window": 5,
    "rebalance": "bar",
    "top_n": 1,
    "buffer": 1,
}


def _xsmom(md: MarketData, **params: object) -> XSMom:
    strategy = make_strategy("xsmom", {**XS, **params})
    attach_market(strategy, md)
    return strategy  # type: ignore[return-value]


def _signals(strategy: XSMom, md: MarketData, sym: str) -> SignalSet:
    return strategy.signals(md.bars[sym].arrays())


@pytest.mark.parametrize(
    ("sym", "ranks", "target"),
    [
        ("QQQ", [1, 4, 4], [1.0, 0.0, 0.0]),  # enters as the winner, leaves when it falls to 4th
        ("SPY", [2, 1, 2], [np.nan, 1.0, 1.0]),  # 2nd is not an entry; enters 1st, holds at 2nd (buffer)
        ("TLT", [3, 2, 1], [0.0, 0.0, 1.0]),  # out at 3rd, 2nd does not enter, 1st does
        ("GLD", [4, 3, 3], [0.0, 0.0, 0.0]),
    ],
)
def test_xsmom_holds_the_top_n_until_they_drop_out_of_top_n_plus_buffer(sym, ranks, target):
    md = _market(UNIVERSE)
    sig = _signals(_xsmom(md), md, sym)
    np.testing.assert_array_equal(sig.values["rank"][5:], ranks)
    np.testing.assert_array_equal(sig.values["ranked"][5:], [4, 4, 4])
    np.testing.assert_array_equal(sig.target, [np.nan] * 5 + target)


def test_xsmom_shorts_the_bottom_n_when_allowed():
    md = _market(UNIVERSE)
    strategy = _xsmom(md, allow_short=True)
    targets = {sym: _signals(strategy, md, sym).target[5:].tolist() for sym in UNIVERSE}
    assert targets["GLD"] == [-1.0, -1.0, -1.0]  # bottom, then 2nd from the bottom: held
    assert targets["QQQ"] == [1.0, -1.0, -1.0]  # from winner to loser: long, then short
    assert targets["TLT"] == [0.0, 0.0, 1.0]
    np.testing.assert_array_equal(targets["SPY"], [np.nan, 1.0, 1.0])


def test_xsmom_positive_only_does_not_hold_a_winner_with_a_negative_return():
    closes = {"SPY": [100.0, 100, 100, 100, 100, 99, 98, 97], "TLT": [100.0, 100, 100, 100, 100, 98, 96, 94]}
    md = _market(closes)
    assert _signals(_xsmom(md), md, "SPY").target[5:].tolist() == [1.0, 1.0, 1.0]
    assert _signals(_xsmom(md, positive_only=True), md, "SPY").target[5:].tolist() == [0.0, 0.0, 0.0]


def test_xsmom_reads_another_symbol_only_once_its_bar_is_known():
    # TLT's bars become known 1 ns after the others': at SPY's bar 7, TLT's bar 7 (+33%) is not
    # known yet, so SPY's +10% ranks first against TLT's bar-6 +5%
    md = _market(UNIVERSE, offsets={"TLT": 1})
    assert _signals(_xsmom(md), md, "SPY").values["rank"][7] == 1.0
    same_time = _market(UNIVERSE)
    assert _signals(_xsmom(same_time), same_time, "SPY").values["rank"][7] == 2.0


def test_xsmom_breaks_ties_by_symbol_name():
    flat = [100.0, 100, 100, 100, 100, 110, 110, 110]
    md = _market({"SPY": flat, "GLD": flat, "TLT": [100.0] * 8})
    strategy = _xsmom(md)
    assert _signals(strategy, md, "GLD").values["rank"][6] == 1.0
    assert _signals(strategy, md, "SPY").values["rank"][6] == 2.0


def test_xsmom_does_not_rank_a_symbol_without_enough_history():
    closes = dict(UNIVERSE)
    md = _market(closes)
    md.bars["QQQ"].n = 1  # one bar known: no 2-bar return yet
    sig = _signals(_xsmom(md), md, "SPY")
    np.testing.assert_array_equal(sig.values["ranked"][5:], [3, 3, 3])


def test_xsmom_reason_quotes_rank_and_rule():
    md = _market(UNIVERSE)
    strategy = _xsmom(md)
    # SPY's returns known at bar 6, last five: 0, 0, 0, +10%, +10%: sample std sqrt(0.012 / 4) =
    # 0.05477, x sqrt(252) = 86.9% a year; size 0.40 / 0.869 = 0.46
    assert _signals(strategy, md, "SPY").reason(6) == (
        "2-bar return +21.00% ranks 1 of 4 (enter in the top 1, hold in the top 2): long at 0.46 of the "
        "risk size (volatility 86.9%, target 40%)"
    )
    assert (
        _signals(strategy, md, "QQQ").reason(6) == "2-bar return +0.00% ranks 4 of 4: not in the top 2: flat"
    )


def test_xsmom_needs_the_market_and_a_universe_larger_than_top_n():
    with pytest.raises(RuntimeError, match="attach_market"):
        make_strategy("xsmom", XS).signals(_bars([100.0] * 8, _ts(8)))
    with pytest.raises(ConfigError, match=r"strategy.top_n: 4 must be smaller than the universe \(4"):
        attach_market(make_strategy("xsmom", {**XS, "top_n": 4}), _market(UNIVERSE))
    with pytest.raises(ValueError, match="top_n"):
        XSMomParams.model_validate({"top_n": 0})


@pytest.fixture(scope="module")
def xs_prep(sample_store):
    settings = make_settings(
        sample_store,
        run={
            "symbols": ["SPY", "TLT", "GLD", "BTC-USD", "EURUSD"],
            "start": "2018-01-02",
            "end": "2020-12-31",
        },
        strategy={"name": "xsmom", "top_n": 2, "rebalance": "week", "allow_short": True},
    )
    return settings, prepare(settings, sample_store)


def test_xsmom_signals_equal_those_on_every_history_cut_at_the_bars_time(xs_prep):
    settings, prep = xs_prep
    params = settings.strategy.params()
    changed = 0
    for sym in ("SPY", "BTC-USD", "EURUSD"):
        bars = prep.md.bars[sym].arrays()
        full_strategy = make_strategy("xsmom", params)
        attach_market(full_strategy, prep.md)
        full = full_strategy.signals(bars)
        changes = np.flatnonzero(np.diff(np.nan_to_num(full.target, nan=9.0))) + 1
        changed += len(changes)
        checks = sorted(set(changes.tolist()) | set(range(260, len(bars), 53)))
        assert assert_causal(lambda: make_strategy("xsmom", params), bars, checks, prep.md) > 300
    assert changed > 15, "the configuration must change its mind on this data"


@pytest.mark.slow  # a replay steps every bar: 4-9 s, like tests/test_parity.py's
def test_xsmom_backtest_and_replay_give_identical_orders_fills_and_equity(sample_store, tmp_path: Path):
    settings = make_settings(
        sample_store,
        run={
            "symbols": ["SPY", "TLT", "GLD", "BTC-USD", "EURUSD"],
            "start": "2019-01-02",
            "end": "2020-06-30",
        },
        strategy={
            "name": "xsmom",
            "top_n": 2,
            "rebalance": "week",
            "time_stop_bars": 15,
            "allow_short": True,
        },
    )
    bt = backtest(settings, sample_store, run_id="bt")
    rp = asyncio.run(replay(settings, sample_store, run_id="rp", journal_path=tmp_path / "j.sqlite"))

    assert len(bt.trades) > 30 and (bt.trades.direction == "short").sum() > 5
    pd.testing.assert_frame_equal(bt.orders.reset_index(drop=True), rp.orders.reset_index(drop=True))
    pd.testing.assert_frame_equal(bt.fills.reset_index(drop=True), rp.fills.reset_index(drop=True))
    pd.testing.assert_frame_equal(bt.trades, rp.trades)
    pd.testing.assert_frame_equal(bt.verdicts, rp.verdicts)
    pd.testing.assert_series_equal(bt.equity, rp.equity, check_exact=False, rtol=1e-12)


def test_momentum_configs_are_validated_like_any_strategy(sample_store):
    s = make_settings(sample_store, strategy={"name": "tsmom", "lookback": 126, "skip": 21})
    # the EWMA (centre of mass 60) weighs returns older than 418 bars less than 0.1%:
    # (60 / 61) ** 417 = 0.00101, (60 / 61) ** 418 = 0.00099
    assert make_strategy(s.strategy.name, s.strategy.params()).warmup() == 418 + 1
    rolling = make_settings(
        sample_store, strategy={"name": "tsmom", "lookback": 126, "skip": 21, "vol_estimator": "rolling"}
    )
    assert make_strategy("tsmom", rolling.strategy.params()).warmup() == 126 + 21 + 1
    with pytest.raises(ConfigError, match=r"config error: strategy.lookbak: unknown key"):
        make_settings(sample_store, strategy={"name": "tsmom", "lookbak": 126})
    with pytest.raises(ConfigError, match=r"config error: strategy.rebalance: Input should be 'bar', 'week'"):
        make_settings(sample_store, strategy={"name": "xsmom", "rebalance": "daily"})
