"""What the broker adapters (``rest``, ``alpaca``, ``ccxt_venue``, ``oanda``, ``ib``) share.

- ids and pacing: ``client_order_id`` (an order id as a broker's client order id) and ``TokenBucket``;
- retries: the classified ``Failure`` of one attempt, ``with_retries`` (the retry loop every adapter
  runs: 429 and never-sent retried always, timeouts / 5xx / drops only when idempotent) and
  ``backoff_s`` (exponential backoff with jitter; a ``Retry-After`` wins);
- HTTP answers (httpx): ``retry_after``, ``json_or_none``, ``net_reason``;
- what an adapter says: ``redact_secrets``, ``mask_account``, ``ack_events``;
- payload values: ``parse_rfc3339``, ``fmt_ts``, ``utc``, ``num``, ``int_or_none``,
  ``float_or_none``, ``need_positive``, ``need_price``, ``oco_pair``;
- the Alpaca v2 dialect (the reference ``rest`` adapter and ``alpaca``): ``flatten_legs``,
  ``alpaca_order_ts``, ``alpaca_status``.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar, cast

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from hflite import redact as redaction
from hflite.domain.order import Order, OrderStatus, OrderType
from hflite.execution.venues.base import VenueEvent, VenueEventKind

__all__ = [
    "MAX_CLIENT_ID_CHARS",
    "MAX_RETRY_AFTER_S",
    "Failure",
    "TokenBucket",
    "ack_events",
    "alpaca_order_ts",
    "alpaca_status",
    "backoff_s",
    "client_order_id",
    "flatten_legs",
    "float_or_none",
    "fmt_ts",
    "int_or_none",
    "json_or_none",
    "mask_account",
    "need_positive",
    "need_price",
    "net_reason",
    "num",
    "oco_pair",
    "parse_rfc3339",
    "redact_secrets",
    "retry_after",
    "utc",
    "with_retries",
]

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

#: Alpaca's limit on ``client_order_id``; longer order ids travel as "hf-" + 40 hex digits.
MAX_CLIENT_ID_CHARS = 48
#: The longest wait a broker's ``Retry-After`` is honoured for.
MAX_RETRY_AFTER_S = 60.0


# -- ids and pacing ----------------------------------------------------------------------------------
def client_order_id(order_id: str) -> str:
    """The ``client_order_id`` an order travels under: its id, or a deterministic short form."""
    if len(order_id) <= MAX_CLIENT_ID_CHARS:
        return order_id
    return "hf-" + hashlib.sha256(order_id.encode()).hexdigest()[:40]


class TokenBucket:
    """``rate_per_min`` tokens a minute, at most ``burst`` saved up; ``acquire`` waits for one.

    ``clock`` (monotonic seconds) and ``sleep`` are injectable so tests count waits instead of
    spending them. Thread-safe: the stream reader and the engine share one bucket."""

    def __init__(
        self,
        rate_per_min: int,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_min <= 0:
            raise ValueError(f"rate_per_min must be > 0, got {rate_per_min}")
        self.rate_per_s = rate_per_min / 60.0
        self.burst = float(burst if burst is not None else max(1, rate_per_min // 10))
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.clock, self.sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def acquire(self) -> None:
        with self._lock:
            while True:
                now = self.clock()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                wait = (1.0 - self._tokens) / self.rate_per_s
                self.waited_s += wait
                self.sleep(wait)


# -- retries -----------------------------------------------------------------------------------------
class Failure(Exception):
    """One failed attempt, classified (never leaves its adapter).

    ``kind``: "refused" (429: not processed), "unreachable" (nothing was sent), "lost" (timeout, 5xx,
    dropped connection: the broker may have processed it), "http" (any other 4xx: final),
    "malformed" (the answer is not the documented payload), "closed" (the client is closed)."""

    def __init__(
        self, kind: str, reason: str, status: int = 0, retry_after: float | None = None, code: int = 0
    ) -> None:
        super().__init__(reason)
        self.kind, self.reason, self.status, self.retry_after, self.code = (
            kind,
            reason,
            status,
            retry_after,
            code,
        )


class _Classified(Protocol):
    """What ``with_retries`` reads of an adapter's failure (each adapter has its own class)."""

    kind: str
    reason: str
    retry_after: float | None


