"""Paper and live trading (``hflite run``): the live runtime with a venue, a journal it trusts
after a crash, and reconciliation with the venue before every decision that follows a doubt.

One engine: the session wires the same ``LiveRuntime`` and ``Engine`` that replay uses to a feed
(recorded bars at accelerated time, or the providers' live bars) and a venue (the sim venue's fill
rules on live bars = ``paper``; a broker speaking its API = ``fakebroker`` here, the real brokers
next). What it adds around each bar-time (``StepHooks``):

- **Resume, never re-decide.** The journal records each bar-time once every order of it is
  journaled (``decided``). A restart re-runs the bars up to the last decided one with a muted journal
  (nothing written, nothing sent; every order a re-run decision makes must already be in the journal
  under the same client order id, else the run differs from the one that wrote it and the session
  refuses) and with the venue's events replayed from the journal at the bar-times they were applied
  at, so positions, cash, risk state and equity are exactly those of the run before the crash. Then
  it carries on live from the next bar-time.
- **Trust the venue first.** Before the first live decision, after a reconnect, and whenever an
  order's fate is unknown, it reconciles the journal with the venue (``execution.reconcile``): fills
  that happened while we were down are adopted, orders the venue never received are settled, and
  any unexplained difference halts trading (heartbeat ``halted: ...``, an alert line in the log,
  ``hflite status`` and ``hflite reconcile`` show it) until a human accepts a stated resolution
  with ``hflite reconcile --accept``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hflite import logs
from hflite.config import Settings
from hflite.data.store import Store
from hflite.domain.order import TERMINAL, Order, OrderStatus
from hflite.engine.core import Engine
from hflite.engine.market import MarketData
from hflite.engine.result import RunResult
from hflite.engine.run import Prepared, Progress, build_result, make_engine, open_store, prepare
from hflite.engine.runtime import BarEvent, LiveRuntime, RecordedFeed
from hflite.execution.oms import Command, JournalLock, SqliteJournal
from hflite.execution.venues.base import EventVenue, RemoteVenue, VenueEvent, VenueEventKind
from hflite.ops.watch import NoOps, Watch
from hflite.strategy.base import SignalSet

if TYPE_CHECKING:
    from hflite.ops.watch import OpsKit

#: Seconds between reconciliation attempts while halted on an unexplained difference.
HALT_POLL_S = 2.0


class RecoveryError(RuntimeError):
    """A restart could not rebuild the state the journal describes; one line, naming why."""


class ReconcileHalt(RuntimeError):
    """``--once``: the venue and the journal disagree and no human accepted a resolution yet."""


class MutedJournal:
    """The journal while a restart re-runs bars already decided: writes nothing, and checks that
    every order a re-run decision makes is one the journal already holds (same client order id)."""

    def __init__(self, known: set[str], path: Path) -> None:
        self.known = known
        self.path = path
        self.seen: set[str] = set()

    def order_created(self, order: Order) -> None:
        if order.id not in self.known:
            raise RecoveryError(
                f"journal {self.path}: re-running its decided bars made order {order.id}, which it never "
                "recorded: the config, the code or the data changed since it was written. Start a new "
                "journal (--journal) or restore the config it was written with"
            )
        self.seen.add(order.id)

    def order_updated(self, order: Order) -> None:
        return None

    def fill(self, fill: Any) -> None:
        return None

    def verdict(self, verdict: Any) -> None:
        return None

    def risk_event(self, event: dict[str, Any], state: dict[str, Any]) -> None:
        return None

    def venue_event(self, event: VenueEvent, bar_ts: int, i: int) -> None:
        return None

    def close(self) -> None:
        return None


class RecoveryVenue(EventVenue):
    """The venue while a restart re-runs decided bars: the journal's venue events, each delivered at
    the bar-time it was applied at; nothing is sent."""

    def __init__(self, events: list[tuple[int, VenueEvent]]) -> None:
        super().__init__()
        self._by_ts: dict[int, list[VenueEvent]] = {}
        for ts, ev in events:
            self._by_ts.setdefault(ts, []).append(ev)

    def sync(self, ts: int) -> None:
        self.deliver(self._by_ts.pop(ts, []))

    def _send_submit(self, order: Order) -> None:
        return None

    def _send_cancel(self, order: Order) -> None:
        return None

    def _send_replace(self, order: Order, price: float) -> None:
        return None

    def _send_resize(self, order: Order, qty: float) -> None:
        return None

    def _send_oco(self, orders: list[Order]) -> None:
        return None


class RecoveryControl:
    """Human commands while re-running decided bars: each is applied again at the bar-time it took
    effect at the first time (so a pause or kill lands where it landed)."""

    def __init__(self, journal: SqliteJournal) -> None:
        self.journal = journal
        self.ts = -1
        self._by_ts: dict[int, list[Command]] = {}
        for c in journal.commands():
            if c.applied_at is not None:
                self._by_ts.setdefault(int(c.applied_at), []).append(c)

    def pending_commands(self) -> list[Command]:
        return self._by_ts.pop(self.ts, [])

    def mark_applied(self, seq: int, bar_ts: int) -> None:
        return None

    def heartbeat(self, status: str, bar_ts: int | None = None) -> None:
        self.journal.heartbeat("recovering" if status == "running" else status, bar_ts)


@dataclass
class TradeOutcome:
    """What ``trade`` ends with: the result when the feed ended (a recorded feed, ``--once``)."""

    journal: Path
    result: RunResult | None
    steps: int
    resumed_from: int | None  # the last decided bar-time found in the journal at start (ns UTC)
    halted: str = ""  # why trading is refused (an unexplained reconciliation difference), if it is
    notes: list[str] = field(default_factory=list)


def default_journal(settings: Settings) -> Path:
    """``var/journal/<run name>.sqlite``: a run's journal has a stable name so a restart resumes it."""
    return settings.data.dir.parent / "journal" / f"{settings.run.name}.sqlite"


