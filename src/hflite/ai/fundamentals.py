"""Fundamental inputs of the banker view, point-in-time, when the store holds fundamentals.

The store's fundamentals are rows ``symbol, metric, period_end, known_at, value`` (``known_at``:
when the figure became public). Two columns come out, each the latest value known at a bar's time:

- ``eps_surprise``: (reported - estimated) / |estimated| EPS of the latest reported quarter;
- ``eps_growth``: reported EPS vs the same quarter a year before, (now - then) / |then|.

The embedded sample has no fundamentals, so both stay unknown there and the banker view runs on
macro alone (its confidence says so).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ("eps_surprise", "eps_growth")


def _asof(known: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    order = np.argsort(known, kind="stable")
    known, values = known[order], values[order]
    pos = np.searchsorted(known, t, side="right") - 1
    return np.where(pos >= 0, values[np.maximum(pos, 0)], np.nan)


def fundamental_columns(fund: pd.DataFrame, index: pd.DatetimeIndex) -> pd.DataFrame:
    """``eps_surprise`` and ``eps_growth`` of one symbol as known at each time of ``index``."""
    out = pd.DataFrame(index=index, columns=list(COLUMNS), dtype=float)
    if fund is None or fund.empty:
        return out
    t = index.as_unit("ns").asi8
    wide = fund.pivot_table(index="period_end", columns="metric", values="value", aggfunc="last")
    known = fund.groupby("period_end")["known_at"].max()
    wide = wide.sort_index()
    stamps = pd.DatetimeIndex(known.reindex(wide.index)).as_unit("ns").asi8
    if {"eps_reported", "eps_estimated"} <= set(wide.columns):
        est = wide["eps_estimated"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            surprise = (wide["eps_reported"].to_numpy(dtype=float) - est) / np.abs(est)
        ok = np.isfinite(surprise)
        out["eps_surprise"] = _asof(stamps[ok], np.clip(surprise[ok], -5, 5), t)
    if "eps_reported" in wide.columns:
        eps = wide["eps_reported"]
        then = eps.shift(4)
        with np.errstate(invalid="ignore", divide="ignore"):
            growth = ((eps - then) / then.abs()).to_numpy(dtype=float)
        ok = np.isfinite(growth)
        out["eps_growth"] = _asof(stamps[ok], np.clip(growth[ok], -5, 5), t)
    return out
