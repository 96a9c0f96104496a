"""The venue port: what the engine sends (submit, cancel, replace) and what comes back (events).

Every venue sits behind one ``Venue`` protocol; the engine never names a concrete venue class.

- ``SimVenue`` (``sim.py``) is the synchronous implementation: it matches working orders against
  each bar and moves them itself. Backtest, replay and the ``paper`` venue use it.
- ``EventVenue`` (here) is the asynchronous one: a venue that tells us what happened whenever it
  happened (a broker, or the journal during recovery). What it tells us arrives as
  ``VenueEvent``s, which wait in an inbox per symbol until the engine steps that symbol's next bar;
  ``match`` then applies them in arrival order, so a fill moves the portfolio through the same
  ``on_fill`` path as a simulated one. Events are deduplicated by ``event_id`` (a broker that sends a
  fill twice books it once), and every applied event is handed to ``record`` (the journal) with the
  bar-time it was applied at, so a restart can re-apply exactly the same events at the same bars.

Remote venues add the ``RemoteVenue`` methods: connect, a snapshot of the venue's state for
reconciliation, and ``sync`` (bring the inbox up to a bar-time before the engine steps it).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, runtime_checkable

from hflite.domain.order import OPEN, Fill, Order, OrderEvent, OrderStatus, OrderType, Side

FillHandler = Callable[[Order, Fill], None]


class VenueEventKind(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FILLED = "filled"  # one execution: partial or whole (qty is this execution's)
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # a send timed out or got a 5xx: the outcome is unknown until reconciled
    RECONCILED = "reconciled"  # reconciliation settles an unknown order: ``status`` is its target
    REPLACED = "replaced"  # the venue accepted a new trigger/limit price (``price``)


class VenueEvent(NamedTuple):
    """One thing a venue says happened to one of our orders.

    ``order_id`` is our client order id. ``event_id`` is unique per event at the venue (a fill's
    execution id; for acknowledgements ``<order_id>:<kind>``): the dedupe key. ``ts`` is when it
    happened at the venue (ns UTC)."""

    kind: VenueEventKind
    order_id: str
    ts: int
    event_id: str
    qty: float = 0.0  # FILLED: this execution's quantity
    price: float = 0.0  # FILLED: execution price; REPLACED: the new price
    fee: float = 0.0  # FILLED: in the instrument's quote currency
    reason: str = ""  # REJECTED / CANCELLED / UNKNOWN / RECONCILED: the venue's words
    status: str = ""  # RECONCILED: the target OrderStatus value
    symbol: str = ""  # filled in by the venue when it knows it (orders the journal never saw)
    seq: int = 0  # the venue's event sequence number (0: not from its event stream)


class VenueOrder(NamedTuple):
    """The venue's view of one order (what reconciliation compares with the journal)."""

    order_id: str  # our client order id ("" if the order was not placed by us)
    venue_order_id: str
    symbol: str
    side: Side
    type: OrderType
    qty: float
    filled_qty: float
    avg_fill_price: float
    status: OrderStatus
    price: float | None = None  # limit price, or stop trigger for stop orders
    stop_price: float | None = None  # stop-limit: the trigger
    created_ts: int = 0


class VenueFill(NamedTuple):
    """One execution at the venue."""

    event_id: str  # execution id, unique at the venue
    order_id: str  # our client order id
    symbol: str
    side: Side
    qty: float
    price: float
    fee: float
    ts: int


class VenuePosition(NamedTuple):
    symbol: str
    qty: float  # signed: negative = short
    avg_price: float


@dataclass(slots=True)
class VenueSnapshot:
    """Everything reconciliation needs from the venue, fetched in one go.

    ``orders``: every order the venue knows among those asked for, plus every open order (ours or
    not), by client order id (venue order id for orders without one). ``fills``: every execution of
    those orders since ``since`` (None = all)."""

    ts: int  # the venue's clock when the snapshot was taken, ns UTC
    cash: dict[str, float]
    positions: dict[str, VenuePosition]
    orders: dict[str, VenueOrder]
    fills: list[VenueFill]
    cursor: str = ""  # the venue's event cursor at snapshot time (resume the stream after it)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a venue supports; the runtime says at start what it cannot do."""

    server_side_stops: bool = False  # protective stops rest at the venue (protected while we are down)
    oco: bool = False  # one-cancels-other groups at the venue
    stop_limit: bool = True
    replace: bool = True  # change a working order's price in place
    fractional: bool = True


class VenueError(RuntimeError):
    """A venue refused a request or could not be reached; the message is one line with no secrets."""


class VenueAuthError(VenueError):
    """The venue rejected our keys (or we have none)."""


