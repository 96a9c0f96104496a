"""Data quality: each rule on hand-made bars, invariants under random corruption, the real sample's
documented facts (shared/data/SOURCES.md), the quarantine table, and the table and HTML reports."""

from __future__ import annotations

import html
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from hflite.data.quality import (
    DAILY_MOVE_THRESHOLD,
    QUARANTINE_RULES,
    RULES,
    QualityReport,
    check_store,
    quarantine,
    read_quarantine,
    render_quality_table,
    validate_bars,
    write_quality_html,
)
from hflite.data.sample import ensure_sample
from hflite.data.store import Store
from hflite.domain.instrument import instrument_for
from hflite.engine.market import nyse_sessions

SPY = instrument_for("SPY")  # NYSE calendar, volume in shares
BTC = instrument_for("BTC-USD")  # 24/7, volume in USD
BTC_1H = instrument_for("BTCUSDT")  # 24/7, Binance hourly
EURUSD = instrument_for("EURUSD")  # 24/5, no volume published


def bars(
    closes: list[float] | np.ndarray, ts: pd.DatetimeIndex | None = None, volume: float = 1e3
) -> pd.DataFrame:
    """Consistent bars through ``closes``: open at the previous close, a 0.1 % wick each side."""
    close = np.asarray(closes, dtype=float)
    open_ = np.r_[close[0], close[:-1]]
    if ts is None:
        ts = pd.date_range("2024-01-01", periods=len(close), freq="D", tz="UTC")
    return pd.DataFrame(
        {
            "ts": ts,
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": np.full(len(close), volume),
        }
    )


def walk(n: int, seed: int = 1, vol: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(rng.normal(0, vol, n)))


def rules_of(v, row: int) -> list[str]:
    return sorted(v.quarantined.loc[[row], "rule"]) if row in v.quarantined.index else []


# --- clean data and schema -------------------------------------------------------------------------


def test_clean_bars_pass_every_rule_unchanged():
    df = bars(walk(200))
    v = validate_bars(df, BTC, "1d")
    assert v.ok and v.issues == [] and v.quarantined.empty and len(v.gaps) == 0
    pd.testing.assert_frame_equal(v.clean, df)


@pytest.mark.parametrize(
    ("change", "column"),
    [
        (lambda df: df.drop(columns="volume"), "volume"),
        (lambda df: df.assign(ts=df["ts"].dt.tz_localize(None)), "ts"),
        (lambda df: df.assign(ts=df["ts"].astype(str)), "ts"),
        (lambda df: df.assign(close=df["close"].astype(str)), "close"),
        (lambda df: df.assign(open=df["open"] > 0), "open"),
    ],
)
def test_a_frame_that_is_not_bars_is_refused_whole_naming_the_column(change, column):
    with pytest.raises(ValueError, match=rf"schema: .*{column}"):
        validate_bars(change(bars(walk(10))), BTC, "1d")


def test_extra_columns_and_integer_volume_are_accepted_and_kept():
    df = bars(walk(30)).assign(volume=lambda d: d["volume"].astype("int64"), source="x")
    v = validate_bars(df, BTC, "1d")
    assert list(v.clean.columns) == list(df.columns) and v.ok


# --- row rules -------------------------------------------------------------------------------------


def test_a_timestamp_repeated_with_different_values_quarantines_every_version_and_keeps_none():
    df = bars(walk(30))
    dup = df.iloc[[10, 10]].assign(close=[55.0, 56.0], low=[50.0, 50.0])
    df = pd.concat([df, dup], ignore_index=True)  # rows 30 and 31 repeat row 10's ts
    v = validate_bars(df, BTC, "1d")
    conflict = v.quarantined[v.quarantined["rule"] == "duplicate_conflict"]
    assert list(conflict.index) == [10, 30, 31]
    assert "rows 10, 30, 31" in conflict["detail"].iloc[0] and "close" in conflict["detail"].iloc[0]
    assert 10 not in v.clean.index and df.loc[10, "ts"] not in set(v.clean["ts"])
    assert v.clean["ts"].is_monotonic_increasing and v.clean["ts"].is_unique


