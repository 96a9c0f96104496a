"""Yahoo Finance through its chart endpoint (``/v8/finance/chart/{symbol}``): no key.

- Daily bars: Yahoo stamps each daily bar with the session's first trade time; the bar's ``ts`` is
  that session's date (in the exchange's time zone) at 00:00 UTC, as in the store.
- Prices are back-adjusted for splits and dividends the way the embedded sample was built
  (``yfinance.download(auto_adjust=True)``): open, high, low and close are scaled by
  adjclose / close. Volume is as Yahoo reports it (split-adjusted).
- A bar that has not closed yet (today's session, the current hour) is dropped: it is not data yet.
  A daily bar counts as closed once its UTC day is over (conservative for US sessions).
- Rows where Yahoo sends nulls are kept as NaN so that validation quarantines them with a rule,
  instead of disappearing silently.
- 1-minute bars are served for at most 8 days per request (and only the last 30 days): the
  window is fetched in 7-day pieces. Hourly bars go back 730 days.
- The endpoint is unofficial and publishes no limits; the client keeps to 60 requests a minute.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import numpy as np
import pandas as pd

from hflite.data.providers.base import (
    BAR_COLUMNS,
    BaseProvider,
    Limits,
    MalformedResponseError,
    NotSupportedError,
    RejectedError,
    collapse_duplicates,
    empty,
)

INTERVALS = {"1d": "1d", "1h": "60m", "1m": "1m"}
INTERVALS_DELTA = {"1h": "1h", "1m": "1min"}
CHUNK = {"1d": None, "1h": pd.Timedelta(days=700), "1m": pd.Timedelta(days=7)}
#: Our symbols -> Yahoo's (FX pairs carry "=X"; USDJPY is quoted as JPY=X).
SYMBOLS = {"EURUSD": "EURUSD=X", "USDJPY": "JPY=X"}


class YahooProvider(BaseProvider):
    name: ClassVar[str] = "yfinance"
    key_env: ClassVar[str | None] = None
    key_required: ClassVar[bool] = False
    default_url: ClassVar[str] = "https://query1.finance.yahoo.com"
    limits: ClassVar[Limits] = Limits(per_minute=60, note="unofficial endpoint, no published limit")
    supplies: ClassVar[frozenset[str]] = frozenset({"bars"})

    def now(self) -> pd.Timestamp:
        """The wall clock (the data layer's edge); a daily bar counts once its UTC day is over."""
        return pd.Timestamp.now(tz="UTC")

    def auth_headers(self) -> dict[str, str]:
        return {"User-Agent": "Mozilla/5.0 (hflite)"}  # the endpoint refuses requests without one

    def error_message(self, resp: httpx.Response) -> str | None:
        err = resp.json().get("chart", {}).get("error") or resp.json().get("finance", {}).get("error")
        if isinstance(err, dict):
            return f"{err.get('code', '')}: {err.get('description', '')}".strip(": ")
        return None

    def bars(self, symbol: str, freq: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        if freq not in INTERVALS:
            raise NotSupportedError(self.name, f"frequency {freq!r} (has {', '.join(INTERVALS)})")
        start, end = _utc(start), _utc(end)
        pieces = []
        step = CHUNK[freq]
        lo = start
        while lo <= end:
            hi = end if step is None else min(end, lo + step)
            pieces.append(self._chart(symbol, freq, lo, hi))
            if step is None:
                break
            lo = hi + pd.Timedelta(seconds=1)
        frames = [p for p in pieces if not p.empty]
        if not frames:
            return empty(BAR_COLUMNS)
        out = pd.concat(frames, ignore_index=True)
        return collapse_duplicates(out)

    def _chart(self, symbol: str, freq: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        params = {
            "period1": int(start.timestamp()),
            "period2": int((end + (pd.Timedelta(days=1) if freq == "1d" else pd.Timedelta(0))).timestamp()),
            "interval": INTERVALS[freq],
            "events": "div,splits",
            "includeAdjustedClose": "true",
        }
        payload = self.http.get_json(f"/v8/finance/chart/{SYMBOLS.get(symbol, symbol)}", params)
        chart = payload.get("chart") if isinstance(payload, dict) else None
        if not isinstance(chart, dict):
            raise MalformedResponseError(self.name, "no 'chart' object in the answer")
        if chart.get("error"):
            err = chart["error"]
            raise RejectedError(self.name, f"{err.get('code', '')}: {err.get('description', '')}")
        results = chart.get("result") or []
        if not results:
            return empty(BAR_COLUMNS)
        return self._frame(results[0], freq, start, end)

    def _frame(
        self, result: dict[str, Any], freq: str, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        stamps = result.get("timestamp") or []
        if not stamps:
            return empty(BAR_COLUMNS)
        try:
            quote = result["indicators"]["quote"][0]
            cols = {
                c: np.array([np.nan if v is None else v for v in quote[c]], dtype=float)
                for c in ("open", "high", "low", "close", "volume")
            }
            adj_list = (result["indicators"].get("adjclose") or [{}])[0].get("adjclose")
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise MalformedResponseError(self.name, f"unexpected chart payload ({exc})") from None
        if any(len(v) != len(stamps) for v in cols.values()):
            raise MalformedResponseError(self.name, "chart arrays of different lengths")
        ts = pd.to_datetime(np.asarray(stamps, dtype="int64"), unit="s", utc=True)
        if freq == "1d":
            tz = (result.get("meta") or {}).get("exchangeTimezoneName") or "UTC"
            ts = pd.DatetimeIndex(ts.tz_convert(tz).normalize().tz_localize(None)).tz_localize("UTC")
        if adj_list is not None and freq == "1d":
            adj = np.array([np.nan if v is None else v for v in adj_list], dtype=float)
            factor = np.where(cols["close"] > 0, adj / cols["close"], np.nan)
            for c in ("open", "high", "low", "close"):
                cols[c] = cols[c] * factor
        frame = pd.DataFrame({"ts": ts.as_unit("ns"), **cols})
        lo = start.normalize() if freq == "1d" else start
        # a bar still forming (today's session, the current hour) is not data yet: drop it
        length = pd.Timedelta(days=1) if freq == "1d" else pd.Timedelta(INTERVALS_DELTA[freq])
        closed = frame["ts"] + length <= self.now()
        keep = (frame["ts"] >= lo) & (frame["ts"] <= end) & closed
        return frame[keep].reset_index(drop=True)[BAR_COLUMNS]


def _utc(t: pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
