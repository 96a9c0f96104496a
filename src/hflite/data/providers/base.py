"""The provider port: one protocol for every data vendor, errors translated at the border.

Each vendor module turns its payloads into the store's frames and its failures into three errors:
``RejectedError`` (final: invalid key, unknown symbol, premium-only endpoint; carries the vendor's
message), ``TransientError`` (timeouts, connection errors, 429 and 5xx, after bounded retries with
exponential backoff and jitter) and ``MalformedResponseError`` (the vendor answered garbage). A missing
key is ``MissingKeyError`` naming the environment variable. Nothing above a provider catches a vendor
or HTTP-library exception, and no message ever contains a key.

Frames (all timestamps tz-aware UTC):
- bars: ``ts, open, high, low, close, volume``; ``ts`` = session date at 00:00 for daily bars, the
  bar's open time for intraday bars (as in the store). Exact copies of a bar are collapsed and
  counted; bars sharing a time with different values are all returned (:func:`collapse_duplicates`).
- series: ``date, value``; with ``vintage=True`` also ``realtime_start`` (when the value was published).
- news: ``ts, source, tickers, headline, summary, url`` (``tickers`` comma-separated).
- fundamentals: ``symbol, metric, period_end, known_at, value`` (``known_at``: when it became public).
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

import httpx
import pandas as pd
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from hflite import redact as redaction

BAR_COLUMNS = ["ts", "open", "high", "low", "close", "volume"]
SERIES_COLUMNS = ["date", "value"]
NEWS_COLUMNS = ["ts", "source", "tickers", "headline", "summary", "url"]
FUNDAMENTAL_COLUMNS = ["symbol", "metric", "period_end", "known_at", "value"]


class ProviderError(Exception):
    """Base of every provider failure; the message names the provider."""

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider


class MissingKeyError(ProviderError):
    """The provider needs a key that is not set; names the environment variable."""


class RejectedError(ProviderError):
    """Final: the vendor refused the request (4xx or an error payload). Do not retry."""


class TransientError(ProviderError):
    """Retries were exhausted on timeouts, connection errors, 429 or 5xx. ``unreachable``: the host
    could not be reached at all (no network, DNS), as opposed to answering badly."""

    def __init__(self, provider: str, message: str, *, unreachable: bool = False) -> None:
        super().__init__(provider, message)
        self.unreachable = unreachable


class MalformedResponseError(ProviderError):
    """The vendor answered something that is not the documented payload."""


class NotSupportedError(ProviderError):
    """The provider does not supply this kind of data (or this frequency)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """A vendor's free-tier request limits, kept under by the client-side limiter."""

    per_minute: int | None = None
    per_day: int | None = None
    note: str = ""


