"""FRED observations: answers in the shape ``/fred/series/observations?file_type=json`` sends.

Fixtures (``fixtures/fred/``): DGS10 (10-year Treasury yield) for the first weeks of 2024 with the
values of the shared ``macro/DGS10.csv`` and FRED's ``"."`` on the market holidays (2024-01-01,
2024-01-15); the paged answer splits 2024-01-01..2024-01-18 into pages of 7. Errors use FRED's
``{"error_code", "error_message"}`` envelope.
"""

from __future__ import annotations

import pandas as pd

from hflite.data.providers.base import SERIES_COLUMNS
from hflite.data.providers.fred import FredProvider
from tests.providers.contract import ProviderCase, fast_options
from tests.providers.server import Route, fixture

OBS = r"/fred/series/observations"
DGS10 = {"series_id": "DGS10", "file_type": "json"}


def _paged(provider: FredProvider) -> pd.DataFrame:
    provider.page_size = 7  # the fixture's page size; FRED's own is 100000
    return provider.series(
        "DGS10", pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-18", tz="UTC")
    )


CASE = ProviderCase(
    name="fred",
    make=lambda url, key: FredProvider(key=key, url=url, options=fast_options()),
    call=lambda p: p.series(
        "DGS10", pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-12", tz="UTC")
    ),
    paginated_call=_paged,
    routes={
        "success": [Route(OBS, fixture("fred", "dgs10_2024-01-01_2024-01-12.json"), query=DGS10)],
        "empty": [Route(OBS, fixture("fred", "dgs10_empty.json"), query=DGS10)],
        "paginated": [
            Route(OBS, fixture("fred", "dgs10_page1.json"), query={**DGS10, "offset": "0", "limit": "7"}),
            Route(OBS, fixture("fred", "dgs10_page2.json"), query={**DGS10, "offset": "7", "limit": "7"}),
        ],
        "rate_limited": [
            Route(OBS, fixture("fred", "error_rate_limit.json"), status=429, query=DGS10, times=1),
            Route(OBS, fixture("fred", "dgs10_2024-01-01_2024-01-12.json"), query=DGS10),
        ],
        "server_error": [
            Route(
                OBS,
                "<html><head><title>502 Bad Gateway</title></head></html>",
                status=502,
                content_type="text/html",
            )
        ],
        "invalid_key": [Route(OBS, fixture("fred", "error_api_key_not_registered.json"), status=400)],
        "malformed": [Route(OBS, '{"realtime_start":"2024-11-22","observations":[{"date":', query=DGS10)],
    },
    columns=SERIES_COLUMNS,
    rows=9,
    first={"date": pd.Timestamp("2024-01-02", tz="UTC"), "value": 3.95},
    vendor_message="The value for variable api_key is not registered",
    key="abcdefghijklmnopqrstuvwxyz123456",
    key_env="FRED_API_KEY",
    paginated_rows=12,
)