def test_nan_and_infinite_values_are_quarantined():
    df = bars(walk(30))
    df.loc[3, "close"] = np.nan
    df.loc[7, "volume"] = np.inf
    v = validate_bars(df, BTC, "1d")
    assert list(v.quarantined.index) == [3, 7] and set(v.quarantined["rule"]) == {"nan"}
    assert "close is nan" in v.quarantined.loc[3, "detail"]
    assert v.count("nan") == 2 and not v.ok


def test_a_non_positive_price_is_quarantined():
    df = bars(walk(30))
    df.loc[5, "low"] = 0.0
    v = validate_bars(df, BTC, "1d")
    assert rules_of(v, 5) == ["non_positive_price"]
    assert v.quarantined.loc[5, "detail"] == "low = 0"


@pytest.mark.parametrize(
    ("column", "factor", "caught"),
    [("high", 0.99, True), ("low", 1.01, True), ("high", 1 - 2e-6, True), ("high", 1 - 5e-7, False)],
)
def test_ohlc_breaks_beyond_the_relative_tolerance_are_quarantined(column, factor, caught):
    df = bars(walk(30))
    body = (
        max(df.loc[8, "open"], df.loc[8, "close"])
        if column == "high"
        else min(df.loc[8, "open"], df.loc[8, "close"])
    )
    df.loc[8, column] = body * factor
    v = validate_bars(df, BTC, "1d")
    assert rules_of(v, 8) == (["ohlc_inconsistent"] if caught else [])


def test_low_above_high_is_an_ohlc_break():
    df = bars(walk(30))
    high, low = df.loc[4, "high"], df.loc[4, "low"]
    df.loc[4, "low"], df.loc[4, "high"] = high, low
    v = validate_bars(df, BTC, "1d")
    assert rules_of(v, 4) == ["ohlc_inconsistent"] and "> high" in v.quarantined.loc[4, "detail"]


def test_negative_volume_is_quarantined():
    df = bars(walk(30))
    df.loc[2, "volume"] = -5.0
    assert rules_of(validate_bars(df, BTC, "1d"), 2) == ["negative_volume"]


def test_a_row_caught_by_several_rules_appears_once_per_rule_but_counts_once():
    df = bars(walk(30))
    df.loc[6, ["close", "volume"]] = [-1.0, -1.0]
    v = validate_bars(df, BTC, "1d")
    assert rules_of(v, 6) == ["negative_volume", "non_positive_price", "ohlc_inconsistent"]
    assert len(v.clean) + v.quarantined.index.nunique() == len(df)


def test_zero_volume_is_reported_but_the_bar_is_kept():
    df = bars(walk(30))
    df.loc[[4, 9], "volume"] = 0.0
    v = validate_bars(df, BTC_1H, "1d")
    issue = v.issue("zero_volume")
    assert issue is not None and issue.count == 2 and issue.severity == "warning"
    assert v.quarantined.empty and len(v.clean) == 30 and not v.ok


def test_zero_volume_on_an_instrument_without_volume_is_informational():
    ts = pd.bdate_range("2024-01-01", periods=30, tz="UTC")
    v = validate_bars(bars(walk(30, vol=0.002), ts, volume=0.0), EURUSD, "1d")
    issue = v.issue("zero_volume")
    assert issue is not None and issue.count == 30 and issue.severity == "info"
    assert v.ok


# --- spikes and large moves ------------------------------------------------------------------------


def test_a_spike_that_the_next_bar_takes_back_is_quarantined():
    close = walk(80)
    df = bars(close)
    df.loc[60, ["open", "high", "low", "close"]] = np.array([1.0, 1.01, 0.99, 1.0]) * close[59] * 1.5
    df.loc[61, ["open", "low"]] = [close[60], min(close[60], close[61]) * 0.999]  # back at the open
    v = validate_bars(df, BTC, "1d")
    assert list(v.quarantined.index) == [60] and v.quarantined["rule"].tolist() == ["spike"]
    assert "taken back" in v.quarantined["detail"].iloc[0]
    assert v.count("large_move") == 0  # the reversal into bar 61 is not a move of its own
    assert list(v.gaps) == [df.loc[60, "ts"]]  # the quarantined bar is missing from the clean data


