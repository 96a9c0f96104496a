"""Order round trip through each broker adapter against its local fake over loopback.

For every venue kind with a contract harness (``tests/venues/test_contract_<kind>.py``: the fake on
127.0.0.1 and the adapter ``hflite run`` builds for that kind), ``ORDERS`` limit orders go through:
``submit`` -> the venue's acknowledgement delivered (ACCEPTED) -> the fake executes it -> the fill
event delivered (FILLED) -> ``match`` books it. Per order, with ``time.perf_counter``:

- ``<kind>_ack_p50_ms`` / ``_p99``: submit until the ACCEPTED event is in the adapter's inbox;
- ``<kind>_fill_p50_ms`` / ``_p99``: the fake's execution until the FILLED event is in the inbox;
- ``<kind>_roundtrip_p50_ms`` / ``_p99``: the two together (submit -> ack -> fill event);
- ``<kind>_cpu_us_per_order``: the CPU time the adapter and its vendor client library spend per
  order: the calling thread's CPU (``time.thread_time``) inside ``submit`` and ``match``, plus the
  CPU of every thread the adapter started (stream readers, pollers, event loops; read per thread from
  /proc through psutil). Waiting costs no CPU; the fake runs in its own threads.
- ``<kind>_transport_us_per_order``: the part of it inside the HTTP transports (requests'
  ``HTTPAdapter.send``, httpx's ``HTTPTransport.handle_request`` and response streams: connections,
  HTTP framing, socket I/O), as ``bench/runtime.py`` counts the network;
- ``<kind>_overhead_us_per_order``: the difference, the adapter's overhead excluding the network.
  Target < 1 ms (1000 us). Websocket frames (alpaca's stream) and the TWS socket (ib_async) are not
  metered: there the figure includes the client's own socket and framing work.
- ccxt has no push stream: its poller's requests while an order waits count in its CPU.

Run with ``python bench/venues.py [orders]`` or ``python bench/run.py venues``.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from _common import peak_rss_mb, write

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' harnesses

from tests.venues.contract import Booked, bar, make_order, ours  # noqa: E402

from hflite.data.sample import ensure_sample  # noqa: E402
from hflite.data.store import Store  # noqa: E402
from hflite.domain.order import Side  # noqa: E402
from hflite.execution.venues.base import VenueEventKind  # noqa: E402

ORDERS = 200
SIDES = (Side.BUY, Side.SELL)
TARGET_US = 1000.0
#: kind -> the test module whose ``make_harness(store)`` builds its harness.
HARNESSES = {
    "fakebroker": "tests.venues.test_contract_fakebroker",
    "alpaca": "tests.venues.test_contract_alpaca",
    "ccxt": "tests.venues.test_contract_ccxt",
    "oanda": "tests.venues.test_contract_oanda",
    "ib": "tests.venues.test_contract_ib",
}


class TransportMeter:
    """CPU seconds spent inside the HTTP transports (requests' ``HTTPAdapter.send``, httpx's
    ``HTTPTransport.handle_request`` and its response streams), per thread: the network part of an
    adapter's CPU (connection handling, HTTP framing, socket reads and writes). The main thread counts
    only while ``inside`` is set (during the adapter's own calls, not the fake's)."""

    def __init__(self) -> None:
        self.by_thread: dict[int, float] = {}
        self.inside = False
        self._main = threading.main_thread().native_id
        self._undo: list[tuple[Any, str, Any]] = []

    def _add(self, spent: float) -> None:
        tid = threading.get_native_id()
        if tid != self._main or self.inside:
            self.by_thread[tid] = self.by_thread.get(tid, 0.0) + spent

    def _wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)
        meter = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            c0 = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                meter._add(time.thread_time() - c0)

        def timed_iter(self_: Any) -> Any:
            it = original(self_)
            while True:
                c0 = time.thread_time()
                try:
                    chunk = next(it)
                except StopIteration:
                    meter._add(time.thread_time() - c0)
                    return
                meter._add(time.thread_time() - c0)
                yield chunk

        setattr(owner, name, timed_iter if name == "__iter__" else timed)
        self._undo.append((owner, name, original))

    def install(self) -> TransportMeter:
        import httpx._transports.default as httpx_default
        import requests.adapters

        self._wrap(requests.adapters.HTTPAdapter, "send")
        self._wrap(httpx_default.HTTPTransport, "handle_request")
        self._wrap(httpx_default.ResponseStream, "__iter__")
        return self

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()

    def cpu(self, threads: set[int]) -> float:
        return sum(v for t, v in self.by_thread.items() if t in threads or t == self._main)


def _thread_cpu(native_ids: set[int]) -> float:
    """CPU seconds (user + system) of the given threads of this process, alive now."""
    total = 0.0
    for t in psutil.Process(os.getpid()).threads():
        if t.id in native_ids:
            total += t.user_time + t.system_time
    return total


def _wait(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError("the venue did not answer in time")
        time.sleep(0.0002)


def bench_kind(kind: str, store: Store, orders: int) -> dict[str, float] | None:
    try:
        make_harness = importlib.import_module(HARNESSES[kind]).make_harness
    except (ModuleNotFoundError, AttributeError) as exc:
        print(f"{kind}: skipped ({exc})")
        return None
    harness = make_harness(store)
    try:
        before = {t.native_id for t in threading.enumerate()}
        venue = harness.venue(timeout_s=5.0)
        venue.connect()
        adapter_threads = {t.native_id for t in threading.enumerate()} - before
        acks, fills = [], []
        booked = Booked()
        # warm up: connections, imports, first-call caches
        for k in range(6):
            o = make_order(harness, side=SIDES[k % 2])
            venue.submit(o)
            _wait(lambda o=o: bool(ours(venue, o, VenueEventKind.ACCEPTED)))
            harness.fill(o.id, o.qty, harness.price)
            _wait(lambda o=o: bool(ours(venue, o, VenueEventKind.FILLED)))
            venue.match(o.symbol, bar(1), booked)
        adapter_threads |= {t.native_id for t in threading.enumerate()} - before
        cpu_main, cpu0_threads = 0.0, _thread_cpu(adapter_threads)
        meter = TransportMeter().install()
        for n in range(orders):
            o = make_order(harness, side=SIDES[n % 2])  # buy, sell, ...: flat every two orders
            t0, c0 = time.perf_counter(), time.thread_time()
            meter.inside = True
            venue.submit(o)
            meter.inside = False
            cpu_main += time.thread_time() - c0
            _wait(lambda o=o: bool(ours(venue, o, VenueEventKind.ACCEPTED)))
            t1 = time.perf_counter()
            harness.fill(o.id, o.qty, harness.price)
            t2 = time.perf_counter()
            _wait(lambda o=o: bool(ours(venue, o, VenueEventKind.FILLED)))
            t3 = time.perf_counter()
            c0 = time.thread_time()
            meter.inside = True
            venue.match(o.symbol, bar(n + 2), booked)
            meter.inside = False
            cpu_main += time.thread_time() - c0
            acks.append(t1 - t0)
            fills.append(t3 - t2)
        cpu_threads = _thread_cpu(adapter_threads) - cpu0_threads
        meter.uninstall()
        transport = meter.cpu(adapter_threads)
        venue.close()
    finally:
        harness.close()
    ack, fill = np.array(acks) * 1e3, np.array(fills) * 1e3
    rt = ack + fill
    out = {
        f"{kind}_ack_p50_ms": float(np.percentile(ack, 50)),
        f"{kind}_ack_p99_ms": float(np.percentile(ack, 99)),
        f"{kind}_fill_p50_ms": float(np.percentile(fill, 50)),
        f"{kind}_fill_p99_ms": float(np.percentile(fill, 99)),
        f"{kind}_roundtrip_p50_ms": float(np.percentile(rt, 50)),
        f"{kind}_roundtrip_p99_ms": float(np.percentile(rt, 99)),
        f"{kind}_cpu_us_per_order": (cpu_main + cpu_threads) / orders * 1e6,
        f"{kind}_transport_us_per_order": transport / orders * 1e6,
        f"{kind}_overhead_us_per_order": (cpu_main + cpu_threads - transport) / orders * 1e6,
    }
    print(
        f"{kind}: round trip p50 {out[f'{kind}_roundtrip_p50_ms']:.2f} ms, p99 "
        f"{out[f'{kind}_roundtrip_p99_ms']:.2f} ms; CPU per order {out[f'{kind}_cpu_us_per_order']:.0f} us, "
        f"of which HTTP transport {out[f'{kind}_transport_us_per_order']:.0f} us; adapter overhead ex "
        f"network {out[f'{kind}_overhead_us_per_order']:.0f} us (target < {TARGET_US:.0f} us)"
    )
    return out


def main(orders: int = ORDERS) -> None:
    orders += orders % 2  # even: the book ends flat
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        ensure_sample(store)
        figures: dict[str, Any] = {"orders": orders}
        for kind in HARNESSES:
            got = bench_kind(kind, store, orders)
            if got is None:
                figures[f"{kind}_skipped"] = True
            else:
                figures.update(got)
    figures["peak_rss_mb"] = peak_rss_mb()
    print(write("venues", figures))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else ORDERS)
