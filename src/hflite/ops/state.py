"""A read model of one run's journal for the control API and the Telegram bot (``RunView``).

Everything is read from the journal a runtime writes (``execution.oms.SqliteJournal``): its book after
each bar-time (``meta.book``, with the risk check), the equity curve, orders, fills, closed trades,
verdicts, commands, alerts and the heartbeat. Each call opens the journal, reads, and closes it: a
SQLite WAL reader never blocks the runtime that writes, and the view works the same whether the
runtime runs in this process (``hflite run --api``), in another one (``hflite serve``), or not at all
(then every answer says so: ``runtime`` is ``stopped``, ``not running`` or ``never ran``).

Commands are queued in the journal (``queue_command``) with their source (``api``, ``telegram``), the
same way ``hflite risk`` queues them; the runtime applies them at its next bar-time.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hflite.execution.oms import JournalError, SqliteJournal, journal_owner, left_by_a_crash

#: A runtime whose last heartbeat is older than this (seconds) is not live.
LIVE_WITHIN_S = 5.0
#: Order statuses that are still working at the venue (or whose fate is unknown).
OPEN_STATUSES = ("new", "submitted", "accepted", "partially_filled", "unknown")
ACTIONS = ("pause", "resume", "close_all", "kill")


#: ``status`` of a journal no runtime has written yet (every key, nothing known).
EMPTY_STATUS: dict[str, Any] = {
    "run_id": "", "halted": "", "bar_ts": None, "last_decided": None, "bar_times": 0, "venue": "",
    "equity": None, "cash": {}, "positions": 0, "open_orders": 0, "orders": 0, "fills": 0,
    "risk": "running", "risk_reason": "", "drawdown_halt": "", "drawdown": None,
    "unexplained_differences": 0, "pending_commands": 0, "last_bar": {}, "feed": {}, "held": [], "notes": [],
}  # fmt: skip


class NoJournal(LookupError):
    """The journal does not exist (yet): no runtime ever ran on it."""


def iso(ns: int | None) -> str | None:
    return None if ns is None else pd.Timestamp(int(ns), unit="ns", tz="UTC").isoformat()


def _num(x: Any) -> float | None:
    """A JSON-safe number: NaN and infinities become None."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class Runtime:
    """Is a runtime working on the journal: ``state`` is live, halted, recovering, starting, silent
    (holds the journal, no recent heartbeat), stopped (ended cleanly), not running (died), never ran."""

    state: str
    live: bool
    pid: int | None
    heartbeat_age_s: float | None
    status: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "live": self.live,
            "pid": self.pid,
            "heartbeat_age_s": self.heartbeat_age_s,
            "status": self.status,
            "detail": self.detail,
        }


