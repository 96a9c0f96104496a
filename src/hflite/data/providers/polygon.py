"""Polygon.io (now Massive) aggregates: ``/v2/aggs/ticker/{T}/range/1/{day|hour|minute}/{from}/{to}``.

- Requests ask ``adjusted=true`` (split-adjusted; Polygon does not adjust for dividends, so daily
  prices differ from the store's back-adjusted Yahoo ones before each ex-date), ``sort=asc`` and
  ``limit=50000`` (the maximum; it counts the underlying minute aggregates, not the bars returned).
- The key travels as the ``apiKey`` query parameter, the documented way, and is appended to every
  ``next_url``: Polygon omits it there. A ``next_url`` is followed by its path and query against the
  configured base URL, so the key is never sent to another host, and pages are read until there is
  no ``next_url``.
- ``t`` is the bar's start in Unix milliseconds. Daily bars start at midnight US/Eastern, so the
  session date is the New York date of ``t`` (``ts`` = that date at 00:00 UTC); intraday ``ts`` is
  ``t`` in UTC (bar open time).
- Errors: ``{"status": "ERROR", "request_id": ..., "error": "Unknown API Key"}`` (401) and
  ``{"status": "NOT_AUTHORIZED", ..., "message": "You are not entitled to this data..."}`` (403) are
  final; 429 ("exceeded the maximum requests per minute") is retried with backoff.
- Free (Basic) plan: 5 requests a minute, end-of-day data and about 2 years of history.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import numpy as np
import pandas as pd

from hflite.data.providers.base import (
    BAR_COLUMNS,
    BaseProvider,
    HttpOptions,
    Limits,
    MalformedResponseError,
    NotSupportedError,
    RateLimiter,
    RejectedError,
    collapse_duplicates,
    empty,
)

TIMESPANS = {"1d": "day", "1h": "hour", "1m": "minute"}
MAX_LIMIT = 50_000
EASTERN = "America/New_York"
#: ``status`` values of a successful answer (``DELAYED``: the free plan's 15-minute-delayed data).
OK_STATUSES = frozenset({"OK", "DELAYED"})


class PolygonProvider(BaseProvider):
    """Polygon.io aggregates (bars) for US stocks; ``limit`` (1-50000) is sent as ``limit``."""

    name: ClassVar[str] = "polygon"
    key_env: ClassVar[str | None] = "POLYGON_API_KEY"
    default_url: ClassVar[str] = "https://api.polygon.io"
    limits: ClassVar[Limits] = Limits(
        per_minute=5, note="Basic (free) plan: 5 requests/minute, end-of-day data, 2 years of history"
    )
    supplies: ClassVar[frozenset[str]] = frozenset({"bars"})

    def __init__(
        self,
        *,
        key: str | None = None,
        url: str | None = None,
        options: HttpOptions | None = None,
        limiter: RateLimiter | None = None,
        limit: int = MAX_LIMIT,
    ) -> None:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        super().__init__(key=key, url=url, options=options, limiter=limiter)
        self.limit = limit

    def error_message(self, resp: httpx.Response) -> str | None:
        body = resp.json()
        if not isinstance(body, dict):
            return None
        text = body.get("error") or body.get("message")
        if not text:
            return None
        status = body.get("status")
        return f"{status}: {text}" if status and status != "ERROR" else str(text)

    def bars(self, symbol: str, freq: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        if freq not in TIMESPANS:
            raise NotSupportedError(self.name, f"frequency {freq!r} (has {', '.join(TIMESPANS)})")
        start, end = _utc(start), _utc(end)
        if freq == "1d":
            lo: str | int = start.strftime("%Y-%m-%d")
            hi: str | int = end.strftime("%Y-%m-%d")
        else:
            lo, hi = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        path: str | None = f"/v2/aggs/ticker/{symbol}/range/1/{TIMESPANS[freq]}/{lo}/{hi}"
        params: dict[str, Any] = {"adjusted": "true", "sort": "asc", "limit": self.limit}
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        while path is not None:
            page = f"{path}?{sorted(params.items())}"
            if page in seen:
                raise MalformedResponseError(self.name, "next_url points back to a page already read")
            seen.add(page)
            payload = self.http.get_json(path, {**params, "apiKey": self.key})
            rows.extend(self._results(payload))
            path, params = self._next(payload)
        return self._frame(rows, freq, start, end)

    def _results(self, payload: Any) -> list[dict[str, Any]]:
        if not isinstance(payload, dict) or "status" not in payload:
            raise MalformedResponseError(self.name, "expected an aggregates object with a 'status'")
        if payload["status"] not in OK_STATUSES:
            detail = payload.get("error") or payload.get("message") or "no message"
            raise RejectedError(self.name, f"{payload['status']}: {detail}")
        results = payload.get("results") or []
        if not isinstance(results, list):
            raise MalformedResponseError(self.name, "'results' is not a list")
        return results

    def _next(self, payload: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """The next page as (path, query) on our base URL; the key is added by the caller."""
        next_url = payload.get("next_url")
        if not next_url:
            return None, {}
        parts = urlsplit(str(next_url))
        query = {k: v for k, v in parse_qsl(parts.query) if k != "apiKey"}
        return parts.path, query

    def _frame(
        self, rows: list[dict[str, Any]], freq: str, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        if not rows:
            return empty(BAR_COLUMNS)
        try:
            stamps = np.array([r["t"] for r in rows], dtype="int64")
            cols = {
                name: np.array([r[key] for r in rows], dtype=float)
                for name, key in (("open", "o"), ("high", "h"), ("low", "l"), ("close", "c"), ("volume", "v"))
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponseError(self.name, f"unexpected aggregate ({exc})") from None
        ts = pd.to_datetime(stamps, unit="ms", utc=True)
        if freq == "1d":
            ts = pd.DatetimeIndex(ts.tz_convert(EASTERN).normalize().tz_localize(None)).tz_localize("UTC")
        frame = pd.DataFrame({"ts": ts.as_unit("ns"), **cols})
        lo = start.normalize() if freq == "1d" else start
        frame = frame[(frame["ts"] >= lo) & (frame["ts"] <= end)]
        return collapse_duplicates(frame)[BAR_COLUMNS]


def _utc(t: pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
