"""Issue 12, data that reached a backtest unflagged: level shifts, bars off the calendar, conflicting
duplicate timestamps, and staleness measured in the instrument's own sessions or bars."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from hflite.data.providers.base import DUPLICATES_COLLAPSED, collapse_duplicates
from hflite.data.providers.polygon import PolygonProvider
from hflite.data.quality import (
    QUARANTINE_RULES,
    RULES,
    bar_age,
    check_store,
    read_quarantine,
    render_quality_table,
    validate_bars,
    write_quality_html,
)
from hflite.data.store import Store
from hflite.data.update import UpdateItem, Updater
from hflite.domain.instrument import instrument_for
from hflite.engine.market import nyse_sessions
from tests.providers import case_coingecko as coingecko_case
from tests.providers.case_polygon import AAPL, KEY
from tests.providers.contract import fast_options
from tests.providers.server import FixtureServer, Route, fixture

SPY = instrument_for("SPY")
AAPL_STOCK = instrument_for("AAPL")
BTC = instrument_for("BTC-USD")
EURUSD = instrument_for("EURUSD")
UTC = "UTC"


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


def sessions(start: str, end: str) -> pd.DatetimeIndex:
    return nyse_sessions(day(start), day(end))


def bars(ts: pd.DatetimeIndex, *, seed: int = 3, vol: float = 0.01, volume: float = 1e6) -> pd.DataFrame:
    """Consistent bars on ``ts`` (a random walk; open at the previous close, 0.1 % wicks)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, len(ts))))
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame(
        {
            "ts": ts,
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": np.full(len(ts), volume),
        }
    )


def rescale(df: pd.DataFrame, rows: slice, price: float, volume: float = 1.0) -> pd.DataFrame:
    """A copy with every price of ``rows`` times ``price`` and their volume times ``volume``."""
    out = df.copy()
    out.loc[rows, ["open", "high", "low", "close"]] *= price
    out.loc[rows, "volume"] *= volume
    return out


# --- level shifts ----------------------------------------------------------------------------------


def test_a_sustained_hundredfold_jump_is_quarantined_from_the_shift_on():
    ts = sessions("2023-01-03", "2023-10-20")
    df = rescale(bars(ts), slice(150, None), 100.0)
    v = validate_bars(df, SPY, "1d")
    assert list(v.quarantined.index) == list(range(150, len(df)))
    assert set(v.quarantined["rule"]) == {"level_shift"}
    detail = v.quarantined["detail"].iloc[0]
    assert "persistent jump x100" in detail and "no split signature" in detail
    assert list(v.clean.index) == list(range(150))
    assert v.count("large_move") == 0 and not v.ok


def test_a_level_shift_near_the_start_quarantines_the_shorter_side_before_it():
    ts = sessions("2023-01-03", "2023-10-20")
    df = rescale(bars(ts), slice(0, 19), 0.01)  # rows 0..19 a hundred times too low
    v = validate_bars(df, SPY, "1d")
    assert list(v.quarantined.index) == list(range(20))
    assert set(v.quarantined["rule"]) == {"level_shift"}
    assert v.clean["ts"].iloc[0] == ts[20]


def test_a_bad_stretch_that_comes_back_quarantines_only_the_stretch():
    ts = sessions("2023-01-03", "2023-10-20")
    df = rescale(bars(ts), slice(100, 129), 100.0)
    v = validate_bars(df, SPY, "1d")
    assert list(v.quarantined.index) == list(range(100, 130))
    assert len(v.clean) == len(df) - 30 and v.count("large_move") == 0


def test_a_tenfold_drop_with_volume_up_tenfold_is_a_likely_unadjusted_split():
    ts = sessions("2023-01-03", "2023-10-20")
    df = rescale(bars(ts), slice(150, None), 0.1, volume=10.0)
    v = validate_bars(df, AAPL_STOCK, "1d")
    assert list(v.quarantined.index) == list(range(150, len(df)))
    assert "likely unadjusted split 1:10" in v.quarantined["detail"].iloc[0]
    assert v.level_shifts["ts"].tolist() == [ts[150]]
    assert v.level_shifts["split"].tolist() == [10.0]