def test_a_large_move_that_is_not_taken_back_is_a_real_move_and_kept():
    close = walk(80)
    close[60:] *= 0.6  # a -40 % repricing that stays
    v = validate_bars(bars(close), BTC, "1d")
    assert v.quarantined.empty and len(v.clean) == 80
    assert v.count("large_move") == 1 and v.issue("large_move").severity == "info"
    assert v.large_moves["ts"].tolist() == [pd.Timestamp("2024-03-01", tz="UTC")]
    assert v.large_moves["ret"].iloc[0] == pytest.approx(close[60] / close[59] - 1)


def test_a_crash_and_rebound_that_trades_back_is_not_a_spike():
    close = walk(80)
    close[60] = close[59] * 0.6
    df = bars(close)  # bar 61 opens at the crash close and trades back up during the bar
    v = validate_bars(df, BTC, "1d")
    assert v.quarantined.empty and v.count("large_move") >= 1


def test_a_spike_on_the_last_bar_is_reported_as_an_unconfirmed_move():
    close = walk(80)
    close[-1] = close[-2] * 1.5
    v = validate_bars(bars(close), BTC, "1d")
    assert v.quarantined.empty
    assert "not known yet" in v.issue("large_move").examples[0][1]


def test_a_flat_series_with_a_one_tick_wobble_has_no_spike():
    close = np.full(80, 100.0)
    close[50] = 100.01
    v = validate_bars(bars(close), BTC, "1d")
    assert v.quarantined.empty and v.count("large_move") == 0


# --- gaps ------------------------------------------------------------------------------------------


def test_gaps_follow_the_nyse_calendar():
    sessions = nyse_sessions(pd.Timestamp("2024-06-24", tz="UTC"), pd.Timestamp("2024-07-12", tz="UTC"))
    assert pd.Timestamp("2024-07-04", tz="UTC") not in sessions  # Independence Day
    missing = pd.Timestamp("2024-07-08", tz="UTC")
    ts = sessions.drop(missing)
    v = validate_bars(bars(walk(len(ts)), ts), SPY, "1d")
    assert list(v.gaps) == [missing]
    assert v.issue("gap").count == 1 and v.issue("gap").first_ts == missing


def test_gaps_on_a_24_7_market_count_every_calendar_day_and_hour():
    days = pd.date_range("2024-01-01", periods=40, freq="D", tz="UTC")
    v = validate_bars(bars(walk(38), days.delete([6, 7])), BTC, "1d")  # a weekend is not skipped
    assert list(v.gaps) == list(days[[6, 7]])
    hours = pd.date_range("2023-03-24", periods=48, freq="h", tz="UTC")
    v = validate_bars(bars(walk(47), hours.delete(13)), BTC_1H, "1h")
    assert list(v.gaps) == [pd.Timestamp("2023-03-24 13:00", tz="UTC")]


def test_gaps_on_a_24_5_market_count_weekdays_only():
    weekdays = pd.bdate_range("2024-01-01", periods=30, tz="UTC")
    v = validate_bars(bars(walk(29, vol=0.002), weekdays.delete(10), volume=0.0), EURUSD, "1d")
    assert list(v.gaps) == [weekdays[10]]


# --- staleness -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flat", "stale"), [(5, False), (6, True)])
def test_more_than_five_identical_closes_are_stale(flat, stale):
    close = walk(40)
    close[20 : 20 + flat] = close[20]
    v = validate_bars(bars(close), BTC, "1d")
    assert (v.issue("stale") is not None) == stale and v.quarantined.empty


def test_the_last_bar_is_stale_when_older_than_stale_after_at_now():
    df = bars(walk(30))  # last bar 2024-01-30
    now = datetime(2024, 2, 5, tzinfo=df["ts"].dt.tz)
    assert validate_bars(df, BTC, "1d", now=now, stale_after=timedelta(days=10)).issue("stale") is None
    stale = validate_bars(df, BTC, "1d", now=now, stale_after=timedelta(days=3)).issue("stale")
    assert stale is not None and stale.first_ts == df["ts"].iloc[-1]
    assert validate_bars(df, BTC, "1d", now=now).issue("stale") is not None  # default: 3 daily bars
    with pytest.raises(ValueError, match="naive"):
        validate_bars(df, BTC, "1d", now=datetime(2024, 2, 5))  # noqa: DTZ001


