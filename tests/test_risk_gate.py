"""The risk gate: sizing by hand, caps, the drawdown halt, and properties over random inputs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hflite.domain.instrument import SAMPLE_INSTRUMENTS
from hflite.domain.order import Side
from hflite.domain.signal import Exits, IntentKind, OrderIntent, VerdictStatus
from hflite.risk.gate import RiskLimits, RiskState, evaluate

SPY = SAMPLE_INSTRUMENTS["SPY"]
BTC = SAMPLE_INSTRUMENTS["BTC-USD"]
USDJPY = SAMPLE_INSTRUMENTS["USDJPY"]


def intent(price=100.0, atr=2.0, side=Side.BUY, kind=IntentKind.ENTRY, qty=None, stop_atr=0.0, sym="SPY"):
    return OrderIntent("i1", sym, kind, side, 0, 0, "test", price, atr, qty, Exits(stop_atr=stop_atr))


def state(equity=100_000.0, peak=None, gross=0.0):
    return RiskState(equity=equity, peak_equity=peak or equity, gross_exposure=gross)


def test_atr_sizing_risks_the_configured_share_of_equity_over_the_stop():
    # risk 0.5% of 100,000 = 500 USD; stop 2 ATR x 2.0 = 4.0 USD per share -> 125 shares
    v = evaluate(RiskLimits(), state(), intent(), SPY, 1.0)
    assert (v.status, v.qty_approved) == (VerdictStatus.APPROVED, 125.0)
    assert "risk 0.5% of equity over a 2 ATR stop" in v.reason


def test_the_strategy_stop_distance_overrides_the_default_for_sizing():
    # 500 USD / (3 ATR x 2.0) = 83.33 -> 83 whole shares
    assert evaluate(RiskLimits(), state(), intent(stop_atr=3.0), SPY, 1.0).qty_approved == 83.0


def test_percent_equity_sizing_buys_that_share_of_equity():
    # 10% of 100,000 = 10,000 USD at 100 USD -> 100 shares
    v = evaluate(RiskLimits(sizing="percent_equity"), state(), intent(), SPY, 1.0)
    assert v.qty_approved == 100.0


def test_sizing_converts_quote_currency_risk_to_usd():
    # USDJPY at 150 JPY, ATR 1.5 JPY, fx JPY->USD = 1/150: per-unit risk 2*1.5/150 = 0.02 USD
    # 500 USD / 0.02 = 25,000 units; position cap 25% of equity: 25,000 USD / (150/150) = 25,000 units
    v = evaluate(RiskLimits(), state(), intent(price=150.0, atr=1.5, sym="USDJPY"), USDJPY, 1 / 150)
    assert v.qty_approved == pytest.approx(25_000.0)


def test_a_position_larger_than_the_cap_is_resized_with_the_reason():
    # ATR 0.1: 500 / 0.2 = 2,500 shares = 250,000 USD > 25% cap (25,000 USD) -> 250 shares
    v = evaluate(RiskLimits(), state(), intent(atr=0.1), SPY, 1.0)
    assert (v.status, v.qty_requested, v.qty_approved) == (VerdictStatus.RESIZED, 2500.0, 250.0)
    assert "position cap 25% of equity" in v.reason


def test_gross_exposure_cap_leaves_only_the_room_that_is_left():
    # gross 95,000 of a 1x cap on 100,000: room 5,000 USD = 50 shares (wanted 125)
    v = evaluate(RiskLimits(), state(gross=95_000.0), intent(), SPY, 1.0)
    assert (v.status, v.qty_approved) == (VerdictStatus.RESIZED, 50.0)
    assert "gross exposure cap" in v.reason


def test_no_room_at_all_rejects():
    v = evaluate(RiskLimits(), state(gross=100_000.0), intent(), SPY, 1.0)
    assert v.status is VerdictStatus.REJECTED and v.qty_approved == 0


def test_unknown_atr_rejects_atr_sizing():
    v = evaluate(RiskLimits(), state(), intent(atr=float("nan")), SPY, 1.0)
    assert v.status is VerdictStatus.REJECTED and "ATR unavailable" in v.reason


def test_spot_crypto_cannot_be_sold_short():
    v = evaluate(RiskLimits(), state(), intent(side=Side.SELL, sym="BTC-USD"), BTC, 1.0)
    assert v.status is VerdictStatus.REJECTED and "cannot be sold short" in v.reason


def test_drawdown_beyond_the_limit_halts_entries_and_the_halt_holds_after_recovery():
    s = state(equity=79_000.0, peak=100_000.0)  # 21% drawdown, limit 20%
    v = evaluate(RiskLimits(), s, intent(), SPY, 1.0)
    assert v.status is VerdictStatus.REJECTED and "drawdown 21.00% reached the 20% limit" in v.reason
    s.equity = 120_000.0  # recovered: the halt still holds until a human resets it
    assert evaluate(RiskLimits(), s, intent(), SPY, 1.0).status is VerdictStatus.REJECTED


def test_exits_are_always_allowed_even_when_halted():
    s = state(equity=50_000.0, peak=100_000.0)
    s.halted = True
    v = evaluate(RiskLimits(), s, intent(kind=IntentKind.EXIT, side=Side.SELL, qty=40.0), SPY, 1.0)
    assert (v.status, v.qty_approved) == (VerdictStatus.APPROVED, 40.0)


limits_st = st.builds(
    RiskLimits,
    sizing=st.sampled_from(["atr", "percent_equity"]),
    risk_pct=st.floats(0.05, 5),
    stop_atr=st.floats(0.5, 10),
    percent_equity=st.floats(1, 100),
    max_position_pct=st.floats(1, 100),
    max_gross_exposure=st.floats(0.1, 5),
    max_drawdown_pct=st.floats(1, 50),
)


@settings(max_examples=300, deadline=None)
@given(
    limits=limits_st,
    equity=st.floats(1_000, 1e8),
    peak_extra=st.floats(0, 0.6),
    gross_frac=st.floats(0, 6),
    price=st.floats(0.5, 5_000),
    atr_frac=st.floats(0.001, 0.2),
)
def test_an_approved_entry_never_breaks_the_position_or_gross_cap(
    limits, equity, peak_extra, gross_frac, price, atr_frac
):
    s = state(equity=equity, peak=equity * (1 + peak_extra), gross=equity * gross_frac)
    v = evaluate(limits, s, intent(price=price, atr=price * atr_frac), SPY, 1.0)
    if v.qty_approved > 0:
        notional = v.qty_approved * price
        assert notional <= equity * limits.max_position_pct / 100 * (1 + 1e-9)
        assert s.gross_exposure + notional <= limits.max_gross_exposure * equity * (1 + 1e-9)
        assert (1 - equity / s.peak_equity) * 100 < limits.max_drawdown_pct
        assert v.qty_approved == int(v.qty_approved)  # whole shares


@settings(max_examples=200, deadline=None)
@given(r1=st.floats(0.05, 2.5), r2=st.floats(0.05, 2.5), atr1=st.floats(0.2, 20), atr2=st.floats(0.2, 20))
def test_size_grows_with_risk_pct_and_shrinks_with_atr(r1, r2, atr1, atr2):
    uncapped = {"max_position_pct": 100.0, "max_gross_exposure": 10.0}
    big = 1e9

    def qty(risk, atr):
        return evaluate(
            RiskLimits(risk_pct=risk, **uncapped), state(equity=big), intent(atr=atr), SPY, 1.0
        ).qty_approved

    lo, hi = sorted((r1, r2))
    assert qty(lo, 2.0) <= qty(hi, 2.0)
    a, b = sorted((atr1, atr2))
    assert qty(1.0, a) >= qty(1.0, b)
