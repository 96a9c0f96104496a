"""Reconciliation on a restart: 1,000 journal orders (mixed states) against a snapshot of 1,000 venue
orders and 2,000 fills, in 20 symbols.

Each order fills in two executions of 5 at the venue: 10 units, or 15 for the tenth of the orders the
venue cancelled after both. The journal holds a prefix of that history: all of it, one fill, none, or
it lost track (unknown). The book and cash
follow the executions the journal booked, so the case reconciles clean: every unbooked fill, every
settlement and every closing event is produced. Timed with ``time.perf_counter``, best of 5.

Target: ``reconcile_ms`` < 1000. Run with ``python bench/reconcile.py``.
"""

from __future__ import annotations

import random
import time

from hflite.domain.order import Order, OrderEvent, OrderStatus, OrderType, Side
from hflite.execution.reconcile import reconcile
from hflite.execution.venues.base import VenueFill, VenueOrder, VenuePosition, VenueSnapshot

TARGET_MS = 1000.0
ORDERS = 1_000
SYMBOLS = [f"S{j:02d}" for j in range(20)]
T0 = 1_800_000_000_000_000_000
OFFSET = 1_000.0


class Case:
    """The reconcile inputs for one restart."""

    def __init__(self, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.orders: dict[str, Order] = {}
        self.applied: set[str] = set()
        self.positions: dict[str, float] = {}
        self.cash = 1_000_000.0
        venue_orders: dict[str, VenueOrder] = {}
        fills: list[VenueFill] = []
        venue_pos: dict[str, float] = {}
        venue_cash = self.cash + OFFSET
        for n in range(ORDERS):
            sym, side = SYMBOLS[n % len(SYMBOLS)], rng.choice(list(Side))
            cancelled = n % 10 == 0  # after both fills, 5 short of its 15
            qty = 15.0 if cancelled else 10.0
            journal = Order(f"o{n}", sym, side, OrderType.MARKET, qty, T0 + n)
            journal.apply(OrderEvent.SUBMIT)
            journal.apply(OrderEvent.ACCEPT)
            venue = Order(journal.id, sym, side, OrderType.MARKET, qty, T0 + n, status=OrderStatus.ACCEPTED)
            execs = [
                VenueFill(f"x{n}-{k}", journal.id, sym, side, 5.0, 100.0 + rng.random(), 0.05, T0 + n + k)
                for k in range(2)
            ]
            booked = rng.choice([0, 1, 2, 2])
            for k, f in enumerate(execs):
                signed = side.sign * f.qty
                venue.apply(OrderEvent.FILL, fill_qty=f.qty, fill_price=f.price, ts=f.ts)
                venue_pos[sym] = venue_pos.get(sym, 0.0) + signed
                venue_cash -= signed * f.price + f.fee
                if k < booked:
                    journal.apply(OrderEvent.FILL, fill_qty=f.qty, fill_price=f.price, ts=f.ts)
                    self.applied.add(f.event_id)
                    self.positions[sym] = self.positions.get(sym, 0.0) + signed
                    self.cash -= signed * f.price + f.fee
            if cancelled:
                venue.apply(OrderEvent.CANCEL, ts=T0 + n + 2)
            if journal.is_open and n % 7 == 0:
                journal.apply(OrderEvent.LOSE_TRACK)
            fills += execs
            self.orders[journal.id] = journal
            venue_orders[journal.id] = VenueOrder(
                journal.id,
                f"V{n}",
                sym,
                side,
                OrderType.MARKET,
                qty,
                venue.filled_qty,
                venue.avg_fill_price,
                venue.status,
                created_ts=T0 + n,
            )
        positions = {s: VenuePosition(s, q, 100.5) for s, q in venue_pos.items()}
        self.snapshot = VenueSnapshot(T0 + 10 * ORDERS, {"USD": venue_cash}, positions, venue_orders, fills)

    def run(self) -> int:
        rec = reconcile(
            self.orders,
            self.applied,
            self.positions,
            {"USD": self.cash},
            self.snapshot,
            symbols=set(SYMBOLS),
            cash_offset=OFFSET,
        )
        if not rec.clean:
            raise SystemExit(f"the benchmark case should reconcile clean: {rec.summary()}")
        return len(rec.events)


def main(rounds: int = 5) -> None:
    case = Case()
    best, events = float("inf"), 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        events = case.run()
        best = min(best, time.perf_counter() - t0)
    ms = best * 1e3
    print(
        f"reconcile: {ORDERS:,} journal orders vs {len(case.snapshot.orders):,} venue orders and "
        f"{len(case.snapshot.fills):,} fills -> {events:,} events: {ms:.2f} ms (best of {rounds}); "
        f"target < {TARGET_MS:.0f} ms: {ms / TARGET_MS:.4f} of it"
    )


if __name__ == "__main__":
    main()
