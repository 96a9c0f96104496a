"""The local data store: round trips, time filters, atomic writes, versions, history and validation."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

import hflite.data
from hflite.data.sample import SAMPLE_DIR, read_sample_file, sample_catalog
from hflite.data.store import (
    BAR_COLUMNS,
    DataNotFoundError,
    PartitionInfo,
    Store,
    StoreError,
    content_hash,
    render_partitions_table,
)


def _sample(key: str) -> pd.DataFrame:
    return read_sample_file(next(f for f in sample_catalog() if f.key == key))


@pytest.fixture(scope="module")
def spy() -> pd.DataFrame:
    """Real SPY daily bars 2000-01-03 .. (first 300 sessions), from the embedded sample."""
    return _sample("bars/SPY/1d").iloc[:300].reset_index(drop=True)


@pytest.fixture(scope="module")
def btc_1h() -> pd.DataFrame:
    """Real Binance BTCUSDT hourly bars, May 2021."""
    df = _sample("bars/BTCUSDT/1h")
    return df[(df["ts"] >= "2021-05-01") & (df["ts"] < "2021-06-01")].reset_index(drop=True)


@pytest.fixture(scope="module")
def fedfunds() -> pd.DataFrame:
    return _sample("macro/FEDFUNDS")


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "data")


def _utc(*days: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(days), utc=True)).astype("datetime64[ns, UTC]")


def _five_spy_bars() -> pd.DataFrame:
    """SPY's first five sessions of 2000 as in shared/data/market/daily/SPY.csv."""
    return pd.DataFrame(
        {
            "ts": _utc("2000-01-03", "2000-01-04", "2000-01-05", "2000-01-06", "2000-01-07"),
            "open": [93.134391, 90.169972, 87.837383, 87.751545, 89.211208],
            "high": [93.134391, 90.503717, 88.582087, 88.840278, 92.418405],
            "low": [90.385906, 87.725782, 86.164567, 86.464733, 88.937453],
            "close": [91.367508, 87.794495, 87.951683, 86.464733, 92.048317],
            "volume": [8164300.0, 8089800.0, 12177900.0, 6227200.0, 8066500.0],
        }
    )


# --- public surface -----------------------------------------------------------------------------------


def test_package_exports_exactly_the_public_names():
    assert sorted(hflite.data.__all__) == sorted(
        [
            "RELEASE_LAGS",
            "SAMPLE_DIR",
            "ArchivedPartition",
            "DataIntegrityError",
            "DataNotFoundError",
            "PartitionInfo",
            "ReleaseLag",
            "Repair",
            "Store",
            "StoreError",
            "bars_key",
            "ensure_sample",
            "fundamentals_key",
            "known_at",
            "news_key",
            "render_partitions_table",
            "sample_series",
            "sample_symbols",
            "series_key",
            "table_key",
        ]
    )
    assert hflite.data.SAMPLE_DIR == SAMPLE_DIR


# --- round trip ---------------------------------------------------------------------------------------


def test_bars_round_trip_exactly_with_canonical_dtypes(store, spy):
    info = store.write_bars("SPY", "1d", spy, source="test")

    back = store.read_bars("SPY", "1d")

    pd.testing.assert_frame_equal(back, spy)
    assert list(back.columns) == list(BAR_COLUMNS)
    assert str(back["ts"].dtype) == "datetime64[ns, UTC]"
    assert all(back[c].dtype == np.float64 for c in BAR_COLUMNS[1:])
    assert isinstance(info, PartitionInfo)
    assert (info.key, info.kind, info.symbol, info.asset_class, info.freq) == (
        "bars/SPY/1d",
        "bars",
        "SPY",
        "etf",
        "1d",
    )
    assert info.first == pd.Timestamp("2000-01-03", tz="UTC")
    assert info.last == spy["ts"].iloc[-1]
    assert info.rows == 300
    assert info.source == "test"
    assert info.written_at.tzinfo is not None


def test_partition_layout_and_manifest_on_disk(store, spy):
    info = store.write_bars("SPY", "1d", spy)

    assert info.path == f"bars/asset_class=etf/symbol=SPY/freq=1d/data.{info.version[:12]}.parquet"
    assert (store.root / info.path).is_file()
    manifest = json.loads((store.root / "manifest.json").read_text())
    entry = manifest["partitions"]["bars/SPY/1d"]
    assert entry["path"] == info.path
    assert entry["rows"] == 300
    assert entry["hash"] == store.version("bars/SPY/1d")
    assert entry["first"].startswith("2000-01-03")
    assert entry["history"] == []


