"""The ``ai_ensemble`` strategy: the brain's combined score and confidence as target positions.

The brain (``hflite.ai.brain``) is attached before the run; ``signals`` then reads the decision row
of each bar by its availability time. The target follows a hysteresis over the symbol's decision
rows, oldest first, so the output at bar k depends on decisions at or before k only (each itself
point-in-time):

- score >= ``enter`` with confidence >= ``min_confidence``: be long (+1);
- with ``allow_short``, score <= -``enter`` with enough confidence: be short (-1);
- long and score <= ``exit``, or short and score >= -``exit``: be flat (0);
- otherwise keep the previous target.

Entries carry ``size = clip(confidence, min_size, 1)``: the risk gate's size times the conviction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hflite.domain.signal import Exits
from hflite.strategy import indicators as ta
from hflite.strategy.base import BarArrays, SignalSet
from hflite.strategy.builtin import AIEnsembleParams

if TYPE_CHECKING:
    from hflite.ai.brain import BrainResult

#: Decision columns quoted in every decision's values (and so in verdicts.csv and ``hflite explain``).
VALUE_COLUMNS = ("score", "confidence", "banker", "investor", "market", "prob_up")

_REASONS = {
    1: "AI ensemble {score:+.2f} >= enter (confidence {confidence:.2f}): banker {banker:+.2f}, "
    "investor {investor:+.2f}, market {market:+.2f}, P(up) {prob_up:.2f}",
    -1: "AI ensemble {score:+.2f} <= -enter (confidence {confidence:.2f}): banker {banker:+.2f}, "
    "investor {investor:+.2f}, market {market:+.2f}, P(up) {prob_up:.2f}",
    0: "AI ensemble {score:+.2f} at the exit level (confidence {confidence:.2f}): banker "
    "{banker:+.2f}, investor {investor:+.2f}, market {market:+.2f}, P(up) {prob_up:.2f}",
}


class AIEnsemble:
    """Targets from the AI ensemble (or, with ``score = "technical"``, the technical-only view)."""

    name = "ai_ensemble"

    def __init__(self, params: AIEnsembleParams) -> None:
        self.p = params
        self.brain: BrainResult | None = None
        self._cache: dict[str, np.ndarray] = {}

    def warmup(self) -> int:
        return self.p.atr_period + 1

    def attach(self, brain: BrainResult) -> None:
        """Give the strategy the brain's decisions (the run does this before the first bar)."""
        self.brain = brain
        self._cache.clear()

    def _frame(self, symbol: str) -> pd.DataFrame:
        if self.brain is None:
            raise RuntimeError(
                "ai_ensemble needs the brain's decisions: run it through `hflite backtest` or "
                "`hflite replay` (they build the features, models and views first)"
            )
        frame = self.brain.decisions.get(symbol)
        if frame is None:
            raise RuntimeError(f"ai_ensemble: the brain has no decisions for {symbol!r}")
        return frame

    def _targets(self, symbol: str) -> np.ndarray:
        """The hysteresis over every decision row of the symbol (cached: rows never change)."""
        if symbol not in self._cache:
            frame, p = self._frame(symbol), self.p
            technical = p.score == "technical"
            score = frame["technical_score" if technical else "score"].to_numpy(dtype=float)
            conf = frame["technical_conf" if technical else "confidence"].to_numpy(dtype=float)
            self._cache[symbol] = hysteresis(score, conf, p.enter, p.exit, p.min_confidence, p.allow_short)
        return self._cache[symbol]

    def signals(self, bars: BarArrays) -> SignalSet:
        p = self.p
        if bars.ts is None or not bars.symbol:
            raise RuntimeError("ai_ensemble needs each bar's time and symbol (BarArrays.ts, .symbol)")
        frame = self._frame(bars.symbol)
        known = frame.index.as_unit("ns").asi8
        ts = np.asarray(bars.ts, dtype=np.int64)
        pos = np.minimum(np.searchsorted(known, ts), max(len(known) - 1, 0))
        ok = (len(known) > 0) & (known[pos] == ts) if len(known) else np.zeros(len(ts), bool)
        rows = pos[ok]

        def col(values: np.ndarray) -> np.ndarray:
            out = np.full(len(ts), np.nan)
            out[ok] = values[rows]
            return out

        technical = p.score == "technical"
        values = {name: col(frame[name].to_numpy(dtype=float)) for name in VALUE_COLUMNS}
        if technical:
            values["score"] = col(frame["technical_score"].to_numpy(dtype=float))
            values["confidence"] = col(frame["technical_conf"].to_numpy(dtype=float))
        return SignalSet(
            target=col(self._targets(bars.symbol)),
            atr=ta.atr(bars.high, bars.low, bars.close, p.atr_period),
            exits=Exits(stop_atr=p.stop_atr, take_profit_atr=p.take_profit_atr),
            values=values,
            reasons=dict(_REASONS),
            size=np.clip(np.nan_to_num(values["confidence"]), p.min_size, 1.0),
        )


def hysteresis(
    score: np.ndarray, conf: np.ndarray, enter: float, exit_: float, min_conf: float, allow_short: bool
) -> np.ndarray:
    """Target per row (NaN where the score is unknown), carried forward between thresholds."""
    out = np.full(len(score), np.nan)
    state = 0.0
    for k in range(len(score)):
        s, c = score[k], conf[k]
        if s != s:
            continue
        if s >= enter and c >= min_conf:
            state = 1.0
        elif allow_short and s <= -enter and c >= min_conf:
            state = -1.0
        elif (state > 0 and s <= exit_) or (state < 0 and s >= -exit_):
            state = 0.0
        out[k] = state
    return out
