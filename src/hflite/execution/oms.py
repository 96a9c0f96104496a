"""Order management edges: deterministic client order ids and the journal written before send."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from hflite.domain.order import Fill, FillRecord, Order, OrderStatus
from hflite.domain.signal import RiskVerdict
from hflite.execution.venues.base import VenueEvent, VenueEventKind


class OrderIds:
    """Client order ids from the decision: (strategy, symbol, bar time, intent kind, sequence within
    that bar), e.g. ``trend-SPY-20240105T210000-e1``. A restart that re-runs a bar makes the same
    ids, so a venue recognises a re-sent order as the one it already has; bar times never repeat, so
    ids are unique across restarts. ``prefix`` (the run's name in ``hflite run``) keeps two runs of
    one strategy on one account apart."""

    def __init__(self, strategy: str, prefix: str = "") -> None:
        self.strategy = f"{prefix}.{strategy}" if prefix else strategy
        self._ts = -1
        self._stamp = ""
        self._seq: dict[tuple[str, str], int] = {}

    def next(self, symbol: str, ts: int, kind: str = "e") -> str:
        """The next id for an intent of ``kind`` (``e`` entry, ``x`` exit) on ``symbol`` at bar time
        ``ts`` (ns UTC)."""
        if ts != self._ts:
            self._ts, self._seq = ts, {}
            self._stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ts // 1_000_000_000))
        key = (symbol, kind)
        n = self._seq.get(key, 0) + 1
        self._seq[key] = n
        return f"{self.strategy}-{symbol}-{self._stamp}-{kind}{n}"


class Journal(Protocol):
    def order_created(self, order: Order) -> None: ...
    def order_updated(self, order: Order) -> None: ...
    def fill(self, fill: Fill | FillRecord) -> None: ...
    def verdict(self, verdict: RiskVerdict) -> None: ...
    def risk_event(self, event: dict[str, Any], state: dict[str, Any]) -> None: ...
    def venue_event(self, event: VenueEvent, bar_ts: int, i: int) -> None: ...
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
    run_id: str | None = None
    config: str | None = None


class JournalError(Exception):
    """A journal that cannot be used; the message is one line that names the file."""


class JournalBusyError(JournalError):
    """Another live runtime owns the journal."""


class Owner(NamedTuple):
    """The runtime that owns a journal, as written in its lock file for the runtime's life."""

    pid: int
    run_id: str
    config: str
    started: float  # wall-clock seconds
    journal: str  # absolute path

    def describe(self) -> str:
        """``run X (pid N, config C, started T)``: how messages name a runtime."""
        config = f", config {self.config}" if self.config else ""
        return f"run {self.run_id} (pid {self.pid}{config}, started {_utc(self.started)})"


def _utc(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def lock_path(journal: str | Path) -> Path:
    """The lock file of a journal: ``<journal>.lock`` beside it."""
    p = Path(journal)
    return p.with_name(p.name + ".lock")


if sys.platform == "win32":  # no flock: msvcrt locks a byte range (exclusive only)
    import msvcrt

    _LOCK_AT = 1 << 20  # lock a byte past the owner text, so other processes can still read it

    def _try_lock(fd: int, shared: bool) -> bool:
        os.lseek(fd, _LOCK_AT, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _LOCK_AT, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int, shared: bool) -> bool:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another open file holds it
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_owner(fd: int) -> Owner | None:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        body = json.loads(os.read(fd, 65536).decode("utf-8"))
        return Owner(
            int(body["pid"]),
            str(body["run_id"]),
            str(body["config"]),
            float(body["started"]),
            str(body["journal"]),
        )
    except (ValueError, KeyError, TypeError):  # being written, or not ours
        return None


class JournalLock:
    """One owner per journal: an OS lock (``flock``; ``msvcrt`` on Windows) on ``<journal>.lock``,
    held for the runtime's life. The OS drops it when the process ends however it ends (kill -9
    too), so a crash never leaves a journal owned. The file holds the owner, for messages; with a
    ``registry`` folder the owner is also listed there, so ``hflite risk`` finds every live runtime
    of a config, whatever journal it writes."""

    def __init__(self, journal: str | Path) -> None:
        self.journal = Path(journal)
        self.path = lock_path(self.journal)
        self.owner: Owner | None = None
        self._fd: int | None = None
        self._entry: Path | None = None

    def acquire(
        self, run_id: str, config: str = "", registry: Path | None = None, wait_s: float = 0.5
    ) -> Owner:
        """Take the journal or raise JournalBusyError naming its owner (a status probe may hold
        the lock for a moment: it retries for ``wait_s``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if _try_lock(fd, shared=False):
                if _same_file(fd, self.path):
                    break
                os.close(fd)  # the previous owner removed the file as we opened it: take the new one
                continue
            os.close(fd)
            if time.monotonic() >= deadline:
                raise JournalBusyError(self._busy())
            time.sleep(0.05)
        owner = Owner(os.getpid(), run_id, config, time.time(), str(self.journal.resolve()))
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(owner._asdict()).encode("utf-8"))
        self._fd, self.owner = fd, owner
        if registry is not None:
            self._entry = _register(registry, owner)
        return owner

    def _busy(self) -> str:
        owner = journal_owner(self.journal)
        who = owner.describe() if owner is not None else "another runtime"
        return (
            f"journal {self.journal} is in use by {who}: one runtime per journal; stop it first "
            f"(hflite risk kill --journal {self.journal}) or use another --journal"
        )

    def release(self) -> None:
        """Give the journal up (idempotent); the lock file goes while still held, so no one waits on it."""
        if self._entry is not None:
            with contextlib.suppress(OSError):
                self._entry.unlink()
            self._entry = None
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # Windows cannot remove an open file: it stays, unlocked
            self.path.unlink()
        _unlock(self._fd)
        os.close(self._fd)
        self._fd, self.owner = None, None


def _same_file(fd: int, path: Path) -> bool:
    """Is ``fd`` still the file at ``path`` (a releasing owner unlinks it while holding the lock)?"""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def journal_owner(journal: str | Path) -> Owner | None:
    """The live runtime that owns ``journal``, None when no process holds its lock."""
    path = lock_path(journal)
    try:
        fd = os.open(path, os.O_RDWR if sys.platform == "win32" else os.O_RDONLY)
    except OSError:  # no lock file: never owned, or released cleanly
        return None
    try:
        if _try_lock(fd, shared=True):
            _unlock(fd)
            return None
        for _ in range(10):  # the owner writes its details right after taking the lock
            owner = _read_owner(fd)
            if owner is not None:
                return owner
            time.sleep(0.02)
        return Owner(0, "?", "", 0.0, str(Path(journal).resolve()))
    finally:
        os.close(fd)


def left_by_a_crash(journal: str | Path) -> bool:
    """A lock file that no process holds: its owner died without releasing it (kill -9, power loss)."""
    return lock_path(journal).exists() and journal_owner(journal) is None


#: Where an owning runtime lists itself, under its registry folder (``var/journal``).
REGISTRY_DIR = "runtimes"


def _register(registry: Path, owner: Owner) -> Path:
    folder = registry / REGISTRY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    entry = folder / (hashlib.sha256(owner.journal.encode("utf-8")).hexdigest()[:16] + ".json")
    tmp = entry.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"journal": owner.journal}), encoding="utf-8")
    os.replace(tmp, entry)
    return entry


def live_runtimes(registry: Path) -> list[Owner]:
    """The runtimes listed in ``registry`` that still own their journal, oldest first (an entry
    left by a crash is ignored: its lock is free)."""
    owners: dict[str, Owner] = {}
    for entry in sorted((registry / REGISTRY_DIR).glob("*.json")):
        try:
            journal = str(json.loads(entry.read_text(encoding="utf-8"))["journal"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        owner = journal_owner(journal)
        if owner is not None:
            owners[owner.journal] = owner
    return sorted(owners.values(), key=lambda o: o.started)


#: order status -> the event name a journal gives its update
_UPDATED = {status: f"order_{status.value}" for status in OrderStatus}


class MemoryJournal:
    """Keeps events in memory (backtests: the run's own lists are the record)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def order_created(self, order: Order) -> None:
        self.events.append(("order_created", order.id))

    def order_updated(self, order: Order) -> None:
        self.events.append((_UPDATED[order.status], order.id))

    def fill(self, fill: Fill | FillRecord) -> None:
        self.events.append(("fill", fill.order_id))

    def verdict(self, verdict: RiskVerdict) -> None:
        self.events.append(("verdict", verdict.intent_id))

    def risk_event(self, event: dict[str, Any], state: dict[str, Any]) -> None:
        self.events.append(("risk", str(event.get("kind", ""))))

    def venue_event(self, event: VenueEvent, bar_ts: int, i: int) -> None:
        self.events.append((f"venue_{event.kind.value}", event.order_id))

    def close(self) -> None:
        return None


#: The tables that make a SQLite file an hflite journal (the others are added when missing).
JOURNAL_TABLES = ("orders", "events")


class SqliteJournal:
    """An append-only SQLite journal (WAL, one transaction per event) for replay, paper and live.

    ``create=False`` (the CLI) opens only an existing journal and never adds tables to a file that
    is not one; ``owner`` is the runtime's lock on it, released by ``close``. Either way a file that
    is not a journal raises JournalError naming it."""

    def __init__(self, path: str | Path, *, create: bool = True, owner: JournalLock | None = None) -> None:
        self.path = Path(path)
        self.owner = owner
        self._stamped: set[str] = set()  # orders whose send is in order_stamps already
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise JournalError(f"no journal at {self.path}")
        self.db = sqlite3.connect(self.path, timeout=10.0)
        try:
            self._check(create)
            self._setup()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            if isinstance(exc, sqlite3.OperationalError):  # locked, disk full...: not about the file's kind
                raise
            notadb = exc.sqlite_errorname == "SQLITE_NOTADB"
            what = "not a SQLite database" if notadb else f"unreadable: {exc}"
            raise JournalError(f"{self.path} is not an hflite journal ({what})") from None
        except JournalError:
            self.db.close()
            raise

    @classmethod
    def reader(cls, path: str | Path) -> SqliteJournal:
        """A read-only view of an existing journal (the control API's): no table is created, no
        pragma written, and the connection may be kept open while a runtime writes (WAL). A file
        that is not a journal raises JournalError."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.owner = None
        self._stamped = set()
        if not self.path.is_file():
            raise JournalError(f"no journal at {self.path}")
        self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0,
                                  check_same_thread=False)  # fmt: skip
        try:
            self._check(create=False)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise JournalError(f"{self.path} is not an hflite journal ({exc})") from None
        except JournalError:
            self.db.close()
            raise
        return self

    def _check(self, create: bool) -> None:
        """Refuse a SQLite file that holds other data (or, for ``create=False``, nothing at all)."""
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [t for t in JOURNAL_TABLES if t not in tables]
        if missing and (tables or not create):
            raise JournalError(
                f"{self.path} is not an hflite journal (a SQLite database without the journal's "
                f"{', '.join(missing)} tables)"
            )

    def _setup(self) -> None:
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
                                                started REAL, beat REAL, status TEXT, bar_ts INTEGER,
                                                run_id TEXT, config TEXT);
            CREATE TABLE IF NOT EXISTS venue_events (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                                                     event_id TEXT UNIQUE, order_id TEXT, kind TEXT,
                                                     body TEXT, bar_ts INTEGER, bar_index INTEGER);
            CREATE TABLE IF NOT EXISTS progress (id INTEGER PRIMARY KEY CHECK (id = 1), first_ts INTEGER,
                                                 last_ts INTEGER, steps INTEGER);
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE IF NOT EXISTS reconcile (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL,
                                                  key TEXT, kind TEXT, symbol TEXT, order_id TEXT,
                                                  journal TEXT, venue TEXT, resolution TEXT,
                                                  explained INTEGER, action TEXT);
            CREATE TABLE IF NOT EXISTS reconcile_accepts (key TEXT PRIMARY KEY, resolution TEXT,
                                                          at REAL, source TEXT);
            CREATE TABLE IF NOT EXISTS adjustments (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                                                    bar_ts INTEGER, body TEXT);
            CREATE TABLE IF NOT EXISTS order_stamps (order_id TEXT PRIMARY KEY, decided_ns INTEGER,
                                                     sent_ns INTEGER, arrival_price REAL);
            CREATE TABLE IF NOT EXISTS equity (bar_ts INTEGER PRIMARY KEY, equity REAL);
            """
        )
        have = {r[1] for r in self.db.execute("PRAGMA table_info(runtime)")}
        for column in ("run_id", "config"):  # journals written before runtimes named themselves
            if column not in have:
                self.db.execute(f"ALTER TABLE runtime ADD COLUMN {column} TEXT")

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
            if order.decided_ns:
                self._stamp(order)

    def _stamp(self, order: Order) -> None:
        """Keep an order's first decision and send stamps (execution.quality): a restart re-runs
        decided bars and makes its orders again, later; their stamps must stay the first ones."""
        sent = order.sent_ns or None
        self.db.execute(
            """INSERT INTO order_stamps(order_id, decided_ns, sent_ns, arrival_price) VALUES (?, ?, ?, ?)
               ON CONFLICT(order_id) DO UPDATE SET
                 sent_ns = COALESCE(order_stamps.sent_ns, excluded.sent_ns),
                 arrival_price = COALESCE(order_stamps.arrival_price, excluded.arrival_price)""",
            (order.id, order.decided_ns or None, sent, order.arrival_price if sent else None),
        )
        if sent:
            self._stamped.add(order.id)

    def order_updated(self, order: Order) -> None:
        with self.db:
            self.db.execute(
                "UPDATE orders SET status = ?, body = ? WHERE id = ?",
                (order.status.value, json.dumps(asdict(order), default=str), order.id),
            )
            self._event(f"order_{order.status.value}", order.id, {"filled_qty": order.filled_qty})
            if order.sent_ns and order.id not in self._stamped:
                self._stamp(order)

    def fill(self, fill: Fill | FillRecord) -> None:
        """A fill; a FillRecord's decision and send stamps are the order's first ones (order_stamps)."""
        body = fill._asdict()
        with self.db:
            if isinstance(fill, FillRecord):
                row = self.db.execute(
                    "SELECT decided_ns, sent_ns, arrival_price FROM order_stamps WHERE order_id = ?",
                    (fill.order_id,),
                ).fetchone()
                if row is not None:
                    for key, value in zip(("decided_ns", "sent_ns", "arrival_price"), row, strict=True):
                        if value is not None:
                            body[key] = value
            self._event("fill", fill.order_id, body)

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

    # -- venue events, progress and reconciliation: what a restart needs ----------------------------
    def venue_event(self, event: VenueEvent, bar_ts: int, i: int) -> None:
        """A venue event the engine applied at bar-time ``bar_ts`` (timeline index ``i``); an event id
        is booked once (a duplicate from the venue is ignored here too)."""
        with self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO venue_events(event_id, order_id, kind, body, bar_ts, bar_index) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (event.event_id, event.order_id, event.kind.value, json.dumps(event._asdict()), bar_ts, i),
            )

    def venue_events(self) -> list[tuple[int, VenueEvent]]:
        """Every applied venue event with the bar-time it was applied at, in application order."""
        rows = self.db.execute("SELECT bar_ts, body FROM venue_events ORDER BY seq").fetchall()
        out = []
        for bar_ts, body in rows:
            d = json.loads(body)
            d["kind"] = VenueEventKind(d["kind"])
            out.append((int(bar_ts), VenueEvent(**d)))
        return out

    def forget_venue_events_after(self, bar_ts: int) -> int:
        """Drop the venue events applied after bar-time ``bar_ts``: the step that applied them never
        finished (the process died inside it), so its re-run applies them again. Returns how many."""
        with self.db:
            cur = self.db.execute("DELETE FROM venue_events WHERE bar_ts > ?", (bar_ts,))
        return int(cur.rowcount or 0)

    def decided(self, bar_ts: int) -> None:
        """Bar-time ``bar_ts`` is fully decided (every order of it journaled): a restart resumes after it."""
        with self.db:
            self.db.execute(
                """INSERT INTO progress(id, first_ts, last_ts, steps) VALUES (1, ?, ?, 1)
                   ON CONFLICT(id) DO UPDATE SET last_ts = excluded.last_ts, steps = progress.steps + 1""",
                (bar_ts, bar_ts),
            )

    def progress(self) -> tuple[int, int, int] | None:
        """(first decided bar-time, last decided bar-time, steps), None before the first decision."""
        row = self.db.execute("SELECT first_ts, last_ts, steps FROM progress WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]))

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def mark(self, bar_ts: int, equity: float, book: str) -> None:
        """After a decided bar-time: its equity (the ``/equity`` curve) and the book ``status`` reads,
        in one transaction."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO equity(bar_ts, equity) VALUES (?, ?)", (bar_ts, equity))
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('book', ?)", (book,))

    def equity_curve(self, last: int = 0) -> list[tuple[int, float]]:
        """(bar-time, equity) of every decided bar-time (the newest ``last`` when > 0), oldest first."""
        if last > 0:
            rows = self.db.execute(
                "SELECT bar_ts, equity FROM equity ORDER BY bar_ts DESC LIMIT ?", (last,)
            ).fetchall()
            rows.reverse()
        else:
            rows = self.db.execute("SELECT bar_ts, equity FROM equity ORDER BY bar_ts").fetchall()
        return [(int(t), float(e)) for t, e in rows]

    def record(self, kind: str, ref: str, body: dict[str, Any]) -> None:
        """An event for the readers (``trade``: a closed round trip; ``alert``: an alert raised)."""
        with self.db:
            self._event(kind, ref, body)

    def events_of(self, kind: str, last: int = 0, ref: str | None = None) -> list[dict[str, Any]]:
        """The bodies of events of ``kind`` (for ``ref`` only when given), oldest first; the newest
        ``last`` when > 0."""
        where, args = "kind = ?", [kind]
        if ref is not None:
            where += " AND ref = ?"
            args.append(ref)
        sql = f"SELECT body FROM events WHERE {where} ORDER BY seq DESC"  # noqa: S608 - fixed text
        if last > 0:
            sql += f" LIMIT {int(last)}"
        rows = self.db.execute(sql, args).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]

    def orders(self) -> dict[str, dict[str, Any]]:
        """Every journaled order's last recorded fields, by client order id."""
        return {oid: json.loads(body) for oid, body in self.db.execute("SELECT id, body FROM orders")}

    def fills(self) -> list[dict[str, Any]]:
        """Every fill the journal booked, oldest first."""
        rows = self.db.execute("SELECT body FROM events WHERE kind = 'fill' ORDER BY seq").fetchall()
        return [json.loads(r[0]) for r in rows]

    def save_reconciliation(self, differences: list[Any]) -> None:
        """Keep the latest reconciliation's differences (``hflite reconcile`` shows them)."""
        now = time.time()
        with self.db:
            self.db.execute("DELETE FROM reconcile")
            self.db.executemany(
                "INSERT INTO reconcile(at, key, kind, symbol, order_id, journal, venue, resolution, "
                "explained, action) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (now, d.key, d.kind, d.symbol, d.order_id, d.journal, d.venue, d.resolution,
                     int(d.explained), d.action)
                    for d in differences
                ],
            )  # fmt: skip

    def reconciliation(self) -> list[dict[str, Any]]:
        """The latest reconciliation's differences, as saved."""
        cur = self.db.execute(
            "SELECT at, key, kind, symbol, order_id, journal, venue, resolution, explained, action "
            "FROM reconcile ORDER BY seq"
        )
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def accept(self, key: str, resolution: str, source: str = "cli") -> None:
        """A human accepts the stated resolution of difference ``key``."""
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO reconcile_accepts(key, resolution, at, source) VALUES (?, ?, ?, ?)",
                (key, resolution, time.time(), source),
            )

    def accepted(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, resolution FROM reconcile_accepts").fetchall())

    def consume_accepts(self, keys: list[str]) -> None:
        """Accepts applied by a reconciliation are used up: the same key differing again later (a
        second change by hand) halts again."""
        with self.db:
            self.db.executemany("DELETE FROM reconcile_accepts WHERE key = ?", [(k,) for k in keys])

    def adjustment(self, bar_ts: int, body: dict[str, Any]) -> None:
        """A book adjustment a human accepted (the venue's position adopted), booked after bar-time
        ``bar_ts``: a restart re-applies it there."""
        with self.db:
            self.db.execute("INSERT INTO adjustments(bar_ts, body) VALUES (?, ?)", (bar_ts, json.dumps(body)))

    def adjustments(self) -> list[tuple[int, dict[str, Any]]]:
        rows = self.db.execute("SELECT bar_ts, body FROM adjustments ORDER BY seq").fetchall()
        return [(int(ts), json.loads(body)) for ts, body in rows]

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
        owner = self.owner.owner if self.owner is not None else None
        run_id, config = (owner.run_id, owner.config) if owner is not None else (None, None)
        with self.db:
            self.db.execute(
                """INSERT INTO runtime(id, pid, started, beat, status, bar_ts, run_id, config)
                   VALUES (1, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET
                     started = CASE WHEN runtime.pid = excluded.pid AND runtime.status = 'running'
                                    THEN runtime.started ELSE excluded.started END,
                     pid = excluded.pid, beat = excluded.beat, status = excluded.status,
                     bar_ts = COALESCE(excluded.bar_ts, runtime.bar_ts),
                     run_id = excluded.run_id, config = excluded.config""",
                (os.getpid(), now, now, status, bar_ts, run_id, config),
            )

    def runtime(self) -> RuntimeBeat | None:
        """The last heartbeat written to this journal (None: no runtime ever ran on it)."""
        row = self.db.execute(
            "SELECT pid, started, beat, status, bar_ts, run_id, config FROM runtime WHERE id = 1"
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
        """Close the database, then give up the ownership (if this runtime held it)."""
        self.db.close()
        if self.owner is not None:
            self.owner.release()

    def order_statuses(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT id, status FROM orders").fetchall())
