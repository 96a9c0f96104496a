"""Every LLM call, recorded: the SQLite journal and the JSONL tapes that replay reads.

A record holds the role, the subject (an intent id, "AAPL 2022-03-04"), backend, model id, the
prompt's hash (and the prompt itself in the journal), the as-of time of the data in the prompt, the
raw reply, whether it validated, latency and token counts. Replay looks a reply up by (role, model,
prompt hash): the journal's latest valid record wins over a tape's.

Tapes are the committed form: ``hflite llm export`` writes a journal's valid records as JSON lines
(without the prompts, which the hash pins), and ``[llm] tapes`` lists the tapes a run may replay.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hflite.ai.llm.base import Message

__all__ = ["CallRecord", "LLMJournal", "ReplyIndex", "prompt_hash", "read_tape", "write_tape"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    as_of TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    prompt TEXT NOT NULL DEFAULT '',
    reply TEXT NOT NULL DEFAULT '',
    valid INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    latency_ms REAL NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS llm_calls_key ON llm_calls (role, model, prompt_hash);
"""

_FIELDS = (
    "run_id role subject backend model prompt_hash as_of recorded_at attempt prompt reply valid error "
    "latency_ms prompt_tokens completion_tokens"
).split()
#: What a tape line keeps (the prompt is pinned by its hash).
_TAPE_FIELDS = tuple(f for f in _FIELDS if f not in ("prompt", "run_id", "error", "valid"))


def prompt_hash(role: str, messages: Iterable[Message], schema: dict[str, Any] | None) -> str:
    """SHA-256 of the role, the messages and the reply schema, as canonical JSON."""
    payload = {
        "role": role,
        "messages": [[m.role, m.content] for m in messages],
        "schema": schema,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CallRecord:
    """One model call (or one replayed record)."""

    role: str
    backend: str
    model: str
    prompt_hash: str
    as_of: str  # ISO 8601 UTC: the newest data the prompt may contain
    reply: str
    valid: bool
    subject: str = ""
    run_id: str = ""
    attempt: int = 1
    prompt: str = ""
    error: str = ""
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    recorded_at: float = field(default_factory=time.time)
    id: int | None = None
    source: str = "journal"  # journal | tape:<name>

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class LLMJournal:
    """The SQLite journal of LLM calls (thread-safe; WAL, so a reader never blocks the run)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def record(self, rec: CallRecord) -> int:
        """Append one call; returns its id."""
        values = [getattr(rec, f) for f in _FIELDS]
        values[_FIELDS.index("valid")] = int(rec.valid)
        with self._lock:
            cur = self._db.execute(
                f"INSERT INTO llm_calls ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})",
                values,
            )
            return int(cur.lastrowid or 0)

    def records(
        self,
        *,
        model: str | None = None,
        role: str | None = None,
        valid_only: bool = False,
        run_id: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[CallRecord]:
        where, args = [], []
        for col, val in (("model", model), ("role", role), ("run_id", run_id)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if valid_only:
            where.append("valid = 1")
        sql = f"SELECT id, {', '.join(_FIELDS)} FROM llm_calls"
        sql += f" WHERE {' AND '.join(where)}" if where else ""
        sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        sql += f" LIMIT {int(limit)}" if limit else ""
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_record(row) for row in rows]

    def get(self, record_id: int) -> CallRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT id, {', '.join(_FIELDS)} FROM llm_calls WHERE id = ?", (record_id,)
            ).fetchone()
        return _record(row) if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _record(row: tuple[Any, ...]) -> CallRecord:
    data = dict(zip(("id", *_FIELDS), row, strict=True))
    data["valid"] = bool(data["valid"])
    return CallRecord(**data)


def write_tape(records: Iterable[CallRecord], path: Path) -> int:
    """Write valid records as JSON lines (latest per key only, sorted by key); returns the count."""
    latest: dict[tuple[str, str, str], CallRecord] = {}
    for rec in records:
        if rec.valid:
            latest[(rec.role, rec.model, rec.prompt_hash)] = rec
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for key in sorted(latest):
            rec = latest[key]
            line = {f: getattr(rec, f) for f in _TAPE_FIELDS}
            line["recorded_at"] = round(float(rec.recorded_at), 3)
            out.write(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
    return len(latest)


def read_tape(path: Path) -> Iterator[CallRecord]:
    """The records of a tape; a malformed line raises ValueError naming the file and line."""
    with Path(path).open(encoding="utf-8") as lines:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                known = {k: v for k, v in data.items() if k in _TAPE_FIELDS}
                yield CallRecord(**known, valid=True, source=f"tape:{Path(path).name}")
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: not a tape record ({exc})") from None


class ReplyIndex:
    """Valid replies by (role, model, prompt hash), loaded once: an O(1) replay lookup."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, str], CallRecord] = {}
        self.sources: dict[str, int] = {}

    def add(self, records: Iterable[CallRecord], source: str) -> None:
        n = 0
        for rec in records:
            if rec.valid:
                self._by_key[(rec.role, rec.model, rec.prompt_hash)] = rec
                n += 1
        self.sources[source] = self.sources.get(source, 0) + n

    def get(self, role: str, model: str, digest: str) -> CallRecord | None:
        return self._by_key.get((role, model, digest))

    def __len__(self) -> int:
        return len(self._by_key)
