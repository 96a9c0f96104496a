"""OANDA as a venue: the v20 REST API and its transaction stream, over ``httpx``.

OANDA's own Python package (``v20``, last released in 2018) is unmaintained, so this adapter speaks
the documented v20 REST API directly (developer.oanda.com/rest-live-v20): orders go out as
MarketOrderRequest / LimitOrderRequest / StopOrderRequest (signed ``units``, prices as strings at the
instrument's ``displayPrecision``, our order id in ``clientExtensions.id``), and what happens comes
back as Transactions with sequential ids, read from ``GET .../transactions/stream`` (newline-delimited
JSON with HEARTBEAT lines) and caught up with ``GET .../transactions/sinceid`` after a drop or a
restart. A transaction's id is each event's ``seq`` and the stream's cursor.

Mapping: ``*_ORDER`` -> ACCEPTED (a ``REPLACEMENT`` -> REPLACED), ``*_ORDER_REJECT`` -> REJECTED
(``rejectReason``), ``ORDER_FILL`` -> FILLED (its id is the execution id; commission, guaranteed
execution fee and paid financing are the fee, converted to the quote currency), ``ORDER_CANCEL`` ->
CANCELLED or EXPIRED (``TIME_IN_FORCE_EXPIRED``). A position's stop-loss and take-profit pair becomes
the trade's STOP_LOSS / TAKE_PROFIT orders (``PUT .../trades/{id}/orders``: OANDA cancels both when
the trade closes). Errors are translated here into ``hflite``'s small set; sends never raise.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from hflite import redact as redaction
from hflite.domain.instrument import AssetClass, Instrument
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
    client_order_id,
    float_or_none,
    fmt_ts,
    int_or_none,
    json_or_none,
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

__all__ = ["OandaVenue", "from_spec", "oanda_name", "stream_host"]

_log = logging.getLogger(__name__)

_SINCE_PAGE = 1000  # OANDA answers at most this many transactions per sinceid request
_MAX_PAGES = 10_000
_CREATES = {
    "MARKET_ORDER",
    "LIMIT_ORDER",
    "STOP_ORDER",
    "MARKET_IF_TOUCHED_ORDER",
    "TAKE_PROFIT_ORDER",
    "STOP_LOSS_ORDER",
    "TRAILING_STOP_LOSS_ORDER",
    "GUARANTEED_STOP_LOSS_ORDER",
}
_TIF = {TimeInForce.GTC: "GTC", TimeInForce.DAY: "GFD", TimeInForce.IOC: "IOC"}
_STOP_LIMIT: OrderType | None = getattr(OrderType, "STOP_LIMIT", None)


def oanda_name(symbol: str, inst: Instrument | None = None) -> str:
    """OANDA's instrument name for one of our symbols: EURUSD, EUR-USD and EUR/USD -> EUR_USD; other
    symbols keep their letters with "_" for the separator (BTC-USD -> BTC_USD)."""
    if inst is not None and inst.asset_class is AssetClass.FX and inst.base_currency:
        return f"{inst.base_currency}_{inst.currency}"
    plain = re.sub(r"[-/ .]", "_", symbol.upper())
    if "_" not in plain and len(plain) == 6 and plain.isalpha():
        return f"{plain[:3]}_{plain[3:]}"
    return plain


def stream_host(base_url: str) -> str:
    """The transaction stream's base URL: OANDA streams from ``stream-fxpractice.oanda.com`` /
    ``stream-fxtrade.oanda.com``; any other host (a local fake) serves both on one address."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if host.startswith("api-fx") and host.endswith(".oanda.com"):
        netloc = parts.netloc.replace(host, "stream-" + host.removeprefix("api-"), 1)
        return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")
    return base_url.rstrip("/")


@dataclass(frozen=True, slots=True)
class Precision:
    """What OANDA says about one instrument (GET .../instruments)."""

    name: str
    price_places: int  # displayPrecision
    unit_places: int  # tradeUnitsPrecision
    min_units: float  # minimumTradeSize
    margin_rate: float = 0.0

    def units(self, qty: float) -> str:
        """``qty`` at the instrument's unit precision (ValueError when that changes it, or it is below
        the minimum trade size: such an order is refused before it is sent)."""
        step = Decimal(1).scaleb(-self.unit_places)
        text = Decimal(repr(abs(qty))).quantize(step, rounding=ROUND_HALF_EVEN)
        if abs(float(text) - abs(qty)) > 1e-6 * max(1.0, abs(qty)):
            raise ValueError(f"{qty:g} units exceed {self.name}'s precision ({self.unit_places} decimals)")
        if float(text) < self.min_units - 1e-12:
            raise ValueError(f"{qty:g} units is below {self.name}'s minimum trade size {self.min_units:g}")
        return str(text.quantize(step, rounding=ROUND_DOWN))

    def price(self, price: float) -> str:
        step = Decimal(1).scaleb(-self.price_places)
        return str(Decimal(repr(float(price))).quantize(step, rounding=ROUND_HALF_EVEN))


class _Failure(Exception):
    """One failed attempt, classified (never leaves this module): "refused" (429: not processed),
    "unreachable" (nothing sent), "lost" (timeout, 5xx, drop: maybe processed), "http" (other 4xx)."""

    def __init__(
        self, kind: str, reason: str, status: int = 0, retry_after: float | None = None, body: Any = None
    ) -> None:
        super().__init__(reason)
        self.kind, self.reason, self.status, self.retry_after, self.body = (
            kind,
            reason,
            status,
            retry_after,
            body,
        )

    @property
    def code(self) -> str:
        """OANDA's errorCode, else the reject transaction's rejectReason ("" when neither)."""
        body = self.body if isinstance(self.body, dict) else {}
        for key in ("orderRejectTransaction", "orderCancelRejectTransaction"):
            txn = body.get(key)
            if isinstance(txn, dict) and txn.get("rejectReason"):
                return str(body.get("errorCode") or txn["rejectReason"])
        return str(body.get("errorCode") or "")