def backoff_s(retry_after: float | None, attempt: int, base_s: float, max_s: float) -> float:
    """The wait before the next try after failed try number ``attempt`` (1 = the first): the
    broker's ``Retry-After`` (at most ``MAX_RETRY_AFTER_S``), else exponential backoff with jitter."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER_S)
    cap = min(max_s, base_s * 2 ** (attempt - 1))
    return random.uniform(cap / 2, cap)  # noqa: S311 - jitter, not cryptography


def with_retries(
    once: Callable[[], T],
    failure: type[E],
    *,
    idempotent: bool,
    attempts: int,
    backoff: tuple[float, float],
    sleep: Callable[[float], None],
    redact: Callable[[str], str],
) -> T:
    """One logical request: ``once`` tried up to ``attempts`` times. A ``failure`` is retried when it
    is "refused" (429: not processed) or "unreachable" (nothing was sent), and when "lost" (timeout,
    5xx, dropped: maybe processed) only if ``idempotent``, after ``sleep``-ing ``backoff_s`` with
    ``backoff`` (base, max seconds). The last failure is raised, its reason redacted (and saying it
    gave up)."""
    retry_kinds = {"refused", "unreachable"} | ({"lost"} if idempotent else set())

    def retryable(exc: BaseException) -> bool:
        return isinstance(exc, failure) and cast(_Classified, exc).kind in retry_kinds

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        after = cast(_Classified, exc).retry_after if exc is not None else None
        return backoff_s(after, state.attempt_number, *backoff)

    retrying = Retrying(
        stop=stop_after_attempt(max(1, attempts)),
        retry=retry_if_exception(retryable),
        wait=wait,
        sleep=sleep,
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                return once()
    except failure as exc:
        f = cast(_Classified, exc)
        if f.kind in retry_kinds:  # retryable, so it stopped for the attempts
            f.reason = f"{f.reason} (gave up after {attempts} tries)"
        f.reason = redact(f.reason)
        raise
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


# -- HTTP answers (httpx; ``retry_after`` reads any response with ``headers``) -------------------------
def retry_after(resp: Any) -> float | None:
    """The ``Retry-After`` header in seconds (None when absent, not a number or negative)."""
    value = resp.headers.get("Retry-After") if resp is not None else None
    try:
        seconds = float(value) if value is not None else -1.0
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def json_or_none(resp: httpx.Response) -> Any:
    try:
        return resp.json() if resp.content else None
    except ValueError:
        return None


def net_reason(exc: httpx.HTTPError, timeout_s: float) -> str:
    """A transport failure in a few words (no URL, no traceback)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connect timed out after {timeout_s:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout_s:g} s"
    text = str(exc).lower()
    if isinstance(exc, httpx.ConnectError):
        if "refused" in text:
            return "connection refused"
        if "name" in text or "address" in text:
            return "host not found"
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "connection dropped"
    return f"transport error ({type(exc).__name__})"


