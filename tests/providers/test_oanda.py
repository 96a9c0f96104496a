"""OANDA specifics: incomplete candles dropped, FX session dates, paging by ``from``, instrument names."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hflite.data.providers.base import NotSupportedError, RejectedError
from hflite.data.providers.oanda import OandaProvider, instrument
from tests.providers.case_oanda import CANDLES, _paged
from tests.providers.contract import fast_options
from tests.providers.server import FixtureServer, Route, fixture

KEY = "test-secret-token-123"
DAILY = fixture("oanda", "candles_eur_usd_d.json")
WEEK = pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-09", tz="UTC")


def provider(url: str) -> OandaProvider:
    return OandaProvider(key=KEY, url=url, options=fast_options())


def test_the_forming_candle_is_dropped():
    with FixtureServer([Route(CANDLES, DAILY)]) as srv:
        frame = provider(srv.url).bars("EURUSD", "1d", *WEEK)

    assert len(frame) == 5  # the sixth candle (session 2024-01-09) has complete: false
    assert frame["ts"].iloc[-1] == pd.Timestamp("2024-01-08", tz="UTC")


def test_daily_candles_are_aligned_at_17h_new_york_and_stamped_with_the_session_date():
    summer = {
        "instrument": "EUR_USD",
        "granularity": "D",
        "candles": [
            {
                "complete": True,
                "volume": 61204,
                "time": "2024-07-07T21:00:00.000000000Z",
                "mid": {"o": "1.08302", "h": "1.08452", "l": "1.08080", "c": "1.08248"},
            },
        ],
    }
    with FixtureServer(
        [
            Route(CANDLES, DAILY, query={"granularity": "D", "from": "2024-01-02T00:00:00.000000000Z"}),
            Route(CANDLES, summer),
        ]
    ) as srv:
        winter = provider(srv.url).bars("EURUSD", "1d", *WEEK)
        july = provider(srv.url).bars(
            "EURUSD", "1d", pd.Timestamp("2024-07-08", tz="UTC"), pd.Timestamp("2024-07-08", tz="UTC")
        )

    days = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08"]
    assert winter["ts"].tolist() == [pd.Timestamp(d, tz="UTC") for d in days]  # Sunday 22:00Z -> Monday
    assert july["ts"].tolist() == [pd.Timestamp("2024-07-08", tz="UTC")]  # Sunday 21:00Z (EDT) -> Monday
    (_, query), _ = srv.requests
    assert query["dailyAlignment"] == ["17"] and query["alignmentTimezone"] == ["America/New_York"]
    assert query["price"] == ["M"]


def test_pages_advance_from_the_last_candle_without_repeating_it():
    routes = [
        Route(CANDLES, fixture("oanda", "candles_eur_usd_h1_page1.json"), query={"includeFirst": "true"}),
        Route(CANDLES, fixture("oanda", "candles_eur_usd_h1_page2.json"), query={"includeFirst": "false"}),
    ]
    with FixtureServer(routes) as srv:
        frame = _paged(provider(srv.url))

    (_, first), (_, following) = srv.requests
    assert first["from"] == ["2024-01-02T09:00:00.000000000Z"] and first["count"] == ["3"]
    assert following["from"] == ["2024-01-02T11:00:00.000000000Z"] and following["count"] == ["3"]
    assert frame["ts"].tolist() == list(pd.date_range("2024-01-02 09:00", periods=5, freq="1h", tz="UTC"))
    assert frame["close"].iloc[0] == 1.09902


def test_a_short_page_ends_the_loop():
    page = json.loads(fixture("oanda", "candles_eur_usd_h1_page1.json"))
    with FixtureServer([Route(CANDLES, page)]) as srv:
        p = provider(srv.url)
        p.page_size = 4
        p.bars(
            "EURUSD", "1h", pd.Timestamp("2024-01-02 09:00", tz="UTC"), pd.Timestamp("2024-01-03", tz="UTC")
        )

    assert len(srv.requests) == 1


def test_the_token_travels_as_a_bearer_header():
    assert OandaProvider(key=KEY).auth_headers()["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("symbol", "name"),
    [("EURUSD", "EUR_USD"), ("USDJPY", "USD_JPY"), ("EUR/USD", "EUR_USD"), ("GBP_USD", "GBP_USD")],
)
def test_symbols_map_to_oanda_instruments(symbol, name):
    assert instrument(symbol) == name


def test_a_symbol_that_is_no_currency_pair_is_refused():
    with pytest.raises(NotSupportedError, match="BTC-USD"):
        instrument("BTC-USD")


def test_an_unknown_instrument_is_rejected_with_oanda_s_message():
    route = Route(
        r"/v3/instruments/XAU_EUR/candles", fixture("oanda", "error_invalid_instrument.json"), status=400
    )
    with (
        FixtureServer([route]) as srv,
        pytest.raises(RejectedError, match="Invalid value specified for 'instrument'"),
    ):
        provider(srv.url).bars("XAUEUR", "1d", *WEEK)

    assert len(srv.requests) == 1


def test_a_count_above_5000_is_refused_locally():
    with pytest.raises(ValueError, match="page_size"):
        OandaProvider(key=KEY, page_size=5001)
