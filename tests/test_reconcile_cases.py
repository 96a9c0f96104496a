"""Reconciliation with the venue: each case yields exactly the right events and differences, and the
events bring the journal's orders and book to the venue's state through ``EventVenue``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hflite.domain.order import OPEN, Fill, Order, OrderEvent, OrderStatus, OrderType, Side
from hflite.execution.reconcile import (
    ADOPT_CASH_OFFSET,
    ADOPT_POSITION,
    BOOK_FILL,
    CANCEL_AT_VENUE,
    CLOSE_IN_JOURNAL,
    Adjustment,
    Reconciliation,
    reconcile,
)
from hflite.execution.venues.base import (
    EventVenue,
    VenueEvent,
    VenueFill,
    VenueOrder,
    VenuePosition,
    VenueSnapshot,
)
from hflite.execution.venues.base import VenueEventKind as K

S = OrderStatus
SNAP_TS = 1_800_000_000_000_000_000
T0 = 1_790_000_000_000_000_000
RUN_CASH = 100_000.0
OFFSET = 5_000.0


# -- building the two sides ----------------------------------------------------------------------
def order(
    oid: str,
    status: OrderStatus,
    qty: float = 10.0,
    filled: float = 0.0,
    *,
    symbol: str = "SPY",
    side: Side = Side.BUY,
    avg: float = 0.0,
) -> Order:
    return Order(
        oid,
        symbol,
        side,
        OrderType.LIMIT,
        qty,
        T0,
        price=100.0,
        status=status,
        filled_qty=filled,
        avg_fill_price=avg or (100.0 if filled else 0.0),
    )


def vorder(o: Order, status: OrderStatus, filled: float, avg: float = 100.0) -> VenueOrder:
    return VenueOrder(
        o.id,
        f"V-{o.id}",
        o.symbol,
        o.side,
        o.type,
        o.qty,
        filled,
        avg if filled else 0.0,
        status,
        o.price,
        None,
        T0,
    )


def vfill(eid: str, o: Order, qty: float, price: float, fee: float = 0.0, ts: int = T0 + 1) -> VenueFill:
    return VenueFill(eid, o.id, o.symbol, o.side, qty, price, fee, ts)


def snapshot(
    orders: Sequence[VenueOrder] = (),
    fills: Sequence[VenueFill] = (),
    positions: dict[str, tuple[float, float]] | None = None,
    cash: float = RUN_CASH + OFFSET,
) -> VenueSnapshot:
    pos = {s: VenuePosition(s, q, p) for s, (q, p) in (positions or {}).items()}
    return VenueSnapshot(
        SNAP_TS, {"USD": cash}, pos, {vo.order_id or vo.venue_order_id: vo for vo in orders}, list(fills)
    )


def run(
    orders: list[Order],
    snap: VenueSnapshot,
    *,
    applied: set[str] | None = None,
    positions: dict[str, float] | None = None,
    cash: float = RUN_CASH,
    offset: float | None = OFFSET,
    accepted: dict[str, str] | None = None,
    symbols: set[str] | None = None,
) -> Reconciliation:
    return reconcile(
        {o.id: o for o in orders},
        applied or set(),
        positions or {},
        {"USD": cash},
        snap,
        symbols=symbols or {"SPY"},
        cash_offset=offset,
        accepted=accepted,
    )


def table(rec: Reconciliation) -> list[tuple[str, str, bool, str]]:
    return [(d.key, d.kind, d.explained, d.action) for d in rec.differences]


def filled_event(o: Order, f: VenueFill, qty: float | None = None) -> VenueEvent:
    return VenueEvent(
        K.FILLED, o.id, f.ts, f.event_id, f.qty if qty is None else qty, f.price, f.fee, symbol=o.symbol
    )


def closing(o: Order, kind: K, reason: str) -> VenueEvent:
    return VenueEvent(kind, o.id, SNAP_TS, f"{o.id}:{kind}", reason=reason, symbol=o.symbol)


def settled(o: Order, target: OrderStatus, reason: str = "") -> VenueEvent:
    return VenueEvent(
        K.RECONCILED,
        o.id,
        SNAP_TS,
        f"{o.id}:reconciled:{SNAP_TS}",
        reason=reason,
        status=str(target),
        symbol=o.symbol,
    )


# -- applying the events as the runtime does ---------------------------------------------------
class Bar(NamedTuple):
    ts: int
    i: int


class Replay(EventVenue):
    """An EventVenue that sends nothing: only delivered events move its orders."""

    def _send_submit(self, order: Order) -> None:
        pass

    def _send_cancel(self, order: Order) -> None:
        pass

    def _send_replace(self, order: Order, price: float) -> None:
        pass

    def _send_resize(self, order: Order, qty: float) -> None:
        pass


def replay(
    orders: list[Order], applied: set[str], positions: dict[str, float], cash: float, events: list[VenueEvent]
) -> tuple[dict[str, Order], dict[str, float], float]:
    """Copies of ``orders`` and the book after ``events`` went through ``EventVenue.match``."""
    venue = Replay()
    venue.applied = set(applied)
    for o in orders:
        venue.adopt(dataclasses.replace(o))
    book, money = dict(positions), [cash]

    def on_fill(o: Order, fill: Fill) -> None:
        signed = fill.side.sign * fill.qty
        book[fill.symbol] = book.get(fill.symbol, 0.0) + signed
        money[0] -= signed * fill.price + fill.fee

    venue.deliver(events)
    for i, sym in enumerate(sorted({o.symbol for o in orders})):
        venue.match(sym, Bar(SNAP_TS, i), on_fill)
    assert not venue.pending() and not venue.strangers
    return venue.orders, book, money[0]


# -- 1. a fill while down ------------------------------------------------------------------------
def test_a_fill_while_down_is_adopted_once_with_its_execution_id():
    o = order("o1", S.PARTIALLY_FILLED, filled=2.0)
    old, new = vfill("X0", o, 2.0, 100.0, 0.1), vfill("X1", o, 4.0, 101.5, 0.25, T0 + 5)
    snap = snapshot(
        [vorder(o, S.PARTIALLY_FILLED, 6.0)],
        [old, new],
        {"SPY": (6.0, 101.0)},
        cash=RUN_CASH + OFFSET - 4 * 101.5 - 0.25,
    )

    rec = run([o], snap, applied={"X0"}, positions={"SPY": 2.0})

    assert rec.events == [VenueEvent(K.FILLED, "o1", T0 + 5, "X1", 4.0, 101.5, 0.25, symbol="SPY")]
    assert table(rec) == [("fill:X1", "fill", True, "")]
    assert rec.differences[0].resolution.startswith("adopted fill: 4 SPY @ 101.5000")
    assert rec.clean and rec.cash_offset == OFFSET and rec.adjustments == []
    orders, book, _ = replay([o], {"X0"}, {"SPY": 2.0}, RUN_CASH, rec.events)
    assert (orders["o1"].status, orders["o1"].filled_qty, book) == (S.PARTIALLY_FILLED, 6.0, {"SPY": 6.0})


def test_a_yen_fill_adopted_while_down_moves_no_dollars_in_the_cash_check():
    # USD/JPY is quoted in yen: buying 10,000 at 150.00 costs 1.5M JPY, not dollars. The venue's USD
    # cash is unchanged, so the run's must be too (it was an unexplained 1.5M gap before).
    o = order("o1", S.ACCEPTED, qty=10_000.0, symbol="USDJPY")
    f = vfill("X1", o, 10_000.0, 150.0, 0.0)
    snap = snapshot([vorder(o, S.FILLED, 10_000.0, 150.0)], [f], {"USDJPY": (10_000.0, 150.0)})

    rec = reconcile(
        {o.id: o}, set(), {}, {"USD": RUN_CASH}, snap, symbols={"USDJPY"}, cash_offset=OFFSET,
        currencies={"USDJPY": "JPY"},
    )  # fmt: skip

    assert rec.clean, rec.summary()
    assert table(rec) == [("fill:X1", "fill", True, "")]
    unmapped = reconcile(
        {o.id: o}, set(), {}, {"USD": RUN_CASH}, snap, symbols={"USDJPY"}, cash_offset=OFFSET
    )
    assert not unmapped.clean  # booked as dollars: 1.5M unexplained


def test_an_order_filled_while_down_is_closed_by_its_fills_alone():
    o = order("o1", S.ACCEPTED)
    f1, f2 = vfill("X1", o, 3.0, 100.0, ts=T0 + 1), vfill("X2", o, 7.0, 100.2, ts=T0 + 2)
    snap = snapshot(
        [vorder(o, S.FILLED, 10.0)], [f2, f1], {"SPY": (10.0, 100.14)}, cash=RUN_CASH + OFFSET - 300.0 - 701.4
    )

    rec = run([o], snap)

    assert rec.events == [filled_event(o, f1), filled_event(o, f2)]
    assert table(rec) == [("fill:X1", "fill", True, ""), ("fill:X2", "fill", True, "")]
    assert rec.clean


# -- 2. a partially filled order cancelled while down ------------------------------------------
def test_a_partially_filled_order_cancelled_while_down_adopts_its_fills_then_closes():
    o = order("o1", S.PARTIALLY_FILLED, filled=3.0)
    f0, f1 = vfill("X0", o, 3.0, 100.0), vfill("X1", o, 3.0, 99.0, 0.5, T0 + 9)
    snap = snapshot(
        [vorder(o, S.CANCELLED, 6.0, 99.5)], [f0, f1], {"SPY": (6.0, 99.5)}, cash=RUN_CASH + OFFSET - 297.5
    )

    rec = run([o], snap, applied={"X0"}, positions={"SPY": 3.0})

    assert rec.events == [
        filled_event(o, f1),
        closing(o, K.CANCELLED, "cancelled at the venue while we were down"),
    ]
    assert table(rec) == [("fill:X1", "fill", True, ""), ("status:o1", "status", True, "")]
    status = rec.differences[1]
    assert status.resolution == (
        "adopted 1 fill; closed as cancelled (cancelled at the venue while we were down) with 6 of 10 filled"
    )
    assert status.venue == "the venue has it cancelled, 6 of 10 filled"
    assert rec.clean
    orders, book, _ = replay([o], {"X0"}, {"SPY": 3.0}, RUN_CASH, rec.events)
    assert (orders["o1"].status, orders["o1"].filled_qty, book) == (S.CANCELLED, 6.0, {"SPY": 6.0})


def test_orders_closed_at_the_venue_without_fills_take_the_venue_closing_event():
    sub, acc = order("o1", S.SUBMITTED), order("o2", S.ACCEPTED, side=Side.SELL)
    snap = snapshot([vorder(sub, S.REJECTED, 0.0), vorder(acc, S.EXPIRED, 0.0)])

    rec = run([sub, acc], snap)

    assert rec.events == [
        closing(sub, K.REJECTED, "rejected at the venue while we were down"),
        closing(acc, K.EXPIRED, "expired at the venue while we were down"),
    ]
    assert table(rec) == [("status:o1", "status", True, ""), ("status:o2", "status", True, "")]
    orders, _, _ = replay([sub, acc], set(), {}, RUN_CASH, rec.events)
    assert (orders["o1"].status, orders["o2"].status) == (S.REJECTED, S.EXPIRED)


def test_a_submitted_order_the_venue_acknowledged_while_down_is_accepted():
    o = order("o1", S.SUBMITTED)

    rec = run([o], snapshot([vorder(o, S.ACCEPTED, 0.0)]))

    assert rec.events == [VenueEvent(K.ACCEPTED, "o1", SNAP_TS, "o1:accepted", symbol="SPY")]
    assert table(rec) == [("status:o1", "status", True, "")]


# -- 3. unknown orders -------------------------------------------------------------------------
def test_an_unknown_order_the_venue_has_is_settled_then_filled_then_closed():
    o = order("o1", S.UNKNOWN)
    f1 = vfill("X1", o, 4.0, 100.0, 0.2)
    snap = snapshot(
        [vorder(o, S.CANCELLED, 4.0)], [f1], {"SPY": (4.0, 100.0)}, cash=RUN_CASH + OFFSET - 400.2
    )

    rec = run([o], snap)

    assert rec.events == [
        settled(o, S.ACCEPTED),
        filled_event(o, f1),
        closing(o, K.CANCELLED, "cancelled at the venue while we were down"),
    ]
    assert table(rec) == [("fill:X1", "fill", True, ""), ("status:o1", "status", True, "")]
    assert rec.differences[1].resolution.startswith("settled the unknown order as accepted; adopted 1 fill")
    orders, book, _ = replay([o], set(), {}, RUN_CASH, rec.events)
    assert (orders["o1"].status, orders["o1"].filled_qty, book) == (S.CANCELLED, 4.0, {"SPY": 4.0})


def test_an_unknown_order_closed_at_the_venue_without_fills_is_settled_to_the_venue_status():
    o = order("o1", S.UNKNOWN)

    rec = run([o], snapshot([vorder(o, S.EXPIRED, 0.0)]))

    assert rec.events == [settled(o, S.EXPIRED)]
    assert table(rec) == [("status:o1", "status", True, "")]


def test_an_unknown_order_still_working_at_the_venue_is_settled_as_accepted():
    o = order("o1", S.UNKNOWN)

    rec = run([o], snapshot([vorder(o, S.ACCEPTED, 0.0)]))

    assert rec.events == [settled(o, S.ACCEPTED)]
    assert rec.clean


def test_an_unknown_order_the_venue_does_not_have_is_rejected_as_never_received():
    o = order("o1", S.UNKNOWN)

    rec = run([o], snapshot())

    assert rec.events == [settled(o, S.REJECTED, "the venue never received it")]
    assert table(rec) == [("missing:o1", "missing", True, "")]
    orders, _, _ = replay([o], set(), {}, RUN_CASH, rec.events)
    assert orders["o1"].status is S.REJECTED and orders["o1"].reason == "the venue never received it"


def test_an_unknown_order_partly_filled_while_down_is_settled_then_filled():
    o = order("o1", S.UNKNOWN)
    f1 = vfill("X1", o, 4.0, 100.0)
    snap = snapshot(
        [vorder(o, S.PARTIALLY_FILLED, 4.0)], [f1], {"SPY": (4.0, 100.0)}, cash=RUN_CASH + OFFSET - 400
    )

    rec = run([o], snap)

    assert rec.events == [settled(o, S.ACCEPTED), filled_event(o, f1)]
    assert table(rec) == [("fill:X1", "fill", True, ""), ("status:o1", "status", True, "")]
    assert rec.differences[1].resolution == "settled the unknown order as accepted; adopted 1 fill"


def test_an_unknown_order_with_fills_is_settled_as_partially_filled():
    o = order("o1", S.UNKNOWN, filled=4.0)

    rec = run(
        [o],
        snapshot([vorder(o, S.PARTIALLY_FILLED, 4.0)], positions={"SPY": (4.0, 100.0)}),
        positions={"SPY": 4.0},
    )

    assert rec.events == [settled(o, S.PARTIALLY_FILLED)] and rec.clean


def test_an_order_rejected_after_the_venue_accepted_it_is_closed_as_cancelled():
    o = order("o1", S.ACCEPTED)

    rec = run([o], snapshot([vorder(o, S.REJECTED, 0.0)]))

    assert rec.events == [closing(o, K.CANCELLED, "rejected at the venue after it had accepted the order")]
    orders, _, _ = replay([o], set(), {}, RUN_CASH, rec.events)
    assert orders["o1"].status is S.CANCELLED


# -- 4. orders the broker never received -------------------------------------------------------
def test_an_order_the_broker_never_received_is_rejected():
    o = order("o1", S.SUBMITTED)

    rec = run([o], snapshot())

    assert rec.events == [closing(o, K.REJECTED, "the venue never received it")]
    assert table(rec) == [("missing:o1", "missing", True, "")]
    assert rec.differences[0].resolution == "the venue never received it: closed as rejected"
    assert rec.clean


def test_an_acknowledged_order_the_venue_lost_is_unexplained_until_accepted():
    o = order("o1", S.PARTIALLY_FILLED, filled=4.0)
    snap = snapshot(positions={"SPY": (4.0, 100.0)})

    rec = run([o], snap, positions={"SPY": 4.0})
    ok = run([o], snap, positions={"SPY": 4.0}, accepted={"missing:o1": ""})

    assert rec.events == [] and table(rec) == [("missing:o1", "missing", False, "")]
    assert rec.differences[0].resolution == (
        "the venue lost an order it had acknowledged; accept to close it as cancelled in the journal"
    )
    assert not rec.clean and rec.summary().startswith(
        "NOT reconciled: 1 of 1 differences unexplained (missing:o1)"
    )
    assert ok.events == [closing(o, K.CANCELLED, "the venue lost it (accepted)")]
    assert table(ok) == [("missing:o1", "missing", True, CLOSE_IN_JOURNAL)]
    assert ok.differences[0].resolution == "close it as cancelled in the journal" and ok.clean


# -- 5. an order the journal never saw ----------------------------------------------------------
def test_an_order_the_journal_never_saw_is_unexplained_and_accepting_cancels_it_at_the_venue():
    mine = order("o1", S.ACCEPTED)
    theirs = VenueOrder("", "V-77", "SPY", Side.SELL, OrderType.LIMIT, 5.0, 0.0, 0.0, S.ACCEPTED, 110.0)
    snap = snapshot([vorder(mine, S.ACCEPTED, 0.0), theirs])

    rec = run([mine], snap)
    ok = run([mine], snap, accepted={"stranger:V-77": "cancel it at the venue"})

    assert rec.events == [] and table(rec) == [("stranger:V-77", "stranger", False, "")]
    d = rec.differences[0]
    assert (d.journal, d.venue) == (
        "the journal never saw it",
        "venue order V-77 (sell 5 SPY limit @ 110.0000) is accepted, 0 filled",
    )
    assert d.resolution == "an order the journal never saw; accept to cancel it at the venue"
    assert table(ok) == [("stranger:V-77", "stranger", True, CANCEL_AT_VENUE)]
    assert ok.differences[0].venue_order_id == "V-77" and ok.clean


def test_the_users_own_orders_and_holdings_in_other_symbols_are_information_only():
    theirs = VenueOrder("", "V-9", "AAPL", Side.BUY, OrderType.LIMIT, 5.0, 0.0, 0.0, S.ACCEPTED, 150.0)
    snap = snapshot([theirs], positions={"AAPL": (50.0, 140.0), "SPY": (3.0, 100.0)})

    rec = run([], snap, positions={"SPY": 3.0})

    assert table(rec) == [("stranger:V-9", "info", True, ""), ("holding:AAPL", "info", True, "")]
    assert rec.events == [] and rec.adjustments == [] and rec.clean


# -- 6. a position changed by hand --------------------------------------------------------------
def test_a_position_changed_by_hand_at_the_broker_is_unexplained_until_adopted():
    snap = snapshot(positions={"SPY": (15.0, 400.0)}, cash=RUN_CASH + OFFSET - 5 * 400.0)

    rec = run([], snap, positions={"SPY": 10.0})
    ok = run([], snap, positions={"SPY": 10.0}, accepted={"position:SPY": "I bought 5 by hand"})

    assert table(rec) == [("position:SPY", "position", False, ""), ("cash:USD", "cash", False, "")]
    d = rec.differences[0]
    assert (d.journal, d.venue) == (
        "the run holds 10 SPY after the venue's fills",
        "the venue holds 15 SPY @ 400.0000",
    )
    assert d.resolution == (
        "position changed by hand at the venue; accept to adopt the venue's position: +5 SPY @ 400.0000"
    )
    assert table(ok) == [("position:SPY", "position", True, ADOPT_POSITION)]
    assert ok.differences[0].resolution == "I bought 5 by hand"
    assert ok.adjustments == [Adjustment("SPY", 5.0, 400.0, "position:SPY accepted: I bought 5 by hand")]
    assert ok.clean and ok.cash_offset == OFFSET


def test_the_position_is_compared_after_the_adopted_fills():
    o = order("o1", S.ACCEPTED, side=Side.SELL)
    f1 = vfill("X1", o, 10.0, 100.0)
    snap = snapshot([vorder(o, S.FILLED, 10.0)], [f1], {}, cash=RUN_CASH + OFFSET + 1000.0)

    rec = run([o], snap, positions={"SPY": 10.0})

    assert table(rec) == [("fill:X1", "fill", True, "")] and rec.clean


# -- 7. cash -----------------------------------------------------------------------------------
def test_cash_changed_outside_the_run_is_unexplained_until_a_new_offset_is_accepted():
    snap = snapshot(cash=RUN_CASH + OFFSET + 2_500.0)

    rec = run([], snap)
    ok = run([], snap, accepted={"cash:USD": "deposit"})

    assert table(rec) == [("cash:USD", "cash", False, "")]
    assert rec.differences[0].resolution == (
        "cash changed outside the run by +2,500.00 (deposit, withdrawal or a fee we did not see); "
        "accept to take 7,500.00 USD as the cash outside the run"
    )
    assert rec.cash_offset == OFFSET
    assert table(ok) == [("cash:USD", "cash", True, ADOPT_CASH_OFFSET)] and ok.cash_offset == 7_500.0


def test_cash_within_the_tolerance_agrees():
    rec = run([], snapshot(cash=RUN_CASH + OFFSET + 0.009))

    assert rec.differences == [] and rec.events == [] and rec.clean
    assert rec.summary() == "reconciled: nothing differs; 0 events, 0 adjustments, cash offset 5,000.00"


def test_the_first_start_records_the_cash_outside_the_run():
    rec = run([], snapshot(cash=RUN_CASH + 1_234.5), offset=None)

    assert rec.cash_offset == 1_234.5 and rec.clean
    assert table(rec) == [("cash:USD", "info", True, ADOPT_CASH_OFFSET)]
    assert (
        rec.differences[0].resolution
        == "first start: recorded 1,234.50 USD as the account's cash outside the run"
    )


def test_the_first_start_refuses_an_account_with_less_cash_than_the_run():
    rec = run([], snapshot(cash=RUN_CASH - 1_000.0), offset=None)

    assert table(rec) == [("cash:USD", "cash", False, "")] and not rec.clean
    assert rec.differences[0].resolution.startswith("the account holds less cash than the run's")


# -- orders the journal holds closed -------------------------------------------------------------
def test_a_fill_on_an_order_the_journal_holds_closed_is_booked_only_when_accepted():
    o = order("o1", S.CANCELLED, filled=0.0)
    f1 = vfill("X1", o, 2.0, 100.0, 0.1)
    snap = snapshot(
        [vorder(o, S.CANCELLED, 2.0)], [f1], {"SPY": (2.0, 100.0)}, cash=RUN_CASH + OFFSET - 200.1
    )

    rec = run([o], snap)
    ok = run([o], snap, accepted={"fill:X1": ""})

    assert rec.events == []
    assert table(rec) == [
        ("fill:X1", "fill", False, ""),
        ("position:SPY", "position", False, ""),
        ("cash:USD", "cash", False, ""),
    ]
    assert table(ok) == [("fill:X1", "fill", True, BOOK_FILL)] and ok.events == [] and ok.clean
    assert ok.adjustments == [Adjustment("SPY", 2.0, 100.0, "fill X1 of o1", 0.1)]


def test_an_order_the_journal_holds_closed_but_the_venue_still_works_is_cancelled_when_accepted():
    o = order("o1", S.CANCELLED)
    snap = snapshot([vorder(o, S.ACCEPTED, 0.0)])

    rec = run([o], snap)
    ok = run([o], snap, accepted={"status:o1": ""})

    assert table(rec) == [("status:o1", "status", False, "")]
    assert table(ok) == [("status:o1", "status", True, CANCEL_AT_VENUE)]
    assert ok.differences[0].venue_order_id == "V-o1" and ok.events == []


def test_everything_in_agreement_yields_no_difference():
    done = order("o1", S.FILLED, filled=10.0)
    working = order("o2", S.PARTIALLY_FILLED, filled=1.0, side=Side.SELL, symbol="QQQ")
    f1, f2 = vfill("X1", done, 10.0, 100.0), vfill("X2", working, 1.0, 100.0)
    snap = snapshot(
        [vorder(done, S.FILLED, 10.0), vorder(working, S.PARTIALLY_FILLED, 1.0)],
        [f1, f2],
        {"SPY": (10.0, 100.0), "QQQ": (-1.0, 100.0)},
    )

    rec = run(
        [done, working],
        snap,
        applied={"X1", "X2"},
        positions={"SPY": 10.0, "QQQ": -1.0},
        symbols={"SPY", "QQQ"},
    )

    assert rec.differences == [] and rec.events == [] and rec.clean


# -- the property: the events bring the journal to the venue's state -----------------------------
class World(NamedTuple):
    orders: list[Order]
    venue: dict[str, Order]  # the venue's own copy of each order it received
    fills: list[VenueFill]
    applied: set[str]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    """Orders that went through the same random history at the venue and (a prefix of it) in the
    journal, some of which the journal then lost track of, and some the venue never received."""
    journal_orders, venue, fills, applied = [], {}, [], set()
    ts = T0
    for n in range(draw(st.integers(1, 6))):
        o = Order(
            f"o{n}",
            draw(st.sampled_from(["AAA", "BBB"])),
            draw(st.sampled_from(list(Side))),
            OrderType.MARKET,
            float(draw(st.integers(1, 20))),
            T0,
        )
        o.apply(OrderEvent.SUBMIT)
        steps: list[tuple[OrderEvent, VenueFill | None]] = []
        if draw(st.integers(0, 3)):  # the venue received it (3 times in 4)
            first = draw(st.sampled_from([OrderEvent.ACCEPT, OrderEvent.REJECT, OrderEvent.FILL]))
            if first is not OrderEvent.FILL:
                steps.append((first, None))
            if first is not OrderEvent.REJECT:
                left = int(o.qty)
                for k in range(draw(st.integers(1 if first is OrderEvent.FILL else 0, 3))):
                    if not left:
                        break
                    qty = draw(st.integers(1, left))
                    left -= qty
                    ts += draw(st.integers(0, 3))
                    price = draw(st.integers(100, 100_000)) / 100
                    fee = draw(st.integers(0, 300)) / 100
                    steps.append(
                        (
                            OrderEvent.FILL,
                            VenueFill(f"{o.id}-x{k}", o.id, o.symbol, o.side, qty, price, fee, ts),
                        )
                    )
                if left:
                    end = draw(st.sampled_from([None, OrderEvent.CANCEL, OrderEvent.EXPIRE]))
                    if end is not None:
                        steps.append((end, None))
            at_venue = dataclasses.replace(o)
            for event, f in steps:
                at_venue.apply(event, fill_qty=f.qty if f else 0.0, fill_price=f.price if f else 0.0, ts=ts)
                if f:
                    fills.append(f)
            venue[o.id] = at_venue
        for event, f in steps[: draw(st.integers(0, len(steps)))]:
            o.apply(event, fill_qty=f.qty if f else 0.0, fill_price=f.price if f else 0.0, ts=ts)
            if f:
                applied.add(f.event_id)
        if o.status in OPEN and draw(st.booleans()):
            o.apply(OrderEvent.LOSE_TRACK)
        journal_orders.append(o)
    return World(journal_orders, venue, fills, applied)


def _book(fills: list[VenueFill]) -> tuple[dict[str, float], float]:
    book: dict[str, float] = {}
    cash = 0.0
    for f in fills:
        signed = f.side.sign * f.qty
        book[f.symbol] = book.get(f.symbol, 0.0) + signed
        cash -= signed * f.price + f.fee
    return book, cash


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_the_events_bring_every_order_and_the_book_to_the_venues_state(world: World):
    positions, run_moved = _book([f for f in world.fills if f.event_id in world.applied])
    venue_book, venue_moved = _book(world.fills)
    vorders = [vorder(v, v.status, v.filled_qty, v.avg_fill_price) for v in world.venue.values()]
    snap = snapshot(
        vorders,
        world.fills,
        {s: (q, 100.0) for s, q in venue_book.items() if q},
        cash=RUN_CASH + OFFSET + venue_moved,
    )

    rec = reconcile(
        {o.id: o for o in world.orders},
        set(world.applied),
        positions,
        {"USD": RUN_CASH + run_moved},
        snap,
        symbols={"AAA", "BBB"},
        cash_offset=OFFSET,
    )
    orders, book, cash = replay(world.orders, world.applied, positions, RUN_CASH + run_moved, rec.events)

    again = reconcile(
        orders,
        world.applied | {ev.event_id for ev in rec.events},
        book,
        {"USD": cash},
        snap,
        symbols={"AAA", "BBB"},
        cash_offset=rec.cash_offset,
    )

    assert rec.clean, rec.summary()
    assert again.events == [] and again.differences == [], again.summary()
    for oid, o in orders.items():
        want = world.venue.get(oid)
        status, filled = (want.status, want.filled_qty) if want else (S.REJECTED, 0.0)
        assert (o.status, o.filled_qty) == (status, filled), oid
    assert {s: q for s, q in book.items() if abs(q) > 1e-9} == {s: q for s, q in venue_book.items() if q}
    assert abs(cash + OFFSET - snap.cash["USD"]) < 1e-6
