"""Store integrity: a file changed behind the manifest is refused on read, and repaired from a kept
version or a re-fetch."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import hflite.data.store as store_module
from hflite.data.sample import read_sample_file, sample_catalog
from hflite.data.store import (
    DataIntegrityError,
    DataNotFoundError,
    PartitionInfo,
    Store,
    StoreError,
    arrow_to_frame,
    content_hash,
    frame_to_arrow,
    write_parquet,
)

REPAIR_HINT = "`hflite data check --repair`"


def _sample(key: str) -> pd.DataFrame:
    return read_sample_file(next(f for f in sample_catalog() if f.key == key))


@pytest.fixture(scope="module")
def spy() -> pd.DataFrame:
    """Real SPY daily bars, the first 300 sessions of 2000-2001, from the embedded sample."""
    return _sample("bars/SPY/1d").iloc[:300].reset_index(drop=True)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "data")


def _nan_close(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[10, "close"] = np.nan
    return frame


def _bar_times_100(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[10, ["open", "high", "low", "close"]] *= 100
    return frame


def _duplicate_row(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.iloc[[10]]]).sort_values("ts", kind="mergesort", ignore_index=True)


def _edit_in_place(path: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> str:
    """Rewrite a partition file at the same path with changed content; returns the new content hash."""
    before = path.stat().st_mtime_ns
    frame = change(arrow_to_frame(pq.read_table(path)))
    write_parquet(frame_to_arrow(frame), path)
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a later mtime, as an editor leaves it
    return content_hash(frame)


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(3).bytes(path.stat().st_size))


# --- refused on read ----------------------------------------------------------------------------------


@pytest.mark.parametrize("edit", [_nan_close, _bar_times_100, _duplicate_row], ids=["nan", "x100", "dup"])
def test_a_file_edited_in_place_is_refused_naming_the_file_and_both_hashes(store, spy, edit):
    info = store.write_bars("SPY", "1d", spy)
    path = store.root / info.path
    actual = _edit_in_place(path, edit)

    with pytest.raises(DataIntegrityError) as caught:
        store.read_bars("SPY", "1d", "2000-01-01", "2000-03-01")

    message = str(caught.value)
    assert message.startswith(f"bars/SPY/1d: {path} ")
    assert f"the manifest records version {info.version[:12]}" in message
    assert f"the file hashes to {actual[:12]}" in message
    assert message.endswith(f"run {REPAIR_HINT}") and "\n" not in message


def test_an_integrity_error_is_a_store_error_and_never_mistaken_for_missing_data():
    assert issubclass(DataIntegrityError, StoreError) and issubclass(StoreError, ValueError)
    assert not issubclass(DataIntegrityError, DataNotFoundError)


def test_a_pinned_version_edited_in_place_is_refused_while_the_current_one_reads(store, spy):
    old = store.write_bars("SPY", "1d", spy)
    store.write_bars("SPY", "1d", spy.iloc[:100])
    _edit_in_place(store.root / old.path, _bar_times_100)

    assert len(store.read_bars("SPY")) == 100
    with pytest.raises(DataIntegrityError, match=f"records version {old.version[:12]}"):
        store.read_bars("SPY", version=old.version)


def test_series_tables_and_many_symbol_reads_are_checked_too(store, spy):
    fed = store.write_series("FEDFUNDS", _sample("macro/FEDFUNDS"))
    table = store.write_table("splits", pd.DataFrame({"symbol": ["AAPL", "NVDA"], "ratio": [4.0, 10.0]}))
    store.write_bars("QQQ", "1d", spy)
    qqq = store.write_bars("SPY", "1d", spy)
    _edit_in_place(store.root / fed.path, lambda f: f.assign(value=f["value"] + 1))
    _edit_in_place(store.root / table.path, lambda f: f.assign(ratio=[2.0, 10.0]))
    _edit_in_place(store.root / qqq.path, _nan_close)

    with pytest.raises(DataIntegrityError, match="^macro/FEDFUNDS: "):
        store.read_series("FEDFUNDS")
    with pytest.raises(DataIntegrityError, match="^table/splits: "):
        store.read_table("splits")
    with pytest.raises(DataIntegrityError, match="^bars/SPY/1d: "):
        store.read_bars_many(["QQQ", "SPY"])


def test_repeated_reads_hash_each_file_once(store, spy, monkeypatch):
    store.write_bars("SPY", "1d", spy)
    calls: list[int] = []
    real = store_module.content_hash
    monkeypatch.setattr(store_module, "content_hash", lambda df: calls.append(len(df)) or real(df))

    for _ in range(5):
        store.read_bars("SPY", "1d", "2000-02-01", "2000-02-29")
        Store(store.root).read_bars("SPY")

    assert calls == [300]


def test_a_file_changed_after_it_was_checked_is_checked_again(store, spy):
    info = store.write_bars("SPY", "1d", spy)
    assert len(store.read_bars("SPY")) == 300

    _edit_in_place(store.root / info.path, _nan_close)

    with pytest.raises(DataIntegrityError):
        store.read_bars("SPY")


def test_random_bytes_are_one_clear_error_naming_the_partition(store, spy):
    info = store.write_bars("SPY", "1d", spy)
    path = store.root / info.path
    _random_bytes(path)

    with pytest.raises(DataIntegrityError) as caught:
        store.read_bars("SPY")

    message = str(caught.value)
    assert message == f"bars/SPY/1d: {path} is not a readable Parquet file; run {REPAIR_HINT}"


def test_a_file_damaged_after_it_was_checked_is_still_one_clear_error(store, spy):
    info = store.write_bars("SPY", "1d", spy)
    store.read_bars("SPY")
    path = store.root / info.path
    stat = path.stat()
    _random_bytes(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: the cache trusts it

    with pytest.raises(DataIntegrityError, match=r"^bars/SPY/1d: .* cannot be read \(.*\); run `hflite"):
        store.read_bars("SPY")


def test_a_folder_that_cannot_be_created_is_a_store_error_naming_it_and_the_reason(spy):
    store = Store("/proc/hflite-no-such-store")

    with pytest.raises(StoreError) as caught:
        store.write_bars("SPY", "1d", spy)

    assert str(caught.value) == (
        "cannot create the data store folder /proc/hflite-no-such-store: No such file or directory"
    )


# --- repair -------------------------------------------------------------------------------------------


def test_a_healthy_store_needs_no_repair(store, spy):
    store.write_bars("SPY", "1d", spy)
    store.write_bars("SPY", "1d", spy.iloc[:200])

    assert store.repair() == []


def test_repair_restores_the_newest_intact_kept_version_as_a_new_version_from_repair(store, spy):
    store.write_bars("SPY", "1d", spy.iloc[:100])
    kept = store.write_bars("SPY", "1d", spy.iloc[:200])
    damaged = store.write_bars("SPY", "1d", spy)
    _random_bytes(store.root / damaged.path)

    (done,) = store.repair()

    assert done.key == "bars/SPY/1d" and done.repaired
    assert "not a readable Parquet file" in done.problem
    assert done.action == f"restored kept version {kept.version[:12]} as a new version (source repair)"
    assert store.version("bars/SPY/1d") == done.version == kept.version
    current = store.partitions()[0]
    assert current.source == "repair" and current.rows == 200
    pd.testing.assert_frame_equal(store.read_bars("SPY"), spy.iloc[:200].reset_index(drop=True))
    history = store.history("bars/SPY/1d")
    assert [h["hash"] for h in history][-1] == damaged.version
    assert history[-1]["kept"] is False  # its hash stays, its damaged data does not
    assert store.verify() == {}
    assert not (store.root / damaged.path).exists()


def test_repair_of_an_edited_file_keeps_the_version_a_refetch_reproduces(store, spy):
    info = store.write_bars("SPY", "1d", spy, source="yfinance")
    _edit_in_place(store.root / info.path, _bar_times_100)
    asked: list[PartitionInfo] = []

    (done,) = store.repair(refetch=lambda p: asked.append(p) or spy.copy())

    assert [p.key for p in asked] == ["bars/SPY/1d"] and asked[0].source == "yfinance"
    assert done.action == f"re-fetched version {info.version[:12]} (unchanged)"
    assert store.version("bars/SPY/1d") == info.version
    assert store.history("bars/SPY/1d") == []
    assert store.partitions()[0].source == "yfinance"
    pd.testing.assert_frame_equal(store.read_bars("SPY"), spy)
    assert store.verify() == {}


def test_a_refetch_with_other_content_is_recorded_as_a_new_version_from_repair(store, spy):
    info = store.write_bars("SPY", "1d", spy, source="yfinance")
    _random_bytes(store.root / info.path)

    (done,) = store.repair(refetch=lambda p: spy.iloc[:250])

    assert done.repaired and done.version == content_hash(spy.iloc[:250])
    assert done.action == f"re-fetched as new version {done.version[:12]} (source repair)"
    assert store.partitions()[0].source == "repair"
    (previous,) = store.history("bars/SPY/1d")
    assert (previous["hash"], previous["source"], previous["kept"]) == (info.version, "yfinance", False)


def test_without_an_intact_version_or_a_refetch_repair_says_how_to_re_fetch(store, spy):
    info = store.write_bars("SPY", "1d", spy, source="yfinance")
    _random_bytes(store.root / info.path)

    (done,) = store.repair()

    assert not done.repaired and done.version == info.version
    assert done.action == (
        "cannot repair bars/SPY/1d: no intact version retained; re-fetch with "
        "`hflite data fetch --provider yfinance --symbols SPY --timeframe 1d`"
    )
    with pytest.raises(DataIntegrityError):  # left as it was: still refused, still named
        store.read_bars("SPY")


def test_a_refetch_that_fails_is_named_in_the_cannot_repair_line(store, spy):
    info = store.write_bars("SPY", "1d", spy, source="yfinance")
    _random_bytes(store.root / info.path)

    def offline(_: PartitionInfo) -> pd.DataFrame:
        raise DataNotFoundError("offline: yfinance could not be reached")

    (done,) = store.repair(refetch=offline)

    assert done.action == (
        "cannot repair bars/SPY/1d: no intact version retained and the re-fetch failed "
        "(offline: yfinance could not be reached); re-fetch with "
        "`hflite data fetch --provider yfinance --symbols SPY --timeframe 1d`"
    )


def test_repair_drops_the_data_of_a_damaged_kept_version_and_keeps_its_hash(store, spy):
    old = store.write_bars("SPY", "1d", spy)
    current = store.write_bars("SPY", "1d", spy.iloc[:100])
    _random_bytes(store.root / old.path)

    (done,) = store.repair()

    assert done.key == f"bars/SPY/1d@{old.version[:12]}" and done.repaired
    assert done.action == "dropped the damaged data of this kept version; its hash stays in the history"
    assert store.version("bars/SPY/1d") == current.version
    assert store.history("bars/SPY/1d")[0]["hash"] == old.version
    assert store.history("bars/SPY/1d")[0]["kept"] is False
    assert store.verify() == {}
    with pytest.raises(DataNotFoundError, match="pruned"):
        store.read_bars("SPY", version=old.version)


def test_repair_restores_an_archived_partition_with_both_tiers(tmp_path, spy):
    full = _sample("bars/SPY/1d")
    store = Store(tmp_path / "hot", archive_root=tmp_path / "cold")
    info = store.write_bars("SPY", "1d", full, source="yfinance")
    (moved,) = store.archive("3y", now=pd.Timestamp("2025-01-01", tz="UTC"))
    _edit_in_place(Path(moved.path), _nan_close)

    (done,) = store.repair(refetch=lambda p: full)

    assert done.repaired and store.version("bars/SPY/1d") == info.version
    assert store.verify() == {}
    assert store.partitions()[0].archive_rows == moved.archive_rows
    pd.testing.assert_frame_equal(store.read_bars("SPY"), full)


def test_a_repaired_file_is_committed_in_the_manifest(store, spy):
    info = store.write_bars("SPY", "1d", spy.iloc[:100])
    store.write_bars("SPY", "1d", spy)
    _random_bytes(store.root / store.partitions()[0].path)

    store.repair()

    manifest = json.loads(store.manifest_path.read_text())
    entry = manifest["partitions"]["bars/SPY/1d"]
    assert entry["hash"] == info.version and entry["source"] == "repair"


def test_a_kept_copy_with_the_current_hash_restores_the_same_version(store, spy):
    before = store.write_bars("XYZ", "1d", spy, asset_class="equity")
    store.write_bars("XYZ", "1d", spy.iloc[:100], asset_class="equity")
    moved = store.write_bars("XYZ", "1d", spy, asset_class="etf")  # the first content, in another folder
    _random_bytes(store.root / moved.path)

    (done,) = store.repair()

    assert moved.version == before.version
    assert done.action == f"restored version {moved.version[:12]} from a kept copy"
    assert store.version("bars/XYZ/1d") == moved.version and store.partitions()[0].source == ""
    assert store.partitions()[0].path == moved.path  # back in the etf folder, where the manifest says
    pd.testing.assert_frame_equal(store.read_bars("XYZ"), spy)
    assert store.verify() == {}


def test_an_archived_partition_restores_its_kept_version_split_at_the_cutoff(tmp_path, spy):
    full = _sample("bars/SPY/1d")
    store = Store(tmp_path / "hot", archive_root=tmp_path / "cold")
    kept = store.write_bars("SPY", "1d", full.iloc[:-10])
    store.write_bars("SPY", "1d", full)
    (moved,) = store.archive("3y", now=pd.Timestamp("2025-01-01", tz="UTC"))
    _edit_in_place(Path(moved.path), _bar_times_100)

    (done,) = store.repair()

    assert done.version == kept.version == store.version("bars/SPY/1d")
    assert store.partitions()[0].archived_before == pd.Timestamp("2022-01-01", tz="UTC")
    pd.testing.assert_frame_equal(store.read_bars("SPY"), full.iloc[:-10].reset_index(drop=True))
    assert store.verify() == {}
