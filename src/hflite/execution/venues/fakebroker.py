"""A local fake broker: an HTTP server on 127.0.0.1 speaking the Alpaca Trading API v2 dialect of
``/work/spec/broker-protocol.md`` (docs/fake-broker.md), with admin extensions and a behaviour script
that injects faults.

Fills follow the same rules as a backtest: working orders are matched bar by bar by hflite's
``SimVenue`` with the config's instruments, fees, slippage and volume share, against the market data a
run of the same config would load. The clock is either DRIVEN (``POST /admin/clock`` moves the market
to a bar-time) or WALL (real time: market orders fill on receipt at the latest close, a poller moves
the market as bar-times pass).

Public names: ``FakeBroker`` (state and rules, thread-safe), ``BehaviourScript`` / ``Fault`` /
``load_script`` / ``parse_script`` (the behaviour script), ``FakeBrokerServer`` (the HTTP server as a
context manager) and ``serve`` (blocking, for the CLI).
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import json
import math
import os
import re
import socket
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hflite.domain.instrument import PEGGED, Instrument, fx_pair_for
from hflite.domain.order import Fill, Order, OrderEvent, OrderStatus, OrderType, Side, TimeInForce
from hflite.execution.venues.fakes.http import Handler, HttpApp, Server, wait_until_stopped
from hflite.execution.venues.sim import BarView, SimVenue

if TYPE_CHECKING:
    from hflite.config import Settings
    from hflite.data.store import Store
    from hflite.engine.market import MarketData

ClockMode = Literal["driven", "wall"]

DEFAULT_KEY_ID = "fake-key"
DEFAULT_SECRET = "fake-secret"  # noqa: S105 - the documented default of a local test server
KEEP_ALIVE_S = 5.0
MAX_ORDERS_PAGE = 500
MAX_ACTIVITIES_PAGE = 100


# -- the behaviour script -------------------------------------------------------------------------


class ScriptError(ValueError):
    """A behaviour script that cannot be read or does not validate (one line, naming the field)."""


class Fault(BaseModel):
    """The n-th (or every K-th) request matching (method, path) gets this instead of a normal reply."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: Literal["GET", "POST", "DELETE", "PATCH"]
    path: str = Field(min_length=1, description='e.g. "/v2/orders" or "/v2/orders/{id}"')
    nth: list[int] = Field(default_factory=list, description="1-based counts of matching requests")
    every: int = Field(0, ge=0, description="every K-th matching request (0 = off)")
    respond: int | None = Field(None, ge=400, le=599, description="an HTTP error status to answer")
    action: Literal["timeout", "drop", "malformed"] | None = None
    retry_after_s: float | None = Field(
        None, ge=0, le=3600, description="with respond = 429: the Retry-After header (default 1 s)"
    )

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("nth")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError("counts are 1-based: every value must be >= 1")
        return v

    @model_validator(mode="after")
    def _one_effect(self) -> Fault:
        if (self.respond is None) == (self.action is None):
            raise ValueError(
                'give exactly one of respond (an HTTP status) or action ("timeout"|"drop"|"malformed")'
            )
        if not self.nth and not self.every:
            raise ValueError("give nth (a list of counts) or every (K >= 1)")
        return self

    def hits(self, count: int) -> bool:
        return count in self.nth or (self.every > 0 and count % self.every == 0)


