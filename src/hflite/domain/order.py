"""Orders as a state machine driven by events, and the fills that move them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NamedTuple, NoReturn


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return _SIGN[self]


_SIGN = {Side.BUY: 1, Side.SELL: -1}


class OrderType(StrEnum):
    """MARKET fills at the next price; LIMIT at ``price`` or better; STOP becomes a market order when
    the price reaches ``price``; STOP_LIMIT becomes a limit order at ``price`` when the price reaches
    ``stop_price``.

    A buy STOP_LIMIT with ``price >= stop_price`` buys once the price rises to the stop, paying at
    most the limit (the limit caps the slippage of a breakout entry); with ``price < stop_price`` it
    buys only on a pull-back to the limit after the price has risen to the stop. Mirrored for a
    sell: ``price <= stop_price`` sells once the price falls to the stop, for no less than the limit;
    ``price > stop_price`` sells only on a bounce to the limit after the fall.
    """

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    """GTC works until filled or cancelled; DAY expires after its first bar; IOC fills what it can
    on its first bar and cancels the rest."""

    GTC = "gtc"
    DAY = "day"
    IOC = "ioc"


class OrderStatus(StrEnum):
    NEW = "new"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


class OrderEvent(StrEnum):
    SUBMIT = "submit"
    ACCEPT = "accept"
    REJECT = "reject"
    FILL = "fill"
    CANCEL = "cancel"
    EXPIRE = "expire"
    LOSE_TRACK = "lose_track"  # timeout or 5xx on send: outcome unknown until reconciled
    RECONCILE = "reconcile"  # reconciliation settles an unknown order (target status given)


S, E = OrderStatus, OrderEvent
TERMINAL = frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED})
OPEN = frozenset({S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED})

#: (status, event) -> next status. A FILL's next status depends on the remaining quantity.
TRANSITIONS: dict[tuple[OrderStatus, OrderEvent], OrderStatus] = {
    (S.NEW, E.SUBMIT): S.SUBMITTED,
    (S.NEW, E.REJECT): S.REJECTED,  # refused before it left us (risk or validation)
    (S.SUBMITTED, E.ACCEPT): S.ACCEPTED,
    (S.SUBMITTED, E.REJECT): S.REJECTED,
    (S.SUBMITTED, E.LOSE_TRACK): S.UNKNOWN,
    (S.SUBMITTED, E.CANCEL): S.CANCELLED,
    (S.SUBMITTED, E.FILL): S.FILLED,  # a fill can arrive before the venue's acknowledgement
    (S.SUBMITTED, E.EXPIRE): S.EXPIRED,
    (S.UNKNOWN, E.FILL): S.FILLED,  # a late fill proves a lost order reached the venue
    (S.ACCEPTED, E.FILL): S.FILLED,
    (S.ACCEPTED, E.CANCEL): S.CANCELLED,
    (S.ACCEPTED, E.EXPIRE): S.EXPIRED,
    (S.ACCEPTED, E.LOSE_TRACK): S.UNKNOWN,
    (S.PARTIALLY_FILLED, E.FILL): S.FILLED,
    (S.PARTIALLY_FILLED, E.CANCEL): S.CANCELLED,
    (S.PARTIALLY_FILLED, E.EXPIRE): S.EXPIRED,
    (S.PARTIALLY_FILLED, E.LOSE_TRACK): S.UNKNOWN,
}
RECONCILABLE = frozenset({S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED})


class IllegalTransitionError(ValueError):
    """An event that the order's current status does not allow."""


class InvalidOrderError(ValueError):
    """An order a venue cannot work: bad quantity, or a price its type needs is missing or bad."""


#: ``first_bar`` of a bracket child while its parent has not filled: no bar index reaches it, so
#: the venue holds the child (it cannot fill) until the parent's fill sets its real first bar.
HELD: Final = 2**62


