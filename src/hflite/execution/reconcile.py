"""Reconciliation: the run's journal and book against the venue's snapshot, before any trading.

Pure (no I/O, no clock): ``reconcile`` takes the orders, the booked event ids and the book as the
runtime holds them, plus one ``VenueSnapshot``, and returns

- ``differences``: every way the two disagree, each with a key that is stable across runs
  (``fill:<execution id>``, ``status:<order id>``, ``filled:<order id>``, ``missing:<order id>``,
  ``stranger:<venue order id>``, ``position:<SYM>``, ``holding:<SYM>``, ``cash:<CCY>``) so that a human
  can accept an unexplained one with ``hflite reconcile --accept KEY``;
- ``events``: what the runtime delivers to its ``EventVenue`` so that the journal's orders reach the
  venue's state through the same path as live events (per order: RECONCILED, then ACCEPTED, then
  FILLED in execution time, then the closing event);
- ``adjustments``: position changes a human accepted (booked as a trade at ``price``);
- ``cash_offset``: the account's cash outside the run (venue cash minus the run's), to persist.

The runtime trades only when ``clean`` (no unexplained difference). ``action`` is set only on
explained differences: an unexplained one says in ``resolution`` what accepting it would do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from hflite.domain.instrument import PEGGED
from hflite.domain.order import OPEN, Order, OrderStatus
from hflite.execution.venues.base import VenueEvent, VenueEventKind, VenueFill, VenueOrder, VenueSnapshot

__all__ = [
    "ADOPT_CASH_OFFSET",
    "ADOPT_POSITION",
    "BOOK_FILL",
    "CANCEL_AT_VENUE",
    "CLOSE_IN_JOURNAL",
    "NEVER_RECEIVED",
    "Adjustment",
    "Difference",
    "Reconciliation",
    "reconcile",
]

#: Actions the runtime carries out for an explained difference (besides applying ``events``).
CANCEL_AT_VENUE = "cancel-at-venue"  # cancel ``venue_order_id`` at the venue
ADOPT_POSITION = "adopt-position"  # book the difference's adjustment
BOOK_FILL = "book-fill"  # book the difference's adjustment (a fill the order can no longer take)
ADOPT_CASH_OFFSET = "adopt-cash-offset"  # persist ``Reconciliation.cash_offset``
CLOSE_IN_JOURNAL = "close-in-journal"  # the closing event is in ``events``

NEVER_RECEIVED = "the venue never received it"
_S = OrderStatus
_K = VenueEventKind
_VENUE_OPEN = frozenset({_S.NEW, _S.SUBMITTED, _S.ACCEPTED, _S.PARTIALLY_FILLED, _S.UNKNOWN})
_CLOSING_KIND = {_S.CANCELLED: _K.CANCELLED, _S.EXPIRED: _K.EXPIRED, _S.REJECTED: _K.REJECTED}
_EPS = 1e-9  # Order's own tolerance for "fully filled"


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the journal and the venue disagree (or an informational note when ``explained``)."""

    key: str
    kind: str
    symbol: str
    order_id: str
    journal: str
    venue: str
    resolution: str
    explained: bool
    action: str = ""
    venue_order_id: str = ""


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A position change a human accepted: book ``qty_delta`` (signed) at ``price`` (the venue's average
    price; 0.0 when the venue has none, so the cash check carries the whole cash effect) and ``fee``."""

    symbol: str
    qty_delta: float
    price: float
    reason: str
    fee: float = 0.0

    @property
    def cash_delta(self) -> float:
        return -self.qty_delta * self.price - self.fee


@dataclass(slots=True)
class Reconciliation:
    differences: list[Difference]
    events: list[VenueEvent]
    cash_offset: float
    adjustments: list[Adjustment] = field(default_factory=list)

    @property
    def unexplained(self) -> list[Difference]:
        return [d for d in self.differences if not d.explained]

    @property
    def clean(self) -> bool:
        """True when every difference is explained: the run may trade."""
        return all(d.explained for d in self.differences)

    def summary(self) -> str:
        """One line for the log and the CLI."""
        n, events = len(self.differences), len(self.events)
        tail = f"{events} events, {len(self.adjustments)} adjustments, cash offset {self.cash_offset:,.2f}"
        bad = self.unexplained
        if not n:
            return f"reconciled: nothing differs; {tail}"
        if not bad:
            return f"reconciled: {n} differences, all explained; {tail}"
        keys = ", ".join(d.key for d in bad[:5]) + (", ..." if len(bad) > 5 else "")
        return f"NOT reconciled: {len(bad)} of {n} differences unexplained ({keys}); {tail}; trading refused"


def reconcile(
    orders: dict[str, Order],
    applied: set[str],
    positions: dict[str, float],
    cash: dict[str, float],
    snapshot: VenueSnapshot,
    *,
    symbols: set[str],
    cash_offset: float | None,
    accepted: dict[str, str] | None = None,
    qty_tol: float = 1e-9,
    cash_tol: float = 0.01,
    currency: str = "USD",
    currencies: dict[str, str] | None = None,
) -> Reconciliation:
    """Compare the run (``orders`` by client order id, booked event ids, signed ``positions``, ``cash``
    per currency) with the venue's ``snapshot``. ``symbols``: the run's traded symbols (positions and
    orders in others are the user's own). ``cash_offset``: venue cash minus the run's, as recorded at the
    first reconciliation (None: this is it). ``accepted``: difference key -> the resolution a human
    accepted. ``currencies``: symbol -> the currency its cash moves in (its quote currency; default
    ``currency``): only the cash that adopted fills move in ``currency`` counts in its check."""
    rec = _Reconciler(applied, snapshot, symbols, accepted or {}, qty_tol, currencies or {}, currency)
    fills = _fills_by_order(snapshot.fills)
    for oid, order in orders.items():
        rec.order(order, snapshot.orders.get(oid), fills.get(oid, ()))
    rec.strangers(orders)
    rec.positions(positions)
    offset = rec.cash(
        cash.get(currency, 0.0), snapshot.cash.get(currency, 0.0), cash_offset, cash_tol, currency
    )
    return Reconciliation(rec.diffs, rec.events(), offset, rec.adjustments)


def _fills_by_order(fills: Iterable[VenueFill]) -> dict[str, list[VenueFill]]:
    out: dict[str, list[VenueFill]] = {}
    for f in fills:
        out.setdefault(f.order_id, []).append(f)
    for group in out.values():
        group.sort(key=lambda f: f.ts)  # stable: the venue's order among equal times
    return out


def _q(x: float) -> str:
    return f"{x:,.10g}"


def _describe(order: Order) -> str:
    return f"{order.side} {_q(order.qty)} {order.symbol}"


def _journal(order: Order) -> str:
    return f"order {order.id} ({_describe(order)}) is {order.status}, {_q(order.filled_qty)} filled"


def _venue(vo: VenueOrder) -> str:
    return f"the venue has it {vo.status}, {_q(vo.filled_qty)} of {_q(vo.qty)} filled"


class _Reconciler:
    """The working state of one reconciliation: differences and events as they are found, and the
    run's book moved by every fill adopted."""

    def __init__(
        self,
        applied: set[str],
        snap: VenueSnapshot,
        symbols: set[str],
        accepted: dict[str, str],
        tol: float,
        currencies: dict[str, str],
        currency: str,
    ) -> None:
        self.applied, self.snap, self.symbols, self.accepted, self.tol = applied, snap, symbols, accepted, tol
        self.currencies, self.currency = currencies, currency
        self.diffs: list[Difference] = []
        self.adjustments: list[Adjustment] = []
        self.moved: dict[str, float] = {}  # signed qty adopted per symbol
        self.cash_moved = 0.0  # in ``currency``: what adopted fills and adjustments moved
        self._reconciled: list[VenueEvent] = []
        self._acks: list[VenueEvent] = []
        self._fills: list[VenueEvent] = []
        self._closing: list[VenueEvent] = []

    def events(self) -> list[VenueEvent]:
        fills = sorted(self._fills, key=lambda ev: ev.ts)  # stable: per order, the venue's order
        return self._reconciled + self._acks + fills + self._closing

    # -- differences -----------------------------------------------------------------------------
    def note(
        self,
        key: str,
        kind: str,
        symbol: str,
        order_id: str,
        journal: str,
        venue: str,
        resolution: str,
        action: str = "",
        venue_order_id: str = "",
    ) -> None:
        """An explained difference (the run adopts the venue's state, or it is only information)."""
        self.diffs.append(
            Difference(key, kind, symbol, order_id, journal, venue, resolution, True, action, venue_order_id)
        )

    def ask(
        self,
        key: str,
        kind: str,
        symbol: str,
        order_id: str,
        journal: str,
        venue: str,
        cause: str,
        proposal: str,
        action: str = "",
        venue_order_id: str = "",
    ) -> str:
        """An unexplained difference unless a human accepted ``key``. Returns the accepted resolution
        (the caller then carries out ``proposal``), or "" when unexplained."""
        if key in self.accepted:
            resolution = self.accepted[key] or proposal
            self.note(key, kind, symbol, order_id, journal, venue, resolution, action, venue_order_id)
            return resolution
        self.diffs.append(
            Difference(
                key,
                kind,
                symbol,
                order_id,
                journal,
                venue,
                f"{cause}; accept to {proposal}",
                False,
                "",
                venue_order_id,
            )
        )
        return ""

    # -- events ----------------------------------------------------------------------------------
    def _event_id(self, order_id: str, kind: str) -> str:
        eid = f"{order_id}:{kind}"
        return eid if eid not in self.applied else f"{eid}:{self.snap.ts}"

    def settle(self, order: Order, target: OrderStatus, reason: str = "") -> None:
        # Unique per snapshot: an order may go UNKNOWN, be settled, and go UNKNOWN again.
        eid = f"{order.id}:{_K.RECONCILED}:{self.snap.ts}"
        self._reconciled.append(
            VenueEvent(
                _K.RECONCILED,
                order.id,
                self.snap.ts,
                eid,
                reason=reason,
                status=str(target),
                symbol=order.symbol,
            )
        )

    def close(self, order: Order, kind: VenueEventKind, reason: str) -> None:
        eid = self._event_id(order.id, str(kind))
        self._closing.append(
            VenueEvent(kind, order.id, self.snap.ts, eid, reason=reason, symbol=order.symbol)
        )

    def acknowledge(self, order: Order) -> None:
        eid = self._event_id(order.id, str(_K.ACCEPTED))
        self._acks.append(VenueEvent(_K.ACCEPTED, order.id, self.snap.ts, eid, symbol=order.symbol))

    def book(self, symbol: str, signed_qty: float, cash_delta: float) -> None:
        """Move the run's book by an adopted fill: the position, and the cash when it moves in the
        checked currency (a USD/JPY fill moves yen: not the dollars the cash check compares)."""
        self.moved[symbol] = self.moved.get(symbol, 0.0) + signed_qty
        if PEGGED.get(ccy := self.currencies.get(symbol, self.currency), ccy) == self.currency:
            self.cash_moved += cash_delta

    # -- orders ----------------------------------------------------------------------------------
    def order(self, order: Order, vo: VenueOrder | None, fills: Iterable[VenueFill]) -> None:
        unbooked = [f for f in fills if f.event_id not in self.applied]
        if order.status in OPEN or order.status is _S.UNKNOWN:
            if vo is None:
                self._lost(order, unbooked)
            else:
                self._live(order, vo, unbooked)
        else:
            self._fixed(order, vo, unbooked)

    def _adopt(
        self, order: Order, fills: list[VenueFill], status: OrderStatus, filled: float
    ) -> tuple[OrderStatus, float]:
        """FILLED events for the order's unbooked executions, as ``EventVenue`` will apply them (capped
        at the remaining quantity). Returns the order's status and filled quantity after them."""
        for f in fills:
            qty = min(f.qty, max(order.qty - filled, 0.0))
            if not (qty > 0.0 and f.price > 0.0):
                self._unbookable(order, f, "the order cannot take it" if f.price > 0.0 else "bad price")
                continue
            self._fills.append(
                VenueEvent(_K.FILLED, order.id, f.ts, f.event_id, qty, f.price, f.fee, symbol=order.symbol)
            )
            signed = order.side.sign * qty
            self.book(order.symbol, signed, -signed * f.price - f.fee)
            filled += qty
            status = _S.FILLED if max(order.qty - filled, 0.0) <= _EPS else _S.PARTIALLY_FILLED
            self.note(
                f"fill:{f.event_id}",
                "fill",
                order.symbol,
                order.id,
                f"order {order.id} ({_describe(order)}) had {_q(filled - qty)} filled; "
                f"execution {f.event_id} not booked",
                f"execution {f.event_id}: {order.side} {_q(f.qty)} @ {f.price:,.4f}, fee {f.fee:,.2f}",
                f"adopted fill: {_q(qty)} {order.symbol} @ {f.price:,.4f} booked, now {_q(filled)} of "
                f"{_q(order.qty)} filled",
            )
        return status, filled

    def _unbookable(self, order: Order, f: VenueFill, why: str) -> None:
        """A venue execution the order can no longer take (it is closed, full, or never sent)."""
        signed = order.side.sign * f.qty
        accepted = self.ask(
            f"fill:{f.event_id}",
            "fill",
            order.symbol,
            order.id,
            _journal(order),
            f"execution {f.event_id}: {order.side} {_q(f.qty)} @ {f.price:,.4f}, fee {f.fee:,.2f}",
            f"a fill the journal did not book and {why}",
            f"book it as an adjustment of {signed:+,.10g} {order.symbol} @ {f.price:,.4f}",
            BOOK_FILL,
        )
        if accepted:
            adj = Adjustment(
                order.symbol, signed, max(f.price, 0.0), f"fill {f.event_id} of {order.id}", f.fee
            )
            self.adjustments.append(adj)
            self.book(order.symbol, signed, adj.cash_delta)

    def _live(self, order: Order, vo: VenueOrder, fills: list[VenueFill]) -> None:
        """An order we hold open or unknown, which the venue has: move it to the venue's state."""
        status, filled, done = order.status, order.filled_qty, []
        moved = status is _S.UNKNOWN  # settled, closed or acknowledged: a status difference to note
        if moved:
            if fills or vo.status in _VENUE_OPEN:
                status = _S.PARTIALLY_FILLED if filled > _EPS else _S.ACCEPTED
            else:
                status = vo.status
            self.settle(order, status)
            done.append(f"settled the unknown order as {status}")
        adopted = len(self._fills)
        status, filled = self._adopt(order, fills, status, filled)
        adopted = len(self._fills) - adopted
        if adopted:
            done.append(f"adopted {adopted} fill{'s' if adopted > 1 else ''}")
        if vo.status in _CLOSING_KIND and status in OPEN:
            kind = _CLOSING_KIND[vo.status]
            reason = f"{vo.status} at the venue while we were down"
            if kind is _K.REJECTED and status is not _S.SUBMITTED:  # no rejection after acceptance
                kind, reason = _K.CANCELLED, "rejected at the venue after it had accepted the order"
            self.close(order, kind, reason)
            status, moved = OrderStatus(str(kind)), True
            done.append(f"closed as {status} ({reason}) with {_q(filled)} of {_q(order.qty)} filled")
        elif status is _S.SUBMITTED and vo.status in (_S.ACCEPTED, _S.PARTIALLY_FILLED):
            self.acknowledge(order)
            status, moved = _S.ACCEPTED, True
            done.append("adopted the venue's acknowledgement")
        if moved:
            self.note(
                f"status:{order.id}",
                "status",
                order.symbol,
                order.id,
                _journal(order),
                _venue(vo),
                "; ".join(done),
                venue_order_id=vo.venue_order_id,
            )
        self._check_filled(order, vo, filled)

    def _check_filled(self, order: Order, vo: VenueOrder, filled: float) -> None:
        if abs(filled - vo.filled_qty) > self.tol:
            self.ask(
                f"filled:{order.id}",
                "filled",
                order.symbol,
                order.id,
                f"order {order.id} ({_describe(order)}) has {_q(filled)} filled after the venue's fills",
                _venue(vo),
                "the venue's filled quantity does not match its executions",
                "keep the journal's fills",
                venue_order_id=vo.venue_order_id,
            )

    def _lost(self, order: Order, fills: list[VenueFill]) -> None:
        """An order we hold open or unknown, which the venue does not list."""
        status, filled = order.status, order.filled_qty
        if not fills and filled <= _EPS and status in (_S.SUBMITTED, _S.UNKNOWN):
            if status is _S.UNKNOWN:
                self.settle(order, _S.REJECTED, NEVER_RECEIVED)
            else:
                self.close(order, _K.REJECTED, NEVER_RECEIVED)
            self.note(
                f"missing:{order.id}",
                "missing",
                order.symbol,
                order.id,
                _journal(order),
                "the venue does not have it",
                f"{NEVER_RECEIVED}: closed as rejected",
            )
            return
        if status is _S.UNKNOWN and fills:
            status = _S.PARTIALLY_FILLED if filled > _EPS else _S.ACCEPTED
            self.settle(order, status)
        status, filled = self._adopt(order, fills, status, filled)
        if status not in OPEN and status is not _S.UNKNOWN:
            return  # its fills closed it: nothing left to lose
        accepted = self.ask(
            f"missing:{order.id}",
            "missing",
            order.symbol,
            order.id,
            _journal(order),
            "the venue does not have it" + (f" but reports {len(fills)} executions of it" if fills else ""),
            "the venue lost an order it had acknowledged",
            "close it as cancelled in the journal",
            CLOSE_IN_JOURNAL,
        )
        if accepted:
            reason = "the venue lost it (accepted)"
            if status is _S.UNKNOWN:
                self.settle(order, _S.CANCELLED, reason)
            else:
                self.close(order, _K.CANCELLED, reason)

    def _fixed(self, order: Order, vo: VenueOrder | None, fills: list[VenueFill]) -> None:
        """An order we hold closed (or never sent): events cannot move it, only a human can."""
        for f in fills:
            why = "the order was never sent" if order.status is _S.NEW else f"the order is {order.status}"
            self._unbookable(order, f, why)
        if vo is None:
            return
        if order.status is _S.NEW or vo.status is not order.status:
            venue_open = vo.status in _VENUE_OPEN
            self.ask(
                f"status:{order.id}",
                "status",
                order.symbol,
                order.id,
                _journal(order),
                _venue(vo),
                "the venue still works an order the journal holds closed"
                if venue_open
                else "the venue closed it differently",
                "cancel it at the venue" if venue_open else "keep the journal's status",
                CANCEL_AT_VENUE if venue_open else "",
                vo.venue_order_id,
            )
        if not fills:
            self._check_filled(order, vo, order.filled_qty)

    # -- the venue's other orders, positions and cash ---------------------------------------------
    def strangers(self, orders: dict[str, Order]) -> None:
        """Open venue orders we do not hold: in the run's symbols an order the journal never saw, in
        others the user's own."""
        for key, vo in self.snap.orders.items():
            if key in orders or (vo.order_id and vo.order_id in orders) or vo.status not in _VENUE_OPEN:
                continue
            what = f"{vo.side} {_q(vo.qty)} {vo.symbol} {vo.type}" + (
                f" @ {vo.price:,.4f}" if vo.price else ""
            )
            venue = f"venue order {vo.venue_order_id} ({what}) is {vo.status}, {_q(vo.filled_qty)} filled"
            vid = vo.venue_order_id or key
            if vo.symbol not in self.symbols:
                self.note(
                    f"stranger:{vid}",
                    "info",
                    vo.symbol,
                    vo.order_id,
                    "not the run's",
                    venue,
                    "the user's own order in a symbol the run does not trade: ignored",
                    venue_order_id=vid,
                )
                continue
            self.ask(
                f"stranger:{vid}",
                "stranger",
                vo.symbol,
                vo.order_id,
                "the journal never saw it",
                venue,
                "an order the journal never saw",
                "cancel it at the venue",
                CANCEL_AT_VENUE,
                vid,
            )

    def positions(self, book: dict[str, float]) -> None:
        """Each traded symbol's position after the adopted fills against the venue's."""
        checked = set(self.symbols) | {s for s, q in book.items() if abs(q) > self.tol}
        for sym in sorted(checked):
            expected = book.get(sym, 0.0) + self.moved.get(sym, 0.0)
            vp = self.snap.positions.get(sym)
            venue_qty, price = (vp.qty, vp.avg_price) if vp is not None else (0.0, 0.0)
            delta = venue_qty - expected
            if abs(delta) <= self.tol:
                continue
            at = f" @ {price:,.4f}" if price else ""
            resolution = self.ask(
                f"position:{sym}",
                "position",
                sym,
                "",
                f"the run holds {_q(expected)} {sym} after the venue's fills",
                f"the venue holds {_q(venue_qty)} {sym}{at}",
                "position changed by hand at the venue",
                f"adopt the venue's position: {delta:+,.10g} {sym}{at}",
                ADOPT_POSITION,
            )
            if resolution:
                adj = Adjustment(sym, delta, price, f"position:{sym} accepted: {resolution}")
                self.adjustments.append(adj)
                self.book(sym, delta, adj.cash_delta)
        for sym, vp in sorted(self.snap.positions.items()):
            if sym not in checked and abs(vp.qty) > self.tol:
                self.note(
                    f"holding:{sym}",
                    "info",
                    sym,
                    "",
                    "not the run's",
                    f"the venue holds {_q(vp.qty)} {sym} @ {vp.avg_price:,.4f}",
                    "the user's own holding in a symbol the run does not trade: ignored",
                )

    def cash(self, run_cash: float, venue_cash: float, offset: float | None, tol: float, ccy: str) -> float:
        """The run's cash after adopted fills and adjustments, plus the offset, against the venue's."""
        run_cash += self.cash_moved
        key, mine = f"cash:{ccy}", f"the run's cash is {run_cash:,.2f} {ccy}"
        theirs = f"the venue holds {venue_cash:,.2f} {ccy}"
        fresh = venue_cash - run_cash
        if offset is None:
            if fresh >= -tol:
                self.note(
                    key,
                    "info",
                    "",
                    "",
                    mine,
                    theirs,
                    f"first start: recorded {fresh:,.2f} {ccy} as the account's cash outside the run",
                    ADOPT_CASH_OFFSET,
                )
            else:
                self.ask(
                    key,
                    "cash",
                    "",
                    "",
                    mine,
                    theirs,
                    "the account holds less cash than the run's",
                    f"start with a cash offset of {fresh:,.2f} {ccy}",
                    ADOPT_CASH_OFFSET,
                )
            return fresh
        gap = fresh - offset
        if abs(gap) <= tol:
            return offset
        accepted = self.ask(
            key,
            "cash",
            "",
            "",
            f"{mine}, plus {offset:,.2f} outside the run: {run_cash + offset:,.2f}",
            theirs,
            f"cash changed outside the run by {gap:+,.2f} (deposit, withdrawal or a fee we did not see)",
            f"take {fresh:,.2f} {ccy} as the cash outside the run",
            ADOPT_CASH_OFFSET,
        )
        return fresh if accepted else offset
