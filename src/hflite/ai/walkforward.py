"""Purged walk-forward training: labels, the pooled panel of symbols, the train/test splits and the
out-of-sample predictions of one model kind retrained every calendar month, quarter or year.

Targets (``WalkForwardConfig.target``): ``direction``, the sign of each symbol's forward return;
``xs_rank``, whether it beats the cross-sectional median of that session; ``meta_trend``, whether a
trend entry's triple barrier (take-profit, stop, time) closes in profit (López de Prado 2018, ch. 3).
Each label carries the time it becomes known (``label_end``), which the purge and embargo use; pooled
OOS AUC and IC get block-bootstrap confidence intervals over whole sessions (``oos_intervals``).

Point in time: the model of the test window starting at T is fitted only on rows whose label ended
before T (purge), minus each symbol's last ``embargo_bars`` bars before T (embargo); so no data after
T can change a prediction made before the next window starts. Each test row is predicted by the model
of its own window; rows whose label is not known yet (the data's end) are predicted but not scored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hflite.ai.models import Model, make_model, model_params

if TYPE_CHECKING:
    from hflite.ai.registry import ModelRegistry

__all__ = [
    "TARGETS",
    "XS_MIN_SYMBOLS",
    "MetaTrendConfig",
    "Panel",
    "Split",
    "WalkForwardConfig",
    "WalkForwardResult",
    "build_panel",
    "calibration_table",
    "make_labels",
    "make_meta_labels",
    "make_xs_labels",
    "n_independent",
    "oos_intervals",
    "oos_metrics",
    "run_fingerprint",
    "session_dates",
    "skill_words",
    "splits",
    "trend_entries",
    "triple_barrier",
    "walk_forward",
]

_log = logging.getLogger(__name__)
_NEVER = np.iinfo(np.int64).max  # a missing label end: never before any time
_PERIOD = {"monthly": ("M", "MS"), "quarterly": ("Q", "QS"), "yearly": ("Y", "YS")}
#: Per-window OOS metrics, in the order of the windows table's columns.
METRICS = ("hit_rate", "auc", "brier", "log_loss", "ic", "fwd_ret_up", "fwd_ret_down")
CALIBRATION_BINS = 10
#: What the model learns to predict (see the module docstring and docs/ai.md).
TARGETS = ("direction", "xs_rank", "meta_trend")
#: A session with fewer labelled symbols has no cross-sectional label (its median says too little).
XS_MIN_SYMBOLS = 3
#: Confidence intervals of the pooled OOS AUC and IC: resamples and level.
CI_RESAMPLES = 1000
CI_LEVEL = 0.95
_SESSION_TZ = "America/New_York"
_WILDER_ATR = 14  # bars of the close-only ATR used when the features have no ``atr_pct``


# ---------------------------------------------------------------------------------------------------
# labels and the panel


def _utc_index(index: pd.Index, what: str) -> pd.DatetimeIndex:
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError(f"{what}: the index must be a DatetimeIndex (the bars' availability times)")
    if index.tz is None:
        raise ValueError(f"{what}: the index must be timezone-aware (UTC), not naive")
    out = index.tz_convert("UTC").as_unit("ns")
    if not out.is_monotonic_increasing or out.has_duplicates:
        raise ValueError(f"{what}: the index must be strictly increasing (sorted, no duplicate times)")
    return out


def make_labels(close: pd.Series, horizon: int) -> pd.DataFrame:
    """Forward log return over ``horizon`` bars, ``fwd_return[k] = log(close[k+h] / close[k])``, and the
    time it becomes known, ``label_end[k] = ts[k+h]``; NaN/NaT for the last ``horizon`` bars (and
    wherever a close is missing)."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 bar, got {horizon}")
    index = _utc_index(close.index, "close")
    c = close.to_numpy(dtype=np.float64)
    if (c[np.isfinite(c)] <= 0).any():
        raise ValueError("close: prices must be positive")
    n = len(c)
    fwd = np.full(n, np.nan)
    end = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    if n > horizon:
        fwd[: n - horizon] = np.log(c[horizon:] / c[: n - horizon])
        end[: n - horizon] = index.asi8[horizon:].astype("datetime64[ns]")
    end[~np.isfinite(fwd)] = np.datetime64("NaT")
    return pd.DataFrame(
        {"fwd_return": fwd, "label_end": pd.DatetimeIndex(end).tz_localize("UTC")},
        index=index,
    )


