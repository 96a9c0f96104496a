"""The one pre-trade gate. Pure: (limits, state, intent, instrument, market context) -> verdict.

No I/O, no clock, no mutation: the ``RiskManager`` (``risk.manager``) keeps the state (equity,
exposures, halts, loss-limit locks, pauses) and builds the market context (liquidity, volatility,
breakers, correlation, regime) from data stamped at or before the decision.

Exits are always approved and never enlarged. An entry passes, in order:

1. gates that reject: kill switch, human pause, drawdown halt, loss-limit locks, market-wide and
   per-symbol circuit breakers, protections, shorting, order rate, price collar, liquidity floor,
   equity, open-position count;
2. sizing: ATR risk (or a share of equity) at the configured ``risk_pct``, times the strategy's
   conviction (``intent.size`` in [0, 1]: it can shrink the size, never grow it); the verdict's
   ``qty_requested`` is this size;
3. cuts, each recorded with its value and limit: drawdown reduction, regime scaling, volatility
   adjustment, correlation, then the caps (position, sector, asset class, gross, net, leverage,
   share of average volume, order notional). Each cap leaves exactly the room that is left, so an
   approved order never takes any measure past its limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from hflite.domain.instrument import Instrument, VolumeUnit
from hflite.domain.order import Side
from hflite.domain.signal import Check, IntentKind, OrderIntent, RiskVerdict, VerdictStatus
from hflite.risk.limits import BreakerLimits, ProtectionLimits, Regime, RegimeLimits, RiskLimits

__all__ = [
    "BreakerLimits",
    "MarketContext",
    "ProtectionLimits",
    "Regime",
    "RegimeLimits",
    "RiskLimits",
    "RiskState",
    "evaluate",
    "shrink",
    "size_entry",
]

NAN = float("nan")


@dataclass(slots=True)
class RiskState:
    """What the gate knows about the account at decision time, kept by the risk manager (USD)."""

    equity: float
    peak_equity: float
    gross_exposure: float = 0.0  # sum |market value| of positions plus working entries
    net_exposure: float = 0.0  # signed sum of the same
    cash: float = NAN  # cash after working buy entries are paid (NaN: not tracked, leverage unchecked)
    open_positions: int = 0  # positions plus working entries
    sector_exposure: dict[str, float] = field(default_factory=dict)  # sector -> sum |value|
    class_exposure: dict[str, float] = field(default_factory=dict)  # asset class -> sum |value|
    mode: str = "running"  # running | paused | killed (human commands)
    mode_reason: str = ""
    halted: bool = False  # drawdown halt: holds until a human resumes
    halt_reason: str = ""
    locks: dict[str, str] = field(default_factory=dict)  # loss-limit period -> why it is locked
    period_loss: dict[str, float] = field(default_factory=dict)  # period -> % below its start now
    global_pause: str = ""  # a protection pausing every symbol, with its reason


class MarketContext(NamedTuple):
    """What the market says about one intent's symbol at decision time. Neutral by default."""

    fx: float = 1.0  # quote currency -> USD
    last_price: float = NAN  # last traded price (collar reference); NaN: not checked
    adv_usd: float = NAN  # average daily dollar volume; NaN: the bars carry no volume
    avg_units: float = NAN  # average volume in units of the instrument
    vol_mult: float = 1.0  # volatility adjustment multiplier in (0, 1]
    vol_ratio: float = NAN  # current realised volatility / its median
    breaker: str = ""  # the symbol's circuit breaker, when tripped
    market_breaker: str = ""  # the market-wide breaker, when tripped
    regime: str = ""  # bull | bear | sideways | crisis | "" (unknown)
    symbol_pause: str = ""  # a protection pausing this symbol
    orders_last_minute: int = 0
    max_corr: float = NAN  # highest direction-adjusted return correlation with a held position
    corr_with: str = ""


def size_entry(limits: RiskLimits, equity: float, intent: OrderIntent, fx: float) -> tuple[float, str]:
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


NEUTRAL = MarketContext()