@dataclass(slots=True)
class Order:
    """One order. Quantities are positive; ``side`` gives the direction.

    ``parent_id`` links a protective (stop-loss / take-profit) order to the entry that created it;
    ``oco_group`` cancels the siblings when one of a group fills wholly. ``price`` is the limit
    (LIMIT, STOP_LIMIT) or the trigger (STOP); ``stop_price`` is a STOP_LIMIT's trigger, and
    ``triggered`` records that it has fired (from then on it works as a limit at ``price``).
    The fields after ``closed_ts`` are trailing on purpose: the engine builds orders positionally.
    """

    id: str
    symbol: str
    side: Side
    type: OrderType
    qty: float
    created_ts: int
    price: float | None = None  # limit or stop trigger price
    tif: TimeInForce = TimeInForce.GTC
    status: OrderStatus = OrderStatus.NEW
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    reason: str = ""
    decision_id: str = ""
    parent_id: str | None = None
    oco_group: str | None = None
    reduce_only: bool = False
    created_bar: int = -1  # engine index of the bar on which the order was created
    first_bar: int = -1  # engine index of the first bar the order may fill on
    closed_ts: int | None = None
    stop_price: float | None = None  # STOP_LIMIT: the trigger (``price`` is then the limit)
    triggered: bool = False  # STOP_LIMIT: the trigger has fired; the order now works as a limit
    # Execution quality (``execution.quality``): the decision bar's close, the last price known when
    # the order was handed to the venue, and when both happened (wall-clock ns UTC), stamped in the
    # journaled runs (replay, paper, live). 0: not recorded (a backtest measures nothing).
    decision_price: float = 0.0
    arrival_price: float = 0.0
    decided_ns: int = 0
    sent_ns: int = 0

    @property
    def remaining(self) -> float:
        return max(self.qty - self.filled_qty, 0.0)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    def check(self) -> None:
        """Raise InvalidOrderError (a ValueError naming the order) unless a venue can work it: a
        positive finite quantity, and the prices its type needs, positive and finite (LIMIT and
        STOP: ``price``; STOP_LIMIT: ``price`` and ``stop_price``, either above the other); a HELD
        order names its parent."""
        if not 0.0 < self.qty < math.inf:  # also refuses NaN
            self._invalid(f"quantity {self.qty} is not a positive finite number")
        kind = self.type
        for name in _PRICES_NEEDED[kind]:
            value = getattr(self, name)
            if value is None:
                self._invalid(f"a {kind} order needs {name}")
            if not 0.0 < value < math.inf:
                self._invalid(f"{name} {value} is not a positive finite number")
        if self.stop_price is not None and kind is not _STOP_LIMIT:
            self._invalid(f"stop_price is only for stop_limit orders (a {kind} order triggers at price)")
        if self.first_bar == HELD and self.parent_id is None:
            self._invalid("held for a parent (first_bar HELD) but has no parent_id")

    def _invalid(self, why: str) -> NoReturn:
        raise InvalidOrderError(f"order {self.id} ({self.side} {self.type} {self.symbol}): {why}")

    def apply(
        self,
        event: OrderEvent,
        *,
        fill_qty: float = 0.0,
        fill_price: float = 0.0,
        ts: int | None = None,
        target: OrderStatus | None = None,
    ) -> OrderStatus:
        """Move the order by one event; raises IllegalTransitionError on an illegal one."""
        if event is _RECONCILE:
            return self._reconcile(fill_qty, fill_price, ts, target)
        nxt = TRANSITIONS.get((self.status, event))
        if nxt is None:
            raise IllegalTransitionError(f"order {self.id}: {event} not allowed when {self.status}")
        if event is _FILL:
            remaining = self.qty - self.filled_qty
            if remaining < 0.0:
                remaining = 0.0
            if not 0.0 < fill_qty <= remaining + 1e-9:
                raise IllegalTransitionError(
                    f"order {self.id}: fill of {fill_qty} with {self.remaining} remaining"
                )
            if not fill_price > 0.0:  # also refuses NaN
                raise IllegalTransitionError(f"order {self.id}: fill price {fill_price} is not positive")
            total = self.filled_qty + fill_qty
            self.avg_fill_price = (self.avg_fill_price * self.filled_qty + fill_price * fill_qty) / total
            self.filled_qty = total
            left = self.qty - total  # ``remaining``, without the property call
            nxt = _FILLED if max(left, 0.0) <= 1e-9 else _PARTIALLY_FILLED
        self.status = nxt
        if nxt in TERMINAL:
            self.closed_ts = ts
        return nxt

    def _reconcile(
        self, fill_qty: float, fill_price: float, ts: int | None, target: OrderStatus | None
    ) -> OrderStatus:
        if self.status is not OrderStatus.UNKNOWN or target not in RECONCILABLE:
            raise IllegalTransitionError(f"order {self.id}: cannot reconcile {self.status} to {target}")
        if fill_qty:  # the venue's record of what filled while we did not know
            if not 0.0 < fill_qty <= self.qty + 1e-9 or not fill_price > 0.0:
                raise IllegalTransitionError(
                    f"order {self.id}: bad reconciled fill {fill_qty} @ {fill_price}"
                )
            self.filled_qty, self.avg_fill_price = fill_qty, fill_price
        self.status = target
        if target in TERMINAL:
            self.closed_ts = ts
        return self.status


