"""Causal per-bar risk features of one symbol: liquidity, volatility, circuit breakers, regime.

Every value at bar k uses bars <= k only. Features are computed on demand, block by block: the
values of block j (bars [j*BLOCK, (j+1)*BLOCK)) are always computed from the data starting at
``max(0, j*BLOCK - lookback)``, whether the whole history is there (backtest) or bars arrive one at
a time (replay, live). Rolling statistics accumulate from where they start, so a fixed start per
block is what makes both modes give the same numbers to the last bit.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hflite.domain.instrument import Instrument, VolumeUnit
from hflite.risk.limits import Regime, RegimeLimits, RiskLimits

if TYPE_CHECKING:
    from hflite.engine.market import SymbolBars

BLOCK = 2048

#: Regime codes stored in the ``regime`` column.
REGIME_CODES: dict[int, Regime | None] = {
    0: None,
    1: Regime.BULL,
    2: Regime.BEAR,
    3: Regime.SIDEWAYS,
    4: Regime.CRISIS,
}
#: Bits of the ``trip`` column: which per-symbol breaker tripped on the bar.
TRIP_MOVE, TRIP_VOLUME, TRIP_VOL = 1, 2, 4

COLUMNS = (
    "vol_ratio",
    "vol_mult",
    "z",
    "vspike",
    "adv_quote",
    "avg_units",
    "move_pct",
    "ann_vol",
    "regime",
    "trip",
    "last_trip",
    "index_trip",
    "last_index_trip",
)


def lookback(limits: RiskLimits) -> int:
    b, r = limits.breakers, limits.regime
    return (
        max(
            limits.vol_history + limits.vol_window,
            b.sigma_window,
            b.volume_window,
            limits.liquidity_window,
            r.trend_window + r.slope_bars,
            r.vol_window,
        )
        + 2
    )


class SymbolFeatures:
    """The features of one symbol's bars, grown on demand (``ensure(k)``)."""

    def __init__(self, limits: RiskLimits, bars: SymbolBars, bars_per_year: float = 252.0) -> None:
        self.limits = limits
        self.bars = bars
        self.inst: Instrument = bars.instrument
        self.bars_per_year = bars_per_year
        self.lookback = lookback(limits)
        self.done = 0
        self.cols: dict[str, np.ndarray] = {c: np.empty(0) for c in COLUMNS}

    def ensure(self, k: int) -> None:
        """Compute every bar up to and including k (bars must exist up to k)."""
        if k < self.done:
            return
        end = k + 1
        self._grow(end)
        a = self.done
        while a < end:
            j = a // BLOCK
            b = min(end, (j + 1) * BLOCK)
            self._compute(a, b, max(0, j * BLOCK - self.lookback))
            a = b
        self.done = end

    def _grow(self, n: int) -> None:
        size = len(self.cols["z"])
        if size >= n:
            return
        new = max(n, 2 * size, 256)
        for name, arr in self.cols.items():
            out = np.full(new, -1.0 if name.startswith("last") else np.nan)
            out[:size] = arr
            self.cols[name] = out

    def _compute(self, a: int, b: int, s0: int) -> None:
        lim, brk, reg = self.limits, self.limits.breakers, self.limits.regime
        bars = self.bars
        c = pd.Series(bars.close[s0:b])
        v = pd.Series(bars.volume[s0:b])
        with np.errstate(divide="ignore", invalid="ignore"):
            ret = np.log(c / c.shift(1))
            vol = ret.rolling(lim.vol_window, min_periods=lim.vol_window).std()
            vol_med = vol.rolling(lim.vol_history, min_periods=lim.vol_history).median()
            vol_ratio = (vol / vol_med).to_numpy()
            prev_sd = ret.rolling(brk.sigma_window, min_periods=brk.sigma_window).std().shift(1)
            z = (ret.abs() / prev_sd).to_numpy()
            prev_v = v.rolling(brk.volume_window, min_periods=brk.volume_window).mean().shift(1)
            vspike = (v / prev_v).to_numpy()
            if self.inst.volume_unit is VolumeUnit.NONE:
                adv = np.full(len(c), np.nan)
                units = adv
            elif self.inst.volume_unit is VolumeUnit.QUOTE:
                adv = v.rolling(lim.liquidity_window, min_periods=lim.liquidity_window).mean().to_numpy()
                units = (v / c).rolling(lim.liquidity_window, min_periods=lim.liquidity_window).mean()
                units = units.to_numpy()
            else:
                adv = (c * v).rolling(lim.liquidity_window, min_periods=lim.liquidity_window).mean()
                adv = adv.to_numpy()
                units = v.rolling(lim.liquidity_window, min_periods=lim.liquidity_window).mean().to_numpy()
            move = ((c / c.shift(1) - 1) * 100).to_numpy()
        regime, ann = regime_codes(c, ret, reg, self.bars_per_year)
        vol_mult = np.clip(1.0 / vol_ratio, lim.vol_floor, 1.0)
        vol_mult[np.isnan(vol_ratio)] = 1.0
        trip = np.zeros(len(c))
        if brk.sigma:
            trip += np.where(z > brk.sigma, TRIP_MOVE, 0)
        if brk.volume_spike and self.inst.volume_unit is not VolumeUnit.NONE:
            trip += np.where(vspike > brk.volume_spike, TRIP_VOLUME, 0)
        if brk.vol_ratio:
            trip += np.where(vol_ratio > brk.vol_ratio, TRIP_VOL, 0)
        index_trip = np.where(np.abs(move) >= brk.index_move_pct, 1.0, 0.0) if brk.index_move_pct else None
        sl = slice(a - s0, b - s0)
        out = self.cols
        for name, arr in (
            ("vol_ratio", vol_ratio),
            ("vol_mult", vol_mult),
            ("z", z),
            ("vspike", vspike),
            ("adv_quote", adv),
            ("avg_units", units),
            ("move_pct", move),
            ("ann_vol", ann),
            ("regime", regime),
            ("trip", trip),
        ):
            out[name][a:b] = arr[sl]
        _carry_last(out["last_trip"], out["trip"], a, b)
        if index_trip is not None:
            out["index_trip"][a:b] = index_trip[sl]
            _carry_last(out["last_index_trip"], out["index_trip"], a, b)
        else:
            out["index_trip"][a:b] = 0.0


