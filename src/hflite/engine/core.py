"""THE engine: one ``step(i)`` for every mode.

At timeline index i (a bar-close time), for each symbol with a bar there: the venue matches working
orders against the bar (fills book into the portfolio; entries get their protective orders),
trailing stops and time stops update; then the portfolio is marked to market; then the strategy's
signal for the bar becomes intents, the risk gate rules on each, and approved ones become orders
that may fill from the symbol's NEXT bar on.

Two drivers feed it. ``run_backtest`` steps only the bars where something can happen (a signal that
changes direction, a working order that can fill, a trailing or time stop) and values the quiet
stretches in between with numpy, as positions and cash cannot change there. The replay/live runtime
(``engine.runtime``) steps every bar as it arrives. ``tests/test_parity.py`` proves both give the same
orders, fills and equity.
"""

from __future__ import annotations

import gc
import heapq
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hflite.domain.instrument import Instrument
from hflite.domain.order import OPEN, Fill, FillRecord, Order, OrderStatus, OrderType, Side, TimeInForce
from hflite.domain.portfolio import Portfolio
from hflite.domain.signal import Exits, IntentKind, OrderIntent, RiskVerdict
from hflite.engine.market import MarketData, SymbolBars
from hflite.execution.oms import Journal, MemoryJournal, OrderIds
from hflite.execution.venues.base import Venue
from hflite.execution.venues.sim import BarView
from hflite.risk.gate import RiskLimits, evaluate
from hflite.risk.manager import RegimeSource, RiskEvent, RiskManager
from hflite.strategy.base import SignalSet

_new = tuple.__new__  # a NamedTuple from positional values, without its Python-level __new__
_NEW, _UNKNOWN = OrderStatus.NEW, OrderStatus.UNKNOWN
_MARKET, _GTC = OrderType.MARKET, TimeInForce.GTC


class StrategyError(RuntimeError):
    """A strategy raised: names the bar and symbol."""


@dataclass(slots=True)
class Protection:
    """Protective exits of one open position."""

    exits: Exits
    atr: float
    entry_k: int
    stop: Order | None = None
    take_profit: Order | None = None


class Advisor(Protocol):
    """Reviews an entry risk approved and returns the verdict to act on (never a larger size)."""

    def __call__(
        self, intent: OrderIntent, verdict: RiskVerdict, values: dict[str, float], instrument: Instrument
    ) -> RiskVerdict: ...


@dataclass(slots=True)
class Decision:
    """An intent with its reason and verdict: the trail behind every order."""

    intent: OrderIntent
    verdict: RiskVerdict
    order_id: str | None
    values: dict[str, float] = field(default_factory=dict)


