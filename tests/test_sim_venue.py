"""The simulated venue's fill rules (module docstring of hflite.execution.venues.sim), bar by bar."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hflite.domain.instrument import AssetClass, Calendar, Instrument, VolumeUnit
from hflite.domain.order import (
    HELD,
    Fill,
    InvalidOrderError,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    bracket,
)
from hflite.execution.costs import BpsCommission, CommissionModel, FixedBpsSlippage, PerShareCommission
from hflite.execution.venues.sim import BarView, SimVenue

AAPL = Instrument("AAPL", AssetClass.EQUITY, "USD", Calendar.XNYS, 0.01, 1.0)
BTC = Instrument(
    "BTC-USD",
    AssetClass.CRYPTO,
    "USD",
    Calendar.ALWAYS,
    0.01,
    1e-5,
    base_currency="BTC",
    volume_unit=VolumeUnit.QUOTE,
)
EURUSD = Instrument(
    "EURUSD", AssetClass.FX, "USD", Calendar.FX, 1e-5, 1.0, base_currency="EUR", volume_unit=VolumeUnit.NONE
)
INSTRUMENTS = {i.symbol: i for i in (AAPL, BTC, EURUSD)}
BIG = 1e9  # bar volume that never binds


class Recorder:
    """An ``on_fill`` handler that keeps what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Order, Fill]] = []

    def __call__(self, order: Order, fill: Fill) -> None:
        self.calls.append((order, fill))

    @property
    def fills(self) -> list[Fill]:
        return [f for _, f in self.calls]


def _venue(
    *, slippage_bps: float = 0.0, commission: CommissionModel | None = None, max_volume_share: float = 0.1
) -> SimVenue:
    return SimVenue(
        INSTRUMENTS,
        commission or BpsCommission(bps=0.0),
        FixedBpsSlippage(slippage_bps),
        max_volume_share=max_volume_share,
    )


def _bar(
    i: int = 1,
    *,
    open: float = 100.0,
    high: float = 105.0,
    low: float = 95.0,
    close: float = 102.0,
    volume: float = BIG,
    prev_range: float = 4.0,
) -> BarView:
    return BarView(
        k=i,
        i=i,
        ts=1_000 * i,
        open=open,
        high=high,
        low=low,
        close=close,
        volume=volume,
        prev_range=prev_range,
    )


def _order(
    side: Side,
    otype: OrderType = OrderType.MARKET,
    qty: float = 100.0,
    price: float | None = None,
    *,
    oid: str = "o-1",
    symbol: str = "AAPL",
    tif: TimeInForce = TimeInForce.GTC,
    created_bar: int = 0,
    first_bar: int = 1,
) -> Order:
    return Order(
        oid,
        symbol,
        side,
        otype,
        qty,
        created_ts=0,
        price=price,
        tif=tif,
        created_bar=created_bar,
        first_bar=first_bar,
    )


def _match(venue: SimVenue, bar: BarView, *orders: Order, symbol: str = "AAPL") -> Recorder:
    """Submit the orders, match one bar, and return what on_fill saw."""
    for o in orders:
        venue.submit(o)
    rec = Recorder()
    venue.match(symbol, bar, rec)
    return rec


# ------------------------------------------------------------------------------ submission


def test_submit_accepts_the_order_and_puts_it_on_the_book() -> None:
    venue = _venue()
    order = _order(Side.BUY)

    venue.submit(order)

    assert order.status is OrderStatus.ACCEPTED
    assert venue.has_working("AAPL")


def test_cancel_marks_the_order_cancelled_and_takes_it_off_the_book() -> None:
    venue = _venue()
    order = _order(Side.BUY)
    venue.submit(order)

    venue.cancel(order, ts=500)

    assert (order.status, order.closed_ts) == (OrderStatus.CANCELLED, 500)
    assert not venue.has_working("AAPL")


def test_a_cancelled_order_never_fills_on_a_later_bar() -> None:
    venue = _venue()
    order = _order(Side.BUY)
    venue.submit(order)
    venue.cancel(order, ts=500)

    rec = _match(venue, _bar(1))

    assert rec.calls == []


def test_cancelling_an_already_filled_order_leaves_it_filled() -> None:
    venue = _venue()
    order = _order(Side.BUY)
    _match(venue, _bar(1), order)

    venue.cancel(order, ts=5_000)

    assert order.status is OrderStatus.FILLED


def test_matching_an_empty_book_does_nothing() -> None:
    assert _venue().match("AAPL", _bar(1), Recorder()) == []


# ------------------------------------------------------------------------ decision bar rule


def test_an_order_never_fills_on_a_bar_before_its_first_bar() -> None:
    venue = _venue()
    order = _order(Side.BUY, created_bar=1, first_bar=2)

    rec = _match(venue, _bar(1), order)

    assert rec.calls == []
    assert order.status is OrderStatus.ACCEPTED
    assert venue.has_working("AAPL")


def test_an_order_fills_on_its_first_bar() -> None:
    venue = _venue()
    order = _order(Side.BUY, created_bar=1, first_bar=2)
    _match(venue, _bar(1), order)

    rec = _match(venue, _bar(2, open=101.0))

    assert [(f.bar_index, f.price) for f in rec.fills] == [(2, 101.0)]


# ---------------------------------------------------------------------------------- market


def test_a_market_buy_fills_at_the_open_plus_slippage() -> None:
    venue = _venue(slippage_bps=10.0)

    [fill] = _match(venue, _bar(1, open=100.0), _order(Side.BUY)).fills

    # 100 * 10 bps = 0.10 against us: 100.10
    assert fill.price == pytest.approx(100.10)
    assert fill.slippage == pytest.approx(0.10)
    assert fill.price >= 100.0


def test_a_market_sell_fills_at_the_open_minus_slippage() -> None:
    venue = _venue(slippage_bps=10.0)

    [fill] = _match(venue, _bar(1, open=100.0), _order(Side.SELL)).fills

    assert fill.price == pytest.approx(99.90)
    assert fill.slippage == pytest.approx(0.10)


def test_a_filled_order_carries_the_fill_quantity_and_price_and_leaves_the_book() -> None:
    venue = _venue()
    order = _order(Side.BUY, qty=100)

    _match(venue, _bar(1, open=100.0), order)

    assert (order.status, order.filled_qty, order.avg_fill_price, order.closed_ts) == (
        OrderStatus.FILLED,
        100.0,
        100.0,
        1_000,
    )
    assert not venue.has_working("AAPL")


# ------------------------------------------------------------------------------------ stops


