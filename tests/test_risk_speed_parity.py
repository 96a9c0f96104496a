"""The fast risk paths give the numbers the straightforward ones give, bit for bit.

- Features: every column equals the block-by-block pandas computation the risk manager used to run
  (kept here verbatim as the oracle), whether filled with ``ensure`` or, for a complete history,
  read bar by bar (each group computed over every block at once; the volatility median per bar).
- The gate: ``evaluate`` gives every verdict, check and reason the version before gave (kept here
  verbatim as the oracle), on the random cases of ``test_risk_gate``.
- Correlation with the book: the same value and symbol as gathering and working the held rows per
  intent, whether a window is precomputed, kept from an earlier entry or computed afresh.
- Calendar: the vectorised period keys equal the one-time definition in zones with daylight
  saving, half-hour offsets and transitions at midnight.
- Marks: a backtest's precomputed calendar marks stretches exactly as point-by-point marks do.
- The engine: a backtest (complete history, calendar precomputed) and the live runtime fed the
  same minute bars one at a time give the same verdicts, checks, orders, fills and equity.
"""

from __future__ import annotations

import asyncio
import math
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings

from hflite.domain.instrument import SAMPLE_INSTRUMENTS, AssetClass, Calendar, Instrument, VolumeUnit
from hflite.domain.order import Side
from hflite.domain.signal import Check, IntentKind, OrderIntent, RiskVerdict, VerdictStatus
from hflite.engine.core import Engine, run_backtest
from hflite.engine.market import SymbolBars, market_from_arrays
from hflite.engine.runtime import LiveRuntime, RecordedFeed
from hflite.engine.signals import compute_signals
from hflite.execution.costs import BpsCommission, FixedBpsSlippage
from hflite.execution.venues.sim import SimVenue
from hflite.risk.features import (
    BLOCK,
    COLUMNS,
    TRIP_MOVE,
    TRIP_VOL,
    TRIP_VOLUME,
    SymbolFeatures,
    breaker_reason,
    lookback,
    market_reason,
    precompute,
)
from hflite.risk.gate import MarketContext, RiskState, evaluate
from hflite.risk.limits import BreakerLimits, RiskLimits
from hflite.risk.manager import RiskManager
from hflite.risk.periods import PeriodKeys, period_keys
from hflite.strategy.builtin import make_strategy
from tests.test_risk_gate import cases


# -- the oracle: the features as computed before (one pandas pass per block) -------------------------
def _reference_block(limits, inst, close, volume, bars_per_year, s0, b):
    lim, brk, reg = limits, limits.breakers, limits.regime
    c = pd.Series(close[s0:b])
    v = pd.Series(volume[s0:b])
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.log(c / c.shift(1))
        vol = ret.rolling(lim.vol_window, min_periods=lim.vol_window).std()
        vol_med = vol.rolling(lim.vol_history, min_periods=lim.vol_history).median()
        vol_ratio = (vol / vol_med).to_numpy()
        prev_sd = ret.rolling(brk.sigma_window, min_periods=brk.sigma_window).std().shift(1)
        z = (ret.abs() / prev_sd).to_numpy()
        prev_v = v.rolling(brk.volume_window, min_periods=brk.volume_window).mean().shift(1)
        vspike = (v / prev_v).to_numpy()
        if inst.volume_unit is VolumeUnit.NONE:
            adv = np.full(len(c), np.nan)
            units = adv
        elif inst.volume_unit is VolumeUnit.QUOTE:
            adv = v.rolling(lim.liquidity_window, min_periods=lim.liquidity_window).mean().to_numpy()
            units = (v / c).rolling(lim.liquidity_window, min_periods=lim.liquidity_window).mean()
            units = units.to_numpy()
        else:
            adv = (c * v).rolling(lim.liquidity_window, min_periods=lim.liquidity_window).mean()
            adv = adv.to_numpy()
            units = v.rolling(lim.liquidity_window, min_periods=lim.liquidity_window).mean().to_numpy()
        move = ((c / c.shift(1) - 1) * 100).to_numpy()
        sma = c.rolling(reg.trend_window, min_periods=reg.trend_window).mean()
        slope = (sma - sma.shift(reg.slope_bars)).to_numpy()
        ann = ret.rolling(reg.vol_window, min_periods=reg.vol_window).std().to_numpy()
        ann = ann * math.sqrt(bars_per_year) * 100
    ca, sma_a = c.to_numpy(), sma.to_numpy()
    regime = np.zeros(len(ca))
    known = ~np.isnan(slope) & ~np.isnan(ann)
    regime[known] = 3.0
    regime[known & (ca > sma_a) & (slope > 0)] = 1.0
    regime[known & (ca < sma_a) & (slope < 0)] = 2.0
    regime[known & (ann >= reg.crisis_vol)] = 4.0
    with np.errstate(divide="ignore"):
        vol_mult = np.clip(1.0 / vol_ratio, lim.vol_floor, 1.0)
    vol_mult[np.isnan(vol_ratio)] = 1.0
    trip = np.zeros(len(c))
    if brk.sigma:
        trip += np.where(z > brk.sigma, TRIP_MOVE, 0)
    if brk.volume_spike and inst.volume_unit is not VolumeUnit.NONE:
        trip += np.where(vspike > brk.volume_spike, TRIP_VOLUME, 0)
    if brk.vol_ratio:
        trip += np.where(vol_ratio > brk.vol_ratio, TRIP_VOL, 0)
    index_trip = np.where(np.abs(move) >= brk.index_move_pct, 1.0, 0.0) if brk.index_move_pct else None
    return {
        "vol_ratio": vol_ratio,
        "vol_mult": vol_mult,
        "z": z,
        "vspike": vspike,
        "adv_quote": adv,
        "avg_units": units,
        "move_pct": move,
        "ann_vol": ann,
        "regime": regime,
        "trip": trip,
        "index_trip": index_trip if index_trip is not None else np.zeros(len(c)),
    }


