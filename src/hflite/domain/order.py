"""Orders as a state machine driven by events, and the fills that move them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return _SIGN[self]


_SIGN = {Side.BUY: 1, Side.SELL: -1}


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"


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


@dataclass(slots=True)
class Order:
    """One order. Quantities are positive; ``side`` gives the direction.

    ``parent_id`` links a protective (stop-loss / take-profit) order to the entry that created it;
    ``oco_group`` cancels the siblings when one of a group fills.
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

    @property
    def remaining(self) -> float:
        return max(self.qty - self.filled_qty, 0.0)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

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