class BehaviourScript(BaseModel):
    """How the fake broker misbehaves (docs/fake-broker.md): partial fills, duplicated fill events,
    slow acknowledgements, dropped streams and per-request faults."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    partial_fill: float = Field(1.0, gt=0, le=1, description="share of remaining qty filled per bar")
    duplicate_fills: bool = False
    ack_delay_ms: int = Field(0, ge=0, le=600_000)
    drop_stream_every: int = Field(0, ge=0, description="close each SSE connection after N events")
    timeout_hold_s: float = Field(30.0, ge=0, le=3600, description='how long action="timeout" holds')
    quote_spread_bps: float = Field(2.0, ge=0, le=10_000, description="latest quotes: bid/ask this far apart")
    fault: list[Fault] = Field(default_factory=list)


def parse_script(data: Mapping[str, Any], source: str = "behaviour script") -> BehaviourScript:
    """Validate a behaviour script given as a mapping; ScriptError names the first bad field."""
    try:
        return BehaviourScript.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ScriptError(f"{source}: {where}: {err['msg']}") from None


def load_script(path: str | Path) -> BehaviourScript:
    """Read a behaviour script from a TOML or JSON file (by suffix; other suffixes try TOML)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScriptError(f"behaviour script {p}: cannot read it ({exc.strerror})") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScriptError(
            f"behaviour script {p}: not valid {p.suffix.lstrip('.') or 'TOML'}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ScriptError(f"behaviour script {p}: expected a table/object at the top level")
    return parse_script(data, f"behaviour script {p}")


# -- errors and formatting ------------------------------------------------------------------------


class BrokerError(Exception):
    """An Alpaca-style error reply: HTTP status, numeric code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _unprocessable(message: str) -> BrokerError:
    return BrokerError(422, 40010000, message)


def _not_found() -> BrokerError:
    return BrokerError(404, 40410000, "order not found")


def _num(x: float | None) -> str | None:
    """A number as Alpaca sends it: a decimal string, shortest round-trip form."""
    if x is None:
        return None
    return str(np.format_float_positional(float(x), trim="-"))


def format_ts(ns: int | None) -> str | None:
    """RFC 3339 UTC with nanoseconds."""
    if ns is None:
        return None
    sec, frac = divmod(int(ns), 1_000_000_000)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def parse_ts(text: str, field_name: str = "ts") -> int:
    """Any RFC 3339 time (or date) -> int ns UTC; a naive one is taken as UTC."""
    import pandas as pd

    try:
        t = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise _unprocessable(f"{field_name}: {text!r} is not an RFC 3339 time") from None
    if t is pd.NaT:
        raise _unprocessable(f"{field_name}: {text!r} is not an RFC 3339 time")
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    return int(t.as_unit("ns").value)


def _wall_ns() -> int:
    return time.time_ns()


def _number(body: Mapping[str, Any], key: str, *, required: bool = False, where: str = "") -> float | None:
    """A positive finite number from a string or JSON number, or a 422 naming the field."""
    name = f"{where}{key}"
    raw = body.get(key)
    if raw is None or raw == "":
        if required:
            raise _unprocessable(f"{name} is required")
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise _unprocessable(f"{name} must be a number, got {raw!r}")
    try:
        value = float(raw)
    except ValueError:
        raise _unprocessable(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise _unprocessable(f"{name} must be a positive number, got {raw!r}")
    return value


# -- the broker's state ---------------------------------------------------------------------------

_STATUS_OUT = {
    OrderStatus.NEW: "new",
    OrderStatus.SUBMITTED: "pending_new",
    OrderStatus.ACCEPTED: "new",
    OrderStatus.PARTIALLY_FILLED: "partially_filled",
    OrderStatus.FILLED: "filled",
    OrderStatus.CANCELLED: "canceled",
    OrderStatus.REJECTED: "rejected",
    OrderStatus.EXPIRED: "expired",
    OrderStatus.UNKNOWN: "pending_new",
}
_CLOSED_OUT = {"filled", "canceled", "expired", "rejected"}


@dataclass
class _Entry:
    """One broker order: the hflite Order the SimVenue moves, plus what Alpaca reports about it."""

    order: Order
    client_order_id: str
    order_class: str
    created_ns: int
    updated_ns: int
    limit_price: float | None = None
    stop_price: float | None = None
    filled_ns: int | None = None
    canceled_ns: int | None = None
    expired_ns: int | None = None
    legs: list[str] = field(default_factory=list)  # broker ids of OCO legs (on the take-profit leg)
    parent: str | None = None  # the take-profit leg's id (on the stop leg)
    source: str = "client"  # "client" or "admin"


@dataclass
class _Position:
    qty: float = 0.0
    avg_entry_price: float = 0.0


@dataclass
class _Execution:
    execution_id: str
    order_id: str
    symbol: str
    side: str
    qty: float
    price: float
    commission: float
    ts: int
    cum_qty: float
    leaves_qty: float
    order_status: str


class _PartialFillVenue(SimVenue):
    """SimVenue with the behaviour script's ``partial_fill``: at most that share of an order's
    remaining quantity (rounded down to the lot; never less than one lot) fills per bar."""

    partial_fill: float = 1.0

    def _match_one(
        self, order: Order, inst: Instrument, price: float, cap: float, bar: BarView, on_fill: Any
    ) -> float:
        if self.partial_fill >= 1.0:
            return super()._match_one(order, inst, price, cap, bar, on_fill)
        share = inst.round_qty(order.remaining * self.partial_fill)
        share = share if share > 0.0 else order.remaining
        limited = min(cap, share)
        left = super()._match_one(order, inst, price, limited, bar, on_fill)
        return cap - (limited - left)


class _WallLoader:
    """WALL clock: the run's market data through the latest stored bar, re-read only when the
    store's partitions change (a cheap manifest check)."""

    def __init__(self, settings: Settings, store: Store, md: MarketData) -> None:
        self.settings, self.store, self.md = settings, store, md
        freq = settings.run.frequency
        self.keys = [f"bars/{s}/{freq}" for s in md.bars]
        self.versions: dict[str, str] | None = None

    def __call__(self) -> MarketData:
        from hflite.engine.run import prepare

        versions = self.store.versions(self.keys)
        if versions == self.versions:
            return self.md
        lasts = [p.last.date() for p in self.store.partitions() if p.key in self.keys and p.last is not None]
        # the earliest of the symbols' last bars: a run needs every symbol covered to its end
        latest = min([*lasts, datetime.now(UTC).date()])
        run = self.settings.run.model_copy(update={"end": max(latest, self.settings.run.end)})
        self.md = prepare(self.settings.model_copy(update={"run": run}), self.store).md
        self.versions = versions
        return self.md


class FakeBroker:
    """The fake broker's state and rules (no I/O): orders, fills, positions, cash, the event log and
    the request counters. Every public method takes the broker's lock, so HTTP threads may call them
    concurrently. Methods raise ``BrokerError`` for Alpaca-style error replies."""

    def __init__(
        self,
        md: MarketData,
        venue: SimVenue,
        initial_cash: float,
        *,
        clock: ClockMode = "driven",
        start_ns: int | None = None,
        script: BehaviourScript | None = None,
        reload: Callable[[], MarketData] | None = None,
    ) -> None:
        """``venue``: a fresh SimVenue with the run's instruments and costs (``make_venue``); its
        models are reused. ``start_ns``: the driven clock's start (default: just before the first
        bar-time). ``reload``: WALL clock only, the market data as stored now (see ``refresh``)."""
        if clock not in ("driven", "wall"):
            raise ValueError(f'clock must be "driven" or "wall", got {clock!r}')
        if not isinstance(venue, _PartialFillVenue):
            venue = _PartialFillVenue(
                venue.instruments, venue.commission, venue.slippage_model, venue.max_volume_share
            )
        self.md = md
        self.venue: _PartialFillVenue = venue
        self.clock_mode: ClockMode = clock
        self.account_id = str(uuid.uuid4())
        self._lock = threading.RLock()
        self._events_cond = threading.Condition(self._lock)
        self._i = -1  # timeline index of the last bar the market has moved to
        first = int(md.timeline[0]) if md.length else 0
        self._clock_ns = start_ns if start_ns is not None else first - 1
        self._clock_seq = 0  # the last event seq the latest clock move caused
        self._last_created_ns = 0
        self._entries: dict[str, _Entry] = {}  # broker id -> entry, in creation order
        self._by_client: dict[str, str] = {}
        self._positions: dict[str, _Position] = {}
        self._cash: dict[str, float] = {"USD": float(initial_cash)}
        self._executions: list[_Execution] = []
        self._events: list[dict[str, Any]] = []
        self._requests: dict[str, int] = {}
        self._duplicates_refused = 0
        self._rejections: list[str] = []  # reasons the next orders are refused with (reject_next)
        self._script = BehaviourScript()
        self._fault_counts: dict[tuple[str, str], int] = {}
        self.set_script(script or BehaviourScript())
        self._reload = reload
        self._seen: dict[str, int] = {}  # WALL: per symbol, the bar-time of the last bar matched
        if clock == "wall":
            self._i = md.length - 1  # every stored bar is history; orders wait for new ones
            self._clock_ns = _wall_ns()
            for sym in md.traded:
                b = md.bars[sym]
                self._seen[sym] = int(b.ts[b.n - 1]) if b.n else -1

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: Store | None = None,
        *,
        clock: ClockMode = "driven",
        script: BehaviourScript | None = None,
    ) -> FakeBroker:
        """A broker over the market data a run of ``settings`` would load, with its costs and cash.
        With the WALL clock the data runs to the latest stored bar, and is re-read by ``refresh``."""
        from hflite.engine.market import ts_ns
        from hflite.engine.run import make_venue, open_store, prepare

        store = store if store is not None else open_store(settings)
        prep = prepare(settings, store)
        reload = None
        if clock == "wall":
            reload = _WallLoader(settings, store, prep.md)
            md = reload()
        else:
            md = prep.md
        return cls(
            md,
            make_venue(settings, prep.instruments),
            settings.run.initial_cash,
            clock=clock,
            start_ns=ts_ns(prep.start),
            script=script,
            reload=reload,
        )

    # -- script, counters, faults -----------------------------------------------------------------
    @property
    def script(self) -> BehaviourScript:
        return self._script

    def set_script(self, script: BehaviourScript) -> None:
        """Replace the behaviour script; fault counts start again from zero."""
        with self._lock:
            self._script = script
            self._fault_counts = {}
            self.venue.partial_fill = script.partial_fill

    def count_request(self, method: str, path_key: str) -> Fault | None:
        """Count one request ("METHOD /path" with ids collapsed) and return the fault it triggers."""
        with self._lock:
            key = f"{method} {path_key}"
            self._requests[key] = self._requests.get(key, 0) + 1
            faults = [f for f in self._script.fault if f.method == method and f.path == path_key]
            if not faults:
                return None
            n = self._fault_counts.get((method, path_key), 0) + 1
            self._fault_counts[(method, path_key)] = n
            return next((f for f in faults if f.hits(n)), None)

    # -- clock ------------------------------------------------------------------------------------
    @property
    def clock_ns(self) -> int:
        """The market clock (ns UTC): the last driven bar-time, or now with the WALL clock."""
        return self._now_ns()

    def refresh(self) -> int:
        """WALL clock: re-read the market data and match working orders against every bar that is
        new since the last look and already known by now (in time order). Returns how many new
        bar-times were matched; does nothing without a ``reload``."""
        if self._reload is None:
            return 0
        md = self._reload()  # disk I/O: outside the lock
        now = _wall_ns()
        with self._lock:
            new: list[tuple[int, str, int]] = []
            for sym in md.traded:
                b = md.bars[sym]
                ts = b.ts[: b.n]
                ks = np.flatnonzero((ts > self._seen.get(sym, -1)) & (ts <= now))
                new.extend((int(ts[k]), sym, int(k)) for k in ks)
            self.md = md
            new.sort()
            times = 0
            for ts_ns, group in itertools.groupby(new, key=lambda x: x[0]):
                self._i += 1
                times += 1
                for _, sym, k in group:
                    self._match_bar(sym, k, self._i)
                    self._seen[sym] = ts_ns
            self._events_cond.notify_all()
            return times

    def advance_to(self, ts_ns: int) -> int:
        """Move the market to bar-time ``ts_ns``: match working orders against every bar known by then
        (in time order); a time at or before the clock does nothing. Returns the seq of the last
        event the move caused (asked again for the same time: the same seq, not later events, so a
        restarted client knows which events came after the move)."""
        with self._lock:
            if ts_ns <= self._clock_ns:
                return self._clock_seq if ts_ns == self._clock_ns else len(self._events)
            timeline, md = self.md.timeline, self.md
            j = self._i + 1
            while j < md.length and int(timeline[j]) <= ts_ns:
                self._i = j
                self._clock_ns = int(timeline[j])
                for sym, k in md.group(j):
                    self._match_bar(sym, k, j)
                j += 1
            self._clock_ns = max(self._clock_ns, ts_ns)
            self._clock_seq = len(self._events)
            self._events_cond.notify_all()
            return self._clock_seq

    def _match_bar(self, sym: str, k: int, i: int) -> None:
        if not self.venue.has_working(sym):
            return
        b = self.md.bars[sym]
        prev_range = b.high.item(k - 1) - b.low.item(k - 1) if k > 0 else float("nan")
        bar = BarView(
            k, i, b.ts.item(k), b.open.item(k), b.high.item(k), b.low.item(k), b.close.item(k),
            b.volume.item(k), prev_range,
        )  # fmt: skip
        for closed in self.venue.match(sym, bar, self._on_fill):
            self._closed_by_venue(closed, bar.ts)

    def _closed_by_venue(self, order: Order, ts: int) -> None:
        """Report an order the venue closed without a fill (time in force, OCO, parent), once."""
        entry = self._entries[order.id]
        if entry.canceled_ns is not None or entry.expired_ns is not None:
            return  # already reported (we cancelled it ourselves)
        entry.updated_ns = ts
        if order.status is OrderStatus.EXPIRED:
            entry.expired_ns = ts
            self._emit("expired", entry, ts)
        else:
            entry.canceled_ns = ts
            self._emit("canceled", entry, ts)

    def _on_fill(self, order: Order, fill: Fill) -> None:
        entry = self._entries[order.id]
        inst = self.venue.instruments[fill.symbol]
        self._book(fill.symbol, inst.currency, fill.side.sign * fill.qty, fill.price, fill.fee)
        entry.updated_ns = fill.ts
        if order.status is OrderStatus.FILLED:
            entry.filled_ns = fill.ts
        ex = _Execution(
            str(uuid.uuid4()), order.id, fill.symbol, fill.side.value, fill.qty, fill.price, fill.fee,
            fill.ts, order.filled_qty, order.remaining, _STATUS_OUT[order.status],
        )  # fmt: skip
        self._executions.append(ex)
        kind = "fill" if order.status is OrderStatus.FILLED else "partial_fill"
        extra = {
            "execution_id": ex.execution_id,
            "price": _num(fill.price),
            "qty": _num(fill.qty),
            "position_qty": _num(self._positions[fill.symbol].qty),
            "commission": _num(fill.fee),
        }
        for _ in range(2 if self._script.duplicate_fills else 1):
            self._emit(kind, entry, fill.ts, extra)
        if order.status is OrderStatus.FILLED and order.oco_group is not None:
            for other in self._entries.values():
                o = other.order
                if o.oco_group == order.oco_group and o is not order and o.is_open:
                    self._cancel_entry(other, fill.ts)

    def _book(self, symbol: str, ccy: str, signed_qty: float, price: float, fee: float) -> None:
        """Move the position and the quote-currency cash by one execution."""
        pos = self._positions.setdefault(symbol, _Position())
        new_qty = pos.qty + signed_qty
        if pos.qty == 0.0 or (pos.qty > 0) == (signed_qty > 0):
            total = abs(pos.qty) + abs(signed_qty)
            pos.avg_entry_price = (pos.avg_entry_price * abs(pos.qty) + price * abs(signed_qty)) / total
        elif abs(new_qty) <= 1e-12:
            pos.avg_entry_price = 0.0
        elif (new_qty > 0) != (pos.qty > 0):  # flipped through zero
            pos.avg_entry_price = price
        pos.qty = 0.0 if abs(new_qty) <= 1e-12 else new_qty
        ccy = PEGGED.get(ccy, ccy)
        self._cash[ccy] = self._cash.get(ccy, 0.0) - signed_qty * price - fee

    # -- events -----------------------------------------------------------------------------------
    def _emit(self, kind: str, entry: _Entry, ts: int, extra: Mapping[str, Any] | None = None) -> None:
        seq = len(self._events) + 1
        event: dict[str, Any] = {"event": kind, "event_id": seq, "timestamp": format_ts(ts)}
        if extra:
            event.update(extra)
        event["order"] = self._order_json(entry, nested=True)
        self._events.append(event)
        self._events_cond.notify_all()

    @property
    def last_event_id(self) -> int:
        return len(self._events)

    def events_between(self, since_id: int, until_id: int | None = None) -> list[tuple[int, dict[str, Any]]]:
        """(seq, event) for since_id < seq <= until_id (all known ones when until_id is None)."""
        with self._lock:
            hi = len(self._events) if until_id is None else min(until_id, len(self._events))
            lo = max(since_id, 0)
            return [(s + 1, self._events[s]) for s in range(lo, hi)]

    def wait_events(self, after: int, timeout_s: float) -> bool:
        """Block until an event with seq > ``after`` exists (True) or the timeout passes (False)."""
        with self._events_cond:
            return self._events_cond.wait_for(lambda: len(self._events) > after, timeout=timeout_s)

    def wake_waiters(self) -> None:
        with self._events_cond:
            self._events_cond.notify_all()

    # -- orders -----------------------------------------------------------------------------------
    def submit(self, body: Mapping[str, Any], *, source: str = "client") -> dict[str, Any]:
        """POST /v2/orders (and /admin/order with ``source="admin"``): validate, check buying power,
        accept, emit "new" (for each OCO leg), and in wall mode fill a market order at once."""
        if not isinstance(body, Mapping):
            raise _unprocessable("the request body must be a JSON object")
        with self._lock:
            if self._rejections and source == "client":
                raise BrokerError(403, 40310000, self._rejections.pop(0))
            spec = self._validate(body, source)
            entry = self._create(spec, source)
            if self.clock_mode == "wall" and entry.order.type is OrderType.MARKET:
                self._fill_now(entry)
            return self._order_json(entry, nested=True)

    def _validate(self, body: Mapping[str, Any], source: str) -> dict[str, Any]:
        symbol = body.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise _unprocessable("symbol is required")
        if symbol not in self.md.traded:
            raise _unprocessable(f"asset {symbol} not found")
        if body.get("notional") not in (None, ""):
            raise _unprocessable("notional orders are not supported by the fake broker: send qty")
        qty = _number(body, "qty", required=True)
        side = body.get("side")
        if side not in ("buy", "sell"):
            raise _unprocessable(f'side must be "buy" or "sell", got {side!r}')
        order_class = body.get("order_class") or "simple"
        if order_class not in ("simple", "oco"):
            raise _unprocessable(f"order_class {order_class} not supported (simple or oco)")
        tif = body.get("time_in_force", "gtc")
        if tif not in ("gtc", "day", "ioc"):
            raise _unprocessable(f'time_in_force must be "gtc", "day" or "ioc", got {tif!r}')
        cid = body.get("client_order_id") if source == "client" else None
        if cid is not None and (not isinstance(cid, str) or not 0 < len(cid) <= 128):
            raise _unprocessable("client_order_id must be a string of 1 to 128 characters")
        spec: dict[str, Any] = {
            "symbol": symbol, "qty": qty, "side": Side(side), "tif": TimeInForce(tif),
            "order_class": order_class, "client_order_id": cid or str(uuid.uuid4()),
        }  # fmt: skip
        if order_class == "oco":
            self._validate_oco(body, spec)
        else:
            spec["type"], spec["limit_price"], spec["stop_price"] = self._validate_type(body)
        for c in [spec["client_order_id"], spec.get("stop_client_order_id")]:
            if c is not None and c in self._by_client:
                self._duplicates_refused += 1
                raise BrokerError(422, 40010001, "client_order_id must be unique")
        self._check_buying_power(spec)
        return spec

    @staticmethod
    def _validate_type(
        body: Mapping[str, Any], where: str = ""
    ) -> tuple[OrderType, float | None, float | None]:
        kind = body.get("type")
        if kind == "stop_limit" and not hasattr(OrderType, "STOP_LIMIT"):
            raise _unprocessable("order type stop_limit not supported")
        if kind not in ("market", "limit", "stop", "stop_limit"):
            raise _unprocessable(
                f'{where}type must be "market", "limit", "stop" or "stop_limit", got {kind!r}'
            )
        otype = OrderType(kind)
        limit = _number(body, "limit_price", required=kind in ("limit", "stop_limit"), where=where)
        stop = _number(body, "stop_price", required=kind in ("stop", "stop_limit"), where=where)
        if kind == "market" and (limit is not None or stop is not None):
            raise _unprocessable(f"{where}limit_price/stop_price must be empty for a market order")
        return otype, limit, stop

    def _validate_oco(self, body: Mapping[str, Any], spec: dict[str, Any]) -> None:
        if body.get("type", "limit") != "limit":
            raise _unprocessable('type must be "limit" for order_class "oco"')
        tp, sl = body.get("take_profit"), body.get("stop_loss")
        if not isinstance(tp, Mapping) or not isinstance(sl, Mapping):
            raise _unprocessable("take_profit and stop_loss are required for order_class oco")
        spec["type"] = OrderType.LIMIT
        spec["limit_price"] = _number(tp, "limit_price", required=True, where="take_profit.")
        spec["stop_price"] = None
        stop = _number(sl, "stop_price", required=True, where="stop_loss.")
        stop_limit = _number(sl, "limit_price", where="stop_loss.")
        if stop_limit is not None and not hasattr(OrderType, "STOP_LIMIT"):
            raise _unprocessable("order type stop_limit not supported (stop_loss.limit_price)")
        spec["stop_leg"] = (
            OrderType("stop_limit") if stop_limit is not None else OrderType.STOP,
            stop_limit,
            stop,
        )
        scid = sl.get("client_order_id")
        if scid is not None and (not isinstance(scid, str) or not 0 < len(scid) <= 128):
            raise _unprocessable("stop_loss.client_order_id must be a string of 1 to 128 characters")
        spec["stop_client_order_id"] = scid or str(uuid.uuid4())
        if spec["stop_client_order_id"] == spec["client_order_id"]:
            raise BrokerError(422, 40010001, "client_order_id must be unique")

    def _check_buying_power(self, spec: dict[str, Any]) -> None:
        """403 when a buy's notional (in USD, at its limit/stop or the latest close) exceeds the cash;
        a buy that only covers a short is not checked."""
        if spec["side"] is not Side.BUY or spec["order_class"] == "oco":
            return
        symbol = spec["symbol"]
        held = self._positions.get(symbol, _Position()).qty
        if held < 0 and spec["qty"] <= -held + 1e-9:
            return
        price = spec["limit_price"] or spec["stop_price"] or self._last_close(symbol)
        inst = self.venue.instruments[symbol]
        if (
            price is not None
            and spec["qty"] * price * self._usd_rate(inst.currency) > self._cash_usd() + 1e-9
        ):
            raise BrokerError(403, 40310000, "insufficient buying power")

    def _create(self, spec: dict[str, Any], source: str) -> _Entry:
        now = self._now_ns()
        created = max(now, self._last_created_ns + 1)  # unique, so `after` paginates exactly
        entries = [
            self._new_entry(spec, spec["type"], spec["limit_price"], spec["stop_price"], created, source)
        ]
        if spec["order_class"] == "oco":
            stop_type, stop_limit, stop = spec["stop_leg"]
            leg = self._new_entry(spec, stop_type, stop_limit, stop, created + 1, source)
            leg.client_order_id = spec["stop_client_order_id"]
            parent = entries[0]
            for e in (parent, leg):
                e.order.oco_group = parent.order.id
                e.order.reduce_only = True
            leg.parent = parent.order.id
            parent.legs.append(leg.order.id)
            entries.append(leg)
        orders = [e.order for e in entries]
        try:  # the venue checks every order before it works any
            if len(orders) > 1 and hasattr(self.venue, "submit_oco"):
                self.venue.submit_oco(orders)
            else:
                for order in orders:
                    self.venue.submit(order)
        except ValueError as exc:  # InvalidOrderError: what the venue's own check refuses
            raise _unprocessable(str(exc)) from None
        for e in entries:
            self._entries[e.order.id] = e
            self._by_client[e.client_order_id] = e.order.id
        self._last_created_ns = entries[-1].created_ns
        for e in entries:
            self._emit("new", e, now)
        return entries[0]

    def _new_entry(
        self,
        spec: dict[str, Any],
        otype: OrderType,
        limit: float | None,
        stop: float | None,
        created: int,
        source: str,
    ) -> _Entry:
        """An order (not yet submitted) with its Alpaca-side record; the client id is the spec's."""
        kwargs: dict[str, Any] = {}
        price = stop if otype is OrderType.STOP else limit
        if stop is not None and otype not in (OrderType.STOP, OrderType.LIMIT, OrderType.MARKET):
            kwargs["stop_price"] = stop  # STOP_LIMIT: price is the limit, stop_price the trigger
        order = Order(
            id=str(uuid.uuid4()),
            symbol=spec["symbol"],
            side=spec["side"],
            type=otype,
            qty=spec["qty"],
            created_ts=created,
            price=price,
            tif=spec["tif"],
            reason=source,
            created_bar=self._i,
            first_bar=self._i + 1,
            **kwargs,
        )
        cid = spec["client_order_id"]
        return _Entry(order, cid, spec["order_class"], created, created, limit, stop, source=source)

    def _fill_now(self, entry: _Entry) -> None:
        """WALL clock: fill a market order on receipt at the latest close (plus slippage), matched by
        the same SimVenue rules on a one-price bar; what the volume cap leaves stays working."""
        order = entry.order
        b = self.md.bars[order.symbol]
        k = self._last_k(order.symbol)
        if k < 0:
            return
        close = b.close.item(k)
        bar = BarView(
            k, order.first_bar, self._now_ns(), close, close, close, close, b.volume.item(k),
            b.high.item(k) - b.low.item(k),
        )  # fmt: skip
        book = self.venue.working[order.symbol]
        others = [o for o in book if o is not order]
        self.venue.working[order.symbol] = [order]
        try:
            closed = self.venue.match(order.symbol, bar, self._on_fill)
        finally:
            self.venue.working[order.symbol] = others + [
                o for o in self.venue.working[order.symbol] if o.is_open
            ]
        for o in closed:
            self._closed_by_venue(o, bar.ts)

    def _now_ns(self) -> int:
        return _wall_ns() if self.clock_mode == "wall" else self._clock_ns

    def _entry(self, order_id: str) -> _Entry:
        entry = self._entries.get(order_id)
        if entry is None:
            raise _not_found()
        return entry

    def get_order(self, order_id: str, *, nested: bool = True) -> dict[str, Any]:
        with self._lock:
            return self._order_json(self._entry(order_id), nested=nested)

    def get_by_client_id(self, client_order_id: str) -> dict[str, Any]:
        with self._lock:
            oid = self._by_client.get(client_order_id)
            if oid is None:
                raise _not_found()
            return self._order_json(self._entries[oid], nested=True)

    def list_orders(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /v2/orders: status open|closed|all, limit, after/until (created_at), direction, nested."""
        status = params.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise _unprocessable(f'status must be "open", "closed" or "all", got {status!r}')
        limit = _int_param(params, "limit", 50, 1, MAX_ORDERS_PAGE)
        direction = params.get("direction", "desc")
        if direction not in ("asc", "desc"):
            raise _unprocessable(f'direction must be "asc" or "desc", got {direction!r}')
        after = parse_ts(params["after"], "after") if params.get("after") else None
        until = parse_ts(params["until"], "until") if params.get("until") else None
        nested = params.get("nested", "false").lower() == "true"
        symbols = set(params["symbols"].split(",")) if params.get("symbols") else None
        with self._lock:
            rows = []
            for e in self._entries.values():
                if nested and e.parent is not None:
                    continue
                closed = _STATUS_OUT[e.order.status] in _CLOSED_OUT
                if status == "open" and closed or status == "closed" and not closed:
                    continue
                if after is not None and e.created_ns <= after or until is not None and e.created_ns >= until:
                    continue
                if symbols is not None and e.order.symbol not in symbols:
                    continue
                rows.append(e)
            rows.sort(key=lambda e: e.created_ns, reverse=direction == "desc")
            return [self._order_json(e, nested=nested) for e in rows[:limit]]

    def cancel(self, order_id: str) -> None:
        """DELETE /v2/orders/{id}: cancel a working order and emit "canceled"."""
        with self._lock:
            entry = self._entry(order_id)
            if not entry.order.is_open:
                raise _unprocessable("order is not cancelable")
            self._cancel_entry(entry, self._now_ns())

    def cancel_by_client_id(self, client_order_id: str) -> None:
        """POST /admin/cancel: as if a human cancelled the order at the broker's website."""
        with self._lock:
            oid = self._by_client.get(client_order_id)
            if oid is None:
                raise _not_found()
            self.cancel(oid)

    def latest_quote(self, symbol: str) -> dict[str, Any]:
        """GET /v2/stocks/{symbol}/quotes/latest (Alpaca market data): a quote around the latest
        close, ``quote_spread_bps`` wide; 404 before the symbol's first bar."""
        with self._lock:
            if symbol not in self.md.traded:
                raise _not_found()
            close = self._last_close(symbol)
            if close is None:
                raise BrokerError(404, 40410000, f"no quote for {symbol} yet")
            half = close * self._script.quote_spread_bps / 2e4
            return {
                "symbol": symbol,
                "quote": {
                    "t": format_ts(self._now_ns()), "ax": "V", "ap": close + half, "as": 1,
                    "bx": "V", "bp": close - half, "bs": 1, "c": ["R"], "z": "B",
                },
            }  # fmt: skip

    def latest_quotes(self, symbols: str) -> dict[str, Any]:
        """GET /v2/stocks/quotes/latest?symbols=A,B (Alpaca market data, as alpaca-py asks): the
        quotes of the symbols that have one (``latest_quote``), under "quotes"."""
        quotes: dict[str, Any] = {}
        for sym in (s for s in symbols.split(",") if s):
            try:
                quotes[sym] = self.latest_quote(sym)["quote"]
            except BrokerError:
                continue
        return {"quotes": quotes}

    def reject_next(self, reason: str) -> None:
        """Admin: refuse the next client order on its merits (403 with ``reason``), before it is taken."""
        with self._lock:
            self._rejections.append(reason)

    def repeat_last_fill(self) -> int:
        """Admin: send the last fill event again (same execution id, a new event seq), as a broker
        that repeats itself after a reconnect does. Returns the new seq (0 when nothing filled yet)."""
        with self._lock:
            last = next((e for e in reversed(self._events) if e["event"] in ("fill", "partial_fill")), None)
            if last is None:
                return 0
            again = dict(last, event_id=len(self._events) + 1)
            self._events.append(again)
            self._events_cond.notify_all()
            return len(self._events)

    def execute(self, order_id: str, qty: float, price: float, fee: float = 0.0) -> dict[str, Any]:
        """Admin (contract tests, dialect fronts): the venue executes ``qty`` of a working order now at
        ``price``, booked and reported exactly as a matched fill (``partial_fill`` / ``fill``)."""
        with self._lock:
            entry = self._entry(order_id)
            order = entry.order
            if not order.is_open:
                raise _unprocessable("order is not open")
            if not 0.0 < qty <= order.remaining + 1e-12 or not price > 0.0:
                raise _unprocessable(f"qty must be in (0, {order.remaining:g}] and price > 0")
            if order.status is OrderStatus.SUBMITTED:
                order.apply(OrderEvent.ACCEPT)
            ts = self._now_ns()
            order.apply(OrderEvent.FILL, fill_qty=qty, fill_price=price, ts=ts)
            fill = Fill(order.id, order.symbol, order.side, qty, price, fee, ts, max(self._i, 0))
            self._on_fill(order, fill)
            if not order.is_open:
                book = self.venue.working.get(order.symbol, [])
                self.venue.working[order.symbol] = [o for o in book if o is not order]
            return self._order_json(entry, nested=True)

    def _cancel_entry(self, entry: _Entry, ts: int) -> None:
        self.venue.cancel(entry.order, ts)
        entry.canceled_ns = entry.updated_ns = ts
        self._emit("canceled", entry, ts)

    def _resize(self, entry: _Entry, qty: float) -> bool:
        """Alpaca's replace takes a new total quantity too: set it and emit "replaced" with it."""
        order = entry.order
        if not qty > order.filled_qty:
            raise _unprocessable(f"qty {qty:g} is not above the filled {order.filled_qty:g}")
        order.qty = qty
        now = self._now_ns()
        entry.updated_ns = now
        self._emit("replaced", entry, now, {"qty": _num(qty)})
        return True

    def replace(self, order_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH /v2/orders/{id}: change the limit/stop price in place (DEVIATION from Alpaca, which
        creates a new order) and emit "replaced" with the new trigger/limit as ``price``."""
        if not isinstance(body, Mapping):
            raise _unprocessable("the request body must be a JSON object")
        unsupported = sorted(
            k for k, v in body.items() if k not in ("limit_price", "stop_price", "qty") and v is not None
        )
        if unsupported:
            raise _unprocessable(
                f"{unsupported[0]} cannot be replaced by the fake broker (limit_price, stop_price, qty)"
            )
        limit = _number(body, "limit_price")
        stop = _number(body, "stop_price")
        qty = _number(body, "qty")
        if limit is None and stop is None and qty is None:
            raise _unprocessable("limit_price, stop_price or qty is required")
        with self._lock:
            entry = self._entry(order_id)
            order = entry.order
            if not order.is_open:
                raise _unprocessable("order is not replaceable")
            otype = order.type
            if qty is not None and self._resize(entry, qty) and limit is None and stop is None:
                return self._order_json(entry, nested=True)
            if otype is OrderType.MARKET:
                raise _unprocessable("a market order has no price to replace")
            if limit is not None and otype is OrderType.STOP:
                raise _unprocessable("limit_price does not apply to a stop order")
            if stop is not None and otype is OrderType.LIMIT:
                raise _unprocessable("stop_price does not apply to a limit order")
            if limit is not None:
                entry.limit_price = limit
                order.price = limit
            if stop is not None:
                entry.stop_price = stop
                if otype is OrderType.STOP:
                    order.price = stop
                else:
                    order.stop_price = stop  # STOP_LIMIT's trigger
            now = self._now_ns()
            entry.updated_ns = now
            self._emit("replaced", entry, now, {"price": _num(stop if stop is not None else limit)})
            return self._order_json(entry, nested=True)

    # -- positions, account, activities -----------------------------------------------------------
    def _last_k(self, symbol: str) -> int:
        b = self.md.bars[symbol]
        return int(np.searchsorted(b.ts[: b.n], self._now_ns(), side="right")) - 1

    def _last_close(self, symbol: str) -> float | None:
        k = self._last_k(symbol)
        return self.md.bars[symbol].close.item(k) if k >= 0 else None

    def _usd_rate(self, ccy: str) -> float:
        """USD per one unit of ``ccy`` at the latest FX close (1.0 for USD and pegged currencies)."""
        pair = fx_pair_for(ccy)
        if pair is None or pair[0] not in self.md.bars:
            return 1.0
        close = self._last_close(pair[0])
        if close is None:
            return 1.0
        return 1.0 / close if pair[1] else close

    def _cash_usd(self) -> float:
        return sum(v * self._usd_rate(c) for c, v in self._cash.items())

    def _position_json(self, symbol: str, pos: _Position) -> dict[str, Any]:
        price = self._last_close(symbol) or pos.avg_entry_price
        inst = self.venue.instruments[symbol]
        return {
            "asset_id": symbol,
            "symbol": symbol,
            "exchange": "FAKE",
            "asset_class": "crypto" if inst.asset_class.value == "crypto" else "us_equity",
            "qty": _num(pos.qty),
            "qty_available": _num(pos.qty),
            "side": "long" if pos.qty > 0 else "short",
            "avg_entry_price": _num(pos.avg_entry_price),
            "market_value": _num(pos.qty * price),
            "cost_basis": _num(pos.qty * pos.avg_entry_price),
            "unrealized_pl": _num(pos.qty * (price - pos.avg_entry_price)),
            "current_price": _num(price),
            "currency": inst.currency,
        }

    def positions(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._position_json(s, p) for s, p in sorted(self._positions.items()) if p.qty]

    def position(self, symbol: str) -> dict[str, Any]:
        with self._lock:
            pos = self._positions.get(symbol)
            if pos is None or not pos.qty:
                raise BrokerError(404, 40410000, "position does not exist")
            return self._position_json(symbol, pos)

    def set_position(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /admin/position: change a position by ``qty`` at ``price`` by hand (cash moves by
        -qty*price in the quote currency; no fee, no event)."""
        if not isinstance(body, Mapping):
            raise _unprocessable("the request body must be a JSON object")
        symbol = body.get("symbol")
        if symbol not in self.md.traded:
            raise _unprocessable(f"asset {symbol} not found")
        raw = body.get("qty")
        try:
            qty = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _unprocessable(f"qty must be a number, got {raw!r}") from None
        if not math.isfinite(qty) or qty == 0:
            raise _unprocessable(f"qty must be a non-zero number, got {raw!r}")
        price = _number(body, "price", required=True)
        assert price is not None
        with self._lock:
            self._book(symbol, self.venue.instruments[symbol].currency, qty, price, 0.0)
            return self._position_json(symbol, self._positions[symbol])

    def account(self) -> dict[str, Any]:
        with self._lock:
            cash = self._cash_usd()
            long_mv = short_mv = 0.0
            for sym, pos in self._positions.items():
                price = self._last_close(sym) or pos.avg_entry_price
                mv = pos.qty * price * self._usd_rate(self.venue.instruments[sym].currency)
                if mv >= 0:
                    long_mv += mv
                else:
                    short_mv += mv
            equity = cash + long_mv + short_mv
            return {
                "id": self.account_id,
                "account_number": "FAKE" + self.account_id[:8].upper(),
                "status": "ACTIVE",
                "currency": "USD",
                "cash": _num(cash),
                "cash_by_currency": {c: _num(v) for c, v in sorted(self._cash.items())},
                "equity": _num(equity),
                "last_equity": _num(equity),
                "buying_power": _num(max(cash, 0.0)),
                "portfolio_value": _num(equity),
                "long_market_value": _num(long_mv),
                "short_market_value": _num(short_mv),
                "multiplier": "1",
                "trading_blocked": False,
                "transfers_blocked": False,
                "account_blocked": False,
                "pattern_day_trader": False,
                "shorting_enabled": True,
                "created_at": format_ts(0),
            }

    def activities(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /v2/account/activities/FILL: after/until (transaction_time), direction (default desc),
        page_size (<= 100), page_token (the id of the last activity of the previous page)."""
        direction = params.get("direction", "desc")
        if direction not in ("asc", "desc"):
            raise _unprocessable(f'direction must be "asc" or "desc", got {direction!r}')
        size = _int_param(params, "page_size", MAX_ACTIVITIES_PAGE, 1, MAX_ACTIVITIES_PAGE)
        after = parse_ts(params["after"], "after") if params.get("after") else None
        until = parse_ts(params["until"], "until") if params.get("until") else None
        token = params.get("page_token")
        with self._lock:
            rows = [
                x
                for x in self._executions
                if (after is None or x.ts > after) and (until is None or x.ts <= until)
            ]
            if direction == "desc":
                rows.reverse()
            if token:
                ids = [_activity_id(x) for x in rows]
                if token not in ids:
                    raise _unprocessable(f"page_token {token!r} is not an activity id")
                rows = rows[ids.index(token) + 1 :]
            return [_activity_json(x) for x in rows[:size]]

    # -- the order object and the admin state -----------------------------------------------------
    def _order_json(self, entry: _Entry, *, nested: bool) -> dict[str, Any]:
        o = entry.order
        legs = None
        if entry.legs and nested:
            legs = [self._order_json(self._entries[x], nested=False) for x in entry.legs]
        kind = o.type.value
        return {
            "id": o.id,
            "client_order_id": entry.client_order_id,
            "created_at": format_ts(entry.created_ns),
            "updated_at": format_ts(entry.updated_ns),
            "submitted_at": format_ts(entry.created_ns),
            "filled_at": format_ts(entry.filled_ns),
            "canceled_at": format_ts(entry.canceled_ns),
            "expired_at": format_ts(entry.expired_ns),
            "failed_at": None,
            "replaced_at": None,
            "asset_id": o.symbol,
            "symbol": o.symbol,
            "asset_class": "crypto"
            if self.venue.instruments[o.symbol].asset_class.value == "crypto"
            else "us_equity",
            "qty": _num(o.qty),
            "filled_qty": _num(o.filled_qty),
            "filled_avg_price": _num(o.avg_fill_price) if o.filled_qty else None,
            "order_class": entry.order_class,
            "order_type": kind,
            "type": kind,
            "side": o.side.value,
            "time_in_force": o.tif.value,
            "limit_price": _num(entry.limit_price),
            "stop_price": _num(entry.stop_price),
            "status": _STATUS_OUT[o.status],
            "extended_hours": False,
            "legs": legs,
        }

    def state(self) -> dict[str, Any]:
        """GET /admin/state: everything, for tests."""
        with self._lock:
            return {
                "clock": format_ts(self._now_ns()),
                "clock_mode": self.clock_mode,
                "bar_index": self._i,
                "orders": [self._order_json(e, nested=False) for e in self._entries.values()],
                "fills": [_activity_json(x) for x in self._executions],
                "positions": {s: _num(p.qty) for s, p in sorted(self._positions.items()) if p.qty},
                "cash": _num(self._cash_usd()),
                "cash_by_currency": {c: _num(v) for c, v in sorted(self._cash.items())},
                "requests": dict(self._requests),
                "duplicates_refused": self._duplicates_refused,
                "last_event_id": len(self._events),
            }

    def clock_json(self) -> dict[str, Any]:
        """GET /v2/clock: the WALL clock (so a client can detect its own clock being behind)."""
        now = _wall_ns()
        day = 86_400 * 10**9
        return {
            "timestamp": format_ts(now),
            "is_open": True,
            "next_open": format_ts(now - now % day + day),
            "next_close": format_ts(now - now % day + day),
        }


def _int_param(params: Mapping[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _unprocessable(f"{key} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise _unprocessable(f"{key} must be between {lo} and {hi}, got {value}")
    return value


def _activity_id(x: _Execution) -> str:
    sec, frac = divmod(x.ts, 1_000_000_000)
    stamp = datetime.fromtimestamp(sec, UTC).strftime("%Y%m%d%H%M%S") + f"{frac // 1_000_000:03d}"
    return f"{stamp}::{x.execution_id}"


def _activity_json(x: _Execution) -> dict[str, Any]:
    return {
        "id": _activity_id(x),
        "activity_type": "FILL",
        "transaction_time": format_ts(x.ts),
        "type": "fill" if x.order_status == "filled" else "partial_fill",
        "price": _num(x.price),
        "qty": _num(x.qty),
        "side": x.side,
        "symbol": x.symbol,
        "leaves_qty": _num(x.leaves_qty),
        "order_id": x.order_id,
        "cum_qty": _num(x.cum_qty),
        "order_status": x.order_status,
        "commission": _num(x.commission),
    }


# -- HTTP -----------------------------------------------------------------------------------------

_ORDER_ID = re.compile(r"^/v2/orders/[^/]+$")
_POSITION = re.compile(r"^/v2/positions/[^/]+$")
_QUOTE = re.compile(r"^/v2/stocks/[^/]+/quotes/latest$")


def path_key(path: str) -> str:
    """The request path without query and with ids collapsed, as counted and matched by faults."""
    if _ORDER_ID.match(path):
        return "/v2/orders/{id}"
    if _POSITION.match(path):
        return "/v2/positions/{symbol}"
    if _QUOTE.match(path):
        return "/v2/stocks/{symbol}/quotes/latest"
    return path


class _Server(Server):
    app: FakeBrokerServer


class _Handler(Handler):
    server: _Server
    server_version = "hflite-fakebroker/1"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # -- one request ------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        app = self.server.app
        broker = app.broker
        url = urlsplit(self.path)
        key = path_key(url.path)
        raw = self._read_body()
        fault = broker.count_request(method, key)
        if fault is not None and fault.action == "drop":
            self._drop()
            return
        if fault is not None and fault.respond is not None:
            wait = fault.retry_after_s if fault.retry_after_s is not None else 1
            headers = {"Retry-After": f"{wait:g}"} if fault.respond == 429 else {}
            self._send_json(
                fault.respond, {"code": fault.respond * 100000, "message": "injected fault"}, headers
            )
            return
        if not app.authorised(self.headers.get("APCA-API-KEY-ID"), self.headers.get("APCA-API-SECRET-KEY")):
            self._send_json(401, {"code": 40110000, "message": "request is not authorized"})
            return
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if method == "GET" and url.path == "/v2/events/trades":
            self._stream(params)
            return
        try:
            status, payload = self._route(method, url.path, params, raw)
        except BrokerError as exc:
            status, payload = exc.status, {"code": exc.code, "message": exc.message}
        if fault is not None and fault.action == "malformed":  # processed; the answer is garbage
            self._send(200, b'{"id": 42, "unexpected": [', "application/json")
            return
        if fault is not None and fault.action == "timeout":
            app._stopping.wait(broker.script.timeout_hold_s)  # processed; never answered
            self._drop()
            return
        if method == "POST" and url.path == "/v2/orders" and broker.script.ack_delay_ms:
            app._stopping.wait(broker.script.ack_delay_ms / 1000)
        if status == 204:
            self._send(204, b"", "application/json")
        else:
            self._send_json(status, payload)

    def _route(self, method: str, path: str, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        b = self.server.app.broker
        if method == "GET":
            return 200, self._get(b, path, params)
        body = _json_body(raw, toml_ok=path == "/admin/script") if method in ("POST", "PATCH") else None
        if method == "POST":
            routes = {
                "/v2/orders": lambda: b.submit(body),  # type: ignore[arg-type]
                "/admin/order": lambda: b.submit(body, source="admin"),  # type: ignore[arg-type]
                "/admin/clock": lambda: self._admin_clock(body),
                "/admin/script": lambda: self._admin_script(body),
                "/admin/position": lambda: b.set_position(body),  # type: ignore[arg-type]
                "/admin/cancel": lambda: self._admin_cancel(body),
            }
            if path in routes:
                return 200, routes[path]()
        elif method == "DELETE" and _ORDER_ID.match(path):
            b.cancel(path.rsplit("/", 1)[1])
            return 204, None
        elif method == "PATCH" and _ORDER_ID.match(path):
            return 200, b.replace(path.rsplit("/", 1)[1], body)  # type: ignore[arg-type]
        raise BrokerError(404, 40400000, f"endpoint not found: {method} {path}")

    @staticmethod
    def _get(b: FakeBroker, path: str, params: dict[str, str]) -> Any:
        if path == "/v2/account":
            return b.account()
        if path == "/v2/clock":
            return b.clock_json()
        if path == "/v2/orders":
            return b.list_orders(params)
        if path == "/v2/orders:by_client_order_id":
            return b.get_by_client_id(params.get("client_order_id", ""))
        if _ORDER_ID.match(path):
            return b.get_order(path.rsplit("/", 1)[1], nested=params.get("nested", "true") != "false")
        if path == "/v2/positions":
            return b.positions()
        if _POSITION.match(path):
            return b.position(path.rsplit("/", 1)[1])
        if path == "/v2/account/activities/FILL":
            return b.activities(params)
        if path == "/admin/state":
            return b.state()
        if path == "/v2/stocks/quotes/latest":
            return b.latest_quotes(params.get("symbols", ""))
        if _QUOTE.match(path):
            return b.latest_quote(path.split("/")[3])
        raise BrokerError(404, 40400000, f"endpoint not found: GET {path}")

    def _admin_clock(self, body: Any) -> dict[str, Any]:
        b = self.server.app.broker
        if b.clock_mode != "driven":
            raise BrokerError(
                409, 40900000, "the broker runs on the wall clock: /admin/clock is for driven mode"
            )
        if not isinstance(body, Mapping) or not isinstance(body.get("ts"), str):
            raise _unprocessable('ts is required (an RFC 3339 time, e.g. "2024-01-05T21:00:00Z")')
        last = b.advance_to(parse_ts(body["ts"]))
        return {"ts": format_ts(b.clock_ns), "last_event_id": last}

    def _admin_script(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise _unprocessable("the behaviour script must be a JSON object or a TOML table")
        try:
            script = parse_script(body)
        except ScriptError as exc:
            raise _unprocessable(str(exc)) from None
        self.server.app.broker.set_script(script)
        return script.model_dump(mode="json")

    def _admin_cancel(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping) or not isinstance(body.get("client_order_id"), str):
            raise _unprocessable("client_order_id is required")
        b = self.server.app.broker
        b.cancel_by_client_id(body["client_order_id"])
        return b.get_by_client_id(body["client_order_id"])

    # -- SSE --------------------------------------------------------------------------------------
    def _stream(self, params: dict[str, str]) -> None:
        """``since_id < seq [<= until_id]``; without until_id the stream stays open with a keep-alive
        comment every 5 s. Without since_id only new events are sent."""
        app, broker = self.server.app, self.server.app.broker
        try:
            since = int(params["since_id"]) if params.get("since_id") else broker.last_event_id
            until = int(params["until_id"]) if params.get("until_id") else None
        except ValueError:
            self._send_json(422, {"code": 40010000, "message": "since_id and until_id must be integers"})
            return
        drop_every = broker.script.drop_stream_every
        app._track_stream(self.connection, add=True)
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        sent, cursor = 0, since
        try:
            self.wfile.flush()
            while not app._stopping.is_set():
                if until is not None and cursor >= until:
                    return
                batch = broker.events_between(cursor, until)
                if not batch:
                    if not broker.wait_events(cursor, KEEP_ALIVE_S) and not app._stopping.is_set():
                        self.wfile.write(b": keep-alive\n\n")
                        self.wfile.flush()
                    continue
                for seq, event in batch:
                    self.wfile.write(f"id: {seq}\ndata: {json.dumps(event)}\n\n".encode())
                    cursor, sent = seq, sent + 1
                    if drop_every and sent >= drop_every:
                        self.wfile.flush()
                        return
                self.wfile.flush()
        except OSError:
            return
        finally:
            app._track_stream(self.connection, add=False)


def _json_body(raw: bytes, *, toml_ok: bool = False) -> Any:
    """The request body as JSON (or, with ``toml_ok``, TOML: a behaviour script file posted as is)."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        if toml_ok:
            with contextlib.suppress(tomllib.TOMLDecodeError, UnicodeDecodeError):
                return tomllib.loads(raw.decode("utf-8"))
        raise BrokerError(400, 40000000, "the request body is not valid JSON") from None


class FakeBrokerServer(HttpApp):
    """The fake broker over HTTP on ``host:port`` (0 = a free port), as a context manager::

        with FakeBrokerServer(broker) as srv:
            httpx.get(srv.url + "/v2/account", headers=...)

    ``stop()`` is prompt: streams, held replies and idle keep-alive connections are closed."""

    def __init__(
        self,
        broker: FakeBroker,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        key_id: str = DEFAULT_KEY_ID,
        secret: str = DEFAULT_SECRET,
        poll_s: float = 5.0,
    ) -> None:
        super().__init__(host, port)
        self.broker = broker
        self.poll_s = poll_s
        self._key_id, self._secret = key_id.encode(), secret.encode()
        self._stopping = threading.Event()
        self._streams: set[socket.socket] = set()

    @property
    def headers(self) -> dict[str, str]:
        """The auth headers this server accepts (for tests and tools)."""
        return {"APCA-API-KEY-ID": self._key_id.decode(), "APCA-API-SECRET-KEY": self._secret.decode()}

    def authorised(self, key_id: str | None, secret: str | None) -> bool:
        """Both keys right (compared in constant time)."""
        ok_key = hmac.compare_digest((key_id or "").encode(), self._key_id)
        return ok_key & hmac.compare_digest((secret or "").encode(), self._secret)

    def start(self) -> FakeBrokerServer:
        """Bind and serve in background threads; ``url`` is valid afterwards."""
        self._stopping.clear()
        self._start_http(_Server, _Handler, "fakebroker-http")
        if self.broker.clock_mode == "wall":
            poller = threading.Thread(target=self._poll_wall, name="fakebroker-clock", daemon=True)
            poller.start()
            self._threads.append(poller)
        return self

    def _poll_wall(self) -> None:
        while not self._stopping.wait(self.poll_s):
            try:
                self.broker.refresh()
            except Exception as exc:  # a bad read keeps the old data; the next poll retries
                from hflite import logs

                logs.get("hflite.fakebroker").warning("fakebroker.refresh_failed", error=str(exc))

    def stop(self) -> None:
        """Stop serving and close every open connection (streams and held replies end at once)."""
        self._stopping.set()
        self.broker.wake_waiters()
        self._stop_http()

    def _track_stream(self, conn: socket.socket, *, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._streams.add(conn)
            else:
                self._streams.discard(conn)

    def drop_streams(self) -> int:
        """Close every open event stream now (clients must resubscribe); returns how many."""
        with self._conns_lock:
            streams = list(self._streams)
        for conn in streams:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        return len(streams)


def broker_keys(key_id: str | None = None, secret: str | None = None) -> tuple[str, str]:
    """The keys to accept: given ones, else env HFLITE_BROKER_KEY_ID / HFLITE_BROKER_SECRET, else the
    documented defaults "fake-key" / "fake-secret"."""
    return (
        key_id or os.environ.get("HFLITE_BROKER_KEY_ID") or DEFAULT_KEY_ID,
        secret or os.environ.get("HFLITE_BROKER_SECRET") or DEFAULT_SECRET,
    )


def serve(
    settings: Settings,
    port: int = 8765,
    script_path: str | Path | None = None,
    key_id: str | None = None,
    secret: str | None = None,
    clock: ClockMode = "driven",
    *,
    host: str = "127.0.0.1",
    poll_s: float = 5.0,
    store: Store | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run the fake broker until Ctrl-C (or ``stop`` is set): what ``hflite venue fake-broker`` calls.
    Prints one line with the URL once it listens; sets ``ready`` then."""
    script = load_script(script_path) if script_path is not None else None
    broker = FakeBroker.from_settings(settings, store, clock=clock, script=script)
    kid, sec = broker_keys(key_id, secret)
    with FakeBrokerServer(broker, host, port, key_id=kid, secret=sec, poll_s=poll_s) as srv:
        n = len(broker.md.traded)
        print(f"fake broker listening on {srv.url} ({clock} clock, {n} symbols); Ctrl-C stops it")
        wait_until_stopped(ready, stop)


__all__ = [
    "DEFAULT_KEY_ID",
    "DEFAULT_SECRET",
    "BehaviourScript",
    "BrokerError",
    "FakeBroker",
    "FakeBrokerServer",
    "Fault",
    "ScriptError",
    "broker_keys",
    "format_ts",
    "load_script",
    "parse_script",
    "parse_ts",
    "path_key",
    "serve",
]
