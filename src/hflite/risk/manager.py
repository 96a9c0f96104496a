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
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from hflite.domain.instrument import Instrument
from hflite.domain.signal import OrderIntent, RiskVerdict
from hflite.risk.features import BLOCK, SymbolFeatures, breaker_reason, market_reason, rule_regime
from hflite.risk.gate import MarketContext, RiskState, evaluate
from hflite.risk.limits import Regime, RiskLimits

if TYPE_CHECKING:
    from hflite.engine.market import MarketData

PERIODS = ("daily", "weekly", "monthly")
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
        self._loss_limits = {
            "daily": limits.daily_loss_pct,
            "weekly": limits.weekly_loss_pct,
            "monthly": limits.monthly_loss_pct,
        }
        self._key: dict[str, int | None] = dict.fromkeys(PERIODS)
        self._anchor: dict[str, float] = dict.fromkeys(PERIODS, initial_equity)
        self.last_equity = initial_equity
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
        self._index_at: tuple[int, str, str] = (-1, "", "")  # (i, market breaker, regime) at i
        self._bar_memo: tuple[int, str, int] = (-1, "", -1)  # the last _bar_at: (i, symbol, k)
        self._slot = {s: j for j, s in enumerate(md.traded)}  # traded symbol -> column of md.slots
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
            f = self._features[sym] = SymbolFeatures(self.limits, self.md.bars[sym], self.bars_per_year)
        return f

    def _features_at(self, sym: str, k: int) -> SymbolFeatures:
        """The symbol's features computed at least through bar k: through the end of k's block
        when those bars are already there (a backtest). Values never depend on later bars, so this
        changes no number; it computes each block once instead of again at every new bar."""
        f = self.features(sym)
        if k >= f.done:
            f.ensure(min(f.bars.n, (k // BLOCK + 1) * BLOCK) - 1)
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
        return rule_regime(self._features_at(sym, k), k)

    def regime_at(self, i: int) -> Regime | None:
        return self.regime_source(self.md, i) if self.regime_source is not None else None

    # -- equity marks: drawdown halt and loss limits ---------------------------------------------
    def _period_keys(self, ts: int) -> tuple[int, int, int]:
        # whole seconds, floored: ``ts / 1e9`` rounds a point just before midnight into the next day
        d = datetime.fromtimestamp(ts // 1_000_000_000, UTC).astimezone(self.tz).date()
        day = d.toordinal()
        return day, day - d.weekday(), d.year * 12 + d.month - 1

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
        keys = self._period_keys(int(self.md.timeline[i]))
        for p, key in zip(PERIODS, keys, strict=True):
            if key != self._key[p]:
                self._new_period(p, key, i)
            limit = self._loss_limits[p]
            if limit and p not in st.locks and self._anchor[p] > 0:
                loss = (1 - eq / self._anchor[p]) * 100
                if loss >= limit:
                    self._lock(p, i, loss)
        self.last_equity = eq

    def observe_range(self, a: int, eq: np.ndarray) -> None:
        """Mark the points [a, a + len(eq)) at once (quiet stretches: same rules as ``observe``)."""
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
        peaks = np.maximum.accumulate(np.maximum(eq, st.peak_equity))
        lim = self.limits.max_drawdown_pct
        if not st.halted and lim and st.peak_equity > 0:
            dd = (1 - eq / peaks) * 100
            hit = np.flatnonzero(dd >= lim)
            if len(hit):
                j = int(hit[0])
                todo.append((j, 0, partial(self._halt, a + j, float(dd[j]))))
        st.peak_equity = max(st.peak_equity, float(peaks[-1]))
        ts = self.md.timeline[a : a + n]
        local = pd.DatetimeIndex(pd.to_datetime(ts, utc=True)).tz_convert(self.tz)
        # the local date from the wall-clock time (``normalize`` fails where a day has no 00:00)
        day = local.tz_localize(None).to_numpy().astype("datetime64[D]").astype(np.int64) + 719163
        keys = {
            "daily": day,
            "weekly": day - local.day_of_week.to_numpy(),
            "monthly": local.year.to_numpy() * 12 + local.month.to_numpy() - 1,
        }
        prev_eq = np.empty(n)
        prev_eq[0] = self.last_equity
        prev_eq[1:] = eq[:-1]
        for rank, p in enumerate(PERIODS):
            k = keys[p]
            starts = np.flatnonzero(np.concatenate(([k[0] != self._key[p]], k[1:] != k[:-1]))).tolist()
            new = set(starts)
            bounds = sorted({0, *starts, n})
            limit = self._loss_limits[p]
            locked, anchor = p in st.locks, self._anchor[p]
            for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True):
                if r0 in new:
                    locked, anchor = False, float(prev_eq[r0])
                    todo.append((r0, 2 * rank + 1, partial(self._new_period, p, int(k[r0]), a + r0, anchor)))
                if not limit or locked or anchor <= 0:
                    continue
                loss = (1 - eq[r0:r1] / anchor) * 100
                hit = np.flatnonzero(loss >= limit)
                if len(hit):
                    locked = True
                    j = r0 + int(hit[0])
                    todo.append((j, 2 * rank + 2, partial(self._lock, p, a + j, float(loss[hit[0]]))))
        todo.sort(key=lambda t: t[:2])
        for _, _, act in todo:
            act()
        st.equity = float(eq[-1])
        self.last_equity = float(eq[-1])

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
        self._aggregate()

    def commit(self, sym: str, usd: float) -> None:
        """An approved entry's working order (signed USD) counts from now on."""
        self.held[sym] = self.held.get(sym, 0.0) + usd
        if usd > 0:
            self.state.cash -= usd
        self._aggregate()

    def release(self, sym: str) -> None:
        """A position is being exited: its exposure no longer counts against new entries."""
        if self.held.pop(sym, None) is not None:
            self._aggregate()

    def _aggregate(self) -> None:
        self._held_cache = None
        st, bars = self.state, self.md.bars
        gross = net = 0.0
        sectors: dict[str, float] = {}
        classes: dict[str, float] = {}
        for sym, usd in self.held.items():
            gross += abs(usd)
            net += usd
            inst = bars[sym].instrument
            if inst.sector:
                sectors[inst.sector] = sectors.get(inst.sector, 0.0) + abs(usd)
            cls = inst.asset_class.value
            classes[cls] = classes.get(cls, 0.0) + abs(usd)
        st.gross_exposure, st.net_exposure = gross, net
        st.sector_exposure, st.class_exposure = sectors, classes
        st.open_positions = sum(1 for v in self.held.values() if v)

    # -- the gate -------------------------------------------------------------------------------
    def check(self, intent: OrderIntent, inst: Instrument, k: int, i: int, fx: float) -> RiskVerdict:
        """The gate's verdict on one intent at the symbol's bar k (timeline index i)."""
        ctx = self.context(intent, k, i, fx)
        st = self.state
        gp_until, gp_why = self._global_pause
        st.global_pause = gp_why if i <= gp_until else ""
        eq, anchor = st.equity, self._anchor
        st.period_loss = {p: (1 - eq / anchor[p]) * 100 if anchor[p] > 0 else 0.0 for p in PERIODS}
        return evaluate(self.limits, st, intent, inst, ctx)

    def context(self, intent: OrderIntent, k: int, i: int, fx: float) -> MarketContext:
        sym = intent.symbol
        f = self._features_at(sym, k)
        cols = f.cols
        at, market, regime = self._index_at
        if at != i:
            market, regime = self._index_context(i)
        pause_until, pause_why = self._sym_pause.get(sym, (-1, ""))
        while self._orders and self._orders[0] <= intent.ts - 60_000_000_000:
            self._orders.popleft()
        corr, corr_with = self._correlation(sym, k, intent.side.sign)
        return MarketContext(
            fx=fx,
            last_price=float(self.md.bars[sym].close[k]),
            adv_usd=float(cols["adv_quote"][k]) * fx,
            avg_units=float(cols["avg_units"][k]),
            vol_mult=float(cols["vol_mult"][k]),
            vol_ratio=float(cols["vol_ratio"][k]),
            breaker=breaker_reason(f, k),
            market_breaker=market,
            regime=regime,
            symbol_pause=pause_why if k <= pause_until else "",
            orders_last_minute=len(self._orders),
            max_corr=corr,
            corr_with=corr_with,
        )

    def _index_context(self, i: int) -> tuple[str, str]:
        """The market-wide breaker and the regime at timeline index i: the same for every intent
        decided at i, so kept until the next index."""
        market = ""
        if self.index:
            ki = self._bar_at(self.index, i)
            if ki >= 0:
                market = market_reason(self._features_at(self.index, ki), ki)
        found = self.regime_at(i)
        regime = found.value if found is not None else ""
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
        if idx[0] < 0:
            idx = idx[idx >= 0]
            if len(idx) < w // 2 + 2:
                return math.nan, ""
        cap = self._log_close(int(idx[-1]) + 1)
        names, rows, signs = self._held_rows(sym, cap, sign)
        if not names:
            return math.nan, ""
        # one gather of the symbol's row and the held rows over the window (flat indices)
        rows[0, 0] = self._rows[sym] * cap
        m = self._logc_flat.take(rows + idx).ravel()
        # log returns, as np.diff(axis=1), in one flat subtraction; the slot after each row's last
        # return (the next row's first value minus this row's last) is left out of the view
        flat = np.empty(len(m))
        np.subtract(m[1:], m[:-1], out=flat[:-1])
        r = flat.reshape(len(rows), len(idx))[:, :-1]
        # as ``r - r.mean(axis=1, keepdims=True)`` and ``(y * y).sum(axis=1)``, without their
        # Python wrappers (the same reductions, so the same numbers)
        mean = np.add.reduce(r, axis=1, keepdims=True)
        mean /= r.shape[1]
        r -= mean
        x, y = r[0], r[1:]
        den = np.sqrt(np.add.reduce(y * y, axis=1))
        den *= math.sqrt(float(x @ x))
        # a flat series has no correlation (NaN), without entering np.errstate on every call
        corr = np.divide(y @ x, den, out=np.full(len(den), math.nan), where=den > 0)
        eff = corr * signs
        top = np.maximum.reduce(eff)
        if top == top:  # no NaN: the first maximum, as nanargmax
            j = int(eff.argmax())
        elif np.isnan(eff).all():
            return math.nan, ""
        else:
            j = int(np.nanargmax(eff))
        return float(eff[j]), names[j]

    def _held_rows(self, sym: str, cap: int, sign: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Held symbols other than ``sym`` with a non-zero value, their rows' flat offsets into
        ``_logc`` (``cap`` columns; a column vector with a free first slot for ``sym``'s own),
        and their signs times ``sign``. Cached until the book changes or ``_logc`` grows."""
        if self._held_cache is None or self._held_cache[0] != cap:
            names = [s for s, v in self.held.items() if v]
            rows = np.array([0] + [self._rows[s] * cap for s in names], dtype=np.int64)[:, None]
            signs = np.array([1.0 if self.held[s] > 0 else -1.0 for s in names])
            self._held_cache = (cap, names, rows, signs, -signs)
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
        when = f"{pd.Timestamp(ts, tz='UTC'):%Y-%m-%d}"
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
            f.ensure(b.n - 1)
            live = b.tl[: b.n] >= 0
            for k in np.flatnonzero((f.cols[col][: b.n] > 0) & live):
                if col == "index_trip":
                    out.append(
                        RiskEvent(int(b.ts[k]), int(b.tl[k]), "market_breaker", sym, market_reason(f, int(k)))
                    )
                else:
                    out.append(
                        RiskEvent(int(b.ts[k]), int(b.tl[k]), "breaker", sym, breaker_reason(f, int(k)))
                    )
        return sorted(out)
