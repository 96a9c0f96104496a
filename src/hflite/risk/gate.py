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

from hflite.domain.instrument import AssetClass, Instrument, VolumeUnit
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

_new = tuple.__new__  # Check(...) without the NamedTuple's Python-level __new__: the same tuple


class _Plan:
    """What one ``RiskLimits`` asks of every entry, worked out once (limits are frozen)."""

    __slots__ = ("how", "losses")

    def __init__(self, limits: RiskLimits) -> None:
        self.losses = tuple(
            (period, f"{period}_loss_pct", limit)
            for period, limit in (
                ("daily", limits.daily_loss_pct),
                ("weekly", limits.weekly_loss_pct),
                ("monthly", limits.monthly_loss_pct),
            )
            if limit
        )
        self.how: dict[float, str] = {}  # stop distance in ATRs (-1: a share of equity) -> how sized


_PLANS: dict[int, tuple[RiskLimits, _Plan]] = {}


def _plan(limits: RiskLimits) -> _Plan:
    got = _PLANS.get(id(limits))
    if got is not None and got[0] is limits:
        return got[1]
    if len(_PLANS) >= 64:
        _PLANS.clear()
    plan = _Plan(limits)
    _PLANS[id(limits)] = (limits, plan)  # holding the limits keeps their id from being reused
    return plan


def _sized(
    plan: _Plan, limits: RiskLimits, equity: float, intent: OrderIntent, fx: float
) -> tuple[float, str]:
    """``size_entry``, with its wording kept per stop distance rather than formatted every time."""
    if limits.sizing == "percent_equity":
        how = plan.how.get(-1.0)
        if how is None:
            how = plan.how[-1.0] = f"{limits.percent_equity:g}% of equity"
        return equity * limits.percent_equity / 100 / (intent.price * fx), how
    stop_atr = intent.exits.stop_atr or limits.stop_atr
    if not intent.atr > 0:
        return 0.0, "ATR unavailable"
    per_unit_risk = stop_atr * intent.atr * fx
    how = plan.how.get(stop_atr)
    if how is None:
        how = plan.how[stop_atr] = f"risk {limits.risk_pct:g}% of equity over a {stop_atr:g} ATR stop"
    return equity * limits.risk_pct / 100 / per_unit_risk, how


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
    if intent.kind is _EXIT:
        qty = intent.qty or 0.0
        return _new(RiskVerdict, (intent.id, intent.symbol, intent.ts, _APPROVED, qty, qty,
                                  "exit: always allowed", (), ()))  # fmt: skip
    plan = _plan(limits)
    checks: list[Check] = []
    fails = _gates(plan, limits, state, intent, instrument, ctx, checks)
    if fails:
        return _reject(intent, 0.0, fails, checks)
    wanted, how = _sized(plan, limits, state.equity, intent, ctx.fx)
    if not intent.size >= 1.0:  # conviction only ever shrinks what risk allows (NaN: nothing)
        conviction = max(intent.size, 0.0) if intent.size == intent.size else 0.0
        wanted *= conviction
        how = f"{how} x{conviction:.2f} conviction"
    if not wanted > 0 or math.isinf(wanted):
        return _reject(intent, 0.0, [("sizing", f"cannot size: {how}")], checks)
    cuts: list[tuple[str, str]] = []
    scaled = _scale(wanted, limits, state, ctx, checks, cuts)
    if scaled is None:
        why = f"correlation {ctx.max_corr:.2f} with {ctx.corr_with}"
        return _reject(intent, wanted, [("correlation", why)], checks)
    qty = instrument.round_qty(
        _caps(scaled, intent.price * ctx.fx, limits, state, intent, instrument, ctx, checks, cuts)
    )
    if qty <= 0:
        why = "; ".join([c[1] for c in cuts]) if cuts else "size below one lot"
        rules = [c[0] for c in cuts] or ["lot_size"]
        return _reject(intent, wanted, [(rules[0], f"{why}: nothing left to trade")], checks, tuple(rules))
    if cuts:
        return _new(RiskVerdict, (
            intent.id,
            intent.symbol,
            intent.ts,
            _RESIZED,
            wanted,
            qty,
            f"{how}; cut by " + "; ".join([c[1] for c in cuts]),
            tuple(checks),
            tuple([c[0] for c in cuts]),
        ))  # fmt: skip
    return _new(RiskVerdict, (intent.id, intent.symbol, intent.ts, _APPROVED, wanted, qty, how,
                              tuple(checks), ()))  # fmt: skip


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