class RateLimiter:
    """Sliding-window limiter: at most ``per_minute`` calls in any 60 s and ``per_day`` in any 24 h.

    ``clock`` and ``sleep`` are injectable so tests run instantly. Thread-safe.
    """

    def __init__(
        self,
        limits: Limits,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limits = limits
        self.clock, self.sleep = clock, sleep
        self._minute: deque[float] = deque()
        self._day: deque[float] = deque()
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def acquire(self) -> None:
        with self._lock:
            while True:
                now = self.clock()
                wait = max(
                    self._need(self._minute, self.limits.per_minute, 60.0, now),
                    self._need(self._day, self.limits.per_day, 86_400.0, now),
                )
                if wait <= 0:
                    self._minute.append(now)
                    self._day.append(now)
                    return
                self.waited_s += wait
                self.sleep(wait)

    @staticmethod
    def _need(window: deque[float], cap: int | None, span: float, now: float) -> float:
        if not cap:
            return 0.0
        while window and now - window[0] >= span:
            window.popleft()
        return span - (now - window[0]) if len(window) >= cap else 0.0


@dataclass
class HttpOptions:
    """Transport settings shared by every provider (tests shorten the waits)."""

    timeout_s: float = 20.0
    max_tries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


@dataclass
class HttpClient:
    """GET with limits, bounded retries and error translation; redacts secrets from every message."""

    provider: str
    base_url: str
    limiter: RateLimiter
    options: HttpOptions = field(default_factory=HttpOptions)
    headers: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    error_message: Callable[[httpx.Response], str | None] | None = None
    calls: int = 0

    def __post_init__(self) -> None:
        self._client = httpx.Client(
            base_url=self.base_url.rstrip("/"),
            timeout=self.options.timeout_s,
            headers=self.headers,
            follow_redirects=True,
        )

    def close(self) -> None:
        self._client.close()

    def redact(self, text: str) -> str:
        """``text`` without this client's keys (however short), registered secrets or key parameters."""
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, redaction.MASK)
        return redaction.redact(text)

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        """One logical GET: retried on transient failures, translated on final ones."""
        return call_with_retries(self.provider, self.options, lambda: self._once(path, params), self.redact)

    def _once(self, path: str, params: Mapping[str, Any] | None) -> httpx.Response:
        self.limiter.acquire()
        self.calls += 1
        try:
            resp = self._client.get(path, params=dict(params or {}))
        except httpx.TimeoutException:
            raise Retryable(f"timed out after {self.options.timeout_s:g} s") from None
        except httpx.TransportError as exc:
            raise Retryable(f"connection failed ({type(exc).__name__})", unreachable=True) from None
        if resp.status_code < 400:
            return resp
        vendor = self._vendor_message(resp)
        detail = f"HTTP {resp.status_code}" + (f": {vendor}" if vendor else "")
        if resp.status_code == 429 or resp.status_code >= 500:
            raise Retryable(detail, _retry_after(resp))
        raise RejectedError(self.provider, self.redact(detail))

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        resp = self.get(path, params)
        try:
            return resp.json()
        except ValueError:
            snippet = self.redact(resp.text[:1000])[:80].replace("\n", " ")  # redacted, then cut
            raise MalformedResponseError(
                self.provider, self.redact(f"expected JSON from {path}, got {snippet!r}")
            ) from None

    def _vendor_message(self, resp: httpx.Response) -> str | None:
        if self.error_message is not None:
            try:
                msg = self.error_message(resp)
            except Exception:  # noqa: BLE001 - an unparsable error body is still an error
                msg = None
            if msg:
                return self.redact(msg)
        return self.redact(resp.text[:1000])[:200].strip() or None  # redacted before it is cut


