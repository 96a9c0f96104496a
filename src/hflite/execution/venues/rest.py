"""A broker across HTTP: the Alpaca Trading API v2 dialect of /work/spec/broker-protocol.md.

``RestBrokerVenue`` is an ``EventVenue``: requests go out on a sync ``httpx`` client, what the broker
says comes back as ``VenueEvent``s, from the request's answer (accepted, rejected, unknown) and from
the trade-event stream (Server-Sent Events, read by a daemon thread with its own client).

Errors are translated here and nowhere else: a send never raises, it delivers an event (REJECTED when
the broker refused, UNKNOWN when the outcome is not known: reconciliation settles it); ``connect``,
``snapshot`` and ``sync`` raise ``VenueError`` (``VenueAuthError`` for bad keys) with a one-line
message that never holds a key. Retries use exponential backoff with jitter, a ``Retry-After`` header
wins; an order submission is retried only when the broker certainly did not process it (429,
connection refused). Every request, the stream's included, takes a token from one bucket per venue.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import httpx

from hflite import redact as redaction
from hflite.domain.instrument import Instrument
from hflite.domain.order import OPEN as _OPEN
from hflite.domain.order import Order, OrderType, Side
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
    MAX_CLIENT_ID_CHARS,
    Failure,
    TokenBucket,
    ack_events,
    alpaca_order_ts,
    alpaca_status,
    client_order_id,
    flatten_legs,
    float_or_none,
    fmt_ts,
    int_or_none,
    json_or_none,
    mask_account,
    need_price,
    net_reason,
    num,
    oco_pair,
    parse_rfc3339,
    redact_secrets,
    retry_after,
    with_retries,
)
from hflite.execution.venues.registry import VenueSpec

__all__ = [
    "KEY_ID_ENV",
    "MAX_CLIENT_ID_CHARS",
    "SECRET_ENV",
    "RestBrokerVenue",
    "TokenBucket",
    "client_order_id",
    "mask_account",
]

_log = logging.getLogger(__name__)

#: Where ``from_env`` reads the keys (the fake broker's defaults are "fake-key" / "fake-secret").
KEY_ID_ENV = "HFLITE_BROKER_KEY_ID"
SECRET_ENV = "HFLITE_BROKER_SECRET"  # noqa: S105 - a variable name, not a secret

_ORDERS_PAGE = 500  # Alpaca's maximum ``limit`` for GET /v2/orders
_FILLS_PAGE = 100  # Alpaca's maximum ``page_size`` for activities
_MAX_PAGES = 200  # a guard against a broker that paginates forever
_STREAM_PATH = "/v2/events/trades"
_STOP_LIMIT: OrderType | None = getattr(OrderType, "STOP_LIMIT", None)


class RestBrokerVenue(EventVenue):
    """The broker venue port over the Alpaca v2 dialect (orders, activities, SSE trade events).

    Keys are sent as ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` and registered with
    ``hflite.redact``. ``drive_clock``: ``sync`` moves the fake broker's market clock to the bar-time
    (POST /admin/clock) and waits for the events it caused. ``instruments`` (optional) round limit and
    stop prices to the tick before they are sent. ``sleep``, ``clock`` and ``wall_clock_ns`` are
    injectable for tests; ``start_seq`` resumes the trade-event stream after a known cursor."""

    capabilities = Capabilities(
        server_side_stops=True, oco=True, stop_limit=True, replace=True, fractional=True
    )

    def __init__(
        self,
        name: str,
        base_url: str,
        key_id: str,
        secret: str,
        *,
        instruments: dict[str, Instrument] | None = None,
        drive_clock: bool = False,
        timeout_s: float = 5.0,
        max_retries: int = 5,
        rate_per_min: int = 200,
        max_clock_skew_s: float = 2.0,
        record: Recorder | None = None,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 8.0,
        sync_timeout_s: float = 5.0,
        stream_idle_s: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        start_seq: int = 0,
    ) -> None:
        super().__init__(record)
        if not key_id or not secret:
            raise VenueAuthError(f"venue {name}: no keys (set {KEY_ID_ENV} and {SECRET_ENV})")
        if timeout_s <= 0 or max_retries < 0 or max_clock_skew_s < 0:
            raise ValueError(
                f"venue {name}: timeout_s must be > 0, max_retries >= 0 and max_clock_skew_s >= 0 "
                f"(got {timeout_s}, {max_retries}, {max_clock_skew_s})"
            )
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.instruments = dict(instruments or {})
        self.drive_clock = drive_clock
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_clock_skew_s = max_clock_skew_s
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.sync_timeout_s, self.stream_idle_s = sync_timeout_s, stream_idle_s
        self._sleep, self._wall_ns = sleep, wall_clock_ns
        self._secrets = (secret, key_id)
        redaction.register(secret)
        redaction.register(key_id)
        self.limiter = TokenBucket(rate_per_min, clock=clock, sleep=sleep)
        self.reconnected = False  # the stream dropped since the runtime last reset it: reconcile
        self.requests = 0  # HTTP requests sent (tests, diagnostics)
        self.currency = "USD"
        headers = {"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret}
        self._headers = headers
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout_s))
        self._client_ids: dict[str, str] = {}  # short client id -> our order id
        self._venue_ids: dict[str, str] = {}  # our order id -> broker order id
        self._last_seq = start_seq  # the stream resumes after this seq (a journal's cursor)
        self.orders_page = _ORDERS_PAGE
        self.fills_page = _FILLS_PAGE
        self._seq = threading.Condition()
        self._stop = threading.Event()
        self._stream_up = threading.Event()
        self._stream_resp: httpx.Response | None = None
        self._reader: threading.Thread | None = None

    @classmethod
    def from_env(
        cls, name: str, base_url: str, environ: Mapping[str, str] | None = None, **options: Any
    ) -> RestBrokerVenue:
        """A venue with its keys from ``HFLITE_BROKER_KEY_ID`` / ``HFLITE_BROKER_SECRET`` (``.env``
        works once loaded); VenueAuthError naming the variables when one is missing."""
        env = os.environ if environ is None else environ
        return cls(name, base_url, env.get(KEY_ID_ENV, ""), env.get(SECRET_ENV, ""), **options)

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The broker's address without userinfo or key parameters (for messages)."""
        return redaction.sanitize_url(self.base_url)

    @property
    def cursor(self) -> int:
        """The last trade-event sequence number applied from the stream."""
        return self._last_seq

    def connect(self) -> None:
        """Check the keys (GET /v2/account) and the clock (GET /v2/clock), then start the stream."""
        account = self._get_json("/v2/account", "reading the account")
        self.currency = str(account.get("currency") or "USD")
        if account.get("trading_blocked") or str(account.get("status", "ACTIVE")).upper() != "ACTIVE":
            raise VenueError(
                f"venue {self.name} at {self.url}: the account cannot trade "
                f"(status {account.get('status')}, trading_blocked {account.get('trading_blocked')})"
            )
        self._check_clock()
        if self._reader is None or not self._reader.is_alive():
            self._stop.clear()
            self._reader = threading.Thread(
                target=self._read_stream, name=f"venue-{self.name}-sse", daemon=True
            )
            self._reader.start()

    def quote(self, symbol: str) -> Quote | None:
        """The latest bid/ask (GET /v2/stocks/{symbol}/quotes/latest, Alpaca's market-data shape);
        None when the broker has none for the symbol. For ``[execution.timing]``."""
        try:
            resp = self._call("GET", f"/v2/stocks/{symbol}/quotes/latest", idempotent=True)
        except Failure as f:
            if f.status == 404:
                return None
            raise self._error(f, f"reading the quote of {symbol}") from None
        body = json_or_none(resp)
        q = body.get("quote") if isinstance(body, dict) else None
        bid = float_or_none(q.get("bp")) if isinstance(q, dict) else None
        ask = float_or_none(q.get("ap")) if isinstance(q, dict) else None
        if bid is None or ask is None:
            raise self._malformed(f"quote for {symbol}")
        ts = q.get("t") if isinstance(q, dict) else None
        return Quote(bid, ask, parse_rfc3339(str(ts)) if ts else 0)

    def describe(self) -> dict[str, Any]:
        """The account as ``hflite venue check`` shows it (the account number masked to its last 4)."""
        account = self._get_json("/v2/account", "reading the account")
        if not isinstance(account, dict):
            raise VenueUnknownState(
                f"venue {self.name}: malformed answer from GET /v2/account (not an object)"
            )
        number = str(account.get("account_number") or account.get("id") or "")
        return {
            "account": mask_account(number),
            "status": account.get("status"),
            "currency": account.get("currency"),
            "buying_power": float_or_none(account.get("buying_power")),
            "equity": float_or_none(account.get("equity")),
        }

    def close(self) -> None:
        """Stop the stream reader and close the connections (idempotent)."""
        self._stop.set()
        self._interrupt_stream()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        self._http.close()

    def _check_clock(self) -> None:
        clock = self._get_json("/v2/clock", "reading the clock")
        try:
            broker_ns = parse_rfc3339(str(clock["timestamp"]))
        except (KeyError, ValueError):
            raise VenueError(
                f"venue {self.name}: malformed answer from GET /v2/clock (no timestamp)"
            ) from None
        behind_s = (broker_ns - self._wall_ns()) / 1e9
        if behind_s > self.max_clock_skew_s:
            raise VenueError(
                f"venue {self.name}: the local clock is {behind_s:.1f} s behind the broker's "
                f"(max {self.max_clock_skew_s:g} s); synchronise it with NTP (e.g. timedatectl set-ntp true)"
            )

    # -- sending ---------------------------------------------------------------------------------
    def _send_submit(self, order: Order) -> None:
        try:
            body = self._order_body(order)
        except ValueError as exc:
            self._deliver_all([order], VenueEventKind.REJECTED, str(exc))
            return
        self._post_order([order], body)

    def _send_oco(self, orders: list[Order]) -> None:
        pair = oco_pair(orders)
        if pair is None:
            for order in orders:
                self._send_submit(order)
            return
        stop, take = pair
        try:
            body = self._order_body(take)
            stop_body = self._order_body(stop)
        except ValueError as exc:
            self._deliver_all(orders, VenueEventKind.REJECTED, str(exc))
            return
        stop_loss = {"stop_price": stop_body["stop_price"], "client_order_id": stop_body["client_order_id"]}
        if "limit_price" in stop_body:
            stop_loss["limit_price"] = stop_body["limit_price"]
        body.pop("limit_price")
        body.update(
            order_class="oco",
            take_profit={"limit_price": self._price(take.symbol, need_price(take))},
            stop_loss=stop_loss,
        )
        self._post_order([take, stop], body)

    def _post_order(self, orders: list[Order], body: dict[str, Any]) -> None:
        """POST /v2/orders and deliver what it tells: ACCEPTED, REJECTED or UNKNOWN per order."""
        try:
            resp = self._call("POST", "/v2/orders", json_body=body, idempotent=False)
        except Failure as f:
            if f.kind == "lost":
                self._deliver_all(orders, VenueEventKind.UNKNOWN, f"submit: {f.reason}")
            elif f.kind == "http" and f.status == 422 and _is_duplicate(f):
                for order in orders:
                    self._recover_duplicate(order)
            else:  # refused or unreachable to the end, or a final 4xx: the order was not placed
                self._deliver_all(orders, VenueEventKind.REJECTED, self._redact(f.reason))
            return
        payload = json_or_none(resp)
        for obj in flatten_legs(payload) if isinstance(payload, dict) else []:
            self._learn(obj)
        ts = alpaca_order_ts(payload) if isinstance(payload, dict) else None
        status = str(payload.get("status", "")) if isinstance(payload, dict) else ""
        if status == "rejected":
            self._deliver_all(orders, VenueEventKind.REJECTED, "rejected by the venue", ts)
        else:
            self._deliver_all(orders, VenueEventKind.ACCEPTED, "", ts)

    def _recover_duplicate(self, order: Order) -> None:
        """The broker already holds this client id (an earlier send got through): take its state."""
        obj = self._lookup(order.id)
        if obj is None:
            self._deliver_all([order], VenueEventKind.UNKNOWN, "duplicate client_order_id but lookup failed")
            return
        ts = alpaca_order_ts(obj)
        status = str(obj.get("status", ""))
        closing = {"canceled": VenueEventKind.CANCELLED, "expired": VenueEventKind.EXPIRED}
        if status == "rejected":
            self._deliver_all([order], VenueEventKind.REJECTED, "rejected by the venue", ts)
            return
        self._deliver_all([order], VenueEventKind.ACCEPTED, "", ts)
        if status in closing:
            self._deliver_all([order], closing[status], f"{status} at the venue", ts)

    def _send_cancel(self, order: Order) -> None:
        venue_id = self._venue_id(order.id)
        if venue_id is None:  # a send whose answer never came: the broker may have it
            venue_id = self._lookup_venue_id(order.id)
            if venue_id is None:
                return  # the broker never got it: the UNKNOWN path reconciles it
        try:
            self._call("DELETE", f"/v2/orders/{venue_id}", idempotent=True)
        except Failure as f:
            if f.kind == "http" and f.status in (404, 422):
                return  # already closed or gone: its final state arrives as an event
            _log.warning(self._redact(f"venue {self.name}: cancel of {order.id} failed: {f.reason}"))

    def _lookup_venue_id(self, order_id: str) -> str | None:
        """The broker's id of our order, asked by client order id (None: it does not have it)."""
        try:
            resp = self._call(
                "GET",
                "/v2/orders:by_client_order_id",
                params={"client_order_id": self._client_id(order_id)},
                idempotent=True,
            )
        except Failure:
            return None  # unknown there, or unreachable: reconciliation settles it
        obj = json_or_none(resp)
        if isinstance(obj, dict):
            self._learn(obj)
        return self._venue_id(order_id)

    def _send_replace(self, order: Order, price: float) -> None:
        venue_id = self._venue_id(order.id)
        if venue_id is None:
            return
        field = "stop_price" if order.type is OrderType.STOP else "limit_price"
        text = self._price(order.symbol, price)
        try:
            resp = self._call("PATCH", f"/v2/orders/{venue_id}", json_body={field: text}, idempotent=True)
        except Failure as f:
            if f.kind == "http" and f.status in (404, 422):
                return
            _log.warning(self._redact(f"venue {self.name}: replace of {order.id} failed: {f.reason}"))
            return
        new = float(text)
        ts = alpaca_order_ts(json_or_none(resp)) or self._wall_ns()
        eid = f"{order.id}:replaced:{num(new)}"
        self.deliver([VenueEvent(VenueEventKind.REPLACED, order.id, ts, eid, price=new, symbol=order.symbol)])

    def _send_resize(self, order: Order, qty: float) -> None:
        """PATCH the order's total quantity (a protective stop follows a partly filled position)."""
        venue_id = self._venue_id(order.id)
        if venue_id is None:
            return
        try:
            resp = self._call("PATCH", f"/v2/orders/{venue_id}", json_body={"qty": num(qty)}, idempotent=True)
        except Failure as f:
            if f.kind == "http" and f.status in (404, 422):
                return
            _log.warning(self._redact(f"venue {self.name}: resize of {order.id} failed: {f.reason}"))
            return
        ts = alpaca_order_ts(json_or_none(resp)) or self._wall_ns()
        eid = f"{order.id}:resized:{num(qty)}"
        self.deliver([VenueEvent(VenueEventKind.REPLACED, order.id, ts, eid, qty=qty, symbol=order.symbol)])

    def cancel_venue_order(self, venue_order_id: str) -> None:
        """Cancel an order by the broker's id (one the journal never saw, that a human accepted to
        cancel); one already closed or gone is left alone."""
        try:
            self._call("DELETE", f"/v2/orders/{venue_order_id}", idempotent=True)
        except Failure as f:
            if f.kind == "http" and f.status in (404, 422):
                return
            raise self._error(f, f"cancelling venue order {venue_order_id}") from None

    def _order_body(self, order: Order) -> dict[str, Any]:
        """The POST /v2/orders body of a simple order (ValueError when the order cannot be sent)."""
        body: dict[str, Any] = {
            "symbol": order.symbol,
            "qty": num(order.qty),
            "side": order.side.value,
            "type": order.type.value,
            "time_in_force": order.tif.value,
            "client_order_id": self._client_id(order.id),
        }
        if order.type is OrderType.LIMIT:
            body["limit_price"] = self._price(order.symbol, need_price(order))
        elif order.type is OrderType.STOP:
            body["stop_price"] = self._price(order.symbol, need_price(order))
        elif _STOP_LIMIT is not None and order.type is _STOP_LIMIT:
            trigger = getattr(order, "stop_price", None)
            if trigger is None:
                raise ValueError(f"order {order.id}: stop_limit without a stop_price")
            body["stop_price"] = self._price(order.symbol, float(trigger))
            body["limit_price"] = self._price(order.symbol, need_price(order))
        return body

    def adopt(self, order: Order) -> None:
        """Hold an order already at the venue (recovery): its events map back to it by client id."""
        self._client_id(order.id)
        super().adopt(order)

    # -- ids ---------------------------------------------------------------------------------------
    def _client_id(self, order_id: str) -> str:
        cid = client_order_id(order_id)
        if cid != order_id:
            self._client_ids[cid] = order_id
        return cid

    def order_id(self, client_id: str) -> str:
        """Our order id for a ``client_order_id`` seen at the broker."""
        return self._client_ids.get(client_id, client_id)

    def _venue_id(self, order_id: str) -> str | None:
        known = self._venue_ids.get(order_id)
        if known is not None:
            return known
        obj = self._lookup(order_id)
        return str(obj["id"]) if obj is not None and "id" in obj else None

    def _lookup(self, order_id: str) -> dict[str, Any] | None:
        """GET an order by our id (None when the broker does not know it or cannot say)."""
        params = {"client_order_id": self._client_id(order_id)}
        try:
            resp = self._call("GET", "/v2/orders:by_client_order_id", params=params, idempotent=True)
        except Failure as f:
            if not (f.kind == "http" and f.status == 404):
                _log.warning(self._redact(f"venue {self.name}: lookup of {order_id} failed: {f.reason}"))
            return None
        obj = json_or_none(resp)
        if not isinstance(obj, dict):
            return None
        for o in flatten_legs(obj):
            self._learn(o)
        return obj

    def _learn(self, obj: dict[str, Any]) -> None:
        cid, vid = obj.get("client_order_id"), obj.get("id")
        if cid and vid:
            self._venue_ids[self.order_id(str(cid))] = str(vid)

    # -- the trade-event stream --------------------------------------------------------------------
    def _read_stream(self) -> None:
        """The reader thread: follow the SSE stream from the last seq; reconnect when it drops."""
        failures = 0
        client = httpx.Client(
            base_url=self.base_url,
            headers=self._headers,
            timeout=httpx.Timeout(self.timeout_s, read=self.stream_idle_s),
        )
        with client:
            while not self._stop.is_set():
                reason = "closed by the venue"
                try:
                    self.limiter.acquire()
                    self.requests += 1
                    params = {"since_id": self._last_seq}
                    with client.stream("GET", _STREAM_PATH, params=params) as resp:
                        if resp.status_code != 200:
                            reason = f"HTTP {resp.status_code}"
                        else:
                            self._stream_resp = resp
                            self._stream_up.set()
                            for seq, data in _sse_messages(resp.iter_lines()):
                                self._on_message(seq, data)
                                failures = 0
                except httpx.HTTPError as exc:
                    reason = net_reason(exc, self.stream_idle_s)
                finally:
                    self._stream_up.clear()
                    self._stream_resp = None
                if self._stop.is_set():
                    break
                self.reconnected = True
                _log.warning(
                    self._redact(f"venue {self.name}: event stream dropped ({reason}); reconnecting")
                )
                self._stop.wait(min(5.0, 0.05 * 2**failures))
                failures += 1

    def _interrupt_stream(self) -> None:
        """Wake the reader out of a blocking read (closing alone does not)."""
        resp = self._stream_resp
        if resp is None:
            return
        stream = resp.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _on_message(self, seq: int | None, data: str) -> None:
        """Deliver one trade event (once per seq, in order) and wake ``sync`` waiters."""
        try:
            update = json.loads(data)
        except ValueError:
            _log.warning(f"venue {self.name}: malformed trade event {seq} skipped")
            update = None
        if seq is None and isinstance(update, dict):
            seq = int_or_none(update.get("event_id"))
        with self._seq:
            if seq is not None and seq <= self._last_seq:
                return
            if isinstance(update, dict):
                event = self._event_from_update(update)
                if event is not None:
                    self.deliver([event._replace(seq=seq or 0)])
            if seq is not None:
                self._last_seq = seq
            self._seq.notify_all()

    def _event_from_update(self, update: dict[str, Any]) -> VenueEvent | None:
        """A trade_updates message as a VenueEvent (None for kinds the engine does not need)."""
        obj = update.get("order")
        if not isinstance(obj, dict):
            return None
        self._learn(obj)
        cid = str(obj.get("client_order_id") or "")
        oid = self.order_id(cid) if cid else str(obj.get("id", ""))
        stamp = update.get("timestamp") or update.get("at") or obj.get("updated_at")
        try:
            ts = parse_rfc3339(str(stamp)) if stamp else self._wall_ns()
        except ValueError:
            ts = self._wall_ns()
        symbol = str(obj.get("symbol", ""))
        kind = str(update.get("event", ""))
        reason = str(update.get("reason") or "")
        try:
            if kind in ("new", "accepted", "pending_new"):
                return VenueEvent(VenueEventKind.ACCEPTED, oid, ts, f"{oid}:accepted", symbol=symbol)
            if kind in ("fill", "partial_fill"):
                exec_id = update.get("execution_id") or f"{oid}:fill:{update.get('event_id')}"
                return VenueEvent(
                    VenueEventKind.FILLED,
                    oid,
                    ts,
                    str(exec_id),
                    qty=float(update["qty"]),
                    price=float(update["price"]),
                    fee=float(update.get("commission") or 0.0),
                    symbol=symbol,
                )
            if kind == "canceled":
                why = reason or "canceled at the venue"
                return VenueEvent(
                    VenueEventKind.CANCELLED, oid, ts, f"{oid}:canceled", reason=why, symbol=symbol
                )
            if kind == "expired":
                why = reason or "expired at the venue"
                return VenueEvent(
                    VenueEventKind.EXPIRED, oid, ts, f"{oid}:expired", reason=why, symbol=symbol
                )
            if kind == "rejected":
                why = reason or "rejected by the venue"
                return VenueEvent(
                    VenueEventKind.REJECTED, oid, ts, f"{oid}:rejected", reason=why, symbol=symbol
                )
            if kind == "replaced":
                if update.get("qty") is not None and update.get("price") is None:  # a new quantity
                    qty = float(update["qty"])
                    eid = f"{oid}:resized:{num(qty)}"
                    return VenueEvent(VenueEventKind.REPLACED, oid, ts, eid, qty=qty, symbol=symbol)
                raw = update.get("price") or obj.get(
                    "stop_price" if obj.get("type") == "stop" else "limit_price"
                )
                price = float(raw)  # type: ignore[arg-type]
                eid = f"{oid}:replaced:{num(price)}"
                return VenueEvent(VenueEventKind.REPLACED, oid, ts, eid, price=price, symbol=symbol)
        except (KeyError, TypeError, ValueError):
            _log.warning(f"venue {self.name}: malformed {kind} event for {oid} skipped")
        return None

    # -- reconciliation and clock ------------------------------------------------------------------
    def sync(self, ts: int) -> None:
        """With ``drive_clock``: move the broker's market to bar-time ``ts`` and wait until every
        event that caused has been delivered. Without it: nothing (the stream delivers as it goes)."""
        if not self.drive_clock:
            return
        answer = self._json_call(  # the fake broker's test hook: not the broker's API, not rate limited
            "POST", "/admin/clock", "moving the clock", json_body={"ts": fmt_ts(ts)}, limited=False
        )
        last = int_or_none(answer.get("last_event_id")) if isinstance(answer, dict) else None
        if last is None:
            raise VenueUnknownState(
                f"venue {self.name}: malformed answer from POST /admin/clock (no last_event_id)"
            )
        self.horizon = last
        if self._wait_for(last, self.sync_timeout_s if self._stream_up.is_set() else 0.0):
            return
        self._fetch_events(last)
        if self._last_seq < last:
            raise VenueError(
                f"venue {self.name}: trade events up to {last} did not arrive (have {self._last_seq})"
            )

    def _wait_for(self, seq: int, timeout_s: float) -> bool:
        with self._seq:
            return self._seq.wait_for(lambda: self._last_seq >= seq, timeout=timeout_s)

    def _fetch_events(self, until: int) -> None:
        """The events after our last seq up to ``until``, as finite SSE requests (a venue that cuts
        a response short is asked again from where it stopped, as long as each answer brings more)."""
        while self._last_seq < until:
            before = self._last_seq
            params = {"since_id": self._last_seq, "until_id": until}
            try:
                resp = self._call("GET", _STREAM_PATH, params=params, idempotent=True)
            except Failure as f:
                raise self._error(f, "fetching trade events") from None
            for seq, data in _sse_messages(resp.text.splitlines()):
                self._on_message(seq, data)
            if self._last_seq <= before:
                return

    def snapshot(self, order_ids: Iterable[str], since: str | None = None) -> VenueSnapshot:
        """The broker's state for reconciliation: cash, positions, open orders, the orders asked for
        (by our order id) and every FILL activity after ``since`` (RFC 3339, or ns since the epoch)."""
        wanted = list(dict.fromkeys(order_ids))
        for oid in wanted:
            self._client_id(oid)  # a long id's short form maps back even if it was never sent here
        clock = self._get_json("/v2/clock", "reading the clock")
        account = self._get_json("/v2/account", "reading the account")
        positions = self._get_json("/v2/positions", "reading positions")
        cursor = str(self._last_seq)
        objs: dict[str, dict[str, Any]] = {}  # broker id -> order object
        self._list_orders("open", objs, set())
        missing = self._missing(wanted, objs)
        if missing:
            self._list_orders("closed", objs, missing)
            missing = self._missing(wanted, objs)
        for oid in missing:
            obj = self._lookup(oid)
            if obj is not None:
                for o in flatten_legs(obj):
                    objs[str(o.get("id"))] = o
        orders: dict[str, VenueOrder] = {}
        asked = set(wanted)
        for o in objs.values():
            vo = self._venue_order(o)
            if vo.order_id in asked or vo.status in _OPEN:  # not the other closed orders paged past
                orders[vo.order_id or vo.venue_order_id] = vo
        fills = self._fills(since, objs)
        try:
            ts = parse_rfc3339(str(clock["timestamp"]))
            cash = {str(account.get("currency") or self.currency): float(account["cash"])}
            pos = {p.symbol: p for p in (_position(p) for p in positions)}
        except (KeyError, TypeError, ValueError):
            raise VenueUnknownState(
                f"venue {self.name}: malformed account, clock or positions answer"
            ) from None
        return VenueSnapshot(ts, cash, pos, orders, fills, cursor)

    def _missing(self, wanted: list[str], objs: dict[str, dict[str, Any]]) -> set[str]:
        have = {self.order_id(str(o.get("client_order_id") or "")) for o in objs.values()}
        return {oid for oid in wanted if oid not in have}

    def _list_orders(self, status: str, objs: dict[str, dict[str, Any]], until_found: set[str]) -> None:
        """Page through GET /v2/orders (ascending by created_at); stop early once ``until_found``
        (our order ids) are all seen, when that set is not empty."""
        after: str | None = None
        for _ in range(_MAX_PAGES):
            params: dict[str, Any] = {
                "status": status,
                "limit": self.orders_page,
                "direction": "asc",
                "nested": "true",
            }
            if after is not None:
                params["after"] = after
            page = self._get_json("/v2/orders", f"listing {status} orders", params)
            if not isinstance(page, list):
                raise VenueUnknownState(
                    f"venue {self.name}: malformed answer from GET /v2/orders (not a list)"
                )
            new = 0
            for top in page:
                for o in flatten_legs(top):
                    self._learn(o)
                    key = str(o.get("id"))
                    new += key not in objs
                    objs[key] = o
            if until_found and not self._missing(list(until_found), objs):
                return
            if len(page) < self.orders_page or not new:
                return
            # ``after`` is exclusive: step back a microsecond so orders sharing the boundary
            # timestamp are not skipped (they come again and are deduplicated by id).
            after = fmt_ts(parse_rfc3339(str(page[-1]["created_at"])) - 1_000)

    def _fills(self, since: str | None, objs: dict[str, dict[str, Any]]) -> list[VenueFill]:
        params: dict[str, Any] = {"direction": "asc", "page_size": self.fills_page}
        if since:
            params["after"] = fmt_ts(int(since)) if since.isdigit() else since
        by_venue_id = {vid: oid for oid, vid in self._venue_ids.items()}
        for o in objs.values():
            if o.get("id") and o.get("client_order_id"):
                by_venue_id[str(o["id"])] = self.order_id(str(o["client_order_id"]))
        fills: list[VenueFill] = []
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            page = self._get_json("/v2/account/activities/FILL", "listing fills", params)
            if not isinstance(page, list):
                raise VenueUnknownState(
                    f"venue {self.name}: malformed answer from GET activities (not a list)"
                )
            for act in page:
                act_id = str(act.get("id", ""))
                if act_id in seen:
                    continue
                seen.add(act_id)
                fills.append(self._venue_fill(act, by_venue_id))
            if len(page) < self.fills_page or not page:
                break
            params["page_token"] = str(page[-1]["id"])
        return fills

    def _venue_fill(self, act: dict[str, Any], by_venue_id: dict[str, str]) -> VenueFill:
        try:
            vid = str(act["order_id"])
            if vid not in by_venue_id:
                by_venue_id[vid] = self._client_of(vid)
            exec_id = str(act["id"]).split("::", 1)[-1]
            return VenueFill(
                exec_id,
                by_venue_id[vid],
                str(act["symbol"]),
                Side(str(act["side"]).lower()),
                float(act["qty"]),
                float(act["price"]),
                float(act.get("commission") or 0.0),
                parse_rfc3339(str(act["transaction_time"])),
            )
        except (KeyError, TypeError, ValueError):
            raise VenueUnknownState(
                f"venue {self.name}: malformed FILL activity {act.get('id', '?')}"
            ) from None

    def _client_of(self, venue_id: str) -> str:
        """Our order id of a broker order seen only in a fill (its broker id if it has none)."""
        try:
            obj = json_or_none(self._call("GET", f"/v2/orders/{venue_id}", idempotent=True))
        except Failure:
            return venue_id
        cid = obj.get("client_order_id") if isinstance(obj, dict) else None
        return self.order_id(str(cid)) if cid else venue_id

    def _venue_order(self, o: dict[str, Any]) -> VenueOrder:
        try:
            kind = str(o.get("type") or o.get("order_type") or "market")
            limit, stop = float_or_none(o.get("limit_price")), float_or_none(o.get("stop_price"))
            if kind == "stop_limit":
                otype = _STOP_LIMIT or OrderType.STOP
                price, trigger = (limit, stop) if _STOP_LIMIT is not None else (stop, stop)
            else:
                otype = OrderType(kind)
                price, trigger = (stop if otype is OrderType.STOP else limit), None
            filled = float(o.get("filled_qty") or 0.0)
            cid = str(o.get("client_order_id") or "")
            return VenueOrder(
                self.order_id(cid) if cid else "",
                str(o["id"]),
                str(o["symbol"]),
                Side(str(o["side"]).lower()),
                otype,
                float(o["qty"]),
                filled,
                float(o.get("filled_avg_price") or 0.0),
                alpaca_status(str(o.get("status", "")), filled, replaced_is_open=True),
                price,
                trigger,
                parse_rfc3339(str(o["created_at"])) if o.get("created_at") else 0,
            )
        except (KeyError, TypeError, ValueError):
            raise self._malformed(f"order object {o.get('id', '?')}") from None

    # -- HTTP --------------------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: dict[str, Any] | None = None,
        idempotent: bool,
        limited: bool = True,
    ) -> httpx.Response:
        """One logical request: retried on 429 and on connection failures (nothing was sent), and
        on timeouts, 5xx and drops only when ``idempotent``; raises the last ``Failure``."""

        def once() -> httpx.Response:
            if self._http.is_closed:
                raise Failure("closed", f"venue {self.name} is closed")
            if limited:
                self.limiter.acquire()
            self.requests += 1
            try:
                resp = self._http.request(method, path, params=params, json=json_body)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise Failure("unreachable", net_reason(exc, self.timeout_s)) from None
            except httpx.HTTPError as exc:
                raise Failure("lost", net_reason(exc, self.timeout_s)) from None
            if resp.status_code < 300:
                return resp
            message, code = _broker_message(resp)
            detail = f"HTTP {resp.status_code}" + (f": {message}" if message else "")
            if resp.status_code == 429:
                raise Failure("refused", detail, 429, retry_after(resp))
            if resp.status_code >= 500:
                raise Failure("lost", detail, resp.status_code)
            raise Failure("http", message or detail, resp.status_code, code=code)

        return with_retries(
            once,
            Failure,
            idempotent=idempotent,
            attempts=1 + self.max_retries,
            backoff=(self.backoff_base_s, self.backoff_max_s),
            sleep=self._sleep,
            redact=self._redact,
        )

    def _get_json(self, path: str, what: str, params: dict[str, Any] | None = None) -> Any:
        return self._json_call("GET", path, what, params=params)

    def _json_call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: dict[str, Any] | None = None,
        limited: bool = True,
    ) -> Any:
        try:
            resp = self._call(
                method, path, params=params, json_body=json_body, idempotent=True, limited=limited
            )
        except Failure as f:
            raise self._error(f, what) from None
        body = json_or_none(resp)
        if body is None:
            raise self._malformed(f"answer from {method} {path} (not JSON)")
        return body

    def _malformed(self, what: str) -> VenueUnknownState:
        """The broker answered something we cannot read: its state is unknown until reconciled."""
        return VenueUnknownState(f"venue {self.name}: malformed {what}")

    def _error(self, f: Failure, what: str) -> VenueError:
        """The one-line domain error for a failed request."""
        if f.kind == "http" and f.status in (401, 403):
            return VenueAuthError(f"venue {self.name} at {self.url} rejected the keys (HTTP {f.status})")
        if f.kind == "unreachable":
            return VenueUnavailable(self._redact(f"cannot reach venue {self.name} at {self.url}: {f.reason}"))
        message = self._redact(f"venue {self.name}: {what} failed: {f.reason}")
        if f.kind == "refused":
            return VenueRateLimited(message, f.retry_after)
        if f.kind == "lost":
            return VenueUnavailable(message)
        if f.status == 404:
            return VenueNotFound(message)
        return VenueRejected(message)

    def _redact(self, text: str) -> str:
        return redact_secrets(text, self._secrets)

    def _deliver_all(
        self, orders: list[Order], kind: VenueEventKind, reason: str, ts: int | None = None
    ) -> None:
        self.deliver(ack_events(orders, kind, reason, ts if ts is not None else self._wall_ns()))

    def _price(self, symbol: str, price: float) -> str:
        inst = self.instruments.get(symbol)
        return num(inst.round_price(price) if inst is not None else price)


# -- payload helpers -------------------------------------------------------------------------------
def from_spec(spec: VenueSpec) -> RestBrokerVenue:
    """The ``fakebroker`` kind: this dialect against the local fake broker (``hflite venue fake-broker``)."""
    return RestBrokerVenue(
        spec.kind,
        spec.endpoint,
        spec.key_id,
        spec.secret,
        instruments=spec.instruments,
        drive_clock=spec.drive_clock,
        timeout_s=spec.timeout_s,
        max_retries=spec.max_retries,
        rate_per_min=spec.rate_per_min,
        max_clock_skew_s=spec.max_clock_skew_s,
    )


def _position(p: dict[str, Any]) -> VenuePosition:
    qty = float(p["qty"])
    if str(p.get("side", "")).lower() == "short" and qty > 0:
        qty = -qty
    return VenuePosition(str(p["symbol"]), qty, float(p.get("avg_entry_price") or 0.0))


def _sse_messages(lines: Iterable[str]) -> Iterator[tuple[int | None, str]]:
    """(id, data) of each Server-Sent Event; comments (keep-alives) are skipped."""
    seq: int | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield seq, "\n".join(data)
            seq, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            seq = int_or_none(value)
        elif name == "data":
            data.append(value)
    if data:
        yield seq, "\n".join(data)


def _broker_message(resp: httpx.Response) -> tuple[str, int]:
    """The broker's error message and code (Alpaca: ``{"code", "message"}``), one line, cut."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return " ".join(str(body["message"]).split())[:200], int_or_none(body.get("code")) or 0
    return " ".join(resp.text[:200].split()), 0


def _is_duplicate(f: Failure) -> bool:
    return f.code == 40010001 or "client_order_id must be unique" in f.reason
