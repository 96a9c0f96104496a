"""Local data store: Parquet partitions queried with DuckDB, versioned by a JSON manifest.

Layout under ``root`` (``<h12>`` = the first 12 hex digits of the file's content hash)::

    bars/asset_class=<cls>/symbol=<SYM>/freq=<f>/data.<h12>.parquet
    macro/series=<ID>/data.<h12>.parquet
    tables/name=<NAME>/data.<h12>.parquet        (reference tables, e.g. corporate actions)
    news/year=<YYYY>/data.<h12>.parquet           (headlines, deduplicated, one partition per UTC year)
    fundamentals/symbol=<SYM>/data.<h12>.parquet  (point-in-time: each value with the time it became known)
    manifest.json                                 (one entry per partition: range, rows, version, history)

A partition's *version* is the sha256 of its canonical content (sorted rows, fixed dtypes), so the same
data always has the same version, whichever file bytes or library versions wrote it.

Files are immutable and named by their content. A write puts a new file beside the old ones (temp file,
fsync, read back, rename), then commits by atomically replacing the manifest (the single commit point),
then deletes the files no kept version needs. A reader, or a process killed at any moment, therefore sees
either the old or the new manifest, and each names complete files. The data of the last ``keep_versions``
previous versions stays on disk, so ``read_bars(..., version=...)`` re-runs on exactly the data a
backtest recorded; older versions keep their hash in the history but not their data.

Archive tier: :meth:`Store.archive` splits bar partitions at a cutoff. Rows older than the cutoff go to
``archive_root`` (same layout, zstd level 19), the rest stays hot; reads union both. The version of an
archived partition stays the hash of the whole partition (archive + hot, exactly what ``read_bars``
returns), so archiving never changes a version a backtest recorded; the manifest also keeps the hash of
each part so :meth:`Store.verify` can check every file.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hflite.domain.instrument import AssetClass, UnknownInstrumentError, instrument_for

if TYPE_CHECKING:
    from rich.table import Table

try:  # POSIX only: serialises writers across processes; threads are serialised by an RLock.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Columns of a bar frame, in order.
BAR_COLUMNS: tuple[str, ...] = ("ts", "open", "high", "low", "close", "volume")
#: Columns of a macro series frame, in order.
SERIES_COLUMNS: tuple[str, ...] = ("date", "value")
#: Columns of a news frame: ``source`` is the outlet (publisher), ``tickers`` comma-separated ("" = market).
NEWS_COLUMNS: tuple[str, ...] = ("ts", "source", "tickers", "headline", "summary", "url")
#: Columns of a fundamentals frame: ``known_at`` is when the value became public.
FUNDAMENTAL_COLUMNS: tuple[str, ...] = ("symbol", "metric", "period_end", "known_at", "value")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
MANIFEST_NAME = "manifest.json"
#: File name of a partition in stores written before files were named by version (still readable).
DATA_FILE = "data.parquet"
MANIFEST_FORMAT = 2
#: Previous versions whose data a store keeps by default (their hashes are kept forever).
KEEP_VERSIONS = 5
ARCHIVE_COMPRESSION_LEVEL = 19

Kind = Literal["bars", "macro", "table", "news", "fundamentals"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._^-]{0,63}")
_FREQ_RE = re.compile(r"[1-9][0-9]*[mhdw]")
_DATE_ONLY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_AGE_RE = re.compile(r"(\d+)\s*(y|mo|m|w|d)")
_VERSION_RE = re.compile(r"[0-9a-f]{8,64}")
_HASH_TAG = b"hflite-frame-v1\n"
_MIN_TIME = datetime(1, 1, 1, tzinfo=UTC)
_MAX_TIME = datetime(9999, 12, 31, tzinfo=UTC)
_READ_ATTEMPTS = 10  # a reader retries when a writer deleted the files it was about to open
_FILE_FIELDS = ("path", "hot_hash", "archive")
# hive_partitioning off: the partition's path keys (symbol=..., freq=...) are not data columns.
_SCAN = "read_parquet($paths, hive_partitioning = false)"
_BARS_SQL = (
    f"SELECT ts, open, high, low, close, volume FROM {_SCAN} WHERE ts >= $start AND ts < $end ORDER BY ts"
)
# no ORDER BY: files are given in (symbol, time) order and DuckDB keeps insertion order; checked after
_BARS_MANY_SQL = (
    "SELECT filename, ts, open, high, low, close, volume "
    "FROM read_parquet($paths, hive_partitioning = false, filename = true) WHERE ts >= $start AND ts < $end"
)
_SERIES_SQL = f"SELECT date, value FROM {_SCAN} WHERE date >= $start AND date < $end ORDER BY date"
_TABLE_SQL = f"SELECT * FROM {_SCAN}"
_NEWS_SQL = (
    f"SELECT ts, source, tickers, headline, summary, url FROM {_SCAN} WHERE ts >= $start AND ts < $end "
    "{tickers} ORDER BY ts, headline, url, source, tickers, summary"
)
_NEWS_TICKERS = "AND list_has_any(string_split(tickers, ','), $tickers::VARCHAR[])"
_FUNDAMENTALS_SQL = (
    f"SELECT symbol, metric, period_end, known_at, value FROM {_SCAN} WHERE known_at <= $as_of "
    "ORDER BY symbol, metric, period_end, known_at"
)
_LIST_HINT = "`hflite data list` shows what is stored"
_REPAIR_HINT = "run `hflite data check --repair`"
_CHECKED_MAX = 100_000  # files whose hash this process checked (a cap, not a tuning knob)


class DataNotFoundError(LookupError):
    """The store holds no partition (or no kept version) for the requested data."""


class StoreError(ValueError):
    """The store cannot be used as it is on disk (a folder it cannot create, a damaged file); the
    message is one line naming the folder or file and what to do."""


class DataIntegrityError(StoreError):
    """A partition file that cannot be read or no longer holds the version the manifest records (it
    was edited or overwritten after it was written): ``hflite data check --repair`` restores it."""

    def __init__(self, message: str, key: str = "", path: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.path = path


@dataclass(frozen=True)
class PartitionInfo:
    """One stored partition as recorded in the manifest. ``version`` is its content hash.

    ``rows``, ``first`` and ``last`` cover the whole partition; ``archive_rows`` of them live in the
    archive tier (``archive_path``, relative to the archive root), all older than ``archived_before``.
    """

    key: str
    kind: Kind
    symbol: str
    asset_class: str | None
    freq: str | None
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    rows: int
    version: str
    written_at: datetime
    source: str
    path: str = ""
    archive_rows: int = 0
    archive_path: str = ""
    archived_before: pd.Timestamp | None = None


@dataclass(frozen=True)
class ArchivedPartition:
    """What :meth:`Store.archive` did to one partition."""

    key: str
    moved_rows: int
    cutoff: pd.Timestamp
    archive_rows: int
    hot_rows: int
    path: str

    def __str__(self) -> str:
        return (
            f"{self.key}: {self.moved_rows} rows before {self.cutoff:%Y-%m-%d} moved "
            f"(archive {self.archive_rows} rows, hot {self.hot_rows}) -> {self.path}"
        )


@dataclass(frozen=True)
class Repair:
    """What :meth:`Store.repair` did about one damaged partition (``key``) or kept version
    (``key@<hash12>``): ``version`` is the partition's current version afterwards."""

    key: str
    problem: str
    action: str
    version: str
    repaired: bool


# ---------------------------------------------------------------------------------------------------
# keys and names


def bars_key(symbol: str, freq: str = "1d") -> str:
    """Manifest key of a bar partition, e.g. ``bars/SPY/1d``."""
    return f"bars/{symbol}/{freq}"


def series_key(series_id: str) -> str:
    """Manifest key of a macro series, e.g. ``macro/FEDFUNDS``."""
    return f"macro/{series_id}"


def table_key(name: str) -> str:
    """Manifest key of a reference table, e.g. ``table/corporate_actions``."""
    return f"table/{name}"


def news_key(year: int) -> str:
    """Manifest key of one year of news, e.g. ``news/2023``."""
    return f"news/{int(year):04d}"


def fundamentals_key(symbol: str) -> str:
    """Manifest key of a symbol's fundamentals, e.g. ``fundamentals/AAPL``."""
    return f"fundamentals/{symbol}"


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: use letters, digits and . _ ^ - (at most 64 characters)")
    return value


def _check_freq(freq: str) -> str:
    if not isinstance(freq, str) or not _FREQ_RE.fullmatch(freq):
        raise ValueError(f"invalid frequency {freq!r}: expected e.g. '1d', '1h', '1m'")
    return freq


def _resolve_asset_class(symbol: str, asset_class: str | None) -> str:
    if asset_class is None:
        try:
            return instrument_for(symbol).asset_class.value
        except UnknownInstrumentError:
            raise ValueError(
                f"{symbol}: unknown instrument; pass asset_class= one of {[a.value for a in AssetClass]}"
            ) from None
    try:
        return AssetClass(asset_class).value
    except ValueError:
        raise ValueError(
            f"{symbol}: invalid asset_class {asset_class!r}; expected one of {[a.value for a in AssetClass]}"
        ) from None


def _version_file(folder: str, version: str) -> str:
    return f"{folder}/data.{version[:12]}.parquet"


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0]


# ---------------------------------------------------------------------------------------------------
# normalisation, validation and the content hash


def _utc_ns(col: pd.Series, what: str) -> pd.DatetimeIndex:
    """A tz-aware datetime column as a UTC nanosecond index; naive or non-datetime columns are refused."""
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        idx = pd.DatetimeIndex(col).tz_convert("UTC").as_unit("ns")
    elif pd.api.types.is_datetime64_dtype(col.dtype):
        raise ValueError(f"{what} is timezone-naive; localize it to UTC first")
    else:
        raise ValueError(f"{what} must be a tz-aware datetime column, got dtype {col.dtype}")
    if idx.hasnans:
        raise ValueError(f"{what} has a missing timestamp at row {int(np.flatnonzero(idx.isna())[0])}")
    if (idx.asi8 % 1000).any():
        raise ValueError(f"{what} has sub-microsecond timestamps, which the store does not keep")
    return idx


def _float_column(col: pd.Series, what: str) -> np.ndarray:
    try:
        values: np.ndarray = pd.to_numeric(col).to_numpy(dtype="float64", na_value=np.nan)
        return values
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not numeric: {exc}") from None


def _text_column(col: pd.Series, what: str) -> pd.Series:
    """A text column, stripped; missing values (None, NaN) become ""."""
    values = pd.Series(col.astype(object).where(col.notna(), "").to_numpy(dtype=object), dtype=object)
    if pd.api.types.infer_dtype(values, skipna=False) not in ("string", "empty"):
        bad = next(v for v in values if not isinstance(v, str))
        raise ValueError(f"{what} must hold text, found {type(bad).__name__} {bad!r}")
    return values.str.strip()


