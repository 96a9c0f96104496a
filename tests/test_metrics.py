"""Metrics checked against hand computations on small deterministic inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import hflite.analytics as analytics
from hflite.analytics import (
    METRIC_KEYS,
    buy_and_hold,
    compute_metrics,
    daily_equity,
    monthly_returns,
    periods_per_year,
    risk_free_daily,
)

ANN = math.sqrt(365.25)  # 4 consecutive days: ppy = 3 / (3 / 365.25) = 365.25


def _days(n: int, start: str = "2024-01-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="D", tz="UTC")


@pytest.fixture
def equity() -> pd.Series:
    """100 -> 110 -> 99 -> 121 on 4 consecutive days: returns +10%, -10%, +22.22%."""
    return pd.Series([100.0, 110.0, 99.0, 121.0], index=_days(4))


def _trade(
    pnl_usd: float, fees_usd: float, *, is_open: bool = False, exit_fee: float = 0.0, ret: float = 0.0
) -> dict:
    return {
        "pnl_usd": pnl_usd,
        "fees_usd": fees_usd,
        "is_open": is_open,
        "exit_fee_est_usd": exit_fee,
        "return_pct": ret,
    }


# ------------------------------------------------------------------------------------ public API


def test_public_api_is_pinned() -> None:
    assert sorted(analytics.__all__) == [
        "METRIC_KEYS",
        "REPORT_FILES",
        "SECTIONS",
        "benchmark_metrics",
        "buy_and_hold",
        "compute_metrics",
        "daily_equity",
        "drawdown",
        "format_metric",
        "monthly_returns",
        "periods_per_year",
        "risk_free_daily",
        "run_metrics",
        "summary_table",
        "write_report",
    ]


def test_compute_metrics_returns_exactly_the_documented_keys(equity: pd.Series) -> None:
    assert tuple(compute_metrics(equity, None)) == METRIC_KEYS
    assert len(METRIC_KEYS) == 25


# ----------------------------------------------------------------------------------- time rules


def test_daily_equity_keeps_last_point_of_each_utc_day() -> None:
    ts = pd.DatetimeIndex(
        ["2024-01-01 00:00", "2024-01-01 21:00", "2024-01-02 22:00", "2024-01-04 00:00"], tz="UTC"
    )
    daily = daily_equity(pd.Series([1.0, 2.0, 3.0, 4.0], index=ts))
    assert list(daily) == [2.0, 3.0, 4.0]  # 2024-01-03 has no point and stays absent
    assert list(daily.index) == list(pd.DatetimeIndex(["2024-01-01", "2024-01-02", "2024-01-04"], tz="UTC"))


def test_periods_per_year_on_weekdays_is_about_261() -> None:
    weekdays = pd.bdate_range("2021-01-01", "2022-12-30", tz="UTC")
    ppy = periods_per_year(pd.Series(1.0, index=weekdays))
    # 521 weekdays over 728 days: 520 / (728 / 365.25) = 260.9
    assert ppy == pytest.approx(520 / (728 / 365.25))
    assert 259 < ppy < 263


def test_periods_per_year_on_every_day_is_about_365() -> None:
    ppy = periods_per_year(pd.Series(1.0, index=pd.date_range("2021-01-01", "2022-12-31", tz="UTC")))
    assert ppy == pytest.approx(729 / (729 / 365.25))  # = 365.25


def test_periods_per_year_of_one_day_is_nan() -> None:
    assert math.isnan(periods_per_year(pd.Series([1.0], index=_days(1))))


def test_risk_free_for_march_is_not_used_before_first_business_day_of_april() -> None:
    fedfunds = pd.DataFrame({"date": ["2024-02-01", "2024-03-01"], "value": [5.33, 5.40]})
    index = pd.DatetimeIndex(
        ["2024-02-29 12:00", "2024-03-01 00:00", "2024-03-31 23:59", "2024-04-01 00:00", "2024-04-02 21:00"],
        tz="UTC",
    )
    rf = risk_free_daily(fedfunds, index)
    # February's value is known on Fri 2024-03-01; March's on Mon 2024-04-01; before that: 0.
    assert list(rf) == [0.0, 5.33, 5.33, 5.40, 5.40]


def test_risk_free_rolls_past_weekends_and_federal_holidays() -> None:
    fedfunds = pd.DataFrame({"date": pd.to_datetime(["2024-08-01", "2024-11-01"]), "value": [5.33, 4.64]})
    index = pd.DatetimeIndex(
        ["2024-09-02 20:00", "2024-09-03 00:00", "2024-12-01 12:00", "2024-12-02 00:00"], tz="UTC"
    )
    rf = risk_free_daily(fedfunds, index)
    # 2024-09-01 is a Sunday and 09-02 Labor Day -> 09-03; 2024-12-01 is a Sunday -> 12-02.
    assert list(rf) == [0.0, 5.33, 5.33, 4.64]


# ------------------------------------------------------------------------- returns and risk


def test_total_return_and_cagr(equity: pd.Series) -> None:
    m = compute_metrics(equity, None)
    assert m["total_return"] == pytest.approx(121 / 100 - 1)  # 0.21
    years = 3 / 365.25
    assert m["years"] == pytest.approx(years)
    assert m["cagr"] == pytest.approx(1.21 ** (1 / years) - 1)
    assert m["final_equity"] == 121.0
    assert m["periods_per_year"] == pytest.approx(365.25)


def test_initial_cash_is_the_base_of_total_return(equity: pd.Series) -> None:
    assert compute_metrics(equity, None, initial_cash=110.0)["total_return"] == pytest.approx(121 / 110 - 1)


def test_volatility_sharpe_and_sortino_by_hand(equity: pd.Series) -> None:
    r = [0.10, -0.10, 121 / 99 - 1]  # 0.1, -0.1, 0.2222
    mean = sum(r) / 3  # 0.074074
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / 2)  # sample stdev 0.16267
    downside = math.sqrt((0 + 0.10**2 + 0) / 3)  # only the -10% day: 0.057735
    m = compute_metrics(equity, None)
    assert m["volatility"] == pytest.approx(std * ANN)
    assert m["sharpe"] == pytest.approx(mean / std * ANN)
    assert m["sortino"] == pytest.approx(mean / downside * ANN)


def test_sharpe_uses_risk_free_converted_per_period(equity: pd.Series) -> None:
    rf_pp = 1.05 ** (1 / 365.25) - 1  # 5% p.a. over 365.25 periods per year
    excess = [0.10 - rf_pp, -0.10 - rf_pp, 121 / 99 - 1 - rf_pp]
    mean = sum(excess) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in excess) / 2)
    downside = math.sqrt(sum(min(x, 0.0) ** 2 for x in excess) / 3)
    m = compute_metrics(equity, None, risk_free=pd.Series(5.0, index=equity.index))
    assert m["sharpe"] == pytest.approx(mean / std * ANN)
    assert m["sortino"] == pytest.approx(mean / downside * ANN)


def test_max_drawdown_duration_and_calmar(equity: pd.Series) -> None:
    m = compute_metrics(equity, None)
    assert m["max_drawdown"] == pytest.approx(99 / 110 - 1)  # -10%
    assert m["max_drawdown_duration_days"] == 2.0  # peak 01-02 (110), back above on 01-04 (121)
    assert m["calmar"] == pytest.approx(m["cagr"] / 0.10)


def test_unrecovered_drawdown_lasts_until_the_end() -> None:
    m = compute_metrics(pd.Series([100.0, 120.0, 90.0, 100.0, 110.0], index=_days(5)), None)
    assert m["max_drawdown"] == pytest.approx(90 / 120 - 1)  # -25%
    assert m["max_drawdown_duration_days"] == 3.0  # peak on day 2, still below on day 5


def test_drawdown_uses_intraday_points_but_returns_use_days() -> None:
    ts = pd.DatetimeIndex(
        ["2024-01-01 21:00", "2024-01-02 10:00", "2024-01-02 21:00", "2024-01-03 21:00"], tz="UTC"
    )
    m = compute_metrics(pd.Series([100.0, 80.0, 100.0, 110.0], index=ts), None)
    assert m["max_drawdown"] == pytest.approx(-0.20)  # the 10:00 dip counts
    assert m["periods_per_year"] == pytest.approx(365.25)  # but 3 days -> 2 daily returns over 2 days
    assert m["volatility"] == pytest.approx(np.std([0.0, 0.10], ddof=1) * ANN)


def test_var_and_cvar_on_a_known_return_vector() -> None:
    r = np.array(
        [
            -0.05,
            -0.03,
            -0.02,
            -0.01,
            0.0,
            0.01,
            0.02,
            0.005,
            -0.005,
            0.015,
            0.01,
            0.0,
            0.02,
            -0.01,
            0.03,
            0.01,
            0.0,
            0.005,
            0.01,
            0.02,
        ]
    )
    eq = pd.Series(100 * np.cumprod(np.concatenate([[1.0], 1 + r])), index=_days(21))
    m = compute_metrics(eq, None)
    # sorted: -0.05, -0.03, ...; 5% quantile at position 0.05 * 19 = 0.95: -0.05 + 0.95 * 0.02 = -0.031
    assert m["var_95"] == pytest.approx(0.031)
    assert m["cvar_95"] == pytest.approx(0.05)  # mean of returns <= -0.031: only -0.05


def test_information_ratio_against_benchmark(equity: pd.Series) -> None:
    bench = pd.Series([100.0, 105.0, 105.0, 110.25], index=equity.index)  # +5%, 0%, +5%
    active = [0.10 - 0.05, -0.10 - 0.0, 121 / 99 - 1 - 0.05]
    mean = sum(active) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in active) / 2)
    ir = compute_metrics(equity, None, benchmark=bench)["information_ratio"]
    assert ir == pytest.approx(mean / std * ANN)
    assert math.isnan(compute_metrics(equity, None)["information_ratio"])


# ---------------------------------------------------------------------------------------- trades


def test_trade_statistics_use_closed_trades_net_of_fees(equity: pd.Series) -> None:
    trades = pd.DataFrame(
        [
            _trade(32.0, 2.0, ret=0.03),  # net +30
            _trade(-8.0, 2.0, ret=-0.01),  # net -10
            _trade(21.0, 1.0, ret=0.02),  # net +20
            _trade(0.0, 5.0, ret=0.0),  # net -5: a gross break-even is a loss after fees
            _trade(100.0, 1.0, is_open=True, exit_fee=3.0, ret=0.10),  # open: excluded from the statistics
        ]
    )
    m = compute_metrics(equity, trades)
    assert m["trades"] == 4
    assert m["open_trades"] == 1
    assert m["hit_rate"] == pytest.approx(2 / 4)
    assert m["avg_trade"] == pytest.approx((30 - 10 + 20 - 5) / 4)  # 8.75
    assert m["avg_trade_pct"] == pytest.approx((0.03 - 0.01 + 0.02 + 0.0) / 4 / 100)
    assert m["profit_factor"] == pytest.approx((30 + 20) / (10 + 5))
    assert m["open_exit_fee_est_usd"] == 3.0
    assert m["fees_usd"] == pytest.approx(2 + 2 + 1 + 5 + 1)  # no fills given: the trades' fees


def test_profit_factor_is_inf_without_losses_and_nan_without_trades(equity: pd.Series) -> None:
    assert compute_metrics(equity, pd.DataFrame([_trade(10.0, 1.0)]))["profit_factor"] == math.inf
    empty = compute_metrics(equity, pd.DataFrame(columns=["pnl_usd", "fees_usd", "is_open"]))
    assert math.isnan(empty["profit_factor"])
    assert math.isnan(empty["hit_rate"])
    assert empty["trades"] == 0


def test_turnover_exposure_and_fees_from_fills_and_gross_exposure() -> None:
    idx = _days(366, "2023-01-01")  # 2023-01-01 .. 2024-01-01: 365 days
    eq = pd.Series(10_000.0, index=idx)
    fills = pd.DataFrame(
        {
            "qty": [100.0, 100.0, 1.0],
            "price": [10.0, 10.0, 15_000.0],
            "fee": [1.0, 1.0, 15.0],
            "fee_usd": [1.0, 1.0, 0.1],  # the last one is JPY-quoted: 1 JPY = 0.1/15 USD
        }
    )
    gross = pd.Series(np.where(np.arange(366) < 183, 5_000.0, 0.0), index=idx)
    m = compute_metrics(eq, None, fills=fills, gross_exposure=gross)
    traded_usd = 1000 + 1000 + 15_000 * (0.1 / 15)  # 2100
    assert m["turnover"] == pytest.approx(traded_usd / 10_000 / (365 / 365.25))
    assert m["exposure"] == pytest.approx(183 / 366)
    assert m["avg_gross_exposure"] == pytest.approx(183 * 0.5 / 366)
    assert m["fees_usd"] == pytest.approx(2.1)


# ------------------------------------------------------------------------------------ edge cases


def test_flat_equity_has_zero_vol_and_nan_ratios() -> None:
    m = compute_metrics(pd.Series(1000.0, index=_days(10)), None, risk_free=pd.Series(5.0, index=_days(10)))
    assert m["volatility"] == 0.0
    assert m["max_drawdown"] == 0.0
    assert m["max_drawdown_duration_days"] == 0.0
    assert math.isnan(m["sharpe"])
    assert math.isnan(m["sortino"])
    assert math.isnan(m["calmar"])
    assert m["total_return"] == 0.0
    assert m["cagr"] == 0.0
    assert m["var_95"] == 0.0


def test_one_day_of_equity_does_not_raise() -> None:
    ts = pd.DatetimeIndex(["2024-01-02 14:00", "2024-01-02 21:00"], tz="UTC")
    m = compute_metrics(pd.Series([100.0, 101.0], index=ts), pd.DataFrame())
    assert m["total_return"] == pytest.approx(0.01)
    assert m["years"] == 0.0
    for key in ("cagr", "volatility", "sharpe", "sortino", "periods_per_year", "var_95", "turnover"):
        assert math.isnan(m[key]), key


def test_empty_equity_does_not_raise() -> None:
    m = compute_metrics(pd.Series([], dtype="float64", index=pd.DatetimeIndex([], tz="UTC")), None)
    assert math.isnan(m["total_return"])
    assert math.isnan(m["max_drawdown"])


# ------------------------------------------------------------------------------ benchmarks, months


def test_buy_and_hold_enters_at_first_close_on_or_after_start() -> None:
    close = pd.Series([10.0, 20.0, 25.0, 20.0, 40.0], index=_days(5))
    index = pd.DatetimeIndex(
        ["2024-01-02 12:00", "2024-01-03 00:00", "2024-01-03 12:00", "2024-01-04 12:00", "2024-01-05 12:00"],
        tz="UTC",
    )
    bh = buy_and_hold(close, 1000.0, index)
    # first close on/after 01-02 12:00 is 01-03 (25): 40 units; before it, cash.
    assert list(bh) == [1000.0, 1000.0, 1000.0, 800.0, 1600.0]
    assert bh.index.equals(index)


def test_monthly_returns_compound_month_ends() -> None:
    ts = pd.DatetimeIndex(
        ["2024-01-01", "2024-01-31", "2024-02-15", "2024-02-29", "2024-03-31", "2025-01-31"], tz="UTC"
    )
    table = monthly_returns(pd.Series([100.0, 110.0, 105.0, 99.0, 121.0, 133.1], index=ts))
    assert list(table.columns) == list(range(1, 13))
    assert list(table.index) == [2024, 2025]
    assert table.loc[2024, 1] == pytest.approx(0.10)  # 110 / 100
    assert table.loc[2024, 2] == pytest.approx(-0.10)  # 99 / 110
    assert table.loc[2024, 3] == pytest.approx(121 / 99 - 1)
    assert table.loc[2025, 1] == pytest.approx(0.10)  # 133.1 / 121 (no points Apr..Dec 2024)
    assert table.loc[2024, 4:].isna().all()
    assert table.loc[2025, 2:].isna().all()
