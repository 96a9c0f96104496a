"""Crypto exchanges through ccxt (``[venue] kind = "ccxt"``): any exchange ccxt supports, by its id.

``CcxtVenue`` is an ``EventVenue`` over ccxt's synchronous client. The exchange's sandbox (testnet) is
the default; ``live`` uses its real URLs; an ``endpoint`` (tests: the local fake Binance of
``fakes/binance.py``) replaces the scheme and host of every REST URL the exchange has.

ccxt's sync API has no push stream, so a poll thread (every ``poll_s``) reads the open orders of our
working orders, the final state of those that left the book, and ``fetch_my_trades`` after the last
trade seen per symbol; what changed is delivered as events (FILLED with the trade id as event id, so a
trade read twice is booked once; CANCELLED, EXPIRED, REJECTED). Orders are placed under our client id
(``clientOrderId``, shortened deterministically past the exchange's limit), checked first against the
market's precision, minimum amount and minimum notional (refused before sending, with the limit named),
replaced with ``edit_order`` where the exchange has it (Binance spot: cancelReplace, the new order keeps
our client id) or by cancel + new under the same client id.

Errors are translated here and nowhere else: ccxt's exception classes and the HTTP status become our
small set (a send never raises: it delivers REJECTED or UNKNOWN). Requests take a token from the
venue's bucket (ccxt's own throttle is off); 429 / 418 are retried after ``Retry-After``; a submit is
retried only when it certainly was not processed (429, connection refused). Keys are registered with
``hflite.redact``; ccxt's request logging is silenced (it would print the key header).

Binance note: it refuses a client id again only while an order holding it is open, so before placing
an order the adapter asks for its client id (``check_duplicates``): a restarted run that re-sends an
order the exchange already took (and perhaps filled) adopts it instead of trading twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import ccxt
import httpx

from hflite import redact as redaction
from hflite.domain.instrument import Instrument
from hflite.domain.order import OPEN as _OPEN
from hflite.domain.order import Order, OrderStatus, OrderType, Side, TimeInForce
from hflite.execution.timing import Quote
from hflite.execution.venues.base import (
    Capabilities,
    EventVenue,
    Recorder,
    VenueAuthError,
    VenueError,
    VenueEvent,
    VenueEventKind,
    VenueFill,
    VenueNotFound,
    VenueOrder,
    VenuePosition,
    VenueRateLimited,
    VenueRejected,
    VenueSnapshot,
    VenueUnavailable,
    VenueUnknownState,
)
from hflite.execution.venues.common import (
    TokenBucket,
    ack_events,
    float_or_none,
    int_or_none,
    mask_account,
    need_positive,
    redact_secrets,
    with_retries,
)
from hflite.execution.venues.registry import VenueSpec

__all__ = ["CLIENT_ID_LIMITS", "CcxtVenue", "ccxt_client_id", "from_spec"]

_log = logging.getLogger(__name__)
#: ccxt logs every request with its headers (the API key) at DEBUG: its logger goes nowhere.
_WIRE = logging.Logger("hflite.venue.ccxt.wire", level=logging.CRITICAL + 1)

#: The longest client order id each exchange takes (ccxt passes ``clientOrderId`` through its own
#: parameter name: Binance newClientOrderId, OKX clOrdId, ...); others get ``DEFAULT_CLIENT_ID_CHARS``.
CLIENT_ID_LIMITS: dict[str, int] = {"binance": 36, "binanceus": 36, "bybit": 36, "okx": 32, "kucoin": 40}
DEFAULT_CLIENT_ID_CHARS = 32
_CLIENT_ID_CHARS = re.compile(r"^[A-Za-z0-9._:/-]+$")
#: Options that keep ccxt to what the adapter needs (no margin or futures market lists, no wallet
#: endpoints that a testnet key cannot call).
_OPTIONS: dict[str, dict[str, Any]] = {
    "binance": {
        "fetchMarkets": {"types": ["spot"]},
        "fetchCurrencies": False,
        "fetchMargins": False,
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    },
}
_TRADES_PAGE = 1000
_MAX_PAGES = 200
_OPEN_TEXT = {"open", "new", "partially_filled"}


def ccxt_client_id(order_id: str, limit: int = DEFAULT_CLIENT_ID_CHARS) -> str:
    """The client order id an order travels under: its id when it fits the exchange's length and
    characters, else "hf-" + a deterministic hash (the same order id always maps to the same one)."""
    if len(order_id) <= limit and _CLIENT_ID_CHARS.match(order_id):
        return order_id
    return "hf-" + hashlib.sha256(order_id.encode()).hexdigest()[: limit - 3]


class _Failure(Exception):
    """One failed call, classified (never leaves this module).

    ``kind``: "refused" (429/418: not processed), "unreachable" (nothing was sent), "lost" (timeout,
    5xx, dropped: maybe processed), "malformed" (an answer that is not the exchange's payload),
    "auth", "notfound", "clock", "rejected" (a final answer on the merits)."""

    def __init__(self, kind: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.kind, self.reason, self.retry_after = kind, reason, retry_after


class CcxtVenue(EventVenue):
    """The venue port over one ccxt exchange (spot by default; reduce-only where the market is a
    contract). ``symbols`` maps our symbols to ccxt's ("BTC-USD" -> "BTC/USDT"); unmapped ones use
    "BASE/QUOTE" from "BASE-QUOTE", or the exchange's own market id ("BTCUSDT")."""

    def __init__(
        self,
        name: str,
        exchange_id: str,
        key_id: str,
        secret: str,
        *,
        endpoint: str = "",
        live: bool = False,
        password: str = "",
        symbols: Mapping[str, str] | None = None,
        instruments: Mapping[str, Instrument] | None = None,
        drive_clock: bool = False,
        timeout_s: float = 5.0,
        max_retries: int = 5,
        rate_per_min: int = 200,
        max_clock_skew_s: float = 2.0,
        record: Recorder | None = None,
        poll_s: float = 1.0,
        check_duplicates: bool = True,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(record)
        if not key_id or not secret:
            raise VenueAuthError(f"venue {name}: no keys (set the [venue] key_id_env / secret_env variables)")
        if timeout_s <= 0 or max_retries < 0 or max_clock_skew_s < 0 or poll_s <= 0:
            raise ValueError(
                f"venue {name}: timeout_s and poll_s must be > 0, max_retries and max_clock_skew_s >= 0 "
                f"(got {timeout_s}, {poll_s}, {max_retries}, {max_clock_skew_s})"
            )
        cls = getattr(ccxt, exchange_id, None)
        if exchange_id not in ccxt.exchanges or not isinstance(cls, type):
            raise VenueNotFound(f"venue {name}: ccxt has no exchange {exchange_id!r}")
        self.name, self.exchange_id = name, exchange_id
        self.live, self.drive_clock = live, drive_clock
        self.endpoint = endpoint.rstrip("/")
        self.timeout_s, self.max_retries, self.max_clock_skew_s = timeout_s, max_retries, max_clock_skew_s
        self.poll_s, self.check_duplicates = poll_s, check_duplicates
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self._sleep, self._wall_ns = sleep, wall_clock_ns
        self._secrets = tuple(s for s in (secret, key_id, password) if s)
        for s in self._secrets:
            redaction.register(s)
        self.instruments = dict(instruments or {})
        self.symbol_map = dict(symbols or {})
        config: dict[str, Any] = {
            "apiKey": key_id,
            "secret": secret,
            "timeout": int(timeout_s * 1000),
            "enableRateLimit": False,
            "options": dict(_OPTIONS.get(exchange_id, {})),
        }
        if password:
            config["password"] = password
        self.exchange: Any = cls(config)
        self.exchange.logger = _WIRE
        self.exchange.enableLastJsonResponse = True
        if not live:
            try:
                self.exchange.set_sandbox_mode(True)
            except ccxt.NotSupported:
                raise VenueNotFound(
                    f"venue {name}: {exchange_id} has no sandbox (testnet) in ccxt; set live = true to "
                    "trade it for real"
                ) from None
        if self.endpoint:
            _point_urls(self.exchange.urls.get("api"), self.endpoint)
        self._status = 0
        original = self.exchange.on_rest_response

        def on_rest_response(code: Any, reason: Any, url: Any, method: Any, *rest: Any) -> Any:
            self._status = int(code or 0)
            return original(code, reason, url, method, *rest)

        self.exchange.on_rest_response = on_rest_response
        # the exchange's own limit caps the bucket, except against a local endpoint (a fake)
        per_min = rate_per_min
        rate_limit_ms = float(self.exchange.rateLimit or 0)
        if not self.endpoint and rate_limit_ms > 0:
            per_min = max(1, min(rate_per_min, int(60_000 / rate_limit_ms)))
        self.limiter = TokenBucket(per_min, clock=clock, sleep=sleep)
        has = self.exchange.has
        self.capabilities = Capabilities(
            server_side_stops=bool(has.get("createStopOrder") or has.get("createTriggerOrder")),
            oco=False,
            stop_limit=bool(has.get("createStopLimitOrder") or has.get("createTriggerOrder")),
            replace=True,
            fractional=True,
        )
        self.client_id_chars = CLIENT_ID_LIMITS.get(exchange_id, DEFAULT_CLIENT_ID_CHARS)
        self.reconnected = False  # the venue was lost and answered again: the runtime reconciles
        self.requests = 0
        self._lost = False
        self._io = threading.RLock()  # one ccxt call at a time (its session is not thread-safe)
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._client_ids: dict[str, str] = {}  # short client id -> our order id
        self._venue_ids: dict[str, str] = {}  # our order id -> the exchange's id of its live order
        self._by_venue_id: dict[str, str] = {}  # the exchange's order id -> our order id
        self._cancel_sent: set[str] = set()
        self._cursor: dict[str, int | None] = {}  # our symbol -> last trade id seen (numeric ids)
        self._since_ms: dict[str, int] = {}  # our symbol -> last trade time seen (other exchanges)
        self._unified: dict[str, str] = {}
        self._ours: dict[str, str] = {}
        self._admin: httpx.Client | None = None  # the fake's test hook (drive_clock)
        self._sync_ts: int | None = None  # the bar-time the driven market was last moved to

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Where the venue is reached, for messages (no keys)."""
        return (
            redaction.sanitize_url(self.endpoint)
            or f"{self.exchange_id} {'live' if self.live else 'sandbox'}"
        )

    def connect(self) -> None:
        """Load the markets, map our symbols, check the keys (balance) and the clock, start polling."""
        self._try("loading markets", self.exchange.load_markets)
        self._map_symbols()
        self._try("reading the balance", self.exchange.fetch_balance)
        if self.exchange.has.get("fetchTime"):
            skew = self.clock_skew_s()
            if abs(skew) > self.max_clock_skew_s:
                raise VenueError(
                    f"venue {self.name}: the local clock is {abs(skew):.1f} s "
                    f"{'behind' if skew > 0 else 'ahead of'} the exchange's "
                    f"(max {self.max_clock_skew_s:g} s); "
                    "synchronise it with NTP (e.g. timedatectl set-ntp true)"
                )
        for our in self._unified:
            if our not in self._cursor:
                self._init_cursor(our)
        if not self.drive_clock and (self._poller is None or not self._poller.is_alive()):
            self._stop.clear()
            self._poller = threading.Thread(
                target=self._poll_loop, name=f"venue-{self.name}-poll", daemon=True
            )
            self._poller.start()

    def close(self) -> None:
        """Stop polling and close the HTTP session (idempotent)."""
        self._stop.set()
        if self._poller is not None and self._poller is not threading.current_thread():
            self._poller.join(timeout=max(2.0, self.timeout_s * 2))
        if self._admin is not None:
            self._admin.close()
        with self._io:
            session = getattr(self.exchange, "session", None)
            if session is not None:
                session.close()

    def _map_symbols(self) -> None:
        markets = self.exchange.markets or {}
        by_id = {str(m.get("id")): s for s, m in markets.items()}
        for our in dict.fromkeys([*self.instruments, *self.symbol_map]):
            unified = self.symbol_map.get(our)
            if unified is None:
                unified = our.replace("-", "/") if "-" in our else by_id.get(our, our)
            if unified not in markets:
                raise VenueNotFound(
                    f"venue {self.name}: {self.exchange_id} has no market {unified} for {our} "
                    '(map it in [venue] symbols, e.g. {"BTC-USD" = "BTC/USDT"})'
                )
            self._unified[our] = unified
            self._ours[unified] = our

    def _unified_of(self, symbol: str) -> str:
        unified = self._unified.get(symbol)
        if unified is None:
            raise ValueError(f"{symbol} is not mapped to a {self.exchange_id} market")
        return unified

    # -- sending -------------------------------------------------------------------------------------
    def _send_submit(self, order: Order) -> None:
        try:
            request = self._order_request(order)
        except (ValueError, ccxt.BaseError) as exc:  # refused before sending (precision, limits, type)
            self._deliver(order, VenueEventKind.REJECTED, self._redact(str(exc)))
            return
        if self.check_duplicates:
            known = self._fetch_by_client_id(order)
            if known is not None:  # an earlier send got through: take its state, place nothing
                self._adopt_state(order, known)
                return
        unified, otype, side, amount, price, params = request
        try:
            obj = self._call(
                self.exchange.create_order, unified, otype, side, amount, price, params, idempotent=False
            )
        except _Failure as f:
            if f.kind in ("lost", "malformed"):
                self._deliver(order, VenueEventKind.UNKNOWN, f"submit: {f.reason}")
            elif f.kind == "rejected" and "duplicate" in f.reason.lower():
                known = self._fetch_by_client_id(order)
                if known is None:
                    self._deliver(
                        order, VenueEventKind.UNKNOWN, "duplicate client order id but lookup failed"
                    )
                else:
                    self._adopt_state(order, known)
            else:
                self._deliver(order, VenueEventKind.REJECTED, f.reason)
            return
        self._learn(order.id, obj)
        status = str(obj.get("status") or "open")
        ts = _order_ts(obj) or self._wall_ns()
        if status == "rejected":
            self._deliver(order, VenueEventKind.REJECTED, "rejected by the exchange", ts)
            return
        self._deliver(order, VenueEventKind.ACCEPTED, "", ts)
        if status in ("canceled", "expired"):
            self._closing(order, obj)

    def _order_request(self, order: Order) -> tuple[str, str, str, float, float | None, dict[str, Any]]:
        """create_order's arguments, after the market's precision and limits (ValueError: refused)."""
        unified = self._unified_of(order.symbol)
        market = self.exchange.market(unified)
        amount = self._amount(unified, market, order.qty)
        params: dict[str, Any] = {"clientOrderId": self._client_id(order.id)}
        limit: float | None = None
        trigger: float | None = None
        if order.type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            limit = self._price(unified, need_positive(order.price, order, "price"))
        if order.type is OrderType.STOP:
            trigger = self._price(unified, need_positive(order.price, order, "stop price"))
        elif order.type is OrderType.STOP_LIMIT:
            trigger = self._price(unified, need_positive(order.stop_price, order, "stop_price"))
        if trigger is not None:
            params["triggerPrice"] = trigger
        if order.type is not OrderType.MARKET and order.type is not OrderType.STOP:
            if order.tif is TimeInForce.DAY:
                raise ValueError(f"{self.exchange_id} has no day orders: use time in force gtc or ioc")
            params["timeInForce"] = order.tif.value.upper()
        if order.reduce_only and market.get("contract"):
            params["reduceOnly"] = True  # spot has none: a spot sell cannot exceed what is held
        self._check_notional(unified, market, amount, limit or trigger)
        otype = "market" if order.type in (OrderType.MARKET, OrderType.STOP) else "limit"
        return unified, otype, order.side.value, amount, limit, params

    def _amount(self, unified: str, market: Mapping[str, Any], qty: float) -> float:
        """``qty`` on the market's amount step (else ValueError) and at least its minimum."""
        try:
            text = self.exchange.amount_to_precision(unified, qty)
        except ccxt.BaseError:
            text = "0"
        amount = float(text)
        step = (market.get("precision") or {}).get("amount")
        if abs(amount - qty) > 1e-9 * max(1.0, qty):
            raise ValueError(f"qty {qty:g} is not a multiple of {unified}'s amount step {step}")
        low = ((market.get("limits") or {}).get("amount") or {}).get("min")
        if low and amount < float(low) - 1e-12:
            raise ValueError(f"qty {qty:g} is below {unified}'s minimum amount {float(low):g}")
        return amount

    def _price(self, unified: str, price: float) -> float:
        return float(self.exchange.price_to_precision(unified, price))

    def _check_notional(
        self, unified: str, market: Mapping[str, Any], amount: float, price: float | None
    ) -> None:
        low = ((market.get("limits") or {}).get("cost") or {}).get("min")
        if not low:
            return
        ref = price if price is not None else self.last_price(unified)
        if ref is not None and amount * ref < float(low) - 1e-9:
            raise ValueError(
                f"notional {amount * ref:.2f} {market.get('quote', '')} is below {unified}'s minimum "
                f"notional {float(low):g}"
            )

    def quote(self, symbol: str) -> Quote | None:
        """The exchange's best bid and ask for ``symbol`` (``fetch_ticker``), for ``[execution.timing]``;
        None when the symbol is not mapped or the ticker has no book."""
        try:
            unified = self._unified_of(symbol)
        except ValueError:
            return None
        try:
            ticker = self._call(self.exchange.fetch_ticker, unified, idempotent=True)
        except _Failure as f:
            raise self._error(f, f"reading {symbol}'s ticker") from None
        bid = ticker.get("bid") if isinstance(ticker, dict) else None
        ask = ticker.get("ask") if isinstance(ticker, dict) else None
        if not bid or not ask:
            return None
        ts = ticker.get("timestamp")
        return Quote(float(bid), float(ask), int(ts) * 1_000_000 if ts else 0)

    def last_price(self, unified: str) -> float | None:
        """The exchange's last price (None when it cannot say)."""
        try:
            ticker = self._call(self.exchange.fetch_ticker, unified, idempotent=True)
        except _Failure:
            return None
        last = ticker.get("last") if isinstance(ticker, dict) else None
        return float(last) if last else None

    def _send_cancel(self, order: Order) -> None:
        try:
            unified = self._unified_of(order.symbol)
        except ValueError:
            return
        venue_id = self._venue_ids.get(order.id)
        params = {} if venue_id else {"clientOrderId": self._client_id(order.id)}
        try:
            obj = self._call(self.exchange.cancel_order, venue_id, unified, params, idempotent=True)
        except _Failure as f:
            if f.kind in ("notfound", "rejected"):  # closed already, or never there: say how it ended
                self._refresh(order)
                return
            _log.warning(self._redact(f"venue {self.name}: cancel of {order.id} failed: {f.reason}"))
            return
        self._cancel_sent.add(order.id)
        ts = _order_ts(obj) or self._wall_ns()
        self._deliver(order, VenueEventKind.CANCELLED, "cancelled at our request", ts)

    def _send_replace(self, order: Order, price: float) -> None:
        self._edit(order, price=price)

    def _send_resize(self, order: Order, qty: float) -> None:
        self._edit(order, qty=qty)

    def _edit(self, order: Order, *, price: float | None = None, qty: float | None = None) -> None:
        """Move a working order's price or total quantity: ``edit_order`` where the exchange has it,
        else cancel and place again under the same client id. REPLACED when the exchange took it."""
        try:
            unified, otype, amount, limit, params, new = self._edit_request(order, price, qty)
        except (ValueError, ccxt.BaseError) as exc:
            _log.warning(self._redact(f"venue {self.name}: replace of {order.id} refused: {exc}"))
            return
        try:
            if self.exchange.has.get("editOrder"):
                venue_id = self._venue_ids.get(order.id) or self._venue_id_of(order)
                obj = self._call(
                    self.exchange.edit_order, venue_id, unified, otype, order.side.value, amount, limit,
                    params, idempotent=False,
                )  # fmt: skip
            else:
                self._call(self.exchange.cancel_order, self._venue_ids.get(order.id), unified,
                           {} if order.id in self._venue_ids else dict(params), idempotent=True)  # fmt: skip
                obj = self._call(
                    self.exchange.create_order, unified, otype, order.side.value, amount, limit, params,
                    idempotent=False,
                )  # fmt: skip
        except _Failure as f:
            _log.warning(self._redact(f"venue {self.name}: replace of {order.id} failed: {f.reason}"))
            self._refresh(order, replaced_to=new, resized_to=qty)
            return
        self._learn(order.id, obj)
        ts = _order_ts(obj) or self._wall_ns()
        self._replaced(order, ts, price=new, qty=qty)

    def _edit_request(
        self, order: Order, price: float | None, qty: float | None
    ) -> tuple[str, str, float, float | None, dict[str, Any], float | None]:
        """The new order a replace places: (market, type, the remaining amount, limit, params, the new
        price on the tick); ValueError when the market's precision or limits refuse it."""
        unified = self._unified_of(order.symbol)
        market = self.exchange.market(unified)
        total = qty if qty is not None else order.qty
        amount = self._amount(unified, market, total - order.filled_qty)
        new = self._price(unified, price) if price is not None else None
        limit = order.price if order.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None
        trigger = order.price if order.type is OrderType.STOP else order.stop_price
        if new is not None and order.type is OrderType.STOP:
            trigger = new
        elif new is not None:
            limit = new
        params: dict[str, Any] = {"clientOrderId": self._client_id(order.id)}
        if trigger is not None and order.type in (OrderType.STOP, OrderType.STOP_LIMIT):
            params["triggerPrice"] = self._price(unified, trigger)
        otype = "market" if order.type in (OrderType.MARKET, OrderType.STOP) else "limit"
        if otype == "limit":
            params["timeInForce"] = "IOC" if order.tif is TimeInForce.IOC else "GTC"
        limit = self._price(unified, limit) if limit is not None else None
        return unified, otype, amount, limit, params, new

    def _replaced(self, order: Order, ts: int, *, price: float | None, qty: float | None) -> None:
        if price is not None:
            eid = f"{order.id}:replaced:{price!r}"
            self.deliver(
                [VenueEvent(VenueEventKind.REPLACED, order.id, ts, eid, price=price, symbol=order.symbol)]
            )
        if qty is not None:
            eid = f"{order.id}:resized:{qty!r}"
            self.deliver(
                [VenueEvent(VenueEventKind.REPLACED, order.id, ts, eid, qty=qty, symbol=order.symbol)]
            )

    def cancel_venue_order(self, venue_order_id: str, symbol: str | None = None) -> None:
        """Cancel an order by the exchange's id (one the journal never saw, that a human accepted to
        cancel). Without ``symbol`` every mapped market is tried; a closed or unknown one is left."""
        unified = [self._unified_of(symbol)] if symbol else list(self._ours)
        for u in unified:
            try:
                self._call(self.exchange.cancel_order, venue_order_id, u, {}, idempotent=True)
                return
            except _Failure as f:
                if f.kind in ("notfound", "rejected"):
                    continue
                raise self._error(f, f"cancelling venue order {venue_order_id}") from None

    def adopt(self, order: Order) -> None:
        """Hold an order already at the exchange (recovery): its events map back by client id."""
        self._client_id(order.id)
        super().adopt(order)

    # -- what the exchange says about one order -------------------------------------------------------
    def _fetch_by_client_id(self, order: Order) -> dict[str, Any] | None:
        """The exchange's order for our id (None: it has none, or cannot say now)."""
        try:
            unified = self._unified_of(order.symbol)
            obj = self._call(
                self.exchange.fetch_order, None, unified, {"clientOrderId": self._client_id(order.id)},
                idempotent=True,
            )  # fmt: skip
        except (_Failure, ValueError):
            return None
        if not isinstance(obj, dict) or not obj.get("id"):
            return None
        self._learn(order.id, obj)
        return obj

    def _venue_id_of(self, order: Order) -> str | None:
        obj = self._fetch_by_client_id(order)
        return str(obj["id"]) if obj is not None else None

    def _adopt_state(self, order: Order, obj: Mapping[str, Any]) -> None:
        ts = _order_ts(obj) or self._wall_ns()
        if obj.get("status") == "rejected":
            self._deliver(order, VenueEventKind.REJECTED, "rejected by the exchange", ts)
            return
        self._deliver(order, VenueEventKind.ACCEPTED, "", ts)
        self._closing(order, obj)

    def _refresh(
        self, order: Order, *, replaced_to: float | None = None, resized_to: float | None = None
    ) -> None:
        """Ask how the order stands after a request that failed: deliver its end, or the replace the
        exchange did take after all."""
        obj = self._fetch_by_client_id(order)
        if obj is None:
            return
        if str(obj.get("status")) == "open":
            got_price = obj.get("triggerPrice") if order.type is OrderType.STOP else obj.get("price")
            ts = _order_ts(obj) or self._wall_ns()
            if replaced_to is not None and got_price and abs(float(got_price) - replaced_to) < 1e-9:
                self._replaced(order, ts, price=replaced_to, qty=None)
            amount = obj.get("amount")
            if (
                resized_to is not None
                and amount
                and abs(float(amount) + order.filled_qty - resized_to) < 1e-9
            ):
                self._replaced(order, ts, price=None, qty=resized_to)
            return
        self._closing(order, obj)

    def _after_move(self, ts: int) -> int:
        """The seq of a change the poll found that the exchange made at ``ts`` (ns): with the driven
        clock, a change stamped at the bar-time being synced answers a request made after the move
        (a run killed inside that bar-time made it), so it is booked one bar-time on, where that
        run's own answer would have been; an earlier one is booked now. 0 without the driven clock."""
        if not self.drive_clock or self._sync_ts is None or ts < self._sync_ts:
            return 0
        return (self.horizon or 0) + 1

    def _price_moved(self, order: Order, unified: str, obj: Mapping[str, Any]) -> None:
        """An open order whose price at the exchange is not ours was replaced (by a run that was
        killed before it booked the answer): deliver the REPLACED it missed."""
        if order.price is None or order.type is OrderType.MARKET:
            return
        got = float_or_none(obj.get("triggerPrice") if order.type is OrderType.STOP else obj.get("price"))
        if not got or abs(got - self._price(unified, order.price)) < 1e-9:
            return
        ts = (int_or_none(obj.get("timestamp")) or 0) * 1_000_000
        eid = f"{order.id}:replaced:{got!r}"
        ev = VenueEvent(VenueEventKind.REPLACED, order.id, ts, eid, price=got, symbol=order.symbol)
        self.deliver([ev._replace(seq=self._after_move(ts))])

    def _closing(self, order: Order, obj: Mapping[str, Any]) -> None:
        """Deliver how a closed order ended (fills arrive as trades)."""
        status = str(obj.get("status"))
        ts = _order_ts(obj) or self._wall_ns()
        if status == "canceled":
            # a cancellation is never caused by moving the market (closures by the venue are
            # EXPIRED): one we did not ask for in this process answers another run's request
            seq = 0 if order.id in self._cancel_sent else self._after_move(ts)
            ev = VenueEvent(
                VenueEventKind.CANCELLED, order.id, ts, f"{order.id}:cancelled",
                reason="cancelled at the venue", symbol=order.symbol, seq=seq,
            )  # fmt: skip
            self.deliver([ev])
        elif status == "expired":
            self._deliver(order, VenueEventKind.EXPIRED, "expired at the venue", ts)
        elif status == "rejected":
            self._deliver(order, VenueEventKind.REJECTED, "rejected by the exchange", ts)

    # -- polling -------------------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except VenueError as exc:
                _log.warning(self._redact(f"venue {self.name}: poll failed: {exc}"))

    def poll(self) -> None:
        """One look at the exchange: the state of our working orders, then the trades after the last
        seen; what changed is delivered. Raises VenueError when the exchange cannot be read."""
        with self._poll_lock:
            watched: dict[str, list[Order]] = {}
            for sym, book in list(self.working.items()):
                live = [o for o in book if o.status in _OPEN]
                if live:
                    watched[sym] = live
            traded = [s for s, b in self.working.items() if b] if self.drive_clock else list(self._unified)
            try:
                for sym, orders in watched.items():
                    self._poll_orders(sym, orders)
                for sym in dict.fromkeys(traded):
                    if sym in self._unified:
                        self._poll_trades(sym)
            except _Failure as f:
                raise self._error(f, "polling orders and trades") from None

    def _poll_orders(self, symbol: str, orders: list[Order]) -> None:
        unified = self._unified_of(symbol)
        listed = self._call(self.exchange.fetch_open_orders, unified, idempotent=True)
        if not isinstance(listed, list):
            raise _Failure("malformed", "malformed answer from fetch_open_orders (not a list)")
        open_ids: set[str] = set()
        mine = {o.id: o for o in orders}
        for obj in listed:
            cid = str(obj.get("clientOrderId") or "")
            if cid:
                open_ids.add(self.order_id(cid))
                self._learn(self.order_id(cid), obj)
                if self.order_id(cid) in mine:
                    self._price_moved(mine[self.order_id(cid)], unified, obj)
        for order in orders:
            if (
                order.id in open_ids
                or order.status is OrderStatus.SUBMITTED
                and order.id not in self._venue_ids
            ):
                continue
            obj = self._fetch_by_client_id(order)
            if obj is not None and str(obj.get("status")) not in _OPEN_TEXT and obj.get("status") != "closed":
                self._closing(order, obj)

    def _poll_trades(self, symbol: str) -> None:
        unified = self._unified_of(symbol)
        numeric = self._cursor.get(symbol)
        for _ in range(_MAX_PAGES):
            params: dict[str, Any] = {}
            since: int | None = None
            if self._numeric_trades:
                params["fromId"] = (numeric if numeric is not None else -1) + 1
            else:
                since = self._since_ms.get(symbol)
            trades = self._call(
                self.exchange.fetch_my_trades, unified, since, _TRADES_PAGE, params, idempotent=True
            )
            if not isinstance(trades, list):
                raise _Failure("malformed", "malformed answer from fetch_my_trades (not a list)")
            events = [self._trade_event(symbol, t) for t in trades]
            self.deliver(ev for ev in events if ev is not None)
            for t in trades:
                tid = int_or_none(t.get("id"))
                if tid is not None and (numeric is None or tid > numeric):
                    numeric = tid
                stamp = int_or_none(t.get("timestamp"))
                if stamp is not None:
                    self._since_ms[symbol] = max(self._since_ms.get(symbol, 0), stamp)
            self._cursor[symbol] = numeric
            if len(trades) < _TRADES_PAGE or not self._numeric_trades:
                return

    @property
    def _numeric_trades(self) -> bool:
        """Binance-style exchanges page trades by id (``fromId``); others by time."""
        return self.exchange_id.startswith("binance")

    def _init_cursor(self, symbol: str) -> None:
        """Start polling a symbol's trades after its latest one (earlier fills are the snapshot's)."""
        try:
            trades = self._call(
                self.exchange.fetch_my_trades, self._unified[symbol], None, 1, {}, idempotent=True
            )
        except _Failure as f:
            raise self._error(f, f"reading {symbol}'s trades") from None
        last = trades[-1] if isinstance(trades, list) and trades else None
        self._cursor[symbol] = int_or_none(last.get("id")) if last else None
        if last and int_or_none(last.get("timestamp")) is not None:
            self._since_ms[symbol] = int(last["timestamp"]) + 1
        elif not last:
            self._since_ms[symbol] = self._wall_ns() // 1_000_000

    def _trade_event(self, symbol: str, trade: Mapping[str, Any]) -> VenueEvent | None:
        try:
            fill = self._venue_fill(symbol, trade)
        except (KeyError, TypeError, ValueError):
            _log.warning(f"venue {self.name}: malformed trade {trade.get('id', '?')} skipped")
            return None
        seq = (int_or_none(trade.get("id")) or 0) if self.drive_clock else 0
        return VenueEvent(
            VenueEventKind.FILLED, fill.order_id, fill.ts, fill.event_id, qty=fill.qty, price=fill.price,
            fee=fill.fee, symbol=symbol, seq=seq,
        )  # fmt: skip

    def _venue_fill(self, symbol: str, trade: Mapping[str, Any]) -> VenueFill:
        unified = self._unified_of(symbol)
        market = self.exchange.market(unified)
        venue_id = str(trade["order"])
        price, qty = float(trade["price"]), float(trade["amount"])
        fee = trade.get("fee") or {}
        cost = float(fee.get("cost") or 0.0)
        currency = fee.get("currency")
        if currency == market.get("base"):
            cost *= price  # charged in the base asset: its quote value
        elif currency not in (None, market.get("quote")):
            cost = 0.0  # charged in a third asset (BNB): not in the run's currency
        return VenueFill(
            f"{market['id']}-{trade['id']}",
            self._our_id_of(venue_id, unified),
            symbol,
            Side(str(trade["side"]).lower()),
            qty,
            price,
            cost,
            int(trade["timestamp"]) * 1_000_000,
        )

    def _our_id_of(self, venue_id: str, unified: str) -> str:
        """Our order id of the exchange's order (its client id; the exchange id when it has none)."""
        known = self._by_venue_id.get(venue_id)
        if known is not None:
            return known
        try:
            obj = self._call(self.exchange.fetch_order, venue_id, unified, {}, idempotent=True)
        except _Failure:
            return venue_id
        cid = str(obj.get("clientOrderId") or "") if isinstance(obj, dict) else ""
        our = self.order_id(cid) if cid else venue_id
        self._by_venue_id[venue_id] = our
        return our

    # -- reconciliation and the clock ----------------------------------------------------------------
    def sync(self, ts: int) -> None:
        """With ``drive_clock``: move the fake exchange's market to bar-time ``ts`` and read what that
        caused (fills carry the move's event seq as trade id). Without it: nothing (the poll thread
        delivers as it goes)."""
        if not self.drive_clock:
            return
        if not self.endpoint:
            raise VenueError(f"venue {self.name}: drive_clock needs a local fake exchange (set [venue] url)")
        secs, frac = divmod(ts, 1_000_000_000)
        stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"
        if self._admin is None:  # one keep-alive client: a new one per bar costs an SSL context
            self._admin = httpx.Client(
                headers={"X-MBX-APIKEY": self.exchange.apiKey}, timeout=self.timeout_s * 4
            )
        try:
            resp = self._admin.post(f"{self.endpoint}/admin/clock", json={"ts": stamp})
            answer = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            raise VenueUnavailable(
                f"venue {self.name}: moving the clock failed ({type(exc).__name__})"
            ) from None
        last = int_or_none(answer.get("last_event_id")) if isinstance(answer, dict) else None
        if last is None:
            raise VenueUnknownState(
                f"venue {self.name}: malformed answer from POST /admin/clock (no last_event_id)"
            )
        self.horizon = last
        self._sync_ts = ts
        self.poll()

    def snapshot(self, order_ids: Iterable[str], since: str | None = None) -> VenueSnapshot:
        """The exchange's state for reconciliation: cash (the quote assets, in our currency), positions
        (the base assets), every open order of our markets, the orders asked for (by our id) and every
        trade of our markets after ``since`` (RFC 3339 or ns; None = all)."""
        wanted = list(dict.fromkeys(order_ids))
        for oid in wanted:
            self._client_id(oid)
        balance = self._try("reading the balance", self.exchange.fetch_balance)
        ts = self._venue_time()
        orders: dict[str, VenueOrder] = {}
        objs: list[Mapping[str, Any]] = []
        for unified in self._ours:
            listed = self._try("listing open orders", self.exchange.fetch_open_orders, unified)
            if not isinstance(listed, list):
                raise VenueUnknownState(
                    f"venue {self.name}: malformed answer listing open orders (not a list)"
                )
            objs.extend(listed)
        have = {self.order_id(str(o.get("clientOrderId") or "")) for o in objs}
        for oid in wanted:
            if oid in have:
                continue
            order = self.orders.get(oid)
            for unified in (
                [self._unified[order.symbol]] if order and order.symbol in self._unified else self._ours
            ):
                try:
                    obj = self._call(
                        self.exchange.fetch_order, None, unified, {"clientOrderId": self._client_id(oid)},
                        idempotent=True,
                    )  # fmt: skip
                except _Failure as f:
                    if f.kind in ("notfound", "rejected"):
                        continue
                    raise self._error(f, f"reading order {oid}") from None
                objs.append(obj)
                break
        for obj in objs:
            vo = self._venue_order(obj)
            if vo.order_id in wanted or vo.status in _OPEN:
                orders[vo.order_id or vo.venue_order_id] = vo
        since_ms = _since_ms(since)
        fills: list[VenueFill] = []
        for our in self._unified:
            fills.extend(self._all_fills(our, since_ms))
        cash, positions = self._holdings(balance, fills if since is None else None)
        return VenueSnapshot(ts, cash, positions, orders, fills)

    def _all_fills(self, symbol: str, since_ms: int | None) -> list[VenueFill]:
        unified = self._unified[symbol]
        out: list[VenueFill] = []
        seen: set[str] = set()
        from_id = 0
        since = since_ms
        for _ in range(_MAX_PAGES):
            params = {"fromId": from_id} if self._numeric_trades else {}
            trades = self._try(
                "listing trades", self.exchange.fetch_my_trades, unified,
                None if self._numeric_trades else since, _TRADES_PAGE, params,
            )  # fmt: skip
            if not isinstance(trades, list):
                raise VenueUnknownState(f"venue {self.name}: malformed answer listing trades (not a list)")
            for t in trades:
                try:
                    fill = self._venue_fill(symbol, t)
                except (KeyError, TypeError, ValueError):
                    raise VenueUnknownState(
                        f"venue {self.name}: malformed trade {t.get('id', '?')}"
                    ) from None
                if fill.event_id in seen or (since_ms is not None and fill.ts < since_ms * 1_000_000):
                    continue
                seen.add(fill.event_id)
                out.append(fill)
            if len(trades) < _TRADES_PAGE:
                break
            last = trades[-1]
            if self._numeric_trades:
                from_id = int(last["id"]) + 1
            else:
                since = int(last["timestamp"]) + 1
        return out

    def _holdings(
        self, balance: Mapping[str, Any], fills: list[VenueFill] | None
    ) -> tuple[dict[str, float], dict[str, VenuePosition]]:
        total = balance.get("total") if isinstance(balance, dict) else None
        info = balance.get("info") if isinstance(balance, dict) else None
        if not isinstance(total, dict) or not isinstance(info, dict | list):
            raise VenueUnknownState(f"venue {self.name}: malformed balance answer")
        cash: dict[str, float] = {}
        positions: dict[str, VenuePosition] = {}
        quotes: set[str] = set()
        for our, unified in self._unified.items():
            market = self.exchange.market(unified)
            base, quote = market.get("base"), market.get("quote")
            inst = self.instruments.get(our)
            currency = inst.currency if inst is not None else str(quote)
            if quote not in quotes:
                quotes.add(str(quote))
                cash[currency] = cash.get(currency, 0.0) + float(total.get(quote) or 0.0)
            qty = float(total.get(base) or 0.0)
            if qty:
                positions[our] = VenuePosition(
                    our, qty, _avg_entry([f for f in fills or [] if f.symbol == our])
                )
        return cash, positions

    def _venue_order(self, obj: Mapping[str, Any]) -> VenueOrder:
        try:
            cid = str(obj.get("clientOrderId") or "")
            unified = str(obj["symbol"])
            kind = str(obj.get("type") or "limit").lower()
            trigger = float_or_none(obj.get("triggerPrice") or obj.get("stopPrice"))
            limit = float_or_none(obj.get("price"))
            if trigger:
                otype = (
                    OrderType.STOP
                    if kind in ("market", "stop", "stop_loss", "stop_market")
                    else OrderType.STOP_LIMIT
                )
            else:
                otype = OrderType.MARKET if kind == "market" else OrderType.LIMIT
            price = trigger if otype is OrderType.STOP else limit
            filled = float(obj.get("filled") or 0.0)
            amount = float(obj["amount"])
            our = self.order_id(cid) if cid else ""
            held = self.orders.get(our) if our else None
            if held is not None and amount < held.qty - 1e-12:
                # a replacement (cancelReplace) holds what was left when it was placed: our order's
                # total is filled before it plus what it has left
                remaining = float_or_none(obj.get("remaining"))
                remaining = amount - filled if remaining is None else remaining
                amount, filled = held.qty, held.qty - remaining
            return VenueOrder(
                our,
                str(obj["id"]),
                self._ours.get(unified, unified),
                Side(str(obj["side"]).lower()),
                otype,
                amount,
                filled,
                float(obj.get("average") or 0.0),
                _status(str(obj.get("status")), filled),
                price,
                trigger if otype is OrderType.STOP_LIMIT else None,
                (int_or_none(obj.get("timestamp")) or 0) * 1_000_000,
            )
        except (KeyError, TypeError, ValueError):
            raise VenueUnknownState(f"venue {self.name}: malformed order {obj.get('id', '?')}") from None

    def _venue_time(self) -> int:
        if not self.exchange.has.get("fetchTime"):
            return self._wall_ns()
        ms = self._try("reading the time", self.exchange.fetch_time)
        if not isinstance(ms, int | float):
            raise VenueUnknownState(f"venue {self.name}: malformed answer reading the time")
        return int(ms) * 1_000_000

    def clock_skew_s(self) -> float:
        """The exchange's clock minus ours, in seconds (positive: the exchange is ahead)."""
        before = self._wall_ns()
        venue = self._venue_time()
        after = self._wall_ns()
        return (venue - (before + after) // 2) / 1e9

    def latency_ms(self) -> float:
        """One request's round trip to the exchange (its time, or the balance without one), in ms."""
        start = time.perf_counter()
        if self.exchange.has.get("fetchTime"):
            self._venue_time()
        else:
            self._try("reading the balance", self.exchange.fetch_balance)
        return (time.perf_counter() - start) * 1e3

    def describe(self) -> dict[str, Any]:
        """For ``hflite venue check``: the account (masked), its currency, cash, buying power and
        equity (cash plus the base assets at the last price)."""
        balance = self._try("reading the balance", self.exchange.fetch_balance)
        if not isinstance(balance, dict) or not isinstance(balance.get("total"), dict):
            raise VenueUnknownState(f"venue {self.name}: malformed balance answer")
        info = balance.get("info")
        account = ""
        if isinstance(info, dict):
            account = str(info.get("uid") or info.get("accountId") or info.get("id") or "")
        quote = ""
        equity = 0.0
        for unified in self._ours:
            market = self.exchange.market(unified)
            quote = quote or str(market.get("quote"))
            held = float(balance["total"].get(market.get("base")) or 0.0)
            if held:
                equity += held * (self.last_price(unified) or 0.0)
        cash = float(balance["total"].get(quote) or 0.0)
        free = float((balance.get("free") or {}).get(quote) or 0.0)
        return {
            "account": mask_account(account),
            "exchange": self.exchange_id,
            "environment": "live" if self.live else ("local" if self.endpoint else "sandbox"),
            "currency": quote,
            "cash": cash,
            "buying_power": free,
            "equity": cash + equity,
        }

    # -- ids ---------------------------------------------------------------------------------------
    def _client_id(self, order_id: str) -> str:
        cid = ccxt_client_id(order_id, self.client_id_chars)
        if cid != order_id:
            self._client_ids[cid] = order_id
        return cid

    def order_id(self, client_id: str) -> str:
        """Our order id for a client order id seen at the exchange."""
        return self._client_ids.get(client_id, client_id)

    def _learn(self, order_id: str, obj: Mapping[str, Any]) -> None:
        venue_id = obj.get("id") if isinstance(obj, Mapping) else None
        if venue_id:
            self._venue_ids[order_id] = str(venue_id)
            self._by_venue_id[str(venue_id)] = order_id

    # -- calls and errors ----------------------------------------------------------------------------
    def _try(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """A read, retried; the domain error when it fails for good."""
        try:
            return self._call(fn, *args, idempotent=True)
        except _Failure as f:
            raise self._error(f, what) from None

    def _call(self, fn: Callable[..., Any], *args: Any, idempotent: bool) -> Any:
        """One logical request: retried on 429 and when nothing was sent, and (``idempotent``) on
        timeouts, 5xx and drops, with backoff (Retry-After wins); raises the last ``_Failure``."""

        def once() -> Any:
            try:
                return self._once(fn, *args)
            except _Failure as f:
                if f.kind in ("lost", "unreachable"):
                    self._lost = True
                raise

        out = with_retries(
            once,
            _Failure,
            idempotent=idempotent,
            attempts=1 + self.max_retries,
            backoff=(self.backoff_base_s, self.backoff_max_s),
            sleep=self._sleep,
            redact=self._redact,
        )
        if self._lost:
            self._lost = False
            self.reconnected = True
            _log.warning(f"venue {self.name}: the exchange answers again; reconciling")
        return out

    def _once(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.limiter.acquire()
        with self._io:
            self.requests += 1
            ex = self.exchange
            self._status = 0
            ex.last_json_response = None
            ex.last_http_response = None
            ex.last_response_headers = None
            try:
                out = fn(*args)
            except ccxt.BaseError as exc:
                raise self._classify(exc) from None
            except Exception as exc:  # noqa: BLE001 - ccxt reading a body that is not the documented one
                raise _Failure("malformed", f"malformed answer ({type(exc).__name__})") from None
            if self._status and ex.last_json_response is None and ex.last_http_response:
                raise _Failure("malformed", "malformed answer (not JSON)")
            return out

    def _classify(self, exc: ccxt.BaseError) -> _Failure:
        status = self._status
        message = self._message()
        detail = message or type(exc).__name__
        if status in (418, 429) or isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
            return _Failure("refused", f"rate limited: {detail}", self._retry_after())
        if isinstance(exc, ccxt.RequestTimeout):
            return _Failure("lost", f"no answer within {self.timeout_s:g} s")
        if isinstance(exc, ccxt.NetworkError) and status == 0 and not isinstance(exc, ccxt.InvalidNonce):
            if _refused(exc):
                return _Failure("unreachable", "connection refused")
            return _Failure("lost", "connection dropped")
        if status >= 500 or isinstance(exc, ccxt.ExchangeNotAvailable):
            return _Failure("lost", f"HTTP {status or 503}: {detail}")
        if isinstance(exc, ccxt.InvalidNonce):
            return _Failure("clock", f"the exchange refused our timestamp ({detail}): synchronise the clock")
        if isinstance(exc, ccxt.AuthenticationError):
            return _Failure("auth", detail)
        if isinstance(exc, ccxt.OrderNotFound):
            return _Failure("notfound", detail)
        if isinstance(exc, ccxt.BadResponse) or (isinstance(exc, ccxt.OperationFailed) and not status):
            return _Failure("malformed", f"malformed answer ({detail})")
        return _Failure("rejected", detail)

    def _message(self) -> str:
        """The exchange's own words for the last error (Binance: ``{"code", "msg"}``), one line."""
        raw = self.exchange.last_http_response
        if not raw:
            return ""
        try:
            body = json.loads(raw)
        except (TypeError, ValueError):
            return ""
        if isinstance(body, dict):
            text = body.get("msg") or body.get("message") or body.get("error") or ""
            code = body.get("code")
            text = f"{text} ({code})" if text and code not in (None, "", 0) else str(text)
            return self._redact(" ".join(str(text).split())[:200])
        return ""

    def _retry_after(self) -> float | None:
        headers = self.exchange.last_response_headers or {}
        raw = headers.get("Retry-After") if hasattr(headers, "get") else None
        try:
            value = float(raw) if raw is not None else -1.0
        except (TypeError, ValueError):
            return None
        return value if value >= 0 else None

    def _error(self, f: _Failure, what: str) -> VenueError:
        """The one-line domain error for a failed request."""
        text = self._redact(f"venue {self.name}: {what} failed: {f.reason}")
        if f.kind == "auth":
            return VenueAuthError(
                self._redact(f"venue {self.name} at {self.url} rejected the keys ({f.reason})")
            )
        if f.kind == "refused":
            return VenueRateLimited(text, f.retry_after)
        if f.kind == "unreachable":
            return VenueUnavailable(self._redact(f"cannot reach venue {self.name} at {self.url}: {f.reason}"))
        if f.kind == "lost":
            return VenueUnavailable(text)
        if f.kind == "notfound":
            return VenueNotFound(text)
        if f.kind == "malformed":
            return VenueUnknownState(text)
        return VenueRejected(text, f.reason)

    def _redact(self, text: str) -> str:
        return redact_secrets(text, self._secrets)

    def _deliver(self, order: Order, kind: VenueEventKind, reason: str, ts: int | None = None) -> None:
        ts = ts if ts is not None else self._wall_ns()
        self.deliver(ack_events([order], kind, reason, ts, cancelled="cancelled"))


def from_spec(spec: VenueSpec, **options: Any) -> CcxtVenue:
    """The ``ccxt`` kind: ``spec.exchange`` through ccxt (its sandbox unless ``spec.live``), at
    ``spec.endpoint`` when set (the local fake); ``spec.account`` is the exchange's passphrase when it
    needs one (OKX, KuCoin). ``options``: constructor keywords (tests: ``sleep``, ``poll_s``)."""
    return CcxtVenue(
        f"ccxt:{spec.exchange}",
        spec.exchange,
        spec.key_id,
        spec.secret,
        endpoint=spec.endpoint,
        live=spec.live,
        password=spec.account,
        symbols=spec.symbols,
        instruments=spec.instruments,
        drive_clock=spec.drive_clock,
        timeout_s=spec.timeout_s,
        max_retries=spec.max_retries,
        rate_per_min=spec.rate_per_min,
        max_clock_skew_s=spec.max_clock_skew_s,
        **options,
    )


# -- helpers ---------------------------------------------------------------------------------------------
def _point_urls(urls: Any, endpoint: str) -> None:
    """Every REST URL of the exchange (nested dicts of strings) at ``endpoint``, keeping its path."""
    if not isinstance(urls, dict):
        return
    for key, value in urls.items():
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            urls[key] = endpoint + urlsplit(value).path.rstrip("/")
        elif isinstance(value, dict):
            _point_urls(value, endpoint)


def _refused(exc: BaseException) -> bool:
    """True when a transport error says nothing was sent (the connection was never made)."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        text = str(seen)
        if "Failed to establish a new connection" in text or "Connection refused" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _order_ts(obj: Any) -> int | None:
    if not isinstance(obj, Mapping):
        return None
    for key in ("lastUpdateTimestamp", "timestamp"):
        ms = int_or_none(obj.get(key))
        if ms:
            return ms * 1_000_000
    return None


def _status(text: str, filled: float) -> OrderStatus:
    if text == "open":
        return OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED
    closed = {
        "closed": OrderStatus.FILLED,
        "canceled": OrderStatus.CANCELLED,
        "expired": OrderStatus.EXPIRED,
        "rejected": OrderStatus.REJECTED,
    }
    if text in closed:
        return closed[text]
    raise ValueError(f"unknown order status {text!r}")


def _avg_entry(fills: list[VenueFill]) -> float:
    """The average entry price of the position the fills leave (0 when flat or unknown)."""
    qty = avg = 0.0
    for f in sorted(fills, key=lambda f: f.ts):
        signed = f.qty if f.side is Side.BUY else -f.qty
        new = qty + signed
        if qty == 0 or (qty > 0) == (signed > 0):
            avg = (avg * abs(qty) + f.price * abs(signed)) / (abs(qty) + abs(signed))
        elif abs(new) <= 1e-12:
            avg = 0.0
        elif (new > 0) != (qty > 0):
            avg = f.price
        qty = new
    return avg if abs(qty) > 1e-12 else 0.0


def _since_ms(since: str | None) -> int | None:
    if not since:
        return None
    if since.isdigit():
        return int(since) // 1_000_000
    stamp = datetime.fromisoformat(since.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1000)