def reference_columns(limits: RiskLimits, bars: SymbolBars, bars_per_year: float = 252.0) -> dict:
    """Every column, block by block, as ``SymbolFeatures`` computed them before."""
    n, lb = bars.n, lookback(limits)
    out = {c: np.full(n, np.nan) for c in COLUMNS}
    for a in range(0, n, BLOCK):
        b, s0 = min(n, a + BLOCK), max(0, a - lb)
        cols = _reference_block(limits, bars.instrument, bars.close, bars.volume, bars_per_year, s0, b)
        for name, arr in cols.items():
            out[name][a:b] = arr[a - s0 : b - s0]
    for flag, last in (("trip", "last_trip"), ("index_trip", "last_index_trip")):
        idx = np.where(out[flag] > 0, np.arange(n, dtype=float), -1.0)
        out[last] = np.maximum.accumulate(idx)
    if not limits.breakers.index_move_pct:
        out["last_index_trip"][:] = -1.0
    return out


def same(a, b) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(((a == b) | (np.isnan(a) & np.isnan(b))).all())


# -- the oracle of the gate: ``evaluate`` as it was before (verbatim, renamed) -----------------------
REF_NEUTRAL = MarketContext()


def ref_size_entry(limits: RiskLimits, equity: float, intent: OrderIntent, fx: float) -> tuple[float, str]:
    """Units to buy or sell at the configured risk, before cuts, and how they were sized."""
    if limits.sizing == "percent_equity":
        return equity * limits.percent_equity / 100 / (intent.price * fx), (
            f"{limits.percent_equity:g}% of equity"
        )
    stop_atr = intent.exits.stop_atr or limits.stop_atr
    if not intent.atr > 0:
        return 0.0, "ATR unavailable"
    per_unit_risk = stop_atr * intent.atr * fx
    return equity * limits.risk_pct / 100 / per_unit_risk, (
        f"risk {limits.risk_pct:g}% of equity over a {stop_atr:g} ATR stop"
    )


def ref_evaluate(
    limits: RiskLimits,
    state: RiskState,
    intent: OrderIntent,
    instrument: Instrument,
    ctx: MarketContext | float = REF_NEUTRAL,
) -> RiskVerdict:
    """Approve, resize or reject one intent. ``ctx`` may be a bare FX rate (no market context)."""
    if not isinstance(ctx, MarketContext):
        ctx = MarketContext(fx=float(ctx))
    if intent.kind is IntentKind.EXIT:
        qty = intent.qty or 0.0
        return RiskVerdict(
            intent.id, intent.symbol, intent.ts, VerdictStatus.APPROVED, qty, qty, "exit: always allowed"
        )
    checks: list[Check] = []
    fails = ref_gates(limits, state, intent, instrument, ctx, checks)
    if fails:
        return ref_reject(intent, 0.0, fails, checks)
    wanted, how = ref_size_entry(limits, state.equity, intent, ctx.fx)
    if not intent.size >= 1.0:  # conviction only ever shrinks what risk allows (NaN: nothing)
        conviction = max(intent.size, 0.0) if intent.size == intent.size else 0.0
        wanted *= conviction
        how = f"{how} x{conviction:.2f} conviction"
    if not wanted > 0 or math.isinf(wanted):
        return ref_reject(intent, 0.0, [("sizing", f"cannot size: {how}")], checks)
    cut = RefCuts(wanted, intent.price * ctx.fx, checks)
    if not ref_scale(cut, limits, state, ctx):
        why = f"correlation {ctx.max_corr:.2f} with {ctx.corr_with}"
        return ref_reject(intent, wanted, [("correlation", why)], checks)
    ref_caps(cut, limits, state, intent, instrument, ctx)
    qty = instrument.round_qty(cut.qty)
    cuts = cut.cuts
    if qty <= 0:
        why = "; ".join(c[1] for c in cuts) if cuts else "size below one lot"
        rules = [c[0] for c in cuts] or ["lot_size"]
        return ref_reject(intent, wanted, [(rules[0], f"{why}: nothing left to trade")], checks, tuple(rules))
    if cuts:
        return RiskVerdict(
            intent.id,
            intent.symbol,
            intent.ts,
            VerdictStatus.RESIZED,
            wanted,
            qty,
            f"{how}; cut by " + "; ".join(c[1] for c in cuts),
            tuple(checks),
            tuple(c[0] for c in cuts),
        )
    return RiskVerdict(
        intent.id, intent.symbol, intent.ts, VerdictStatus.APPROVED, wanted, qty, how, tuple(checks)
    )