class Session:
    """One ``hflite run``: the hooks around each bar-time (see the module docstring)."""

    def __init__(
        self,
        prep: Prepared,
        journal: SqliteJournal,
        venue: RemoteVenue | None,
        *,
        run_id: str,
        resume_ts: int | None,
        once: bool = False,
        status: Callable[[dict[str, Any]], None] | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        id_prefix: str = "",
        gate: Any = None,
        alert: Callable[[str, str], None] | None = None,
        ops: Watch | None = None,
    ) -> None:
        self.prep = prep
        self.ops = ops  # ops.watch.Watch: fills, verdicts, risk events... to the alert/metrics bus
        self.alert = alert  # (what, why): the alert hook (the CLI prints it; alert channels plug in here)
        self.gate = gate  # engine.hours.MarketGate: holds orders while their market is closed (live clock)
        self.id_prefix = id_prefix
        self.journal = journal
        self.remote = venue
        self.run_id = run_id
        self.resume_ts = resume_ts
        self.once = once
        self.status_cb = status
        self.sleep = sleep
        self.log = logs.get("hflite.run").bind(run_id=run_id, mode="run")
        self.recovering = resume_ts is not None
        self.recovery_venue: RecoveryVenue | None = None
        self.recovery_control: RecoveryControl | None = None
        self.runtime: LiveRuntime | None = None
        self.connected = False
        self.halted = ""
        self.check_after_step = False
        self.notes: list[str] = []
        self.steps = 0
        self.last_ts: int | None = None
        self._alerted = False
        self.feed_status: dict[str, str] = {}  # the live feed's word on each symbol (delays included)
        self.pending_adjustments: list[Any] = []  # accepted, waiting for a stepped bar to book at
        self.replayed_adjustments: dict[int, list[dict[str, Any]]] = {}
        self._orders_seen = 0  # orders counted by _order_states (the book's orders by status)
        self._unsettled: dict[str, Order] = {}
        self._settled: dict[str, int] = {}
        self.step_ns: int | None = None  # wall clock when the bar-time being stepped arrived
        self.trade_scan = 0  # portfolio.trades before this index are closed and journaled
        self.trades_journaled = {str(t.get("key")) for t in journal.events_of("trade")}

    # -- wiring ---------------------------------------------------------------------------------
    def build(self) -> LiveRuntime:
        prep, journal = self.prep, self.journal
        if self.recovering:
            for ts, body in journal.adjustments():
                self.replayed_adjustments.setdefault(ts, []).append(body)
            known = set(journal.order_statuses())
            self.recovery_venue = RecoveryVenue(journal.venue_events()) if self.remote is not None else None
            self.recovery_control = RecoveryControl(journal)
            self.muted = MutedJournal(known, journal.path)

        def engine_for(md: MarketData, signals: dict[str, SignalSet]) -> Engine:
            live = Prepared(
                prep.settings,
                prep.store,
                prep.instruments,
                prep.strategy,
                md,
                prep.start,
                prep.end,
                prep.brain,
            )
            venue: Any = self.recovery_venue if self.recovering else self.remote
            return make_engine(
                live,
                signals,
                self.muted if self.recovering else journal,
                advisor=prep.advisor,
                venue=venue,
                id_prefix=self.id_prefix,
            )

        control: Any = self.recovery_control if self.recovering else journal
        self.runtime = LiveRuntime(prep.md, prep.strategy, engine_for, control, hooks=self)
        if self.remote is not None and not self.recovering:
            self._wire_remote()
        return self.runtime

    @property
    def engine(self) -> Engine:
        assert self.runtime is not None
        return self.runtime.engine

    def _wire_remote(self) -> None:
        assert self.remote is not None
        if isinstance(self.remote, EventVenue):
            self.remote.record = self.journal.venue_event
            if self.ops is not None:
                self.remote.observer = self.ops.venue_request(self.remote.name)

    # -- the hooks ------------------------------------------------------------------------------
    async def before(self, ts: int) -> None:
        self.step_ns = time.time_ns()
        if self.recovering:
            if self.resume_ts is not None and ts <= self.resume_ts:
                assert self.recovery_control is not None
                self.recovery_control.ts = ts
                if self.recovery_venue is not None:
                    self.recovery_venue.sync(ts)
                return
            self.go_live()
        if self.remote is not None:
            if not self.connected:
                await self.connect()
            if self._doubt():  # settle it before the venue's market moves past the bar that decided it
                await self.reconcile("the venue reconnected or an order's fate is unknown")
            self.remote.sync(ts)
            if self._doubt():
                await self.reconcile("the venue reconnected or an order's fate is unknown")

    def after(self, ts: int, i: int) -> None:
        self.steps += 1
        self.last_ts = ts
        if isinstance(self.remote, EventVenue) and not self.recovering:
            self.remote.release()
        if self.recovering:
            for body in self.replayed_adjustments.pop(ts, []):
                self._book_adjustment(body, i)
            return
        if self.pending_adjustments:  # accepted before any bar was stepped: booked at this one
            self._adjust_now()
        self.journal.decided(ts)
        self._journal_trades()
        book = self.book()
        self.journal.mark(ts, float(book["equity"]), json.dumps(book, default=str))
        if self.ops is not None:
            self.ops.after(self.engine, ts, book, self.step_ns)
        if self.status_cb is not None:
            self.status_cb(book)
        if self.check_after_step and self.remote is not None:
            # the first bar re-run after a restart may have re-sent orders the venue already had:
            # it recognised them by id; look again for fills of theirs before the next decision
            self.check_after_step = False
            if isinstance(self.remote, EventVenue):
                self.remote.needs_reconcile = True

    def _journal_trades(self) -> None:
        """Closed round trips not journaled yet (``/trades``), once each (a re-run bar-time finds
        them journaled by their key)."""
        trades = self.engine.portfolio.trades
        for t in trades[self.trade_scan :]:
            if t.is_open:
                continue
            key = f"{t.symbol}|{t.entry_ts}|{t.exit_ts}"
            if key in self.trades_journaled:
                continue
            self.trades_journaled.add(key)
            body = {"key": key, "symbol": t.symbol, "direction": t.direction, "qty": t.qty,
                    "entry_ts": t.entry_ts, "entry_price": t.entry_price, "exit_ts": t.exit_ts,
                    "exit_price": t.exit_price, "pnl": t.pnl, "fees": t.fees,
                    "entry_reason": t.entry_reason, "exit_reason": t.exit_reason}  # fmt: skip
            self.journal.record("trade", t.symbol, body)
        k = self.trade_scan
        while k < len(trades) and not trades[k].is_open:
            k += 1
        self.trade_scan = k

    def go_live(self) -> None:
        """Recovery is over: from here on, decisions are journaled and orders sent."""
        if not self.recovering:
            return
        engine = self.engine
        self.recovering = False
        if self.ops is not None:
            self.ops.skip_to(engine)
        known = set(self.journal.order_statuses())
        remade = self.muted.seen
        engine.journal = self.journal
        assert self.runtime is not None
        self.runtime.control = self.journal
        undecided = sorted(known - remade - {o for o in known if o.endswith(("-sl", "-tp"))})
        if undecided:
            self.notes.append(
                f"{len(undecided)} order(s) journaled after the last decided bar-time; that bar-time is "
                "re-run and recognises them by id"
            )
            self.check_after_step = True
        if self.remote is not None:
            assert self.resume_ts is not None
            # events booked by a step that never finished are booked again when it is re-run:
            # until then they are not applied (a fill among them would otherwise be lost)
            self.journal.forget_venue_events_after(self.resume_ts)
            if isinstance(self.remote, EventVenue) and self.recovery_venue is not None:
                for order in engine.orders.values():
                    self.remote.adopt(order)
                self.remote.applied |= self.recovery_venue.applied
            engine.venue = self.remote
            self._wire_remote()
        self.log.info("run.resumed", last_decided=_iso(self.resume_ts), orders=len(engine.orders))

    async def connect(self) -> None:
        assert self.remote is not None
        self.remote.connect()
        self.connected = True
        caps = self.remote.capabilities
        if not caps.server_side_stops:
            self.notes.append(
                f"venue {self.remote.name} keeps no stops server-side: positions are protected only while "
                "this process runs"
            )
        await self.reconcile("start")

    def _doubt(self) -> bool:
        venue = self.remote
        if not isinstance(venue, EventVenue):
            return False
        reconnected = bool(getattr(venue, "reconnected", False))
        if self.ops is not None:  # a dropped stream is alerted before the reconciliation it causes
            self.ops.venue_state(venue)
        return reconnected or venue.needs_reconcile or bool(venue.strangers)

    async def reconcile(self, why: str) -> None:
        """Reconcile with the venue; while a difference is unexplained, refuse to trade (wait for a
        human's ``hflite reconcile --accept``; ``--once`` raises ReconcileHalt instead)."""
        from hflite.execution.reconcile import reconcile

        venue = self.remote
        assert isinstance(venue, EventVenue)
        while True:
            engine = self.engine
            journal_orders = self._journal_only_orders()
            held = dict(engine.orders)
            ids = [o.id for o in held.values() if o.status not in TERMINAL] + list(journal_orders)
            snap = venue.snapshot(ids)
            for oid in journal_orders:  # the re-run of their bar-time will recognise them by id
                snap.orders.pop(oid, None)
            held_back = {o.id for o in self.gate.held()} if self.gate is not None else set()
            for oid in held_back:  # held until their market opens: not at the venue, by design
                held.pop(oid, None)
            snap.fills = [f for f in snap.fills if f.order_id not in journal_orders]
            offset = self.journal.meta("cash_offset")
            rec = reconcile(
                held,
                set(venue.applied),
                {s: p.qty for s, p in engine.portfolio.positions.items()},
                dict(engine.portfolio.cash),
                snap,
                symbols=set(engine.md.traded),
                cash_offset=None if offset is None else float(offset),
                accepted=(accepted := self.journal.accepted()),
                currencies={s: b.instrument.currency for s, b in engine.md.bars.items()},
            )
            self.journal.save_reconciliation(rec.differences)
            self._note_differences(rec.differences)
            if rec.clean:
                break
            self.halted = f"reconcile: {rec.summary()}"
            self._say_halted()
            if self.once:
                raise ReconcileHalt(self.halted)
            await self.sleep(HALT_POLL_S)
        if isinstance(venue, EventVenue):
            venue.strangers.clear()
            venue.needs_reconcile = False
            if hasattr(venue, "reconnected"):
                venue.reconnected = False
        self.journal.set_meta("cash_offset", repr(rec.cash_offset))
        events = self._resend_current(rec.events)
        # fills and settled unknowns now; acknowledgements, cancels, expiries and replaces one bar-time
        # on, where the venue's own event for them lands (a restart books them where a run that never
        # stopped does)
        now_kinds = (VenueEventKind.FILLED, VenueEventKind.RECONCILED)
        venue.deliver([ev for ev in events if ev.kind in now_kinds])
        venue.defer([ev for ev in events if ev.kind not in now_kinds])
        self.pending_adjustments += rec.adjustments
        if self.engine.last_i >= 0 and self.last_ts is not None:
            self._adjust_now()
        self._act_on_accepted(rec)
        used = [d.key for d in rec.differences if d.key in accepted]
        if used:
            self.journal.consume_accepts(used)
        if self.halted:
            self.log.warning("run.resumed_after_reconcile", was=self.halted)
        self.halted = ""
        self._alerted = False
        if self.runtime is not None:
            self.runtime.status = "running"
        explained = [d for d in rec.differences if d.explained]
        self.log.info("run.reconciled", why=why, differences=len(rec.differences), adopted=len(explained))

    def _note_differences(self, diffs: list[Any]) -> None:
        if self.ops is not None and not self._alerted:  # once per halt, not every retry
            self.ops.differences(diffs)

    def _journal_only_orders(self) -> dict[str, dict[str, Any]]:
        """Orders in the journal that the engine does not hold: journaled by a bar-time that was not
        finished when the process stopped (it is re-run, and recognises them by id)."""
        held = self.engine.orders
        return {oid: body for oid, body in self.journal.orders().items() if oid not in held}

    def _resend_current(self, events: list[VenueEvent]) -> list[VenueEvent]:
        """An order the venue never received, decided on the last decided bar-time, is sent again
        (same id: the venue cannot take it twice); older ones stay refused (their moment passed)."""
        venue = self.remote
        out: list[VenueEvent] = []
        current = self.last_ts if self.last_ts is not None else self.resume_ts
        for ev in events:
            order = self.engine.orders.get(ev.order_id)
            never = (
                ev.kind in (VenueEventKind.RECONCILED, VenueEventKind.REJECTED)
                and (ev.status == OrderStatus.REJECTED.value or ev.kind is VenueEventKind.REJECTED)
                and "never received" in ev.reason
            )
            if never and order is not None and current is not None and order.created_ts == current:
                assert isinstance(venue, EventVenue)
                if order.status is OrderStatus.UNKNOWN:  # settled as "not there yet": sent again
                    resent = VenueEvent(VenueEventKind.RECONCILED, order.id, ev.ts, f"{order.id}:resent",
                                        reason="resent: the venue never received it",
                                        status=OrderStatus.SUBMITTED.value)  # fmt: skip
                    venue.deliver([resent])
                self.log.info("run.resend", order=order.id, why="the venue never received it")
                venue._send_submit(order)
                continue
            out.append(ev)
        return out

    def _adjust_now(self) -> None:
        """Book the accepted adjustments after the last stepped bar-time, and journal them there."""
        engine = self.engine
        i, ts = engine.last_i, self.last_ts
        assert i >= 0
        assert ts is not None
        for adj in self.pending_adjustments:
            price = adj.price
            if not price > 0:  # the venue holds nothing (no average price): the last close values it
                price = float(engine.md.close_tl[adj.symbol][i])
            if not (price > 0 and adj.qty_delta):
                self.notes.append(f"reconcile: no price to book the accepted {adj.symbol} adjustment at")
                continue
            body = {"symbol": adj.symbol, "qty": adj.qty_delta, "price": price,
                    "fee": float(getattr(adj, "fee", 0.0)), "reason": adj.reason}  # fmt: skip
            fill = self._book_adjustment(body, i)
            self.journal.adjustment(ts, body)
            self.journal.fill(fill)
        self.pending_adjustments = []
        self.journal.set_meta("book", json.dumps(self.book(), default=str))

    def _book_adjustment(self, body: dict[str, Any], i: int) -> Any:
        """A human accepted the venue's position: book the difference at the venue's price at
        timeline index ``i`` (its equity re-marked with it), as a restart re-does it."""
        from hflite.domain.order import Fill, Side

        engine = self.engine
        sym, qty, price = str(body["symbol"]), float(body["qty"]), float(body["price"])
        ts = int(engine.md.timeline[i])
        side = Side.BUY if qty > 0 else Side.SELL
        fill = Fill(f"reconcile-{sym}-{ts}", sym, side, abs(qty), price, float(body["fee"]), ts, i)
        ccy = engine._inst[sym].currency
        pf = engine.portfolio
        pf.apply_fill(fill, ccy, reason=f"reconcile: {body['reason']}")
        engine.fills.append(fill)
        engine.qty_log.append((i, sym, pf.positions[sym].qty))
        engine.cash_log.append((i, ccy, pf.cash[ccy]))
        md = engine.md
        eq = sum(amount * md.fx_tl[c].item(i) for c, amount in pf.cash.items())
        for s, pos in pf.positions.items():
            if pos.qty:
                eq += pos.qty * md.close_tl[s].item(i) * md.fx_tl[engine._inst[s].currency].item(i)
        engine.equity[i] = eq
        return fill

    def _act_on_accepted(self, rec: Any) -> None:
        venue = self.remote
        for d in rec.differences:
            if d.action != "cancel-at-venue" or not d.explained:
                continue
            vid = d.venue_order_id or d.key.split(":", 1)[1]
            if not hasattr(venue, "cancel_venue_order"):
                self.notes.append(
                    f"venue cannot cancel order {vid} by its id: cancel it at the venue by hand"
                )
                continue
            venue.cancel_venue_order(vid)  # type: ignore[union-attr]
            self.log.info("run.cancelled_at_venue", venue_order=vid, why=d.resolution)

    def _say_halted(self) -> None:
        if self.runtime is not None:
            self.runtime.status = f"halted: {self.halted}"
        self.journal.heartbeat(f"halted: {self.halted}", self.last_ts)
        self.log.error("alert", what="trading halted", why=self.halted, fix="hflite reconcile --accept")
        if not self._alerted:  # once per halt, not every retry
            why = f"{self.halted}; see hflite reconcile, accept with hflite reconcile --accept"
            if self.alert is not None:
                self.alert("trading halted", why)
            if self.ops is not None:
                self.ops.bus.emit("risk.halt", "trading halted", why, fields={"reason": self.halted})
        self._alerted = True

    def feed_polled(self, status: dict[str, Any]) -> None:
        """After each poll of the live feed: its word on every symbol (last bar, next due, delayed and
        why) goes where `hflite status` reads it, even while no bar comes."""
        self.feed_status = {s: st.summary() for s, st in status.items()}
        if self.ops is not None:
            self.ops.feed(self.feed_status)
        if self.runtime is not None and not self.recovering:
            self.journal.set_meta("book", json.dumps(self.book(), default=str))

    # -- what `hflite status` shows ----------------------------------------------------------------
    def _order_states(self, orders: dict[str, Order]) -> dict[str, int]:
        """Orders by status, counted incrementally: a settled order is counted once and forgotten,
        so a long run's book costs what its working orders cost, not all its orders."""
        if len(orders) < self._orders_seen:  # never happens (orders are only added): count again
            self._orders_seen, self._unsettled, self._settled = 0, {}, {}
        if len(orders) > self._orders_seen:
            for o in itertools.islice(orders.values(), self._orders_seen, None):
                self._unsettled[o.id] = o
            self._orders_seen = len(orders)
        settled = self._settled
        for oid in [oid for oid, o in self._unsettled.items() if o.status in TERMINAL]:
            st = self._unsettled.pop(oid).status.value
            settled[st] = settled.get(st, 0) + 1
        states = dict(settled)
        for o in self._unsettled.values():
            states[o.status.value] = states.get(o.status.value, 0) + 1
        return states

    def book(self) -> dict[str, Any]:
        engine = self.engine
        md = engine.md
        i = engine.last_i
        positions = {
            s: {
                "qty": p.qty,
                "avg_price": p.avg_price,
                "last": float(md.close_tl[s][i]) if i >= 0 else math.nan,
            }
            for s, p in engine.portfolio.positions.items()
            if p.qty
        }
        working = [o for book in engine.venue.working.values() for o in book]
        last_bar = {}
        for s in md.traded:
            b = md.bars[s]
            if b.n:
                last_bar[s] = _iso(int(b.ts[b.n - 1]))
        states = self._order_states(engine.orders)
        return {
            "run_id": self.run_id,
            "bar_ts": _iso(self.last_ts),
            "initial_cash": engine.initial_cash,
            "equity": float(engine.equity[i]) if i >= 0 else engine.initial_cash,
            "cash": dict(engine.portfolio.cash),
            "positions": positions,
            "open_orders": len(working),
            "orders": len(engine.orders),
            "fills": len(engine.fills),
            "risk": engine.risk.state.mode,
            "risk_reason": engine.risk.state.mode_reason,
            "last_bar": last_bar,
            "halted": self.halted,
            "orders_by_state": states,
            "risk_check": engine.risk.usage(i) if i >= 0 else None,
            "venue": self.remote.name if self.remote is not None else "paper",
            "venue_state": {
                "connected": self.remote is None or self.connected,
                "detail": "paper: simulated in this process"
                if self.remote is None
                else ("connected" if self.connected else "not connected yet"),
            },  # fmt: skip
            "held": self.gate.describe() if self.gate is not None else [],
            "feed": dict(self.feed_status),
            "notes": self.notes,
        }


