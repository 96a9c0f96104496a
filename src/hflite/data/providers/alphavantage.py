"""Alpha Vantage (``GET /query?function=...``): daily and intraday bars, earnings and company ratios.

- Errors arrive with HTTP 200. ``{"Error Message": ...}`` (invalid key, unknown symbol, bad call) is
  final (``RejectedError``). ``{"Information": ...}`` / ``{"Note": ...}`` is one of three things: a
  premium-only endpoint or parameter (final), the per-second burst limit (retried with backoff, then
  ``TransientError``) or the spent daily quota of the free key (``TransientError`` at once: retrying
  the same day cannot help).
- Daily bars (``TIME_SERIES_DAILY``) are raw, as traded: the adjusted series is premium-only, so
  these prices differ from the store's back-adjusted ones before any split or dividend. ``ts`` is
  the session date at 00:00 UTC. ``compact`` holds the latest 100 sessions; older windows ask for
  ``outputsize=full``, which Alpha Vantage now refuses to free keys ("premium feature") - that
  refusal surfaces as ``RejectedError`` with the vendor's text.
- Intraday bars (``TIME_SERIES_INTRADAY``, 1min and 60min): one request per calendar month
  (``month=YYYY-MM``, ``outputsize=full``), regular session only (``extended_hours=false``),
  split/dividend-adjusted (the vendor's default). Stamps are bar open times in US/Eastern local time
  and are converted to UTC.
- Fundamentals: ``EARNINGS`` gives reported and estimated EPS per fiscal quarter with the report
  date, which is point in time: ``known_at`` is that date at 09:30 ET for a pre-market report and
  20:00 ET otherwise (conservative). ``OVERVIEW`` ratios are a snapshot taken on the fetch day:
  accounting ratios get ``known_at`` = LatestQuarter + 45 days (an estimate: the 10-Q deadline is
  40-45 days), never later than the fetch; ratios on the share price (P/E, P/B) use the price of the
  fetch day, so their ``known_at`` is the fetch time.
- Free key: 25 requests a day and a burst limit of about one request a second; the client keeps
  to 5 a minute (the former documented limit), which costs nothing at 25 a day.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
import numpy as np
import pandas as pd

from hflite.data.providers.base import (
    BAR_COLUMNS,
    FUNDAMENTAL_COLUMNS,
    BaseProvider,
    Limits,
    MalformedResponseError,
    NotSupportedError,
    RejectedError,
    Retryable,
    TransientError,
    call_with_retries,
    collapse_duplicates,
    empty,
)

INTERVALS = {"1h": "60min", "1m": "1min"}
#: ``compact`` holds the latest 100 sessions, about 145 calendar days; older starts need ``full``.
COMPACT_SPAN = pd.Timedelta(days=135)
OHLCV = {"open": "1. open", "high": "2. high", "low": "3. low", "close": "4. close", "volume": "5. volume"}
#: OVERVIEW fields from the last reported quarter -> metric name.
ACCOUNTING_RATIOS = {
    "EPS": "eps_ttm",
    "ProfitMargin": "profit_margin_ttm",
    "OperatingMarginTTM": "operating_margin_ttm",
    "ReturnOnAssetsTTM": "roa_ttm",
    "ReturnOnEquityTTM": "roe_ttm",
}
#: OVERVIEW fields computed with the share price of the fetch day -> metric name.
PRICE_RATIOS = {"PERatio": "pe_ratio", "PriceToBookRatio": "price_to_book"}
EARNINGS_FIELDS = {"reportedEPS": "eps_reported", "estimatedEPS": "eps_estimated"}
#: Assumed delay between a quarter's end and its 10-Q (the OVERVIEW snapshot carries no filing date).
FILING_LAG = pd.Timedelta(days=45)
EASTERN = "America/New_York"
#: The burst limit is about one request a second: never retry sooner.
BURST_PAUSE_S = 1.0


class AlphaVantageProvider(BaseProvider):
    """Alpha Vantage: bars and fundamentals; the key travels as the ``apikey`` query parameter."""

    name: ClassVar[str] = "alphavantage"
    key_env: ClassVar[str | None] = "ALPHAVANTAGE_API_KEY"
    default_url: ClassVar[str] = "https://www.alphavantage.co"
    limits: ClassVar[Limits] = Limits(
        per_minute=5, per_day=25, note="free key: 25 requests/day, burst about 1 request/second"
    )
    supplies: ClassVar[frozenset[str]] = frozenset({"bars", "fundamentals"})

    def error_message(self, resp: httpx.Response) -> str | None:
        body = resp.json()
        if isinstance(body, dict):
            for field in ("Error Message", "Information", "Note"):
                if body.get(field):
                    return str(body[field])
        return None

    # -- bars ------------------------------------------------------------------------------------

    def bars(self, symbol: str, freq: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        start, end = _utc(start), _utc(end)
        if freq == "1d":
            return self._daily(symbol, start, end)
        if freq in INTERVALS:
            return self._intraday(symbol, INTERVALS[freq], start, end)
        raise NotSupportedError(self.name, f"frequency {freq!r} (has 1d, {', '.join(INTERVALS)})")

    def _daily(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        size = "full" if start < _now() - COMPACT_SPAN else "compact"
        params = {"function": "TIME_SERIES_DAILY", "symbol": symbol, "outputsize": size}
        series = self._query(params, "Time Series (Daily)")["Time Series (Daily)"]
        frame = self._bar_frame(series, tz=None)
        keep = (frame["ts"] >= start.normalize()) & (frame["ts"] <= end)
        return frame[keep].reset_index(drop=True)

    def _intraday(self, symbol: str, interval: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        key = f"Time Series ({interval})"
        frames = []
        months = pd.period_range(start.tz_localize(None), end.tz_localize(None), freq="M")
        for month in months:
            params = {
                "function": "TIME_SERIES_INTRADAY",
                "symbol": symbol,
                "interval": interval,
                "month": str(month),
                "outputsize": "full",
                "extended_hours": "false",
            }
            payload = self._query(params, key)
            tz = (payload.get("Meta Data") or {}).get("6. Time Zone") or "US/Eastern"
            frames.append(self._bar_frame(payload[key], tz=str(tz)))
        frame = pd.concat(frames, ignore_index=True) if frames else empty(BAR_COLUMNS)
        frame = collapse_duplicates(frame)
        keep = (frame["ts"] >= start) & (frame["ts"] <= end)
        return frame[keep].reset_index(drop=True)

    def _bar_frame(self, series: Any, tz: str | None) -> pd.DataFrame:
        if not isinstance(series, Mapping):
            raise MalformedResponseError(self.name, "the time series is not an object of bars")
        if not series:
            return empty(BAR_COLUMNS)
        try:
            cols = {c: np.array([float(bar[k]) for bar in series.values()]) for c, k in OHLCV.items()}
            stamps = pd.to_datetime(list(series.keys()), format="ISO8601")
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponseError(self.name, f"unexpected bar in the time series ({exc})") from None
        ts = _eastern_to_utc(stamps, tz) if tz else stamps.tz_localize("UTC")
        frame = pd.DataFrame({"ts": ts.as_unit("ns"), **cols})
        return frame.dropna(subset=["ts"]).sort_values("ts", ignore_index=True)[BAR_COLUMNS]

    # -- fundamentals ----------------------------------------------------------------------------

    def fundamentals(self, symbol: str) -> pd.DataFrame:
        fetched_at = _now()
        rows = self._earnings_rows(symbol)
        rows += self._overview_rows(symbol, fetched_at)
        if not rows:
            return empty(FUNDAMENTAL_COLUMNS)
        frame = pd.DataFrame(rows, columns=FUNDAMENTAL_COLUMNS)
        frame["period_end"] = pd.to_datetime(frame["period_end"]).dt.tz_localize("UTC").dt.as_unit("ns")
        frame["known_at"] = pd.to_datetime(frame["known_at"], utc=True).dt.as_unit("ns")
        frame["value"] = frame["value"].astype("float64")
        return frame.sort_values(["period_end", "metric"], ignore_index=True)

    def _earnings_rows(self, symbol: str) -> list[tuple[Any, ...]]:
        payload = self._query({"function": "EARNINGS", "symbol": symbol}, "quarterlyEarnings", optional=True)
        rows: list[tuple[Any, ...]] = []
        for quarter in payload.get("quarterlyEarnings") or []:
            try:
                period_end = pd.Timestamp(quarter["fiscalDateEnding"])
                known_at = _release_time(quarter["reportedDate"], str(quarter.get("reportTime", "")))
            except (KeyError, TypeError, ValueError) as exc:
                raise MalformedResponseError(self.name, f"unexpected EARNINGS quarter ({exc})") from None
            for field, metric in EARNINGS_FIELDS.items():
                value = _number(quarter.get(field))
                if value is not None:
                    rows.append((symbol, metric, period_end, known_at, value))
        return rows

    def _overview_rows(self, symbol: str, fetched_at: pd.Timestamp) -> list[tuple[Any, ...]]:
        payload = self._query({"function": "OVERVIEW", "symbol": symbol}, "LatestQuarter", optional=True)
        if not payload.get("LatestQuarter"):
            return []
        try:
            period_end = pd.Timestamp(payload["LatestQuarter"])
        except ValueError as exc:
            raise MalformedResponseError(self.name, f"unexpected LatestQuarter ({exc})") from None
        filed_at = min((period_end + FILING_LAG).tz_localize("UTC"), fetched_at)
        rows: list[tuple[Any, ...]] = []
        for fields, known_at in ((ACCOUNTING_RATIOS, filed_at), (PRICE_RATIOS, fetched_at)):
            for field, metric in fields.items():
                value = _number(payload.get(field))
                if value is not None:
                    rows.append((symbol, metric, period_end, known_at, value))
        return rows

    # -- transport -------------------------------------------------------------------------------

    def _query(self, params: Mapping[str, str], data_key: str, *, optional: bool = False) -> dict[str, Any]:
        """One call to ``/query``: the burst limit is retried, other notices are translated."""
        return call_with_retries(
            self.name,
            self.options,
            lambda: self._query_once(params, data_key, optional),
            self.http.redact,
            min_wait_s=min(BURST_PAUSE_S, self.options.backoff_max_s),
        )

    def _query_once(self, params: Mapping[str, str], data_key: str, optional: bool) -> dict[str, Any]:
        payload = self.http.get_json("/query", {**params, "apikey": self.key})
        function = params["function"]
        if not isinstance(payload, dict):
            raise MalformedResponseError(self.name, f"{function}: expected a JSON object")
        if payload.get("Error Message"):
            raise RejectedError(self.name, self.http.redact(f"{function}: {payload['Error Message']}"))
        notice = payload.get("Information") or payload.get("Note")
        if notice and data_key not in payload:
            raise self._notice_error(function, str(notice))
        if data_key not in payload and not (optional and not payload):
            raise MalformedResponseError(self.name, f"{function}: no {data_key!r} in the answer")
        return payload

    def _notice_error(self, function: str, notice: str) -> Exception:
        text = self.http.redact(f"{function}: {notice}")
        lowered = notice.lower()
        # The burst notice also mentions the daily limit and premium endpoints: test it first.
        if "per second" in lowered or "sparingly" in lowered or "per minute" in lowered:
            return _Throttled(text)
        if "per day" in lowered:
            return TransientError(self.name, f"{text} (daily quota spent; try again tomorrow)")
        return RejectedError(self.name, text)  # premium-only endpoint or parameter, or anything else


class _Throttled(Retryable):
    """Inside the retry loop only: the vendor's burst-limit notice."""


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _utc(t: pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def _eastern_to_utc(stamps: pd.DatetimeIndex, tz: str) -> pd.DatetimeIndex:
    """Local exchange stamps (``US/Eastern`` in the metadata) to UTC; DST gaps become NaT."""
    zone = EASTERN if tz in ("US/Eastern", "EST5EDT") else tz
    return stamps.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").tz_convert("UTC")


def _release_time(day: str, report_time: str) -> pd.Timestamp:
    """When an earnings report was public: before the open if pre-market, else after the close."""
    clock = "09:30" if report_time.strip().lower() == "pre-market" else "20:00"
    return pd.Timestamp(f"{day} {clock}").tz_localize(EASTERN).tz_convert("UTC")


def _number(value: Any) -> float | None:
    """Alpha Vantage sends numbers as strings and ``"None"`` / ``"-"`` for missing ones."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None
