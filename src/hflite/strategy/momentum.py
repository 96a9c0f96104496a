"""Momentum with volatility-scaled size: time-series (``tsmom``) and cross-sectional (``xsmom``).

``tsmom`` follows Moskowitz, Ooi & Pedersen (2012), "Time series momentum", Journal of Financial
Economics 104(2), 228-250: hold an asset long when its own trailing 12-month return is positive and
short (here: flat unless ``allow_short``) when it is negative, each position scaled to a volatility
target with an ex-ante EWMA volatility (centre of mass 60 days; the paper targets 40% a year per
asset).

``xsmom`` follows Jegadeesh & Titman (1993), "Returns to buying winners and selling losers",
Journal of Finance 48(1), 65-91: rank the universe by trailing return and hold the winners; sized
by volatility as in the trend-following portfolios of Hurst, Ooi & Pedersen (2017), "A century of
evidence on trend-following investing", Journal of Portfolio Management 44(1).

How the engine uses what these strategies say (``hflite.engine.core``):

- The target is a standing position (+1 / 0 / -1 on every bar once known), not an event. The engine
  acts only on a bar whose target differs from the symbol's current direction, so a target equal to
  the position does nothing, and re-issuing it every N bars cannot resize anything. A standing target
  re-enters on the next bar after a protective stop or a rejected entry while the signal still holds
  (the run's protections, e.g. the stop cool-down, apply as to any entry).
- ``rebalance`` is how often the rule is re-read: ``"bar"`` every bar, ``"week"`` / ``"month"`` on
  the first bar of each calendar week / month (UTC time the bar became known; the paper rebalances
  monthly). Between those bars the target keeps the last decision.
- ``size`` is read once, on the entry bar: the risk gate sizes the entry by ATR (``risk_pct`` of
  equity over a ``stop_atr`` x ATR stop) and multiplies that by ``size = min(1, target_vol /
  realised_vol)``. ATR sizing already makes each entry risk the same share of equity, so the
  volatility target acts as a cap: it shrinks entries only in assets or periods more volatile than
  ``target_vol`` (with the paper's 40%: crypto and crises), the part of the paper's scaling the ATR
  rule does not do.
- A position is never resized afterwards (the engine has no resize order): a winner grows with its
  price and a volatility spike does not shrink it, where the paper rebalances to the target every
  month. ``time_stop_bars`` (default 21, about a month of daily bars) is the way to get close: the
  engine closes the position after that many bars and, the target still standing, re-opens it on the
  same bar at the current size (a full round trip, with its fees and slippage, in place of the
  paper's adjustment). 0 holds until the signal turns: on the sample, a bitcoin position opened in
  January 2016 at 0.77 of the risk size grew to over half of the equity by December 2017 and lost
  60% of that before the signal turned in August 2018.
- ``stop_atr`` defaults to 0 (no protective stop, as in the papers): the position ends when the signal
  turns. The gate still sizes entries over ``risk.stop_atr`` ATRs.
- Each decision's reason quotes the return (and rank) of the review bar the standing target was
  decided on, and the volatility and size of the entry bar.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from hflite.domain.signal import Exits
from hflite.strategy import indicators as ta
from hflite.strategy.base import BarArrays, SignalSet, _ffill
from hflite.strategy.params import StrategyParams

if TYPE_CHECKING:
    from hflite.engine.market import MarketData

NS_PER_DAY = 86_400_000_000_000


class MomentumParams(StrategyParams):
    """What both momentum strategies share: the trailing return, the re-read rhythm, the sizing."""

    lookback: int = Field(252, ge=2, le=5000, description="bars of the trailing return (252 = 12 months)")
    skip: int = Field(0, ge=0, le=500, description="most recent bars left out of the return (21 = a month)")
    rebalance: Literal["bar", "week", "month"] = Field(
        "month", description="re-read the rule every bar, or on the first bar of each week / month"
    )
    target_vol: float = Field(0.40, gt=0, le=5, description="annualised volatility target (0.40 = 40%)")
    vol_estimator: Literal["ewma", "rolling"] = "ewma"
    vol_com: float = Field(60.0, gt=0, le=2000, description="EWMA centre of mass in bars (the paper: 60)")
    vol_window: int = Field(
        60, ge=5, le=2000, description="rolling window in bars; with ewma the returns needed first"
    )
    bars_per_year: float = Field(252.0, gt=0, le=1e6, description="annualises the daily volatility")
    stop_atr: float = Field(0.0, ge=0, le=50, description="protective stop in ATRs (0 = none, as the paper)")
    time_stop_bars: int = Field(
        21, ge=0, le=10000, description="close after N bars (0 = never); the standing target re-enters"
    )

    def warmup_bars(self) -> int:
        """The trailing return's bars, and enough history for the volatility estimate not to depend
        on where the history starts: the EWMA's weight on returns older than this is below 0.1%."""
        vol = self.vol_window
        if self.vol_estimator == "ewma":
            vol = max(vol, math.ceil(math.log(1e-3) / math.log(self.vol_com / (1.0 + self.vol_com))))
        return max(self.lookback + self.skip, vol, self.atr_period) + 1