def test_a_sell_stop_gapped_through_at_the_open_fills_at_the_open() -> None:
    venue = _venue()

    # Stop at 95; the bar opens at 92 (below it): 92 is worse than 95, and it is what was available.
    [fill] = _match(
        venue, _bar(1, open=92.0, high=96.0, low=90.0), _order(Side.SELL, OrderType.STOP, price=95.0)
    ).fills

    assert fill.price == 92.0


def test_a_sell_stop_reached_inside_the_range_fills_at_the_trigger() -> None:
    venue = _venue()

    [fill] = _match(venue, _bar(1, open=100.0, low=94.0), _order(Side.SELL, OrderType.STOP, price=95.0)).fills

    assert fill.price == 95.0


def test_a_sell_stop_touched_exactly_by_the_low_fills() -> None:
    venue = _venue()

    rec = _match(venue, _bar(1, open=100.0, low=95.0), _order(Side.SELL, OrderType.STOP, price=95.0))

    assert [f.price for f in rec.fills] == [95.0]


def test_a_sell_stop_above_the_low_does_not_fill() -> None:
    venue = _venue()
    order = _order(Side.SELL, OrderType.STOP, price=95.0)

    rec = _match(venue, _bar(1, open=100.0, low=96.0), order)

    assert rec.calls == []
    assert order.status is OrderStatus.ACCEPTED


def test_a_sell_stop_pays_slippage_below_its_trigger() -> None:
    venue = _venue(slippage_bps=10.0)

    [fill] = _match(venue, _bar(1, open=100.0, low=94.0), _order(Side.SELL, OrderType.STOP, price=95.0)).fills

    # 95 * 10 bps = 0.095: 94.905
    assert fill.price == pytest.approx(94.905)


def test_a_buy_stop_gapped_through_at_the_open_fills_at_the_open() -> None:
    venue = _venue()

    [fill] = _match(
        venue, _bar(1, open=108.0, high=110.0, low=104.0), _order(Side.BUY, OrderType.STOP, price=105.0)
    ).fills

    assert fill.price == 108.0


def test_a_buy_stop_reached_inside_the_range_fills_at_the_trigger() -> None:
    venue = _venue()

    [fill] = _match(
        venue, _bar(1, open=100.0, high=106.0), _order(Side.BUY, OrderType.STOP, price=105.0)
    ).fills

    assert fill.price == 105.0


def test_a_buy_stop_below_the_high_does_not_fill() -> None:
    venue = _venue()

    rec = _match(venue, _bar(1, open=100.0, high=104.0), _order(Side.BUY, OrderType.STOP, price=105.0))

    assert rec.calls == []


def test_a_buy_stop_pays_slippage_above_its_trigger() -> None:
    venue = _venue(slippage_bps=10.0)

    [fill] = _match(
        venue, _bar(1, open=100.0, high=106.0), _order(Side.BUY, OrderType.STOP, price=105.0)
    ).fills

    # 105 * 10 bps = 0.105: 105.105
    assert fill.price == pytest.approx(105.105)


# ----------------------------------------------------------------------------------- limits


def test_a_buy_limit_fills_at_the_limit_when_the_low_reaches_it() -> None:
    venue = _venue()

    [fill] = _match(venue, _bar(1, open=100.0, low=96.0), _order(Side.BUY, OrderType.LIMIT, price=97.0)).fills

    assert fill.price == 97.0


def test_a_buy_limit_pays_no_slippage() -> None:
    venue = _venue(slippage_bps=50.0)

    [fill] = _match(venue, _bar(1, open=100.0, low=96.0), _order(Side.BUY, OrderType.LIMIT, price=97.0)).fills

    assert (fill.price, fill.slippage) == (97.0, 0.0)


def test_a_buy_limit_touched_exactly_by_the_low_fills() -> None:
    venue = _venue()

    rec = _match(venue, _bar(1, open=100.0, low=97.0), _order(Side.BUY, OrderType.LIMIT, price=97.0))

    assert [f.price for f in rec.fills] == [97.0]


def test_a_buy_limit_below_the_low_does_not_fill() -> None:
    venue = _venue()
    order = _order(Side.BUY, OrderType.LIMIT, price=97.0)

    rec = _match(venue, _bar(1, open=100.0, low=98.0), order)

    assert rec.calls == []
    assert order.status is OrderStatus.ACCEPTED


def test_a_buy_limit_gapped_below_at_the_open_still_fills_at_the_limit_never_better() -> None:
    venue = _venue()

    # Opens at 94 under the 97 limit: a real venue might give 94, the simulator gives the limit.
    [fill] = _match(
        venue, _bar(1, open=94.0, high=99.0, low=93.0), _order(Side.BUY, OrderType.LIMIT, price=97.0)
    ).fills

    assert fill.price == 97.0


def test_a_sell_limit_fills_at_the_limit_when_the_high_reaches_it() -> None:
    venue = _venue(slippage_bps=10.0)

    [fill] = _match(
        venue, _bar(1, open=100.0, high=104.0), _order(Side.SELL, OrderType.LIMIT, price=103.0)
    ).fills

    assert fill.price == 103.0


def test_a_sell_limit_above_the_high_does_not_fill() -> None:
    venue = _venue()

    rec = _match(venue, _bar(1, open=100.0, high=102.0), _order(Side.SELL, OrderType.LIMIT, price=103.0))

    assert rec.calls == []


# --------------------------------------------------------------- protective orders in the bar


def test_a_protective_sell_stop_created_inside_the_bar_fills_at_its_trigger_not_the_open() -> None:
    venue = _venue()
    stop = _order(Side.SELL, OrderType.STOP, price=95.0, created_bar=1, first_bar=1)

    # Open 92 is beyond the trigger, but the stop did not exist at the open: it fills at 95.
    [fill] = _match(venue, _bar(1, open=92.0, high=99.0, low=90.0), stop).fills

    assert fill.price == 95.0


def test_a_protective_buy_stop_created_inside_the_bar_fills_at_its_trigger_not_the_open() -> None:
    venue = _venue()
    stop = _order(Side.BUY, OrderType.STOP, price=105.0, created_bar=1, first_bar=1)

    [fill] = _match(venue, _bar(1, open=108.0, high=110.0, low=101.0), stop).fills

    assert fill.price == 105.0


def test_a_protective_stop_created_inside_the_bar_does_not_fill_if_the_range_misses_it() -> None:
    venue = _venue()
    stop = _order(Side.SELL, OrderType.STOP, price=95.0, created_bar=1, first_bar=1)

    rec = _match(venue, _bar(1, open=100.0, high=105.0, low=96.0), stop)

    assert rec.calls == []