def ref_gates(  # noqa: C901 - a flat list of independent rules reads best as one list
    limits: RiskLimits,
    state: RiskState,
    intent: OrderIntent,
    instrument: Instrument,
    ctx: MarketContext,
    checks: list[Check],
) -> list[tuple[str, str]]:
    """Rules that reject outright: (rule, reason) for each that fails; measured ones add a check."""
    fails: list[tuple[str, str]] = []
    if state.mode == "killed":
        fails.append(("kill", f"kill switch: {state.mode_reason or 'stopped by a human'}"))
    elif state.mode == "paused":
        fails.append(("pause", f"paused by a human: {state.mode_reason or 'no reason given'}"))
    dd = (1 - state.equity / state.peak_equity) * 100 if state.peak_equity > 0 else 0.0
    checks.append(Check("drawdown_pct", dd, limits.max_drawdown_pct, not state.halted))
    if state.halted:
        fails.append(("drawdown_halt", f"halted: {state.halt_reason}"))
    for period, limit in (
        ("daily", limits.daily_loss_pct),
        ("weekly", limits.weekly_loss_pct),
        ("monthly", limits.monthly_loss_pct),
    ):
        if limit:
            loss = state.period_loss.get(period, 0.0)
            checks.append(Check(f"{period}_loss_pct", loss, limit, period not in state.locks))
    for period, why in state.locks.items():
        fails.append((f"{period}_loss", why))
    if ctx.market_breaker:
        fails.append(("market_breaker", ctx.market_breaker))
    if ctx.breaker:
        fails.append(("circuit_breaker", ctx.breaker))
    if state.global_pause:
        fails.append(("protection", state.global_pause))
    if ctx.symbol_pause:
        fails.append(("protection", ctx.symbol_pause))
    if intent.side is Side.SELL and not instrument.shortable:
        fails.append(("shorting", f"{intent.symbol} cannot be sold short"))
    elif intent.side is Side.SELL and not limits.allow_short:
        fails.append(("shorting", "the account may not sell short (risk.allow_short = false)"))
    if limits.max_orders_per_minute:
        n = ctx.orders_last_minute
        checks.append(
            Check("orders_per_minute", n, limits.max_orders_per_minute, n < limits.max_orders_per_minute)
        )
        if not checks[-1].passed:
            fails.append(("order_rate", f"{n} orders in the last minute"))
    if limits.collar_pct and ctx.last_price > 0:
        off = abs(intent.price / ctx.last_price - 1) * 100
        checks.append(Check("collar_pct", off, limits.collar_pct, off <= limits.collar_pct))
        if not checks[-1].passed:
            why = f"price {intent.price:g} is {off:.1f}% from the last price {ctx.last_price:g}"
            fails.append(("collar", why))
    if ref_liquid(instrument, ctx) and limits.min_adv_usd:
        checks.append(Check("adv_usd", ctx.adv_usd, limits.min_adv_usd, ctx.adv_usd >= limits.min_adv_usd))
        if not checks[-1].passed:
            fails.append(("liquidity", f"average dollar volume {ctx.adv_usd:,.0f} USD"))
    if not state.equity > 0:
        fails.append(("equity", "equity is not positive"))
    if limits.max_open_positions:
        n = state.open_positions
        checks.append(Check("open_positions", n, limits.max_open_positions, n < limits.max_open_positions))
        if not checks[-1].passed:
            fails.append(("open_positions", f"{n} positions open"))
    if not ctx.fx > 0 or not intent.price > 0:
        fails.append(("price", f"no usable price ({intent.price:g}, FX {ctx.fx:g})"))
    return fails


def ref_liquid(instrument: Instrument, ctx: MarketContext) -> bool:
    return instrument.volume_unit is not VolumeUnit.NONE and not math.isnan(ctx.adv_usd)


class RefCuts:
    """The size as it is cut, with the checks and (rule, reason) of every cut."""

    __slots__ = ("checks", "cuts", "qty", "unit")

    def __init__(self, qty: float, unit: float, checks: list[Check]) -> None:
        self.qty, self.unit, self.checks = qty, unit, checks
        self.cuts: list[tuple[str, str]] = []

    def scale(self, rule: str, factor: float, check: Check, why: str) -> None:
        self.qty *= factor
        self.checks.append(check)
        self.cuts.append((rule, why))

    def cap(
        self,
        rule: str,
        name: str,
        room_usd: float,
        used: float,
        limit: float,
        per: float,
        why: str,
        *args: object,
    ) -> None:
        """Cut to the USD room left; the check records what the uncut order would reach. The reason
        is ``why.format(*args)``, formatted only when the cap binds."""
        room = max(room_usd, 0.0) / self.unit
        self.checks.append(Check(name, (used + self.qty * self.unit) / per, limit, self.qty <= room))
        if self.qty > room:
            self.qty = room
            self.cuts.append((rule, why.format(*args)))


