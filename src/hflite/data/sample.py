"""The embedded sample data set: real daily bars, hourly Binance bars, FRED series, corporate actions
and dated news headlines (S&P 500 market news 2008-2024, Google News items for AAPL/META/NVDA 2022-2023).

Files live in ``sample/`` beside this module (see ``sample/SOURCES.md``); ``sample/manifest.json``
lists each file with the content hash the store will record for it, so :func:`ensure_sample` can
tell from the two manifests alone whether anything needs importing.

To stay small, the sample files keep each price/value column as an exact Parquet DECIMAL (the CSV's
decimal digits as a scaled integer) instead of float64; :func:`decode_sample_table` turns them back
into the very same float64 values (``n / 10**scale`` is correctly rounded, like parsing the CSV).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hflite.data.store import PartitionInfo, Store, frame_to_arrow

#: Folder of the embedded sample files.
SAMPLE_DIR: Path = Path(__file__).resolve().parent / "sample"
#: Prefix of the ``source`` the store records for partitions imported from the sample.
SAMPLE_SOURCE_PREFIX = "sample:"
_MAX_SCALE = 10  # decimal places tried when encoding a float column
_DECIMAL_LIMIT = 10**17  # keep |unscaled| well inside DECIMAL(18, s) and int64

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleFile:
    """One embedded file as listed in ``sample/manifest.json``."""

    key: str
    kind: str
    symbol: str
    asset_class: str | None
    freq: str | None
    file: str
    rows: int
    first: str
    last: str
    version: str
    origin: str

    @property
    def path(self) -> Path:
        return SAMPLE_DIR / self.file


# ---------------------------------------------------------------------------------------------------
# the decimal codec of the sample files


def _decimal_scale(values: np.ndarray) -> int | None:
    """Fewest decimal places that represent every value exactly, or None."""
    if not np.isfinite(values).all():
        return None
    for scale in range(_MAX_SCALE + 1):
        unscaled = np.round(values * 10.0**scale)
        if np.abs(unscaled).max(initial=0) >= _DECIMAL_LIMIT:
            return None
        if np.array_equal(unscaled / 10.0**scale, values):
            return scale
    return None


def encode_sample_table(frame: pd.DataFrame) -> pa.Table:
    """A normalised frame as Arrow, float columns as exact DECIMAL(18, s) where that round-trips."""
    table = frame_to_arrow(frame)
    for i, field in enumerate(table.schema):
        if not pa.types.is_float64(field.type):
            continue
        values = table.column(i).to_numpy()
        scale = _decimal_scale(values)
        if scale is None:
            continue
        unscaled = np.round(values * 10.0**scale).astype("<i8")
        words = np.stack([unscaled, unscaled >> 63], axis=1).astype("<i8")  # 128-bit two's complement
        buffers = [None, pa.py_buffer(words.tobytes())]
        decimal = pa.Array.from_buffers(pa.decimal128(18, scale), len(unscaled), buffers)
        table = table.set_column(i, field.name, decimal)
    return table


def decode_sample_table(table: pa.Table) -> pd.DataFrame:
    """Inverse of :func:`encode_sample_table`: DECIMAL columns back to the exact float64 values."""
    for i, field in enumerate(table.schema):
        if not pa.types.is_decimal128(field.type):
            continue
        arr = table.column(i).combine_chunks()
        if arr.null_count:
            raise ValueError(f"sample column {field.name} has missing values")
        words = np.frombuffer(arr.buffers()[1], dtype="<i8")[2 * arr.offset : 2 * (arr.offset + len(arr))]
        values = words[0::2] / 10.0**field.type.scale  # the low word; values fit in int64
        table = table.set_column(i, field.name, pa.array(values, type=pa.float64()))
    frame = table.to_pandas()
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.DatetimeTZDtype):
            frame[name] = frame[name].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    return frame


# ---------------------------------------------------------------------------------------------------
# catalogue and import


@lru_cache(maxsize=1)
def sample_catalog() -> tuple[SampleFile, ...]:
    """Every embedded file, in manifest order (sorted by key)."""
    raw = json.loads((SAMPLE_DIR / "manifest.json").read_text(encoding="utf-8"))
    return tuple(SampleFile(**entry) for entry in raw["files"])


def sample_symbols(freq: str = "1d") -> list[str]:
    """Symbols with embedded bars at ``freq`` (``"1d"``: 25 symbols; ``"1h"``: BTCUSDT, ETHUSDT)."""
    return sorted(f.symbol for f in sample_catalog() if f.kind == "bars" and f.freq == freq)


def sample_series() -> list[str]:
    """Embedded FRED series ids."""
    return sorted(f.symbol for f in sample_catalog() if f.kind == "macro")


def read_sample_file(f: SampleFile) -> pd.DataFrame:
    """The frame of one embedded file, decoded (float64 prices, UTC times)."""
    return decode_sample_table(pq.ParquetFile(f.path).read())


def _import_one(store: Store, f: SampleFile) -> PartitionInfo:
    frame = read_sample_file(f)
    source = f"{SAMPLE_SOURCE_PREFIX}{f.origin}"
    if f.kind == "bars":
        info = store.write_bars(f.symbol, f.freq or "1d", frame, asset_class=f.asset_class, source=source)
    elif f.kind == "macro":
        info = store.write_series(f.symbol, frame, source=source)
    elif f.kind == "news":  # one file = one year partition; replace, so the result is exactly the file
        store.write_news(frame, source=source, replace=True)
        info = next(p for p in store.partitions() if p.key == f.key)
    else:
        info = store.write_table(f.symbol, frame, source=source)
    if info.version != f.version:
        raise RuntimeError(
            f"embedded sample file {f.file} hashes to {info.version[:12]}, its manifest says "
            f"{f.version[:12]}; rebuild the sample with scripts/build_sample.py"
        )
    return info


def ensure_sample(store: Store, *, replace_other_sources: bool = False) -> list[PartitionInfo]:
    """Import every embedded file the store does not already hold at the same content hash.

    Idempotent and cheap once imported (compares the two manifests; no Parquet is read). A partition
    holding data from another source (not the sample) is left alone unless ``replace_other_sources``,
    so importing the sample never overwrites fetched data. Returns the partitions written.
    """
    current = {p.key: p for p in store.partitions()}
    imported: list[PartitionInfo] = []
    for f in sample_catalog():
        have = current.get(f.key)
        if have is not None:
            if have.version == f.version and (store.root / have.path).is_file():
                continue
            if not have.source.startswith(SAMPLE_SOURCE_PREFIX) and not replace_other_sources:
                _log.warning("sample: keeping %s from %r instead of the embedded sample", f.key, have.source)
                continue
        imported.append(_import_one(store, f))
    return imported
