"""Yahoo chart endpoint specifics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hflite.data.providers.base import NotSupportedError
from hflite.data.providers.yahoo import YahooProvider
from tests.providers.contract import fast_options
from tests.providers.server import FixtureServer, Route, fixture

DAY = json.loads(fixture("yfinance", "chart_spy_1d.json"))


def provider(url: str) -> YahooProvider:
    return YahooProvider(url=url, options=fast_options())


def test_null_prices_are_kept_as_nan_for_validation_to_quarantine():
    body = json.loads(json.dumps(DAY))
    body["chart"]["result"][0]["indicators"]["quote"][0]["close"][2] = None
    body["chart"]["result"][0]["indicators"]["adjclose"][0]["adjclose"][2] = None
    with FixtureServer([Route(r"/v8/finance/chart/SPY", body)]) as srv:
        frame = provider(srv.url).bars(
            "SPY", "1d", pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-08", tz="UTC")
        )
    assert len(frame) == 5 and np.isnan(frame.close.iloc[2]) and np.isnan(frame.open.iloc[2])


def test_daily_bars_are_stamped_with_the_new_york_session_date():
    with FixtureServer([Route(r"/v8/finance/chart/SPY", fixture("yfinance", "chart_spy_1d.json"))]) as srv:
        frame = provider(srv.url).bars(
            "SPY", "1d", pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-08", tz="UTC")
        )
    assert list(frame.ts.dt.strftime("%Y-%m-%d %H:%M")) == [
        "2024-01-02 00:00",
        "2024-01-03 00:00",
        "2024-01-04 00:00",
        "2024-01-05 00:00",
        "2024-01-08 00:00",
    ]


def test_fx_pairs_use_yahoo_s_symbols():
    with FixtureServer([Route(r"/v8/finance/chart/JPY=X", fixture("yfinance", "chart_empty.json"))]) as srv:
        provider(srv.url).bars(
            "USDJPY", "1d", pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-08", tz="UTC")
        )
        assert srv.requests[0][0] == "/v8/finance/chart/JPY=X"


def test_minute_bars_are_asked_for_in_seven_day_windows():
    with FixtureServer([Route(r"/v8/finance/chart/BTC-USD", fixture("yfinance", "chart_empty.json"))]) as srv:
        provider(srv.url).bars(
            "BTC-USD", "1m", pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-20", tz="UTC")
        )
        starts = [int(q["period1"][0]) for _, q in srv.requests]
    assert np.diff(starts).tolist() == [7 * 86400 + 1, 7 * 86400 + 1]


def test_an_unknown_frequency_is_refused():
    with pytest.raises(NotSupportedError, match="frequency '5m'"):
        YahooProvider(url="http://127.0.0.1:9").bars(
            "SPY", "5m", pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-03", tz="UTC")
        )


def test_a_bar_that_has_not_closed_yet_is_dropped():
    class Tuesday(YahooProvider):
        def now(self) -> pd.Timestamp:
            return pd.Timestamp("2024-01-05 18:00", tz="UTC")  # Friday's session still trading

    with FixtureServer([Route(r"/v8/finance/chart/SPY", fixture("yfinance", "chart_spy_1d.json"))]) as srv:
        frame = Tuesday(url=srv.url, options=fast_options()).bars(
            "SPY", "1d", pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-08", tz="UTC")
        )
    assert frame.ts.iloc[-1] == pd.Timestamp("2024-01-04", tz="UTC")


def test_a_host_that_cannot_be_reached_is_reported_as_unreachable():
    from hflite.data.providers.base import TransientError

    with pytest.raises(TransientError) as exc:
        provider("http://127.0.0.1:9").bars(
            "SPY", "1d", pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-08", tz="UTC")
        )
    assert exc.value.unreachable and "connection failed" in str(exc.value)
