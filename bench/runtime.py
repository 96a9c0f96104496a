"""The paper/live runtime's latency: bar in -> order out, and reconciliation of 1,000 orders.

**Bar in -> order out.** 30 crypto-like symbols (24/7: every minute is a bar) of synthetic minute bars
(random walks whose drift flips sign every 20-80 minutes, so the trend strategy, SMA 5/20 with a 2 ATR
stop, crosses often), traded the way ``hflite run`` trades them: ``engine.live.Session`` builds the
same ``LiveRuntime`` + ``Engine`` (a real SQLite journal, the full risk profile) and is fed by
``recorded_events`` at full speed (no waiting between bars), against a ``FakeBroker`` (driven clock)
served by ``FakeBrokerServer`` on 127.0.0.1 and reached by ``RestBrokerVenue`` (``drive_clock=True``:
``Session.before`` moves the broker's market to each bar-time and waits for the trade events that
caused). The warm-up history is what ``engine.run.prepare`` loads for a minute run: the strategy's
warm-up plus 14 days (20,181 bars per symbol), then ``LIVE`` live bar-times.

Per bar-time, with ``time.perf_counter``:

- ``bar_to_order``: from the bar group entering ``LiveRuntime._step`` to the return of the last order
  action of that bar-time handed to the venue (``_send_submit``, ``_send_oco``, ``_send_cancel``,
  ``_send_replace``: the request answered);
- network: time inside the venue's HTTP client (``httpx.Client.request``, the broker's work included)
  plus time ``sync`` waits for the broker's trade events on the stream (``_wait_for``), up to that last
  order action; ``*_ex_network`` = the difference: what hflite itself spends;
- ``step``: the whole bar-time (through ``Session.after``: the journal's ``decided`` and the book).

Reported as p50/p99 over the bar-times that sent at least one order action (``bar_to_order_*``) and
over every bar-time (``step_*``); the first live bar-time (connect + the start reconciliation) is left
out and shown on its own. Also a per-phase breakdown (means and p99 of ``Session.before`` = venue sync,
signals, ``Engine.step``, ``Session.after``, ex network where it applies).

The venue's token bucket is set to 100,000 requests a minute (the config's maximum): the default 200
would pace a full-speed replay, which is not the latency measured here.

**Reconciliation.** ``execution.reconcile.reconcile`` on ``bench/reconcile.py``'s case (1,000 journal
orders, 2,000 fills), best of 5; and ``RestBrokerVenue.snapshot`` of 1,000 orders against a fake broker
seeded with 1,000 orders (600 filled, 300 working, 100 cancelled) through its API, then reconciled with
a journal that holds those orders as accepted and no fills (the restart after a crash: every fill is
adopted), best of 3. Target < 1 s.

Run with ``python bench/runtime.py [live_bar_times]`` or ``python bench/run.py runtime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import peak_rss_mb, process_seconds, write
from reconcile import Case as ReconcileCase

from hflite.config import load_settings
from hflite.domain.instrument import AssetClass, Calendar, Instrument, VolumeUnit
from hflite.domain.order import Order, OrderEvent, OrderType, Side
from hflite.engine.live import Session, recorded_events
from hflite.engine.market import market_from_arrays
from hflite.engine.run import Prepared, make_venue
from hflite.execution.oms import JournalLock, SqliteJournal
from hflite.execution.reconcile import reconcile
from hflite.execution.venues.fakebroker import FakeBroker, FakeBrokerServer
from hflite.execution.venues.rest import RestBrokerVenue
from hflite.strategy.builtin import make_strategy

SYMBOLS = [f"C{j:02d}-USD" for j in range(30)]
LIVE = 2_000
MINUTE = 60 * 10**9
START = pd.Timestamp("2026-01-05", tz="UTC")
TARGET_MS = 5.0
TARGET_RECONCILE_S = 1.0
FAST, SLOW, STOP_ATR = 5, 20, 2.0
RATE_PER_MIN = 100_000


def instruments() -> dict[str, Instrument]:
    return {
        s: Instrument(
            s,
            AssetClass.CRYPTO,
            "USD",
            Calendar.ALWAYS,
            0.01,
            1e-5,
            base_currency=s[:3],
            volume_unit=VolumeUnit.QUOTE,
            shortable=False,
        )
        for s in SYMBOLS
    }


def settings(data_dir: Path, url: str, live: int) -> Any:
    """A minute run of the 30 symbols: trend 5/20, full risk profile with room for 30 positions of
    3% each (the defaults would hold 10 and cap crypto at 20% of equity); no SPY in this universe, so
    the market breaker and the regime rule are off (``prepare`` would switch them off too)."""
    end = START + pd.Timedelta(minutes=live + 1)
    return load_settings(
        None,
        {
            "run": {
                "name": "bench-runtime",
                "symbols": SYMBOLS,
                "frequency": "1m",
                "start": START.date().isoformat(),
                "end": (end + pd.Timedelta(days=1)).date().isoformat(),
                "initial_cash": 1_000_000.0,
                "benchmarks": [],
            },
            "strategy": {"name": "trend", "fast": FAST, "slow": SLOW, "stop_atr": STOP_ATR},
            "venue": {"kind": "fakebroker", "url": url, "drive_clock": True, "rate_per_min": RATE_PER_MIN},
            "runtime": {"feed": "recorded"},
            "risk": {
                "max_open_positions": 30,
                "max_position_pct": 3.0,
                "max_asset_class_pct": {"crypto": 100.0},
                "breakers": {"index": ""},
                "regime": {"source": "none"},
            },
            "data": {"dir": str(data_dir)},
            "llm": {"mode": "off"},
        },
    )


def minute_bars(warmup: int, live: int, seed: int = 11) -> dict[str, dict[str, np.ndarray]]:
    """Random walks (0.1% a minute) whose drift (+-0.04%) flips every 20-80 minutes."""
    rng = np.random.default_rng(seed)
    n = warmup + live
    start_ns = int(START.value)
    ts = start_ns + MINUTE * (np.arange(n, dtype=np.int64) - warmup + 1)  # known at the close
    out = {}
    for sym in SYMBOLS:
        drift = np.empty(n)
        k, sign = 0, 1.0
        while k < n:
            span = int(rng.integers(20, 80))
            drift[k : k + span] = sign * 0.0004
            k, sign = k + span, -sign
        close = rng.uniform(5, 50_000) * np.exp(np.cumsum(drift + rng.normal(0, 0.001, n)))
        open_ = np.concatenate(([close[0]], close[:-1]))
        wig = rng.uniform(0, 0.0006, (2, n))
        out[sym] = {
            "ts": ts,
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wig[0]),
            "low": np.minimum(open_, close) * (1 - wig[1]),
            "close": close,
            "volume": rng.uniform(3e7, 8e7, n),  # quote (USD) volume per minute
        }
    return out


class Probe:
    """Per bar-time timings, collected by wrappers around the runtime, the session and the venue."""

    def __init__(self) -> None:
        self.net = 0.0  # network seconds so far in this bar-time
        self.t0 = 0.0
        self.last_send: float | None = None
        self.net_at_send = 0.0
        self.sends = 0
        self.depth = 0
        self.phase = {"before": 0.0, "signals": 0.0, "engine": 0.0, "after": 0.0}
        self.phase_net = {"before": 0.0, "engine": 0.0}
        self.rows: list[dict[str, float]] = []

    def start(self) -> None:
        self.net, self.last_send, self.net_at_send, self.sends = 0.0, None, 0.0, 0
        for k in self.phase:
            self.phase[k] = 0.0
        for k in self.phase_net:
            self.phase_net[k] = 0.0
        self.t0 = time.perf_counter()

    def end(self) -> None:
        t = time.perf_counter()
        self.rows.append(
            {
                "step": t - self.t0,
                "net": self.net,
                "sends": self.sends,
                "to_send": (self.last_send - self.t0) if self.last_send is not None else float("nan"),
                "net_to_send": self.net_at_send,
                **{f"{k}_s": v for k, v in self.phase.items()},
                **{f"{k}_net": v for k, v in self.phase_net.items()},
            }
        )


def instrument(session: Session, venue: RestBrokerVenue, probe: Probe) -> None:
    """Wrap (on the instances only) what the timings need."""
    runtime = session.runtime
    assert runtime is not None
    step, signal, engine_step = runtime._step, runtime._signal, runtime.engine.step
    before, after = session.before, session.after

    async def timed_step(group: list[Any]) -> None:
        probe.start()
        await step(group)
        probe.end()

    async def timed_before(ts: int) -> None:
        t, n = time.perf_counter(), probe.net
        await before(ts)
        probe.phase["before"] += time.perf_counter() - t
        probe.phase_net["before"] += probe.net - n

    def timed_after(ts: int, i: int) -> None:
        t = time.perf_counter()
        after(ts, i)
        probe.phase["after"] += time.perf_counter() - t

    def timed_signal(sym: str, k: int) -> None:
        t = time.perf_counter()
        signal(sym, k)
        probe.phase["signals"] += time.perf_counter() - t

    def timed_engine(i: int) -> None:
        t, n = time.perf_counter(), probe.net
        engine_step(i)
        probe.phase["engine"] += time.perf_counter() - t
        probe.phase_net["engine"] += probe.net - n

    runtime._step = timed_step  # type: ignore[method-assign]
    runtime._signal = timed_signal  # type: ignore[method-assign]
    runtime.engine.step = timed_engine  # type: ignore[method-assign]
    session.before = timed_before  # type: ignore[method-assign]
    session.after = timed_after  # type: ignore[method-assign]

    def sender(fn: Callable[..., None]) -> Callable[..., None]:
        def send(*args: Any) -> None:
            probe.depth += 1
            try:
                fn(*args)
            finally:
                probe.depth -= 1
            if probe.depth == 0:
                probe.sends += 1
                probe.last_send = time.perf_counter()
                probe.net_at_send = probe.net

        return send

    for name in ("_send_submit", "_send_oco", "_send_cancel", "_send_replace"):
        setattr(venue, name, sender(getattr(venue, name)))

    http_request, wait_for = venue._http.request, venue._wait_for

    def request(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return http_request(*args, **kwargs)
        finally:
            probe.net += time.perf_counter() - t

    def waiting(seq: int, timeout_s: float) -> bool:
        t = time.perf_counter()
        try:
            return wait_for(seq, timeout_s)
        finally:
            probe.net += time.perf_counter() - t

    venue._http.request = request  # type: ignore[method-assign]
    venue._wait_for = waiting  # type: ignore[method-assign]


def pct(values: list[float] | np.ndarray, q: float) -> float:
    a = np.asarray(values, dtype=float)
    return float(np.percentile(a, q)) if len(a) else float("nan")


def _market(live: int) -> tuple[Any, int]:
    insts = instruments()
    warmup = make_strategy("trend", {"fast": FAST, "slow": SLOW}).warmup() + 14 * 24 * 60  # as prepare
    return market_from_arrays(minute_bars(warmup, live), insts, SYMBOLS, start_ns=int(START.value)), warmup


def _broker(md: Any, live: int) -> FakeBroker:
    s = settings(Path(tempfile.gettempdir()), "http://127.0.0.1:1", live)
    return FakeBroker(md, make_venue(s, instruments()), s.run.initial_cash, clock="driven",
                      start_ns=int(START.value))  # fmt: skip


def _serve_elsewhere(live: int, conn: Any) -> None:
    """The child process of ``--broker-process``: the same broker, served until the parent says stop."""
    md, _ = _market(live)
    with FakeBrokerServer(_broker(md, live)) as srv:
        conn.send((srv.url, srv.headers))
        conn.recv()


@contextlib.contextmanager
def _broker_server(md: Any, live: int, elsewhere: bool) -> Iterator[tuple[str, dict[str, str]]]:
    """The fake broker on loopback: in this process (default), or in a child process so its HTTP and
    stream threads do not compete with the runtime for this interpreter's GIL."""
    if not elsewhere:
        with FakeBrokerServer(_broker(md, live)) as srv:
            yield srv.url, srv.headers
        return
    import multiprocessing as mp

    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_serve_elsewhere, args=(live, child), daemon=True)
    proc.start()
    try:
        yield parent.recv()
    finally:
        parent.send("stop")
        proc.join(timeout=10)


