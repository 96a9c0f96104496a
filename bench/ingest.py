"""(d) The data store: ingest 1,000,000 minute bars through ``write_bars`` (validation, content hash,
atomic Parquet write, manifest), and query 30 symbols x 10 years of daily bars in one DuckDB query.

Each figure is compared with reading the same rows from CSV files with pandas (written by this script).
Synthetic random-walk bars (benchmarks only). Run with ``python bench/ingest.py [n_minute_bars]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

T_IMPORT = time.perf_counter()

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
from _common import peak_rss_mb, process_seconds, synthetic_minutes, write  # noqa: E402
from pyarrow import csv as pa_csv  # noqa: E402

from hflite.data.store import Store  # noqa: E402

MINUTE_SYMBOLS = 10  # the 1,000,000 minute bars as 10 symbols x 100,000 bars (~70 days each)
DAILY_SYMBOLS = 30
DAILY_SESSIONS = 2520  # 10 years of weekdays
QUERY_START, QUERY_END = "2015-01-01", "2024-12-31"
REPEATS = 15


def _frame(n: int, seed: int, start: str, freq: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"ts": pd.date_range(start, periods=n, freq=freq, tz="UTC"), **synthetic_minutes(n, seed)}
    )


def _to_csv(df: pd.DataFrame, path: Path) -> None:
    """CSV as a vendor would ship it (ISO times with Z); Arrow's writer is ~20x faster than pandas'."""
    pa_csv.write_csv(pa.Table.from_pandas(df, preserve_index=False), path)


def _median_s(fn: object, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _size_mb(folder: Path, pattern: str) -> float:
    return sum(p.stat().st_size for p in folder.rglob(pattern)) / 1e6


def ingest(root: Path, n: int) -> dict[str, float]:
    """Time write_bars over ``n`` minute bars; the reference reads the same rows from CSV with pandas."""
    each = n // MINUTE_SYMBOLS
    frames = {
        f"M{i:02d}": _frame(each, seed=i, start="2024-01-01", freq="1min") for i in range(MINUTE_SYMBOLS)
    }
    store = Store(root / "store")
    t0 = time.perf_counter()
    for sym, df in frames.items():
        store.write_bars(sym, "1m", df, asset_class="crypto", source="bench")
    ingest_s = time.perf_counter() - t0
    assert store.verify() == {}

    csv_dir = root / "csv_minutes"
    csv_dir.mkdir()
    for sym, df in frames.items():
        _to_csv(df, csv_dir / f"{sym}.csv")
    t0 = time.perf_counter()
    back = [pd.read_csv(csv_dir / f"{sym}.csv", parse_dates=["ts"]) for sym in frames]
    csv_s = time.perf_counter() - t0
    assert sum(len(b) for b in back) == each * MINUTE_SYMBOLS
    assert str(back[0]["ts"].dtype).endswith("UTC]")  # the same typed frame: tz-aware times
    return {
        "bars": each * MINUTE_SYMBOLS,
        "ingest_s": ingest_s,
        "bars_per_s": each * MINUTE_SYMBOLS / ingest_s,
        "csv_read_s": csv_s,
        "ratio_to_reference": ingest_s / csv_s,
        "ingest_parquet_mb": _size_mb(root / "store", "*.parquet"),
        "ingest_csv_mb": _size_mb(csv_dir, "*.csv"),
    }


def query(root: Path) -> dict[str, float]:
    """Median time of read_bars_many over 30 daily symbols x 10 years against pandas over 30 CSVs."""
    symbols = [f"S{i:02d}" for i in range(DAILY_SYMBOLS)]
    store = Store(root / "daily")
    csv_dir = root / "csv_daily"
    csv_dir.mkdir()
    for i, sym in enumerate(symbols):
        df = _frame(DAILY_SESSIONS, seed=100 + i, start="2015-01-01", freq="B")
        store.write_bars(sym, "1d", df, asset_class="equity", source="bench")
        _to_csv(df, csv_dir / f"{sym}.csv")

    def from_store() -> pd.DataFrame:
        return store.read_bars_many(symbols, "1d", QUERY_START, QUERY_END)

    def from_csv() -> pd.DataFrame:
        parts = []
        for sym in symbols:
            df = pd.read_csv(csv_dir / f"{sym}.csv", parse_dates=["ts"])
            df = df[(df["ts"] >= QUERY_START) & (df["ts"] < "2025-01-01")]
            parts.append(df.assign(symbol=sym))
        return pd.concat(parts, ignore_index=True)

    got, reference = from_store(), from_csv()  # warm-up (DuckDB connection, page cache) and a check
    assert len(got) == len(reference) == DAILY_SYMBOLS * DAILY_SESSIONS
    assert got["close"].sum() == reference.sort_values(["symbol", "ts"])["close"].sum()
    query_s = _median_s(from_store)
    csv_s = _median_s(from_csv, repeats=5)
    return {
        "query_symbols": DAILY_SYMBOLS,
        "query_rows": len(got),
        "query_ms": query_s * 1e3,
        "query_rows_per_s": len(got) / query_s,
        "query_csv_ms": csv_s * 1e3,
        "query_ratio_to_csv": query_s / csv_s,
        "query_parquet_mb": _size_mb(root / "daily", "*.parquet"),
        "query_csv_mb": _size_mb(csv_dir, "*.csv"),
    }


def main(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hflite-bench-") as tmp:
        root = Path(tmp)
        figures = {**ingest(root, n), **query(root)}
    figures["rows_per_s"] = figures["bars_per_s"]
    figures["targets"] = {"bars_per_s": ">= 1000000", "query_ms": "< 50"}  # type: ignore[assignment]
    figures["peak_rss_mb"] = peak_rss_mb()
    figures["process_s"] = process_seconds()
    return figures


if __name__ == "__main__":
    result = main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
    print(
        f"ingest: {result['bars']:,} minute bars in {result['ingest_s'] * 1e3:.0f} ms = "
        f"{result['bars_per_s']:,.0f} rows/s (pandas read_csv of the same rows: "
        f"{result['csv_read_s'] * 1e3:.0f} ms; ratio {result['ratio_to_reference']:.2f})"
    )
    print(
        f"query: {result['query_symbols']} symbols x 10 years = {result['query_rows']:,} daily bars in "
        f"{result['query_ms']:.1f} ms = {result['query_rows_per_s']:,.0f} rows/s (pandas over 30 CSVs: "
        f"{result['query_csv_ms']:.0f} ms; ratio {result['query_ratio_to_csv']:.3f})"
    )
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB")
    print(write("ingest", result))
