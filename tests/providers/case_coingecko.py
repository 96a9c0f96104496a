"""CoinGecko public API: 4-hour OHLC candles (``/ohlc``) and daily volumes (``/market_chart/range``).

The candles are BTC's hourly Binance prices of 2023-12-19..26 grouped into 4-hour candles stamped
with their close time, as ``/ohlc?days=7`` answers; the volumes are the daily USD volumes of the
store's sample. No paging: CoinGecko answers a window in one response.
"""

from __future__ import annotations

import pandas as pd

from hflite.data.providers.base import BAR_COLUMNS
from hflite.data.providers.coingecko import CoinGeckoProvider
from tests.providers.contract import ProviderCase, fast_options
from tests.providers.server import Route, fixture

OHLC = r"/api/v3/coins/bitcoin/ohlc"
RANGE = r"/api/v3/coins/bitcoin/market_chart/range"
NOW = pd.Timestamp("2023-12-26 12:00", tz="UTC")
CANDLES = fixture("coingecko", "ohlc_bitcoin_7d.json")
VOLUMES = Route(RANGE, fixture("coingecko", "market_chart_range_bitcoin.json"), query={"interval": "daily"})


def make(url: str, key: str | None) -> CoinGeckoProvider:
    return CoinGeckoProvider(key=key, url=f"{url}/api/v3", options=fast_options(), now=lambda: NOW)


CASE = ProviderCase(
    name="coingecko",
    make=make,
    call=lambda p: p.bars(
        "BTC-USD", "1d", pd.Timestamp("2023-12-20", tz="UTC"), pd.Timestamp("2023-12-24", tz="UTC")
    ),
    routes={
        "success": [Route(OHLC, CANDLES, query={"vs_currency": "usd", "days": "7"}), VOLUMES],
        "empty": [Route(OHLC, fixture("coingecko", "ohlc_empty.json"))],
        "paginated": None,
        "rate_limited": [
            Route(OHLC, fixture("coingecko", "error_rate_limited.json"), status=429, times=1),
            Route(OHLC, CANDLES),
            VOLUMES,
        ],
        "server_error": [
            Route(
                OHLC,
                "<html><head><title>502 Bad Gateway</title></head></html>",
                status=502,
                content_type="text/html",
            )
        ],
        "invalid_key": [Route(OHLC, fixture("coingecko", "error_api_key_missing.json"), status=401)],
        "malformed": [
            Route(
                OHLC,
                "<!DOCTYPE html><html><head><title>Just a moment...</title></head></html>",
                content_type="text/html",
            )
        ],
    },
    columns=BAR_COLUMNS,
    rows=5,
    first={
        "ts": pd.Timestamp("2023-12-20", tz="UTC"),
        "open": 42275.99,
        "high": 44283.0,
        "low": 42206.0,
        "close": 43668.93,
        "volume": 27868908174.0,
    },
    vendor_message="10002: API Key Missing",
    key=None,
    key_env=None,
)
