"""Built-in strategies: trend (MA crossover), breakout (Donchian), mean reversion (RSI/Bollinger), and the
registry of every built-in (with the momentum pair of ``hflite.strategy.momentum``).

Parameters are frozen pydantic models with ``extra="forbid"``, so a misspelt key in the config or
in ``--set strategy.key=value`` stops the run with the field's name. Any built-in but ``ai_ensemble``
takes ``[strategy.by_regime.<regime>]`` blocks (``hflite.strategy.regime_switch``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from hflite.domain.signal import Exits
from hflite.strategy import indicators as ta
from hflite.strategy.base import BarArrays, SignalSet, Strategy, crossings, entry_exit_targets, onset
from hflite.strategy.momentum import TSMom, TSMomParams, XSMom, XSMomParams
from hflite.strategy.params import StrategyParams as _Params
from hflite.strategy.params import _rule
from hflite.strategy.regime_switch import RegimeSwitch


class TrendParams(_Params):
    fast: int = Field(20, ge=1, le=2000)
    slow: int = Field(50, ge=2, le=5000)
    ma: Literal["sma", "ema"] = "sma"
    trailing: bool = Field(False, description="trail the ATR stop behind the high (long) / low (short)")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> TrendParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be smaller than slow ({self.slow})")
        return self


class BreakoutParams(_Params):
    entry_period: int = Field(55, ge=2, le=2000, description="Donchian channel for entries")
    exit_period: int = Field(20, ge=2, le=2000, description="Donchian channel for exits")
    stop_atr: float = Field(2.0, ge=0.1, le=50)


class MeanReversionParams(_Params):
    mode: Literal["rsi", "bollinger"] = "rsi"
    rsi_period: int = Field(14, ge=2, le=500)
    oversold: float = Field(30.0, gt=0, lt=100)
    overbought: float = Field(70.0, gt=0, lt=100)
    exit_level: float = Field(50.0, gt=0, lt=100, description="RSI level that ends a trade")
    bb_period: int = Field(20, ge=2, le=500)
    bb_k: float = Field(2.0, gt=0, le=10)
    time_stop_bars: int = Field(10, ge=0, le=10000, description="exit after this many bars (0 = never)")
    stop_atr: float = Field(3.0, ge=0, le=50)

    @model_validator(mode="after")
    def _levels(self) -> MeanReversionParams:
        if not self.oversold < self.exit_level < self.overbought:
            raise ValueError("need oversold < exit_level < overbought")
        return self


class Trend:
    """Moving-average crossover: long when fast crosses above slow; flat (or short) on the cross below."""

    name = "trend"

    def __init__(self, params: TrendParams) -> None:
        self.p = params

    def warmup(self) -> int:
        return max(self.p.slow, self.p.atr_period) + 1

    def signals(self, bars: BarArrays) -> SignalSet:
        p = self.p
        ma = ta.sma if p.ma == "sma" else ta.ema
        fast, slow = ma(bars.close, p.fast), ma(bars.close, p.slow)
        cross = crossings(fast, slow)
        target = np.full(len(bars), np.nan)
        target[cross == 1] = 1.0
        target[cross == -1] = -1.0 if p.allow_short else 0.0
        name = p.ma.upper()
        return SignalSet(
            target=target,
            atr=ta.atr(bars.high, bars.low, bars.close, p.atr_period),
            exits=Exits(stop_atr=p.stop_atr, take_profit_atr=p.take_profit_atr, trailing=p.trailing),
            values={"fast": fast, "slow": slow},
            reasons={
                1: f"{name}({p.fast}) {{fast:.4f}} crossed above {name}({p.slow}) {{slow:.4f}}",
                0: f"{name}({p.fast}) {{fast:.4f}} crossed below {name}({p.slow}) {{slow:.4f}}",
                -1: f"{name}({p.fast}) {{fast:.4f}} crossed below {name}({p.slow}) {{slow:.4f}}: go short",
            },
        )


class Breakout:
    """Donchian breakout: long above the prior ``entry_period`` high, out below the prior
    ``exit_period`` low (short side mirrored when allowed), with an ATR stop."""

    name = "breakout"

    def __init__(self, params: BreakoutParams) -> None:
        self.p = params

    def warmup(self) -> int:
        return max(self.p.entry_period, self.p.exit_period, self.p.atr_period) + 1

    def signals(self, bars: BarArrays) -> SignalSet:
        p = self.p
        up_in, lo_in = ta.donchian(bars.high, bars.low, p.entry_period)
        up_out, lo_out = ta.donchian(bars.high, bars.low, p.exit_period)
        c = bars.close
        target = entry_exit_targets(
            long_entry=c > up_in,
            short_entry=(c < lo_in) if p.allow_short else None,
            long_exit=c < lo_out,
            short_exit=c > up_out,
        )
        return SignalSet(
            target=target,
            atr=ta.atr(bars.high, bars.low, c, p.atr_period),
            exits=Exits(stop_atr=p.stop_atr, take_profit_atr=p.take_profit_atr),
            values={"close": c, "upper": up_in, "lower": lo_in, "exit_low": lo_out, "exit_high": up_out},
            reasons={
                1: f"close {{close:.4f}} broke above the {p.entry_period}-bar high {{upper:.4f}}",
                -1: f"close {{close:.4f}} broke below the {p.entry_period}-bar low {{lower:.4f}}",
                0: f"close {{close:.4f}} left the {p.exit_period}-bar exit channel "
                f"[{{exit_low:.4f}}, {{exit_high:.4f}}]",
            },
        )


class MeanReversion:
    """Buy oversold (RSI below ``oversold`` or close below the lower Bollinger band), exit when
    it reverts (RSI above ``exit_level`` or close above the middle band) or after a time stop."""

    name = "mean_reversion"

    def __init__(self, params: MeanReversionParams) -> None:
        self.p = params

    def warmup(self) -> int:
        return max(self.p.rsi_period, self.p.bb_period, self.p.atr_period) + 1

    def signals(self, bars: BarArrays) -> SignalSet:
        p = self.p
        c = bars.close
        if p.mode == "rsi":
            ind = ta.rsi(c, p.rsi_period)
            values = {"rsi": ind, "close": c}
            long_in, short_in = ind < p.oversold, ind > p.overbought
            long_out, short_out = ind > p.exit_level, ind < p.exit_level
            reasons = {
                1: f"RSI({p.rsi_period}) {{rsi:.1f}} fell below {p.oversold}",
                -1: f"RSI({p.rsi_period}) {{rsi:.1f}} rose above {p.overbought}",
                0: f"RSI({p.rsi_period}) {{rsi:.1f}} reverted past {p.exit_level}",
            }
        else:
            upper, mid, lower = ta.bollinger(c, p.bb_period, p.bb_k)
            values = {"close": c, "upper": upper, "mid": mid, "lower": lower}
            long_in, short_in = c < lower, c > upper
            long_out, short_out = c > mid, c < mid
            reasons = {
                1: "close {close:.4f} fell below the lower band {lower:.4f}",
                -1: "close {close:.4f} rose above the upper band {upper:.4f}",
                0: "close {close:.4f} reverted to the middle band {mid:.4f}",
            }
        # Entries fire on the bar the condition starts (so a time stop is not undone next bar).
        target = entry_exit_targets(
            long_entry=onset(long_in),
            short_entry=onset(short_in) if p.allow_short else None,
            long_exit=long_out,
            short_exit=short_out,
        )
        return SignalSet(
            target=target,
            atr=ta.atr(bars.high, bars.low, c, p.atr_period),
            exits=Exits(
                stop_atr=p.stop_atr, take_profit_atr=p.take_profit_atr, time_stop_bars=p.time_stop_bars
            ),
            values=values,
            reasons=reasons,
        )


class AIEnsembleParams(_Params):
    """The ``ai_ensemble`` strategy: the ensemble's score and confidence ([ai] builds them) become a
    target: long at or above ``enter`` with enough confidence, flat at or below ``exit`` (short below
    ``-enter`` when allowed); entries are sized by the risk gate times the confidence."""

    enter: float = Field(0.25, gt=0, le=1, description="ensemble score that opens a long")
    exit: float = Field(0.0, ge=-1, lt=1, description="score at or below which a long is closed")
    min_confidence: float = Field(0.2, ge=0, le=1)
    min_size: float = Field(0.25, gt=0, le=1, description="smallest conviction multiplier of a size")
    score: Literal["ensemble", "technical"] = Field(
        "ensemble", description="'technical': the market view without the model (the ablation)"
    )
    stop_atr: float = Field(3.0, ge=0, le=50)

    @model_validator(mode="after")
    def _exit_below_enter(self) -> AIEnsembleParams:
        if self.exit >= self.enter:
            raise ValueError(f"exit ({self.exit}) must be below enter ({self.enter})")
        if self.by_regime:
            raise _rule(
                "strategy.by_regime",
                "ai_ensemble takes no per-regime parameters (a run builds the AI brain for the plain "
                "strategy only; its market view already reads the regime, and [risk.regime] scales it)",
            )
        return self


PARAMS: dict[str, type[_Params]] = {
    "trend": TrendParams,
    "breakout": BreakoutParams,
    "mean_reversion": MeanReversionParams,
    "ai_ensemble": AIEnsembleParams,
    "tsmom": TSMomParams,
    "xsmom": XSMomParams,
}
_CLASSES: dict[str, object] = {
    "trend": Trend,
    "breakout": Breakout,
    "mean_reversion": MeanReversion,
    "tsmom": TSMom,
    "xsmom": XSMom,
}


def make_strategy(name: str, params: dict[str, object]) -> Strategy:
    """Build a built-in strategy by name from a parameter dict (validated); with ``by_regime``
    blocks, the regime switch over that strategy's parameter sets."""
    if name not in PARAMS:
        raise ValueError(f"unknown strategy {name!r}; built-ins: {', '.join(sorted(PARAMS))}")
    validated = PARAMS[name].model_validate(params)
    if validated.by_regime:
        return RegimeSwitch(validated, lambda p: _build(name, p))
    return _build(name, validated)


def _build(name: str, params: _Params) -> Strategy:
    if name == "ai_ensemble":
        from hflite.strategy.ai import AIEnsemble

        return AIEnsemble(params)  # type: ignore[arg-type]
    return _CLASSES[name](params)  # type: ignore[no-any-return,operator]
