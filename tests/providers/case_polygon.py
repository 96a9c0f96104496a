"""Polygon.io aggregates: payloads in the documented shape (results t/o/h/l/c/v, next_url, status)."""

from __future__ import annotations

import pandas as pd

from hflite.data.providers.base import BAR_COLUMNS
from hflite.data.providers.polygon import PolygonProvider
from tests.providers.contract import ProviderCase, fast_options
from tests.providers.server import Route, fixture

AAPL = r"/v2/aggs/ticker/AAPL/range/1/day/2024-01-02/2024-01-08"
SPY_PAGE1 = r"/v2/aggs/ticker/SPY/range/1/minute/1751376600000/1751376840000"
SPY_PAGE2 = r"/v2/aggs/ticker/SPY/range/1/minute/1751376780000/1751376840000"
OK = fixture("polygon", "aggs_aapl_day.json")
KEY = "test-secret-key-123"


def _paged(provider: PolygonProvider) -> pd.DataFrame:
    """``limit=3``: the five SPY minutes take two pages, the second reached through ``next_url``."""
    provider.limit = 3
    return provider.bars(
        "SPY", "1m", pd.Timestamp("2025-07-01 13:30", tz="UTC"), pd.Timestamp("2025-07-01 13:34", tz="UTC")
    )


CASE = ProviderCase(
    name="polygon",
    make=lambda url, key: PolygonProvider(key=key, url=url, options=fast_options()),
    call=lambda p: p.bars(
        "AAPL", "1d", pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-08", tz="UTC")
    ),
    paginated_call=_paged,
    routes={
        "success": [
            Route(AAPL, OK, query={"adjusted": "true", "sort": "asc", "limit": "50000", "apiKey": KEY})
        ],
        "empty": [Route(AAPL, fixture("polygon", "aggs_empty.json"))],
        "paginated": [
            Route(SPY_PAGE1, fixture("polygon", "aggs_spy_minute_page1.json"), query={"limit": "3"}),
            Route(
                SPY_PAGE2,
                fixture("polygon", "aggs_spy_minute_page2.json"),
                query={"cursor": "bGltaXQ9MyZzb3J0PWFzYw", "apiKey": KEY},
            ),
        ],
        "rate_limited": [
            Route(AAPL, fixture("polygon", "error_rate_limited.json"), status=429, times=1),
            Route(AAPL, OK),
        ],
        "server_error": [
            Route(AAPL, "<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html")
        ],
        "invalid_key": [Route(AAPL, fixture("polygon", "error_unknown_key.json"), status=401)],
        "malformed": [Route(AAPL, '{"ticker": "AAPL", "results": [', content_type="application/json")],
    },
    columns=BAR_COLUMNS,
    rows=5,
    first={
        "ts": pd.Timestamp("2024-01-02", tz="UTC"),
        "open": 187.15,
        "high": 188.44,
        "low": 183.89,
        "close": 185.64,
        "volume": 82488700.0,
    },
    vendor_message="Unknown API Key",
    key=KEY,
    key_env="POLYGON_API_KEY",
    paginated_rows=5,
)
