"""Order management edges: deterministic client order ids and the journal written before send."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from hflite.domain.order import Fill, Order
from hflite.domain.signal import RiskVerdict


class OrderIds:
    """Client order ids from (strategy, symbol, bar, sequence): the same run gives the same ids,
    so a retry or a restart that replays the same decisions cannot create a second order."""

    def __init__(self, strategy: str) -> None:
        self.strategy = strategy
        self.seq = 0

    def next(self, symbol: str, bar_index: int) -> str:
        self.seq += 1
        return f"{self.strategy}-{symbol}-b{bar_index}-{self.seq}"


class Journal(Protocol):
    def order_created(self, order: Order) -> None: ...
    def order_updated(self, order: Order) -> None: ...
    def fill(self, fill: Fill) -> None: ...
    def verdict(self, verdict: RiskVerdict) -> None: ...
    def risk_event(self, event: dict[str, Any], state: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class Command(NamedTuple):
    """A human risk command queued in the journal, and the bar-time it took effect at (ns UTC;
    None while pending)."""

    seq: int
    created: float
    action: str
    reason: str
    source: str
    applied_at: int | None


class RuntimeBeat(NamedTuple):
    """The last heartbeat of the runtime that owns a journal (what ``hflite risk status`` reads)."""

    pid: int
    started: float  # wall-clock seconds
    beat: float  # wall-clock seconds of the last heartbeat
    status: str  # running | stopped
    bar_ts: int | None  # the last bar-time it stepped, ns UTC


class MemoryJournal:
    """Keeps events in memory (backtests: the run's own lists are the record)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def order_created(self, order: Order) -> None:
        self.events.append(("order_created", order.id))

    def order_updated(self, order: Order) -> None:
        self.events.append((f"order_{order.status.value}", order.id))

    def fill(self, fill: Fill) -> None:
        self.events.append(("fill", fill.order_id))

    def verdict(self, verdict: RiskVerdict) -> None:
        self.events.append(("verdict", verdict.intent_id))

    def risk_event(self, event: dict[str, Any], state: dict[str, Any]) -> None:
        self.events.append(("risk", str(event.get("kind", ""))))

    def close(self) -> None:
        return None


class SqliteJournal:
    """An append-only SQLite journal (WAL, one transaction per event) for replay, paper and live."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=10.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, symbol TEXT, status TEXT, body TEXT);
            CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT,
                                               ref TEXT, body TEXT);
            CREATE TABLE IF NOT EXISTS commands (seq INTEGER PRIMARY KEY AUTOINCREMENT, created REAL,
                                                 action TEXT, reason TEXT, source TEXT,
                                                 applied_at INTEGER);
            CREATE TABLE IF NOT EXISTS risk_state (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT);
            CREATE TABLE IF NOT EXISTS runtime (id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER,
                                                started REAL, beat REAL, status TEXT, bar_ts INTEGER);
            """
        )

    def _event(self, kind: str, ref: str, body: dict[str, object]) -> None:
        self.db.execute(
            "INSERT INTO events(kind, ref, body) VALUES (?, ?, ?)", (kind, ref, json.dumps(body, default=str))
        )

    def order_created(self, order: Order) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO orders VALUES (?, ?, ?, ?)",
                (order.id, order.symbol, order.status.value, json.dumps(asdict(order), default=str)),
            )
            self._event("order_created", order.id, asdict(order))

    def order_updated(self, order: Order) -> None:
        with self.db:
            self.db.execute(
                "UPDATE orders SET status = ?, body = ? WHERE id = ?",
                (order.status.value, json.dumps(asdict(order), default=str), order.id),
            )
            self._event(f"order_{order.status.value}", order.id, {"filled_qty": order.filled_qty})

    def fill(self, fill: Fill) -> None:
        with self.db:
            self._event("fill", fill.order_id, fill._asdict())

    def verdict(self, verdict: RiskVerdict) -> None:
        with self.db:
            self._event("verdict", verdict.intent_id, verdict._asdict())

    def risk_event(self, event: dict[str, Any], state: dict[str, Any]) -> None:
        """A change of risk state; the latest state is kept so a restart resumes in it."""
        with self.db:
            self._event("risk", str(event.get("kind", "")), event)
            self.db.execute(
                "INSERT OR REPLACE INTO risk_state(id, body) VALUES (1, ?)", (json.dumps(state, default=str),)
            )

    def risk_state(self) -> dict[str, Any] | None:
        """The last persisted risk snapshot (mode, mode_reason, halted, halt_reason), None if never set."""
        row = self.db.execute("SELECT body FROM risk_state WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None

    # -- human commands: queued by the CLI, applied by the runtime at its next bar-time ----------
    def queue_command(self, action: str, reason: str = "", source: str = "cli") -> int:
        """Queue a command for the runtime (it applies it at its next bar-time); returns its seq."""
        from hflite.risk.manager import ACTIONS

        if action not in ACTIONS:
            raise ValueError(f"unknown risk command {action!r} (one of {', '.join(ACTIONS)})")
        with self.db:
            cur = self.db.execute(
                "INSERT INTO commands(created, action, reason, source) VALUES (?, ?, ?, ?)",
                (time.time(), action, reason, source),
            )
        return int(cur.lastrowid or 0)

    def pending_commands(self) -> list[Command]:
        """Commands not applied yet, oldest first."""
        return [c for c in self.commands() if c.applied_at is None]

    def mark_applied(self, seq: int, bar_ts: int) -> None:
        """Record the bar-time a command took effect at (only the first time: applied once)."""
        with self.db:
            self.db.execute(
                "UPDATE commands SET applied_at = ? WHERE seq = ? AND applied_at IS NULL", (bar_ts, seq)
            )

    def applied_at(self, seq: int) -> int | None:
        """The bar-time (ns UTC) command ``seq`` took effect at; None while pending."""
        row = self.db.execute("SELECT applied_at FROM commands WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise KeyError(f"no command {seq} in {self.path}")
        return None if row[0] is None else int(row[0])

    def commands(self) -> list[Command]:
        """Every queued command with when it was applied (bar time, ns UTC; None = pending)."""
        rows = self.db.execute(
            "SELECT seq, created, action, reason, source, applied_at FROM commands ORDER BY seq"
        ).fetchall()
        return [Command(*r) for r in rows]

    # -- the runtime's heartbeat and what the journal recorded --------------------------------------
    def heartbeat(self, status: str, bar_ts: int | None = None) -> None:
        """The runtime is alive (``running``) or has ended (``stopped``); keeps the start time and the
        last bar-time when not given."""
        now = time.time()
        with self.db:
            self.db.execute(
                """INSERT INTO runtime(id, pid, started, beat, status, bar_ts) VALUES (1, ?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET
                     started = CASE WHEN runtime.pid = excluded.pid AND runtime.status = 'running'
                                    THEN runtime.started ELSE excluded.started END,
                     pid = excluded.pid, beat = excluded.beat, status = excluded.status,
                     bar_ts = COALESCE(excluded.bar_ts, runtime.bar_ts)""",
                (os.getpid(), now, now, status, bar_ts),
            )

    def runtime(self) -> RuntimeBeat | None:
        """The last heartbeat written to this journal (None: no runtime ever ran on it)."""
        row = self.db.execute(
            "SELECT pid, started, beat, status, bar_ts FROM runtime WHERE id = 1"
        ).fetchone()
        return RuntimeBeat(*row) if row else None

    def risk_events(self, last: int = 10) -> list[dict[str, Any]]:
        """The last risk events (commands, halts, locks...), oldest first."""
        rows = self.db.execute(
            "SELECT body FROM events WHERE kind = 'risk' ORDER BY seq DESC LIMIT ?", (last,)
        ).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]

    def verdict_counts(self) -> dict[str, int]:
        """How many verdicts the journal holds per status (approved, resized, rejected)."""
        rows = self.db.execute(
            "SELECT json_extract(body, '$.status'), COUNT(*) FROM events WHERE kind = 'verdict' GROUP BY 1"
        ).fetchall()
        return {str(status): int(n) for status, n in rows}

    def close(self) -> None:
        self.db.close()

    def order_statuses(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT id, status FROM orders").fetchall())
