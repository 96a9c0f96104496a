"""Signals for a run: the strategy over each symbol's history, checked for shape and values.

A strategy that raises is re-run on shorter histories to find the first bar it fails on, so the
error names the symbol and the bar.
"""

from __future__ import annotations

import numpy as np

from hflite.engine.core import StrategyError
from hflite.engine.market import MarketData
from hflite.strategy.base import BarArrays, SignalSet, Strategy, attach_market


def _when(ts: np.ndarray, k: int | None) -> str:
    if k is None:
        return "unknown bar"
    import pandas as pd

    return str(pd.Timestamp(int(ts[k]), unit="ns", tz="UTC"))


def compute_signals(strategy: Strategy, md: MarketData) -> dict[str, SignalSet]:
    """Signals per traded symbol over its whole history, checked for shape and values. A strategy
    that reads other symbols (``MarketAware``) is attached to ``md`` first, so it ranks or looks up
    exactly the data these signals are computed on."""
    attach_market(strategy, md)
    out = {}
    for sym in md.traded:
        bars = md.bars[sym]
        out[sym] = checked_signals(strategy, sym, bars.arrays(), bars.ts)
    return out


def checked_signals(strategy: Strategy, sym: str, arrays: BarArrays, ts: np.ndarray) -> SignalSet:
    """Run the strategy; on an exception find the first bar it fails on, and name it."""
    n = len(arrays)
    try:
        sig = strategy.signals(arrays)
    except Exception as exc:
        k = _first_failing_bar(strategy, arrays, n)
        when = _when(ts, k)
        raise StrategyError(
            f"strategy {strategy.name!r} raised on {sym} at bar {k} ({when}): {type(exc).__name__}: {exc}"
        ) from exc
    if len(sig.target) != n or len(sig.atr) != n:
        raise StrategyError(
            f"strategy {strategy.name!r} returned {len(sig.target)} targets for {n} bars of {sym}"
        )
    if sig.size is not None and len(sig.size) != n:
        raise StrategyError(
            f"strategy {strategy.name!r} returned {len(sig.size)} sizes for {n} bars of {sym}"
        )
    bad = ~np.isnan(sig.target) & ~np.isin(sig.target, (-1.0, 0.0, 1.0))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise StrategyError(
            f"strategy {strategy.name!r} gave target {float(sig.target[k])!r} for {sym} at bar {k} "
            f"({_when(ts, k)}); targets must be -1, 0, 1 or NaN"
        )
    return sig


def _first_failing_bar(strategy: Strategy, arrays: BarArrays, n: int) -> int | None:
    """Binary search for the shortest history on which the strategy raises."""
    lo, hi = 1, n
    try:
        strategy.signals(arrays.head(n))
        return None
    except Exception:  # noqa: S110 - expected: we are locating the failure
        pass
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            strategy.signals(arrays.head(mid))
            lo = mid + 1
        except Exception:
            hi = mid
    return lo - 1
