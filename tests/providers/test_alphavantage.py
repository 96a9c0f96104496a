"""Alpha Vantage specifics: Eastern stamps, errors and limits sent with HTTP 200, fundamentals in time."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hflite.data.providers import alphavantage
from hflite.data.providers.alphavantage import AlphaVantageProvider
from hflite.data.providers.base import NotSupportedError, RejectedError, TransientError
from tests.providers.contract import fast_options
from tests.providers.server import Route, fixture

KEY = "test-secret-key-123"
Q = r"/query"
DAILY = {"function": "TIME_SERIES_DAILY", "symbol": "SPY"}
UTC = "UTC"


@pytest.fixture
def av(server):
    provider = AlphaVantageProvider(key=KEY, url=server.url, options=fast_options())
    yield provider
    provider.close()


def _spy_daily(provider: AlphaVantageProvider) -> pd.DataFrame:
    return provider.bars("SPY", "1d", pd.Timestamp("2024-01-02", tz=UTC), pd.Timestamp("2024-01-08", tz=UTC))


def test_intraday_eastern_stamps_become_utc_bar_open_times(serve, av):
    srv = serve(
        Route(Q, fixture("alphavantage", "intraday_spy_1min_2025-07.json"), query={"month": "2025-07"})
    )

    frame = av.bars(
        "SPY", "1m", pd.Timestamp("2025-07-01 13:30", tz=UTC), pd.Timestamp("2025-07-01 20:00", tz=UTC)
    )

    assert str(frame["ts"].dt.tz) == UTC
    assert frame["ts"].iloc[0] == pd.Timestamp("2025-07-01 13:30", tz=UTC)  # 09:30 EDT
    assert frame["ts"].iloc[-1] == pd.Timestamp("2025-07-01 19:59", tz=UTC)  # 15:59 EDT, the last bar
    assert len(frame) == 7
    assert frame["open"].iloc[0] == pytest.approx(616.36)
    assert frame["volume"].iloc[-1] == 1809199.0
    query = srv.requests[0][1]
    assert query["function"] == ["TIME_SERIES_INTRADAY"]
    assert query["interval"] == ["1min"]
    assert query["extended_hours"] == ["false"]
    assert query["outputsize"] == ["full"]


def test_eastern_stamps_follow_daylight_saving_time():
    stamps = pd.DatetimeIndex(["2024-01-02 09:30:00", "2024-07-01 09:30:00"])

    utc = alphavantage._eastern_to_utc(stamps, "US/Eastern")

    assert list(utc) == [pd.Timestamp("2024-01-02 14:30", tz=UTC), pd.Timestamp("2024-07-01 13:30", tz=UTC)]


def test_a_recent_window_asks_for_the_compact_series(serve, av, monkeypatch):
    monkeypatch.setattr(alphavantage, "_now", lambda: pd.Timestamp("2024-01-12 22:00", tz=UTC))
    srv = serve(Route(Q, fixture("alphavantage", "daily_spy_full.json"), query=DAILY))

    _spy_daily(av)

    assert srv.requests[0][1]["outputsize"] == ["compact"]


def test_a_window_older_than_the_compact_series_asks_for_the_full_history(serve, av, monkeypatch):
    monkeypatch.setattr(alphavantage, "_now", lambda: pd.Timestamp("2024-12-06 22:00", tz=UTC))
    srv = serve(Route(Q, fixture("alphavantage", "daily_spy_full.json"), query=DAILY))

    _spy_daily(av)

    assert srv.requests[0][1]["outputsize"] == ["full"]


def test_full_history_refused_to_a_free_key_is_rejected_with_the_vendor_s_text(serve, av):
    srv = serve(Route(Q, fixture("alphavantage", "info_premium_outputsize.json"), query=DAILY))

    with pytest.raises(RejectedError, match="outputsize=full parameter value is a premium feature"):
        _spy_daily(av)
    assert len(srv.requests) == 1


def test_a_premium_endpoint_is_rejected_without_retrying(serve, av):
    srv = serve(Route(Q, fixture("alphavantage", "info_premium_endpoint.json")))

    with pytest.raises(RejectedError, match="This is a premium endpoint"):
        _spy_daily(av)
    assert len(srv.requests) == 1


def test_an_invalid_call_is_rejected_with_the_vendor_s_error_message(serve, av):
    serve(Route(Q, fixture("alphavantage", "error_invalid_call.json")))

    with pytest.raises(RejectedError, match="Invalid API call"):
        _spy_daily(av)


def test_the_invalid_key_message_arrives_with_http_200_and_is_final(serve, av):
    srv = serve(Route(Q, fixture("alphavantage", "error_invalid_key.json")))

    with pytest.raises(RejectedError, match="the parameter apikey is invalid or missing"):
        _spy_daily(av)
    assert len(srv.requests) == 1


def test_the_burst_limit_notice_is_retried_a_bounded_number_of_times(serve, av):
    srv = serve(Route(Q, fixture("alphavantage", "info_burst_limit.json")))

    with pytest.raises(TransientError, match="gave up after 3 tries") as err:
        _spy_daily(av)
    assert "1 request per second" in str(err.value)
    assert len(srv.requests) == 3


def test_the_former_call_frequency_note_is_retried_and_then_succeeds(serve, av):
    srv = serve(
        Route(Q, fixture("alphavantage", "note_call_frequency.json"), times=1),
        Route(Q, fixture("alphavantage", "daily_spy_full.json"), query=DAILY),
    )

    frame = _spy_daily(av)

    assert len(frame) == 5
    assert len(srv.requests) == 2


def test_a_spent_daily_quota_fails_at_once_without_the_key_it_echoes(serve, server):
    key = "Q4Z7NC2XK1R0T8VB"  # the key that fixture's notice names
    srv = serve(Route(Q, fixture("alphavantage", "info_daily_limit.json")))
    provider = AlphaVantageProvider(key=key, url=server.url, options=fast_options())

    with pytest.raises(TransientError, match="25 requests per day") as err:
        _spy_daily(provider)
    provider.close()
    assert key not in str(err.value)
    assert "***" in str(err.value)
    assert len(srv.requests) == 1


def test_the_key_never_appears_in_an_error_even_when_the_answer_echoes_it(serve, av):
    page = f"<html><body>400 Bad Request: /query?function=TIME_SERIES_DAILY&apikey={KEY}</body></html>"
    serve(Route(Q, page, status=400, content_type="text/html"))

    with pytest.raises(RejectedError, match="HTTP 400") as err:
        _spy_daily(av)
    assert KEY not in str(err.value)


def test_the_key_travels_as_the_apikey_query_parameter(serve, av):
    srv = serve(Route(Q, fixture("alphavantage", "daily_spy_full.json"), query=DAILY))

    _spy_daily(av)

    assert srv.requests[0][1]["apikey"] == [KEY]


def _fundamentals(serve, av, monkeypatch, now: str) -> pd.DataFrame:
    monkeypatch.setattr(alphavantage, "_now", lambda: pd.Timestamp(now, tz=UTC))
    serve(
        Route(
            Q, fixture("alphavantage", "earnings_aapl.json"), query={"function": "EARNINGS", "symbol": "AAPL"}
        ),
        Route(
            Q, fixture("alphavantage", "overview_aapl.json"), query={"function": "OVERVIEW", "symbol": "AAPL"}
        ),
    )
    return av.fundamentals("AAPL")


def _row(frame: pd.DataFrame, metric: str, period_end: str) -> pd.Series:
    hit = frame[(frame["metric"] == metric) & (frame["period_end"] == pd.Timestamp(period_end, tz=UTC))]
    assert len(hit) == 1, (metric, period_end)
    return hit.iloc[0]


def test_reported_eps_is_known_after_the_close_of_the_report_date(serve, av, monkeypatch):
    frame = _fundamentals(serve, av, monkeypatch, "2024-12-06 22:00")

    autumn = _row(frame, "eps_reported", "2024-09-30")
    winter = _row(frame, "eps_reported", "2023-12-31")

    assert autumn["value"] == pytest.approx(1.64)
    assert autumn["known_at"] == pd.Timestamp("2024-11-01 00:00", tz=UTC)  # 2024-10-31 20:00 EDT
    assert winter["known_at"] == pd.Timestamp("2024-02-02 01:00", tz=UTC)  # 2024-02-01 20:00 EST
    assert _row(frame, "eps_estimated", "2024-09-30")["value"] == pytest.approx(1.6)


def test_overview_ratios_are_known_an_estimated_45_days_after_the_quarter(serve, av, monkeypatch):
    frame = _fundamentals(serve, av, monkeypatch, "2024-12-06 22:00")

    roe = _row(frame, "roe_ttm", "2024-09-30")

    assert roe["value"] == pytest.approx(1.574)
    assert roe["known_at"] == pd.Timestamp("2024-11-14", tz=UTC)


def test_ratios_on_the_share_price_are_known_only_from_the_fetch(serve, av, monkeypatch):
    frame = _fundamentals(serve, av, monkeypatch, "2024-12-06 22:00")

    pe = _row(frame, "pe_ratio", "2024-09-30")

    assert pe["value"] == pytest.approx(40.15)
    assert pe["known_at"] == pd.Timestamp("2024-12-06 22:00", tz=UTC)


def test_an_estimated_publication_is_never_later_than_the_fetch(serve, av, monkeypatch):
    frame = _fundamentals(serve, av, monkeypatch, "2024-11-05 12:00")

    assert _row(frame, "eps_ttm", "2024-09-30")["known_at"] == pd.Timestamp("2024-11-05 12:00", tz=UTC)


def test_fundamentals_have_the_documented_columns_in_utc(serve, av, monkeypatch):
    frame = _fundamentals(serve, av, monkeypatch, "2024-12-06 22:00")

    assert list(frame.columns) == ["symbol", "metric", "period_end", "known_at", "value"]
    assert str(frame["period_end"].dt.tz) == UTC and str(frame["known_at"].dt.tz) == UTC
    assert len(frame) == 5 * 2 + 5 + 2  # 5 quarters x (reported, estimated) + 5 accounting + 2 price ratios


def test_an_unknown_symbol_has_no_fundamentals(serve, av):
    serve(Route(Q, json.dumps({})))

    frame = av.fundamentals("ZZZZ")

    assert frame.empty and list(frame.columns) == ["symbol", "metric", "period_end", "known_at", "value"]


def test_an_unsupported_frequency_is_not_supported(av):
    with pytest.raises(NotSupportedError, match="1w"):
        av.bars("SPY", "1w", pd.Timestamp("2024-01-02", tz=UTC), pd.Timestamp("2024-01-08", tz=UTC))


def test_the_declared_limits_are_the_free_key_s():
    assert AlphaVantageProvider.key_env == "ALPHAVANTAGE_API_KEY"
    assert AlphaVantageProvider.limits.per_day == 25
    assert AlphaVantageProvider.limits.per_minute == 5
    assert AlphaVantageProvider.supplies == {"bars", "fundamentals"}
