"""FRED specifics: "." values dropped, every page followed, ALFRED first releases, FRED's error envelope."""

from __future__ import annotations

import pandas as pd
import pytest

from hflite.data.providers.base import MalformedResponseError, RejectedError, TransientError
from hflite.data.providers.fred import FredProvider
from tests.providers.contract import fast_options
from tests.providers.server import Route, fixture

KEY = "abcdefghijklmnopqrstuvwxyz123456"
OBS = r"/fred/series/observations"
UTC = "UTC"


@pytest.fixture
def fred(server):
    provider = FredProvider(key=KEY, url=server.url, options=fast_options())
    yield provider
    provider.close()


def _dgs10(provider: FredProvider) -> pd.DataFrame:
    return provider.series("DGS10", pd.Timestamp("2024-01-01", tz=UTC), pd.Timestamp("2024-01-12", tz=UTC))


def _unrate_first_releases(provider: FredProvider) -> pd.DataFrame:
    return provider.series(
        "UNRATE", pd.Timestamp("2023-01-01", tz=UTC), pd.Timestamp("2023-06-01", tz=UTC), vintage=True
    )


def test_missing_values_marked_with_a_dot_are_dropped(serve, fred):
    serve(Route(OBS, fixture("fred", "dgs10_2024-01-01_2024-01-12.json")))

    frame = _dgs10(fred)

    assert pd.Timestamp("2024-01-01", tz=UTC) not in set(frame["date"])  # New Year's Day: "."
    assert len(frame) == 9
    assert frame["value"].dtype == "float64"
    assert frame["value"].tolist()[:4] == [3.95, 3.91, 3.99, 4.05]


def test_the_request_names_the_series_window_and_json(serve, fred):
    srv = serve(Route(OBS, fixture("fred", "dgs10_2024-01-01_2024-01-12.json")))

    _dgs10(fred)

    query = srv.requests[0][1]
    assert query["series_id"] == ["DGS10"]
    assert query["file_type"] == ["json"]
    assert query["observation_start"] == ["2024-01-01"]
    assert query["observation_end"] == ["2024-01-12"]
    assert query["api_key"] == [KEY]
    assert query["limit"] == ["100000"] and query["offset"] == ["0"]
    assert "output_type" not in query


def test_every_page_is_read_until_count_observations(serve, fred):
    srv = serve(
        Route(OBS, fixture("fred", "dgs10_page1.json"), query={"offset": "0"}),
        Route(OBS, fixture("fred", "dgs10_page2.json"), query={"offset": "7"}),
    )
    fred.page_size = 7

    frame = fred.series("DGS10", pd.Timestamp("2024-01-01", tz=UTC), pd.Timestamp("2024-01-18", tz=UTC))

    assert [q["offset"] for _, q in srv.requests] == [["0"], ["7"]]
    assert len(frame) == 12  # 14 observations, two holidays
    assert frame["date"].iloc[-1] == pd.Timestamp("2024-01-18", tz=UTC)
    assert frame["date"].is_monotonic_increasing


def test_vintages_ask_alfred_for_the_initial_release_only(serve, fred):
    srv = serve(Route(OBS, fixture("fred", "unrate_2023h1_initial_release.json")))

    _unrate_first_releases(fred)

    query = srv.requests[0][1]
    assert query["output_type"] == ["4"]
    assert query["realtime_start"] == ["2023-01-01"]
    assert query["realtime_end"] == ["9999-12-31"]


def test_each_first_release_carries_the_date_it_was_published(serve, fred):
    serve(Route(OBS, fixture("fred", "unrate_2023h1_initial_release.json")))

    frame = _unrate_first_releases(fred)

    assert list(frame.columns) == ["date", "value", "realtime_start"]
    assert str(frame["realtime_start"].dt.tz) == UTC
    january = frame.iloc[0]
    assert january["date"] == pd.Timestamp("2023-01-01", tz=UTC)
    assert january["value"] == 3.4  # first print; revised to 3.5 on 2024-01-05
    assert january["realtime_start"] == pd.Timestamp("2023-02-03", tz=UTC)
    may = frame.iloc[4]
    assert (may["value"], may["realtime_start"]) == (3.7, pd.Timestamp("2023-06-02", tz=UTC))
    assert (frame["realtime_start"] > frame["date"]).all()


def test_an_unknown_series_is_rejected_with_fred_s_message(serve, fred):
    srv = serve(Route(OBS, fixture("fred", "error_series_does_not_exist.json"), status=400))

    with pytest.raises(RejectedError, match="The series does not exist"):
        _dgs10(fred)
    assert len(srv.requests) == 1


def test_a_persistent_429_ends_as_transient_with_fred_s_message(serve, fred):
    srv = serve(Route(OBS, fixture("fred", "error_rate_limit.json"), status=429))

    with pytest.raises(TransientError, match="Exceeded Rate Limit"):
        _dgs10(fred)
    assert len(srv.requests) == 3


def test_the_key_never_appears_in_an_error_even_when_the_answer_echoes_it(serve, fred):
    page = f"<html>500 Internal Server Error for /fred/series/observations?api_key={KEY}</html>"
    serve(Route(OBS, page, status=500, content_type="text/html"))

    with pytest.raises(TransientError) as err:
        _dgs10(fred)
    assert KEY not in str(err.value)


def test_an_answer_without_count_is_malformed(serve, fred):
    serve(Route(OBS, '{"observations": [{"date": "2024-01-02", "value": "3.95"}]}'))

    with pytest.raises(MalformedResponseError, match="count"):
        _dgs10(fred)


def test_the_declared_limit_is_fred_s_120_requests_a_minute():
    assert FredProvider.key_env == "FRED_API_KEY"
    assert FredProvider.limits.per_minute == 120
    assert FredProvider.supplies == {"series", "vintages"}
