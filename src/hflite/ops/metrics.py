"""Prometheus metrics for a running runtime: counters fed by the ops bus, gauges fed by the book.

Two inputs, one registry. ``Metrics.__call__`` is an ``OpsBus`` listener: it runs on the trading thread,
so it only increments counters and observes histograms (a dict lookup and a lock each; no I/O, no
allocation per event beyond the label tuple). ``Metrics.on_book`` sets the gauges from the runtime's
book (``Session.book()``) and the risk-check dict after each bar. The API serves ``render()`` on
``/metrics``; Prometheus scrapes it (``deploy/prometheus/prometheus.yml``, ``docs/monitoring.md``).

Every instance owns its ``CollectorRegistry``: tests and replays build many, and the process-global
registry would refuse the second one's names. Label values are bounded: each label keeps at most a
few dozen clean values (symbols a few hundred) and anything else, free text included, counts as
``other``, so a bug upstream can never explode Prometheus's series count.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hflite.ops.events import OpsEvent

__all__ = ["OTHER", "Metrics"]

#: The value any label takes when the real one is free text or past its label's budget.
OTHER = "other"
#: What a clean label value looks like: a symbol, an enum value, a rule name. No spaces, no free text.
_CLEAN = re.compile(r"^[A-Za-z0-9_.:/=^@+-]{1,48}$")

#: Budgets: how many distinct values each label may take in one process (then ``other``).
_SYMBOLS = 512
_SMALL = 32
_RULES = 64

_SLIPPAGE_BPS_BUCKETS = (-50.0, -20.0, -10.0, -5.0, -2.0, -1.0, 0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
_BAR_TO_ORDER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_VENUE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LLM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

_MODES = ("running", "paused", "killed")
_PERIODS = ("day", "week", "month", "total")
_ORDER_STATES = (
    "new",
    "submitted",
    "accepted",
    "partially_filled",
    "filled",
    "cancelled",
    "rejected",
    "expired",
    "unknown",
)
#: What a halt's free-text reason is about: its first word, when it is one of these.
_HALT_KINDS = (
    "drawdown",
    "reconcile",
    "kill",
    "killed",
    "breaker",
    "loss",
    "daily",
    "weekly",
    "monthly",
    "error",
)
_FIRST_WORD = re.compile(r"[a-z_]+")


class _Bound:
    """One label's values: clean ones pass until the budget is spent; anything else is ``other``.

    Accepted values are cached (a dict hit per event); rejected ones are not, so free text never
    grows the cache either."""

    __slots__ = ("budget", "empty", "seen")

    def __init__(self, budget: int, known: Iterable[str] = (), empty: str = "none") -> None:
        self.budget = budget
        self.empty = empty
        self.seen: dict[Any, str] = {k: k for k in known}

    def __call__(self, value: Any) -> str:
        try:
            clean = self.seen.get(value)
        except TypeError:  # unhashable: a dict or list where a name belongs
            return OTHER
        if clean is not None:
            return clean
        if value is None or value == "":
            return self.empty
        if isinstance(value, bool):
            return "true" if value else "false"
        text = str(value)
        if not _CLEAN.match(text):
            return OTHER
        if len(self.seen) >= self.budget:
            return OTHER
        self.seen[value] = text
        return text


def _num(value: Any) -> float | None:
    """A finite float, or None (missing, NaN, text)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _epoch_s(value: Any) -> float | None:
    """A bar time as epoch seconds: ISO text (the book's ``last_bar``), ns since epoch, or seconds."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value.timestamp()
    num = _num(value)
    if num is None:
        return None
    return num / 1e9 if num > 1e12 else num


class _Staleness(Collector):
    """``hflite_data_staleness_seconds{symbol}``: the age of each symbol's last bar, computed at scrape
    time so it keeps growing while the runtime is silent (which is when it matters)."""

    def __init__(self, clock: Callable[[], float], stale_after_s: float) -> None:
        self.clock = clock
        self.stale_after_s = stale_after_s
        self.last_bar: dict[str, float] = {}  # symbol -> epoch seconds
        self.offset_s = 0.0  # the book's "now" minus the wall clock when it was read (replays)

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "hflite_data_staleness_seconds",
                "Seconds since each symbol's last bar, at scrape time",
                labels=["symbol"],
            ),
            GaugeMetricFamily(
                "hflite_data_stale_after_seconds",
                "Staleness past which a symbol's data counts as stale (the alert threshold)",
            ),
        )

    def collect(self) -> Iterator[Metric]:
        stale, threshold = self._families()
        now = self.clock() + self.offset_s
        for symbol, ts in list(self.last_bar.items()):
            stale.add_metric([symbol], max(0.0, now - ts))
        threshold.add_metric([], self.stale_after_s)
        yield stale
        yield threshold


class Metrics:
    """The runtime's Prometheus metrics on a private registry: an ``OpsBus`` listener plus ``on_book``.

    ``stale_after_s`` is the data age the stale-data alert rule fires at (exported as
    ``hflite_data_stale_after_seconds``: the runtime passes its bar interval times
    ``alerts.stale_after_bars``). ``clock`` is the wall clock (injectable for tests)."""

    def __init__(
        self,
        run_id: str = "",
        *,
        stale_after_s: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.run_id = run_id
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._types: dict[str, str] = {}  # family name -> counter | gauge | histogram
        self._no_sum: set[str] = set()  # histograms exported without _sum
        self._labels: dict[str, tuple[str, ...]] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._symbol = _Bound(_SYMBOLS)
        self._side = _Bound(_SMALL, ("buy", "sell"))
        self._status = _Bound(_SMALL, _ORDER_STATES)
        self._rule = _Bound(_RULES)
        self._outcome = _Bound(_SMALL, ("approved", "resized", "rejected"))
        self._action = _Bound(_SMALL, ("pause", "resume", "close_all", "kill"))
        self._source = _Bound(_SMALL, ("cli", "api", "telegram"))
        self._venue = _Bound(_SMALL)
        self._op = _Bound(_SMALL)
        self._error = _Bound(_SMALL)
        self._backend = _Bound(_SMALL)
        self._flag = _Bound(4, ("true", "false"), empty="false")
        self._currency = _Bound(_SMALL)
        self._limit = _Bound(_RULES)
        self._mode = _Bound(_SMALL, _MODES)
        self._state = _Bound(_SMALL, _ORDER_STATES)
        self._run = _Bound(_SMALL)
        self._build_events()
        self._build_book()
        self._staleness = _Staleness(clock, stale_after_s)
        self.registry.register(self._staleness)
        self._types["hflite_data_staleness_seconds"] = "gauge"
        self._labels["hflite_data_staleness_seconds"] = ("symbol",)
        self._types["hflite_data_stale_after_seconds"] = "gauge"
        self._labels["hflite_data_stale_after_seconds"] = ()
        self._held: set[str] = set()
        self._parsed: dict[str, float] = {}  # ISO bar time -> epoch seconds
        self._cash_ccys: set[str] = set()
        self._limits_seen: set[str] = set()
        self._states_seen: set[str] = set(_ORDER_STATES)
        self._modes_seen: set[str] = set(_MODES)
        self._run_label = ""
        self._handlers: dict[str, Callable[[Mapping[str, Any]], None]] = {
            "fill": self._on_fill,
            "order": self._on_order,
            "risk.verdict": self._on_verdict,
            "risk.halt": self._on_halt,
            "risk.breaker": self._on_breaker,
            "risk.limit": self._on_limit,
            "risk.command": self._on_command,
            "stop_out": self._on_stop_out,
            "reconcile.diff": self._on_reconcile,
            "venue.request": self._on_venue_request,
            "venue.disconnect": self._on_disconnect,
            "venue.reconnect": self._on_reconnect,
            "feed.stale": self._on_stale,
            "llm.call": self._on_llm_call,
            "llm.fallback": self._on_llm_fallback,
            "bar": self._on_bar,
            "run.start": self._on_run_start,
        }
        if run_id:
            self._set_run(run_id)

    # -- construction ------------------------------------------------------------------------------

    def _counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        self._types[name] = "counter"
        self._labels[name] = labels
        return Counter(name, doc, labels, registry=self.registry)

    def _gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        self._types[name] = "gauge"
        self._labels[name] = labels
        return Gauge(name, doc, labels, registry=self.registry)

    def _histogram(
        self, name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()
    ) -> Histogram:
        self._types[name] = "histogram"
        self._labels[name] = labels
        if buckets[0] < 0:  # the exposition drops _sum when a bucket is negative (OpenMetrics)
            self._no_sum.add(name)
        return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)

    def _build_events(self) -> None:
        c, h = self._counter, self._histogram
        self.fills = c("hflite_fills_total", "Fills by symbol and side", ("symbol", "side"))
        self.slippage = h(
            "hflite_slippage_bps",
            "Fill slippage against the decision price (bps)",
            _SLIPPAGE_BPS_BUCKETS,
            ("symbol",),
        )
        self.order_updates = c(
            "hflite_order_updates_total", "Order status changes by new status", ("status",)
        )
        self.risk_checks = c(
            "hflite_risk_checks_total",
            "Pre-trade risk verdicts by failed rule and outcome",
            ("rule", "outcome"),
        )
        self.halts = c("hflite_halts_total", "Trading halts by what caused them", ("reason_kind",))
        self.breaker_trips = c("hflite_breaker_trips_total", "Circuit breaker trips")
        self.limit_events = c("hflite_risk_limit_events_total", "Risk limits reached, by rule", ("rule",))
        self.commands = c(
            "hflite_commands_total", "Human commands by action and source", ("action", "source")
        )
        self.stop_outs = c("hflite_stop_outs_total", "Protective stops filled, by symbol", ("symbol",))
        self.reconcile_diffs = c(
            "hflite_reconcile_differences_total", "Reconciliation differences found", ("explained",)
        )
        self.venue_request = h(
            "hflite_venue_request_seconds", "Venue request latency (s)", _VENUE_BUCKETS, ("venue", "op")
        )
        self.venue_errors = c("hflite_venue_errors_total", "Venue request errors by kind", ("venue", "error"))
        self.venue_connected = self._gauge(
            "hflite_venue_connected", "1 while the venue connection is up", ("venue",)
        )
        self.venue_disconnects = c("hflite_venue_disconnects_total", "Venue disconnects", ("venue",))
        self.feed_stale = c("hflite_feed_stale_total", "Times a symbol's feed went stale", ("symbol",))
        self.llm_calls = c("hflite_llm_calls_total", "LLM calls by backend and success", ("backend", "ok"))
        self.llm_latency = h("hflite_llm_latency_seconds", "LLM call latency (s)", _LLM_BUCKETS, ("backend",))
        self.llm_fallbacks = c("hflite_llm_fallbacks_total", "LLM fallbacks to the rule path", ("backend",))
        self.bar_to_order = h(
            "hflite_bar_to_order_seconds",
            "Time from a bar's arrival to its first order sent (s; bars that sent nothing are not observed)",
            _BAR_TO_ORDER_BUCKETS,
        )
        self.bars = c("hflite_bars_total", "Bars processed")

    def _build_book(self) -> None:
        g = self._gauge
        self.equity = g("hflite_equity", "Account equity (USD)")
        self.cash = g("hflite_cash", "Cash by currency", ("currency",))
        self.pnl = g("hflite_pnl", "P&L by period: day, week, month, total (USD)", ("period",))
        self.drawdown = g("hflite_drawdown_ratio", "Drawdown from the equity peak (0.05 = 5%)")
        self.gross_exposure = g("hflite_gross_exposure_ratio", "Gross exposure / equity")
        self.net_exposure = g("hflite_net_exposure_ratio", "Net exposure / equity")
        self.positions = g("hflite_positions", "Open positions")
        self.position_value = g(
            "hflite_position_value", "Position value at the last price (quote currency)", ("symbol",)
        )
        self.open_orders = g("hflite_open_orders", "Working orders at the venue")
        self.orders_by_state = g("hflite_orders_by_state", "Orders by state", ("state",))
        self.risk_mode = g(
            "hflite_risk_mode", "1 for the current risk mode (running, paused, killed)", ("mode",)
        )
        self.halted = g("hflite_halted", "1 while trading is halted")
        self.last_bar = g("hflite_last_bar_timestamp_seconds", "Time of each symbol's last bar", ("symbol",))
        self.runtime_up = g("hflite_runtime_up", "1 while the trading runtime is alive")
        self.limit_utilisation = g(
            "hflite_limit_utilisation_ratio", "Share of each risk limit in use (1 = at the limit)", ("limit",)
        )
        self.run_info = g("hflite_run_info", "The run these metrics describe (always 1)", ("run_id",))

    def _child(self, metric: Any, *values: str) -> Any:
        """The metric's child for these label values, cached (``labels()`` takes a lock each call)."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def _remove(self, metric: Any, *values: str) -> None:
        """Drop one series (a symbol no longer held, a currency gone) and its cached child."""
        self._children.pop((id(metric), values), None)
        try:
            metric.remove(*values)
        except KeyError:
            pass

    # -- the ops bus listener (trading thread: cheap, never raises) --------------------------------

    def __call__(self, ev: OpsEvent) -> None:
        """Count one event. Unknown kinds and malformed fields are ignored, never raised."""
        handler = self._handlers.get(ev.kind)
        if handler is None:
            return
        try:
            handler(ev.fields)
        except Exception:  # noqa: S110 - a metric never stops trading; the bus would only log it
            pass

    def _observe(self, hist: Any, value: Any) -> None:
        num = _num(value)
        if num is not None:
            hist.observe(num)

    def _on_fill(self, f: Mapping[str, Any]) -> None:
        symbol = self._symbol(f.get("symbol"))
        self._child(self.fills, symbol, self._side(str(f.get("side", "")).lower())).inc()
        self._observe(self._child(self.slippage, symbol), f.get("slippage_bps"))

    def _on_order(self, f: Mapping[str, Any]) -> None:
        self._child(self.order_updates, self._status(f.get("status"))).inc()

    def _on_verdict(self, f: Mapping[str, Any]) -> None:
        self._child(self.risk_checks, self._rule(f.get("rule")), self._outcome(f.get("status"))).inc()

    def _on_halt(self, f: Mapping[str, Any]) -> None:
        self._child(self.halts, _halt_kind(f.get("reason"))).inc()

    def _on_breaker(self, f: Mapping[str, Any]) -> None:
        self.breaker_trips.inc()

    def _on_limit(self, f: Mapping[str, Any]) -> None:
        self._child(self.limit_events, self._rule(f.get("rule"))).inc()

    def _on_command(self, f: Mapping[str, Any]) -> None:
        self._child(self.commands, self._action(f.get("action")), self._source(f.get("source"))).inc()

    def _on_stop_out(self, f: Mapping[str, Any]) -> None:
        self._child(self.stop_outs, self._symbol(f.get("symbol"))).inc()

    def _on_reconcile(self, f: Mapping[str, Any]) -> None:
        self._child(self.reconcile_diffs, self._flag(bool(f.get("explained")))).inc()

    def _on_venue_request(self, f: Mapping[str, Any]) -> None:
        venue = self._venue(f.get("venue"))
        self._observe(self._child(self.venue_request, venue, self._op(f.get("op"))), f.get("latency_s"))
        error = f.get("error")
        if error:
            self._child(self.venue_errors, venue, self._error(error)).inc()

    def _on_disconnect(self, f: Mapping[str, Any]) -> None:
        venue = self._venue(f.get("venue"))
        self._child(self.venue_connected, venue).set(0)
        self._child(self.venue_disconnects, venue).inc()

    def _on_reconnect(self, f: Mapping[str, Any]) -> None:
        self._child(self.venue_connected, self._venue(f.get("venue"))).set(1)

    def _on_run_start(self, f: Mapping[str, Any]) -> None:
        # A run starts connected to its venue: the gauge exists from the first scrape, not the first drop.
        if f.get("venue"):
            self._child(self.venue_connected, self._venue(f.get("venue"))).set(1)

    def _on_stale(self, f: Mapping[str, Any]) -> None:
        self._child(self.feed_stale, self._symbol(f.get("symbol"))).inc()

    def _on_llm_call(self, f: Mapping[str, Any]) -> None:
        backend = self._backend(f.get("backend"))
        self._child(self.llm_calls, backend, self._flag(bool(f.get("ok")))).inc()
        self._observe(self._child(self.llm_latency, backend), f.get("latency_s"))

    def _on_llm_fallback(self, f: Mapping[str, Any]) -> None:
        self._child(self.llm_fallbacks, self._backend(f.get("backend"))).inc()

    def _on_bar(self, f: Mapping[str, Any]) -> None:
        self.bars.inc()
        self._observe(self.bar_to_order, f.get("bar_to_order_s"))

    # -- gauges from the book -----------------------------------------------------------------------

    def set_runtime_up(self, up: bool) -> None:
        """Whether the trading runtime is alive (the API knows it from the journal's heartbeat)."""
        self.runtime_up.set(1 if up else 0)

    def on_book(
        self, book: Mapping[str, Any], risk: Mapping[str, Any] | None = None, now: float | None = None
    ) -> None:
        """Set the gauges from one book (``Session.book()``) and the risk-check dict.

        ``now`` is the session's current time in epoch seconds when it is not the wall clock (a replay
        at speed): staleness is then measured on the session's clock, still growing at scrape time."""
        if book.get("run_id"):
            self._set_run(str(book["run_id"]))
        equity = _num(book.get("equity"))
        if equity is not None:
            self.equity.set(equity)
        self._set_cash(book.get("cash") or {})
        self._set_positions(book.get("positions") or {})
        self.open_orders.set(_num(book.get("open_orders")) or 0.0)
        self._set_orders_by_state(book.get("orders_by_state") or {})
        self._set_last_bars(book.get("last_bar") or {}, now)
        risk = risk or {}
        self._set_mode(str(risk.get("mode") or book.get("risk") or "running"))
        self.halted.set(1 if (book.get("halted") or risk.get("halted")) else 0)
        self._set_risk(risk)

    def _set_run(self, run_id: str) -> None:
        label = self._run(run_id)
        if label == self._run_label:
            return
        if self._run_label:
            self._remove(self.run_info, self._run_label)
        self._child(self.run_info, label).set(1)
        self._run_label = label

    def _set_cash(self, cash: Mapping[str, Any]) -> None:
        now: set[str] = set()
        for ccy, amount in cash.items():
            value = _num(amount)
            if value is not None:
                label = self._currency(ccy)
                self._child(self.cash, label).set(value)
                now.add(label)
        for gone in self._cash_ccys - now:
            self._remove(self.cash, gone)
        self._cash_ccys = now

    def _set_positions(self, positions: Mapping[str, Any]) -> None:
        held: dict[str, float] = {}
        for sym, pos in positions.items():
            qty = _num(pos.get("qty")) if isinstance(pos, Mapping) else None
            if not qty:
                continue
            price = _num(pos.get("last"))
            if price is None:
                price = _num(pos.get("avg_price")) or 0.0
            label = self._symbol(sym)
            held[label] = held.get(label, 0.0) + qty * price
        for label, value in held.items():
            self._child(self.position_value, label).set(value)
        for gone in self._held - held.keys():
            self._remove(self.position_value, gone)
        self._held = set(held)
        self.positions.set(len(held))

    def _set_orders_by_state(self, by_state: Mapping[str, Any]) -> None:
        counts: dict[str, float] = {}
        for state, n in by_state.items():
            label = self._state(state)
            counts[label] = counts.get(label, 0.0) + (_num(n) or 0.0)
        self._states_seen |= counts.keys()
        for state in self._states_seen:  # a state gone from the book is 0 now, not missing
            self._child(self.orders_by_state, state).set(counts.get(state, 0.0))

    def _set_mode(self, mode: str) -> None:
        current = self._mode(mode)
        self._modes_seen.add(current)
        for m in self._modes_seen:
            self._child(self.risk_mode, m).set(1 if m == current else 0)

    def _set_last_bars(self, last_bar: Mapping[str, Any], now: float | None) -> None:
        bars: dict[str, float] = {}
        parsed = self._parsed
        for sym, when in last_bar.items():
            ts = parsed.get(when) if isinstance(when, str) else None
            if ts is None:
                ts = _epoch_s(when)
                if ts is not None and isinstance(when, str):
                    parsed[when] = ts
            if ts is not None:
                bars[self._symbol(sym)] = ts
        for label, ts in bars.items():
            self._child(self.last_bar, label).set(ts)
        for gone in self._staleness.last_bar.keys() - bars.keys():
            self._remove(self.last_bar, gone)
        self._staleness.last_bar = bars
        if len(parsed) > 4 * len(bars) + 64:  # keep only the texts still current
            self._parsed = {
                when: parsed[when] for when in last_bar.values() if isinstance(when, str) and when in parsed
            }
        self._staleness.offset_s = 0.0 if now is None else now - self._clock()

    def _set_risk(self, risk: Mapping[str, Any]) -> None:
        pnl = risk.get("pnl")
        if isinstance(pnl, Mapping):
            for period in _PERIODS:
                value = _num(pnl.get(period))
                if value is not None:
                    self._child(self.pnl, period).set(value)
        for key, gauge in (
            ("drawdown", self.drawdown),
            ("gross_exposure", self.gross_exposure),
            ("net_exposure", self.net_exposure),
        ):
            value = _num(risk.get(key))
            if value is not None:
                gauge.set(value)
        if "limits" in risk:
            self._set_limits(risk.get("limits") or [])

    def _set_limits(self, limits: Iterable[Any]) -> None:
        now: set[str] = set()
        for item in limits:
            if not isinstance(item, Mapping):
                continue
            value = _num(item.get("utilisation"))
            if value is None:
                continue
            label = self._limit(item.get("name"))
            self._child(self.limit_utilisation, label).set(value)
            now.add(label)
        for gone in self._limits_seen - now:
            self._remove(self.limit_utilisation, gone)
        self._limits_seen = now

    # -- exposition ----------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The exposition text for ``/metrics`` and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def families(self) -> dict[str, str]:
        """Each metric family this exports and its type (counter, gauge, histogram)."""
        return dict(self._types)

    def label_names(self) -> dict[str, tuple[str, ...]]:
        """Each family's label names (for checking the dashboard's and rules' matchers)."""
        return dict(self._labels)

    def names(self) -> frozenset[str]:
        """Every series name a PromQL query can use: gauges as named, counters' ``..._total``,
        histograms' ``_bucket``, ``_count`` and ``_sum`` (none for the slippage histogram: its buckets
        go negative, for price improvement, and the exposition then omits the sum)."""
        out: set[str] = set()
        for name, kind in self._types.items():
            if kind == "histogram":
                out |= {f"{name}_bucket", f"{name}_count"}
                if name not in self._no_sum:
                    out.add(f"{name}_sum")
            else:
                out.add(name)
        return frozenset(out)


def _halt_kind(reason: Any) -> str:
    """A halt's free-text reason reduced to a small set: its first word when known, else ``other``."""
    if not reason:
        return "none"
    m = _FIRST_WORD.match(str(reason).strip().lower())
    word = m.group(0) if m else ""
    return word if word in _HALT_KINDS else OTHER