def session_dates(ts: Any) -> np.ndarray:
    """The session of each time: its New York calendar date, as days since 1970-01-01 (int64).

    A daily bar is known at its close (16:00 New York for US stocks, 17:00 for FX, 00:00 UTC the next
    day for crypto, i.e. 19:00-20:00 New York), so every asset's bar of one trading day lands on the
    same session even though their availability times differ."""
    idx = pd.DatetimeIndex(ts)
    if idx.tz is None:
        raise ValueError("session_dates: times must be timezone-aware (UTC), not naive")
    local = idx.tz_convert(_SESSION_TZ).tz_localize(None).normalize().as_unit("ns")
    return np.asarray(local.asi8 // 86_400_000_000_000, dtype=np.int64)


def _xs_excess(
    dates: np.ndarray, fwd: np.ndarray, end_ns: np.ndarray, min_symbols: int = XS_MIN_SYMBOLS
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's forward return minus the median of its session's labelled rows, and the session's
    last label end (the label needs every member's return); NaN / ``_NEVER`` for sessions with fewer
    than ``min_symbols`` labelled rows and for a return exactly at the median."""
    excess = np.full(len(fwd), np.nan)
    end = np.full(len(fwd), _NEVER, dtype=np.int64)
    rows = np.flatnonzero(np.isfinite(fwd))
    if len(rows) == 0:
        return excess, end
    _, inv = np.unique(dates[rows], return_inverse=True)
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(inv.max() + 2))
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b - a < min_symbols:
            continue
        grp = rows[order[a:b]]
        ex = fwd[grp] - np.median(fwd[grp])
        tied = ex == 0.0  # the middle symbol of an odd count (or tied middles): neither above nor below
        excess[grp[~tied]] = ex[~tied]
        end[grp[~tied]] = end_ns[grp].max()
    return excess, end


def make_xs_labels(
    closes: Mapping[str, pd.Series], horizon: int, min_symbols: int = XS_MIN_SYMBOLS
) -> dict[str, pd.DataFrame]:
    """Cross-sectional labels per symbol: ``fwd_return`` is the forward log return over ``horizon``
    bars minus the median of the symbols labelled in the same session (> 0: label 1, above the median),
    ``raw_return`` the plain forward return, and ``label_end`` the last label end of the session.

    A session with fewer than ``min_symbols`` labelled symbols gives no label (NaN/NaT); so does a
    return exactly at the median (the middle symbol of an odd count), which is neither above nor below.
    """
    labels = {sym: make_labels(closes[sym], horizon) for sym in sorted(closes)}
    if not labels:
        return {}
    for sym, lab in labels.items():
        _check_one_row_per_session(session_dates(lab.index), sym)
    ts = pd.DatetimeIndex(np.concatenate([lab.index for lab in labels.values()]))
    fwd = np.concatenate([lab["fwd_return"].to_numpy(np.float64) for lab in labels.values()])
    ends = np.concatenate([_ns_or_never(lab["label_end"]) for lab in labels.values()])
    excess, end = _xs_excess(session_dates(ts), fwd, ends, min_symbols)
    out, at = {}, 0
    for sym, lab in labels.items():
        mine = slice(at, at + len(lab))
        at += len(lab)
        out[sym] = pd.DataFrame(
            {"fwd_return": excess[mine], "raw_return": fwd[mine], "label_end": _ns_to_times(end[mine])},
            index=lab.index,
        )
    return out


def _ns_or_never(times: pd.Series) -> np.ndarray:
    idx = pd.DatetimeIndex(times)
    out = idx.as_unit("ns").asi8.copy()
    out[idx.isna()] = _NEVER
    return out


def _ns_to_times(ns: np.ndarray) -> pd.DatetimeIndex:
    """int64 ns (``_NEVER``: unknown) -> UTC times with NaT."""
    values = np.asarray(ns, dtype=np.int64).astype("datetime64[ns]")
    values[np.asarray(ns) == _NEVER] = np.datetime64("NaT")
    return pd.DatetimeIndex(values).tz_localize("UTC")


def _check_one_row_per_session(dates: np.ndarray, sym: str) -> None:
    if len(dates) > 1 and (np.diff(np.sort(dates)) == 0).any():
        raise ValueError(
            f"target xs_rank: {sym!r} has more than one bar in a session; cross-sectional labels need "
            "daily bars"
        )


def trend_entries(close: pd.Series, fast: int, slow: int) -> np.ndarray:
    """Bars where the ``fast``-bar EMA of the close crosses above the ``slow``-bar EMA (it is above at
    the bar and was not at the bar before); EMAs start after ``fast`` / ``slow`` closes. Causal: the
    flag at bar k uses closes up to k only."""
    c = pd.Series(close.to_numpy(dtype=np.float64))
    ema_fast = c.ewm(span=fast, adjust=False, min_periods=fast).mean().to_numpy()
    ema_slow = c.ewm(span=slow, adjust=False, min_periods=slow).mean().to_numpy()
    known = np.isfinite(ema_fast) & np.isfinite(ema_slow)
    above = known & (ema_fast > ema_slow)
    out = np.zeros(len(c), dtype=bool)
    out[1:] = above[1:] & ~above[:-1] & known[:-1]
    return out


def _close_atr(close: np.ndarray, period: int = _WILDER_ATR) -> np.ndarray:
    """Wilder's average of |close change| over ``period`` bars: the ATR when only closes are known."""
    move = np.abs(np.diff(close, prepend=np.nan))
    return pd.Series(move).ewm(alpha=1 / period, adjust=False, min_periods=period).mean().to_numpy()


def triple_barrier(
    close: pd.Series,
    entries: np.ndarray,
    horizon: int,
    atr: np.ndarray,
    tp_atr: float,
    sl_atr: float,
) -> pd.DataFrame:
    """Triple-barrier labels (López de Prado 2018, ch. 3) of the entry bars ``entries`` (positions).

    At entry bar k the upper barrier is ``close[k] + tp_atr * atr[k]``, the lower one
    ``close[k] - sl_atr * atr[k]`` and the vertical one ``horizon`` bars later. The first of bars
    k+1..k+horizon whose close reaches (touches or crosses) a horizontal barrier ends the label
    (``barrier`` +1 upper, -1 lower); if none does, the vertical barrier ends it (``barrier`` 0).
    ``fwd_return`` is the log return from the entry to that end, so its sign is the label: 1 after the
    take-profit, 0 after the stop, and the sign of the return at the vertical barrier (whether the
    trade made money when it ran out of time). ``label_end`` is the end bar's time: the first touch,
    not ``horizon`` bars later. NaN/NaT while the data end before the label is decided; a missing
    close touches nothing.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 bar, got {horizon}")
    index = _utc_index(close.index, "close")
    c = close.to_numpy(dtype=np.float64)
    entries = np.asarray(entries, dtype=np.int64)
    a = np.asarray(atr, dtype=np.float64)
    n = len(c)
    fwd = np.full(len(entries), np.nan)
    end = np.full(len(entries), _NEVER, dtype=np.int64)
    barrier = np.full(len(entries), np.nan)
    for i, k in enumerate(entries):
        path = c[k + 1 : min(n, k + horizon + 1)]
        with np.errstate(invalid="ignore"):
            hit = np.flatnonzero((path >= c[k] + tp_atr * a[k]) | (path <= c[k] - sl_atr * a[k]))
        if len(hit):
            j = int(k + 1 + hit[0])
            barrier[i] = 1.0 if c[j] > c[k] else -1.0
        elif k + horizon < n and np.isfinite(c[k + horizon]):
            j = int(k + horizon)
            barrier[i] = 0.0
        else:
            continue  # not decided by the data's end: predicted, never scored or trained on
        fwd[i] = np.log(c[j] / c[k])
        end[i] = index.asi8[j]
    return pd.DataFrame(
        {"fwd_return": fwd, "label_end": _ns_to_times(end), "barrier": barrier, "atr": a[entries]},
        index=index[entries],
    )


def make_meta_labels(
    close: pd.Series, horizon: int, config: MetaTrendConfig | None = None, atr: pd.Series | None = None
) -> pd.DataFrame:
    """Meta-labels of the trend entries: ``triple_barrier`` at each ``trend_entries`` bar with the
    config's EMA spans and barriers, one row per entry (columns fwd_return, label_end, barrier, atr).

    ``atr`` (price units, on the close's index, known at its bar) defaults to Wilder's average of
    |close change| over 14 bars. Entries without a positive ATR are dropped."""
    cfg = config or MetaTrendConfig()
    index = _utc_index(close.index, "close")
    c = close.to_numpy(dtype=np.float64)
    if (c[np.isfinite(c)] <= 0).any():
        raise ValueError("close: prices must be positive")
    a = _close_atr(c) if atr is None else atr.reindex(index).to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(c) & (a > 0)
    entries = np.flatnonzero(trend_entries(close, cfg.fast, cfg.slow) & ok)
    return triple_barrier(close.set_axis(index), entries, horizon, a, cfg.tp_atr, cfg.sl_atr)


@dataclass(frozen=True, eq=False)
class Panel:
    """Symbols pooled into one table: ``X`` (float64 features, MultiIndex ``(ts, symbol)``, rows sorted
    by ts then symbol), each row's ``fwd_return`` and ``label_end`` (aligned with X) and ``symbol``."""

    X: pd.DataFrame
    fwd_return: pd.Series
    label_end: pd.Series
    symbol: np.ndarray
    horizon: int
    #: what the labels are (``TARGETS``); ``fwd_return`` is the target's return, its sign the label
    target: str = "direction"
    #: sparse panels (meta_trend): each row's bar number in its symbol's whole series, and per symbol
    #: code the times (ns) of all its bars, so the embargo counts bars, not panel rows
    bar_of_row: np.ndarray | None = None
    calendar: tuple[np.ndarray, ...] | None = None

    def __len__(self) -> int:
        return len(self.X)

    @property
    def features(self) -> list[str]:
        return [str(c) for c in self.X.columns]

    @cached_property
    def ts(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.X.index.get_level_values("ts"))

    @cached_property
    def ts_ns(self) -> np.ndarray:
        return self.ts.as_unit("ns").asi8

    @cached_property
    def label_end_ns(self) -> np.ndarray:
        idx = pd.DatetimeIndex(self.label_end)
        out = idx.as_unit("ns").asi8.copy()
        out[idx.isna()] = _NEVER
        return out

    @cached_property
    def symbol_codes(self) -> np.ndarray:
        return np.searchsorted(self.symbols, self.symbol)

    @cached_property
    def symbols(self) -> np.ndarray:
        return np.unique(self.symbol)

    @cached_property
    def bar(self) -> np.ndarray:
        """Each row's position among its symbol's rows (0 = the symbol's first bar)."""
        codes = self.symbol_codes
        order = np.argsort(codes, kind="stable")  # rows are in time order within each symbol
        sorted_codes = codes[order]
        first = np.searchsorted(sorted_codes, sorted_codes, side="left")
        out = np.empty(len(codes), dtype=np.int64)
        out[order] = np.arange(len(codes)) - first
        return out

    @cached_property
    def calendar_bar(self) -> np.ndarray:
        """Each row's bar number in its symbol's series (``bar`` unless the panel is sparse)."""
        return self.bar if self.bar_of_row is None else self.bar_of_row

    @cached_property
    def dates(self) -> np.ndarray:
        """Each row's session (``session_dates``): the unit of the cross-section and of the bootstrap."""
        return session_dates(self.ts)

    @cached_property
    def symbol_rows(self) -> list[np.ndarray]:
        """Per symbol code, its row numbers in time order."""
        codes = self.symbol_codes
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(self.symbols) + 1))
        return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def content_hash(self) -> str:
        """SHA-256 of everything a model sees or is scored on (features, times, symbols, labels)."""
        return self._content_hash

    @cached_property
    def _content_hash(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.features, self.horizon, self.symbols.tolist()]).encode())
        if self.target != "direction":  # direction panels hash as they always did
            h.update(self.target.encode())
            for arr in (self.bar_of_row, *(self.calendar or ())):
                if arr is not None:
                    h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
        for arr in (self.ts_ns, self.symbol_codes, self.label_end_ns):
            h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.fwd_return.to_numpy(dtype=np.float64)).tobytes())
        h.update(np.ascontiguousarray(self.X.to_numpy(dtype=np.float64)).tobytes())
        return h.hexdigest()


