"""The research sweep path gives, pair by pair, exactly what the full engine gives."""

from __future__ import annotations

import pandas as pd
import pytest

from hflite.domain.instrument import SAMPLE_INSTRUMENTS, AssetClass, Calendar, Instrument
from hflite.engine.core import Engine, run_backtest
from hflite.engine.market import build_market
from hflite.engine.signals import compute_signals
from hflite.engine.sweep import SweepSpec, Unsupported, run_pair, sweep
from hflite.execution.costs import BpsCommission, VolatilitySlippage
from hflite.execution.venues.sim import SimVenue
from hflite.risk.gate import RiskLimits
from hflite.strategy.builtin import make_strategy
from tests.conftest import synthetic_bars

SYN = Instrument("SYN", AssetClass.CRYPTO, "USD", Calendar.ALWAYS, 0.01, 1e-4)
COMMISSION = BpsCommission(5.0, minimum=0.5)
SLIPPAGE = VolatilitySlippage({AssetClass.CRYPTO: 2.0, AssetClass.ETF: 1.0}, range_frac=0.05)


def engine_run(md, inst, fast, slow, limits, cash, params):
    strategy = make_strategy("trend", {**params, "fast": fast, "slow": slow})
    venue = SimVenue({inst.symbol: inst}, COMMISSION, SLIPPAGE, 1.0)
    eng = Engine(
        md,
        compute_signals(strategy, md),
        strategy_name="trend",
        limits=limits,
        venue=venue,
        initial_cash=cash,
    )
    return run_backtest(eng)


def assert_same(res, eng, md, sym):
    tl = md.bars[sym].tl
    got = [(f.k, f.side, f.qty, f.price, f.fee) for f in res.fills]
    want = [(int((tl == f.bar_index).argmax()), f.side.sign, f.qty, f.price, f.fee) for f in eng.fills]
    assert got == want
    assert res.final_equity == eng.equity[-1]
    assert res.halted == eng.risk.state.halted


PAIRS = [(f, s) for f in (3, 5, 8, 13, 21) for s in (10, 30, 55, 89) if f < s]
LIMITS = [
    RiskLimits.minimal(sizing="percent_equity", percent_equity=100, max_position_pct=100),
    RiskLimits.minimal(sizing="atr", risk_pct=1.0, stop_atr=2.0, max_position_pct=60, max_drawdown_pct=12),
]


@pytest.mark.parametrize("limits", LIMITS, ids=["percent_equity", "atr_with_drawdown_halt"])
@pytest.mark.parametrize("allow_short", [False, True])
def test_every_pair_matches_the_full_engine_on_synthetic_minutes(limits, allow_short):
    df = synthetic_bars(6_000, seed=3, freq="1min", vol=0.002)
    md = build_market({"SYN": df}, {"SYN": SYN}, ["SYN"], "1m", df.ts.iloc[300], df.ts.iloc[-1])
    params = {"stop_atr": 0, "allow_short": allow_short}
    spec = SweepSpec(md.bars["SYN"], limits, COMMISSION, SLIPPAGE, 50_000.0, params=params)
    results = sweep(spec, PAIRS)
    assert any(r.halted for r in results) == (limits.max_drawdown_pct < 100)
    for res in results:
        assert_same(res, engine_run(md, SYN, res.fast, res.slow, limits, 50_000.0, params), md, "SYN")


def test_a_pair_matches_the_full_engine_on_real_spy(sample_store):
    df = sample_store.read_bars("SPY", "1d", "2004-01-01", "2024-12-06")
    spy = SAMPLE_INSTRUMENTS["SPY"]
    md = build_market(
        {"SPY": df},
        {"SPY": spy},
        ["SPY"],
        "1d",
        pd.Timestamp("2005-01-03", tz="UTC"),
        pd.Timestamp("2024-12-06", tz="UTC"),
    )
    spec = SweepSpec(md.bars["SPY"], LIMITS[1], COMMISSION, SLIPPAGE, 100_000.0, params={"stop_atr": 0})
    for fast, slow in [(10, 50), (20, 100), (50, 200)]:
        assert_same(
            run_pair(spec, fast, slow),
            engine_run(md, spy, fast, slow, LIMITS[1], 100_000.0, {"stop_atr": 0}),
            md,
            "SPY",
        )


def test_parallel_workers_return_results_in_pair_order():
    df = synthetic_bars(3_000, seed=5, freq="1min", vol=0.002)
    md = build_market({"SYN": df}, {"SYN": SYN}, ["SYN"], "1m", df.ts.iloc[100], df.ts.iloc[-1])
    spec = SweepSpec(md.bars["SYN"], LIMITS[0], COMMISSION, SLIPPAGE, 10_000.0, params={"stop_atr": 0})
    assert sweep(spec, PAIRS, workers=2) == sweep(spec, PAIRS)


def test_protective_stops_and_binding_volume_caps_are_refused():
    df = synthetic_bars(500, seed=5, freq="1min", vol=0.002, volume=10.0)
    md = build_market({"SYN": df}, {"SYN": SYN}, ["SYN"], "1m", df.ts.iloc[100], df.ts.iloc[-1])
    with pytest.raises(Unsupported, match="protective stops"):
        run_pair(
            SweepSpec(md.bars["SYN"], LIMITS[0], COMMISSION, SLIPPAGE, 1e4, params={"stop_atr": 2}), 5, 20
        )
    capped = SweepSpec(
        md.bars["SYN"], LIMITS[0], COMMISSION, SLIPPAGE, 1e4, max_volume_share=0.1, params={"stop_atr": 0}
    )
    with pytest.raises(Unsupported, match="volume cap"):
        run_pair(capped, 5, 20)