def _gates(  # noqa: C901, PLR0912 - a flat list of independent rules reads best as one list
    plan: _Plan,
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
    checks.append(_new(Check, ("drawdown_pct", dd, limits.max_drawdown_pct, not state.halted)))
    if state.halted:
        fails.append(("drawdown_halt", f"halted: {state.halt_reason}"))
    locks = state.locks
    if plan.losses:
        period_loss = state.period_loss
        for period, name, limit in plan.losses:
            checks.append(_new(Check, (name, period_loss.get(period, 0.0), limit, period not in locks)))
    if locks:
        for period, why in locks.items():
            fails.append((f"{period}_loss", why))
    if ctx.market_breaker:
        fails.append(("market_breaker", ctx.market_breaker))
    if ctx.breaker:
        fails.append(("circuit_breaker", ctx.breaker))
    if state.global_pause:
        fails.append(("protection", state.global_pause))
    if ctx.symbol_pause:
        fails.append(("protection", ctx.symbol_pause))
    if intent.side is _SELL and not instrument.shortable:
        fails.append(("shorting", f"{intent.symbol} cannot be sold short"))
    elif intent.side is _SELL and not limits.allow_short:
        fails.append(("shorting", "the account may not sell short (risk.allow_short = false)"))
    limit = limits.max_orders_per_minute
    if limit:
        n = ctx.orders_last_minute
        checks.append(_new(Check, ("orders_per_minute", n, limit, n < limit)))
        if not n < limit:
            fails.append(("order_rate", f"{n} orders in the last minute"))
    collar = limits.collar_pct
    if collar and ctx.last_price > 0:
        off = abs(intent.price / ctx.last_price - 1) * 100
        checks.append(_new(Check, ("collar_pct", off, collar, off <= collar)))
        if not off <= collar:
            why = f"price {intent.price:g} is {off:.1f}% from the last price {ctx.last_price:g}"
            fails.append(("collar", why))
    if limits.min_adv_usd and instrument.volume_unit is not _NO_VOLUME and not _isnan(ctx.adv_usd):  # _liquid
        adv, limit_usd = ctx.adv_usd, limits.min_adv_usd
        checks.append(_new(Check, ("adv_usd", adv, limit_usd, adv >= limit_usd)))
        if not adv >= limit_usd:
            fails.append(("liquidity", f"average dollar volume {adv:,.0f} USD"))
    if not state.equity > 0:
        fails.append(("equity", "equity is not positive"))
    limit = limits.max_open_positions
    if limit:
        n = state.open_positions
        checks.append(_new(Check, ("open_positions", n, limit, n < limit)))
        if not n < limit:
            fails.append(("open_positions", f"{n} positions open"))
    if not ctx.fx > 0 or not intent.price > 0:
        fails.append(("price", f"no usable price ({intent.price:g}, FX {ctx.fx:g})"))
    return fails


def _liquid(instrument: Instrument, ctx: MarketContext) -> bool:
    return instrument.volume_unit is not VolumeUnit.NONE and not math.isnan(ctx.adv_usd)


def _scale(
    qty: float,
    limits: RiskLimits,
    state: RiskState,
    ctx: MarketContext,
    checks: list[Check],
    cuts: list[tuple[str, str]],
) -> float | None:
    """Drawdown, regime, volatility and correlation multipliers: the size after them, or None
    when correlation rejects. Each multiplier records its check whether it cuts or not."""
    if limits.drawdown_reduce_pct:
        dd = (1 - state.equity / state.peak_equity) * 100 if state.peak_equity > 0 else 0.0
        f, lim = limits.drawdown_reduce_factor, limits.drawdown_reduce_pct
        checks.append(_new(Check, ("drawdown_reduce_pct", dd, lim, dd < lim)))
        if not dd < lim:
            qty *= f
            cuts.append(("drawdown_reduce", f"drawdown {dd:.1f}%: size x{f:g}"))
    regime = ctx.regime
    if regime:
        scale = limits.regime.scale.get(regime, 1.0)
        checks.append(_new(Check, ("regime_scale", scale, 1.0, scale >= 1.0)))
        if not scale >= 1.0:
            qty *= scale
            cuts.append(("regime", f"{regime} regime: size x{scale:g}"))
    vol_ratio = ctx.vol_ratio
    if limits.vol_adjust and vol_ratio == vol_ratio:
        vol_mult = ctx.vol_mult
        checks.append(_new(Check, ("vol_ratio", vol_ratio, 1.0, vol_mult >= 1.0)))
        if not vol_mult >= 1.0:
            qty *= vol_mult
            cuts.append(("volatility", f"volatility {vol_ratio:.2f}x its median: size x{vol_mult:.2f}"))
    corr, max_corr = ctx.max_corr, limits.max_correlation
    if max_corr < 1.0 and corr == corr:
        ok = corr <= max_corr
        checks.append(_new(Check, ("correlation", corr, max_corr, ok)))
        if not ok:
            if limits.correlation_action == "reject":
                return None
            f = max_corr / corr
            qty *= f
            cuts.append(("correlation", f"correlation {corr:.2f} with {ctx.corr_with}: size x{f:.2f}"))
    return qty


def _regime_scale(limits: RiskLimits, ctx: MarketContext) -> float:
    return limits.regime.scale.get(ctx.regime, 1.0) if ctx.regime else 1.0


def _caps(  # noqa: C901, PLR0913 - the cut size and what it is cut against, one cap after another
    qty: float,
    unit: float,
    limits: RiskLimits,
    state: RiskState,
    intent: OrderIntent,
    instrument: Instrument,
    ctx: MarketContext,
    checks: list[Check],
    cuts: list[tuple[str, str]],
) -> float:
    """Each cap leaves exactly the room that is left (USD), in a fixed order. Its check records
    what the uncut order would reach, ``(used + qty * unit) / per`` against the limit; when it binds
    the size becomes the room, ``max(room_usd, 0) / unit`` (written out: the builtin costs a
    call), and the reason is formatted."""
    eq = state.equity
    pct = eq / 100
    lim = limits.max_position_pct
    left = lim * pct
    room = (0.0 if left < 0.0 else left) / unit
    checks.append(_new(Check, ("position_pct", (0.0 + qty * unit) / pct, lim, qty <= room)))
    if qty > room:
        qty = room
        cuts.append(("position_cap", f"position cap {lim:g}% of equity"))
    sector = instrument.sector
    if sector and limits.max_sector_pct < 100:
        used, lim = state.sector_exposure.get(sector, 0.0), limits.max_sector_pct
        left = lim * pct - used
        room = (0.0 if left < 0.0 else left) / unit
        checks.append(_new(Check, ("sector_pct:" + sector, (used + qty * unit) / pct, lim, qty <= room)))
        if qty > room:
            qty = room
            cuts.append(("sector_cap", f"sector {sector} cap {lim:g}% of equity"))
    cls = _CLASS_VALUE[instrument.asset_class]
    cls_limit = limits.max_asset_class_pct.get(cls)
    if cls_limit is not None:
        lim, used = cls_limit, state.class_exposure.get(cls, 0.0)
        left = lim * pct - used
        room = (0.0 if left < 0.0 else left) / unit
        checks.append(_new(Check, ("class_pct:" + cls, (used + qty * unit) / pct, lim, qty <= room)))
        if qty > room:
            qty = room
            cuts.append(("asset_class_cap", f"{cls} cap {lim:g}% of equity"))
    scale = limits.regime.scale.get(ctx.regime, 1.0) if ctx.regime else 1.0
    lim, used = limits.max_gross_exposure * scale, state.gross_exposure
    left = lim * eq - used
    room = (0.0 if left < 0.0 else left) / unit
    checks.append(_new(Check, ("gross_exposure", (used + qty * unit) / eq, lim, qty <= room)))
    if qty > room:
        qty = room
        cuts.append(("gross_cap", f"gross exposure cap {lim:g}x equity"))
    buy = intent.side is _BUY
    lim = limits.max_net_exposure * scale
    used = state.net_exposure if buy else -state.net_exposure  # exposure already on this order's side
    left = lim * eq - used
    room = (0.0 if left < 0.0 else left) / unit
    checks.append(_new(Check, ("net_exposure", (used + qty * unit) / eq, lim, qty <= room)))
    if qty > room:
        qty = room
        cuts.append(("net_cap", f"net exposure cap {lim:g}x equity"))
    cash = state.cash
    if buy and cash == cash:
        # Borrowing = cash that would go below zero; leverage = (equity + borrowing) / equity.
        lim, used = limits.max_leverage, eq - cash
        left = (lim - 1) * eq + cash
        room = (0.0 if left < 0.0 else left) / unit
        checks.append(_new(Check, ("leverage", (used + qty * unit) / eq, lim, qty <= room)))
        if qty > room:
            qty = room
            cuts.append(("leverage_cap", f"leverage cap {lim:g}x (cash {cash:,.0f} USD)"))
    share = limits.max_adv_share
    if (
        share
        and instrument.volume_unit is not _NO_VOLUME
        and ctx.adv_usd == ctx.adv_usd
        and ctx.avg_units > 0
    ):
        # USD of average volume; a volume so small that it underflows to 0 USD leaves no room (the
        # check then reads inf rather than dividing by zero)
        adv = ctx.avg_units * unit
        if _TINY > adv:
            adv = _TINY
        left = share * adv
        room = (0.0 if left < 0.0 else left) / unit
        checks.append(_new(Check, ("adv_share", (0.0 + qty * unit) / adv, share, qty <= room)))
        if qty > room:
            qty = room
            cuts.append(("adv_share_cap", f"{share:.2%} of average volume ({ctx.avg_units:,.0f} units)"))
    lim = limits.max_order_usd
    if lim:
        left = lim
        room = (0.0 if left < 0.0 else left) / unit
        checks.append(_new(Check, ("order_usd", (0.0 + qty * unit) / 1.0, lim, qty <= room)))
        if qty > room:
            qty = room
            cuts.append(("order_notional_cap", f"max order notional {lim:,.0f} USD"))
    return qty


_BUY, _SELL, _NO_VOLUME, _TINY = Side.BUY, Side.SELL, VolumeUnit.NONE, math.ulp(0.0)
_isnan = math.isnan
_APPROVED, _RESIZED, _REJECTED = VerdictStatus.APPROVED, VerdictStatus.RESIZED, VerdictStatus.REJECTED
_EXIT = IntentKind.EXIT
_CLASS_VALUE = {c: c.value for c in AssetClass}  # without the enum's ``value`` descriptor


def _reject(
    intent: OrderIntent,
    wanted: float,
    fails: list[tuple[str, str]],
    checks: list[Check],
    rules: tuple[str, ...] | None = None,
) -> RiskVerdict:
    reason = "; ".join([f[1] for f in fails])
    return _new(RiskVerdict, (
        intent.id,
        intent.symbol,
        intent.ts,
        _REJECTED,
        wanted,
        0.0,
        reason,
        tuple(checks),
        rules if rules is not None else tuple(dict.fromkeys([f[0] for f in fails])),
    ))  # fmt: skip
