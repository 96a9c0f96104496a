"""Regime-specific parameters: one strategy, a parameter set per market regime of an index.

``[strategy.by_regime.<regime>]`` blocks override the base ``[strategy]`` parameters in that regime
(bull, bear, sideways, crisis: the labels of ``hflite.ai.regime.rule_regimes``, the risk manager's
trend-and-volatility rule, on ``regime_index``, SPY by default). ``enabled = false`` in a block stops
new entries in that regime (exits still happen).

How a bar's target is chosen, without look-ahead:

1. The regime of bar k of a symbol is the rule's label on the index's last bar known at the bar's
   time (``bars.ts[k]``), computed from the index bars known by then (the rule is causal: rolling
   windows over past bars only). Before the rule's windows fill, the regime is unknown and the base
   parameters apply.
2. Every distinct parameter set's signals are computed over the whole history (each is causal), and
   bar k takes the target, ATR, size and values of the set in force at k.
3. On the bar where the set in force (or its ``enabled``) changes, the new set's standing target
   (its last target at or before k) is issued, so a set that wants another direction than the one
   held gets there on the change bar; the engine ignores it when the position already agrees.
4. In a regime with ``enabled = false``, +1 and -1 targets become NaN (no instruction); 0 (exit)
   stays. A reversal signal there therefore does not close the opposite position; stops still do.

Exits (stop, take-profit, trailing, time stop) are one rule per symbol (``SignalSet.exits``), so the
blocks may not change them. The reason of each decision names the regime.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hflite.strategy.base import BarArrays, SignalSet, Strategy, _ffill
from hflite.strategy.params import REGIMES, StrategyParams

if TYPE_CHECKING:
    from hflite.engine.market import MarketData

#: Regime codes in the ``regime`` value of each decision: 0 = unknown, then REGIMES in order.
CODES = {"": 0, **{name: i + 1 for i, name in enumerate(REGIMES)}}
_NAMES = ("unknown", *REGIMES)
_WORDS = {1: "long", 0: "flat", -1: "short"}


def regime_codes_at(labels: np.ndarray, label_ts: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The code of the last label known at each time in ``ts`` (0 before the first)."""
    codes = np.array([CODES.get(str(x), 0) for x in labels], dtype=np.int64)
    j = np.searchsorted(label_ts, np.asarray(ts, dtype=np.int64), side="right") - 1
    if not len(codes):
        return np.zeros(len(ts), dtype=np.int64)
    return np.where(j >= 0, codes[np.maximum(j, 0)], 0)


class RegimeReason(str):
    """A reason template whose wording follows the regime in force: the ``regime`` value (a code)
    picks the template of that regime's parameter set, and a ``regime_from`` value (set on the bar
    where the set in force changes) says what changed. A ``str`` so the engine formats it as any
    template (the live runtime keeps the first signal set's templates)."""

    by_code: tuple[str, ...]
    sets: tuple[str, ...]
    target: int

    def __new__(cls, by_code: tuple[str, ...], sets: tuple[str, ...], target: int) -> RegimeReason:
        obj = super().__new__(cls, by_code[0])
        obj.by_code, obj.sets, obj.target = by_code, sets, target
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (RegimeReason, (self.by_code, self.sets, self.target))

    def format(self, *args: Any, **values: Any) -> str:
        regime = values.get("regime", 0.0)
        code = int(regime) if regime == regime else 0  # NaN: unknown
        text = self.by_code[code].format(*args, **values)
        source = values.get("regime_from", math.nan)
        if source != source:  # NaN: not a change bar
            return f"[{_NAMES[code]}] {text}"
        return (
            f"regime {_NAMES[int(source)]} -> {_NAMES[code]}: the {_NAMES[code]} parameter set "
            f"{self.sets[code]} stands {_WORDS.get(self.target, 'at ' + str(self.target))} "
            f"(its last signal, at today's values: {text})"
        )