class TSMomParams(MomentumParams):
    """``tsmom``: long while the trailing return is positive; flat (short with allow_short) otherwise."""


class XSMomParams(MomentumParams):
    """``xsmom``: hold the ``top_n`` best trailing returns of the run's symbols, until one drops out
    of the top ``top_n + buffer``."""

    skip: int = Field(21, ge=0, le=500, description="most recent bars left out (21: the usual 12-1 momentum)")
    top_n: int = Field(3, ge=1, le=1000, description="how many winners to hold")
    buffer: int = Field(1, ge=0, le=1000, description="kept while ranked within top_n + buffer")
    positive_only: bool = Field(
        False, description="hold a winner only while its own trailing return is positive (dual momentum)"
    )


# -- shared pieces -----------------------------------------------------------------------------------
def trailing_return(close: np.ndarray, lookback: int, skip: int = 0) -> np.ndarray:
    """``close[k - skip] / close[k - skip - lookback] - 1`` at each bar k (NaN until known)."""
    n = len(close)
    out = np.full(n, np.nan)
    first = lookback + skip
    if n > first:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[first:] = close[lookback : n - skip] / close[: n - first] - 1.0
    return out


def realised_vol(
    close: np.ndarray, estimator: str, com: float, window: int, bars_per_year: float
) -> np.ndarray:
    """Annualised volatility of the simple returns up to each bar: an EWMA variance around the EWMA
    mean (``com`` bars centre of mass, as the paper) once ``window`` returns exist, or the rolling
    standard deviation of the last ``window`` returns. Both are running computations, so the value
    at bar k is the same whatever follows it."""
    r = np.full(len(close), np.nan)
    if len(close) > 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            r[1:] = close[1:] / close[:-1] - 1.0
    s = pd.Series(r)
    if estimator == "ewma":
        var = s.ewm(com=com, min_periods=window).var(bias=True).to_numpy()
        return np.sqrt(var * bars_per_year)
    return s.rolling(window, min_periods=window).std().to_numpy() * math.sqrt(bars_per_year)


def vol_size(vol: np.ndarray, target_vol: float) -> np.ndarray:
    """``min(1, target_vol / vol)``: the conviction that scales the risk gate's size (NaN unknown)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(vol > 0, np.minimum(1.0, target_vol / vol), np.where(vol == 0, 1.0, np.nan))


def decision_bars(ts: np.ndarray | None, n: int, rebalance: str) -> np.ndarray:
    """Bars where the rule is re-read: every bar, or the first bar of each UTC calendar week (Monday)
    or month; bar 0 always is (nothing precedes it)."""
    if rebalance == "bar":
        return np.ones(n, dtype=bool)
    if ts is None:
        raise ValueError(f"rebalance = {rebalance!r} needs the bars' times (BarArrays.ts)")
    t = np.asarray(ts, dtype=np.int64)[:n]
    if rebalance == "week":
        key = (t // NS_PER_DAY + 3) // 7  # 1970-01-01 was a Thursday: +3 starts weeks on Monday
    else:
        key = t.astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64)
    out = np.ones(n, dtype=bool)
    out[1:] = key[1:] != key[:-1]
    return out


def _held(enter: np.ndarray, leave: np.ndarray, decide: np.ndarray) -> np.ndarray:
    """1.0 from a decision bar where ``enter`` holds until one where ``leave`` does, else 0.0; NaN
    before the first decision (``enter`` and ``leave`` are never both true)."""
    ev = np.full(len(enter), np.nan)
    ev[decide & leave] = 0.0
    ev[decide & enter] = 1.0
    return _ffill(ev)


def as_of(values: np.ndarray, decide: np.ndarray) -> np.ndarray:
    """Each bar's value as of the last decision bar at or before it (what the standing target was
    decided on: the reason quotes it, not today's value)."""
    out = np.full(len(values), np.nan)
    out[decide] = values[decide]
    return _ffill(out)


