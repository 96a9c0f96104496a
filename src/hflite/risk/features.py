"""Causal per-bar risk features of one symbol: liquidity, volatility, circuit breakers, regime.

Every value at bar k uses bars <= k only. The values of block j (bars [j*BLOCK, (j+1)*BLOCK)) are
always computed from the data starting at ``max(0, j*BLOCK - lookback)``, whether the whole
history is there (backtest) or bars arrive one at a time (replay, live). Rolling statistics
accumulate from where they start, so a fixed start per block is what makes both modes give the
same numbers to the last bit.

Two ways to the same numbers:

- ``ensure(k)`` fills every column through bar k (a live runtime, reports, tests);
- a symbol whose whole history is known (``complete=True``: a backtest) computes each group of
  columns over every block at once the first time a rule reads it (all blocks' windows in one
  pass of the same rolling kernels), and the volatility ratio (a rolling median) only at the bars
  a verdict reads: the median of a window is the same order statistic however it is found.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

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

NAN = float("nan")


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


def trips_on(limits: RiskLimits, inst: Instrument) -> bool:
    """Whether any per-symbol breaker can trip on this instrument's bars."""
    brk = limits.breakers
    return bool(brk.sigma or brk.vol_ratio or (brk.volume_spike and inst.volume_unit is not VolumeUnit.NONE))


