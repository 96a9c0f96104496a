"""Build the embedded sample data set (src/hflite/data/sample/) from the shared reference CSVs.

One-off converter kept for provenance. Run from the repository root:

    PYTHONPATH=src python scripts/build_sample.py [--src ../shared/data] [--out src/hflite/data/sample]

Each CSV is parsed (dates as UTC), validated and normalised exactly as the store does it, written as
zstd Parquet, and listed in ``manifest.json`` with the content hash the store will record for it.
The output is deterministic: no build time is recorded, so re-running on the same input changes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hflite.data.sample import decode_sample_table, encode_sample_table
from hflite.data.store import (
    BAR_COLUMNS,
    NEWS_COLUMNS,
    bars_key,
    content_hash,
    news_key,
    normalize_bars,
    normalize_news,
    normalize_series,
    normalize_table,
    series_key,
    table_key,
    write_parquet,
)
from hflite.domain.instrument import instrument_for

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "src" / "hflite" / "data" / "sample"
INTRADAY_FILES = ("BTCUSDT_1h.csv", "ETHUSDT_1h.csv")
COMPRESSION_LEVEL = 19  # written once, read often: spend the time on compression
SP500_NEWS = "news/sp500_headlines_2008_2024.csv"
GOOGLE_NEWS = "news/google_news_AAPL_META_NVDA_2022_2023.csv"
#: The news files give a day, not a time: a headline dated D is taken as known at D 21:00 UTC, the US
#: close in winter (16:00 New York = 21:00 UTC; in summer the close is 20:00 UTC, so this is an hour
#: late, never early). Conservative: a strategy never sees a headline before the session it belongs to ends.
NEWS_KNOWN_AT = pd.Timedelta(hours=21)


def _bars_csv(path: Path, time_format: str) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype={"date": str})
    if list(raw.columns) != ["date", "open", "high", "low", "close", "volume"]:
        raise SystemExit(f"{path}: unexpected columns {list(raw.columns)}")
    frame = raw.rename(columns={"date": "ts"})
    frame["ts"] = pd.to_datetime(frame["ts"], format=time_format, utc=True)
    return frame[list(BAR_COLUMNS)]


def _series_csv(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype={"date": str})
    raw["date"] = pd.to_datetime(raw["date"], format="%Y-%m-%d", utc=True)
    return raw[["date", "value"]]


def _corporate_actions_csv(path: Path) -> pd.DataFrame:
    dtypes = {"symbol": str, "date": str, "dividend": "float64", "split_ratio": "float64"}
    raw = pd.read_csv(path, dtype=dtypes)
    raw["date"] = pd.to_datetime(raw["date"], format="%Y-%m-%d", utc=True)
    return raw[["symbol", "date", "dividend", "split_ratio"]]


def _news_csv(path: Path, columns: dict[str, str], constant: dict[str, str]) -> pd.DataFrame:
    """A news CSV (``date`` = day only) as a news frame: ``ts`` = that day at 21:00 UTC."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = raw.rename(columns=columns).assign(**constant)
    frame["ts"] = pd.to_datetime(raw["date"], format="%Y-%m-%d", utc=True) + NEWS_KNOWN_AT
    return frame[list(NEWS_COLUMNS)]


def news_frame(src: Path) -> pd.DataFrame:
    """Both news files as one normalised news frame (deduplicated; a headline in both keeps its tickers).

    S&P 500 headlines are market-wide (tickers "", outlet unknown: source ""); Google News items carry
    their ticker and publisher.
    """
    sp500 = _news_csv(
        src / SP500_NEWS, {"title": "headline"}, {"source": "", "tickers": "", "summary": "", "url": ""}
    )
    google = _news_csv(
        src / GOOGLE_NEWS,
        {"title": "headline", "ticker": "tickers", "publisher": "source"},
        {"summary": "", "url": ""},
    )
    return normalize_news(pd.concat([sp500, google], ignore_index=True))


def _write(table: pa.Table, target: Path) -> None:
    """zstd at a high level; delta-encoded integers (decimals and times) compress far better than floats."""
    delta = [f.name for f in table.schema if pa.types.is_decimal(f.type) or pa.types.is_timestamp(f.type)]
    write_parquet(
        table,
        target,
        compression_level=COMPRESSION_LEVEL,
        store_decimal_as_integer=True,
        column_encoding=dict.fromkeys(delta, "DELTA_BINARY_PACKED"),
    )