def test_a_halving_is_a_large_move_unless_the_corporate_actions_list_a_split_that_day():
    ts = sessions("2023-01-03", "2023-10-20")
    df = rescale(bars(ts), slice(150, None), 0.5, volume=2.0)
    plain = validate_bars(df, AAPL_STOCK, "1d")
    assert plain.quarantined.empty and ts[150] in set(plain.large_moves["ts"])  # like AAPL 2000-09-29
    listed = validate_bars(df, AAPL_STOCK, "1d", splits=pd.Series({ts[150]: 2.0}))
    assert list(listed.quarantined.index) == list(range(150, len(df)))
    detail = listed.quarantined["detail"].iloc[0]
    assert "likely unadjusted split 1:2" in detail and "corporate actions list a 2-for-1 split" in detail


def test_level_shift_is_a_documented_quarantine_rule():
    assert "level_shift" in QUARANTINE_RULES and "level_shift" in RULES


# --- bars off the calendar -------------------------------------------------------------------------


def test_daily_bars_on_nyse_holidays_are_quarantined_naming_the_holiday():
    ts = sessions("2026-03-02", "2026-06-30").union(pd.DatetimeIndex([day("2026-04-03"), day("2026-06-19")]))
    df = bars(ts)
    v = validate_bars(df, SPY, "1d")
    off = v.quarantined[v.quarantined["rule"] == "off_calendar"]
    assert off["ts"].tolist() == [day("2026-04-03"), day("2026-06-19")]
    assert off["detail"].tolist() == [
        "2026-04-03 is not an XNYS session (Good Friday)",
        "2026-06-19 is not an XNYS session (Juneteenth National Independence Day)",
    ]
    assert day("2026-04-03") not in set(v.clean["ts"]) and len(v.clean) == len(df) - 2


def test_a_saturday_daily_bar_is_off_the_nyse_calendar():
    ts = sessions("2024-01-02", "2024-03-28").union(pd.DatetimeIndex([day("2024-02-10")]))
    v = validate_bars(bars(ts), SPY, "1d")
    assert v.quarantined["detail"].tolist() == ["2024-02-10 is not an XNYS session (a Saturday)"]


def test_intraday_nyse_bars_must_open_within_the_session_early_closes_included():
    regular = pd.date_range("2024-11-26 14:30", periods=7, freq="h", tz=UTC)  # 09:30..15:30 New York
    early = pd.date_range("2024-11-29 14:30", periods=5, freq="h", tz=UTC)  # closes 13:00 New York
    ts = (
        regular.append(early)
        .append(pd.DatetimeIndex([pd.Timestamp("2024-11-27 21:30", tz=UTC)]))
        .sort_values()
    )
    v = validate_bars(bars(ts), SPY, "1h")
    off = v.quarantined[v.quarantined["rule"] == "off_calendar"]
    assert off["ts"].tolist() == [
        pd.Timestamp("2024-11-27 21:30", tz=UTC),
        pd.Timestamp("2024-11-29 18:30", tz=UTC),
    ]
    assert off["detail"].tolist() == [
        "2024-11-27 21:30 is outside the XNYS session (14:30-21:00 UTC)",
        "2024-11-29 18:30 is outside the XNYS session (14:30-18:00 UTC)",
    ]


def test_fx_weekend_days_are_off_calendar_and_weekdays_are_not():
    ts = pd.bdate_range("2024-01-01", "2024-03-29", tz=UTC).union(
        pd.DatetimeIndex([day("2024-02-10"), day("2024-02-11")])  # a Saturday and a Sunday
    )
    v = validate_bars(bars(ts, vol=0.002, volume=0.0), EURUSD, "1d")
    assert v.quarantined["ts"].tolist() == [day("2024-02-10"), day("2024-02-11")]
    assert v.quarantined["detail"].iloc[0] == "2024-02-10 is not a 24/5 FX day (a Saturday)"