def _exits(p: MomentumParams) -> Exits:
    return Exits(stop_atr=p.stop_atr, take_profit_atr=p.take_profit_atr, time_stop_bars=p.time_stop_bars)


def _return_words(p: MomentumParams) -> str:
    skip = f", skipping the last {p.skip}" if p.skip else ""
    every = {"bar": "", "week": "weekly review: ", "month": "monthly review: "}[p.rebalance]
    return f"{every}{p.lookback}-bar return{skip}"


def _sizing_words(p: MomentumParams) -> str:
    return f"at {{size:.2f}} of the risk size (volatility {{vol:.1%}}, target {p.target_vol:.0%})"


# -- tsmom ---------------------------------------------------------------------------------------------
class TSMom:
    """Time-series momentum (Moskowitz, Ooi & Pedersen 2012): the sign of the symbol's own trailing
    return, held between re-reads, sized by ``min(1, target_vol / realised vol)``."""

    name = "tsmom"

    def __init__(self, params: TSMomParams) -> None:
        self.p = params

    def warmup(self) -> int:
        return self.p.warmup_bars()

    def signals(self, bars: BarArrays) -> SignalSet:
        p, c, n = self.p, bars.close, len(bars)
        mom = trailing_return(c, p.lookback, p.skip)
        vol = realised_vol(c, p.vol_estimator, p.vol_com, p.vol_window, p.bars_per_year)
        size = vol_size(vol, p.target_vol)
        known = ~np.isnan(mom) & ~np.isnan(size)
        side = np.full(n, np.nan)
        side[known] = 0.0
        side[known & (mom > 0)] = 1.0
        if p.allow_short:
            side[known & (mom < 0)] = -1.0
        decided = np.full(n, np.nan)
        decide = decision_bars(bars.ts, n, p.rebalance)
        decided[decide] = side[decide]
        words, sizing = _return_words(p), _sizing_words(p)
        return SignalSet(
            target=_ffill(decided),
            atr=ta.atr(bars.high, bars.low, c, p.atr_period),
            exits=_exits(p),
            values={"momentum": as_of(mom, decide), "vol": vol, "size": size},
            reasons={
                1: f"{words} {{momentum:+.2%}} is positive: long {sizing}",
                0: f"{words} {{momentum:+.2%}} is not positive: flat",
                -1: f"{words} {{momentum:+.2%}} is negative: short {sizing}",
            },
            size=size,
        )