# --- invariants under random corruption ------------------------------------------------------------

CORRUPTIONS = (
    "nan",
    "inf",
    "zero",
    "negative",
    "swap",
    "high_low",
    "neg_volume",
    "zero_volume",
    "dup",
    "nat",
    "spike",
)


def _corrupt(df: pd.DataFrame, row: int, kind: str, other: int) -> None:
    col = ["open", "high", "low", "close"][row % 4]
    if kind in ("nan", "inf"):
        df.loc[row, ["open", "high", "low", "close", "volume"][other % 5]] = (
            np.nan if kind == "nan" else -np.inf
        )
    elif kind in ("zero", "negative"):
        df.loc[row, col] = 0.0 if kind == "zero" else -df.loc[row, col]
    elif kind == "swap":
        high, low = df.loc[row, "high"], df.loc[row, "low"]
        df.loc[row, "low"], df.loc[row, "high"] = high, low
    elif kind == "high_low":
        df.loc[row, "high"] = df.loc[row, "low"] * 0.98
    elif kind in ("neg_volume", "zero_volume"):
        df.loc[row, "volume"] = -1.0 if kind == "neg_volume" else 0.0
    elif kind == "nat":
        df.loc[row, "ts"] = pd.NaT
    elif kind == "dup":
        df.loc[row, "ts"] = df.loc[other, "ts"]
    else:
        df.loc[row, ["open", "high", "low", "close"]] *= 3.0


@st.composite
def corrupted_bars(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(1, 90))
    df = bars(walk(n, seed=draw(st.integers(0, 2**31))))
    for _ in range(draw(st.integers(0, 10))):
        _corrupt(
            df, draw(st.integers(0, n - 1)), draw(st.sampled_from(CORRUPTIONS)), draw(st.integers(0, n - 1))
        )
    if draw(st.booleans()):
        df = df.sample(frac=1.0, random_state=draw(st.integers(0, 1000))).reset_index(drop=True)
    return df


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted_bars())
def test_clean_rows_never_break_an_invariant_and_every_row_is_accounted_for(df):
    v = validate_bars(df, BTC, "1d", spike_window=20)
    c = v.clean
    prices = c[["open", "high", "low", "close"]].to_numpy()
    assert np.isfinite(c[["open", "high", "low", "close", "volume"]].to_numpy()).all()
    assert (prices > 0).all() and (c["volume"] >= 0).all()
    tol = 1 + 1e-6
    body_lo = np.minimum(c["open"], c["close"])
    body_hi = np.maximum(c["open"], c["close"])
    assert (c["low"] <= body_lo * tol).all() and (c["high"] * tol >= body_hi).all()
    assert (c["low"] <= c["high"] * tol).all()
    assert c["ts"].is_unique and c["ts"].is_monotonic_increasing
    assert len(c) + v.quarantined.index.nunique() == len(df)
    assert set(c.index).isdisjoint(v.quarantined.index)
    assert set(v.quarantined["rule"]) <= set(QUARANTINE_RULES)
    assert v.ok == (not any(i.severity in ("error", "warning") for i in v.issues))


# --- the real sample (shared/data/SOURCES.md) -----------------------------------------------------


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("quality_store"))
    ensure_sample(store)
    return store


@pytest.fixture(scope="module")
def report(real_store: Store) -> QualityReport:
    return check_store(real_store)