def test_unsorted_input_in_another_zone_is_stored_sorted_in_utc(store):
    bars = _five_spy_bars()
    shuffled = bars.iloc[[3, 0, 4, 2, 1]].copy()
    shuffled["ts"] = shuffled["ts"].dt.tz_convert("America/New_York")

    store.write_bars("SPY", "1d", shuffled)

    pd.testing.assert_frame_equal(store.read_bars("SPY"), bars)


def test_intraday_bars_keep_their_open_time(store, btc_1h):
    store.write_bars("BTCUSDT", "1h", btc_1h)

    back = store.read_bars("BTCUSDT", "1h")

    assert back["ts"].iloc[0] == pd.Timestamp("2021-05-01 00:00", tz="UTC")
    assert store.partitions()[0].asset_class == "crypto"
    pd.testing.assert_frame_equal(back, btc_1h)


def test_series_round_trip_keeps_negative_values(store):
    oil = pd.DataFrame(
        {"date": _utc("2020-04-17", "2020-04-20", "2020-04-21"), "value": [18.31, -36.98, 8.91]}
    )

    info = store.write_series("DCOILWTICO", oil)

    pd.testing.assert_frame_equal(store.read_series("DCOILWTICO"), oil)
    assert (info.key, info.kind, info.asset_class, info.freq) == ("macro/DCOILWTICO", "macro", None, None)


def test_table_round_trip(store):
    actions = pd.DataFrame(
        {
            "symbol": ["AAPL", "AAPL", "NVDA"],
            "date": pd.to_datetime(["2014-06-09", "2020-08-31", "2024-06-10"], utc=True),
            "dividend": [0.0, 0.0, 0.0],
            "split_ratio": [7.0, 4.0, 10.0],
        }
    )

    info = store.write_table("corporate_actions", actions)
    back = store.read_table("corporate_actions")

    assert list(back.columns) == ["symbol", "date", "dividend", "split_ratio"]  # no hive path columns
    assert back["symbol"].tolist() == ["AAPL", "AAPL", "NVDA"]
    assert back["split_ratio"].tolist() == [7.0, 4.0, 10.0]
    assert str(back["date"].dtype) == "datetime64[ns, UTC]"
    assert (info.first, info.last) == (actions["date"].min(), actions["date"].max())
    assert content_hash(back) == info.version


# --- time filters -------------------------------------------------------------------------------------


def test_start_and_end_are_inclusive_in_every_accepted_form(store, spy):
    store.write_bars("SPY", "1d", spy)
    expected = ["2000-01-04", "2000-01-05", "2000-01-06"]

    for start, end in [
        ("2000-01-04", "2000-01-06"),
        (date(2000, 1, 4), date(2000, 1, 6)),
        (pd.Timestamp("2000-01-04", tz="UTC"), pd.Timestamp("2000-01-06", tz="UTC")),
        (datetime(2000, 1, 4, tzinfo=UTC), datetime(2000, 1, 6, tzinfo=UTC)),
        (pd.Timestamp("2000-01-03 19:00", tz="America/New_York"), "2000-01-06"),  # = 2000-01-04 00:00 UTC
    ]:
        got = store.read_bars("SPY", "1d", start=start, end=end)
        assert got["ts"].dt.strftime("%Y-%m-%d").tolist() == expected, (start, end)


def test_open_ended_filters(store, spy):
    store.write_bars("SPY", "1d", spy)

    in_2000 = store.read_bars("SPY", end="2000-12-31")
    assert len(store.read_bars("SPY", start="2001-01-01")) == 300 - len(in_2000)
    assert in_2000["ts"].iloc[-1] == pd.Timestamp("2000-12-29", tz="UTC")
    assert store.read_bars("SPY", end="2000-01-03")["ts"].tolist() == [pd.Timestamp("2000-01-03", tz="UTC")]