def _check_columns(df: pd.DataFrame, expected: tuple[str, ...], owner: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{owner}: expected a pandas DataFrame, got {type(df).__name__}")
    cols = [str(c) for c in df.columns]
    missing = [c for c in expected if c not in cols]
    extra = [c for c in cols if c not in expected]
    if missing or extra or len(cols) != len(expected):
        raise ValueError(
            f"{owner}: columns must be exactly {list(expected)}; missing {missing}, unexpected {extra}"
        )
    if df.empty:
        raise ValueError(f"{owner}: no rows to write")


def _first_bad(ts: pd.Series, mask: np.ndarray) -> str:
    return str(pd.Timestamp(ts.to_numpy()[np.flatnonzero(mask)[0]]).isoformat())


def _sorted_unique(out: pd.DataFrame, time_col: str, owner: str) -> pd.DataFrame:
    """Sorted by ``time_col`` (stable; skipped when already sorted), refusing duplicate times."""
    if not out[time_col].is_monotonic_increasing:
        out = out.sort_values(time_col, kind="mergesort", ignore_index=True)
    times = pd.DatetimeIndex(out[time_col]).asi8
    dup = np.flatnonzero(times[1:] == times[:-1])  # sorted: duplicates are neighbours
    if len(dup):
        raise ValueError(f"{owner}: duplicate {time_col} {out[time_col].iloc[dup[0]].isoformat()}")
    return out


def normalize_bars(df: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """Validate a bar frame and return it in canonical form (UTC ns ``ts``, float64, sorted, unique).

    Raises ValueError naming the symbol and the first offending ``ts`` for duplicates, missing or
    infinite values, non-positive prices and negative volume.
    """
    _check_columns(df, BAR_COLUMNS, symbol)
    ts = _utc_ns(df["ts"], f"{symbol}: column ts")
    out = pd.DataFrame({"ts": ts})
    for c in BAR_COLUMNS[1:]:
        out[c] = _float_column(df[c], f"{symbol}: column {c}")
    out = _sorted_unique(out, "ts", symbol)
    values = out[list(BAR_COLUMNS[1:])].to_numpy()
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{symbol}: missing or infinite {BAR_COLUMNS[1 + col]} at ts {out['ts'].iloc[row].isoformat()}"
        )
    prices = out[list(PRICE_COLUMNS)].to_numpy()
    bad_price = (prices <= 0).any(axis=1)
    if bad_price.any():
        raise ValueError(f"{symbol}: non-positive price at ts {_first_bad(out['ts'], bad_price)}")
    bad_volume = out["volume"].to_numpy() < 0
    if bad_volume.any():
        raise ValueError(f"{symbol}: negative volume at ts {_first_bad(out['ts'], bad_volume)}")
    return out


def normalize_series(df: pd.DataFrame, series_id: str) -> pd.DataFrame:
    """Validate a macro series frame (``date``, ``value``) and return it sorted, UTC ns, float64."""
    _check_columns(df, SERIES_COLUMNS, series_id)
    out = pd.DataFrame({"date": _utc_ns(df["date"], f"{series_id}: column date")})
    out["value"] = _float_column(df["value"], f"{series_id}: column value")
    out = _sorted_unique(out, "date", series_id)
    bad = ~np.isfinite(out["value"].to_numpy())
    if bad.any():
        raise ValueError(f"{series_id}: missing or infinite value at date {_first_bad(out['date'], bad)}")
    return out


def _table_column(col: pd.Series, what: str) -> pd.Series | pd.DatetimeIndex | np.ndarray:
    if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(col.dtype):
        return _utc_ns(col, what)
    if col.isna().any():
        raise ValueError(f"{what} has missing values")
    if pd.api.types.is_bool_dtype(col.dtype):
        return col.to_numpy(dtype=bool)
    if pd.api.types.is_integer_dtype(col.dtype):
        return col.to_numpy(dtype="int64")
    if pd.api.types.is_float_dtype(col.dtype):
        return _float_column(col, what)
    if all(isinstance(v, str) for v in col):
        return col.astype(str).to_numpy(dtype=object)
    raise ValueError(f"{what}: unsupported dtype {col.dtype} (use str, int, float, bool or tz-aware time)")


def normalize_table(df: pd.DataFrame, name: str, sort_by: list[str] | None = None) -> pd.DataFrame:
    """Validate a reference table (no missing values; datetimes tz-aware) and return it canonical."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name}: expected a pandas DataFrame, got {type(df).__name__}")
    if df.empty:
        raise ValueError(f"{name}: no rows to write")
    if len(set(map(str, df.columns))) != df.shape[1]:
        raise ValueError(f"{name}: duplicate column names")
    out = pd.DataFrame({str(c): _table_column(df[c], f"{name}: column {c}") for c in df.columns})
    if sort_by:
        out = out.sort_values(list(sort_by), kind="mergesort", ignore_index=True)
    return out


def _join_tickers(values: Iterable[str]) -> str:
    return ",".join(sorted({t.strip() for v in values for t in v.split(",") if t.strip()}))


def _news_keys(frame: pd.DataFrame) -> pd.Series:
    """Duplicate key of each headline: its url, or its UTC day and headline when it has no url."""
    day = pd.Series(pd.DatetimeIndex(frame["ts"]).floor("D").asi8.astype(str), dtype=object)
    by_day = "d:" + day + "\x00" + frame["headline"]
    return by_day.where(frame["url"] == "", "u:" + frame["url"])


def _first_text(values: pd.Series) -> str:
    return next((v for v in values if v), "")


def _dedupe_news(frame: pd.DataFrame) -> pd.DataFrame:
    """Merge rows with the same key: earliest ``ts``, union of tickers, first non-empty other fields."""
    keys = _news_keys(frame)
    dup = keys.duplicated(keep=False).to_numpy()
    if not dup.any():
        return frame
    groups = frame[dup].groupby(keys[dup].to_numpy(), sort=False)
    merged = pd.DataFrame(
        {
            "ts": groups["ts"].min(),
            "tickers": groups["tickers"].agg(_join_tickers),
            **{c: groups[c].agg(_first_text) for c in ("source", "headline", "summary", "url")},
        }
    )
    merged = merged.reset_index(drop=True)[list(NEWS_COLUMNS)]
    single = frame[~dup]
    return pd.concat([single, merged], ignore_index=True)


def _sort_news(frame: pd.DataFrame) -> pd.DataFrame:
    """Sorted by ts, headline, url: unique once deduplicated, so the order (and the hash) is canonical."""
    out = frame.sort_values(["ts", "headline", "url"], kind="mergesort", ignore_index=True)
    out["ts"] = out["ts"].astype("datetime64[ns, UTC]")
    return out


def normalize_news(df: pd.DataFrame, owner: str = "news") -> pd.DataFrame:
    """Validate headlines and return them canonical: UTC ``ts``, stripped text, sorted, deduplicated.

    Missing ``source``, ``tickers``, ``summary`` or ``url`` become "". Tickers are sorted and unique
    (``"NVDA, AAPL"`` -> ``"AAPL,NVDA"``). Rows with the same url, or without url and with the same UTC
    day and headline, are one headline: the earliest ``ts`` and the union of the tickers are kept.
    """
    _check_columns(df, NEWS_COLUMNS, owner)
    text = {c: _text_column(df[c], f"{owner}: column {c}") for c in NEWS_COLUMNS[1:]}
    out = pd.DataFrame({"ts": _utc_ns(df["ts"], f"{owner}: column ts"), **text})
    empty = (out["headline"] == "").to_numpy()
    if empty.any():
        raise ValueError(f"{owner}: empty headline at ts {_first_bad(out['ts'], empty)}")
    uniq = {v: _join_tickers([v]) for v in pd.unique(out["tickers"])}
    out["tickers"] = out["tickers"].map(uniq).astype(object)
    return _sort_news(_dedupe_news(out))


def normalize_fundamentals(df: pd.DataFrame, owner: str = "fundamentals") -> pd.DataFrame:
    """Validate point-in-time fundamentals and return them sorted by symbol, metric, period, known_at.

    Refuses missing or infinite values, a ``known_at`` before its ``period_end`` and the same
    (symbol, metric, period_end, known_at) twice.
    """
    _check_columns(df, FUNDAMENTAL_COLUMNS, owner)
    out = pd.DataFrame(
        {
            "symbol": _text_column(df["symbol"], f"{owner}: column symbol"),
            "metric": _text_column(df["metric"], f"{owner}: column metric"),
            "period_end": _utc_ns(df["period_end"], f"{owner}: column period_end"),
            "known_at": _utc_ns(df["known_at"], f"{owner}: column known_at"),
            "value": _float_column(df["value"], f"{owner}: column value"),
        }
    )
    for sym in pd.unique(out["symbol"]):
        _check_name(sym, f"{owner}: symbol")
    if (out["metric"] == "").any():
        raise ValueError(f"{owner}: empty metric name")
    out = out.sort_values(list(FUNDAMENTAL_COLUMNS[:4]), kind="mergesort", ignore_index=True)
    for mask, problem in (
        (~np.isfinite(out["value"].to_numpy()), "missing or infinite value"),
        ((out["known_at"] < out["period_end"]).to_numpy(), "known_at before period_end"),
        (out.duplicated(list(FUNDAMENTAL_COLUMNS[:4]), keep=False).to_numpy(), "duplicate row"),
    ):
        if mask.any():
            row = out.iloc[int(np.flatnonzero(mask)[0])]
            raise ValueError(
                f"{owner}: {problem} for {row['symbol']} {row['metric']} period_end "
                f"{row['period_end'].isoformat()} known_at {row['known_at'].isoformat()}"
            )
    return out


def _merge_news(stored: pd.DataFrame, batch: pd.DataFrame) -> pd.DataFrame:
    """Stored headlines first, so a stored row wins over a duplicate in the batch (tickers are merged)."""
    return normalize_news(pd.concat([stored, batch], ignore_index=True))


def _merge_fundamentals(stored: pd.DataFrame, batch: pd.DataFrame) -> pd.DataFrame:
    """A batch row replaces the stored row with the same (symbol, metric, period_end, known_at)."""
    both = pd.concat([stored, batch], ignore_index=True)
    return normalize_fundamentals(both.drop_duplicates(list(FUNDAMENTAL_COLUMNS[:4]), keep="last"))


def _length_prefixed(col: pd.Series) -> bytes:
    """Each value as its UTF-8 byte length (8 bytes, little-endian) followed by its bytes, concatenated."""
    if pd.api.types.infer_dtype(col, skipna=False) not in ("string", "empty"):
        return b"".join(len(b).to_bytes(8, "little") + b for b in (str(v).encode() for v in col))
    arr = pa.array(col.to_numpy(dtype=object), type=pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], dtype="<i8")[: len(arr) + 1]
    chars = np.frombuffer(arr.buffers()[2] or b"", dtype=np.uint8)[offsets[0] : offsets[-1]]
    lengths = np.diff(offsets)
    out = np.empty(8 * len(arr) + len(chars), dtype=np.uint8)
    starts = offsets[:-1] - offsets[0] + 8 * np.arange(len(arr))  # where each value's prefix begins
    out[(starts[:, None] + np.arange(8)).ravel()] = lengths.astype("<i8").view(np.uint8)
    out[np.arange(len(chars)) + 8 * np.repeat(np.arange(1, len(arr) + 1), lengths)] = chars
    return out.tobytes()


def content_hash(df: pd.DataFrame | pa.Table) -> str:
    """sha256 of a normalised frame's content: column names, dtypes and values, in row order.

    Independent of Parquet encoding and library versions, so re-importing the same data gives the
    same hash and any change of a value, a row or a column changes it. An Arrow table (a file read
    back) hashes as ``arrow_to_frame(table)`` does, without the pandas round trip when it can.
    """
    if isinstance(df, pa.Table):
        fast = _arrow_hash(df)
        if fast is not None:
            return fast
        df = arrow_to_frame(df)
    h = hashlib.sha256(_HASH_TAG)
    h.update(f"rows={len(df)}\n".encode())
    for name in df.columns:
        col = df[name]
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            tag = "ts_ns_utc"
            data = pd.DatetimeIndex(col).tz_convert("UTC").as_unit("ns").asi8.astype("<i8").tobytes()
        elif pd.api.types.is_bool_dtype(col.dtype):
            tag, data = "bool", col.to_numpy(dtype="u1").tobytes()
        elif pd.api.types.is_integer_dtype(col.dtype):
            tag, data = "i8", col.to_numpy(dtype="<i8").tobytes()
        elif pd.api.types.is_float_dtype(col.dtype):
            values = col.to_numpy(dtype="<f8") + 0.0  # -0.0 -> 0.0
            tag, data = "f8", values.tobytes()
        else:
            tag, data = "str", _length_prefixed(col)
        h.update(f"{name}:{tag}\n".encode())
        h.update(data)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# macro release lags (point-in-time)

_NEW_YORK = "America/New_York"
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class ReleaseLag:
    """When the value of a macro observation becomes known, from the end of its reference period.

    ``rule``: ``same_day`` (released on the period's last day), ``days_after`` (``n`` calendar days
    after), ``business_days_after`` (the ``n``-th US federal business day after), ``weekday_after``
    (the first ``weekday`` after, not before day ``not_before_day`` of its month) or ``none`` (not
    point-in-time). ``delays`` lists known late releases as (period date, release day); they can only
    make a value known later. A value released on day D counts as known at the end of D in New York
    (00:00 New York on D+1): safe for every release time, including 16:15 New York releases.
    """

    period: Literal["day", "week", "month", "quarter"]
    rule: Literal["same_day", "days_after", "business_days_after", "weekday_after", "none"]
    n: int = 0
    weekday: int = 0
    not_before_day: int = 1
    note: str = ""
    delays: tuple[tuple[str, str], ...] = ()

    @property
    def point_in_time(self) -> bool:
        """False for series whose values are only known long after the fact (e.g. NBER recessions)."""
        return self.rule != "none"

    def period_end(self, days: pd.DatetimeIndex) -> pd.DatetimeIndex:
        """Last day of each observation's reference period (FRED dates monthly and quarterly values
        by the period's first day, weekly claims by the week's last day)."""
        if self.period == "month":
            return days + pd.offsets.MonthEnd(0)
        if self.period == "quarter":
            return days + pd.offsets.QuarterEnd(0)
        return days

    def release_day(self, days: pd.DatetimeIndex) -> pd.DatetimeIndex:
        """Day each value was published, for period dates given as naive midnights."""
        end = self.period_end(days).values.astype("datetime64[D]")
        if self.rule == "days_after":
            out = end + np.timedelta64(self.n, "D")
        elif self.rule == "business_days_after":
            out = np.busday_offset(end, self.n, roll="backward", holidays=_us_holidays())
        elif self.rule == "weekday_after":
            weekday = (end.astype("int64") + 3) % 7  # Monday = 0; 1970-01-01 was a Thursday
            out = end + ((self.weekday - weekday - 1) % 7 + 1).astype("timedelta64[D]")
            day_of_month = (out - out.astype("datetime64[M]")).astype("int64") + 1
            out = np.where(day_of_month < self.not_before_day, out + np.timedelta64(7, "D"), out)
        else:
            out = end
        release = pd.DatetimeIndex(np.asarray(out).astype("datetime64[ns]"))
        if self.delays:
            late = {pd.Timestamp(period): pd.Timestamp(day) for period, day in self.delays}
            override = pd.DatetimeIndex(pd.Series(days).map(late))
            release = release.where(~(override > release), override)
        return release


@functools.lru_cache(maxsize=1)
def _us_holidays() -> np.ndarray:
    from pandas.tseries.holiday import USFederalHolidayCalendar

    days = USFederalHolidayCalendar().holidays("1950-01-01", "2100-12-31")
    return np.asarray(days.values.astype("datetime64[D]"))


def _same_day(note: str = "end of the same day") -> ReleaseLag:
    return ReleaseLag("day", "same_day", note=note)


_JOBS_DELAYS = (("2013-09-01", "2013-10-22"), ("2025-09-01", "2025-11-20"), ("2025-11-01", "2025-12-16"))
_CPI_DELAYS = (("2013-09-01", "2013-10-30"), ("2025-09-01", "2025-10-24"), ("2025-11-01", "2025-12-18"))
_JOBS_NOTE = (
    "first Friday of next month (SOURCES.md); taken as the first Friday on or after the 4th, as the "
    "report comes a week later in some months that start on a Friday"
)

#: Publication lag of each FRED series in the reference data (``shared/data/SOURCES.md``, column
#: "known about"), rounded to the late side so a value is never used before it was published.
#: Known late releases (US government shutdowns of 2013, 2018-19 and 2025) are listed as ``delays``.
RELEASE_LAGS: dict[str, ReleaseLag] = {
    "FEDFUNDS": ReleaseLag("month", "business_days_after", 1, note="1st business day of next month"),
    "CPIAUCSL": ReleaseLag("month", "days_after", 15, note="~10-15 days after month end", delays=_CPI_DELAYS),
    "CPILFESL": ReleaseLag("month", "days_after", 15, note="~10-15 days after month end", delays=_CPI_DELAYS),
    "PCEPILFE": ReleaseLag(
        "month",
        "days_after",
        31,
        note="~4 weeks after month end; 31 days as some releases come on the next month's last day",
        delays=(("2025-09-01", "2025-12-05"),),
    ),
    "UNRATE": ReleaseLag(
        "month", "weekday_after", weekday=4, not_before_day=4, note=_JOBS_NOTE, delays=_JOBS_DELAYS
    ),
    "PAYEMS": ReleaseLag(
        "month",
        "weekday_after",
        weekday=4,
        not_before_day=4,
        note=_JOBS_NOTE,
        delays=(*_JOBS_DELAYS, ("2025-10-01", "2025-12-16")),
    ),
    "INDPRO": ReleaseLag("month", "days_after", 18, note="~mid next month; 18 days"),
    "M2SL": ReleaseLag("month", "days_after", 30, note="~4 weeks after month end; 30 days"),
    "GDPC1": ReleaseLag(
        "quarter",
        "days_after",
        30,
        note="~30 days after quarter end (advance estimate)",
        delays=(("2018-10-01", "2019-02-28"), ("2025-07-01", "2025-12-23")),
    ),
    "DGS10": _same_day(),
    "DGS2": _same_day(),
    "T10Y2Y": _same_day(),
    "T10YIE": _same_day(),
    "VIXCLS": _same_day(),
    "DCOILWTICO": ReleaseLag(
        "day", "business_days_after", 7, note="a few business days later (weekly EIA update); 7 business days"
    ),
    "DTWEXBGS": ReleaseLag("day", "days_after", 8, note="up to one week later (weekly H.10 release); 8 days"),
    "ICSA": ReleaseLag(
        "week", "weekday_after", weekday=3, note="the following Thursday (weeks end on Saturday)"
    ),
    "USREC": ReleaseLag(
        "month", "none", note="not point-in-time: NBER dates recessions months to years later"
    ),
}


def known_at(series_id: str, dates: Any) -> pd.DatetimeIndex:
    """When each observation of a FRED series became known (UTC), from :data:`RELEASE_LAGS`.

    ``dates`` are the series' observation dates (tz-aware, or date-likes read as UTC days). Raises
    ValueError for a series without a lag and for one that is not point-in-time (USREC).
    """
    lag = RELEASE_LAGS.get(series_id)
    if lag is None:
        raise ValueError(
            f"no release lag for series {series_id!r}; known: {', '.join(sorted(RELEASE_LAGS))} "
            "(add a ReleaseLag to hflite.data.store.RELEASE_LAGS)"
        )
    if not lag.point_in_time:
        raise ValueError(f"{series_id}: {lag.note}; it cannot be used as of a date")
    days = pd.DatetimeIndex(pd.to_datetime(dates, utc=True)).tz_convert("UTC").tz_localize(None).normalize()
    release = lag.release_day(days)
    return (release + pd.Timedelta(days=1)).tz_localize(_NEW_YORK).tz_convert("UTC").as_unit("ns")


# ---------------------------------------------------------------------------------------------------
# Parquet files


def frame_to_arrow(df: pd.DataFrame) -> pa.Table:
    """A normalised frame as an Arrow table: datetimes as ``timestamp[us, UTC]``, no pandas metadata."""
    arrays: dict[str, pa.Array] = {}
    for name in df.columns:
        col = df[name]
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            micros = pd.DatetimeIndex(col).tz_convert("UTC").as_unit("ns").asi8 // 1000
            arrays[str(name)] = pa.array(micros, type=pa.timestamp("us", tz="UTC"))
        elif pd.api.types.is_float_dtype(col.dtype):
            arrays[str(name)] = pa.array(col.to_numpy(dtype="float64"), type=pa.float64())
        elif pd.api.types.is_bool_dtype(col.dtype):
            arrays[str(name)] = pa.array(col.to_numpy(dtype=bool), type=pa.bool_())
        elif pd.api.types.is_integer_dtype(col.dtype):
            arrays[str(name)] = pa.array(col.to_numpy(dtype="int64"), type=pa.int64())
        else:
            arrays[str(name)] = pa.array([str(v) for v in col], type=pa.string())
    return pa.table(arrays)


def arrow_to_frame(table: pa.Table) -> pd.DataFrame:
    """Inverse of :func:`frame_to_arrow`: times as ``datetime64[ns, UTC]``."""
    out = table.to_pandas()
    for name in out.columns:
        if isinstance(out[name].dtype, pd.DatetimeTZDtype):
            out[name] = out[name].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    return out


def write_parquet(
    table: pa.Table, where: str | Path | Any, *, compression_level: int = 3, **options: Any
) -> None:
    """Write an Arrow table as zstd Parquet: dictionary encoding for strings only, floats byte-stream
    split (prices compress ~15 % smaller and ~40 % faster than plain)."""
    strings = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    encoding = dict.fromkeys(floats, "BYTE_STREAM_SPLIT") | options.pop("column_encoding", {})
    pq.write_table(
        table,
        where,
        compression="zstd",
        compression_level=compression_level,
        use_dictionary=strings or False,
        write_statistics=True,
        column_encoding=encoding or None,
        **options,
    )


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _make_dirs(folder: Path) -> None:
    """``mkdir -p`` that also fsyncs the parent of every folder it creates (so the entry is durable)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        try:
            with contextlib.suppress(FileExistsError):
                new.mkdir()
        except OSError as exc:
            raise StoreError(f"cannot create the folder {new}: {exc.strerror or exc}") from None
        _fsync_dir(new.parent)


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    _make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _atomic_write_parquet(path: Path, table: pa.Table, owner: str, compression_level: int = 3) -> None:
    """Write to a temp file beside ``path`` (fsync), check its footer reads back with every row and the
    schema (a torn or truncated file has no valid footer), then ``os.replace`` and fsync the folder."""
    _make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write_parquet(table, fh, compression_level=compression_level)
            fh.flush()
            os.fsync(fh.fileno())
        back = pq.ParquetFile(tmp)
        if back.metadata.num_rows != table.num_rows or not back.schema_arrow.equals(table.schema):
            raise OSError(f"{owner}: wrote {table.num_rows} rows but {tmp} reads back differently")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