def ref_scale(cut: RefCuts, limits: RiskLimits, state: RiskState, ctx: MarketContext) -> bool:
    """Drawdown, regime, volatility and correlation multipliers; False = correlation rejects."""
    dd = (1 - state.equity / state.peak_equity) * 100 if state.peak_equity > 0 else 0.0
    # Each multiplier records its check whether it cuts or not (a passing one: nothing to cut).
    if limits.drawdown_reduce_pct:
        f = limits.drawdown_reduce_factor
        check = Check("drawdown_reduce_pct", dd, limits.drawdown_reduce_pct, dd < limits.drawdown_reduce_pct)
        if check.passed:
            cut.checks.append(check)
        else:
            cut.scale("drawdown_reduce", f, check, f"drawdown {dd:.1f}%: size x{f:g}")
    scale = ref_regime_scale(limits, ctx)
    if ctx.regime:
        check = Check("regime_scale", scale, 1.0, scale >= 1.0)
        if check.passed:
            cut.checks.append(check)
        else:
            cut.scale("regime", scale, check, f"{ctx.regime} regime: size x{scale:g}")
    if limits.vol_adjust and ctx.vol_ratio == ctx.vol_ratio:
        check = Check("vol_ratio", ctx.vol_ratio, 1.0, ctx.vol_mult >= 1.0)
        if check.passed:
            cut.checks.append(check)
        else:
            cut.scale("volatility", ctx.vol_mult, check,
                      f"volatility {ctx.vol_ratio:.2f}x its median: size x{ctx.vol_mult:.2f}")  # fmt: skip
    if limits.max_correlation < 1.0 and ctx.max_corr == ctx.max_corr:
        ok = ctx.max_corr <= limits.max_correlation
        cut.checks.append(Check("correlation", ctx.max_corr, limits.max_correlation, ok))
        if not ok:
            if limits.correlation_action == "reject":
                return False
            f = limits.max_correlation / ctx.max_corr
            cut.qty *= f
            cut.cuts.append(
                ("correlation", f"correlation {ctx.max_corr:.2f} with {ctx.corr_with}: size x{f:.2f}")
            )
    return True


def ref_regime_scale(limits: RiskLimits, ctx: MarketContext) -> float:
    return limits.regime.scale.get(ctx.regime, 1.0) if ctx.regime else 1.0


def ref_caps(
    cut: RefCuts,
    limits: RiskLimits,
    state: RiskState,
    intent: OrderIntent,
    instrument: Instrument,
    ctx: MarketContext,
) -> None:
    """Each cap leaves exactly the room that is left (USD), in a fixed order."""
    eq = state.equity
    pct = eq / 100
    lim = limits.max_position_pct
    cut.cap("position_cap", "position_pct", lim * pct, 0.0, lim, pct, "position cap {:g}% of equity", lim)
    sector = instrument.sector
    if sector and limits.max_sector_pct < 100:
        used, lim = state.sector_exposure.get(sector, 0.0), limits.max_sector_pct
        cut.cap("sector_cap", "sector_pct:" + sector, lim * pct - used, used, lim, pct,
                "sector {} cap {:g}% of equity", sector, lim)  # fmt: skip
    cls = instrument.asset_class.value
    cls_limit = limits.max_asset_class_pct.get(cls)
    if cls_limit is not None:
        used = state.class_exposure.get(cls, 0.0)
        cut.cap("asset_class_cap", "class_pct:" + cls, cls_limit * pct - used, used, cls_limit, pct,
                "{} cap {:g}% of equity", cls, cls_limit)  # fmt: skip
    scale = ref_regime_scale(limits, ctx)
    gross = limits.max_gross_exposure * scale
    cut.cap("gross_cap", "gross_exposure", gross * eq - state.gross_exposure, state.gross_exposure, gross, eq,
            "gross exposure cap {:g}x equity", gross)  # fmt: skip
    net = limits.max_net_exposure * scale
    buy = intent.side is Side.BUY
    used = state.net_exposure if buy else -state.net_exposure  # exposure already on this order's side
    cut.cap("net_cap", "net_exposure", net * eq - used, used, net, eq, "net exposure cap {:g}x equity", net)
    if buy and state.cash == state.cash:
        # Borrowing = cash that would go below zero; leverage = (equity + borrowing) / equity.
        lev = limits.max_leverage
        cut.cap("leverage_cap", "leverage", (lev - 1) * eq + state.cash, eq - state.cash, lev, eq,
                "leverage cap {:g}x (cash {:,.0f} USD)", lev, state.cash)  # fmt: skip
    if ref_liquid(instrument, ctx) and limits.max_adv_share and ctx.avg_units > 0:
        # USD of average volume; a volume so small that it underflows to 0 USD leaves no room (the
        # check then reads inf rather than dividing by zero)
        share, adv = limits.max_adv_share, max(ctx.avg_units * cut.unit, math.ulp(0.0))
        cut.cap("adv_share_cap", "adv_share", share * adv, 0.0, share, adv,
                "{:.2%} of average volume ({:,.0f} units)", share, ctx.avg_units)  # fmt: skip
    if limits.max_order_usd:
        lim = limits.max_order_usd
        cut.cap("order_notional_cap", "order_usd", lim, 0.0, lim, 1.0, "max order notional {:,.0f} USD", lim)