class RegimeSwitch:
    """A built-in strategy run with a parameter set per regime (see the module's docstring)."""

    def __init__(self, params: StrategyParams, build: Callable[[StrategyParams], Strategy]) -> None:
        self.p = params
        base = params.__class__.model_validate(params.base_params())
        self.strategies: list[Strategy] = [build(base)]
        self.name = f"{self.strategies[0].name}_by_regime"
        keys = [base.model_dump_json()]
        self._set_of_code = [0]  # code 0 (unknown) -> the base set
        self._enabled = [True]
        self._described = ["(base parameters)"]
        for regime in REGIMES:
            chosen = params.regime_params(regime) if regime in params.by_regime else base
            key = chosen.model_dump_json()
            if key not in keys:
                keys.append(key)
                self.strategies.append(build(chosen))
            self._set_of_code.append(keys.index(key))
            self._enabled.append(params.regime_enabled(regime))
            block = {k: v for k, v in params.by_regime.get(regime, {}).items() if k != "enabled"}
            shown = ", ".join(f"{k}={v}" for k, v in block.items())
            self._described.append(f"({shown})" if shown else "(base parameters)")
        self.md: MarketData | None = None
        self._labels: tuple[int, int, np.ndarray, np.ndarray] | None = None

    def warmup(self) -> int:
        rule = self.p.regime_rule
        index = max(rule.trend_window + rule.slope_bars, rule.vol_window) + 1
        return max(index, *(s.warmup() for s in self.strategies))

    def attach_market(self, md: MarketData) -> None:
        """Read the regime index from ``md`` (and pass ``md`` on to sets that rank other symbols)."""
        from hflite.config import ConfigError

        if self.p.regime_index not in md.bars:
            raise ConfigError(
                f"config error: strategy.regime_index: {self.p.regime_index} is not loaded by this run; "
                f"add it to run.symbols or name it in [risk.regime] index (loaded: {', '.join(md.bars)})"
            )
        self.md = md
        self._labels = None
        for s in self.strategies:
            attach = getattr(s, "attach_market", None)
            if attach is not None:
                attach(md)

    def regimes(self, ts: np.ndarray) -> np.ndarray:
        """The regime code in force at each time (the index's bars known by then)."""
        if self.md is None:
            raise RuntimeError(
                "by_regime reads the regime index: call attach_market(md) first (hflite backtest and "
                "replay do)"
            )
        from hflite.ai.regime import RegimeConfig, rule_regimes

        b = self.md.bars[self.p.regime_index]
        got = self._labels
        if got is None or got[0] != b.n or got[1] != id(b.close):
            rule = self.p.regime_rule
            cfg = RegimeConfig(
                index=self.p.regime_index,
                trend_window=rule.trend_window,
                slope_bars=rule.slope_bars,
                vol_window=rule.vol_window,
                crisis_vol=rule.crisis_vol,
            )
            idx_ts = np.array(b.ts[: b.n], dtype=np.int64)
            labels = rule_regimes(pd.Series(b.close[: b.n], dtype=float), rule.bars_per_year, cfg)
            got = (b.n, id(b.close), labels.to_numpy(dtype=object), idx_ts)
            self._labels = got
        return regime_codes_at(got[2], got[3], ts)

    def signals(self, bars: BarArrays) -> SignalSet:
        if bars.ts is None:
            raise ValueError("by_regime needs the bars' times (BarArrays.ts) to look up the regime")
        n = len(bars)
        code = self.regimes(bars.ts)
        sid = np.asarray(self._set_of_code, dtype=np.int64)[code]  # the set in force at each bar
        enabled = np.asarray(self._enabled, dtype=bool)[code]
        sigs = [s.signals(bars) for s in self.strategies]
        rows = np.arange(n)

        def pick(arrays: list[np.ndarray]) -> np.ndarray:
            return np.vstack(arrays)[sid, rows]

        target = pick([s.target for s in sigs])
        config = sid * 2 + enabled
        change = np.zeros(n, dtype=bool)
        change[1:] = config[1:] != config[:-1]
        at = np.flatnonzero(change & np.isnan(target))
        target[at] = np.vstack([_ffill(s.target) for s in sigs])[sid[at], at]  # the set's standing target
        target[~enabled & (target != 0)] = np.nan
        regime_from = np.full(n, np.nan)
        regime_from[1:][change[1:]] = code[:-1][change[1:]]
        values = {
            name: pick([s.values.get(name, np.full(n, np.nan)) for s in sigs])
            for name in dict.fromkeys(k for s in sigs for k in s.values)
        }
        values["regime"] = code.astype(float)
        values["regime_from"] = regime_from
        sized = any(s.size is not None for s in sigs)
        return SignalSet(
            target=target,
            atr=pick([s.atr for s in sigs]),
            exits=sigs[0].exits,
            values=values,
            reasons=self._reasons(sigs),
            size=pick([np.ones(n) if s.size is None else s.size for s in sigs]) if sized else None,
        )

    def _reasons(self, sigs: list[SignalSet]) -> dict[int, str]:
        out: dict[int, str] = {}
        for t in (1, 0, -1):
            by_code = tuple(sigs[s].reasons.get(t, "target {target}") for s in self._set_of_code)
            out[t] = RegimeReason(by_code, tuple(self._described), t)
        return out
