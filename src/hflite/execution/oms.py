"""Order management edges: deterministic client order ids and the journal written before send."""

from __future__ import annotations

import json
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
    """A human risk command queued in the journal for the runtime that owns it."""

    seq: int
    created: float  # wall-clock seconds when queued
    action: str
    reason: str
    source: str


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
        row = self.db.execute("SELECT body FROM risk_state WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None

    def queue_command(self, action: str, reason: str = "", source: str = "cli") -> int:
        """Queue a command for the runtime (it applies it at its next bar-time)."""
        with self.db:
            cur = self.db.execute(
                "INSERT INTO commands(created, action, reason, source) VALUES (?, ?, ?, ?)",
                (time.time(), action, reason, source),
            )
        return int(cur.lastrowid or 0)

    def pending_commands(self) -> list[Command]:
        rows = self.db.execute(
            "SELECT seq, created, action, reason, source FROM commands WHERE applied_at IS NULL ORDER BY seq"
        ).fetchall()
        return [Command(*r) for r in rows]

    def mark_applied(self, seq: int, bar_ts: int) -> None:
        with self.db:
            self.db.execute("UPDATE commands SET applied_at = ? WHERE seq = ?", (bar_ts, seq))

    def commands(self) -> list[tuple[Any, ...]]:
        """Every queued command with when it was applied (bar time, ns UTC; None = pending)."""
        return self.db.execute(
            "SELECT seq, created, action, reason, source, applied_at FROM commands ORDER BY seq"
        ).fetchall()

    def close(self) -> None:
        self.db.close()

    def order_statuses(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT id, status FROM orders").fetchall())
