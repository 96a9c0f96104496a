"""Feature tables from the store, cached: the edge around the pure :mod:`hflite.features`.

:func:`build_features` reads the bars, macro series and headlines the features need, scores the
headlines (scores cached per news partition and scorer, as scoring takes seconds), computes the
tables and caches them under ``<store.root>/features/`` as Parquet. The cache key hashes the content
version of every partition read, the config, the scorer's name, :data:`FEATURES_VERSION`, the code
version (git commit) and the request, so a change to any of them computes afresh. Files are written
to a temporary name and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hflite.data.store import DataNotFoundError, Store, bars_key, news_key, series_key
from hflite.features import (
    FEATURE_GROUPS,
    FEATURES,
    FEATURES_VERSION,
    MACRO_SERIES,
    FeatureConfig,
    compute_features,
    input_warnings,
    prepare_inputs,
)

#: Scores headlines: one value in [-1, 1] per text.
Scorer = Callable[[Sequence[str]], np.ndarray]
#: Told what a build is doing and how far it got (0..1), as the engine's and the brain's progress.
Progress = Callable[[str, float], None]

FEATURES_DIR = "features"
SCORES_DIR = "scores"
FREQ = "1d"
_META = b"hflite.features"
_READ_ATTEMPTS = 3
_MACRO_SLACK = pd.Timedelta(days=3)  # the last bar's availability is at most a day after its date


@dataclass(frozen=True)
class FeatureSet:
    """Feature tables of a request: ``frames[symbol]`` indexed by availability ``ts`` (UTC), columns
    :data:`FEATURES`; ``key`` names the cache entry; ``data_versions`` the partitions read."""

    frames: dict[str, pd.DataFrame]
    key: str
    data_versions: dict[str, str]
    config: FeatureConfig
    groups: dict[str, tuple[str, ...]]
    from_cache: bool
    scorer: str
    warnings: list[str] = field(default_factory=list)
    symbols: tuple[str, ...] = ()
    path: Path | None = None  # the cache file

    def panel(self) -> pd.DataFrame:
        """Every symbol's rows in one frame indexed by (symbol, ts)."""
        return pd.concat(
            {s: self.frames[s] for s in self.symbols}, names=["symbol", "ts"], sort=False
        ).astype(np.float64)


# ---------------------------------------------------------------------------------------------------
# scorers


class VaderScorer:
    """VADER's compound score of each headline (the fallback when no sentiment module is given)."""

    name = "vader:compound"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        polarity = self._analyzer.polarity_scores
        return np.array([polarity(t)["compound"] for t in texts], dtype=np.float64)


@functools.lru_cache(maxsize=1)
def default_scorer() -> Scorer:
    """``hflite.ai.sentiment.Analyzer().scores`` when that module is present, else VADER compound
    (built once per process: building an analyzer loads its lexicons)."""
    try:
        from hflite.ai.sentiment import Analyzer
    except ImportError:
        return VaderScorer()
    scores: Scorer = Analyzer().scores
    return scores


def scorer_name(scorer: Scorer) -> str:
    """The name a scorer's cached scores are filed under: its ``name`` attribute, else that of the
    object a bound method belongs to (``name``, ``method`` or ``model_id``), else its qualified name."""
    own = getattr(scorer, "name", None)
    if isinstance(own, str) and own:
        return own
    owner = getattr(scorer, "__self__", None)
    if owner is not None:
        path = f"{type(owner).__module__}.{type(owner).__qualname__}.{getattr(scorer, '__name__', '')}"
        for attr in ("name", "method", "model_id"):
            value = getattr(owner, attr, None)
            if isinstance(value, str) and value:
                return f"{path}:{value}"
        return path
    target = scorer if hasattr(scorer, "__qualname__") else type(scorer)
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', repr(target))}"