class VenueRateLimited(VenueError):
    """The venue said slow down (HTTP 429, an exchange's rate-limit code) and retries ran out.
    ``retry_after_s`` is the venue's own wait when it gave one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class VenueUnavailable(VenueError):
    """The venue could not be reached or answered 5xx / maintenance / disconnected."""


class VenueNotFound(VenueError):
    """The venue does not know the order (or account, or symbol) asked for."""


class VenueUnknownState(VenueError):
    """The venue's answer cannot be read (malformed payload) or a request's outcome is unknown:
    reconcile before trading on."""


class VenueRejected(VenueError):
    """The venue refused a request on its merits (``reason`` holds its words)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


#: Our small set of venue failures: every adapter translates its vendor's errors into one of these at
#: the border (sends never raise: they deliver REJECTED / UNKNOWN events instead).
VENUE_ERRORS: tuple[type[VenueError], ...] = (
    VenueRejected,
    VenueRateLimited,
    VenueUnavailable,
    VenueAuthError,
    VenueNotFound,
    VenueUnknownState,
)


@runtime_checkable
class Venue(Protocol):
    """What the engine calls. ``working`` holds each symbol's open orders at this venue."""

    working: dict[str, list[Order]]

    def submit(self, order: Order) -> None: ...
    def submit_oco(self, orders: list[Order]) -> None: ...
    def cancel(self, order: Order, ts: int) -> None: ...
    def replace(self, order: Order, price: float) -> None: ...
    def resize(self, order: Order, qty: float) -> None: ...
    def has_working(self, symbol: str) -> bool: ...
    def match(self, symbol: str, bar: Any, on_fill: FillHandler) -> list[Order]: ...


@runtime_checkable
class RemoteVenue(Venue, Protocol):
    """A venue across a network: the runtime connects, reconciles and syncs it."""

    name: str
    capabilities: Capabilities

    def connect(self) -> None: ...
    def close(self) -> None: ...
    def snapshot(self, order_ids: Iterable[str], since: str | None = None) -> VenueSnapshot: ...
    def sync(self, ts: int) -> None: ...


Recorder = Callable[[VenueEvent, int, int], None]  # (event, applied at bar-time ns, timeline index)


@dataclass(slots=True)
class _Inbox:
    events: list[VenueEvent] = field(default_factory=list)