def test_a_protective_order_added_by_on_fill_is_matched_in_the_same_bar() -> None:
    venue = _venue()
    entry = _order(Side.BUY, oid="entry")
    protective: list[Order] = []

    def on_fill(order: Order, fill: Fill) -> None:
        if order.id == "entry":
            stop = _order(Side.SELL, OrderType.STOP, price=97.0, oid="sl", created_bar=1, first_bar=1)
            protective.append(stop)
            venue.submit(stop)

    venue.submit(entry)
    venue.match("AAPL", _bar(1, open=100.0, high=101.0, low=96.0), on_fill)

    # Entry at the open 100; the range then reaches the 97 stop, which fills at its trigger.
    assert protective[0].status is OrderStatus.FILLED
    assert protective[0].avg_fill_price == 97.0


# ------------------------------------------------------------------------------- ordering


def _oco(venue: SimVenue) -> tuple[Recorder, Callable[[Order, Fill], None]]:
    """An on_fill that records fills and cancels the rest of the filled order's OCO group."""
    rec = Recorder()

    def on_fill(order: Order, fill: Fill) -> None:
        rec(order, fill)
        for other in list(venue.working[order.symbol]):
            if other is not order and other.oco_group == order.oco_group and other.is_open:
                venue.cancel(other, fill.ts)

    return rec, on_fill


def _sl_tp() -> tuple[Order, Order]:
    """Exits of a long: stop-loss 95 and take-profit 105, both working since before the bar."""
    sl = _order(Side.SELL, OrderType.STOP, price=95.0, oid="sl")
    tp = _order(Side.SELL, OrderType.LIMIT, price=105.0, oid="tp")
    sl.oco_group = tp.oco_group = "exits"
    return sl, tp


def test_market_orders_fill_before_stops_whatever_the_book_order() -> None:
    venue = _venue()
    stop = _order(Side.SELL, OrderType.STOP, price=99.0, oid="stop")
    market = _order(Side.SELL, oid="market")

    rec = _match(venue, _bar(1, open=100.0, low=95.0), stop, market)

    assert [f.order_id for f in rec.fills] == ["market", "stop"]


def test_market_orders_take_the_volume_cap_before_stops_and_limits() -> None:
    venue = _venue()
    limit = _order(Side.BUY, OrderType.LIMIT, qty=60, price=99.0, oid="limit")
    market = _order(Side.BUY, qty=80, oid="market")

    # volume 1 000 * 10% = 100: the market order takes 80, the limit only the 20 left.
    rec = _match(venue, _bar(1, open=100.0, low=95.0, volume=1_000), limit, market)

    assert [(f.order_id, f.qty) for f in rec.fills] == [("market", 80.0), ("limit", 20.0)]


def test_when_stop_loss_and_take_profit_both_could_fill_the_stop_loss_submitted_first_wins() -> None:
    venue = _venue()
    sl, tp = _sl_tp()
    for o in (sl, tp):
        venue.submit(o)
    rec, on_fill = _oco(venue)

    venue.match("AAPL", _bar(1, open=100.0, high=106.0, low=94.0), on_fill)

    assert [f.order_id for f in rec.fills] == ["sl"]
    assert tp.status is OrderStatus.CANCELLED


def test_when_stop_loss_and_take_profit_both_could_fill_the_stop_loss_fills_first_in_any_book_order() -> None:
    venue = _venue()
    sl, tp = _sl_tp()
    for o in (tp, sl):
        venue.submit(o)
    rec, on_fill = _oco(venue)

    venue.match("AAPL", _bar(1, open=100.0, high=106.0, low=94.0), on_fill)

    assert [f.order_id for f in rec.fills] == ["sl"]


# ------------------------------------------------------------------------- volume cap


def test_an_order_larger_than_the_volume_share_fills_only_the_share() -> None:
    venue = _venue(max_volume_share=0.1)
    order = _order(Side.BUY, qty=250)

    [fill] = _match(venue, _bar(1, volume=1_000), order).fills

    # 10% of 1 000 units = 100
    assert fill.qty == 100.0
    assert fill.liquidity_capped
    assert (order.status, order.remaining) == (OrderStatus.PARTIALLY_FILLED, 150.0)


def test_a_capped_fill_is_rounded_down_to_the_lot() -> None:
    venue = _venue(max_volume_share=0.1)

    [fill] = _match(venue, _bar(1, volume=1_559), _order(Side.BUY, qty=250)).fills

    # 10% of 1 559 = 155.9 -> 155 whole shares
    assert fill.qty == 155.0


def test_an_order_within_the_volume_share_fills_in_full_and_is_not_marked_capped() -> None:
    venue = _venue(max_volume_share=0.1)

    [fill] = _match(venue, _bar(1, volume=1_000), _order(Side.BUY, qty=100)).fills

    assert (fill.qty, fill.liquidity_capped) == (100.0, False)


def test_a_quote_volume_is_converted_to_units_at_the_open() -> None:
    venue = _venue(max_volume_share=0.1)

    # 1 000 000 USD traded / open 50 000 = 20 BTC; 10% = 2 BTC of the 5 wanted.
    [fill] = _match(
        venue,
        _bar(1, open=50_000.0, high=51_000.0, low=49_000.0, volume=1_000_000),
        _order(Side.BUY, qty=5.0, symbol="BTC-USD"),
        symbol="BTC-USD",
    ).fills

    assert fill.qty == pytest.approx(2.0)


def test_a_quote_volume_cap_is_rounded_down_to_the_crypto_lot() -> None:
    venue = _venue(max_volume_share=0.1)

    # 1 000 000 / 30 000 = 33.333... BTC; 10% = 3.3333333 -> 3.33333 at a 0.00001 lot.
    [fill] = _match(
        venue,
        _bar(1, open=30_000.0, high=31_000.0, low=29_000.0, volume=1_000_000),
        _order(Side.BUY, qty=5.0, symbol="BTC-USD"),
        symbol="BTC-USD",
    ).fills

    assert fill.qty == pytest.approx(3.33333, abs=1e-12)


def test_an_instrument_without_volume_fills_in_full_on_a_zero_volume_bar() -> None:
    venue = _venue(max_volume_share=0.1)

    [fill] = _match(
        venue,
        _bar(1, open=1.1, high=1.11, low=1.09, volume=0.0),
        _order(Side.BUY, qty=1_000_000, symbol="EURUSD"),
        symbol="EURUSD",
    ).fills

    assert (fill.qty, fill.liquidity_capped) == (1_000_000, False)


def test_a_zero_volume_bar_fills_nothing_for_an_instrument_that_reports_volume() -> None:
    venue = _venue(max_volume_share=0.1)
    order = _order(Side.BUY, qty=100)

    rec = _match(venue, _bar(1, volume=0.0), order)

    assert rec.calls == []
    assert venue.has_working("AAPL")


