"""Crypto exchanges through the official ``ccxt`` library: public OHLCV, no key (Binance by default).

- ``bars(symbol, freq, start, end)`` pages ``fetch_ohlcv(symbol, tf, since, limit, {"until": end})``
  forward from ``start``: each page starts one bar after the last one received, until ``end`` is
  passed or a page comes back empty. On Binance (``GET /api/v3/klines``) a page holds at most 1000
  bars; ``ts`` is the bar's open time in UTC (Binance days open at 00:00 UTC). The bar still forming
  (open time + bar length after now) is dropped. ``volume`` is in base units (BTC for BTC/USDT).
- Symbols: unified ``BTC/USDT`` or the exchange's id ``BTCUSDT`` (looked up in its markets, which
  are loaded once - on Binance spot markets only, one ``exchangeInfo`` request).
- Errors are translated here, ccxt's own retry and throttling are off: ``AuthenticationError``,
  ``BadSymbol``/``BadRequest`` and other exchange errors are final (``RejectedError`` with the
  exchange's text, e.g. ``{"code": -1121, "msg": "Invalid symbol."}``); ``RateLimitExceeded``/
  ``DDoSProtection`` (429, 418), ``ExchangeNotAvailable`` (5xx), ``RequestTimeout`` and other
  ``NetworkError`` are retried with backoff and jitter - a ``Retry-After`` header wins - then raise
  ``TransientError``; an answer ccxt cannot read (HTML, rows that are not OHLCV) is
  ``MalformedResponseError``. ccxt turns some unreadable answers into an empty list silently, so
  the raw JSON of every OHLCV answer is checked too.
- Limits: Binance allows 6000 request weight a minute per IP (klines weigh 2); the client keeps to
  600 requests a minute, which also fits the former 1200-weight limit.
- ``url`` (or ``HFLITE_CCXT_BASE_URL``) replaces the scheme and host of every API URL the exchange
  declares, keeping their paths: for proxies and for tests against a local server.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import ccxt
import pandas as pd

from hflite.data.providers.base import (
    BAR_COLUMNS,
    HttpOptions,
    Limits,
    MalformedResponseError,
    NotSupportedError,
    RateLimiter,
    RejectedError,
    Retryable,
    base_url,
    call_with_retries,
    collapse_duplicates,
    empty,
)
from hflite.redact import redact, register

FREQS = {"1d": "1d", "1h": "1h", "1m": "1m"}
MAX_LIMIT = 1000
#: Exchange options that keep market loading to what OHLCV needs.
EXCHANGE_OPTIONS: dict[str, dict[str, Any]] = {"binance": {"fetchMarkets": {"types": ["spot"]}}}
#: Exchanges whose OHLCV answer is a bare JSON array (anything else there is not OHLCV).
ARRAY_ANSWERS = frozenset({"binance", "binanceus"})
FINAL = (ccxt.AuthenticationError, ccxt.BadRequest, ccxt.NotSupported, ccxt.ExchangeError)
RETRIED = (ccxt.NetworkError, ccxt.OperationFailed)
UNREADABLE = (TypeError, ValueError, KeyError, IndexError)


class CcxtProvider:
    """One ccxt exchange's public bars. ``key`` is accepted for the common constructor and unused."""

    name: ClassVar[str] = "ccxt"
    key_env: ClassVar[str | None] = None
    limits: ClassVar[Limits] = Limits(
        per_minute=600, note="Binance: 6000 request weight/minute per IP, klines weigh 2"
    )
    supplies: ClassVar[frozenset[str]] = frozenset({"bars"})

    def __init__(
        self,
        exchange: str = "binance",
        url: str | None = None,
        options: HttpOptions | None = None,
        *,
        key: str | None = None,
        limiter: RateLimiter | None = None,
        limit: int = MAX_LIMIT,
        now: Callable[[], pd.Timestamp] | None = None,
    ) -> None:
        if not hasattr(ccxt, exchange) or exchange not in ccxt.exchanges:
            raise ValueError(f"ccxt has no exchange {exchange!r}")
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        self.options = options or HttpOptions()
        self.limiter = limiter or RateLimiter(self.limits, self.options.clock, self.options.sleep)
        self.limit = limit
        self.now = now or (lambda: pd.Timestamp.now(tz="UTC"))
        self.calls = 0
        self.exchange: ccxt.Exchange = getattr(ccxt, exchange)(
            {
                "enableRateLimit": False,
                "enableLastJsonResponse": True,
                "timeout": int(self.options.timeout_s * 1000),
                "options": EXCHANGE_OPTIONS.get(exchange, {}),
            }
        )
        for credential in (self.exchange.apiKey, self.exchange.secret, self.exchange.password):
            register(credential)  # none for public OHLCV; a configured exchange's keys are masked
        override = base_url(self.name, "", url)
        if override:
            self.exchange.urls["api"] = _rehost(self.exchange.urls["api"], override)

    # -- the Provider protocol -----------------------------------------------------------------
    def bars(self, symbol: str, freq: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        if freq not in FREQS or FREQS[freq] not in (self.exchange.timeframes or {}):
            raise NotSupportedError(self.name, f"frequency {freq!r} on {self.exchange.id}")
        unified = self._symbol(symbol)
        step_ms = int(self.exchange.parse_timeframe(FREQS[freq]) * 1000)
        start, end = _utc(start), _utc(end)
        lo = start.normalize() if freq == "1d" else start
        since, end_ms = _ms(lo), _ms(end)
        rows: list[list[Any]] = []
        while since <= end_ms:
            page = self._ohlcv(unified, FREQS[freq], since, end_ms)
            if not page:
                break
            rows.extend(page)
            following = int(page[-1][0]) + step_ms
            if following <= since:
                raise MalformedResponseError(self.name, "OHLCV pages do not move forward in time")
            since = following
        return self._frame(rows, step_ms, lo, end)

    def series(
        self, series_id: str, start: pd.Timestamp, end: pd.Timestamp, *, vintage: bool = False
    ) -> pd.DataFrame:
        raise NotSupportedError(self.name, "does not supply macro series")

    def news(self, symbols: list[str], since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
        raise NotSupportedError(self.name, "does not supply news")

    def fundamentals(self, symbol: str) -> pd.DataFrame:
        raise NotSupportedError(self.name, "does not supply fundamentals")

    def close(self) -> None:
        self.exchange.close()

    # -- internals -----------------------------------------------------------------------------
    def _symbol(self, symbol: str) -> str:
        if "/" in symbol:
            return symbol
        self._call(self.exchange.load_markets)
        found = (self.exchange.markets_by_id or {}).get(symbol) or []
        if not found:
            raise RejectedError(self.name, f"{self.exchange.id} has no market {symbol!r}")
        return str(found[0]["symbol"])

    def _ohlcv(self, symbol: str, timeframe: str, since: int, until: int) -> list[list[Any]]:
        self.exchange.last_json_response = None
        page = self._call(self.exchange.fetch_ohlcv, symbol, timeframe, since, self.limit, {"until": until})
        raw = self.exchange.last_json_response
        if raw is None:
            text = str(self.exchange.last_http_response or "")[:80].replace("\n", " ")
            raise MalformedResponseError(
                self.name, f"expected JSON OHLCV from {self.exchange.id}, got {text!r}"
            )
        wrong_shape = self.exchange.id in ARRAY_ANSWERS and not isinstance(raw, list)
        if wrong_shape or not isinstance(page, list) or (not page and isinstance(raw, list) and raw):
            raise MalformedResponseError(self.name, f"{self.exchange.id} answered rows that are not OHLCV")
        for row in page:
            if not isinstance(row, list) or len(row) < 6 or any(v is None for v in row[:5]):
                raise MalformedResponseError(self.name, f"{self.exchange.id} answered a partial OHLCV row")
        return page

    def _frame(
        self, rows: list[list[Any]], step_ms: int, lo: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        if not rows:
            return empty(BAR_COLUMNS)
        try:
            frame = pd.DataFrame([r[:6] for r in rows], columns=BAR_COLUMNS).astype(
                {c: float for c in BAR_COLUMNS[1:]}
            )
            opened = pd.to_datetime(frame["ts"].astype("int64"), unit="ms", utc=True)
        except UNREADABLE as exc:
            raise MalformedResponseError(self.name, f"unexpected OHLCV row ({exc})") from None
        frame["ts"] = opened.dt.as_unit("ns")
        formed = opened + pd.Timedelta(milliseconds=step_ms) <= _utc(self.now())
        frame = frame[formed & (frame["ts"] >= lo) & (frame["ts"] <= end)]
        return collapse_duplicates(frame)[BAR_COLUMNS]

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """One logical exchange call: retried on transient failures, translated on final ones."""
        return call_with_retries(self.name, self.options, lambda: self._once(fn, *args))

    def _once(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.limiter.acquire()
        self.calls += 1
        try:
            return fn(*args)
        except (ccxt.BadResponse, ccxt.NullResponse) as exc:
            raise MalformedResponseError(self.name, _text(exc)) from None
        except FINAL as exc:
            raise RejectedError(self.name, f"{type(exc).__name__}: {_text(exc)}") from None
        except RETRIED as exc:
            # a bare NetworkError is ccxt's "could not connect"; its subclasses are answers (429, 5xx)
            unreachable = type(exc) is ccxt.NetworkError
            raise Retryable(
                f"{type(exc).__name__}: {_text(exc)}", self._retry_after(), unreachable=unreachable
            ) from None
        except ccxt.BaseError as exc:
            raise RejectedError(self.name, f"{type(exc).__name__}: {_text(exc)}") from None
        except UNREADABLE as exc:
            raise MalformedResponseError(
                self.name, f"{self.exchange.id} answer not understood ({exc})"
            ) from None

    def _retry_after(self) -> float | None:
        headers: Mapping[str, Any] = self.exchange.last_response_headers or {}
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        try:
            seconds = float(value) if value is not None else math.nan
        except (TypeError, ValueError):
            return None
        return seconds if seconds >= 0 else None


def _rehost(api: Any, root: str) -> Any:
    """Every URL in ccxt's ``urls['api']`` (nested or not) moved onto ``root``, paths kept."""
    if isinstance(api, str):
        return root.rstrip("/") + urlsplit(api).path
    if isinstance(api, dict):
        return {k: _rehost(v, root) for k, v in api.items()}
    return api


def _text(exc: Exception) -> str:
    """ccxt's message (method, URL, body), redacted before it is cut so no key is left half-masked."""
    return redact(" ".join(str(exc).split()))[:300]


def _ms(t: pd.Timestamp) -> int:
    return int(t.value // 1_000_000)


def _utc(t: pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