def _check_scores(values: Any, n: int, name: str) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(scores) != n:
        raise ValueError(f"scorer {name} returned {len(scores)} scores for {n} headlines")
    if not np.isfinite(scores).all() or (np.abs(scores) > 1.0).any():
        raise ValueError(f"scorer {name} returned scores that are not finite numbers in [-1, 1]")
    return scores


# ---------------------------------------------------------------------------------------------------
# cache files


def _code_version() -> str:
    """The code that computes features and scores (version + git commit): a new commit rebuilds the
    cache, so an edited rule or feature can never be served from an old file."""
    from hflite.ai.registry import code_version

    return code_version()


def _digest(payload: dict[str, Any], length: int = 24) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _atomic_write(table: pa.Table, path: Path) -> None:
    """Write to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _ns_utc(values: Any) -> pa.Array:
    return pa.array(pd.DatetimeIndex(values).as_unit("ns").asi8, type=pa.timestamp("ns", tz="UTC"))


def _scores_path(store: Store, version: str, name: str) -> Path:
    key = _digest({"v": version, "scorer": name, "code": _code_version()})
    return store.root / FEATURES_DIR / SCORES_DIR / f"{key}.parquet"


def _read_scores(path: Path) -> pd.DataFrame | None:
    try:
        frame = pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException):
        return None
    frame["ts"] = pd.DatetimeIndex(frame["ts"]).tz_convert("UTC").as_unit("ns")
    return frame


def _scored_year(
    store: Store, year: int, version: str, scorer: Scorer, name: str, say: Progress, done: float
) -> pd.DataFrame:
    """One news partition's headlines as (ts, tickers, score), from the score cache or scored now."""
    path = _scores_path(store, version, name)
    cached = _read_scores(path) if path.is_file() else None
    if cached is not None:
        return cached
    news = store.read_news(start=f"{year:04d}-01-01", end=f"{year:04d}-12-31")
    say(f"features: scoring {news_key(year)}, {len(news):,} headlines with {name}", done)
    scores = _check_scores(scorer(news["headline"].astype(str).tolist()), len(news), name)
    frame = pd.DataFrame(
        {
            "ts": pd.DatetimeIndex(news["ts"]).as_unit("ns"),
            "tickers": news["tickers"].astype(str),
            "score": scores,
        }
    )
    table = pa.table(
        {
            "ts": _ns_utc(frame["ts"]),
            "tickers": pa.array(frame["tickers"].tolist(), pa.string()),
            "score": scores,
        }
    )
    if store.version(news_key(year)) == version:  # never file scores of other data under this version
        meta = {b"scorer": name.encode(), b"version": version.encode()}
        _atomic_write(table.replace_schema_metadata(meta), path)
    return frame


def _write_features(path: Path, fs: FeatureSet, start: str | None, end: str | None) -> None:
    parts = [fs.frames[s] for s in fs.symbols]
    counts = [len(p) for p in parts]
    matrix = np.vstack([p.to_numpy(dtype=np.float64) for p in parts])
    arrays: dict[str, pa.Array] = {
        "symbol": pa.array(np.repeat(np.array(fs.symbols, dtype=object), counts).tolist(), pa.string()),
        "ts": _ns_utc(np.concatenate([p.index.as_unit("ns").asi8 for p in parts]).view("M8[ns]")),
    }
    for j, col in enumerate(FEATURES):
        arrays[col] = pa.array(matrix[:, j], pa.float64())
    meta = {
        "key": fs.key,
        "features_version": FEATURES_VERSION,
        "data_versions": fs.data_versions,
        "config": fs.config.model_dump(mode="json"),
        "scorer": fs.scorer,
        "warnings": list(fs.warnings),
        "symbols": list(fs.symbols),
        "start": start,
        "end": end,
    }
    table = pa.table(arrays).replace_schema_metadata({_META: json.dumps(meta).encode()})
    _atomic_write(table, path)


