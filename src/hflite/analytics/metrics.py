"""Performance metrics of a run: returns, risk, risk-adjusted ratios, trade statistics, benchmarks.

Every function takes plain pandas objects (tz-aware UTC indexes) and never raises on degenerate
input (flat equity, no trades, a single day): undefined numbers come back as NaN. The formulas are
written out in ``docs/metrics.md`` and in each docstring.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pandas.tseries.holiday import USFederalHolidayCalendar
from pandas.tseries.offsets import CustomBusinessDay, DateOffset

if TYPE_CHECKING:
    from hflite.engine.result import RunResult

#: Calendar days per year used for every annualisation.
DAYS_PER_YEAR = 365.25
#: A standard deviation at or below this is treated as zero (flat equity): ratios become NaN.
_FLAT_STD = 1e-12
_NAN = float("nan")

#: Keys of :func:`compute_metrics`, in display order.
METRIC_KEYS = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "calmar",
    "information_ratio",
    "max_drawdown",
    "max_drawdown_duration_days",
    "var_95",
    "cvar_95",
    "hit_rate",
    "avg_trade",
    "avg_trade_pct",
    "profit_factor",
    "turnover",
    "exposure",
    "avg_gross_exposure",
    "trades",
    "open_trades",
    "fees_usd",
    "open_exit_fee_est_usd",
    "final_equity",
    "years",
    "periods_per_year",
)


# --------------------------------------------------------------------------------------------- time


def _utc_index(idx: pd.Index) -> pd.DatetimeIndex:
    """``idx`` as a tz-aware UTC DatetimeIndex (naive timestamps are taken to be UTC)."""
    dt = pd.DatetimeIndex(idx)
    return dt.tz_localize("UTC") if dt.tz is None else dt.tz_convert("UTC")


def _as_utc_series(series: pd.Series) -> pd.Series:
    """A copy of ``series`` with a sorted UTC index and float values."""
    out = pd.Series(np.asarray(series, dtype="float64"), index=_utc_index(series.index), name=series.name)
    return out.sort_index(kind="stable")


def daily_equity(equity: pd.Series) -> pd.Series:
    """Last value of each UTC calendar day on which ``equity`` has a point, indexed by the day (00:00 UTC).

    The run timeline mixes stock, FX and crypto bar times, so a day may hold several points; days
    without any point (weekends in a stock-only run) are absent, not filled.
    """
    s = _as_utc_series(equity).dropna()
    if s.empty:
        return s
    daily = s.groupby(s.index.normalize()).last()
    daily.index = _utc_index(daily.index)
    daily.index.name = None
    return daily


def _years(daily: pd.Series) -> float:
    """Calendar span of ``daily`` in years of 365.25 days (0.0 for fewer than two points)."""
    if len(daily) < 2:
        return 0.0
    return (daily.index[-1] - daily.index[0]) / pd.Timedelta(days=1) / DAYS_PER_YEAR


def periods_per_year(daily: pd.Series) -> float:
    """Observed periods per year: ``(len - 1) / (span_days / 365.25)``.

    A stock-only daily curve gives ~252, a weekday index ~261, a crypto (every day) curve ~365.
    NaN when the span is zero (fewer than two days).
    """
    years = _years(daily)
    return (len(daily) - 1) / years if years > 0 else _NAN


@lru_cache(maxsize=8)
def _fed_business_day(first_year: int, last_year: int) -> CustomBusinessDay:
    """Federal business days with the holidays of these years only (building 1970-2200 at import cost
    more than a whole daily run's metrics)."""
    holidays = USFederalHolidayCalendar().holidays(f"{first_year}-01-01", f"{last_year}-12-31")
    return CustomBusinessDay(holidays=holidays)


def risk_free_daily(fedfunds: pd.DataFrame, index: pd.DatetimeIndex) -> pd.Series:
    """Point-in-time FEDFUNDS (% p.a.) on ``index``, with no look-ahead.

    FRED stamps the monthly average with the first day of its reference month, but it is only
    known on the first business day (US federal calendar) of the next month; each value is moved
    to that day (00:00 UTC) and then carried forward (as-of). Before the first known value: 0.0.
    """
    idx = _utc_index(index)
    frame = fedfunds[["date", "value"]].dropna()
    if frame.empty or len(idx) == 0:
        return pd.Series(0.0, index=idx, name="risk_free")
    month_start = pd.to_datetime(frame["date"], utc=True).dt.normalize()
    next_month = month_start.dt.tz_localize(None) + DateOffset(months=1)
    frame, next_month = _relevant_months(frame, next_month, idx)
    if frame.empty:  # every value is known after the last point
        return pd.Series(0.0, index=idx, name="risk_free")
    bday = _fed_business_day(int(next_month.min().year), int(next_month.max().year) + 1)
    known = pd.DatetimeIndex([bday.rollforward(ts) for ts in next_month]).tz_localize("UTC")
    rates = pd.Series(frame["value"].to_numpy(dtype="float64"), index=known).sort_index(kind="stable")
    rates = rates[~rates.index.duplicated(keep="last")]
    pos = rates.index.searchsorted(idx, side="right") - 1
    values = np.where(pos >= 0, rates.to_numpy()[np.clip(pos, 0, None)], 0.0)
    return pd.Series(values, index=idx, name="risk_free")


#: A federal business-day roll moves a date forward by at most 3 days (a weekend and a holiday);
#: the margins below leave room to spare.
_ROLL_BOUND = pd.Timedelta(days=10)


def _relevant_months(
    frame: pd.DataFrame, next_month: pd.Series, idx: pd.DatetimeIndex
) -> tuple[pd.DataFrame, pd.Series]:
    """The rows of ``frame`` that can be the value at some point of ``idx`` (so that only their
    years' holidays are built), in their order; the result is that of every row.

    A row known after the last point is never read. The roll to a business day is monotone and
    moves a date by less than ``_ROLL_BOUND``, so a row whose date is more than that before the
    latest date of the rows well before the first point (known before it) is known strictly before
    that row and is never the last known value at any point."""
    t = idx.tz_convert("UTC").tz_localize(None).as_unit("ns").asi8
    t = t[t != np.iinfo(np.int64).min]  # NaT
    if len(t) == 0:
        return frame, next_month
    nm = pd.DatetimeIndex(next_month).as_unit("ns").asi8
    bound = _ROLL_BOUND.value
    first, last = int(t.min()), int(t.max())
    keep = nm <= last
    old = nm < first - 6 * bound
    if old.any():
        keep &= nm >= int(nm[old].max()) - bound
    if keep.all():
        return frame, next_month
    return frame[keep], next_month[keep]


def _asof(series: pd.Series | None, index: pd.DatetimeIndex, before: float = _NAN) -> pd.Series:
    """``series`` as-of aligned onto ``index`` (last value at or before each point; ``before`` earlier)."""
    if series is None or len(series) == 0:
        return pd.Series(before, index=index, dtype="float64")
    s = _as_utc_series(series).dropna()
    s = s[~s.index.duplicated(keep="last")]
    pos = s.index.searchsorted(index, side="right") - 1
    values = np.where(pos >= 0, s.to_numpy()[np.clip(pos, 0, None)], before)
    return pd.Series(values, index=index, dtype="float64")


# ------------------------------------------------------------------------------------------ curves


def drawdown(equity: pd.Series) -> pd.Series:
    """Drawdown at each point: ``equity / running peak - 1`` (0 at new highs, negative below)."""
    s = _as_utc_series(equity).dropna()
    return s / s.cummax() - 1.0


def _max_drawdown_duration_days(equity: pd.Series) -> float:
    """Longest calendar time (days) from a peak to the first point back at or above it, or to the end."""
    s = _as_utc_series(equity).dropna()
    if len(s) < 2:
        return 0.0
    values = s.to_numpy()
    ts = np.asarray((s.index - s.index[0]) / pd.Timedelta(days=1), dtype="float64")
    peaks = np.flatnonzero(values >= np.maximum.accumulate(values))
    gaps = np.flatnonzero(np.diff(peaks) > 1)
    durations = list(ts[peaks[gaps + 1]] - ts[peaks[gaps]])
    if peaks[-1] < len(values) - 1:
        durations.append(ts[-1] - ts[peaks[-1]])
    return float(max(durations, default=0.0))


def buy_and_hold(close: pd.Series, initial_cash: float, index: pd.DatetimeIndex) -> pd.Series:
    """Equity of putting ``initial_cash`` into the asset at its first close on/after ``index[0]``.

    No fees, fractional quantity. As-of aligned (ffill) onto ``index``; ``initial_cash`` before the
    first price.
    """
    idx = _utc_index(index)
    if len(idx) == 0:
        return pd.Series(dtype="float64", index=idx, name="equity")
    px = _as_utc_series(close).dropna()
    px = px[px.index >= idx[0]]
    if px.empty or px.iloc[0] <= 0:
        return pd.Series(float(initial_cash), index=idx, name="equity")
    held = px * (float(initial_cash) / px.iloc[0])
    out = _asof(held, idx, before=float(initial_cash))
    out.name = "equity"
    return out


def monthly_returns(equity: pd.Series) -> pd.DataFrame:
    """Calendar-month returns compounded from daily equity: rows years, columns 1..12 (NaN: no data).

    A month's return is its last daily value over the previous month's last (the first month is
    measured from the first daily value).
    """
    daily = daily_equity(equity)
    cols = pd.Index(range(1, 13), name="month")
    if len(daily) < 2:
        return pd.DataFrame(columns=cols, dtype="float64")
    keys = [daily.index.year, daily.index.month]
    month_end = daily.groupby(keys).last()
    prev = month_end.shift(1)
    prev.iloc[0] = daily.iloc[0]
    rets = month_end / prev - 1.0
    table = rets.unstack(level=1).reindex(columns=cols)
    table.index.name = "year"
    return table.astype("float64")


# ----------------------------------------------------------------------------------------- metrics


def _ratio(num: float, den: float) -> float:
    return num / den if den > _FLAT_STD and math.isfinite(den) else _NAN


def _return_metrics(daily: pd.Series, initial: float, years: float) -> dict[str, float]:
    """total_return = final/initial - 1; cagr = (final/initial)^(1/years) - 1 (NaN if years == 0)."""
    if daily.empty or not initial > 0:
        return {"total_return": _NAN, "cagr": _NAN, "final_equity": _NAN}
    final = float(daily.iloc[-1])
    growth = final / initial
    if years <= 0:
        cagr = _NAN
    elif growth <= 0:
        cagr = -1.0
    else:
        cagr = growth ** (1.0 / years) - 1.0
    return {"total_return": growth - 1.0, "cagr": cagr, "final_equity": final}


def _risk_metrics(rets: pd.Series, rf_pct: pd.Series, ppy: float) -> dict[str, float]:
    """Volatility, Sharpe and Sortino on daily returns, with rf converted per period."""
    out = {"volatility": _NAN, "sharpe": _NAN, "sortino": _NAN}
    if len(rets) < 2 or not math.isfinite(ppy):
        return out
    r = rets.to_numpy()
    rf = (1.0 + rf_pct.to_numpy() / 100.0) ** (1.0 / ppy) - 1.0
    excess = r - rf
    vol = float(np.std(r, ddof=1))
    out["volatility"] = vol * math.sqrt(ppy)
    if vol <= _FLAT_STD:
        return out
    out["sharpe"] = _ratio(float(np.mean(excess)), float(np.std(excess, ddof=1))) * math.sqrt(ppy)
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    out["sortino"] = _ratio(float(np.mean(excess)), downside) * math.sqrt(ppy)
    return out


def _tail_metrics(rets: pd.Series) -> dict[str, float]:
    """Historical 95% VaR and CVaR of daily returns, as positive loss fractions."""
    if rets.empty:
        return {"var_95": _NAN, "cvar_95": _NAN}
    r = rets.to_numpy()
    q = float(np.quantile(r, 0.05))  # linear interpolation between order statistics
    return {"var_95": 0.0 - q, "cvar_95": 0.0 - float(np.mean(r[r <= q]))}  # 0.0 - x: no "-0.0"


def _information_ratio(daily: pd.Series, benchmark: pd.Series | None) -> float:
    """mean(active) / stdev(active) * sqrt(ppy), active = strategy - benchmark return from one common day
    to the next, annualised with the common days' :func:`periods_per_year`. Both returns span the same
    time even when the two calendars differ (a crypto run against a stock benchmark on its own days)."""
    if benchmark is None:
        return _NAN
    bench = daily_equity(benchmark)
    common = daily.index.intersection(bench.index)
    ppy = periods_per_year(daily.loc[common])
    if len(common) < 3 or not math.isfinite(ppy):
        return _NAN
    active = (daily.loc[common].pct_change() - bench.loc[common].pct_change()).iloc[1:].to_numpy()
    return _ratio(float(np.mean(active)), float(np.std(active, ddof=1))) * math.sqrt(ppy)


def _trade_metrics(trades: pd.DataFrame | None) -> dict[str, float]:
    """Closed-trade statistics on net P&L (pnl_usd - fees_usd) plus open-trade counts."""
    out = {
        "hit_rate": _NAN,
        "avg_trade": _NAN,
        "avg_trade_pct": _NAN,
        "profit_factor": _NAN,
        "trades": 0.0,
        "open_trades": 0.0,
        "open_exit_fee_est_usd": 0.0,
    }
    if trades is None or trades.empty:
        return out
    is_open = (
        trades["is_open"].fillna(False).astype(bool)
        if "is_open" in trades
        else pd.Series(False, index=trades.index)
    )
    closed, opened = trades[~is_open], trades[is_open]
    out["open_trades"] = float(len(opened))
    if "exit_fee_est_usd" in opened:
        out["open_exit_fee_est_usd"] = float(opened["exit_fee_est_usd"].fillna(0.0).sum())
    out["trades"] = float(len(closed))
    if closed.empty:
        return out
    net = (closed["pnl_usd"].astype("float64") - closed["fees_usd"].fillna(0.0).astype("float64")).to_numpy()
    wins, losses = net[net > 0].sum(), net[net < 0].sum()
    out["hit_rate"] = float(np.mean(net > 0))
    out["avg_trade"] = float(np.mean(net))
    if "return_pct" in closed:
        # the engine's return_pct is in percent; metrics report returns as fractions
        out["avg_trade_pct"] = float(closed["return_pct"].astype("float64").mean()) / 100
    out["profit_factor"] = float(wins / -losses) if losses < 0 else (math.inf if wins > 0 else _NAN)
    return out


def _fill_notional_usd(fills: pd.DataFrame) -> pd.Series:
    """|qty * price| in USD per fill: ``notional_usd`` if present, else converted at ``fee_usd / fee``.

    Fills carry price in the quote currency; the USD rate is recovered from the fee pair when the fee
    is non-zero and assumed 1.0 otherwise (USD-quoted instruments).
    """
    if "notional_usd" in fills:
        return fills["notional_usd"].astype("float64").abs()
    notional = (fills["qty"].astype("float64") * fills["price"].astype("float64")).abs()
    if {"fee", "fee_usd"} <= set(fills.columns):
        fee = fills["fee"].astype("float64")
        rate = (fills["fee_usd"].astype("float64") / fee.where(fee.abs() > 0)).fillna(1.0)
        notional = notional * rate
    return notional


def _activity_metrics(
    daily: pd.Series, equity: pd.Series, gross: pd.Series | None, fills: pd.DataFrame | None, years: float
) -> dict[str, float]:
    """Turnover (annual traded notional / mean equity), time in market and average gross leverage."""
    out = {"turnover": _NAN, "exposure": _NAN, "avg_gross_exposure": _NAN}
    if fills is not None and not daily.empty and years > 0:
        traded = float(_fill_notional_usd(fills).sum()) if not fills.empty else 0.0
        out["turnover"] = traded / float(daily.mean()) / years
    if gross is not None and len(gross) > 0:
        g = _asof(gross, equity.index, before=0.0).abs()
        out["exposure"] = float(np.mean(g.to_numpy() > 0))
        lev = (g / equity.where(equity.abs() > 0)).dropna()
        out["avg_gross_exposure"] = float(lev.mean()) if not lev.empty else _NAN
    return out


def _fees_usd(trades: pd.DataFrame | None, fills: pd.DataFrame | None) -> float:
    """Fees paid: sum of fills' ``fee_usd`` when fills are given, else of trades' ``fees_usd``."""
    if fills is not None and "fee_usd" in fills:
        return float(fills["fee_usd"].fillna(0.0).sum())
    if trades is not None and "fees_usd" in trades:
        return float(trades["fees_usd"].fillna(0.0).sum())
    return 0.0


def compute_metrics(
    equity: pd.Series,
    trades: pd.DataFrame | None,
    *,
    benchmark: pd.Series | None = None,
    risk_free: pd.Series | None = None,
    gross_exposure: pd.Series | None = None,
    fills: pd.DataFrame | None = None,
    initial_cash: float | None = None,
) -> dict[str, float]:
    """All metrics of one equity curve (keys: :data:`METRIC_KEYS`); see ``docs/metrics.md``.

    Returns are daily (:func:`daily_equity`), annualised with the observed
    :func:`periods_per_year`. ``risk_free`` (% p.a.) is sampled as-of each day and the rate known at
    the start of each period applies to it. Drawdowns use the full-resolution curve. Ratios with a
    zero denominator are NaN. ``initial_cash`` (default: the first equity value) is the base of
    total return and CAGR.
    """
    eq = _as_utc_series(equity).dropna()
    daily = daily_equity(eq)
    years = _years(daily)
    ppy = periods_per_year(daily)
    rets = daily.pct_change().iloc[1:]
    initial = float(initial_cash) if initial_cash is not None else (float(eq.iloc[0]) if len(eq) else _NAN)
    rf_daily = _asof(risk_free, daily.index, before=0.0).fillna(0.0)
    out: dict[str, Any] = {}
    out.update(_return_metrics(daily, initial, years))
    out.update(_risk_metrics(rets, rf_daily.iloc[:-1], ppy))
    mdd = float(drawdown(eq).min()) if len(eq) else _NAN
    out["max_drawdown"] = mdd
    out["max_drawdown_duration_days"] = _max_drawdown_duration_days(eq)
    out["calmar"] = out["cagr"] / abs(mdd) if mdd < 0 else _NAN
    out["information_ratio"] = _information_ratio(daily, benchmark)
    out.update(_tail_metrics(rets))
    out.update(_trade_metrics(trades))
    out.update(_activity_metrics(daily, eq, gross_exposure, fills, years))
    out["fees_usd"] = _fees_usd(trades, fills)
    out["years"] = years
    out["periods_per_year"] = ppy
    return {key: float(out[key]) for key in METRIC_KEYS}


def run_metrics(result: RunResult) -> dict[str, float]:
    """:func:`compute_metrics` of a run's strategy; the information ratio is vs its first benchmark."""
    first_bench = next(iter(result.benchmarks.values()), None)
    return compute_metrics(
        result.equity,
        result.trades,
        benchmark=first_bench,
        risk_free=result.risk_free,
        gross_exposure=result.gross_exposure,
        fills=result.fills,
        initial_cash=result.initial_cash,
    )


def benchmark_metrics(result: RunResult) -> dict[str, dict[str, float]]:
    """:func:`compute_metrics` of each benchmark's buy-and-hold curve (no trades, the same risk-free rate
    sampled on the benchmark's own calendar when the run recorded it)."""
    return {
        name: compute_metrics(
            curve,
            None,
            risk_free=result.benchmark_risk_free.get(name, result.risk_free),
            initial_cash=result.initial_cash,
        )
        for name, curve in result.benchmarks.items()
    }
