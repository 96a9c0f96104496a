"""Market hours: when an instrument's market is open, and a gate that holds orders while it is not.

A live run decides on a bar once it is known (``market.available_at``): a daily US-equity bar at the
NYSE close, an FX bar at 17:00 New York on a Friday, ... The orders of such a decision must not reach
the broker while the market is closed; ``MarketGate`` holds them and sends them at the next open.

Calendars (``Instrument.calendar``):

- ``XNYS``: open from 09:30 New York to the session's close on every NYSE session. The sessions and
  their closes (holidays, 13:00 early closes) are those of ``hflite.engine.market`` (exchange_calendars,
  cached on disk): no second holiday list. The regular open is 09:30 New York on every session, as in
  ``feed.py``.
- ``FX`` (24/5): closed from Friday 17:00 New York to Sunday 17:00 New York, open otherwise.
- ``ALWAYS`` (24/7 crypto): never closes.

Times are int nanoseconds UTC throughout.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from hflite import logs
from hflite.domain.instrument import AssetClass, Calendar, Instrument, instrument_for
from hflite.domain.order import Order, OrderStatus, OrderType
from hflite.execution.timing import Quote, TimingRules, crossing_price, limit_price, next_window
from hflite.execution.venues.base import EventVenue, VenueEvent, VenueEventKind

__all__ = ["MarketGate", "is_open", "next_open", "release_forever"]

NS_PER_S = 10**9
_NY = ZoneInfo("America/New_York")
#: NYSE's regular open, New York time (the same on early-close days; only the close moves).
_NYSE_OPEN_H, _NYSE_OPEN_M = 9, 30
#: The FX week ends on Friday and starts again on Sunday at this hour, New York time.
_FX_ROLL_H = 17
#: Stands in for any XNYS instrument when reading the NYSE calendar through ``market.available_at``.
_XNYS = Instrument("XNYS", AssetClass.EQUITY, "USD", Calendar.XNYS, 0.01, 1.0)
#: Longest single sleep of ``release_forever``: orders held while it sleeps, for a market that opens
#: sooner than the one it waits for, are seen at the next wake; a clock that stepped is read again.
_MAX_SLEEP_S = 60.0
#: Pause of ``release_forever`` after a release that raised (no busy loop on a venue that keeps failing).
_RETRY_S = 5.0


@lru_cache(maxsize=1)
def _nyse_table() -> tuple[np.ndarray, np.ndarray]:
    """(open, close) of every NYSE session in market.py's calendar, int64 ns UTC, sorted."""
    import pandas as pd

    from hflite.engine.market import available_at, nyse_sessions

    sessions = nyse_sessions(pd.Timestamp("1900-01-01", tz="UTC"), pd.Timestamp("2200-01-01", tz="UTC"))
    closes = np.asarray(available_at(_XNYS, "1d", pd.DatetimeIndex(sessions))[0], dtype=np.int64)
    local = pd.DatetimeIndex(sessions).tz_localize(None) + pd.Timedelta(
        hours=_NYSE_OPEN_H, minutes=_NYSE_OPEN_M
    )
    opens = local.tz_localize("America/New_York").tz_convert("UTC").as_unit("ns").asi8.astype(np.int64)
    return opens, closes


