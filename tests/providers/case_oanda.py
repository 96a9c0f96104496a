"""OANDA v20 ``/v3/instruments/{I}/candles``: payloads in the documented shape (candles with mid o/h/l/c)."""

from __future__ import annotations

import pandas as pd

from hflite.data.providers.base import BAR_COLUMNS
from hflite.data.providers.oanda import OandaProvider
from tests.providers.contract import ProviderCase, fast_options
from tests.providers.server import Route, fixture

CANDLES = r"/v3/instruments/EUR_USD/candles"
OK = fixture("oanda", "candles_eur_usd_d.json")


def _paged(provider: OandaProvider) -> pd.DataFrame:
    """``count=3``: five hourly candles take two pages, the second from the last candle received."""
    provider.page_size = 3
    return provider.bars(
        "EURUSD", "1h", pd.Timestamp("2024-01-02 09:00", tz="UTC"), pd.Timestamp("2024-01-02 13:00", tz="UTC")
    )


CASE = ProviderCase(
    name="oanda",
    make=lambda url, key: OandaProvider(key=key, url=url, options=fast_options()),
    call=lambda p: p.bars(
        "EURUSD", "1d", pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-08", tz="UTC")
    ),
    paginated_call=_paged,
    routes={
        "success": [
            Route(
                CANDLES,
                OK,
                query={
                    "price": "M",
                    "granularity": "D",
                    "from": "2024-01-02T00:00:00.000000000Z",
                    "dailyAlignment": "17",
                    "alignmentTimezone": "America/New_York",
                },
            )
        ],
        "empty": [Route(CANDLES, fixture("oanda", "candles_empty.json"))],
        "paginated": [
            Route(
                CANDLES,
                fixture("oanda", "candles_eur_usd_h1_page1.json"),
                query={"from": "2024-01-02T09:00:00.000000000Z", "includeFirst": "true", "count": "3"},
            ),
            Route(
                CANDLES,
                fixture("oanda", "candles_eur_usd_h1_page2.json"),
                query={"from": "2024-01-02T11:00:00.000000000Z", "includeFirst": "false"},
            ),
        ],
        "rate_limited": [
            Route(CANDLES, fixture("oanda", "error_rate_limited.json"), status=429, times=1),
            Route(CANDLES, OK),
        ],
        "server_error": [
            Route(
                CANDLES,
                "<html><body>503 Service Unavailable</body></html>",
                status=503,
                content_type="text/html",
            )
        ],
        "invalid_key": [Route(CANDLES, fixture("oanda", "error_unauthorized.json"), status=401)],
        "malformed": [
            Route(CANDLES, '{"instrument": "EUR_USD", "candles": [{"time": ', content_type="application/json")
        ],
    },
    columns=BAR_COLUMNS,
    rows=5,
    first={
        "ts": pd.Timestamp("2024-01-02", tz="UTC"),
        "open": 1.10374,
        "high": 1.10458,
        "low": 1.09394,
        "close": 1.0942,
        "volume": 98764.0,
    },
    vendor_message="Insufficient authorization to perform request.",
    key_env="OANDA_API_TOKEN",
    paginated_rows=5,
)
