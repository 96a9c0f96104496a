"""Finnhub specifics: news deduplicated by url, the key in a header, point-in-time earnings and series."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hflite.data.providers import finnhub
from hflite.data.providers.base import RejectedError, TransientError
from hflite.data.providers.finnhub import FinnhubProvider
from tests.providers.contract import fast_options
from tests.providers.server import Route, fixture

KEY = "cl0a1b2c3d4e5f6g7h8i"
NEWS = r"/company-news"
UTC = "UTC"
SHARED = "Stocks to Sell Now Before Momentum Reverses: AAPL, NVDA and TSLA"


@pytest.fixture
def fh(server):
    provider = FinnhubProvider(key=KEY, url=server.url, options=fast_options())
    yield provider
    provider.close()


def _news_routes() -> list[Route]:
    return [
        Route(
            NEWS, fixture("finnhub", "company_news_aapl_2023-11-01_2023-11-03.json"), query={"symbol": "AAPL"}
        ),
        Route(
            NEWS, fixture("finnhub", "company_news_nvda_2023-11-01_2023-11-03.json"), query={"symbol": "NVDA"}
        ),
    ]


def _news(provider: FinnhubProvider, symbols: list[str], until: str = "2023-11-03 23:59:59") -> pd.DataFrame:
    return provider.news(symbols, pd.Timestamp("2023-11-01", tz=UTC), pd.Timestamp(until, tz=UTC))


def test_an_article_listed_under_two_companies_appears_once_with_both_tickers(serve, fh):
    serve(*_news_routes())

    frame = _news(fh, ["AAPL", "NVDA"])

    assert len(frame) == 6 + 3 - 1
    assert frame["url"].is_unique
    shared = frame[frame["headline"] == SHARED]
    assert len(shared) == 1
    assert shared["tickers"].iloc[0] == "AAPL,NVDA"
    assert set(frame["tickers"]) == {"AAPL", "NVDA", "AAPL,NVDA"}


def test_news_is_ordered_by_time_in_utc(serve, fh):
    serve(*_news_routes())

    frame = _news(fh, ["AAPL", "NVDA"])

    assert frame["ts"].is_monotonic_increasing
    assert str(frame["ts"].dt.tz) == UTC
    assert frame["ts"].iloc[-1] == pd.Timestamp("2023-11-03 12:15", tz=UTC)


def test_articles_after_the_window_on_its_last_day_are_left_out(serve, fh):
    srv = serve(*_news_routes())

    frame = _news(fh, ["AAPL"], until="2023-11-03 12:00")

    assert len(frame) == 5
    assert srv.requests[0][1]["to"] == ["2023-11-03"]


def test_the_key_travels_in_the_header_not_the_url(serve, fh):
    srv = serve(*_news_routes())

    _news(fh, ["AAPL"])

    assert fh.auth_headers() == {"X-Finnhub-Token": KEY}
    assert "token" not in srv.requests[0][1]


def test_a_resource_outside_the_plan_is_rejected_with_finnhub_s_message(serve, fh):
    srv = serve(Route(NEWS, fixture("finnhub", "error_no_access.json"), status=403))

    with pytest.raises(RejectedError, match="You don't have access to this resource"):
        _news(fh, ["AAPL"])
    assert len(srv.requests) == 1


def test_a_persistent_429_ends_as_transient_with_finnhub_s_message(serve, fh):
    srv = serve(Route(NEWS, fixture("finnhub", "error_api_limit.json"), status=429))

    with pytest.raises(TransientError, match="API limit reached"):
        _news(fh, ["AAPL"])
    assert len(srv.requests) == 3


def test_the_key_never_appears_in_an_error_even_when_the_answer_echoes_it(serve, fh):
    serve(
        Route(
            NEWS,
            f"<html>502 Bad Gateway (X-Finnhub-Token: {KEY})</html>",
            status=502,
            content_type="text/html",
        )
    )

    with pytest.raises(TransientError) as err:
        _news(fh, ["AAPL"])
    assert KEY not in str(err.value)


def _fundamentals(serve, fh, monkeypatch, now: str) -> pd.DataFrame:
    monkeypatch.setattr(finnhub, "_now", lambda: pd.Timestamp(now, tz=UTC))
    serve(
        Route(
            r"/stock/metric",
            fixture("finnhub", "stock_metric_aapl.json"),
            query={"symbol": "AAPL", "metric": "all"},
        ),
        Route(
            r"/calendar/earnings", fixture("finnhub", "calendar_earnings_aapl.json"), query={"symbol": "AAPL"}
        ),
    )
    return fh.fundamentals("AAPL")


def _row(frame: pd.DataFrame, metric: str, period_end: str) -> pd.Series:
    hit = frame[(frame["metric"] == metric) & (frame["period_end"] == pd.Timestamp(period_end, tz=UTC))]
    assert len(hit) == 1, (metric, period_end)
    return hit.iloc[0]


def test_reported_eps_is_known_after_the_close_of_the_report_date(serve, fh, monkeypatch):
    frame = _fundamentals(serve, fh, monkeypatch, "2024-12-06 22:00")

    autumn = _row(frame, "eps_reported", "2024-09-28")  # reported 2024-10-31, amc
    winter = _row(frame, "eps_reported", "2023-12-30")  # reported 2024-02-01, amc

    assert autumn["value"] == pytest.approx(1.64)
    assert autumn["known_at"] == pd.Timestamp("2024-11-01 00:00", tz=UTC)  # 20:00 EDT
    assert winter["known_at"] == pd.Timestamp("2024-02-02 01:00", tz=UTC)  # 20:00 EST
    assert _row(frame, "eps_estimated", "2024-09-28")["value"] == pytest.approx(1.5965)


def test_a_report_not_yet_published_is_not_a_fact(serve, fh, monkeypatch):
    frame = _fundamentals(serve, fh, monkeypatch, "2024-12-06 22:00")

    assert (frame["known_at"] <= pd.Timestamp("2024-12-06 22:00", tz=UTC)).all()
    assert len(frame[frame["metric"] == "eps_estimated"]) == 4  # the 2025-01-30 estimate is left out


def test_the_earnings_calendar_is_asked_for_the_last_year(serve, server, fh, monkeypatch):
    _fundamentals(serve, fh, monkeypatch, "2024-12-06 22:00")

    calendar = next(query for path, query in server.requests if path == "/calendar/earnings")
    assert (calendar["from"], calendar["to"]) == (["2023-12-07"], ["2024-12-06"])


def test_quarterly_series_are_known_an_estimated_45_days_after_the_period(serve, fh, monkeypatch):
    frame = _fundamentals(serve, fh, monkeypatch, "2024-12-06 22:00")

    eps = _row(frame, "eps", "2024-09-28")

    assert eps["value"] == pytest.approx(0.97)
    assert eps["known_at"] == pd.Timestamp("2024-11-12", tz=UTC)
    assert set(frame["metric"]) == {
        "eps",
        "sales_per_share",
        "gross_margin",
        "net_margin",
        "roe_ttm",
        "eps_reported",
        "eps_estimated",
    }


def test_an_estimated_publication_is_never_later_than_the_fetch(serve, fh, monkeypatch):
    frame = _fundamentals(serve, fh, monkeypatch, "2024-11-05 12:00")

    assert _row(frame, "net_margin", "2024-09-28")["known_at"] == pd.Timestamp("2024-11-05 12:00", tz=UTC)


def test_an_unknown_symbol_has_no_fundamentals(serve, fh):
    serve(
        Route(
            r"/stock/metric", json.dumps({"metric": {}, "metricType": "all", "series": {}, "symbol": "ZZZZ"})
        ),
        Route(r"/calendar/earnings", json.dumps({"earningsCalendar": []})),
    )

    frame = fh.fundamentals("ZZZZ")

    assert frame.empty and list(frame.columns) == ["symbol", "metric", "period_end", "known_at", "value"]


def test_the_declared_limit_is_the_free_plan_s_60_calls_a_minute():
    assert FinnhubProvider.key_env == "FINNHUB_API_KEY"
    assert FinnhubProvider.limits.per_minute == 60
    assert FinnhubProvider.supplies == {"news", "fundamentals"}
