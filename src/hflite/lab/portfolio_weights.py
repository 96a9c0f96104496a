"""Walk-forward sleeve weights: the allocation methods, the selection rule and the rebalance schedule.

Everything here is a pure function of sleeve returns that the caller has already cut to the past: the
weights of a rebalance on day ``d`` read the sleeves' daily returns of the ``lookback_days`` weekdays
up to and including ``d`` and nothing later (``tests/lab/test_portfolio_runner.py`` perturbs later
returns and checks the weights do not move), and they apply from the first bar known after day ``d``
ends (``Rebalance.effective_ns``).

Sleeve returns are sampled on a weekday calendar: each weekday's value is the sleeve's equity at the last
point of its timeline stamped before the next midnight UTC (a crypto sleeve's weekend moves fold into
Monday). Volatilities are annualised with ``WEEKDAYS_PER_YEAR``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hflite.lab.portfolio_config import PortfolioConfig, SelectionConfig

#: Weekdays in a year of 365.25 days: the periods per year of the weekday return table.
WEEKDAYS_PER_YEAR = 365.25 * 5 / 7
#: A sleeve whose returns in a window have a standard deviation at or below this did not move.
FLAT_STD = 1e-12
#: A solver's weight at or below this is rounding dust: it becomes 0 (and the rest is renormalised).
MIN_WEIGHT = 1e-6
_NS_PER_DAY = 86_400 * 10**9


@dataclass(frozen=True)
class SleeveCheck:
    """One sleeve's trailing record at a rebalance: what the selection rule reads."""

    sharpe: float  # annualised, over the selection window (NaN: too short or flat)
    drawdown_pct: float  # equity below the window's peak, in % (0 at a new high)
    decayed: bool
    why: str  # the rule that fired, with its numbers ("" when not decayed)


@dataclass(frozen=True)
class Rebalance:
    """The weights set on one day: raw (the method's), final (after selection), and why.

    ``effective_ns`` is the first instant (ns UTC) at which they apply: midnight after ``day``. The
    initial allocation (before any data) has ``day`` None and applies from the first bar."""

    day: pd.Timestamp | None
    effective_ns: int
    raw: dict[str, float]
    weights: dict[str, float]
    method: str  # how ``raw`` was computed, e.g. "hrp" or "equal: 40 of 63 weekdays of history"
    history: int  # weekdays of returns the allocation read
    checks: dict[str, SleeveCheck] = field(default_factory=dict)
    cut: dict[str, str] = field(default_factory=dict)  # sleeve -> why its weight was cut
    restored: dict[str, str] = field(default_factory=dict)  # sleeve -> why a cut was lifted


# ----------------------------------------------------------------------------------- returns table