def ref_reject(
    intent: OrderIntent,
    wanted: float,
    fails: list[tuple[str, str]],
    checks: list[Check],
    rules: tuple[str, ...] | None = None,
) -> RiskVerdict:
    reason = "; ".join(f[1] for f in fails)
    return RiskVerdict(
        intent.id,
        intent.symbol,
        intent.ts,
        VerdictStatus.REJECTED,
        wanted,
        0.0,
        reason,
        tuple(checks),
        rules if rules is not None else tuple(dict.fromkeys(f[0] for f in fails)),
    )


@settings(max_examples=1500, deadline=None)
@given(case=cases())
def test_the_gate_gives_the_verdicts_it_gave_before_to_the_last_bit(case):
    limits, state, intent, inst, ctx = case
    got, expected = evaluate(limits, state, intent, inst, ctx), ref_evaluate(limits, state, intent, inst, ctx)
    assert got == expected
    assert [repr(c) for c in got.checks] == [repr(c) for c in expected.checks]  # NaNs and -0.0 too
    assert [type(c.value) for c in got.checks] == [type(c.value) for c in expected.checks]


# -- series ---------------------------------------------------------------------------------------
def bars(inst: Instrument, close: np.ndarray, volume: np.ndarray, start_ns: int, step_ns: int) -> SymbolBars:
    n = len(close)
    ts = start_ns + step_ns * (np.arange(n, dtype=np.int64) + 1)
    return SymbolBars(
        inst, ts, close.copy(), close * 1.001, close * 0.999, close.copy(), volume.copy(),
        np.arange(n, dtype=np.int64), n=n,
    )  # fmt: skip


