"""Yahoo Finance chart endpoint: payloads in the shape the endpoint answers (chart.result / chart.error)."""

from __future__ import annotations

import json

import pandas as pd

from hflite.data.providers.base import BAR_COLUMNS
from hflite.data.providers.yahoo import YahooProvider
from tests.providers.contract import ProviderCase, fast_options
from tests.providers.server import Route, fixture

SPY = r"/v8/finance/chart/SPY"
BTC = r"/v8/finance/chart/BTC-USD"
_ok = json.loads(fixture("yfinance", "chart_spy_1d.json"))
_q = _ok["chart"]["result"][0]["indicators"]["quote"][0]
_adj = _ok["chart"]["result"][0]["indicators"]["adjclose"][0]["adjclose"]
#: first bar: raw open scaled by adjclose / close (back-adjusted like the embedded sample)
FIRST_OPEN = _q["open"][0] * (_adj[0] / _q["close"][0])

CASE = ProviderCase(
    name="yfinance",
    make=lambda url, key: YahooProvider(url=url, options=fast_options()),
    call=lambda p: p.bars(
        "SPY", "1d", pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-08", tz="UTC")
    ),
    paginated_call=lambda p: p.bars(
        "BTC-USD", "1m", pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-10", tz="UTC")
    ),
    routes={
        "success": [Route(SPY, fixture("yfinance", "chart_spy_1d.json"))],
        "empty": [Route(SPY, fixture("yfinance", "chart_empty.json"))],
        "paginated": [
            Route(BTC, fixture("yfinance", "chart_btc_1m_page1.json"), query={"period1": "1709251200"}),
            Route(BTC, fixture("yfinance", "chart_btc_1m_page2.json"), query={"period1": "1709856001"}),
            Route(BTC, fixture("yfinance", "chart_empty.json")),
        ],
        "rate_limited": [
            Route(SPY, "Too Many Requests\r\n", status=429, times=1, content_type="text/plain"),
            Route(SPY, fixture("yfinance", "chart_spy_1d.json")),
        ],
        "server_error": [Route(SPY, "<html>502 Bad Gateway</html>", status=502, content_type="text/html")],
        "invalid_key": [Route(SPY, fixture("yfinance", "chart_not_found.json"), status=404)],
        "malformed": [
            Route(
                SPY, "<!doctype html><html><body>Will be right back</body></html>", content_type="text/html"
            )
        ],
    },
    columns=BAR_COLUMNS,
    rows=5,
    first={
        "ts": pd.Timestamp("2024-01-02", tz="UTC"),
        "open": FIRST_OPEN,
        "close": 459.991211,
        "volume": 123623700.0,
    },
    vendor_message="No data found, symbol may be delisted",
    key=None,
    key_env=None,
    paginated_rows=6,
)