STOCKS_ETFS = [
    *("SPY", "QQQ", "TLT", "GLD", "IWM", "EFA", "VNQ", "XLE", "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL"),
    *("JPM", "BAC", "XOM", "CVX", "JNJ", "PFE", "WMT", "KO"),
]
#: Moves above 15 % (stocks/ETFs), 25 % (crypto), 4 % (FX): count and largest, from SOURCES.md.
THRESHOLD_MOVES = {
    "SPY": (0, None),
    "QQQ": (1, ("2001-01-03", 0.168)),
    "TLT": (0, None),
    "GLD": (0, None),
    "IWM": (0, None),
    "EFA": (1, ("2008-10-13", 0.159)),
    "VNQ": (5, ("2008-12-01", -0.195)),
    "XLE": (4, ("2020-03-09", -0.201)),
    "AAPL": (5, ("2000-09-29", -0.519)),
    "MSFT": (3, ("2000-10-19", 0.196)),
    "NVDA": (42, ("2000-03-07", 0.424)),
    "AMZN": (26, ("2001-11-26", 0.345)),
    "GOOGL": (3, ("2008-04-18", 0.200)),
    "JPM": (15, ("2009-01-21", 0.251)),
    "BAC": (34, ("2009-04-09", 0.353)),
    "XOM": (1, ("2008-10-13", 0.172)),
    "CVX": (5, ("2020-03-24", 0.227)),
    "JNJ": (1, ("2002-07-19", -0.158)),
    "PFE": (0, None),
    "WMT": (0, None),
    "KO": (0, None),
    "BTC-USD": (2, ("2020-03-12", -0.372)),
    "ETH-USD": (5, ("2020-03-12", -0.424)),
    "EURUSD": (0, None),
    "USDJPY": (2, ("2008-10-28", 0.054)),
}


def test_the_sample_has_no_row_to_quarantine(report):
    bars_parts = [p for p in report.partitions if p.kind == "bars"]
    assert len(bars_parts) == 27
    for p in bars_parts:
        assert p.quarantined_rows.empty, p.key
        for rule in QUARANTINE_RULES:
            assert p.count(rule) == 0, (p.key, rule)


@pytest.mark.parametrize(("symbol", "missing"), [("EURUSD", 34), ("USDJPY", 32)])
def test_fx_misses_the_documented_weekdays(report, symbol, missing):
    gap = report.issue(f"bars/{symbol}/1d", "gap")
    assert gap.count == missing and gap.first_ts == pd.Timestamp("2004-10-28", tz="UTC")


def test_stocks_etfs_and_crypto_dailies_have_no_calendar_gap(report):
    for sym in [*STOCKS_ETFS, "BTC-USD", "ETH-USD"]:
        assert report.count(f"bars/{sym}/1d", "gap") == 0, sym


def test_binance_hourly_misses_twelve_hours_and_keeps_the_zero_volume_outage_bar(report):
    outage = pd.Timestamp("2023-03-24 12:00", tz="UTC")
    for sym in ("BTCUSDT", "ETHUSDT"):
        p = report.partition(f"bars/{sym}/1h")
        assert p.count("gap") == 12 and p.issue("gap").first_ts == pd.Timestamp("2021-04-20 02:00", tz="UTC")
        assert p.count("zero_volume") == 1 and p.issue("zero_volume").first_ts == outage
        assert p.quarantined_rows.empty


@pytest.mark.parametrize(("symbol", "rows"), [("EURUSD", 5451), ("USDJPY", 6473)])
def test_fx_zero_volume_is_reported_for_every_bar_and_nothing_is_quarantined(report, symbol, rows):
    p = report.partition(f"bars/{symbol}/1d")
    assert p.rows == rows and p.count("zero_volume") == rows
    assert p.issue("zero_volume").severity == "info" and p.quarantined_rows.empty


@pytest.mark.parametrize("symbol", sorted(THRESHOLD_MOVES))
def test_the_documented_large_moves_are_reported_and_kept(report, symbol):
    count, largest = THRESHOLD_MOVES[symbol]
    p = report.partition(f"bars/{symbol}/1d")
    threshold = DAILY_MOVE_THRESHOLD[instrument_for(symbol).asset_class]
    above = p.large_moves[p.large_moves["ret"].abs() > threshold]
    assert len(above) == count and p.count("large_move") >= count and p.count("spike") == 0
    if largest is not None:
        top = above.loc[above["ret"].abs().idxmax()]
        assert top["ts"] == pd.Timestamp(largest[0], tz="UTC")
        assert top["ret"] == pytest.approx(largest[1], abs=0.0006)


