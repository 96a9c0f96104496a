"""The one pre-trade gate. Pure: (limits, state, intent) -> verdict. No I/O, no clock.

First cut (the risk issue completes it): ATR sizing to a per-trade risk budget (default) or a
fixed share of equity, a per-position cap, a gross exposure cap, and a drawdown halt. Exits are
always allowed and never enlarged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from hflite.domain.instrument import Instrument
from hflite.domain.signal import Check, IntentKind, OrderIntent, RiskVerdict, VerdictStatus


@dataclass(frozen=True, slots=True)
class RiskLimits:
    sizing: Literal["atr", "percent_equity"] = "atr"
    risk_pct: float = 0.5  # % of equity lost if the ATR stop is hit (atr sizing)
    stop_atr: float = 2.0  # stop distance in ATRs assumed for sizing when the strategy sets none
    percent_equity: float = 10.0  # % of equity per new position (percent_equity sizing)
    max_position_pct: float = 25.0  # % of equity in one position
    max_gross_exposure: float = 1.0  # gross notional / equity
    max_drawdown_pct: float = 20.0  # halt new entries at this drawdown from the equity peak


@dataclass(slots=True)
class RiskState:
    """What the gate knows at decision time, supplied by the engine."""

    equity: float  # USD
    peak_equity: float  # USD
    gross_exposure: float  # USD, sum of |market value| of open positions and working entries
    halted: bool = False
    halt_reason: str = ""


def size_entry(limits: RiskLimits, equity: float, intent: OrderIntent, fx: float) -> tuple[float, str]:
    """Units to buy or sell before caps, and how they were sized. ``fx`` converts quote to USD."""
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


def evaluate(
    limits: RiskLimits, state: RiskState, intent: OrderIntent, instrument: Instrument, fx: float
) -> RiskVerdict:
    """Approve, resize or reject one intent. Updates ``state.halted`` when the drawdown limit trips."""
    if intent.kind is IntentKind.EXIT:
        qty = intent.qty or 0.0
        return RiskVerdict(
            intent.id, intent.symbol, intent.ts, VerdictStatus.APPROVED, qty, qty, "exit: always allowed"
        )
    drawdown_pct = (1 - state.equity / state.peak_equity) * 100 if state.peak_equity > 0 else 0.0
    dd_check = Check(
        "drawdown_pct", drawdown_pct, limits.max_drawdown_pct, drawdown_pct < limits.max_drawdown_pct
    )
    if not dd_check.passed and not state.halted:
        state.halted = True
        state.halt_reason = f"drawdown {drawdown_pct:.2f}% reached the {limits.max_drawdown_pct:g}% limit"
    if state.halted:
        return _reject(intent, 0.0, f"halted: {state.halt_reason}", (dd_check,))
    if intent.side.sign < 0 and not instrument.shortable:
        return _reject(intent, 0.0, f"{intent.symbol} cannot be sold short", (dd_check,))
    if state.equity <= 0:
        return _reject(intent, 0.0, "equity is not positive", (dd_check,))

    wanted, how = size_entry(limits, state.equity, intent, fx)
    if not wanted > 0 or math.isinf(wanted):
        return _reject(intent, 0.0, f"cannot size: {how}", (dd_check,))
    unit_usd = intent.price * fx
    qty, cuts = wanted, []
    pos_cap = state.equity * limits.max_position_pct / 100 / unit_usd
    pos_check = Check(
        "position_pct", wanted * unit_usd / state.equity * 100, limits.max_position_pct, wanted <= pos_cap
    )
    if qty > pos_cap:
        qty, cuts = pos_cap, [f"position cap {limits.max_position_pct:g}% of equity"]
    room = (limits.max_gross_exposure * state.equity - state.gross_exposure) / unit_usd
    gross_after = (state.gross_exposure + qty * unit_usd) / state.equity
    gross_check = Check("gross_exposure", gross_after, limits.max_gross_exposure, qty <= room)
    if qty > room:
        qty = max(room, 0.0)
        cuts.append(f"gross exposure cap {limits.max_gross_exposure:g}x equity")
    checks = (dd_check, pos_check, gross_check)
    qty = instrument.round_qty(qty)
    if qty <= 0:
        why = "; ".join(cuts) if cuts else "size below one lot"
        return _reject(intent, wanted, f"{why}: nothing left to trade", checks)
    if cuts:
        return RiskVerdict(
            intent.id,
            intent.symbol,
            intent.ts,
            VerdictStatus.RESIZED,
            wanted,
            qty,
            f"{how}; cut by " + "; ".join(cuts),
            checks,
        )
    return RiskVerdict(intent.id, intent.symbol, intent.ts, VerdictStatus.APPROVED, wanted, qty, how, checks)


def _reject(intent: OrderIntent, wanted: float, reason: str, checks: tuple[Check, ...]) -> RiskVerdict:
    return RiskVerdict(
        intent.id, intent.symbol, intent.ts, VerdictStatus.REJECTED, wanted, 0.0, reason, checks
    )