class EventVenue(ABC):
    """Working orders whose state changes arrive as events (a broker, or the journal in recovery).

    Subclasses send (``_send_submit``, ``_send_cancel``, ``_send_replace``) and call ``deliver`` with
    what the venue says, from any thread. ``match`` applies a symbol's delivered events when the
    engine steps its bar. ``applied`` holds the event ids already booked (seed it from the journal on
    a restart): a duplicate is dropped. Events for orders we do not hold go to ``strangers`` for
    reconciliation."""

    def __init__(self, record: Recorder | None = None) -> None:
        self.working: dict[str, list[Order]] = defaultdict(list)
        self.orders: dict[str, Order] = {}  # every order sent here, by client order id
        self.applied: set[str] = set()
        self.strangers: list[VenueEvent] = []
        self.record = record
        self._lock = threading.Lock()
        self._inbox: dict[str, list[VenueEvent]] = {}
        self.needs_reconcile = False  # an order went UNKNOWN: reconcile before the next decision
        #: With a driven market clock: the venue's last event seq caused by moving the market to the
        #: bar-time being stepped. Later stream events answer what this process did after that move
        #: (or what a killed run of the same bar-time did): they are applied at the next bar-time,
        #: as in an uninterrupted run. None: apply whatever has arrived.
        self.horizon: int | None = None
        self._deferred: list[VenueEvent] = []
        self._sent: dict[str, int] = {}  # order id -> the order it was sent (or adopted) in
        #: (op, seconds, error) after each send: the runtime's venue latency and error metrics
        #: (error "" when it went through, else "rejected", "unknown" or the exception's class)
        self.observer: Callable[[str, float, str], None] | None = None

    def _timed(self, op: str, send: Callable[..., None], *args: Any) -> None:
        """``send(*args)``, timed for the observer when there is one."""
        obs = self.observer
        if obs is None:
            send(*args)
            return
        t0 = time.perf_counter()
        try:
            send(*args)
        except Exception as exc:
            obs(op, time.perf_counter() - t0, type(exc).__name__)
            raise
        order = args[0] if args and isinstance(args[0], Order) else None
        status = order.status if order is not None else None
        error = (
            "rejected"
            if status is OrderStatus.REJECTED
            else "unknown"
            if status is OrderStatus.UNKNOWN
            else ""
        )
        obs(op, time.perf_counter() - t0, error)

    # -- the engine side -------------------------------------------------------------------------
    def submit(self, order: Order) -> None:
        if order.reduce_only and order.parent_id is None:
            # an exit: the position's resting stop-loss and take-profit go first, or the venue
            # could fill both in one bar (the sim venue fills the exit first and the engine
            # cancels them as the position goes flat; a broker does not know they belong together)
            for other in list(self.working.get(order.symbol, [])):
                if other.parent_id is not None and (other.is_open or other.status is OrderStatus.UNKNOWN):
                    self._timed("cancel", self._send_cancel, other)
        order.apply(OrderEvent.SUBMIT)
        self.orders[order.id] = order
        self._sent.setdefault(order.id, len(self._sent))
        self.working.setdefault(order.symbol, []).append(order)
        self._timed("submit", self._send_submit, order)

    def submit_oco(self, orders: list[Order]) -> None:
        """Submit exits that cancel each other (a position's stop-loss and take-profit, sharing an
        ``oco_group``): one request where the venue supports OCO, else one by one."""
        for order in orders:
            order.apply(OrderEvent.SUBMIT)
            self.orders[order.id] = order
            self._sent.setdefault(order.id, len(self._sent))
            self.working.setdefault(order.symbol, []).append(order)
        self._timed("oco", self._send_oco, orders)

    def _send_oco(self, orders: list[Order]) -> None:
        for order in orders:
            self._send_submit(order)

    def cancel(self, order: Order, ts: int) -> None:
        """Ask the venue to cancel; the order stays working until the venue confirms. An order whose
        fate is unknown may be at the venue: it is asked too."""
        if order.is_open or order.status is OrderStatus.UNKNOWN:
            self._timed("cancel", self._send_cancel, order)

    def replace(self, order: Order, price: float) -> None:
        """Ask the venue to move a working order's price; applied when the venue confirms."""
        if order.is_open:
            self._timed("replace", self._send_replace, order, price)

    def resize(self, order: Order, qty: float) -> None:
        """Ask the venue to change a working order's total quantity; applied when it confirms."""
        if order.is_open and qty != order.qty:
            self._timed("resize", self._send_resize, order, qty)

    def has_working(self, symbol: str) -> bool:
        return bool(self.working.get(symbol))

    def adopt(self, order: Order) -> None:
        """Hold an order already at the venue (recovery, reconciliation): nothing is sent."""
        self.orders[order.id] = order
        self._sent.setdefault(order.id, len(self._sent))
        if order.is_open or order.status is OrderStatus.UNKNOWN:
            book = self.working.setdefault(order.symbol, [])
            if order not in book:
                book.append(order)

    def match(self, symbol: str, bar: object, on_fill: FillHandler) -> list[Order]:
        """Apply the symbol's delivered events at this bar (``bar`` is the engine's BarView: ``ts``
        and ``i`` are used). Returns the orders that closed without a fill closing them."""
        with self._lock:
            events = self._inbox.pop(symbol, None)
            if events and self.horizon is not None:
                later = [ev for ev in events if ev.seq > self.horizon]
                if later:
                    events = [ev for ev in events if ev.seq <= self.horizon]
                    self._inbox[symbol] = later + self._inbox.get(symbol, [])
        if not events:
            return []
        if len(events) > 1:
            events = self._in_venue_order(events)
        ts, i = bar.ts, bar.i  # type: ignore[attr-defined]
        closed: list[Order] = []
        for ev in events:
            if ev.event_id in self.applied:
                continue
            order = self.orders.get(ev.order_id)
            if order is None:
                self.strangers.append(ev)
                continue
            self.applied.add(ev.event_id)
            if self.record is not None:
                self.record(ev, ts, i)
            if self._apply(order, ev, ts, i, on_fill) and not order.is_open:
                closed.append(order)
        book = self.working.get(symbol)
        if book:
            self.working[symbol] = [o for o in book if o.is_open or o.status is OrderStatus.UNKNOWN]
        return closed

    def _in_venue_order(self, events: list[VenueEvent]) -> list[VenueEvent]:
        """Fills are booked in the venue's order whichever way they came (the stream,
        reconciliation, a restart's replay): by execution time, then the venue's matching priority
        (market, then stops, then limits, each in the order sent). Other events keep their places."""
        slots = [n for n, ev in enumerate(events) if ev.kind is VenueEventKind.FILLED]
        if len(slots) < 2:
            return events

        def rank(ev: VenueEvent) -> tuple[int, int, int]:
            order = self.orders.get(ev.order_id)
            if order is None:
                return (ev.ts, 3, 0)
            return (ev.ts, _PRIORITY.get(order.type, 2), self._sent.get(order.id, 0))

        fills = sorted((events[n] for n in slots), key=rank)
        out = list(events)
        for n, ev in zip(slots, fills, strict=True):
            out[n] = ev
        return out

    def _apply(self, order: Order, ev: VenueEvent, ts: int, i: int, on_fill: FillHandler) -> bool:
        """Move the order by one event; True when the order closed by it without a fill."""
        kind = ev.kind
        if kind is VenueEventKind.FILLED:
            self._fill(order, ev, ts, i, on_fill)
            return False
        if kind is VenueEventKind.ACCEPTED:
            if order.status is OrderStatus.SUBMITTED:
                order.apply(OrderEvent.ACCEPT)
            return False
        if kind is VenueEventKind.REPLACED:
            if ev.price > 0.0:
                order.price = ev.price
            if ev.qty > 0.0:
                order.qty = ev.qty
            return False
        if kind is VenueEventKind.UNKNOWN:
            if order.status in OPEN:
                order.apply(OrderEvent.LOSE_TRACK)
                self.needs_reconcile = True
            return False
        if kind is VenueEventKind.RECONCILED:
            return self._settle(order, ev, ts)
        if order.status is OrderStatus.UNKNOWN:
            order.apply(OrderEvent.RECONCILE, target=_CLOSED_AS[kind], ts=ts)
            return True
        if order.is_open or order.status is OrderStatus.NEW:
            order.apply(_CLOSING[kind], ts=ts)
            return True
        return False

    @staticmethod
    def _fill(order: Order, ev: VenueEvent, ts: int, i: int, on_fill: FillHandler) -> None:
        if order.status is OrderStatus.UNKNOWN:  # a fill proves the order reached the venue
            order.apply(OrderEvent.RECONCILE, target=OrderStatus.ACCEPTED, ts=ts)
        qty = min(ev.qty, order.remaining)
        if qty <= 0.0:
            return
        order.apply(OrderEvent.FILL, fill_qty=qty, fill_price=ev.price, ts=ts)
        on_fill(order, Fill(order.id, order.symbol, order.side, qty, ev.price, ev.fee, ev.ts, i))

    @staticmethod
    def _settle(order: Order, ev: VenueEvent, ts: int) -> bool:
        """Reconciliation settles an unknown order; True when that closes it."""
        if order.status is OrderStatus.UNKNOWN:
            target = OrderStatus(ev.status)
            if target is OrderStatus.SUBMITTED:  # the venue never had it: sent again, same id
                order.status = target
                return False
            order.apply(OrderEvent.RECONCILE, target=target, ts=ts)
            order.reason = order.reason or ev.reason
        return not order.is_open

    # -- the venue side ------------------------------------------------------------------------
    def deliver(self, events: Iterable[VenueEvent]) -> None:
        """Queue what the venue said (any thread); applied at each symbol's next bar."""
        with self._lock:
            for ev in events:
                if ev.kind is VenueEventKind.UNKNOWN:  # settle it before the market moves on
                    self.needs_reconcile = True
                order = self.orders.get(ev.order_id)
                if order is None:  # not ours, or not sent by this process: reconciliation decides
                    if ev.event_id not in self.applied:
                        self.strangers.append(ev)
                        self.needs_reconcile = True
                    continue
                self._inbox.setdefault(order.symbol, []).append(ev)

    def defer(self, events: Iterable[VenueEvent]) -> None:
        """Deliver these after the next bar-time's matching (``release``): what reconciliation finds
        changed at the venue by this process's own requests is booked where the venue's own event
        for it would be, one bar-time after the request."""
        self._deferred.extend(events)

    def release(self) -> None:
        """Deliver the deferred events (the runtime calls it after each bar-time)."""
        if self._deferred:
            events, self._deferred = self._deferred, []
            self.deliver(events)

    def pending(self, symbol: str | None = None) -> list[VenueEvent]:
        """Delivered events not applied yet (all symbols when None)."""
        with self._lock:
            if symbol is not None:
                return list(self._inbox.get(symbol, []))
            return [ev for evs in self._inbox.values() for ev in evs]

    # -- what each venue sends (its adapter implements them; none may raise: failures become events)
    @abstractmethod
    def _send_submit(self, order: Order) -> None: ...

    @abstractmethod
    def _send_cancel(self, order: Order) -> None: ...

    @abstractmethod
    def _send_replace(self, order: Order, price: float) -> None: ...

    @abstractmethod
    def _send_resize(self, order: Order, qty: float) -> None: ...


_PRIORITY = {OrderType.MARKET: 0, OrderType.STOP: 1}  # then stop-limits and limits (2)

_CLOSING = {
    VenueEventKind.REJECTED: OrderEvent.REJECT,
    VenueEventKind.CANCELLED: OrderEvent.CANCEL,
    VenueEventKind.EXPIRED: OrderEvent.EXPIRE,
}
_CLOSED_AS = {
    VenueEventKind.REJECTED: OrderStatus.REJECTED,
    VenueEventKind.CANCELLED: OrderStatus.CANCELLED,
    VenueEventKind.EXPIRED: OrderStatus.EXPIRED,
}
