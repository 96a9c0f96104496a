"""Finnhub (``https://finnhub.io/api/v1``): company news and fundamentals; the key goes in a header.

- News: ``GET /company-news?symbol=&from=&to=`` (dates, inclusive) per symbol; the free plan reaches
  one year back. Each article: ``datetime`` (unix seconds), ``headline``, ``source``, ``summary``,
  ``url``, ``related``. The same article is returned for every company it mentions: articles are
  deduplicated by ``url`` and their tickers merged (``"AAPL,MSFT"``). The endpoint has no paging.
- Fundamentals, two sources:
  ``GET /stock/metric?metric=all`` - quarterly series (``series.quarterly.<name>``: ``period``, ``v``)
  carry no publication date, so ``known_at`` = period + 45 days (an estimate: the 10-Q deadline is
  40-45 days), never later than the fetch.
  ``GET /calendar/earnings?symbol=&from=&to=`` - reported and estimated EPS with the report ``date``
  and ``hour`` (``bmo`` before the open, ``dmh`` during the session, ``amc`` after the close): point
  in time, ``known_at`` = 09:30 ET (bmo), 16:00 ET (dmh) or 20:00 ET (amc or unknown) on that date.
  The calendar names the fiscal year and quarter but not the period's end: ``period_end`` is the
  last quarterly period of the metric series within 120 days before the report, else the last
  calendar quarter end before it. The last 365 days are asked (history on the free plan is short).
- Errors: 401/403 ``{"error": "Invalid API key"}`` or ``"You don't have access to this resource."``;
  429 ``{"error": "API limit reached. Please try again later. Remaining Limit: 0"}``. Free plan:
  60 calls a minute, and every plan is capped at 30 calls a second.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import httpx
import pandas as pd

from hflite.data.providers.base import (
    FUNDAMENTAL_COLUMNS,
    NEWS_COLUMNS,
    BaseProvider,
    Limits,
    MalformedResponseError,
    RejectedError,
    empty,
)

#: ``series.quarterly`` names -> metric names.
QUARTERLY_SERIES = {
    "eps": "eps",
    "salesPerShare": "sales_per_share",
    "grossMargin": "gross_margin",
    "netMargin": "net_margin",
    "roeTTM": "roe_ttm",
}
EARNINGS_FIELDS = {"epsActual": "eps_reported", "epsEstimate": "eps_estimated"}
#: Assumed delay between a quarter's end and its 10-Q (the metric series carry no filing date).
FILING_LAG = pd.Timedelta(days=45)
#: A report more than this long after a period's end is not about that period.
REPORT_WINDOW = pd.Timedelta(days=120)
EARNINGS_LOOKBACK = pd.Timedelta(days=365)
EASTERN = "America/New_York"
RELEASE_CLOCK = {"bmo": "09:30", "dmh": "16:00", "amc": "20:00"}


class FinnhubProvider(BaseProvider):
    """Finnhub: company news and fundamentals; the key travels as the ``X-Finnhub-Token`` header."""

    name: ClassVar[str] = "finnhub"
    key_env: ClassVar[str | None] = "FINNHUB_API_KEY"
    default_url: ClassVar[str] = "https://finnhub.io/api/v1"
    limits: ClassVar[Limits] = Limits(
        per_minute=60, note="free plan: 60 calls/minute; 30 calls/second on every plan"
    )
    supplies: ClassVar[frozenset[str]] = frozenset({"news", "fundamentals"})

    def auth_headers(self) -> dict[str, str]:
        return {"X-Finnhub-Token": self.key or ""}

    def error_message(self, resp: httpx.Response) -> str | None:
        body = resp.json()
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])
        return None

    # -- news ------------------------------------------------------------------------------------

    def news(self, symbols: list[str], since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
        since, until = _utc(since), _utc(until)
        articles: dict[str, dict[str, Any]] = {}
        for symbol in symbols:
            payload = self.http.get_json(
                "/company-news", {"symbol": symbol, "from": _day(since), "to": _day(until)}
            )
            for article in self._articles(payload, symbol):
                seen = articles.setdefault(article["url"], article)
                if seen is not article:
                    seen["tickers"] |= article["tickers"]
        rows = [a for a in articles.values() if since <= a["ts"] <= until]
        if not rows:
            return empty(NEWS_COLUMNS)
        frame = pd.DataFrame(rows)
        frame["tickers"] = frame["tickers"].map(lambda t: ",".join(sorted(t)))
        frame["ts"] = pd.DatetimeIndex(frame["ts"]).as_unit("ns")
        return frame.sort_values(["ts", "url"], ignore_index=True)[NEWS_COLUMNS]

    def _articles(self, payload: Any, symbol: str) -> list[dict[str, Any]]:
        if isinstance(payload, dict) and payload.get("error"):
            raise RejectedError(self.name, self.http.redact(str(payload["error"])))
        if not isinstance(payload, list):
            raise MalformedResponseError(self.name, "company-news: expected a JSON list of articles")
        try:
            return [
                {
                    "ts": pd.Timestamp(int(item["datetime"]), unit="s", tz="UTC"),
                    "source": str(item.get("source") or ""),
                    "tickers": {symbol, *_tickers(item.get("related"))},
                    "headline": str(item["headline"]),
                    "summary": str(item.get("summary") or ""),
                    "url": str(item["url"]),
                }
                for item in payload
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponseError(self.name, f"company-news: unexpected article ({exc})") from None

    # -- fundamentals ----------------------------------------------------------------------------

    def fundamentals(self, symbol: str) -> pd.DataFrame:
        fetched_at = _now()
        metric = self.http.get_json("/stock/metric", {"symbol": symbol, "metric": "all"})
        rows, periods = self._series_rows(symbol, metric, fetched_at)
        calendar = self.http.get_json(
            "/calendar/earnings",
            {"symbol": symbol, "from": _day(fetched_at - EARNINGS_LOOKBACK), "to": _day(fetched_at)},
        )
        rows += self._earnings_rows(symbol, calendar, periods)
        if not rows:
            return empty(FUNDAMENTAL_COLUMNS)
        frame = pd.DataFrame(rows, columns=FUNDAMENTAL_COLUMNS)
        frame["period_end"] = pd.to_datetime(frame["period_end"]).dt.tz_localize("UTC").dt.as_unit("ns")
        frame["known_at"] = pd.to_datetime(frame["known_at"], utc=True).dt.as_unit("ns")
        frame["value"] = frame["value"].astype("float64")
        return frame.sort_values(["period_end", "metric", "known_at"], ignore_index=True)

    def _series_rows(
        self, symbol: str, payload: Any, fetched_at: pd.Timestamp
    ) -> tuple[list[tuple[Any, ...]], list[pd.Timestamp]]:
        if not isinstance(payload, dict):
            raise MalformedResponseError(self.name, "stock/metric: expected a JSON object")
        quarterly = (payload.get("series") or {}).get("quarterly") or {}
        if not isinstance(quarterly, dict):
            raise MalformedResponseError(self.name, "stock/metric: 'series.quarterly' is not an object")
        rows: list[tuple[Any, ...]] = []
        periods: set[pd.Timestamp] = set()
        try:
            for points in quarterly.values():
                periods.update(pd.Timestamp(p["period"]) for p in points)
            for field, metric in QUARTERLY_SERIES.items():
                for point in quarterly.get(field) or []:
                    if point.get("v") is None:
                        continue
                    period_end = pd.Timestamp(point["period"])
                    known_at = min((period_end + FILING_LAG).tz_localize("UTC"), fetched_at)
                    rows.append((symbol, metric, period_end, known_at, float(point["v"])))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise MalformedResponseError(
                self.name, f"stock/metric: unexpected series point ({exc})"
            ) from None
        return rows, sorted(periods)

    def _earnings_rows(self, symbol: str, payload: Any, periods: list[pd.Timestamp]) -> list[tuple[Any, ...]]:
        reports = payload.get("earningsCalendar") if isinstance(payload, dict) else None
        if not isinstance(reports, list):
            raise MalformedResponseError(self.name, "calendar/earnings: no 'earningsCalendar' list")
        rows: list[tuple[Any, ...]] = []
        try:
            for report in reports:
                if report.get("epsActual") is None:
                    continue  # not reported yet: an estimate for a future date is not a fact today
                day = pd.Timestamp(report["date"])
                known_at = _release_time(day, str(report.get("hour") or ""))
                period_end = _period_end(day, periods)
                for field, metric in EARNINGS_FIELDS.items():
                    if report.get(field) is not None:
                        rows.append((symbol, metric, period_end, known_at, float(report[field])))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise MalformedResponseError(self.name, f"calendar/earnings: unexpected report ({exc})") from None
        return rows


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _utc(t: pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def _day(t: pd.Timestamp) -> str:
    return str(_utc(t).strftime("%Y-%m-%d"))


def _tickers(related: Any) -> Iterable[str]:
    return [t.strip() for t in str(related or "").split(",") if t.strip()]


def _release_time(day: pd.Timestamp, hour: str) -> pd.Timestamp:
    """When a report was public, from Finnhub's ``hour`` (after the close when unknown)."""
    clock = RELEASE_CLOCK.get(hour.strip().lower(), RELEASE_CLOCK["amc"])
    return pd.Timestamp(f"{day:%Y-%m-%d} {clock}").tz_localize(EASTERN).tz_convert("UTC")


def _period_end(report_day: pd.Timestamp, periods: list[pd.Timestamp]) -> pd.Timestamp:
    """The fiscal period a report is about: the latest known period shortly before it."""
    candidates = [p for p in periods if p < report_day and report_day - p <= REPORT_WINDOW]
    if candidates:
        return max(candidates)
    return (report_day.to_period("Q") - 1).end_time.normalize()
