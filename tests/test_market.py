"""When each bar becomes known, and how symbols merge onto one timeline."""

from __future__ import annotations

import pandas as pd

from hflite.domain.instrument import SAMPLE_INSTRUMENTS
from hflite.engine.market import available_at, build_market, calendar_gaps


def utc(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(list(stamps), utc=True))


def known(symbol: str, day: str, freq: str = "1d") -> pd.Timestamp:
    ns, _ = available_at(SAMPLE_INSTRUMENTS[symbol], freq, utc(day))
    return pd.Timestamp(int(ns[0]), tz="UTC")


def test_a_us_equity_daily_bar_is_known_at_the_nyse_close():
    assert known("SPY", "2024-07-01") == pd.Timestamp("2024-07-01 20:00", tz="UTC")  # 16:00 EDT
    assert known("SPY", "2024-01-02") == pd.Timestamp("2024-01-02 21:00", tz="UTC")  # 16:00 EST


def test_an_early_close_day_is_known_at_13_00_new_york():
    assert known("SPY", "2019-11-29") == pd.Timestamp("2019-11-29 18:00", tz="UTC")


def test_a_crypto_daily_bar_is_known_at_the_end_of_its_utc_day():
    assert known("BTC-USD", "2024-03-09") == pd.Timestamp("2024-03-10 00:00", tz="UTC")


def test_an_fx_daily_bar_is_known_at_17_00_new_york():
    assert known("EURUSD", "2024-01-02") == pd.Timestamp("2024-01-02 22:00", tz="UTC")


def test_an_hourly_bar_is_known_an_hour_after_it_opens():
    assert known("BTCUSDT", "2023-01-01 05:00", "1h") == pd.Timestamp("2023-01-01 06:00", tz="UTC")


def test_calendar_gaps_follow_each_instrument_s_calendar():
    # Good Friday 2024-03-29 is no NYSE session: not a gap. 2024-04-02 is missing: a gap.
    spy = calendar_gaps(SAMPLE_INSTRUMENTS["SPY"], "1d", utc("2024-03-28", "2024-04-01", "2024-04-03"))
    assert list(spy.date.astype(str)) == ["2024-04-02"]
    # crypto trades at weekends: a missing Saturday is a gap
    btc = calendar_gaps(SAMPLE_INSTRUMENTS["BTC-USD"], "1d", utc("2024-03-08", "2024-03-10"))
    assert list(btc.date.astype(str)) == ["2024-03-09"]


def test_the_timeline_orders_bars_by_when_they_became_known(sample_store):
    start, end = pd.Timestamp("2024-03-07", tz="UTC"), pd.Timestamp("2024-03-11", tz="UTC")
    frames = {s: sample_store.read_bars(s, "1d", "2024-03-01", "2024-03-12") for s in ("SPY", "BTC-USD")}
    md = build_market(
        frames, {s: SAMPLE_INSTRUMENTS[s] for s in frames}, ["SPY", "BTC-USD"], "1d", start, end
    )
    times = pd.to_datetime(md.timeline, utc=True)
    # Thu SPY close (21:00), Fri 00:00 BTC(Thu), Fri 21:00 SPY, Sat 00:00 BTC(Fri), Sun 00:00 BTC(Sat), ...
    assert list(times[:5].strftime("%a %H:%M")) == [
        "Thu 21:00",
        "Fri 00:00",
        "Fri 21:00",
        "Sat 00:00",
        "Sun 00:00",
    ]
    assert md.group(0) == [("SPY", md.bars["SPY"].first_live)]
