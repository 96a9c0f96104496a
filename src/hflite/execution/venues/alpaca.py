"""Alpaca as a broker venue, on the official client (alpaca-py): REST through ``TradingClient``, what
happens to our orders through the ``trade_updates`` websocket read by ``TradingStream`` in a daemon
thread.

``AlpacaVenue`` is an ``EventVenue``: a send never raises, it delivers ACCEPTED (Alpaca took it),
REJECTED (Alpaca refused it, with its words, or we refused it before sending: an order that rounds to
zero shares) or UNKNOWN (a timeout, a 5xx or a dropped connection after sending: reconciliation
settles it). ``connect``, ``snapshot`` and ``sync`` raise our ``VenueError`` family with one-line
messages that never hold a key. No alpaca-py or requests exception leaves this module.

Alpaca's ways, and how they are met:

- ``client_order_id`` is our order id (``rest.client_order_id`` shortens long ones deterministically);
- a replace (PATCH) makes a NEW Alpaca order: it travels under ``<client id>~r<8 hex>`` (derived from
  the old order and the new price, so a restart re-sending it is recognised as a duplicate) and both
  its id and its client id map back to our order;
- the engine's exit pair (``submit_oco``: stop-loss + take-profit) is one ``order_class=oco`` order;
  the stop leg gets Alpaca's own client id, so legs are mapped by Alpaca id (learned from the answer,
  from nested order listings, and after a restart from the adopted pair's ``oco_group``);
- quantities: whole shares, or 9 decimals where the asset is ``fractionable`` (GET /v2/assets);
  prices: the instrument's tick, at most 2 decimals at or above $1 and 4 below (Alpaca's sub-penny
  rule);
- the stream has no replay: when it drops and comes back ``reconnected`` is set and the runtime
  reconciles (fills missed meanwhile come from the FILL activities of the snapshot).

With ``drive_clock`` (the local fake only, see ``fakes/alpaca.py``) ``sync`` moves the fake's market
through its test-only ``POST /admin/clock`` and returns once every trade update up to the move's last
event is delivered: each update carries the fake's event sequence number as ``event_id``, and
updates the stream missed (it was down, or this process started after them) are read from the
fake's ``GET /admin/events``, so a restarted run re-driving a bar-time sees what an uninterrupted one
saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any, NamedTuple
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockLatestQuoteRequest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, QueryOrderStatus
from alpaca.trading.enums import TimeInForce as AlpacaTif
from alpaca.trading.requests import (
    GetCalendarRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLimitOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
    TrailingStopOrderRequest,
)
from alpaca.trading.stream import TradingStream
from pydantic import ValidationError

from hflite import redact as redaction
from hflite.domain.instrument import AssetClass, Instrument
from hflite.domain.order import OPEN, Order, OrderType, Side
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
from hflite.execution.venues.common import Failure as _Failure
from hflite.execution.venues.common import (
    TokenBucket,
    ack_events,
    alpaca_order_ts,
    alpaca_status,
    client_order_id,
    flatten_legs,
    float_or_none,
    fmt_ts,
    need_price,
    num,
    oco_pair,
    redact_secrets,
    retry_after,
    utc,
    with_retries,
)
from hflite.execution.venues.registry import VenueSpec

__all__ = [
    "DATA_URL",
    "LIVE_URL",
    "PAPER_URL",
    "AlpacaVenue",
    "Asset",
    "MarketClock",
    "MarketDay",
    "from_spec",
    "stream_url",
]

_log = logging.getLogger(__name__)

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"
DATA_URL = "https://data.alpaca.markets"  # market data (quotes), for paper and live accounts alike
_ALPACA_HOSTS = frozenset({"paper-api.alpaca.markets", "api.alpaca.markets"})
FRACTION_DECIMALS = 9  # Alpaca's precision for fractional share quantities
_REPLACE_MARK = "~r"  # client id of a replacement order: <our client id>~r<8 hex>
_ORDERS_PAGE = 500  # Alpaca's maximum ``limit`` for GET /v2/orders
_FILLS_PAGE = 100  # Alpaca's maximum ``page_size`` for activities
_MAX_PAGES = 200
_DUPLICATE_CODE = 40010001
_NY = ZoneInfo("America/New_York")


def stream_url(endpoint: str) -> str:
    """The trade_updates websocket of a REST endpoint: same host, ``/stream``, ws(s) scheme."""
    base = endpoint.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/stream"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/stream"
    raise ValueError(
        f"alpaca endpoint must start with http:// or https://, got {redaction.sanitize_url(endpoint)!r}"
    )


class MarketClock(NamedTuple):
    """GET /v2/clock: the venue's time and its market's state (ns UTC)."""

    ts: int
    is_open: bool
    next_open: int
    next_close: int


class MarketDay(NamedTuple):
    """One trading day of GET /v2/calendar: its regular open and close (ns UTC)."""

    day: date
    open: int
    close: int


@dataclass(frozen=True, slots=True)
class Asset:
    """What Alpaca says about a symbol (GET /v2/assets/{symbol}) that orders depend on."""

    symbol: str
    tradable: bool
    fractionable: bool
    shortable: bool
    min_order_size: float | None = None
    min_trade_increment: float | None = None
    price_increment: float | None = None


class _Client(TradingClient):
    """``TradingClient`` with a timeout on every request (alpaca-py sets none) and its own 429 retry
    loop turned off (ours honours Retry-After and counts attempts)."""

    def __init__(self, key_id: str, secret: str, *, paper: bool, url: str, timeout_s: float) -> None:
        super().__init__(key_id, secret, paper=paper, raw_data=True, url_override=url)
        self._retry = 0
        self.timeout_s = timeout_s

    def _one_request(self, method: str, url: str, opts: dict, retry: int) -> dict:  # type: ignore[type-arg]
        return super()._one_request(method, url, {**opts, "timeout": self.timeout_s}, retry)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._session.close()


class _DataClient(StockHistoricalDataClient):
    """The market-data client (latest quotes) with the same timeout and no retry loop of its own."""

    def __init__(self, key_id: str, secret: str, *, url: str, timeout_s: float) -> None:
        super().__init__(key_id, secret, raw_data=True, url_override=url)
        self._retry = 0
        self.timeout_s = timeout_s

    def _one_request(self, method: str, url: str, opts: dict, retry: int) -> dict:  # type: ignore[type-arg]
        return super()._one_request(method, url, {**opts, "timeout": self.timeout_s}, retry)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._session.close()


class _Stream(TradingStream):
    """``TradingStream`` that tells its venue when it is listening and when it went down, and can be
    stopped at once from another thread (``TradingStream.stop`` waits for a 5 s receive timeout)."""

    def __init__(self, venue: AlpacaVenue, key_id: str, secret: str, *, paper: bool, url: str) -> None:
        # alpaca-py's own websocket settings, with a short close handshake: a dropped stream is
        # noticed and replaced in about a second instead of ten
        params = {"ping_interval": 10, "ping_timeout": 180, "max_queue": 1024, "close_timeout": 1}
        super().__init__(
            key_id, secret, paper=paper, raw_data=True, url_override=url, websocket_params=params
        )
        self.venue = venue

    async def _dispatch(self, msg: dict) -> None:  # type: ignore[type-arg]
        if msg.get("stream") == "listening":
            self.venue._on_listening()
        await super()._dispatch(msg)

    async def close(self) -> None:
        self.venue._on_stream_down()
        await super().close()

    def shutdown(self, timeout_s: float = 2.0) -> None:
        loop = self._loop
        if loop is None or not loop.is_running():
            self._should_run = False
            with contextlib.suppress(Exception):
                self._stop_stream_queue.put_nowait({"should_stop": True})
            return

        async def stop_now() -> None:
            await self.stop_ws()
            await self.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop_now(), loop).result(timeout_s)


class AlpacaVenue(EventVenue):
    """The broker venue port on Alpaca's Trading API v2 and its trade_updates stream.

    Keys are registered with ``hflite.redact``. ``symbols`` maps our symbols to Alpaca's (default:
    stocks as they are, ``BTC-USD`` -> ``BTC/USD``). ``sleep``, ``clock`` and ``wall_clock_ns`` are
    injectable for tests."""

    capabilities = Capabilities(
        server_side_stops=True, oco=True, stop_limit=True, replace=True, fractional=True
    )

    def __init__(
        self,
        name: str,
        endpoint: str,
        key_id: str,
        secret: str,
        *,
        live: bool = False,
        stream: str | None = None,
        instruments: dict[str, Instrument] | None = None,
        symbols: dict[str, str] | None = None,
        drive_clock: bool = False,
        timeout_s: float = 5.0,
        max_retries: int = 5,
        rate_per_min: int = 200,
        max_clock_skew_s: float = 2.0,
        record: Recorder | None = None,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 8.0,
        sync_timeout_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(record)
        if not key_id or not secret:
            raise VenueAuthError(
                f"venue {name}: no Alpaca keys (set the [venue] key_id_env and secret_env variables)"
            )
        if timeout_s <= 0 or max_retries < 0 or max_clock_skew_s < 0:
            raise ValueError(
                f"venue {name}: timeout_s must be > 0, max_retries >= 0 and max_clock_skew_s >= 0 "
                f"(got {timeout_s}, {max_retries}, {max_clock_skew_s})"
            )
        self.name = name
        self.endpoint = (endpoint or (LIVE_URL if live else PAPER_URL)).rstrip("/")
        self.stream_endpoint = stream or stream_url(self.endpoint)
        self.live = live
        self.instruments = dict(instruments or {})
        self.drive_clock = drive_clock
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.max_clock_skew_s = max_clock_skew_s
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.sync_timeout_s = sync_timeout_s
        self._sleep, self._wall_ns = sleep, wall_clock_ns
        self._secrets = (secret, key_id)
        redaction.register(secret)
        redaction.register(key_id)
        self._keys = (key_id, secret)
        self.limiter = TokenBucket(rate_per_min, clock=clock, sleep=sleep)
        self.currency = "USD"
        self.reconnected = False  # the stream dropped and came back since the runtime last looked
        self.requests = 0
        self.orders_page, self.fills_page = _ORDERS_PAGE, _FILLS_PAGE
        self._to_venue = {s: _default_symbol(s, inst) for s, inst in self.instruments.items()}
        self._to_venue.update(symbols or {})
        self._from_venue = {v: s for s, v in self._to_venue.items()}
        self._client = _Client(key_id, secret, paper=not live, url=self.endpoint, timeout_s=timeout_s)
        # market data lives at data.alpaca.markets (paper and live alike); a local fake serves both
        data_url = DATA_URL if urlsplit(self.endpoint).hostname in _ALPACA_HOSTS else self.endpoint
        self._data = _DataClient(key_id, secret, url=data_url, timeout_s=timeout_s)
        self._admin: httpx.Client | None = None
        self._assets: dict[str, Asset] = {}
        self._client_ids: dict[str, str] = {}  # short client id -> our order id
        self._by_venue: dict[str, str] = {}  # Alpaca order id -> our order id
        self._current: dict[str, str] = {}  # our order id -> its live Alpaca order id
        self._ids_lock = threading.Lock()
        # the stream
        self._stream: _Stream | None = None
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._listens = 0
        self._closing = False
        # driven clock: seqs of the fake's events delivered (all <= _low, plus _seen)
        self._seq = threading.Condition()
        self._low = 0
        self._seen: set[int] = set()

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return redaction.sanitize_url(self.endpoint)

    def connect(self) -> None:
        """Check the keys and the account (GET /v2/account), the clock, the traded assets, then
        start the stream and wait until it listens."""
        account = self._read(self._client.get_account, "reading the account")
        if not isinstance(account, dict):
            raise VenueUnknownState(f"venue {self.name}: malformed answer from GET /v2/account")
        self.currency = str(account.get("currency") or "USD")
        if (
            account.get("trading_blocked")
            or account.get("account_blocked")
            or str(account.get("status", "ACTIVE")).upper() != "ACTIVE"
        ):
            raise VenueRejected(
                f"venue {self.name} at {self.url}: the account cannot trade (status {account.get('status')})"
            )
        skew = self.clock_skew_s()
        if skew > self.max_clock_skew_s:
            raise VenueError(
                f"venue {self.name}: the local clock is {skew:.1f} s behind Alpaca's "
                f"(max {self.max_clock_skew_s:g} s); synchronise it with NTP (e.g. timedatectl set-ntp true)"
            )
        for symbol in self.instruments:
            self.asset(symbol)
        self._start_stream()

    def _start_stream(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._closing = False
        key_id, secret = self._keys
        stream = _Stream(self, key_id, secret, paper=not self.live, url=self.stream_endpoint)
        stream.subscribe_trade_updates(self._on_update)
        self._stream = stream
        self._thread = threading.Thread(target=self._run_stream, name=f"venue-{self.name}-ws", daemon=True)
        self._thread.start()
        if not self._listening.wait(max(self.timeout_s, 2.0) * 2):
            _log.warning(
                f"venue {self.name}: the trade_updates stream is not listening yet; events wait for it"
            )

    def _run_stream(self) -> None:
        stream = self._stream
        if stream is None:
            return
        try:
            stream.run()
        except Exception as exc:  # the thread must not die silently: the runtime reconciles
            _log.warning(
                self._redact(f"venue {self.name}: the trade_updates stream stopped: {type(exc).__name__}")
            )
            self.reconnected = True

    def close(self) -> None:
        """Stop the stream and close the connections (idempotent)."""
        self._closing = True
        if self._stream is not None:
            self._stream.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
        self._thread = None
        self._client.close()
        self._data.close()
        if self._admin is not None:
            self._admin.close()

    def _on_listening(self) -> None:
        self._listens += 1
        if self._listens > 1:
            self.reconnected = True
            _log.warning(f"venue {self.name}: trade_updates stream reconnected; reconciling")
        self._listening.set()

    def _on_stream_down(self) -> None:
        if self._listening.is_set() and not self._closing:
            _log.warning(f"venue {self.name}: trade_updates stream dropped; reconnecting")
        self._listening.clear()

    # -- what venue check shows ------------------------------------------------------------------
    def quote(self, symbol: str) -> Quote | None:
        """The latest NBBO quote of a stock (GET /v2/stocks/quotes/latest on the market-data API), for
        ``[execution.timing]``; None for crypto and for a symbol without a quote."""
        venue_symbol = self.venue_symbol(symbol)
        if "/" in venue_symbol:  # crypto quotes come from another feed: not used for timing
            return None
        request = StockLatestQuoteRequest(symbol_or_symbols=venue_symbol)
        quotes = self._read(lambda: self._data.get_stock_latest_quote(request), f"reading {symbol}'s quote")
        q = quotes.get(venue_symbol) if isinstance(quotes, dict) else None
        if not isinstance(q, dict) or not q.get("bp") or not q.get("ap"):
            return None
        return Quote(float(q["bp"]), float(q["ap"]), _parse_ts(str(q["t"])) if q.get("t") else 0)

    def market_clock(self) -> MarketClock:
        """GET /v2/clock: Alpaca's time, whether the market is open, its next open and close."""
        obj = self._read(self._client.get_clock, "reading the clock")
        try:
            return MarketClock(
                _parse_ts(str(obj["timestamp"])),
                bool(obj["is_open"]),
                _parse_ts(str(obj["next_open"])),
                _parse_ts(str(obj["next_close"])),
            )
        except (KeyError, TypeError, ValueError):
            raise VenueUnknownState(f"venue {self.name}: malformed answer from GET /v2/clock") from None

    def calendar(self, start: date, end: date) -> list[MarketDay]:
        """GET /v2/calendar: the trading days from ``start`` to ``end`` with their open and close."""
        days = self._read(
            lambda: self._client.get_calendar(GetCalendarRequest(start=start, end=end)),
            "reading the calendar",
        )
        if not isinstance(days, list):
            raise VenueUnknownState(f"venue {self.name}: malformed answer from GET /v2/calendar")
        try:
            return [_market_day(d) for d in days]
        except (KeyError, TypeError, ValueError):
            raise VenueUnknownState(f"venue {self.name}: malformed day in GET /v2/calendar") from None

    def clock_skew_s(self) -> float:
        """How far the local clock is behind Alpaca's, in seconds (negative: ahead)."""
        return (self.market_clock().ts - self._wall_ns()) / 1e9

    def latency_ms(self) -> float:
        """One GET /v2/clock round trip, in milliseconds."""
        t0 = time.perf_counter()
        self.market_clock()
        return (time.perf_counter() - t0) * 1000.0

    def describe(self) -> dict[str, Any]:
        """The account for ``hflite venue check``: masked id, currency, cash, buying power, equity."""
        acc = self._read(self._client.get_account, "reading the account")
        if not isinstance(acc, dict):
            raise VenueUnknownState(f"venue {self.name}: malformed answer from GET /v2/account")
        number = str(acc.get("account_number") or acc.get("id") or "")
        return {
            "venue": self.name,
            "endpoint": self.url,
            "account": "…" + number[-4:] if number else "",
            "status": str(acc.get("status", "")),
            "currency": str(acc.get("currency") or "USD"),
            "cash": _float(acc.get("cash")),
            "buying_power": _float(acc.get("buying_power")),
            "equity": _float(acc.get("equity")),
            "live": self.live,
        }

    def asset(self, symbol: str) -> Asset:
        """GET /v2/assets/{symbol} (cached): tradable, fractionable, minimums (VenueNotFound when
        Alpaca does not know it)."""
        known = self._assets.get(symbol)
        if known is not None:
            return known
        venue_symbol = self.venue_symbol(symbol)
        obj = self._read(lambda: self._client.get_asset(venue_symbol), f"reading asset {venue_symbol}")
        if not isinstance(obj, dict):
            raise VenueUnknownState(f"venue {self.name}: malformed answer from GET /v2/assets/{venue_symbol}")
        asset = Asset(
            venue_symbol,
            bool(obj.get("tradable", True)),
            bool(obj.get("fractionable", False)),
            bool(obj.get("shortable", False)),
            float_or_none(obj.get("min_order_size")),
            float_or_none(obj.get("min_trade_increment")),
            float_or_none(obj.get("price_increment")),
        )
        self._assets[symbol] = asset
        return asset

    # -- symbols and ids -------------------------------------------------------------------------
    def venue_symbol(self, symbol: str) -> str:
        return self._to_venue.get(symbol) or _default_symbol(symbol, self.instruments.get(symbol))

    def our_symbol(self, venue_symbol: str) -> str:
        if venue_symbol in self._from_venue:
            return self._from_venue[venue_symbol]
        return venue_symbol.replace("/", "-") if "/" in venue_symbol else venue_symbol

    def _client_id(self, order_id: str) -> str:
        cid = client_order_id(order_id)
        if cid != order_id:
            self._client_ids[cid] = order_id
        return cid

    def order_id(self, client_id: str) -> str:
        """Our order id for a client_order_id seen at Alpaca (a replacement's maps to the original)."""
        base = client_id
        mark = client_id.rfind(_REPLACE_MARK)
        if mark > 0 and len(client_id) - mark == len(_REPLACE_MARK) + 8:
            base = client_id[:mark]
        return self._client_ids.get(base, base)

    def _ours(self, obj: dict[str, Any]) -> str:
        """Our order id for an Alpaca order object ("" when it cannot be told)."""
        vid = str(obj.get("id") or "")
        with self._ids_lock:
            if vid in self._by_venue:
                return self._by_venue[vid]
        cid = str(obj.get("client_order_id") or "")
        return self.order_id(cid) if cid else ""

    def _learn(self, obj: Any, parent: str = "") -> None:
        """Remember which of our orders an Alpaca order (and its legs) is."""
        if not isinstance(obj, dict):
            return
        vid = str(obj.get("id") or "")
        ours = self._ours(obj)
        if parent and (not ours or ours not in self.orders):
            ours = self._sibling(parent) or ours
        if vid and ours:
            with self._ids_lock:
                self._by_venue[vid] = ours
                if str(obj.get("status", "")) != "replaced":
                    self._current[ours] = vid
                elif obj.get("replaced_by"):
                    self._by_venue[str(obj["replaced_by"])] = ours
                    self._current[ours] = str(obj["replaced_by"])
        for leg in obj.get("legs") or []:
            self._learn(leg, parent=ours)

    def _sibling(self, order_id: str) -> str:
        """The other order of ``order_id``'s OCO pair (a stop leg Alpaca named itself)."""
        order = self.orders.get(order_id)
        if order is None or order.oco_group is None:
            return ""
        for other in self.orders.values():
            if other.oco_group == order.oco_group and other.id != order_id and other.symbol == order.symbol:
                return other.id
        return ""

    def adopt(self, order: Order) -> None:
        """Hold an order already at the venue (recovery): its updates map back to it by client id."""
        self._client_id(order.id)
        super().adopt(order)

    # -- sending ---------------------------------------------------------------------------------
    def _send_submit(self, order: Order) -> None:
        try:
            request = self._request_for(order)
        except (ValueError, VenueError) as exc:
            self._deliver_all([order], VenueEventKind.REJECTED, self._redact(_reason(exc)))
            return
        self._post([order], request)

    def submit_trailing_stop(
        self, order: Order, *, trail_percent: float | None = None, trail_price: float | None = None
    ) -> None:
        """Send ``order`` (a stop) as an Alpaca trailing stop trailing by a percent or a price; the
        stop then follows the market at Alpaca (no replace needed)."""
        from hflite.domain.order import OrderEvent

        order.apply(OrderEvent.SUBMIT)
        self.orders[order.id] = order
        self._sent.setdefault(order.id, len(self._sent))
        self.working.setdefault(order.symbol, []).append(order)
        try:
            qty = self._qty(order)
            request = TrailingStopOrderRequest(
                symbol=self.venue_symbol(order.symbol),
                qty=qty,
                side=OrderSide(order.side.value),
                time_in_force=AlpacaTif(order.tif.value),
                client_order_id=self._client_id(order.id),
                trail_percent=trail_percent,
                trail_price=trail_price,
            )
        except (ValueError, VenueError) as exc:
            self._deliver_all([order], VenueEventKind.REJECTED, self._redact(_reason(exc)))
            return
        self._post([order], request)

    def submit_bracket(self, entry: Order, stop: Order, take: Order) -> None:
        """An entry with its stop-loss and take-profit as one Alpaca bracket order: the exits rest at
        Alpaca from the moment the entry fills (the stop leg's client id is Alpaca's own)."""
        from hflite.domain.order import OrderEvent

        for order in (entry, take, stop):
            order.apply(OrderEvent.SUBMIT)
            self.orders[order.id] = order
            self._sent.setdefault(order.id, len(self._sent))
            self.working.setdefault(order.symbol, []).append(order)
        try:
            request = self._request_for(
                entry,
                order_class=OrderClass.BRACKET,
                take_profit=TakeProfitRequest(limit_price=self._price(take, need_price(take))),
                stop_loss=self._stop_loss(stop),
            )
        except (ValueError, VenueError) as exc:
            self._deliver_all([entry, take, stop], VenueEventKind.REJECTED, self._redact(_reason(exc)))
            return
        self._post([entry, take, stop], request, legs=[take, stop])

    def _send_oco(self, orders: list[Order]) -> None:
        pair = oco_pair(orders)
        if pair is None:
            for order in orders:
                self._send_submit(order)
            return
        stop, take = pair
        try:
            request = LimitOrderRequest(
                symbol=self.venue_symbol(take.symbol),
                qty=self._qty(take),
                side=OrderSide(take.side.value),
                time_in_force=AlpacaTif(take.tif.value),
                client_order_id=self._client_id(take.id),
                order_class=OrderClass.OCO,
                take_profit=TakeProfitRequest(limit_price=self._price(take, need_price(take))),
                stop_loss=self._stop_loss(stop),
            )
        except (ValueError, VenueError) as exc:
            self._deliver_all(orders, VenueEventKind.REJECTED, self._redact(_reason(exc)))
            return
        self._post([take, stop], request, legs=[stop])

    def _stop_loss(self, stop: Order) -> StopLossRequest:
        trigger = stop.stop_price if stop.type is OrderType.STOP_LIMIT else stop.price
        if trigger is None or not trigger > 0:
            raise ValueError(f"order {stop.id}: stop without a positive stop price")
        limit = self._price(stop, need_price(stop)) if stop.type is OrderType.STOP_LIMIT else None
        return StopLossRequest(stop_price=self._price(stop, float(trigger)), limit_price=limit)

    def _request_for(self, order: Order, **extra: Any) -> Any:
        """alpaca-py's request object for an order (ValueError when it cannot be sent); ``extra``:
        order_class and legs of a bracket."""
        common: dict[str, Any] = {
            **extra,
            "symbol": self.venue_symbol(order.symbol),
            "qty": self._qty(order),
            "side": OrderSide(order.side.value),
            "time_in_force": AlpacaTif(order.tif.value),
            "client_order_id": self._client_id(order.id),
        }
        if order.type is OrderType.MARKET:
            return MarketOrderRequest(**common)
        if order.type is OrderType.LIMIT:
            return LimitOrderRequest(limit_price=self._price(order, need_price(order)), **common)
        if order.type is OrderType.STOP:
            return StopOrderRequest(stop_price=self._price(order, need_price(order)), **common)
        if order.stop_price is None or not order.stop_price > 0:
            raise ValueError(f"order {order.id}: stop_limit without a positive stop_price")
        return StopLimitOrderRequest(
            limit_price=self._price(order, need_price(order)),
            stop_price=self._price(order, float(order.stop_price)),
            **common,
        )

    def _qty(self, order: Order) -> float:
        """The quantity Alpaca accepts: 9 decimals where fractionable, else whole shares (rounded
        down; ValueError naming why when that leaves nothing)."""
        asset = self.asset(order.symbol)
        if not asset.tradable:
            raise ValueError(f"{asset.symbol} is not tradable at Alpaca")
        step = (
            asset.min_trade_increment
            if asset.min_trade_increment
            else (10.0**-FRACTION_DECIMALS if asset.fractionable else 1.0)
        )
        qty = float(
            (Decimal(repr(order.qty)) / Decimal(repr(step))).to_integral_value(ROUND_DOWN)
            * Decimal(repr(step))
        )
        if qty <= 0:
            whole = "" if asset.fractionable else " (not fractionable: whole shares only)"
            raise ValueError(f"qty {order.qty:g} of {asset.symbol} rounds to 0{whole}")
        if asset.min_order_size and qty < asset.min_order_size:
            raise ValueError(
                f"qty {qty:g} of {asset.symbol} is below Alpaca's minimum {asset.min_order_size:g}"
            )
        if qty != order.qty:
            _log.info(
                f"venue {self.name}: order {order.id} qty {order.qty:g} sent as {qty:g} ({asset.symbol})"
            )
            order.qty = qty
        return qty

    def _price(self, order: Order, price: float) -> float:
        """A price on the instrument's tick, within Alpaca's decimals (2 at or above $1, 4 below)."""
        inst = self.instruments.get(order.symbol)
        if inst is not None:
            price = inst.round_price(price)
        asset = self._assets.get(order.symbol)
        if asset is not None and asset.price_increment:
            return round(round(price / asset.price_increment) * asset.price_increment, 10)
        return round(price, 2 if price >= 1.0 else 4)

    def _post(self, orders: list[Order], request: Any, legs: list[Order] | None = None) -> None:
        """POST /v2/orders and deliver what it tells: ACCEPTED, REJECTED or UNKNOWN per order."""
        try:
            obj = self._call(lambda: self._client.submit_order(request), idempotent=False)
        except _Failure as f:
            if f.kind == "lost" or f.kind == "malformed":
                self._deliver_all(orders, VenueEventKind.UNKNOWN, f"submit: {f.reason}")
            elif f.kind == "http" and f.code == _DUPLICATE_CODE:
                for order in orders:
                    self._recover_duplicate(order)
            else:  # refused to the end, unreachable, or a final 4xx: not placed
                self._deliver_all(orders, VenueEventKind.REJECTED, f.reason)
            return
        if not isinstance(obj, dict):
            self._deliver_all(orders, VenueEventKind.UNKNOWN, "submit: malformed answer")
            return
        self._learn(obj)
        for leg_obj, leg in zip(obj.get("legs") or [], legs or [], strict=False):
            if isinstance(leg_obj, dict) and leg_obj.get("id"):
                with self._ids_lock:
                    self._by_venue[str(leg_obj["id"])] = leg.id
                    self._current[leg.id] = str(leg_obj["id"])
        ts = alpaca_order_ts(obj, _parse_ts)
        if str(obj.get("status", "")) == "rejected":
            self._deliver_all(orders, VenueEventKind.REJECTED, "rejected by Alpaca", ts)
        else:
            self._deliver_all(orders, VenueEventKind.ACCEPTED, "", ts)

    def _recover_duplicate(self, order: Order) -> None:
        """Alpaca already holds this client id (an earlier send got through): take its state."""
        obj = self._lookup(order.id)
        if obj is None:
            self._deliver_all([order], VenueEventKind.UNKNOWN, "duplicate client_order_id but lookup failed")
            return
        ts = alpaca_order_ts(obj, _parse_ts)
        status = str(obj.get("status", ""))
        if status == "rejected":
            self._deliver_all([order], VenueEventKind.REJECTED, "rejected by Alpaca", ts)
            return
        self._deliver_all([order], VenueEventKind.ACCEPTED, "", ts)
        closing = {"canceled": VenueEventKind.CANCELLED, "expired": VenueEventKind.EXPIRED}
        if status in closing:
            self._deliver_all([order], closing[status], f"{status} at Alpaca", ts)

    def _lookup(self, order_id: str) -> dict[str, Any] | None:
        """GET our order by client id, following replacements to the live one (None: unknown)."""
        cid = self._client_id(order_id)
        try:
            obj = self._call(lambda: self._client.get_order_by_client_id(cid), idempotent=True)
        except _Failure as f:
            if not (f.kind == "http" and f.status == 404):
                _log.warning(self._redact(f"venue {self.name}: lookup of {order_id} failed: {f.reason}"))
            return None
        for _ in range(50):
            if not isinstance(obj, dict):
                return None
            self._learn(obj)
            nxt = obj.get("replaced_by")
            if str(obj.get("status", "")) != "replaced" or not nxt:
                return obj
            try:
                obj = self._call(functools.partial(self._client.get_order_by_id, str(nxt)), idempotent=True)
            except _Failure:
                return obj
        return obj if isinstance(obj, dict) else None

    def _venue_id(self, order_id: str) -> str | None:
        with self._ids_lock:
            known = self._current.get(order_id)
        if known is not None:
            return known
        obj = self._lookup(order_id)
        return str(obj["id"]) if obj is not None and obj.get("id") else None

    def _send_cancel(self, order: Order) -> None:
        vid = self._venue_id(order.id)
        if vid is None:
            return  # Alpaca never got it: the UNKNOWN path reconciles it
        try:
            self._call(lambda: self._client.cancel_order_by_id(vid), idempotent=True)
        except _Failure as f:
            if f.kind == "http" and f.status in (404, 422):
                return  # closed or gone already: its final state arrives as an update
            _log.warning(self._redact(f"venue {self.name}: cancel of {order.id} failed: {f.reason}"))

    def cancel_venue_order(self, venue_order_id: str) -> None:
        """Cancel an order by Alpaca's id (one we did not place, that a human accepted to cancel)."""
        try:
            self._call(lambda: self._client.cancel_order_by_id(venue_order_id), idempotent=True)
        except _Failure as f:
            if f.kind == "http" and f.status in (404, 422):
                return
            raise self._error(f, f"cancelling venue order {venue_order_id}") from None

    def _send_replace(self, order: Order, price: float) -> None:
        field = "stop_price" if order.type is OrderType.STOP else "limit_price"
        self._replace(order, {field: self._price(order, price)}, price=self._price(order, price))

    def _send_resize(self, order: Order, qty: float) -> None:
        """A new total quantity (Alpaca replaces whole-share quantities only)."""
        whole = float(int(qty))
        if whole != qty or whole <= order.filled_qty:
            _log.warning(
                f"venue {self.name}: resize of {order.id} to {qty:g} not sent "
                "(Alpaca replaces whole shares only)"
            )
            return
        self._replace(order, {"qty": int(whole)}, qty=whole)

    def _replace(self, order: Order, fields: dict[str, Any], *, price: float = 0.0, qty: float = 0.0) -> None:
        """PATCH the live Alpaca order of ``order``: Alpaca answers with a new order, which carries a
        client id derived from ours and maps back to ``order``; REPLACED is delivered on success."""
        vid = self._venue_id(order.id)
        if vid is None:
            return
        digest = hashlib.sha256(f"{vid}|{sorted(fields.items())}".encode()).hexdigest()[:8]
        new_cid = f"{self._client_id(order.id)}{_REPLACE_MARK}{digest}"
        try:
            request = ReplaceOrderRequest(client_order_id=new_cid, **fields)
        except (ValidationError, ValueError) as exc:
            _log.warning(self._redact(f"venue {self.name}: replace of {order.id} not sent: {_reason(exc)}"))
            return
        try:
            obj = self._call(lambda: self._client.replace_order_by_id(vid, request), idempotent=False)
        except _Failure as f:
            if f.kind == "http" and f.code == _DUPLICATE_CODE:  # done before a restart
                obj = self._lookup(order.id)
            elif f.kind == "http" and f.status in (404, 422):
                _log.info(self._redact(f"venue {self.name}: replace of {order.id} refused: {f.reason}"))
                return
            else:
                _log.warning(self._redact(f"venue {self.name}: replace of {order.id} failed: {f.reason}"))
                return
        if not isinstance(obj, dict):
            return
        new_vid = str(obj.get("id") or "")
        if new_vid:
            with self._ids_lock:
                self._by_venue[vid] = order.id
                self._by_venue[new_vid] = order.id
                self._current[order.id] = new_vid
        ts = alpaca_order_ts(obj, _parse_ts) or self._wall_ns()
        if qty:
            eid = f"{order.id}:resized:{num(qty)}"
            self.deliver(
                [VenueEvent(VenueEventKind.REPLACED, order.id, ts, eid, qty=qty, symbol=order.symbol)]
            )
        else:
            eid = f"{order.id}:replaced:{num(price)}"
            self.deliver(
                [VenueEvent(VenueEventKind.REPLACED, order.id, ts, eid, price=price, symbol=order.symbol)]
            )

    # -- the trade_updates stream ----------------------------------------------------------------
    async def _on_update(self, msg: Any) -> None:
        """One trade_updates message (raw: ``{"stream": "trade_updates", "data": {...}}``)."""
        data = msg.get("data") if isinstance(msg, dict) else None
        if not isinstance(data, dict):
            _log.warning(f"venue {self.name}: malformed trade update skipped")
            return
        self._take(data)

    def _take(self, data: dict[str, Any]) -> None:
        """Deliver one trade update once (by the fake's seq when it has one) and wake ``sync``."""
        seq = _seq_of(data)
        with self._seq:
            if seq and (seq <= self._low or seq in self._seen):
                return
            event = self._event_from_update(data)
            if event is not None:
                self.deliver([event._replace(seq=seq)])
            if seq:
                self._seen.add(seq)
                while self._low + 1 in self._seen:
                    self._low += 1
                    self._seen.discard(self._low)
            self._seq.notify_all()

    def _event_from_update(self, update: dict[str, Any]) -> VenueEvent | None:
        """A trade update as a VenueEvent (None for kinds the engine does not need)."""
        obj = update.get("order")
        if not isinstance(obj, dict):
            _log.warning(f"venue {self.name}: trade update without an order skipped")
            return None
        kind = str(update.get("event", ""))
        if kind == "replaced" and obj.get("replaced_by"):
            self._learn(obj)
        else:
            self._learn(obj)
        oid = self._ours(obj) or str(obj.get("id", ""))
        symbol = self.our_symbol(str(obj.get("symbol", "")))
        try:
            ts = _parse_ts(str(update.get("timestamp") or obj.get("updated_at")))
        except ValueError:
            ts = self._wall_ns()
        reason = str(update.get("reason") or "")
        try:
            if kind in ("new", "accepted", "pending_new"):
                return VenueEvent(VenueEventKind.ACCEPTED, oid, ts, f"{oid}:accepted", symbol=symbol)
            if kind in ("fill", "partial_fill"):
                exec_id = update.get("execution_id") or f"{obj.get('id')}:{kind}:{update.get('timestamp')}"
                return VenueEvent(
                    VenueEventKind.FILLED, oid, ts, str(exec_id), qty=float(update["qty"]),
                    price=float(update["price"]), fee=float(update.get("commission") or 0.0), symbol=symbol,
                )  # fmt: skip
            if kind == "canceled":
                return VenueEvent(
                    VenueEventKind.CANCELLED,
                    oid,
                    ts,
                    f"{oid}:canceled",
                    reason=reason or "canceled at Alpaca",
                    symbol=symbol,
                )
            if kind in ("expired", "done_for_day"):
                return VenueEvent(
                    VenueEventKind.EXPIRED,
                    oid,
                    ts,
                    f"{oid}:expired",
                    reason=reason or f"{kind} at Alpaca",
                    symbol=symbol,
                )
            if kind == "rejected":
                return VenueEvent(
                    VenueEventKind.REJECTED,
                    oid,
                    ts,
                    f"{oid}:rejected",
                    reason=reason or "rejected by Alpaca",
                    symbol=symbol,
                )
            if kind == "replaced":
                return self._replaced_event(oid, ts, update, obj, symbol)
        except (KeyError, TypeError, ValueError):
            _log.warning(f"venue {self.name}: malformed {kind} update for {oid} skipped")
        return None

    def _replaced_event(
        self, oid: str, ts: int, update: dict[str, Any], obj: dict[str, Any], symbol: str
    ) -> VenueEvent | None:
        """REPLACED from a ``replaced`` update: the new price (or quantity) of the replacement order."""
        if update.get("qty") is not None and update.get("price") is None:
            qty = float(update["qty"])
            return VenueEvent(
                VenueEventKind.REPLACED, oid, ts, f"{oid}:resized:{num(qty)}", qty=qty, symbol=symbol
            )
        raw = update.get("price") or obj.get("stop_price" if obj.get("type") == "stop" else "limit_price")
        if raw is None:
            return None
        price = float(raw)
        return VenueEvent(
            VenueEventKind.REPLACED, oid, ts, f"{oid}:replaced:{num(price)}", price=price, symbol=symbol
        )

    # -- the driven clock (the local fake only) --------------------------------------------------
    def _admin_client(self) -> httpx.Client:
        if self._admin is None:
            key_id, secret = self._keys
            headers = {"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret}
            self._admin = httpx.Client(
                base_url=self.endpoint, headers=headers, timeout=httpx.Timeout(max(self.timeout_s, 5.0) * 6)
            )
        return self._admin

    def _admin_json(self, method: str, path: str, what: str, **kw: Any) -> Any:
        try:
            resp = self._admin_client().request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise VenueUnavailable(f"venue {self.name}: {what} failed ({type(exc).__name__})") from None
        if resp.status_code != 200:
            raise VenueError(f"venue {self.name}: {what} failed (HTTP {resp.status_code})")
        try:
            return resp.json()
        except ValueError:
            raise VenueUnknownState(f"venue {self.name}: malformed answer to {what}") from None

    def sync(self, ts: int) -> None:
        """With ``drive_clock``: move the fake's market to bar-time ``ts`` and return once every trade
        update up to the move's last event is delivered. Without it: nothing."""
        if not self.drive_clock:
            return
        listening_before = self._listening.is_set()
        listens = self._listens
        answer = self._admin_json("POST", "/admin/clock", "moving the clock", json={"ts": fmt_ts(ts)})
        try:
            last = int(answer["last_event_id"])
            before = int(answer.get("previous_event_id", last))
        except (KeyError, TypeError, ValueError):
            raise VenueUnknownState(f"venue {self.name}: malformed answer from POST /admin/clock") from None
        self.horizon = last
        if listening_before and last > before:
            # caused by this move while the stream listened: they come on the stream
            with self._seq:
                self._seq.wait_for(
                    lambda: (
                        self._listens != listens
                        or all(s <= self._low or s in self._seen for s in range(before + 1, last + 1))
                    ),
                    timeout=self.sync_timeout_s,
                )
        self._fill_gaps(last)

    def _fill_gaps(self, until: int) -> None:
        """Read the updates up to ``until`` the stream did not bring from the fake's event log."""
        with self._seq:
            if self._low >= until:
                return
            since = self._low
        page = self._admin_json(
            "GET",
            "/admin/events",
            "reading missed trade updates",
            params={"since_id": since, "until_id": until},
        )
        if not isinstance(page, list):
            raise VenueUnknownState(f"venue {self.name}: malformed answer from GET /admin/events")
        for item in page:
            data = item.get("data") if isinstance(item, dict) else None
            if isinstance(data, dict):
                self._take(data)
        with self._seq:
            if self._low < until:
                raise VenueUnknownState(
                    f"venue {self.name}: trade updates up to {until} did not arrive (have {self._low})"
                )

    # -- reconciliation ----------------------------------------------------------------------------
    def snapshot(self, order_ids: Iterable[str], since: str | None = None) -> VenueSnapshot:
        """Alpaca's state for reconciliation: cash, positions, every open order, the orders asked
        for (by our id, the live order of a replaced chain) and the FILL activities after ``since``."""
        wanted = list(dict.fromkeys(order_ids))
        for oid in wanted:
            self._client_id(oid)
        clock = self.market_clock()
        account = self._read(self._client.get_account, "reading the account")
        positions = self._read(self._client.get_all_positions, "reading positions")
        objs: dict[str, dict[str, Any]] = {}
        self._list_orders(QueryOrderStatus.OPEN, objs, set())
        missing = self._missing(wanted, objs)
        if missing:
            self._list_orders(QueryOrderStatus.CLOSED, objs, missing)
            missing = self._missing(wanted, objs)
        for oid in missing:
            obj = self._lookup(oid)
            if obj is not None:
                for o in flatten_legs(obj):
                    objs[str(o.get("id"))] = o
        asked = set(wanted)
        orders: dict[str, VenueOrder] = {}
        for o in objs.values():
            if str(o.get("status", "")) == "replaced":
                continue  # its replacement stands for it
            vo = self._venue_order(o)
            if vo.order_id in asked or vo.status in OPEN:
                orders[vo.order_id or vo.venue_order_id] = vo
        fills = self._fills(since)
        try:
            cash = {str(account.get("currency") or self.currency): float(account["cash"])}
            pos = {p.symbol: p for p in (self._position(p) for p in positions)}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise VenueUnknownState(f"venue {self.name}: malformed account or positions answer") from None
        return VenueSnapshot(clock.ts, cash, pos, orders, fills, str(self._low))

    def _missing(self, wanted: list[str], objs: dict[str, dict[str, Any]]) -> set[str]:
        have = {self._ours(o) for o in objs.values()}
        return {oid for oid in wanted if oid not in have}

    def _list_orders(
        self, status: QueryOrderStatus, objs: dict[str, dict[str, Any]], until_found: set[str]
    ) -> None:
        """Page through GET /v2/orders ascending by created_at, nested (legs inside their parent)."""
        after: datetime | None = None
        for _ in range(_MAX_PAGES):
            flt = GetOrdersRequest(
                status=status, limit=self.orders_page, direction="asc", nested=True, after=after
            )
            page = self._read(
                functools.partial(self._client.get_orders, flt), f"listing {status.value} orders"
            )
            if not isinstance(page, list):
                raise VenueUnknownState(
                    f"venue {self.name}: malformed answer from GET /v2/orders (not a list)"
                )
            new = 0
            for top in page:
                if not isinstance(top, dict):
                    raise VenueUnknownState(f"venue {self.name}: malformed order in GET /v2/orders")
                self._learn(top)
                for o in flatten_legs(top):
                    key = str(o.get("id"))
                    new += key not in objs
                    objs[key] = o
            if until_found and not self._missing(list(until_found), objs):
                return
            if len(page) < self.orders_page or not new:
                return
            try:  # ``after`` is exclusive: step back a microsecond, duplicates are merged by id
                after = utc(_parse_ts(str(page[-1]["created_at"])) - 1_000)
            except (KeyError, ValueError):
                raise VenueUnknownState(
                    f"venue {self.name}: malformed created_at in GET /v2/orders"
                ) from None

    def _fills(self, since: str | None) -> list[VenueFill]:
        """GET /v2/account/activities/FILL after ``since`` (RFC 3339 or ns), every page."""
        params: dict[str, Any] = {"direction": "asc", "page_size": self.fills_page}
        if since:
            params["after"] = fmt_ts(int(since)) if since.isdigit() else since
        fills: list[VenueFill] = []
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            fetch = functools.partial(self._client.get, "/account/activities/FILL", dict(params))
            page = self._read(fetch, "listing fills")
            if not isinstance(page, list):
                raise VenueUnknownState(
                    f"venue {self.name}: malformed answer from GET activities (not a list)"
                )
            for act in page:
                act_id = str(act.get("id", "")) if isinstance(act, dict) else ""
                if not act_id or act_id in seen:
                    continue
                seen.add(act_id)
                fills.append(self._venue_fill(act))
            if len(page) < self.fills_page or not page:
                break
            params["page_token"] = str(page[-1]["id"])
        return fills

    def _venue_fill(self, act: dict[str, Any]) -> VenueFill:
        try:
            vid = str(act["order_id"])
            with self._ids_lock:
                ours = self._by_venue.get(vid)
            if ours is None:
                ours = self._client_of(vid)
            return VenueFill(
                str(act["id"]).split("::", 1)[-1],
                ours,
                self.our_symbol(str(act["symbol"])),
                Side(str(act["side"]).lower().replace("sell_short", "sell")),
                float(act["qty"]),
                float(act["price"]),
                float(act.get("commission") or 0.0),
                _parse_ts(str(act["transaction_time"])),
            )
        except (KeyError, TypeError, ValueError):
            raise VenueUnknownState(
                f"venue {self.name}: malformed FILL activity {act.get('id', '?')}"
            ) from None

    def _client_of(self, venue_id: str) -> str:
        """Our order id of an Alpaca order seen only in a fill (its Alpaca id when not ours)."""
        try:
            obj = self._call(lambda: self._client.get_order_by_id(venue_id), idempotent=True)
        except _Failure:
            return venue_id
        if not isinstance(obj, dict):
            return venue_id
        self._learn(obj)
        return self._ours(obj) or venue_id

    def _venue_order(self, o: dict[str, Any]) -> VenueOrder:
        try:
            kind = str(o.get("type") or o.get("order_type") or "market")
            limit, stop = float_or_none(o.get("limit_price")), float_or_none(o.get("stop_price"))
            if kind == "stop_limit":
                otype, price, trigger = OrderType.STOP_LIMIT, limit, stop
            elif kind == "trailing_stop":
                otype, price, trigger = OrderType.STOP, stop, None
            else:
                otype = OrderType(kind)
                price, trigger = (stop if otype is OrderType.STOP else limit), None
            filled = float(o.get("filled_qty") or 0.0)
            return VenueOrder(
                self._ours(o),
                str(o["id"]),
                self.our_symbol(str(o["symbol"])),
                Side(str(o["side"]).lower()),
                otype,
                float(o["qty"]),
                filled,
                float(o.get("filled_avg_price") or 0.0),
                alpaca_status(str(o.get("status", "")), filled, replaced_is_open=False),
                price,
                trigger,
                _parse_ts(str(o["created_at"])) if o.get("created_at") else 0,
            )
        except (KeyError, TypeError, ValueError):
            raise VenueUnknownState(f"venue {self.name}: malformed order object {o.get('id', '?')}") from None

    def _position(self, p: dict[str, Any]) -> VenuePosition:
        qty = float(p["qty"])
        if str(p.get("side", "")).lower() == "short" and qty > 0:
            qty = -qty
        return VenuePosition(self.our_symbol(str(p["symbol"])), qty, float(p.get("avg_entry_price") or 0.0))

    # -- requests --------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], Any], *, idempotent: bool) -> Any:
        """One logical request through alpaca-py: retried on 429 and when nothing was sent, and on
        timeouts, 5xx and drops only when ``idempotent``; raises the last ``_Failure``."""

        def once() -> Any:
            self.limiter.acquire()
            self.requests += 1
            return _translate(fn, self.timeout_s)

        return with_retries(
            once,
            _Failure,
            idempotent=idempotent,
            attempts=1 + self.max_retries,
            backoff=(self.backoff_base_s, self.backoff_max_s),
            sleep=self._sleep,
            redact=self._redact,
        )

    def _read(self, fn: Callable[[], Any], what: str) -> Any:
        """An idempotent read, its failure as our VenueError."""
        try:
            return self._call(fn, idempotent=True)
        except _Failure as f:
            raise self._error(f, what) from None

    def _error(self, f: _Failure, what: str) -> VenueError:
        """The one-line domain error for a failed request."""
        where = f"venue {self.name}"
        if f.kind == "http" and f.status in (401, 403) and f.code != 40310000:
            return VenueAuthError(f"{where} at {self.url} rejected the keys (HTTP {f.status})")
        if f.kind == "refused":
            return VenueRateLimited(f"{where}: {what} failed: {f.reason}", f.retry_after)
        if f.kind == "unreachable":
            return VenueUnavailable(self._redact(f"cannot reach {where} at {self.url}: {f.reason}"))
        if f.kind == "lost":
            return VenueUnavailable(self._redact(f"{where}: {what} failed: {f.reason}"))
        if f.kind == "malformed":
            return VenueUnknownState(self._redact(f"{where}: {what} failed: {f.reason}"))
        if f.status == 404:
            return VenueNotFound(self._redact(f"{where}: {what} failed: {f.reason}"))
        return VenueRejected(self._redact(f"{where}: {what} failed: {f.reason}"), f.reason)

    def _redact(self, text: str) -> str:
        return redact_secrets(text, self._secrets)

    def _deliver_all(
        self, orders: list[Order], kind: VenueEventKind, reason: str, ts: int | None = None
    ) -> None:
        self.deliver(ack_events(orders, kind, reason, ts if ts is not None else self._wall_ns()))


def from_spec(spec: VenueSpec) -> AlpacaVenue:
    """The ``alpaca`` kind: paper by default, live with ``live``; ``endpoint`` overrides (the fake)."""
    return AlpacaVenue(
        spec.kind,
        spec.endpoint,
        spec.key_id,
        spec.secret,
        live=spec.live,
        instruments=spec.instruments,
        symbols=spec.symbols,
        drive_clock=spec.drive_clock,
        timeout_s=spec.timeout_s,
        max_retries=spec.max_retries,
        rate_per_min=spec.rate_per_min,
        max_clock_skew_s=spec.max_clock_skew_s,
    )


# -- translation of alpaca-py / requests failures ------------------------------------------------
def _translate(fn: Callable[[], Any], timeout_s: float) -> Any:
    """Run one alpaca-py call; every failure becomes a classified ``_Failure``."""
    try:
        return fn()
    except APIError as exc:
        status = exc.status_code or 0
        message, code = _api_message(exc)
        detail = f"HTTP {status}" + (f": {message}" if message else "")
        if status == 429:
            raise _Failure("refused", detail, 429, retry_after(exc.response)) from None
        if status >= 500:
            raise _Failure("lost", detail, status) from None
        raise _Failure("http", message or detail, status, code=code) from None
    except requests.exceptions.JSONDecodeError:
        raise _Failure("malformed", "malformed answer (unexpected payload: not JSON)") from None
    except requests.exceptions.ConnectTimeout:
        raise _Failure("unreachable", f"connect timed out after {timeout_s:g} s") from None
    except requests.exceptions.Timeout:
        raise _Failure("lost", f"no answer within {timeout_s:g} s") from None
    except requests.exceptions.ConnectionError as exc:
        if _never_sent(exc):
            raise _Failure("unreachable", "connection refused") from None
        raise _Failure("lost", "connection dropped") from None
    except requests.exceptions.RequestException as exc:
        raise _Failure("lost", f"transport error ({type(exc).__name__})") from None
    except (ValueError, TypeError) as exc:  # the answer is not JSON, or not the documented shape
        raise _Failure("malformed", f"malformed answer (unexpected payload: {type(exc).__name__})") from None


def _never_sent(exc: requests.exceptions.ConnectionError) -> bool:
    """A connection that was never made (refused, no route, unknown host): nothing was sent."""
    import urllib3.exceptions as u3

    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", inner)
    return isinstance(reason, u3.NewConnectionError | u3.NameResolutionError | ConnectionRefusedError)


def _api_message(exc: APIError) -> tuple[str, int]:
    """Alpaca's ``{"code", "message"}`` of an error answer, one line, cut."""
    text = str(exc)
    try:
        body = json.loads(text)
    except ValueError:
        return " ".join(text[:200].split()), 0
    if isinstance(body, dict):
        code = body.get("code")
        return " ".join(str(body.get("message", "")).split())[:200], int(code) if isinstance(code, int) else 0
    return " ".join(text[:200].split()), 0


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(str(e.get("msg", "")) for e in exc.errors())[:200]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# -- payload helpers -------------------------------------------------------------------------------
def _default_symbol(symbol: str, inst: Instrument | None) -> str:
    """Alpaca's name for our symbol: crypto as BASE/QUOTE, stocks and ETFs as they are."""
    if inst is not None and inst.asset_class is AssetClass.CRYPTO:
        base = inst.base_currency or symbol.split("-")[0]
        return f"{base}/{inst.currency}"
    if "-" in symbol and symbol.split("-")[-1] in ("USD", "USDT", "USDC", "BTC"):
        return symbol.replace("-", "/")
    return symbol


def _seq_of(data: dict[str, Any]) -> int:
    """The fake's event sequence number carried as ``event_id`` (0 for Alpaca's own ids)."""
    raw = data.get("event_id")
    text = str(raw) if raw is not None else ""
    return int(text) if text.isdigit() else 0


def _parse_ts(text: str) -> int:
    """RFC 3339 (any fraction, any offset) as ns since the epoch, UTC."""
    import pandas as pd

    try:
        t = pd.Timestamp(text.strip())
    except (ValueError, TypeError):
        raise ValueError(f"not an RFC 3339 time: {text[:40]!r}") from None
    if t is pd.NaT:
        raise ValueError(f"not an RFC 3339 time: {text[:40]!r}")
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    return int(t.as_unit("ns").value)


def _market_day(d: dict[str, Any]) -> MarketDay:
    day = date.fromisoformat(str(d["date"]))

    def at(hhmm: str) -> int:
        digits = hhmm.replace(":", "")
        h, m = int(digits[:2]), int(digits[2:4])
        local = datetime(day.year, day.month, day.day, h, m, tzinfo=_NY)
        return int(local.timestamp()) * 1_000_000_000

    return MarketDay(day, at(str(d["open"])), at(str(d["close"])))


def _float(value: Any) -> float:
    v = float_or_none(value)
    return v if v is not None else 0.0
