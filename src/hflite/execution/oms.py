"""Order management edges: deterministic client order ids and the journal written before send."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

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
    def close(self) -> None: ...


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

    def close(self) -> None:
        return None


class SqliteJournal:
    """An append-only SQLite journal (WAL, one transaction per event) for replay, paper and live."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, symbol TEXT, status TEXT, body TEXT);
            CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT,
                                               ref TEXT, body TEXT);
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

    def close(self) -> None:
        self.db.close()

    def order_statuses(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT id, status FROM orders").fetchall())
