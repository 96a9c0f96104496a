"""Operating costs: the control API under load, and what metrics and the API add to the loop per bar.

**API latency.** A finished paper run's journal (configs/paper.toml on the embedded sample: BTC-USD and
EURUSD daily, two years, recorded feed) is served by ``hflite serve`` in its own process (as a user
runs it next to ``hflite run``); 50 concurrent clients (httpx, asyncio, one connection each, in this
process) request ``/status`` and ``/emergency/risk_check`` in turn, 40 requests each per route after a
warm-up, each client polling every 100 ms (50 dashboards refreshing ten times a second: 500 requests a
second in all). Reported: p50 and p99 per route in ms; target p99 < 20 ms. Then the same clients with no
pause at all (a flood: each sends its next request as soon as the last is answered), for the server's
throughput (requests a second) and its p99 when saturated, which on a 2-core machine shared with the
clients is queueing, not service time.

**Loop cost.** The same run through ``engine.live.trade`` at full speed, with no ops kit and with the
kit a user gets from ``hflite run --api`` (metrics on, the API served in a thread, no alert channel),
alternated 7 times. Each bar-time's wall time is measured from one book (``status`` callback) to the
next; the cost in percent compares the medians over all runs (GC pauses and the machine's other work
land in the means, also reported). Target < 5%.

Run with ``python bench/ops.py`` or ``python bench/run.py ops``.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
from _common import write

from hflite.config import Settings
from hflite.data.sample import ensure_sample
from hflite.data.store import Store
from hflite.engine.live import trade
from hflite.ops.watch import OpsKit

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789abcdef"
CLIENTS = 50
REQUESTS = 40
RUNS = 7
POLL_S = 0.1  # each client polls every 100 ms: 500 requests a second in all
TARGET_P99_MS = 20.0
TARGET_LOOP_PCT = 5.0


def settings_for(home: Path, store: Store) -> Settings:
    raw = tomllib.loads((REPO / "configs" / "paper.toml").read_text())
    raw["data"]["dir"] = str(store.root)
    raw["report"]["dir"] = str(home / "reports")
    raw["runtime"] |= {"feed": "recorded", "log_dir": str(home / "logs")}
    raw["api"] = {"port": 0}
    raw["alerts"] = {"daily_summary": None}
    return Settings(**raw)


def loop_us_per_bar(settings: Settings, store: Store, journal: Path, kit: OpsKit | None) -> list[float]:
    """Each bar-time's wall time (us), from one book to the next."""
    marks: list[float] = []
    journal.unlink(missing_ok=True)
    asyncio.run(
        trade(
            settings,
            store,
            feed="recorded",
            journal_path=journal,
            status=lambda _b: marks.append(time.perf_counter()),
            ops=kit,
        )
    )
    return [(b - a) * 1e6 for a, b in zip(marks, marks[1:], strict=False)]


async def _client(url: str, route: str, lat: list[float], period: float, phase: float) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        for _ in range(3):  # warm-up: connection and first reads
            (await c.get(route)).raise_for_status()
        start = time.perf_counter() + phase
        for n in range(REQUESTS):
            if period:  # a dashboard polling every `period` seconds
                await asyncio.sleep(max(0.0, start + n * period - time.perf_counter()))
            t0 = time.perf_counter()
            r = await c.get(route)
            lat.append(time.perf_counter() - t0)
            r.raise_for_status()


async def load(url: str, route: str, period: float) -> list[float]:
    lat: list[float] = []
    await asyncio.gather(*(_client(url, route, lat, period, j * period / CLIENTS) for j in range(CLIENTS)))
    return lat


def _pct(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(q * len(ys)))] * 1000


def api_latency(home: Path, config: Path, journal: Path) -> dict[str, Any]:
    code = "import sys; from hflite.cli import app; sys.argv[0] = 'hflite'; app()"
    env = {**os.environ, "HFLITE_API_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--config", str(config), "--journal", str(journal),
         "--port", "0"],
        cwd=home, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        url = None
        while url is None:
            line = proc.stderr.readline() if proc.stderr else ""
            if not line:
                raise RuntimeError("hflite serve did not start")
            m = re.search(r"control API: (http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        out: dict[str, Any] = {}
        for route in ("/status", "/emergency/risk_check"):  # warm-up: connections, first reads, caches
            asyncio.run(load(url, route, POLL_S))
        for name, route in (("status", "/status"), ("risk_check", "/emergency/risk_check")):
            lat = asyncio.run(load(url, route, POLL_S))
            out[f"api_{name}_p50_ms"] = round(_pct(lat, 0.50), 2)
            out[f"api_{name}_p99_ms"] = round(_pct(lat, 0.99), 2)
            out[f"api_{name}_requests"] = len(lat)
            t0 = time.perf_counter()
            flood = asyncio.run(load(url, route, 0.0))
            out[f"api_{name}_flood_req_per_s"] = round(len(flood) / (time.perf_counter() - t0))
            out[f"api_{name}_flood_p99_ms"] = round(_pct(flood, 0.99), 2)
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="hflite-bench-ops-"))
    store = Store(home / "data")
    ensure_sample(store)
    settings = settings_for(home, store)
    os.environ["HFLITE_API_TOKEN"] = TOKEN
    journal = home / "journal.sqlite"
    plain: list[float] = []
    kitted: list[float] = []
    for _ in range(RUNS):
        plain += loop_us_per_bar(settings, store, journal, None)
        kit = OpsKit(settings, journal, api=True, port=0)
        kit.start()
        try:
            kitted += loop_us_per_bar(settings, store, journal, kit)
        finally:
            kit.stop()
    base, with_ops = statistics.median(plain), statistics.median(kitted)
    config = home / "paper.toml"
    text = (REPO / "configs" / "paper.toml").read_text().replace('dir = "var/data"', f'dir = "{store.root}"')
    # the 50 clients share one address: the per-client read budget is lifted for the measurement
    config.write_text(text + "\n[api]\nread_per_second = 100000\n")
    figures: dict[str, Any] = {
        "loop_us_per_bar": round(base, 1),
        "loop_us_per_bar_with_ops": round(with_ops, 1),
        "ops_loop_cost_pct": round((with_ops - base) / base * 100, 2),
        "loop_mean_us_per_bar": round(statistics.mean(plain), 1),
        "loop_mean_us_per_bar_with_ops": round(statistics.mean(kitted), 1),
        **api_latency(home, config, journal),
        "clients": CLIENTS,
    }
    return figures


if __name__ == "__main__":
    print(write("ops", main()))