class Engine:
    """The composition of strategy signals, risk gate, OMS, venue and portfolio over one timeline."""

    def __init__(
        self,
        md: MarketData,
        signals: dict[str, SignalSet],
        *,
        strategy_name: str,
        limits: RiskLimits,
        venue: Venue,
        initial_cash: float,
        tif: TimeInForce = TimeInForce.GTC,
        journal: Journal | None = None,
        bars_per_year: float = 252.0,
        regime_source: RegimeSource | None = None,
        scheduled: list[tuple[int, str, str]] | None = None,
        advisor: Advisor | None = None,
        id_prefix: str = "",
    ) -> None:
        self.md = md
        #: A second look at each entry risk approved (the LLM portfolio manager); it may only shrink.
        self.advisor = advisor
        self.signals = signals
        self.strategy_name = strategy_name
        self.limits = limits
        self.venue = venue
        self.tif = tif
        self.journal = journal or MemoryJournal()
        self.ids = OrderIds(strategy_name, id_prefix)
        self.portfolio = Portfolio.with_cash(initial_cash)
        self.initial_cash = float(initial_cash)
        self.risk = RiskManager(
            limits, md, float(initial_cash), bars_per_year=bars_per_year, regime_source=regime_source
        )
        #: Human commands: scheduled (ts ns, action, reason) from a config, and a queue the live
        #: runtime fills from the journal. Both are applied after the mark, before decisions.
        self.scheduled = sorted(scheduled or [])
        self.commands: deque[tuple[str, str]] = deque()
        self._journaled = 0  # risk events written to the journal so far
        self.equity = np.full(md.length, np.nan)
        self.orders: dict[str, Order] = {}
        self.fills: list[Fill] = []
        self.decisions: list[Decision] = []
        self.protection: dict[str, Protection] = {}
        self.exit_orders: dict[str, Order] = {}
        self.entry_orders: dict[str, Order] = {}
        self.qty_log: list[tuple[int, str, float]] = []
        self.cash_log: list[tuple[int, str, float]] = []
        self._entry_meta: dict[str, tuple[Exits, float]] = {}
        self.last_i = -1
        self.steps = 0
        self._inst: dict[str, Instrument] = {s: b.instrument for s, b in md.bars.items()}
        #: Wall clock (ns UTC) for execution-quality stamps where a journal keeps them (replay, paper,
        #: live); None in a backtest, which stamps nothing (the fields stay 0) and journals plain fills.
        self.clock: Callable[[], int] | None = (
            time.time_ns if journal is not None and not isinstance(journal, MemoryJournal) else None
        )

    # -- the step -------------------------------------------------------------------------------
    def step(self, i: int) -> None:
        """Advance to timeline index i (every index before it must be done or quiet)."""
        if i > self.last_i + 1:
            self._value_quiet(self.last_i + 1, i)
        group = self.md.group(i)
        working, protection = self.venue.working, self.protection
        for sym, k in group:
            if working[sym] or sym in protection:
                self._on_bar(sym, k, i)
        self._mark(i)
        if self.commands or (self.scheduled and self.scheduled[0][0] <= self.md.timeline[i]):
            self._apply_commands(i)
        if self.risk.state.mode != "killed":
            for sym, k in group:
                self._decide(sym, k, i)
        self.last_i = i
        self.steps += 1
        if len(self.risk.events) > self._journaled:
            self._journal_risk()

    @property
    def halted_at(self) -> int | None:
        """Timeline index where the drawdown halt first tripped (None if it never did)."""
        return self.risk.halted_at

    @property
    def stopped(self) -> bool:
        """Killed and flat, with nothing working: a live runtime may stop here."""
        return (
            self.risk.state.mode == "killed"
            and not any(p.qty for p in self.portfolio.positions.values())
            and not any(self.venue.working.values())
        )

    # -- human commands (pause, resume, close-all, kill) -------------------------------------------
    def _apply_commands(self, i: int) -> None:
        now = int(self.md.timeline[i])
        while self.scheduled and self.scheduled[0][0] <= now:
            _, action, reason = self.scheduled.pop(0)
            self.command(action, reason, i)
        while self.commands:
            action, reason = self.commands.popleft()
            self.command(action, reason, i)

    def command(self, action: str, reason: str, i: int) -> RiskEvent:
        """Apply one command at timeline index i: the state change, then the orders it needs."""
        event = self.risk.command(action, reason, i)
        if action in ("close_all", "kill"):
            why = f"{action.replace('_', '-')}: {event.detail}"
            for sym in list(self.md.traded):
                if action == "kill":
                    for o in list(self.venue.working[sym]):
                        if not o.reduce_only or o.parent_id is not None:
                            self.venue.cancel(o, int(self.md.timeline[i]))
                            self.journal.order_updated(o)
                    self.entry_orders.pop(sym, None)
                if self.portfolio.qty(sym) or sym in self.entry_orders:
                    k = self.risk._bar_at(sym, i)
                    if k >= 0:
                        self._exit(sym, k, i, why)
        return event

    def _journal_risk(self) -> None:
        """Journal new risk events with the state a restart must keep (halts included)."""
        snap = self.risk.snapshot()
        for ev in self.risk.events[self._journaled :]:
            self.journal.risk_event(ev._asdict(), snap)
        self._journaled = len(self.risk.events)

    def finish(self) -> None:
        """Value the quiet tail after the last stepped bar."""
        if self.last_i + 1 < self.md.length:
            self._value_quiet(self.last_i + 1, self.md.length)
            self.last_i = self.md.length - 1
        if len(self.risk.events) > self._journaled:
            self._journal_risk()

    # -- bars: fills, trailing and time stops -----------------------------------------------------
    def _on_bar(self, sym: str, k: int, i: int) -> None:
        b = self.md.bars[sym]
        prev_range = b.high.item(k - 1) - b.low.item(k - 1) if k > 0 else float("nan")
        bar = BarView(
            k,
            i,
            b.ts.item(k),
            b.open.item(k),
            b.high.item(k),
            b.low.item(k),
            b.close.item(k),
            b.volume.item(k),
            prev_range,
        )
        for closed in self.venue.match(sym, bar, self._on_fill):
            self.journal.order_updated(closed)
        o = self.entry_orders.get(sym)
        if o is not None and o.status not in OPEN:
            del self.entry_orders[sym]
        o = self.exit_orders.get(sym)
        if o is not None and o.status not in OPEN:
            del self.exit_orders[sym]
        prot = self.protection.get(sym)
        if prot is None:
            return
        if prot.exits.trailing and prot.stop is not None and prot.stop.is_open:
            self._trail(sym, k, prot)
        n_stop = prot.exits.time_stop_bars
        if n_stop and k - prot.entry_k >= n_stop and sym not in self.exit_orders:
            self._exit(sym, k, i, f"time stop: {k - prot.entry_k} bars held (limit {n_stop})")

    def _trail(self, sym: str, k: int, prot: Protection) -> None:
        b, stop = self.md.bars[sym], prot.stop
        if stop is None or stop.price is None:
            return
        atr = self.signals[sym].atr[k]
        if not atr > 0:
            return
        dist = prot.exits.stop_atr * atr
        inst = self._inst[sym]
        if stop.side is Side.SELL:
            level = inst.round_price(b.high[k] - dist)
            if level > stop.price:
                self.venue.replace(stop, level)
        else:
            level = inst.round_price(b.low[k] + dist)
            if level < stop.price:
                self.venue.replace(stop, level)

    def _on_fill(self, order: Order, fill: Fill) -> None:
        sym = fill.symbol
        ccy = self._inst[sym].currency
        pf, journal = self.portfolio, self.journal
        pf.apply_fill(fill, ccy, reason=order.reason)
        self.fills.append(fill)
        clock = self.clock
        if clock is None:
            journal.fill(fill)
        else:  # what the fill is measured against (execution.quality), in the same journal write
            journal.fill(
                _new(FillRecord, (*fill, order.type.value, order.price, order.created_ts,
                                  order.decision_price, order.arrival_price, order.decided_ns,
                                  order.sent_ns, clock(), self.md.timeline.item(fill.bar_index)))
            )  # fmt: skip
        journal.order_updated(order)
        qty = pf.positions[sym].qty
        self.qty_log.append((fill.bar_index, sym, qty))
        self.cash_log.append((fill.bar_index, ccy, pf.cash[ccy]))
        prot = self.protection.get(sym)
        if abs(qty) <= 1e-12:
            self._closed(sym, order, fill)
            if prot is not None:
                for o in (prot.stop, prot.take_profit):
                    if o is not None and (o.is_open or o.status is _UNKNOWN):
                        self.venue.cancel(o, fill.ts)
                        self.journal.order_updated(o)
                del self.protection[sym]
            return
        if not order.reduce_only and prot is None:
            meta = self._entry_meta.pop(order.id, None)
            if meta is not None:
                self._protect(sym, order, fill, qty, *meta)
            return
        if prot is not None:
            for o in (prot.stop, prot.take_profit):
                if o is not None and o.is_open:
                    self.venue.resize(o, o.filled_qty + abs(qty))

    def _closed(self, sym: str, order: Order, fill: Fill) -> None:
        """A position went flat: tell the risk manager (stop-outs, the trade's return)."""
        k = self.risk._bar_at(sym, fill.bar_index)  # the symbol's bar the fill happened on
        if order.reason == "stop-loss":
            self.risk.on_stop_out(sym, k, fill.bar_index)
        for t in reversed(self.portfolio.trades):
            if t.symbol == sym:
                if not t.is_open and t.qty:
                    self.risk.on_trade_closed(sym, k, fill.bar_index, t.pnl / (t.entry_price * t.qty) * 100)
                break

    def _protect(self, sym: str, entry: Order, fill: Fill, qty: float, exits: Exits, atr: float) -> None:
        if not (exits.stop_atr or exits.take_profit_atr or exits.time_stop_bars):
            return  # nothing to watch: the position needs no per-bar attention
        k = self.risk._bar_at(sym, fill.bar_index)  # the symbol's bar the fill happened on
        prot = Protection(exits, atr, k)
        self.protection[sym] = prot
        if not atr > 0:
            return
        inst = self._inst[sym]
        direction = 1 if qty > 0 else -1
        side = Side.SELL if direction > 0 else Side.BUY
        i = fill.bar_index
        both = exits.stop_atr > 0 and exits.take_profit_atr > 0
        oco = f"{entry.id}-oco" if both else None
        if exits.stop_atr > 0:
            price = inst.round_price(fill.price - direction * exits.stop_atr * atr)
            prot.stop = self._new_order(
                sym,
                side,
                OrderType.STOP,
                abs(qty),
                i,
                f"{entry.id}-sl",
                price=price,
                reason="stop-loss",
                parent=entry,
                first_bar=i,
                oco_group=oco,
                send=not both,
            )
        if exits.take_profit_atr > 0:
            price = inst.round_price(fill.price + direction * exits.take_profit_atr * atr)
            prot.take_profit = self._new_order(
                sym,
                side,
                OrderType.LIMIT,
                abs(qty),
                i,
                f"{entry.id}-tp",
                price=price,
                reason="take-profit",
                parent=entry,
                first_bar=i,
                oco_group=oco,
                send=not both,
            )
        if both and prot.stop is not None and prot.take_profit is not None:
            pair = [prot.stop, prot.take_profit]
            if (clock := self.clock) is not None:
                for o in pair:
                    self._sending(o, i, clock)
            self.venue.submit_oco(pair)  # one cancels the other, at the venue where it can
            for o in pair:
                self.journal.order_updated(o)

    # -- valuation ------------------------------------------------------------------------------
    def _mark(self, i: int) -> None:
        md, pf = self.md, self.portfolio
        fx, close = md.fx_tl, md.close_tl
        eq = 0.0
        for ccy, amount in pf.cash.items():
            eq += amount * fx[ccy].item(i)
        cash = eq
        held: dict[str, float] = {}
        exiting = self.exit_orders
        for sym, pos in pf.positions.items():
            if pos.qty:
                mv = pos.qty * close[sym].item(i) * fx[self._inst[sym].currency].item(i)
                eq += mv
                if sym not in exiting:
                    held[sym] = mv
        for sym, o in self.entry_orders.items():
            if o.is_open:
                usd = o.side.sign * o.remaining * close[sym].item(i)
                usd *= fx[self._inst[sym].currency].item(i)
                held[sym] = held.get(sym, 0.0) + usd
                if usd > 0:
                    cash -= usd
        self.equity[i] = eq
        self.risk.set_book(held, cash)
        self.risk.observe(i, eq)

    def _value_quiet(self, a: int, b: int) -> None:
        """Equity over [a, b) where positions and cash are constant (vectorised)."""
        md, pf = self.md, self.portfolio
        held = [(sym, pos.qty) for sym, pos in pf.positions.items() if pos.qty]
        if (
            len(pf.cash) == 1
            and "USD" in pf.cash
            and len(held) <= 1
            and (not held or self._inst[held[0][0]].currency == "USD")
        ):
            cash = pf.cash["USD"]
            eq = self.equity[a:b]  # written in place
            if held:  # the same arithmetic as _mark: cash + qty * close * 1.0
                np.multiply(md.close_tl[held[0][0]][a:b], held[0][1], out=eq)
                eq += cash
            else:
                eq.fill(cash)
            self.risk.observe_range(a, eq)
            return
        eq = np.zeros(b - a)
        for ccy, amount in pf.cash.items():
            if ccy == "USD":
                eq += amount
            else:
                eq += amount * md.fx_tl[ccy][a:b]
        for sym, pos in pf.positions.items():
            if pos.qty:
                eq += pos.qty * md.close_tl[sym][a:b] * md.fx_tl[self._inst[sym].currency][a:b]
        self.equity[a:b] = eq
        self.risk.observe_range(a, eq)

    # -- decisions ------------------------------------------------------------------------------
    def direction(self, sym: str) -> int:
        """Where the symbol is heading: 0 while exiting, else the position's or pending entry's sign."""
        if sym in self.exit_orders:
            return 0
        q = self.portfolio.qty(sym)
        if q:
            return 1 if q > 0 else -1
        o = self.entry_orders.get(sym)
        return o.side.sign if o is not None else 0

    def _decide(self, sym: str, k: int, i: int) -> None:
        sig = self.signals[sym]
        t = sig.target.item(k)
        if t != t:
            return
        cur = self.direction(sym)
        if t == cur:
            return
        try:
            reason = sig.reason(k)
        except Exception as exc:  # a malformed template is the strategy's bug: name where
            raise StrategyError(f"{self.strategy_name}: reason for {sym} at bar {k} failed: {exc}") from exc
        if cur != 0:
            self._exit(sym, k, i, reason)
        if t != 0:
            self._enter(sym, k, i, 1 if t > 0 else -1, reason)

    def _exit(self, sym: str, k: int, i: int, reason: str) -> None:
        pending = self.entry_orders.pop(sym, None)
        if pending is not None and (pending.is_open or pending.status is _UNKNOWN):
            self.venue.cancel(pending, int(self.md.timeline[i]))
            self.journal.order_updated(pending)
        qty = self.portfolio.qty(sym)
        if not qty or sym in self.exit_orders:
            return
        side = Side.SELL if qty > 0 else Side.BUY
        intent = self._intent(sym, k, i, IntentKind.EXIT, side, reason, qty=abs(qty))
        verdict = evaluate(self.limits, self.risk.state, intent, self._inst[sym])
        self.risk.release(sym)
        order = self._record(sym, k, i, intent, verdict, reduce_only=True, tif=TimeInForce.GTC)
        if order is not None:
            self.exit_orders[sym] = order

    def _enter(self, sym: str, k: int, i: int, direction: int, reason: str) -> None:
        side = Side.BUY if direction > 0 else Side.SELL
        intent = self._intent(sym, k, i, IntentKind.ENTRY, side, reason)
        inst = self._inst[sym]
        fx = self.md.fx_tl[inst.currency].item(i)
        verdict = self.risk.check(intent, inst, k, i, fx)
        if self.advisor is not None and verdict.qty_approved > 0:
            advised = self.advisor(intent, verdict, self._values(sym, k), inst)
            if advised.qty_approved > verdict.qty_approved:  # shrink() never does this; a bad advisor might
                raise StrategyError(f"advisor raised {intent.id} above what risk approved")
            verdict = advised
        order = self._record(sym, k, i, intent, verdict, reduce_only=False, tif=self.tif)
        if order is not None:
            self.entry_orders[sym] = order
            self.risk.commit(sym, side.sign * order.qty * intent.price * fx)
            self._entry_meta[order.id] = (intent.exits, intent.atr)

    def _record(
        self,
        sym: str,
        k: int,
        i: int,
        intent: OrderIntent,
        verdict: RiskVerdict,
        *,
        reduce_only: bool,
        tif: TimeInForce,
    ) -> Order | None:
        """Journal the verdict, send a market order for what it approved, and keep the decision."""
        self.journal.verdict(verdict)
        order = None
        if verdict.qty_approved > 0:
            order = self._new_order(
                sym,
                intent.side,
                OrderType.MARKET,
                verdict.qty_approved,
                i,
                self.ids.next(sym, self.md.timeline.item(i), "x" if reduce_only else "e"),
                reason=intent.reason,
                decision_id=intent.id,
                reduce_only=reduce_only,
                tif=tif,
            )
        self.decisions.append(Decision(intent, verdict, order.id if order else None, self._values(sym, k)))
        return order

    def _intent(
        self, sym: str, k: int, i: int, kind: IntentKind, side: Side, reason: str, qty: float | None = None
    ) -> OrderIntent:
        sig = self.signals[sym]
        return _new(OrderIntent, (
            f"{self.strategy_name}-{sym}-d{len(self.decisions)}",
            sym,
            kind,
            side,
            self.md.timeline.item(i),
            i,
            reason,
            self.md.bars[sym].close.item(k),
            float(sig.atr.item(k)),
            qty,
            sig.exits,
            1.0 if sig.size is None else float(sig.size[k]),
        ))  # fmt: skip

    def _values(self, sym: str, k: int) -> dict[str, float]:
        sig = self.signals[sym]
        out = {name: float(arr.item(k)) for name, arr in sig.values.items()}
        out["atr"] = float(sig.atr.item(k))
        return out

    def _new_order(
        self,
        sym: str,
        side: Side,
        otype: OrderType,
        qty: float,
        i: int,
        order_id: str,
        *,
        price: float | None = None,
        reason: str = "",
        decision_id: str = "",
        reduce_only: bool = False,
        parent: Order | None = None,
        tif: TimeInForce = TimeInForce.GTC,
        first_bar: int | None = None,
        oco_group: str | None = None,
        send: bool = True,
    ) -> Order:
        order = Order(  # positional, in field order (id ... closed_ts): cheaper than keywords
            order_id,
            sym,
            side,
            otype,
            qty,
            self.md.timeline.item(i),
            price,
            tif,
            _NEW,
            0.0,
            0.0,
            reason,
            decision_id or (parent.decision_id if parent else ""),
            parent.id if parent else None,
            oco_group,
            reduce_only or parent is not None,
            i,
            i + 1 if first_bar is None else first_bar,
            None,
        )
        clock = self.clock
        if clock is not None:  # a journaled run measures its execution (a backtest has nothing to)
            order.decision_price = self.md.close_tl[sym].item(i)  # the decision bar's close
            order.decided_ns = clock()
        self.orders[order.id] = order
        self.risk.on_order(order.created_ts)
        self.journal.order_created(order)  # journal BEFORE send
        if send:
            if clock is not None:
                self._sending(order, i, clock)
            self.venue.submit(order)
            self.journal.order_updated(order)
        return order

    def _sending(self, order: Order, i: int, clock: Callable[[], int]) -> None:
        """Stamp an order as it goes to the venue (journaled runs): the last price known (timeline
        index ``i``'s close) and the wall-clock time."""
        order.arrival_price = self.md.close_tl[order.symbol].item(i)
        order.sent_ns = clock()

    # -- what the backtest driver needs ---------------------------------------------------------
    def next_needed(self, sym: str, k: int, targets: Targets) -> int:
        """The symbol's next bar (after k) on which stepping can change anything, or n if none."""
        working = self.venue.working[sym]
        for o in working:
            if o.type is _MARKET or o.tif is not _GTC:
                return k + 1  # fills or ends on the next bar: nothing can come sooner
        b = self.md.bars[sym]
        best = targets.next_other(k, self.direction(sym), b.n)
        prot = self.protection.get(sym)
        if prot is not None:
            if prot.exits.trailing:
                return min(best, k + 1)
            if prot.exits.time_stop_bars:
                best = min(best, max(prot.entry_k + prot.exits.time_stop_bars, k + 1))
        for o in working:  # stops and limits (GTC) only, after the loop above
            if best <= k + 1:
                break
            best = min(best, _first_cross(b, o, k + 1, best))
        return best