class OandaVenue(EventVenue):
    """The venue port over OANDA v20 (practice by default). The token is the secret (``Authorization:
    Bearer``), registered with ``hflite.redact``; the account id comes from ``account`` or, when empty,
    from ``GET /v3/accounts`` if the token sees exactly one. ``drive_clock``: ``sync`` moves a local
    fake's market (``POST /admin/clock``) and waits for the transactions it caused. ``sleep``,
    ``clock`` and ``wall_clock_ns`` are injectable; ``start_seq`` resumes the stream after a known
    transaction id (0: from the account's last transaction at connect, or its first one when
    ``drive_clock``)."""

    capabilities = Capabilities(
        server_side_stops=True, oco=True, stop_limit=True, replace=True, fractional=False
    )

    def __init__(
        self,
        name: str,
        base_url: str,
        token: str,
        *,
        account: str = "",
        stream_url: str | None = None,
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
        stream_idle_s: float = 20.0,
        check_duplicates: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        start_seq: int = 0,
    ) -> None:
        super().__init__(record)
        if not token:
            raise VenueAuthError(f"venue {name}: no OANDA API token (set the [venue] secret_env variable)")
        if timeout_s <= 0 or max_retries < 0 or max_clock_skew_s < 0:
            raise ValueError(
                f"venue {name}: timeout_s must be > 0, max_retries >= 0 and max_clock_skew_s >= 0 "
                f"(got {timeout_s}, {max_retries}, {max_clock_skew_s})"
            )
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.stream_url = (stream_url or stream_host(self.base_url)).rstrip("/")
        self.instruments = dict(instruments or {})
        self.names = {s: (symbols or {}).get(s) or oanda_name(s, i) for s, i in self.instruments.items()}
        self.names.update(symbols or {})
        self.symbols = {n: s for s, n in self.names.items()}
        self.precision: dict[str, Precision] = {
            n: Precision(n, _places(i.tick_size), _places(i.lot_size), i.lot_size)
            for s, i in self.instruments.items()
            if (n := self.names[s])
        }
        self.drive_clock = drive_clock
        self.timeout_s, self.max_retries, self.max_clock_skew_s = timeout_s, max_retries, max_clock_skew_s
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.sync_timeout_s, self.stream_idle_s = sync_timeout_s, stream_idle_s
        self.check_duplicates = check_duplicates
        self._sleep, self._wall_ns = sleep, wall_clock_ns
        self._secrets = tuple(s for s in (token, account) if s)
        for secret in self._secrets:
            redaction.register(secret)
        self.account = account
        self.limiter = TokenBucket(rate_per_min, clock=clock, sleep=sleep)
        self.reconnected = False
        self.requests = 0
        self.currency = "USD"
        self._headers = {"Authorization": f"Bearer {token}", "Accept-Datetime-Format": "RFC3339"}
        self._http = httpx.Client(headers=self._headers, timeout=httpx.Timeout(timeout_s))
        self._client_ids: dict[str, str] = {}  # short client id -> our order id
        self._venue_ids: dict[str, str] = {}  # our order id -> OANDA's current order id
        self._by_venue: dict[str, str] = {}  # OANDA order id -> our order id
        self._kinds: dict[str, tuple[str, str | None]] = {}  # our order id -> (v20 type, trade id)
        self._fills: dict[str, VenueFill] = {}  # every ORDER_FILL seen, by transaction id
        self._fill_orders: dict[str, str] = {}  # fill transaction id -> OANDA order id
        self._cancel_reasons: dict[str, str] = {}  # OANDA order id -> why it was cancelled
        self._history = 0  # transactions read into the caches above, up to this id
        self._last_seq = start_seq
        self._start_seq = start_seq
        self._seq = threading.Condition()
        self._stop = threading.Event()
        self._stream_up = threading.Event()
        self._stream_resp: httpx.Response | None = None
        self._reader: threading.Thread | None = None
        self._cache_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return redaction.sanitize_url(self.base_url)

    @property
    def cursor(self) -> int:
        """The last transaction id delivered from the stream or a catch-up."""
        return self._last_seq

    def _acct(self, path: str = "") -> str:
        return f"{self.base_url}/v3/accounts/{self.account}{path}"

    def connect(self) -> None:
        """Find the account, check the token and the clock, read the instruments' precision, then
        follow the transaction stream."""
        if not self.account:
            self.account = self._only_account()
            redaction.register(self.account)
            self._secrets = (*self._secrets, self.account)
        resp = self._get(self._acct("/summary"), "reading the account")
        body = json_or_none(resp)
        account = body.get("account") if isinstance(body, dict) else None
        if not isinstance(account, dict):
            raise VenueUnknownState(f"venue {self.name}: malformed answer from GET .../summary (no account)")
        self.currency = str(account.get("currency") or "USD")
        self._check_clock(resp)
        self._read_instruments()
        if self._last_seq == 0 and not self.drive_clock:
            self._last_seq = self._start_seq = int_or_none(body.get("lastTransactionID")) or 0
        if self._reader is None or not self._reader.is_alive():
            self._stop.clear()
            self._reader = threading.Thread(
                target=self._read_stream, name=f"venue-{self.name}-stream", daemon=True
            )
            self._reader.start()

    def close(self) -> None:
        """Stop the stream reader and close the connections (idempotent)."""
        self._stop.set()
        self._interrupt_stream()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        self._http.close()

    def _only_account(self) -> str:
        body = self._json("GET", f"{self.base_url}/v3/accounts", "listing accounts")
        ids = [str(a.get("id")) for a in body.get("accounts", []) if isinstance(a, dict)]
        if len(ids) != 1:
            raise VenueError(
                f"venue {self.name}: the token sees {len(ids)} accounts; "
                "set the account id (the [venue] account_env variable)"
            )
        return ids[0]

    def _read_instruments(self) -> None:
        names = ",".join(sorted(self.symbols))
        params = {"instruments": names} if names else None
        body = self._json("GET", self._acct("/instruments"), "reading instruments", params=params)
        offered: set[str] = set()
        for row in body.get("instruments", []):
            try:
                name = str(row["name"])
                offered.add(name)
                self.precision[name] = Precision(
                    name,
                    int(row["displayPrecision"]),
                    int(row["tradeUnitsPrecision"]),
                    float(row["minimumTradeSize"]),
                    float(row.get("marginRate") or 0.0),
                )
            except (KeyError, TypeError, ValueError):
                raise VenueUnknownState(f"venue {self.name}: malformed instrument {row!r:.60}") from None
        missing = sorted(f"{self.symbols[n]} ({n})" for n in set(self.symbols) - offered)
        if missing:
            raise VenueNotFound(
                f"venue {self.name}: OANDA does not offer {', '.join(missing)} to this account"
            )

    def _check_clock(self, resp: httpx.Response) -> None:
        skew = _date_skew_s(resp, self._wall_ns())
        if skew is not None and skew > self.max_clock_skew_s + 1.0:  # Date has whole seconds
            raise VenueError(
                f"venue {self.name}: the local clock is {skew:.1f} s behind OANDA's (max "
                f"{self.max_clock_skew_s:g} s); synchronise it with NTP (e.g. timedatectl set-ntp true)"
            )

    def clock_skew_s(self) -> float | None:
        """OANDA's clock minus ours in seconds, from the HTTP Date header of one account request
        (whole seconds: within about 0.5 s); None when the answer has no Date."""
        before = self._wall_ns()
        resp = self._get(self._acct("/summary"), "reading the account")
        after = self._wall_ns()
        return _date_skew_s(resp, (before + after) // 2, centre=True)

    def latency_ms(self, samples: int = 3) -> float:
        """The median round trip of ``samples`` account-summary requests, in milliseconds."""
        times = []
        for _ in range(max(1, samples)):
            t0 = time.perf_counter()
            self._get(self._acct("/summary"), "reading the account")
            times.append((time.perf_counter() - t0) * 1e3)
        return sorted(times)[len(times) // 2]

    def quote(self, symbol: str) -> Quote | None:
        """The instrument's best bid and ask (GET .../pricing), for ``[execution.timing]``; None for a
        symbol not traded here or an instrument not tradeable now."""
        name = self.names.get(symbol)
        if name is None:
            return None
        body = self._json(
            "GET", self._acct("/pricing"), f"reading {symbol}'s price", params={"instruments": name}
        )
        prices = body.get("prices") if isinstance(body, dict) else None
        row = next((p for p in prices or [] if isinstance(p, dict) and p.get("instrument") == name), None)
        if row is None or not row.get("tradeable", True):
            return None
        try:
            bid, ask = float(row["bids"][0]["price"]), float(row["asks"][0]["price"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise VenueUnknownState(f"venue {self.name}: malformed price for {name}") from None
        return Quote(bid, ask, _parse_ts(str(row["time"])) if row.get("time") else 0)

    def describe(self) -> dict[str, Any]:
        """What ``hflite venue check`` prints: the account (masked), currency, balance, margin, NAV."""
        acct = self._json("GET", self._acct("/summary"), "reading the account").get("account") or {}
        mask = "…" + self.account[-4:] if self.account else None
        return {
            "account": mask,
            "currency": acct.get("currency"),
            "cash": float_or_none(acct.get("balance")),
            "buying_power": float_or_none(acct.get("marginAvailable")),
            "equity": float_or_none(acct.get("NAV")),
            "margin_used": float_or_none(acct.get("marginUsed")),
            "open_trades": acct.get("openTradeCount"),
            "pending_orders": acct.get("pendingOrderCount"),
            "stream": self.stream_url and redaction.sanitize_url(self.stream_url),
        }

    # -- sending ---------------------------------------------------------------------------------
    def _send_submit(self, order: Order) -> None:
        try:
            body = {"order": self._order_request(order)}
        except ValueError as exc:
            self._deliver_all([order], VenueEventKind.REJECTED, str(exc))
            return
        if self.check_duplicates and self._already_there(order):
            return
        self._kinds[order.id] = (body["order"]["type"], None)
        self._post(self._acct("/orders"), body, [order], "POST")

    def _already_there(self, order: Order) -> bool:
        """OANDA refuses a client id only while another order holding it is pending: a resend after a
        restart could place a filled order twice. Ask first; an order it has is taken as it is."""
        try:
            resp = self._call(
                "GET", self._acct(f"/orders/@{quote(self._client_id(order.id), safe='')}"), idempotent=True
            )
        except _Failure as f:
            if f.kind == "http" and f.status == 404:
                return False
            self._deliver_all(
                [order], VenueEventKind.UNKNOWN, f"submit: checking for an earlier send: {f.reason}"
            )
            return True
        obj = json_or_none(resp)
        if not isinstance(obj, dict) or not isinstance(obj.get("order"), dict):
            self._deliver_all(
                [order], VenueEventKind.UNKNOWN, "submit: malformed answer checking for an earlier send"
            )
            return True
        self._take_state(order, obj["order"])
        return True

    def _take_state(self, order: Order, o: dict[str, Any]) -> None:
        """The venue already holds this order (an earlier send got through): report its state."""
        self._learn(o)
        ts = _ts_or_none(o.get("createTime"))
        state = str(o.get("state", ""))
        self._deliver_all([order], VenueEventKind.ACCEPTED, "", ts)
        if state == "CANCELLED" and not o.get("replacedByOrderID"):
            reason = self._cancel_reasons.get(str(o.get("id")), "CANCELLED at the venue")
            kind = VenueEventKind.EXPIRED if reason == "TIME_IN_FORCE_EXPIRED" else VenueEventKind.CANCELLED
            self._deliver_all([order], kind, reason, _ts_or_none(o.get("cancelledTime")))

    def _send_oco(self, orders: list[Order]) -> None:
        """A stop-loss and take-profit pair becomes the trade's STOP_LOSS and TAKE_PROFIT orders (one
        request; OANDA cancels both when the trade closes) when one open trade is exactly the position
        they exit; otherwise each goes as a reduce-only order of its own."""
        pair = oco_pair(orders, same_tif=False, stops=frozenset({OrderType.STOP}))
        trade = self._trade_for(pair[0]) if pair is not None else None
        if pair is None or trade is None:
            for order in orders:
                self._send_submit(order)
            return
        stop, take = pair
        try:
            details = {
                "takeProfit": self._dependent(take, need_price(take)),
                "stopLoss": self._dependent(stop, need_price(stop)),
            }
        except ValueError as exc:
            self._deliver_all(orders, VenueEventKind.REJECTED, str(exc))
            return
        if self.check_duplicates and any([self._already_there(o) for o in (take, stop)]):
            return
        self._kinds[take.id], self._kinds[stop.id] = ("TAKE_PROFIT", trade), ("STOP_LOSS", trade)
        self._post(self._acct(f"/trades/{trade}/orders"), details, [take, stop], "PUT")

    def _dependent(self, order: Order, price: float) -> dict[str, Any]:
        return {
            "price": self._price(order.symbol, price),
            "timeInForce": "GTC",
            "clientExtensions": self._extensions(order),
        }

    def _trade_for(self, exit_order: Order) -> str | None:
        """The one open trade an exit of ``exit_order.qty`` closes entirely (None: none or several)."""
        name = self.names.get(exit_order.symbol, exit_order.symbol)
        try:
            body = self._json("GET", self._acct("/openTrades"), "listing open trades")
        except VenueError:
            return None
        sign = -exit_order.side.sign
        trades = [t for t in body.get("trades", []) if isinstance(t, dict) and t.get("instrument") == name]
        if len(trades) != 1:
            return None
        units = float_or_none(trades[0].get("currentUnits")) or 0.0
        if units * sign <= 0 or abs(abs(units) - exit_order.qty) > 1e-9:
            return None
        return str(trades[0]["id"])

    def _post(self, url: str, body: dict[str, Any], orders: list[Order], method: str) -> None:
        """Send an order request; deliver ACCEPTED, REJECTED or UNKNOWN per order from its answer."""
        try:
            resp = self._call(method, url, json_body=body, idempotent=False)
        except _Failure as f:
            if f.kind == "lost":
                self._deliver_all(orders, VenueEventKind.UNKNOWN, f"submit: {f.reason}")
            elif f.code == "CLIENT_ORDER_ID_ALREADY_EXISTS":
                for order in orders:
                    if not self._already_there(order):
                        self._deliver_all(
                            [order], VenueEventKind.UNKNOWN, "duplicate client id but lookup failed"
                        )
            else:  # refused or unreachable to the end, or a final 4xx: not placed
                reason = f"{f.code}: {f.reason}" if f.code and f.code not in f.reason else f.reason
                self._deliver_all(orders, VenueEventKind.REJECTED, self._redact(reason))
            return
        payload = json_or_none(resp)
        created = _created(payload)
        if not created:
            self._deliver_all(
                orders, VenueEventKind.UNKNOWN, "submit: malformed answer (no order transaction)"
            )
            return
        for txn in created:
            self._learn_txn(txn)
        ts = _ts_or_none(created[0].get("time"))
        self._deliver_all(orders, VenueEventKind.ACCEPTED, "", ts)

    def _send_cancel(self, order: Order) -> None:
        try:
            self._call(
                "PUT",
                self._acct(f"/orders/@{quote(self._client_id(order.id), safe='')}/cancel"),
                idempotent=True,
            )
        except _Failure as f:
            if f.kind == "http" and f.status == 404:
                return  # not pending (filled, cancelled) or never placed: its fate arrives as an event
            _log.warning(self._redact(f"venue {self.name}: cancel of {order.id} failed: {f.reason}"))

    def _send_replace(self, order: Order, price: float) -> None:
        text = self._price(order.symbol, price)
        reply = self._replace(order, {"price": text}, order.remaining)
        if reply is not None:
            new = float(text)
            eid = f"{order.id}:replaced:{num(new)}"
            self.deliver(
                [VenueEvent(VenueEventKind.REPLACED, order.id, reply, eid, price=new, symbol=order.symbol)]
            )

    def _send_resize(self, order: Order, qty: float) -> None:
        """A new total quantity: OANDA's replacement order is for what is left to fill of it."""
        reply = self._replace(order, {}, qty - order.filled_qty)
        if reply is not None:
            eid = f"{order.id}:resized:{num(qty)}"
            self.deliver(
                [VenueEvent(VenueEventKind.REPLACED, order.id, reply, eid, qty=qty, symbol=order.symbol)]
            )

    def _replace(self, order: Order, change: dict[str, Any], units: float) -> int | None:
        """PUT .../orders/@{client id} with the order as it should be (OANDA cancels it and creates
        the replacement, which keeps our client id). The replacement's time, or None on failure."""
        kind, trade = self._kinds.get(order.id) or self._kind_at_venue(order)
        if not kind:
            return None
        try:
            req = self._order_request(order, kind=kind, units=units, trade=trade)
        except ValueError as exc:
            _log.warning(self._redact(f"venue {self.name}: replace of {order.id} refused: {exc}"))
            return None
        req.update(change)
        url = self._acct(f"/orders/@{quote(self._client_id(order.id), safe='')}")
        try:
            resp = self._call("PUT", url, json_body={"order": req}, idempotent=True)
        except _Failure as f:
            if not (f.kind == "http" and f.status in (400, 404)):
                _log.warning(self._redact(f"venue {self.name}: replace of {order.id} failed: {f.reason}"))
            return None
        created = _created(json_or_none(resp))
        for txn in created:
            self._learn_txn(txn)
        return (_ts_or_none(created[0].get("time")) if created else None) or self._wall_ns()

    def _kind_at_venue(self, order: Order) -> tuple[str, str | None]:
        """(v20 type, trade id) of our order as OANDA holds it (after a restart we do not know)."""
        try:
            resp = self._call(
                "GET", self._acct(f"/orders/@{quote(self._client_id(order.id), safe='')}"), idempotent=True
            )
        except _Failure:
            return "", None
        o = (json_or_none(resp) or {}).get("order")
        if not isinstance(o, dict):
            return "", None
        self._learn(o)
        found = (str(o.get("type", "")), str(o["tradeID"]) if o.get("tradeID") else None)
        self._kinds[order.id] = found
        return found

    def cancel_venue_order(self, venue_order_id: str) -> None:
        """Cancel an order by OANDA's id (one the journal never saw); one not pending is left alone."""
        try:
            self._call("PUT", self._acct(f"/orders/{quote(venue_order_id, safe='')}/cancel"), idempotent=True)
        except _Failure as f:
            if f.kind == "http" and f.status == 404:
                return
            raise self._error(f, f"cancelling venue order {venue_order_id}") from None

    def _order_request(
        self, order: Order, *, kind: str | None = None, units: float | None = None, trade: str | None = None
    ) -> dict[str, Any]:
        """The v20 OrderRequest of one order (ValueError when it cannot be sent as it is)."""
        name = self.names.get(order.symbol)
        if name is None:
            inst = self.instruments.get(order.symbol)
            name = self.names[order.symbol] = oanda_name(order.symbol, inst)
            self.symbols[name] = order.symbol
        prec = self.precision.get(name)
        if prec is None:
            raise ValueError(f"{order.symbol} ({name}) is not an instrument this OANDA account offers")
        kind = kind or {OrderType.MARKET: "MARKET", OrderType.LIMIT: "LIMIT"}.get(order.type, "STOP")
        req: dict[str, Any] = {"type": kind, "timeInForce": "FOK" if kind == "MARKET" else _TIF[order.tif]}
        if kind in ("TAKE_PROFIT", "STOP_LOSS"):
            req.update(tradeID=trade, timeInForce="GTC")
        else:
            qty = order.qty if units is None else units
            req.update(instrument=name, units=("-" if order.side is Side.SELL else "") + prec.units(qty))
            req["positionFill"] = "REDUCE_ONLY" if order.reduce_only else "DEFAULT"
        if kind != "MARKET":
            if _STOP_LIMIT is not None and order.type is _STOP_LIMIT:
                trigger = order.stop_price
                if trigger is None:
                    raise ValueError(f"order {order.id}: stop_limit without a stop_price")
                req.update(price=prec.price(trigger), priceBound=prec.price(need_price(order)))
            else:
                req["price"] = prec.price(need_price(order))
        req["clientExtensions"] = self._extensions(order)
        return req

    def _extensions(self, order: Order) -> dict[str, str]:
        tag = "hflite"
        comment = (order.reason or order.type.value)[:120]
        return {"id": self._client_id(order.id), "tag": tag, "comment": comment}

    def adopt(self, order: Order) -> None:
        """Hold an order already at the venue (recovery): its transactions map back by client id."""
        self._client_id(order.id)
        super().adopt(order)

    # -- ids ---------------------------------------------------------------------------------------
    def _client_id(self, order_id: str) -> str:
        cid = client_order_id(order_id)
        if cid != order_id:
            self._client_ids[cid] = order_id
        return cid

    def order_id(self, client_id: str) -> str:
        """Our order id for a ``clientExtensions.id`` seen at OANDA."""
        return self._client_ids.get(client_id, client_id)

    def _learn(self, o: dict[str, Any]) -> None:
        cid = (o.get("clientExtensions") or {}).get("id")
        vid = o.get("id")
        if cid and vid:
            oid = self.order_id(str(cid))
            if o.get("replacedByOrderID") is None:
                self._venue_ids[oid] = str(vid)
            self._by_venue[str(vid)] = oid

    def _learn_txn(self, txn: dict[str, Any]) -> None:
        """An order-creating transaction's id is the order's id."""
        if txn.get("type") in _CREATES:
            self._learn({"id": txn.get("id"), "clientExtensions": txn.get("clientExtensions")})

    def _our_id(self, client: Any, venue_id: Any) -> str:
        if client:
            return self.order_id(str(client))
        return self._by_venue.get(str(venue_id), str(venue_id or ""))

    # -- the transaction stream --------------------------------------------------------------------
    def _read_stream(self) -> None:
        """The reader thread: open the stream, catch up with sinceid, follow; reconnect on a drop."""
        failures = 0
        timeout = httpx.Timeout(self.timeout_s, read=self.stream_idle_s)
        with httpx.Client(headers=self._headers, timeout=timeout) as client:
            while not self._stop.is_set():
                reason = "closed by the venue"
                try:
                    self.limiter.acquire()
                    self.requests += 1
                    url = f"{self.stream_url}/v3/accounts/{self.account}/transactions/stream"
                    with client.stream("GET", url) as resp:
                        if resp.status_code != 200:
                            reason = f"HTTP {resp.status_code}"
                        else:
                            self._stream_resp = resp
                            self._stream_up.set()
                            self._catch_up()
                            for line in resp.iter_lines():
                                self._on_line(line)
                                failures = 0
                except httpx.HTTPError as exc:
                    reason = net_reason(exc, self.stream_idle_s)
                except VenueError as exc:
                    reason = str(exc)
                finally:
                    self._stream_up.clear()
                    self._stream_resp = None
                if self._stop.is_set():
                    break
                self.reconnected = True
                _log.warning(
                    self._redact(f"venue {self.name}: transaction stream dropped ({reason}); reconnecting")
                )
                self._stop.wait(min(5.0, 0.05 * 2**failures))
                failures += 1

    def _interrupt_stream(self) -> None:
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

    def _on_line(self, line: str) -> None:
        if not line.strip():
            return
        try:
            msg = json.loads(line)
        except ValueError:
            _log.warning(f"venue {self.name}: malformed stream line skipped")
            return
        if not isinstance(msg, dict):
            return
        if msg.get("type") == "HEARTBEAT":
            last = int_or_none(msg.get("lastTransactionID"))
            if last is not None and last > self._last_seq:
                self._catch_up(last)  # missed while a line was lost: sinceid fills the gap
            return
        self._on_txn(msg)

    def _catch_up(self, until: int | None = None) -> None:
        """Transactions after our cursor, from ``GET .../transactions/sinceid`` (paged)."""
        for _ in range(_MAX_PAGES):
            before = self._last_seq
            body = self._json(
                "GET", self._acct("/transactions/sinceid"), "catching up transactions", params={"id": before}
            )
            txns = body.get("transactions")
            if not isinstance(txns, list):
                raise VenueUnknownState(
                    f"venue {self.name}: malformed answer from GET sinceid (no transactions)"
                )
            for txn in txns:
                if isinstance(txn, dict):
                    self._on_txn(txn)
            last = int_or_none(body.get("lastTransactionID")) or 0
            if self._last_seq <= before or self._last_seq >= (until or last):
                return

    def _on_txn(self, txn: dict[str, Any]) -> None:
        """Deliver one transaction's event (once per id, in order) and wake ``sync`` waiters."""
        tid = int_or_none(txn.get("id"))
        if tid is None:
            return
        with self._seq:
            if tid <= self._last_seq:
                return
            self._remember(txn)
            event = self._event_from(txn)
            if event is not None:
                self.deliver([event._replace(seq=tid)])
            self._last_seq = tid
            self._seq.notify_all()

    def _remember(self, txn: dict[str, Any]) -> None:
        """Keep what snapshots need from a transaction: fills, cancel reasons, order ids."""
        with self._cache_lock:
            kind = txn.get("type")
            self._learn_txn(txn)
            if kind == "ORDER_FILL":
                fill = self._fill_of(txn)
                if fill is not None:
                    self._fills[str(txn["id"])] = fill
                    self._fill_orders[str(txn["id"])] = str(txn.get("orderID", ""))
            elif kind == "ORDER_CANCEL" and txn.get("orderID"):
                self._cancel_reasons[str(txn["orderID"])] = str(txn.get("reason") or "")
            tid = int_or_none(txn.get("id")) or 0
            if tid == self._history + 1:
                self._history = tid

    def _fill_of(self, txn: dict[str, Any]) -> VenueFill | None:
        try:
            units = float(txn["units"])
            price = float(txn.get("price") or txn.get("fullVWAP") or _trade_price(txn))
            symbol = self.symbols.get(str(txn["instrument"]), str(txn["instrument"]))
            return VenueFill(
                str(txn["id"]),
                self._our_id(txn.get("clientOrderID"), txn.get("orderID")),
                symbol,
                Side.BUY if units > 0 else Side.SELL,
                abs(units),
                price,
                _fee(txn),
                _parse_ts(str(txn["time"])),
            )
        except (KeyError, TypeError, ValueError):
            _log.warning(f"venue {self.name}: malformed ORDER_FILL {txn.get('id', '?')} skipped")
            return None

    def _event_from(self, txn: dict[str, Any]) -> VenueEvent | None:
        """A transaction as a VenueEvent (None for kinds the engine does not need)."""
        kind = str(txn.get("type", ""))
        ts = _ts_or_none(txn.get("time")) or self._wall_ns()
        if kind == "ORDER_FILL":
            fill = self._fills.get(str(txn.get("id")))
            if fill is None:
                return None
            return VenueEvent(
                VenueEventKind.FILLED,
                fill.order_id,
                fill.ts,
                fill.event_id,
                qty=fill.qty,
                price=fill.price,
                fee=fill.fee,
                symbol=fill.symbol,
            )
        client = (txn.get("clientExtensions") or {}).get("id") or txn.get("clientOrderID")
        oid = self._our_id(client, txn.get("orderID") or txn.get("id"))
        symbol = self.symbols.get(str(txn.get("instrument", "")), "")
        if not symbol and oid in self.orders:
            symbol = self.orders[oid].symbol
        if kind in _CREATES:
            if txn.get("reason") == "REPLACEMENT":
                price = float_or_none(txn.get("price"))
                if price is None:
                    return None
                eid = f"{oid}:replaced:{num(price)}"
                return VenueEvent(VenueEventKind.REPLACED, oid, ts, eid, price=price, symbol=symbol)
            return VenueEvent(VenueEventKind.ACCEPTED, oid, ts, f"{oid}:accepted", symbol=symbol)
        if kind.endswith("_ORDER_REJECT") and client:
            why = str(txn.get("rejectReason") or "rejected by the venue")
            if why == "CLIENT_ORDER_ID_ALREADY_EXISTS":
                return None  # a resend of an order OANDA holds: not this order's fate
            return VenueEvent(VenueEventKind.REJECTED, oid, ts, f"{oid}:rejected", reason=why, symbol=symbol)
        if kind == "ORDER_CANCEL":
            why = str(txn.get("reason") or "cancelled at the venue")
            if why == "CLIENT_REQUEST_REPLACED":
                return None  # the replacement (same client id) follows
            if why == "TIME_IN_FORCE_EXPIRED":
                return VenueEvent(
                    VenueEventKind.EXPIRED, oid, ts, f"{oid}:expired", reason=why, symbol=symbol
                )
            return VenueEvent(VenueEventKind.CANCELLED, oid, ts, f"{oid}:canceled", reason=why, symbol=symbol)
        return None

    # -- reconciliation and clock ------------------------------------------------------------------
    def sync(self, ts: int) -> None:
        """With ``drive_clock``: move the fake's market to bar-time ``ts`` and wait until every
        transaction that caused has been delivered. Without it: nothing (the stream delivers)."""
        if not self.drive_clock:
            return
        answer = self._json(
            "POST",
            f"{self.base_url}/admin/clock",
            "moving the clock",
            json_body={"ts": fmt_ts(ts)},
            limited=False,
        )
        last = int_or_none(answer.get("last_event_id"))
        if last is None:
            raise VenueUnknownState(
                f"venue {self.name}: malformed answer from POST /admin/clock (no last_event_id)"
            )
        self.horizon = last
        timeout = self.sync_timeout_s if self._stream_up.is_set() else 0.0
        with self._seq:
            if self._seq.wait_for(lambda: self._last_seq >= last, timeout=timeout):
                return
        self._catch_up(last)
        if self._last_seq < last:
            raise VenueUnavailable(
                f"venue {self.name}: transactions up to {last} did not arrive (have {self._last_seq})"
            )

    def snapshot(self, order_ids: Iterable[str], since: str | None = None) -> VenueSnapshot:
        """OANDA's state for reconciliation: cash (see ``_cash``), positions, every pending order, the
        orders asked for (by our order id) and every fill after transaction ``since`` (None: all)."""
        wanted = list(dict.fromkeys(order_ids))
        for oid in wanted:
            self._client_id(oid)
        resp = self._get(self._acct("/summary"), "reading the account")
        summary = json_or_none(resp)
        account = summary.get("account") if isinstance(summary, dict) else None
        if not isinstance(account, dict):
            raise VenueUnknownState(f"venue {self.name}: malformed answer from GET .../summary (no account)")
        positions = self._json("GET", self._acct("/positions"), "reading positions").get("positions")
        pending = self._json("GET", self._acct("/pendingOrders"), "listing pending orders").get("orders")
        if not isinstance(positions, list) or not isinstance(pending, list):
            raise VenueUnknownState(f"venue {self.name}: malformed positions or orders answer")
        self._load_history(int_or_none(summary.get("lastTransactionID")) or 0)
        objs = {str(o.get("id")): o for o in pending if isinstance(o, dict)}
        have = {self._our_id((o.get("clientExtensions") or {}).get("id"), o.get("id")) for o in objs.values()}
        for oid in wanted:
            if oid not in have:
                o = self._lookup(oid)
                if o is not None:
                    objs[str(o.get("id"))] = o
        trades = self._open_trade_units()
        orders: dict[str, VenueOrder] = {}
        for o in objs.values():
            vo = self._venue_order(o, trades)
            orders[vo.order_id or vo.venue_order_id] = vo
        after = int(since) if since and since.isdigit() else 0
        fills = sorted(
            (
                f._replace(order_id=self.order_id(f.order_id))
                for tid, f in self._fills.items()
                if int(tid) > after
            ),
            key=lambda f: int(f.event_id),
        )
        try:
            cash, pos = self._cash(account, positions)
        except (KeyError, TypeError, ValueError):
            raise VenueUnknownState(f"venue {self.name}: malformed account or positions answer") from None
        ts = _date_ns(resp) or self._wall_ns()
        return VenueSnapshot(
            ts, cash, pos, orders, fills, str(int_or_none(summary.get("lastTransactionID")) or 0)
        )

    def _cash(
        self, account: dict[str, Any], positions: list[Any]
    ) -> tuple[dict[str, float], dict[str, VenuePosition]]:
        """Cash per currency as hflite books it (a position is bought with its quote currency), from
        OANDA's margin account: the balance, less what the open home-quoted positions cost, less the
        realized P/L and costs of instruments quoted in another currency (OANDA converts those into
        the balance; hflite keeps them in that currency, reported here as minus what is held)."""
        home = self.currency
        cash = {home: float(account["balance"])}
        pos: dict[str, VenuePosition] = {}
        for p in positions:
            name = str(p["instrument"])
            ccy = name.rsplit("_", 1)[-1]
            units, avg = 0.0, 0.0
            for side in ("long", "short"):
                leg = p.get(side) or {}
                u = float(leg.get("units") or 0.0)
                if u:
                    units, avg = u, float(leg["averagePrice"])
            if ccy != home:
                realized = float(p.get("pl") or 0) - float(p.get("commission") or 0)
                realized += float(p.get("financing") or 0) - float(p.get("guaranteedExecutionFees") or 0)
                cash[home] -= realized
                cash[ccy] = cash.get(ccy, 0.0) - units * avg
            else:
                cash[home] -= units * avg
            if units:
                symbol = self.symbols.get(name, name)
                pos[symbol] = VenuePosition(symbol, units, avg)
        return cash, pos

    def _load_history(self, last: int) -> None:
        """Read every transaction up to ``last`` not yet seen into the fill and cancel caches."""
        for _ in range(_MAX_PAGES):
            start = self._history
            if start >= last:
                return
            body = self._json(
                "GET", self._acct("/transactions/sinceid"), "reading transactions", params={"id": start}
            )
            txns = body.get("transactions")
            if not isinstance(txns, list):
                raise VenueUnknownState(
                    f"venue {self.name}: malformed answer from GET sinceid (no transactions)"
                )
            for txn in txns:
                if isinstance(txn, dict):
                    self._remember(txn)
            if self._history <= start:
                return

    def _lookup(self, order_id: str) -> dict[str, Any] | None:
        try:
            resp = self._call(
                "GET", self._acct(f"/orders/@{quote(self._client_id(order_id), safe='')}"), idempotent=True
            )
        except _Failure as f:
            if f.kind == "http" and f.status == 404:
                return None
            raise self._error(f, f"looking up order {order_id}") from None
        o = (json_or_none(resp) or {}).get("order")
        if not isinstance(o, dict):
            raise VenueUnknownState(f"venue {self.name}: malformed answer looking up order {order_id}")
        self._learn(o)
        return o

    def _open_trade_units(self) -> dict[str, float]:
        body = self._json("GET", self._acct("/openTrades"), "listing open trades")
        return {
            str(t.get("id")): abs(float_or_none(t.get("currentUnits")) or 0.0) for t in body.get("trades", [])
        }

    def _venue_order(self, o: dict[str, Any], trades: dict[str, float]) -> VenueOrder:
        try:
            vid = str(o["id"])
            oid = self._our_id((o.get("clientExtensions") or {}).get("id"), vid)
            kind = str(o["type"])
            done = [f for tid, f in self._fills.items() if f.order_id == oid and oid]
            mine = [f for f in done if self._fill_orders.get(f.event_id) == vid]
            filled = sum(f.qty for f in done)
            avg = sum(f.qty * f.price for f in done) / filled if filled else 0.0
            known = self.orders.get(oid)
            if o.get("units") is not None:
                units = float(o["units"])
                qty = abs(units) + filled - sum(f.qty for f in mine)
                side = Side.BUY if units > 0 else Side.SELL
                symbol = self.symbols.get(str(o["instrument"]), str(o["instrument"]))
            else:  # a trade's take-profit / stop-loss: it closes the whole trade
                qty = known.qty if known is not None else trades.get(str(o.get("tradeID")), filled)
                side = known.side if known is not None else (done[0].side if done else Side.SELL)
                symbol = known.symbol if known is not None else (done[0].symbol if done else "")
            price, trigger = float_or_none(o.get("price")), None
            if kind in ("LIMIT", "TAKE_PROFIT", "MARKET_IF_TOUCHED"):
                otype = OrderType.LIMIT
            elif kind == "MARKET":
                otype = OrderType.MARKET
            elif o.get("priceBound") is not None and _STOP_LIMIT is not None:
                otype, price, trigger = _STOP_LIMIT, float_or_none(o["priceBound"]), price
            else:
                otype = OrderType.STOP
            state = str(o.get("state", ""))
            status = _status(state, filled, self._cancel_reasons.get(vid, ""))
            return VenueOrder(
                oid,
                vid,
                symbol,
                side,
                otype,
                qty,
                filled,
                avg,
                status,
                price,
                trigger,
                _ts_or_none(o.get("createTime")) or 0,
            )
        except (KeyError, TypeError, ValueError):
            raise VenueUnknownState(f"venue {self.name}: malformed order object {o.get('id', '?')}") from None

    # -- HTTP --------------------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: dict[str, Any] | None = None,
        idempotent: bool,
        limited: bool = True,
    ) -> httpx.Response:
        """One logical request: retried on 429 and on connection failures (nothing was sent), and on
        timeouts, 5xx and drops only when ``idempotent``; raises the last ``_Failure``."""

        def once() -> httpx.Response:
            if self._http.is_closed:
                raise _Failure("closed", f"venue {self.name} is closed")
            if limited:
                self.limiter.acquire()
            self.requests += 1
            try:
                resp = self._http.request(method, url, params=params, json=json_body)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise _Failure("unreachable", net_reason(exc, self.timeout_s)) from None
            except httpx.HTTPError as exc:
                raise _Failure("lost", net_reason(exc, self.timeout_s)) from None
            if resp.status_code < 300:
                return resp
            body = json_or_none(resp)
            message = _v20_message(body, resp)
            detail = f"HTTP {resp.status_code}" + (f": {message}" if message else "")
            if resp.status_code == 429:
                raise _Failure("refused", detail, 429, retry_after(resp), body)
            if resp.status_code >= 500:
                raise _Failure("lost", detail, resp.status_code, body=body)
            raise _Failure("http", message or detail, resp.status_code, body=body)

        return with_retries(
            once,
            _Failure,
            idempotent=idempotent,
            attempts=1 + self.max_retries,
            backoff=(self.backoff_base_s, self.backoff_max_s),
            sleep=self._sleep,
            redact=self._redact,
        )

    def _get(self, url: str, what: str, params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self._call("GET", url, params=params, idempotent=True)
        except _Failure as f:
            raise self._error(f, what) from None

    def _json(
        self,
        method: str,
        url: str,
        what: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: dict[str, Any] | None = None,
        limited: bool = True,
    ) -> dict[str, Any]:
        try:
            resp = self._call(
                method, url, params=params, json_body=json_body, idempotent=True, limited=limited
            )
        except _Failure as f:
            raise self._error(f, what) from None
        body = json_or_none(resp)
        if not isinstance(body, dict):
            path = (
                urlsplit(url).path.replace(self.account, "{account}") if self.account else urlsplit(url).path
            )
            raise VenueUnknownState(
                f"venue {self.name}: malformed answer from {method} {path} (not a JSON object)"
            )
        return body

    def _error(self, f: _Failure, what: str) -> VenueError:
        """The one-line domain error for a failed request."""
        if f.kind == "http" and f.status in (401, 403):
            why = "rejected the token" if f.status == 401 else "refused access to the account"
            return VenueAuthError(f"venue {self.name} at {self.url} {why} (HTTP {f.status})")
        if f.kind == "unreachable":
            return VenueUnavailable(self._redact(f"cannot reach venue {self.name} at {self.url}: {f.reason}"))
        if f.kind == "refused":
            return VenueRateLimited(
                self._redact(f"venue {self.name}: {what} rate limited: {f.reason}"), f.retry_after
            )
        if f.kind in ("lost", "closed"):
            return VenueUnavailable(self._redact(f"venue {self.name}: {what} failed: {f.reason}"))
        if f.status == 404:
            return VenueNotFound(self._redact(f"venue {self.name}: {what}: not found ({f.reason})"))
        return VenueRejected(
            self._redact(f"venue {self.name}: {what} refused: {f.reason}"), f.code or f.reason
        )

    def _redact(self, text: str) -> str:
        return redact_secrets(text, self._secrets)

    def _deliver_all(
        self, orders: list[Order], kind: VenueEventKind, reason: str, ts: int | None = None
    ) -> None:
        self.deliver(ack_events(orders, kind, reason, ts if ts is not None else self._wall_ns()))

    def _price(self, symbol: str, price: float) -> str:
        name = self.names.get(symbol, symbol)
        prec = self.precision.get(name)
        if prec is None:
            raise ValueError(f"{symbol} ({name}) is not an instrument this OANDA account offers")
        return prec.price(price)


def from_spec(spec: VenueSpec) -> OandaVenue:
    """The ``oanda`` kind. ``spec.secret`` is the API token (``[venue] secret_env``; there is no key id),
    ``spec.account`` the account id (empty: the token's only account)."""
    return OandaVenue(
        spec.kind,
        spec.endpoint
        or ("https://api-fxtrade.oanda.com" if spec.live else "https://api-fxpractice.oanda.com"),
        spec.secret,
        account=spec.account,
        instruments=spec.instruments,
        symbols=spec.symbols,
        drive_clock=spec.drive_clock,
        timeout_s=spec.timeout_s,
        max_retries=spec.max_retries,
        rate_per_min=spec.rate_per_min,
        max_clock_skew_s=spec.max_clock_skew_s,
    )


# -- payload helpers -------------------------------------------------------------------------------
def _parse_ts(text: str) -> int:
    """RFC 3339 (any fraction), or OANDA's UNIX format ("1467218400.000000000"), as ns UTC."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        whole, _, frac = text.partition(".")
        return int(whole) * 1_000_000_000 + int((frac or "0")[:9].ljust(9, "0"))
    return parse_rfc3339(text)


def _ts_or_none(value: Any) -> int | None:
    try:
        return _parse_ts(str(value)) if value else None
    except ValueError:
        return None


def _date_ns(resp: httpx.Response) -> int | None:
    value = resp.headers.get("Date")
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp()) * 1_000_000_000
    except (TypeError, ValueError):
        return None


def _date_skew_s(resp: httpx.Response, local_ns: int, *, centre: bool = False) -> float | None:
    """The venue's Date header minus ``local_ns`` in seconds (+0.5 s with ``centre``: the header
    truncates to the second)."""
    venue_ns = _date_ns(resp)
    if venue_ns is None:
        return None
    return (venue_ns - local_ns) / 1e9 + (0.5 if centre else 0.0)


def _places(step: float) -> int:
    return max(0, round(-math.log10(step))) if step > 0 else 0


def _created(payload: Any) -> list[dict[str, Any]]:
    """The order-creating transactions of an order request's answer."""
    if not isinstance(payload, dict):
        return []
    keys = (
        "orderCreateTransaction",
        "takeProfitOrderTransaction",
        "stopLossOrderTransaction",
        "trailingStopLossOrderTransaction",
    )
    return [payload[k] for k in keys if isinstance(payload.get(k), dict)]


def _trade_price(txn: dict[str, Any]) -> Any:
    for key in ("tradeOpened", "tradeReduced"):
        if isinstance(txn.get(key), dict):
            return txn[key].get("price")
    closed = txn.get("tradesClosed") or []
    return closed[0].get("price") if closed else None


def _fee(txn: dict[str, Any]) -> float:
    """What a fill cost, in the instrument's quote currency: commission and guaranteed execution fee,
    plus financing paid (OANDA reports them in the home currency; the loss factor converts back)."""
    home = float(txn.get("commission") or 0) + float(txn.get("guaranteedExecutionFee") or 0)
    home -= float(txn.get("financing") or 0)
    if not home:
        return 0.0
    factors = txn.get("homeConversionFactors") or {}
    key, legacy = (
        ("lossQuoteHome", "lossQuoteHomeConversionFactor")
        if home > 0
        else ("gainQuoteHome", "gainQuoteHomeConversionFactor")
    )
    rate = float_or_none((factors.get(key) or {}).get("factor")) or float_or_none(txn.get(legacy)) or 1.0
    return home / rate


_CLOSED = {"FILLED": OrderStatus.FILLED, "CANCELLED": OrderStatus.CANCELLED}


def _status(state: str, filled: float, cancel_reason: str) -> OrderStatus:
    if state == "CANCELLED" and cancel_reason == "TIME_IN_FORCE_EXPIRED":
        return OrderStatus.EXPIRED
    if state in _CLOSED:
        return _CLOSED[state]
    if state in ("PENDING", "TRIGGERED"):
        return OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED
    raise ValueError(f"unknown order state {state!r}")


def _v20_message(body: Any, resp: httpx.Response) -> str:
    """OANDA's ``errorMessage`` (with the reject reason when there is one), one line, cut."""
    if isinstance(body, dict) and body.get("errorMessage"):
        return " ".join(str(body["errorMessage"]).split())[:200]
    return " ".join(resp.text[:200].split())
