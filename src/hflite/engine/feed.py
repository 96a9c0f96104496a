"""The live feed: polls each symbol's provider when its next bar closes and delivers the new bars.

Every poll goes through the path of ``hflite data update`` (each new bar validated, bad rows
quarantined, the partition written versioned to the store); the bars are then read back from the
store, so a live run decides on exactly the bars a later backtest reads. A bar is delivered once it
is known (its close on the instrument's calendar, ``market.available_at``), never while it forms.

Delivery is in non-decreasing bar time across symbols. A bar arriving after a later one was
delivered goes out with ``live=False`` (history, no decision on stale data); a bar seen again is
not delivered again. A provider that fails delays only its symbols, with a logged reason and a
retry time; the feed never invents a bar.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from hflite import logs
from hflite import redact as redaction
from hflite.data.providers import ProviderError, make_provider
from hflite.data.store import DataNotFoundError, Store, bars_key
from hflite.data.update import ItemResult, UpdateItem, Updater, update_items
from hflite.domain.instrument import Calendar, Instrument, UnknownInstrumentError, instrument_for
from hflite.engine.market import FREQ_NS, NS_PER_DAY, available_at, nyse_sessions
from hflite.engine.runtime import BarEvent

NS_PER_S = 10**9
#: Days a schedule looks ahead at first; widened when a calendar has nothing in it (a long closure).
_HORIZON_DAYS = 14
_MAX_HORIZON_DAYS = 120
#: NYSE's regular open (New York time). market.py keeps only each session's close, which differs on
#: early-close days; the open does not.
_NYSE_OPEN = pd.Timedelta(hours=9, minutes=30)
#: An FX trading day ends at 17:00 New York (as in ``market.available_at``): the bar that opens at or
#: after 17:00 belongs to the next day, and the days are Monday to Friday.
_FX_ROLL = pd.Timedelta(hours=7)
#: Bars older than this many bar lengths before a symbol's last delivered bar are not tracked: a
#: vendor backfilling further back changes history, not what a live run decides on.
_LATE_WINDOW_BARS = 20
#: Longest single wait: the clock is read again after it (a laptop that slept, a clock that stepped).
_MAX_SLEEP_S = 300.0


def next_known_at(instrument: Instrument, freq: str, after_ns: int) -> int:
    """When the first bar known strictly after ``after_ns`` becomes known, int ns UTC.

    Daily: the next session's close on the instrument's calendar (NYSE sessions, holidays and early
    closes; every UTC day for 24/7 crypto; Monday to Friday at 17:00 New York for 24/5 FX).
    Intraday: the next bar on the grid of ``after_ns`` (a bar's known-at time, its open plus its
    length) whose span meets a session (NYSE 09:30 to the session's close; the FX week).
    """
    if freq not in FREQ_NS:
        raise ValueError(f"freq: expected one of {', '.join(FREQ_NS)}, got {freq!r}")
    days = _HORIZON_DAYS
    while days <= _MAX_HORIZON_DAYS:
        hi_ns = after_ns + days * NS_PER_DAY
        if freq == "1d":
            known = _daily_known(instrument, after_ns - 3 * NS_PER_DAY, hi_ns)
        else:
            known = _intraday_known(instrument, FREQ_NS[freq], after_ns, hi_ns)
        later = known[known > after_ns]
        if len(later):
            return int(later.min())
        days *= 2
    when = pd.Timestamp(after_ns, unit="ns", tz="UTC")
    raise ValueError(
        f"{instrument.symbol}: no {freq} bar is due within {_MAX_HORIZON_DAYS} days after {when} "
        f"on the {instrument.calendar.value} calendar (the NYSE calendar ends in 2030)"
    )


def _utc(t_ns: int) -> pd.Timestamp:
    return pd.Timestamp(t_ns, unit="ns", tz="UTC")


def _daily_known(instrument: Instrument, lo_ns: int, hi_ns: int) -> np.ndarray:
    days = pd.date_range(_utc(lo_ns).floor("D"), _utc(hi_ns).floor("D"), freq="D")
    if instrument.calendar is Calendar.XNYS:
        days = nyse_sessions(days[0], days[-1])
    elif instrument.calendar is Calendar.FX:
        days = days[days.day_of_week < 5]
    if len(days) == 0:
        return np.empty(0, np.int64)
    return available_at(instrument, "1d", pd.DatetimeIndex(days))[0]


def _intraday_known(instrument: Instrument, step: int, after_ns: int, hi_ns: int) -> np.ndarray:
    known = after_ns + step * np.arange(1, (hi_ns - after_ns) // step + 1, dtype=np.int64)
    opens = known - step
    if instrument.calendar is Calendar.ALWAYS:
        return known
    if instrument.calendar is Calendar.FX:
        local = pd.DatetimeIndex(opens.view("M8[ns]")).tz_localize("UTC").tz_convert("America/New_York")
        weekday = np.asarray((local.tz_localize(None) + _FX_ROLL).day_of_week < 5, dtype=bool)
        return np.asarray(known[weekday], dtype=np.int64)
    sessions = nyse_sessions(_utc(after_ns).floor("D") - pd.Timedelta(days=1), _utc(hi_ns))
    if len(sessions) == 0:
        return np.empty(0, np.int64)
    close = available_at(instrument, "1d", pd.DatetimeIndex(sessions))[0]
    start = pd.DatetimeIndex(sessions).tz_localize(None) + _NYSE_OPEN
    start_ns = start.tz_localize("America/New_York").tz_convert("UTC").as_unit("ns").asi8
    pos = np.searchsorted(close, opens, side="right")  # the first session closing after the open
    inside = pos < len(close)
    pos = np.minimum(pos, len(close) - 1)
    return np.asarray(known[inside & (opens + step > start_ns[pos])], dtype=np.int64)


@dataclass
class SymbolStatus:
    """What the feed knows of one symbol, for the runtime's progress line and ``hflite status``.

    ``last_ts``: known-at time of the last bar delivered (ns UTC); ``next_due``: when the feed polls
    the symbol next (ns UTC); ``state``: "ok", "waiting: ..." (the vendor has not published a bar
    that is due) or "delayed: <why> since <when>"; ``failures``: consecutive failed polls.
    """

    symbol: str
    last_ts: int | None = None
    next_due: int | None = None
    state: str = "ok"
    failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain values with ISO times, e.g. for a JSON status file."""
        return {
            "symbol": self.symbol,
            "last_bar": None if self.last_ts is None else _utc(self.last_ts).isoformat(),
            "next_due": None if self.next_due is None else _utc(self.next_due).isoformat(),
            "state": self.state,
            "failures": self.failures,
        }

    def summary(self) -> str:
        """One line, e.g. ``BTCUSDT last 2023-12-20 05:00 next 06:00:05 ok``."""
        last = "-" if self.last_ts is None else f"{_utc(self.last_ts):%Y-%m-%d %H:%M}"
        due = "-" if self.next_due is None else f"{_utc(self.next_due):%Y-%m-%d %H:%M:%S}"
        return f"{self.symbol} last {last} next {due} {self.state}"


@dataclass
class _Track:
    """The feed's private bookkeeping of one symbol."""

    instrument: Instrument
    item: UpdateItem
    floor: int  # bars known at or before this are never delivered (history the run already has)
    expect: int  # known-at time of the next bar on the calendar
    due: int  # when to poll next
    seen: dict[int, tuple[float, ...]] = field(default_factory=dict)  # known-at -> values delivered
    forming: set[int] = field(default_factory=set)  # forming bars already logged
    waits: int = 0  # polls in a row that found the expected bar unpublished
    delayed_since: int | None = None


class _Lent:
    """A provider lent to the update path: notes each failure, and stays open after the update
    (kept across polls, so its rate limiter keeps counting; the feed closes it)."""

    def __init__(self, provider: Any, name: str, errors: dict[str, str]) -> None:
        self.provider, self.provider_name, self.errors = provider, name, errors

    def bars(self, symbol: str, freq: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        try:
            frame: pd.DataFrame = self.provider.bars(symbol, freq, start, end)
            return frame
        except ProviderError as exc:
            self.errors[symbol] = self.errors[self.provider_name] = str(exc)
            raise

    def close(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.provider, name)


class LiveFeed:
    """An async iterator of BarEvents: each symbol's bars as they close, fetched through the update
    path into the store and read back from it.

    ``settings``: the run's Settings (or its ``data`` or ``data.update`` section): the provider of
    each symbol comes from ``[data.update]`` (an ``intraday`` entry for the symbol and frequency,
    else ``providers`` by asset class). ``since``: per symbol, the known-at time (ns UTC) of the last
    bar the caller already has (default: the store's last bar known by now; a symbol the store lacks
    starts from now). ``now`` and ``sleep`` are injectable for simulated time; :meth:`stop` (or
    setting ``stop``) ends the iteration; ``once``: poll what is due now, deliver it, and end.
    ``factory`` builds providers (tests point them at local servers).
    """

    def __init__(
        self,
        settings: Any,
        store: Store,
        symbols: list[str],
        freq: str,
        *,
        since: dict[str, int] | None = None,
        poll_delay_s: float = 5.0,
        retry_s: float = 30.0,
        max_retry_s: float = 300.0,
        now: Callable[[], pd.Timestamp] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        once: bool = False,
        log: Any = None,
        instruments: dict[str, Instrument] | None = None,
        factory: Callable[..., Any] = make_provider,
        stop: asyncio.Event | None = None,
    ) -> None:
        _check_args(symbols, freq, poll_delay_s, retry_s, max_retry_s)
        self.cfg = _update_config(settings)
        self.store, self.symbols, self.freq = store, list(symbols), freq
        self.poll_delay_ns = int(poll_delay_s * NS_PER_S)
        self.retry_s, self.max_retry_s = retry_s, max(max_retry_s, retry_s)
        self.once = once
        self._now = now or (lambda: pd.Timestamp.now(tz="UTC"))
        self._sleep = sleep
        self._factory = factory
        self.log = log if log is not None else logs.get("hflite.engine.feed")
        self._stop = stop if stop is not None else asyncio.Event()
        #: Set while the feed waits for the next due time: all that was due has been delivered, so a
        #: runtime may step the last bar-time without waiting for the next one.
        self.idle = asyncio.Event()
        self.status: dict[str, SymbolStatus] = {}
        self._providers: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
        self._errors: dict[str, str] = {}
        self._order = {s: j for j, s in enumerate(self.symbols)}
        self._watermark = -1  # known-at time of the latest bar delivered, across symbols
        now_ns = self._now_ns()
        self._tracks: dict[str, _Track] = {}
        for sym in self.symbols:
            inst = _instrument(sym, instruments)
            last = (since or {}).get(sym)
            if last is None:
                last = self._stored_last(sym, inst, now_ns)
            # nothing known: start from now, on the bar grid
            start = last if last is not None else now_ns - now_ns % FREQ_NS[freq]
            expect = next_known_at(inst, freq, int(start))
            item = _item_for(self.cfg, sym, freq, inst)
            due = expect + self.poll_delay_ns
            self._tracks[sym] = _Track(inst, item, int(start), expect, due)
            self.status[sym] = SymbolStatus(sym, None if last is None else int(last), due)

    # -- control --------------------------------------------------------------------------------
    def stop(self) -> None:
        """End the iteration at the next wait (a poll in progress finishes first)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Close the providers the feed opened (the iteration does it when it ends)."""
        for provider in self._providers.values():
            with contextlib.suppress(Exception):
                provider.close()
        self._providers.clear()

    def __aiter__(self) -> AsyncIterator[BarEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[BarEvent]:
        async for batch in self.batches():
            for ev in batch:
                yield ev

    async def batches(self) -> AsyncIterator[list[BarEvent]]:
        """The same bars, one list per poll (possibly empty): after each list everything due has
        been delivered, so a runtime can step the last bar-time without waiting for the next one."""
        try:
            while not self._stop.is_set():
                now_ns = self._now_ns()
                due = self._due(now_ns)
                if due:
                    self.idle.clear()
                    yield await self._round(due, now_ns)
                if self.once:
                    return
                if not due:
                    wait_s = (min(t.due for t in self._tracks.values()) - now_ns) / NS_PER_S
                    self.idle.set()
                    await self._wait(min(wait_s, _MAX_SLEEP_S))
        finally:
            self.close()

    def _due(self, now_ns: int) -> list[str]:
        if self.once:  # what should be known by now, whatever the poll delay
            return [s for s, t in self._tracks.items() if t.expect <= now_ns]
        return [s for s, t in self._tracks.items() if t.due <= now_ns]

    async def _wait(self, seconds: float) -> None:
        if self._stop.is_set():
            return
        sleeper = asyncio.ensure_future(self._sleep(max(seconds, 0.0)))
        stopper = asyncio.ensure_future(self._stop.wait())
        _, pending = await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _now_ns(self) -> int:
        t = pd.Timestamp(self._now())
        if t.tzinfo is None:
            raise ValueError(f"now() returned a naive time {t}: the feed needs timezone-aware UTC")
        return int(t.tz_convert("UTC").as_unit("ns").value)

    # -- one poll of the symbols that are due -----------------------------------------------------
    async def _round(self, symbols: list[str], now_ns: int) -> list[BarEvent]:
        results = await asyncio.to_thread(self._update, symbols, _utc(now_ns))
        fresh: list[BarEvent] = []
        for sym in symbols:
            result = results[sym]
            if result.status in ("failed", "skipped"):
                self._delayed(sym, self._reason(result), now_ns)
                continue
            if result.quarantined:  # the update path held bad rows back: they are never delivered
                self.log.warning("feed.quarantined", symbol=sym, rows=result.quarantined)
            if result.duplicates:
                self.log.info(
                    "feed.duplicate",
                    symbol=sym,
                    copies=result.duplicates,
                    note="the provider sent exact copies of a bar; each bar is delivered once",
                )
            fresh += self._new_bars(sym, now_ns)
        fresh.sort(key=lambda ev: (ev.ts, self._order[ev.symbol]))
        out = [self._deliver(ev) for ev in fresh]
        for sym in symbols:
            if results[sym].status not in ("failed", "skipped"):
                self._reschedule(sym, now_ns)
        return out

    def _update(self, symbols: list[str], now: pd.Timestamp) -> dict[str, ItemResult]:
        """The update path for these symbols (runs in a worker thread: HTTP and disk block)."""
        self._errors.clear()
        updater = Updater(
            self.store,
            now=now,
            history_start=pd.Timestamp(self.cfg.history_start, tz="UTC"),
            overlap_bars=self.cfg.overlap_bars,
            factory=self._provider,
        )
        results = updater.run([self._tracks[s].item for s in symbols])
        return {r.item.target: r for r in results}

    def _provider(self, name: str, **options: Any) -> Any:
        key = (name, tuple(sorted(options.items())))
        if key not in self._providers:
            try:
                self._providers[key] = self._factory(name, **options)
            except ProviderError as exc:  # e.g. a missing key: every symbol of this provider waits
                self._errors[name] = str(exc)
                raise
        return _Lent(self._providers[key], name, self._errors)

    def _reason(self, result: ItemResult) -> str:
        raw = self._errors.get(result.item.target) or self._errors.get(result.item.provider)
        text = redaction.redact(raw or result.message or f"{result.item.provider} failed")
        return " ".join(text.split())  # one line

    def _delayed(self, sym: str, reason: str, now_ns: int) -> None:
        t, st = self._tracks[sym], self.status[sym]
        st.failures += 1
        if t.delayed_since is None:
            t.delayed_since = now_ns
        wait_s = min(self.retry_s * 2 ** min(st.failures - 1, 30), self.max_retry_s)
        t.due = now_ns + int(wait_s * NS_PER_S)
        st.next_due = t.due
        st.state = f"delayed: {reason} since {_utc(t.delayed_since):%Y-%m-%d %H:%M:%S} UTC"
        self.log.warning(
            "feed.delayed",
            symbol=sym,
            error=reason,
            retry_at=_utc(t.due).isoformat(),
            failures=st.failures,
        )
        # a fresh client next time (a connection pool may hold a dead socket); the limiter restarts
        key = (t.item.provider, tuple(sorted(t.item.options)))
        provider = self._providers.pop(key, None)
        if provider is not None:
            with contextlib.suppress(Exception):
                provider.close()

    def _new_bars(self, sym: str, now_ns: int) -> list[BarEvent]:
        """Bars of ``sym`` in the store not delivered yet and known by now (known-at <= now)."""
        t = self._tracks[sym]
        margin = pd.Timedelta(days=4) if self.freq == "1d" else pd.Timedelta(FREQ_NS[self.freq], "ns")
        try:
            frame = self.store.read_bars(sym, self.freq, start=_utc(t.floor) - margin)
        except DataNotFoundError:
            return []
        if frame.empty:
            return []
        known = available_at(t.instrument, self.freq, pd.DatetimeIndex(frame["ts"]))[0]
        cols = [frame[c].to_numpy(np.float64) for c in ("open", "high", "low", "close", "volume")]
        out: list[BarEvent] = []
        for k in np.flatnonzero(known > t.floor).tolist():
            ts = int(known[k])
            values = tuple(float(c[k]) for c in cols)
            if ts > now_ns:
                self._forming(sym, t, ts)
            elif ts in t.seen:
                self._seen_again(sym, t, ts, values)
            else:
                t.seen[ts] = values
                o, h, lo, c, v = values
                out.append(BarEvent(sym, ts, o, h, lo, c, v))
        return out

    def _forming(self, sym: str, t: _Track, ts: int) -> None:
        if ts not in t.forming:
            t.forming.add(ts)
            self.log.info(
                "feed.forming",
                symbol=sym,
                bar_known_at=_utc(ts).isoformat(),
                note="the provider sent a bar still forming: not delivered",
            )

    def _seen_again(self, sym: str, t: _Track, ts: int, values: tuple[float, ...]) -> None:
        if values != t.seen[ts]:  # the same bar again with other values: already delivered once
            t.seen[ts] = values
            self.log.info(
                "feed.duplicate",
                symbol=sym,
                bar_known_at=_utc(ts).isoformat(),
                note="the bar came again with revised values; it was delivered once, not again",
            )

    def _deliver(self, ev: BarEvent) -> BarEvent:
        st = self.status[ev.symbol]
        if ev.ts < self._watermark:
            self.log.warning(
                "feed.late",
                symbol=ev.symbol,
                bar_known_at=_utc(ev.ts).isoformat(),
                latest=_utc(self._watermark).isoformat(),
                note="delivered as history (live=False): no decision on stale data",
            )
            ev = replace(ev, live=False)
        self._watermark = max(self._watermark, ev.ts)
        st.last_ts = ev.ts if st.last_ts is None else max(st.last_ts, ev.ts)
        return ev

    def _reschedule(self, sym: str, now_ns: int) -> None:
        t, st = self._tracks[sym], self.status[sym]
        if t.delayed_since is not None:
            self.log.info("feed.resumed", symbol=sym, after_failures=st.failures)
        t.delayed_since, st.failures = None, 0
        last = st.last_ts if st.last_ts is not None else t.floor
        self._trim(t, last)
        t.expect = next_known_at(t.instrument, self.freq, last)
        if t.expect + self.poll_delay_ns > now_ns:
            t.waits, t.due, st.state = 0, t.expect + self.poll_delay_ns, "ok"
        else:  # due, polled, and not published yet: ask again soon
            t.waits += 1
            wait_s = min(self.retry_s * 2 ** min(t.waits - 1, 30), self.max_retry_s)
            t.due = now_ns + int(wait_s * NS_PER_S)
            st.state = f"waiting: the bar known at {_utc(t.expect):%Y-%m-%d %H:%M} is not published yet"
            if t.waits == 1:
                self.log.info("feed.waiting", symbol=sym, bar_known_at=_utc(t.expect).isoformat())
        st.next_due = t.due

    def _trim(self, t: _Track, last: int) -> None:
        """Forget bars too old to matter, so a feed that runs for months keeps constant memory."""
        step = FREQ_NS[self.freq] * (2 if self.freq == "1d" else 1)
        t.floor = max(t.floor, last - _LATE_WINDOW_BARS * step)
        t.seen = {ts: v for ts, v in t.seen.items() if ts > t.floor}
        t.forming = {ts for ts in t.forming if ts > last}

    def _stored_last(self, sym: str, inst: Instrument, now_ns: int) -> int | None:
        """Known-at time of the store's last bar of ``sym`` that is known by now (a partial bar an
        update wrote while it formed is not "last")."""
        info = next((p for p in self.store.partitions() if p.key == bars_key(sym, self.freq)), None)
        if info is None or info.last is None:
            return None
        span = pd.Timedelta(days=10) if self.freq == "1d" else pd.Timedelta(FREQ_NS[self.freq] * 10, "ns")
        tail = self.store.read_bars(sym, self.freq, start=pd.Timestamp(info.last) - span)
        if tail.empty:
            return None
        known = available_at(inst, self.freq, pd.DatetimeIndex(tail["ts"]))[0]
        known = known[known <= now_ns]
        return int(known.max()) if len(known) else None


def _check_args(
    symbols: Iterable[str], freq: str, poll_delay_s: float, retry_s: float, max_retry_s: float
) -> None:
    symbols = list(symbols)
    if not symbols:
        raise ValueError("symbols: expected at least one symbol")
    if len(set(symbols)) != len(symbols):
        raise ValueError("symbols: contains duplicates")
    if freq not in FREQ_NS:
        raise ValueError(f"freq: expected one of {', '.join(FREQ_NS)}, got {freq!r}")
    if not (math.isfinite(poll_delay_s) and poll_delay_s >= 0):
        raise ValueError(f"poll_delay_s: expected a finite number >= 0, got {poll_delay_s}")
    for name, value in (("retry_s", retry_s), ("max_retry_s", max_retry_s)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: expected a finite number > 0, got {value}")


def _update_config(settings: Any) -> Any:
    """The ``[data.update]`` section, from Settings, its ``data`` section, or the section itself."""
    data = getattr(settings, "data", settings)
    cfg = getattr(data, "update", data)
    if not all(hasattr(cfg, a) for a in ("providers", "intraday", "history_start", "overlap_bars")):
        raise TypeError("settings: expected Settings or its [data.update] section")
    return cfg


def _instrument(symbol: str, instruments: dict[str, Instrument] | None) -> Instrument:
    try:
        return instrument_for(symbol, instruments)
    except UnknownInstrumentError:
        raise ValueError(f"{symbol}: unknown instrument; pass its definition in instruments=") from None


def _item_for(cfg: Any, symbol: str, freq: str, inst: Instrument) -> UpdateItem:
    """The update item of ``hflite data update`` for this symbol and frequency, else one from the
    provider configured for its asset class."""
    for item in update_items(cfg, "bars"):
        if (item.target, item.freq) == (symbol, freq):
            return item
    if inst.asset_class not in cfg.providers:
        raise ValueError(f"data.update.providers: no provider for {inst.asset_class.value} ({symbol})")
    return UpdateItem("bars", cfg.providers[inst.asset_class], symbol, freq, inst.asset_class.value)


__all__ = ["LiveFeed", "SymbolStatus", "next_known_at"]