class _Segments:
    """Every block's data window [s0, b) laid end to end, so one rolling pass serves them all.

    A rolling kernel restarts its running sums at a window that shares nothing with the one before
    (pandas does since 1.3), so the windows of each segment get exactly the numbers a pass over
    that segment alone gives; ``_exact_layout`` checks this once per process and, on a pandas
    that differs, the segments are rolled one by one.
    """

    def __init__(self, segs: list[tuple[int, int, int]]) -> None:
        self.segs = segs  # (a, b, s0): block values [a, b) computed from data [s0, b)
        lengths = np.array([b - s0 for _, b, s0 in segs], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        total = int(lengths.sum())
        starts = np.repeat(self.offsets, lengths)
        self.pos = np.arange(total, dtype=np.int64) - starts  # position within its segment
        self.idx = self.pos + np.repeat(np.array([s0 for _, _, s0 in segs], dtype=np.int64), lengths)
        self.starts = starts
        self.lengths = lengths
        self._memo: dict[tuple[int, int, str], tuple[np.ndarray, np.ndarray]] = {}

    def take(self, x: np.ndarray) -> np.ndarray:
        return x.take(self.idx) if len(self.segs) > 1 else x[self.segs[0][2] : self.segs[0][1]]

    def shift(self, x: np.ndarray, n: int) -> np.ndarray:
        """``Series.shift(n)`` within each segment."""
        out = np.empty(len(x))
        out[:n] = NAN
        out[n:] = x[:-n] if n else x
        out[self.pos < n] = NAN
        return out

    def rolling(self, x: np.ndarray, window: int, how: str) -> np.ndarray:
        """``Series(segment).rolling(window, min_periods=window).<how>()`` of every segment (each
        statistic of an array once: the volume's average serves the spikes and the liquidity)."""
        key = (id(x), window, how)
        got = self._memo.get(key)
        if got is not None and got[0] is x:
            return got[1]
        out = self._rolling(x, window, how)
        self._memo[key] = (x, out)
        return out

    def _rolling(self, x: np.ndarray, window: int, how: str) -> np.ndarray:
        if len(self.segs) == 1:
            return getattr(pd.Series(x).rolling(window, min_periods=window), how)().to_numpy()
        if _exact_layout():
            bounds = _SegmentWindows(starts=self.starts, size=window)
            return getattr(pd.Series(x).rolling(bounds, min_periods=window), how)().to_numpy()
        out = np.empty(len(x))
        for off, n in zip(self.offsets.tolist(), self.lengths.tolist(), strict=True):
            seg = pd.Series(x[off : off + n])
            out[off : off + n] = getattr(seg.rolling(window, min_periods=window), how)().to_numpy()
        return out

    def scatter(self, out: np.ndarray, values: np.ndarray) -> None:
        """Write each segment's block values [a, b) into ``out``."""
        for (a, b, s0), off in zip(self.segs, self.offsets.tolist(), strict=True):
            out[a:b] = values[off + a - s0 : off + b - s0]


class _SegmentWindows(BaseIndexer):  # type: ignore[misc]
    """Trailing windows of ``size`` values that never reach back past their segment's start."""

    def get_window_bounds(
        self,
        num_values: int = 0,
        min_periods: int | None = None,
        center: bool | None = None,
        closed: str | None = None,
        step: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        end = np.arange(1, num_values + 1, dtype=np.int64)
        return np.maximum(self.starts, end - self.size), end


_EXACT: bool | None = None


def _exact_layout() -> bool:
    """Does one pass over segments laid end to end give each segment's own numbers, bit for bit?"""
    global _EXACT
    if _EXACT is None:
        rng = np.random.default_rng(7)
        x = np.exp(np.cumsum(rng.normal(0, 0.02, 900))) * 50
        x[[5, 300, 301, 650]] = NAN
        segs = [(0, 400, 0), (400, 700, 250), (700, 900, 520)]
        lay = _Segments(segs)
        vals = lay.take(x)
        ok = True
        for how in ("mean", "std", "median"):
            for w in (3, 20, 64):
                bounds = _SegmentWindows(starts=lay.starts, size=w)
                got = getattr(pd.Series(vals).rolling(bounds, min_periods=w), how)().to_numpy()
                for off, n in zip(lay.offsets.tolist(), lay.lengths.tolist(), strict=True):
                    ref = getattr(pd.Series(vals[off : off + n]).rolling(w, min_periods=w), how)()
                    ok = ok and _same(ref.to_numpy(), got[off : off + n])
        _EXACT = ok
    return _EXACT


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(((a == b) | (np.isnan(a) & np.isnan(b))).all())


class SymbolFeatures:
    """The features of one symbol's bars: every column through k with ``ensure(k)``; with
    ``complete=True`` (the whole history is there) also read per bar without filling them all."""

    def __init__(
        self, limits: RiskLimits, bars: SymbolBars, bars_per_year: float = 252.0, *, complete: bool = False
    ) -> None:
        self.limits = limits
        self.bars = bars
        self.inst: Instrument = bars.instrument
        self.bars_per_year = bars_per_year
        self.lookback = lookback(limits)
        self._trips = trips_on(limits, self.inst)  # limits are frozen, the instrument fixed
        self.done = 0
        self.cols: dict[str, np.ndarray] = {c: np.empty(0) for c in COLUMNS}
        self.complete = complete
        self._groups: dict[str, dict[str, np.ndarray]] = {}  # complete: group -> columns (all bars)
        self._layout: _Segments | None = None
        self._col: dict[str, np.ndarray] = {}  # complete: columns known over every bar
        self._vr_cache: dict[int, float] = {}  # complete: vol_ratio at the bars read so far

    # -- every column through k -------------------------------------------------------------------
    def ensure(self, k: int) -> None:
        """Compute every bar up to and including k (bars must exist up to k)."""
        if k < self.done:
            return
        end = k + 1
        self._grow(end)
        segs = []
        a = self.done
        while a < end:
            j = a // BLOCK
            b = min(end, (j + 1) * BLOCK)
            segs.append((a, b, max(0, j * BLOCK - self.lookback)))
            a = b
        self._compute(_Segments(segs))
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

    def _compute(self, lay: _Segments) -> None:
        lim, brk = self.limits, self.limits.breakers
        c, v = lay.take(self.bars.close), lay.take(self.bars.volume)
        ret, move = _returns(lay, c)
        vol = lay.rolling(ret, lim.vol_window, "std")
        vol_med = lay.rolling(vol, lim.vol_history, "median")
        with np.errstate(divide="ignore", invalid="ignore"):
            vol_ratio = vol / vol_med
        z, vspike = self._spikes(lay, c, v, ret)
        adv, units = self._liquidity(lay, c, v)
        regime, ann = _regime(lay, c, ret, lim.regime, self.bars_per_year)
        vol_mult = _vol_mult(vol_ratio, lim.vol_floor)
        trip = self._trip(z, vspike, vol_ratio)
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
            lay.scatter(out[name], arr)
        a, b = lay.segs[0][0], lay.segs[-1][1]
        _carry_last(out["last_trip"], out["trip"], a, b)
        if brk.index_move_pct:
            out["index_trip"][a:b] = np.where(np.abs(out["move_pct"][a:b]) >= brk.index_move_pct, 1.0, 0.0)
            _carry_last(out["last_index_trip"], out["index_trip"], a, b)
        else:
            out["index_trip"][a:b] = 0.0

    def _spikes(
        self, lay: _Segments, c: np.ndarray, v: np.ndarray, ret: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        brk = self.limits.breakers
        prev_sd = lay.shift(lay.rolling(ret, brk.sigma_window, "std"), 1)
        prev_v = lay.shift(lay.rolling(v, brk.volume_window, "mean"), 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(ret) / prev_sd, v / prev_v

    def _liquidity(self, lay: _Segments, c: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = self.limits.liquidity_window
        unit = self.inst.volume_unit
        if unit is VolumeUnit.NONE:
            adv = np.full(len(c), np.nan)
            return adv, adv
        with np.errstate(divide="ignore", invalid="ignore"):
            if unit is VolumeUnit.QUOTE:
                return lay.rolling(v, w, "mean"), lay.rolling(v / c, w, "mean")
            return lay.rolling(c * v, w, "mean"), lay.rolling(v, w, "mean")

    def _trip(self, z: np.ndarray, vspike: np.ndarray, vol_ratio: np.ndarray) -> np.ndarray:
        brk = self.limits.breakers
        trip = np.zeros(len(z))
        if brk.sigma:
            trip += np.where(z > brk.sigma, TRIP_MOVE, 0)
        if brk.volume_spike and self.inst.volume_unit is not VolumeUnit.NONE:
            trip += np.where(vspike > brk.volume_spike, TRIP_VOLUME, 0)
        if brk.vol_ratio:
            trip += np.where(vol_ratio > brk.vol_ratio, TRIP_VOL, 0)
        return trip

    # -- the whole history at once, read per bar (complete) ---------------------------------------
    def _all_blocks(self) -> _Segments:
        if self._layout is None:
            n = self.bars.n
            segs = [(a, min(n, a + BLOCK), max(0, a - self.lookback)) for a in range(0, max(n, 1), BLOCK)]
            self._layout = _Segments(segs)
        return self._layout

    def _group(self, name: str) -> dict[str, np.ndarray]:
        """One group of columns over every bar (computed once): ``returns`` (per segment),
        ``vol`` (per segment), ``spikes``, ``liquidity``, ``index``, ``regime`` (per bar)."""
        got = self._groups.get(name)
        if got is not None:
            return got
        lay = self._all_blocks()
        n = self.bars.n
        if name == "returns":
            c = lay.take(self.bars.close)
            ret, move = _returns(lay, c)
            got = {"c": c, "v": lay.take(self.bars.volume), "ret": ret, "move": move}
        elif name == "vol":
            got = {"vol": lay.rolling(self._group("returns")["ret"], self.limits.vol_window, "std")}
        elif name in ("spikes", "liquidity", "regime"):
            r = self._group("returns")
            v = r["v"]
            if name == "spikes":
                cols = dict(zip(("z", "vspike"), self._spikes(lay, r["c"], v, r["ret"]), strict=True))
            elif name == "liquidity":
                cols = dict(zip(("adv_quote", "avg_units"), self._liquidity(lay, r["c"], v), strict=True))
            else:
                regime, ann = _regime(lay, r["c"], r["ret"], self.limits.regime, self.bars_per_year)
                cols = {"regime": regime, "ann_vol": ann}
            got = {}
            for col, values in cols.items():
                got[col] = np.empty(n)
                lay.scatter(got[col], values)
        elif name == "index":
            move = np.empty(n)
            lay.scatter(move, self._group("returns")["move"])
            pct = self.limits.breakers.index_move_pct
            flags = np.where(np.abs(move) >= pct, 1.0, 0.0) if pct else np.zeros(n)
            last = np.full(n, -1.0)
            if n and pct:
                _carry_last(last, flags, 0, n)
            got = {"move_pct": move, "index_trip": flags, "last_index_trip": last}
        else:
            raise KeyError(name)
        self._groups[name] = got
        return got

    def _every_bar(self, vol_ratio: np.ndarray) -> None:
        """With the volatility ratio of every bar known: the columns that depend on it, whole."""
        n = self.bars.n
        self._col["vol_ratio"] = vol_ratio
        self._col["vol_mult"] = _vol_mult(vol_ratio, self.limits.vol_floor)
        if trips_on(self.limits, self.inst):
            nan = np.full(n, np.nan)
            spikes = self._group("spikes") if "spikes" in self._groups or self._needs_spikes() else None
            z = spikes["z"] if spikes is not None else nan
            vspike = spikes["vspike"] if spikes is not None else nan
            trip = self._trip(z, vspike, vol_ratio)
            last = np.full(n, -1.0)
            if n:
                _carry_last(last, trip, 0, n)
            self._col["trip"], self._col["last_trip"] = trip, last

    def _needs_spikes(self) -> bool:
        brk = self.limits.breakers
        return bool(brk.sigma or brk.volume_spike)

    def _vol_ratios(self) -> np.ndarray:
        """The ``vol_ratio`` column over every bar (one rolling median over every block)."""
        lay, vol = self._all_blocks(), self._group("vol")["vol"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = vol / lay.rolling(vol, self.limits.vol_history, "median")
        out = np.empty(self.bars.n)
        lay.scatter(out, ratio)
        return out

    def _vol_ratio_at(self, ks: list[int]) -> list[float]:
        """vol / its rolling median at bars ``ks`` (the ``vol_ratio`` column), each computed once:
        the median of a window is the same order statistic however it is found (here by sorting
        the window; a window with a NaN has fewer than ``vol_history`` values: NaN)."""
        cache = self._vr_cache
        todo = sorted({k for k in ks if k not in cache})
        if todo and not self._vol_ratio_run(todo):
            vol = self._group("vol")["vol"]
            lay = self._all_blocks()
            w = self.limits.vol_history
            q = [int(lay.offsets[k // BLOCK]) + k - lay.segs[k // BLOCK][2] for k in todo]  # place in segment
            rows = [r for r, k in enumerate(todo) if k - lay.segs[k // BLOCK][2] >= w - 1]  # full windows
            med = np.full(len(todo), np.nan)
            if rows:
                at = [q[r] - (w - 1) for r in rows]
                if at[-1] - at[0] == len(at) - 1:  # consecutive windows: one strided view
                    step = vol.strides[0]
                    view = np.ndarray((len(at), w), vol.dtype, vol, at[0] * step, (step, step))
                    win = np.sort(view, axis=1)  # NaN last
                else:
                    win = vol.take(np.array(at)[:, None] + _span(w))  # each row: its bar's window
                    win.sort(axis=1)  # NaN last
                m = win[:, w // 2] if w % 2 else (win[:, w // 2] + win[:, w // 2 - 1]) / 2
                m[np.isnan(win[:, -1])] = np.nan
                med[rows] = m
            top = vol.take(q)
            if (med > 0).all():
                ratio = top / med
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = top / med
            cache.update(zip(todo, ratio.tolist(), strict=True))
        return [cache[k] for k in ks]

    def _vol_ratio_run(self, ks: list[int]) -> bool:
        """``_vol_ratio_at`` for consecutive bars of one block whose windows are full (a verdict's
        usual read: its bar and the cooldown before it) with one strided view and one sort;
        False when they are not such a run."""
        lay = self._all_blocks()
        j, w = ks[0] // BLOCK, self.limits.vol_history
        s0 = lay.segs[j][2]
        if ks[-1] // BLOCK != j or ks[-1] - ks[0] != len(ks) - 1 or ks[0] - s0 < w - 1:
            return False
        vol = self._group("vol")["vol"]
        q0 = int(lay.offsets[j]) + ks[0] - s0  # the first bar's place in the segment
        step = vol.strides[0]
        win = np.sort(np.ndarray((len(ks), w), vol.dtype, vol, (q0 - w + 1) * step, (step, step)), axis=1)
        med = win[:, w // 2] if w % 2 else (win[:, w // 2] + win[:, w // 2 - 1]) / 2
        med[np.isnan(win[:, -1])] = np.nan  # NaN sorts last: a window with one has too few values
        top = vol[q0 : q0 + len(ks)]
        if np.minimum.reduce(med) > 0:
            ratio = top / med
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = top / med
        self._vr_cache.update(zip(ks, ratio.tolist(), strict=True))
        return True

    def _latest_trip(self, k: int) -> tuple[int, int]:
        """(bar, trip bits) of the latest trip in the cooldown window ending at k, or (-1, 0)."""
        cool = self.limits.breakers.cooldown_bars
        if cool <= 0 or not self._trips:
            return -1, 0
        if not self.complete or k < self.done:
            if k >= self.done:  # ensure_block's own test, without the call
                self.ensure_block(k)
            lt = self.cols["last_trip"][k]
            if lt < 0 or k - lt >= cool:
                return -1, 0
            return int(lt), int(self.cols["trip"][int(lt)])
        last = self._col.get("last_trip")
        if last is not None:
            lt = last.item(k)
            if lt < 0 or k - lt >= cool:
                return -1, 0
            return int(lt), int(self._col["trip"].item(int(lt)))
        brk = self.limits.breakers
        ks = list(range(k, max(k - cool, -1), -1))
        spikes = self._spike_bits() if brk.sigma or brk.volume_spike else None
        ratios = self._vol_ratio_at(ks) if brk.vol_ratio else [NAN] * len(ks)
        limit = brk.vol_ratio
        for j, vr in zip(ks, ratios, strict=True):
            bits = int(spikes.item(j)) if spikes is not None else 0
            if limit and vr > limit:
                bits |= TRIP_VOL
            if bits:
                return j, bits
        return -1, 0

    def _spike_bits(self) -> np.ndarray:
        """The move and volume bits of the ``trip`` column, every bar."""
        got = self._col.get("spike_bits")
        if got is None:
            spikes = self._group("spikes")
            got = self._col["spike_bits"] = self._trip(
                spikes["z"], spikes["vspike"], np.full(self.bars.n, np.nan)
            )
        return got

    def ensure_block(self, k: int) -> None:
        """Every column through bar k, and through the end of k's block when those bars are
        already there: values never depend on later bars, so this changes no number; it computes
        each block once instead of again at every new bar."""
        if k >= self.done:
            self.ensure(min(self.bars.n, (k // BLOCK + 1) * BLOCK) - 1)

    # -- what the gate reads ----------------------------------------------------------------------
    def value(self, col: str, k: int) -> float:
        """One column's value at bar k."""
        if not self.complete or k < self.done:
            self.ensure_block(k)
            return float(self.cols[col][k])
        arr = self._col.get(col)
        if arr is not None:
            return float(arr.item(k))
        if col == "vol_ratio":
            return self._vol_ratio_at([k])[0]
        if col == "vol_mult":
            return vol_mult_of(self._vol_ratio_at([k])[0], self.limits.vol_floor)
        for group, names in _GROUP_COLUMNS.items():
            if col in names:
                self._col.update(self._group(group))
                return float(self._col[col].item(k))
        raise KeyError(col)

    def liquidity(self, k: int) -> tuple[float, float]:
        """(``adv_quote``, ``avg_units``) at bar k."""
        if not self.complete or k < self.done:
            if k >= self.done:  # ensure_block's own test, without the call
                self.ensure_block(k)
            return float(self.cols["adv_quote"].item(k)), float(self.cols["avg_units"].item(k))
        return self.value("adv_quote", k), self.value("avg_units", k)

    def volatility(self, k: int) -> tuple[float, float]:
        """(``vol_ratio``, ``vol_mult``) at bar k."""
        if not self.complete or k < self.done:
            if k >= self.done:  # ensure_block's own test, without the call
                self.ensure_block(k)
            return float(self.cols["vol_ratio"].item(k)), float(self.cols["vol_mult"].item(k))
        ratio = self._col.get("vol_ratio")
        if ratio is not None:
            return float(ratio.item(k)), float(self._col["vol_mult"].item(k))
        vr = self._vol_ratio_at([k])[0]
        return vr, vol_mult_of(vr, self.limits.vol_floor)

    def breaker(self, k: int) -> str:
        """Why the symbol's breaker holds at bar k ("" when it does not)."""
        j, bits = self._latest_trip(k)
        if j < 0:
            return ""
        brk = self.limits.breakers
        what = []
        if bits & TRIP_MOVE:
            what.append(f"a {self.value('z', j):.1f}-sigma move (limit {brk.sigma:g})")
        if bits & TRIP_VOLUME:
            what.append(f"volume {self.value('vspike', j):.1f}x its average (limit {brk.volume_spike:g})")
        if bits & TRIP_VOL:
            what.append(f"volatility {self.value('vol_ratio', j):.1f}x its median (limit {brk.vol_ratio:g})")
        return (
            f"circuit breaker on {self.inst.symbol}: {' and '.join(what)} at {_utc(self.bars.ts[j], True)}; "
            f"paused {brk.cooldown_bars} bars"
        )

    def market(self, k: int) -> str:
        """Why the market-wide breaker (on this index) holds at index bar k ("" when it does not)."""
        brk = self.limits.breakers
        if not brk.index_move_pct:
            return ""
        if self.complete and k >= self.done:
            lt = float(self._group("index")["last_index_trip"][k])
        else:
            self.ensure_block(k)
            lt = float(self.cols["last_index_trip"][k])
        if lt < 0 or k - lt >= brk.index_cooldown_bars:
            return ""
        j = int(lt)
        return (
            f"market-wide breaker: {self.inst.symbol} moved {self.value('move_pct', j):+.1f}% on "
            f"{_utc(self.bars.ts[j], False)} (limit {brk.index_move_pct:g}%); "
            f"paused {brk.index_cooldown_bars} bars"
        )

    def regime(self, k: int) -> Regime | None:
        return REGIME_CODES[int(self.value("regime", k))]


def precompute(feats: list[SymbolFeatures], groups: tuple[str, ...], medians: bool = False) -> None:
    """Compute ``groups`` (of ``returns``, ``vol``, ``spikes``, ``liquidity``, ``regime``) for
    several complete histories in one pass per rolling statistic: every symbol's block windows laid
    end to end (segments never mix symbols, so each gets its own numbers); with ``medians`` the
    volatility ratio of every bar too. Symbols are batched by volume unit (the liquidity and
    spike columns depend on it)."""
    by_unit: dict[VolumeUnit, list[SymbolFeatures]] = {}
    for f in feats:
        if f.complete and f.bars.n:
            by_unit.setdefault(f.inst.volume_unit, []).append(f)
    for fs in by_unit.values():
        big = _concatenated(fs)
        for name in groups:
            big._group(name)
        ratios = big._vol_ratios() if medians and "vol" in big._groups else None
        seg_at = bar_at = 0
        for f in fs:
            width, n = int(f._all_blocks().lengths.sum()), f.bars.n
            for name, cols in big._groups.items():
                part = (
                    slice(seg_at, seg_at + width) if name in ("returns", "vol") else slice(bar_at, bar_at + n)
                )
                f._groups.setdefault(name, {k: v[part] for k, v in cols.items()})
            if ratios is not None:
                f._every_bar(ratios[bar_at : bar_at + n])
            seg_at, bar_at = seg_at + width, bar_at + n


class _Bars(NamedTuple):
    """What features read of a symbol's bars."""

    instrument: Instrument
    close: np.ndarray
    volume: np.ndarray
    n: int


def _concatenated(fs: list[SymbolFeatures]) -> SymbolFeatures:
    """One history made of several symbols' bars, laid out by their own blocks."""
    first = fs[0]
    close = np.concatenate([f.bars.close[: f.bars.n] for f in fs])
    volume = np.concatenate([f.bars.volume[: f.bars.n] for f in fs])
    bars = _Bars(first.inst, close, volume, len(close))
    big = SymbolFeatures(first.limits, bars, first.bars_per_year, complete=True)  # type: ignore[arg-type]
    segs: list[tuple[int, int, int]] = []
    at = 0
    for f in fs:
        segs += [(a + at, b + at, s0 + at) for a, b, s0 in f._all_blocks().segs]
        at += f.bars.n
    big._layout = _Segments(segs)
    return big


_GROUP_COLUMNS = {
    "spikes": ("z", "vspike"),
    "liquidity": ("adv_quote", "avg_units"),
    "index": ("move_pct", "index_trip", "last_index_trip"),
    "regime": ("regime", "ann_vol"),
}


def _utc(ts_ns: object, minutes: bool) -> str:
    from datetime import UTC, datetime

    t = datetime.fromtimestamp(int(ts_ns) // 1_000_000_000, UTC)  # type: ignore[call-overload]
    return f"{t:%Y-%m-%d %H:%M}" if minutes else f"{t:%Y-%m-%d}"


def _returns(lay: _Segments, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log returns and percentage moves from the previous bar of the same segment."""
    prev = lay.shift(c, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = c / prev
        return np.log(ratio), (ratio - 1) * 100


_SPANS: dict[int, np.ndarray] = {}


def _span(w: int) -> np.ndarray:
    """``np.arange(w)``, kept."""
    got = _SPANS.get(w)
    if got is None:
        got = _SPANS[w] = np.arange(w)
    return got


def vol_mult_of(vol_ratio: float, floor: float) -> float:
    """``_vol_mult`` of one value: ``clip(1 / vol_ratio, floor, 1)``, 1 when the ratio is NaN."""
    if vol_ratio != vol_ratio:
        return 1.0
    inv = 1.0 / vol_ratio if vol_ratio else math.copysign(math.inf, vol_ratio)
    return min(max(inv, floor), 1.0)


def _vol_mult(vol_ratio: np.ndarray, floor: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        vol_mult = np.clip(1.0 / vol_ratio, floor, 1.0)
    vol_mult[np.isnan(vol_ratio)] = 1.0
    return vol_mult


def _regime(
    lay: _Segments, c: np.ndarray, ret: np.ndarray, reg: RegimeLimits, bars_per_year: float
) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        sma = lay.rolling(c, reg.trend_window, "mean")
        slope = sma - lay.shift(sma, reg.slope_bars)
        ann = lay.rolling(ret, reg.vol_window, "std") * math.sqrt(bars_per_year) * 100
    return _regime_of(c, sma, slope, ann, reg), ann


def _regime_of(
    c: np.ndarray, sma: np.ndarray, slope: np.ndarray, ann: np.ndarray, reg: RegimeLimits
) -> np.ndarray:
    regime = np.zeros(len(c))
    known = ~np.isnan(slope) & ~np.isnan(ann)
    regime[known] = 3.0
    regime[known & (c > sma) & (slope > 0)] = 1.0
    regime[known & (c < sma) & (slope < 0)] = 2.0
    regime[known & (ann >= reg.crisis_vol)] = 4.0
    return regime


def _carry_last(last: np.ndarray, flags: np.ndarray, a: int, b: int) -> None:
    """last[k] = the latest bar <= k whose flag is set (or -1), for k in [a, b)."""
    idx = np.where(flags[a:b] > 0, np.arange(a, b, dtype=float), -1.0)
    if a > 0:
        idx[0] = max(idx[0], last[a - 1])
    np.maximum.accumulate(idx, out=idx)
    last[a:b] = idx


def breaker_reason(f: SymbolFeatures, k: int) -> str:
    """Why the symbol's breaker holds at bar k ("" when it does not)."""
    return f.breaker(k)


def market_reason(f: SymbolFeatures, k: int) -> str:
    """Why the market-wide breaker (on the index ``f``) holds at index bar k ("" when it does not)."""
    return f.market(k)


def regime_codes(
    close: pd.Series, log_ret: pd.Series, reg: RegimeLimits, bars_per_year: float
) -> tuple[np.ndarray, np.ndarray]:
    """Regime codes (see ``REGIME_CODES``) and annualised volatility (%) of one close series, by the
    trend-and-volatility rule of ``rule_regime``; causal (rolling windows over past bars only)."""
    c = close.to_numpy(dtype=float)
    lay = _Segments([(0, len(c), 0)])
    return _regime(lay, c, log_ret.to_numpy(dtype=float), reg, bars_per_year)


def rule_regime(f: SymbolFeatures, k: int) -> Regime | None:
    """The default regime rule on the index at bar k: crisis when annualised volatility over
    ``regime.vol_window`` bars is at least ``regime.crisis_vol``; else bull when the close is above
    its ``trend_window`` SMA and that SMA rose over ``slope_bars``; bear when below and falling;
    sideways otherwise. None until the windows are full."""
    return f.regime(k)
