"""Regimes, years and stress periods: hand-computed numbers on a five-day run, the causal regime rule,
the benchmark's worst drawdowns, periods outside the data listed (never dropped), and one real run."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from hflite.ai.regime import RegimeConfig, rule_regimes
from hflite.engine.result import TRADE_COLUMNS
from hflite.engine.run import backtest
from hflite.lab.periods import (
    STRESS_PERIODS,
    StressPeriod,
    analyse_periods,
    benchmark_drawdowns,
    day_regimes,
    periods_for_run,
)
from hflite.tables import build_table
from tests.conftest import make_settings

DAYS = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")


def _five_days():
    """Equity 100, 110, 104.5, 104.5, 114.95: daily returns +10%, -5%, 0, +10%. Benchmark closes 10, 10,
    10.5, 10.5, 10.5: returns 0, +5%, 0, 0. Labels: bull on the 1st and 2nd, bear on the 3rd and 4th,
    so (known when each day begins) the returns of the 2nd and 3rd are bull days, of the 4th and 5th
    bear days. One trade, open from the 2nd to the 3rd."""
    at_close = DAYS + pd.Timedelta(hours=21)  # points at the close: days are UTC calendar days
    equity = pd.Series([100.0, 110.0, 104.5, 104.5, 114.95], index=at_close)
    bench = pd.Series([10.0, 10.0, 10.5, 10.5, 10.5], index=at_close)
    labels = pd.Series(["bull", "bull", "bear", "bear", "crisis"], index=at_close)
    trade = dict.fromkeys(TRADE_COLUMNS)
    trade.update(
        symbol="SPY",
        entry_ts=pd.Timestamp("2024-01-02 14:30", tz="UTC"),
        exit_ts=pd.Timestamp("2024-01-03 14:30", tz="UTC"),
    )
    return equity, bench, labels, pd.DataFrame([trade], columns=TRADE_COLUMNS)


def test_each_regime_gets_its_days_returns_sharpe_drawdown_and_exposure_by_hand():
    equity, bench, labels, trades = _five_days()
    res = analyse_periods(equity, trades, bench, labels=labels, ppy=252, stress_periods=(), worst_n=0)
    bull, bear = res.regimes
    assert (bull.label, bull.days, bear.label, bear.days) == ("bull", 2, "bear", 2)
    # bull: +10% then -5% -> 1.1 * 0.95 - 1 = 4.5%; mean 2.5%, stdev (ddof 1) 0.075 * sqrt(2)
    assert bull.strategy_return == pytest.approx(0.045, abs=1e-12)
    assert bull.sharpe == pytest.approx(0.025 / (0.075 * math.sqrt(2)) * math.sqrt(252), rel=1e-12)
    assert bull.max_drawdown == pytest.approx(-0.05, abs=1e-12)  # 1.1 -> 1.045
    assert bull.exposure == 1.0 and bull.trades == 1 and bull.share == 0.5
    assert bull.benchmark_return == pytest.approx(0.05, abs=1e-12)
    # bear: 0 then +10% -> 10%; mean 5%, stdev 0.05 * sqrt(2)
    assert bear.strategy_return == pytest.approx(0.10, abs=1e-12)
    assert bear.sharpe == pytest.approx(0.05 / (0.05 * math.sqrt(2)) * math.sqrt(252), rel=1e-12)
    assert bear.max_drawdown == 0.0
    assert bear.exposure == 0.0 and bear.trades == 0
    assert bear.benchmark_return == 0.0 and math.isnan(bear.benchmark_sharpe)  # flat: no Sharpe
    (year,) = res.years
    assert year.label == "2024" and year.days == 4 and year.trades == 1
    assert year.strategy_return == pytest.approx(0.1495, abs=1e-12)
    assert year.max_drawdown == pytest.approx(-0.05, abs=1e-12)
    assert year.exposure == 0.5


def test_gross_exposure_is_averaged_per_group_when_given():
    equity, bench, labels, trades = _five_days()
    gross = pd.Series([0.0, 55.0, 0.0, 0.0, 0.0], index=equity.index)  # half the equity on the 2nd
    res = analyse_periods(
        equity, trades, bench, labels=labels, ppy=252, stress_periods=(), worst_n=0, gross_exposure=gross
    )
    assert res.regimes[0].gross == pytest.approx(0.25)  # (0.5 + 0) / 2
    assert res.regimes[1].gross == 0.0


def test_a_day_takes_the_label_known_when_it_began():
    labels = pd.Series(["", "bull", "bear"], index=DAYS[:3] + pd.Timedelta(hours=21))
    got = day_regimes(labels, DAYS[:4])
    assert got.tolist() == ["unknown", "unknown", "bull", "bear"]


def test_stress_periods_inside_partly_inside_outside_and_not_applicable_are_all_listed():
    equity, bench, labels, trades = _five_days()
    periods = (
        StressPeriod("inside", "2024-01-02", "2024-01-04", "a"),
        StressPeriod("partial", "2023-12-01", "2024-01-03", "b"),
        StressPeriod("before", "2020-02-19", "2020-03-23", "c"),
        StressPeriod("crypto", "2024-01-02", "2024-01-04", "d", symbols=("BTC-USD",)),
    )
    res = analyse_periods(equity, trades, bench, labels=labels, ppy=252, stress_periods=periods, worst_n=0)
    inside, partial, before, crypto = res.stress
    assert inside.status == "full"
    assert inside.strategy_return == pytest.approx(104.5 / 110 - 1, abs=1e-12)  # close of the 2nd to the 4th
    assert inside.strategy_max_drawdown == pytest.approx(-0.05, abs=1e-12)
    assert inside.benchmark_return == pytest.approx(0.05, abs=1e-12) and inside.benchmark_max_drawdown == 0
    assert partial.status == "partial" and partial.covered_start == DAYS[0]
    assert partial.strategy_return == pytest.approx(0.045, abs=1e-12)  # from the first day on
    assert before.status == "not in data" and math.isnan(before.strategy_return)
    assert crypto.status == "not applicable" and "BTC-USD" in crypto.why
    assert [s["status"] for s in res.summary()["stress"].values()] == [
        "full",
        "partial",
        "not in data",
        "not applicable",
    ]


def test_the_benchmarks_worst_drawdowns_run_from_a_high_to_the_lowest_close_before_the_next():
    close = pd.Series(
        [100.0, 90, 95, 110, 88, 120, 119], index=pd.date_range("2024-01-01", periods=7, tz="UTC")
    )
    got = benchmark_drawdowns(close, 2)
    assert [(p.day, t.day, round(d, 12)) for p, t, d in got] == [(4, 5, -0.2), (1, 2, -0.1)]
    assert len(benchmark_drawdowns(close, 10)) == 3  # 120 -> 119 is the third
    assert benchmark_drawdowns(pd.Series([1.0, 2.0, 3.0], index=close.index[:3]), 3) == []


def test_the_regime_rule_is_causal():
    rng = np.random.default_rng(3)
    close = pd.Series(
        100 * np.exp(np.cumsum(rng.normal(0, 0.02, 600))),
        index=pd.date_range("2020-01-01", periods=600, tz="UTC"),
    )
    cfg = RegimeConfig()
    full = rule_regimes(close, 252.0, cfg)
    for cut in (219, 220, 300, 451, 599):
        head = rule_regimes(close.iloc[: cut + 1], 252.0, cfg)
        assert head.tolist() == full.iloc[: cut + 1].tolist()
    assert set(full.iloc[220:]) <= {"bull", "bear", "sideways", "crisis"} and full.iloc[0] == ""


def test_the_named_periods_have_ordered_dates():
    for p in STRESS_PERIODS:
        assert pd.Timestamp(p.start) < pd.Timestamp(p.end), p.name
    names = {p.name for p in STRESS_PERIODS}
    assert {"2018 Q4 sell-off", "COVID crash", "2022 bear market", "Crypto winter 2022"} <= names


def test_a_real_run_by_regime_year_and_stress(sample_store):
    result = backtest(make_settings(sample_store), sample_store)  # trend on SPY, 2015-2019
    res = periods_for_run(result, sample_store, worst_n=2)
    spy = sample_store.read_bars("SPY", "1d", "2018-09-01", "2018-12-31").set_index("ts")["close"]
    spy.index = pd.DatetimeIndex(spy.index).tz_convert("UTC") if spy.index.tz else spy.index
    q4 = next(s for s in res.stress if s.name == "2018 Q4 sell-off")
    by_day = {pd.Timestamp(t).date(): v for t, v in spy.items()}
    expected = by_day[pd.Timestamp("2018-12-24").date()] / by_day[pd.Timestamp("2018-10-01").date()] - 1
    assert q4.status == "full" and q4.benchmark_return == pytest.approx(expected, rel=1e-9)
    assert next(s for s in res.stress if s.name == "COVID crash").status == "not in data"
    assert next(s for s in res.stress if s.name == "Crypto winter 2022").status == "not applicable"
    assert [s.kind for s in res.stress].count("benchmark drawdown") == 2
    # the store's SPY history before 2015 labels the first days: no "unknown" regime
    assert "unknown" not in {g.label for g in res.regimes}
    assert sum(g.days for g in res.regimes) == sum(g.days for g in res.years)
    assert [g.label for g in res.years] == ["2015", "2016", "2017", "2018", "2019"]
    # the years compound to the whole run
    total = np.prod([1 + g.strategy_return for g in res.years]) - 1
    daily = result.equity.groupby(result.equity.index.normalize()).last()
    assert total == pytest.approx(daily.iloc[-1] / daily.iloc[0] - 1, rel=1e-9)
    assert sum(g.trades for g in res.years) == len(result.trades)
    json.dumps(res.summary())
    for title, cols, rows in res.tables():
        assert build_table(cols, rows, title=title).row_count == len(rows)
    html = res.html()
    assert "fig-lab-regimes" in html and "not in data" in html and "2018 Q4 sell-off" in html


def test_without_index_history_the_first_days_are_unknown_not_dropped():
    n = 300
    idx = pd.date_range("2021-01-01", periods=n, freq="D", tz="UTC")
    equity = pd.Series(np.linspace(100, 130, n), index=idx)
    bench = pd.Series(np.linspace(50, 60, n), index=idx)
    res = analyse_periods(equity, None, bench, stress_periods=(), worst_n=0)
    unknown = next(g for g in res.regimes if g.label == "unknown")
    assert sum(g.days for g in res.regimes) == n - 1
    # the first label is bar 219's (SMA(200) from bar 199, its 20-bar slope from bar 219); it is in force
    # from the return of bar 220 on, so the returns of bars 1..219 have none
    assert unknown.days == RegimeConfig().trend_window + RegimeConfig().slope_bars - 1
    assert any("unknown" in note for note in res.notes)
