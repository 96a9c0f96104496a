"""The risk gate: one hand-checked test per rule, then properties over random books and intents.

Unless a test says otherwise: equity 100,000 USD, an entry at 100 USD with ATR 2, default limits
(risk 0.5% over a 2 ATR stop), so the size before any cut is 500 USD / 4 USD = 125 shares.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hflite.domain.instrument import SAMPLE_INSTRUMENTS, AssetClass, Instrument, VolumeUnit
from hflite.domain.order import Side
from hflite.domain.signal import Check, Exits, IntentKind, OrderIntent, VerdictStatus
from hflite.risk.gate import MarketContext, RiskLimits, RiskState, evaluate

SPY = SAMPLE_INSTRUMENTS["SPY"]
AAPL = SAMPLE_INSTRUMENTS["AAPL"]
BTC = SAMPLE_INSTRUMENTS["BTC-USD"]
USDJPY = SAMPLE_INSTRUMENTS["USDJPY"]
APPROVED, RESIZED, REJECTED = VerdictStatus.APPROVED, VerdictStatus.RESIZED, VerdictStatus.REJECTED


def intent(price=100.0, atr=2.0, side=Side.BUY, kind=IntentKind.ENTRY, qty=None, stop_atr=0.0, sym="SPY"):
    return OrderIntent("i1", sym, kind, side, 0, 0, "test", price, atr, qty, Exits(stop_atr=stop_atr))


def state(equity=100_000.0, peak=None, **fields):
    return RiskState(equity=equity, peak_equity=equity if peak is None else peak, **fields)


def ctx(**fields):
    return MarketContext(**fields)


def check(verdict, name):
    (found,) = [c for c in verdict.checks if c.name == name]
    return found


# -- sizing ------------------------------------------------------------------------------------------
def test_atr_sizing_risks_the_configured_share_of_equity_over_the_stop():
    # risk 0.5% of 100,000 = 500 USD; stop 2 ATR x 2.0 = 4.0 USD per share -> 125 shares
    v = evaluate(RiskLimits(), state(), intent(), SPY, 1.0)
    assert (v.status, v.qty_requested, v.qty_approved) == (APPROVED, 125.0, 125.0)
    assert v.reason == "risk 0.5% of equity over a 2 ATR stop" and v.rules == ()


def test_the_strategy_stop_distance_overrides_the_default_for_sizing():
    # 500 USD / (3 ATR x 2.0) = 83.33 -> 83 whole shares
    assert evaluate(RiskLimits(), state(), intent(stop_atr=3.0), SPY, 1.0).qty_approved == 83.0


def test_percent_equity_sizing_buys_that_share_of_equity():
    # 10% of 100,000 = 10,000 USD at 100 USD -> 100 shares
    v = evaluate(RiskLimits(sizing="percent_equity"), state(), intent(), SPY, 1.0)
    assert v.qty_approved == 100.0 and v.reason == "10% of equity"


def test_sizing_converts_quote_currency_risk_to_usd():
    # USDJPY at 150 JPY, ATR 1.5 JPY, fx JPY->USD = 1/150: per-unit risk 2*1.5/150 = 0.02 USD
    # 500 USD / 0.02 = 25,000 units; position cap 25% of equity: 25,000 USD / (150/150) = 25,000 units
    v = evaluate(RiskLimits(), state(), intent(price=150.0, atr=1.5, sym="USDJPY"), USDJPY, 1 / 150)
    assert v.qty_approved == pytest.approx(25_000.0)


def test_unknown_atr_rejects_atr_sizing():
    v = evaluate(RiskLimits(), state(), intent(atr=float("nan")), SPY, 1.0)
    assert (v.status, v.rules) == (REJECTED, ("sizing",))
    assert v.reason == "cannot size: ATR unavailable"


def test_a_size_below_one_lot_rejects():
    # equity 1,000: risk 5 USD over 2 ATR x 10 = 20 USD per share -> 0.25 shares -> 0 whole shares
    v = evaluate(RiskLimits(), state(equity=1_000.0), intent(atr=10.0), SPY, 1.0)
    assert (v.status, v.qty_requested, v.rules) == (REJECTED, 0.25, ("lot_size",))
    assert v.reason == "size below one lot: nothing left to trade"


# -- gates that reject -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "context", "rule", "reason"),
    [
        ({"mode": "killed", "mode_reason": "fat finger"}, {}, "kill", "kill switch: fat finger"),
        ({"mode": "paused"}, {}, "pause", "paused by a human: no reason given"),
        ({"halted": True, "halt_reason": "drawdown 16.00%"}, {}, "drawdown_halt", "halted: drawdown 16.00%"),
        ({"locks": {"weekly": "weekly loss limit: 5.10%"}}, {}, "weekly_loss", "weekly loss limit: 5.10%"),
        ({}, {"market_breaker": "SPY moved -7.5%"}, "market_breaker", "SPY moved -7.5%"),
        ({}, {"breaker": "a 6.0-sigma move"}, "circuit_breaker", "a 6.0-sigma move"),
        ({"global_pause": "stop-loss guard"}, {}, "protection", "stop-loss guard"),
        ({}, {"symbol_pause": "cooldown: stopped out"}, "protection", "cooldown: stopped out"),
        ({"open_positions": 10}, {}, "open_positions", "10 positions open"),
        ({}, {"orders_last_minute": 60}, "order_rate", "60 orders in the last minute"),
        ({}, {"adv_usd": 500_000.0}, "liquidity", "average dollar volume 500,000 USD"),
        ({}, {"fx": float("nan")}, "price", "no usable price (100, FX nan)"),
    ],
)
def test_each_reject_gate_names_its_rule_and_reason(fields, context, rule, reason):
    v = evaluate(RiskLimits(), state(**fields), intent(), SPY, ctx(**context))
    assert (v.status, v.qty_approved, v.rules, v.reason) == (REJECTED, 0.0, (rule,), reason)


def test_the_collar_rejects_a_price_too_far_from_the_last_trade_with_the_distance():
    # 111 vs a last price of 100 = 11% off; collar 10%
    v = evaluate(RiskLimits(), state(), intent(price=111.0), SPY, ctx(last_price=100.0))
    assert (v.status, v.rules) == (REJECTED, ("collar",))
    assert v.reason == "price 111 is 11.0% from the last price 100"
    c = check(v, "collar_pct")
    assert (c.value, c.limit, c.passed) == (pytest.approx(11.0), 10.0, False)


def test_a_price_within_the_collar_passes():
    v = evaluate(RiskLimits(), state(), intent(price=109.0), SPY, ctx(last_price=100.0))
    assert v.status is APPROVED and check(v, "collar_pct").value == pytest.approx(9.0)


def test_equity_that_is_not_positive_rejects():
    v = evaluate(RiskLimits(), state(equity=0.0, peak=100_000.0), intent(), SPY, 1.0)
    assert (v.status, v.rules, v.reason) == (REJECTED, ("equity",), "equity is not positive")


def test_spot_crypto_cannot_be_sold_short():
    v = evaluate(RiskLimits(), state(), intent(side=Side.SELL, sym="BTC-USD"), BTC, 1.0)
    assert (v.status, v.rules, v.reason) == (REJECTED, ("shorting",), "BTC-USD cannot be sold short")


def test_the_account_may_forbid_shorting_what_the_instrument_allows():
    v = evaluate(RiskLimits(allow_short=False), state(), intent(side=Side.SELL), SPY, 1.0)
    assert (v.status, v.rules) == (REJECTED, ("shorting",))
    assert v.reason == "the account may not sell short (risk.allow_short = false)"


def test_every_failing_gate_is_reported_once_in_order():
    s = state(mode="paused", mode_reason="lunch", locks={"daily": "daily loss", "monthly": "monthly loss"})
    v = evaluate(RiskLimits(), s, intent(price=111.0), SPY, ctx(last_price=100.0))
    assert v.rules == ("pause", "daily_loss", "monthly_loss", "collar")
    assert v.reason == (
        "paused by a human: lunch; daily loss; monthly loss; price 111 is 11.0% from the last price 100"
    )


def test_the_gate_itself_does_not_halt_on_drawdown_the_manager_does():
    # 16% below the peak (limit 15%) but the manager has not set the halt: only the 10% reduction acts
    # equity 84,000: risk 420 USD / 4 = 105 shares, x0.5 = 52.5 -> 52
    v = evaluate(RiskLimits(), state(equity=84_000.0, peak=100_000.0), intent(), SPY, 1.0)
    assert (v.status, v.qty_requested, v.qty_approved, v.rules) == (
        RESIZED,
        105.0,
        52.0,
        ("drawdown_reduce",),
    )
    c = check(v, "drawdown_pct")
    assert (c.value, c.limit, c.passed) == (pytest.approx(16.0), 15.0, True)


def test_a_halt_holds_whatever_the_equity_does_until_the_manager_lifts_it():
    s = state(equity=120_000.0, peak=100_000.0, halted=True, halt_reason="drawdown 15.20%")
    v = evaluate(RiskLimits(), s, intent(), SPY, 1.0)
    assert (v.status, v.rules) == (REJECTED, ("drawdown_halt",))
    assert check(v, "drawdown_pct").passed is False


def test_exits_are_always_allowed_and_never_enlarged_whatever_is_active():
    s = state(equity=50_000.0, peak=100_000.0, mode="killed", halted=True, locks={"daily": "x"})
    c = ctx(breaker="b", market_breaker="m", orders_last_minute=1_000, last_price=1.0)
    v = evaluate(RiskLimits(), s, intent(kind=IntentKind.EXIT, side=Side.SELL, qty=40.0), SPY, c)
    assert (v.status, v.qty_requested, v.qty_approved) == (APPROVED, 40.0, 40.0)
    assert v.reason == "exit: always allowed"


# -- caps: each leaves exactly the room that is left -------------------------------------------------
def test_a_position_larger_than_the_cap_is_resized_with_the_reason():
    # ATR 0.1: 500 / 0.2 = 2,500 shares = 250,000 USD > 25% cap (25,000 USD) -> 250 shares
    v = evaluate(RiskLimits(), state(), intent(atr=0.1), SPY, 1.0)
    assert (v.status, v.qty_requested, v.qty_approved) == (RESIZED, 2500.0, 250.0)
    assert v.rules == ("position_cap",)
    assert v.reason == "risk 0.5% of equity over a 2 ATR stop; cut by position cap 25% of equity"


def test_the_sector_cap_counts_other_stocks_held_in_the_same_sector():
    # MSFT held for 15,000 USD (technology); cap 20% = 20,000: room 5,000 USD -> 50 AAPL of 125
    s = state(gross_exposure=15_000.0, net_exposure=15_000.0, sector_exposure={"technology": 15_000.0})
    v = evaluate(RiskLimits(), s, intent(sym="AAPL"), AAPL, 1.0)
    assert (v.status, v.qty_approved, v.rules) == (RESIZED, 50.0, ("sector_cap",))
    assert "sector technology cap 20% of equity" in v.reason
    # the check records what the uncut order would reach: (15,000 + 12,500) / 1,000 = 27.5%
    assert check(v, "sector_pct:technology") == Check("sector_pct:technology", 27.5, 20.0, False)


def test_a_held_stock_in_another_sector_does_not_count():
    s = state(gross_exposure=19_000.0, net_exposure=19_000.0, sector_exposure={"energy": 19_000.0})
    assert evaluate(RiskLimits(), s, intent(sym="AAPL"), AAPL, 1.0).qty_approved == 125.0


def test_the_asset_class_cap_leaves_the_class_room_that_is_left():
    # BTC at 40,000, ATR 800: 500 / 1,600 = 0.3125 BTC = 12,500 USD; crypto held 12,000 of a
    # 20% cap (20,000): room 8,000 USD = 0.2 BTC
    s = state(gross_exposure=12_000.0, net_exposure=12_000.0, class_exposure={"crypto": 12_000.0})
    v = evaluate(RiskLimits(), s, intent(price=40_000.0, atr=800.0, sym="BTC-USD"), BTC, 1.0)
    assert (v.status, v.qty_requested, v.rules) == (RESIZED, 0.3125, ("asset_class_cap",))
    assert v.qty_approved == pytest.approx(0.2)
    assert check(v, "class_pct:crypto") == Check("class_pct:crypto", 24.5, 20.0, False)


def test_gross_exposure_cap_leaves_only_the_room_that_is_left():
    # gross 95,000 of a 1x cap on 100,000: room 5,000 USD = 50 shares (wanted 125)
    v = evaluate(RiskLimits(), state(gross_exposure=95_000.0), intent(), SPY, 1.0)
    assert (v.status, v.qty_approved, v.rules) == (RESIZED, 50.0, ("gross_cap",))
    assert check(v, "gross_exposure") == Check("gross_exposure", 1.075, 1.0, False)


def test_no_room_at_all_rejects_naming_the_cap():
    v = evaluate(RiskLimits(), state(gross_exposure=100_000.0), intent(), SPY, 1.0)
    assert (v.status, v.qty_approved, v.rules) == (REJECTED, 0.0, ("gross_cap",))
    assert v.reason == "gross exposure cap 1x equity: nothing left to trade"


def test_the_net_cap_limits_a_short_against_a_short_book():
    # short book: net -90,000 (gross cap 2x, out of the way); a short adds to it: room
    # 1 x 100,000 - 90,000 = 10,000 USD -> 100 shares of 125
    s = state(gross_exposure=90_000.0, net_exposure=-90_000.0)
    v = evaluate(RiskLimits(max_gross_exposure=2.0), s, intent(side=Side.SELL), SPY, 1.0)
    assert (v.status, v.qty_approved, v.rules) == (RESIZED, 100.0, ("net_cap",))
    assert "net exposure cap 1x equity" in v.reason


def test_a_short_against_a_long_book_reduces_net_exposure_and_is_not_cut():
    s = state(gross_exposure=90_000.0, net_exposure=90_000.0)
    v = evaluate(RiskLimits(max_gross_exposure=2.0), s, intent(side=Side.SELL), SPY, 1.0)
    assert (v.status, v.qty_approved) == (APPROVED, 125.0)
    # net for a short: -1 x 90,000 already on the short side... -90,000 + 12,500 = -77,500 -> -0.775x
    assert check(v, "net_exposure").value == pytest.approx(-0.775)


@pytest.mark.parametrize(("leverage", "qty"), [(1.0, 40.0), (1.05, 90.0)])
def test_the_leverage_cap_allows_only_the_cash_left_plus_permitted_borrowing(leverage, qty):
    # 96,000 USD long, 4,000 cash; gross and net caps 2x out of the way.
    # 1x: borrow nothing -> 4,000 USD = 40 shares; 1.05x: borrow up to 5,000 -> 9,000 USD = 90 shares
    limits = RiskLimits(max_leverage=leverage, max_gross_exposure=2.0, max_net_exposure=2.0)
    s = state(gross_exposure=96_000.0, net_exposure=96_000.0, cash=4_000.0)
    v = evaluate(limits, s, intent(), SPY, 1.0)
    assert (v.status, v.qty_approved, v.rules) == (RESIZED, qty, ("leverage_cap",))
    assert "leverage cap" in v.reason and "cash 4,000 USD" in v.reason
    # value: (equity - cash + the uncut 12,500) / equity = 1.085
    assert check(v, "leverage") == Check("leverage", pytest.approx(1.085), leverage, False)


def test_a_short_sale_is_not_a_loan_of_cash():
    limits = RiskLimits(max_gross_exposure=2.0, max_net_exposure=2.0)
    s = state(gross_exposure=96_000.0, net_exposure=96_000.0, cash=4_000.0)
    v = evaluate(limits, s, intent(side=Side.SELL), SPY, 1.0)
    assert (v.status, v.qty_approved) == (APPROVED, 125.0)
    assert not [c for c in v.checks if c.name == "leverage"]


def test_the_adv_share_cap_keeps_the_order_within_its_share_of_average_volume():
    # average 5,000 shares a bar, 1% -> 50 shares of 125; the check: 125 / 5,000 = 2.5% of it
    v = evaluate(RiskLimits(), state(), intent(), SPY, ctx(adv_usd=5e6, avg_units=5_000.0))
    assert (v.status, v.qty_approved, v.rules) == (RESIZED, 50.0, ("adv_share_cap",))
    assert "1.00% of average volume (5,000 units)" in v.reason
    assert check(v, "adv_share") == Check("adv_share", pytest.approx(0.025), 0.01, False)


def test_bars_without_volume_skip_the_liquidity_rules():
    v = evaluate(RiskLimits(), state(), intent(price=150.0, atr=1.5, sym="USDJPY"), USDJPY, ctx(fx=1 / 150))
    assert v.status is APPROVED and not [c for c in v.checks if c.name in ("adv_usd", "adv_share")]


def test_the_order_notional_cap_cuts_to_the_maximum_order():
    # 8,000 USD at 100 -> 80 shares of 125
    v = evaluate(RiskLimits(max_order_usd=8_000.0), state(), intent(), SPY, 1.0)
    assert (v.status, v.qty_approved, v.rules) == (RESIZED, 80.0, ("order_notional_cap",))
    assert "max order notional 8,000 USD" in v.reason
    assert check(v, "order_usd") == Check("order_usd", 12_500.0, 8_000.0, False)


# -- multipliers -------------------------------------------------------------------------------------
def test_from_the_reduce_level_a_drawdown_halves_new_entries():
    # equity 88,000, peak 100,000: drawdown 12% >= 10%: risk 440 / 4 = 110 shares, x0.5 = 55
    v = evaluate(RiskLimits(), state(equity=88_000.0, peak=100_000.0), intent(), SPY, 1.0)
    assert (v.status, v.qty_requested, v.qty_approved, v.rules) == (
        RESIZED,
        110.0,
        55.0,
        ("drawdown_reduce",),
    )
    assert v.reason.endswith("cut by drawdown 12.0%: size x0.5")
    assert check(v, "drawdown_reduce_pct") == Check("drawdown_reduce_pct", pytest.approx(12.0), 10.0, False)


def test_below_the_reduce_level_a_drawdown_changes_nothing():
    # drawdown 9%: 455 / 4 = 113.75 -> 113 shares, no cut
    v = evaluate(RiskLimits(), state(equity=91_000.0, peak=100_000.0), intent(), SPY, 1.0)
    assert (v.status, v.qty_approved, v.rules) == (APPROVED, 113.0, ())


def test_the_regime_scales_the_size_and_the_exposure_caps():
    # bear: x0.5 -> 62.5 shares; the gross cap becomes 0.5x: 45,000 held leaves 5,000 USD -> 50 shares
    v = evaluate(RiskLimits(), state(), intent(), SPY, ctx(regime="bear"))
    assert (v.qty_approved, v.rules) == (62.0, ("regime",))
    assert "bear regime: size x0.5" in v.reason
    assert check(v, "regime_scale") == Check("regime_scale", 0.5, 1.0, False)
    v = evaluate(RiskLimits(), state(gross_exposure=45_000.0), intent(), SPY, ctx(regime="bear"))
    assert (v.qty_approved, v.rules) == (50.0, ("regime", "gross_cap"))
    assert "gross exposure cap 0.5x equity" in v.reason


def test_high_volatility_shrinks_the_size_by_its_multiplier_unless_switched_off():
    # volatility 2.5x its median: multiplier 0.4 -> 125 x 0.4 = 50 shares
    c = ctx(vol_mult=0.4, vol_ratio=2.5)
    v = evaluate(RiskLimits(), state(), intent(), SPY, c)
    assert (v.qty_approved, v.rules) == (50.0, ("volatility",))
    assert "volatility 2.50x its median: size x0.40" in v.reason
    assert evaluate(RiskLimits(vol_adjust=False), state(), intent(), SPY, c).qty_approved == 125.0


def test_correlation_above_the_limit_reduces_in_proportion():
    # 0.6 with QQQ against a 0.3 limit: size x0.5 -> 62.5 -> 62 shares
    v = evaluate(RiskLimits(), state(), intent(), SPY, ctx(max_corr=0.6, corr_with="QQQ"))
    assert (v.status, v.qty_approved, v.rules) == (RESIZED, 62.0, ("correlation",))
    assert "correlation 0.60 with QQQ: size x0.50" in v.reason
    assert check(v, "correlation") == Check("correlation", 0.6, 0.3, False)


def test_correlation_above_the_limit_rejects_when_so_configured():
    limits = RiskLimits(correlation_action="reject")
    v = evaluate(limits, state(), intent(), SPY, ctx(max_corr=0.6, corr_with="QQQ"))
    assert (v.status, v.qty_requested, v.rules, v.reason) == (
        REJECTED, 125.0, ("correlation",), "correlation 0.60 with QQQ"
    )  # fmt: skip


def test_correlation_at_the_limit_passes():
    v = evaluate(RiskLimits(correlation_action="reject"), state(), intent(), SPY, ctx(max_corr=0.3))
    assert v.status is APPROVED and check(v, "correlation").passed


def test_every_binding_rule_is_named_in_the_order_it_acted():
    # 125 x vol 0.8 = 100; sector room 20,000 - 12,000 = 8,000 USD -> 80; order cap 6,000 -> 60
    s = state(gross_exposure=12_000.0, net_exposure=12_000.0, sector_exposure={"technology": 12_000.0})
    c = ctx(vol_mult=0.8, vol_ratio=1.25)
    v = evaluate(RiskLimits(max_order_usd=6_000.0), s, intent(sym="AAPL"), AAPL, c)
    assert (v.status, v.qty_approved) == (RESIZED, 60.0)
    assert v.rules == ("volatility", "sector_cap", "order_notional_cap")


def test_the_checks_carry_every_measured_value_and_its_limit():
    v = evaluate(RiskLimits(), state(), intent(), SPY, 1.0)
    assert v.checks == (
        Check("drawdown_pct", 0.0, 15.0, True),
        Check("daily_loss_pct", 0.0, 2.0, True),
        Check("weekly_loss_pct", 0.0, 5.0, True),
        Check("monthly_loss_pct", 0.0, 10.0, True),
        Check("orders_per_minute", 0, 60, True),
        Check("open_positions", 0, 10, True),
        Check("drawdown_reduce_pct", 0.0, 10.0, True),
        Check("position_pct", 12.5, 25.0, True),
        Check("gross_exposure", 0.125, 1.0, True),
        Check("net_exposure", 0.125, 1.0, True),
        Check("order_usd", 12_500.0, 1_000_000.0, True),
    )


def test_minimal_limits_isolate_sizing_and_the_position_and_gross_caps():
    s = state(open_positions=50, sector_exposure={"technology": 1e9}, cash=-1e9)
    c = ctx(adv_usd=1.0, avg_units=1.0, orders_last_minute=10**6, last_price=1.0, vol_mult=0.1)
    v = evaluate(RiskLimits.minimal(), s, intent(sym="AAPL"), AAPL, c)
    assert (v.status, v.qty_approved) == (APPROVED, 125.0)


# -- properties over random books, contexts and intents ----------------------------------------------
UNIVERSE = [
    SAMPLE_INSTRUMENTS[s] for s in ("SPY", "AAPL", "MSFT", "XOM", "JPM", "KO", "BTC-USD", "ETHUSDT", "USDJPY")
] + [Instrument("LOTS", AssetClass.EQUITY, "USD", SPY.calendar, 0.01, 100.0, sector="technology")]
REGIMES = ["", "bull", "bear", "sideways", "crisis"]
CLASSES = [c.value for c in AssetClass]


def sometimes_nan(strategy):
    return st.one_of(strategy, strategy, strategy, st.just(math.nan))


limits_st = st.builds(
    RiskLimits,
    sizing=st.sampled_from(["atr", "percent_equity"]),
    risk_pct=st.floats(0.05, 5),
    stop_atr=st.floats(0.5, 10),
    percent_equity=st.floats(1, 100),
    vol_adjust=st.booleans(),
    max_position_pct=st.floats(1, 100),
    max_correlation=st.floats(0.05, 1),
    correlation_action=st.sampled_from(["reduce", "reject"]),
    max_sector_pct=st.floats(1, 100),
    max_asset_class_pct=st.dictionaries(st.sampled_from(CLASSES), st.floats(1, 100)),
    min_adv_usd=st.floats(0, 1e7),
    max_adv_share=st.floats(0, 0.5),
    max_gross_exposure=st.floats(0.1, 10),
    max_net_exposure=st.floats(0.1, 10),
    max_leverage=st.floats(1, 10),
    max_open_positions=st.sampled_from([0, 10, 50]),
    drawdown_reduce_pct=st.floats(0, 50),
    drawdown_reduce_factor=st.floats(0.05, 1),
    max_drawdown_pct=st.floats(1, 100),
    max_order_usd=st.floats(0, 1e7),
    max_orders_per_minute=st.sampled_from([0, 10, 60]),
    collar_pct=st.sampled_from([0.0, 2.0, 10.0]),
    allow_short=st.booleans(),
)


@st.composite
def cases(draw):
    """(limits, state, entry intent, instrument, market context). Half the cases meet no reject gate
    by construction (so they reach sizing and the caps); the other half draw every flag at random."""
    quiet = draw(st.booleans())

    def flag(value, usual):
        return usual if quiet else draw(st.sampled_from([usual] * 4 + [value]))

    limits = draw(limits_st)
    inst = draw(st.sampled_from(UNIVERSE))
    if quiet:
        limits = replace(limits, allow_short=True)
    equity = flag(-500.0, 1.0) * draw(st.floats(1e3, 1e8))
    scale = abs(equity)
    book = draw(
        st.lists(
            st.tuples(st.sampled_from(UNIVERSE), st.floats(-0.3, 0.3)), max_size=9, unique_by=lambda t: t[0]
        )
    )
    gross = net = 0.0
    sectors: dict[str, float] = {}
    classes: dict[str, float] = {}
    for held, frac in book:
        usd = frac * scale
        gross, net = gross + abs(usd), net + usd
        if held.sector:
            sectors[held.sector] = sectors.get(held.sector, 0.0) + abs(usd)
        classes[held.asset_class.value] = classes.get(held.asset_class.value, 0.0) + abs(usd)
    s = RiskState(
        equity=equity,
        peak_equity=scale * (1 + draw(st.floats(0, 0.6))),
        gross_exposure=gross,
        net_exposure=net,
        cash=draw(sometimes_nan(st.floats(-1, 1.5))) * scale,
        open_positions=len(book) + flag(20, 0),
        sector_exposure=sectors,
        class_exposure=classes,
        mode=flag(draw(st.sampled_from(["paused", "killed"])), "running"),
        halted=flag(True, False),
        halt_reason="drawdown",
        locks=flag({"weekly": "weekly loss"}, {}),
        global_pause=flag("guard", ""),
    )
    price = draw(st.floats(0.5, 5_000))
    side = Side.BUY if quiet and not inst.shortable else draw(st.sampled_from([Side.BUY, Side.SELL]))
    it = OrderIntent(
        "p",
        inst.symbol,
        IntentKind.ENTRY,
        side,
        0,
        0,
        "property",
        price,
        flag(math.nan, 1.0) * draw(st.floats(0.001, 0.2)) * price,
        None,
        Exits(stop_atr=draw(st.sampled_from([0.0, 1.0, 3.0]))),
    )
    c = MarketContext(
        fx=draw(st.sampled_from([1.0, 1.0, 1 / 150, 1.1])),
        last_price=price
        * (draw(st.floats(0.99, 1.01)) if quiet else draw(sometimes_nan(st.floats(0.8, 1.2)))),
        adv_usd=draw(sometimes_nan(st.floats(1e7, 1e9) if quiet else st.floats(0, 1e9))),
        avg_units=draw(sometimes_nan(st.floats(0, 1e7))),
        vol_mult=draw(st.floats(0.25, 1)),
        vol_ratio=draw(st.floats(0.5, 4)),
        breaker=flag("breaker", ""),
        market_breaker=flag("market", ""),
        regime=draw(st.sampled_from(REGIMES)),
        symbol_pause=flag("cooldown", ""),
        orders_last_minute=flag(100, draw(st.sampled_from([0, 5]))),
        max_corr=draw(sometimes_nan(st.floats(-1, 1))),
        corr_with="QQQ",
    )
    return limits, s, it, inst, c


def active_gates(limits, s, it, inst, c):
    """The reject gates an entry meets, worked out from the inputs alone."""
    short = it.side is Side.SELL
    off = abs(it.price / c.last_price - 1) * 100 if c.last_price > 0 else 0.0
    liquid = inst.volume_unit is not VolumeUnit.NONE and not math.isnan(c.adv_usd)
    gates = {
        "kill": s.mode == "killed",
        "pause": s.mode == "paused",
        "drawdown_halt": s.halted,
        **{f"{p}_loss": True for p in s.locks},
        "market_breaker": bool(c.market_breaker),
        "circuit_breaker": bool(c.breaker),
        "protection": bool(s.global_pause or c.symbol_pause),
        "shorting": short and not (inst.shortable and limits.allow_short),
        "order_rate": bool(limits.max_orders_per_minute)
        and c.orders_last_minute >= limits.max_orders_per_minute,
        "collar": bool(limits.collar_pct) and off > limits.collar_pct,
        "liquidity": liquid and bool(limits.min_adv_usd) and c.adv_usd < limits.min_adv_usd,
        "equity": not s.equity > 0,
        "open_positions": bool(limits.max_open_positions) and s.open_positions >= limits.max_open_positions,
    }
    return {rule for rule, on in gates.items() if on}


def within(value, limit, slack):
    return value <= limit + 1e-9 * abs(limit) + slack


@settings(max_examples=400, deadline=None)
@given(case=cases())
def test_an_approved_entry_never_breaks_a_limit_and_no_active_gate_lets_one_through(case):
    limits, s, it, inst, c = case
    v = evaluate(limits, s, it, inst, c)
    gates = active_gates(limits, s, it, inst, c)
    assert 0.0 <= v.qty_approved <= v.qty_requested
    if gates:
        assert v.status is REJECTED and gates <= set(v.rules)
    if v.qty_approved == 0:
        assert v.status is REJECTED
        return
    assert not gates and v.status in (APPROVED, RESIZED)
    unit = it.price * c.fx
    qty, eq, sign = v.qty_approved, s.equity, it.side.sign
    notional = qty * unit
    slack = 1e-8 * inst.lot_size * unit  # lot rounding forgives 1e-9 of a lot
    lots = qty / inst.lot_size
    assert abs(lots - round(lots)) <= 1e-6 + 1e-9 * lots  # whole lots
    assert within(notional, limits.max_position_pct / 100 * eq, slack)
    if inst.sector and limits.max_sector_pct < 100:
        assert within(
            s.sector_exposure.get(inst.sector, 0.0) + notional, limits.max_sector_pct / 100 * eq, slack
        )
    cls = inst.asset_class.value
    if cls in limits.max_asset_class_pct:
        assert within(
            s.class_exposure.get(cls, 0.0) + notional, limits.max_asset_class_pct[cls] / 100 * eq, slack
        )
    scale = limits.regime.scale.get(c.regime, 1.0) if c.regime else 1.0
    assert within(s.gross_exposure + notional, limits.max_gross_exposure * scale * eq, slack)
    net_limit = max(limits.max_net_exposure * scale * eq, abs(s.net_exposure))
    assert within(abs(s.net_exposure + sign * notional), net_limit, slack)
    if sign > 0 and not math.isnan(s.cash):
        assert within(max(0.0, notional - s.cash), (limits.max_leverage - 1) * eq, slack)
    if (
        inst.volume_unit is not VolumeUnit.NONE
        and limits.max_adv_share
        and c.avg_units > 0
        and c.adv_usd == c.adv_usd
    ):
        assert within(qty, limits.max_adv_share * c.avg_units, 1e-8 * inst.lot_size)
    if limits.max_order_usd:
        assert within(notional, limits.max_order_usd, slack)
    if limits.max_correlation < 1 and c.max_corr > limits.max_correlation:
        assert limits.correlation_action == "reduce" and "correlation" in v.rules
    assert (v.status is RESIZED) == bool(v.rules)


@settings(max_examples=200, deadline=None)
@given(
    case=cases(),
    r1=st.floats(0.05, 5),
    r2=st.floats(0.05, 5),
    a1=st.floats(0.001, 0.2),
    a2=st.floats(0.001, 0.2),
)
def test_size_grows_with_risk_pct_and_shrinks_with_atr_whatever_else_binds(case, r1, r2, a1, a2):
    limits, s, it, inst, c = case

    def qty(risk, atr_frac):
        lim = replace(limits, sizing="atr", risk_pct=risk)
        return evaluate(lim, s, it._replace(atr=it.price * atr_frac), inst, c).qty_approved

    lo, hi = sorted((r1, r2))
    assert qty(lo, a1) <= qty(hi, a1)
    small, big = sorted((a1, a2))
    assert qty(r1, small) >= qty(r1, big)


@settings(max_examples=200, deadline=None)
@given(r1=st.floats(0.05, 5), r2=st.floats(0.05, 5), atr1=st.floats(0.2, 20), atr2=st.floats(0.2, 20))
def test_with_no_cap_binding_the_size_is_proportional_to_risk_and_inverse_to_atr(r1, r2, atr1, atr2):
    open_book = {"max_position_pct": 100.0, "max_gross_exposure": 1e6}

    def sized(risk, atr):
        v = evaluate(
            RiskLimits.minimal(risk_pct=risk, **open_book),
            state(equity=1e9),
            intent(price=1.0, atr=atr),
            SPY,
            1.0,
        )
        assert v.status is APPROVED and v.qty_approved == math.floor(v.qty_requested + 1e-9)
        return v.qty_requested

    assert sized(r2, 2.0) / sized(r1, 2.0) == pytest.approx(r2 / r1)
    assert sized(1.0, atr1) * atr1 == pytest.approx(sized(1.0, atr2) * atr2)


def test_a_subnormal_average_volume_does_not_divide_by_zero() -> None:
    # Found by hypothesis: avg_units 5e-324 times a 0.5 USD price underflows to 0.
    intent = OrderIntent("p", "SPY", IntentKind.ENTRY, Side.BUY, 0, 0, "", 0.5, 0.0625)
    ctx = MarketContext(fx=1.0, last_price=0.5, adv_usd=1e7, avg_units=5e-324)
    verdict = evaluate(
        RiskLimits(), RiskState(equity=1e5, peak_equity=1e5, cash=1e5), intent, SAMPLE_INSTRUMENTS["SPY"], ctx
    )
    assert verdict.status is VerdictStatus.REJECTED  # no room: 50% of almost nothing
    assert "adv_share_cap" in verdict.rules