def _iso(ns: int | None) -> str | None:
    return None if ns is None else pd.Timestamp(int(ns), unit="ns", tz="UTC").isoformat()


def make_remote(settings: Settings, prep: Prepared) -> RemoteVenue | None:
    """The configured broker venue (None for ``paper``: the sim venue's rules on live bars)."""
    if settings.venue.kind == "paper":
        return None
    from hflite.execution.venues.registry import build, spec_from_settings

    traded = {k: inst for k, inst in prep.instruments.items() if k in prep.md.traded}
    return build(spec_from_settings(settings, traded))


async def recorded_events(
    md: MarketData, speed: float | None, resume_ts: int | None
) -> AsyncIterator[BarEvent]:
    """The store's bars in the order they became known; bar-times already decided come at once,
    the rest at ``speed`` (None = no waiting)."""
    prev: int | None = None
    for ev in RecordedFeed(md).events():
        if ev.live and speed and (resume_ts is None or ev.ts > resume_ts):
            if prev is not None and ev.ts > prev:
                await asyncio.sleep((ev.ts - prev) / 1e9 / speed)
            prev = ev.ts
        elif ev.live:
            prev = ev.ts
        yield ev


async def trade(
    settings: Settings,
    store: Store | None = None,
    *,
    feed: str = "recorded",
    speed: float | None = None,
    once: bool = False,
    run_id: str | None = None,
    journal_path: Path | None = None,
    progress: Progress | None = None,
    status: Callable[[dict[str, Any]], None] | None = None,
    config: str = "",
    feed_options: dict[str, Any] | None = None,
    alert: Callable[[str, str], None] | None = None,
    ops: OpsKit | None = None,
) -> TradeOutcome:
    """Paper- or live-trade the configured run until its feed ends (recorded), once (``once``), or
    forever (live); resumes its journal after the last decided bar-time."""
    say = progress or (lambda _msg, _frac: None)
    run_id = run_id or settings.run.name
    path = journal_path if journal_path is not None else default_journal(settings)
    lock = JournalLock(path)
    lock.acquire(
        run_id, config, registry=path.parent if journal_path is None else default_journal(settings).parent
    )
    journal: SqliteJournal | None = None
    remote: RemoteVenue | None = None
    kit = _kit(ops)
    try:
        journal = SqliteJournal(path, owner=lock)
        progress_row = journal.progress()
        resume_ts = progress_row[1] if progress_row else None
        store = store or open_store(settings)
        say("loading data", 0.05)
        live_from = None
        if feed == "live":  # the window is the journal's (or starts now), not the config's dates
            clock = (feed_options or {}).get("now")  # tests drive time; else the wall clock
            now_ns = int(pd.Timestamp(clock()).value) if clock is not None else time.time_ns()
            live_from = progress_row[0] if progress_row else now_ns
            settings = live_window(settings, store, progress_row[0] if progress_row else None, now_ns)
        prep = prepare(settings, store, progress=say)
        remote = make_remote(settings, prep)
        gate = _market_gate(settings, prep, remote, feed)
        watch = kit.watch(settings, journal, prep, feed)
        session = Session(
            prep, journal, remote, run_id=run_id, resume_ts=resume_ts, once=once, status=status,
            id_prefix=settings.run.name, gate=gate, alert=alert, ops=watch,
        )  # fmt: skip
        runtime = session.build()
        runtime.on_beat = kit.beat
        if remote is None:
            session.notes.append(
                "venue paper: stops and take-profits are simulated in this process; they act only while "
                "it runs"
            )
        if resume_ts is None:
            snap = journal.risk_state()
            if snap:
                runtime.engine.risk.restore(snap)
        log = session.log
        log.info("run.start", symbols=prep.md.traded, venue=settings.venue.kind, feed=feed,
                 journal=str(path), resume_after=_iso(resume_ts))  # fmt: skip
        say("trading", 0.2)
        watch.started(feed, list(prep.md.traded), str(path))
        if feed == "recorded":
            source: AsyncIterator[BarEvent | None] = recorded_events(prep.md, speed, resume_ts)
        else:
            assert live_from is not None
            source = live_source(
                settings,
                prep,
                resume_ts,
                live_from,
                once=once,
                on_poll=session.feed_polled,
                **(feed_options or {}),
            )
        engine = await _drive(runtime, source, gate)
        if session.recovering:  # every bar of the feed was already decided: nothing new came
            session.go_live()
        if remote is not None and not session.connected and not engine.stopped:
            await session.connect()  # a start with nothing to decide still reconciles
        result = None
        if (feed == "recorded" or once) and runtime.md.length:
            say("building results", 0.85)
            result = _result(prep, runtime, run_id, path, "paper" if remote is None else settings.venue.kind)
        log.info("run.done", steps=engine.steps, fills=len(engine.fills))
        watch.stopped(
            "killed" if engine.stopped else ("once" if once else "feed ended"),
            session.steps,
            len(engine.fills),
        )
        return TradeOutcome(path, result, session.steps, resume_ts, session.halted, session.notes)
    except BaseException as exc:
        kit.failed(exc)
        raise
    finally:
        _close(remote, journal, lock)