class Targets:
    """A symbol's targets as runs of one value, to find the next bar whose instruction differs
    from the current direction without scanning: the first bar after k whose target is -1, 0 or
    1 and not the direction (NaN and any other value give no instruction)."""

    __slots__ = ("starts", "values")

    def __init__(self, target: np.ndarray) -> None:
        code = np.where(np.isin(target, (-1.0, 0.0, 1.0)), target, 2.0)  # 2: no instruction
        starts = np.flatnonzero(code[1:] != code[:-1]) + 1 if len(code) else np.empty(0, np.int64)
        self.starts: list[int] = [0, *starts.tolist()] if len(code) else []
        self.values: list[float] = code[self.starts].tolist() if len(code) else []

    def next_other(self, k: int, direction: int, n: int) -> int:
        """The first bar after k (n if none) whose instruction is not ``direction``."""
        starts, values = self.starts, self.values
        r = bisect_right(starts, k + 1) - 1  # the run holding bar k + 1
        for j in range(max(r, 0), len(starts)):
            v = values[j]
            if v != 2.0 and v != direction:
                return max(starts[j], k + 1)
        return n


def _first_cross(b: SymbolBars, o: Order, start: int, stop: int) -> int:
    """First bar in [start, stop) whose range reaches the order's trigger, else ``stop``."""
    buy = o.side is Side.BUY
    hits_high = (o.type is OrderType.STOP) == buy  # buy stop / sell limit trigger on the high
    arr = b.high if hits_high else b.low
    price = o.price
    lo, size = start, 64
    while lo < stop:
        hi = min(lo + size, stop)
        seg = arr[lo:hi]
        hit = np.flatnonzero(seg >= price) if hits_high else np.flatnonzero(seg <= price)
        if len(hit):
            return lo + int(hit[0])
        lo, size = hi, size * 4
    return stop


