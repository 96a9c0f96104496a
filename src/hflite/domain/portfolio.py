"""Positions, round-trip trades and a multi-currency cash ledger, driven by fills."""

from __future__ import annotations

from dataclasses import dataclass, field

from hflite.domain.order import Fill, Side

EPS = 1e-9


@dataclass(slots=True)
class Trade:
    """A round trip: from flat to flat in one symbol. P&L and fees in the quote currency."""

    symbol: str
    direction: int
    entry_ts: int
    entry_bar: int
    entry_price: float
    qty: float = 0.0
    exit_ts: int | None = None
    exit_bar: int | None = None
    exit_price: float = 0.0
    exit_qty: float = 0.0
    pnl: float = 0.0  # gross of fees, realised
    fees: float = 0.0
    exit_reason: str = ""
    entry_reason: str = ""

    @property
    def is_open(self) -> bool:
        return self.exit_ts is None


@dataclass(slots=True)
class Position:
    symbol: str
    qty: float = 0.0
    avg_price: float = 0.0
    trade: Trade | None = None


@dataclass(slots=True)
class Portfolio:
    """Cash per currency plus positions. Equity needs prices and FX rates, so it is computed outside."""

    base_currency: str = "USD"
    cash: dict[str, float] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    fees_paid: dict[str, float] = field(default_factory=dict)

    @classmethod
    def with_cash(cls, amount: float, currency: str = "USD") -> Portfolio:
        return cls(base_currency=currency, cash={currency: float(amount)})

    def qty(self, symbol: str) -> float:
        pos = self.positions.get(symbol)
        return pos.qty if pos else 0.0

    def apply_fill(self, fill: Fill, currency: str, reason: str = "") -> None:
        """Book a fill: cash moves by price*qty plus fee; the position and its trade follow."""
        if not fill.qty > 0 or not fill.price > 0:
            raise ValueError(
                f"fill {fill.order_id}: quantity {fill.qty} and price {fill.price} must be positive"
            )
        signed = fill.side.sign * fill.qty
        self.cash[currency] = self.cash.get(currency, 0.0) - signed * fill.price - fill.fee
        self.fees_paid[currency] = self.fees_paid.get(currency, 0.0) + fill.fee
        pos = self.positions.get(fill.symbol)
        if pos is None:
            pos = self.positions[fill.symbol] = Position(fill.symbol)
        remaining = signed
        fee_left = fill.fee
        # Reduce first (possibly to flat), then open the rest in the other direction.
        if pos.qty and (pos.qty > 0) != (signed > 0):
            closing = min(abs(remaining), abs(pos.qty)) * (1 if signed > 0 else -1)
            share = abs(closing) / abs(signed)
            self._reduce(pos, closing, fill, fee_left * share, reason)
            fee_left -= fee_left * share
            remaining -= closing
        if abs(remaining) > EPS:
            self._increase(pos, remaining, fill, fee_left, reason)
        if abs(pos.qty) <= EPS:
            pos.qty, pos.avg_price = 0.0, 0.0

    def _increase(self, pos: Position, signed: float, fill: Fill, fee: float, reason: str) -> None:
        new_qty = pos.qty + signed
        pos.avg_price = (pos.avg_price * abs(pos.qty) + fill.price * abs(signed)) / abs(new_qty)
        pos.qty = new_qty
        if pos.trade is None:
            pos.trade = Trade(
                fill.symbol, 1 if signed > 0 else -1, fill.ts, fill.bar_index, fill.price, entry_reason=reason
            )
            self.trades.append(pos.trade)
        t = pos.trade
        t.entry_price = (t.entry_price * t.qty + fill.price * abs(signed)) / (t.qty + abs(signed))
        t.qty += abs(signed)
        t.fees += fee

    def _reduce(self, pos: Position, signed: float, fill: Fill, fee: float, reason: str) -> None:
        pnl = (fill.price - pos.avg_price) * -signed  # closing a long sells (signed < 0)
        pos.qty += signed
        t = pos.trade
        if t is not None:
            t.exit_price = (t.exit_price * t.exit_qty + fill.price * abs(signed)) / (t.exit_qty + abs(signed))
            t.exit_qty += abs(signed)
            t.pnl += pnl
            t.fees += fee
            if abs(pos.qty) <= EPS:
                t.exit_ts, t.exit_bar, t.exit_reason = fill.ts, fill.bar_index, reason
                pos.trade = None


def signed_qty(side: Side, qty: float) -> float:
    return side.sign * qty
