"""Market regimes (bull, bear, sideways, crisis) of an index, causal at every bar.

Two sources, one output (a label per bar of the index, "" while unknown):

- ``rule``: the risk manager's trend-and-volatility rule (``risk.features.regime_codes``): crisis at
  or above ``crisis_vol`` annualised volatility, else bull above a rising SMA, bear below a falling
  one, sideways otherwise.
- ``hmm``: a Gaussian hidden Markov model (hmmlearn) on daily log return and 20-bar volatility,
  refitted walk-forward (each year on the data before it) and read with the FORWARD filter only:
  the state probabilities at bar k use bars <= k (``predict_proba`` would smooth with later bars).
  States are named by their means: the most volatile is crisis, then the highest mean return bull,
  the lowest bear, the rest sideways.

The labels feed the market view, the risk manager (``[risk.regime] source = "ai"``) and the report.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from hflite import logs
from hflite.risk.features import REGIME_CODES, regime_codes
from hflite.risk.limits import Regime, RegimeLimits

REGIMES = ("bull", "bear", "sideways", "crisis")
_log = logs.get("hflite.ai.regime")


class RegimeConfig(BaseModel):
    """``[ai.regime]``: which regime model the views, the risk manager and the report use."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    source: Literal["rule", "hmm"] = "rule"
    index: str = "SPY"
    trend_window: int = Field(200, ge=10, le=2000)
    slope_bars: int = Field(20, ge=1, le=500)
    vol_window: int = Field(20, ge=5, le=500)
    crisis_vol: float = Field(40.0, gt=0, le=500, description="annualised volatility % = crisis")
    hmm_states: int = Field(4, ge=2, le=6)
    hmm_train_years: int = Field(8, ge=2, le=50, description="years of history each yearly refit uses")
    seed: int = 0


def rule_regimes(close: pd.Series, bars_per_year: float, cfg: RegimeConfig) -> pd.Series:
    """The rule's label at each bar of ``close`` (index: availability times)."""
    limits = RegimeLimits(
        index=cfg.index,
        trend_window=cfg.trend_window,
        slope_bars=cfg.slope_bars,
        vol_window=cfg.vol_window,
        crisis_vol=cfg.crisis_vol,
    )
    c = pd.Series(close.to_numpy(dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.log(c / c.shift(1))
    codes, _ = regime_codes(c, ret, limits, bars_per_year)
    labels = [str(REGIME_CODES[int(x)] or "") for x in codes]
    return pd.Series(labels, index=close.index, name="regime", dtype=object)


def _hmm_inputs(close: pd.Series, vol_window: int, bars_per_year: float) -> np.ndarray:
    c = close.to_numpy(dtype=float)
    ret = np.full(len(c), np.nan)
    ret[1:] = np.log(c[1:] / c[:-1])
    vol = pd.Series(ret).rolling(vol_window, min_periods=vol_window).std().to_numpy()
    return np.column_stack([ret * 100, vol * math.sqrt(bars_per_year) * 100])


def _name_states(means: np.ndarray) -> list[str]:
    """State index -> label from the fitted means (column 0: return %, column 1: volatility %)."""
    n = len(means)
    names = ["sideways"] * n
    order_vol = np.argsort(means[:, 1])
    if n >= 3:
        names[int(order_vol[-1])] = "crisis"
    rest = [i for i in range(n) if names[i] != "crisis"]
    by_ret = sorted(rest, key=lambda i: means[i, 0])
    names[by_ret[-1]] = "bull"
    names[by_ret[0]] = "bear"
    return names


def _forward_filter(model: object, x: np.ndarray) -> np.ndarray:
    """Filtered state probabilities P(state_k | x_0..x_k), row by row (no smoothing)."""
    log_b = model._compute_log_likelihood(x)  # type: ignore[attr-defined]
    start = np.log(np.maximum(model.startprob_, 1e-300))  # type: ignore[attr-defined]
    trans = np.log(np.maximum(model.transmat_, 1e-300))  # type: ignore[attr-defined]
    out = np.empty_like(log_b)
    alpha = start + log_b[0]
    for k in range(len(x)):
        if k:
            alpha = np.logaddexp.reduce(alpha[:, None] + trans, axis=0) + log_b[k]
        alpha = alpha - np.logaddexp.reduce(alpha)
        out[k] = alpha
    return np.exp(out)


def hmm_regimes(close: pd.Series, bars_per_year: float, cfg: RegimeConfig) -> pd.Series:
    """Walk-forward HMM labels: the model used in calendar year Y is fitted on the
    ``hmm_train_years`` before Y and filtered forward from the start of its training span."""
    from hmmlearn.hmm import GaussianHMM

    x = _hmm_inputs(close, cfg.vol_window, bars_per_year)
    ok = ~np.isnan(x).any(axis=1)
    idx = close.index
    labels = np.array([""] * len(close), dtype=object)
    years = sorted(set(idx[ok].year))
    for year in years:
        start = pd.Timestamp(year=year, month=1, day=1, tz="UTC")
        train = ok & (idx < start) & (idx >= start - pd.DateOffset(years=cfg.hmm_train_years))
        if train.sum() < 2 * 252:
            continue
        model = GaussianHMM(cfg.hmm_states, covariance_type="diag", n_iter=100, random_state=cfg.seed)
        try:
            model.fit(x[train])
        except (ValueError, np.linalg.LinAlgError) as exc:
            _log.warning("regime.hmm_fit_failed", year=year, error=str(exc))
            continue
        names = _name_states(model.means_)
        span = ok & (idx >= start - pd.DateOffset(years=cfg.hmm_train_years)) & (idx.year <= year)
        rows = np.flatnonzero(span)
        probs = _forward_filter(model, x[rows])
        this_year = idx[rows].year == year
        labels[rows[this_year]] = [names[int(s)] for s in probs[this_year].argmax(axis=1)]
    return pd.Series(labels, index=idx, name="regime", dtype=object)


def regimes(close: pd.Series, bars_per_year: float, cfg: RegimeConfig) -> pd.Series:
    """Labels by the configured source (index of ``close``: availability times, UTC)."""
    if cfg.source == "hmm":
        return hmm_regimes(close, bars_per_year, cfg)
    return rule_regimes(close, bars_per_year, cfg)


def label_at(labels: pd.Series, ts_ns: np.ndarray) -> np.ndarray:
    """The last label known at each time (as of; "" before the first)."""
    known = labels.index.as_unit("ns").asi8
    pos = np.searchsorted(known, np.asarray(ts_ns, dtype=np.int64), side="right") - 1
    values = labels.to_numpy(dtype=object)
    out = np.where(pos >= 0, values[np.maximum(pos, 0)], "")
    return out.astype(object)


def regime_source(labels: pd.Series) -> object:
    """A ``RiskManager`` regime source reading ``labels`` as of each timeline time."""
    known = labels.index.as_unit("ns").asi8
    values = labels.to_numpy(dtype=object)

    def source(md: object, i: int) -> Regime | None:
        t = int(md.timeline[i])  # type: ignore[attr-defined]
        pos = int(np.searchsorted(known, t, side="right")) - 1
        return Regime(values[pos]) if pos >= 0 and values[pos] else None

    return source
