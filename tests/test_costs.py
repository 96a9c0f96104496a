"""Commission and slippage models, checked against fees and moves worked out by hand."""

from __future__ import annotations

import pytest

from hflite.domain.instrument import AssetClass, Calendar, Instrument
from hflite.execution.costs import (
    AssetClassCommission,
    BpsCommission,
    FixedBpsSlippage,
    PerShareCommission,
    VolatilitySlippage,
)

AAPL = Instrument("AAPL", AssetClass.EQUITY, "USD", Calendar.XNYS, 0.01, 1.0)
SPY = Instrument("SPY", AssetClass.ETF, "USD", Calendar.XNYS, 0.01, 1.0)
BTC = Instrument("BTC-USD", AssetClass.CRYPTO, "USD", Calendar.ALWAYS, 0.01, 1e-5, base_currency="BTC")
EURUSD = Instrument("EURUSD", AssetClass.FX, "USD", Calendar.FX, 1e-5, 1.0, base_currency="EUR")

#: The IBKR fixed-rate shape: $0.005 per share, $1 minimum, capped at 1% of notional.
IBKR = PerShareCommission(per_share=0.005, minimum=1.0, max_pct=1.0)


# ------------------------------------------------------------------------------- per share


def test_per_share_fee_below_the_minimum_is_raised_to_the_minimum() -> None:
    # 100 * 0.005 = 0.50 < 1.00 minimum; cap 1% of 5 000 = 50 does not bind.
    assert IBKR.fee(AAPL, 100, 50.0) == pytest.approx(1.00)


def test_per_share_fee_above_the_minimum_is_shares_times_rate() -> None:
    # 1 000 * 0.005 = 5.00; cap 1% of 50 000 = 500 does not bind.
    assert IBKR.fee(AAPL, 1_000, 50.0) == pytest.approx(5.00)


def test_per_share_fee_on_a_penny_stock_is_capped_at_max_pct_of_notional() -> None:
    # 10 000 * 0.005 = 50.00, but notional is 10 000 * 0.05 = 500 and 1% of it is 5.00.
    assert IBKR.fee(AAPL, 10_000, 0.05) == pytest.approx(5.00)


def test_per_share_cap_wins_over_the_minimum_on_a_tiny_order() -> None:
    # 10 shares at $0.05: notional 0.50, 1% cap 0.005 < $1 minimum; IBKR charges the cap.
    assert IBKR.fee(AAPL, 10, 0.05) == pytest.approx(0.005)


def test_per_share_fee_ignores_the_sign_of_the_quantity() -> None:
    assert IBKR.fee(AAPL, -1_000, 50.0) == IBKR.fee(AAPL, 1_000, 50.0)


def test_per_share_defaults_have_no_minimum_and_a_one_percent_cap() -> None:
    model = PerShareCommission(per_share=0.01)

    # 10 * 0.01 = 0.10 with no minimum; 100 shares at $0.50: 1.00 per share vs 1% of 50 = 0.50.
    assert model.fee(AAPL, 10, 100.0) == pytest.approx(0.10)
    assert model.fee(AAPL, 100, 0.50) == pytest.approx(0.50)


# ------------------------------------------------------------------------------------- bps


def test_bps_fee_is_a_share_of_notional() -> None:
    # 2 BTC * 30 000 = 60 000 notional; 10 bps = 60.00
    assert BpsCommission(bps=10.0, minimum=1.0).fee(BTC, 2.0, 30_000.0) == pytest.approx(60.0)


def test_bps_fee_below_the_minimum_is_raised_to_the_minimum() -> None:
    # 0.001 BTC * 30 000 = 30 notional; 10 bps = 0.03 < 1.00
    assert BpsCommission(bps=10.0, minimum=1.0).fee(BTC, 0.001, 30_000.0) == pytest.approx(1.0)


def test_bps_fee_ignores_the_sign_of_the_quantity() -> None:
    model = BpsCommission(bps=10.0)

    assert model.fee(BTC, -2.0, 30_000.0) == model.fee(BTC, 2.0, 30_000.0)


def test_zero_bps_with_no_minimum_is_free() -> None:
    assert BpsCommission(bps=0.0).fee(EURUSD, 100_000, 1.1) == 0.0


# --------------------------------------------------------------------------------- routing

ROUTED = AssetClassCommission(
    {AssetClass.EQUITY: IBKR, AssetClass.ETF: IBKR, AssetClass.CRYPTO: BpsCommission(bps=10.0)}
)


def test_asset_class_commission_routes_an_equity_to_its_per_share_model() -> None:
    # 1 000 * 0.005 = 5.00
    assert ROUTED.fee(AAPL, 1_000, 50.0) == pytest.approx(5.00)


def test_asset_class_commission_routes_crypto_to_its_bps_model() -> None:
    # 1 BTC * 30 000 * 10 bps = 30.00 (the per-share model would have charged 0.005).
    assert ROUTED.fee(BTC, 1.0, 30_000.0) == pytest.approx(30.0)


def test_asset_class_commission_refuses_an_unconfigured_class_instead_of_charging_nothing() -> None:
    with pytest.raises(KeyError):
        ROUTED.fee(EURUSD, 100_000, 1.1)


# ---------------------------------------------------------------------------------- slippage


def test_fixed_bps_slippage_is_a_share_of_the_price() -> None:
    # 200 * 5 / 10 000 = 0.10
    assert FixedBpsSlippage(bps=5.0).slippage(AAPL, 200.0, prev_range=0.0) == pytest.approx(0.10)


def test_fixed_bps_slippage_ignores_the_previous_range() -> None:
    model = FixedBpsSlippage(bps=5.0)

    assert model.slippage(AAPL, 200.0, prev_range=50.0) == model.slippage(AAPL, 200.0, prev_range=0.0)


VOL = VolatilitySlippage(bps={AssetClass.EQUITY: 2.0, AssetClass.CRYPTO: 5.0}, range_frac=0.02)


def test_volatility_slippage_adds_a_share_of_the_previous_range_to_the_class_bps() -> None:
    # 100 * 2 bps = 0.02, plus 0.02 * range 3.0 = 0.06: 0.08
    assert VOL.slippage(AAPL, 100.0, prev_range=3.0) == pytest.approx(0.08)


def test_volatility_slippage_uses_the_bps_of_the_instruments_class() -> None:
    # 30 000 * 5 bps = 15.0, plus 0.02 * 600 = 12.0: 27.0
    assert VOL.slippage(BTC, 30_000.0, prev_range=600.0) == pytest.approx(27.0)


def test_volatility_slippage_treats_a_nan_previous_range_as_zero() -> None:
    # The first bar has no previous bar: only 100 * 2 bps = 0.02 remains.
    assert VOL.slippage(AAPL, 100.0, prev_range=float("nan")) == pytest.approx(0.02)


def test_volatility_slippage_never_lets_a_negative_range_improve_the_price() -> None:
    assert VOL.slippage(AAPL, 100.0, prev_range=-5.0) == pytest.approx(0.02)


def test_volatility_slippage_for_a_class_without_bps_is_the_range_term_alone() -> None:
    # No FX entry: 0 bps, plus 0.02 * 0.005 = 0.0001
    assert VOL.slippage(EURUSD, 1.1, prev_range=0.005) == pytest.approx(0.0001)


def test_volatility_slippage_default_range_share_is_two_percent() -> None:
    model = VolatilitySlippage(bps={})

    assert model.slippage(SPY, 400.0, prev_range=10.0) == pytest.approx(0.2)