def test_aapl_profit_warning_is_a_large_move_not_a_spike(report):
    issue = report.issue("bars/AAPL/1d", "large_move")
    assert issue.examples[0][0] == pd.Timestamp("2000-09-29", tz="UTC") and "-51.9%" in issue.examples[0][1]
    assert report.count("bars/AAPL/1d", "spike") == 0


def test_a_crash_traded_back_the_next_day_is_kept(report):
    # BAC 2011-08-08 -20 % then +17 %: the next session opened near the crash close, so it is real
    moves = report.partition("bars/BAC/1d").large_moves
    assert pd.Timestamp("2011-08-08", tz="UTC") in set(moves["ts"])


def test_no_daily_file_has_a_run_of_identical_closes(report):
    assert not any(p.issue("stale") for p in report.partitions)  # no `now`: only flat runs checked


def test_a_documented_yahoo_bogus_print_is_caught_as_a_spike(real_store):
    """EURUSD 1.4899 on 2008-12-08 between 1.2717 and 1.2926 (removed from the sample; put back here)."""
    df = real_store.read_bars("EURUSD")
    bogus = pd.DataFrame(
        {"ts": [pd.Timestamp("2008-12-08", tz="UTC")], "open": [1.4851], "high": [1.4921], "low": [1.483]}
    ).assign(close=1.4899, volume=0.0)
    v = validate_bars(pd.concat([df, bogus.astype(df.dtypes.to_dict())], ignore_index=True), EURUSD, "1d")
    assert v.quarantined["rule"].tolist() == ["spike"]
    assert v.quarantined["ts"].tolist() == [pd.Timestamp("2008-12-08", tz="UTC")]
    # the clean data is the published sample again: 2008-12-08 is one of its 34 missing weekdays
    assert len(v.clean) == len(df) and len(v.gaps) == 34 and pd.Timestamp("2008-12-08", tz="UTC") in v.gaps


@pytest.mark.parametrize(
    ("series", "gaps"),
    # FRED blanks dropped (SOURCES.md): DGS10/DGS2/T10Y2Y 502 minus 1980-01-01, which precedes the first row
    [("DGS10", 501), ("DGS2", 501), ("T10Y2Y", 501), ("T10YIE", 247), ("DCOILWTICO", 366)]
    + [("DTWEXBGS", 205), ("VIXCLS", 300), ("FEDFUNDS", 0), ("GDPC1", 0), ("ICSA", 0)],
)
def test_macro_gaps_are_the_dropped_blank_observations(report, series, gaps):
    assert report.count(f"macro/{series}", "gap") == gaps
    assert report.count(f"macro/{series}", "nan") == 0


def test_the_shutdown_month_is_missing_from_three_monthly_series(report):
    for series in ("CPIAUCSL", "CPILFESL", "UNRATE"):
        gap = report.issue(f"macro/{series}", "gap")
        assert (
            gap.count == 1
            and gap.first_ts == pd.Timestamp("2025-10-01", tz="UTC")
            and gap.severity == "warning"
        )


def test_macro_staleness_at_retrieval_flags_only_the_delayed_core_pce(real_store):
    report = check_store(real_store, now=pd.Timestamp("2026-01-02", tz="UTC"))  # FRED retrieval date
    stale = {p.key for p in report.partitions if p.kind == "macro" and p.issue("stale")}
    assert stale == {"macro/PCEPILFE"}  # October 2025 delayed by the shutdown


def test_bars_are_stale_once_their_last_session_is_old(real_store):
    report = check_store(real_store, now=pd.Timestamp("2026-03-30 12:00", tz="UTC"))  # the Monday after
    assert report.issue("bars/SPY/1d", "stale") is None  # ETFs end Friday 2026-03-27
    assert report.issue("bars/AAPL/1d", "stale").first_ts == pd.Timestamp("2024-12-06", tz="UTC")
    assert report.issue("macro/FEDFUNDS", "stale") is not None  # December 2025 was due in January


# --- store check on other data ---------------------------------------------------------------------


