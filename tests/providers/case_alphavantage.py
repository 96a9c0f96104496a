"""Alpha Vantage daily bars: answers in the shape ``/query`` sends (errors and limits with HTTP 200).

Fixtures (``fixtures/alphavantage/``): SPY daily bars 2023-12-26..2024-01-12 as traded (the shared
sample's back-adjusted SPY closes scaled to the raw 2024-01-02 close of 472.65, rounded to cents);
error and notice texts as Alpha Vantage words them (``Error Message`` / ``Information`` / ``Note``).
"""

from __future__ import annotations

import pandas as pd

from hflite.data.providers.alphavantage import AlphaVantageProvider
from hflite.data.providers.base import BAR_COLUMNS
from tests.providers.contract import ProviderCase, fast_options
from tests.providers.server import Route, fixture

QUERY = r"/query"
DAILY = {"function": "TIME_SERIES_DAILY", "symbol": "SPY"}

CASE = ProviderCase(
    name="alphavantage",
    make=lambda url, key: AlphaVantageProvider(key=key, url=url, options=fast_options()),
    call=lambda p: p.bars(
        "SPY", "1d", pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-08", tz="UTC")
    ),
    routes={
        "success": [Route(QUERY, fixture("alphavantage", "daily_spy_full.json"), query=DAILY)],
        "empty": [Route(QUERY, fixture("alphavantage", "daily_spy_empty.json"), query=DAILY)],
        "paginated": None,  # one request returns the whole series
        "rate_limited": [
            Route(QUERY, fixture("alphavantage", "info_burst_limit.json"), query=DAILY, times=1),
            Route(QUERY, fixture("alphavantage", "daily_spy_full.json"), query=DAILY),
        ],
        "server_error": [
            Route(
                QUERY,
                "<html><body>503 Service Unavailable</body></html>",
                status=503,
                content_type="text/html",
            )
        ],
        "invalid_key": [Route(QUERY, fixture("alphavantage", "error_invalid_key.json"), query=DAILY)],
        "malformed": [
            Route(QUERY, "<!DOCTYPE html><html><title>Alpha Vantage</title></html>", content_type="text/html")
        ],
    },
    columns=BAR_COLUMNS,
    rows=5,
    first={
        "ts": pd.Timestamp("2024-01-02", tz="UTC"),
        "open": 472.16,
        "high": 473.67,
        "low": 470.49,
        "close": 472.65,
        "volume": 123623700.0,
    },
    vendor_message="the parameter apikey is invalid or missing",
    key_env="ALPHAVANTAGE_API_KEY",
)
