"""The kill test against the fake Alpaca: ``hflite run`` with ``[venue] kind = "alpaca"`` on recorded
US-stock bars, killed with SIGKILL at HFLITE_KILLS random points (default 10) and restarted, ends
exactly where an uninterrupted run ends.

The fake misbehaves as tests/test_kill.py's broker does (the same behaviour script: 429 on every 7th
order, two replies held past the client's timeout, one 503, every fill sent twice, the trade_updates
websocket dropped every 11 updates). Asserted at the end: no duplicate order at the venue, no fill the
journal lacks, positions and cash equal the venue's, final orders, fills and equity equal an
uninterrupted run's against a fresh fake.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest

from hflite.execution.oms import SqliteJournal
from hflite.execution.venues.fakebroker import FakeBroker, parse_script
from hflite.execution.venues.fakes.alpaca import FakeAlpacaServer
from tests.conftest import make_settings
from tests.test_kill import SCRIPT, _cmd, _env, _report, _run_to_end, _steps

KILLS = int(os.environ.get("HFLITE_KILLS", "10"))
KEYS = {"key_id": "kill-key-id", "secret": "kill-secret-value"}  # what tests.test_kill._env exports
RUN = {"name": "killtest-alpaca", "symbols": ["SPY", "QQQ", "AAPL"], "start": "2023-06-01",
       "end": "2024-12-06", "benchmarks": ["SPY"]}  # fmt: skip
STRATEGY = {"name": "trend", "fast": 5, "slow": 20, "ma": "ema", "stop_atr": 2.0}


def _config(tmp: Path, store_root: Path, url: str, name: str) -> Path:
    text = f"""
[run]
name = "{RUN["name"]}"
symbols = {RUN["symbols"]!r}
start = "{RUN["start"]}"
end = "{RUN["end"]}"
benchmarks = ["SPY"]

[strategy]
name = "trend"
fast = 5
slow = 20
ma = "ema"
stop_atr = 2.0

[venue]
kind = "alpaca"
url = "{url}"
drive_clock = true
timeout_s = 0.5
max_retries = 5
rate_per_min = 100000

[runtime]
feed = "recorded"
log_dir = "{tmp / "logs"}"

[data]
dir = "{store_root}"

[report]
dir = "{tmp / "reports"}"

[llm]
mode = "off"
"""
    path = tmp / f"{name}.toml"
    path.write_text(text.replace("'", '"'))
    return path


def _server(store) -> FakeAlpacaServer:
    settings = make_settings(store, run=RUN, strategy=STRATEGY)
    broker = FakeBroker.from_settings(settings, store, script=parse_script(SCRIPT))
    return FakeAlpacaServer(broker, **KEYS)


def _state(srv: FakeAlpacaServer) -> dict:
    return httpx.get(f"{srv.url}/admin/state", headers=srv.headers, timeout=10).json()


@pytest.mark.slow
def test_an_alpaca_run_killed_at_random_points_ends_exactly_like_an_uninterrupted_one(sample_store, tmp_path):
    rng = random.Random(20261208)
    store_root = Path(sample_store.root)

    with _server(sample_store) as ref_srv:
        cfg = _config(tmp_path, store_root, ref_srv.url, "ref")
        t0 = time.monotonic()
        ref = subprocess.Popen(_cmd(cfg, tmp_path / "ref.sqlite", tmp_path / "ref-report"), env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        first = None
        while ref.poll() is None:
            if first is None and _steps(tmp_path / "ref.sqlite") > 0:
                first = time.monotonic() - t0
            time.sleep(0.01)
        out, err = ref.communicate()
        assert ref.returncode == 0, out[-3000:] + err[-3000:]
        total = _steps(tmp_path / "ref.sqlite")
        startup = first or 1.0
    ref_orders, ref_fills, ref_equity = _report(tmp_path / "ref-report")
    assert len(ref_fills) > 10, "the run must trade for the test to mean anything"

    with _server(sample_store) as srv:
        cfg = _config(tmp_path, store_root, srv.url, "kill")
        journal, out_dir = tmp_path / "kill.sqlite", tmp_path / "kill-report"
        kills = 0
        while kills < KILLS:
            before = _steps(journal)
            proc = subprocess.Popen(_cmd(cfg, journal, out_dir), env=_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
            if rng.random() < 0.2:
                deadline, target = time.monotonic() + rng.uniform(0.2, startup), None
            else:
                deadline, target = time.monotonic() + 120.0, before + rng.randint(0, max(1, total // 15))
            while proc.poll() is None and time.monotonic() < deadline:
                if target is not None and _steps(journal) >= target:
                    time.sleep(rng.uniform(0.0, 0.02))
                    break
                time.sleep(0.005)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
            assert proc.returncode == 0, proc.stderr.read()[-3000:] if proc.stderr else ""
            break
        assert kills >= KILLS * 0.8, f"only {kills} kills landed before the run finished"
        final = _run_to_end(_cmd(cfg, journal, out_dir))
        state = _state(srv)

        ids = Counter(o["client_order_id"] for o in state["orders"])
        assert [i for i, n in ids.items() if n > 1] == []
        j = SqliteJournal(journal)
        try:
            booked = Counter(ev.event_id for _, ev in j.venue_events() if ev.kind.value == "filled")
        finally:
            j.close()
        executions = {f["id"].split("::", 1)[1] for f in state["fills"]}
        assert executions == set(booked) and max(booked.values()) == 1
        account = httpx.get(f"{srv.url}/v2/account", headers=srv.headers, timeout=10).json()
        positions = httpx.get(f"{srv.url}/v2/positions", headers=srv.headers, timeout=10).json()
    orders, fills, equity = _report(out_dir)
    held = (
        fills.assign(signed=fills.qty.where(fills.side == "buy", -fills.qty)).groupby("symbol").signed.sum()
    )
    venue_held = {p["symbol"]: float(p["qty"]) * (1 if p["side"] == "long" else -1) for p in positions}
    for sym, qty in held.items():
        assert venue_held.get(sym, 0.0) == pytest.approx(qty, abs=1e-9)
    cash_run = (
        100_000.0 - (fills.qty.where(fills.side == "buy", -fills.qty) * fills.price).sum() - fills.fee.sum()
    )
    assert float(account["cash"]) == pytest.approx(cash_run, abs=0.01)

    pd.testing.assert_frame_equal(ref_orders, orders)
    pd.testing.assert_frame_equal(ref_fills, fills)
    pd.testing.assert_series_equal(ref_equity, equity)
    assert "resumed after" in final.stdout