def synthetic(n: int, seed: int, inst: Instrument) -> SymbolBars:
    """A random walk with calm stretches, flat stretches (zero returns), jumps, zero volumes."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.001, n) * np.where(rng.random(n) < 0.02, 12.0, 1.0)
    r[1000:1300] = 0.0  # a flat price for 300 bars: zero volatility, a zero median
    r[5000:5030] = 0.0
    close = 100 * np.exp(np.cumsum(r))
    volume = rng.uniform(1e5, 1e6, n) * np.where(rng.random(n) < 0.01, 20.0, 1.0)
    volume[rng.random(n) < 0.01] = 0.0
    volume[3000:3025] = 0.0
    return bars(inst, close, volume, 1_577_836_800 * 10**9, 60 * 10**9)


CRYPTO = Instrument("SYN", AssetClass.CRYPTO, "USD", Calendar.ALWAYS, 0.01, 1e-4)
QUOTE = Instrument(
    "SYNQ", AssetClass.CRYPTO, "USD", Calendar.ALWAYS, 0.01, 1e-4, volume_unit=VolumeUnit.QUOTE
)
FX = Instrument("SYNFX", AssetClass.FX, "USD", Calendar.ALWAYS, 0.0001, 1.0, volume_unit=VolumeUnit.NONE)

LIMITS = {
    "defaults": RiskLimits(),
    "small windows, odd history": RiskLimits(
        vol_window=5,
        vol_history=31,
        liquidity_window=3,
        breakers=BreakerLimits(
            sigma=3.0,
            sigma_window=10,
            volume_spike=2.0,
            volume_window=4,
            vol_ratio=1.5,
            cooldown_bars=7,
            index_move_pct=0.5,
        ),
    ),  # fmt: skip
    "minimal": RiskLimits.minimal(),
}


@pytest.fixture(scope="module")
def spy(sample_store):
    df = sample_store.read_bars("SPY", "1d", "2004-01-01", "2024-12-06")
    close, volume = df["close"].to_numpy(float), df["volume"].to_numpy(float)
    ts = df["ts"].astype("int64").to_numpy()
    n = len(close)
    return SymbolBars(
        SAMPLE_INSTRUMENTS["SPY"], ts.copy(), df["open"].to_numpy(float), df["high"].to_numpy(float),
        df["low"].to_numpy(float), close, volume, np.arange(n, dtype=np.int64), n=n,
    )  # fmt: skip


def series(spy) -> list[SymbolBars]:
    return [
        spy,
        synthetic(3 * BLOCK + 333, 1, CRYPTO),
        synthetic(BLOCK + 77, 2, QUOTE),
        synthetic(2500, 3, FX),
    ]


@pytest.mark.parametrize("name", list(LIMITS))
def test_every_column_equals_the_block_by_block_pandas_reference(spy, name):
    limits = LIMITS[name]
    for b in series(spy):
        ref = reference_columns(limits, b)
        f = SymbolFeatures(limits, b)
        f.ensure(b.n - 1)
        for col in COLUMNS:
            assert same(f.cols[col][: b.n], ref[col]), (name, b.instrument.symbol, col)


@pytest.mark.parametrize("name", list(LIMITS))
def test_a_complete_history_read_bar_by_bar_gives_the_reference_numbers(spy, name):
    limits = LIMITS[name]
    rng = np.random.default_rng(11)
    for b in series(spy):
        ref = reference_columns(limits, b)
        ensured = SymbolFeatures(limits, b)
        ensured.ensure(b.n - 1)
        lazy = SymbolFeatures(limits, b, complete=True)
        ks = sorted({*rng.integers(0, b.n, 300).tolist(), 0, b.n - 1, BLOCK - 1, BLOCK, *range(1000, 1320)})
        ks = [k for k in ks if k < b.n]
        for k in ks:
            for col in ("vol_ratio", "vol_mult", "z", "vspike", "adv_quote", "avg_units", "move_pct",
                        "ann_vol", "regime", "index_trip", "last_index_trip"):  # fmt: skip
                assert same(lazy.value(col, k), ref[col][k]), (name, b.instrument.symbol, col, k)
            assert same(lazy.volatility(k), (ref["vol_ratio"][k], ref["vol_mult"][k]))
            assert same(lazy.liquidity(k), (ref["adv_quote"][k], ref["avg_units"][k]))
            assert same(ensured.volatility(k), lazy.volatility(k))
            assert lazy.breaker(k) == breaker_reason(ensured, k), (name, b.instrument.symbol, k)
            assert lazy.market(k) == market_reason(ensured, k), (name, b.instrument.symbol, k)
            assert lazy.regime(k) == ensured.regime(k)


@pytest.mark.parametrize("medians", [False, True])
def test_symbols_computed_together_get_the_numbers_each_gets_alone(spy, medians):
    """``precompute`` lays several symbols' blocks end to end (batched by volume unit)."""
    limits = LIMITS["small windows, odd history"]
    group = [spy, synthetic(3 * BLOCK + 333, 21, CRYPTO), synthetic(BLOCK + 77, 22, QUOTE),
             synthetic(2500, 23, FX), synthetic(700, 24, CRYPTO), synthetic(BLOCK, 25, QUOTE)]  # fmt: skip
    together = [SymbolFeatures(limits, b, complete=True) for b in group]
    precompute(together, ("returns", "vol", "spikes", "liquidity", "regime"), medians=medians)
    rng = np.random.default_rng(5)
    for b, f in zip(group, together, strict=True):
        ref = reference_columns(limits, b)
        alone = SymbolFeatures(limits, b)
        alone.ensure(b.n - 1)
        for k in sorted({*rng.integers(0, b.n, 200).tolist(), 0, b.n - 1}):
            for col in (
                "vol_ratio",
                "vol_mult",
                "z",
                "vspike",
                "adv_quote",
                "avg_units",
                "ann_vol",
                "regime",
            ):
                assert same(f.value(col, k), ref[col][k]), (b.instrument.symbol, col, k)
            assert f.breaker(k) == breaker_reason(alone, k)


def test_a_pandas_that_would_mix_the_segments_rolls_them_one_by_one(spy, monkeypatch):
    """Should a pandas carry running sums from one segment into the next, the check at first use
    says so and every segment is rolled alone: the same numbers either way."""
    from hflite.risk import features

    limits = LIMITS["defaults"]
    b = synthetic(3 * BLOCK + 333, 31, CRYPTO)
    ref = reference_columns(limits, b)
    monkeypatch.setattr(features, "_EXACT", False)
    f = SymbolFeatures(limits, b, complete=True)
    precompute([f], ("returns", "vol", "spikes", "liquidity", "regime"), medians=True)
    for col in ("vol_ratio", "z", "vspike", "adv_quote", "avg_units", "ann_vol", "regime"):
        assert same([f.value(col, k) for k in range(b.n)], ref[col]), col


def test_breakers_seen_bar_by_bar_are_the_reference_trips(spy):
    """Every bar whose breaker holds, read from a complete history, is one the reference flags."""
    limits = LIMITS["small windows, odd history"]
    b = synthetic(3 * BLOCK + 333, 5, CRYPTO)
    ref = reference_columns(limits, b)
    lazy = SymbolFeatures(limits, b, complete=True)
    held = np.array([lazy.breaker(k) != "" for k in range(b.n)])
    lt = ref["last_trip"]
    expected = (lt >= 0) & (np.arange(b.n) - lt < limits.breakers.cooldown_bars)
    assert held.sum() > 50  # the series trips often: the comparison means something
    np.testing.assert_array_equal(held, expected)