# -- what an adapter says ------------------------------------------------------------------------------
def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` without ``secrets`` (nor anything ``hflite.redact`` masks), on one line."""
    for secret in secrets:
        text = text.replace(secret, redaction.MASK)
    return " ".join(redaction.redact(text).split())


def mask_account(account: str) -> str:
    """An account id as it may be shown: its last four characters ("…1234"); "" stays ""."""
    return f"…{account[-4:]}" if account else ""


def ack_events(
    orders: Iterable[Order], kind: VenueEventKind, reason: str, ts: int, *, cancelled: str = "canceled"
) -> list[VenueEvent]:
    """One ``kind`` event per order, its event id ``<order id>:<kind>`` (``cancelled`` names the
    CANCELLED kind in the id: each adapter keeps the spelling its journals already hold)."""
    suffix = cancelled if kind is VenueEventKind.CANCELLED else kind.value
    return [VenueEvent(kind, o.id, ts, f"{o.id}:{suffix}", reason=reason, symbol=o.symbol) for o in orders]


# -- payload values ------------------------------------------------------------------------------------
_TS = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d{1,9})\d*)?(Z|z|[+-]\d\d:?\d\d)?$")


def parse_rfc3339(text: str) -> int:
    """RFC 3339 (any fraction, any offset) as ns since the epoch, UTC."""
    m = _TS.match(text.strip())
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text[:40]!r}")
    date, clock, frac, zone = m.groups()
    zone = "+00:00" if zone in (None, "Z", "z") else zone
    whole = datetime.fromisoformat(f"{date}T{clock}{zone}")
    return int(whole.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def fmt_ts(ns: int) -> str:
    """ns since the epoch as RFC 3339 UTC with nanoseconds."""
    secs, frac = divmod(int(ns), 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def utc(ns: int) -> datetime:
    """ns since the epoch as an aware UTC datetime (to the microsecond)."""
    secs, rem = divmod(int(ns), 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).replace(microsecond=rem // 1000)


def num(x: float) -> str:
    """A number as a decimal string: shortest round-trip, never an exponent."""
    text = format(Decimal(repr(float(x))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def need_positive(value: float | None, order: Order, what: str) -> float:
    """``value`` (the order's ``what``) when it is positive, else ValueError."""
    if value is None or not value > 0:
        raise ValueError(f"order {order.id}: {order.type.value} order without a positive {what}")
    return float(value)


def need_price(order: Order) -> float:
    return need_positive(order.price, order, "price")


def oco_pair(
    orders: list[Order],
    *,
    same_qty: bool = True,
    same_tif: bool = True,
    stops: frozenset[OrderType] = frozenset({OrderType.STOP, OrderType.STOP_LIMIT}),
) -> tuple[Order, Order] | None:
    """(stop, take-profit) when ``orders`` are one exit pair sharing an ``oco_group`` (same symbol and
    side; with ``same_qty`` / ``same_tif`` also the same quantity / time in force), else None.
    ``stops``: the order types the venue takes as the pair's stop leg."""
    if len(orders) != 2:
        return None
    a, b = orders
    if a.oco_group is None or a.oco_group != b.oco_group or a.symbol != b.symbol or a.side is not b.side:
        return None
    if (same_qty and abs(a.qty - b.qty) > 1e-12) or (same_tif and a.tif is not b.tif):
        return None
    for stop, take in ((a, b), (b, a)):
        if stop.type in stops and take.type is OrderType.LIMIT:
            return stop, take
    return None


# -- the Alpaca v2 dialect ---------------------------------------------------------------------------------
def flatten_legs(obj: Any) -> Iterator[dict[str, Any]]:
    """An Alpaca order object and its legs."""
    if not isinstance(obj, dict):
        return
    yield obj
    for leg in obj.get("legs") or []:
        yield from flatten_legs(leg)


def alpaca_order_ts(obj: Any, parse: Callable[[str], int] = parse_rfc3339) -> int | None:
    """When an Alpaca order object last changed (updated, else submitted, else created; ns)."""
    if not isinstance(obj, dict):
        return None
    for key in ("updated_at", "submitted_at", "created_at"):
        if obj.get(key):
            try:
                return parse(str(obj[key]))
            except ValueError:
                continue
    return None


_ALPACA_OPEN = frozenset(
    {"new", "accepted", "pending_new", "accepted_for_bidding", "pending_cancel", "pending_replace",
     "held", "calculated", "stopped", "suspended"}
)  # fmt: skip
_ALPACA_CLOSED = {
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
    "done_for_day": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}


def alpaca_status(text: str, filled_qty: float, *, replaced_is_open: bool) -> OrderStatus:
    """Our status of an Alpaca order status. "replaced": still working with ``replaced_is_open``
    (the fake broker's dialect replaces in place), else closed as CANCELLED (Alpaca's replacement
    is a new order that carries ours on; the replaced one is asked for alone)."""
    if text == "replaced" and not replaced_is_open:
        return OrderStatus.CANCELLED
    if text in _ALPACA_CLOSED:
        return _ALPACA_CLOSED[text]
    working = text in _ALPACA_OPEN or text == "replaced"
    if text == "partially_filled" or (working and filled_qty > 0):
        return OrderStatus.PARTIALLY_FILLED
    if working:
        return OrderStatus.ACCEPTED
    raise ValueError(f"unknown order status {text!r}")
