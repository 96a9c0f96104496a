"""Finnhub company news: answers in the shape ``/company-news`` sends (a JSON list of articles).

Fixtures (``fixtures/finnhub/``): AAPL and NVDA articles of 2023-11-01..2023-11-03 with headlines and
publishers from the shared ``news/google_news_AAPL_META_NVDA_2022_2023.csv`` (one article is listed
under both companies); times, ids, summaries and the ``finnhub.io/api/news?id=`` links are in
Finnhub's format but not recorded from the vendor. Errors: Finnhub's ``{"error": ...}`` bodies.
"""

from __future__ import annotations

import pandas as pd

from hflite.data.providers.base import NEWS_COLUMNS
from hflite.data.providers.finnhub import FinnhubProvider
from tests.providers.contract import ProviderCase, fast_options
from tests.providers.server import Route, fixture

NEWS = r"/company-news"
AAPL = {"symbol": "AAPL", "from": "2023-11-01", "to": "2023-11-03"}

CASE = ProviderCase(
    name="finnhub",
    make=lambda url, key: FinnhubProvider(key=key, url=url, options=fast_options()),
    call=lambda p: p.news(
        ["AAPL"], pd.Timestamp("2023-11-01", tz="UTC"), pd.Timestamp("2023-11-03 23:59:59", tz="UTC")
    ),
    routes={
        "success": [
            Route(NEWS, fixture("finnhub", "company_news_aapl_2023-11-01_2023-11-03.json"), query=AAPL)
        ],
        "empty": [Route(NEWS, fixture("finnhub", "company_news_empty.json"), query=AAPL)],
        "paginated": None,  # /company-news has no paging
        "rate_limited": [
            Route(NEWS, fixture("finnhub", "error_api_limit.json"), status=429, times=1),
            Route(NEWS, fixture("finnhub", "company_news_aapl_2023-11-01_2023-11-03.json"), query=AAPL),
        ],
        "server_error": [
            Route(NEWS, "<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html")
        ],
        "invalid_key": [Route(NEWS, fixture("finnhub", "error_invalid_api_key.json"), status=401)],
        "malformed": [
            Route(NEWS, "<html><head><title>Just a moment...</title></head></html>", content_type="text/html")
        ],
    },
    columns=NEWS_COLUMNS,
    rows=6,
    first={
        "ts": pd.Timestamp("2023-11-01 14:05", tz="UTC"),
        "source": "SeekingAlpha",
        "tickers": "AAPL",
        "headline": "Apple Earnings Preview: Earnings Quality Still Very High",
    },
    vendor_message="Invalid API key",
    key="cl0a1b2c3d4e5f6g7h8i",
    key_env="FINNHUB_API_KEY",
)
