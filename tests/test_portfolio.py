"""The portfolio ledger: cash per currency, positions at average price, round-trip trades and fees."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hflite.domain.order import Fill, Side
from hflite.domain.portfolio import Portfolio

CASH = 100_000.0


def _fill(
    side: Side, qty: float, price: float, fee: float = 0.0, *, ts: int = 1, bar: int = 0, symbol: str = "AAPL"
) -> Fill:
    return Fill(f"o-{ts}", symbol, side, qty, price, fee, ts, bar)


def _book(pf: Portfolio, *fills: Fill, currency: str = "USD") -> Portfolio:
    for f in fills:
        pf.apply_fill(f, currency)
    return pf


def _round_trip() -> Portfolio:
    """Buy 100 AAPL @ 50 (fee 1), sell 100 @ 55 (fee 1)."""
    return _book(
        Portfolio.with_cash(CASH),
        _fill(Side.BUY, 100, 50.0, 1.0, ts=10, bar=1),
        _fill(Side.SELL, 100, 55.0, 1.0, ts=20, bar=2),
    )


# ------------------------------------------------------------------------------- basic ledger


def test_a_new_portfolio_holds_only_its_starting_cash() -> None:
    pf = Portfolio.with_cash(CASH, "EUR")

    assert (pf.base_currency, pf.cash, pf.positions, pf.trades) == ("EUR", {"EUR": CASH}, {}, [])


def test_qty_of_a_symbol_never_traded_is_zero() -> None:
    assert Portfolio.with_cash(CASH).qty("MSFT") == 0.0


def test_a_buy_pays_notional_plus_fee_out_of_cash() -> None:
    pf = _book(Portfolio.with_cash(CASH), _fill(Side.BUY, 100, 50.0, 1.0))

    # 100 000 - 100 * 50 - 1 = 94 999
    assert pf.cash["USD"] == pytest.approx(94_999.0)
    assert pf.fees_paid == {"USD": 1.0}


def test_a_buy_opens_a_long_position_at_the_fill_price() -> None:
    pf = _book(Portfolio.with_cash(CASH), _fill(Side.BUY, 100, 50.0, 1.0))

    pos = pf.positions["AAPL"]
    assert (pos.qty, pos.avg_price) == (100.0, 50.0)


def test_a_buy_opens_one_trade_carrying_the_entry_fee() -> None:
    pf = Portfolio.with_cash(CASH)

    pf.apply_fill(_fill(Side.BUY, 100, 50.0, 1.0, ts=10, bar=1), "USD", reason="breakout")

    [trade] = pf.trades
    assert (trade.direction, trade.qty, trade.entry_price) == (1, 100, 50.0)
    assert (trade.entry_ts, trade.entry_bar) == (10, 1)
    assert (trade.fees, trade.entry_reason, trade.is_open) == (1.0, "breakout", True)
    assert pf.positions["AAPL"].trade is trade


def test_a_round_trip_books_the_sale_proceeds_less_fees_into_cash() -> None:
    pf = _round_trip()

    # 100 000 - 5 000 - 1 + 5 500 - 1 = 100 498
    assert pf.cash["USD"] == pytest.approx(100_498.0)
    assert pf.fees_paid == {"USD": 2.0}


def test_a_round_trip_leaves_the_position_flat_with_no_average_price() -> None:
    pos = _round_trip().positions["AAPL"]

    assert (pos.qty, pos.avg_price, pos.trade) == (0.0, 0.0, None)


def test_a_round_trip_closes_its_trade_with_gross_pnl_and_both_fees() -> None:
    [trade] = _round_trip().trades

    # (55 - 50) * 100 = 500 gross; fees 1 + 1 = 2 are kept apart.
    assert trade.pnl == pytest.approx(500.0)
    assert trade.fees == pytest.approx(2.0)
    assert (trade.exit_price, trade.exit_qty, trade.exit_ts, trade.exit_bar) == (55.0, 100.0, 20, 2)
    assert not trade.is_open


def test_the_exit_reason_is_recorded_on_the_closing_fill() -> None:
    pf = Portfolio.with_cash(CASH)
    pf.apply_fill(_fill(Side.BUY, 100, 50.0), "USD", reason="entry")

    pf.apply_fill(_fill(Side.SELL, 100, 45.0, ts=2), "USD", reason="stop-loss")

    assert pf.trades[0].exit_reason == "stop-loss"


def test_a_short_round_trip_profits_when_the_price_falls() -> None:
    pf = _book(Portfolio.with_cash(CASH), _fill(Side.SELL, 10, 100.0), _fill(Side.BUY, 10, 90.0, ts=2))

    # Sold 10 @ 100, bought back @ 90: +100; cash 100 000 + 1 000 - 900 = 100 100.
    [trade] = pf.trades
    assert (trade.direction, trade.pnl) == (-1, pytest.approx(100.0))
    assert pf.cash["USD"] == pytest.approx(100_100.0)


def test_a_short_sale_adds_its_proceeds_to_cash_and_holds_a_negative_quantity() -> None:
    pf = _book(Portfolio.with_cash(CASH), _fill(Side.SELL, 10, 100.0, 0.5))

    # 100 000 + 10 * 100 - 0.5 = 100 999.5
    assert pf.cash["USD"] == pytest.approx(100_999.5)
    assert (pf.qty("AAPL"), pf.positions["AAPL"].avg_price) == (-10.0, 100.0)


# --------------------------------------------------------------------- partial close and adds


def test_a_partial_close_realises_pnl_on_the_closed_part_only() -> None:
    pf = _book(Portfolio.with_cash(CASH), _fill(Side.BUY, 100, 50.0), _fill(Side.SELL, 40, 60.0, ts=2))

    # (60 - 50) * 40 = 400 realised; 60 shares remain at the unchanged average of 50.
    [trade] = pf.trades
    pos = pf.positions["AAPL"]
    assert trade.pnl == pytest.approx(400.0)
    assert (pos.qty, pos.avg_price) == (60.0, 50.0)
    assert trade.is_open
    assert (trade.exit_qty, trade.exit_price) == (40.0, 60.0)


def test_closing_the_rest_finishes_the_trade_with_a_weighted_exit_price() -> None:
    pf = _book(
        Portfolio.with_cash(CASH),
        _fill(Side.BUY, 100, 50.0),
        _fill(Side.SELL, 40, 60.0, ts=2),
        _fill(Side.SELL, 60, 45.0, ts=3),
    )

    # pnl 400 + (45 - 50) * 60 = 400 - 300 = 100; exit price (40*60 + 60*45) / 100 = 51.0
    [trade] = pf.trades
    assert trade.pnl == pytest.approx(100.0)
    assert trade.exit_price == pytest.approx(51.0)
    assert trade.exit_ts == 3
    assert pf.qty("AAPL") == 0.0


def test_adding_to_a_long_moves_the_average_price_to_the_weighted_mean() -> None:
    pf = _book(Portfolio.with_cash(CASH), _fill(Side.BUY, 100, 50.0), _fill(Side.BUY, 50, 56.0, ts=2))

    # (100 * 50 + 50 * 56) / 150 = 7 800 / 150 = 52.0
    pos = pf.positions["AAPL"]
    assert (pos.qty, pos.avg_price) == (150.0, pytest.approx(52.0))


def test_adding_to_a_position_extends_the_same_trade() -> None:
    pf = _book(
        Portfolio.with_cash(CASH), _fill(Side.BUY, 100, 50.0, 1.0), _fill(Side.BUY, 50, 56.0, 1.0, ts=2)
    )

    [trade] = pf.trades
    assert (trade.qty, trade.entry_price, trade.fees) == (150.0, pytest.approx(52.0), 2.0)


def test_realised_pnl_after_an_add_uses_the_average_price() -> None:
    pf = _book(
        Portfolio.with_cash(CASH),
        _fill(Side.BUY, 100, 50.0),
        _fill(Side.BUY, 50, 56.0, ts=2),
        _fill(Side.SELL, 150, 54.0, ts=3),
    )

    # average 52; (54 - 52) * 150 = 300
    assert pf.trades[0].pnl == pytest.approx(300.0)


def test_fractional_round_trip_with_float_dust_still_closes_the_trade() -> None:
    pf = _book(
        Portfolio.with_cash(CASH),
        _fill(Side.BUY, 0.1, 30_000.0),
        _fill(Side.BUY, 0.2, 30_000.0, ts=2),
        _fill(Side.SELL, 0.3, 31_000.0, ts=3),
    )

    # 0.1 + 0.2 = 0.30000000000000004: the 4e-17 residue is below EPS and is flattened.
    assert pf.qty("AAPL") == 0.0
    assert not pf.trades[0].is_open
    assert pf.trades[0].pnl == pytest.approx(300.0)


# --------------------------------------------------------------------------------- reversal


def _reversal() -> Portfolio:
    """Long 100 @ 50 (no fee), then one sell of 150 @ 60 with a fee of 3."""
    return _book(
        Portfolio.with_cash(CASH),
        _fill(Side.BUY, 100, 50.0, ts=1, bar=1),
        _fill(Side.SELL, 150, 60.0, 3.0, ts=2, bar=2),
    )


def test_a_reversing_fill_closes_the_long_trade_with_its_pro_rata_fee() -> None:
    closed, _ = _reversal().trades

    # 100 of the 150 close the long: (60 - 50) * 100 = 1 000; fee share 3 * 100/150 = 2.
    assert closed.direction == 1
    assert closed.pnl == pytest.approx(1_000.0)
    assert closed.fees == pytest.approx(2.0)
    assert (closed.exit_qty, closed.exit_ts, closed.exit_bar) == (100.0, 2, 2)


def test_a_reversing_fill_opens_a_short_trade_with_the_rest_of_the_fee() -> None:
    _, opened = _reversal().trades

    # 50 of the 150 open the short at 60; fee share 3 * 50/150 = 1.
    assert (opened.direction, opened.qty, opened.entry_price) == (-1, 50.0, 60.0)
    assert opened.fees == pytest.approx(1.0)
    assert (opened.entry_ts, opened.entry_bar, opened.is_open) == (2, 2, True)


def test_a_reversing_fill_leaves_a_short_position_at_the_fill_price() -> None:
    pf = _reversal()

    pos = pf.positions["AAPL"]
    assert (pos.qty, pos.avg_price) == (-50.0, 60.0)
    assert pos.trade is pf.trades[1]


def test_a_reversing_fill_books_its_whole_notional_and_fee_in_cash() -> None:
    pf = _reversal()

    # 100 000 - 5 000 + 150 * 60 - 3 = 103 997
    assert pf.cash["USD"] == pytest.approx(103_997.0)
    assert pf.fees_paid["USD"] == pytest.approx(3.0)


def test_a_short_reversed_to_long_mirrors_the_split() -> None:
    pf = _book(Portfolio.with_cash(CASH), _fill(Side.SELL, 20, 100.0), _fill(Side.BUY, 30, 90.0, 1.5, ts=2))

    # Cover 20: (100 - 90) * 20 = 200, fee 1.5 * 20/30 = 1.0; open long 10 @ 90 with fee 0.5.
    closed, opened = pf.trades
    assert (closed.pnl, closed.fees) == (pytest.approx(200.0), pytest.approx(1.0))
    assert (opened.direction, opened.qty, opened.entry_price) == (1, 10.0, 90.0)
    assert opened.fees == pytest.approx(0.5)
    assert pf.qty("AAPL") == 10.0


# ------------------------------------------------------------------------------ currencies


def test_a_jpy_quoted_fill_moves_the_jpy_cash_balance_not_usd() -> None:
    pf = Portfolio.with_cash(CASH, "USD")

    pf.apply_fill(_fill(Side.BUY, 1_000, 150.0, 15.0, symbol="USDJPY"), "JPY")

    # -1 000 * 150 - 15 = -150 015 JPY; the USD balance is untouched.
    assert pf.cash == {"USD": CASH, "JPY": pytest.approx(-150_015.0)}
    assert pf.fees_paid == {"JPY": 15.0}


def test_fees_are_totalled_per_currency() -> None:
    pf = Portfolio.with_cash(CASH)

    pf.apply_fill(_fill(Side.BUY, 10, 100.0, 1.0), "USD")
    pf.apply_fill(_fill(Side.BUY, 100, 150.0, 20.0, symbol="USDJPY"), "JPY")

    assert pf.fees_paid == {"USD": 1.0, "JPY": 20.0}


def test_positions_in_two_symbols_are_kept_apart() -> None:
    pf = _book(
        Portfolio.with_cash(CASH), _fill(Side.BUY, 10, 100.0), _fill(Side.SELL, 5, 200.0, symbol="MSFT")
    )

    assert (pf.qty("AAPL"), pf.qty("MSFT")) == (10.0, -5.0)
    assert [t.symbol for t in pf.trades] == ["AAPL", "MSFT"]


# -------------------------------------------------------------------------------- properties

#: One step: a signed quantity in hundredths of a unit (+ buys, - sells), or "flat" (close what is held)
#: or "reverse" (flip to the same size the other way), which hit the exact-close and reversal paths often.
_STEPS = st.lists(
    st.tuples(
        st.one_of(
            st.integers(min_value=-100_000, max_value=100_000).filter(bool),
            st.sampled_from(["flat", "reverse"]),
        ),
        st.integers(min_value=50, max_value=500_000),  # price in cents: 0.50 .. 5 000.00
        st.integers(min_value=0, max_value=2_500),  # fee in cents: 0.00 .. 25.00
    ),
    min_size=1,
    max_size=20,
)
Step = tuple[int | str, int, int]


def _apply_all(steps: list[Step]) -> tuple[Portfolio, list[Fill]]:
    """Book every step as a fill in AAPL; returns the portfolio and the fills actually booked."""
    pf = Portfolio.with_cash(CASH)
    booked: list[Fill] = []
    for n, (token, price_c, fee_c) in enumerate(steps):
        held = pf.qty("AAPL")
        if isinstance(token, str):
            signed = -held if token == "flat" else -2 * held
        else:
            signed = token / 100
        if not signed:
            continue
        side = Side.BUY if signed > 0 else Side.SELL
        fill = _fill(side, abs(signed), price_c / 100, fee_c / 100, ts=n, bar=n)
        pf.apply_fill(fill, "USD")
        booked.append(fill)
    return pf, booked


@settings(max_examples=200, deadline=None)
@given(steps=_STEPS)
def test_position_quantity_equals_the_signed_sum_of_fills(steps: list[Step]) -> None:
    pf, fills = _apply_all(steps)

    expected = math.fsum(f.side.sign * f.qty for f in fills)
    assert pf.qty("AAPL") == pytest.approx(expected, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(steps=_STEPS, mark_c=st.integers(min_value=50, max_value=500_000))
def test_cash_plus_marked_position_equals_start_plus_pnl_minus_fees(steps: list[Step], mark_c: int) -> None:
    pf, fills = _apply_all(steps)
    pos = pf.positions.get("AAPL")
    qty, avg, mark = (pos.qty, pos.avg_price, mark_c / 100) if pos else (0.0, 0.0, mark_c / 100)

    equity = pf.cash["USD"] + qty * mark
    realised = math.fsum(t.pnl for t in pf.trades)
    unrealised = qty * (mark - avg)
    fees = math.fsum(f.fee for f in fills)
    assert equity == pytest.approx(CASH + realised + unrealised - fees, rel=1e-6)


@settings(max_examples=200, deadline=None)
@given(steps=_STEPS)
def test_fees_charged_to_trades_add_up_to_the_fees_paid(steps: list[Step]) -> None:
    pf, _ = _apply_all(steps)

    assert math.fsum(t.fees for t in pf.trades) == pytest.approx(pf.fees_paid.get("USD", 0.0), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(steps=_STEPS)
def test_only_the_positions_own_trade_is_open_and_it_points_the_positions_way(steps: list[Step]) -> None:
    pf, _ = _apply_all(steps)
    pos = pf.positions.get("AAPL")

    open_trades = [t for t in pf.trades if t.is_open]
    if pos is None or not pos.qty:
        assert open_trades == []
    else:
        assert open_trades == [pos.trade]
        assert pos.trade.direction == (1 if pos.qty > 0 else -1)
