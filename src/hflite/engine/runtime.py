"""The live runtime (asyncio): bars arrive one at a time from a feed and drive the same engine.

Replay = this runtime fed by a recorded feed at accelerated time. Paper and live swap the feed and
the venue, never this logic. The runtime owns growing arrays: it appends each bar, asks the
strategy for signals on the history seen so far (it cannot see later bars: they have not arrived),
and steps the engine once per bar-time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from hflite.engine.core import Engine, StrategyError
from hflite.engine.market import MarketData, SymbolBars
from hflite.execution.oms import Command
from hflite.strategy.base import SignalSet, Strategy, attach_market


@dataclass(frozen=True, slots=True)
class BarEvent:
    """One bar as a feed delivers it; ``ts`` is when it became known (its close), ns UTC."""

    symbol: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    live: bool = True  # False: warm-up history delivered before the run's start


class RecordedFeed:
    """Replays the bars of a MarketData in the order they became known.

    ``speed``: None = as fast as possible; otherwise a time multiplier (86400 = one day per second),
    a positive finite number (a NaN wait would never end).
    """

    def __init__(
        self,
        md: MarketData,
        speed: float | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed: expected None (no waiting) or a positive finite number, got {speed}")
        self.md = md
        self.speed = speed
        self._sleep = sleep

    def events(self) -> list[BarEvent]:
        rows: list[tuple[int, int, BarEvent]] = []
        order = {s: j for j, s in enumerate(self.md.bars)}
        for sym, b in self.md.bars.items():
            for k in range(b.n):
                ev = BarEvent(
                    sym,
                    int(b.ts[k]),
                    float(b.open[k]),
                    float(b.high[k]),
                    float(b.low[k]),
                    float(b.close[k]),
                    float(b.volume[k]),
                    live=bool(b.tl[k] >= 0),
                )
                rows.append((ev.ts, order[sym], ev))
        rows.sort(key=lambda r: (r[0], r[1]))
        return [r[2] for r in rows]

    async def __aiter__(self) -> AsyncIterator[BarEvent]:
        prev: int | None = None
        for ev in self.events():
            if self.speed and prev is not None and ev.ts > prev and ev.live:
                await self._sleep((ev.ts - prev) / 1e9 / self.speed)
            if ev.live:
                prev = ev.ts
            else:
                await asyncio.sleep(0)
            yield ev


def _grow(a: np.ndarray, n: int, fill: float | int = np.nan) -> np.ndarray:
    if len(a) >= n:
        return a
    shape = (max(n, 2 * len(a), 64),) + a.shape[1:]
    out = np.full(shape, fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


#: Seconds between the runtime's heartbeats in its journal (``hflite risk status`` reads them).
HEARTBEAT_S = 1.0


class Control(Protocol):
    """Where human risk commands come from (the SQLite journal's command queue), and where the
    runtime says it is alive."""

    def pending_commands(self) -> list[Command]: ...
    def mark_applied(self, seq: int, bar_ts: int) -> None: ...
    def heartbeat(self, status: str, bar_ts: int | None = None) -> None: ...


class StepHooks(Protocol):
    """What a paper/live session does around each bar-time: ``before`` (bring the venue up to the
    bar-time, reconcile, refuse to go on while the venue's state is unknown) and ``after`` (record
    the bar-time as decided, report progress)."""

    async def before(self, ts: int) -> None: ...
    def after(self, ts: int, i: int) -> None: ...


class LiveRuntime:
    """Builds MarketData and signals as bars arrive and steps the engine per bar-time."""

    def __init__(
        self,
        template: MarketData,
        strategy: Strategy,
        make_engine: Callable[[MarketData, dict[str, SignalSet]], Engine],
        control: Control | None = None,
        hooks: StepHooks | None = None,
    ) -> None:
        self.strategy = strategy
        self.control = control
        self.hooks = hooks
        self.status = "running"  # what the heartbeat says while the runtime waits for bars
        self.traded = list(template.traded)
        self.md = MarketData(
            timeline=np.empty(0, np.int64),
            bars={
                s: SymbolBars(
                    b.instrument,
                    np.empty(0, np.int64),
                    np.empty(0),
                    np.empty(0),
                    np.empty(0),
                    np.empty(0),
                    np.empty(0),
                    np.empty(0, np.int64),
                    n=0,
                )
                for s, b in template.bars.items()
            },
            traded=self.traded,
            slots=np.full((0, len(self.traded)), -1, np.int64),
            close_tl={s: np.empty(0) for s in template.bars},
            fx_tl={c: np.empty(0) for c in template.fx_tl},
            warnings=list(template.warnings),
            versions=dict(template.versions),
        )
        self._fx_src = _fx_sources(template)
        attach_market(strategy, self.md)  # others' bars as they arrive, never the template's future
        self.signals: dict[str, SignalSet] = {}
        self.engine = make_engine(self.md, self.signals)
        self.length = 0
        self._last_close: dict[str, float] = {s: np.nan for s in template.bars}
        self._beat_at = 0.0  # monotonic seconds of the last heartbeat
        self.on_beat: Callable[[str], None] | None = None  # each heartbeat (the systemd watchdog)

    async def run(self, feed: AsyncIterator[BarEvent | None] | RecordedFeed) -> Engine:
        """Step the engine per bar-time until the feed ends or a kill has left the book flat."""
        beats = asyncio.create_task(self._beat_forever()) if self.control is not None else None
        try:
            await self._consume(feed)
        finally:
            if beats is not None:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beats
                self._beat("stopped")
        self._trim()
        self.engine.finish()
        return self.engine

    async def _consume(self, feed: AsyncIterator[BarEvent | None] | RecordedFeed) -> None:
        """Step the engine once per bar-time: a group of events with one ``ts`` is stepped when an
        event with a later ``ts`` arrives, when the feed yields None (nothing more for now) or when
        it ends."""
        group: list[BarEvent] = []
        async for ev in feed:  # type: ignore[union-attr]
            if ev is None:  # the feed has nothing more for now (a live feed between polls)
                if group:
                    await self._step(group)
                    group = []
                    if self.engine.stopped:
                        return
                continue
            b = self.md.bars[ev.symbol]
            if b.n and ev.ts <= b.ts[b.n - 1]:  # a bar seen already, or older than one seen: once only
                continue
            if not ev.live:
                self._append(ev, -1)
                continue
            if group and ev.ts != group[0].ts:
                await self._step(group)
                group = []
                if self.engine.stopped:
                    return
            elif any(e.symbol == ev.symbol for e in group):  # the same bar twice in one bar-time
                continue
            group.append(ev)
        if group and not self.engine.stopped:
            await self._step(group)

    async def _step(self, group: list[BarEvent]) -> None:
        if self.hooks is not None:
            await self.hooks.before(group[0].ts)
        self._on_time(group)

    # -- heartbeat: `hflite risk status` tells a live runtime from a dead one ----------------------
    async def _beat_forever(self) -> None:
        """Beat while the runtime waits for bars (a daily feed is quiet for hours)."""
        while True:
            self._beat(self.status)
            await asyncio.sleep(HEARTBEAT_S)

    def _beat(self, status: str) -> None:
        if self.control is None:
            return
        self._beat_at = time.monotonic()
        last = int(self.md.timeline[self.length - 1]) if self.length else None
        self.control.heartbeat(status, last)
        if self.on_beat is not None:
            self.on_beat(status)

    # -- per bar-time -------------------------------------------------------------------------
    def _on_time(self, group: list[BarEvent]) -> None:
        i = self.length
        self._ensure(i + 1)
        self.md.timeline[i] = group[0].ts
        stepped: list[tuple[str, int]] = []
        for ev in group:
            k = self._append(ev, i)
            if ev.symbol in self.traded:
                self.md.slots[i, self.traded.index(ev.symbol)] = k
                stepped.append((ev.symbol, k))
        for sym, last in self._last_close.items():
            self.md.close_tl[sym][i] = last
        for ccy, (pair, invert) in self._fx_src.items():
            rate = self._last_close[pair]
            self.md.fx_tl[ccy][i] = 1.0 / rate if invert else rate
        self.md.fx_tl.setdefault("USD", np.ones(0))
        for sym, k in stepped:
            self._signal(sym, k)
        self.length = i + 1
        pending = self.control.pending_commands() if self.control is not None else []
        for cmd in pending:  # human commands queued in the journal (the source named unless the CLI)
            via = f" [via {cmd.source}]" if cmd.source and cmd.source != "cli" else ""
            self.engine.commands.append((cmd.action, f"{cmd.reason}{via}".strip()))
        self.engine.step(i)
        if self.hooks is not None:
            self.hooks.after(group[0].ts, i)
        if self.control is not None:
            for cmd in pending:  # marked once in effect: a crash before this re-applies them (idempotent)
                self.control.mark_applied(cmd.seq, group[0].ts)
            if time.monotonic() - self._beat_at >= HEARTBEAT_S:  # at max speed the loop never idles
                self._beat(self.status)

    def _append(self, ev: BarEvent, i: int) -> int:
        b = self.md.bars[ev.symbol]
        k = b.n
        if len(b.ts) <= k:
            b.ts = _grow(b.ts, k + 1, 0)
            for name in ("open", "high", "low", "close", "volume"):
                setattr(b, name, _grow(getattr(b, name), k + 1))
            b.tl = _grow(b.tl, k + 1, -1)
        b.ts[k], b.open[k], b.high[k], b.low[k], b.close[k], b.volume[k] = (
            ev.ts,
            ev.open,
            ev.high,
            ev.low,
            ev.close,
            ev.volume,
        )
        b.tl[k] = i
        b.n = k + 1
        self._last_close[ev.symbol] = ev.close
        return k

    def _signal(self, sym: str, k: int) -> None:
        b = self.md.bars[sym]
        try:
            fresh = self.strategy.signals(b.arrays())
        except Exception as exc:
            when = pd.Timestamp(int(b.ts[k]), unit="ns", tz="UTC")
            raise StrategyError(
                f"strategy {self.strategy.name!r} raised on {sym} at bar {k} ({when}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        sig = self.signals.get(sym)
        if sig is None:
            sig = self.signals[sym] = SignalSet(
                np.full(len(b.ts), np.nan),
                np.full(len(b.ts), np.nan),
                fresh.exits,
                {n: np.full(len(b.ts), np.nan) for n in fresh.values},
                fresh.reasons,
                None if fresh.size is None else np.full(len(b.ts), np.nan),
            )
        if len(sig.target) < len(b.ts):
            sig.target = _grow(sig.target, len(b.ts))
            sig.atr = _grow(sig.atr, len(b.ts))
            sig.values = {n: _grow(v, len(b.ts)) for n, v in sig.values.items()}
            if sig.size is not None:
                sig.size = _grow(sig.size, len(b.ts))
        sig.target[k] = fresh.target[k]
        sig.atr[k] = fresh.atr[k]
        if sig.size is not None and fresh.size is not None:
            sig.size[k] = fresh.size[k]
        for name, arr in fresh.values.items():
            sig.values[name][k] = arr[k]

    def _ensure(self, n: int) -> None:
        md = self.md
        if len(md.timeline) >= n:
            return
        md.timeline = _grow(md.timeline, n, 0)
        size = len(md.timeline)
        slots = np.full((size, len(self.traded)), -1, np.int64)
        slots[: len(md.slots)] = md.slots
        md.slots = slots
        for sym in md.close_tl:
            md.close_tl[sym] = _grow(md.close_tl[sym], size)
        for ccy in md.fx_tl:
            md.fx_tl[ccy] = _grow(md.fx_tl[ccy], size, 1.0 if ccy == "USD" else np.nan)
        self.engine.equity = _grow(self.engine.equity, size)

    def _trim(self) -> None:
        """Cut the arrays to what arrived, so results see exactly the replayed timeline."""
        md, n = self.md, self.length
        md.timeline = md.timeline[:n]
        md.slots = md.slots[:n]
        md.close_tl = {s: a[:n] for s, a in md.close_tl.items()}
        md.fx_tl = {c: a[:n] for c, a in md.fx_tl.items()}
        self.engine.equity = self.engine.equity[:n]


def _fx_sources(md: MarketData) -> dict[str, tuple[str, bool]]:
    from hflite.engine.market import fx_currencies

    return fx_currencies([md.bars[s].instrument for s in md.traded])
