"""NewsAPI.org ``/v2/everything``: payloads in the documented shape (status/totalResults/articles)."""

from __future__ import annotations

import pandas as pd

from hflite.data.providers.base import NEWS_COLUMNS
from hflite.data.providers.newsapi import NewsApiProvider
from tests.providers.contract import ProviderCase, fast_options
from tests.providers.server import Route, fixture

EVERYTHING = r"/v2/everything"
SINCE, UNTIL = pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-05 23:59:59", tz="UTC")
OK = fixture("newsapi", "everything_aapl.json")


def _paged(provider: NewsApiProvider) -> pd.DataFrame:
    """Three articles a page, so the five NVDA results take two pages."""
    provider.page_size = 3
    return provider.news(["NVDA"], SINCE, UNTIL)


CASE = ProviderCase(
    name="newsapi",
    make=lambda url, key: NewsApiProvider(key=key, url=url, options=fast_options()),
    call=lambda p: p.news(["AAPL"], SINCE, UNTIL),
    paginated_call=_paged,
    routes={
        "success": [Route(EVERYTHING, OK, query={"q": "AAPL", "page": "1", "pageSize": "100"})],
        "empty": [Route(EVERYTHING, fixture("newsapi", "everything_empty.json"))],
        "paginated": [
            Route(EVERYTHING, fixture("newsapi", "everything_nvda_page1.json"), query={"page": "1"}),
            Route(EVERYTHING, fixture("newsapi", "everything_nvda_page2.json"), query={"page": "2"}),
        ],
        "rate_limited": [
            Route(EVERYTHING, fixture("newsapi", "error_rate_limited.json"), status=429, times=1),
            Route(EVERYTHING, OK),
        ],
        "server_error": [Route(EVERYTHING, fixture("newsapi", "error_unexpected.json"), status=500)],
        "invalid_key": [Route(EVERYTHING, fixture("newsapi", "error_api_key_invalid.json"), status=401)],
        "malformed": [
            Route(EVERYTHING, "<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")
        ],
    },
    columns=NEWS_COLUMNS,
    rows=3,
    first={
        "ts": pd.Timestamp("2024-01-02 13:02:31", tz="UTC"),
        "source": "CNBC",
        "tickers": "AAPL",
        "headline": "Apple shares slide after Barclays downgrades stock to underweight",
        "url": "https://www.cnbc.com/2024/01/02/apple-shares-slide-after-barclays-downgrade.html",
    },
    vendor_message="apiKeyInvalid: Your API key is invalid or incorrect",
    key_env="NEWSAPI_KEY",
    paginated_rows=5,
)
