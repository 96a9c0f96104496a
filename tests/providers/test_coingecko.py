"""CoinGecko specifics: symbol mapping, whole-day OHLC from 4-hour candles, volumes, the optional key."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from hflite.data.providers.base import NotSupportedError, RejectedError
from hflite.data.providers.coingecko import CoinGeckoProvider, coin_id
from tests.providers.case_coingecko import NOW, OHLC, RANGE
from tests.providers.contract import fast_options
from tests.providers.server import FixtureServer, Route, fixture

CANDLES = fixture("coingecko", "ohlc_bitcoin_7d.json")
VOLUMES = fixture("coingecko", "market_chart_range_bitcoin.json")


def provider(url: str, key: str | None = None) -> CoinGeckoProvider:
    return CoinGeckoProvider(key=key, url=f"{url}/api/v3", options=fast_options(), now=lambda: NOW)


@pytest.mark.parametrize(
    ("symbol", "coin"), [("BTC-USD", "bitcoin"), ("ETH-USD", "ethereum"), ("usd-coin", "usd-coin")]
)
def test_symbols_map_to_coingecko_ids(symbol, coin):
    assert coin_id(symbol) == coin


def test_an_unmapped_ticker_is_refused_with_the_known_ones_named():
    with pytest.raises(NotSupportedError, match="BTC-USD"):
        coin_id("SOL-USD")


def test_the_mapped_id_is_the_one_requested():
    routes = [Route(r"/api/v3/coins/ethereum/ohlc", fixture("coingecko", "ohlc_empty.json"))]
    with FixtureServer(routes) as srv:
        provider(srv.url).bars("ETH-USD", "1d", pd.Timestamp("2023-12-20", tz="UTC"), NOW)

    assert [path for path, _ in srv.requests] == ["/api/v3/coins/ethereum/ohlc"]


def test_only_whole_utc_days_become_bars_and_a_missing_volume_stays_missing():
    with FixtureServer([Route(OHLC, CANDLES), Route(RANGE, VOLUMES)]) as srv:
        frame = provider(srv.url).bars("BTC-USD", "1d", pd.Timestamp("2023-12-19", tz="UTC"), NOW)

    # 12-19 and 12-26 have only 3 of their 6 candles; 12-25's volume point (12-26 00:00) is absent
    assert frame["ts"].tolist() == list(pd.date_range("2023-12-20", "2023-12-25", tz="UTC"))
    assert frame["close"].iloc[-1] == 43576.13  # the candle closing at 12-26 00:00
    assert not frame["volume"].iloc[:-1].isna().any()
    assert math.isnan(frame["volume"].iloc[-1])


@pytest.mark.parametrize(("back", "days"), [(5, "7"), (10, "14"), (20, "30"), (90, "30")])
def test_days_is_the_smallest_window_with_four_hour_candles(back, days):
    routes = [Route(OHLC, fixture("coingecko", "ohlc_empty.json"))]
    with FixtureServer(routes) as srv:
        provider(srv.url).bars("BTC-USD", "1d", NOW - pd.Timedelta(days=back), NOW)

    ((_, query),) = srv.requests
    assert query["days"] == [days]


def test_a_window_entirely_older_than_30_days_asks_for_nothing():
    with FixtureServer([]) as srv:
        frame = provider(srv.url).bars(
            "BTC-USD", "1d", pd.Timestamp("2023-10-01", tz="UTC"), pd.Timestamp("2023-10-31", tz="UTC")
        )

    assert frame.empty
    assert srv.requests == []


def test_the_demo_key_travels_in_its_header_and_keyless_calls_are_throttled_harder(monkeypatch):
    monkeypatch.delenv("COINGECKO_API_KEY", raising=False)
    keyed, keyless = CoinGeckoProvider(key="CG-demo-key"), CoinGeckoProvider(key=None)

    assert keyed.auth_headers() == {"x-cg-demo-api-key": "CG-demo-key"}
    assert keyless.auth_headers() == {}
    assert (keyed.limiter.limits.per_minute, keyless.limiter.limits.per_minute) == (30, 10)


def test_an_unknown_coin_is_rejected_with_coingecko_s_message():
    route = Route(
        r"/api/v3/coins/no-such-coin/ohlc", fixture("coingecko", "error_coin_not_found.json"), status=404
    )
    with FixtureServer([route]) as srv, pytest.raises(RejectedError, match="coin not found"):
        provider(srv.url).bars("no-such-coin", "1d", pd.Timestamp("2023-12-20", tz="UTC"), NOW)


def test_the_wrong_root_url_error_shape_is_read_too():
    body = {
        "error_code": 10011,
        "status": {
            "error_message": "If you are using Demo API key, please change your root URL from "
            "pro-api.coingecko.com to api.coingecko.com"
        },
    }
    with (
        FixtureServer([Route(OHLC, body, status=400)]) as srv,
        pytest.raises(RejectedError, match="10011: If you are using"),
    ):
        provider(srv.url, key="CG-demo-key").bars("BTC-USD", "1d", pd.Timestamp("2023-12-20", tz="UTC"), NOW)


def test_intraday_bars_are_not_supported():
    with pytest.raises(NotSupportedError, match="1h"):
        CoinGeckoProvider().bars("BTC-USD", "1h", NOW - pd.Timedelta(days=1), NOW)