def test_a_date_as_end_covers_the_whole_day_of_intraday_bars(store, btc_1h):
    store.write_bars("BTCUSDT", "1h", btc_1h)

    day = store.read_bars("BTCUSDT", "1h", "2021-05-19", "2021-05-19")
    until_noon = store.read_bars("BTCUSDT", "1h", "2021-05-19", pd.Timestamp("2021-05-19 12:00", tz="UTC"))

    assert len(day) == 24
    assert day["ts"].iloc[-1] == pd.Timestamp("2021-05-19 23:00", tz="UTC")
    assert len(until_noon) == 13
    assert until_noon["ts"].iloc[-1] == pd.Timestamp("2021-05-19 12:00", tz="UTC")


def test_an_empty_window_gives_an_empty_frame_with_the_bar_columns(store, spy):
    store.write_bars("SPY", "1d", spy)

    got = store.read_bars("SPY", start="1990-01-01", end="1990-12-31")

    assert got.empty
    assert list(got.columns) == list(BAR_COLUMNS)
    assert str(got["ts"].dtype) == "datetime64[ns, UTC]"


def test_naive_datetime_bounds_are_refused(store, spy):
    store.write_bars("SPY", "1d", spy)

    with pytest.raises(ValueError, match="timezone-naive"):
        store.read_bars("SPY", start=datetime(2000, 1, 4))  # noqa: DTZ001 - the point of the test


def test_series_filter(store, fedfunds):
    store.write_series("FEDFUNDS", fedfunds)

    got = store.read_series("FEDFUNDS", "2020-01-01", "2020-12-31")

    assert len(got) == 12
    assert list(got.columns) == ["date", "value"]
    assert got["value"].iloc[3] == pytest.approx(0.05)  # April 2020


# --- atomic writes ------------------------------------------------------------------------------------


def test_a_crash_while_replacing_leaves_the_previous_version_intact(store, spy, monkeypatch):
    v1 = store.write_bars("SPY", "1d", spy)
    changed = spy.copy()
    changed.loc[0, "close"] = 91.5
    partition_dir = store.root / "bars/asset_class=etf/symbol=SPY/freq=1d"

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.write_bars("SPY", "1d", changed)
    monkeypatch.undo()

    pd.testing.assert_frame_equal(store.read_bars("SPY"), spy)
    assert store.version("bars/SPY/1d") == v1.version
    assert store.history("bars/SPY/1d") == []
    assert sorted(p.name for p in partition_dir.iterdir()) == [f"data.{v1.version[:12]}.parquet"]
    assert not [p for p in store.root.rglob("*.tmp")]
    assert store.verify() == {}


def test_a_crash_while_writing_the_first_version_leaves_nothing_behind(store, spy, monkeypatch):
    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.write_bars("SPY", "1d", spy)
    monkeypatch.undo()

    assert not store.has_bars("SPY")
    assert [p.name for p in store.root.rglob("*") if p.is_file() and p.name != ".lock"] == []


# --- versions and history -----------------------------------------------------------------------------


def test_the_version_is_stable_across_reimports_and_stores(tmp_path, spy):
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    first = a.write_bars("SPY", "1d", spy)

    again = a.write_bars("SPY", "1d", spy.iloc[::-1].reset_index(drop=True))  # same data, other order
    other = b.write_bars("SPY", "1d", spy.assign(ts=spy["ts"].dt.tz_convert("Asia/Tokyo")))

    assert again == first  # unchanged: no rewrite, same written_at
    assert other.version == first.version
    assert a.history("bars/SPY/1d") == []
    assert first.version == content_hash(spy)
    assert len(first.version) == 64


def test_changed_data_gets_a_new_version_and_the_old_one_goes_to_history(store, spy):
    v1 = store.write_bars("SPY", "1d", spy, source="vendor-a")
    changed = spy.copy()
    changed.loc[10, "close"] += 0.01
    v2 = store.write_bars("SPY", "1d", changed, source="vendor-b")
    v3 = store.write_bars("SPY", "1d", spy.iloc[:200], source="vendor-c")

    assert len({v1.version, v2.version, v3.version}) == 3
    assert store.version("bars/SPY/1d") == v3.version
    history = store.history("bars/SPY/1d")
    assert [h["hash"] for h in history] == [v1.version, v2.version]
    assert [h["rows"] for h in history] == [300, 300]
    assert [h["source"] for h in history] == ["vendor-a", "vendor-b"]
    assert all(datetime.fromisoformat(h["written_at"]).tzinfo is not None for h in history)
    assert len(store.read_bars("SPY")) == 200