def test_intraday_fx_trades_from_sunday_to_friday_five_pm_new_york():
    ts = pd.date_range("2024-03-01 18:00", "2024-03-04 00:00", freq="h", tz=UTC)  # Friday .. Monday
    v = validate_bars(bars(ts, vol=0.001, volume=0.0), EURUSD, "1h")
    off = pd.DatetimeIndex(v.quarantined["ts"])
    assert off[0] == pd.Timestamp("2024-03-01 22:00", tz=UTC)  # Friday 17:00 New York (EST)
    assert off[-1] == pd.Timestamp("2024-03-03 21:00", tz=UTC)  # Sunday 16:00 New York
    assert len(off) == 48 and set(v.quarantined["rule"]) == {"off_calendar"}


def test_crypto_trades_every_day_so_nothing_is_off_calendar():
    v = validate_bars(bars(pd.date_range("2024-01-01", periods=90, freq="D", tz=UTC)), BTC, "1d")
    assert v.quarantined.empty


# --- duplicate timestamps --------------------------------------------------------------------------


def test_conflicting_duplicates_quarantine_every_version_and_keep_none():
    ts = sessions("2024-01-02", "2024-03-28")
    df = bars(ts)
    other = df.iloc[[10]].assign(close=df.loc[10, "close"] * 1.02, high=df.loc[10, "high"] * 1.02)
    df = pd.concat([df, other], ignore_index=True)
    v = validate_bars(df, SPY, "1d")
    conflict = v.quarantined[v.quarantined["rule"] == "duplicate_conflict"]
    assert list(conflict.index) == [10, len(df) - 1]
    assert "different values" in conflict["detail"].iloc[0] and "close" in conflict["detail"].iloc[0]
    assert ts[10] not in set(v.clean["ts"]) and v.count("duplicate_conflict") == 2


def test_an_exact_duplicate_keeps_one_row_and_quarantines_the_copy():
    df = bars(sessions("2024-01-02", "2024-03-28"))
    df = pd.concat([df, df.iloc[[10]]], ignore_index=True)
    v = validate_bars(df, SPY, "1d")
    assert v.quarantined["rule"].tolist() == ["duplicate_ts"] and list(v.quarantined.index) == [len(df) - 1]
    assert df.loc[10, "ts"] in set(v.clean["ts"])


def test_providers_collapse_exact_copies_and_keep_conflicting_rows_for_validation():
    df = bars(sessions("2024-01-02", "2024-01-31"))
    frame = pd.concat([df, df.iloc[[3]], df.iloc[[5]].assign(close=999.0)], ignore_index=True)
    out = collapse_duplicates(frame)
    assert len(out) == len(df) + 1 and out.attrs[DUPLICATES_COLLAPSED] == 1
    assert out["ts"].is_monotonic_increasing
    assert sorted(out.loc[out["ts"] == df.loc[5, "ts"], "close"]) == [df.loc[5, "close"], 999.0]


def test_polygon_keeps_both_versions_of_a_repeated_aggregate():
    payload = json.loads(fixture("polygon", "aggs_aapl_day.json"))
    payload["results"] += [dict(payload["results"][1], c=190.0, h=190.5), dict(payload["results"][2])]
    with FixtureServer([Route(AAPL, payload)]) as srv:
        frame = PolygonProvider(key=KEY, url=srv.url, options=fast_options()).bars(
            "AAPL", "1d", day("2024-01-02"), day("2024-01-08")
        )
    assert len(frame) == 6 and frame.attrs[DUPLICATES_COLLAPSED] == 1
    assert sorted(frame.loc[frame["ts"] == day("2024-01-03"), "close"]) == [184.25, 190.0]