def _close(remote: RemoteVenue | None, journal: SqliteJournal | None, lock: JournalLock) -> None:
    """The venue's connection, then the journal (which releases the lock), or the lock alone."""
    if remote is not None:
        try:
            remote.close()
        except Exception as exc:  # closing a dead connection must not hide why we stopped
            logs.get("hflite.run").warning("venue.close_failed", error=str(exc))
    if journal is not None:
        journal.close()
    else:
        lock.release()


def _kit(ops: OpsKit | None) -> OpsKit | NoOps:
    """The run's ops kit, or none (a watch on an empty bus)."""
    return NoOps() if ops is None else ops


def _market_gate(settings: Settings, prep: Prepared, remote: RemoteVenue | None, feed: str) -> Any:
    """On the live clock, a broker's orders for a closed market wait for its open (engine.hours), and
    ``[execution.timing]``'s rules (session edges, spread, limits from the quote) apply."""
    if not isinstance(remote, EventVenue) or feed != "live" or settings.venue.drive_clock:
        return None
    from hflite.engine.hours import MarketGate

    quotes = getattr(remote, "quote", None)
    gate = MarketGate(
        prep.instruments, rules=settings.execution.timing.rules(), quotes=quotes if callable(quotes) else None
    )
    gate.wrap(remote)
    return gate


