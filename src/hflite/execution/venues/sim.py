"""The simulated venue: fills working orders against bars, never better than the bar allows.

Rules (documented in README "Fill rules"):
- An order decided on bar t is first eligible on the symbol's next bar (``order.first_bar``).
- Market: the bar's open, plus adverse slippage.
- Stop: if the bar opens beyond the trigger (a gap), at the open; else at the trigger when the
  range reaches it; plus adverse slippage.
- Limit: at the limit price when the range reaches it (no slippage; never better than the limit).
- Protective orders created by a fill inside a bar (``created_bar`` is that bar) did not see that
  bar's open, so they fill at their trigger if the rest of the range reaches it. When stop-loss and
  take-profit could both fill in one bar, the stop-loss fills first (pessimistic).
- At most ``max_volume_share`` of the bar's volume fills per bar (when the instrument reports
  volume; 1.0 = all of it); the rest stays working (GTC), or expires (DAY) or is cancelled (IOC)
  after the bar. DAY means one bar of the run's frequency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hflite.domain.instrument import Instrument, VolumeUnit
from hflite.domain.order import OPEN, Fill, Order, OrderEvent, OrderStatus, OrderType, Side, TimeInForce
from hflite.execution.costs import CommissionModel, SlippageModel

FillHandler = Callable[[Order, Fill], None]
MARKET, STOP = OrderType.MARKET, OrderType.STOP


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

    # -- the Venue port -------------------------------------------------------------------------
    def submit(self, order: Order) -> None:
        """Accept an order (the sim venue accepts every well-formed order)."""
        if order.status is _NEW:  # NEW -> SUBMITTED -> ACCEPTED, neither terminal: the same end state
            order.status = _ACCEPTED
        else:
            order.apply(_SUBMIT)  # raises IllegalTransitionError, as before
            order.apply(_ACCEPT)
        self.working[order.symbol].append(order)

    def cancel(self, order: Order, ts: int) -> None:
        if order.is_open:
            order.apply(OrderEvent.CANCEL, ts=ts)
        book = self.working[order.symbol]
        if order in book:
            book.remove(order)

    def has_working(self, symbol: str) -> bool:
        return bool(self.working[symbol])

    # -- matching -------------------------------------------------------------------------------
    def match(self, symbol: str, bar: BarView, on_fill: FillHandler) -> list[Order]:
        """Match the symbol's working orders against one bar: market orders first (at the open),
        then stops and limits. ``on_fill`` may add orders for the same symbol (protective exits);
        they are matched in this bar too. Returns the orders that expired or were cancelled by
        their time in force at the end of the bar."""
        book = self.working[symbol]
        if not book:
            return []
        inst = self.instruments[symbol]
        cap = self._volume_cap(inst, bar)
        seen: set[str] = set()
        if len(book) == 1:  # the usual bar: one market order, due now (what _next_due would pick)
            first = book[0]
            if first.type is MARKET and first.first_bar <= bar.i and first.status in OPEN:
                seen.add(first.id)
                if cap > 0.0:
                    cap = self._match_one(first, inst, bar.open, cap, bar, on_fill)
                if len(book) == 1 and book[0] is first:  # on_fill added nothing
                    return self._end_of_bar(symbol, bar)
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
        return cap

    @staticmethod
    def _next_due(book: list[Order], i: int, seen: set[str]) -> Order | None:
        """The next order to match: market orders, then stops, then limits (so a stop-loss fills
        before a take-profit in the same bar: the pessimistic order), each in arrival order."""
        stop = limit = None
        for o in book:
            if o.first_bar <= i and o.id not in seen and o.status in OPEN:
                if o.type is MARKET:
                    return o
                if o.type is STOP:
                    stop = stop or o
                else:
                    limit = limit or o
        return stop or limit

    def _end_of_bar(self, symbol: str, bar: BarView) -> list[Order]:
        book = self.working[symbol]
        if len(book) == 1:  # the usual bar: one order, filled or still working
            order = book[0]
            if order.status in OPEN and order.tif is _GTC:
                return []
            if order.status not in OPEN:
                self.working[symbol] = []
                return []
        keep: list[Order] = []
        closed: list[Order] = []
        for order in book:
            if not order.is_open:
                continue
            if order.first_bar <= bar.i and order.tif is not _GTC:
                event = OrderEvent.EXPIRE if order.tif is TimeInForce.DAY else OrderEvent.CANCEL
                order.apply(event, ts=bar.ts)
                closed.append(order)
                continue
            keep.append(order)
        self.working[symbol] = keep
        return closed

    def _volume_cap(self, inst: Instrument, bar: BarView) -> float:
        if inst.volume_unit is VolumeUnit.NONE:
            return float("inf")  # the instrument reports no volume (FX): nothing to cap by
        units = bar.volume if inst.volume_unit is VolumeUnit.UNITS else bar.volume / bar.open
        return max(units * self.max_volume_share, 0.0)

    @staticmethod
    def _trigger_price(order: Order, bar: BarView) -> float | None:
        """The pre-slippage price at which the order fills in this bar, or None."""
        if order.type is OrderType.MARKET:
            return bar.open
        trigger = order.price
        assert trigger is not None
        saw_open = order.created_bar != bar.i  # created inside this bar: never saw its open
        buy = order.side is Side.BUY
        if order.type is OrderType.STOP:
            if saw_open and (bar.open >= trigger if buy else bar.open <= trigger):
                return bar.open  # gapped through the trigger: the open is the worse price
            if buy and bar.high >= trigger or not buy and bar.low <= trigger:
                return trigger
            return None
        # LIMIT: fills at the limit when the range reaches it.
        if buy and bar.low <= trigger or not buy and bar.high >= trigger:
            return trigger
        return None

    def _fill(
        self, order: Order, inst: Instrument, qty: float, price: float, bar: BarView, capped: bool
    ) -> Fill:
        slip = 0.0
        if order.type is not OrderType.LIMIT:
            slip = self.slippage_model.slippage(inst, price, bar.prev_range)
        fill_price = price + slip if order.side is _BUY else price - slip
        fee = self.commission.fee(inst, qty, fill_price)
        return _new(
            Fill, (order.id, order.symbol, order.side, qty, fill_price, fee, bar.ts, bar.i, slip, capped)
        )


_new = tuple.__new__  # Fill(...) without the NamedTuple's Python-level __new__: the same tuple
_SUBMIT, _ACCEPT, _FILL = OrderEvent.SUBMIT, OrderEvent.ACCEPT, OrderEvent.FILL
_NEW, _ACCEPTED = OrderStatus.NEW, OrderStatus.ACCEPTED
_BUY, _GTC = Side.BUY, TimeInForce.GTC