# ---------------------------------------------------------------------------------------------------
# query bounds


def _bound(value: Any, what: str) -> tuple[pd.Timestamp, bool] | None:
    """A start/end bound as a UTC Timestamp plus whether it was given as a whole day (a date)."""
    if value is None:
        return None
    day_only = (isinstance(value, date) and not isinstance(value, datetime)) or (
        isinstance(value, str) and bool(_DATE_ONLY_RE.fullmatch(value.strip()))
    )
    ts = pd.Timestamp(value.strip() if isinstance(value, str) else value)
    if ts is pd.NaT:
        raise ValueError(f"{what} is not a time: {value!r}")
    if ts.tzinfo is None:
        if isinstance(value, datetime):
            raise ValueError(f"{what} {value!r} is timezone-naive; pass a tz-aware time, a date or a string")
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC"), day_only


def _time_window(start: Any, end: Any) -> dict[str, datetime]:
    """Query parameters ``start`` (inclusive) and ``end`` (exclusive) for inclusive user bounds.

    Stored times have microsecond resolution, so ``t <= end`` is ``t < end + 1us``; a date given as
    ``end`` covers that whole UTC day.
    """
    lo = _bound(start, "start")
    hi = _bound(end, "end")
    params = {"start": _MIN_TIME, "end": _MAX_TIME}
    if lo is not None:
        params["start"] = lo[0].ceil("us").to_pydatetime()
    if hi is not None:
        ts, day_only = hi
        step = timedelta(days=1) if day_only else timedelta(microseconds=1)
        params["end"] = (ts.floor("us") + step).to_pydatetime()
    return params


