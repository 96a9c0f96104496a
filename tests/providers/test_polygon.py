"""Polygon specifics: next_url with the key appended on our host, session dates, the key never shown."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hflite.data.providers.base import (
    MalformedResponseError,
    NotSupportedError,
    RejectedError,
    TransientError,
)
from hflite.data.providers.polygon import PolygonProvider
from tests.providers.case_polygon import AAPL, SPY_PAGE1, SPY_PAGE2, _paged
from tests.providers.contract import fast_options
from tests.providers.server import FixtureServer, Route, fixture

KEY = "test-secret-key-123"
DAY = pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-08", tz="UTC")


def provider(url: str) -> PolygonProvider:
    return PolygonProvider(key=KEY, url=url, options=fast_options())


def test_next_url_is_followed_on_our_host_with_the_key_appended():
    routes = [
        Route(SPY_PAGE1, fixture("polygon", "aggs_spy_minute_page1.json")),
        Route(SPY_PAGE2, fixture("polygon", "aggs_spy_minute_page2.json")),
    ]
    with FixtureServer(routes) as srv:
        frame = _paged(provider(srv.url))

    (first_path, first), (next_path, following) = srv.requests
    assert (first_path, next_path) == (SPY_PAGE1, SPY_PAGE2)
    assert first["apiKey"] == [KEY] and first["limit"] == ["3"]
    assert following == {"cursor": ["bGltaXQ9MyZzb3J0PWFzYw"], "apiKey": [KEY]}
    assert frame["ts"].tolist() == list(pd.date_range("2025-07-01 13:30", periods=5, freq="1min", tz="UTC"))


@pytest.mark.parametrize("status", [403, 502])
def test_the_key_never_appears_in_an_error_even_when_the_vendor_echoes_the_url(status):
    echo = f"<html>GET /v2/aggs/ticker/AAPL/range/1/day/2024-01-02/2024-01-08?apiKey={KEY} failed</html>"
    with FixtureServer([Route(AAPL, echo, status=status, content_type="text/html")]) as srv:
        with pytest.raises((RejectedError, TransientError)) as caught:
            provider(srv.url).bars("AAPL", "1d", *DAY)

    assert KEY not in str(caught.value)
    assert "apiKey=***" in str(caught.value)


def test_not_authorized_is_final_and_carries_polygon_s_message():
    route = Route(AAPL, fixture("polygon", "error_not_authorized.json"), status=403)
    with (
        FixtureServer([route]) as srv,
        pytest.raises(RejectedError, match="NOT_AUTHORIZED: Your plan doesn't include"),
    ):
        provider(srv.url).bars("AAPL", "1d", *DAY)

    assert len(srv.requests) == 1


def test_an_error_status_inside_a_200_answer_is_rejected():
    body = {"status": "ERROR", "request_id": "1f2e3d4c", "error": "Unknown API Key"}
    with FixtureServer([Route(AAPL, body)]) as srv, pytest.raises(RejectedError, match="Unknown API Key"):
        provider(srv.url).bars("AAPL", "1d", *DAY)


def test_daily_bars_are_stamped_with_the_new_york_session_date():
    summer = json.loads(fixture("polygon", "aggs_aapl_day.json"))
    summer["results"] = summer["results"][:1]
    summer["results"][0]["t"] = int(pd.Timestamp("2024-07-01", tz="America/New_York").timestamp() * 1000)
    july = r"/v2/aggs/ticker/AAPL/range/1/day/2024-07-01/2024-07-01"
    routes = [Route(AAPL, fixture("polygon", "aggs_aapl_day.json")), Route(july, summer)]
    with FixtureServer(routes) as srv:
        winter = provider(srv.url).bars("AAPL", "1d", *DAY)
        july_1 = pd.Timestamp("2024-07-01", tz="UTC")
        summer_frame = provider(srv.url).bars("AAPL", "1d", july_1, july_1)

    days = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08"]
    assert winter["ts"].tolist() == [pd.Timestamp(d, tz="UTC") for d in days]  # t = 05:00 UTC
    assert summer_frame["ts"].tolist() == [july_1]  # t = 04:00 UTC (EDT)


def test_adjusted_ascending_bars_are_asked_for_with_the_largest_limit():
    with FixtureServer([Route(AAPL, fixture("polygon", "aggs_aapl_day.json"))]) as srv:
        provider(srv.url).bars("AAPL", "1d", *DAY)

    ((_, query),) = srv.requests
    assert query == {"adjusted": ["true"], "sort": ["asc"], "limit": ["50000"], "apiKey": [KEY]}


def test_an_unsupported_frequency_is_refused_before_any_request():
    with pytest.raises(NotSupportedError, match="'5m'"):
        PolygonProvider(key=KEY).bars("AAPL", "5m", *DAY)


def test_a_next_url_that_loops_back_is_malformed_not_endless():
    page = json.loads(fixture("polygon", "aggs_spy_minute_page1.json"))
    page["next_url"] = page["next_url"].replace("1751376780000", "1751376600000")  # back to page 1
    with (
        FixtureServer([Route(SPY_PAGE1, page)]) as srv,
        pytest.raises(MalformedResponseError, match="already read"),
    ):
        _paged(provider(srv.url))

    assert len(srv.requests) == 2