def _reschedule(
    engine: Engine, heap: list[tuple[int, str]], sym: str, i: int, col: int, index: Targets
) -> None:
    """Push the symbol's next bar where stepping can change anything (after timeline index i)."""
    b = engine.md.bars[sym]
    k = engine.md.slots.item(i, col)
    if k < 0:
        k = engine.risk._bar_at(sym, i)
    k_next = engine.next_needed(sym, k, index)
    if k_next < b.n:
        heapq.heappush(heap, (b.tl.item(k_next), sym))


@contextmanager
def _fewer_collections(gen0: int = 50_000) -> Iterator[None]:
    """Run the cyclic garbage collector every ``gen0`` allocations instead of every 700 (the
    default) while a backtest runs: its loop makes many small containers that live on (orders,
    fills, verdicts), and rescanning them is about 7% of its time. Cycles are still collected;
    the thresholds are restored afterwards."""
    before = gc.get_threshold()
    if before[0] >= gen0:
        yield
        return
    gc.set_threshold(gen0, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def run_backtest(engine: Engine) -> Engine:
    """Drive the engine over its whole timeline, stepping only where something can happen."""
    with _fewer_collections():
        return _run(engine)


def _run(engine: Engine) -> Engine:
    md = engine.md
    engine.risk.prepare()  # the timeline is known: its calendar once, not per stretch
    sig_index = {sym: Targets(engine.signals[sym].target[: md.bars[sym].n]) for sym in md.traded}
    column = {sym: j for j, sym in enumerate(md.traded)}
    heap: list[tuple[int, str]] = []
    for sym in md.traded:
        b = md.bars[sym]
        k = engine.next_needed(sym, b.first_live - 1, sig_index[sym])
        if k < b.n:
            heap.append((b.tl.item(k), sym))
    for ts, _, _ in engine.scheduled:  # step where a scheduled command falls due
        j = int(np.searchsorted(md.timeline, ts, side="left"))
        if j < md.length:
            heap.append((j, ""))
    heapq.heapify(heap)
    while heap:
        i = heap[0][0]
        due: list[str] = []
        while heap and heap[0][0] == i:
            sym = heapq.heappop(heap)[1]
            if sym not in due:
                due.append(sym)
        events = len(engine.risk.events)
        engine.step(i)
        if engine.stopped:
            break
        if len(engine.risk.events) > events and any(
            e.kind in ("close_all", "kill", "resume") for e in engine.risk.events[events:]
        ):
            due = list(md.traded)  # a command placed orders anywhere: look at every symbol again
        for sym in due:
            if sym:
                _reschedule(engine, heap, sym, i, column[sym], sig_index[sym])
    engine.finish()
    return engine