class Retryable(Exception):
    """Raised inside ``call_with_retries`` for a failure worth another try (never escapes it)."""

    def __init__(self, reason: str, retry_after: float | None = None, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.retry_after, self.unreachable = reason, retry_after, unreachable


T = TypeVar("T")


def call_with_retries(
    provider: str,
    options: HttpOptions,
    once: Callable[[], T],
    redact: Callable[[str], str] = lambda text: text,
    min_wait_s: float = 0.0,
) -> T:
    """Run ``once`` until it returns, retrying on ``Retryable`` with exponential backoff and jitter
    (a vendor's Retry-After wins), at most ``options.max_tries`` times; then TransientError."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, options.backoff_max_s * 4)
        cap = min(options.backoff_max_s, options.backoff_base_s * 2 ** (state.attempt_number - 1))
        return max(min_wait_s, random.uniform(cap / 2, cap))  # noqa: S311 - jitter, not cryptography

    retrying = Retrying(
        stop=stop_after_attempt(options.max_tries),
        wait=wait,
        retry=retry_if_exception_type(Retryable),
        sleep=options.sleep,
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                return once()
    except Retryable as exc:
        reason = f"{exc.reason} (gave up after {options.max_tries} tries)"
        raise TransientError(provider, redact(reason), unreachable=exc.unreachable) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def env_key(
    provider: str, variable: str | None, given: str | None = None, *, required: bool = True
) -> str | None:
    """The API key from the argument or the environment (``.env`` is loaded by the CLI)."""
    key = given if given is not None else (os.environ.get(variable) if variable else None)
    if required and variable and not key:
        raise MissingKeyError(provider, f"no API key: set {variable} in the environment or .env")
    return key


def base_url(provider: str, default: str, given: str | None = None) -> str:
    """The vendor's URL, overridable per provider (``HFLITE_<PROVIDER>_BASE_URL``) for tests and proxies."""
    return given or os.environ.get(f"HFLITE_{provider.upper()}_BASE_URL") or default


_TIME_COLUMNS = ("ts", "date", "period_end", "known_at", "realtime_start")
_TEXT_COLUMNS = ("symbol", "metric", "source", "tickers", "headline", "summary", "url")


def empty(columns: list[str]) -> pd.DataFrame:
    """An empty frame of the given schema, typed: UTC times, text as objects, numbers as float64."""
    return pd.DataFrame(
        {
            c: pd.Series(
                dtype="datetime64[ns, UTC]"
                if c in _TIME_COLUMNS
                else "object"
                if c in _TEXT_COLUMNS
                else "float64"
            )
            for c in columns
        }
    )


#: ``frame.attrs`` key of a bar frame: how many exact copies of a row :func:`collapse_duplicates` removed.
DUPLICATES_COLLAPSED = "duplicates_collapsed"


def collapse_duplicates(frame: pd.DataFrame, on: str = "ts") -> pd.DataFrame:
    """Sorted by ``on``, exact copies of a row collapsed to one and counted in
    ``attrs[DUPLICATES_COLLAPSED]``. Rows sharing a time with different values are all kept: neither
    can be trusted, so validation quarantines every version (rule ``duplicate_conflict``)."""
    copies = frame.duplicated(keep="first").to_numpy()
    out = frame[~copies].sort_values(on, kind="stable", ignore_index=True)
    out.attrs[DUPLICATES_COLLAPSED] = int(copies.sum())
    return out


class Provider(Protocol):
    """One data vendor. Methods a vendor does not supply raise NotSupportedError."""

    name: ClassVar[str]
    key_env: ClassVar[str | None]
    limits: ClassVar[Limits]
    supplies: ClassVar[frozenset[str]]  # of "bars", "series", "vintages", "news", "fundamentals"

    def bars(self, symbol: str, freq: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame: ...

    def series(
        self, series_id: str, start: pd.Timestamp, end: pd.Timestamp, *, vintage: bool = False
    ) -> pd.DataFrame: ...

    def news(self, symbols: list[str], since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame: ...

    def fundamentals(self, symbol: str) -> pd.DataFrame: ...

    def close(self) -> None: ...


class BaseProvider:
    """Shared plumbing: the HTTP client, the limiter, and NotSupported defaults."""

    name: ClassVar[str] = "base"
    key_env: ClassVar[str | None] = None
    key_required: ClassVar[bool] = True
    default_url: ClassVar[str] = ""
    limits: ClassVar[Limits] = Limits()
    supplies: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        key: str | None = None,
        url: str | None = None,
        options: HttpOptions | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.key = env_key(self.name, self.key_env, key, required=self.key_required)
        redaction.register(self.key)  # log lines and messages mask it from now on
        self.options = options or HttpOptions()
        self.limiter = limiter or RateLimiter(self.limits, self.options.clock, self.options.sleep)
        self.http = HttpClient(
            self.name,
            base_url(self.name, self.default_url, url),
            self.limiter,
            self.options,
            headers=self.auth_headers(),
            secrets=(self.key or "",),
            error_message=self.error_message,
        )

    def auth_headers(self) -> dict[str, str]:
        return {}

    def error_message(self, resp: httpx.Response) -> str | None:
        """The vendor's own error text from an error response (override per vendor)."""
        return None

    def _unsupported(self, what: str) -> NotSupportedError:
        return NotSupportedError(self.name, f"does not supply {what}")

    def bars(self, symbol: str, freq: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        raise self._unsupported("price bars")

    def series(
        self, series_id: str, start: pd.Timestamp, end: pd.Timestamp, *, vintage: bool = False
    ) -> pd.DataFrame:
        raise self._unsupported("macro series")

    def news(self, symbols: list[str], since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
        raise self._unsupported("news")

    def fundamentals(self, symbol: str) -> pd.DataFrame:
        raise self._unsupported("fundamentals")

    def close(self) -> None:
        self.http.close()