def _utc(t_ns: int) -> datetime:
    s, rem = divmod(int(t_ns), NS_PER_S)
    return datetime.fromtimestamp(s, tz=UTC) + timedelta(microseconds=rem // 1000)


def _fmt(t_ns: int) -> str:
    return f"{_utc(t_ns):%Y-%m-%d %H:%M} UTC"


def _iso(t_ns: int) -> str:
    return _utc(t_ns).isoformat()


def _fx_closed(now_ns: int) -> bool:
    local = _utc(now_ns).astimezone(_NY)
    wd = local.weekday()  # Monday 0 ... Sunday 6
    return wd == 5 or (wd == 4 and local.hour >= _FX_ROLL_H) or (wd == 6 and local.hour < _FX_ROLL_H)


def _fx_reopen(now_ns: int) -> int:
    """The Sunday 17:00 New York that ends the FX weekend ``now_ns`` falls in (``now_ns`` closed)."""
    local = _utc(now_ns).astimezone(_NY)
    sunday = local.date() + timedelta(days=6 - local.weekday())
    # 17:00 is never in a DST gap or fold (the clocks change at 02:00)
    reopen = datetime(sunday.year, sunday.month, sunday.day, _FX_ROLL_H, tzinfo=_NY)
    return int(reopen.timestamp()) * NS_PER_S


def is_open(instrument: Instrument, now_ns: int) -> bool:
    """Whether the instrument's market is open at ``now_ns`` (an NYSE session from its 09:30 open
    up to, not including, its close; FX outside Friday 17:00 to Sunday 17:00 New York; crypto
    always). Raises ValueError after the end of the NYSE calendar (2030)."""
    cal = instrument.calendar
    if cal is Calendar.ALWAYS:
        return True
    if cal is Calendar.FX:
        return not _fx_closed(now_ns)
    opens, closes = _nyse_table()
    _check_span(instrument, now_ns, opens)
    pos = int(np.searchsorted(opens, now_ns, side="right")) - 1
    return pos >= 0 and now_ns < int(closes[pos])


def next_open(instrument: Instrument, now_ns: int) -> int:
    """``now_ns`` when the market is open, else when it opens next (int ns UTC)."""
    cal = instrument.calendar
    if cal is Calendar.ALWAYS:
        return int(now_ns)
    if cal is Calendar.FX:
        return _fx_reopen(now_ns) if _fx_closed(now_ns) else int(now_ns)
    if is_open(instrument, now_ns):
        return int(now_ns)
    opens, _ = _nyse_table()
    pos = int(np.searchsorted(opens, now_ns, side="right"))
    if pos >= len(opens):
        _check_span(instrument, opens[-1] + 1, opens)
    return int(opens[pos])


def _check_span(instrument: Instrument, now_ns: int, opens: np.ndarray) -> None:
    if now_ns >= int(opens[-1]) + 86_400 * NS_PER_S:
        raise ValueError(
            f"{instrument.symbol}: {_fmt(now_ns)} is after the end of the NYSE calendar "
            f"({_fmt(int(opens[-1]))}); market hours are unknown"
        )


@dataclass
class _Held:
    """Orders held together (one order, or an OCO group) for one venue until ``open_ns``."""

    venue: _Wrapped
    orders: list[Order]
    oco: bool
    open_ns: int
    prices: dict[str, float] = field(default_factory=dict)  # order id -> price replaced while held
    reason: str = "market closed"


@dataclass
class _Priced:
    """A market order sent as a limit priced from the spread, until its timeout."""

    venue: _Wrapped
    order: Order
    deadline_ns: int


@dataclass
class _Wrapped:
    """A venue's own send methods, as they were before the gate wrapped them."""

    venue: EventVenue
    submit: Callable[[Order], None]
    oco: Callable[[list[Order]], None]
    cancel: Callable[[Order], None]
    replace: Callable[[Order, float], None]


class MarketGate:
    """Holds the orders of closed markets and sends them at the open; with ``rules``
    (``[execution.timing]``, ``hflite.execution.timing``) also holds them through a session's first
    and last minutes and while the quoted spread is too wide, and sends market orders as limits priced
    from the spread (``quotes``: the venue's ``quote(symbol)``), re-priced or cancelled at their timeout.

    ``wrap(venue)`` routes the venue's sends through the gate: an order whose market is open now is
    sent at once; else it is held (logged once as ``order.held``) in FIFO order until ``due`` finds
    its market open. Cancelling a held order removes it from the hold and delivers CANCELLED to the
    venue's inbox (nothing reaches the broker); replacing a held order's price delivers REPLACED and
    the order goes out at the new price. ``instruments`` resolve each order's calendar (the sample
    instruments are the fallback). Thread-safe: sends are serialised by one lock.
    """

    def __init__(
        self,
        instruments: dict[str, Instrument],
        now: Callable[[], int] = time.time_ns,
        log: Any = None,
        rules: TimingRules | None = None,
        quotes: Callable[[str], Quote | None] | None = None,
    ) -> None:
        self.instruments = dict(instruments)
        self.rules = rules if rules is not None and rules.active else None
        self.quotes = quotes
        self._priced: dict[str, _Priced] = {}
        self.now = now
        self.log = log if log is not None else logs.get("hflite.engine.hours")
        self._held: list[_Held] = []
        self._wrapped: dict[int, _Wrapped] = {}
        self._lock = threading.RLock()
        self._passing = 0  # > 0 while the gate itself calls a venue's own methods

    # -- wiring ----------------------------------------------------------------------------------
    def wrap(self, venue: EventVenue) -> EventVenue:
        """Route ``venue``'s submit, OCO, cancel and replace sends through the gate (once)."""
        if id(venue) in self._wrapped:
            return venue
        w = _Wrapped(venue, venue._send_submit, venue._send_oco, venue._send_cancel, venue._send_replace)
        self._wrapped[id(venue)] = w
        venue._send_submit = lambda order: self._submit(w, order)  # type: ignore[method-assign]
        venue._send_oco = lambda orders: self._oco(w, orders)  # type: ignore[method-assign]
        venue._send_cancel = lambda order: self._cancel(w, order)  # type: ignore[method-assign]
        venue._send_replace = lambda order, price: self._replace(w, order, price)  # type: ignore[method-assign]
        return venue

    def unwrap(self, venue: EventVenue) -> None:
        """Give ``venue`` its own send methods back (held orders stay held)."""
        w = self._wrapped.pop(id(venue), None)
        if w is not None:
            for name in ("_send_submit", "_send_oco", "_send_cancel", "_send_replace"):
                venue.__dict__.pop(name, None)

    # -- the wrapped sends -----------------------------------------------------------------------
    def _submit(self, w: _Wrapped, order: Order) -> None:
        self._send_or_hold(w, [order], oco=False)

    def _oco(self, w: _Wrapped, orders: list[Order]) -> None:
        self._send_or_hold(w, list(orders), oco=True)

    def _send_or_hold(self, w: _Wrapped, orders: list[Order], *, oco: bool) -> None:
        with self._lock:
            if self._passing:  # a venue's own _send_oco sending its legs one by one
                self._call(w, orders, oco)
                return
            orders = [o for o in orders if self._entry_of(o) is None]  # held already: once only
            if not orders:
                return
            now_ns = int(self.now())
            open_ns, reason = self._ready(orders, now_ns)
            if open_ns <= now_ns:
                self.due(now_ns)  # whatever was held before goes first (FIFO)
                self._call(w, orders, oco)
                return
            self._held.append(_Held(w, orders, oco, open_ns, reason=reason))
            for o in orders:
                self.log.info("order.held", order_id=o.id, symbol=o.symbol, open=_iso(open_ns), reason=reason)

    def _cancel(self, w: _Wrapped, order: Order) -> None:
        with self._lock:
            entry = self._entry_of(order)
            if entry is None:
                w.cancel(order)
                return
            entry.orders = [o for o in entry.orders if o is not order]
            entry.prices.pop(order.id, None)
            if not entry.orders:
                self._held.remove(entry)
            now_ns = int(self.now())
            self.log.info("order.held_cancelled", order_id=order.id, symbol=order.symbol)
        w.venue.deliver(
            [
                VenueEvent(
                    VenueEventKind.CANCELLED,
                    order.id,
                    now_ns,
                    f"{order.id}:{VenueEventKind.CANCELLED.value}",
                    reason="cancelled while held (market closed); never sent",
                    symbol=order.symbol,
                )
            ]
        )

    def _replace(self, w: _Wrapped, order: Order, price: float) -> None:
        with self._lock:
            entry = self._entry_of(order)
            if entry is None:
                w.replace(order, price)
                return
            entry.prices[order.id] = float(price)
            now_ns = int(self.now())
        w.venue.deliver(
            [
                VenueEvent(
                    VenueEventKind.REPLACED,
                    order.id,
                    now_ns,
                    f"{order.id}:replaced:{float(price)!r}",
                    price=float(price),
                    symbol=order.symbol,
                )
            ]
        )

    # -- releasing -------------------------------------------------------------------------------
    def due(self, now_ns: int | None = None) -> list[Order]:
        """Send, in the order they were held, every held order whose market is open at ``now_ns``
        (default: the gate's clock) and that is still SUBMITTED; returns the orders sent. An order
        that left SUBMITTED while held (the journal settled it) is dropped unsent."""
        with self._lock:
            t = int(self.now()) if now_ns is None else int(now_ns)
            self._timeouts(t)
            sent: list[Order] = []
            entries, self._held = self._held, []
            for k, entry in enumerate(entries):
                try:
                    self._release(entry, t, sent)
                except BaseException:
                    # the failed send may have reached the venue: not held again (reconciliation
                    # settles it); the entries not tried yet stay held
                    self.log.warning("order.release_failed", order_ids=[o.id for o in entry.orders])
                    self._held.extend(entries[k + 1 :])
                    raise
            return sent

    def _release(self, entry: _Held, t: int, sent: list[Order]) -> None:
        """Send ``entry`` if its market is open at ``t``, else keep it held (in its place)."""
        if entry.open_ns > t:
            self._held.append(entry)
            return
        ready, reason = self._ready(entry.orders, t)
        if ready > t:
            # the open moved (a calendar refreshed), or the spread is still too wide: wait, in place
            entry.open_ns, entry.reason = ready, reason
            self._held.append(entry)
            return
        live = [o for o in entry.orders if o.status is OrderStatus.SUBMITTED]
        for o in entry.orders:
            if o.status is not OrderStatus.SUBMITTED:  # settled while held (e.g. reconciliation)
                self.log.info("order.hold_dropped", order_id=o.id, symbol=o.symbol, status=o.status.value)
        for o in live:
            if o.id in entry.prices:
                o.price = entry.prices[o.id]  # the REPLACED event sets the same when booked
            self.log.info("order.released", order_id=o.id, symbol=o.symbol, at=_iso(t))
        if live:
            self._call(entry.venue, live, entry.oco)
            sent.extend(live)

    def _ready(self, orders: list[Order], now_ns: int) -> tuple[int, str]:
        """When ``orders`` may go out (``now_ns``: now) and why they wait."""
        ready, reason = now_ns, ""
        for o in orders:
            inst = self._instrument(o.symbol)
            if self.rules is None:
                t, why = next_open(inst, now_ns), "market closed"
            else:
                t, why = next_window(inst, now_ns, self.rules)
            if t > ready:
                ready, reason = t, why
        rules = self.rules
        if ready <= now_ns and rules is not None and rules.max_spread_bps is not None and self.quotes:
            for o in orders:
                quote = self._quote(o.symbol)
                if quote is not None and quote.spread_bps > rules.max_spread_bps:
                    wait = int(rules.spread_recheck_s * NS_PER_S)
                    return now_ns + wait, f"spread {quote.spread_bps:.1f} bps > {rules.max_spread_bps:g}"
        return ready, reason

    def _quote(self, symbol: str) -> Quote | None:
        """The venue's quote, or None when it has none or asking failed (logged: never blocks)."""
        if self.quotes is None:
            return None
        try:
            return self.quotes(symbol)
        except Exception as exc:  # a quote is advice: an order is not lost for want of one
            self.log.warning("gate.quote_failed", symbol=symbol, error=str(exc))
            return None

    def _price_from_spread(self, w: _Wrapped, order: Order, now_ns: int) -> None:
        """Send a market entry or exit as a limit priced from the quote (kept for its timeout)."""
        rules = self.rules
        if rules is None or not rules.limit_from_spread or order.type is not OrderType.MARKET:
            return
        if order.parent_id is not None or order.oco_group is not None:
            return  # protective legs keep their types
        quote = self._quote(order.symbol)
        if quote is None or quote.spread_bps == float("inf"):
            return
        price = limit_price(order.side, quote, rules, self._instrument(order.symbol))
        order.type, order.price = OrderType.LIMIT, price
        self._priced[order.id] = _Priced(w, order, now_ns + int(rules.limit_timeout_s * NS_PER_S))
        self.log.info(
            "order.priced_from_spread", order_id=order.id, symbol=order.symbol, limit=price,
            bid=quote.bid, ask=quote.ask, timeout_s=rules.limit_timeout_s,
        )  # fmt: skip

    def _timeouts(self, t: int) -> None:
        """Limits priced from the spread that are past their timeout: re-priced across the spread
        (``on_timeout = "market"``) or cancelled; forgotten once closed."""
        rules = self.rules
        for oid, p in list(self._priced.items()):
            order = p.order
            if not order.is_open:
                del self._priced[oid]
                continue
            if p.deadline_ns > t or rules is None:
                continue
            del self._priced[oid]
            if rules.on_timeout == "cancel":
                self.log.info("order.limit_timeout", order_id=oid, symbol=order.symbol, action="cancel")
                p.venue.cancel(order)
                continue
            quote = self._quote(order.symbol)
            inst = self._instrument(order.symbol)
            if quote is None:  # no quote now: cross from the limit itself
                price = order.price or 0.0
                quote = Quote(price, price)
            new = crossing_price(order.side, quote, rules, inst)
            self.log.info(
                "order.limit_timeout", order_id=oid, symbol=order.symbol, action="market", limit=new
            )
            p.venue.replace(order, new)

    def _call(self, w: _Wrapped, orders: list[Order], oco: bool) -> None:
        if self.rules is not None and not oco and not self._passing:
            now_ns = int(self.now())
            for o in orders:
                self._price_from_spread(w, o, now_ns)
        self._passing += 1
        try:
            if oco:
                w.oco(orders)
            else:
                for o in orders:
                    w.submit(o)
        finally:
            self._passing -= 1

    # -- status ----------------------------------------------------------------------------------
    def next_wake(self) -> int | None:
        """The earliest open among held orders (ns UTC), None when nothing is held."""
        with self._lock:
            wakes = [e.open_ns for e in self._held] + [p.deadline_ns for p in self._priced.values()]
            return min(wakes, default=None)

    def held(self) -> list[Order]:
        """The held orders, oldest first."""
        with self._lock:
            return [o for e in self._held for o in e.orders]

    def describe(self) -> list[str]:
        """One line per held order, e.g. ``SPY buy 10: held until 2024-07-05 13:30 UTC (market
        closed)``, for ``hflite status``."""
        with self._lock:
            return [
                f"{o.symbol} {o.side.value} {o.qty:g}: held until {_fmt(e.open_ns)} ({e.reason})"
                for e in self._held
                for o in e.orders
            ]

    # -- helpers ---------------------------------------------------------------------------------
    def _instrument(self, symbol: str) -> Instrument:
        return instrument_for(symbol, self.instruments)

    def _entry_of(self, order: Order) -> _Held | None:
        for entry in self._held:
            if any(o is order for o in entry.orders):
                return entry
        return None


async def release_forever(
    gate: MarketGate,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    now: Callable[[], int] | None = None,
    *,
    max_sleep_s: float = _MAX_SLEEP_S,
) -> None:
    """Release held orders at their open, until cancelled: sleep until ``gate.next_wake()`` (at
    most ``max_sleep_s`` at a time, and that long when nothing is held), then ``gate.due()``. ``now``
    defaults to the gate's clock. A failed release is logged and retried after a pause."""
    clock = now if now is not None else gate.now
    floor = 0.0  # after a failed release: wait a little before the next try
    while True:
        wake = gate.next_wake()
        if wake is None:
            delay = max_sleep_s
        else:
            delay = min(max(floor, (wake - int(clock())) / NS_PER_S), max_sleep_s)
        await sleep(delay)
        try:
            gate.due(int(clock()))
            floor = 0.0
        except Exception as exc:  # a release that failed must not end the releasing
            gate.log.warning("gate.release_failed", error=str(exc))
            floor = min(_RETRY_S, max_sleep_s)