def test_the_volume_cap_is_shared_by_all_orders_in_the_bar() -> None:
    venue = _venue(max_volume_share=0.1)
    first, second = _order(Side.BUY, qty=80, oid="a"), _order(Side.BUY, qty=80, oid="b")

    rec = _match(venue, _bar(1, volume=1_000), first, second)

    # 100 available: 80 to the first, 20 to the second.
    assert [(f.order_id, f.qty) for f in rec.fills] == [("a", 80.0), ("b", 20.0)]


def test_a_volume_share_of_one_still_caps_a_fill_at_the_bars_volume() -> None:
    venue = _venue(max_volume_share=1.0)

    [fill] = _match(venue, _bar(1, volume=1_000), _order(Side.BUY, qty=5_000)).fills

    assert fill.qty == 1_000.0


# ------------------------------------------------------------------------- time in force


def test_a_gtc_remainder_keeps_working_and_fills_on_the_next_bar() -> None:
    venue = _venue(max_volume_share=0.1)
    order = _order(Side.BUY, qty=150)
    _match(venue, _bar(1, open=100.0, volume=1_000), order)

    rec = _match(venue, _bar(2, open=102.0, volume=1_000))

    # 100 @ 100 on bar 1, the remaining 50 @ 102 on bar 2: average (10 000 + 5 100) / 150 = 100.6667
    assert [(f.bar_index, f.qty) for f in rec.fills] == [(2, 50.0)]
    assert order.status is OrderStatus.FILLED
    assert order.avg_fill_price == pytest.approx(15_100 / 150)
    assert not venue.has_working("AAPL")


def test_a_day_remainder_expires_after_its_first_bar() -> None:
    venue = _venue(max_volume_share=0.1)
    order = _order(Side.BUY, qty=150, tif=TimeInForce.DAY)
    venue.submit(order)

    closed = venue.match("AAPL", _bar(1, volume=1_000), Recorder())

    assert closed == [order]
    assert (order.status, order.filled_qty, order.closed_ts) == (OrderStatus.EXPIRED, 100.0, 1_000)
    assert not venue.has_working("AAPL")


def test_a_day_limit_that_never_touches_expires_after_its_first_bar() -> None:
    venue = _venue()
    order = _order(Side.BUY, OrderType.LIMIT, price=90.0, tif=TimeInForce.DAY)
    venue.submit(order)

    closed = venue.match("AAPL", _bar(1, low=95.0), Recorder())

    assert closed == [order]
    assert order.status is OrderStatus.EXPIRED


def test_a_day_order_waiting_for_its_first_bar_does_not_expire() -> None:
    venue = _venue()
    order = _order(Side.BUY, tif=TimeInForce.DAY, created_bar=1, first_bar=2)
    venue.submit(order)

    closed = venue.match("AAPL", _bar(1), Recorder())

    assert closed == []
    assert order.status is OrderStatus.ACCEPTED
    assert venue.has_working("AAPL")


def test_an_ioc_remainder_is_cancelled_after_its_first_bar() -> None:
    venue = _venue(max_volume_share=0.1)
    order = _order(Side.BUY, qty=150, tif=TimeInForce.IOC)
    venue.submit(order)

    closed = venue.match("AAPL", _bar(1, volume=1_000), Recorder())

    assert closed == [order]
    assert (order.status, order.filled_qty, order.closed_ts) == (OrderStatus.CANCELLED, 100.0, 1_000)
    assert not venue.has_working("AAPL")


def test_a_gtc_order_is_not_returned_as_closed_while_it_keeps_working() -> None:
    venue = _venue(max_volume_share=0.1)
    order = _order(Side.BUY, qty=150)
    venue.submit(order)

    closed = venue.match("AAPL", _bar(1, volume=1_000), Recorder())

    assert closed == []
    assert order.status is OrderStatus.PARTIALLY_FILLED


# ------------------------------------------------------------------------------- on_fill


def test_on_fill_receives_the_order_and_a_fill_describing_the_execution() -> None:
    venue = _venue()
    order = _order(Side.BUY, qty=100, oid="o-7")

    [(got_order, fill)] = _match(venue, _bar(3, open=100.0), order).calls

    assert got_order is order
    assert (fill.order_id, fill.symbol, fill.side, fill.qty, fill.ts, fill.bar_index) == (
        "o-7",
        "AAPL",
        Side.BUY,
        100.0,
        3_000,
        3,
    )


def test_the_fill_fee_comes_from_the_commission_model() -> None:
    venue = _venue(commission=PerShareCommission(per_share=0.005, minimum=1.0, max_pct=1.0))

    [small] = _match(venue, _bar(1), _order(Side.BUY, qty=100, oid="a")).fills
    [large] = _match(venue, _bar(2), _order(Side.BUY, qty=1_000, oid="b", first_bar=2)).fills

    # 100 * 0.005 = 0.50 -> $1 minimum; 1 000 * 0.005 = 5.00
    assert (small.fee, large.fee) == (pytest.approx(1.0), pytest.approx(5.0))


def test_the_fill_fee_is_charged_on_the_slipped_price() -> None:
    venue = _venue(slippage_bps=10.0, commission=BpsCommission(bps=10.0))

    [fill] = _match(venue, _bar(1, open=100.0), _order(Side.BUY, qty=100)).fills

    # fill price 100.10; 100 * 100.10 * 10 bps = 10.01
    assert fill.fee == pytest.approx(10.01)


def test_orders_of_another_symbol_are_not_matched() -> None:
    venue = _venue()
    order = _order(Side.BUY, symbol="EURUSD")
    venue.submit(order)

    rec = Recorder()
    venue.match("AAPL", _bar(1), rec)

    assert rec.calls == []
    assert order.status is OrderStatus.ACCEPTED


# ------------------------------------------------------------------------------ stop-limit


def _stop_limit(
    side: Side,
    stop: float,
    limit: float,
    qty: float = 100.0,
    *,
    oid: str = "sl-1",
    created_bar: int = 0,
    tif: TimeInForce = TimeInForce.GTC,
) -> Order:
    order = _order(side, OrderType.STOP_LIMIT, qty, limit, oid=oid, created_bar=created_bar, tif=tif)
    order.stop_price = stop
    return order


def test_a_buy_stop_limit_triggered_inside_the_range_fills_at_the_trigger() -> None:
    venue = _venue()
    order = _stop_limit(Side.BUY, stop=102.0, limit=103.0)

    rec = _match(venue, _bar(1, open=100.0, high=105.0, low=95.0), order)

    assert [(f.price, f.slippage) for f in rec.fills] == [(102.0, 0.0)]
    assert order.status is OrderStatus.FILLED
    assert order.triggered