_RECONCILE, _FILL = OrderEvent.RECONCILE, OrderEvent.FILL
_STOP_LIMIT = OrderType.STOP_LIMIT
#: The price fields each order type needs (``Order.check``).
_PRICES_NEEDED: dict[OrderType, tuple[str, ...]] = {
    OrderType.MARKET: (),
    OrderType.LIMIT: ("price",),
    OrderType.STOP: ("price",),
    OrderType.STOP_LIMIT: ("price", "stop_price"),
}
_FILLED, _PARTIALLY_FILLED = OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED


class Fill(NamedTuple):
    """An execution: ``price`` includes slippage; ``fee`` is in the instrument's quote currency."""

    order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    fee: float
    ts: int
    bar_index: int
    slippage: float = 0.0  # price units, always >= 0 (against us)
    liquidity_capped: bool = False


class FillRecord(NamedTuple):
    """A fill as the journal keeps it in replay, paper and live: the ``Fill`` (same fields first) with
    what measures its quality (``execution.quality``): the order's type and price at the fill, the
    decision's bar-time and price, the arrival price, and when it was decided, sent and applied
    (wall-clock ns UTC), and the bar-time the engine booked it at."""

    order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    fee: float
    ts: int  # the execution's time: the venue's clock (a broker) or the bar-time (the sim venue)
    bar_index: int
    slippage: float
    liquidity_capped: bool
    order_type: str
    limit_price: float | None  # the order's limit or trigger price when it filled (None: market)
    decision_ts: int  # the decision bar-time (the order's created_ts)
    decision_price: float
    arrival_price: float
    decided_ns: int
    sent_ns: int
    applied_ns: int
    bar_ts: int  # the bar-time the engine applied the fill at


def bracket(
    entry: Order,
    stop_price: float | None,
    take_profit: float | None,
    *,
    make_id: Callable[[str], str] | None = None,
) -> list[Order]:
    """The entry followed by its exits: a STOP at ``stop_price`` (stop-loss) and a LIMIT at
    ``take_profit`` (take-profit), on the opposite side, for the entry's quantity, reduce-only, GTC,
    with ``parent_id = entry.id``. With both exits they share ``oco_group = f"{entry.id}-oco"``.

    The exits are HELD (``first_bar``): a venue activates them when the entry fills, for the filled
    quantity. ``make_id(role)`` names an exit (``role`` is "sl" or "tp"; default
    ``f"{entry.id}-{role}"``). Raises InvalidOrderError for a bad entry, no exit, a bad exit price,
    or exits on the wrong side (a long's stop below, its take-profit above, each other and a priced
    entry's ``price``)."""
    entry.check()
    if stop_price is None and take_profit is None:
        entry._invalid("a bracket needs a stop_price or a take_profit")
    buy = entry.side is Side.BUY
    below, above = ("below", "above") if buy else ("above", "below")
    if (
        stop_price is not None
        and take_profit is not None
        and (stop_price >= take_profit if buy else stop_price <= take_profit)
    ):
        entry._invalid(f"the stop {stop_price} must be {below} the take-profit {take_profit}")
    ref = entry.price  # a priced entry fills at or around it: the exits must be on either side
    if ref is not None and entry.type is not OrderType.MARKET:
        if stop_price is not None and (stop_price >= ref if buy else stop_price <= ref):
            entry._invalid(f"the stop {stop_price} must be {below} the entry price {ref}")
        if take_profit is not None and (take_profit <= ref if buy else take_profit >= ref):
            entry._invalid(f"the take-profit {take_profit} must be {above} the entry price {ref}")
    name = make_id or (lambda role: f"{entry.id}-{role}")
    group = f"{entry.id}-oco" if stop_price is not None and take_profit is not None else None
    exits = [entry]
    for role, kind, price, reason in (
        ("sl", OrderType.STOP, stop_price, "stop-loss"),
        ("tp", OrderType.LIMIT, take_profit, "take-profit"),
    ):
        if price is None:
            continue
        child = Order(
            name(role),
            entry.symbol,
            Side.SELL if buy else Side.BUY,
            kind,
            entry.qty,
            entry.created_ts,
            price,
            TimeInForce.GTC,
            reason=reason,
            decision_id=entry.decision_id,
            parent_id=entry.id,
            oco_group=group,
            reduce_only=True,
            created_bar=entry.created_bar,
            first_bar=HELD,
        )
        child.check()
        exits.append(child)
    return exits