class RunView:
    """What one run's journal says, for the API and the bot (see the module docstring).

    ``reports`` is the report folder root (``report.dir``): a decision no longer in a journal (a
    finished backtest) is looked up there. ``clock`` is the wall clock (tests move it)."""

    def __init__(self, journal: Path, *, reports: Path | None = None, clock: Any = time.time) -> None:
        self.path = Path(journal)
        self.reports = reports
        self.clock = clock
        self._local = threading.local()  # one read-only connection per thread, kept open
        self._memo: dict[str, tuple[tuple[int, ...], Any]] = {}

    # -- plumbing -----------------------------------------------------------------------------------
    def _stamp(self) -> tuple[int, ...]:
        """Changes whenever the runtime commits (the WAL file grows or is reset) or the file is
        replaced: answers read from the journal are reused until it changes."""
        st = self.path.stat()
        try:
            wal = os.stat(f"{self.path}-wal")
            w: tuple[int, ...] = (wal.st_mtime_ns, wal.st_size)
        except OSError:
            w = (0, 0)
        return (st.st_ino, st.st_mtime_ns, st.st_size, *w)

    @contextmanager
    def _open(self) -> Iterator[SqliteJournal]:
        if not self.path.is_file():
            self._local.__dict__.pop("reader", None)
            raise NoJournal(
                f"no journal at {self.path}: no runtime has run on it yet (start one: hflite run --config C)"
            )
        held = getattr(self._local, "reader", None)
        ino = self.path.stat().st_ino
        if held is None or held[0] != ino:
            if held is not None:
                held[1].close()
            try:
                held = (ino, SqliteJournal.reader(self.path))
            except (JournalError, sqlite3.OperationalError) as exc:
                # a runtime creating it right now (no tables yet), or not a journal at all: said, not a 500
                raise NoJournal(f"journal {self.path} cannot be read yet: {exc}") from None
            self._local.reader = held
        try:
            yield held[1]
        except sqlite3.DatabaseError as exc:  # a runtime still creating its tables (one at a time)
            raise NoJournal(f"journal {self.path} cannot be read yet: {exc}") from None

    def _cached(self, name: str, compute: Any) -> Any:
        """``compute()`` once per journal state (see ``_stamp``)."""
        stamp = self._stamp()
        hit = self._memo.get(name)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = compute()
        self._memo[name] = (stamp, value)
        return value

    def exists(self) -> bool:
        return self.path.is_file()

    def book(self) -> dict[str, Any]:
        """The runtime's book after its last decided bar-time ({} before the first)."""
        with self._open() as j:
            raw = j.meta("book")
        return json.loads(raw) if raw else {}

    # -- the runtime --------------------------------------------------------------------------------
    def runtime(self) -> Runtime:
        if not self.path.is_file():
            return Runtime("never ran", False, None, None, "", f"no journal at {self.path}")
        try:
            with self._open() as j:
                beat = j.runtime()
        except NoJournal:  # being created by a starting runtime (or not a journal: reads say so)
            beat = None
        owner = journal_owner(self.path)
        now = self.clock()
        age = None if beat is None else max(0.0, now - beat.beat)
        status = "" if beat is None else str(beat.status)
        word = status.split(":")[0]
        if owner is not None:
            if beat is None or beat.pid != owner.pid or beat.beat < owner.started:
                return Runtime("starting", False, owner.pid, age, status, "loading data, no heartbeat yet")
            if age is not None and age > LIVE_WITHIN_S:
                return Runtime("silent", False, owner.pid, age, status, f"no heartbeat for {age:.0f} s")
            if word == "halted":
                return Runtime("halted", True, owner.pid, age, status, status)
            if word == "recovering":
                return Runtime("recovering", True, owner.pid, age, status, "re-running decided bar-times")
            return Runtime("live", True, owner.pid, age, status, "trading")
        if beat is None:
            return Runtime("never ran", False, None, None, "", "no runtime has run on this journal")
        if word == "stopped":
            return Runtime(
                "stopped", False, beat.pid, age, status, "ended cleanly; commands apply on restart"
            )
        died = "died without stopping cleanly" if left_by_a_crash(self.path) else "is not running"
        return Runtime("not running", False, beat.pid, age, status, f"pid {beat.pid} {died}")

    # -- reads ----------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        rt = self.runtime()
        try:
            out = dict(self._cached("status", self._status) if self.path.is_file() else EMPTY_STATUS)
        except NoJournal:  # a starting runtime is creating it: nothing to show yet
            out = dict(EMPTY_STATUS)
        out.update(runtime=rt.state, live=rt.live, detail=rt.detail, heartbeat_age_s=rt.heartbeat_age_s)
        if not out["halted"] and rt.state == "halted":
            out["halted"] = rt.status
        return out

    def _status(self) -> dict[str, Any]:
        with self._open() as j:
            raw, progress, state = j.meta("book"), j.progress(), j.risk_state() or {}
            diffs = j.reconciliation()
            pending = [c for c in j.commands() if c.applied_at is None]
        book = json.loads(raw) if raw else {}
        risk = book.get("risk_check") or {}
        return {
            "run_id": book.get("run_id", ""),
            "halted": book.get("halted", ""),
            "bar_ts": book.get("bar_ts"),
            "last_decided": iso(progress[1]) if progress else None,
            "bar_times": progress[2] if progress else 0,
            "venue": book.get("venue", ""),
            "equity": _num(book.get("equity")),
            "cash": {k: _num(v) for k, v in (book.get("cash") or {}).items()},
            "positions": len(book.get("positions") or {}),
            "open_orders": int(book.get("open_orders", 0)),
            "orders": int(book.get("orders", 0)),
            "fills": int(book.get("fills", 0)),
            "risk": state.get("mode", book.get("risk", "running")),
            "risk_reason": state.get("mode_reason", book.get("risk_reason", "")),
            "drawdown_halt": state.get("halt_reason", "") if state.get("halted") else "",
            "drawdown": _num(risk.get("drawdown")),
            "unexplained_differences": sum(1 for d in diffs if not d["explained"]),
            "pending_commands": len(pending),
            "last_bar": book.get("last_bar", {}),
            "feed": book.get("feed", {}),
            "held": book.get("held", []),
            "notes": book.get("notes", []),
        }

    def positions(self) -> list[dict[str, Any]]:
        book = self.book()
        out = []
        for sym, p in sorted((book.get("positions") or {}).items()):
            qty, avg, last = float(p["qty"]), float(p["avg_price"]), _num(p.get("last"))
            out.append({
                "symbol": sym, "qty": qty, "avg_price": _num(avg), "last": last,
                "value": None if last is None else qty * last,
                "unrealized_pnl": None if last is None else qty * (last - avg),
            })  # fmt: skip
        return out

    def orders(self, *, open_only: bool = False, last: int = 100) -> list[dict[str, Any]]:
        with self._open() as j:
            orders = j.orders()
        rows = []
        for oid, o in orders.items():
            status = str(o.get("status", ""))
            if open_only and status not in OPEN_STATUSES:
                continue
            rows.append({
                "id": oid, "symbol": o.get("symbol", ""), "side": str(o.get("side", "")),
                "type": str(o.get("type", "")), "qty": _num(o.get("qty")),
                "filled_qty": _num(o.get("filled_qty")),
                "avg_fill_price": _num(o.get("avg_fill_price")) or None,
                "price": _num(o.get("price")), "status": status, "created": iso(o.get("created_ts")),
                "created_ts": int(o.get("created_ts") or 0), "reason": str(o.get("reason", "")),
                "decision_id": str(o.get("decision_id", "")),
            })  # fmt: skip
        rows.sort(key=lambda r: (r["created_ts"], r["id"]))
        return rows[-last:] if last > 0 else rows

    def trades(self, last: int = 100) -> list[dict[str, Any]]:
        with self._open() as j:
            rows = j.events_of("trade", last)
        return [
            {
                "symbol": t["symbol"], "direction": "long" if t["direction"] > 0 else "short",
                "qty": _num(t["qty"]), "entry": iso(t["entry_ts"]), "entry_price": _num(t["entry_price"]),
                "exit": iso(t["exit_ts"]), "exit_price": _num(t["exit_price"]), "pnl": _num(t["pnl"]),
                "fees": _num(t["fees"]), "net_pnl": _num(t["pnl"] - t["fees"]),
                "entry_reason": t.get("entry_reason", ""), "exit_reason": t.get("exit_reason", ""),
            }
            for t in rows
        ]  # fmt: skip

    def equity(self, last: int = 1000) -> list[dict[str, Any]]:
        with self._open() as j:
            rows = j.equity_curve(last)
        return [{"bar_ts": iso(t), "equity": _num(e)} for t, e in rows]

    def pnl(self) -> dict[str, Any]:
        book = self.book()
        risk = book.get("risk_check") or {}
        eq, initial = _num(book.get("equity")), _num(book.get("initial_cash"))
        periods = risk.get("pnl") or {}
        total = None if eq is None or initial is None else eq - initial
        return {
            "equity": eq,
            "initial_cash": initial,
            "total_pnl": total,
            "total_pct": None if total is None or not initial else total / initial * 100,
            "day_pnl": _num(periods.get("day")),
            "week_pnl": _num(periods.get("week")),
            "month_pnl": _num(periods.get("month")),
            "bar_ts": book.get("bar_ts"),
        }

    def risk_check(self) -> dict[str, Any]:
        """Every limit with its value and utilisation, halts, pauses and breakers, at the last bar."""
        rt = self.runtime()
        out = dict(self._cached("risk_check", self._risk_check))
        out.update(runtime=rt.state, live=rt.live)
        return out

    def _risk_check(self) -> dict[str, Any]:
        with self._open() as j:
            raw, state = j.meta("book"), j.risk_state() or {}
            events = j.risk_events(50)
            counts = j.verdict_counts()
            diffs = j.reconciliation()
        book = json.loads(raw) if raw else {}
        risk = book.get("risk_check") or {}
        limits = [
            {k: (_num(v) if k in ("value", "limit", "utilisation") else v) for k, v in row.items()}
            for row in risk.get("limits", [])
        ]
        breakers = [
            e for e in events if str(e.get("kind", "")).endswith("breaker") or e.get("kind") == "protection"
        ]
        return {
            "bar_ts": book.get("bar_ts"),
            "mode": state.get("mode", risk.get("mode", "running")),
            "mode_reason": state.get("mode_reason", risk.get("mode_reason", "")),
            "halted": bool(state.get("halted", risk.get("halted", False))),
            "halt_reason": state.get("halt_reason", risk.get("halt_reason", "")),
            "trading_halted": book.get("halted", ""),
            "locks": risk.get("locks", {}),
            "paused_symbols": risk.get("paused_symbols", {}),
            "global_pause": risk.get("global_pause", ""),
            "limits": limits,
            "drawdown": _num(risk.get("drawdown")),
            "gross_exposure": _num(risk.get("gross_exposure")),
            "net_exposure": _num(risk.get("net_exposure")),
            "pnl": {k: _num(v) for k, v in (risk.get("pnl") or {}).items()},
            "breakers": breakers[-20:],
            "verdicts": counts,
            "unexplained_differences": [d for d in diffs if not d["explained"]],
        }

    def decision(self, ident: str) -> dict[str, Any] | None:
        """The explain trail of one decision (intent id, or an order id it produced) as JSON; from
        the journal, else from the newest report holding it; None when neither has it."""
        ident = ident.strip()
        if self.path.is_file():
            with self._open() as j:
                orders = j.orders()
                decision = ident
                if ident in orders:
                    decision = str(orders[ident].get("decision_id") or ident)
                verdicts = j.events_of("verdict", ref=decision)
                if verdicts:
                    mine = {oid: o for oid, o in orders.items() if o.get("decision_id") == decision}
                    fills = [f for f in j.fills() if f.get("order_id") in mine]
                    return _trail(decision, ident, verdicts[-1], mine, fills)
        if self.reports is not None and self.reports.is_dir():
            from hflite.explain import TrailError, find_trail

            try:
                found = find_trail(self.reports, ident)
            except TrailError:
                return None
            return _report_trail(found.trail)
        return None

    def alerts(self, last: int = 50) -> list[dict[str, Any]]:
        with self._open() as j:
            return j.events_of("alert", last)

    def commands(self, last: int = 50) -> list[dict[str, Any]]:
        with self._open() as j:
            rows = j.commands()[-last:] if last > 0 else j.commands()
        return [
            {"seq": c.seq, "queued": c.created, "action": c.action, "reason": c.reason, "source": c.source,
             "applied_at": iso(c.applied_at), "pending": c.applied_at is None}
            for c in rows
        ]  # fmt: skip

    def health(self) -> dict[str, Any]:
        """Liveness (this process answers) and readiness: a live runtime, its feed fresh, its venue
        connected, its reconciliation clean."""
        rt = self.runtime()
        checks: dict[str, dict[str, Any]] = {
            "runtime": {"ok": rt.live and rt.state != "halted", "detail": rt.detail}
        }
        if self.path.is_file():
            try:
                self._journal_checks(checks, rt)
            except NoJournal as exc:  # being created, or not a journal: alive, not ready
                checks["journal"] = {"ok": False, "detail": str(exc)}
        ready = all(c["ok"] for c in checks.values())
        return {"alive": True, "ready": ready, "runtime": rt.state, "checks": checks}

    def _journal_checks(self, checks: dict[str, dict[str, Any]], rt: Runtime) -> None:
        """Readiness from the journal: reconciliation clean, feed fresh, venue connected."""
        book = self.book()
        with self._open() as j:
            diffs = j.reconciliation()
        bad = [d["key"] for d in diffs if not d["explained"]]
        checks["reconciliation"] = {
            "ok": not bad and not book.get("halted"),
            "detail": f"{len(bad)} unexplained difference(s)" if bad else (book.get("halted") or "clean"),
        }
        feed = book.get("feed") or {}
        late = sorted(s for s, line in feed.items() if "delayed" in str(line))
        checks["feed"] = {
            "ok": not late,
            "detail": f"delayed: {', '.join(late)}"
            if late
            else ("fresh" if feed else "recorded or no poll yet"),
        }
        venue = book.get("venue_state") or {}
        checks["venue"] = {
            "ok": bool(venue.get("connected", rt.live)),
            "detail": venue.get("detail") or (book.get("venue", "") + (" connected" if rt.live else "")),
        }

    # -- commands -------------------------------------------------------------------------------------
    def command(self, action: str, reason: str = "", source: str = "api") -> dict[str, Any]:
        if action not in ACTIONS:
            raise ValueError(f"unknown command {action!r} (one of {', '.join(ACTIONS)})")
        rt = self.runtime()
        if not self.path.is_file():
            raise NoJournal(
                f"no journal at {self.path}: no runtime has run on it yet (start one: hflite run)"
            )
        try:
            j = SqliteJournal(self.path, create=False)  # a writer, for this one command
        except JournalError as exc:
            raise NoJournal(str(exc)) from None
        try:
            seq = j.queue_command(action, reason, source=source)
        finally:
            j.close()
        if rt.live:
            message = f"queued {action} (command {seq}): applies at the runtime's next bar-time"
        else:
            message = (
                f"queued {action} (command {seq}), but the runtime is {rt.state} ({rt.detail}): it applies "
                "at the first bar-time of the next start on this journal"
            )
        return {"seq": seq, "action": action, "live": rt.live, "runtime": rt.state, "message": message}

    def applied_at(self, seq: int) -> str | None:
        with self._open() as j:
            return iso(j.applied_at(seq))