def build_panel(
    features: Mapping[str, pd.DataFrame],
    closes: Mapping[str, pd.Series],
    horizon: int,
    *,
    target: str = "direction",
    meta_trend: MetaTrendConfig | None = None,
) -> Panel:
    """Pool per-symbol feature frames (indexed by availability time ``ts``) and their labels from
    ``closes``. Columns are the union over symbols (missing ones NaN); rows sorted by ts, symbol.

    ``target``: ``direction`` (every bar; the forward return), ``xs_rank`` (every bar; the forward
    return minus its session's median, ``make_xs_labels``) or ``meta_trend`` (trend entries only; the
    triple-barrier return, ``make_meta_labels``, with the ATR from the ``atr_pct`` feature when the
    frame has it)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if set(features) != set(closes):
        raise ValueError(
            f"features and closes must cover the same symbols: only features for "
            f"{sorted(set(features) - set(closes))}, only closes for {sorted(set(closes) - set(features))}"
        )
    if not features:
        raise ValueError("build_panel needs at least one symbol")
    columns: list[str] = []
    for sym in sorted(features):
        columns += [str(c) for c in features[sym].columns if str(c) not in columns]
    values, ts, syms, fwd, ends, bars = [], [], [], [], [], []
    calendars: dict[str, np.ndarray] = {}
    for sym in sorted(features):
        frame = features[sym]
        index = _utc_index(frame.index, f"features[{sym!r}]")
        frame = frame.set_axis([str(c) for c in frame.columns], axis=1).reindex(columns=columns)
        try:
            x = frame.to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"features[{sym!r}]: every column must be numeric ({exc})") from None
        if target == "meta_trend":
            close = closes[sym]
            labels = make_meta_labels(close, horizon, meta_trend, _atr_of(features[sym], close))
            keep = index.isin(labels.index)
            x, index = x[keep], index[keep]
            labels = labels.reindex(index)
            calendars[sym] = _utc_index(close.index, "close").asi8
            bars.append(np.searchsorted(calendars[sym], index.asi8))
        else:
            labels = make_labels(closes[sym], horizon).reindex(index)
            if target == "xs_rank":
                _check_one_row_per_session(session_dates(index), sym)
        values.append(x)
        ts.append(index.asi8)
        syms.append(np.full(len(index), sym, dtype=object))
        fwd.append(labels["fwd_return"].to_numpy(dtype=np.float64))
        ends.append(_ns_or_never(labels["label_end"]))
    all_ts, all_sym = np.concatenate(ts), np.concatenate(syms)
    order = np.lexsort((np.searchsorted(np.array(sorted(features), dtype=object), all_sym), all_ts))
    ts_index = pd.DatetimeIndex(all_ts[order].astype("datetime64[ns]")).tz_localize("UTC")
    index = pd.MultiIndex.from_arrays([ts_index, all_sym[order]], names=["ts", "symbol"])
    fwd_sorted, end_sorted = np.concatenate(fwd)[order], np.concatenate(ends)[order]
    if target == "xs_rank":
        fwd_sorted, end_sorted = _xs_excess(session_dates(ts_index), fwd_sorted, end_sorted)
    sparse = target == "meta_trend"
    return Panel(
        X=pd.DataFrame(np.concatenate(values)[order], index=index, columns=columns),
        fwd_return=pd.Series(fwd_sorted, index=index, name="fwd_return"),
        label_end=pd.Series(_ns_to_times(end_sorted), index=index, name="label_end"),
        symbol=all_sym[order],
        horizon=horizon,
        target=target,
        bar_of_row=np.concatenate(bars)[order].astype(np.int64) if sparse else None,
        calendar=tuple(calendars[str(s)] for s in np.unique(all_sym)) if sparse else None,
    )


def _atr_of(frame: pd.DataFrame, close: pd.Series) -> pd.Series | None:
    """The ATR in price units from the ``atr_pct`` feature (ATR(14) / close, known at the bar), on
    the close's index; None when the frame has no such column (``make_meta_labels`` then uses closes)."""
    if "atr_pct" not in frame.columns:
        return None
    index = _utc_index(close.index, "close")
    pct = frame["atr_pct"].set_axis(_utc_index(frame.index, "features")).reindex(index)
    return pd.Series(pct.to_numpy(dtype=np.float64) * close.to_numpy(dtype=np.float64), index=index)