def weekday_calendar(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """Weekdays (UTC midnights) from ``start``'s day to ``end``'s day, both included."""
    first = pd.Timestamp(start).tz_convert("UTC").normalize()
    last = pd.Timestamp(end).tz_convert("UTC").normalize()
    return pd.bdate_range(first, last, tz="UTC").as_unit("ns")


def daily_table(
    equity: dict[str, pd.Series], days: pd.DatetimeIndex, initial_cash: float
) -> tuple[np.ndarray, np.ndarray]:
    """(equity, returns), both (len(days) x sleeves) in the order of ``equity``: each day's value is the
    sleeve's last equity point stamped before the next midnight (``initial_cash`` before its first point);
    the first day's return is measured from ``initial_cash``."""
    ends = (days + pd.Timedelta(days=1)).as_unit("ns").asi8
    cols = []
    for curve in equity.values():
        ts = pd.DatetimeIndex(curve.index).tz_convert("UTC").as_unit("ns").asi8
        values = curve.to_numpy(dtype="float64")
        pos = np.searchsorted(ts, ends, side="left") - 1  # last point strictly before the next midnight
        col = np.where(pos >= 0, values[np.clip(pos, 0, None)], initial_cash)
        cols.append(col)
    eq = np.column_stack(cols) if cols else np.empty((len(days), 0))
    prev = np.vstack([np.full((1, eq.shape[1]), initial_cash), eq[:-1]])
    return eq, eq / prev - 1.0


def rebalance_rows(days: pd.DatetimeIndex, rule: str) -> list[int]:
    """Rows of ``days`` that end a week, month or quarter (the last weekday of each in the calendar),
    except the calendar's last row (weights set there would never apply)."""
    if len(days) == 0:
        return []
    if rule == "weekly":
        iso = days.isocalendar()  # ISO year and week: the days of one week share them across New Year
        key = iso["year"].to_numpy(dtype=np.int64) * 100 + iso["week"].to_numpy(dtype=np.int64)
    elif rule == "monthly":
        key = np.asarray(days.year * 12 + days.month)
    elif rule == "quarterly":
        key = np.asarray(days.year * 4 + (days.month - 1) // 3)
    else:
        raise ValueError(f"unknown rebalance rule {rule!r}")
    ends = np.flatnonzero(key[1:] != key[:-1])
    return [int(r) for r in ends]


# --------------------------------------------------------------------------------------- methods


def allocate(method: str, returns: np.ndarray, target_vol_pct: float = 10.0) -> tuple[np.ndarray, str]:
    """Weights of the sleeves (columns of ``returns``, a window of daily returns, oldest first) by ``method``,
    and a note on how they were found.

    Sleeves that did not move in the window (no trades) keep an equal share ``1/N`` each and the method
    splits the rest among the others (it cannot price a column of zeros). ``vol_target`` weights may sum
    to less than 1 (the rest stays unallocated); every other method's sum to 1. A solver that fails falls
    back to inverse volatility, and the note says so.
    """
    r = np.asarray(returns, dtype="float64")
    n = r.shape[1]
    if n == 0:
        return np.empty(0), method
    if method == "equal" or n == 1:
        return np.full(n, 1.0 / n), method
    if method == "vol_target":
        base, note = allocate("inverse_vol", r)
        return _vol_target(base, r, target_vol_pct, note)
    std = r.std(axis=0, ddof=1) if len(r) > 1 else np.zeros(n)
    moving = std > FLAT_STD
    if not moving.any():
        return np.full(n, 1.0 / n), f"{method}: no sleeve moved in the window, equal weights"
    w = np.full(n, 1.0 / n)
    inner, note = _allocate_moving(method, r[:, moving])
    w[moving] = inner * moving.sum() / n
    if not moving.all():
        flat = int((~moving).sum())
        note += f" ({flat} flat sleeve{'s' if flat > 1 else ''} at 1/{n})"
    return w, note


def _vol_target(base: np.ndarray, r: np.ndarray, target_vol_pct: float, note: str) -> tuple[np.ndarray, str]:
    """Inverse-vol weights scaled down (never up) to the target volatility. The combined account trades
    sleeve i at ``N * w_i`` times the configured risk, so its daily return is about ``sum_i N w_i r_i``:
    that sum's annualised volatility is what is compared with the target."""
    port = r @ (base * len(base))
    vol = float(port.std(ddof=1) * math.sqrt(WEEKDAYS_PER_YEAR) * 100) if len(port) > 1 else 0.0
    scale = min(1.0, target_vol_pct / vol) if vol > 0 else 1.0
    what = note.replace("inverse_vol", "inverse-vol weights", 1)
    return (
        base * scale,
        f"vol_target: {what}, predicted {vol:.1f}% vs target {target_vol_pct:g}%: x{scale:.3f}",
    )


def _allocate_moving(method: str, r: np.ndarray) -> tuple[np.ndarray, str]:
    """Weights over sleeves that all moved (positive variance), summing to 1."""
    if r.shape[1] == 1:
        return np.ones(1), method
    std = r.std(axis=0, ddof=1)
    inv = (1.0 / std) / (1.0 / std).sum()
    if method == "inverse_vol":
        return inv, method
    try:
        w, note = _skfolio(method, r)
    except Exception as exc:  # a solver that fails: the simplest sound answer, and the note says why
        return inv, f"{method} failed ({type(exc).__name__}: {str(exc)[:80]}): inverse_vol instead"
    w = np.asarray(w, dtype="float64")
    w = np.where(np.nan_to_num(w, nan=0.0) > MIN_WEIGHT, w, 0.0)  # solver dust (1e-9) is no allocation
    if not w.sum() > 0:
        return inv, f"{method} gave no weights: inverse_vol instead"
    return w / w.sum(), note


def _skfolio(method: str, r: np.ndarray) -> tuple[np.ndarray, str]:
    """Risk parity, hierarchical risk parity or max-Sharpe mean-variance from skfolio, each on a
    Ledoit-Wolf shrunk covariance (mean-variance also on James-Stein shrunk means)."""
    from skfolio.moments import LedoitWolf, ShrunkMu
    from skfolio.optimization import HierarchicalRiskParity, MeanRisk, ObjectiveFunction, RiskBudgeting
    from skfolio.prior import EmpiricalPrior

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # solver chatter; a real failure raises
        if method == "risk_parity":
            model = RiskBudgeting(prior_estimator=EmpiricalPrior(covariance_estimator=LedoitWolf()))
            return model.fit(r).weights_, "risk_parity (equal risk contributions, Ledoit-Wolf covariance)"
        if method == "hrp":
            model = HierarchicalRiskParity(prior_estimator=EmpiricalPrior(covariance_estimator=LedoitWolf()))
            return model.fit(r).weights_, "hrp (Ledoit-Wolf covariance)"
        if method == "mean_variance":
            mu = ShrunkMu().fit(r).mu_
            if not (np.asarray(mu) > 0).any():  # no positive expected return: the max-Sharpe problem has none
                model = MeanRisk(prior_estimator=EmpiricalPrior(covariance_estimator=LedoitWolf()))
                note = "mean_variance: no sleeve has a positive shrunk mean, minimum variance instead"
                return model.fit(r).weights_, note
            model = MeanRisk(
                objective_function=ObjectiveFunction.MAXIMIZE_RATIO,
                prior_estimator=EmpiricalPrior(mu_estimator=ShrunkMu(), covariance_estimator=LedoitWolf()),
            )
            return model.fit(r).weights_, "mean_variance (max Sharpe, shrunk mean and Ledoit-Wolf covariance)"
    raise ValueError(f"unknown allocation method {method!r}")


# ------------------------------------------------------------------------------------- selection


def check_sleeve(
    returns: np.ndarray, equity: np.ndarray, start_equity: float, cfg: SelectionConfig
) -> SleeveCheck:
    """The selection rule on one sleeve's trailing window: ``returns`` and ``equity`` are its last
    ``window_days`` daily values (oldest first), ``start_equity`` its equity the day before the window."""
    r = np.asarray(returns, dtype="float64")
    std = float(r.std(ddof=1)) if len(r) > 1 else 0.0
    sharpe = float(r.mean() / std * math.sqrt(WEEKDAYS_PER_YEAR)) if std > FLAT_STD else math.nan
    path = np.concatenate(([start_equity], np.asarray(equity, dtype="float64")))
    peak = float(path.max())
    dd = (1.0 - path[-1] / peak) * 100 if peak > 0 else 0.0
    reasons = []
    if sharpe == sharpe and sharpe < cfg.min_sharpe:
        reasons.append(f"trailing {len(r)}-day Sharpe {sharpe:.2f} < {cfg.min_sharpe:g}")
    if dd > cfg.max_dd_pct:
        reasons.append(f"drawdown {dd:.1f}% from its {len(r)}-day peak > {cfg.max_dd_pct:g}%")
    return SleeveCheck(sharpe, dd, bool(reasons), " and ".join(reasons))


# -------------------------------------------------------------------------------------- schedule


def schedule(
    names: list[str],
    days: pd.DatetimeIndex,
    equity: np.ndarray,
    returns: np.ndarray,
    cfg: PortfolioConfig,
    initial_cash: float,
) -> list[Rebalance]:
    """The walk-forward weights: an equal initial allocation, then one per rebalance row of ``days``,
    each from rows up to and including that day only (see the module docstring)."""
    n = len(names)
    equal = dict.fromkeys(names, 1.0 / n)
    out = [Rebalance(None, np.iinfo(np.int64).min, equal, equal, "equal: initial allocation", 0)]
    cut_now: set[str] = set()
    for row in rebalance_rows(days, cfg.rebalance):
        reb = rebalance_at(names, days, equity, returns, row, cfg, initial_cash, cut_now)
        cut_now = set(reb.cut)
        out.append(reb)
    return out


def rebalance_at(
    names: list[str],
    days: pd.DatetimeIndex,
    equity: np.ndarray,
    returns: np.ndarray,
    row: int,
    cfg: PortfolioConfig,
    initial_cash: float,
    cut_before: set[str] | None = None,
) -> Rebalance:
    """The weights set at the end of ``days[row]``: reads rows ``<= row`` of ``equity`` and ``returns``."""
    n = len(names)
    history = row + 1
    lo = max(0, history - cfg.lookback_days)
    if history < cfg.min_history_days:
        raw_w, method = np.full(n, 1.0 / n), f"equal: {history} of {cfg.min_history_days} weekdays of history"
    else:
        raw_w, method = allocate(cfg.allocation, returns[lo:history], cfg.target_vol_pct)
    raw = {name: float(w) for name, w in zip(names, raw_w, strict=True)}
    checks, cut, restored = _select(names, equity, returns, row, cfg, initial_cash, cut_before or set())
    weights = dict(raw)
    if cut:
        for name in cut:
            weights[name] = raw[name] * cfg.selection.cut
        kept = sum(weights.values())
        if cfg.redistribute and kept > 0:
            total = sum(raw.values())
            weights = {k: v * total / kept for k, v in weights.items()}
    day = days[row]
    effective = int(day.value) + _NS_PER_DAY
    return Rebalance(day, effective, raw, weights, method, history - lo, checks, cut, restored)


def _select(
    names: list[str],
    equity: np.ndarray,
    returns: np.ndarray,
    row: int,
    cfg: PortfolioConfig,
    initial_cash: float,
    cut_before: set[str],
) -> tuple[dict[str, SleeveCheck], dict[str, str], dict[str, str]]:
    sel = cfg.selection
    history = row + 1
    if not sel.enabled or history < sel.window_days:
        return {}, {}, {}
    lo = history - sel.window_days
    checks, cut, restored = {}, {}, {}
    for j, name in enumerate(names):
        start = equity[lo - 1, j] if lo > 0 else initial_cash
        c = check_sleeve(returns[lo:history, j], equity[lo:history, j], float(start), sel)
        checks[name] = c
        if c.decayed:
            cut[name] = c.why
        elif name in cut_before:
            sharpe = "flat" if c.sharpe != c.sharpe else f"{c.sharpe:.2f}"
            restored[name] = f"recovered: trailing Sharpe {sharpe}, drawdown {c.drawdown_pct:.1f}%"
    return checks, cut, restored


def weights_at(plan: list[Rebalance], name: str, ts_ns: np.ndarray) -> np.ndarray:
    """The weight of sleeve ``name`` in force at each instant of ``ts_ns`` (int64 ns UTC): the last
    rebalance whose ``effective_ns`` is at or before it."""
    eff = np.array([r.effective_ns for r in plan], dtype=np.int64)
    w = np.array([r.weights[name] for r in plan], dtype="float64")
    idx = np.searchsorted(eff, np.asarray(ts_ns, dtype=np.int64), side="right") - 1
    return w[np.clip(idx, 0, None)]