def test_partitions_are_listed_sorted_and_versions_looked_up_together(store, spy, btc_1h, fedfunds):
    store.write_series("FEDFUNDS", fedfunds)
    store.write_bars("SPY", "1d", spy)
    store.write_bars("BTCUSDT", "1h", btc_1h)
    store.write_bars("BTCUSDT", "1d", btc_1h.iloc[::24])

    keys = [p.key for p in store.partitions()]
    versions = store.versions(["bars/SPY/1d", "macro/FEDFUNDS"])

    assert keys == ["bars/BTCUSDT/1d", "bars/BTCUSDT/1h", "bars/SPY/1d", "macro/FEDFUNDS"]
    assert versions == {
        "bars/SPY/1d": store.version("bars/SPY/1d"),
        "macro/FEDFUNDS": store.version("macro/FEDFUNDS"),
    }
    assert store.has_bars("BTCUSDT", "1h")
    assert not store.has_bars("BTCUSDT", "1m")
    assert store.has_series("FEDFUNDS")


def test_changing_the_asset_class_moves_the_partition(store):
    old = store.write_bars("XYZ", "1d", _five_spy_bars(), asset_class="equity")
    new = store.write_bars("XYZ", "1d", _five_spy_bars().iloc[:4], asset_class="etf")

    assert new.path.startswith("bars/asset_class=etf/symbol=XYZ/freq=1d/")
    assert len(store.read_bars("XYZ")) == 4
    assert store.partitions()[0].asset_class == "etf"
    assert len(store.read_bars("XYZ", version=old.version)) == 5  # the old version is kept where it was
    assert store.verify() == {}


def test_verify_finds_a_file_changed_behind_the_manifest(store, spy, monkeypatch):
    spy_file = store.root / store.write_bars("SPY", "1d", spy).path
    qqq = store.root / store.write_bars("QQQ", "1d", spy).path
    qqq.write_bytes(spy_file.read_bytes())  # identical content: still fine
    assert store.verify() == {}

    other = Store(store.root / "other")
    qqq.write_bytes((other.root / other.write_bars("SPY", "1d", spy.iloc[:10]).path).read_bytes())

    assert set(store.verify()) == {"bars/QQQ/1d"}


def test_the_partitions_table_for_the_cli(store, spy, btc_1h):
    store.write_bars("SPY", "1d", spy)
    store.write_bars("BTCUSDT", "1h", btc_1h)

    table = render_partitions_table(store)

    headers = [c.header for c in table.columns]
    assert headers == ["symbol", "class", "freq", "first", "last", "rows", "version"]
    assert table.row_count == 2
    cells = {c.header: list(c._cells) for c in table.columns}
    assert cells["symbol"] == ["BTCUSDT", "SPY"]
    assert cells["version"][1] == store.version("bars/SPY/1d")[:12]
    assert cells["first"] == ["2021-05-01 00:00", "2000-01-03"]


# --- re-running on a recorded version -----------------------------------------------------------------