def _instant(value: Any, what: str) -> pd.Timestamp:
    """A point in time for ``as_of``; a date means 00:00 UTC of that day (nothing later leaks in)."""
    bound = _bound(value, what)
    if bound is None:
        raise ValueError(f"{what} is required")
    return bound[0].floor("us")


def _age(older_than: Any) -> pd.DateOffset | pd.Timedelta:
    if isinstance(older_than, pd.DateOffset):
        return older_than
    if isinstance(older_than, timedelta):  # pd.Timedelta too
        if pd.Timedelta(older_than) <= pd.Timedelta(0):
            raise ValueError(f"older_than must be positive, got {older_than!r}")
        return pd.Timedelta(older_than)
    match = _AGE_RE.fullmatch(older_than.strip().lower()) if isinstance(older_than, str) else None
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(
            f"older_than: expected e.g. '3y', '18m' (months), '8w', '400d' or a Timedelta, got {older_than!r}"
        )
    n, unit = int(match.group(1)), match.group(2)
    if unit == "y":
        return pd.DateOffset(years=n)
    if unit in ("m", "mo"):
        return pd.DateOffset(months=n)
    return pd.Timedelta(weeks=n) if unit == "w" else pd.Timedelta(days=n)


def archive_cutoff(older_than: Any, now: Any = None) -> pd.Timestamp:
    """The UTC midnight on or before ``now - older_than``: rows strictly older are archived."""
    now_ts = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    if now_ts.tzinfo is None:
        raise ValueError(f"now {now!r} is timezone-naive; pass a tz-aware time")
    return (now_ts.tz_convert("UTC") - _age(older_than)).floor("D")


# ---------------------------------------------------------------------------------------------------
# the store


_duckdb: duckdb.DuckDBPyConnection | None = None
_duckdb_lock = threading.Lock()


def _cursor() -> duckdb.DuckDBPyConnection:
    """A cursor on the process-wide in-memory DuckDB (connecting costs ~40 ms; a cursor ~1 ms)."""
    global _duckdb
    with _duckdb_lock:
        if _duckdb is None:
            _duckdb = duckdb.connect()
        return _duckdb.cursor()


def _connect_ahead() -> None:
    """Open the process-wide DuckDB connection on a thread while the caller does other work (a
    first read hashes its files meanwhile: both mostly outside the GIL); ``_cursor`` waits for it."""
    if _duckdb is not None:
        return

    def connect() -> None:
        global _duckdb
        with _duckdb_lock:
            if _duckdb is None:
                _duckdb = duckdb.connect()

    threading.Thread(target=connect, name="hflite-duckdb-connect", daemon=True).start()


def _ts_or_none(value: str | None) -> pd.Timestamp | None:
    return pd.Timestamp(value).tz_convert("UTC") if value else None


def _iso(ts: pd.Timestamp | None) -> str | None:
    return None if ts is None or ts is pd.NaT else pd.Timestamp(ts).isoformat()


def _cutoff_of(record: dict[str, Any] | None) -> pd.Timestamp | None:
    return None if record is None else _ts_or_none(record.get("archive_cutoff"))


def _tickers_list(tickers: str | Iterable[str]) -> list[str]:
    values = [tickers] if isinstance(tickers, str) else list(tickers)
    return [t for t in _join_tickers(values).split(",") if t]


def _with_symbols(table: pa.Table, params: dict[str, Any]) -> pd.DataFrame:
    """The result of a many-symbol scan with its ``filename`` column turned into ``symbol``, in
    (symbol, ts) order: the scan's own order when DuckDB kept it (the usual case), else sorted."""
    files = table.column("filename").combine_chunks().dictionary_encode()
    rank = {path: i for i, path in enumerate(params["paths"])}
    file_rank = np.array([rank[p] for p in files.dictionary.to_pylist()], dtype=np.int64)
    order = file_rank[files.indices.to_numpy(zero_copy_only=False)]
    owners = pa.array(params["owners"])
    symbol = pc.take(owners, pa.array(order))
    out = table.drop_columns(["filename"])
    out = out.add_column(0, "symbol", symbol)
    ts = out.column("ts").to_numpy().astype("int64")
    same = np.diff(order) == 0
    if (np.diff(order) < 0).any() or (np.diff(ts)[same] <= 0).any():
        out = out.sort_by([("symbol", "ascending"), ("ts", "ascending")])
    return arrow_to_frame(out)


# ---------------------------------------------------------------------------------------------------
# content checks on read

#: Files this process has hashed and found as the manifest records them, by (path, size, mtime_ns,
#: inode): a file is hashed on its first read only, and again once it changes on disk.
_CHECKED: dict[tuple[str, int, int, int], str] = {}


def _file_mark(path: str) -> tuple[str, int, int, int]:
    stat = os.stat(path)  # FileNotFoundError: a writer deleted it (the reader retries)
    return path, stat.st_size, stat.st_mtime_ns, stat.st_ino


def _arrow_hash(table: pa.Table) -> str | None:
    """:func:`content_hash` of ``arrow_to_frame(table)`` straight from Arrow, for tables whose every
    column converts to pandas one way (UTC timestamps, float64, and int64 or bool without nulls);
    None for any other table (the caller then goes through pandas)."""
    names = table.column_names
    if (table.schema.metadata and b"pandas" in table.schema.metadata) or len(set(names)) != len(names):
        return None
    h = hashlib.sha256(_HASH_TAG)
    h.update(f"rows={table.num_rows}\n".encode())
    for name, col in zip(names, table.columns, strict=True):
        kind = col.type
        if pa.types.is_timestamp(kind) and kind.tz is not None and col.null_count == 0:
            tag, values = "ts_ns_utc", col.cast(pa.timestamp("ns", tz=kind.tz)).to_numpy().view("<i8")
        elif pa.types.is_float64(kind):
            tag, values = "f8", col.to_numpy() + 0.0  # nulls -> NaN as in pandas; -0.0 -> 0.0
        elif pa.types.is_int64(kind) and col.null_count == 0:
            tag, values = "i8", col.to_numpy().astype("<i8", copy=False)
        elif pa.types.is_boolean(kind) and col.null_count == 0:
            tag, values = "bool", col.to_numpy(zero_copy_only=False).astype("u1")
        else:
            return None
        h.update(f"{name}:{tag}\n".encode())
        h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def _file_hash(path: str, key: str, entry: dict[str, Any], expected: str) -> str:
    """Content hash of one partition file, as its kind is hashed on write; raises DataIntegrityError
    for a file that is not readable Parquet."""
    try:
        with pq.ParquetFile(path) as parquet:  # one file: half the cost of pq.read_table's dataset scan
            table = parquet.read(use_threads=False)
        actual = content_hash(table)
        if actual == expected:
            return actual
        frame = arrow_to_frame(table)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        reason = "not a readable Parquet file" if isinstance(exc, pa.ArrowInvalid) else f"unreadable ({exc})"
        raise DataIntegrityError(f"{key}: {path} is {reason}; {_REPAIR_HINT}", key, path) from None
    try:  # a file written by an older library may differ in dtypes only: hash it in canonical form
        canonical = content_hash(_canonical(entry, frame))
    except (TypeError, ValueError):  # e.g. a NaN or a duplicate time: not what the writer stored
        return actual
    return canonical if canonical == expected else actual


#: From this many files on, a first read hashes them on threads (Parquet decoding and sha256 release
#: the GIL: ~1.6x faster on 2 cores for the 25 daily sample files).
_HASH_THREADS_FROM = 4


