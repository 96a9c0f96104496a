"""Causal numpy primitives: lagged differences, trailing windows, as-of joins, time-window statistics.

Every output at index k reads inputs at indices <= k only (or, for time windows, times <= t), so
changing or dropping later inputs never changes it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

NS_PER_DAY = 86_400 * 10**9


def nans(n: int) -> np.ndarray:
    return np.full(n, np.nan)


def utc_index(t_ns: np.ndarray, name: str | None = None) -> pd.DatetimeIndex:
    """A UTC nanosecond DatetimeIndex of int64 ns since the epoch."""
    return pd.DatetimeIndex(pd.to_datetime(np.asarray(t_ns, dtype=np.int64), unit="ns", utc=True), name=name)


def lag_diff(x: np.ndarray, n: int) -> np.ndarray:
    """``x[k] - x[k-n]`` (NaN for the first n)."""
    out = nans(len(x))
    if len(x) > n:
        out[n:] = x[n:] - x[:-n]
    return out


def lag_ratio(x: np.ndarray, n: int) -> np.ndarray:
    """``x[k] / x[k-n]`` (NaN for the first n)."""
    out = nans(len(x))
    if len(x) > n:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[n:] = x[n:] / x[:-n]
    return out


def trailing_std(x: np.ndarray, n: int) -> np.ndarray:
    """Sample std (ddof 1) of ``x[k-n+1..k]``; NaN if the window is short or holds a NaN."""
    out = nans(len(x))
    if len(x) >= n:
        out[n - 1 :] = sliding_window_view(x, n).std(axis=1, ddof=1)
    return out


def trailing_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``x[k-n+1..k]``; NaN if the window is short or holds a NaN."""
    out = nans(len(x))
    if len(x) >= n:
        out[n - 1 :] = sliding_window_view(x, n).mean(axis=1)
    return out


def zscore_vs_previous(x: np.ndarray, n: int) -> np.ndarray:
    """``(x[k] - mean) / std`` over the n values before k (sample std); NaN if std is 0 or undefined."""
    out = nans(len(x))
    if len(x) > n:
        windows = sliding_window_view(x[:-1], n)
        mean = windows.mean(axis=1)
        std = windows.std(axis=1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (x[n:] - mean) / std
        out[n:] = np.where(std > 0, z, np.nan)
    return out


def asof_rows(known: np.ndarray, t: np.ndarray, max_age_ns: float | None = None) -> np.ndarray:
    """For each t, the row of the last ``known`` time <= t; -1 if none, or older than ``max_age_ns``.

    ``known`` must be non-decreasing (int64 ns); the last of equal times wins.
    """
    pos = np.searchsorted(known, t, side="right") - 1
    if max_age_ns is not None and len(known):
        pos[(pos >= 0) & ((t - known[np.maximum(pos, 0)]) > max_age_ns)] = -1
    return pos


def take(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values[rows]``, NaN where rows is -1."""
    if len(values) == 0:
        return nans(len(rows))
    return np.where(rows >= 0, values[np.maximum(rows, 0)], np.nan)


def known_after_all(known: np.ndarray) -> np.ndarray:
    """When observation i and every earlier one are known: a value derived from observations <= i
    (a change, a z-score) is known only then."""
    return np.maximum.accumulate(known) if len(known) else known


def window_stats(
    ts: np.ndarray, x: np.ndarray, t: np.ndarray, width_ns: int, *, with_std: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and population std of the ``x`` stamped in ``(t - width, t]`` for each t.

    ``ts`` sorted. Sums are taken over each window directly (no running totals whose rounding would
    leak into a zero std); mean and std are NaN for an empty window.
    """
    hi = np.searchsorted(ts, t, side="right")
    lo = np.searchsorted(ts, t - width_ns, side="right")
    count = (hi - lo).astype(np.float64)
    mean = nans(len(t))
    std = nans(len(t))
    full = count > 0
    if not full.any():
        return count, mean, std
    lo_f, hi_f, n_f = lo[full], hi[full], count[full]
    padded = np.append(x, 0.0)  # reduceat needs indices < len; hi may equal len(x)
    bounds = np.empty(2 * len(lo_f), dtype=np.intp)
    bounds[0::2], bounds[1::2] = lo_f, hi_f
    sums = np.add.reduceat(padded, bounds)[0::2]  # slot 2j sums padded[lo_j:hi_j] (lo_j < hi_j)
    mean[full] = sums / n_f
    if with_std:
        # two-pass: deviations of each window's members from that window's mean
        sizes = (hi_f - lo_f).astype(np.intp)
        owner = np.repeat(np.arange(len(sizes)), sizes)
        starts = np.cumsum(sizes) - sizes
        member = lo_f[owner] + (np.arange(int(sizes.sum())) - starts[owner])
        dev = x[member] - mean[full][owner]
        std[full] = np.sqrt(np.bincount(owner, weights=dev * dev, minlength=len(sizes)) / n_f)
    return count, mean, std