def latency(live: int, profile: str | None = None, broker_process: bool = False) -> dict[str, Any]:
    insts = instruments()
    md, warmup = _market(live)
    with tempfile.TemporaryDirectory() as tmp, _broker_server(md, live, broker_process) as (url, headers):
        root = Path(tmp)
        s = settings(root / "data", url, live)
        prep = Prepared(s, None, insts, make_strategy("trend", s.strategy.params()), md,  # type: ignore[arg-type]
                        START, START + pd.Timedelta(minutes=live + 1))  # fmt: skip
        path = root / "journal" / "bench-runtime.sqlite"
        lock = JournalLock(path)
        lock.acquire("bench-runtime", "", registry=root / "journal")
        journal = SqliteJournal(path, owner=lock)
        venue = RestBrokerVenue(
            "fakebroker",
            url,
            headers["APCA-API-KEY-ID"],
            headers["APCA-API-SECRET-KEY"],
            instruments=insts,
            drive_clock=True,
            rate_per_min=RATE_PER_MIN,
        )
        try:
            session = Session(prep, journal, venue, run_id="bench-runtime", resume_ts=None,
                              id_prefix=s.run.name)  # fmt: skip
            runtime = session.build()
            probe = Probe()
            instrument(session, venue, probe)
            t0 = time.perf_counter()
            if profile:
                import cProfile

                prof = cProfile.Profile()
                prof.enable()
            engine = asyncio.run(runtime.run(recorded_events(md, None, None)))
            if profile:
                prof.disable()
                prof.dump_stats(profile)
            wall = time.perf_counter() - t0
            requests = venue.requests
            state = venue._get_json("/admin/state", "reading the broker's state")
        finally:
            venue.close()
            journal.close()
    rows = probe.rows
    first, rest = rows[0], rows[1:]
    ordered = [r for r in rest if r["sends"] > 0]
    to_send = [r["to_send"] * 1e3 for r in ordered]
    to_send_ex = [(r["to_send"] - r["net_to_send"]) * 1e3 for r in ordered]
    step_ms = [r["step"] * 1e3 for r in rest]
    step_ex = [(r["step"] - r["net"]) * 1e3 for r in rest]
    out: dict[str, Any] = {
        "symbols": len(SYMBOLS),
        "warmup_bars_per_symbol": warmup,
        "bar_times": len(rows),
        "bar_times_with_orders": len(ordered),
        "order_actions": int(sum(r["sends"] for r in rows)),
        "orders": len(engine.orders),
        "fills": len(engine.fills),
        "http_requests": requests,
        "broker_orders": len(state["orders"]),
        "broker_process": broker_process,
        "bar_to_order_p50_ms_ex_network": pct(to_send_ex, 50),
        "bar_to_order_p99_ms_ex_network": pct(to_send_ex, 99),
        "bar_to_order_max_ms_ex_network": pct(to_send_ex, 100),
        "bar_to_order_p50_ms": pct(to_send, 50),
        "bar_to_order_p99_ms": pct(to_send, 99),
        "step_p50_ms_ex_network": pct(step_ex, 50),
        "step_p99_ms_ex_network": pct(step_ex, 99),
        "step_p50_ms": pct(step_ms, 50),
        "step_p99_ms": pct(step_ms, 99),
        "first_bar_ms": first["step"] * 1e3,
        "first_bar_ms_ex_network": (first["step"] - first["net"]) * 1e3,
        "run_wall_s": wall,
    }
    for phase in ("before", "signals", "engine", "after"):
        own = np.array([r[f"{phase}_s"] - r.get(f"{phase}_net", 0.0) for r in rest]) * 1e3
        out[f"phase_{phase}_mean_ms_ex_network"] = float(own.mean())
        out[f"phase_{phase}_p99_ms_ex_network"] = pct(own, 99)
    out["phase_sync_net_mean_ms"] = float(np.mean([r["before_net"] for r in rest]) * 1e3)
    out["phase_orders_net_mean_ms"] = float(np.mean([r["engine_net"] for r in rest]) * 1e3)
    # how the cost moves with the history held (the strategy's signals are recomputed on it all)
    third = max(len(rest) // 3, 1)
    out["step_p50_ms_ex_network_first_third"] = pct(step_ex[:third], 50)
    out["step_p50_ms_ex_network_last_third"] = pct(step_ex[-third:], 50)
    return out


# -- reconciliation ---------------------------------------------------------------------------------
def seeded_broker(
    n: int = 1_000, per_bar: int = 10
) -> tuple[FakeBroker, dict[str, Order], dict[str, Instrument]]:
    """A broker with ``n`` orders placed through its API, ``per_bar`` at each bar-time (600 market
    orders filled on the next bar, 300 limits far from the market still working, 100 limits
    cancelled), and the journal's view of them: accepted, nothing booked (a restart after a crash)."""
    insts = instruments()
    times = -(-n // per_bar)
    arrays = minute_bars(50, times + 2, seed=3)
    md = market_from_arrays(arrays, insts, SYMBOLS, start_ns=int(START.value))
    s = settings(Path(tempfile.gettempdir()), "http://127.0.0.1:1", times + 2)
    broker = FakeBroker(md, make_venue(s, insts), 1e12, clock="driven", start_ns=int(START.value))
    journal: dict[str, Order] = {}
    cancel: list[str] = []
    for j in range(n):
        k = j // per_bar  # the bar-time the order is placed at (timeline index; bar 49 + k)
        if j % per_bar == 0:
            broker.advance_to(int(md.timeline[k]))
        sym = SYMBOLS[j % len(SYMBOLS)]
        last = float(arrays[sym]["close"][49 + k])
        side = Side.BUY if j % 2 else Side.SELL
        oid = f"bench-runtime-{j:05d}"
        body: dict[str, Any] = {"symbol": sym, "qty": "2", "side": side.value, "time_in_force": "gtc",
                                "client_order_id": oid}  # fmt: skip
        if j % 10 < 6:
            body["type"], otype, price = "market", OrderType.MARKET, None
        else:
            far = round(last * (0.5 if side is Side.BUY else 1.5), 2)
            body["type"], body["limit_price"], otype, price = "limit", str(far), OrderType.LIMIT, far
            if j % 10 == 9:
                cancel.append(oid)
        broker.submit(body)
        order = Order(oid, sym, side, otype, 2.0, int(md.timeline[k]), price=price)
        order.apply(OrderEvent.SUBMIT)
        order.apply(OrderEvent.ACCEPT)
        journal[oid] = order
    broker.advance_to(int(md.timeline[-1]))
    for oid in cancel:
        broker.cancel_by_client_id(oid)
    return broker, journal, insts


def snapshot_and_reconcile(per_bar: int, rounds: int = 3) -> dict[str, Any]:
    """``RestBrokerVenue.snapshot`` of the 1,000 orders over loopback, then ``reconcile`` with the
    journal's view of them; best of ``rounds`` (each with a fresh client)."""
    broker, journal, insts = seeded_broker(per_bar=per_bar)
    snap_best, rec_best = float("inf"), float("inf")
    with FakeBrokerServer(broker) as srv:
        h = srv.headers
        for _ in range(rounds):
            venue = RestBrokerVenue("fakebroker", srv.url, h["APCA-API-KEY-ID"], h["APCA-API-SECRET-KEY"],
                                    instruments=insts, rate_per_min=RATE_PER_MIN)  # fmt: skip
            held = copy.deepcopy(journal)
            try:
                t0 = time.perf_counter()
                snap = venue.snapshot(list(journal))
                t1 = time.perf_counter()
                rec = reconcile(held, set(), {}, {"USD": 1e12}, snap, symbols=set(SYMBOLS), cash_offset=None)
                t2 = time.perf_counter()
                requests = venue.requests
            finally:
                venue.close()
            snap_best, rec_best = min(snap_best, t1 - t0), min(rec_best, t2 - t1)
    return {
        "snapshot_s": snap_best,
        "reconcile_s": rec_best,
        "orders": len(snap.orders),
        "fills": len(snap.fills),
        "requests": requests,
        "events": len(rec.events),
        "clean": rec.clean,
    }


def reconciliation(rounds: int = 5) -> dict[str, Any]:
    case = ReconcileCase()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        case.run()
        best = min(best, time.perf_counter() - t0)
    spread = snapshot_and_reconcile(per_bar=10)
    # every order at one bar-time: the fake broker's created_at differ by 1 ns, and the client's
    # paging steps back 1 us per page, so pages stop bringing new orders and the rest are looked up
    # one by one
    bunched = snapshot_and_reconcile(per_bar=1_000)
    return {
        "reconcile_1000_s": best,
        "reconcile_snapshot_1000_s": spread["snapshot_s"] + spread["reconcile_s"],
        "snapshot_1000_s": spread["snapshot_s"],
        "snapshot_reconcile_s": spread["reconcile_s"],
        "snapshot_orders": spread["orders"],
        "snapshot_fills": spread["fills"],
        "snapshot_requests": spread["requests"],
        "snapshot_reconcile_events": spread["events"],
        "snapshot_reconcile_clean": spread["clean"],
        "snapshot_1000_one_bar_time_s": bunched["snapshot_s"],
        "snapshot_1000_one_bar_time_requests": bunched["requests"],
        "snapshot_1000_one_bar_time_orders": bunched["orders"],
    }


def main(live: int) -> dict[str, Any]:
    figures = latency(live)
    figures.update(reconciliation())
    figures["target_ms"] = TARGET_MS
    figures["target_met"] = figures["bar_to_order_p99_ms_ex_network"] < TARGET_MS
    figures["peak_rss_mb"] = peak_rss_mb()
    figures["process_s"] = process_seconds()
    return figures


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("--"):
        # --profile OUT.prof [n]: the latency run under cProfile; --broker-process [n]: the broker in a
        # child process (no GIL shared with it). Neither writes results.
        prof = sys.argv[2] if sys.argv[1] == "--profile" else None
        rest = sys.argv[3:] if prof else sys.argv[2:]
        elsewhere = sys.argv[1] == "--broker-process"
        f = latency(int(rest[0]) if rest else LIVE, profile=prof, broker_process=elsewhere)
        print(json.dumps(f, indent=2, default=float))
        sys.exit(0)
    f = main(int(sys.argv[1]) if len(sys.argv) > 1 else LIVE)
    print(
        f"bar in -> order out, {f['symbols']} symbols x minute bars ({f['bar_times_with_orders']:,} of "
        f"{f['bar_times']:,} bar-times sent {f['order_actions']:,} order actions): p50 "
        f"{f['bar_to_order_p50_ms_ex_network']:.2f} ms, p99 {f['bar_to_order_p99_ms_ex_network']:.2f} ms "
        f"excluding network (with it: p50 {f['bar_to_order_p50_ms']:.2f}, "
        f"p99 {f['bar_to_order_p99_ms']:.2f}); "
        f"target p99 < {TARGET_MS:g} ms: {'met' if f['target_met'] else 'MISSED'}"
    )
    print(
        f"reconcile 1,000 orders: {f['reconcile_1000_s'] * 1e3:.1f} ms; snapshot of 1,000 orders "
        f"{f['snapshot_1000_s'] * 1e3:.1f} ms + reconcile {f['snapshot_reconcile_s'] * 1e3:.1f} ms"
    )
    print(write("runtime", f))
