"""What a running runtime tells the outside: one ``OpsEvent`` per thing worth knowing, on one bus.

The runtime (``engine.live.Session``) emits; the alert channels (``ops.alerts``), the Telegram bot
(``ops.telegram``) and the Prometheus metrics (``ops.metrics``) listen. A listener must return at
once (queue its work, never send from the trading thread) and never raise into trading: the bus
logs a listener's error and goes on.

Kinds, their default level, and the ``fields`` each carries (numbers stay numbers, for metrics):

=====================  ========  ==========================================================================
kind                   level     fields
=====================  ========  ==========================================================================
run.start              info      venue, feed, symbols (list), journal
run.stop               info      steps, fills, why ("feed ended", "once", "killed", "error: ...")
fill                   info      symbol, side, qty, price, fee, slippage_bps, order_id, reason
stop_out               warning   symbol, qty, price, order_id
order                  (none)    order_id, symbol, status (new|accepted|partially_filled|filled|...)
risk.verdict           (none)    symbol, status (approved|resized|rejected), rule ("" or the failed rule)
risk.limit             warning   rule (daily_loss|weekly_loss|monthly_loss|drawdown_reduce|...), detail
risk.halt              critical  reason
risk.command           warning   action (pause|resume|close_all|kill), reason, source (cli|api|telegram)
risk.breaker           warning   symbol ("" = market-wide), detail
reconcile.diff         critical  key, explained (bool), resolution
venue.disconnect       warning   venue, why
venue.reconnect        info      venue
venue.request          (none)    venue, op (submit|cancel|replace|...), latency_s, error ("" or its kind)
feed.stale             warning   symbol, last_bar (ISO), late_s
llm.call               (none)    backend, latency_s, ok (bool)
llm.fallback           warning   backend, why
bar                    (none)    bar_to_order_s (None when the bar sent nothing)
daily.summary          info      pnl, pnl_pct, equity, positions, risk_use (dict), anomalies (list)
alert.test             info      (a test message from ``hflite alerts test``)
=====================  ========  ==========================================================================

"(none)" kinds are for metrics only: ``alertable`` is False for them and no channel sends them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from hflite import logs

Level = Literal["info", "warning", "critical"]
LEVELS: tuple[Level, ...] = ("info", "warning", "critical")

#: Each kind's default level; None: a metrics-only kind, never alerted.
KINDS: dict[str, Level | None] = {
    "run.start": "info",
    "run.stop": "info",
    "fill": "info",
    "stop_out": "warning",
    "order": None,
    "risk.verdict": None,
    "risk.limit": "warning",
    "risk.halt": "critical",
    "risk.command": "warning",
    "risk.breaker": "warning",
    "reconcile.diff": "critical",
    "venue.disconnect": "warning",
    "venue.reconnect": "info",
    "venue.request": None,
    "feed.stale": "warning",
    "llm.call": None,
    "llm.fallback": "warning",
    "bar": None,
    "daily.summary": "info",
    "alert.test": "info",
}


@dataclass(frozen=True, slots=True)
class OpsEvent:
    """One thing that happened. ``key`` deduplicates alerts ("" = kind and title)."""

    kind: str
    title: str = ""
    body: str = ""
    level: Level | None = None  # None: the kind's default (KINDS)
    key: str = ""
    run_id: str = ""
    bar_ts: int | None = None  # the bar-time (ns UTC) it concerns, when there is one
    ts: float = field(default_factory=time.time)  # wall clock, seconds
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown ops event kind {self.kind!r} (known: {', '.join(KINDS)})")
        if self.level is None:
            object.__setattr__(self, "level", KINDS[self.kind])
        elif self.level not in LEVELS:
            raise ValueError(f"unknown level {self.level!r} (info, warning or critical)")

    @property
    def alertable(self) -> bool:
        return self.level is not None and bool(self.title)

    @property
    def dedup_key(self) -> str:
        return self.key or f"{self.kind}|{self.title}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "level": self.level,
            "title": self.title,
            "body": self.body,
            "key": self.dedup_key,
            "run_id": self.run_id,
            "bar_ts": self.bar_ts,
            "ts": self.ts,
            "fields": dict(self.fields),
        }


Listener = Callable[[OpsEvent], None]


class OpsBus:
    """Fans each event out to its listeners; a failing listener is logged, never raised."""

    def __init__(self, run_id: str = "") -> None:
        self.run_id = run_id
        self.listeners: list[Listener] = []
        self._log = logs.get("hflite.ops")

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def __bool__(self) -> bool:
        return bool(self.listeners)

    def emit(self, kind: str, title: str = "", body: str = "", **kw: Any) -> OpsEvent | None:
        """Build and send one event (``kw``: level, key, bar_ts, fields). Returns it (None when
        nobody listens: building it is skipped)."""
        if not self.listeners:
            return None
        ev = OpsEvent(kind, title, body, run_id=self.run_id, **kw)
        self.send(ev)
        return ev

    def send(self, ev: OpsEvent) -> None:
        for fn in self.listeners:
            try:
                fn(ev)
            except Exception as exc:  # a listener never stops trading
                self._log.warning("ops.listener_failed", listener=repr(fn), kind=ev.kind, error=str(exc))