# -- correlation with the held positions -------------------------------------------------------------
def reference_correlation(rm: RiskManager, sym: str, k: int, sign: int) -> tuple[float, str]:
    """``RiskManager._correlation`` as it was: the held rows gathered and worked per intent."""
    w = rm.limits.correlation_window
    if rm.limits.max_correlation >= 1.0 or k < w or not rm.held:
        return math.nan, ""
    idx = rm.md.bars[sym].tl[k - w : k + 1]
    if idx[0] < 0:
        idx = idx[idx >= 0]
        if len(idx) < w // 2 + 2:
            return math.nan, ""
    close = rm.md.close_tl
    with np.errstate(invalid="ignore", divide="ignore"):
        logc = np.log(np.stack([close[s] for s in rm._rows]))
    cap = logc.shape[1]
    names = [s for s, v in rm.held.items() if v and s != sym]
    if not names:
        return math.nan, ""
    rows = np.array([rm._rows[sym] * cap] + [rm._rows[s] * cap for s in names], dtype=np.int64)[:, None]
    signs = np.array([1.0 if rm.held[s] > 0 else -1.0 for s in names]) * sign
    m = logc.ravel().take(rows + idx).ravel()
    flat = np.empty(len(m))
    np.subtract(m[1:], m[:-1], out=flat[:-1])
    r = flat.reshape(len(rows), len(idx))[:, :-1]
    mean = np.add.reduce(r, axis=1, keepdims=True)
    mean /= r.shape[1]
    r -= mean
    x, y = r[0], r[1:]
    den = np.sqrt(np.add.reduce(y * y, axis=1))
    den *= math.sqrt(float(x @ x))
    corr = np.divide(y @ x, den, out=np.full(len(den), math.nan), where=den > 0)
    eff = corr * signs
    if np.isnan(eff).all():
        return math.nan, ""
    j = int(np.nanargmax(eff))
    return float(eff[j]), names[j]


def _universe(n_stocks: int, n_coins: int, days: int, seed: int, mixed: bool):
    """Daily bars: stocks on weekdays, coins every day (``mixed``) or on the same days."""
    rng = np.random.default_rng(seed)
    start = 1_609_459_200 * 10**9
    every = start + 86_400 * 10**9 * (np.arange(days, dtype=np.int64) + 1)
    weekdays = every[(np.arange(days) % 7) < 5] + 21 * 3600 * 10**9 if mixed else every
    market = rng.normal(0, 0.01, days)
    arrays, insts = {}, {}
    for j in range(n_stocks + n_coins):
        coin = j >= n_stocks
        ts = every if coin else weekdays
        name, cls = (f"C{j}", AssetClass.CRYPTO) if coin else (f"S{j}", AssetClass.EQUITY)
        cal, sector = (Calendar.ALWAYS, None) if coin else (Calendar.XNYS, "tech")
        inst = Instrument(name, cls, "USD", cal, 0.01, 1.0, sector=sector)
        r = rng.uniform(0.3, 1.5) * market[: len(ts)] + rng.normal(0, 0.01, len(ts))
        if j % 5 == 0:
            r[100:170] = 0.0  # a flat stretch: no correlation with it
        close = 50 * np.exp(np.cumsum(r))
        high, low = close * 1.01, close * 0.99
        volume = np.full(len(ts), 1e6)
        arrays[name] = {"ts": ts, "open": close, "high": high, "low": low, "close": close, "volume": volume}
        insts[name] = inst
    return market_from_arrays(arrays, insts, list(insts))


@pytest.mark.parametrize("mixed", [False, True])
def test_correlation_with_the_book_is_the_reference_to_the_last_bit(mixed):
    md = _universe(24, 4, 420, 3, mixed)
    limits = RiskLimits()
    rng = np.random.default_rng(9)
    lazy, prepared = RiskManager(limits, md, 1e7), RiskManager(limits, md, 1e7)
    prepared.prepare()
    assert prepared._win is not None  # the runs of consecutive points, precomputed (they fit)
    seen = 0
    for trial in range(60):
        held = {s: float(rng.choice([-1, 1]) * rng.uniform(1e4, 1e5))
                for s in rng.choice(md.traded, int(rng.integers(1, 20)), replace=False).tolist()}  # fmt: skip
        for rm in (lazy, prepared):
            rm.set_book(dict(held), 1e6)
        for _ in range(4):
            at = int(rng.integers(0, md.length))  # entries on one bar-time share its window
            for sym in rng.choice(md.traded, 4, replace=False).tolist():
                b = md.bars[sym]
                k = max(int(np.searchsorted(b.tl[: b.n], at, side="right")) - 1, 0)
                sign = int(rng.choice([-1, 1]))
                expected = reference_correlation(lazy, sym, k, sign)
                for rm in (lazy, prepared):
                    got = rm._correlation(sym, k, sign)
                    assert repr(got) == repr(expected), (trial, sym, k)
                seen += expected[1] != ""
        if trial % 7 == 0:  # an entry commits: the book grows by one at its end
            new = [s for s in md.traded if s not in held][0]
            held[new] = 5e4
            for rm in (lazy, prepared):
                rm.commit(new, 5e4)
    assert seen > 300