# -- xsmom ---------------------------------------------------------------------------------------------
class XSMom:
    """Cross-sectional momentum (Jegadeesh & Titman 1993): each bar, rank the run's traded symbols by
    trailing return on the closes known at that bar's time; hold the ``top_n`` (short the bottom
    ``top_n`` with ``allow_short``; long wins when a small universe puts a symbol in both), keep a
    holding while it ranks within ``top_n + buffer``.

    Reads other symbols through ``attach_market(md)``: for bar k it uses, of each other symbol, only
    the bars with a time <= ``bars.ts[k]`` among the ``n`` known so far, so a backtest (whole history)
    and the live runtime (history so far, every bar of a time appended before any signal) agree.
    Ties rank by symbol name. Symbols without ``lookback + skip`` bars yet are not ranked. Lookbacks
    count each symbol's own bars (crypto's 252 daily bars span 252 days, a stock's about a year).
    """

    name = "xsmom"

    def __init__(self, params: XSMomParams) -> None:
        self.p = params
        self.md: MarketData | None = None
        self._mom: dict[str, tuple[int, int, np.ndarray]] = {}

    def warmup(self) -> int:
        return self.p.warmup_bars()

    def attach_market(self, md: MarketData) -> None:
        """Give the strategy the run's market data (the universe is ``md.traded``)."""
        from hflite.config import ConfigError

        if self.p.top_n >= len(md.traded):
            raise ConfigError(
                f"config error: strategy.top_n: {self.p.top_n} must be smaller than the universe "
                f"({len(md.traded)} traded symbols), or every symbol is a winner"
            )
        self.md = md
        self._mom.clear()

    def _momentum(self, sym: str) -> tuple[np.ndarray, np.ndarray]:
        """(times, trailing return) of ``sym``'s known bars, recomputed when more bars arrive."""
        assert self.md is not None
        b = self.md.bars[sym]
        got = self._mom.get(sym)
        if got is None or got[0] != b.n or got[1] != id(b.close):
            got = (b.n, id(b.close), trailing_return(b.close[: b.n], self.p.lookback, self.p.skip))
            self._mom[sym] = got
        return b.ts[: b.n], got[2]

    def ranks(self, bars: BarArrays, mom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rank from the top, number ranked) of the symbol at each bar; NaN where it is not ranked."""
        if self.md is None:
            raise RuntimeError(
                "xsmom ranks the run's symbols: call attach_market(md) first (hflite backtest and replay do)"
            )
        if bars.ts is None:
            raise ValueError("xsmom needs the bars' times (BarArrays.ts) to line up the symbols")
        ts = np.asarray(bars.ts, dtype=np.int64)
        better = np.zeros(len(ts), dtype=np.int64)
        ranked = np.ones(len(ts), dtype=np.int64)
        for sym in self.md.traded:
            if sym == bars.symbol:
                continue
            their_ts, their_mom = self._momentum(sym)
            j = np.searchsorted(their_ts, ts, side="right") - 1
            other = np.where(j >= 0, their_mom[np.maximum(j, 0)] if len(their_mom) else np.nan, np.nan)
            ahead = (other > mom) | ((other == mom) & (sym < bars.symbol))
            better += ahead
            ranked += ~np.isnan(other)
        own = ~np.isnan(mom)
        return np.where(own, better + 1.0, np.nan), np.where(own, ranked.astype(float), np.nan)

    def signals(self, bars: BarArrays) -> SignalSet:
        p, c, n = self.p, bars.close, len(bars)
        mom = trailing_return(c, p.lookback, p.skip)
        vol = realised_vol(c, p.vol_estimator, p.vol_com, p.vol_window, p.bars_per_year)
        size = vol_size(vol, p.target_vol)
        rank, ranked = self.ranks(bars, mom)
        bottom = ranked + 1.0 - rank
        known = ~np.isnan(rank) & ~np.isnan(size)
        decide = decision_bars(bars.ts, n, p.rebalance) & known
        keep = p.top_n + p.buffer
        pos_ok = mom > 0 if p.positive_only else np.ones(n, dtype=bool)
        neg_ok = mom < 0 if p.positive_only else np.ones(n, dtype=bool)
        long_held = _held((rank <= p.top_n) & pos_ok, (rank > keep) | ~pos_ok, decide)
        target = np.where(long_held == 1.0, 1.0, 0.0)
        if p.allow_short:
            short_held = _held((bottom <= p.top_n) & neg_ok, (bottom > keep) | ~neg_ok, decide)
            target[(short_held == 1.0) & (long_held != 1.0)] = -1.0
        target[np.isnan(long_held)] = np.nan
        words, sizing = _return_words(p), _sizing_words(p)
        ranks = "ranks {rank:.0f} of {ranked:.0f}"
        positive = " or is not positive" if p.positive_only else ""
        out_of = f"the top {keep} or the bottom {keep}" if p.allow_short else f"the top {keep}"
        return SignalSet(
            target=target,
            atr=ta.atr(bars.high, bars.low, c, p.atr_period),
            exits=_exits(p),
            values={
                "momentum": as_of(mom, decide),
                "rank": as_of(rank, decide),
                "ranked": as_of(ranked, decide),
                "vol": vol,
                "size": size,
            },
            reasons={
                1: f"{words} {{momentum:+.2%}} {ranks} (enter in the top {p.top_n}, hold in the top "
                f"{keep}): long {sizing}",
                0: f"{words} {{momentum:+.2%}} {ranks}: not in {out_of}{positive}: flat",
                -1: f"{words} {{momentum:+.2%}} {ranks} (enter in the bottom {p.top_n}, hold in the bottom "
                f"{keep}): short {sizing}",
            },
            size=size,
        )
