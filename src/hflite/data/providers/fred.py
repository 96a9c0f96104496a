"""FRED and ALFRED (``GET /fred/series/observations``, ``file_type=json``): macro series and first releases.

- Values are strings; FRED's ``"."`` marks a missing observation (a holiday for daily series, a
  period not published): those rows are dropped. ``date`` is the observation date (the first day of
  the reference period for monthly and quarterly series) at 00:00 UTC.
- Pages: each answer carries ``count``, ``offset`` and ``limit`` (at most 100000 observations per
  request); the next page is asked with ``offset`` until ``count`` observations have been read.
- ``vintage=True`` asks ALFRED for the initial release only (``output_type=4``) over the real-time
  period from ``start`` to ``9999-12-31`` (FRED refuses any other ``realtime_end`` after today): each
  observation comes with the ``realtime_start`` of its first publication, a date (00:00 UTC) - the
  hour of the release is not given. For observations older than a series' first archived vintage
  ALFRED reports that vintage, which is later than the true first publication (late, never early).
  FRED caps a request at 2000 vintage dates; a long window of a daily series exceeds it and is
  refused with FRED's message.
- Errors come as HTTP 400 with ``{"error_code": 400, "error_message": "Bad Request.  ..."}``;
  FRED allows 120 requests a minute per key.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import numpy as np
import pandas as pd

from hflite.data.providers.base import (
    SERIES_COLUMNS,
    BaseProvider,
    Limits,
    MalformedResponseError,
    RejectedError,
)

PATH = "/fred/series/observations"
#: FRED's largest page (and its default).
MAX_PAGE = 100_000
#: The end of the real-time period that FRED accepts beyond today.
REALTIME_MAX = "9999-12-31"
#: output_type 4: "Initial Release Only".
INITIAL_RELEASE = 4
MISSING = "."


class FredProvider(BaseProvider):
    """FRED observations, with ALFRED first releases for point-in-time use; key as ``api_key``."""

    name: ClassVar[str] = "fred"
    key_env: ClassVar[str | None] = "FRED_API_KEY"
    default_url: ClassVar[str] = "https://api.stlouisfed.org"
    limits: ClassVar[Limits] = Limits(per_minute=120, note="FRED API: 120 requests per minute per key")
    supplies: ClassVar[frozenset[str]] = frozenset({"series", "vintages"})
    #: Observations asked per request (FRED's maximum; tests shrink it to exercise paging).
    page_size: int = MAX_PAGE

    def error_message(self, resp: httpx.Response) -> str | None:
        body = resp.json()
        if isinstance(body, dict) and body.get("error_message"):
            return str(body["error_message"])
        return None

    def series(
        self, series_id: str, start: pd.Timestamp, end: pd.Timestamp, *, vintage: bool = False
    ) -> pd.DataFrame:
        params: dict[str, Any] = {
            "series_id": series_id,
            "api_key": self.key,
            "file_type": "json",
            "observation_start": _day(start),
            "observation_end": _day(end),
            "sort_order": "asc",
            "limit": self.page_size,
        }
        if vintage:
            params |= {
                "realtime_start": _day(start),
                "realtime_end": REALTIME_MAX,
                "output_type": INITIAL_RELEASE,
            }
        observations = self._all_pages(params)
        return self._frame(observations, vintage)

    def _all_pages(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        observations: list[dict[str, Any]] = []
        offset = 0
        while True:
            payload = self.http.get_json(PATH, {**params, "offset": offset})
            page, count = self._page(payload)
            observations += page
            offset += len(page)
            if not page or offset >= count:
                return observations

    def _page(self, payload: Any) -> tuple[list[dict[str, Any]], int]:
        if not isinstance(payload, dict):
            raise MalformedResponseError(self.name, "expected a JSON object of observations")
        if payload.get("error_message"):
            raise RejectedError(self.name, self.http.redact(str(payload["error_message"])))
        page = payload.get("observations")
        if not isinstance(page, list) or not all(isinstance(o, dict) for o in page):
            raise MalformedResponseError(self.name, "no 'observations' list in the answer")
        try:
            count = int(payload["count"])
        except (KeyError, TypeError, ValueError):
            raise MalformedResponseError(self.name, "no observation 'count' in the answer") from None
        return page, count

    def _frame(self, observations: list[dict[str, Any]], vintage: bool) -> pd.DataFrame:
        kept = [o for o in observations if o.get("value") != MISSING]
        try:
            columns: dict[str, Any] = {
                "date": _utc_dates([o["date"] for o in kept]),
                "value": np.array([float(o["value"]) for o in kept], dtype="float64"),
            }
            if vintage:
                columns["realtime_start"] = _utc_dates([o["realtime_start"] for o in kept])
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponseError(self.name, f"unexpected observation ({exc})") from None
        schema = [*SERIES_COLUMNS, "realtime_start"] if vintage else SERIES_COLUMNS
        frame = pd.DataFrame(columns)[schema]
        frame = frame.sort_values([c for c in schema if c != "value"], ignore_index=True)
        return frame.drop_duplicates("date", keep="first", ignore_index=True)


def _day(t: pd.Timestamp) -> str:
    t = pd.Timestamp(t)
    return str((t.tz_convert("UTC") if t.tz is not None else t).strftime("%Y-%m-%d"))


def _utc_dates(values: list[str]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(values, format="%Y-%m-%d")).tz_localize("UTC").as_unit("ns")
