"""Purged walk-forward training: labels, the pooled panel of symbols, the train/test splits and the
out-of-sample predictions of one model kind retrained every calendar month, quarter or year.

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
    "Panel",
    "Split",
    "WalkForwardConfig",
    "WalkForwardResult",
    "build_panel",
    "calibration_table",
    "make_labels",
    "oos_metrics",
    "run_fingerprint",
    "splits",
    "walk_forward",
]

_log = logging.getLogger(__name__)
_NEVER = np.iinfo(np.int64).max  # a missing label end: never before any time
_PERIOD = {"monthly": ("M", "MS"), "quarterly": ("Q", "QS"), "yearly": ("Y", "YS")}
#: Per-window OOS metrics, in the order of the windows table's columns.
METRICS = ("hit_rate", "auc", "brier", "log_loss", "ic", "fwd_ret_up", "fwd_ret_down")
CALIBRATION_BINS = 10


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


@dataclass(frozen=True, eq=False)
class Panel:
    """Symbols pooled into one table: ``X`` (float64 features, MultiIndex ``(ts, symbol)``, rows sorted
    by ts then symbol), each row's ``fwd_return`` and ``label_end`` (aligned with X) and ``symbol``."""

    X: pd.DataFrame
    fwd_return: pd.Series
    label_end: pd.Series
    symbol: np.ndarray
    horizon: int

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
        for arr in (self.ts_ns, self.symbol_codes, self.label_end_ns):
            h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.fwd_return.to_numpy(dtype=np.float64)).tobytes())
        h.update(np.ascontiguousarray(self.X.to_numpy(dtype=np.float64)).tobytes())
        return h.hexdigest()


def build_panel(features: Mapping[str, pd.DataFrame], closes: Mapping[str, pd.Series], horizon: int) -> Panel:
    """Pool per-symbol feature frames (indexed by availability time ``ts``) and their labels from
    ``closes``. Columns are the union over symbols (missing ones NaN); rows sorted by ts, symbol."""
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
    values, ts, syms, fwd, ends = [], [], [], [], []
    for sym in sorted(features):
        frame = features[sym]
        index = _utc_index(frame.index, f"features[{sym!r}]")
        frame = frame.set_axis([str(c) for c in frame.columns], axis=1).reindex(columns=columns)
        try:
            values.append(frame.to_numpy(dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"features[{sym!r}]: every column must be numeric ({exc})") from None
        labels = make_labels(closes[sym], horizon).reindex(index)
        ts.append(index.asi8)
        syms.append(np.full(len(index), sym, dtype=object))
        fwd.append(labels["fwd_return"].to_numpy(dtype=np.float64))
        ends.append(pd.DatetimeIndex(labels["label_end"]).as_unit("ns").asi8)
    all_ts, all_sym = np.concatenate(ts), np.concatenate(syms)
    order = np.lexsort((np.searchsorted(np.array(sorted(features), dtype=object), all_sym), all_ts))
    ts_index = pd.DatetimeIndex(all_ts[order].astype("datetime64[ns]")).tz_localize("UTC")
    index = pd.MultiIndex.from_arrays([ts_index, all_sym[order]], names=["ts", "symbol"])
    end_index = pd.DatetimeIndex(np.concatenate(ends)[order].astype("datetime64[ns]")).tz_localize("UTC")
    return Panel(
        X=pd.DataFrame(np.concatenate(values)[order], index=index, columns=columns),
        fwd_return=pd.Series(np.concatenate(fwd)[order], index=index, name="fwd_return"),
        label_end=pd.Series(end_index, index=index, name="label_end"),
        symbol=all_sym[order],
        horizon=horizon,
    )


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
    if len(panel) == 0:
        return []
    ts, ends, bar, codes = panel.ts_ns, panel.label_end_ns, panel.bar, panel.symbol_codes
    sym_ts = [ts[rows] for rows in panel.symbol_rows]
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


def oos_metrics(prob_up: np.ndarray, exp_return: np.ndarray, fwd_return: np.ndarray) -> dict[str, float]:
    """Scores of predictions against the realised forward returns (rows without a label ignored):
    hit rate of the sign, AUC, Brier score, log loss, IC (Spearman of expected vs realised return)
    and the mean realised return of rows predicted up and predicted down."""
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
        "ic": _spearman(e, r),
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


def _summary(pred: pd.DataFrame, windows: pd.DataFrame, fwd: np.ndarray) -> dict[str, float]:
    m = oos_metrics(pred["prob_up"].to_numpy(), pred["exp_return"].to_numpy(), fwd)
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

    config = config or WalkForwardConfig(horizon=panel.horizon)
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
    config = config or WalkForwardConfig(horizon=panel.horizon)
    resolved = make_model(kind, params, seed).params  # validates params (and torch) before any work
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

    workers = (n_jobs or os.cpu_count() or 1) if type(make_model(kind, resolved, seed)).thread_safe else 1
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
                **oos_metrics(p, e, fwd[split.test]),
            }
            if registry is not None and run_id is not None:
                meta = {**window, "run": run_id, "window": split.window, "data_version": data_version}
                meta["horizon"] = panel.horizon
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
        summary=_summary(predictions, windows, fwd[done]),
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