def _read_features(path: Path, key: str, config: FeatureConfig) -> FeatureSet | None:
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {})[_META])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None
    if meta.get("key") != key or meta.get("features_version") != FEATURES_VERSION:
        return None
    symbols = tuple(meta["symbols"])
    sym = table.column("symbol").to_numpy(zero_copy_only=False)
    ts = pd.DatetimeIndex(table.column("ts").to_pandas()).tz_convert("UTC").as_unit("ns")
    matrix = np.column_stack([table.column(c).to_numpy() for c in FEATURES]).astype(np.float64)
    frames = {}
    for s in symbols:
        rows = np.flatnonzero(sym == s)
        index = pd.DatetimeIndex(ts[rows], name="ts")
        frames[s] = pd.DataFrame(matrix[rows], index=index, columns=list(FEATURES), dtype=np.float64)
    return FeatureSet(
        frames,
        key,
        dict(meta["data_versions"]),
        config,
        dict(FEATURE_GROUPS),
        True,
        str(meta["scorer"]),
        list(meta["warnings"]),
        symbols,
        path,
    )


# ---------------------------------------------------------------------------------------------------
# the build


@dataclass(frozen=True)
class _Request:
    symbols: tuple[str, ...]
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    config: FeatureConfig

    @property
    def read_start(self) -> pd.Timestamp | None:
        return None if self.start is None else self.start - pd.Timedelta(days=self.config.warmup_days)

    @property
    def read_end(self) -> pd.Timestamp | None:
        return None if self.end is None else self.end + _MACRO_SLACK

    def context_symbols(self) -> list[str]:
        extra = [self.config.market_symbol, *self.config.breadth_symbols]
        return [*self.symbols, *(s for s in dict.fromkeys(extra) if s not in self.symbols)]

    def news_years(self, stored: list[int]) -> list[int]:
        lo = -1 if self.read_start is None else self.read_start.year
        hi = 10_000 if self.read_end is None else self.read_end.year
        return [y for y in stored if lo <= y <= hi]


def _day(value: Any, what: str) -> pd.Timestamp | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    if pd.isna(ts):
        raise ValueError(f"{what} {value!r} is not a date")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.normalize()


def _partitions(store: Store, request: _Request) -> tuple[dict[str, str], bool]:
    """Versions of every partition the request reads, and whether the store holds any news."""
    current = {p.key: p.version for p in store.partitions()}
    missing = [s for s in request.symbols if bars_key(s, FREQ) not in current]
    if missing:
        raise DataNotFoundError(f"no {FREQ} bars for {missing} in store {store.root}; `hflite data list`")
    keys = [bars_key(s, FREQ) for s in request.context_symbols()]
    keys += [series_key(sid) for sid in MACRO_SERIES]
    stored_years = sorted(int(k.split("/")[1]) for k in current if k.startswith("news/"))
    keys += [news_key(y) for y in request.news_years(stored_years)]
    return {k: current[k] for k in keys if k in current}, bool(stored_years)


@dataclass
class _Raw:
    bars: dict[str, pd.DataFrame]
    macro: dict[str, pd.DataFrame]
    news: pd.DataFrame | None
    notes: list[str]


def _read_news(
    store: Store, versions: dict[str, str], scorer: Scorer, name: str, say: Progress
) -> tuple[pd.DataFrame, list[str]]:
    years = sorted(int(k.split("/")[1]) for k in versions if k.startswith("news/"))
    parts = [
        _scored_year(store, y, versions[news_key(y)], scorer, name, say, 0.1 + 0.7 * i / len(years))
        for i, y in enumerate(years)
    ]
    if parts:
        return pd.concat(parts, ignore_index=True), []
    empty = pd.DataFrame({"ts": pd.DatetimeIndex([], tz="UTC"), "tickers": [], "score": np.empty(0)})
    return empty, ["no headlines stored for this window: the sentiment counts are 0"]