def _hash_files(
    jobs: list[tuple[str, str, str, str, dict[str, Any]]],
) -> list[tuple[str | None, Exception | None]]:
    """:func:`_file_hash` of each (path, key, expected, label, entry): (hash, None) or (None, the
    error it raised), in the given order."""

    def one(job: tuple[str, str, str, str, dict[str, Any]]) -> tuple[str | None, Exception | None]:
        path, key, expected, _label, entry = job
        try:
            return _file_hash(path, key, entry, expected), None
        except (OSError, DataIntegrityError) as exc:  # FileNotFoundError: a writer deleted it
            return None, exc

    if len(jobs) < _HASH_THREADS_FROM:
        return [one(job) for job in jobs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, jobs))


def _duckdb_reason(exc: Exception, paths: list[str]) -> str:
    """The first line of a DuckDB error without the file names it quotes."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for path in paths:
        text = text.replace(f" '{path}'", "").replace(f'"{path}"', "").replace(path, "")
    return text.strip()


class Store:
    """Parquet partitions per asset class / symbol / frequency, per macro series, news year and
    fundamentals symbol, with a manifest of versions.

    Writes are atomic per partition and serialised (threads and, on POSIX, processes); reads go
    through DuckDB with the time filter pushed down into the Parquet scan and need no lock.
    ``keep_versions``: how many previous versions of each partition keep their data.
    """

    def __init__(
        self, root: str | Path, archive_root: str | Path | None = None, *, keep_versions: int = KEEP_VERSIONS
    ) -> None:
        if isinstance(keep_versions, bool) or not isinstance(keep_versions, int) or keep_versions < 0:
            raise ValueError(f"keep_versions must be an integer >= 0, got {keep_versions!r}")
        self.root: Path = Path(root).expanduser()
        self._archive_root = None if archive_root is None else Path(archive_root).expanduser().resolve()
        self.keep_versions = keep_versions
        self._lock = threading.RLock()
        self._lock_depth = 0

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    @property
    def archive_root(self) -> Path | None:
        """Folder of the archive tier: the one given to the constructor, else the one the manifest records."""
        if self._archive_root is not None:
            return self._archive_root
        recorded = self._load_manifest().get("archive_root")
        return Path(recorded) if recorded else None

    # -- manifest -----------------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def _load_manifest(self) -> dict[str, Any]:
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"format": MANIFEST_FORMAT, "partitions": {}}
        except OSError as exc:  # e.g. the root is a file, or not readable
            raise StoreError(
                f"cannot read the store manifest {self.manifest_path}: {exc.strerror or exc}"
            ) from None
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StoreError(f"store manifest {self.manifest_path} is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict):
            raise StoreError(f"store manifest {self.manifest_path} is not a JSON object")
        manifest.setdefault("partitions", {})
        return manifest

    def _save_manifest(self, manifest: dict[str, Any]) -> None:
        manifest["format"] = MANIFEST_FORMAT
        payload = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        for stale in self.root.glob(f".{MANIFEST_NAME}.*.tmp"):  # left by a killed writer
            with contextlib.suppress(OSError):
                stale.unlink()
        _atomic_write_bytes(self.manifest_path, payload)

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Exclusive across threads and processes; re-entrant within a thread."""
        with self._lock:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                lock_file = open(self.root / ".lock", "a+b")  # closed by the with below
            except OSError as exc:
                verb = "write to" if self.root.is_dir() else "create"
                raise StoreError(
                    f"cannot {verb} the data store folder {self.root}: {exc.strerror or exc}"
                ) from None
            with lock_file as fh:
                if fcntl is not None:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                self._lock_depth = 1
                try:
                    yield
                finally:
                    self._lock_depth = 0
                    if fcntl is not None:
                        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _archive_base(self, manifest: dict[str, Any]) -> Path | None:
        if self._archive_root is not None:
            return self._archive_root
        recorded = manifest.get("archive_root")
        return Path(recorded) if recorded else None

    def _record_paths(self, manifest: dict[str, Any], record: dict[str, Any]) -> list[Path]:
        """The files of one version record (a partition entry or a kept history entry), oldest first."""
        paths = [self.root / record["path"]]
        archive = record.get("archive")
        if archive:
            base = self._archive_base(manifest)
            if base is None:
                raise DataNotFoundError(
                    f"store {self.root} has archived data but no archive root; "
                    "pass Store(root, archive_root=...)"
                )
            paths.insert(0, base / archive["path"])
        return paths

    def _files_present(self, manifest: dict[str, Any], record: dict[str, Any] | None) -> bool:
        if record is None:
            return False
        try:
            return all(p.is_file() for p in self._record_paths(manifest, record))
        except DataNotFoundError:
            return False

    @staticmethod
    def _info(key: str, entry: dict[str, Any]) -> PartitionInfo:
        archive = entry.get("archive") or {}
        return PartitionInfo(
            key=key,
            kind=entry["kind"],
            symbol=entry["symbol"],
            asset_class=entry.get("asset_class"),
            freq=entry.get("freq"),
            first=_ts_or_none(entry.get("first")),
            last=_ts_or_none(entry.get("last")),
            rows=int(entry["rows"]),
            version=entry["hash"],
            written_at=datetime.fromisoformat(entry["written_at"]),
            source=entry.get("source", ""),
            path=entry["path"],
            archive_rows=int(archive.get("rows", 0)),
            archive_path=archive.get("path", ""),
            archived_before=_cutoff_of(entry),
        )

    def _record(
        self, manifest: dict[str, Any], key: str, not_found: str, version: str | None
    ) -> dict[str, Any]:
        """The manifest record of ``key`` at ``version`` (a full hash or a prefix of >= 8 hex digits)."""
        entry: dict[str, Any] | None = manifest["partitions"].get(key)
        if entry is None:
            raise DataNotFoundError(f"{not_found} in store {self.root}; {_LIST_HINT}")
        if version is None:
            return entry
        if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
            raise ValueError(
                f"version must be a content hash or a prefix of >= 8 hex digits, got {version!r}"
            )
        if entry["hash"].startswith(version):
            return entry
        for h in reversed(entry.get("history", [])):
            if h["hash"].startswith(version):
                if "path" not in h:
                    raise DataNotFoundError(
                        f"{key}: version {version} is in the history but its data was pruned (the store "
                        f"keeps the data of the last {self.keep_versions} previous versions)"
                    )
                return h
        raise DataNotFoundError(f"{key}: no version {version!r} in store {self.root}; `hflite data versions`")

    # -- writing ------------------------------------------------------------------------------------

    def _write(
        self, key: str, meta: dict[str, Any], frame: pd.DataFrame, time_col: str | None, source: str
    ) -> PartitionInfo:
        """Write one normalised frame as partition ``key`` unless the same content is already stored.

        ``meta["folder"]`` is the partition's folder. An archived bar partition is split again at
        its archive cutoff (an unchanged archive part is not rewritten).
        """
        version = content_hash(frame)
        folder = meta.pop("folder")
        with self._write_lock():
            manifest = self._load_manifest()
            old = manifest["partitions"].get(key)
            same = old is not None and old["hash"] == version and _folder(old["path"]) == folder
            if same and self._files_present(manifest, old):
                return self._info(key, old)
            files = self._write_files(manifest, key, folder, frame, time_col, version, old)
            entry = {
                **meta,
                **files,
                "first": _iso(frame[time_col].min()) if time_col and len(frame) else None,
                "last": _iso(frame[time_col].max()) if time_col and len(frame) else None,
                "rows": len(frame),
                "hash": version,
                "written_at": datetime.now(UTC).isoformat(),
                "source": source,
                "history": self._history_after(old, version),
            }
            self._commit(manifest, key, entry, old)
            return self._info(key, entry)

    def _write_files(
        self,
        manifest: dict[str, Any],
        key: str,
        folder: str,
        frame: pd.DataFrame,
        time_col: str | None,
        version: str,
        old: dict[str, Any] | None,
    ) -> dict[str, Any]:
        cutoff = _cutoff_of(old)
        if cutoff is None or time_col is None:
            path = _version_file(folder, version)
            _atomic_write_parquet(self.root / path, frame_to_arrow(frame), key)
            return {"path": path}
        cold = (frame[time_col] < cutoff).to_numpy()
        hot_part = frame[~cold].reset_index(drop=True)
        cold_part = frame[cold].reset_index(drop=True)
        archive = old.get("archive") if old else None
        files = self._write_split(manifest, key, folder, hot_part, cold_part, cutoff, archive)
        return {**files, "archive_cutoff": cutoff.isoformat()}

    def _write_split(
        self,
        manifest: dict[str, Any],
        key: str,
        folder: str,
        hot: pd.DataFrame,
        cold: pd.DataFrame,
        cutoff: pd.Timestamp,
        old_archive: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Write the hot part under ``root`` and the cold part (if any) under the archive root."""
        hot_hash = content_hash(hot)
        hot_path = _version_file(folder, hot_hash)
        _atomic_write_parquet(self.root / hot_path, frame_to_arrow(hot), key)
        files: dict[str, Any] = {"path": hot_path, "hot_hash": hot_hash}
        if len(cold):
            files["archive"] = self._write_archive_part(manifest, key, folder, cold, cutoff, old_archive)
        return files

    def _write_archive_part(
        self,
        manifest: dict[str, Any],
        key: str,
        folder: str,
        cold: pd.DataFrame,
        cutoff: pd.Timestamp,
        old_archive: dict[str, Any] | None,
    ) -> dict[str, Any]:
        base = self._archive_base(manifest)
        if base is None:
            raise ValueError(f"{key} is archived but the store has no archive root; pass archive_root=")
        cold_hash = content_hash(cold)
        path = _version_file(folder, cold_hash)
        reuse = old_archive is not None and old_archive["hash"] == cold_hash and old_archive["path"] == path
        if not (reuse and (base / path).is_file()):
            table = frame_to_arrow(cold)
            _atomic_write_parquet(base / path, table, key, compression_level=ARCHIVE_COMPRESSION_LEVEL)
        return {
            "path": path,
            "hash": cold_hash,
            "rows": len(cold),
            "first": _iso(cold["ts"].min()),
            "last": _iso(cold["ts"].max()),
            "cutoff": cutoff.isoformat(),
        }

    def _history_after(self, old: dict[str, Any] | None, version: str) -> list[dict[str, Any]]:
        """The history once ``old`` is replaced by ``version``; data kept for the last keep_versions."""
        if old is None:
            return []
        history = [dict(h) for h in old.get("history", [])]
        if old["hash"] != version:  # rewriting the same version (a repair) adds no history
            previous = {k: old.get(k) for k in ("hash", "written_at", "rows", "source")}
            if self.keep_versions:
                previous.update({k: old[k] for k in _FILE_FIELDS if k in old})
            history.append(previous)
        kept = 0
        for h in reversed(history):
            if "path" not in h:
                continue
            if kept < self.keep_versions:
                kept += 1
            else:
                for k in _FILE_FIELDS:
                    h.pop(k, None)
        return history

    def _commit(
        self, manifest: dict[str, Any], key: str, entry: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        """Replace the manifest (the commit point), then delete files no kept version refers to."""
        manifest["partitions"][key] = entry
        self._save_manifest(manifest)
        keep = set(self._version_files(manifest, entry))
        candidates = set(self._version_files(manifest, old)) if old is not None else set()
        for folder in {p.parent for p in keep | candidates}:
            candidates.update(folder.glob("data*.parquet"))
            candidates.update(folder.glob(".data*.tmp"))  # temp files of a killed writer
        for path in candidates - keep:
            with contextlib.suppress(OSError):
                path.unlink()

    def _version_files(self, manifest: dict[str, Any], entry: dict[str, Any]) -> Iterator[Path]:
        for record in (entry, *entry.get("history", [])):
            if "path" in record:
                with contextlib.suppress(DataNotFoundError):
                    yield from self._record_paths(manifest, record)

    def write_bars(
        self, symbol: str, freq: str, df: pd.DataFrame, *, asset_class: str | None = None, source: str = ""
    ) -> PartitionInfo:
        """Store ``df`` (columns ts, open, high, low, close, volume) as the bars of ``symbol`` at ``freq``.

        Replaces the current version (its data is kept for re-runs, see ``keep_versions``); a no-op if
        the content is unchanged. ``asset_class`` defaults to the instrument's (``hflite.domain``).
        """
        _check_name(symbol, "symbol")
        _check_freq(freq)
        cls = _resolve_asset_class(symbol, asset_class)
        frame = normalize_bars(df, symbol)
        meta = {
            "kind": "bars",
            "symbol": symbol,
            "asset_class": cls,
            "freq": freq,
            "folder": f"bars/asset_class={cls}/symbol={symbol}/freq={freq}",
        }
        return self._write(bars_key(symbol, freq), meta, frame, "ts", source)

    def write_series(self, series_id: str, df: pd.DataFrame, *, source: str = "") -> PartitionInfo:
        """Store a macro series (columns date, value) under ``series_id`` (e.g. ``FEDFUNDS``)."""
        _check_name(series_id, "series id")
        frame = normalize_series(df, series_id)
        meta = {
            "kind": "macro",
            "symbol": series_id,
            "asset_class": None,
            "freq": None,
            "folder": f"macro/series={series_id}",
        }
        return self._write(series_key(series_id), meta, frame, "date", source)

    def write_table(
        self, name: str, df: pd.DataFrame, *, sort_by: list[str] | None = None, source: str = ""
    ) -> PartitionInfo:
        """Store a reference table (e.g. ``corporate_actions``); rows kept in order unless ``sort_by``."""
        _check_name(name, "table name")
        frame = normalize_table(df, name, sort_by)
        time_col = next(
            (
                c
                for c in ("date", "ts")
                if c in frame.columns and isinstance(frame[c].dtype, pd.DatetimeTZDtype)
            ),
            None,
        )
        meta = {
            "kind": "table",
            "symbol": name,
            "asset_class": None,
            "freq": None,
            "folder": f"tables/name={name}",
        }
        return self._write(table_key(name), meta, frame, time_col, source)

    def _stored(self, key: str) -> pd.DataFrame | None:
        """The current content of a partition (under the write lock), or None."""
        manifest = self._load_manifest()
        entry = manifest["partitions"].get(key)
        if entry is None or not self._files_present(manifest, entry):
            return None
        paths = self._record_paths(manifest, entry)
        self._check_files(manifest, [str(p) for p in paths])  # never merge a batch into damaged data
        tables = [pq.read_table(p) for p in paths]
        return arrow_to_frame(pa.concat_tables(tables))

    def _merge_write(
        self,
        key: str,
        meta: dict[str, Any],
        batch: pd.DataFrame,
        merge: Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame],
        time_col: str,
        source: str,
        replace: bool,
    ) -> int:
        """Write ``batch`` merged into partition ``key`` (or replacing it); returns the number of rows
        that are new or changed (0: the partition was left as it was). Call under the write lock."""
        stored = self._stored(key)
        content = batch if replace or stored is None else merge(stored, batch)
        self._write(key, meta, content.reset_index(drop=True), time_col, source)
        if stored is None:
            return len(content)
        seen = content.merge(stored.drop_duplicates(), how="left", indicator=True)["_merge"]
        return int((seen == "left_only").sum())

    def write_news(self, df: pd.DataFrame, *, source: str, replace: bool = False) -> int:
        """Add headlines (columns ts, source, tickers, headline, summary, url) to the news table.

        ``source`` (keyword) records where the batch came from, as for bars; the ``source`` column is
        the outlet. Rows are merged into the stored year partitions and deduplicated (see
        :func:`normalize_news`), so writing the same batch twice changes nothing. ``replace`` replaces
        the years the batch touches instead. Returns the number of headlines added or changed.
        """
        frame = normalize_news(df)
        changed = 0
        with self._write_lock():
            for year, part in frame.groupby(pd.DatetimeIndex(frame["ts"]).year, sort=True):
                meta = {
                    "kind": "news",
                    "symbol": f"{int(year):04d}",
                    "asset_class": None,
                    "freq": None,
                    "folder": f"news/year={int(year):04d}",
                }
                changed += self._merge_write(
                    news_key(int(year)), meta, part, _merge_news, "ts", source, replace
                )
        return changed

    def write_fundamentals(self, df: pd.DataFrame, *, source: str, replace: bool = False) -> int:
        """Add fundamentals (columns symbol, metric, period_end, known_at, value), one partition per symbol.

        A row with the same (symbol, metric, period_end, known_at) as a stored one replaces it; a
        restatement is a new row with a later ``known_at``. ``replace`` replaces the symbols' partitions.
        Returns the number of rows added or changed.
        """
        frame = normalize_fundamentals(df)
        changed = 0
        with self._write_lock():
            for symbol, part in frame.groupby("symbol", sort=True):
                meta = {
                    "kind": "fundamentals",
                    "symbol": str(symbol),
                    "asset_class": None,
                    "freq": None,
                    "folder": f"fundamentals/symbol={symbol}",
                }
                key = fundamentals_key(str(symbol))
                changed += self._merge_write(
                    key, meta, part, _merge_fundamentals, "known_at", source, replace
                )
        return changed

    # -- archive ------------------------------------------------------------------------------------

    def _claim_archive_root(self, manifest: dict[str, Any]) -> Path:
        recorded = manifest.get("archive_root")
        if self._archive_root is None:
            if not recorded:
                raise ValueError(
                    f"store {self.root} has no archive root; open it as Store(root, archive_root=...)"
                )
            return Path(recorded)
        mine = str(self._archive_root.resolve())
        in_use = any(
            r.get("archive") for e in manifest["partitions"].values() for r in (e, *e.get("history", []))
        )
        if recorded and recorded != mine and in_use:
            raise ValueError(f"store {self.root} already archives to {recorded}, not {mine}")
        manifest["archive_root"] = mine
        return Path(mine)

    def archive(self, older_than: Any, now: Any = None) -> list[ArchivedPartition]:
        """Move bars older than ``now - older_than`` (e.g. ``"3y"``, ``"18m"`` months, a Timedelta) to
        the archive tier. Each bar partition is split at that UTC midnight; reads are unchanged and so is
        every version. A later call with a smaller age moves nothing back. Returns what moved.
        """
        cutoff = archive_cutoff(older_than, now)
        moved: list[ArchivedPartition] = []
        with self._write_lock():
            manifest = self._load_manifest()
            base = self._claim_archive_root(manifest)
            _make_dirs(base)  # a root it cannot create fails here, before any file is written
            for key in sorted(manifest["partitions"]):
                if manifest["partitions"][key]["kind"] == "bars":
                    done = self._archive_one(manifest, base, key, cutoff)
                    if done is not None:
                        moved.append(done)
        return moved

    def _archive_one(
        self, manifest: dict[str, Any], base: Path, key: str, cutoff: pd.Timestamp
    ) -> ArchivedPartition | None:
        entry = manifest["partitions"][key]
        previous_cutoff = _cutoff_of(entry)
        if previous_cutoff is not None and cutoff <= previous_cutoff:
            return None
        first = _ts_or_none(entry.get("first"))
        if first is None or first >= cutoff:
            return None
        paths = self._record_paths(manifest, entry)
        self._check_files(manifest, [str(p) for p in paths])
        hot = arrow_to_frame(pq.read_table(paths[-1]))
        moving = (hot["ts"] < cutoff).to_numpy()
        if not moving.any():
            return None
        old_cold = [arrow_to_frame(pq.read_table(paths[0]))] if len(paths) > 1 else []
        cold = pd.concat([*old_cold, hot[moving]], ignore_index=True)
        rest = hot[~moving].reset_index(drop=True)
        if content_hash(pd.concat([cold, rest], ignore_index=True)) != entry["hash"]:
            raise DataIntegrityError(
                f"{key}: stored files do not hash to the manifest's version; {_REPAIR_HINT}", key
            )
        files = self._write_split(
            manifest, key, _folder(entry["path"]), rest, cold, cutoff, entry.get("archive")
        )
        new = {**entry, **files, "archive_cutoff": cutoff.isoformat()}
        new["archived_at"] = datetime.now(UTC).isoformat()
        self._commit(manifest, key, new, entry)
        return ArchivedPartition(
            key, int(moving.sum()), cutoff, len(cold), len(rest), str(base / files["archive"]["path"])
        )

    # -- reading ------------------------------------------------------------------------------------

    def _query(self, sql: str, params: dict[str, Any]) -> pa.Table:
        cur = _cursor()
        try:
            cur.execute("SET TimeZone = 'UTC'")
            rel = cur.sql(sql, params={k: v for k, v in params.items() if f"${k}" in sql})
            fetch = getattr(rel, "to_arrow_table", None) or rel.arrow  # duckdb >= 1.4 / older
            table = fetch()
            if isinstance(table, pa.RecordBatchReader):
                table = table.read_all()
        finally:
            cur.close()
        return table

    def _read(
        self,
        build: Callable[[dict[str, Any]], tuple[str, dict[str, Any]]],
        what: str,
        convert: Callable[[pa.Table, dict[str, Any]], pd.DataFrame] = lambda table, _: arrow_to_frame(table),
    ) -> pd.DataFrame:
        """Run the query ``build(manifest)`` gives; retried on a fresh manifest if a file vanished
        meanwhile. A writer deletes files only after committing a manifest without them, and keeps
        the previous ``keep_versions`` versions, so a retry is needed only when that many writes
        commit during one read (with ``keep_versions=0``: one)."""
        for attempt in range(_READ_ATTEMPTS):
            last = attempt == _READ_ATTEMPTS - 1
            if attempt:
                time.sleep(min(0.001 * 2**attempt, 0.05))
            manifest = self._load_manifest()
            sql, params = build(manifest)
            missing = next((p for p in params["paths"] if not os.path.isfile(p)), None)
            if missing is None:
                _connect_ahead()
                try:
                    self._check_files(manifest, params["paths"])
                except FileNotFoundError as exc:  # deleted by a writer since the line above
                    missing = exc.filename
            if missing is not None:
                if last:
                    raise DataNotFoundError(
                        f"{what}: store {self.root} lists {missing} but the file is missing; {_LIST_HINT}"
                    )
                continue
            try:
                table = self._query(sql, params)
            except (duckdb.IOException, duckdb.InvalidInputException) as exc:
                if last or not isinstance(exc, duckdb.IOException):
                    raise self._unreadable(manifest, params["paths"], exc) from None
                continue
            return convert(table, params)
        raise AssertionError("unreachable")  # pragma: no cover

    def _file_index(self, manifest: dict[str, Any]) -> dict[str, tuple[str, str, str, dict[str, Any]]]:
        """Every file the manifest names: path -> (key, expected hash, what the hash is, entry)."""
        index: dict[str, tuple[str, str, str, dict[str, Any]]] = {}
        for key, entry in manifest["partitions"].items():
            for record in (entry, *entry.get("history", [])):
                if "path" not in record:
                    continue
                try:
                    paths = self._record_paths(manifest, record)
                except DataNotFoundError:
                    continue
                archive = record.get("archive")
                if archive:
                    parts = [(archive["hash"], "archive part hash "), (record["hot_hash"], "hot part hash ")]
                else:
                    parts = [(record["hash"], "version ")]
                for path, (expected, label) in zip(paths, parts, strict=True):
                    index.setdefault(str(path), (key, expected, label, entry))
        return index

    def _check_files(self, manifest: dict[str, Any], paths: Iterable[str]) -> None:
        """Refuse a file whose content does not hash to what the manifest records. Each file is
        hashed once per process, and again when its size, mtime or inode changes."""
        index = None
        pending: list[tuple[str, tuple[str, int, int, int]]] = []
        for path in paths:
            mark = _file_mark(path)
            if mark in _CHECKED:
                continue
            index = index if index is not None else self._file_index(manifest)
            if path in index:
                pending.append((path, mark))
        if not pending:
            return
        assert index is not None
        hashes = _hash_files([(path, *index[path]) for path, _ in pending])
        for (path, mark), (actual, error) in zip(pending, hashes, strict=True):
            key, expected, label, _entry = index[path]
            if error is not None:  # the first problem in the given order, as a one-by-one check finds it
                raise error
            assert actual is not None
            if actual != expected:
                raise DataIntegrityError(
                    f"{key}: {path} was changed after it was written: the manifest records "
                    f"{label}{expected[:12]}, the file hashes to {actual[:12]}; {_REPAIR_HINT}",
                    key,
                    path,
                )
            if len(_CHECKED) >= _CHECKED_MAX:
                _CHECKED.clear()
            _CHECKED[mark] = expected

    def _unreadable(self, manifest: dict[str, Any], paths: list[str], exc: Exception) -> DataIntegrityError:
        """A DuckDB read error as one line naming the partition and the file it failed on."""
        index = self._file_index(manifest)
        failed = [p for p in paths if p in str(exc)] or paths
        keys = sorted({index[p][0] for p in failed if p in index}) or [str(self.root)]
        where = failed[0] if len(failed) == 1 else f"{len(failed)} files"
        reason = _duckdb_reason(exc, paths)
        return DataIntegrityError(
            f"{', '.join(keys)}: {where} cannot be read ({reason}); {_REPAIR_HINT}", keys[0], failed[0]
        )

    def _window_paths(
        self, manifest: dict[str, Any], record: dict[str, Any], window: dict[str, datetime]
    ) -> list[str]:
        """The files of ``record`` that can hold rows in ``window`` (skips a tier the window misses)."""
        paths = [str(p) for p in self._record_paths(manifest, record)]
        if len(paths) == 1:
            return paths
        cutoff = pd.Timestamp(record["archive"]["cutoff"]).to_pydatetime()
        if window["end"] <= cutoff:
            return paths[:1]
        if window["start"] >= cutoff:
            return paths[1:]
        return paths

    def read_bars(
        self, symbol: str, freq: str = "1d", start: Any = None, end: Any = None, *, version: str | None = None
    ) -> pd.DataFrame:
        """Bars of ``symbol`` at ``freq`` with ``start <= ts <= end`` (a date as ``end`` covers that day).

        Bounds accept str, date, tz-aware datetime/Timestamp; strings without a zone are UTC.
        ``version`` (a content hash as recorded by a run, or a prefix of >= 8 hex digits) reads that
        kept version instead of the current one; archived rows are included transparently.
        """
        key, window = bars_key(symbol, freq), _time_window(start, end)
        what = f"no {freq} bars for {symbol!r}"

        def build(manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            record = self._record(manifest, key, what, version)
            return _BARS_SQL, {"paths": self._window_paths(manifest, record, window), **window}

        return self._read(build, what)

    def read_bars_many(
        self, symbols: Iterable[str], freq: str = "1d", start: Any = None, end: Any = None
    ) -> pd.DataFrame:
        """Current bars of several symbols in one DuckDB query: columns symbol, ts, open, high, low,
        close, volume, sorted by symbol then ts. Raises DataNotFoundError naming every missing symbol."""
        wanted = sorted(set(symbols))
        window = _time_window(start, end)
        what = f"{freq} bars for {', '.join(wanted)}"

        def build(manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            missing = [s for s in wanted if bars_key(s, freq) not in manifest["partitions"]]
            if missing or not wanted:
                raise DataNotFoundError(f"no {freq} bars for {missing} in store {self.root}; {_LIST_HINT}")
            paths: list[str] = []
            owners: list[str] = []
            for sym in wanted:
                entry = manifest["partitions"][bars_key(sym, freq)]
                found = self._window_paths(manifest, entry, window)
                paths += found
                owners += [sym] * len(found)
            return _BARS_MANY_SQL, {"paths": paths, "owners": owners, **window}

        return self._read(build, what, _with_symbols)

    def has_bars(self, symbol: str, freq: str = "1d") -> bool:
        """Whether bars of ``symbol`` at ``freq`` are stored."""
        manifest = self._load_manifest()
        return self._files_present(manifest, manifest["partitions"].get(bars_key(symbol, freq)))

    def read_series(
        self,
        series_id: str,
        start: Any = None,
        end: Any = None,
        *,
        as_of: Any = None,
        version: str | None = None,
    ) -> pd.DataFrame:
        """Observations of a macro series with ``start <= date <= end`` (columns date, value).

        ``as_of``: only observations already published then (see :func:`known_at`; a date means 00:00
        UTC of that day). ``version``: a kept version instead of the current one.
        """
        if as_of is not None:
            cut = _instant(as_of, "as_of")
            known_at(series_id, [])  # fail early for a series without a point-in-time lag
        key, window = series_key(series_id), _time_window(start, end)
        what = f"no macro series {series_id!r}"

        def build(manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            record = self._record(manifest, key, what, version)
            return _SERIES_SQL, {"paths": self._window_paths(manifest, record, window), **window}

        frame = self._read(build, what)
        if as_of is None:
            return frame
        return frame[known_at(series_id, frame["date"]) <= cut].reset_index(drop=True)

    def has_series(self, series_id: str) -> bool:
        """Whether the macro series is stored."""
        manifest = self._load_manifest()
        return self._files_present(manifest, manifest["partitions"].get(series_key(series_id)))

    def read_table(self, name: str, *, version: str | None = None) -> pd.DataFrame:
        """A stored reference table, rows in stored order."""
        key, what = table_key(name), f"no table {name!r}"

        def build(manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            record = self._record(manifest, key, what, version)
            return _TABLE_SQL, {"paths": [str(p) for p in self._record_paths(manifest, record)]}

        return self._read(build, what)

    def read_news(
        self, tickers: str | Iterable[str] | None = None, start: Any = None, end: Any = None
    ) -> pd.DataFrame:
        """Headlines with ``start <= ts <= end``, sorted by ts; with ``tickers``, only those tagged with
        any of them (market-wide headlines have tickers "" and come only without a filter)."""
        window = _time_window(start, end)
        wanted = None if tickers is None else _tickers_list(tickers)
        years = range(pd.Timestamp(window["start"]).year, pd.Timestamp(window["end"]).year + 1)

        def build(manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            entries = {k: e for k, e in manifest["partitions"].items() if e["kind"] == "news"}
            if not entries:
                raise DataNotFoundError(f"no news in store {self.root}; {_LIST_HINT}")
            chosen = [entries[k] for k in sorted(entries) if int(entries[k]["symbol"]) in years]
            paths = [
                str(p) for e in (chosen or [entries[min(entries)]]) for p in self._record_paths(manifest, e)
            ]
            params: dict[str, Any] = {"paths": paths, **window}
            if wanted is None:
                return _NEWS_SQL.format(tickers=""), params
            return _NEWS_SQL.format(tickers=_NEWS_TICKERS), {**params, "tickers": wanted}

        return self._read(build, "news")

    def read_fundamentals(self, symbol: str | None = None, as_of: Any = None) -> pd.DataFrame:
        """Fundamentals of ``symbol`` (all symbols if None); with ``as_of`` only rows whose
        ``known_at <= as_of`` (point-in-time; a date means 00:00 UTC of that day)."""
        cut = _MAX_TIME if as_of is None else _instant(as_of, "as_of").to_pydatetime()
        what = "no fundamentals" + (f" for {symbol!r}" if symbol else "")

        def build(manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            if symbol is None:
                keys = sorted(k for k, e in manifest["partitions"].items() if e["kind"] == "fundamentals")
            else:
                keys = (
                    [fundamentals_key(symbol)] if fundamentals_key(symbol) in manifest["partitions"] else []
                )
            if not keys:
                raise DataNotFoundError(f"{what} in store {self.root}; {_LIST_HINT}")
            records = [manifest["partitions"][k] for k in keys]
            paths = [str(p) for r in records for p in self._record_paths(manifest, r)]
            return _FUNDAMENTALS_SQL, {"paths": paths, "as_of": cut}

        return self._read(build, what)

    # -- catalogue ----------------------------------------------------------------------------------

    def partitions(self) -> list[PartitionInfo]:
        """Every stored partition, sorted by kind, symbol and frequency."""
        infos = [self._info(k, e) for k, e in self._load_manifest()["partitions"].items()]
        return sorted(infos, key=lambda p: (p.kind, p.symbol, p.freq or ""))

    def version(self, key: str) -> str:
        """Current content hash of a partition, e.g. ``store.version("bars/SPY/1d")``."""
        return self.versions([key])[key]

    def versions(self, keys: Iterable[str]) -> dict[str, str]:
        """Content hashes of several partitions (raises DataNotFoundError for any unknown key)."""
        parts = self._load_manifest()["partitions"]
        out: dict[str, str] = {}
        for key in keys:
            if key not in parts:
                raise DataNotFoundError(f"no partition {key!r} in store {self.root}; {_LIST_HINT}")
            out[key] = str(parts[key]["hash"])
        return out

    def history(self, key: str) -> list[dict[str, Any]]:
        """Previous versions of a partition, oldest first: hash, written_at, rows, source and ``kept``
        (whether its data is still on disk for ``read_bars(..., version=...)``)."""
        entry = self._load_manifest()["partitions"].get(key)
        if entry is None:
            raise DataNotFoundError(f"no partition {key!r} in store {self.root}; {_LIST_HINT}")
        fields = ("hash", "written_at", "rows", "source")
        return [{**{k: h.get(k) for k in fields}, "kept": "path" in h} for h in entry.get("history", [])]

    def verify(self) -> dict[str, str]:
        """Re-hash every file of every current and kept version; returns ``{key: problem}`` for missing
        or altered files (a kept version is reported as ``key@<hash12>``)."""
        manifest = self._load_manifest()
        problems: dict[str, str] = {}
        for key, entry in manifest["partitions"].items():
            problem = self._verify_record(manifest, entry, entry)
            if problem:
                problems[key] = problem
            for h in entry.get("history", []):
                if "path" in h and (problem := self._verify_record(manifest, entry, h)):
                    problems[f"{key}@{h['hash'][:12]}"] = problem
        return problems

    def _verify_record(
        self, manifest: dict[str, Any], entry: dict[str, Any], record: dict[str, Any]
    ) -> str | None:
        try:
            paths = self._record_paths(manifest, record)
        except DataNotFoundError as exc:
            return str(exc)
        archive = record.get("archive")
        expected = [archive["hash"], record["hot_hash"]] if archive else [record["hash"]]
        frames = []
        for path, want in zip(paths, expected, strict=True):
            if not path.is_file():
                return f"file missing: {path}"
            try:
                raw = arrow_to_frame(pq.read_table(path))
            except (OSError, pa.ArrowException) as exc:
                reason = "not a readable Parquet file" if isinstance(exc, pa.ArrowInvalid) else str(exc)
                return f"unreadable {path}: {reason}"
            try:
                frame = _canonical(entry, raw)
            except (TypeError, ValueError) as exc:  # e.g. a NaN or a duplicate time written into it
                return f"invalid data in {path}: {exc}"
            if content_hash(frame) != want:
                return f"content hash of {path} differs from the manifest"
            frames.append(frame)
        if archive and content_hash(pd.concat(frames, ignore_index=True)) != record["hash"]:
            return "archive + hot parts do not hash to the version"
        return None

    # -- repair -------------------------------------------------------------------------------------

    def repair(self, refetch: Callable[[PartitionInfo], pd.DataFrame] | None = None) -> list[Repair]:
        """Repair what :meth:`verify` finds: a partition whose current files are missing, unreadable or
        altered is restored from a kept version (one with the current hash keeps the version; else
        the newest intact one becomes a new version, source "repair"), else from ``refetch(info)``
        (e.g. a provider); a damaged kept version loses its data but keeps its hash in the history.
        Returns one :class:`Repair` per problem, including those it could not repair."""
        done: list[Repair] = []
        with self._write_lock():
            manifest = self._load_manifest()
            records = [r for e in manifest["partitions"].values() for r in (e, *e.get("history", []))]
            if self._archive_base(manifest) is None and any(r.get("archive") for r in records):
                raise StoreError(
                    f"store {self.root} has archived data but no archive root; set data.archive_dir"
                )
            for key in sorted(manifest["partitions"]):
                done += self._repair_one(self._load_manifest(), key, refetch)
        return done

    def _repair_one(
        self,
        manifest: dict[str, Any],
        key: str,
        refetch: Callable[[PartitionInfo], pd.DataFrame] | None,
    ) -> list[Repair]:
        entry = manifest["partitions"][key]
        old = copy.deepcopy(entry)
        done: list[Repair] = []
        for h in entry.get("history", []):
            if "path" in h and (problem := self._verify_record(manifest, entry, h)):
                for field in _FILE_FIELDS:
                    h.pop(field, None)
                action = "dropped the damaged data of this kept version; its hash stays in the history"
                done.append(Repair(f"{key}@{h['hash'][:12]}", problem, action, entry["hash"], True))
        problem = self._verify_record(manifest, entry, entry)
        if problem is None:
            if done:
                self._commit(manifest, key, entry, old)
            return done
        kept = [h for h in reversed(entry.get("history", [])) if "path" in h]  # intact, newest first
        if kept:
            copy_of = next((h for h in kept if h["hash"] == entry["hash"]), kept[0])
            version = self._restore(manifest, key, old, self._record_frame(manifest, entry, copy_of))
            action = (
                f"restored version {version[:12]} from a kept copy"
                if version == old["hash"]
                else f"restored kept version {version[:12]} as a new version (source repair)"
            )
            return [*done, Repair(key, problem, action, version, True)]
        try:
            frame = None if refetch is None else _canonical(entry, refetch(self._info(key, entry)))
        except (DataNotFoundError, ValueError) as exc:
            reason = f"no intact version retained and the re-fetch failed ({exc}); re-fetch with "
            reason += _fetch_hint(entry)
            return [*done, self._unrepaired(manifest, key, entry, old, problem, reason)]
        if frame is None or frame.empty:
            reason = "no intact version retained; re-fetch with " + _fetch_hint(entry)
            if frame is not None:
                reason = "no intact version retained and the re-fetch returned no rows"
            return [*done, self._unrepaired(manifest, key, entry, old, problem, reason)]
        version = self._restore(manifest, key, old, frame)
        action = (
            f"re-fetched version {version[:12]} (unchanged)"
            if version == old["hash"]
            else f"re-fetched as new version {version[:12]} (source repair)"
        )
        return [*done, Repair(key, problem, action, version, True)]

    def _unrepaired(
        self,
        manifest: dict[str, Any],
        key: str,
        entry: dict[str, Any],
        old: dict[str, Any],
        problem: str,
        reason: str,
    ) -> Repair:
        """Left as it was (still refused on read), bar the damaged kept versions already dropped."""
        if entry != old:
            self._commit(manifest, key, entry, old)
        return Repair(key, problem, f"cannot repair {key}: {reason}", entry["hash"], False)

    def _record_frame(
        self, manifest: dict[str, Any], entry: dict[str, Any], record: dict[str, Any]
    ) -> pd.DataFrame:
        """The whole content of one (intact) version record: archive part, then hot part."""
        frames = [
            _canonical(entry, arrow_to_frame(pq.read_table(p))) for p in self._record_paths(manifest, record)
        ]
        frames = [f for f in frames if len(f)] or frames[:1]
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def _restore(self, manifest: dict[str, Any], key: str, old: dict[str, Any], frame: pd.DataFrame) -> str:
        """Write ``frame`` as partition ``key`` in place of its damaged files (which are not kept):
        the same version when the content hashes to it, else a new version from source "repair"."""
        entry = manifest["partitions"][key]
        bare = {k: v for k, v in entry.items() if k not in _FILE_FIELDS}
        version = content_hash(frame)
        time_col = _time_column(entry["kind"], frame)
        files = self._write_files(manifest, key, _folder(entry["path"]), frame, time_col, version, bare)
        now = datetime.now(UTC).isoformat()
        if version == entry["hash"]:
            new = {**bare, **files, "repaired_at": now}
        else:
            new = {
                **bare,
                **files,
                "first": _iso(frame[time_col].min()) if time_col else None,
                "last": _iso(frame[time_col].max()) if time_col else None,
                "rows": len(frame),
                "hash": version,
                "written_at": now,
                "source": "repair",
                "history": self._history_after(bare, version),
            }
        self._commit(manifest, key, new, old)
        return version


def _time_column(kind: str, frame: pd.DataFrame) -> str | None:
    """The time column a partition of ``kind`` is split and ranged by (a table's date or ts, if any)."""
    fixed = {"bars": "ts", "macro": "date", "news": "ts", "fundamentals": "known_at"}
    if kind in fixed:
        return fixed[kind]
    return next(
        (c for c in ("date", "ts") if c in frame.columns and isinstance(frame[c].dtype, pd.DatetimeTZDtype)),
        None,
    )


def _fetch_hint(entry: dict[str, Any]) -> str:
    """The command that fetches a partition again from its provider."""
    source = entry.get("source") or ""
    provider = source if re.fullmatch(r"[a-z]+", source) and source != "repair" else "PROVIDER"
    fetch = f"hflite data fetch --provider {provider}"
    if entry["kind"] == "bars":
        return f"`{fetch} --symbols {entry['symbol']} --timeframe {entry['freq']}`"
    if entry["kind"] == "macro":
        return f"`{fetch} --series {entry['symbol']}`"
    return "`hflite data update`"


def _canonical(entry: dict[str, Any], frame: pd.DataFrame) -> pd.DataFrame:
    """A frame read back from a partition file, normalised as its kind is on write (validates it)."""
    if frame.empty:  # the hot part of a fully archived partition
        return frame
    kind, name = entry["kind"], entry["symbol"]
    if kind == "bars":
        return normalize_bars(frame, name)
    if kind == "macro":
        return normalize_series(frame, name)
    if kind == "news":
        return normalize_news(frame)
    if kind == "fundamentals":
        return normalize_fundamentals(frame)
    return normalize_table(frame, name)


# ---------------------------------------------------------------------------------------------------
# presentation


def _fmt_time(ts: pd.Timestamp | None, freq: str | None) -> str:
    if ts is None:
        return "-"
    if freq is None or freq.endswith(("d", "w")):
        return str(ts.strftime("%Y-%m-%d"))
    return str(ts.strftime("%Y-%m-%d %H:%M"))


def render_partitions_table(store: Store) -> Table:
    """A rich table of the store's partitions, for ``hflite data list`` (an ``archived`` column, rows in
    the archive tier, appears once something is archived)."""
    from rich import box
    from rich.table import Table

    parts = store.partitions()
    archived = any(p.archive_rows for p in parts)
    rows = [
        (
            p.symbol,
            (p.asset_class if p.kind == "bars" else p.kind) or "-",
            p.freq or "-",
            _fmt_time(p.first, p.freq),
            _fmt_time(p.last, p.freq),
            str(p.rows),
            *([str(p.archive_rows)] if archived else []),
            p.version[:12],
        )
        for p in parts
    ]
    names = (
        "symbol",
        "class",
        "freq",
        "first",
        "last",
        "rows",
        *(["archived"] if archived else []),
        "version",
    )
    table = Table(title=f"data store {store.root}", box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    for i, name in enumerate(names):
        # on a narrow terminal intraday times wrap (date / time); every other cell keeps its full width
        wraps = name in ("first", "last")
        width = None if wraps else max([len(name), *(len(r[i]) for r in rows)])
        justify: Literal["left", "right"] = "right" if name in ("rows", "archived") else "left"
        table.add_column(name, justify=justify, no_wrap=not wraps, min_width=width)
    for row in rows:
        table.add_row(*row)
    return table