def test_a_symbol_outside_the_registry_is_checked_with_its_asset_class(tmp_path):
    store = Store(tmp_path / "data")
    sessions = nyse_sessions(pd.Timestamp("2024-06-24", tz="UTC"), pd.Timestamp("2024-07-12", tz="UTC"))
    store.write_bars("ZZZ", "1d", bars(walk(len(sessions) - 1), sessions.delete(3)), asset_class="equity")
    report = check_store(store)
    assert report.count("bars/ZZZ/1d", "gap") == 1 and report.partition("bars/ZZZ/1d").status == "warning"


# --- quarantine table ------------------------------------------------------------------------------


def test_quarantine_round_trip_keeps_missing_values_and_does_not_repeat_rows(tmp_path):
    store = Store(tmp_path / "data")
    assert read_quarantine(store).empty
    df = bars(walk(30))
    df.loc[3, "close"] = np.nan
    df.loc[5, "volume"] = -2.0
    v = validate_bars(df, BTC, "1d")
    found = datetime(2024, 2, 1, tzinfo=df["ts"].dt.tz)
    assert quarantine(store, "bars/TEST/1d", v.quarantined, found_at=found) == 2
    assert quarantine(store, "bars/TEST/1d", v.quarantined, found_at=found + timedelta(days=1)) == 0
    back = read_quarantine(store)
    assert list(back.columns[:10]) == [
        "key",
        "ts",
        "rule",
        "detail",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "found_at",
    ]
    assert back["rule"].tolist() == ["nan", "negative_volume"]
    assert np.isnan(back.loc[0, "close"]) and back.loc[0, "open"] == df.loc[3, "open"]
    assert back.loc[1, "volume"] == -2.0 and (back["found_at"] == pd.Timestamp(found)).all()
    assert back.loc[0, "ts"] == df.loc[3, "ts"]


def test_a_row_without_a_timestamp_is_quarantined_and_stored_with_its_time_missing(tmp_path):
    store = Store(tmp_path / "data")
    df = bars(walk(30))
    df.loc[3, "ts"] = pd.NaT
    v = validate_bars(df, BTC, "1d")
    assert rules_of(v, 3) == ["nan"] and v.quarantined.loc[3, "detail"] == "ts is missing"
    quarantine(store, "bars/TEST/1d", v.quarantined, found_at=pd.Timestamp("2024-02-01", tz="UTC"))
    back = read_quarantine(store)
    assert back["ts"].isna().all() and back.loc[0, "missing"] == "ts"
    with pytest.raises(ValueError, match="naive"):
        quarantine(store, "bars/TEST/1d", v.quarantined, found_at=datetime(2024, 2, 1))  # noqa: DTZ001


def test_quarantine_appends_rows_of_another_partition(tmp_path):
    store = Store(tmp_path / "data")
    df = bars(walk(30))
    df.loc[4, "low"] = -1.0
    v = validate_bars(df, BTC, "1d")
    found = pd.Timestamp("2024-02-01", tz="UTC")
    quarantine(store, "bars/A/1d", v.quarantined, found_at=found)
    assert quarantine(store, "bars/B/1d", v.quarantined, found_at=found) == 1
    assert sorted(read_quarantine(store)["key"]) == ["bars/A/1d", "bars/B/1d"]


# --- reports ---------------------------------------------------------------------------------------


def test_the_table_has_a_row_per_partition_with_rule_counts_and_a_legend(report):
    console = Console(record=True, width=220)
    console.print(render_quality_table(report, wide=True))
    text = console.export_text()
    eurusd = next(line for line in text.splitlines() if line.startswith("bars/EURUSD/1d"))
    assert "5451" in eurusd and "34" in eurusd and "check" in eurusd
    assert next(line for line in text.splitlines() if line.startswith("bars/TLT/1d")).rstrip().endswith("OK")
    for rule in RULES:
        assert rule in text


def test_the_html_report_is_self_contained_and_explains_every_rule(report, tmp_path):
    path = write_quality_html(report, tmp_path / "out" / "quality.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page
    for rule, meaning in RULES.items():
        assert f"id='{rule}'" in page and html.escape(meaning) in page
    assert "2000-09-29 (-51.9%" in page  # AAPL's example in the large_move list
    assert "2004-10-28" in page and "bars/USDJPY/1d" in page
    assert "<td class='warning'>34</td>" in page and "<td class='info'>5451</td>" in page