def test_a_buy_stop_limit_pays_slippage_on_its_trigger_bar() -> None:
    venue = _venue(slippage_bps=10.0)
    order = _stop_limit(Side.BUY, stop=102.0, limit=103.0)

    rec = _match(venue, _bar(1, open=100.0, high=105.0), order)

    # 10 bps of 102 = 0.102, still under the 103 limit.
    assert rec.fills[0].price == pytest.approx(102.102)
    assert rec.fills[0].slippage == pytest.approx(0.102)


def test_a_buy_stop_limit_slippage_never_takes_the_price_above_the_limit() -> None:
    venue = _venue(slippage_bps=10.0)
    order = _stop_limit(Side.BUY, stop=102.0, limit=102.05)

    rec = _match(venue, _bar(1, open=100.0, high=105.0), order)

    # 102 + 0.102 would pass the 102.05 limit: the fill stops at the limit.
    assert rec.fills[0].price == pytest.approx(102.05)
    assert rec.fills[0].slippage == pytest.approx(0.05)


def test_a_buy_stop_limit_gapped_through_the_trigger_below_the_limit_fills_at_the_open() -> None:
    venue = _venue()
    order = _stop_limit(Side.BUY, stop=102.0, limit=103.0)

    rec = _match(venue, _bar(1, open=102.5, high=105.0, low=101.0), order)

    assert [f.price for f in rec.fills] == [102.5]


def test_a_buy_stop_limit_gapped_above_its_limit_does_not_fill_that_bar_but_stays_triggered() -> None:
    venue = _venue()
    order = _stop_limit(Side.BUY, stop=102.0, limit=103.0)

    # Opens at 104, beyond the limit; the low of 102.5 is under the limit, but no fill this bar.
    rec = _match(venue, _bar(1, open=104.0, high=106.0, low=102.5), order)

    assert rec.fills == []
    assert (order.status, order.triggered) == (OrderStatus.ACCEPTED, True)


def test_a_triggered_buy_stop_limit_fills_at_its_limit_on_a_later_bar_without_slippage() -> None:
    venue = _venue(slippage_bps=10.0)
    order = _stop_limit(Side.BUY, stop=102.0, limit=103.0)
    _match(venue, _bar(1, open=104.0, high=106.0, low=103.5), order)

    rec = _match(venue, _bar(2, open=104.0, high=104.5, low=101.0))

    assert [(f.price, f.slippage) for f in rec.fills] == [(103.0, 0.0)]


def test_a_triggered_buy_stop_limit_does_not_fill_while_the_low_stays_above_its_limit() -> None:
    venue = _venue()
    order = _stop_limit(Side.BUY, stop=102.0, limit=103.0)
    _match(venue, _bar(1, open=104.0, high=106.0, low=103.5), order)

    rec = _match(venue, _bar(2, open=105.0, high=107.0, low=103.01))

    assert rec.fills == []
    assert order.status is OrderStatus.ACCEPTED


def test_a_buy_stop_limit_with_the_limit_below_the_stop_never_fills_on_its_trigger_bar() -> None:
    venue = _venue()
    order = _stop_limit(Side.BUY, stop=102.0, limit=101.0)

    # Triggered at 102; the bar's low 95 may have come before the trigger: no fill.
    first = _match(venue, _bar(1, open=100.0, high=105.0, low=95.0), order)
    # A pull-back to the limit on the next bar fills at the limit.
    second = _match(venue, _bar(2, open=103.0, high=104.0, low=100.5))

    assert first.fills == []
    assert [f.price for f in second.fills] == [101.0]


def test_a_buy_stop_limit_whose_trigger_the_range_misses_stays_untriggered() -> None:
    venue = _venue()
    order = _stop_limit(Side.BUY, stop=102.0, limit=103.0)

    rec = _match(venue, _bar(1, open=100.0, high=101.99, low=95.0), order)

    assert rec.fills == []
    assert not order.triggered


def test_a_buy_stop_limit_created_inside_the_bar_ignores_the_open_gap() -> None:
    venue = _venue()
    order = _stop_limit(Side.BUY, stop=102.0, limit=103.0, created_bar=1)

    # It never saw the 104 open: the range reaching 102 triggers it at the trigger.
    rec = _match(venue, _bar(1, open=104.0, high=105.0, low=101.0), order)

    assert [f.price for f in rec.fills] == [102.0]


def test_a_sell_stop_limit_triggered_inside_the_range_fills_at_the_trigger_less_slippage() -> None:
    venue = _venue(slippage_bps=10.0)
    order = _stop_limit(Side.SELL, stop=98.0, limit=97.0)

    rec = _match(venue, _bar(1, open=100.0, high=101.0, low=95.0), order)

    # 98 - 10 bps (0.098) = 97.902, above the 97 limit.
    assert rec.fills[0].price == pytest.approx(97.902)


def test_a_sell_stop_limit_gapped_through_the_trigger_above_the_limit_fills_at_the_open() -> None:
    venue = _venue()
    order = _stop_limit(Side.SELL, stop=98.0, limit=97.0)

    rec = _match(venue, _bar(1, open=97.5, high=99.0, low=96.0), order)

    assert [f.price for f in rec.fills] == [97.5]


def test_a_sell_stop_limit_gapped_below_its_limit_waits_for_a_bounce_to_the_limit() -> None:
    venue = _venue(slippage_bps=10.0)
    order = _stop_limit(Side.SELL, stop=98.0, limit=97.0)

    first = _match(venue, _bar(1, open=96.0, high=97.5, low=95.0), order)
    second = _match(venue, _bar(2, open=96.0, high=97.2, low=95.0))

    assert first.fills == []
    assert order.triggered
    assert [(f.price, f.slippage) for f in second.fills] == [(97.0, 0.0)]


def test_a_sell_stop_limit_with_the_limit_above_the_stop_fills_only_on_a_later_bounce() -> None:
    venue = _venue()
    order = _stop_limit(Side.SELL, stop=98.0, limit=99.0)

    first = _match(venue, _bar(1, open=100.0, high=101.0, low=95.0), order)
    second = _match(venue, _bar(2, open=97.0, high=98.9, low=96.0))
    third = _match(venue, _bar(3, open=97.0, high=99.5, low=96.0))

    assert (first.fills, second.fills) == ([], [])
    assert [f.price for f in third.fills] == [99.0]