def _revisions(spy: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """``n`` versions of the SPY bars, each with one close revised by another cent."""
    out = []
    for i in range(n):
        revised = spy.copy()
        revised.loc[10, "close"] += 0.01 * i
        out.append(revised)
    return out


def test_a_recorded_version_reads_back_exactly_after_the_data_changed(store, spy):
    v1 = store.write_bars("SPY", "1d", spy, source="vendor-a")
    revised = spy.copy()
    revised.loc[10, "close"] = 95.0
    v2 = store.write_bars("SPY", "1d", revised, source="vendor-b")

    pd.testing.assert_frame_equal(store.read_bars("SPY", version=v1.version), spy)
    pd.testing.assert_frame_equal(store.read_bars("SPY", version=v1.version[:12]), spy)  # as runs record it
    pd.testing.assert_frame_equal(store.read_bars("SPY", version=v2.version), revised)
    pd.testing.assert_frame_equal(store.read_bars("SPY"), revised)
    window = store.read_bars("SPY", "1d", "2000-01-10", "2000-01-20", version=v1.version)
    assert window["ts"].iloc[[0, -1]].dt.strftime("%Y-%m-%d").tolist() == ["2000-01-10", "2000-01-20"]
    assert window["close"].tolist() == spy.set_index("ts").loc[window["ts"], "close"].tolist()
    assert len(window) == 8  # 2000-01-17 was a holiday
    assert store.history("bars/SPY/1d")[0]["kept"] is True


def test_old_versions_keep_their_data_beside_the_current_file(store, spy):
    infos = [store.write_bars("SPY", "1d", df) for df in _revisions(spy, 3)]
    folder = store.root / "bars/asset_class=etf/symbol=SPY/freq=1d"

    names = sorted(p.name for p in folder.iterdir())

    assert names == sorted(f"data.{i.version[:12]}.parquet" for i in infos)
    assert store.verify() == {}


def test_only_the_last_keep_versions_previous_versions_keep_their_data(tmp_path, spy):
    store = Store(tmp_path / "data", keep_versions=2)
    infos = [store.write_bars("SPY", "1d", df) for df in _revisions(spy, 5)]
    folder = store.root / "bars/asset_class=etf/symbol=SPY/freq=1d"

    history = store.history("bars/SPY/1d")

    assert [h["hash"] for h in history] == [i.version for i in infos[:4]]  # hashes are kept forever
    assert [h["kept"] for h in history] == [False, False, True, True]
    assert len(list(folder.iterdir())) == 3  # current + 2 previous
    pd.testing.assert_frame_equal(store.read_bars("SPY", version=infos[2].version), _revisions(spy, 5)[2])
    with pytest.raises(DataNotFoundError, match="data was pruned .* last 2 previous versions"):
        store.read_bars("SPY", version=infos[1].version)


def test_the_default_keeps_five_previous_versions(store, spy):
    for df in _revisions(spy, 8):
        store.write_bars("SPY", "1d", df)

    assert [h["kept"] for h in store.history("bars/SPY/1d")] == [False, False] + [True] * 5


def test_keep_versions_zero_keeps_only_the_current_file(tmp_path, spy):
    store = Store(tmp_path / "data", keep_versions=0)
    for df in _revisions(spy, 3):
        info = store.write_bars("SPY", "1d", df)

    assert [p.name for p in (store.root / info.path).parent.iterdir()] == [
        f"data.{info.version[:12]}.parquet"
    ]
    assert [h["kept"] for h in store.history("bars/SPY/1d")] == [False, False]


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_keep_versions_must_be_a_non_negative_integer(tmp_path, bad):
    with pytest.raises(ValueError, match="keep_versions must be an integer >= 0"):
        Store(tmp_path, keep_versions=bad)


def test_returning_to_an_earlier_content_shares_its_file(store, spy):
    a = store.write_bars("SPY", "1d", spy)
    store.write_bars("SPY", "1d", spy.iloc[:200])
    again = store.write_bars("SPY", "1d", spy)

    assert again.version == a.version
    assert again.path == a.path
    assert [h["rows"] for h in store.history("bars/SPY/1d")] == [300, 200]
    assert store.verify() == {}


def test_an_unknown_or_malformed_version_is_refused(store, spy):
    store.write_bars("SPY", "1d", spy)

    with pytest.raises(DataNotFoundError, match="no version 'deadbeefdead'"):
        store.read_bars("SPY", version="deadbeefdead")
    with pytest.raises(ValueError, match="prefix of >= 8 hex digits"):
        store.read_bars("SPY", version="abc")


def test_series_and_tables_read_recorded_versions_too(store, fedfunds):
    v1 = store.write_series("FEDFUNDS", fedfunds)
    store.write_series("FEDFUNDS", fedfunds.iloc[:-12])
    t1 = store.write_table("t", pd.DataFrame({"a": [1, 2]}))
    store.write_table("t", pd.DataFrame({"a": [3]}))

    pd.testing.assert_frame_equal(store.read_series("FEDFUNDS", version=v1.version), fedfunds)
    assert store.read_table("t", version=t1.version)["a"].tolist() == [1, 2]
    assert store.read_table("t")["a"].tolist() == [3]


def test_verify_reports_a_damaged_kept_version_under_its_hash(store, spy):
    old = store.write_bars("SPY", "1d", spy)
    store.write_bars("SPY", "1d", spy.iloc[:100])
    (store.root / old.path).write_bytes(b"not parquet")

    problems = store.verify()

    assert list(problems) == [f"bars/SPY/1d@{old.version[:12]}"]
    assert "unreadable" in problems[f"bars/SPY/1d@{old.version[:12]}"]


def test_readers_see_whole_versions_while_a_thread_keeps_rewriting(tmp_path, spy):
    store = Store(tmp_path / "data", keep_versions=0)  # files vanish right after each commit
    versions = _revisions(spy, 40)
    closes = {round(df.loc[10, "close"], 6) for df in versions}
    store.write_bars("SPY", "1d", versions[0])
    done = threading.Event()

    def writer() -> None:
        for df in versions[1:]:
            store.write_bars("SPY", "1d", df)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set():
        got = Store(store.root).read_bars("SPY")
        assert len(got) == 300
        assert round(got.loc[10, "close"], 6) in closes
        pd.testing.assert_frame_equal(got.drop(index=10), spy.drop(index=10))
        reads += 1
    thread.join()
    assert reads > 0
    pd.testing.assert_frame_equal(store.read_bars("SPY"), versions[-1])


def test_a_store_written_before_versioned_file_names_still_reads_and_upgrades(store, spy):
    info = store.write_bars("SPY", "1d", spy)
    legacy = store.root / "bars/asset_class=etf/symbol=SPY/freq=1d/data.parquet"
    (store.root / info.path).rename(legacy)
    manifest = json.loads(store.manifest_path.read_text())
    manifest["format"] = 1
    manifest["partitions"]["bars/SPY/1d"]["path"] = "bars/asset_class=etf/symbol=SPY/freq=1d/data.parquet"
    store.manifest_path.write_text(json.dumps(manifest))

    pd.testing.assert_frame_equal(store.read_bars("SPY"), spy)
    store.write_bars("SPY", "1d", spy.iloc[:10])

    pd.testing.assert_frame_equal(store.read_bars("SPY", version=info.version), spy)  # the old file is kept
    assert legacy.is_file()
    assert store.verify() == {}


# --- many symbols in one query ------------------------------------------------------------------------


def test_many_symbols_come_back_in_one_frame_sorted_by_symbol_then_time(store, spy):
    qqq = _sample("bars/QQQ/1d").iloc[:300]
    store.write_bars("SPY", "1d", spy)
    store.write_bars("QQQ", "1d", qqq)

    got = store.read_bars_many(["SPY", "QQQ", "SPY"], "1d", "2000-02-01", "2000-02-29")

    assert list(got.columns) == ["symbol", *BAR_COLUMNS]
    assert got["symbol"].tolist() == ["QQQ"] * 20 + ["SPY"] * 20
    for sym in ("QQQ", "SPY"):
        one = got[got["symbol"] == sym].drop(columns="symbol").reset_index(drop=True)
        pd.testing.assert_frame_equal(one, store.read_bars(sym, "1d", "2000-02-01", "2000-02-29"))


def test_many_symbols_name_every_missing_one(store, spy):
    store.write_bars("SPY", "1d", spy)

    with pytest.raises(DataNotFoundError, match=r"no 1d bars for \['GLD', 'QQQ'\]"):
        store.read_bars_many(["SPY", "QQQ", "GLD"])


# --- not found ----------------------------------------------------------------------------------------


def test_missing_bars_raise_data_not_found_naming_symbol_freq_and_the_list_command(store, spy):
    store.write_bars("SPY", "1d", spy)

    with pytest.raises(DataNotFoundError) as err:
        store.read_bars("SPY", "1h")

    message = str(err.value)
    assert "'SPY'" in message
    assert "1h" in message
    assert "`hflite data list`" in message
    assert isinstance(err.value, LookupError)


def test_missing_series_and_keys_raise_data_not_found(store):
    with pytest.raises(DataNotFoundError, match="FEDFUNDS.*hflite data list"):
        store.read_series("FEDFUNDS")
    with pytest.raises(DataNotFoundError, match="bars/SPY/1d"):
        store.version("bars/SPY/1d")
    with pytest.raises(DataNotFoundError):
        store.versions(["macro/FEDFUNDS"])
    with pytest.raises(DataNotFoundError):
        store.history("macro/FEDFUNDS")
    assert store.partitions() == []
    assert not store.has_bars("SPY")


def test_a_partition_whose_file_vanished_is_not_found(store, spy):
    (store.root / store.write_bars("SPY", "1d", spy).path).unlink()

    assert not store.has_bars("SPY")
    with pytest.raises(DataNotFoundError, match="file is missing"):
        store.read_bars("SPY")


# --- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda df: df.assign(ts=df["ts"].where(df.index != 3, df["ts"][1])), "SPY: duplicate ts 2000-01-04"),
        (
            lambda df: df.assign(close=df["close"].where(df.index != 2, np.nan)),
            "SPY: missing or infinite close at ts 2000-01-05",
        ),
        (
            lambda df: df.assign(high=df["high"].where(df.index != 4, np.inf)),
            "SPY: missing or infinite high at ts 2000-01-07",
        ),
        (
            lambda df: df.assign(low=df["low"].where(df.index != 1, 0.0)),
            "SPY: non-positive price at ts 2000-01-04",
        ),
        (
            lambda df: df.assign(open=df["open"].where(df.index != 3, -1.0)),
            "SPY: non-positive price at ts 2000-01-06",
        ),
        (
            lambda df: df.assign(volume=df["volume"].where(df.index != 0, -5.0)),
            "SPY: negative volume at ts 2000-01-03",
        ),
        (lambda df: df.drop(columns=["volume"]), r"SPY: columns must be exactly .*missing \['volume'\]"),
        (lambda df: df.assign(vwap=1.0), r"SPY: columns must be exactly .*unexpected \['vwap'\]"),
        (lambda df: df.assign(ts=df["ts"].dt.tz_localize(None)), "SPY: column ts is timezone-naive"),
        (
            lambda df: df.assign(ts=df["ts"].dt.strftime("%Y-%m-%d")),
            "SPY: column ts must be a tz-aware datetime",
        ),
        (lambda df: df.iloc[:0], "SPY: no rows"),
        (lambda df: df.assign(close=["a", "b", "c", "d", "e"]), "SPY: column close is not numeric"),
    ],
)
def test_invalid_bars_are_rejected_naming_symbol_and_first_bad_ts(store, mutate, match):
    with pytest.raises(ValueError, match=match):
        store.write_bars("SPY", "1d", mutate(_five_spy_bars()))
    assert not store.has_bars("SPY")


