"""The Strategy port: per-symbol signals computed from trailing data only.

A strategy maps one symbol's bars (oldest first) to a ``SignalSet``. The engine calls it once over
the whole history in a backtest and on the history-so-far at every bar in replay and live runs, so
every output at bar k must depend on bars <= k only; ``tests/test_strategies.py`` checks this by
comparing each bar's signal with the signal computed on the history truncated at that bar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from hflite.domain.signal import Exits

if TYPE_CHECKING:
    from hflite.engine.market import MarketData


@dataclass(frozen=True, slots=True)
class BarArrays:
    """One symbol's bars as float64 arrays of equal length, oldest first. ``ts`` (int64 ns UTC, when
    each bar became known) and ``symbol`` are set by the engine for strategies that join other data
    (the AI ensemble); bar-only strategies ignore them."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    ts: np.ndarray | None = None
    symbol: str = ""

    def __len__(self) -> int:
        return len(self.close)

    def head(self, n: int) -> BarArrays:
        """The first ``n`` bars (what a live runtime has seen after n bars)."""
        ts = None if self.ts is None else self.ts[:n]
        return BarArrays(
            self.open[:n], self.high[:n], self.low[:n], self.close[:n], self.volume[:n], ts, self.symbol
        )


@dataclass(slots=True)
class SignalSet:
    """What a strategy wants, bar by bar.

    ``target[k]``: NaN = no instruction; +1 = be long, 0 = be flat, -1 = be short. The engine acts
    only when the target differs from the current direction. ``atr`` feeds sizing and stops;
    ``values`` are the named indicator values quoted in each decision's reason. ``size`` (optional,
    in [0, 1]) is the strategy's conviction: it scales the size the risk gate computes, never above it.
    """

    target: np.ndarray
    atr: np.ndarray
    exits: Exits
    values: dict[str, np.ndarray] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)  # target value -> template
    size: np.ndarray | None = None

    def reason(self, k: int) -> str:
        t = self.target.item(k)  # a Python scalar: cheaper to test than numpy's
        template = self.reasons.get(int(t), "target {target}") if t == t else ""
        vals = {name: float(arr.item(k)) for name, arr in self.values.items()}
        if "target" in template:  # quoted as numpy's scalar, as it always was
            return template.format(target=self.target[k], **vals)
        return template.format(target=t, **vals)


class Strategy(Protocol):
    name: str

    def signals(self, bars: BarArrays) -> SignalSet:
        """Signals for every bar of ``bars``; output at k uses bars[:k+1] only."""
        ...

    def warmup(self) -> int:
        """Bars needed before the first signal can appear."""
        ...


@runtime_checkable
class MarketAware(Protocol):
    """A strategy that reads more than its own symbol's bars (other symbols, an index): the run hands
    it the market data it steps through before the first signal (``attach_market``)."""

    def attach_market(self, md: MarketData) -> None:
        """Read other symbols from ``md``; at bar k of a symbol, only their bars with ts <= bars.ts[k]
        among the ``n`` known so far (``md`` grows bar by bar in the live runtime)."""
        ...


def attach_market(strategy: Strategy, md: MarketData) -> None:
    """Hand ``md`` to a strategy that reads beyond its own bars (no-op for the others)."""
    if isinstance(strategy, MarketAware):
        strategy.attach_market(md)


def crossings(fast: np.ndarray, slow: np.ndarray) -> np.ndarray:
    """+1 where ``fast`` crosses above ``slow``, -1 where below, 0 elsewhere.

    Tie rule: bars where the two are equal do not change the side; a cross needs the sign of
    (fast - slow) to flip from one strict side to the other (equal-then-back is not a cross).
    Bars where either input is NaN carry no side.
    """
    diff = fast - slow
    side = np.sign(diff)
    side[np.isnan(diff)] = np.nan
    side[side == 0] = np.nan
    # Carry the last strict side forward over ties, but not across the warm-up NaNs.
    valid = ~np.isnan(diff)
    carried = _ffill(side)
    carried[~valid] = np.nan
    prev = np.empty_like(carried)
    prev[0] = np.nan
    prev[1:] = carried[:-1]
    out = np.zeros(len(diff), dtype=np.int8)
    out[(carried == 1) & (prev == -1)] = 1
    out[(carried == -1) & (prev == 1)] = -1
    return out


def _ffill(a: np.ndarray) -> np.ndarray:
    idx = np.where(~np.isnan(a), np.arange(len(a)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = a[idx]
    if len(a) and math.isnan(a[0]):
        first = np.flatnonzero(~np.isnan(a))
        out[: first[0] if len(first) else len(a)] = np.nan
    return out


def onset(cond: np.ndarray) -> np.ndarray:
    """True on the bars where ``cond`` becomes true (false on the bar before, or first bar)."""
    prev = np.concatenate(([False], cond[:-1]))
    return cond & ~prev


def entry_exit_targets(
    long_entry: np.ndarray, short_entry: np.ndarray | None, long_exit: np.ndarray, short_exit: np.ndarray
) -> np.ndarray:
    """Targets from entry and exit conditions: +1 / -1 on entries; 0 on an exit condition that
    matches the side of the last entry (a long-exit bar does not close a short). NaN elsewhere."""
    n = len(long_entry)
    entries = np.full(n, np.nan)
    if short_entry is not None:
        entries[short_entry] = -1.0
    entries[long_entry] = 1.0
    last = _ffill(entries)
    target = entries.copy()
    exit_now = np.isnan(entries) & ((long_exit & (last == 1.0)) | (short_exit & (last == -1.0)))
    target[exit_now] = 0.0
    return target