def test_a_capped_stop_limit_fills_the_rest_as_a_plain_limit_on_the_next_bar() -> None:
    venue = _venue(slippage_bps=10.0, max_volume_share=0.1)
    order = _stop_limit(Side.BUY, stop=102.0, limit=103.0, qty=150)

    first = _match(venue, _bar(1, open=100.0, high=105.0, volume=1_000), order)
    second = _match(venue, _bar(2, open=101.0, high=104.0, low=100.0, volume=1_000))

    assert [(f.qty, f.price) for f in first.fills] == [(100.0, pytest.approx(102.102))]
    assert [(f.qty, f.price, f.slippage) for f in second.fills] == [(50.0, 103.0, 0.0)]


def test_a_stop_limit_stop_loss_fills_before_a_take_profit_in_the_same_bar() -> None:
    venue = _venue()
    tp = _order(Side.SELL, OrderType.LIMIT, price=105.0, oid="tp")
    sl = _stop_limit(Side.SELL, stop=95.0, limit=94.0, oid="sl")
    tp.oco_group = sl.oco_group = "exits"

    rec = _match(venue, _bar(1, open=100.0, high=106.0, low=94.5), tp, sl)

    assert [f.order_id for f in rec.fills] == ["sl"]
    assert tp.status is OrderStatus.CANCELLED


# ------------------------------------------------------------------------------------ OCO


def test_a_whole_fill_cancels_the_rest_of_its_oco_group_and_match_returns_them() -> None:
    venue = _venue()
    sl, tp = _sl_tp()
    venue.submit(sl)
    venue.submit(tp)

    closed = venue.match("AAPL", _bar(1, open=100.0, high=106.0, low=96.0), Recorder())

    assert tp.status is OrderStatus.FILLED
    assert closed == [sl]
    assert (sl.status, sl.closed_ts, sl.filled_qty) == (OrderStatus.CANCELLED, 1_000, 0.0)
    assert not venue.has_working("AAPL")


def test_an_oco_sibling_cancelled_by_on_fill_is_cancelled_once_and_not_returned_again() -> None:
    venue = _venue()
    sl, tp = _sl_tp()
    venue.submit(sl)
    venue.submit(tp)
    rec, on_fill = _oco(venue)  # the engine's way: on_fill cancels the sibling itself

    closed = venue.match("AAPL", _bar(1, open=100.0, high=106.0, low=96.0), on_fill)

    assert [f.order_id for f in rec.fills] == ["tp"]
    assert closed == []
    assert (sl.status, sl.closed_ts) == (OrderStatus.CANCELLED, 1_000)


def test_a_partial_fill_cancels_and_resizes_nothing_in_its_oco_group() -> None:
    venue = _venue(max_volume_share=0.1)
    sl, tp = _sl_tp()
    venue.submit(sl)
    venue.submit(tp)

    closed = venue.match("AAPL", _bar(1, open=100.0, high=106.0, low=96.0, volume=500), Recorder())

    assert (tp.status, tp.filled_qty) == (OrderStatus.PARTIALLY_FILLED, 50.0)
    assert closed == []
    assert (sl.status, sl.qty) == (OrderStatus.ACCEPTED, 100.0)


def test_the_whole_fill_of_a_partly_filled_leg_still_cancels_the_other() -> None:
    venue = _venue(max_volume_share=0.1)
    sl, tp = _sl_tp()
    venue.submit(sl)
    venue.submit(tp)
    venue.match("AAPL", _bar(1, open=100.0, high=106.0, low=96.0, volume=500), Recorder())

    closed = venue.match("AAPL", _bar(2, open=100.0, high=106.0, low=96.0, volume=BIG), Recorder())

    assert tp.status is OrderStatus.FILLED
    assert closed == [sl]
    assert sl.closed_ts == 2_000


def test_an_oco_group_may_span_symbols() -> None:
    venue = _venue()
    aapl = _order(Side.BUY, OrderType.LIMIT, price=99.0, oid="aapl")
    btc = _order(Side.BUY, OrderType.LIMIT, qty=1.0, price=30_000.0, oid="btc", symbol="BTC-USD")
    aapl.oco_group = btc.oco_group = "one-of"
    venue.submit(btc)

    venue.submit(aapl)
    closed = venue.match("AAPL", _bar(1, low=98.0), Recorder())

    assert closed == [btc]
    assert btc.status is OrderStatus.CANCELLED
    assert not venue.has_working("BTC-USD")


def test_cancelling_an_already_cancelled_order_is_a_harmless_no_op() -> None:
    venue = _venue()
    sl, tp = _sl_tp()
    venue.submit(sl)
    venue.submit(tp)
    venue.cancel(sl, 500)

    venue.cancel(sl, 900)

    assert (sl.status, sl.closed_ts) == (OrderStatus.CANCELLED, 500)
    assert venue.working["AAPL"] == [tp]


def test_a_member_cancelled_before_the_fill_is_not_returned_by_the_group_fill() -> None:
    venue = _venue()
    sl, tp = _sl_tp()
    venue.submit(sl)
    venue.submit(tp)
    venue.cancel(sl, 500)

    closed = venue.match("AAPL", _bar(1, high=106.0), Recorder())

    assert tp.status is OrderStatus.FILLED
    assert closed == []


# -------------------------------------------------------------------------------- replace


@pytest.mark.parametrize(
    ("otype", "side"), [(OrderType.LIMIT, Side.BUY), (OrderType.STOP, Side.SELL)], ids=["limit", "stop"]
)
def test_replace_moves_the_price_of_a_limit_or_stop(otype: OrderType, side: Side) -> None:
    venue = _venue()
    order = _order(side, otype, price=90.0)
    venue.submit(order)

    venue.replace(order, 96.0)

    assert order.price == 96.0
    rec = _match(venue, _bar(1, open=100.0, low=95.0))
    assert [f.price for f in rec.fills] == [96.0]


def test_replace_moves_the_trigger_of_a_stop_limit_and_keeps_its_limit() -> None:
    venue = _venue()
    order = _stop_limit(Side.BUY, stop=110.0, limit=111.0)
    venue.submit(order)

    venue.replace(order, 104.0)

    assert (order.stop_price, order.price) == (104.0, 111.0)
    rec = _match(venue, _bar(1, open=100.0, high=105.0))
    assert [f.price for f in rec.fills] == [104.0]


def test_replace_of_a_closed_order_changes_nothing() -> None:
    venue = _venue()
    order = _order(Side.BUY, OrderType.LIMIT, price=99.0)
    venue.submit(order)
    venue.cancel(order, 500)

    venue.replace(order, 98.0)

    assert order.price == 99.0


