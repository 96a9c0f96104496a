"""The embedded sample data set: complete, exact, and imported once into a store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

import hflite.data.sample as sample_module
from hflite.data.sample import (
    SAMPLE_DIR,
    SAMPLE_SOURCE_PREFIX,
    ensure_sample,
    read_sample_file,
    sample_catalog,
    sample_series,
    sample_symbols,
)
from hflite.data.store import Store, content_hash, normalize_bars, normalize_news, normalize_series
from hflite.domain.instrument import SAMPLE_INSTRUMENTS, instrument_for

#: Rows and range of every daily file, from shared/data/SOURCES.md.
DAILY = {
    "SPY": (6598, "2000-01-03", "2026-03-27"),
    "QQQ": (6598, "2000-01-03", "2026-03-27"),
    "TLT": (5954, "2002-07-30", "2026-03-27"),
    "GLD": (5372, "2004-11-18", "2026-03-27"),
    "IWM": (6497, "2000-05-26", "2026-03-27"),
    "EFA": (6182, "2001-08-27", "2026-03-27"),
    "VNQ": (5408, "2004-09-29", "2026-03-27"),
    "XLE": (6598, "2000-01-03", "2026-03-27"),
    "AAPL": (6273, "2000-01-03", "2024-12-06"),
    "MSFT": (6273, "2000-01-03", "2024-12-06"),
    "NVDA": (6273, "2000-01-03", "2024-12-06"),
    "AMZN": (6273, "2000-01-03", "2024-12-06"),
    "GOOGL": (5111, "2004-08-19", "2024-12-06"),
    "JPM": (6273, "2000-01-03", "2024-12-06"),
    "BAC": (6273, "2000-01-03", "2024-12-06"),
    "XOM": (6273, "2000-01-03", "2024-12-06"),
    "CVX": (6273, "2000-01-03", "2024-12-06"),
    "JNJ": (6273, "2000-01-03", "2024-12-06"),
    "PFE": (6273, "2000-01-03", "2024-12-06"),
    "WMT": (6273, "2000-01-03", "2024-12-06"),
    "KO": (6273, "2000-01-03", "2024-12-06"),
    "BTC-USD": (3734, "2014-09-17", "2024-12-06"),
    "ETH-USD": (2585, "2017-11-09", "2024-12-06"),
    "EURUSD": (5451, "2003-12-01", "2024-12-06"),
    "USDJPY": (6473, "2000-01-03", "2024-12-06"),
}
MACRO_ROWS = {
    "FEDFUNDS": 551,
    "CPIAUCSL": 550,
    "CPILFESL": 550,
    "PCEPILFE": 549,
    "UNRATE": 550,
    "PAYEMS": 551,
    "INDPRO": 551,
    "M2SL": 551,
    "GDPC1": 183,
    "DGS10": 11499,
    "DGS2": 11499,
    "T10Y2Y": 11500,
    "T10YIE": 5753,
    "DCOILWTICO": 10067,
    "DTWEXBGS": 5010,
    "VIXCLS": 9091,
    "ICSA": 2400,
    "USREC": 552,
}
#: The reference CSVs the sample was built from (shared/ beside the repository), when present.
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HFLITE_SHARED_DATA") or REPO.parent / "shared" / "data")


def _day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Store, list]:
    store = Store(tmp_path_factory.mktemp("sample") / "data")
    return store, ensure_sample(store)


@pytest.fixture(scope="module")
def store(imported) -> Store:
    return imported[0]


# --- what is embedded ---------------------------------------------------------------------------------


def test_the_sample_embeds_all_daily_hourly_macro_corporate_action_and_news_files():
    keys = {f.key for f in sample_catalog()}

    assert sample_symbols("1d") == sorted(DAILY)
    assert sample_symbols("1h") == ["BTCUSDT", "ETHUSDT"]
    assert sample_symbols("1m") == []
    assert sample_series() == sorted(MACRO_ROWS)
    assert "table/corporate_actions" in keys
    assert {k for k in keys if k.startswith("news/")} == {f"news/{y}" for y in range(2008, 2025)}
    assert len(keys) == 25 + 2 + 18 + 1 + 17
    assert set(sample_symbols("1d")) | set(sample_symbols("1h")) == set(SAMPLE_INSTRUMENTS)


def test_every_embedded_file_exists_and_the_set_is_small():
    files = [p for p in SAMPLE_DIR.rglob("*") if p.is_file()]
    parquet = {p.relative_to(SAMPLE_DIR).as_posix() for p in files if p.suffix == ".parquet"}

    assert parquet == {f.file for f in sample_catalog()}
    assert (SAMPLE_DIR / "SOURCES.md").is_file()
    assert sum(p.stat().st_size for p in files) < 5_000_000


def test_sources_md_describes_every_embedded_file_and_the_conversion():
    text = (SAMPLE_DIR / "SOURCES.md").read_text(encoding="utf-8")

    for name in [*DAILY, *MACRO_ROWS, "BTCUSDT", "ETHUSDT", "corporate_actions", "scripts/build_sample.py"]:
        assert name in text, name
    for name in ["news/sp500_headlines_2008_2024.csv", "news/google_news_AAPL_META_NVDA_2022_2023.csv"]:
        assert name in text, name
    assert "21:00 UTC" in text  # the time rule of day-only headlines


def test_asset_classes_in_the_catalogue_match_the_instruments():
    for f in sample_catalog():
        if f.kind == "bars":
            assert f.asset_class == instrument_for(f.symbol).asset_class.value, f.key


# --- imported into a store ----------------------------------------------------------------------------


def test_ensure_sample_imports_every_file_into_an_empty_store(imported):
    store, infos = imported

    assert sorted(i.key for i in infos) == sorted(f.key for f in sample_catalog())
    assert all(i.source.startswith(SAMPLE_SOURCE_PREFIX) for i in infos)
    assert store.versions(f.key for f in sample_catalog()) == {f.key: f.version for f in sample_catalog()}


def test_spy_daily_bars(store):
    spy = store.read_bars("SPY", "1d")

    assert len(spy) == 6598
    assert spy["ts"].iloc[0] == _day("2000-01-03")
    assert spy["ts"].iloc[-1] == _day("2026-03-27")
    first = spy.iloc[0]
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == (
        93.134391,
        93.134391,
        90.385906,
        91.367508,
        8164300.0,
    )
    assert str(spy["ts"].dtype) == "datetime64[ns, UTC]"
    assert spy["ts"].is_monotonic_increasing
    assert spy["ts"].is_unique


@pytest.mark.parametrize("symbol", sorted(DAILY))
def test_daily_rows_and_range_match_sources_md(store, symbol):
    rows, first, last = DAILY[symbol]
    info = next(p for p in store.partitions() if p.key == f"bars/{symbol}/1d")

    assert (info.rows, info.first, info.last) == (rows, _day(first), _day(last))
    assert info.asset_class == instrument_for(symbol).asset_class.value


def test_crypto_and_fx_daily_counts(store):
    assert len(store.read_bars("BTC-USD")) == 3734
    eurusd = store.read_bars("EURUSD")
    assert len(eurusd) == 5451
    assert (eurusd["volume"] == 0).all()
    assert _day("2008-12-08") not in set(eurusd["ts"])  # the bogus print removed at the source


def test_binance_hourly_bars(store):
    btc = store.read_bars("BTCUSDT", "1h")
    eth = store.read_bars("ETHUSDT", "1h")

    assert len(btc) == 23988
    assert len(eth) == 23989
    assert btc["ts"].iloc[0] == pd.Timestamp("2021-04-04 20:00", tz="UTC")
    assert btc["ts"].iloc[-1] == pd.Timestamp("2023-12-30 19:00", tz="UTC")
    assert btc.iloc[0][["open", "close", "volume"]].tolist() == [57953.86, 58025.11, 1240.209016]
    assert eth["ts"].iloc[-1] == pd.Timestamp("2023-12-30 20:00", tz="UTC")
    gaps = btc["ts"].diff().dropna()
    assert (gaps > pd.Timedelta(hours=1)).sum() == 5  # the 5 outage blocks noted in SOURCES.md


def test_macro_series(store):
    fed = store.read_series("FEDFUNDS")

    assert len(fed) == 551
    assert fed["date"].iloc[0] == _day("1980-01-01")
    assert fed["value"].iloc[0] == 13.82
    oil = store.read_series("DCOILWTICO", "2020-04-20", "2020-04-20")
    assert oil["value"].tolist() == [-36.98]
    rows = {p.symbol: p.rows for p in store.partitions() if p.kind == "macro"}
    assert rows == MACRO_ROWS


def test_corporate_actions(store):
    actions = store.read_table("corporate_actions")

    assert len(actions) == 1008
    splits = actions[actions["split_ratio"] > 0]
    assert len(splits) == 22
    aapl = splits[splits["symbol"] == "AAPL"].set_index("date")["split_ratio"]
    assert aapl[_day("2014-06-09")] == 7.0
    assert aapl[_day("2020-08-31")] == 4.0
    assert actions["date"].min() == _day("2000-01-04")
    assert actions["date"].max() == _day("2024-12-06")


def test_the_imported_store_verifies_clean(store):
    assert store.verify() == {}


# --- idempotence and ownership ------------------------------------------------------------------------


def _copy(store: Store, tmp_path: Path) -> Store:
    """A private copy of the imported store (manifest paths are relative to the root)."""
    return Store(shutil.copytree(store.root, tmp_path / "copy"))


def test_a_second_ensure_sample_imports_nothing_and_reads_no_parquet(store, monkeypatch):
    def must_not_read(f):
        raise AssertionError(f"re-read {f.file}")

    monkeypatch.setattr(sample_module, "read_sample_file", must_not_read)

    assert ensure_sample(store) == []


def test_ensure_sample_restores_a_missing_file(store, tmp_path):
    store = _copy(store, tmp_path)
    gld = next(p for p in store.partitions() if p.key == "bars/GLD/1d")
    (store.root / gld.path).unlink()

    again = ensure_sample(store)

    assert [i.key for i in again] == ["bars/GLD/1d"]
    assert len(store.read_bars("GLD")) == 5372


def test_ensure_sample_keeps_data_from_another_source_unless_told(store, tmp_path):
    store = _copy(store, tmp_path)
    spy = read_sample_file(next(f for f in sample_catalog() if f.key == "bars/SPY/1d"))
    fetched = store.write_bars("SPY", "1d", spy.iloc[-100:], source="alpaca")

    kept = ensure_sample(store)
    assert "bars/SPY/1d" not in {i.key for i in kept}
    assert store.version("bars/SPY/1d") == fetched.version

    replaced = ensure_sample(store, replace_other_sources=True)
    assert [i.key for i in replaced] == ["bars/SPY/1d"]
    assert len(store.read_bars("SPY")) == 6598
    assert store.history("bars/SPY/1d")[-1]["source"] == "alpaca"


# --- provenance ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared/data reference CSVs not beside the repository")
def test_every_embedded_file_equals_its_source_csv():
    for f in sample_catalog():
        if f.kind == "news":
            continue  # built from two CSVs: see the next test
        raw = pd.read_csv(SHARED_DATA / f.origin, dtype={"date": str})
        if f.kind == "bars":
            fmt = "%Y-%m-%d" if f.freq == "1d" else "%Y-%m-%dT%H:%M:%SZ"
            raw["date"] = pd.to_datetime(raw["date"], format=fmt, utc=True)
            frame = normalize_bars(raw.rename(columns={"date": "ts"}), f.symbol)
        elif f.kind == "macro":
            raw["date"] = pd.to_datetime(raw["date"], format="%Y-%m-%d", utc=True)
            frame = normalize_series(raw, f.symbol)
        else:
            raw["date"] = pd.to_datetime(raw["date"], format="%Y-%m-%d", utc=True)
            frame = raw
        assert content_hash(frame) == content_hash(read_sample_file(f)) == f.version, f.origin


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared/data reference CSVs not beside the repository")
def test_the_embedded_news_equal_the_two_source_csvs_stamped_at_the_close():
    sp500 = pd.read_csv(SHARED_DATA / "news/sp500_headlines_2008_2024.csv", dtype=str, keep_default_na=False)
    google = pd.read_csv(
        SHARED_DATA / "news/google_news_AAPL_META_NVDA_2022_2023.csv", dtype=str, keep_default_na=False
    )
    close = pd.Timedelta(hours=21)
    rows = pd.concat(
        [
            pd.DataFrame({"ts": sp500["date"], "source": "", "tickers": "", "headline": sp500["title"]}),
            pd.DataFrame(
                {
                    "ts": google["date"],
                    "source": google["publisher"],
                    "tickers": google["ticker"],
                    "headline": google["title"],
                }
            ),
        ],
        ignore_index=True,
    ).assign(summary="", url="")
    rows["ts"] = pd.to_datetime(rows["ts"], format="%Y-%m-%d", utc=True) + close
    news = normalize_news(rows)

    for f in (f for f in sample_catalog() if f.kind == "news"):
        year = news[news["ts"].dt.year == int(f.symbol)].reset_index(drop=True)
        assert content_hash(year) == content_hash(read_sample_file(f)) == f.version, f.key
    assert len(news) == len(sp500) + len(google) - 49 - 68  # same-day duplicates merged (SOURCES.md)
