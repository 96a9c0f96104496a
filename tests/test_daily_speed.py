"""The daily run's speed-ups change no result: the NYSE calendar's disk cache, the numpy row check,
the breaker-trip table from a backtest's precomputed features and the trimmed risk-free build."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.tseries.holiday import USFederalHolidayCalendar
from pandas.tseries.offsets import CustomBusinessDay, DateOffset

from hflite.analytics.metrics import risk_free_daily
from hflite.engine import market
from hflite.engine.core import run_backtest
from hflite.engine.run import make_engine, prepare
from hflite.engine.signals import compute_signals
from tests.conftest import make_settings


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    market._nyse_closes.cache_clear()
    yield tmp_path / "cache"
    market._nyse_closes.cache_clear()


def _same_calendar(got: pd.Series, want: pd.Series) -> None:
    pd.testing.assert_series_equal(got, want, check_exact=True, check_freq=True)
    assert got.dtype == want.dtype and got.index.dtype == want.index.dtype
    assert str(got.index.tz) == str(want.index.tz) == "UTC"
    assert got.index.freq == want.index.freq
    if want.index.freq is not None:
        np.testing.assert_array_equal(got.index.freq.calendar.holidays, want.index.freq.calendar.holidays)
        np.testing.assert_array_equal(got.index.freq.calendar.weekmask, want.index.freq.calendar.weekmask)
        assert got.index.freq.holidays == want.index.freq.holidays
        assert got.index.freq.weekmask == want.index.freq.weekmask
    assert got.name == want.name and got.index.name == want.index.name


def test_the_cached_nyse_calendar_equals_the_computed_one(cache_home, monkeypatch):
    computed = market._compute_nyse_closes()
    first = market._nyse_closes()  # computes and writes the cache
    path = market._nyse_cache_path()
    assert path is not None and path.is_file() and path.is_relative_to(cache_home)
    _same_calendar(first, computed)

    def boom() -> pd.Series:
        raise AssertionError("recomputed although the cache is there")

    market._nyse_closes.cache_clear()
    monkeypatch.setattr(market, "_compute_nyse_closes", boom)
    cached = market._nyse_closes()  # read from the file
    _same_calendar(cached, computed)
    # what callers see: sessions (with their frequency) and availability times
    lo, hi = pd.Timestamp("2024-06-24", tz="UTC"), pd.Timestamp("2024-07-12", tz="UTC")
    sessions = market.nyse_sessions(lo, hi)
    want = computed.index[(computed.index >= lo) & (computed.index <= hi)]
    pd.testing.assert_index_equal(sessions, want, exact=True)
    assert sessions.freq == want.freq


@pytest.mark.parametrize("garbage", [b"", b"not a numpy file", b"PK\x03\x04 truncated zip"])
def test_a_corrupt_cache_file_is_recomputed_and_rewritten(cache_home, garbage):
    path = market._nyse_cache_path()
    assert path is not None
    path.parent.mkdir(parents=True)
    path.write_bytes(garbage)
    computed = market._compute_nyse_closes()
    _same_calendar(market._nyse_closes(), computed)
    market._nyse_closes.cache_clear()
    _same_calendar(market._load_nyse_closes(path), computed)  # a good file again


def test_an_unwritable_cache_dir_never_fails_a_run(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache dir would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    market._nyse_closes.cache_clear()
    try:
        _same_calendar(market._nyse_closes(), market._compute_nyse_closes())
    finally:
        market._nyse_closes.cache_clear()


def _drop_bad_rows_pandas(sym: str, df: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    """The previous (pandas) version, as the reference."""
    prices = df[["open", "high", "low", "close"]]
    bad = prices.isna().any(axis=1) | (prices <= 0).any(axis=1) | df["volume"].isna()
    if bad.any():
        first = pd.Timestamp(df["ts"][bad].iloc[0])
        warnings.append(
            f"{sym}: dropped {int(bad.sum())} bars with NaN or non-positive prices "
            f"(first {first}); the symbol is skipped on those dates"
        )
        df = df[~bad]
    return df.reset_index(drop=True)


@pytest.mark.parametrize("dtype", ["float64", "Float64", "object"])
def test_bad_rows_are_dropped_as_before(dtype):
    rng = np.random.default_rng(5)
    n = 400
    df = pd.DataFrame(
        {
            "ts": pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC"),
            **{c: rng.uniform(1, 2, n) for c in ("open", "high", "low", "close", "volume")},
        }
    )
    for col, rows, value in [
        ("open", [3], np.nan),
        ("high", [10, 11], 0.0),
        ("low", [50], -1.0),
        ("close", [77], np.nan),
        ("volume", [90], np.nan),
        ("volume", [91], 0.0),  # a zero volume is kept
        ("close", [399], -np.inf),
        ("open", [200], np.inf),  # positive: kept, as before
    ]:
        df.loc[rows, col] = value
    df.index = pd.RangeIndex(5, 5 + n)  # the check must not depend on the index
    frames = [df, df.iloc[:0], df.drop(index=[8, 15, 55, 82, 95, 404]), df.iloc[100:120]]
    for frame in frames:
        frame = frame.astype({c: dtype for c in ("open", "high", "low", "close", "volume")})
        got_w: list[str] = []
        want_w: list[str] = []
        got = market._drop_bad_rows("X", frame, got_w)
        want = _drop_bad_rows_pandas("X", frame, want_w)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        assert got_w == want_w


@pytest.mark.parametrize(
    "risk",
    [
        {},
        {"profile": "minimal"},
        {"breakers": {"vol_ratio": 1.5, "sigma": 3.0}},
        {"breakers": {"sigma": 0.0, "volume_spike": 0.0, "vol_ratio": 2.0}},
        {"breakers": {"index": "SPY", "index_move_pct": 2.0}},
    ],
)
def test_breaker_trips_from_precomputed_features_equal_the_block_by_block_ones(sample_store, risk):
    settings = make_settings(
        sample_store,
        run={"symbols": ["SPY", "AAPL", "BTC-USD", "EURUSD"], "benchmarks": []},
        risk=risk,
    )
    prep = prepare(settings, sample_store)
    engine = make_engine(prep, compute_signals(prep.strategy, prep.md))
    run_backtest(engine)
    manager = engine.risk
    assert manager._complete
    fast = manager.breaker_trips()
    # the previous way: every column of every bar, block by block
    manager._complete = False
    manager._features.clear()
    slow = manager.breaker_trips()
    assert fast == slow
    if not risk:
        assert fast  # the default breakers trip on this sample


def _risk_free_reference(fedfunds: pd.DataFrame, index: pd.DatetimeIndex) -> pd.Series:
    """The previous version (every row rolled on the holidays of all its years)."""
    idx = pd.DatetimeIndex(index)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    frame = fedfunds[["date", "value"]].dropna()
    if frame.empty or len(idx) == 0:
        return pd.Series(0.0, index=idx, name="risk_free")
    month_start = pd.to_datetime(frame["date"], utc=True).dt.normalize()
    next_month = month_start.dt.tz_localize(None) + DateOffset(months=1)
    first, last = int(next_month.min().year), int(next_month.max().year) + 1
    bday = CustomBusinessDay(holidays=USFederalHolidayCalendar().holidays(f"{first}-01-01", f"{last}-12-31"))
    known = pd.DatetimeIndex([bday.rollforward(ts) for ts in next_month]).tz_localize("UTC")
    rates = pd.Series(frame["value"].to_numpy(dtype="float64"), index=known).sort_index(kind="stable")
    rates = rates[~rates.index.duplicated(keep="last")]
    pos = rates.index.searchsorted(idx, side="right") - 1
    values = np.where(pos >= 0, rates.to_numpy()[np.clip(pos, 0, None)], 0.0)
    return pd.Series(values, index=idx, name="risk_free")


def test_risk_free_daily_gives_what_every_row_gives(sample_store):
    fed = sample_store.read_series("FEDFUNDS")
    rng = np.random.default_rng(11)
    some_days = pd.date_range("1975-01-01", "2026-12-31", freq="D", tz="UTC")
    indexes = [
        pd.date_range("2015-01-02", "2024-12-06", freq="B", tz="UTC") + pd.Timedelta(hours=21),
        pd.date_range("1999-12-25", "2000-01-10", freq="D", tz="UTC"),
        pd.date_range("2000-01-01", "2000-03-01", freq="h", tz="UTC"),
        pd.date_range("1950-01-01", "2030-01-01", freq="W", tz="UTC"),
        pd.date_range("2030-01-01", "2031-01-01", freq="D", tz="UTC"),
        pd.DatetimeIndex(rng.choice(some_days.asi8, 300)).tz_localize("UTC"),  # unsorted
        pd.DatetimeIndex([], tz="UTC"),
    ]
    dates = pd.to_datetime(fed["date"])
    frames = [
        fed,
        fed.sample(frac=1.0, random_state=3).reset_index(drop=True),  # unsorted
        pd.concat([fed, fed.assign(value=fed["value"] + 1)]).reset_index(drop=True),  # duplicates
        fed.iloc[::7].reset_index(drop=True),  # gaps
        fed.assign(date=dates + pd.Timedelta(days=1)),  # not month starts
        pd.concat([fed.assign(date=dates + pd.Timedelta(days=d), value=fed["value"] + d) for d in range(6)]),
        fed.iloc[-3:],
    ]
    for frame in frames:
        for idx in indexes:
            pd.testing.assert_series_equal(
                risk_free_daily(frame, idx), _risk_free_reference(frame, idx), check_exact=True
            )


def _available_at_reindex(symbol: str, ts: pd.DatetimeIndex) -> tuple[np.ndarray, list[str]]:
    """The previous XNYS daily path (``reindex`` on the calendar), as the reference."""
    notes: list[str] = []
    mapped = market._nyse_closes().reindex(ts)
    off = mapped.isna()
    if off.any():
        notes.append(
            f"{symbol}: {int(off.sum())} bars on non-NYSE days "
            f"(first {ts[off][0].date()}) stamped at 16:00 New York"
        )
        fallback = (
            (ts[off].tz_localize(None) + pd.Timedelta(hours=16))
            .tz_localize("America/New_York")
            .tz_convert("UTC")
        )
        mapped[off] = fallback
    return market.ns(pd.DatetimeIndex(mapped)), notes


def test_nyse_availability_times_are_those_of_the_calendar_lookup():
    from hflite.domain.instrument import instrument_for

    spy = instrument_for("SPY")
    days = pd.date_range("1994-12-20", "2031-01-10", freq="D", tz="UTC")
    rng = np.random.default_rng(3)
    indexes = [
        pd.date_range("2015-01-02", "2024-12-06", freq="B", tz="UTC"),  # holidays are off
        market.nyse_sessions(days[0], days[-1]),  # every session, none off
        days,  # before and after the calendar's span too
        pd.DatetimeIndex(rng.choice(days.asi8, 500)).tz_localize("UTC"),  # unsorted, duplicates
        pd.DatetimeIndex([], tz="UTC"),
        pd.date_range("2020-03-01", "2020-03-20", freq="D", tz="UTC").as_unit("s"),  # another unit
    ]
    for ts in indexes:
        got, got_notes = market.available_at(spy, "1d", ts)
        want, want_notes = _available_at_reindex("SPY", ts)
        assert got.dtype == want.dtype == np.int64
        np.testing.assert_array_equal(got, want)
        assert got_notes == want_notes