@pytest.mark.parametrize("price", [0.0, -1.0, float("nan"), float("inf")])
def test_replace_refuses_a_price_that_is_not_positive_and_finite(price: float) -> None:
    venue = _venue()
    order = _order(Side.BUY, OrderType.LIMIT, price=99.0)
    venue.submit(order)

    with pytest.raises(InvalidOrderError, match="o-1"):
        venue.replace(order, price)
    assert order.price == 99.0


def test_replace_refuses_a_market_order() -> None:
    venue = _venue()
    order = _order(Side.BUY)
    venue.submit(order)

    with pytest.raises(InvalidOrderError, match="market order has no price"):
        venue.replace(order, 99.0)


# ------------------------------------------------------------------------------ validation


def test_submit_refuses_an_invalid_order_and_leaves_it_new_and_off_the_book() -> None:
    venue = _venue()
    order = _order(Side.BUY, OrderType.LIMIT, price=None)

    with pytest.raises(InvalidOrderError, match="order o-1 .*needs price"):
        venue.submit(order)
    assert order.status is OrderStatus.NEW
    assert not venue.has_working("AAPL")


@pytest.mark.parametrize("qty", [0.0, -5.0, float("nan"), float("inf")])
def test_submit_refuses_a_market_order_without_a_positive_finite_quantity(qty: float) -> None:
    venue = _venue()

    with pytest.raises(InvalidOrderError, match="quantity"):
        venue.submit(_order(Side.BUY, qty=qty))
    assert not venue.has_working("AAPL")


def test_submit_oco_submits_every_order() -> None:
    venue = _venue()
    sl, tp = _sl_tp()

    venue.submit_oco([sl, tp])

    assert (sl.status, tp.status) == (OrderStatus.ACCEPTED, OrderStatus.ACCEPTED)
    assert venue.working["AAPL"] == [sl, tp]


def test_submit_oco_sends_none_when_one_order_is_invalid() -> None:
    venue = _venue()
    sl, tp = _sl_tp()
    tp.price = None

    with pytest.raises(InvalidOrderError, match="order tp"):
        venue.submit_oco([sl, tp])
    assert sl.status is OrderStatus.NEW
    assert not venue.has_working("AAPL")


# -------------------------------------------------------------------------------- brackets


def _bracket(
    otype: OrderType = OrderType.LIMIT,
    price: float | None = 99.0,
    *,
    stop: float | None = 97.0,
    take_profit: float | None = 102.0,
    qty: float = 100.0,
    tif: TimeInForce = TimeInForce.GTC,
) -> list[Order]:
    return bracket(_order(Side.BUY, otype, qty, price, oid="e", tif=tif), stop, take_profit)


def test_bracket_children_are_held_while_their_parent_has_not_filled() -> None:
    venue = _venue()
    entry, sl, tp = _bracket()
    venue.submit_oco([entry, sl, tp])

    # The entry's 99 limit is missed; the children's levels (97 stop, 102 limit) are both reached.
    rec = _match(venue, _bar(1, open=100.0, high=103.0, low=99.5))

    assert rec.fills == []
    assert [o.status for o in (entry, sl, tp)] == [OrderStatus.ACCEPTED] * 3
    assert sl.first_bar == tp.first_bar == HELD


def test_bracket_children_activate_on_the_parents_fill_bar_and_may_fill_in_the_rest_of_it() -> None:
    venue = _venue()
    entry, sl, tp = _bracket()
    venue.submit_oco([entry, sl, tp])

    rec = Recorder()
    closed = venue.match("AAPL", _bar(1, open=100.0, high=103.0, low=98.0), rec)

    # The entry fills at its 99 limit; the take-profit at 102 in the same bar; OCO cancels the stop.
    assert [(f.order_id, f.price) for f in rec.fills] == [("e", 99.0), ("e-tp", 102.0)]
    assert (tp.created_bar, tp.first_bar) == (1, 1)
    assert closed == [sl]
    assert sl.status is OrderStatus.CANCELLED


def test_bracket_children_created_in_the_fill_bar_do_not_see_its_open() -> None:
    venue = _venue()
    entry, sl, tp = _bracket(OrderType.MARKET, None, stop=97.0, take_profit=102.0)
    venue.submit_oco([entry, sl, tp])

    # Market entry at the 100 open; the stop-loss then fills at its 97 trigger (not a gap at the open).
    rec = _match(venue, _bar(1, open=100.0, high=101.0, low=96.0))

    assert [(f.order_id, f.price) for f in rec.fills] == [("e", 100.0), ("e-sl", 97.0)]
    assert tp.status is OrderStatus.CANCELLED


def test_bracket_children_take_the_parents_filled_quantity() -> None:
    venue = _venue(max_volume_share=0.1)
    entry, sl, tp = _bracket(OrderType.MARKET, None, qty=150)
    venue.submit_oco([entry, sl, tp])

    _match(venue, _bar(1, open=100.0, high=101.0, low=99.5, volume=1_000))
    assert (entry.filled_qty, sl.first_bar) == (100.0, HELD)  # part filled: the children still wait
    _match(venue, _bar(2, open=100.0, high=101.0, low=99.5, volume=1_000))

    assert entry.status is OrderStatus.FILLED
    assert (sl.qty, tp.qty, sl.first_bar) == (150.0, 150.0, 2)


def test_cancelling_an_unfilled_parent_cancels_its_children_and_the_next_match_returns_them() -> None:
    venue = _venue()
    entry, sl, tp = _bracket()
    venue.submit_oco([entry, sl, tp])

    venue.cancel(entry, 500)

    assert [o.status for o in (entry, sl, tp)] == [OrderStatus.CANCELLED] * 3
    assert (sl.closed_ts, tp.closed_ts) == (500, 500)
    assert not venue.has_working("AAPL")
    assert venue.match("AAPL", _bar(1), Recorder()) == [sl, tp]


def test_an_expired_unfilled_parent_cancels_its_children() -> None:
    venue = _venue()
    entry, sl, tp = _bracket(tif=TimeInForce.DAY)
    venue.submit_oco([entry, sl, tp])

    closed = venue.match("AAPL", _bar(1, low=99.5), Recorder())

    assert closed == [entry, sl, tp]
    assert [o.status for o in closed] == [OrderStatus.EXPIRED, OrderStatus.CANCELLED, OrderStatus.CANCELLED]