def _entry(out: Path, rel: str, frame: pd.DataFrame, time_col: str, **meta: object) -> dict[str, object]:
    target = out / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    _write(encode_sample_table(frame), target)
    version = content_hash(frame)
    back = content_hash(decode_sample_table(pq.ParquetFile(target).read()))
    if back != version:
        raise SystemExit(f"{target}: does not read back to the same content ({back[:12]} != {version[:12]})")
    return {
        **meta,
        "file": rel,
        "rows": len(frame),
        "version": version,
        "first": frame[time_col].min().isoformat(),
        "last": frame[time_col].max().isoformat(),
    }


def build(src: Path, out: Path) -> list[dict[str, object]]:
    """Convert every embedded file; returns the manifest entries."""
    for old in out.glob("*/**/*.parquet"):
        old.unlink()
    entries: list[dict[str, object]] = []
    daily = sorted(p for p in (src / "market" / "daily").glob("*.csv") if p.stem != "corporate_actions")
    for path in daily:
        symbol = path.stem
        frame = normalize_bars(_bars_csv(path, "%Y-%m-%d"), symbol)
        entries.append(
            _entry(
                out,
                f"bars/1d/{symbol}.parquet",
                frame,
                "ts",
                key=bars_key(symbol, "1d"),
                kind="bars",
                symbol=symbol,
                asset_class=instrument_for(symbol).asset_class.value,
                freq="1d",
                origin=f"market/daily/{path.name}",
            )
        )
    for name in INTRADAY_FILES:
        symbol, freq = Path(name).stem.split("_")
        frame = normalize_bars(_bars_csv(src / "market" / "intraday" / name, "%Y-%m-%dT%H:%M:%SZ"), symbol)
        entries.append(
            _entry(
                out,
                f"bars/{freq}/{symbol}.parquet",
                frame,
                "ts",
                key=bars_key(symbol, freq),
                kind="bars",
                symbol=symbol,
                asset_class=instrument_for(symbol).asset_class.value,
                freq=freq,
                origin=f"market/intraday/{name}",
            )
        )
    for path in sorted((src / "macro").glob("*.csv")):
        frame = normalize_series(_series_csv(path), path.stem)
        entries.append(
            _entry(
                out,
                f"macro/{path.stem}.parquet",
                frame,
                "date",
                key=series_key(path.stem),
                kind="macro",
                symbol=path.stem,
                asset_class=None,
                freq=None,
                origin=f"macro/{path.name}",
            )
        )
    actions = normalize_table(
        _corporate_actions_csv(src / "market" / "daily" / "corporate_actions.csv"), "corporate_actions"
    )
    entries.append(
        _entry(
            out,
            "tables/corporate_actions.parquet",
            actions,
            "date",
            key=table_key("corporate_actions"),
            kind="table",
            symbol="corporate_actions",
            asset_class=None,
            freq=None,
            origin="market/daily/corporate_actions.csv",
        )
    )
    entries += _news_entries(src, out)
    entries.sort(key=lambda e: str(e["key"]))
    manifest = {
        "format": 1,
        "converted_by": "scripts/build_sample.py",
        "note": "version = hflite.data.store.content_hash of the normalised frame (what the store records)",
        "files": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return entries


def _news_entries(src: Path, out: Path) -> list[dict[str, object]]:
    """One file per UTC year, exactly the store's news partitions (so versions compare directly)."""
    news = news_frame(src)
    google_years = set(pd.to_datetime(pd.read_csv(src / GOOGLE_NEWS, usecols=["date"])["date"]).dt.year)
    entries = []
    for year, part in news.groupby(pd.DatetimeIndex(news["ts"]).year, sort=True):
        origin = SP500_NEWS + (f" + {GOOGLE_NEWS}" if year in google_years else "")
        entries.append(
            _entry(
                out,
                f"news/{year}.parquet",
                part.reset_index(drop=True),
                "ts",
                key=news_key(int(year)),
                kind="news",
                symbol=f"{int(year):04d}",
                asset_class=None,
                freq=None,
                origin=origin,
            )
        )
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="shared data folder (market/, macro/)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="sample folder inside the package")
    args = parser.parse_args(argv)
    entries = build(args.src, args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    for e in entries:
        print(f"{e['key']:<28} {e['rows']:>6} rows  {e['first'][:10]} .. {e['last'][:10]}  {e['file']}")  # type: ignore[index]
    print(f"{len(entries)} files, {total / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