def _trail(
    decision: str,
    query: str,
    verdict: dict[str, Any],
    orders: dict[str, dict[str, Any]],
    fills: list[dict[str, Any]],
) -> dict[str, Any]:
    checks = [
        {"rule": c[0], "value": _num(c[1]), "limit": _num(c[2]), "passed": bool(c[3])}
        for c in verdict.get("checks", [])
    ]
    return {
        "id": decision,
        "query": query,
        "source": "journal",
        "symbol": verdict.get("symbol", ""),
        "bar_ts": iso(verdict.get("ts")),
        "verdict": {
            "status": str(verdict.get("status", "")),
            "reason": verdict.get("reason", ""),
            "qty_requested": _num(verdict.get("qty_requested")),
            "qty_approved": _num(verdict.get("qty_approved")),
            "rules": list(verdict.get("rules", [])),
            "checks": checks,
        },
        "orders": [
            {
                "id": oid,
                "side": str(o.get("side", "")),
                "type": str(o.get("type", "")),
                "qty": _num(o.get("qty")),
                "status": str(o.get("status", "")),
                "filled_qty": _num(o.get("filled_qty")),
                "avg_fill_price": _num(o.get("avg_fill_price")),
                "reason": str(o.get("reason", "")),
            }
            for oid, o in sorted(orders.items())
        ],  # fmt: skip
        "fills": [
            {
                "order_id": f.get("order_id"),
                "ts": iso(f.get("ts")),
                "qty": _num(f.get("qty")),
                "price": _num(f.get("price")),
                "fee": _num(f.get("fee")),
            }
            for f in fills
        ],  # fmt: skip
    }


def _report_trail(trail: Any) -> dict[str, Any]:
    """A report's ``DecisionTrail`` as plain JSON (numbers made finite-or-null)."""
    from dataclasses import asdict

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        if isinstance(x, float):
            return x if math.isfinite(x) else None
        if isinstance(x, str | int | bool) or x is None:
            return x
        return str(x)

    body = clean(asdict(trail))
    body["id"] = trail.intent.id if hasattr(trail.intent, "id") else trail.query
    body["source"] = "report"
    return body
