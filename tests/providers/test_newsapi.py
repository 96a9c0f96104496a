"""NewsAPI specifics: the page loop, the Developer plan's result cap, removed articles, the query."""

from __future__ import annotations

import pandas as pd
import pytest

from hflite.data.providers.base import TransientError
from hflite.data.providers.newsapi import NewsApiProvider
from tests.providers.contract import fast_options
from tests.providers.server import FixtureServer, Route, fixture

EVERYTHING = r"/v2/everything"
KEY = "test-secret-key-123"
SINCE, UNTIL = pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-05 23:59:59", tz="UTC")
PAGE1 = fixture("newsapi", "everything_nvda_page1.json")
PAGE2 = fixture("newsapi", "everything_nvda_page2.json")


def provider(url: str, page_size: int = 100) -> NewsApiProvider:
    return NewsApiProvider(key=KEY, url=url, options=fast_options(), page_size=page_size)


def test_the_page_loop_stops_once_total_results_have_arrived():
    routes = [
        Route(EVERYTHING, PAGE1, query={"page": "1"}),
        Route(EVERYTHING, PAGE2, query={"page": "2"}),
        Route(EVERYTHING, PAGE1, query={"page": "3"}),  # would duplicate: must never be asked for
    ]
    with FixtureServer(routes) as srv:
        frame = provider(srv.url, page_size=3).news(["NVDA"], SINCE, UNTIL)

    assert len(frame) == 5
    assert [q["page"] for _, q in srv.requests] == [["1"], ["2"]]
    assert all(q["pageSize"] == ["3"] for _, q in srv.requests)


def test_an_empty_page_before_total_results_ends_the_loop():
    routes = [
        Route(EVERYTHING, PAGE1, query={"page": "1"}),
        Route(EVERYTHING, b'{"status": "ok", "totalResults": 5, "articles": []}', query={"page": "2"}),
    ]
    with FixtureServer(routes) as srv:
        frame = provider(srv.url, page_size=3).news(["NVDA"], SINCE, UNTIL)

    assert len(frame) == 3
    assert len(srv.requests) == 2


def test_the_developer_plan_result_cap_keeps_the_pages_already_read():
    routes = [
        Route(EVERYTHING, PAGE1, query={"page": "1"}),
        Route(EVERYTHING, fixture("newsapi", "error_maximum_results.json"), status=426, query={"page": "2"}),
    ]
    with FixtureServer(routes) as srv:
        frame = provider(srv.url, page_size=3).news(["NVDA"], SINCE, UNTIL)

    assert len(frame) == 3
    assert len(srv.requests) == 2


def test_removed_articles_are_dropped():
    with FixtureServer([Route(EVERYTHING, fixture("newsapi", "everything_with_removed.json"))]) as srv:
        frame = provider(srv.url).news(["AAPL"], SINCE, UNTIL)

    assert frame["headline"].tolist() == ["Apple shares slide after Barclays downgrades stock to underweight"]


def test_symbols_are_or_ed_in_q_and_become_the_tickers_column():
    with FixtureServer([Route(EVERYTHING, fixture("newsapi", "everything_aapl.json"))]) as srv:
        frame = provider(srv.url).news(["AAPL", "MSFT"], SINCE, UNTIL)

    ((_, query),) = srv.requests
    assert query["q"] == ["AAPL OR MSFT"]
    assert set(frame["tickers"]) == {"AAPL,MSFT"}


def test_the_window_is_sent_in_utc_and_sorted_by_publication():
    since = pd.Timestamp("2024-01-02 09:00", tz="America/New_York")
    with FixtureServer([Route(EVERYTHING, fixture("newsapi", "everything_aapl.json"))]) as srv:
        frame = provider(srv.url).news(["AAPL"], since, UNTIL)

    ((_, query),) = srv.requests
    assert query["from"] == ["2024-01-02T14:00:00"]
    assert query["to"] == ["2024-01-05T23:59:59"]
    assert query["sortBy"] == ["publishedAt"]
    assert frame["ts"].is_monotonic_increasing
    assert str(frame["ts"].dt.tz) == "UTC"


def test_the_key_travels_in_the_x_api_key_header_never_in_the_url():
    with FixtureServer([Route(EVERYTHING, fixture("newsapi", "everything_aapl.json"))]) as srv:
        p = provider(srv.url)
        p.news(["AAPL"], SINCE, UNTIL)

    assert p.auth_headers() == {"X-Api-Key": KEY}
    assert all(KEY not in str(q) for _, q in srv.requests)


def test_a_rate_limit_that_persists_is_transient_and_carries_the_vendor_code():
    routes = [Route(EVERYTHING, fixture("newsapi", "error_rate_limited.json"), status=429)]
    with FixtureServer(routes) as srv, pytest.raises(TransientError, match="rateLimited"):
        provider(srv.url).news(["AAPL"], SINCE, UNTIL)

    assert len(srv.requests) == 3


def test_a_page_size_above_the_documented_maximum_is_refused():
    with pytest.raises(ValueError, match="page_size"):
        NewsApiProvider(key=KEY, page_size=101)
