"""The simulated venue: fills working orders against bars, never better than the bar allows.

Rules (documented in README "Fill rules"):
- An order decided on bar t is first eligible on the symbol's next bar (``order.first_bar``).
- Market: the bar's open, plus adverse slippage.
- Stop: if the bar opens beyond the trigger (a gap), at the open; else at the trigger when the
  range reaches it; plus adverse slippage.
- Limit: at the limit price when the range reaches it (no slippage; never better than the limit).
- Stop-limit (``stop_price`` the trigger, ``price`` the limit): triggers like a stop (a gap through
  the trigger at the open counts), and ``order.triggered`` records it. On the trigger bar it fills
  only if the limit is reachable after the trigger, judged from the trigger point (the open on a
  gap, else the trigger): a buy fills when that point is at or below the limit, at the point plus
  adverse slippage but never above the limit; when the point is above the limit (a gap past the
  limit, or a limit set below the trigger) it does not fill on that bar, since the bar's low may
  have come before the trigger. A sell mirrors this. From the next bar on it is a plain limit at
  ``price`` (at the limit, no slippage).
- Protective orders created by a fill inside a bar (``created_bar`` is that bar) did not see that
  bar's open, so they fill at their trigger if the rest of the range reaches it. Within a bar,
  market orders match first, then stops and stop-limits, then limits, each in arrival order: when
  a stop-loss and a take-profit could both fill in one bar, the stop-loss fills first (pessimistic).
- At most ``max_volume_share`` of the bar's volume fills per bar (when the instrument reports
  volume; 1.0 = all of it); the rest stays working (GTC), or expires (DAY) or is cancelled (IOC)
  after the bar. DAY means one bar of the run's frequency.
- One-cancels-other: when an order with an ``oco_group`` fills wholly, the group's other open orders
  (of any symbol) are cancelled at that bar's time, after ``on_fill`` has run, and ``match`` returns
  them. A partial fill cancels and resizes nothing.
- Brackets (``hflite.domain.order.bracket``): a child submitted with ``first_bar == HELD`` waits for
  its parent (``parent_id``, working at this venue for the same symbol) and cannot fill. When the
  parent fills wholly the children activate for the parent's filled quantity, first eligible on the
  fill's bar without its open (like protective orders). A parent that ends (cancelled, expired)
  after a partial fill activates them for the filled part, from the next bar; one that ends with
  nothing filled cancels them. Children cancelled along with their parent by ``cancel`` are
  returned by the next ``match`` (of any symbol).
- ``replace(order, price)`` moves a working order in place: the limit of a LIMIT, the trigger of a
  STOP, and the trigger (``stop_price``) of a STOP_LIMIT, whose limit stays (once triggered a
  stop-limit is a limit, and moving its trigger changes nothing).
- ``submit`` refuses an order that ``Order.check`` refuses (InvalidOrderError, a ValueError naming
  the order); ``submit_oco`` checks every order before it submits any.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hflite.domain.instrument import Instrument, VolumeUnit
from hflite.domain.order import (
    HELD,
    OPEN,
    Fill,
    IllegalTransitionError,
    InvalidOrderError,
    Order,
    OrderEvent,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from hflite.execution.costs import CommissionModel, SlippageModel

FillHandler = Callable[[Order, Fill], None]
MARKET, STOP, LIMIT, STOP_LIMIT = OrderType.MARKET, OrderType.STOP, OrderType.LIMIT, OrderType.STOP_LIMIT


@dataclass(slots=True)
class BarView:
    """One bar of one symbol, as the venue sees it."""

    k: int  # the symbol's own bar index
    i: int  # the engine's timeline index
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    prev_range: float


class SimVenue:
    """Working orders per symbol, matched bar by bar. No I/O, no clock: the engine drives it."""

    def __init__(
        self,
        instruments: dict[str, Instrument],
        commission: CommissionModel,
        slippage: SlippageModel,
        max_volume_share: float = 0.1,
    ) -> None:
        self.instruments = instruments
        self.commission = commission
        self.slippage_model = slippage
        self.max_volume_share = max_volume_share
        self.working: dict[str, list[Order]] = {s: [] for s in instruments}
        self._groups: dict[str, list[Order]] = {}  # oco_group -> its members still open
        self._children: dict[str, list[Order]] = {}  # parent id -> its children still held
        self._closed: list[Order] = []  # closed through a link (OCO, parent), not yet returned
        self._linked = False  # any OCO group or held child registered: the link hooks must run
        self._last_i = -1  # engine index of the bar matched last

    # -- the Venue port -------------------------------------------------------------------------
    def submit(self, order: Order) -> None:
        """Accept a well-formed order; raises InvalidOrderError (a ValueError) for one that is not."""
        if (
            order.type is not MARKET
            or not 0.0 < order.qty < _INF
            or order.oco_group is not None
            or order.parent_id is not None
        ):  # the usual order, a plain market one with a sane quantity, needs neither check nor link
            self._submit_checked(order)
            return
        if order.status is _NEW:  # NEW -> SUBMITTED -> ACCEPTED, neither terminal: the same end state
            order.status = _ACCEPTED
        else:
            order.apply(_SUBMIT)  # raises IllegalTransitionError, as before
            order.apply(_ACCEPT)
        self.working[order.symbol].append(order)

    def _submit_checked(self, order: Order) -> None:
        """``submit`` for every order but a plain market one: check, accept, link."""
        order.check()
        linked = order.oco_group is not None or order.parent_id is not None
        parent = self._parent(order) if linked and order.first_bar == HELD else None
        if order.status is _NEW:
            order.status = _ACCEPTED
        else:
            order.apply(_SUBMIT)
            order.apply(_ACCEPT)
        self.working[order.symbol].append(order)
        if linked:
            self._link(order, parent)

    def submit_oco(self, orders: list[Order]) -> None:
        """Submit orders that belong together (a stop-loss and take-profit sharing an ``oco_group``,
        or ``bracket()``'s entry and exits) in list order; every one is checked before any is sent."""
        ids: set[str] = set()
        for order in orders:
            if order.status is not _NEW:
                raise IllegalTransitionError(f"order {order.id}: submit not allowed when {order.status}")
            order.check()
            if order.first_bar == HELD and order.parent_id not in ids:
                self._parent(order)  # raises unless the parent is working here
            ids.add(order.id)
        for order in orders:
            self.submit(order)

    def cancel(self, order: Order, ts: int) -> None:
        """Cancel a working order; a no-op for one already closed (filled, cancelled, expired)."""
        if order.is_open:
            order.apply(OrderEvent.CANCEL, ts=ts)
            if self._linked:
                self._unlink(order, ts, self._last_i, self._last_i, self._closed)
        _discard(self.working[order.symbol], order)

    def resize(self, order: Order, qty: float) -> None:
        """Change a working order's total quantity in place (a protective order follows its
        position as it is partly filled)."""
        order.qty = qty

    def replace(self, order: Order, price: float) -> None:
        """Move a working order's price in place: a LIMIT's limit or a STOP's trigger (``price``), a
        STOP_LIMIT's trigger (``stop_price``; its limit stays). A no-op for an order no longer open;
        raises InvalidOrderError for a market order or a price that is not positive and finite."""
        if order.type is MARKET:
            raise InvalidOrderError(f"order {order.id}: a market order has no price to replace")
        if not 0.0 < price < _INF:
            raise InvalidOrderError(
                f"order {order.id}: replace price {price} is not a positive finite number"
            )
        if not order.is_open:
            return
        if order.type is STOP_LIMIT:
            order.stop_price = price
        else:
            order.price = price

    def has_working(self, symbol: str) -> bool:
        return bool(self.working[symbol])

    # -- matching -------------------------------------------------------------------------------
    def match(self, symbol: str, bar: BarView, on_fill: FillHandler) -> list[Order]:
        """Match the symbol's working orders against one bar: market orders first (at the open),
        then stops, stop-limits and limits. ``on_fill`` may add orders for the same symbol
        (protective exits); they are matched in this bar too. Returns the orders that closed
        without a fill: by their time in force at the end of the bar, by OCO or with their parent
        during it, and by ``cancel`` of a parent since the last match."""
        book = self.working[symbol]
        self._last_i = bar.i
        if not book:
            return self._take_closed() if self._closed else []
        inst = self.instruments[symbol]
        cap = self._volume_cap(inst, bar)
        first = book[0]
        if len(book) == 1 and first.type is MARKET and first.first_bar <= bar.i and first.status in OPEN:
            # the usual bar: one market order, due now (what _next_due would pick)
            if cap > 0.0:
                cap = self._match_one(first, inst, bar.open, cap, bar, on_fill)
            if len(book) == 1 and book[0] is first:  # on_fill added nothing
                return self._end_of_bar(symbol, bar)
            seen = {first.id}
        else:
            seen = set()
        while True:
            order = self._next_due(book, bar.i, seen)
            if order is None:
                break
            seen.add(order.id)
            price = self._trigger_price(order, bar)
            if price is None or cap <= 0.0:
                continue
            cap = self._match_one(order, inst, price, cap, bar, on_fill)
        return self._end_of_bar(symbol, bar)

    def _match_one(
        self, order: Order, inst: Instrument, price: float, cap: float, bar: BarView, on_fill: FillHandler
    ) -> float:
        """The loop body of ``match`` for one order that triggers at ``price`` with ``cap > 0``
        units of volume left: the volume left afterwards."""
        remaining = order.remaining
        qty = min(remaining, cap)
        qty = inst.round_qty(qty) if qty < remaining else qty
        if qty > 0.0:
            cap -= qty
            fill = self._fill(order, inst, qty, price, bar, capped=qty < remaining)
            order.apply(_FILL, fill_qty=qty, fill_price=fill.price, ts=bar.ts)
            on_fill(order, fill)
            if self._linked and order.status is _FILLED:
                self._filled(order, bar)
        return cap

    @staticmethod
    def _next_due(book: list[Order], i: int, seen: set[str]) -> Order | None:
        """The next order to match: market orders, then stops and stop-limits, then limits (so a
        stop-loss fills before a take-profit in the same bar: the pessimistic order), each in
        arrival order."""
        stop = limit = None
        for o in book:
            if o.first_bar <= i and o.id not in seen and o.status in OPEN:
                if o.type is MARKET:
                    return o
                if o.type is LIMIT:
                    limit = limit or o
                else:
                    stop = stop or o
        return stop or limit

    def _end_of_bar(self, symbol: str, bar: BarView) -> list[Order]:
        """Expire or cancel what the time in force ends, keep the rest; return every order closed
        without a fill since the last match returned, in the order they closed."""
        book = self.working[symbol]
        if len(book) == 1 and not self._closed:  # the usual bar: one order, filled or still working
            order = book[0]
            if order.status in OPEN and order.tif is _GTC:
                return []
            if order.status not in OPEN:
                self.working[symbol] = []
                return []
        closed, self._closed = self._closed, []
        keep: list[Order] = []
        self.working[symbol] = keep  # links may drop orders from the new book while we walk the old
        for order in book:
            if not order.is_open:
                continue
            if order.first_bar <= bar.i and order.tif is not _GTC:
                event = OrderEvent.EXPIRE if order.tif is TimeInForce.DAY else OrderEvent.CANCEL
                order.apply(event, ts=bar.ts)
                closed.append(order)
                if self._linked:
                    self._unlink(order, bar.ts, bar.i + 1, bar.i, closed)
                continue
            keep.append(order)
        return closed

    def _take_closed(self) -> list[Order]:
        closed, self._closed = self._closed, []
        return closed

    # -- links: OCO groups and bracket children ---------------------------------------------------
    def _parent(self, child: Order) -> Order:
        """The working parent a HELD child waits for; raises InvalidOrderError if there is none."""
        pid = child.parent_id
        for o in self.working[child.symbol]:
            if o.id == pid and (o.is_open or o.filled_qty > 0.0):
                return o
        raise InvalidOrderError(
            f"order {child.id}: held for parent {pid}, which is not working at this venue "
            "(submit the parent first)"
        )

    def _link(self, order: Order, parent: Order | None) -> None:
        """Register a submitted order in its OCO group and under the parent it waits for."""
        self._linked = True
        if order.oco_group is not None:
            self._groups.setdefault(order.oco_group, []).append(order)
        if parent is None:
            return
        if parent.is_open:
            self._children.setdefault(parent.id, []).append(order)
        else:  # the parent filled earlier in this bar: the child is live at once
            _activate([order], parent.filled_qty, self._last_i, self._last_i)

    def _filled(self, order: Order, bar: BarView) -> None:
        """An order filled wholly: cancel the rest of its OCO group, activate its children."""
        group = order.oco_group
        if group is not None:
            for o in self._groups.pop(group, ()):
                if o is not order and o.is_open:
                    self._drop(o, bar.ts, bar.i, bar.i, self._closed)
        children = self._children.pop(order.id, None)
        if children:
            _activate(children, order.filled_qty, bar.i, bar.i)

    def _unlink(self, order: Order, ts: int, first_bar: int, created_bar: int, out: list[Order]) -> None:
        """An order closed without filling wholly: leave its group and its parent's list; activate its
        children for what it filled (``first_bar``, ``created_bar``), or cancel them into ``out``."""
        group = order.oco_group
        if group is not None and group in self._groups:
            members = self._groups[group]
            _discard(members, order)
            if not members:
                del self._groups[group]
        pid = order.parent_id
        if pid is not None and pid in self._children:
            held = self._children[pid]
            _discard(held, order)
            if not held:
                del self._children[pid]
        children = self._children.pop(order.id, None)
        if not children:
            return
        if order.filled_qty > 0.0:
            _activate(children, order.filled_qty, first_bar, created_bar)
            return
        for child in children:
            if child.is_open:
                self._drop(child, ts, first_bar, created_bar, out)

    def _drop(self, order: Order, ts: int, first_bar: int, created_bar: int, out: list[Order]) -> None:
        """Cancel an order because of a link (OCO sibling, parent gone), off its book, into ``out``."""
        order.apply(OrderEvent.CANCEL, ts=ts)
        _discard(self.working[order.symbol], order)
        out.append(order)
        self._unlink(order, ts, first_bar, created_bar, out)

    # -- prices ---------------------------------------------------------------------------------
    def _volume_cap(self, inst: Instrument, bar: BarView) -> float:
        unit = inst.volume_unit
        if unit is _NO_VOLUME:
            return _INF  # the instrument reports no volume (FX): nothing to cap by
        units = bar.volume if unit is _UNITS else bar.volume / bar.open
        return max(units * self.max_volume_share, 0.0)

    @staticmethod
    def _trigger_price(order: Order, bar: BarView) -> float | None:
        """The pre-slippage price at which the order fills in this bar, or None. Marks a stop-limit
        ``triggered`` when its trigger fires."""
        otype = order.type  # module-level enum members: ``OrderType.STOP`` is a slow class lookup
        if otype is MARKET:
            return bar.open
        trigger = order.price
        assert trigger is not None
        saw_open = order.created_bar != bar.i  # created inside this bar: never saw its open
        buy = order.side is _BUY
        if otype is STOP:
            if saw_open and (bar.open >= trigger if buy else bar.open <= trigger):
                return bar.open  # gapped through the trigger: the open is the worse price
            if buy and bar.high >= trigger or not buy and bar.low <= trigger:
                return trigger
            return None
        if otype is LIMIT:  # fills at the limit when the range reaches it
            if buy and bar.low <= trigger or not buy and bar.high >= trigger:
                return trigger
            return None
        return _stop_limit_price(order, bar, buy, saw_open)

    def _fill(
        self, order: Order, inst: Instrument, qty: float, price: float, bar: BarView, capped: bool
    ) -> Fill:
        slip = 0.0
        otype = order.type
        if otype is MARKET or otype is STOP:
            slip = self.slippage_model.slippage(inst, price, bar.prev_range)
        elif otype is STOP_LIMIT:  # slippage on the trigger bar only, and never past the limit
            room = abs(order.price - price)  # type: ignore[operator]
            if room > 0.0:
                slip = min(self.slippage_model.slippage(inst, price, bar.prev_range), room)
        fill_price = price + slip if order.side is _BUY else price - slip
        fee = self.commission.fee(inst, qty, fill_price)
        return _new(
            Fill, (order.id, order.symbol, order.side, qty, fill_price, fee, bar.ts, bar.i, slip, capped)
        )


def _stop_limit_price(order: Order, bar: BarView, buy: bool, saw_open: bool) -> float | None:
    """A stop-limit's pre-slippage fill price in this bar, or None (see the module's rules)."""
    limit = order.price
    assert limit is not None
    if order.triggered:  # a plain limit from the bar after the trigger on
        if buy and bar.low <= limit or not buy and bar.high >= limit:
            return limit
        return None
    stop = order.stop_price
    assert stop is not None
    if saw_open and (bar.open >= stop if buy else bar.open <= stop):
        point = bar.open  # gapped through the trigger
    elif buy and bar.high >= stop or not buy and bar.low <= stop:
        point = stop
    else:
        return None
    order.triggered = True
    if point > limit if buy else point < limit:
        return None  # the limit is reachable only on a move back, which may have come first
    return point


def _activate(children: list[Order], qty: float, first_bar: int, created_bar: int) -> None:
    """Make held children live for ``qty`` (their parent's filled quantity)."""
    for child in children:
        if child.is_open:
            child.qty = qty
            child.first_bar = first_bar
            child.created_bar = created_bar


def _discard(orders: list[Order], order: Order) -> None:
    """Remove ``order`` (this object, not an equal one) from ``orders`` if it is there."""
    for j, o in enumerate(orders):
        if o is order:
            del orders[j]
            return


_new = tuple.__new__  # Fill(...) without the NamedTuple's Python-level __new__: the same tuple
_SUBMIT, _ACCEPT, _FILL = OrderEvent.SUBMIT, OrderEvent.ACCEPT, OrderEvent.FILL
_NEW, _ACCEPTED, _FILLED = OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.FILLED
_BUY, _GTC = Side.BUY, TimeInForce.GTC
_NO_VOLUME, _UNITS = VolumeUnit.NONE, VolumeUnit.UNITS
_INF = float("inf")