def test_a_rejected_write_keeps_the_stored_version(store):
    good = store.write_bars("SPY", "1d", _five_spy_bars())
    bad = _five_spy_bars()
    bad.loc[2, "close"] = -1.0

    with pytest.raises(ValueError, match="non-positive"):
        store.write_bars("SPY", "1d", bad)

    assert store.version("bars/SPY/1d") == good.version


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"symbol": "NOPE"}, "NOPE: unknown instrument; pass asset_class="),
        ({"symbol": "NOPE", "asset_class": "bond"}, "invalid asset_class 'bond'"),
        ({"symbol": "../etc"}, "invalid symbol"),
        ({"symbol": "SPY", "freq": "daily"}, "invalid frequency 'daily'"),
    ],
)
def test_bad_names_are_rejected(store, kwargs, match):
    args = {"symbol": "SPY", "freq": "1d", **kwargs}
    with pytest.raises(ValueError, match=match):
        store.write_bars(args.pop("symbol"), args.pop("freq"), _five_spy_bars(), **args)


def test_an_unknown_symbol_is_accepted_with_an_explicit_asset_class(store):
    info = store.write_bars("BRK.B", "1d", _five_spy_bars(), asset_class="equity")

    assert info.asset_class == "equity"
    assert store.has_bars("BRK.B")


def test_invalid_series_are_rejected(store):
    series = pd.DataFrame(
        {
            "date": pd.to_datetime(["2020-01-01", "2020-02-01", "2020-02-01"], utc=True),
            "value": [1.55, 1.58, 1.65],
        }
    )
    with pytest.raises(ValueError, match="FEDFUNDS: duplicate date 2020-02-01"):
        store.write_series("FEDFUNDS", series)
    with pytest.raises(ValueError, match="FEDFUNDS: missing or infinite value at date 2020-02-01"):
        store.write_series("FEDFUNDS", series.iloc[:2].assign(value=[1.55, np.nan]))
    with pytest.raises(ValueError, match=r"columns must be exactly \['date', 'value'\]"):
        store.write_series("FEDFUNDS", series.rename(columns={"value": "rate"}))


def test_a_manifest_that_is_not_json_is_a_store_error_naming_it(store, spy):
    store.write_bars("SPY", "1d", spy)
    store.manifest_path.write_text('{"partitions": ')

    with pytest.raises(StoreError, match=f"^store manifest {store.manifest_path} is not valid JSON"):
        store.partitions()