async def _drive(runtime: LiveRuntime, source: AsyncIterator[BarEvent | None], gate: Any) -> Engine:
    """Run the runtime on its feed, with the market gate's releases alongside."""
    if gate is None:
        return await runtime.run(source)
    from hflite.engine.hours import release_forever

    releaser = asyncio.create_task(release_forever(gate))
    try:
        return await runtime.run(source)
    finally:
        releaser.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await releaser


def _result(prep: Prepared, runtime: LiveRuntime, run_id: str, path: Path, mode: str) -> RunResult:
    live_prep = Prepared(
        prep.settings, prep.store, prep.instruments, prep.strategy, runtime.md, prep.start, prep.end,
        prep.brain, prep.llm, prep.advisor,
    )  # fmt: skip
    result = build_result(runtime.engine, live_prep, run_id)
    result.stats["journal"] = str(path)  # type: ignore[assignment]
    result.stats["mode"] = mode  # type: ignore[assignment]
    return result


def live_window(settings: Settings, store: Store, first_ts: int | None, now_ns: int) -> Settings:
    """A live run's window, whatever dates the config gives for recorded runs: from the bar before
    its first decided bar-time (a bar is known after its own date: a crypto day at the next
    midnight) or, on a fresh start, from the store's last bars (only history then), to the newest
    bar the store holds (the feed brings what came since, however long the laptop was off)."""
    from hflite.data.store import bars_key
    from hflite.engine.market import FREQ_NS

    freq = settings.run.frequency
    lasts = {p.key: p.last for p in store.partitions()}
    known = [pd.Timestamp(t) for s in settings.run.symbols if (t := lasts.get(bars_key(s, freq))) is not None]
    today = pd.Timestamp(now_ns, unit="ns", tz="UTC").date()
    if first_ts is not None:
        start = (pd.Timestamp(first_ts, unit="ns", tz="UTC") - pd.Timedelta(2 * FREQ_NS[freq], "ns")).date()
    elif known:
        start = min(known).date()
    else:
        start = today
    end = max([start, *(t.date() for t in known)])
    run = settings.run.model_copy(update={"start": min(start, today), "end": min(end, today)})
    return settings.model_copy(update={"run": run})


