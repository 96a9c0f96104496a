"""NewsAPI.org (``GET /v2/everything``): headlines that mention the queried symbols.

- The key travels in the ``X-Api-Key`` header (never in the URL). Errors carry
  ``{"status": "error", "code": ..., "message": ...}``: ``apiKeyInvalid``/``apiKeyMissing`` (401) are
  final; ``rateLimited`` (429) is retried with backoff.
- One request per page: ``q`` is the symbols joined with ``OR``, ``from``/``to`` are ISO 8601 UTC,
  ``sortBy=publishedAt``, ``pageSize`` at most 100. Pages are read until ``totalResults`` articles
  arrived (or a page comes back empty).
- NewsAPI does not tag articles with tickers: ``tickers`` is the symbols queried, comma-separated.
  ``ts`` is ``publishedAt`` (UTC), ``source`` the outlet's name, ``summary`` the description.
  Articles withdrawn by the publisher come back as ``[Removed]`` entries and are dropped.
- Free Developer plan: 100 requests a day, articles up to a month old and delayed by 24 hours, and at
  most 100 results per query. Asking past the 100th result answers ``maximumResultsReached``; the
  pages already read are kept and a warning says the query was truncated (narrow the window).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import httpx
import pandas as pd

from hflite import logs
from hflite.data.providers.base import (
    NEWS_COLUMNS,
    BaseProvider,
    HttpOptions,
    Limits,
    MalformedResponseError,
    RateLimiter,
    RejectedError,
    empty,
)

MAX_PAGE_SIZE = 100
REMOVED = "[Removed]"


class NewsApiProvider(BaseProvider):
    """NewsAPI.org ``/v2/everything``; ``page_size`` (1-100) sets ``pageSize``."""

    name: ClassVar[str] = "newsapi"
    key_env: ClassVar[str | None] = "NEWSAPI_KEY"
    default_url: ClassVar[str] = "https://newsapi.org"
    limits: ClassVar[Limits] = Limits(
        per_day=100,
        note="Developer plan: 100 requests/day, articles up to 1 month old, 24 h delay, 100 results/query",
    )
    supplies: ClassVar[frozenset[str]] = frozenset({"news"})

    def __init__(
        self,
        *,
        key: str | None = None,
        url: str | None = None,
        options: HttpOptions | None = None,
        limiter: RateLimiter | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        super().__init__(key=key, url=url, options=options, limiter=limiter)
        self.page_size = page_size

    def auth_headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.key or ""}

    def error_message(self, resp: httpx.Response) -> str | None:
        body = resp.json()
        if isinstance(body, dict) and body.get("status") == "error":
            return f"{body.get('code', '')}: {body.get('message', '')}".strip(": ")
        return None

    def news(self, symbols: list[str], since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
        if not symbols:
            raise ValueError("newsapi: no symbols to search for")
        params = {
            "q": " OR ".join(symbols),
            "from": _iso(since),
            "to": _iso(until),
            "sortBy": "publishedAt",
            "language": "en",
            "pageSize": self.page_size,
        }
        articles: list[dict[str, Any]] = []
        page, total = 1, None
        while total is None or len(articles) < total:
            payload = self._page(params, page, truncated_after=len(articles))
            if payload is None:
                break
            batch = payload["articles"]
            total = payload["totalResults"] if total is None else total
            if not batch:
                break
            articles.extend(batch)
            if page >= math.ceil(total / self.page_size):
                break
            page += 1
        return self._frame(articles, ",".join(symbols))

    def _page(self, params: dict[str, Any], page: int, truncated_after: int) -> dict[str, Any] | None:
        try:
            payload = self.http.get_json("/v2/everything", {**params, "page": page})
        except RejectedError as exc:
            if page > 1 and "maximumResultsReached" in str(exc):
                logs.get("hflite.data.providers.newsapi").warning(
                    "newsapi.truncated", query=params["q"], kept=truncated_after, reason=str(exc)
                )
                return None
            raise
        if not isinstance(payload, dict):
            raise MalformedResponseError(self.name, "expected a JSON object from /v2/everything")
        if payload.get("status") == "error":
            raise RejectedError(self.name, f"{payload.get('code', '')}: {payload.get('message', '')}")
        if payload.get("status") != "ok" or not isinstance(payload.get("articles"), list):
            raise MalformedResponseError(self.name, "no 'status': 'ok' with an 'articles' list")
        if not isinstance(payload.get("totalResults"), int):
            raise MalformedResponseError(self.name, "no integer 'totalResults'")
        return payload

    def _frame(self, articles: list[dict[str, Any]], tickers: str) -> pd.DataFrame:
        rows = []
        for art in articles:
            try:
                title, url = art["title"], art["url"]
                source = (art.get("source") or {}).get("name") or ""
                published = pd.Timestamp(art["publishedAt"])
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise MalformedResponseError(self.name, f"unexpected article ({exc})") from None
            if title == REMOVED or source == REMOVED:
                continue
            ts = published.tz_localize("UTC") if published.tz is None else published.tz_convert("UTC")
            rows.append((ts, source, tickers, title or "", art.get("description") or "", url or ""))
        if not rows:
            return empty(NEWS_COLUMNS)
        frame = pd.DataFrame(rows, columns=NEWS_COLUMNS)
        frame["ts"] = pd.DatetimeIndex(frame["ts"]).as_unit("ns")
        return frame.drop_duplicates("url").sort_values("ts", ignore_index=True)


def _iso(t: pd.Timestamp) -> str:
    t = pd.Timestamp(t)
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    return str(t.strftime("%Y-%m-%dT%H:%M:%S"))