# -- the calendar ---------------------------------------------------------------------------------
ZONES = [
    "America/New_York", "UTC", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu",
    "America/St_Johns", "Asia/Beirut", "America/Havana", "America/Sao_Paulo", "Pacific/Apia",
]  # fmt: skip


@pytest.mark.parametrize("zone", ZONES)
def test_vectorised_period_keys_equal_the_definition(zone):
    tz = ZoneInfo(zone)
    keys = PeriodKeys(tz)
    rng = np.random.default_rng(3)
    minutes = (1_546_300_800 + 60 * np.arange(0, 2 * 366 * 1440, 7, dtype=np.int64)) * 10**9 - 1
    scattered = np.sort(rng.integers(-1_000_000_000, 2_500_000_000, 3000)) * 10**9 + rng.integers(
        0, 10**9, 3000
    )
    for ts in (minutes, scattered, rng.permutation(scattered)):  # every time, transitions included
        expected = np.array([period_keys(int(t), tz) for t in ts]).T
        np.testing.assert_array_equal(keys.of(ts), expected)


def _marks(limits, ts, eq, cuts, prepared):
    md = market_from_arrays(
        {"X": {"ts": ts, "open": np.ones(len(ts)), "high": np.ones(len(ts)), "low": np.ones(len(ts)),
               "close": np.ones(len(ts)), "volume": np.ones(len(ts))}},
        {"X": CRYPTO}, ["X"],
    )  # fmt: skip
    rm = RiskManager(limits, md, 100_000.0)
    if prepared:
        rm.prepare()
    bounds = sorted({0, len(ts), *cuts})
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b - a == 1 and prepared:
            rm.observe(a, float(eq[a]))
        else:
            rm.observe_range(a, eq[a:b])
    st = rm.state
    return (rm.events, rm.spans, dict(st.locks), st.halted, st.peak_equity, dict(rm._key), dict(rm._anchor))


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Beirut", "UTC"])
def test_a_precomputed_calendar_marks_stretches_as_point_by_point_marks_do(zone):
    rng = np.random.default_rng(8)
    n = 20_000
    ts = (1_577_836_800 + np.cumsum(rng.integers(60, 4 * 3600, n))) * 10**9
    eq = 100_000 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    eq[rng.random(n) < 0.001] *= 0.9  # sudden losses: locks and a halt
    limits = RiskLimits(period_tz=zone, daily_loss_pct=1.0, weekly_loss_pct=2.0, monthly_loss_pct=4.0,
                        max_drawdown_pct=30.0)  # fmt: skip
    pointwise = _marks(limits, ts, eq, range(n), prepared=False)
    assert len(pointwise[0]) > 20
    for prepared in (False, True):
        cuts = sorted(rng.integers(0, n, 400).tolist())
        assert _marks(limits, ts, eq, cuts, prepared) == pointwise


# -- the engine: backtest == live runtime on minute bars, every rule on ------------------------------
def _engine_kwargs(inst: Instrument, limits: RiskLimits):
    return {
        "strategy_name": "trend",
        "limits": limits,
        "venue": SimVenue({inst.symbol: inst}, BpsCommission(1.0), FixedBpsSlippage(1.0)),
        "initial_cash": 1e6,
    }


@pytest.mark.parametrize("profile", ["full", "minimal"])
def test_a_backtest_and_the_live_runtime_agree_on_minute_bars(profile):
    n = BLOCK + 900  # across a block boundary
    b = synthetic(n, 9, CRYPTO)
    arrays = {"SYN": {"ts": b.ts, "open": b.open, "high": b.high, "low": b.low, "close": b.close,
                      "volume": b.volume}}  # fmt: skip
    kw = {"sizing": "percent_equity", "percent_equity": 100, "max_position_pct": 100}
    limits = RiskLimits.minimal(**kw) if profile == "minimal" else RiskLimits(max_drawdown_pct=60.0, **kw)
    strategy = make_strategy("trend", {"fast": 10, "slow": 40, "stop_atr": 2.0})
    md = market_from_arrays(arrays, {"SYN": CRYPTO}, ["SYN"])
    bt = run_backtest(Engine(md, compute_signals(strategy, md), **_engine_kwargs(CRYPTO, limits)))

    template = market_from_arrays(arrays, {"SYN": CRYPTO}, ["SYN"])
    runtime = LiveRuntime(template, strategy, lambda m, s: Engine(m, s, **_engine_kwargs(CRYPTO, limits)))
    live = asyncio.run(runtime.run(RecordedFeed(template)))

    assert len(bt.decisions) > 40
    assert [d.verdict for d in bt.decisions] == [d.verdict for d in live.decisions]  # checks included
    assert [(o.id, o.status, o.filled_qty, o.avg_fill_price) for o in bt.orders.values()] == [
        (o.id, o.status, o.filled_qty, o.avg_fill_price) for o in live.orders.values()
    ]
    assert bt.fills == live.fills
    np.testing.assert_array_equal(bt.equity, live.equity)
    assert bt.risk.events == live.risk.events