# ---------------------------------------------------------------------------------------------------
# configuration and splits


def _utc_bound(value: Any, is_end: bool) -> Any:
    if not isinstance(value, str | date):  # None, or something pydantic will refuse with a message
        return value
    date_only = (isinstance(value, date) and not isinstance(value, datetime)) or (
        isinstance(value, str) and len(value.strip()) == 10
    )
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    if is_end and date_only:
        ts = ts + pd.Timedelta(days=1) - pd.Timedelta(1, "us")  # a date as the end covers that day
    return ts.to_pydatetime(warn=False)


class MetaTrendConfig(BaseModel):
    """``[ai.walkforward.meta_trend]``: the trend entries and triple barriers of ``target = "meta_trend"``
    (an EMA cross up; take-profit and stop in ATRs; the time barrier is ``horizon`` bars)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    fast: int = Field(20, ge=1, le=1000, description="fast EMA span (bars)")
    slow: int = Field(50, ge=2, le=5000, description="slow EMA span (bars); an entry is fast crossing above")
    tp_atr: float = Field(2.0, gt=0, le=100, description="take-profit barrier: entry + tp_atr x ATR")
    sl_atr: float = Field(2.0, gt=0, le=100, description="stop barrier: entry - sl_atr x ATR")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> MetaTrendConfig:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be below slow ({self.slow})")
        return self


class WalkForwardConfig(BaseModel):
    """How the walk-forward retrains: test windows are calendar periods of the decision times."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    scheme: Literal["expanding", "rolling"] = "expanding"
    retrain: Literal["monthly", "quarterly", "yearly"] = "monthly"
    #: rolling: the training span; expanding: the minimum span before the first test window
    train_years: float = Field(3.0, gt=0, le=100)
    #: label horizon in bars (must equal the panel's)
    horizon: int = Field(5, ge=1, le=10_000)
    #: each symbol's last bars before a test window left out of its training rows (default: horizon)
    embargo_bars: int = Field(-1, ge=-1, le=100_000)
    #: a window with fewer training rows is skipped (its rows get no prediction)
    min_train_rows: int = Field(500, ge=1)
    #: first test time (default: the first period boundary after ``train_years`` of data); UTC
    start: datetime | None = None
    #: last test time, inclusive (a date covers that day; default: the data's end); UTC
    end: datetime | None = None
    #: what is predicted: the sign of the forward return (direction), beating the session's median
    #: (xs_rank) or a trend entry's triple barrier closing in profit (meta_trend)
    target: Literal["direction", "xs_rank", "meta_trend"] = "direction"
    #: the trend entries and barriers of target = "meta_trend"
    meta_trend: MetaTrendConfig = Field(default_factory=MetaTrendConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_embargo(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("embargo_bars") in (None, -1):
            data = {**data, "embargo_bars": data.get("horizon", 5)}
        return data

    @field_validator("start", mode="before")
    @classmethod
    def _start_utc(cls, value: Any) -> Any:
        return _utc_bound(value, is_end=False)

    @field_validator("end", mode="before")
    @classmethod
    def _end_utc(cls, value: Any) -> Any:
        return _utc_bound(value, is_end=True)

    @model_validator(mode="after")
    def _ordered(self) -> WalkForwardConfig:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"start ({self.start}) must not be after end ({self.end})")
        return self


@dataclass(frozen=True, eq=False)
class Split:
    """One walk-forward window: training and test row numbers into the panel, sorted.

    ``train_start``/``train_end``: the first and last training row's ts; ``test_start`` (inclusive) and
    ``test_end`` (exclusive): the window's bounds.
    """

    window: int
    train: np.ndarray
    test: np.ndarray
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp


def _instant(value: Any) -> pd.Timestamp:
    """A UTC timestamp (a config changed with ``model_copy(update=...)`` skips the validators)."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _span(config: WalkForwardConfig) -> pd.DateOffset:
    return pd.DateOffset(months=max(1, round(12 * config.train_years)))


def _period_floor(ts: pd.Timestamp, retrain: str) -> pd.Timestamp:
    period = _PERIOD[retrain][0]
    return ts.tz_convert(None).to_period(period).to_timestamp().tz_localize("UTC")


def _test_windows(
    first: pd.Timestamp, last: pd.Timestamp, config: WalkForwardConfig
) -> list[tuple[int, int]]:
    """[start, end) in ns of each test window: calendar periods clipped to the configured bounds."""
    earliest = first + _span(config)
    floor = _period_floor(earliest, config.retrain)
    earliest_boundary = (
        floor if floor == earliest else floor + pd.tseries.frequencies.to_offset(_PERIOD[config.retrain][1])
    )
    start = _instant(config.start) if config.start is not None else earliest_boundary
    if start < earliest:
        _log.warning(
            "walk-forward start %s leaves less than %s years of training data: moved to %s",
            start, config.train_years, earliest_boundary,
        )  # fmt: skip
        start = earliest_boundary
    stop = (_instant(config.end) if config.end is not None else last) + pd.Timedelta(1, "ns")
    if start >= stop:
        return []
    edges = pd.date_range(_period_floor(start, config.retrain), stop, freq=_PERIOD[config.retrain][1])
    bounds = [*(e.value for e in edges), stop.value]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        lo, hi = max(a, start.value), min(b, stop.value)
        if lo < hi:
            out.append((lo, hi))
    return out


def splits(panel: Panel, config: WalkForwardConfig) -> list[Split]:
    """The purged, embargoed train/test splits of ``panel``, one per test window that has rows and at
    least ``min_train_rows`` training rows (a window with fewer is skipped with a warning)."""
    if panel.horizon != config.horizon:
        raise ValueError(f"the panel's labels use horizon {panel.horizon}, the config {config.horizon}")
    if panel.target != config.target:
        raise ValueError(f"the panel's labels are target {panel.target!r}, the config {config.target!r}")
    if len(panel) == 0:
        return []
    ts, ends, bar, codes = panel.ts_ns, panel.label_end_ns, panel.calendar_bar, panel.symbol_codes
    sym_ts = list(panel.calendar) if panel.calendar is not None else [ts[rows] for rows in panel.symbol_rows]
    out: list[Split] = []
    for lo_ns, hi_ns in _test_windows(panel.ts[0], panel.ts[-1], config):
        first, stop = np.searchsorted(ts, [lo_ns, hi_ns], side="left")
        if first == stop:
            continue
        test_start = pd.Timestamp(lo_ns, tz="UTC")
        train_from = 0
        if config.scheme == "rolling":
            train_from = int(np.searchsorted(ts, (test_start - _span(config)).value, side="left"))
        cand = np.arange(train_from, first)
        keep = ends[cand] < lo_ns  # purge: the label is known before the window starts
        if config.embargo_bars:
            before = np.array([np.searchsorted(t, lo_ns, side="left") for t in sym_ts])  # bars before
            keep &= bar[cand] < (before - config.embargo_bars)[codes[cand]]
        train = cand[keep]
        if len(train) < config.min_train_rows:
            _log.warning(
                "walk-forward window %s skipped: %d training rows < min_train_rows %d",
                test_start.date(), len(train), config.min_train_rows,
            )  # fmt: skip
            continue
        out.append(
            Split(
                window=len(out),
                train=train,
                test=np.arange(first, stop),
                train_start=panel.ts[train[0]],
                train_end=panel.ts[train[-1]],
                test_start=test_start,
                test_end=pd.Timestamp(hi_ns, tz="UTC"),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------------
# metrics


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(score).rank(method="average").to_numpy()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    ra = pd.Series(a).rank().to_numpy()
    rb = pd.Series(b).rank().to_numpy()
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ic_by_date(e: np.ndarray, r: np.ndarray, dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sessions, Spearman of expected vs realised return within each session; NaN below 3 rows)."""
    days, inv = np.unique(dates, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(len(days) + 1))
    ics = np.array(
        [_spearman(e[order[a:b]], r[order[a:b]]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    )
    return days, ics


def _mean_ic(e: np.ndarray, r: np.ndarray, dates: np.ndarray) -> float:
    ics = _ic_by_date(e, r, dates)[1]
    ics = ics[np.isfinite(ics)]
    return float(ics.mean()) if len(ics) else float("nan")


def oos_metrics(
    prob_up: np.ndarray, exp_return: np.ndarray, fwd_return: np.ndarray, *, dates: np.ndarray | None = None
) -> dict[str, float]:
    """Scores of predictions against the realised forward returns (rows without a label ignored):
    hit rate of the sign, AUC, Brier score, log loss, IC (Spearman of expected vs realised return)
    and the mean realised return of rows predicted up and predicted down.

    With ``dates`` (each row's session), the IC is the cross-sectional one: the Spearman correlation
    within each session (of 3 rows or more), averaged over sessions (the ``xs_rank`` target)."""
    known = np.isfinite(fwd_return)
    p, e, r = prob_up[known], exp_return[known], fwd_return[known]
    y = (r > 0).astype(np.float64)
    out: dict[str, float] = {"n_scored": float(len(r))}
    if len(r) == 0:
        return out | {m: float("nan") for m in METRICS}
    q = np.clip(p, 1e-15, 1 - 1e-15)
    up = p > 0.5
    out |= {
        "hit_rate": float(np.mean(up == (y > 0.5))),
        "auc": _auc(p, y),
        "brier": float(np.mean((p - y) ** 2)),
        "log_loss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
        "ic": _spearman(e, r) if dates is None else _mean_ic(e, r, dates[known]),
        "fwd_ret_up": float(r[up].mean()) if up.any() else float("nan"),
        "fwd_ret_down": float(r[~up].mean()) if (~up).any() else float("nan"),
    }
    return out


def calibration_table(
    prob_up: np.ndarray, fwd_return: np.ndarray, bins: int = CALIBRATION_BINS
) -> pd.DataFrame:
    """Rows with a known label in up to ``bins`` quantile bins of predicted probability: bin_lo and
    bin_hi (the lowest and highest prediction in the bin), n, mean_prob (mean predicted) and up_rate
    (realised share of up moves).

    Bins hold equal counts, not equal widths: a model whose predictions bunch in 0.5-0.6 still gets
    ``bins`` points on its curve rather than two or three. Equal predictions always share a bin (ties
    can leave fewer bins)."""
    known = np.isfinite(fwd_return) & np.isfinite(prob_up)
    p, y = prob_up[known].astype(np.float64), (fwd_return[known] > 0).astype(np.float64)
    if len(p) == 0:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _CALIBRATION_DTYPES.items()})
    order = np.argsort(p, kind="stable")
    p, y = p[order], y[order]
    by_rank = np.arange(len(p)) * bins // len(p)
    _, b = np.unique(by_rank[np.searchsorted(p, p, side="left")], return_inverse=True)  # ties: 1st rank's
    n = np.bincount(b)
    starts = np.concatenate(([0], np.cumsum(n)[:-1]))
    return pd.DataFrame(
        {
            "bin_lo": p[starts],
            "bin_hi": p[starts + n - 1],
            "n": n,
            "mean_prob": np.bincount(b, weights=p) / n,
            "up_rate": np.bincount(b, weights=y) / n,
        }
    )


_CALIBRATION_DTYPES = {"bin_lo": "float64", "bin_hi": "float64", "n": "int64", "mean_prob": "float64",
                       "up_rate": "float64"}  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# confidence intervals


def n_independent(start_ns: np.ndarray, end_ns: np.ndarray) -> float:
    """The effective number of independent labels: the sum of each label's average uniqueness over
    its life [start, end), the mean of 1 / (labels alive) (López de Prado 2018, ch. 4.4). Labels that
    never overlap count 1 each; daily labels of ``h`` bars count about 1 / h each."""
    start, end = np.asarray(start_ns, dtype=np.int64), np.asarray(end_ns, dtype=np.int64)
    if len(start) == 0:
        return 0.0
    if (end <= start).any():
        raise ValueError("every label must end after it starts")
    pts = np.unique(np.concatenate([start, end]))
    i_start, i_end = np.searchsorted(pts, start), np.searchsorted(pts, end)
    alive = np.cumsum(np.bincount(i_start, minlength=len(pts)) - np.bincount(i_end, minlength=len(pts)))
    t = (pts - pts[0]).astype(np.float64)  # relative, so float64 keeps nanosecond steps exact enough
    seg = np.diff(t)
    share = np.where(alive[:-1] > 0, seg / np.maximum(alive[:-1], 1), 0.0)
    cum = np.concatenate(([0.0], np.cumsum(share)))
    return float(((cum[i_end] - cum[i_start]) / (t[i_end] - t[i_start])).sum())


@dataclass(frozen=True)
class _Ties:
    """Rows sorted by a value: the order, where each run of equal values starts (in sorted order) and
    each sorted position's run number; what weighted ranks and the weighted AUC need."""

    order: np.ndarray
    starts: np.ndarray
    run: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> _Ties:
        order = np.argsort(values, kind="stable")
        new = np.r_[True, values[order][1:] != values[order][:-1]] if len(values) else np.zeros(0, bool)
        return cls(order, np.flatnonzero(new), np.cumsum(new) - 1)


def _weighted_auc(ties: _Ties, up: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC of the rows repeated ``w[b]`` times, for each row b of the weights (resamples x rows), from
    the rows' scores (``ties``); tied scores count one half, as with average ranks."""
    ws, u = w[:, ties.order], up[ties.order]
    pos = np.add.reduceat(ws * u, ties.starts, axis=1)
    neg = np.add.reduceat(ws * (1.0 - u), ties.starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / pairs
    return np.where(pairs > 0, auc, np.nan)


def _weighted_ranks(ties: _Ties, w: np.ndarray) -> np.ndarray:
    """Average ranks of rows repeated ``w`` times (a run of weight W after C smaller: C + (W+1)/2)."""
    total = np.add.reduceat(w[:, ties.order], ties.starts, axis=1)
    mid = np.cumsum(total, axis=1) - total + (total + 1) / 2
    out = np.empty_like(w)
    out[:, ties.order] = mid[:, ties.run]
    return out


def _weighted_spearman(te: _Ties, tr: _Ties, w: np.ndarray) -> np.ndarray:
    """Spearman correlation of the rows repeated ``w[b]`` times, per row b of the weights (as
    ``_spearman`` on the repeated rows: NaN below 3 rows or for a constant side)."""
    total = w.sum(axis=1)
    a, b = _weighted_ranks(te, w), _weighted_ranks(tr, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        da = a - ((w * a).sum(axis=1) / total)[:, None]
        db = b - ((w * b).sum(axis=1) / total)[:, None]
        va, vb = (w * da * da).sum(axis=1), (w * db * db).sum(axis=1)
        rho = (w * da * db).sum(axis=1) / np.sqrt(va * vb)
    flat = (va <= 1e-12 * total) | (vb <= 1e-12 * total)
    return np.where((total >= 3) & ~flat, rho, np.nan)


def oos_intervals(
    prob_up: np.ndarray,
    exp_return: np.ndarray,
    fwd_return: np.ndarray,
    dates: np.ndarray,
    ts_ns: np.ndarray,
    label_end_ns: np.ndarray,
    *,
    ic_by_date: bool = False,
    n_resamples: int = CI_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = 0,
) -> dict[str, float]:
    """Bootstrap confidence intervals of the pooled OOS AUC and IC that keep time dependence: whole
    sessions are resampled (a session's symbols stay together), in blocks of consecutive sessions
    (the stationary bootstrap, ``hflite.lab.stats.block_bootstrap``) whose mean length is the sessions
    per independent observation, about ``horizon`` for overlapping daily labels.

    Rows without a label are ignored. Returns ``auc_lo``/``auc_hi`` and ``ic_lo``/``ic_hi`` (the
    percentile interval at ``level``; NaN with fewer than 2 sessions), ``n_dates`` (sessions scored),
    ``n_independent`` (the sessions' summed label uniqueness, ``n_independent``) and ``ci_block``.
    ``ic_by_date``: the IC is the per-session Spearman averaged over sessions (as ``oos_metrics`` with
    dates); else the pooled Spearman."""
    from hflite.lab.stats import block_bootstrap

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    known = np.isfinite(fwd_return) & np.isfinite(prob_up)
    p, e, r = prob_up[known], exp_return[known], fwd_return[known]
    days, day_of = np.unique(np.asarray(dates)[known], return_inverse=True)
    nan = float("nan")
    out = {"n_dates": float(len(days)), "n_independent": 0.0, "ci_block": nan,
           "auc_lo": nan, "auc_hi": nan, "ic_lo": nan, "ic_hi": nan}  # fmt: skip
    if len(days) == 0:
        return out
    first = np.full(len(days), np.iinfo(np.int64).max)
    np.minimum.at(first, day_of, np.asarray(ts_ns)[known])
    last = np.zeros(len(days), dtype=np.int64)
    np.maximum.at(last, day_of, np.asarray(label_end_ns)[known])
    out["n_independent"] = n_independent(first, np.maximum(last, first + 1))
    if len(days) < 2:
        return out
    block = float(np.clip(len(days) / max(out["n_independent"], 1.0), 1.0, len(days)))
    picks = block_bootstrap(np.arange(len(days), dtype=np.float64), block, n_resamples, seed).astype(np.intp)
    flat = (np.arange(n_resamples)[:, None] * len(days) + picks).ravel()
    counts = (
        np.bincount(flat, minlength=n_resamples * len(days)).reshape(n_resamples, len(days)).astype(float)
    )
    up = (r > 0).astype(np.float64)
    by_p, by_e, by_r = _Ties.of(p), _Ties.of(e), _Ties.of(r)
    ics = _ic_by_date(e, r, day_of)[1] if ic_by_date else np.empty(0)
    auc, ic = np.empty(n_resamples), np.empty(n_resamples)
    step = max(1, 2_000_000 // len(p))  # resamples at a time: (step x rows) arrays of about 16 MB
    for a in range(0, n_resamples, step):
        w = counts[a : a + step][:, day_of]  # each row weighted by how often its session was drawn
        auc[a : a + step] = _weighted_auc(by_p, up, w)
        if not ic_by_date:
            ic[a : a + step] = _weighted_spearman(by_e, by_r, w)
    if ic_by_date:
        ok = np.isfinite(ics)
        with np.errstate(invalid="ignore", divide="ignore"):
            ic = (counts @ np.where(ok, ics, 0.0)) / (counts @ ok.astype(np.float64))
    tail = (1 - level) / 2
    out["ci_block"] = block
    for name, values in (("auc", auc), ("ic", ic)):
        finite = values[np.isfinite(values)]
        if len(finite):
            out[f"{name}_lo"], out[f"{name}_hi"] = (float(q) for q in np.quantile(finite, [tail, 1 - tail]))
    return out


def skill_words(lo: float, hi: float, level: float = CI_LEVEL, null: float = 0.5) -> str:
    """What a confidence interval of the AUC says, in words: skill only when it excludes the coin flip
    (``null``) from above."""
    pct = f"{level:.0%}"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no demonstrated skill (too few sessions for a confidence interval)"
    if lo > null:
        return f"skill: the {pct} CI of the AUC is above {null}"
    if hi < null:
        return f"no demonstrated skill: the {pct} CI of the AUC is below {null} (worse than a coin flip)"
    return f"no demonstrated skill: the {pct} CI of the AUC includes {null}"


def _summary(
    pred: pd.DataFrame,
    windows: pd.DataFrame,
    fwd: np.ndarray,
    *,
    dates: np.ndarray,
    label_end_ns: np.ndarray,
    ic_by_date: bool,
    seed: int,
) -> dict[str, float]:
    prob, exp = pred["prob_up"].to_numpy(), pred["exp_return"].to_numpy()
    m = oos_metrics(prob, exp, fwd, dates=dates if ic_by_date else None)
    ts_ns = pd.DatetimeIndex(pred["ts"]).as_unit("ns").asi8
    ci = oos_intervals(prob, exp, fwd, dates, ts_ns, label_end_ns, ic_by_date=ic_by_date, seed=seed)
    ics = windows["ic"].to_numpy(dtype=np.float64)
    ics = ics[np.isfinite(ics)]
    ic_std = float(ics.std(ddof=1)) if len(ics) > 1 else float("nan")
    return {
        "n_windows": float(len(windows)),
        "n_predictions": float(len(pred)),
        **m,
        "long_short": m["fwd_ret_up"] - m["fwd_ret_down"],
        "ic_mean": float(ics.mean()) if len(ics) else float("nan"),
        "ic_ir": float(ics.mean() / ic_std) if len(ics) > 1 and ic_std > 0 else float("nan"),
        "hit_rate_windows": float(np.nanmean(windows["hit_rate"])) if len(windows) else float("nan"),
        **ci,
    }


# ---------------------------------------------------------------------------------------------------
# the walk-forward


@dataclass(frozen=True, eq=False)
class WalkForwardResult:
    """Out-of-sample output of one walk-forward run.

    ``predictions``: ts, symbol, prob_up, exp_return, model_id (test rows only); ``windows``: one row
    per window (model_id, train/test bounds, n_train, n_test, n_scored and the OOS metrics);
    ``importance``: window (model_id) x feature; ``calibration``: 10 quantile bins of predicted probability
    with their count, mean prediction and realised up-rate over all scored rows; ``summary``: pooled
    metrics plus the per-window IC mean and IR.
    """

    predictions: pd.DataFrame
    windows: pd.DataFrame
    importance: pd.DataFrame
    calibration: pd.DataFrame
    summary: dict[str, float]
    kind: str
    params: dict[str, Any]
    config: WalkForwardConfig
    seed: int
    fingerprint: str
    data_version: str
    run_id: str | None = None
    reused: bool = False
    elapsed_s: float = field(default=0.0, compare=False)


def run_fingerprint(
    panel: Panel,
    kind: str,
    params: Mapping[str, Any] | None = None,
    config: WalkForwardConfig | None = None,
    seed: int = 0,
    data_version: str | None = None,
) -> str:
    """Hash of everything a walk-forward's result depends on: kind, every hyper-parameter, the config,
    the seed, the data version, the features (and the panel's content hash) and the code version."""
    from hflite.ai.registry import code_version

    config = config or WalkForwardConfig(horizon=panel.horizon, target=panel.target)
    payload = {
        "kind": kind,
        "params": model_params(kind, params),
        "config": config.model_dump(mode="json"),
        "seed": seed,
        "data_version": data_version,
        "features": panel.features,
        "panel": panel.content_hash(),
        "code_version": code_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _rows_with_context(panel: Panel, test: np.ndarray, context: int) -> np.ndarray:
    """The test rows plus each symbol's ``context`` rows just before its first test row."""
    if context <= 0:
        return test
    first_bar: dict[int, int] = {}
    codes, bar = panel.symbol_codes[test], panel.bar[test]
    for c in np.unique(codes):
        first_bar[int(c)] = int(bar[codes == c].min())
    extra = [panel.symbol_rows[c][max(0, b - context) : b] for c, b in first_bar.items()]
    return np.union1d(test, np.concatenate(extra)) if extra else test


def _fit_window(model: Model, panel: Panel, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``model`` on the split's training rows; (prob_up, exp_return) for its test rows."""
    fwd = panel.fwd_return.to_numpy()
    train = split.train
    model.fit(
        panel.X.iloc[train],
        (fwd[train] > 0).astype(np.float64),
        fwd[train],
        label_end=panel.label_end.iloc[train],
    )
    rows = _rows_with_context(panel, split.test, model.context_rows)
    pred = model.predict(panel.X.iloc[rows])
    take = np.searchsorted(rows, split.test)
    return pred.prob_up[take], pred.exp_return[take]


def walk_forward(
    panel: Panel,
    kind: str,
    params: Mapping[str, Any] | None = None,
    config: WalkForwardConfig | None = None,
    registry: ModelRegistry | None = None,
    progress: Callable[[int, int], None] | None = None,
    seed: int = 0,
    *,
    data_version: str | None = None,
    reuse: bool = True,
    n_jobs: int = 0,
) -> WalkForwardResult:
    """Train ``kind`` on each split of ``panel`` and predict its test window out of sample.

    With a ``registry``, every window's model is saved (with its training window, features,
    hyper-parameters, data and code versions and OOS metrics, grouped by a run id) and the run's
    tables too; a finished run with the same fingerprint is loaded instead of retrained unless
    ``reuse`` is False. ``progress(done, total)`` is called after each window. ``data_version``
    (e.g. the store's content hashes) is recorded; by default the panel's content hash.

    ``n_jobs`` windows are fitted at once in threads (0: one per CPU; the recurrent kinds always one
    at a time); each window's model is independent of the others, so the result does not depend on it.
    """
    config = config or WalkForwardConfig(horizon=panel.horizon, target=panel.target)
    probe = make_model(kind, params, seed)  # validates params (and torch) before any work
    resolved = probe.params
    if panel.target == "meta_trend" and probe.context_rows > 0:
        raise ValueError(
            f"target meta_trend: {kind} reads a sequence of consecutive bars, but the panel holds trend "
            "entries only; use a row-wise kind (linear, random_forest, lightgbm, xgboost)"
        )
    data_version = data_version or f"panel:{panel.content_hash()[:16]}"
    fingerprint = run_fingerprint(panel, kind, resolved, config, seed, data_version)
    if registry is not None and reuse:
        found = registry.find_run(fingerprint)
        if found is not None:
            _log.info("walk-forward %s: reusing finished run %s", kind, found)
            return registry.load_run(found)
    t0 = time.perf_counter()
    todo = splits(panel, config)
    if not todo:
        raise ValueError(
            f"no walk-forward window has {config.min_train_rows} training rows: the panel spans "
            f"{panel.ts[0] if len(panel) else None} to {panel.ts[-1] if len(panel) else None}, "
            f"train_years={config.train_years}"
        )
    run_id = registry.new_run_id(fingerprint, kind) if registry is not None else None
    fwd = panel.fwd_return.to_numpy()
    prob = np.full(len(panel), np.nan)
    exp = np.full(len(panel), np.nan)
    model_ids = np.full(len(panel), None, dtype=object)
    predicted = np.zeros(len(panel), dtype=bool)
    rows: list[dict[str, Any]] = []
    importance: list[pd.Series] = []

    def fit(split: Split) -> tuple[Model, np.ndarray, np.ndarray]:
        model = make_model(kind, resolved, seed)
        return (model, *_fit_window(model, panel, split))

    by_date = panel.target == "xs_rank"  # its IC is the cross-sectional one, averaged over sessions
    workers = (n_jobs or os.cpu_count() or 1) if type(probe).thread_safe else 1
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo))), thread_name_prefix="walk-forward")
    try:
        for split, (model, p, e) in zip(todo, pool.map(fit, todo), strict=True):
            prob[split.test], exp[split.test] = p, e
            predicted[split.test] = True
            window = {
                "train_start": split.train_start,
                "train_end": split.train_end,
                "test_start": split.test_start,
                "test_end": split.test_end,
                "n_train": len(split.train),
                "n_test": len(split.test),
                **oos_metrics(p, e, fwd[split.test], dates=panel.dates[split.test] if by_date else None),
            }
            if registry is not None and run_id is not None:
                meta = {**window, "run": run_id, "window": split.window, "data_version": data_version}
                meta["horizon"] = panel.horizon
                if panel.target != "direction":  # what the model predicts (direction models: as before)
                    meta["target"] = panel.target
                model_id = registry.save(model, meta, model_id=f"{run_id}-w{split.window:03d}")
            else:
                model_id = f"{kind}-w{split.window:03d}"
            model_ids[split.test] = model_id
            rows.append({"model_id": model_id, **window})
            importance.append(model.feature_importance().rename(model_id))
            if progress is not None:
                progress(split.window + 1, len(todo))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, do not train the windows left
    done = np.flatnonzero(predicted)
    predictions = pd.DataFrame(
        {
            "ts": panel.ts[done],
            "symbol": panel.symbol[done].astype(str),
            "prob_up": prob[done],
            "exp_return": exp[done],
            "model_id": model_ids[done].astype(str),
        }
    )
    windows = pd.DataFrame(rows)
    windows["n_scored"] = windows["n_scored"].astype(np.int64)
    result = WalkForwardResult(
        predictions=predictions,
        windows=windows,
        importance=pd.DataFrame(importance).rename_axis(index="model_id", columns="feature"),
        calibration=calibration_table(prob[done], fwd[done]),
        summary=_summary(
            predictions,
            windows,
            fwd[done],
            dates=panel.dates[done],
            label_end_ns=panel.label_end_ns[done],
            ic_by_date=by_date,
            seed=seed,
        ),
        kind=kind,
        params=resolved,
        config=config,
        seed=seed,
        fingerprint=fingerprint,
        data_version=data_version,
        run_id=run_id,
        elapsed_s=time.perf_counter() - t0,
    )
    if registry is not None and run_id is not None:
        registry.save_run(result)
    return result