def live_source(
    settings: Settings,
    prep: Prepared,
    resume_ts: int | None,
    live_from: int,
    *,
    once: bool,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> AsyncIterator[BarEvent | None]:
    """The store's bars (history before ``live_from``; after it, the bar-times a restart re-runs
    or has yet to decide), then the providers' new bars as they close. ``options`` go to LiveFeed
    (``now``, ``sleep``, ``factory``: tests drive time and vendors)."""
    from hflite.engine.feed import LiveFeed

    clock = options.get("now")

    async def gen() -> AsyncIterator[BarEvent | None]:
        since: dict[str, int] = {}
        now_ns = int(pd.Timestamp(clock()).value) if clock is not None else time.time_ns()
        async for ev in recorded_events(prep.md, None, resume_ts):
            if ev.ts > now_ns:  # a bar still forming that an update stored: the feed brings it when known
                continue
            since[ev.symbol] = ev.ts
            if ev.ts < live_from and ev.live:
                ev = BarEvent(ev.symbol, ev.ts, ev.open, ev.high, ev.low, ev.close, ev.volume, live=False)
            yield ev
        yield None
        rt = settings.runtime
        feed = LiveFeed(
            settings,
            prep.store,
            list(prep.md.bars),
            settings.run.frequency,
            since=since,
            poll_delay_s=rt.poll_delay_s,
            retry_s=rt.retry_s,
            once=once,
            **options,
        )
        async for batch in feed.batches():  # one poll's new bars, then step what they complete
            for ev in batch:
                yield ev
            yield None
            if on_poll is not None:
                on_poll(feed.status)

    return gen()
