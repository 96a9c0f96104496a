"""Tables beside OHLCV: news (deduplicated, by year), point-in-time fundamentals, macro release lags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hflite.data.store import (
    FUNDAMENTAL_COLUMNS,
    NEWS_COLUMNS,
    RELEASE_LAGS,
    DataNotFoundError,
    Store,
    known_at,
)


def _utc(*times: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(t, tz="UTC") for t in times]


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "data")


def _news(rows: list[tuple[str, str, str, str, str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(NEWS_COLUMNS))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


#: Real headlines: Google News items of 2022-01-03 (the $3 trillion day) and S&P 500 headlines.
GOOGLE_NEWS = _news(
    [
        (
            "2022-01-03 21:00",
            "CNBC",
            "AAPL",
            "Apple becomes first U.S. company to reach $3 trillion market cap",
            "",
            "",
        ),
        (
            "2022-01-03 21:00",
            "Bloomberg",
            "AAPL",
            "Apple's Market Cap Briefly Tops $3 Trillion After Relentless Rally",
            "",
            "",
        ),
        (
            "2022-02-07 21:00",
            "MarketWatch",
            "NVDA",
            "Nvidia becomes 7th-largest U.S. company as it passes Facebook owner Meta for the first time",
            "",
            "",
        ),
        (
            "2022-02-07 21:00",
            "MarketWatch",
            "META",
            "Nvidia becomes 7th-largest U.S. company as it passes Facebook owner Meta for the first time",
            "",
            "",
        ),
    ]
)
MARKET_NEWS = _news(
    [
        ("2008-09-29 21:00", "", "", "Dow sinks 777 points in biggest 1-day point drop ever", "", ""),
        ("2008-01-02 21:00", "", "", "Dow Tallies Biggest First-session-of-year Point Drop Ever", "", ""),
        ("2023-03-10 21:00", "Reuters", "", "SVB collapses", "", "https://example.com/svb"),
    ]
)


# --- news ---------------------------------------------------------------------------------------------


def test_news_round_trip_sorted_by_time_with_one_partition_per_year(store):
    added = store.write_news(pd.concat([MARKET_NEWS, GOOGLE_NEWS]), source="test")

    back = store.read_news()
    infos = store.partitions()

    assert added == 6  # 7 rows, one headline listed for two tickers
    assert [i.key for i in infos] == ["news/2008", "news/2022", "news/2023"]
    assert [i.rows for i in infos] == [2, 3, 1]
    assert {i.source for i in infos} == {"test"}
    assert list(back.columns) == list(NEWS_COLUMNS)
    assert str(back["ts"].dtype) == "datetime64[ns, UTC]"
    assert back["ts"].is_monotonic_increasing
    assert back["headline"].iloc[1] == "Dow sinks 777 points in biggest 1-day point drop ever"
    assert (store.root / infos[0].path).parent.name == "year=2008"
    assert {p.kind for p in store.partitions()} == {"news"}
    assert store.verify() == {}


def test_the_same_headline_for_two_tickers_on_one_day_is_one_row_with_both(store):
    store.write_news(GOOGLE_NEWS, source="test")

    back = store.read_news(start="2022-02-07", end="2022-02-07")

    assert len(back) == 1
    assert back["tickers"].iloc[0] == "META,NVDA"
    assert back["source"].iloc[0] == "MarketWatch"


def test_writing_the_same_batch_twice_changes_nothing(store):
    first = store.write_news(GOOGLE_NEWS, source="vendor")
    manifest = store.manifest_path.read_bytes()

    again = store.write_news(GOOGLE_NEWS.iloc[::-1], source="vendor")

    assert (first, again) == (3, 0)
    assert store.manifest_path.read_bytes() == manifest
    assert store.history("news/2022") == []


def test_a_new_batch_is_merged_and_duplicates_by_url_are_dropped(store):
    store.write_news(MARKET_NEWS, source="a")
    repeat = MARKET_NEWS.iloc[[2]].assign(headline="SVB collapses (updated)", tickers="SIVB")

    changed = store.write_news(pd.concat([repeat, GOOGLE_NEWS.iloc[:1]]), source="b")

    svb = store.read_news(start="2023-01-01")
    assert changed == 2  # one new headline, one stored headline with a new ticker
    assert [p.source for p in store.partitions()] == ["a", "b", "b"]
    assert svb["headline"].tolist() == ["SVB collapses"]  # the stored row wins
    assert svb["tickers"].tolist() == ["SIVB"]  # tickers are merged
    assert len(store.read_news()) == 4


def test_news_filters_by_ticker_and_time(store):
    store.write_news(pd.concat([MARKET_NEWS, GOOGLE_NEWS]), source="test")

    aapl = store.read_news(tickers="AAPL")
    meta_or_nvda = store.read_news(tickers=["META", "NVDA"], start="2022-01-01", end="2022-12-31")
    crisis = store.read_news(start="2008-09-29", end="2008-09-29")

    assert len(aapl) == 2
    assert set(aapl["source"]) == {"CNBC", "Bloomberg"}
    assert meta_or_nvda["tickers"].tolist() == ["META,NVDA"]
    assert crisis["headline"].tolist() == ["Dow sinks 777 points in biggest 1-day point drop ever"]
    assert store.read_news(tickers="TSLA").empty
    assert store.read_news(start="2030-01-01").empty


def test_news_text_is_cleaned_and_missing_optional_fields_become_empty(store):
    messy = _news([("2024-01-02 21:00", " Reuters ", "nvda , AAPL,", "  Chip stocks rally  ", "", "")])
    messy.loc[0, "summary"] = None
    messy.loc[0, "url"] = np.nan

    store.write_news(messy, source="test")

    row = store.read_news().iloc[0]
    assert (row["source"], row["tickers"], row["headline"], row["summary"], row["url"]) == (
        "Reuters",
        "AAPL,nvda",
        "Chip stocks rally",
        "",
        "",
    )


def test_replace_drops_the_years_stored_rows(store):
    store.write_news(GOOGLE_NEWS, source="a")

    store.write_news(GOOGLE_NEWS.iloc[:1], source="b", replace=True)

    assert len(store.read_news()) == 1
    assert store.history("news/2022")[0]["rows"] == 3


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda df: df.assign(headline=["", "x", "y", "z"]), "news: empty headline at ts 2022-01-03"),
        (lambda df: df.assign(ts=df["ts"].dt.tz_localize(None)), "news: column ts is timezone-naive"),
        (lambda df: df.drop(columns=["url"]), r"news: columns must be exactly .*missing \['url'\]"),
        (lambda df: df.assign(tickers=[1, 2, 3, 4]), "news: column tickers must hold text, found int"),
    ],
)
def test_invalid_news_is_rejected(store, mutate, match):
    with pytest.raises(ValueError, match=match):
        store.write_news(mutate(GOOGLE_NEWS.copy()), source="test")


def test_reading_news_from_a_store_without_news_is_not_found(store):
    with pytest.raises(DataNotFoundError, match="no news"):
        store.read_news()


# --- fundamentals -------------------------------------------------------------------------------------

#: Apple's fiscal Q2 2023 (quarter ended 2023-04-01): reported 2023-05-04 after the close (EPS 1.52,
#: revenue 94.836 bn USD); an illustrative restatement of the EPS published with the next quarter.
APPLE = pd.DataFrame(
    {
        "symbol": ["AAPL", "AAPL", "AAPL"],
        "metric": ["eps_diluted", "revenue_usd", "eps_diluted"],
        "period_end": _utc("2023-04-01", "2023-04-01", "2023-04-01"),
        "known_at": _utc("2023-05-04 20:30", "2023-05-04 20:30", "2023-08-03 20:30"),
        "value": [1.52, 94.836e9, 1.53],
    }
)
MICROSOFT = pd.DataFrame(
    {
        "symbol": ["MSFT"],
        "metric": ["eps_diluted"],
        "period_end": _utc("2023-03-31"),
        "known_at": _utc("2023-04-25 20:05"),
        "value": [2.45],
    }
)


def test_fundamentals_round_trip_sorted(store):
    added = store.write_fundamentals(pd.concat([MICROSOFT, APPLE]), source="test")

    back = store.read_fundamentals()

    assert added == 4
    assert [p.key for p in store.partitions()] == ["fundamentals/AAPL", "fundamentals/MSFT"]
    assert list(back.columns) == list(FUNDAMENTAL_COLUMNS)
    assert back["symbol"].tolist() == ["AAPL", "AAPL", "AAPL", "MSFT"]
    assert back["value"].tolist() == [1.52, 1.53, 94.836e9, 2.45]
    assert str(back["known_at"].dtype) == "datetime64[ns, UTC]"
    assert store.verify() == {}


def test_as_of_returns_only_what_was_public_then(store):
    store.write_fundamentals(pd.concat([APPLE, MICROSOFT]), source="test")

    before_earnings = store.read_fundamentals("AAPL", as_of=pd.Timestamp("2023-05-04 20:00", tz="UTC"))
    after_earnings = store.read_fundamentals("AAPL", as_of="2023-06-01")
    after_restatement = store.read_fundamentals("AAPL", as_of="2023-09-01")
    everyone_in_april = store.read_fundamentals(as_of="2023-05-01")

    assert before_earnings.empty
    assert after_earnings["value"].tolist() == [1.52, 94.836e9]
    assert after_restatement["value"].tolist() == [1.52, 1.53, 94.836e9]
    assert everyone_in_april["symbol"].tolist() == ["MSFT"]


def test_a_date_as_of_means_the_start_of_that_day(store):
    store.write_fundamentals(APPLE, source="test")

    assert store.read_fundamentals("AAPL", as_of="2023-05-04").empty  # reported that evening
    assert len(store.read_fundamentals("AAPL", as_of="2023-05-05")) == 2


def test_fundamentals_merge_and_a_row_with_the_same_key_replaces_the_stored_one(store):
    store.write_fundamentals(APPLE, source="a")
    corrected = APPLE.iloc[[1]].assign(value=94.8e9)

    changed = store.write_fundamentals(corrected, source="b")
    again = store.write_fundamentals(corrected, source="b")

    back = store.read_fundamentals("AAPL")
    assert back["value"].tolist() == [1.52, 1.53, 94.8e9]
    assert (changed, again) == (1, 0)
    assert len(store.history("fundamentals/AAPL")) == 1


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            lambda df: df.assign(known_at=_utc("2023-03-01", "2023-05-04", "2023-08-03")),
            "known_at before period_end for AAPL eps_diluted",
        ),
        (lambda df: df.assign(known_at=df["known_at"].iloc[0]), "duplicate row for AAPL eps_diluted"),
        (lambda df: df.assign(value=[1.0, np.nan, 2.0]), "missing or infinite value for AAPL revenue_usd"),
        (lambda df: df.assign(symbol="../x"), "invalid fundamentals: symbol"),
        (lambda df: df.assign(metric=""), "empty metric"),
    ],
)
def test_invalid_fundamentals_are_rejected(store, mutate, match):
    with pytest.raises(ValueError, match=match):
        store.write_fundamentals(mutate(APPLE.copy()), source="test")


def test_missing_fundamentals_are_not_found(store):
    store.write_fundamentals(MICROSOFT, source="test")

    with pytest.raises(DataNotFoundError, match="no fundamentals for 'AAPL'"):
        store.read_fundamentals("AAPL")


# --- macro release lags -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("series", "date", "known"),
    [
        # first business day of the next month, end of that day in New York (EDT: 04:00 UTC)
        ("FEDFUNDS", "2020-04-01", "2020-05-02 04:00"),  # 2020-05-01 was a Friday
        ("FEDFUNDS", "2024-08-01", "2024-09-04 04:00"),  # 2024-09-02 was Labor Day
        ("FEDFUNDS", "2023-12-01", "2024-01-03 05:00"),  # 2024-01-01: New Year's Day (EST)
        ("CPIAUCSL", "2022-05-01", "2022-06-16 04:00"),  # 15 days after month end (published 2022-06-10)
        ("UNRATE", "2020-04-01", "2020-05-09 04:00"),  # the April 2020 report came out Friday 2020-05-08
        ("UNRATE", "2021-09-01", "2021-10-09 04:00"),  # 2021-10-01 was a Friday; report on 2021-10-08
        ("PAYEMS", "2025-09-01", "2025-11-21 05:00"),  # delayed by the 2025 shutdown to 2025-11-20
        ("ICSA", "2020-03-21", "2020-03-27 04:00"),  # week ending Saturday -> Thursday 2020-03-26
        ("DGS10", "2020-03-09", "2020-03-10 04:00"),  # end of the same day
        ("GDPC1", "2023-10-01", "2024-01-31 05:00"),  # quarter end + 30 days
        ("DCOILWTICO", "2024-01-08", "2024-01-19 05:00"),  # 7 business days (2024-01-15: MLK day)
        ("DTWEXBGS", "2024-01-08", "2024-01-17 05:00"),
    ],
)
def test_known_at_follows_the_publication_calendar(series, date, known):
    got = known_at(series, [pd.Timestamp(date, tz="UTC")])

    assert got.tolist() == [pd.Timestamp(known, tz="UTC")]
    assert str(got.dtype) == "datetime64[ns, UTC]"


def test_every_reference_series_has_a_release_lag_and_usrec_is_not_point_in_time():
    assert set(RELEASE_LAGS) == {
        "FEDFUNDS",
        "CPIAUCSL",
        "CPILFESL",
        "PCEPILFE",
        "UNRATE",
        "PAYEMS",
        "INDPRO",
        "M2SL",
        "GDPC1",
        "DGS10",
        "DGS2",
        "T10Y2Y",
        "T10YIE",
        "DCOILWTICO",
        "DTWEXBGS",
        "VIXCLS",
        "ICSA",
        "USREC",
    }
    assert [s for s, lag in RELEASE_LAGS.items() if not lag.point_in_time] == ["USREC"]
    assert "not point-in-time" in RELEASE_LAGS["USREC"].note
    with pytest.raises(ValueError, match="USREC: not point-in-time"):
        known_at("USREC", ["2020-04-01"])
    with pytest.raises(ValueError, match="no release lag for series 'NOPE'"):
        known_at("NOPE", ["2020-04-01"])


def test_every_value_is_known_after_its_period_and_in_date_order(sample_store):
    for series, lag in RELEASE_LAGS.items():
        if not lag.point_in_time:
            continue
        dates = sample_store.read_series(series)["date"]
        known = known_at(series, dates)
        assert (known > dates.to_numpy()).all(), series
        assert known.is_monotonic_increasing, series


def test_read_series_as_of_keeps_only_published_values(sample_store):
    fed = sample_store.read_series("FEDFUNDS", "2020-01-01", as_of="2020-05-01")
    cpi = sample_store.read_series("CPIAUCSL", as_of="2022-06-16 03:59")
    claims = sample_store.read_series("ICSA", as_of="2020-03-26")
    ten_year = sample_store.read_series("DGS10", as_of=pd.Timestamp("2020-03-09 21:00", tz="UTC"))

    assert fed["value"].tolist() == [1.55, 1.58, 0.65]  # April (0.05) was published on 2020-05-01
    assert cpi["date"].iloc[-1] == pd.Timestamp("2022-04-01", tz="UTC")
    assert claims.iloc[-1].tolist() == [pd.Timestamp("2020-03-14", tz="UTC"), 273000.0]
    assert ten_year.iloc[-1].tolist() == [pd.Timestamp("2020-03-06", tz="UTC"), 0.74]
    payrolls = sample_store.read_series("PAYEMS", as_of="2025-11-01")
    assert payrolls.iloc[-1].tolist() == [pd.Timestamp("2025-08-01", tz="UTC"), 159485.0]


def test_read_series_as_of_refuses_look_ahead_series(sample_store):
    with pytest.raises(ValueError, match="USREC: not point-in-time"):
        sample_store.read_series("USREC", as_of="2020-06-01")
    assert sample_store.read_series("USREC", "2020-04-01", "2020-04-01")["value"].tolist() == [1.0]


# --- the embedded news --------------------------------------------------------------------------------


def test_the_sample_news_are_imported_with_the_close_as_their_time(sample_store):
    news = sample_store.read_news()
    first_day = sample_store.read_news("AAPL", "2022-01-03", "2022-01-03")
    crash = sample_store.read_news(start="2008-09-29", end="2008-09-29")

    assert len(news) == 24909
    assert (news["ts"].dt.strftime("%H:%M") == "21:00").all()
    cnbc = first_day[first_day["source"] == "CNBC"]
    assert cnbc["headline"].tolist() == ["Apple becomes first U.S. company to reach $3 trillion market cap"]
    assert "Dow sinks 777 points in biggest 1-day point drop ever" in crash["headline"].tolist()
    assert (crash["tickers"] == "").all()
    per_year = news.groupby(news["ts"].dt.year).size()
    assert per_year[2008] == 141 and per_year[2015] == 818 and per_year[2024] == 827  # as in SOURCES.md
    tagged = news[news["tickers"] != ""]
    assert sorted(set(",".join(tagged["tickers"]).split(","))) == ["AAPL", "META", "NVDA"]
    assert len(sample_store.read_news("META")) == len(news[news["tickers"].str.contains("META")])