def test_coingecko_returns_a_day_built_from_a_conflicting_candle_once_per_version():
    candles = json.loads(fixture("coingecko", "ohlc_bitcoin_7d.json"))
    at, open_, _, low, close = candles[5]  # the candle closing 2023-12-20 12:00
    candles += [[at, open_, 45000.0, low, close], list(candles[7])]  # a conflicting and an exact repeat
    routes = [Route(r"/api/v3/coins/bitcoin/ohlc", candles), coingecko_case.VOLUMES]
    with FixtureServer(routes) as srv:
        frame = coingecko_case.make(srv.url, None).bars("BTC-USD", "1d", day("2023-12-20"), day("2023-12-24"))
    assert len(frame) == 6 and frame.attrs[DUPLICATES_COLLAPSED] == 0  # the exact copy never made a day
    assert sorted(frame.loc[frame["ts"] == day("2023-12-20"), "high"]) == [44283.0, 45000.0]


class FakeProvider:
    """Serves a fixed frame of bars through the providers' duplicate handling."""

    name = "fake"

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.calls: list[tuple[pd.Timestamp, pd.Timestamp]] = []

    def bars(self, symbol, freq, start, end):
        self.calls.append((start, end))
        f = self.frame[(self.frame.ts >= start.normalize()) & (self.frame.ts <= end)]
        return collapse_duplicates(f.reset_index(drop=True))

    def close(self):
        return None


def updater(store: Store, provider: FakeProvider, now: str = "2023-12-29") -> Updater:
    return Updater(
        store,
        now=pd.Timestamp(now, tz=UTC),
        history_start=day("2023-01-01"),
        factory=lambda name, **kw: provider,
    )


ITEM = UpdateItem("bars", "fake", "SPY", "1d", "etf")


def test_a_conflicting_duplicate_goes_from_provider_to_quarantine_to_the_data_check(tmp_path, sample_store):
    spy = sample_store.read_bars("SPY", "1d", "2023-01-01", "2023-12-29")
    when = spy.ts.iloc[100]
    served = pd.concat(
        [
            spy,
            spy.iloc[[100]].assign(close=spy.close.iloc[100] + 1.0, high=spy.high.iloc[100] + 1.0),
            spy.iloc[[120]],
        ],
        ignore_index=True,
    )
    store = Store(tmp_path)
    result = updater(store, FakeProvider(served)).run([ITEM])[0]
    assert result.quarantined == 2 and "1 exact duplicate" in result.message
    assert when not in set(store.read_bars("SPY").ts)
    q = read_quarantine(store)
    assert q.loc[q.ts == when, "rule"].tolist() == ["duplicate_conflict", "duplicate_conflict"]
    assert sorted(q.loc[q.ts == when, "close"]) == [spy.close.iloc[100], spy.close.iloc[100] + 1.0]
    report = check_store(store)
    assert report.count("bars/SPY/1d", "duplicate_conflict") == 2
    assert "quarantine table" in report.issue("bars/SPY/1d", "duplicate_conflict").detail


def test_an_update_with_new_bars_a_hundred_times_higher_stores_none_of_them(tmp_path, sample_store):
    spy = sample_store.read_bars("SPY", "1d", "2023-01-01", "2023-12-29")
    store = Store(tmp_path)
    store.write_bars("SPY", "1d", spy.iloc[:200], asset_class="etf")
    served = rescale(spy, slice(200, None), 100.0)
    result = updater(store, FakeProvider(served)).run([ITEM])[0]
    assert result.quarantined == len(spy) - 200
    assert store.read_bars("SPY").ts.iloc[-1] == spy.ts.iloc[199]
    assert set(read_quarantine(store)["rule"]) == {"level_shift"}