def _carry_last(last: np.ndarray, flags: np.ndarray, a: int, b: int) -> None:
    """last[k] = the latest bar <= k whose flag is set (or -1), for k in [a, b)."""
    idx = np.where(flags[a:b] > 0, np.arange(a, b, dtype=float), -1.0)
    if a > 0:
        idx[0] = max(idx[0], last[a - 1])
    np.maximum.accumulate(idx, out=idx)
    last[a:b] = idx


def breaker_reason(f: SymbolFeatures, k: int) -> str:
    """Why the symbol's breaker holds at bar k ("" when it does not)."""
    lt = f.cols["last_trip"][k]
    brk = f.limits.breakers
    if lt < 0 or k - lt >= brk.cooldown_bars:
        return ""
    j = int(lt)
    bits = int(f.cols["trip"][j])
    what = []
    if bits & TRIP_MOVE:
        what.append(f"a {f.cols['z'][j]:.1f}-sigma move (limit {brk.sigma:g})")
    if bits & TRIP_VOLUME:
        what.append(f"volume {f.cols['vspike'][j]:.1f}x its average (limit {brk.volume_spike:g})")
    if bits & TRIP_VOL:
        what.append(f"volatility {f.cols['vol_ratio'][j]:.1f}x its median (limit {brk.vol_ratio:g})")
    ts = pd.Timestamp(int(f.bars.ts[j]), tz="UTC")
    return (
        f"circuit breaker on {f.inst.symbol}: {' and '.join(what)} at {ts:%Y-%m-%d %H:%M}; "
        f"paused {brk.cooldown_bars} bars"
    )


def market_reason(f: SymbolFeatures, k: int) -> str:
    """Why the market-wide breaker (on the index ``f``) holds at index bar k ("" when it does not)."""
    lt = f.cols["last_index_trip"][k]
    brk = f.limits.breakers
    if lt < 0 or k - lt >= brk.index_cooldown_bars:
        return ""
    j = int(lt)
    ts = pd.Timestamp(int(f.bars.ts[j]), tz="UTC")
    return (
        f"market-wide breaker: {f.inst.symbol} moved {f.cols['move_pct'][j]:+.1f}% on {ts:%Y-%m-%d} "
        f"(limit {brk.index_move_pct:g}%); paused {brk.index_cooldown_bars} bars"
    )


def regime_codes(
    close: pd.Series, log_ret: pd.Series, reg: RegimeLimits, bars_per_year: float
) -> tuple[np.ndarray, np.ndarray]:
    """Regime codes (see ``REGIME_CODES``) and annualised volatility (%) of one close series, by the
    trend-and-volatility rule of ``rule_regime``; causal (rolling windows over past bars only)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        sma = close.rolling(reg.trend_window, min_periods=reg.trend_window).mean()
        slope = (sma - sma.shift(reg.slope_bars)).to_numpy()
        ann = log_ret.rolling(reg.vol_window, min_periods=reg.vol_window).std().to_numpy()
        ann = ann * math.sqrt(bars_per_year) * 100
    c, sma_a = close.to_numpy(), sma.to_numpy()
    regime = np.zeros(len(c))
    known = ~np.isnan(slope) & ~np.isnan(ann)
    regime[known] = 3.0
    regime[known & (c > sma_a) & (slope > 0)] = 1.0
    regime[known & (c < sma_a) & (slope < 0)] = 2.0
    regime[known & (ann >= reg.crisis_vol)] = 4.0
    return regime, ann


def rule_regime(f: SymbolFeatures, k: int) -> Regime | None:
    """The default regime rule on the index at bar k: crisis when annualised volatility over
    ``regime.vol_window`` bars is at least ``regime.crisis_vol``; else bull when the close is above
    its ``trend_window`` SMA and that SMA rose over ``slope_bars``; bear when below and falling;
    sideways otherwise. None until the windows are full."""
    return REGIME_CODES[int(f.cols["regime"][k])]
