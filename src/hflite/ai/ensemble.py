"""The ensemble: three view scores and confidences -> one score in [-1, 1] and a confidence.

``score = sum(w_v * c_v * s_v) / sum(w_v * c_v)``: each view counts by its weight times its own
confidence, so a view with nothing to say (no news, no macro yet) steps aside instead of pulling the
score to zero. ``confidence = (sum(w_v * c_v) / sum(w_v)) * agreement``, agreement as in the views
(``|sum of terms| / sum of |terms|``).

Weights are fixed in the config, or learned walk-forward: at the start of each retraining period,
non-negative least squares of the volatility-scaled forward return on the confidence-weighted view
scores, over the rows whose label was known before that start (the same purge as the models). A
period without enough rows keeps the fixed weights.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hflite.ai.views import VIEWS

_PERIOD = {"monthly": "MS", "quarterly": "QS", "yearly": "YS"}


class EnsembleConfig(BaseModel):
    """``[ai.ensemble]``: how the three views are weighted."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    weights: Literal["fixed", "learned"] = "fixed"
    fixed: dict[Literal["banker", "investor", "market"], float] = Field(
        default_factory=lambda: {"banker": 0.2, "investor": 0.2, "market": 0.6}  # type: ignore[arg-type,dict-item]
    )
    learn_years: int = Field(5, ge=1, le=50, description="history each learned fit uses")
    min_rows: int = Field(500, ge=10)
    floor: float = Field(0.05, ge=0, le=0.3, description="smallest learned weight of a view")

    @field_validator("fixed")
    @classmethod
    def _weights_ok(cls, v: dict[str, float]) -> dict[str, float]:
        if any(x < 0 for x in v.values()) or sum(v.values()) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {v}")
        return v

    def fixed_vector(self) -> np.ndarray:
        w = np.array([float(self.fixed.get(v, 0.0)) for v in VIEWS])  # type: ignore[call-overload]
        return w / w.sum()


def combine(scores: np.ndarray, confs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows x 3 scores and confidences, rows x 3 (or 3) weights -> (score, confidence) per row."""
    s = np.nan_to_num(scores)
    c = np.where(np.isnan(scores), 0.0, np.nan_to_num(confs))
    w = np.broadcast_to(weights, s.shape)
    wc = w * c
    terms = wc * s
    denom = wc.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(denom > 0, terms.sum(axis=1) / denom, np.nan)
        spread = np.abs(terms).sum(axis=1)
        agreement = np.where(spread > 0, np.abs(terms.sum(axis=1)) / spread, 0.0)
    confidence = np.where(denom > 0, denom / w.sum(axis=1) * agreement, 0.0)
    return np.clip(score, -1.0, 1.0), confidence


def period_starts(first: pd.Timestamp, last: pd.Timestamp, retrain: str) -> pd.DatetimeIndex:
    """Calendar period starts (UTC) covering [first, last]."""
    freq = _PERIOD[retrain]
    start = pd.Timestamp(first).tz_convert("UTC").tz_localize(None).to_period(freq[0]).to_timestamp()
    return pd.date_range(start, pd.Timestamp(last).tz_convert("UTC").tz_localize(None), freq=freq, tz="UTC")


def learned_weights(
    panel: pd.DataFrame, starts: pd.DatetimeIndex, cfg: EnsembleConfig, embargo: pd.Timedelta
) -> pd.DataFrame:
    """Weights per period start. ``panel`` rows: ts, label_end, target (vol-scaled forward return)
    and ``<view>`` / ``<view>_conf`` columns. Only rows whose ``label_end < start - embargo`` and
    ``ts >= start - learn_years`` enter the fit for the period starting at ``start``."""
    from scipy.optimize import nnls

    fixed = cfg.fixed_vector()
    x_all = np.column_stack([np.nan_to_num(panel[v] * panel[f"{v}_conf"]) for v in VIEWS])
    y_all = panel["target"].to_numpy(dtype=float)
    ts = panel["ts"].to_numpy(dtype="datetime64[ns]")
    ends = panel["label_end"].to_numpy(dtype="datetime64[ns]")
    rows = []
    for start in starts:
        cut = np.datetime64((start - embargo).tz_convert("UTC").tz_localize(None), "ns")
        lo = np.datetime64((start - pd.DateOffset(years=cfg.learn_years)).tz_localize(None), "ns")
        m = (ends < cut) & (ts >= lo) & ~np.isnan(y_all)
        w, fitted = fixed, False
        if m.sum() >= cfg.min_rows:
            coef, _ = nnls(x_all[m], y_all[m])
            if coef.sum() > 0:
                w = np.maximum(coef / coef.sum(), cfg.floor)
                w, fitted = w / w.sum(), True
        rows.append(
            {"start": start, **dict(zip(VIEWS, w, strict=True)), "rows": int(m.sum()), "fitted": fitted}
        )
    return pd.DataFrame(rows).set_index("start") if rows else pd.DataFrame(columns=[*VIEWS, "rows", "fitted"])


def weights_at(table: pd.DataFrame | None, ts: pd.DatetimeIndex, cfg: EnsembleConfig) -> np.ndarray:
    """Rows x 3 weights in force at each time (the latest period start at or before it)."""
    fixed = cfg.fixed_vector()
    if table is None or table.empty:
        return np.tile(fixed, (len(ts), 1))
    starts = pd.DatetimeIndex(table.index).as_unit("ns").asi8
    pos = np.searchsorted(starts, pd.DatetimeIndex(ts).as_unit("ns").asi8, side="right") - 1
    w = table[list(VIEWS)].to_numpy(dtype=float)
    out = np.where((pos >= 0)[:, None], w[np.maximum(pos, 0)], fixed)
    return np.asarray(out)
