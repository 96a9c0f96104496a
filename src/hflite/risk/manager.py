"""The risk manager: the gate's state over a run, the same in backtest, replay and live.

The engine tells it what happens (equity marks, exposure, orders sent, stop-outs, closed trades,
human commands); it keeps the state the gate reads (``RiskState``), builds each intent's market
context from causal features, and logs every state change as a ``RiskEvent`` with the time spans
spent halted, paused or locked.

Time rules (documented in docs/risk.md):
- Loss limits compare equity with the equity at the period's start, i.e. the equity marked at the
  last timeline point before the period's first point. Days, weeks (Monday to Sunday) and months
  are calendar periods in ``risk.period_tz``. A lock set when the loss reaches the limit holds
  until the first point of the next period, whatever equity does meanwhile.
- The drawdown halt trips on any marked point (not only when an entry is evaluated) and holds until
  a human resumes; resuming re-bases the peak to the equity at that moment.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from operator import countOf
from typing import TYPE_CHECKING, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

from hflite.domain.instrument import Instrument
from hflite.domain.order import Side
from hflite.domain.signal import OrderIntent, RiskVerdict
from hflite.risk.features import SymbolFeatures, breaker_reason, market_reason, precompute, trips_on
from hflite.risk.gate import MarketContext, RiskState, evaluate
from hflite.risk.limits import Regime, RiskLimits
from hflite.risk.periods import PeriodKeys, period_keys

if TYPE_CHECKING:
    from hflite.engine.market import MarketData

PERIODS = ("daily", "weekly", "monthly")
_new = tuple.__new__  # a NamedTuple from positional values, without its Python-level __new__
_REGIME_VALUE = {r: r.value for r in Regime}
_BUY = Side.BUY
ACTIONS = ("pause", "resume", "close_all", "kill")

#: A pluggable regime source: (market data, timeline index) -> regime or None when unknown.
RegimeSource = Callable[["MarketData", int], Regime | None]


class RiskEvent(NamedTuple):
    """One change of risk state: what, when, for which symbol ("" = the account), and why."""

    ts: int
    i: int
    kind: str  # halt | pause | resume | kill | close_all | daily_loss | ... | protection | breaker
    symbol: str
    detail: str


class Span(NamedTuple):
    """A stretch of the timeline spent under a restriction; ``end`` None = still in force."""

    kind: str
    start: int
    end: int | None
    detail: str


class RiskManager:
    def __init__(
        self,
        limits: RiskLimits,
        md: MarketData,
        initial_equity: float,
        *,
        bars_per_year: float = 252.0,
        regime_source: RegimeSource | None = None,
    ) -> None:
        self.limits = limits
        self.md = md
        self.state = RiskState(equity=initial_equity, peak_equity=initial_equity, cash=initial_equity)
        self.bars_per_year = bars_per_year
        self._features: dict[str, SymbolFeatures] = {}
        self.tz = ZoneInfo(limits.period_tz)
        self._periods = PeriodKeys(self.tz)
        self._cal: np.ndarray | None = None  # [3, T] period keys of the timeline, once prepared
        self._cal_starts: list[list[int]] = []  # per period: indices whose key differs from the last
        self._loss_limits = {
            "daily": limits.daily_loss_pct,
            "weekly": limits.weekly_loss_pct,
            "monthly": limits.monthly_loss_pct,
        }
        self._key: dict[str, int | None] = dict.fromkeys(PERIODS)
        #: (period, limit) of the loss limits in force
        self._losses = [(p, lim) for p, lim in self._loss_limits.items() if lim]
        self._anchor: dict[str, float] = dict.fromkeys(PERIODS, initial_equity)
        self.last_equity = initial_equity
        self._loss_memo: tuple[float, dict[str, float], dict[str, float]] = (math.nan, {}, {})
        self.events: list[RiskEvent] = []
        self.spans: list[Span] = []
        self._open: dict[str, int] = {}  # kind -> index into spans of the open span
        self.halted_at: int | None = None
        self.held: dict[str, float] = {}  # symbol -> signed USD value (positions + working entries)
        self._sym_pause: dict[str, tuple[int, str]] = {}  # symbol -> (last paused bar k, why)
        self._global_pause: tuple[int, str] = (-1, "")  # (last paused timeline index, why)
        self._stops: dict[str, deque[int]] = {}
        self._all_stops: deque[int] = deque()
        self._closed: dict[str, deque[tuple[int, float]]] = {}
        self._orders: deque[int] = deque()
        self._rows = {s: r for r, s in enumerate(md.close_tl)}  # symbol -> row of _logc
        self._logc = np.empty((len(self._rows), 0))
        self._logc_flat = self._logc.ravel()
        self._logc_done = 0
        self._held_cache: tuple[int, list[str], np.ndarray, np.ndarray, np.ndarray] | None = None
        self._windows: dict[bytes, list] = {}  # see ``_window``
        self._held_last: tuple[list[str], list[bool], tuple] | None = None  # the last ``_held_cache``
        self._win: np.ndarray | None = None  # [start, row, slot]: ``_window`` of every run of points
        self._win_norms: np.ndarray | None = None
        self._index_at: tuple[int, str, str] = (-1, "", "")  # (i, market breaker, regime) at i
        self._bar_memo: tuple[int, str, int] = (-1, "", -1)  # the last _bar_at: (i, symbol, k)
        self._slot = {s: j for j, s in enumerate(md.traded)}  # traded symbol -> column of md.slots
        self._complete = False  # every bar known in advance (``prepare``)
        self._dirty = False  # the book changed since the exposures in ``state`` were summed
        #: symbol -> (sector or None, asset class): what the exposures are summed by
        self._kind = {s: (b.instrument.sector, b.instrument.asset_class.value) for s, b in md.bars.items()}
        #: which market-context fields a verdict can read under these limits (others stay neutral)
        self._reads_liquidity = bool(limits.min_adv_usd or limits.max_adv_share)
        self._reads_vol = bool(limits.vol_adjust)
        self._reads_corr = limits.max_correlation < 1.0
        self._trips: dict[str, bool] = {}  # symbol -> can a per-symbol breaker trip on its bars
        self.warnings: list[str] = []
        idx = limits.breakers.index
        self.index = idx if idx and limits.breakers.index_move_pct and idx in md.bars else ""
        if idx and limits.breakers.index_move_pct and idx not in md.bars:
            self.warnings.append(f"risk: market-wide breaker index {idx} has no bars; breaker off")
        self.regime_source: RegimeSource | None = regime_source
        if regime_source is None and limits.regime.source == "rule":
            if limits.regime.index in md.bars:
                self.regime_source = self._rule_regime
            else:
                self.warnings.append(
                    f"risk: regime index {limits.regime.index} has no bars; regime scaling off"
                )

    # -- features ---------------------------------------------------------------------------------
    def features(self, sym: str) -> SymbolFeatures:
        f = self._features.get(sym)
        if f is None:
            f = self._features[sym] = SymbolFeatures(
                self.limits, self.md.bars[sym], self.bars_per_year, complete=self._complete
            )
        return f

    def _bar_at(self, sym: str, i: int) -> int:
        """The symbol's latest bar at or before timeline index i (-1 if none)."""
        col = self._slot.get(sym)
        if col is not None and i < len(self.md.slots):
            k = self.md.slots.item(i, col)  # a traded symbol's bar at i, if it has one
            if k >= 0:
                return int(k)
        memo_i, memo_sym, memo_k = self._bar_memo
        if memo_i == i and memo_sym == sym:
            return memo_k
        b = self.md.bars[sym]
        k = int(b.tl[: b.n].searchsorted(i, side="right")) - 1
        self._bar_memo = (i, sym, k)
        return k

    def _rule_regime(self, md: MarketData, i: int) -> Regime | None:
        sym = self.limits.regime.index
        k = self._bar_at(sym, i)
        if k < 0:
            return None
        return self.features(sym).regime(k)

    def regime_at(self, i: int) -> Regime | None:
        return self.regime_source(self.md, i) if self.regime_source is not None else None

    # -- equity marks: drawdown halt and loss limits ---------------------------------------------
    def prepare(self) -> None:
        """The whole timeline and every bar are known in advance (a backtest): precompute the
        period keys of the timeline, and let features be computed over all bars at once and read
        per bar. The numbers are those ``observe`` and a growing history give point by point:
        nothing changes but the cost. A live runtime, whose timeline grows, does without."""
        self._complete = True
        self._features.clear()
        brk = self.limits.breakers
        groups = ["returns"]
        if self._reads_vol or brk.vol_ratio:
            groups.append("vol")
        if brk.sigma or brk.volume_spike:
            groups.append("spikes")
        if self._reads_liquidity:
            groups.append("liquidity")
        traded = [self.features(s) for s in self.md.traded]
        if len(groups) > 1 and traded:
            # every traded symbol's features in one pass per statistic; the volatility ratio of
            # every bar too unless the history is long (then only at the bars a verdict reads)
            bars = sum(f.bars.n for f in traded)
            precompute(traded, tuple(groups), medians=bars <= 250_000)
        self._prepare_windows()
        if self._losses:  # days, weeks and months matter only to the loss limits
            keys = self._periods.of(self.md.timeline[: self.md.length])
            self._cal = keys
            self._cal_starts = [(np.flatnonzero(k[1:] != k[:-1]) + 1).tolist() for k in keys]

    def _prepare_windows(self) -> None:
        """``_window`` of every run of ``correlation_window + 1`` consecutive timeline points at
        once, when they fit in about 32 MB: the same operations, each window's rows alike."""
        w, length, n = self.limits.correlation_window, self.md.length, len(self._rows)
        if self.limits.max_correlation >= 1.0 or len(self.md.traded) < 2 or length <= w:
            return
        if n * (length - w) * (w + 1) > 4_000_000:
            return
        self._log_close(length)
        logc = self._logc[:, :length]
        ret = np.diff(np.lib.stride_tricks.sliding_window_view(logc, w + 1, axis=1), axis=2)
        mean = np.add.reduce(ret, axis=2, keepdims=True)
        mean /= ret.shape[2]
        ret -= mean
        norms = np.sqrt(np.add.reduce(ret * ret, axis=2))
        win = np.empty((length - w, n, w + 1))
        win[:, :, :w] = ret.transpose(1, 0, 2)
        self._win, self._win_norms = win, np.ascontiguousarray(norms.T)

    def _period_keys(self, i: int) -> tuple[int, int, int]:
        cal = self._cal
        if cal is not None and i < cal.shape[1]:
            return cal.item(0, i), cal.item(1, i), cal.item(2, i)
        return period_keys(int(self.md.timeline[i]), self.tz)

    def observe(self, i: int, eq: float) -> None:
        """Mark one timeline point's equity."""
        st = self.state
        st.equity = eq
        if eq > st.peak_equity:
            st.peak_equity = eq
        lim = self.limits.max_drawdown_pct
        if not st.halted and lim and st.peak_equity > 0:
            dd = (1 - eq / st.peak_equity) * 100
            if dd >= lim:
                self._halt(i, dd)
        if self._losses:  # no loss limit: no period to follow (nothing reads it)
            self._mark_periods(i, eq)
        self.last_equity = eq

    def _mark_periods(self, i: int, eq: float) -> None:
        """The periods point i starts, and the loss limits it reaches (each period in turn)."""
        st = self.state
        cal = self._cal
        if cal is not None and i < cal.shape[1] and cal.item(0, i) == self._key["daily"]:
            # the local day of the last point: no period starts here (weeks and months begin
            # on a new day); only the loss limits in force are measured
            for p, limit in self._losses:
                anchor = self._anchor[p]
                if p not in st.locks and anchor > 0:
                    loss = (1 - eq / anchor) * 100
                    if loss >= limit:
                        self._lock(p, i, loss)
            return
        keys = self._period_keys(i)
        for p, key in zip(PERIODS, keys, strict=True):
            if key != self._key[p]:
                self._new_period(p, key, i)
            limit = self._loss_limits[p]
            if limit and p not in st.locks and self._anchor[p] > 0:
                loss = (1 - eq / self._anchor[p]) * 100
                if loss >= limit:
                    self._lock(p, i, loss)

    def observe_range(self, a: int, eq: np.ndarray) -> None:
        """Mark the points [a, a + len(eq)) at once (quiet stretches: same rules as ``observe``).

        The measures are those of ``observe``, element by element; a stretch is searched for the
        first point past a limit only when its lowest equity is past it (a loss, and a drawdown
        from a peak no higher than the stretch's highest, only grow as equity falls)."""
        n = len(eq)
        if n == 0:
            return
        if n == 1:
            self.observe(a, float(eq[0]))
            return
        st = self.state
        # What the stretch sets off, applied in time order as ``observe`` would: at one point the
        # halt first, then each period's start and lock (daily, weekly, monthly).
        todo: list[tuple[int, int, Callable[[], None]]] = []
        lo = float(np.minimum.reduce(eq))  # NaN when any point is NaN: then every test runs point by point
        hi = float(np.maximum.reduce(eq))
        exact = not lo > 0.0  # (also NaN) the bounds below assume positive equity
        lim = self.limits.max_drawdown_pct
        peak0 = st.peak_equity
        if not st.halted and lim and peak0 > 0 and (exact or (1 - lo / max(peak0, hi)) * 100 >= lim):
            peaks = np.maximum.accumulate(np.maximum(eq, peak0))
            dd = (1 - eq / peaks) * 100
            hit = np.flatnonzero(dd >= lim)
            if len(hit):
                j = int(hit[0])
                todo.append((j, 0, partial(self._halt, a + j, float(dd[j]))))
        st.peak_equity = max(peak0, hi)  # as max(peak, maximum.accumulate(...)[-1]): NaN keeps the peak
        if not self._losses:  # no loss limit: no period to follow (nothing reads it)
            pass
        elif self._same_day(a, n):  # no period starts in the stretch: only the limits in force
            for p, limit in self._losses:
                anchor = self._anchor[p]
                if p in st.locks or anchor <= 0 or (lo == lo and (1 - lo / anchor) * 100 < limit):
                    continue
                loss = (1 - eq / anchor) * 100
                hit = np.flatnonzero(loss >= limit)
                if len(hit):
                    rank = PERIODS.index(p)
                    todo.append(
                        (
                            int(hit[0]),
                            2 * rank + 2,
                            partial(self._lock, p, a + int(hit[0]), float(loss[hit[0]])),
                        )
                    )
        else:
            self._stretch_periods(a, eq, lo, todo)
        if todo:
            todo.sort(key=lambda t: t[:2])
            for _, _, act in todo:
                act()
        st.equity = self.last_equity = float(eq.item(-1))

    def _same_day(self, a: int, n: int) -> bool:
        """Whether the points [a, a + n) all fall on the local day of the last point marked."""
        cal = self._cal
        if cal is None or a + n > cal.shape[1] or cal.item(0, a) != self._key["daily"]:
            return False
        changes = self._cal_starts[0]
        return bisect_right(changes, a) == bisect_left(changes, a + n)

    def _stretch_periods(
        self, a: int, eq: np.ndarray, lo: float, todo: list[tuple[int, int, Callable[[], None]]]
    ) -> None:
        """Each period's starts and locks in the stretch [a, a + len(eq)), added to ``todo``."""
        st, n = self.state, len(eq)
        prev_eq: np.ndarray | None = None
        for rank, (p, k, starts) in enumerate(self._stretch_starts(a, n)):
            limit = self._loss_limits[p]
            if not starts and (not limit or p in st.locks):  # the common case: nothing to do
                continue
            new = set(starts)
            bounds = sorted({0, *starts, n})
            locked, anchor = p in st.locks, self._anchor[p]
            for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True):
                if r0 in new:
                    if prev_eq is None:
                        prev_eq = np.empty(n)
                        prev_eq[0] = self.last_equity
                        prev_eq[1:] = eq[:-1]
                    locked, anchor = False, float(prev_eq[r0])
                    todo.append((r0, 2 * rank + 1, partial(self._new_period, p, k(r0), a + r0, anchor)))
                if not limit or locked or anchor <= 0:
                    continue
                seg = eq[r0:r1]
                low = lo if r1 - r0 == n else float(seg.min())
                if low == low and (1 - low / anchor) * 100 < limit:
                    continue  # not even its lowest equity reaches the limit
                loss = (1 - seg / anchor) * 100
                hit = np.flatnonzero(loss >= limit)
                if len(hit):
                    locked = True
                    j = r0 + int(hit[0])
                    todo.append((j, 2 * rank + 2, partial(self._lock, p, a + j, float(loss[hit[0]]))))

    def _stretch_starts(self, a: int, n: int) -> list[tuple[str, Callable[[int], int], list[int]]]:
        """Per period: its key at offset r of the stretch [a, a + n), and the offsets where a new
        period starts (the key differs from the point before, or from the last one marked)."""
        out: list[tuple[str, Callable[[int], int], list[int]]] = []
        cal = self._cal
        if cal is not None and a + n <= cal.shape[1]:
            for row, p in enumerate(PERIODS):
                changes = self._cal_starts[row]
                j0, j1 = bisect_right(changes, a), bisect_left(changes, a + n)
                starts = [c - a for c in changes[j0:j1]]
                if cal.item(row, a) != self._key[p]:
                    starts.insert(0, 0)
                out.append((p, partial(_key_at, cal, row, a), starts))
            return out
        keys = self._periods.of(self.md.timeline[a : a + n])
        for row, p in enumerate(PERIODS):
            k = keys[row]
            starts = (np.flatnonzero(k[1:] != k[:-1]) + 1).tolist()
            if int(k[0]) != self._key[p]:
                starts.insert(0, 0)
            out.append((p, partial(_key_at, keys, row, 0), starts))
        return out

    def _new_period(self, p: str, key: int, i: int, prev: float | None = None) -> None:
        """Point i opens a new period: its anchor is the equity marked just before it."""
        self._key[p] = key
        self._anchor[p] = self.last_equity if prev is None else prev
        if p in self.state.locks:
            del self.state.locks[p]
            self._close_span(f"{p}_loss", i)

    def events_for(self, kind: str) -> list[RiskEvent]:
        return [e for e in self.events if e.kind.startswith(kind)]

    def _lock(self, p: str, i: int, loss: float) -> None:
        limit = self._loss_limits[p]
        why = (
            f"{p} loss limit: {loss:.2f}% below the period's starting equity "
            f"{self._anchor[p]:,.0f} USD (limit {limit:g}%); no entries until the next period"
        )
        self.state.locks[p] = why
        self._event(i, f"{p}_loss", "", why)
        self._open_span(f"{p}_loss", i, why)

    def _halt(self, i: int, dd: float) -> None:
        st = self.state
        st.halted = True
        st.halt_reason = (
            f"drawdown {dd:.2f}% reached the {self.limits.max_drawdown_pct:g}% limit; "
            "new entries halted until a human resumes (`hflite risk resume`)"
        )
        if self.halted_at is None:
            self.halted_at = i
        self._event(i, "halt", "", st.halt_reason)
        self._open_span("halted", i, st.halt_reason)

    # -- exposure -------------------------------------------------------------------------------
    def set_book(self, held: dict[str, float], cash: float) -> None:
        """The account after a mark: signed USD value per symbol (positions not being exited plus
        working entries) and the USD cash left once working buy entries are paid."""
        self.held = held
        self.state.cash = cash
        self._held_cache = None
        self._dirty = True

    def commit(self, sym: str, usd: float) -> None:
        """An approved entry's working order (signed USD) counts from now on."""
        new = sym not in self.held
        self.held[sym] = self.held.get(sym, 0.0) + usd
        if usd > 0:
            self.state.cash -= usd
        if new and not self._dirty:
            self._add_last(sym, usd)
        else:
            self._held_cache = None
            self._dirty = True

    def _add_last(self, sym: str, usd: float) -> None:
        """The sums of ``_aggregate`` with ``sym`` added as the book's last entry: the same
        additions in the same order, so the same numbers, without summing the book again."""
        st = self.state
        sector, cls = self._kind[sym]
        st.gross_exposure += abs(usd)
        st.net_exposure += usd
        if sector:
            st.sector_exposure[sector] = st.sector_exposure.get(sector, 0.0) + abs(usd)
        st.class_exposure[cls] = st.class_exposure.get(cls, 0.0) + abs(usd)
        if usd:
            st.open_positions += 1
        cache = self._held_cache
        if cache is not None and usd:
            cap, names, rows, signs, neg = cache
            sign = 1.0 if usd > 0 else -1.0
            self._held_cache = (
                cap,
                [*names, sym],
                np.append(rows, self._rows[sym]),
                np.append(signs, sign),
                np.append(neg, -sign),
            )

    def release(self, sym: str) -> None:
        """A position is being exited: its exposure no longer counts against new entries."""
        if self.held.pop(sym, None) is not None:
            self._held_cache = None
            self._dirty = True

    def _aggregate(self) -> None:
        """The exposures in ``state`` from the book (when the gate next reads them)."""
        self._dirty = False
        st, kind = self.state, self._kind
        gross = net = 0.0
        sectors: dict[str, float] = {}
        classes: dict[str, float] = {}
        in_sector, in_class = sectors.get, classes.get  # the same sums, in the same order
        held = self.held
        for sym, usd in held.items():
            size = abs(usd)
            gross += size
            net += usd
            sector, cls = kind[sym]
            if sector:
                sectors[sector] = in_sector(sector, 0.0) + size
            classes[cls] = in_class(cls, 0.0) + size
        st.gross_exposure, st.net_exposure = gross, net
        st.sector_exposure, st.class_exposure = sectors, classes
        # the non-zero values (NaN counts, as it is truthy)
        st.open_positions = len(held) - countOf(held.values(), 0.0)

    # -- the gate -------------------------------------------------------------------------------
    def check(self, intent: OrderIntent, inst: Instrument, k: int, i: int, fx: float) -> RiskVerdict:
        """The gate's verdict on one intent at the symbol's bar k (timeline index i)."""
        ctx = self.context(intent, k, i, fx)
        if self._dirty:
            self._aggregate()
        st = self.state
        gp_until, gp_why = self._global_pause
        st.global_pause = gp_why if i <= gp_until else ""
        if self._losses:  # the gate reads the periods with a limit
            eq, anchor = st.equity, self._anchor
            memo = self._loss_memo  # computed again when the equity or an anchor differs (NaN always)
            if memo[0] != eq or memo[1] != anchor:
                losses = {p: (1 - eq / a) * 100 if a > 0 else 0.0 for p, a in anchor.items()}
                memo = self._loss_memo = (eq, dict(anchor), losses)
            st.period_loss = memo[2].copy()
        return evaluate(self.limits, st, intent, inst, ctx)

    def context(self, intent: OrderIntent, k: int, i: int, fx: float) -> MarketContext:
        """What the market says about the intent's symbol at its bar k (timeline index i). Fields
        no rule reads under these limits keep their neutral value (they cannot change a verdict)."""
        sym = intent.symbol
        at, market, regime = self._index_at
        if at != i and (self.index or self.regime_source is not None):
            market, regime = self._index_context(i)
        pause = self._sym_pause.get(sym)
        orders = self._orders
        if orders:
            cutoff = intent.ts - 60_000_000_000
            while orders and orders[0] <= cutoff:
                orders.popleft()
        sign = 1 if intent.side is _BUY else -1  # Side.sign without the enum property
        corr, corr_with = self._correlation(sym, k, sign) if self._reads_corr else (math.nan, "")
        adv = units = vol_ratio = math.nan
        vol_mult, breaker = 1.0, ""
        trips = self._trips.get(sym)
        if trips is None:
            trips = self._trips[sym] = trips_on(self.limits, self.md.bars[sym].instrument)
        if trips or self._reads_liquidity or self._reads_vol:
            f = self._features.get(sym) or self.features(sym)
            if trips:
                breaker = breaker_reason(f, k)
            if self._reads_liquidity:
                adv, units = f.liquidity(k)
                adv *= fx
            if self._reads_vol:
                vol_ratio, vol_mult = f.volatility(k)
        return _new(MarketContext, (
            fx,
            self.md.bars[sym].close.item(k),
            adv,
            units,
            vol_mult,
            vol_ratio,
            breaker,
            market,
            regime,
            pause[1] if pause is not None and k <= pause[0] else "",
            len(orders),
            corr,
            corr_with,
        ))  # fmt: skip

    def _index_context(self, i: int) -> tuple[str, str]:
        """The market-wide breaker and the regime at timeline index i: the same for every intent
        decided at i, so kept until the next index."""
        market = ""
        if self.index:
            ki = self._bar_at(self.index, i)
            if ki >= 0:
                market = market_reason(self.features(self.index), ki)
        found = self.regime_at(i)
        if found is None:
            regime = ""
        else:  # a Regime's value without the enum's ``value`` descriptor
            regime = _REGIME_VALUE[found] if type(found) is Regime else found.value
        self._index_at = (i, market, regime)
        return market, regime

    def _correlation(self, sym: str, k: int, sign: int) -> tuple[float, str]:
        """The highest direction-adjusted correlation of the symbol's log returns over its last
        ``correlation_window`` bars with those of a held position, and that position."""
        lim = self.limits
        w = lim.correlation_window
        if lim.max_correlation >= 1.0 or k < w or not self.held:
            return math.nan, ""
        idx = self.md.bars[sym].tl[k - w : k + 1]
        if idx.item(0) < 0:
            idx = idx[idx >= 0]
            if len(idx) < w // 2 + 2:
                return math.nan, ""
        last = int(idx.item(-1))
        cap = self._logc.shape[1] if last < self._logc_done else self._log_close(last + 1)
        names, rows, signs = self._held_rows(sym, cap, sign)
        if not names:
            return math.nan, ""
        # The symbol's and the held rows' demeaned returns over the window, each computed once per
        # window (entries decided at one bar-time share it), gathered in the order and layout the
        # products below have always read: row 0 the symbol's, then the held rows, ``len(idx)``
        # slots a row (the last unused).
        sel = rows
        sel[0] = self._rows[sym]
        at = int(idx.item(0))
        if self._win is not None and self._win_norms is not None and len(idx) == w + 1 and last - at == w:
            buf, norms = self._win[at], self._win_norms[at]  # a window of consecutive points
        else:
            key = idx.tobytes()
            win = self._windows.get(key)
            if win is None:  # the window's first entry: its rows, worked as they are read, then kept
                part, r = _demeaned(
                    self._logc_flat.take((sel * cap)[:, None] + idx).ravel(), len(sel), len(idx)
                )
                norms = np.sqrt(np.add.reduce(r * r, axis=1))
                self._keep_window(key, sel, part, norms)
                return _best(r, norms[1:].copy(), signs, names)
            buf, norms = self._window(win, idx, cap, sel)
        return _best(buf.take(sel, axis=0)[:, :-1], norms.take(sel[1:]), signs, names)

    def _keep_window(self, key: bytes, sel: np.ndarray, part: np.ndarray, norms: np.ndarray) -> None:
        """Keep a window's rows (see ``_window``) for the next entries decided on it."""
        n, width = len(self._rows), part.shape[1]
        if len(self._windows) >= max(4, 2_000_000 // (n * width)):  # at most ~16 MB
            del self._windows[next(iter(self._windows))]
        buf, kept, known = np.empty((n, width)), np.empty(n), np.zeros(n, dtype=bool)
        buf[sel], kept[sel], known[sel] = part, norms, True
        self._windows[key] = [buf, kept, known, self._held_cache]

    def _window(self, win: list, idx: np.ndarray, cap: int, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A kept window with the rows ``sel`` in it: per row of ``_logc``, its log returns over the
        timeline points ``idx`` less their mean (``len(idx)`` slots, the last unused) and the root
        of their sum of squares. A missing row is computed by the same operations as the others,
        whatever rows it is computed with."""
        buf, norms, known, book = win
        if book is self._held_cache:  # the held rows are there: only the symbol's own may be missing
            # a second entry on the window: more will come, so every row still missing at once
            todo = None if known.item(sel[0]) else np.flatnonzero(~known)
        else:
            todo = sel[~known.take(sel)]
            win[3] = self._held_cache
        if todo is not None and len(todo):
            part, r = _demeaned(
                self._logc_flat.take((todo * cap)[:, None] + idx).ravel(), len(todo), len(idx)
            )
            buf[todo] = part
            norms[todo] = np.sqrt(np.add.reduce(r * r, axis=1))
            known[todo] = True
        return buf, norms

    def _held_rows(self, sym: str, cap: int, sign: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Held symbols other than ``sym`` with a non-zero value, their rows of ``_logc`` (after a
        free first slot for ``sym``'s own), and their signs times ``sign``. Cached until the book
        changes or ``_logc`` grows."""
        if self._held_cache is None or self._held_cache[0] != cap:
            names = [s for s, v in self.held.items() if v]
            ups = [v > 0 for v in self.held.values() if v]
            old = self._held_last
            if old is not None and old[0] == names and old[1] == ups and old[2][0] == cap:
                self._held_cache = old[2]  # a new mark, the same positions the same ways
            else:
                rows = np.array([0] + [self._rows[s] for s in names], dtype=np.int64)
                signs = np.array([1.0 if up else -1.0 for up in ups])
                self._held_cache = (cap, names, rows, signs, -signs)
            self._held_last = (names, ups, self._held_cache)
        _, names, rows, long_signs, short_signs = self._held_cache
        signs = long_signs if sign > 0 else short_signs
        if self.held.get(sym):  # the engine releases a symbol before it enters again: rare
            j = names.index(sym)
            rest = names[:j] + names[j + 1 :]
            return (
                rest,
                np.concatenate((rows[: j + 1], rows[j + 2 :])),
                np.concatenate((signs[:j], signs[j + 1 :])),
            )
        return names, rows, signs

    def _log_close(self, end: int) -> int:
        """Extend ``_logc``, the log of every symbol's last known close (rows) per timeline
        index (columns), to ``end`` columns (each computed once); returns its capacity."""
        done = self._logc_done
        if end > done:
            if self._complete:  # every column is final already: extend in large steps
                end = min(self.md.length, max(end, 2 * done, done + 1024))
            cap = self._logc.shape[1]
            if end > cap:
                grown = np.full((len(self._rows), max(end, 2 * cap, 256)), np.nan)
                grown[:, :done] = self._logc[:, :done]
                self._logc, self._logc_flat = grown, grown.ravel()
            close = self.md.close_tl
            with np.errstate(invalid="ignore", divide="ignore"):
                self._logc[:, done:end] = np.log(np.stack([close[s][done:end] for s in self._rows]))
            self._logc_done = end
        return self._logc.shape[1]

    # -- what happened --------------------------------------------------------------------------
    def on_order(self, ts: int) -> None:
        self._orders.append(ts)

    def on_stop_out(self, sym: str, k: int, i: int) -> None:
        p = self.limits.protections
        ts = int(self.md.timeline[i])
        when = f"{datetime.fromtimestamp(ts // 1_000_000_000, UTC):%Y-%m-%d}"
        if p.stop_cooldown_bars:
            self._pause_symbol(
                sym,
                k + p.stop_cooldown_bars,
                i,
                f"cooldown: stopped out on {when}; {p.stop_cooldown_bars} bars",
            )
        if not p.guard_stops:
            return
        if p.guard_scope == "all":
            stops = self._all_stops
            stops.append(i)
            while stops and stops[0] <= i - p.guard_window_bars:
                stops.popleft()
            if len(stops) >= p.guard_stops:
                why = (
                    f"stop-loss guard: {len(stops)} stop-outs within {p.guard_window_bars} bars "
                    f"(limit {p.guard_stops}); every symbol paused {p.guard_pause_bars} bars from {when}"
                )
                self._global_pause = (i + p.guard_pause_bars, why)
                self._event(i, "protection", "", why)
                self._open_span("protection", i, why, end=i + p.guard_pause_bars)
            return
        stops = self._stops.setdefault(sym, deque())
        stops.append(k)
        while stops and stops[0] <= k - p.guard_window_bars:
            stops.popleft()
        if len(stops) >= p.guard_stops:
            self._pause_symbol(
                sym,
                k + p.guard_pause_bars,
                i,
                f"stop-loss guard: {len(stops)} stop-outs within {p.guard_window_bars} bars "
                f"(limit {p.guard_stops}); paused {p.guard_pause_bars} bars from {when}",
            )

    def on_trade_closed(self, sym: str, k: int, i: int, return_pct: float) -> None:
        p = self.limits.protections
        if not p.low_profit_trades:
            return
        closed = self._closed.setdefault(sym, deque())
        closed.append((k, return_pct))
        while closed and closed[0][0] <= k - p.low_profit_window_bars:
            closed.popleft()
        recent = list(closed)[-p.low_profit_trades :]
        total = sum(r for _, r in recent)
        if len(recent) >= p.low_profit_trades and total < p.low_profit_min_pct:
            self._pause_symbol(
                sym,
                k + p.low_profit_pause_bars,
                i,
                f"low-profit guard: last {len(recent)} trades returned {total:+.2f}% "
                f"(limit {p.low_profit_min_pct:g}%); paused {p.low_profit_pause_bars} bars",
            )

    def _pause_symbol(self, sym: str, until_k: int, i: int, why: str) -> None:
        cur = self._sym_pause.get(sym)
        if cur is None or until_k > cur[0]:
            self._sym_pause[sym] = (until_k, why)
        self._event(i, "protection", sym, why)

    # -- human commands -------------------------------------------------------------------------
    def command(self, action: str, reason: str, i: int) -> RiskEvent:
        """Apply pause / resume / close_all / kill to the state (the engine does the orders)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown risk command {action!r} (one of {', '.join(ACTIONS)})")
        st = self.state
        detail = reason or "no reason given"
        if action == "pause" and st.mode == "running":
            st.mode, st.mode_reason = "paused", detail
            self._open_span("paused", i, detail)
        elif action == "kill":
            if st.mode == "paused":
                self._close_span("paused", i)
            if st.mode != "killed":
                st.mode, st.mode_reason = "killed", detail
                self._open_span("killed", i, detail)
        elif action == "resume":
            for kind in ("paused", "killed", "halted"):
                self._close_span(kind, i)
            st.mode, st.mode_reason = "running", ""
            if st.halted:
                st.halted, st.halt_reason = False, ""
                st.peak_equity = st.equity  # the human accepted the loss: measure from here
        return self._event(i, action, "", detail)

    def usage(self, i: int) -> dict[str, object]:
        """Every limit with its current value and utilisation at timeline index ``i``, the halts,
        pauses and locks in force (the control API's ``risk_check``). A pure read: the exposures are
        summed here, never written back into the gate's state."""
        st, lim = self.state, self.limits
        eq = st.equity if st.equity > 0 else self.last_equity
        gross = sum(abs(v) for v in self.held.values())
        net = sum(self.held.values())
        sectors: dict[str, float] = {}
        classes: dict[str, float] = {}
        for sym, usd in self.held.items():
            sector, cls = self._kind[sym]
            if sector:
                sectors[sector] = sectors.get(sector, 0.0) + abs(usd)
            classes[cls] = classes.get(cls, 0.0) + abs(usd)
        n_open = sum(1 for v in self.held.values() if v)
        dd = (1 - eq / st.peak_equity) if st.peak_equity > 0 else 0.0
        rows: list[dict[str, object]] = []

        def row(name: str, value: float, limit: float, unit: str, detail: str = "") -> None:
            if limit > 0:
                rows.append({
                    "name": name, "value": value, "limit": limit, "unit": unit,
                    "utilisation": value / limit, "breached": value >= limit, "detail": detail,
                })  # fmt: skip

        row("drawdown", dd, lim.max_drawdown_pct / 100, "ratio", "new entries halt (human resume)")
        row("drawdown_reduce", dd, lim.drawdown_reduce_pct / 100, "ratio", "entries sized down")
        row("gross_exposure", gross / eq if eq > 0 else 0.0, lim.max_gross_exposure, "x equity")
        row("net_exposure", abs(net) / eq if eq > 0 else 0.0, lim.max_net_exposure, "x equity")
        row("open_positions", float(n_open), float(lim.max_open_positions), "positions")
        losses = {"daily": lim.daily_loss_pct, "weekly": lim.weekly_loss_pct, "monthly": lim.monthly_loss_pct}
        pnl: dict[str, float | None] = {}
        for p, limit in losses.items():
            anchor = self._anchor.get(p, 0.0) if self._losses else 0.0
            pnl[{"daily": "day", "weekly": "week", "monthly": "month"}[p]] = (
                eq - anchor if anchor > 0 else None
            )
            if anchor > 0:
                row(f"{p}_loss", max(0.0, 1 - eq / anchor), limit / 100, "ratio", st.locks.get(p, ""))
        if sectors:
            top = max(sectors, key=sectors.__getitem__)
            row(
                "sector_exposure",
                sectors[top] / eq if eq > 0 else 0.0,
                lim.max_sector_pct / 100,
                "ratio",
                top,
            )
        for cls, cap in sorted(lim.max_asset_class_pct.items()):
            row(f"asset_class_{cls}", classes.get(cls, 0.0) / eq if eq > 0 else 0.0, cap / 100, "ratio")
        if lim.max_orders_per_minute:
            now = int(self.md.timeline[i]) if 0 <= i < self.md.length else 0
            recent = sum(1 for t in self._orders if t > now - 60_000_000_000)
            row("orders_per_minute", float(recent), float(lim.max_orders_per_minute), "orders")
        k_of = {s: self.md.bars[s].n - 1 for s in self._sym_pause}
        paused = {s: why for s, (until, why) in self._sym_pause.items() if k_of[s] <= until}
        gp_until, gp_why = self._global_pause
        return {
            "equity": eq,
            "peak_equity": st.peak_equity,
            "drawdown": dd,
            "gross_exposure": gross / eq if eq > 0 else 0.0,
            "net_exposure": net / eq if eq > 0 else 0.0,
            "pnl": pnl,
            "limits": rows,
            "mode": st.mode,
            "mode_reason": st.mode_reason,
            "halted": st.halted,
            "halt_reason": st.halt_reason,
            "locks": dict(st.locks),
            "paused_symbols": paused,
            "global_pause": gp_why if i <= gp_until else "",
        }

    def snapshot(self) -> dict[str, object]:
        """What a restart must keep: the human mode and the drawdown halt."""
        st = self.state
        return {
            "mode": st.mode,
            "mode_reason": st.mode_reason,
            "halted": st.halted,
            "halt_reason": st.halt_reason,
        }

    def restore(self, snap: dict[str, object], i: int = 0) -> None:
        st = self.state
        mode = str(snap.get("mode", "running"))
        if mode in ("paused", "killed"):
            st.mode, st.mode_reason = mode, str(snap.get("mode_reason", ""))
            self._open_span(mode, i, f"restored from the journal: {st.mode_reason}")
        if snap.get("halted"):
            st.halted, st.halt_reason = True, str(snap.get("halt_reason", ""))
            self._open_span("halted", i, f"restored from the journal: {st.halt_reason}")
            self._event(i, "halt", "", f"restored from the journal: {st.halt_reason}")

    # -- bookkeeping ----------------------------------------------------------------------------
    def _event(self, i: int, kind: str, sym: str, detail: str) -> RiskEvent:
        ev = RiskEvent(int(self.md.timeline[i]) if i < self.md.length else 0, i, kind, sym, detail)
        self.events.append(ev)
        return ev

    def _open_span(self, kind: str, i: int, detail: str, end: int | None = None) -> None:
        if end is not None:
            self.spans.append(Span(kind, i, end, detail))
            return
        if kind not in self._open:
            self._open[kind] = len(self.spans)
            self.spans.append(Span(kind, i, None, detail))

    def _close_span(self, kind: str, i: int) -> None:
        j = self._open.pop(kind, None)
        if j is not None:
            self.spans[j] = self.spans[j]._replace(end=i)

    def breaker_trips(self) -> list[RiskEvent]:
        """Every per-symbol and market-wide breaker trip on the run's live bars (computed at the end)."""
        out: list[RiskEvent] = []
        jobs = [(s, "trip") for s in self.md.traded] + ([(self.index, "index_trip")] if self.index else [])
        for sym, col in jobs:
            b = self.md.bars[sym]
            if b.n == 0:
                continue
            f = self.features(sym)
            if f.complete and f.done == 0:
                # a backtest's features: the trip flags of every bar from the columns already
                # computed over the whole history (numpy), not every column again block by block
                # in pandas; the same numbers (features.py: both ways agree to the last bit)
                flags = _trip_flags(f, col)
            else:
                f.ensure(b.n - 1)
                flags = f.cols[col][: b.n]
            live = b.tl[: b.n] >= 0
            for k in np.flatnonzero((flags > 0) & live):
                if col == "index_trip":
                    out.append(
                        RiskEvent(int(b.ts[k]), int(b.tl[k]), "market_breaker", sym, market_reason(f, int(k)))
                    )
                else:
                    out.append(
                        RiskEvent(int(b.ts[k]), int(b.tl[k]), "breaker", sym, breaker_reason(f, int(k)))
                    )
        return sorted(out)


def _trip_flags(f: SymbolFeatures, col: str) -> np.ndarray:
    """``f.cols[col]`` (``trip`` or ``index_trip``) over every bar of a complete history, nonzero
    exactly where ``ensure`` would make it nonzero: from the columns computed over every block at
    once (``trip``: the move and volume bits plus the volatility ratio against its limit)."""
    from hflite.risk.features import TRIP_VOL

    n = f.bars.n
    if col == "index_trip":
        return f._group("index")["index_trip"][:n]
    trip = f._col.get("trip")
    if trip is not None:
        return trip[:n]
    brk = f.limits.breakers
    if not trips_on(f.limits, f.inst):
        return np.zeros(n)
    bits = f._spike_bits()[:n].copy() if brk.sigma or brk.volume_spike else np.zeros(n)
    if brk.vol_ratio:
        bits += np.where(f._vol_ratios() > brk.vol_ratio, TRIP_VOL, 0)
    return bits


def _best(r: np.ndarray, den: np.ndarray, signs: np.ndarray, names: list[str]) -> tuple[float, str]:
    """The highest direction-adjusted correlation of row 0 of ``r`` (demeaned returns) with the
    others (``den``: the others' roots of sums of squares), and whose it is; NaN when none."""
    x, y = r[0], r[1:]
    den *= math.sqrt(float(x.dot(x)))  # x @ x: the same dot (BLAS ddot), without matmul's ufunc machinery
    if den.item(den.argmin()) > 0:  # as np.minimum.reduce(den) > 0: argmin finds the first NaN too
        corr = (y @ x) / den
    else:  # a flat series has no correlation (NaN), without entering np.errstate
        corr = np.divide(y @ x, den, out=np.full(len(den), math.nan), where=den > 0)
    eff = corr * signs
    j = int(eff.argmax())  # the first maximum, or the first NaN when there is one
    top = eff.item(j)
    if top != top:  # as nanargmax: the first maximum of the others, if any
        if np.isnan(eff).all():
            return math.nan, ""
        j = int(np.nanargmax(eff))
        top = eff.item(j)
    return top, names[j]


def _key_at(keys: np.ndarray, row: int, base: int, r: int) -> int:
    return keys.item(row, base + r)


def _demeaned(m: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Log returns of ``rows`` series of ``cols`` log prices laid end to end in ``m``, less each
    row's mean: a (rows x cols) buffer and the view of its first ``cols - 1`` columns."""
    # log returns, as np.diff(axis=1), in one flat subtraction; the slot after each row's last
    # return (the next row's first value minus this row's last) is left out of the view
    flat = np.empty(len(m))
    np.subtract(m[1:], m[:-1], out=flat[:-1])
    buf = flat.reshape(rows, cols)
    r = buf[:, :-1]
    # as ``r - r.mean(axis=1, keepdims=True)``, without its Python wrapper (the same reduction, so
    # the same numbers)
    mean = np.add.reduce(r, axis=1, keepdims=True)
    mean /= r.shape[1]
    r -= mean
    return buf, r
