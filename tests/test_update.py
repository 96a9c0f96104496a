"""Incremental, idempotent updates: a fake provider serving real SPY bars, with faults on demand."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hflite.data.providers import MissingKeyError, TransientError
from hflite.data.store import Store
from hflite.data.update import UpdateItem, Updater

DAY = pd.Timedelta(days=1)


class FakeProvider:
    """Serves a fixed frame of bars; can revise, re-adjust, hide bars or fail."""

    name = "fake"

    def __init__(
        self, frame: pd.DataFrame, *, hide: set[pd.Timestamp] = frozenset(), fail: Exception | None = None
    ):
        self.frame, self.hide, self.fail = frame.copy(), set(hide), fail
        self.calls: list[tuple[pd.Timestamp, pd.Timestamp]] = []

    def bars(self, symbol, freq, start, end):
        self.calls.append((start, end))
        if self.fail:
            raise self.fail
        f = self.frame[(self.frame.ts >= start.normalize()) & (self.frame.ts <= end)]
        return f[~f.ts.isin(self.hide)].reset_index(drop=True)

    def close(self):
        return None


@pytest.fixture(scope="module")
def spy(sample_store) -> pd.DataFrame:
    return sample_store.read_bars("SPY", "1d", "2023-01-01", "2023-12-29")


def updater(store, provider, now="2023-12-29") -> Updater:
    return Updater(
        store,
        now=pd.Timestamp(now, tz="UTC"),
        history_start=pd.Timestamp("2023-01-01", tz="UTC"),
        factory=lambda name, **kw: provider,
    )


ITEM = UpdateItem("bars", "fake", "SPY", "1d", "etf")


def test_a_first_update_loads_the_history_and_a_second_changes_nothing(tmp_path, spy):
    store = Store(tmp_path)
    provider = FakeProvider(spy)
    first = updater(store, provider).run([ITEM])[0]
    assert (first.status, first.rows) == ("updated", len(spy))
    version = store.version("bars/SPY/1d")
    second = updater(store, provider).run([ITEM])[0]
    assert second.status == "unchanged" and store.version("bars/SPY/1d") == version
    # the second run asked only for the last 5 bars (the overlap), not the whole history
    assert provider.calls[-1][0] == spy.ts.iloc[-5]


def test_new_bars_are_appended_incrementally(tmp_path, spy):
    store = Store(tmp_path)
    updater(store, FakeProvider(spy), now="2023-06-30").run([ITEM])
    rows_mid = len(store.read_bars("SPY"))
    result = updater(store, FakeProvider(spy)).run([ITEM])[0]
    assert result.status == "updated" and result.rows == len(spy) - rows_mid
    pd.testing.assert_frame_equal(store.read_bars("SPY").reset_index(drop=True), spy.reset_index(drop=True))


def test_a_revised_bar_in_the_overlap_replaces_the_stored_one_and_is_counted(tmp_path, spy):
    store = Store(tmp_path)
    updater(store, FakeProvider(spy)).run([ITEM])
    revised = spy.copy()
    revised.loc[revised.index[-2], "close"] += 0.5  # one bar corrected by the vendor
    result = updater(store, FakeProvider(revised)).run([ITEM])[0]
    assert (result.status, result.revisions) == ("updated", 1)
    assert store.read_bars("SPY").close.iloc[-2] == pytest.approx(spy.close.iloc[-2] + 0.5)


def test_a_vendor_re_adjustment_refetches_the_whole_history(tmp_path, spy):
    store = Store(tmp_path)
    updater(store, FakeProvider(spy)).run([ITEM])
    adjusted = spy.copy()
    for c in ("open", "high", "low", "close"):
        adjusted[c] = adjusted[c] * 0.99  # a dividend: every past price scaled
    provider = FakeProvider(adjusted)
    result = updater(store, provider).run([ITEM])[0]
    assert "re-adjusted" in result.message and "x0.990000" in result.message
    assert store.read_bars("SPY").close.iloc[0] == pytest.approx(spy.close.iloc[0] * 0.99)
    assert provider.calls[1][0] == pd.Timestamp("2023-01-01", tz="UTC")  # the refetch from the start


def test_gaps_the_vendor_has_are_backfilled_and_the_others_recorded_once(tmp_path, spy):
    store = Store(tmp_path)
    hole_a, hole_b = spy.ts.iloc[40], spy.ts.iloc[41]
    store.write_bars("SPY", "1d", spy[~spy.ts.isin([hole_a, hole_b])], asset_class="etf")
    provider = FakeProvider(spy, hide={hole_b})  # the vendor has hole_a but not hole_b
    result = updater(store, provider).run([ITEM])[0]
    assert (result.gaps_filled, result.gaps_recorded) == (1, 1)
    assert hole_a in set(store.read_bars("SPY").ts)
    recorded = store.read_table("gaps")
    assert list(recorded.ts) == [hole_b] and recorded.provider.iloc[0] == "fake"
    again = updater(store, provider).run([ITEM])[0]
    assert (again.gaps_filled, again.gaps_recorded) == (0, 0)  # a recorded gap is not asked for again


def test_an_unreachable_provider_is_skipped_and_the_store_keeps_its_data(tmp_path, spy):
    store = Store(tmp_path)
    store.write_bars("SPY", "1d", spy, asset_class="etf")
    down = FakeProvider(
        spy,
        fail=TransientError(
            "fake", "connection failed (ConnectError) (gave up after 4 tries)", unreachable=True
        ),
    )
    other = UpdateItem("bars", "fake", "QQQ", "1d", "etf")
    results = updater(store, down).run([ITEM, other])
    assert [r.status for r in results] == ["skipped", "skipped"]
    assert (
        "offline" in results[0].message
        and "keeps its data for SPY (last bar 2023-12-29" in results[0].message
    )
    assert len(down.calls) == 1  # the second item did not try again


def test_a_missing_key_stops_only_that_provider_and_names_the_variable(tmp_path, spy):
    store = Store(tmp_path)

    def factory(name, **kw):
        if name == "needs_key":
            raise MissingKeyError("needs_key", "no API key: set NEEDS_KEY in the environment or .env")
        return FakeProvider(spy)

    up = Updater(
        store,
        now=pd.Timestamp("2023-12-29", tz="UTC"),
        history_start=pd.Timestamp("2023-01-01", tz="UTC"),
        factory=factory,
    )
    results = up.run([UpdateItem("bars", "needs_key", "SPY", "1d", "etf"), ITEM])
    assert results[0].status == "skipped" and "NEEDS_KEY" in results[0].message
    assert results[1].status == "updated"


def test_bad_rows_are_quarantined_with_their_rule_not_stored(tmp_path, spy):
    store = Store(tmp_path)
    bad = spy.copy()
    bad.loc[bad.index[10], "high"] = bad.loc[bad.index[10], "low"] * 0.9  # high below low
    result = updater(store, FakeProvider(bad)).run([ITEM])[0]
    assert result.quarantined == 1
    assert bad.ts.iloc[10] not in set(store.read_bars("SPY").ts)
    q = store.read_table("quarantine")
    assert q.loc[q.ts == bad.ts.iloc[10], "rule"].iloc[0] == "ohlc_inconsistent"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(20, 240), runs=st.integers(2, 3))
def test_updating_is_idempotent_wherever_the_store_stopped(tmp_path_factory, spy, cut, runs):
    store = Store(tmp_path_factory.mktemp("idem"))
    store.write_bars("SPY", "1d", spy.iloc[:cut], asset_class="etf")
    for _ in range(runs):
        updater(store, FakeProvider(spy)).run([ITEM])
    version = store.version("bars/SPY/1d")
    assert updater(store, FakeProvider(spy)).run([ITEM])[0].status == "unchanged"
    assert store.version("bars/SPY/1d") == version
    pd.testing.assert_frame_equal(store.read_bars("SPY").reset_index(drop=True), spy.reset_index(drop=True))