def test_a_split_like_shift_is_reconciled_against_the_vendors_adjusted_history(tmp_path, sample_store):
    spy = sample_store.read_bars("SPY", "1d", "2023-01-01", "2023-12-29")
    store = Store(tmp_path)
    store.write_bars("SPY", "1d", spy.iloc[:200], asset_class="etf")
    adjusted = rescale(spy, slice(None), 0.25, volume=4.0)  # after a 4:1 split, history re-adjusted

    class Vendor(FakeProvider):
        def bars(self, symbol, freq, start, end):
            frame = super().bars(symbol, freq, start, end)
            if len(self.calls) == 1:  # the incremental request: old stored level, new bars split
                frame = frame[frame.ts >= spy.ts.iloc[195]]
                return collapse_duplicates(frame.reset_index(drop=True))
            return frame

    provider = Vendor(adjusted)
    result = updater(store, provider).run([ITEM])[0]
    assert "split" in result.message and provider.calls[-1][0] == day("2023-01-01")
    assert store.read_bars("SPY").close.iloc[0] == pytest.approx(spy.close.iloc[0] * 0.25)
    assert len(store.read_bars("SPY")) == len(spy)


# --- staleness and the report ----------------------------------------------------------------------


def test_bar_age_counts_the_calendars_sessions_or_bars_since_the_last_bar():
    now = pd.Timestamp("2024-12-16 22:00", tz=UTC)  # Monday after the close
    assert bar_age(SPY, "1d", day("2024-12-06"), now) == (6, "sessions")
    assert bar_age(BTC, "1d", day("2024-12-06"), now) == (9, "bars")
    assert bar_age(EURUSD, "1d", day("2024-12-06"), now) == (6, "bars")
    assert bar_age(SPY, "1d", day("2024-12-13"), pd.Timestamp("2024-12-16 12:00", tz=UTC)) == (0, "sessions")


def test_a_stock_that_ended_long_ago_is_stale_with_its_age_in_sessions(sample_store):
    report = check_store(sample_store, now=pd.Timestamp("2026-12-07 22:00", tz=UTC))
    stale = report.issue("bars/AAPL/1d", "stale")
    expected = len(nyse_sessions(day("2024-12-07"), day("2026-12-07")))
    assert stale is not None and stale.severity == "warning"
    assert f"last bar 2024-12-06, {expected} sessions old" in stale.detail
    assert report.partition("bars/AAPL/1d").age == (expected, "sessions")


@pytest.fixture(scope="module")
def now_report(sample_store):
    return check_store(sample_store, now=pd.Timestamp("2026-04-01 12:00", tz=UTC))


def test_the_quality_table_fits_eighty_columns_without_wrapping_or_truncating(now_report):
    console = Console(width=80, record=True)
    console.print(render_quality_table(now_report))
    lines = console.export_text().splitlines()
    header = next(line for line in lines if line.startswith("partition"))
    assert header.split() == ["partition", "rows", "vol=0", "move", "gap", "stale", "age", "status"]
    aapl = next(line for line in lines if line.startswith("bars/AAPL/1d"))
    assert aapl.split() == ["bars/AAPL/1d", "6273", ".", "5", ".", "1", "327", "sessions", "check"]
    assert not any("…" in line for line in lines) and all(len(line) <= 80 for line in lines)
    assert not any(".000" in line for line in lines)


def test_the_wide_table_shows_every_rule_column(now_report):
    console = Console(width=200, record=True)
    console.print(render_quality_table(now_report, wide=True))
    header = next(line for line in console.export_text().splitlines() if line.startswith("partition"))
    assert ["dup", "conflict", "offcal", "spike", "shift"] == [
        c for c in header.split() if c in ("dup", "conflict", "offcal", "shift", "spike")
    ]


def test_the_html_summary_has_an_age_column(now_report, tmp_path):
    page = write_quality_html(now_report, tmp_path / "q.html").read_text(encoding="utf-8")
    assert "<th>age</th>" in page and "<td>327 sessions</td>" in page