def _read_raw(
    store: Store,
    request: _Request,
    versions: dict[str, str],
    has_news: bool,
    scorer: Scorer,
    say: Progress,
) -> _Raw:
    present = [s for s in request.context_symbols() if bars_key(s, FREQ) in versions]
    many = store.read_bars_many(present, FREQ, request.read_start, request.end)
    bars = {
        str(sym): g.drop(columns="symbol").reset_index(drop=True)
        for sym, g in many.groupby("symbol", sort=False)
    }
    for sym in present:  # a symbol with no bars in the window
        bars.setdefault(sym, many.iloc[:0].drop(columns="symbol"))
    macro = {
        sid: store.read_series(sid, request.read_start, request.read_end)
        for sid in MACRO_SERIES
        if series_key(sid) in versions
    }
    if not has_news:
        return _Raw(bars, macro, None, [])
    news, notes = _read_news(store, versions, scorer, scorer_name(scorer), say)
    return _Raw(bars, macro, news, notes)


def _trim(
    frames: dict[str, pd.DataFrame], raw: _Raw, request: _Request
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Drop the warm-up rows: keep bars whose session date is on or after ``start``."""
    out: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    for sym in request.symbols:
        frame = frames[sym]
        if request.start is not None:
            frame = frame[np.asarray(pd.DatetimeIndex(raw.bars[sym]["ts"]) >= request.start)]
        if frame.empty:
            notes.append(f"{sym}: no bars in the requested window")
        out[sym] = frame
    return out, notes


def build_features(
    store: Store,
    symbols: Sequence[str],
    start: Any = None,
    end: Any = None,
    config: FeatureConfig | None = None,
    scorer: Scorer | None = None,
    progress: Progress | None = None,
) -> FeatureSet:
    """Feature tables of ``symbols`` for the daily bars dated ``start``..``end`` (inclusive; None =
    all), from the cache when this exact request on this exact data was built before.

    Reads ``config.warmup_days`` of history before ``start``. A traded symbol without bars raises
    DataNotFoundError; a missing market symbol, breadth symbol, macro series or news gives NaN
    columns and a line in ``warnings``. ``scorer`` defaults to :func:`default_scorer`.
    """
    config = config or FeatureConfig()
    wanted = tuple(symbols)
    if not wanted or len(set(wanted)) != len(wanted):
        raise ValueError(f"symbols must be distinct and not empty, got {list(wanted)}")
    request = _Request(wanted, _day(start, "start"), _day(end, "end"), config)
    if request.start is not None and request.end is not None and request.start > request.end:
        raise ValueError(f"start {request.start.date()} is after end {request.end.date()}")
    scorer = scorer or default_scorer()
    name = scorer_name(scorer)
    say: Progress = progress or (lambda _message, _done: None)
    bounds = (
        None if request.start is None else str(request.start.date()),
        None if request.end is None else str(request.end.date()),
    )
    for _ in range(_READ_ATTEMPTS):
        versions, has_news = _partitions(store, request)
        key = _digest(
            {
                "features_version": FEATURES_VERSION,
                "code": _code_version(),
                "config": config.version(),
                "scorer": name,
                "data": versions,
                "symbols": list(wanted),
                "window": bounds,
                "freq": FREQ,
            }
        )
        path = store.root / FEATURES_DIR / f"{key}.parquet"
        if path.is_file() and (hit := _read_features(path, key, config)) is not None:
            return hit
        say("features: reading the store", 0.0)
        raw = _read_raw(store, request, versions, has_news, scorer, say)
        if store.versions(versions) != versions:
            continue  # a writer committed while we read: read again
        say(f"features: computing {len(wanted)} symbols", 0.9)
        inputs = prepare_inputs(raw.bars, raw.macro, raw.news, wanted)
        frames, trimmed = _trim(compute_features(inputs, config), raw, request)
        warnings = [*raw.notes, *inputs.notes, *input_warnings(inputs, config), *trimmed]
        groups = dict(FEATURE_GROUPS)
        fs = FeatureSet(frames, key, versions, config, groups, False, name, warnings, wanted, path)
        _write_features(path, fs, *bounds)
        say("features: done", 1.0)
        return fs
    raise RuntimeError(f"store {store.root} kept changing while features were read; try again")
