"""The order state machine: the transition table, fills, terminal statuses and reconciliation."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hflite.domain.order import (
    HELD,
    OPEN,
    RECONCILABLE,
    TERMINAL,
    TRANSITIONS,
    IllegalTransitionError,
    InvalidOrderError,
    Order,
    OrderEvent,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    bracket,
)

S, E = OrderStatus, OrderEvent
QTY = 10.0
TS = 1_700_000_000

#: The legal transitions, written out by hand so that any change to the table is a deliberate one.
LEGAL: dict[tuple[OrderStatus, OrderEvent], OrderStatus] = {
    (S.NEW, E.SUBMIT): S.SUBMITTED,
    (S.NEW, E.REJECT): S.REJECTED,
    (S.SUBMITTED, E.ACCEPT): S.ACCEPTED,
    (S.SUBMITTED, E.REJECT): S.REJECTED,
    (S.SUBMITTED, E.LOSE_TRACK): S.UNKNOWN,
    (S.SUBMITTED, E.CANCEL): S.CANCELLED,
    (S.SUBMITTED, E.FILL): S.FILLED,
    (S.SUBMITTED, E.EXPIRE): S.EXPIRED,
    (S.UNKNOWN, E.FILL): S.FILLED,
    (S.ACCEPTED, E.FILL): S.FILLED,
    (S.ACCEPTED, E.CANCEL): S.CANCELLED,
    (S.ACCEPTED, E.EXPIRE): S.EXPIRED,
    (S.ACCEPTED, E.LOSE_TRACK): S.UNKNOWN,
    (S.PARTIALLY_FILLED, E.FILL): S.FILLED,
    (S.PARTIALLY_FILLED, E.CANCEL): S.CANCELLED,
    (S.PARTIALLY_FILLED, E.EXPIRE): S.EXPIRED,
    (S.PARTIALLY_FILLED, E.LOSE_TRACK): S.UNKNOWN,
}
NON_RECONCILE_EVENTS = [e for e in OrderEvent if e is not E.RECONCILE]
ILLEGAL = [(s, e) for s, e in itertools.product(OrderStatus, NON_RECONCILE_EVENTS) if (s, e) not in LEGAL]


def _order(status: OrderStatus = S.NEW, filled_qty: float = 0.0, qty: float = QTY) -> Order:
    """An order placed directly in ``status`` (the table is what is under test, not the path to it)."""
    order = Order("o-1", "AAPL", Side.BUY, OrderType.MARKET, qty, created_ts=TS)
    order.status = status
    order.filled_qty = filled_qty
    if filled_qty:
        order.avg_fill_price = 100.0
    return order


def _snapshot(order: Order) -> tuple[object, ...]:
    return (order.status, order.filled_qty, order.avg_fill_price, order.closed_ts)


# --------------------------------------------------------------------------------- the table


def test_transition_table_holds_exactly_the_documented_legal_moves() -> None:
    assert TRANSITIONS == LEGAL


def test_terminal_and_open_sets_partition_the_live_statuses() -> None:
    assert frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED}) == TERMINAL
    assert frozenset({S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED}) == OPEN
    assert not TERMINAL & OPEN


@pytest.mark.parametrize(
    ("status", "event", "expected"),
    [(s, e, n) for (s, e), n in LEGAL.items()],
    ids=[f"{s}-{e}" for s, e in LEGAL],
)
def test_every_legal_transition_moves_the_order_to_the_table_status(
    status: OrderStatus, event: OrderEvent, expected: OrderStatus
) -> None:
    # A FILL is sized to complete the order: 10 from accepted, the remaining 6 from partially filled.
    filled = 4.0 if status is S.PARTIALLY_FILLED else 0.0
    order = _order(status, filled_qty=filled)

    result = order.apply(event, fill_qty=QTY - filled, fill_price=101.0, ts=TS + 60)

    assert result is expected
    assert order.status is expected


@pytest.mark.parametrize(("status", "event"), ILLEGAL, ids=[f"{s}-{e}" for s, e in ILLEGAL])
def test_every_event_outside_the_table_raises_and_leaves_the_order_untouched(
    status: OrderStatus, event: OrderEvent
) -> None:
    order = _order(status)
    before = _snapshot(order)

    with pytest.raises(IllegalTransitionError):
        order.apply(event, fill_qty=1.0, fill_price=100.0, ts=TS + 60)

    assert _snapshot(order) == before


def test_illegal_transition_error_is_a_value_error_so_generic_handlers_still_catch_it() -> None:
    assert issubclass(IllegalTransitionError, ValueError)


def test_the_normal_life_of_an_order_is_new_submitted_accepted_filled() -> None:
    order = _order()

    path = [
        order.apply(E.SUBMIT),
        order.apply(E.ACCEPT),
        order.apply(E.FILL, fill_qty=QTY, fill_price=100.0, ts=TS),
    ]

    assert path == [S.SUBMITTED, S.ACCEPTED, S.FILLED]


@pytest.mark.parametrize("status", [S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED])
def test_an_open_order_reports_is_open(status: OrderStatus) -> None:
    assert _order(status).is_open


@pytest.mark.parametrize("status", [S.NEW, S.UNKNOWN, *sorted(TERMINAL)])
def test_new_unknown_and_terminal_orders_are_not_open(status: OrderStatus) -> None:
    assert not _order(status).is_open


# ------------------------------------------------------------------------------------- fills


def test_a_partial_fill_moves_an_accepted_order_to_partially_filled() -> None:
    order = _order(S.ACCEPTED)

    status = order.apply(E.FILL, fill_qty=4.0, fill_price=100.0, ts=TS)

    assert status is S.PARTIALLY_FILLED
    assert order.filled_qty == 4.0
    assert order.remaining == 6.0
    assert order.closed_ts is None


def test_a_fill_completing_the_quantity_moves_a_partially_filled_order_to_filled() -> None:
    order = _order(S.ACCEPTED)
    order.apply(E.FILL, fill_qty=4.0, fill_price=100.0, ts=TS)

    status = order.apply(E.FILL, fill_qty=6.0, fill_price=101.0, ts=TS + 60)

    assert status is S.FILLED
    assert order.filled_qty == 10.0
    assert order.remaining == 0.0


def test_avg_fill_price_is_the_quantity_weighted_mean_of_the_fills() -> None:
    order = _order(S.ACCEPTED)

    # 2 @ 10, 3 @ 20, 5 @ 30: (20 + 60 + 150) / 10 = 23.0
    for qty, price in [(2.0, 10.0), (3.0, 20.0), (5.0, 30.0)]:
        order.apply(E.FILL, fill_qty=qty, fill_price=price, ts=TS)

    assert order.avg_fill_price == pytest.approx(23.0)


def test_a_fill_larger_than_the_order_raises_and_books_nothing() -> None:
    order = _order(S.ACCEPTED)

    with pytest.raises(IllegalTransitionError, match="remaining"):
        order.apply(E.FILL, fill_qty=11.0, fill_price=100.0, ts=TS)

    assert (order.status, order.filled_qty, order.avg_fill_price) == (S.ACCEPTED, 0.0, 0.0)


def test_a_fill_larger_than_the_remainder_of_a_partially_filled_order_raises() -> None:
    order = _order(S.ACCEPTED)
    order.apply(E.FILL, fill_qty=4.0, fill_price=100.0, ts=TS)

    # 6 remain; 7 would take the order to 11 of 10.
    with pytest.raises(IllegalTransitionError):
        order.apply(E.FILL, fill_qty=7.0, fill_price=100.0, ts=TS)

    assert (order.status, order.filled_qty, order.avg_fill_price) == (S.PARTIALLY_FILLED, 4.0, 100.0)


@pytest.mark.parametrize("fill_qty", [0.0, -1.0, float("nan")])
def test_a_fill_of_zero_negative_or_nan_quantity_raises(fill_qty: float) -> None:
    order = _order(S.ACCEPTED)

    with pytest.raises(IllegalTransitionError):
        order.apply(E.FILL, fill_qty=fill_qty, fill_price=100.0, ts=TS)

    assert order.filled_qty == 0.0


def test_float_dust_within_a_nanounit_still_completes_the_order() -> None:
    order = _order(S.ACCEPTED, qty=0.3)

    # 0.1 + 0.2 == 0.30000000000000004 in binary floating point: 4e-17 over the order quantity.
    order.apply(E.FILL, fill_qty=0.1, fill_price=100.0, ts=TS)
    status = order.apply(E.FILL, fill_qty=0.2, fill_price=100.0, ts=TS)

    assert status is S.FILLED
    assert order.remaining == 0.0


def test_completing_fill_stamps_closed_ts_with_the_fill_time() -> None:
    order = _order(S.ACCEPTED)

    order.apply(E.FILL, fill_qty=QTY, fill_price=100.0, ts=TS + 60)

    assert order.closed_ts == TS + 60


@pytest.mark.parametrize(
    ("status", "event"),
    [(S.NEW, E.REJECT), (S.SUBMITTED, E.CANCEL), (S.ACCEPTED, E.EXPIRE), (S.PARTIALLY_FILLED, E.CANCEL)],
)
def test_every_terminal_event_stamps_closed_ts(status: OrderStatus, event: OrderEvent) -> None:
    order = _order(status)

    order.apply(event, ts=TS + 120)

    assert order.closed_ts == TS + 120


# ------------------------------------------------------------------------ terminal statuses


@pytest.mark.parametrize(("status", "event"), list(itertools.product(sorted(TERMINAL), OrderEvent)))
def test_a_terminal_order_absorbs_every_event_by_raising_and_staying_put(
    status: OrderStatus, event: OrderEvent
) -> None:
    order = _order(status)
    order.closed_ts = TS
    before = _snapshot(order)

    with pytest.raises(IllegalTransitionError):
        order.apply(event, fill_qty=1.0, fill_price=100.0, ts=TS + 60, target=S.ACCEPTED)

    assert _snapshot(order) == before


# ----------------------------------------------------------------------- unknown / reconcile


@pytest.mark.parametrize("status", [S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED])
def test_losing_track_of_an_open_order_makes_its_status_unknown(status: OrderStatus) -> None:
    order = _order(status)

    assert order.apply(E.LOSE_TRACK) is S.UNKNOWN


@pytest.mark.parametrize("event", [e for e in NON_RECONCILE_EVENTS if e is not E.FILL])
def test_an_unknown_order_refuses_every_event_but_a_late_fill_or_reconcile(event: OrderEvent) -> None:
    order = _order(S.UNKNOWN)

    with pytest.raises(IllegalTransitionError):
        order.apply(event, fill_qty=1.0, fill_price=100.0, ts=TS)

    assert order.status is S.UNKNOWN


@pytest.mark.parametrize("target", sorted(RECONCILABLE))
def test_reconcile_settles_an_unknown_order_to_any_reconcilable_status(target: OrderStatus) -> None:
    order = _order(S.UNKNOWN)

    result = order.apply(E.RECONCILE, target=target, ts=TS)

    assert result is target
    assert order.status is target


def test_reconcilable_targets_are_every_status_but_new_submitted_and_unknown() -> None:
    assert set(OrderStatus) - RECONCILABLE == {S.NEW, S.SUBMITTED, S.UNKNOWN}


@pytest.mark.parametrize("target", [S.NEW, S.SUBMITTED, S.UNKNOWN, None])
def test_reconcile_to_a_status_outside_reconcilable_raises(target: OrderStatus | None) -> None:
    order = _order(S.UNKNOWN)

    with pytest.raises(IllegalTransitionError, match="cannot reconcile"):
        order.apply(E.RECONCILE, target=target, ts=TS)

    assert order.status is S.UNKNOWN


@pytest.mark.parametrize("status", [s for s in OrderStatus if s is not S.UNKNOWN])
def test_reconcile_of_an_order_that_is_not_unknown_raises(status: OrderStatus) -> None:
    order = _order(status)

    with pytest.raises(IllegalTransitionError):
        order.apply(E.RECONCILE, target=S.ACCEPTED, ts=TS)

    assert order.status is status


def test_an_order_reconciled_back_to_accepted_can_fill_again() -> None:
    order = _order(S.UNKNOWN)
    order.apply(E.RECONCILE, target=S.ACCEPTED)

    status = order.apply(E.FILL, fill_qty=QTY, fill_price=100.0, ts=TS)

    assert status is S.FILLED


@pytest.mark.parametrize("target", sorted(TERMINAL))
def test_reconcile_to_a_terminal_status_stamps_closed_ts(target: OrderStatus) -> None:
    order = _order(S.UNKNOWN)

    order.apply(E.RECONCILE, target=target, ts=TS + 300)

    assert order.closed_ts == TS + 300


# ---------------------------------------------------------------------------------- property

_FILL_SIZES = st.one_of(
    st.floats(min_value=-1.0, max_value=2 * QTY, allow_nan=False),
    st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0, 6.0, QTY]),
    st.just("rest"),  # exactly the remaining quantity
)


def test_a_late_fill_on_an_unknown_order_proves_it_reached_the_venue() -> None:
    order = _order(S.UNKNOWN)

    assert order.apply(E.FILL, fill_qty=4.0, fill_price=100.0, ts=TS) is S.PARTIALLY_FILLED
    assert order.filled_qty == 4.0


def test_a_reconcile_can_carry_what_filled_while_we_did_not_know() -> None:
    order = _order(S.UNKNOWN)

    order.apply(E.RECONCILE, target=S.FILLED, fill_qty=order.qty, fill_price=101.5, ts=TS)

    assert (order.status, order.filled_qty, order.avg_fill_price, order.closed_ts) == (
        S.FILLED,
        order.qty,
        101.5,
        TS,
    )


def test_a_fill_at_a_nan_or_non_positive_price_is_refused() -> None:
    for price in (float("nan"), 0.0, -1.0):
        order = _order(S.ACCEPTED)
        with pytest.raises(IllegalTransitionError, match="not positive"):
            order.apply(E.FILL, fill_qty=1.0, fill_price=price, ts=TS)


_STEPS = st.lists(
    st.tuples(st.sampled_from(list(OrderEvent)), _FILL_SIZES, st.sampled_from([*OrderStatus, None])),
    max_size=12,
)


def _expected_next(
    order: Order, event: OrderEvent, fill_qty: float, target: OrderStatus | None
) -> OrderStatus | None:
    """What the table says the event does (None: it must raise), computed independently of apply."""
    if event is E.RECONCILE:
        return target if order.status is S.UNKNOWN and target in RECONCILABLE else None
    nxt = LEGAL.get((order.status, event))
    if nxt is None or event is not E.FILL:
        return nxt
    remaining = max(order.qty - order.filled_qty, 0.0)
    if not 0.0 < fill_qty <= remaining + 1e-9:
        return None
    return S.FILLED if order.qty - (order.filled_qty + fill_qty) <= 1e-9 else S.PARTIALLY_FILLED


@settings(max_examples=200, deadline=None)
@given(steps=_STEPS, price=st.floats(min_value=0.01, max_value=1e5))
def test_random_event_sequences_follow_the_table_or_raise(
    steps: list[tuple[OrderEvent, float | str, OrderStatus | None]], price: float
) -> None:
    order = _order()
    for n, (event, size, target) in enumerate(steps):
        fill_qty = (order.remaining if size == "rest" else float(size)) if event is E.FILL else 0.0
        expected = _expected_next(order, event, fill_qty, target)
        before = _snapshot(order)

        if expected is None:
            with pytest.raises(IllegalTransitionError):
                order.apply(event, fill_qty=fill_qty, fill_price=price, ts=TS + n, target=target)
            assert _snapshot(order) == before
        else:
            result = order.apply(event, fill_qty=fill_qty, fill_price=price, ts=TS + n, target=target)
            assert result is expected

        assert order.status in set(OrderStatus)
        assert 0.0 <= order.filled_qty <= order.qty + 1e-9
        if order.status not in TERMINAL:
            assert order.closed_ts is None
        if order.filled_qty:
            assert order.avg_fill_price == pytest.approx(price)  # every fill in one example has one price


@settings(max_examples=200, deadline=None)
@given(steps=_STEPS)
@example(steps=[(E.SUBMIT, 0.0, None), (E.LOSE_TRACK, 0.0, None), (E.RECONCILE, 0.0, S.CANCELLED)])
def test_closed_ts_is_set_exactly_when_an_order_becomes_terminal(
    steps: list[tuple[OrderEvent, float | str, OrderStatus | None]],
) -> None:
    order = _order()
    for n, (event, size, target) in enumerate(steps):
        fill_qty = (order.remaining if size == "rest" else float(size)) if event is E.FILL else 0.0
        try:
            order.apply(event, fill_qty=fill_qty, fill_price=100.0, ts=TS + n, target=target)
        except IllegalTransitionError:
            continue
        assert (order.closed_ts is not None) == (order.status in TERMINAL)


# ------------------------------------------------------------------------ order types, check


def _priced(
    otype: OrderType, price: float | None = None, stop_price: float | None = None, qty: float = QTY
) -> Order:
    return Order("o-7", "AAPL", Side.BUY, otype, qty, TS, price, stop_price=stop_price)


def test_the_order_types_are_market_limit_stop_and_stop_limit() -> None:
    assert [t.value for t in OrderType] == ["market", "limit", "stop", "stop_limit"]


def test_an_order_built_from_its_first_nineteen_fields_has_no_stop_price_and_is_untriggered() -> None:
    # The engine builds orders positionally, id ... closed_ts: the new fields must trail.
    order = Order(
        "o-1", "AAPL", Side.BUY, OrderType.MARKET, QTY, TS, None, TimeInForce.GTC, S.NEW,
        0.0, 0.0, "", "", None, None, False, 3, 4, None,
    )  # fmt: skip

    assert (order.first_bar, order.closed_ts, order.stop_price, order.triggered) == (4, None, None, False)


@pytest.mark.parametrize(
    "order",
    [
        _priced(OrderType.MARKET),
        _priced(OrderType.LIMIT, 99.0),
        _priced(OrderType.STOP, 101.0),
        _priced(OrderType.STOP_LIMIT, 102.0, stop_price=101.0),  # buy up to 102 once 101 trades
        _priced(OrderType.STOP_LIMIT, 100.0, stop_price=101.0),  # after 101 trades, buy a dip to 100
    ],
    ids=["market", "limit", "stop", "stop-limit-above", "stop-limit-below"],
)
def test_check_accepts_every_well_formed_order(order: Order) -> None:
    order.check()


@pytest.mark.parametrize("qty", [0.0, -1.0, float("nan"), float("inf")])
def test_check_refuses_a_quantity_that_is_not_positive_and_finite(qty: float) -> None:
    with pytest.raises(InvalidOrderError, match=r"order o-7 \(buy market AAPL\): quantity"):
        _priced(OrderType.MARKET, qty=qty).check()


@pytest.mark.parametrize(
    ("order", "needs"),
    [
        (_priced(OrderType.LIMIT), "a limit order needs price"),
        (_priced(OrderType.STOP), "a stop order needs price"),
        (_priced(OrderType.STOP_LIMIT, 100.0), "a stop_limit order needs stop_price"),
        (_priced(OrderType.STOP_LIMIT, None, stop_price=100.0), "a stop_limit order needs price"),
    ],
    ids=["limit", "stop", "stop-limit-trigger", "stop-limit-limit"],
)
def test_check_refuses_an_order_without_the_prices_its_type_needs(order: Order, needs: str) -> None:
    with pytest.raises(InvalidOrderError, match=needs):
        order.check()


@pytest.mark.parametrize("bad", [0.0, -3.0, float("nan"), float("inf")])
def test_check_refuses_a_price_or_trigger_that_is_not_positive_and_finite(bad: float) -> None:
    with pytest.raises(InvalidOrderError, match="price"):
        _priced(OrderType.LIMIT, bad).check()
    with pytest.raises(InvalidOrderError, match="stop_price"):
        _priced(OrderType.STOP_LIMIT, 100.0, stop_price=bad).check()


def test_check_refuses_a_stop_price_on_an_order_that_is_not_a_stop_limit() -> None:
    with pytest.raises(InvalidOrderError, match="stop_price is only for stop_limit"):
        _priced(OrderType.STOP, 101.0, stop_price=101.0).check()


def test_an_invalid_order_error_is_a_value_error() -> None:
    assert issubclass(InvalidOrderError, ValueError)


# ---------------------------------------------------------------------------------- brackets


def _entry(side: Side = Side.BUY, otype: OrderType = OrderType.LIMIT, price: float | None = 100.0) -> Order:
    return Order("e-1", "AAPL", side, otype, QTY, TS, price, decision_id="d-1", created_bar=5, first_bar=6)


def test_a_bracket_is_the_entry_then_a_stop_loss_and_a_take_profit_on_the_other_side() -> None:
    entry = _entry()

    orders = bracket(entry, 95.0, 110.0)

    assert orders[0] is entry
    sl, tp = orders[1:]
    assert (sl.id, sl.type, sl.price, sl.reason) == ("e-1-sl", OrderType.STOP, 95.0, "stop-loss")
    assert (tp.id, tp.type, tp.price, tp.reason) == ("e-1-tp", OrderType.LIMIT, 110.0, "take-profit")
    for child in (sl, tp):
        assert (child.side, child.qty, child.parent_id, child.oco_group) == (Side.SELL, QTY, "e-1", "e-1-oco")
        assert (child.reduce_only, child.tif, child.first_bar, child.decision_id) == (
            True,
            TimeInForce.GTC,
            HELD,
            "d-1",
        )


def test_a_short_bracket_buys_back_above_and_below() -> None:
    _, sl, tp = bracket(_entry(Side.SELL), 105.0, 90.0)

    assert (sl.side, sl.price, tp.side, tp.price) == (Side.BUY, 105.0, Side.BUY, 90.0)


def test_a_bracket_with_one_exit_has_no_oco_group() -> None:
    orders = bracket(_entry(otype=OrderType.MARKET, price=None), None, 110.0)

    assert [o.id for o in orders] == ["e-1", "e-1-tp"]
    assert orders[1].oco_group is None


def test_a_bracket_names_its_exits_with_make_id() -> None:
    orders = bracket(_entry(), 95.0, 110.0, make_id=lambda role: f"x-{role}")

    assert [o.id for o in orders[1:]] == ["x-sl", "x-tp"]


@pytest.mark.parametrize(
    ("side", "stop", "take_profit", "why"),
    [
        (Side.BUY, None, None, "needs a stop_price or a take_profit"),
        (Side.BUY, 111.0, 110.0, "stop 111.0 must be below the take-profit 110.0"),
        (Side.SELL, 90.0, 105.0, "stop 90.0 must be above the take-profit 105.0"),
        (Side.BUY, 101.0, 110.0, "stop 101.0 must be below the entry price 100.0"),
        (Side.BUY, 95.0, 99.0, "take-profit 99.0 must be above the entry price 100.0"),
        (Side.BUY, -1.0, None, "price -1.0 is not a positive finite number"),
    ],
    ids=["no-exit", "long-crossed", "short-crossed", "stop-past-entry", "target-short-of-entry", "bad-price"],
)
def test_a_bracket_with_exits_on_the_wrong_side_is_refused(
    side: Side, stop: float | None, take_profit: float | None, why: str
) -> None:
    with pytest.raises(InvalidOrderError, match=why):
        bracket(_entry(side, OrderType.MARKET if side is Side.SELL else OrderType.LIMIT), stop, take_profit)


def test_check_refuses_a_held_order_without_a_parent() -> None:
    order = _priced(OrderType.STOP, 95.0)
    order.first_bar = HELD

    with pytest.raises(InvalidOrderError, match="no parent_id"):
        order.check()