def test_a_parent_cancelled_after_a_partial_fill_activates_its_children_for_the_filled_part() -> None:
    venue = _venue(max_volume_share=0.1)
    entry, sl, tp = _bracket(OrderType.MARKET, None, qty=150, tif=TimeInForce.IOC)
    venue.submit_oco([entry, sl, tp])

    closed = venue.match("AAPL", _bar(1, open=100.0, high=101.0, low=99.5, volume=1_000), Recorder())

    assert closed == [entry]
    assert (entry.status, entry.filled_qty) == (OrderStatus.CANCELLED, 100.0)
    assert (sl.status, sl.qty, sl.first_bar, tp.qty) == (OrderStatus.ACCEPTED, 100.0, 2, 100.0)
    rec = _match(venue, _bar(2, open=96.0, high=97.0, low=95.0, volume=1_000))
    assert [(f.order_id, f.qty, f.price) for f in rec.fills] == [("e-sl", 100.0, 96.0)]


def test_a_held_child_without_its_parent_at_the_venue_is_refused() -> None:
    venue = _venue()
    _, sl, _ = _bracket()

    with pytest.raises(InvalidOrderError, match="parent e"):
        venue.submit(sl)
    assert sl.status is OrderStatus.NEW


def test_cancelling_a_held_child_leaves_the_parent_and_the_other_child_working() -> None:
    venue = _venue()
    entry, sl, tp = _bracket()
    venue.submit_oco([entry, sl, tp])

    venue.cancel(sl, 500)
    rec = _match(venue, _bar(1, open=100.0, high=103.0, low=98.0))

    assert [f.order_id for f in rec.fills] == ["e", "e-tp"]


# ---------------------------------------------------------------------------- properties

_BARS = st.lists(
    st.tuples(
        st.floats(min_value=90.0, max_value=110.0),  # open
        st.floats(min_value=0.0, max_value=8.0),  # up from the open
        st.floats(min_value=0.0, max_value=8.0),  # down from the open
        st.sampled_from([300.0, 1_000.0, BIG]),  # volume: caps at 30, 100 or nothing
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(
    bars=_BARS,
    stop=st.floats(min_value=92.0, max_value=99.0),
    limit_gap=st.floats(min_value=-3.0, max_value=3.0),
    take_profit=st.floats(min_value=101.0, max_value=108.0),
)
def test_an_oco_pair_of_stop_limit_and_limit_never_breaks_the_fill_rules(
    bars: list[tuple[float, float, float, float]], stop: float, limit_gap: float, take_profit: float
) -> None:
    venue = _venue(slippage_bps=5.0)
    sl = _stop_limit(Side.SELL, stop=stop, limit=stop + limit_gap, oid="sl")
    tp = _order(Side.SELL, OrderType.LIMIT, price=take_profit, oid="tp")
    sl.oco_group = tp.oco_group = "exits"
    venue.submit_oco([sl, tp])
    returned: list[Order] = []
    was_triggered = False

    for i, (open_, up, down, volume) in enumerate(bars, start=1):
        bar = _bar(i, open=open_, high=open_ + up, low=open_ - down, volume=volume)
        rec = Recorder()
        returned += venue.match("AAPL", bar, rec)
        for order, fill in rec.calls:
            if order is sl:
                assert fill.price >= sl.price - 1e-9  # a sell stop-limit never sells below its limit
                before_slippage = fill.price + fill.slippage
                if before_slippage != sl.price:  # a trigger-bar fill: at a price the bar traded
                    assert bar.low <= before_slippage <= bar.high
            else:
                assert (fill.price, fill.slippage) == (take_profit, 0.0)
        assert not was_triggered or sl.triggered  # a trigger is never forgotten
        was_triggered = sl.triggered
        assert all(o.is_open for o in venue.working["AAPL"])
        for o in (sl, tp):
            assert o.filled_qty <= o.qty + 1e-9
        if OrderStatus.FILLED in (sl.status, tp.status):
            assert not sl.is_open and not tp.is_open  # one filled wholly: the other is closed
            assert {sl.status, tp.status} == {OrderStatus.FILLED, OrderStatus.CANCELLED}

    assert len(returned) == len({id(o) for o in returned})  # each closed order reported once
    assert all(o.status is OrderStatus.CANCELLED and o.filled_qty < o.qty for o in returned)


_OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("bar"),
            st.floats(min_value=94.0, max_value=106.0),
            st.floats(min_value=0.0, max_value=6.0),
            st.floats(min_value=0.0, max_value=6.0),
            st.sampled_from([500.0, BIG]),  # caps at 50 of the 150, or not at all
        ),
        st.tuples(st.sampled_from(["cancel-entry", "cancel-sl"])),
        st.tuples(st.just("replace-sl"), st.floats(min_value=90.0, max_value=99.0)),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=150, deadline=None)
@given(ops=_OPS, tif=st.sampled_from(list(TimeInForce)))
def test_a_bracket_under_any_sequence_of_bars_cancels_and_replaces_keeps_its_links(
    ops: list[tuple[object, ...]], tif: TimeInForce
) -> None:
    venue = _venue()
    entry, sl, tp = _bracket(qty=150, tif=tif)
    venue.submit_oco([entry, sl, tp])
    reported: list[Order] = []
    cancelled_by_us: set[str] = set()
    i = 0

    for op in ops:
        if op[0] in ("cancel-entry", "cancel-sl"):
            target = entry if op[0] == "cancel-entry" else sl
            if target.is_open:  # what we cancel ourselves we know about: match does not report it
                cancelled_by_us.add(target.id)
            venue.cancel(target, 10 * i + 5)
        elif op[0] == "replace-sl":
            venue.replace(sl, float(op[1]))  # type: ignore[arg-type]
        else:
            i += 1
            _, open_, up, down, volume = op
            bar = _bar(i, open=open_, high=open_ + up, low=open_ - down, volume=volume)  # type: ignore[operator]
            rec = Recorder()
            reported += venue.match("AAPL", bar, rec)
            for order, _fill in rec.calls:
                if order is not entry:  # a child fills only once live, and never past the entry's fills
                    assert order.first_bar != HELD
                    # (each leg on its own: the venue does not resize one leg on the other's partial fill)
                    assert order.filled_qty <= entry.filled_qty + 1e-9
            assert all(o.is_open for o in venue.working["AAPL"])
        if OrderStatus.FILLED in (sl.status, tp.status):
            assert not sl.is_open and not tp.is_open
        if not entry.is_open and entry.filled_qty == 0.0:
            assert not sl.is_open and not tp.is_open and sl.filled_qty == tp.filled_qty == 0.0
    reported += venue.match("AAPL", _bar(i + 1, open=100.0, high=100.0, low=100.0), Recorder())

    closed_unfilled = {
        o.id for o in (entry, sl, tp) if o.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED)
    }
    assert len(reported) == len({o.id for o in reported})  # each reported once
    assert {o.id for o in reported} == closed_unfilled - cancelled_by_us