def evaluate(
    limits: RiskLimits,
    state: RiskState,
    intent: OrderIntent,
    instrument: Instrument,
    ctx: MarketContext | float = NEUTRAL,
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
    fails = _gates(limits, state, intent, instrument, ctx, checks)
    if fails:
        return _reject(intent, 0.0, fails, checks)
    wanted, how = size_entry(limits, state.equity, intent, ctx.fx)
    if not intent.size >= 1.0:  # conviction only ever shrinks what risk allows (NaN: nothing)
        conviction = max(intent.size, 0.0) if intent.size == intent.size else 0.0
        wanted *= conviction
        how = f"{how} x{conviction:.2f} conviction"
    if not wanted > 0 or math.isinf(wanted):
        return _reject(intent, 0.0, [("sizing", f"cannot size: {how}")], checks)
    cut = _Cuts(wanted, intent.price * ctx.fx, checks)
    if not _scale(cut, limits, state, ctx):
        why = f"correlation {ctx.max_corr:.2f} with {ctx.corr_with}"
        return _reject(intent, wanted, [("correlation", why)], checks)
    _caps(cut, limits, state, intent, instrument, ctx)
    qty = instrument.round_qty(cut.qty)
    cuts = cut.cuts
    if qty <= 0:
        why = "; ".join(c[1] for c in cuts) if cuts else "size below one lot"
        rules = [c[0] for c in cuts] or ["lot_size"]
        return _reject(intent, wanted, [(rules[0], f"{why}: nothing left to trade")], checks, tuple(rules))
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


def shrink(verdict: RiskVerdict, scale: float, rule: str, why: str, instrument: Instrument) -> RiskVerdict:
    """``verdict`` with its approved size times ``scale``, clipped to [0, 1] (NaN: 0) and rounded
    down to a lot: a later pass (the LLM portfolio manager) can keep, cut or cancel what risk
    approved, never enlarge it. A cut records ``rule`` and ``why``; nothing left rejects it."""
    s = min(max(scale, 0.0), 1.0) if scale == scale else 0.0
    if s >= 1.0 or verdict.qty_approved <= 0:
        return verdict
    qty = min(instrument.round_qty(verdict.qty_approved * s), verdict.qty_approved)
    rules = (*verdict.rules, rule)
    reason = f"{verdict.reason}; {why}"
    if qty <= 0:
        return verdict._replace(status=VerdictStatus.REJECTED, qty_approved=0.0, reason=reason, rules=rules)
    return verdict._replace(status=VerdictStatus.RESIZED, qty_approved=qty, reason=reason, rules=rules)


def _gates(  # noqa: C901 - a flat list of independent rules reads best as one list
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
    if _liquid(instrument, ctx) and limits.min_adv_usd:
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


def _liquid(instrument: Instrument, ctx: MarketContext) -> bool:
    return instrument.volume_unit is not VolumeUnit.NONE and not math.isnan(ctx.adv_usd)


class _Cuts:
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


def _scale(cut: _Cuts, limits: RiskLimits, state: RiskState, ctx: MarketContext) -> bool:
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
    scale = _regime_scale(limits, ctx)
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


def _regime_scale(limits: RiskLimits, ctx: MarketContext) -> float:
    return limits.regime.scale.get(ctx.regime, 1.0) if ctx.regime else 1.0


def _caps(
    cut: _Cuts,
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
    scale = _regime_scale(limits, ctx)
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
    if _liquid(instrument, ctx) and limits.max_adv_share and ctx.avg_units > 0:
        # USD of average volume; a volume so small that it underflows to 0 USD leaves no room (the
        # check then reads inf rather than dividing by zero)
        share, adv = limits.max_adv_share, max(ctx.avg_units * cut.unit, math.ulp(0.0))
        cut.cap("adv_share_cap", "adv_share", share * adv, 0.0, share, adv,
                "{:.2%} of average volume ({:,.0f} units)", share, ctx.avg_units)  # fmt: skip
    if limits.max_order_usd:
        lim = limits.max_order_usd
        cut.cap("order_notional_cap", "order_usd", lim, 0.0, lim, 1.0, "max order notional {:,.0f} USD", lim)


def _reject(
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
