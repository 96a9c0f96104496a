"""OANDA v20 REST (practice by default): mid-price FX candles from ``/v3/instruments/{I}/candles``.

- Auth: ``Authorization: Bearer <token>`` (a practice account's personal access token). A refused
  token answers ``{"errorMessage": "Insufficient authorization to perform request."}`` (401) and an
  unknown instrument ``{"errorMessage": "Invalid value specified for 'instrument'"}`` (400): both final.
- Requests: ``price=M`` (mid), ``granularity=D|H1|M1``, ``from`` (RFC 3339) and ``count`` (at most
  5000 candles a request). Pages advance ``from`` to the last candle received with
  ``includeFirst=false``, until a page is short, reaches ``end`` or ends in the still-forming candle.
- Candles with ``complete: false`` (the one still forming) are dropped. ``volume`` is OANDA's tick
  volume (price updates), not traded size: the store's FX volume is informational only.
- Daily candles are aligned with ``dailyAlignment=17`` and ``alignmentTimezone=America/New_York``:
  a day runs from 17:00 New York to 17:00 the next day (the FX convention) and its ``ts`` is the
  session's date - the New York date at its close - at 00:00 UTC; Sunday's opening hours belong to
  Monday. Intraday ``ts`` is the candle's open time in UTC.
- Symbols: EURUSD -> EUR_USD (any six-letter pair is split 3/3; OANDA names pass through).
- Limits: OANDA asks for at most 100 requests a second on a persistent connection and 2 new
  connections a second; the client keeps to 1200 requests a minute.
"""

from __future__ import annotations

from typing import Any, ClassVar

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
    collapse_duplicates,
    empty,
)

GRANULARITIES = {"1d": "D", "1h": "H1", "1m": "M1"}
MAX_COUNT = 5000
NEW_YORK = "America/New_York"
#: Hours from the 17:00 New York open of a daily candle to the midnight that starts its session date.
SESSION_SHIFT = pd.Timedelta(hours=7)


class OandaProvider(BaseProvider):
    """OANDA v20 mid candles; ``page_size`` (1-5000) is the ``count`` of each request."""

    name: ClassVar[str] = "oanda"
    key_env: ClassVar[str | None] = "OANDA_API_TOKEN"
    default_url: ClassVar[str] = "https://api-fxpractice.oanda.com"
    limits: ClassVar[Limits] = Limits(
        per_minute=1200, note="OANDA: at most 100 requests/s per connection, 2 new connections/s"
    )
    supplies: ClassVar[frozenset[str]] = frozenset({"bars"})

    def __init__(
        self,
        *,
        key: str | None = None,
        url: str | None = None,
        options: HttpOptions | None = None,
        limiter: RateLimiter | None = None,
        page_size: int = MAX_COUNT,
    ) -> None:
        if not 1 <= page_size <= MAX_COUNT:
            raise ValueError(f"page_size must be between 1 and {MAX_COUNT}, got {page_size}")
        super().__init__(key=key, url=url, options=options, limiter=limiter)
        self.page_size = page_size

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Accept-Datetime-Format": "RFC3339"}

    def error_message(self, resp: httpx.Response) -> str | None:
        body = resp.json()
        if isinstance(body, dict) and body.get("errorMessage"):
            return str(body["errorMessage"])
        return None

    def bars(self, symbol: str, freq: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        if freq not in GRANULARITIES:
            raise NotSupportedError(self.name, f"frequency {freq!r} (has {', '.join(GRANULARITIES)})")
        start, end = _utc(start), _utc(end)
        params: dict[str, Any] = {"price": "M", "granularity": GRANULARITIES[freq], "count": self.page_size}
        if freq == "1d":
            params.update(dailyAlignment=17, alignmentTimezone=NEW_YORK)
        path = f"/v3/instruments/{instrument(symbol)}/candles"
        cursor, include_first = start.strftime("%Y-%m-%dT%H:%M:%S.000000000Z"), True
        candles: list[dict[str, Any]] = []
        while True:
            page = self._page(path, {**params, "from": cursor, "includeFirst": str(include_first).lower()})
            candles.extend(page)
            if len(page) < self.page_size or not page[-1].get("complete", False):
                break
            last = self._stamp(page[-1:], freq)[0]
            if last >= (end.normalize() if freq == "1d" else end):
                break
            cursor, include_first = page[-1]["time"], False
        return self._frame(candles, freq, start, end)

    def _page(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        payload = self.http.get_json(path, params)
        page = payload.get("candles") if isinstance(payload, dict) else None
        if not isinstance(page, list):
            raise MalformedResponseError(self.name, "no 'candles' list in the answer")
        if any(not isinstance(c, dict) or "time" not in c for c in page):
            raise MalformedResponseError(self.name, "a candle without 'time'")
        return page

    def _stamp(self, candles: list[dict[str, Any]], freq: str) -> pd.DatetimeIndex:
        try:
            ts = pd.DatetimeIndex([pd.Timestamp(c["time"]) for c in candles])
        except (TypeError, ValueError) as exc:
            raise MalformedResponseError(self.name, f"unreadable candle time ({exc})") from None
        ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
        if freq != "1d":
            return ts
        session = (ts.tz_convert(NEW_YORK).tz_localize(None) + SESSION_SHIFT).normalize()
        return pd.DatetimeIndex(session).tz_localize("UTC")

    def _frame(
        self, candles: list[dict[str, Any]], freq: str, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        done = [c for c in candles if c.get("complete") is True]
        if not done:
            return empty(BAR_COLUMNS)
        try:
            cols = {
                name: np.array([float(c["mid"][key]) for c in done])
                for name, key in (("open", "o"), ("high", "h"), ("low", "l"), ("close", "c"))
            }
            cols["volume"] = np.array([float(c["volume"]) for c in done])
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponseError(self.name, f"unexpected candle ({exc})") from None
        frame = pd.DataFrame({"ts": self._stamp(done, freq).as_unit("ns"), **cols})
        lo = start.normalize() if freq == "1d" else start
        frame = frame[(frame["ts"] >= lo) & (frame["ts"] <= end)]
        return collapse_duplicates(frame)[BAR_COLUMNS]


def instrument(symbol: str) -> str:
    """OANDA's instrument name: EURUSD -> EUR_USD; names with an underscore pass through."""
    if "_" in symbol:
        return symbol.upper()
    clean = symbol.replace("/", "").upper()
    if len(clean) == 6 and clean.isalpha():
        return f"{clean[:3]}_{clean[3:]}"
    raise NotSupportedError(
        "oanda", f"cannot map {symbol!r} to an OANDA instrument (use e.g. EURUSD or EUR_USD)"
    )


def _utc(t: pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
