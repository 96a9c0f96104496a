"""Local data store: Parquet partitions queried with DuckDB, versioned by a JSON manifest.

Layout under ``root``::

    bars/asset_class=<cls>/symbol=<SYM>/freq=<f>/data.parquet
    macro/series=<ID>/data.parquet
    tables/name=<NAME>/data.parquet          (reference tables, e.g. corporate actions)
    manifest.json                            (one entry per partition: range, rows, content hash, history)

A partition's *version* is the sha256 of its canonical content (sorted rows, fixed dtypes), so the same
data always has the same version, whichever file bytes or library versions wrote it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
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
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
MANIFEST_NAME = "manifest.json"
DATA_FILE = "data.parquet"
MANIFEST_FORMAT = 1

Kind = Literal["bars", "macro", "table"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._^-]{0,63}")
_FREQ_RE = re.compile(r"[1-9][0-9]*[mhdw]")
_DATE_ONLY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HASH_TAG = b"hflite-frame-v1\n"
_MIN_TIME = datetime(1, 1, 1, tzinfo=UTC)
_MAX_TIME = datetime(9999, 12, 31, tzinfo=UTC)
# hive_partitioning off: the partition's path keys (symbol=..., freq=...) are not data columns.
_BARS_SQL = (
    "SELECT ts, open, high, low, close, volume FROM read_parquet($path, hive_partitioning = false) "
    "WHERE ts >= $start AND ts < $end ORDER BY ts"
)
_SERIES_SQL = (
    "SELECT date, value FROM read_parquet($path, hive_partitioning = false) "
    "WHERE date >= $start AND date < $end ORDER BY date"
)
_TABLE_SQL = "SELECT * FROM read_parquet($path, hive_partitioning = false)"
_LIST_HINT = "`hflite data list` shows what is stored"


class DataNotFoundError(LookupError):
    """The store holds no partition for the requested symbol/series and frequency."""


@dataclass(frozen=True)
class PartitionInfo:
    """One stored partition as recorded in the manifest. ``version`` is its content hash."""

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
    out = out.sort_values(time_col, kind="mergesort", ignore_index=True)
    dup = out[time_col].duplicated(keep=False).to_numpy()
    if dup.any():
        raise ValueError(f"{owner}: duplicate {time_col} {_first_bad(out[time_col], dup)}")
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


def content_hash(df: pd.DataFrame) -> str:
    """sha256 of a normalised frame's content: column names, dtypes and values, in row order.

    Independent of Parquet encoding and library versions, so re-importing the same data gives the
    same hash and any change of a value, a row or a column changes it.
    """
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
            tag = "str"
            data = b"".join(len(b).to_bytes(8, "little") + b for b in (str(v).encode() for v in col))
        h.update(f"{name}:{tag}\n".encode())
        h.update(data)
    return h.hexdigest()


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


def write_parquet(
    table: pa.Table, where: str | Path | Any, *, compression_level: int = 3, **options: Any
) -> None:
    """Write an Arrow table as zstd Parquet (dictionary encoding for strings only)."""
    strings = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    pq.write_table(
        table,
        where,
        compression="zstd",
        compression_level=compression_level,
        use_dictionary=strings or False,
        write_statistics=True,
        **options,
    )


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
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


def _atomic_write_parquet(path: Path, table: pa.Table, owner: str) -> None:
    """Write to a temp file beside ``path``, check it reads back with all rows, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write_parquet(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        back = pq.ParquetFile(tmp).read().num_rows
        if back != table.num_rows:
            raise OSError(f"{owner}: wrote {table.num_rows} rows but read back {back} from {tmp}")
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


def _ts_or_none(value: str | None) -> pd.Timestamp | None:
    return pd.Timestamp(value).tz_convert("UTC") if value else None


def _iso(ts: pd.Timestamp | None) -> str | None:
    return None if ts is None else ts.isoformat()


class Store:
    """Parquet partitions per asset class / symbol / frequency and per macro series, with a manifest.

    Writes are atomic per partition and serialised (threads and, on POSIX, processes); reads go
    through DuckDB with the time filter pushed down into the Parquet scan.
    """

    def __init__(self, root: str | Path) -> None:
        self.root: Path = Path(root).expanduser()
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- manifest -----------------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def _load_manifest(self) -> dict[str, Any]:
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"format": MANIFEST_FORMAT, "partitions": {}}
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"store manifest {self.manifest_path} is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict):
            raise ValueError(f"store manifest {self.manifest_path} is not a JSON object")
        manifest.setdefault("partitions", {})
        return manifest

    def _save_manifest(self, manifest: dict[str, Any]) -> None:
        manifest["format"] = MANIFEST_FORMAT
        payload = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        _atomic_write_bytes(self.manifest_path, payload)

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            if fcntl is None:  # pragma: no cover - Windows
                yield
                return
            with open(self.root / ".lock", "a+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _info(key: str, entry: dict[str, Any]) -> PartitionInfo:
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
        )

    def _entry(self, key: str, not_found: str) -> dict[str, Any]:
        entry: dict[str, Any] | None = self._load_manifest()["partitions"].get(key)
        if entry is None:
            raise DataNotFoundError(f"{not_found} in store {self.root}; {_LIST_HINT}")
        if not (self.root / entry["path"]).is_file():
            raise DataNotFoundError(
                f"{not_found}: store {self.root} lists {entry['path']} but the file is missing; {_LIST_HINT}"
            )
        return entry

    # -- writing ------------------------------------------------------------------------------------

    def _write(
        self, key: str, meta: dict[str, Any], frame: pd.DataFrame, time_col: str | None, source: str
    ) -> PartitionInfo:
        """Write one normalised frame as partition ``key`` unless the same content is already stored."""
        version = content_hash(frame)
        with self._write_lock():
            manifest = self._load_manifest()
            old = manifest["partitions"].get(key)
            unchanged = old is not None and old["hash"] == version and old["path"] == meta["path"]
            if unchanged and (self.root / old["path"]).is_file():
                return self._info(key, old)
            _atomic_write_parquet(self.root / meta["path"], frame_to_arrow(frame), key)
            if old is not None and old["path"] != meta["path"]:
                with contextlib.suppress(OSError):
                    (self.root / old["path"]).unlink()
            history = list(old.get("history", [])) if old else []
            if old is not None:
                history.append({k: old.get(k) for k in ("hash", "written_at", "rows", "source")})
            first = _iso(frame[time_col].min()) if time_col else None
            last = _iso(frame[time_col].max()) if time_col else None
            entry = {
                **meta,
                "first": first,
                "last": last,
                "rows": len(frame),
                "hash": version,
                "written_at": datetime.now(UTC).isoformat(),
                "source": source,
                "history": history,
            }
            manifest["partitions"][key] = entry
            self._save_manifest(manifest)
            return self._info(key, entry)

    def write_bars(
        self, symbol: str, freq: str, df: pd.DataFrame, *, asset_class: str | None = None, source: str = ""
    ) -> PartitionInfo:
        """Store ``df`` (columns ts, open, high, low, close, volume) as the bars of ``symbol`` at ``freq``.

        Replaces the previous version (kept in the manifest's history); a no-op if the content is
        unchanged. ``asset_class`` defaults to the instrument's (see ``hflite.domain.instrument``).
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
            "path": f"bars/asset_class={cls}/symbol={symbol}/freq={freq}/{DATA_FILE}",
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
            "path": f"macro/series={series_id}/{DATA_FILE}",
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
            "path": f"tables/name={name}/{DATA_FILE}",
        }
        return self._write(table_key(name), meta, frame, time_col, source)

    # -- reading ------------------------------------------------------------------------------------

    def _query(self, sql: str, params: dict[str, Any]) -> pd.DataFrame:
        cur = _cursor()
        try:
            cur.execute("SET TimeZone = 'UTC'")
            rel = cur.sql(sql, params=params)
            fetch = getattr(rel, "to_arrow_table", None) or rel.arrow  # duckdb >= 1.4 / older
            table = fetch()
            if isinstance(table, pa.RecordBatchReader):
                table = table.read_all()
        finally:
            cur.close()
        out = table.to_pandas()
        for name in out.columns:
            if isinstance(out[name].dtype, pd.DatetimeTZDtype):
                out[name] = out[name].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
        return out

    def read_bars(self, symbol: str, freq: str = "1d", start: Any = None, end: Any = None) -> pd.DataFrame:
        """Bars of ``symbol`` at ``freq`` with ``start <= ts <= end`` (a date as ``end`` covers that day).

        Bounds accept str, date, tz-aware datetime/Timestamp; strings without a zone are UTC.
        """
        entry = self._entry(bars_key(symbol, freq), f"no {freq} bars for {symbol!r}")
        params = {"path": str(self.root / entry["path"]), **_time_window(start, end)}
        return self._query(_BARS_SQL, params)

    def has_bars(self, symbol: str, freq: str = "1d") -> bool:
        """Whether bars of ``symbol`` at ``freq`` are stored."""
        entry = self._load_manifest()["partitions"].get(bars_key(symbol, freq))
        return entry is not None and (self.root / entry["path"]).is_file()

    def read_series(self, series_id: str, start: Any = None, end: Any = None) -> pd.DataFrame:
        """Observations of a macro series with ``start <= date <= end`` (columns date, value)."""
        entry = self._entry(series_key(series_id), f"no macro series {series_id!r}")
        params = {"path": str(self.root / entry["path"]), **_time_window(start, end)}
        return self._query(_SERIES_SQL, params)

    def has_series(self, series_id: str) -> bool:
        """Whether the macro series is stored."""
        entry = self._load_manifest()["partitions"].get(series_key(series_id))
        return entry is not None and (self.root / entry["path"]).is_file()

    def read_table(self, name: str) -> pd.DataFrame:
        """A stored reference table, rows in stored order."""
        entry = self._entry(table_key(name), f"no table {name!r}")
        return self._query(_TABLE_SQL, {"path": str(self.root / entry["path"])})

    # -- catalogue ----------------------------------------------------------------------------------

    def partitions(self) -> list[PartitionInfo]:
        """Every stored partition, sorted by kind, symbol and frequency."""
        infos = [self._info(k, e) for k, e in self._load_manifest()["partitions"].items()]
        return sorted(infos, key=lambda p: (p.kind, p.symbol, p.freq or ""))

    def version(self, key: str) -> str:
        """Current content hash of a partition, e.g. ``store.version("bars/SPY/1d")``."""
        entry = self._load_manifest()["partitions"].get(key)
        if entry is None:
            raise DataNotFoundError(f"no partition {key!r} in store {self.root}; {_LIST_HINT}")
        return str(entry["hash"])

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
        """Previous versions of a partition, oldest first: dicts with hash, written_at, rows, source."""
        entry = self._load_manifest()["partitions"].get(key)
        if entry is None:
            raise DataNotFoundError(f"no partition {key!r} in store {self.root}; {_LIST_HINT}")
        return [dict(h) for h in entry.get("history", [])]

    def verify(self) -> dict[str, str]:
        """Re-hash every partition file; returns ``{key: problem}`` for missing or altered files."""
        problems: dict[str, str] = {}
        normalizers = {
            "bars": lambda df, e: normalize_bars(df, e["symbol"]),
            "macro": lambda df, e: normalize_series(df, e["symbol"]),
            "table": lambda df, e: normalize_table(df, e["symbol"]),
        }
        for key, entry in self._load_manifest()["partitions"].items():
            path = self.root / entry["path"]
            if not path.is_file():
                problems[key] = f"file missing: {entry['path']}"
                continue
            try:
                frame = normalizers[entry["kind"]](pq.ParquetFile(path).read().to_pandas(), entry)
            except (OSError, ValueError, pa.ArrowException) as exc:
                problems[key] = f"unreadable: {exc}"
                continue
            if content_hash(frame) != entry["hash"]:
                problems[key] = "content hash differs from the manifest"
        return problems


# ---------------------------------------------------------------------------------------------------
# presentation


def _fmt_time(ts: pd.Timestamp | None, freq: str | None) -> str:
    if ts is None:
        return "-"
    if freq is None or freq.endswith(("d", "w")):
        return str(ts.strftime("%Y-%m-%d"))
    return str(ts.strftime("%Y-%m-%d %H:%M"))


def render_partitions_table(store: Store) -> Table:
    """A rich table of the store's partitions, for ``hflite data list``."""
    from rich import box
    from rich.table import Table

    rows = [
        (
            p.symbol,
            (p.asset_class if p.kind == "bars" else p.kind) or "-",
            p.freq or "-",
            _fmt_time(p.first, p.freq),
            _fmt_time(p.last, p.freq),
            str(p.rows),
            p.version[:12],
        )
        for p in store.partitions()
    ]
    table = Table(title=f"data store {store.root}", box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    for i, name in enumerate(("symbol", "class", "freq", "first", "last", "rows", "version")):
        # on a narrow terminal intraday times wrap (date / time); every other cell keeps its full width
        wraps = name in ("first", "last")
        width = None if wraps else max([len(name), *(len(r[i]) for r in rows)])
        justify: Literal["left", "right"] = "right" if name == "rows" else "left"
        table.add_column(name, justify=justify, no_wrap=not wraps, min_width=width)
    for row in rows:
        table.add_row(*row)
    return table
