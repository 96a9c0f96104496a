"""The archive tier: old bars move to a second folder, reads and versions do not change."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from hflite.data.sample import read_sample_file, sample_catalog
from hflite.data.store import (
    ArchivedPartition,
    Store,
    StoreError,
    archive_cutoff,
    render_partitions_table,
)

NOW = pd.Timestamp("2025-01-01 09:30", tz="UTC")


def _sample(key: str) -> pd.DataFrame:
    return read_sample_file(next(f for f in sample_catalog() if f.key == key))


@pytest.fixture(scope="module")
def spy() -> pd.DataFrame:
    """Real SPY daily bars 2000-01-03 .. 2026-03-27 (6598 sessions)."""
    return _sample("bars/SPY/1d")


@pytest.fixture(scope="module")
def btc_1h() -> pd.DataFrame:
    """Real Binance BTCUSDT hourly bars 2021-04-04 .. 2023-12-30."""
    return _sample("bars/BTCUSDT/1h")


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "hot", archive_root=tmp_path / "cold")


def test_archiving_splits_each_partition_at_the_cutoff(store, spy, btc_1h):
    store.write_bars("SPY", "1d", spy)
    store.write_bars("BTCUSDT", "1h", btc_1h)

    moved = store.archive("3y", now=NOW)

    assert [m.key for m in moved] == ["bars/BTCUSDT/1h", "bars/SPY/1d"]
    spy_moved = moved[1]
    assert isinstance(spy_moved, ArchivedPartition)
    assert spy_moved.cutoff == pd.Timestamp("2022-01-01", tz="UTC")
    assert spy_moved.moved_rows == int((spy["ts"] < "2022-01-01").sum()) == 5536
    assert spy_moved.hot_rows == 6598 - 5536
    assert "bars/SPY/1d: 5536 rows before 2022-01-01 moved" in str(spy_moved)
    cold = pq.read_table(spy_moved.path)
    assert cold.num_rows == 5536
    assert pq.ParquetFile(spy_moved.path).metadata.row_group(0).column(0).compression == "ZSTD"
    assert spy_moved.path.startswith(str(store.archive_root / "bars/asset_class=etf/symbol=SPY/freq=1d/"))


def test_reads_are_the_same_before_and_after_archiving(store, spy, btc_1h):
    store.write_bars("SPY", "1d", spy)
    store.write_bars("BTCUSDT", "1h", btc_1h)
    windows = [
        (None, None),
        ("2008-09-01", "2008-10-31"),  # archive only
        ("2021-12-15", "2022-01-15"),  # across the cutoff
        ("2024-01-01", None),  # hot only
        ("2022-01-01", "2022-01-01"),  # the cutoff day itself
    ]
    before = {w: store.read_bars("SPY", "1d", *w) for w in windows}
    hourly = store.read_bars("BTCUSDT", "1h", "2021-12-31", "2022-01-01")

    store.archive("3y", now=NOW)

    for w, frame in before.items():
        pd.testing.assert_frame_equal(store.read_bars("SPY", "1d", *w), frame)
    pd.testing.assert_frame_equal(store.read_bars("SPY"), spy)
    pd.testing.assert_frame_equal(store.read_bars("BTCUSDT", "1h", "2021-12-31", "2022-01-01"), hourly)
    assert len(hourly) == 48


def test_reading_many_symbols_unions_both_tiers(store, spy):
    qqq = _sample("bars/QQQ/1d")
    store.write_bars("SPY", "1d", spy)
    store.write_bars("QQQ", "1d", qqq)
    before = store.read_bars_many(["SPY", "QQQ"], "1d", "2021-06-01", "2022-06-30")

    store.archive("3y", now=NOW)
    after = store.read_bars_many(["SPY", "QQQ"], "1d", "2021-06-01", "2022-06-30")

    pd.testing.assert_frame_equal(after, before)
    assert after["symbol"].unique().tolist() == ["QQQ", "SPY"]
    spy_part = after[after["symbol"] == "SPY"].drop(columns="symbol").reset_index(drop=True)
    pd.testing.assert_frame_equal(spy_part, store.read_bars("SPY", "1d", "2021-06-01", "2022-06-30"))


def test_archiving_does_not_change_the_version(store, spy):
    info = store.write_bars("SPY", "1d", spy)

    store.archive("3y", now=NOW)

    after = store.partitions()[0]
    assert after.version == info.version == store.version("bars/SPY/1d")
    assert (after.rows, after.first, after.last) == (6598, info.first, info.last)
    assert (after.archive_rows, after.archived_before) == (5536, pd.Timestamp("2022-01-01", tz="UTC"))
    assert store.history("bars/SPY/1d") == []
    pd.testing.assert_frame_equal(store.read_bars("SPY", version=info.version[:12]), spy)
    assert store.verify() == {}


def test_the_manifest_records_both_tiers_and_the_archive_root(store, spy):
    store.write_bars("SPY", "1d", spy)
    store.archive("3y", now=NOW)

    manifest = json.loads(store.manifest_path.read_text())
    entry = manifest["partitions"]["bars/SPY/1d"]

    assert manifest["archive_root"] == str(store.archive_root.resolve())
    assert entry["archive"]["rows"] == 5536
    assert entry["archive"]["last"].startswith("2021-12-31")
    assert entry["archive"]["cutoff"].startswith("2022-01-01")
    assert entry["hot_hash"] != entry["hash"] != entry["archive"]["hash"]
    assert pq.read_table(store.root / entry["path"]).num_rows == 6598 - 5536


def test_a_store_opened_without_archive_root_still_reads_archived_bars(store, spy):
    store.write_bars("SPY", "1d", spy)
    store.archive("3y", now=NOW)

    plain = Store(store.root)

    pd.testing.assert_frame_equal(plain.read_bars("SPY"), spy)
    assert plain.archive_root == store.archive_root.resolve()


def test_a_write_after_archiving_splits_again_and_reuses_an_unchanged_archive_file(store, spy):
    store.write_bars("SPY", "1d", spy.iloc[:-10])
    store.archive("3y", now=NOW)
    cold_path = store.partitions()[0].archive_path
    cold_file = store.archive_root / cold_path
    written = cold_file.stat().st_mtime_ns

    appended = store.write_bars("SPY", "1d", spy)  # ten new sessions at the end

    assert appended.archive_path == cold_path
    assert cold_file.stat().st_mtime_ns == written
    assert appended.archive_rows == 5536
    pd.testing.assert_frame_equal(store.read_bars("SPY"), spy)
    assert store.verify() == {}


def test_a_revision_of_archived_rows_writes_a_new_archive_file_and_keeps_the_old_version(store, spy):
    v1 = store.write_bars("SPY", "1d", spy)
    old_cold = store.archive("3y", now=NOW)[0].path
    revised = spy.copy()
    revised.loc[0, "close"] = 91.4

    v2 = store.write_bars("SPY", "1d", revised)

    assert v2.archive_rows == 5536
    assert str(store.archive_root / v2.archive_path) != old_cold
    assert pq.read_table(old_cold).num_rows == 5536  # kept: it belongs to the previous version
    pd.testing.assert_frame_equal(store.read_bars("SPY"), revised)
    pd.testing.assert_frame_equal(store.read_bars("SPY", version=v1.version), spy)
    assert store.read_bars("SPY", end="2000-01-03")["close"].tolist() == [91.4]
    assert store.verify() == {}


def test_a_later_archive_moves_more_and_a_smaller_age_moves_nothing_back(store, spy):
    store.write_bars("SPY", "1d", spy)
    store.archive("3y", now=NOW)

    more = store.archive("1y", now=NOW)
    back = store.archive("5y", now=NOW)

    assert [(m.moved_rows, m.archive_rows) for m in more] == [(251 + 250, 5536 + 501)]  # 2022 and 2023
    assert back == []
    assert store.partitions()[0].archive_rows == 6037
    pd.testing.assert_frame_equal(store.read_bars("SPY"), spy)
    assert len(list((store.archive_root / "bars/asset_class=etf/symbol=SPY/freq=1d").iterdir())) == 1
    assert store.verify() == {}


def test_nothing_moves_when_all_data_is_recent(store, spy):
    store.write_bars("SPY", "1d", spy[spy["ts"] >= "2024-01-01"])

    assert store.archive("3y", now=NOW) == []
    assert store.partitions()[0].archive_rows == 0


def test_a_partition_entirely_older_than_the_cutoff_keeps_an_empty_hot_part(store, spy):
    old = spy[spy["ts"] < "2010-01-01"].reset_index(drop=True)
    store.write_bars("SPY", "1d", old)

    store.archive("3y", now=NOW)

    assert store.partitions()[0].archive_rows == len(old)
    pd.testing.assert_frame_equal(store.read_bars("SPY"), old)
    assert store.read_bars("SPY", start="2020-01-01").empty
    assert store.verify() == {}


def test_verify_finds_a_damaged_archive_file(store, spy):
    store.write_bars("SPY", "1d", spy)
    moved = store.archive("3y", now=NOW)
    other = Store(store.root.parent / "other")
    other.write_bars("SPY", "1d", spy.iloc[:100])
    damaged = (other.root / other.partitions()[0].path).read_bytes()
    with open(moved[0].path, "wb") as fh:
        fh.write(damaged)

    assert set(store.verify()) == {"bars/SPY/1d"}
    assert "differs from the manifest" in store.verify()["bars/SPY/1d"]


def test_the_partitions_table_shows_the_archive_tier(store, spy):
    store.write_bars("SPY", "1d", spy)
    store.write_bars("QQQ", "1d", spy[spy["ts"] >= "2024-01-01"])
    assert "archived" not in [c.header for c in render_partitions_table(store).columns]

    store.archive("3y", now=NOW)
    table = render_partitions_table(store)

    cells = {c.header: list(c._cells) for c in table.columns}
    assert cells["symbol"] == ["QQQ", "SPY"]
    assert cells["archived"] == ["0", "5536"]
    assert cells["rows"][1] == "6598"


def test_the_archive_tier_needs_a_root(tmp_path, spy):
    store = Store(tmp_path / "hot")
    store.write_bars("SPY", "1d", spy)

    with pytest.raises(ValueError, match="no archive root"):
        store.archive("3y", now=NOW)


def test_a_store_archives_to_one_root_only(store, spy, tmp_path):
    store.write_bars("SPY", "1d", spy)
    store.archive("3y", now=NOW)

    with pytest.raises(ValueError, match="already archives to"):
        Store(store.root, archive_root=tmp_path / "elsewhere").archive("1y", now=NOW)


@pytest.mark.parametrize(
    ("older_than", "cutoff"),
    [
        ("3y", "2022-01-01"),
        ("18m", "2023-07-01"),
        ("18mo", "2023-07-01"),
        ("2w", "2024-12-18"),
        ("400d", "2023-11-28"),
        (pd.Timedelta(days=1), "2024-12-31"),
        (pd.DateOffset(years=1), "2024-01-01"),
    ],
)
def test_the_cutoff_is_the_utc_midnight_before_now_minus_the_age(older_than, cutoff):
    assert archive_cutoff(older_than, NOW) == pd.Timestamp(cutoff, tz="UTC")


@pytest.mark.parametrize("bad", ["3 years", "0y", "-1d", "", pd.Timedelta(0), 3])
def test_a_bad_age_is_refused(bad):
    with pytest.raises(ValueError, match="older_than"):
        archive_cutoff(bad, NOW)


def test_an_archive_root_that_cannot_be_created_is_one_store_error_and_writes_nothing(tmp_path, spy):
    store = Store(tmp_path / "hot", archive_root="/proc/hflite-cold")
    info = store.write_bars("SPY", "1d", spy)

    with pytest.raises(
        StoreError, match="^cannot create the folder /proc/hflite-cold: No such file or directory$"
    ):
        store.archive("3y", now=NOW)

    assert [p.name for p in (store.root / info.path).parent.iterdir()] == [info.path.rsplit("/", 1)[1]]
    assert store.verify() == {} and store.partitions()[0].archive_rows == 0
