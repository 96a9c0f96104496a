"""The kill test: `hflite run` against the local fake broker, killed with SIGKILL at 100 random
points and restarted each time, ends exactly where an uninterrupted run ends.

The broker misbehaves throughout (its behaviour script): it answers 429 on every 7th order, holds
the reply to two orders past the client's timeout (it took them: the client does not know), drops
one order with a 503 without taking it, sends every fill twice and drops its event stream every 11
events. The runtime runs in a child process on recorded bars at full speed; the broker runs here, so
its state survives every kill. Asserted at the end: not one duplicate order at the broker, not one
fill the journal lacks, the run's positions and cash equal the broker's, and the final orders, fills
and equity equal those of an uninterrupted run against a fresh broker with the same script.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest

from hflite.execution.oms import SqliteJournal
from hflite.execution.venues.fakebroker import FakeBroker, FakeBrokerServer, parse_script
from tests.conftest import make_settings
from tests.venues.contract import register_test_secret

KILLS = int(os.environ.get("HFLITE_KILLS", "100"))

SCRIPT = {
    "duplicate_fills": True,
    "drop_stream_every": 11,
    "timeout_hold_s": 2.0,
    "fault": [
        {"method": "POST", "path": "/v2/orders", "every": 7, "respond": 429},
        {"method": "POST", "path": "/v2/orders", "nth": [5, 23], "action": "timeout"},
        {"method": "POST", "path": "/v2/orders", "nth": [9], "respond": 503},
    ],
}

RUN = {
    "name": "killtest",
    "symbols": ["BTC-USD", "EURUSD"],
    "start": "2023-06-01",
    "end": "2024-12-06",
    "benchmarks": ["BTC-USD"],
}
STRATEGY = {"name": "trend", "fast": 5, "slow": 20, "ma": "ema", "stop_atr": 2.0}


def _config(tmp: Path, store_root: Path, url: str, name: str) -> Path:
    text = f"""
[run]
name = "{RUN["name"]}"
symbols = {RUN["symbols"]!r}
start = "{RUN["start"]}"
end = "{RUN["end"]}"
benchmarks = ["BTC-USD"]

[strategy]
name = "trend"
fast = 5
slow = 20
ma = "ema"
stop_atr = 2.0

[venue]
kind = "fakebroker"
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


def _broker(store):
    settings = make_settings(store, run=RUN, strategy=STRATEGY)
    return FakeBroker.from_settings(settings, store, script=parse_script(SCRIPT))


def _cmd(config: Path, journal: Path, out: Path) -> list[str]:
    code = "import sys; from hflite.cli import app; sys.argv[0] = 'hflite'; app()"
    return [sys.executable, "-c", code, "run", "--config", str(config), "--speed", "max",
            "--journal", str(journal), "--out", str(out)]  # fmt: skip


register_test_secret("kill-key-id", "kill-secret-value")


def _env() -> dict[str, str]:
    return {**os.environ, "HFLITE_BROKER_KEY_ID": "kill-key-id", "HFLITE_BROKER_SECRET": "kill-secret-value",
            "COLUMNS": "200"}  # fmt: skip


def _run_to_end(cmd: list[str], timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _report(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    orders = pd.read_csv(out / "orders.csv")
    fills = pd.read_csv(out / "fills.csv")[["order_id", "symbol", "side", "qty", "price", "fee", "ts"]]
    equity = pd.read_parquet(out / "equity.parquet")["equity"]
    return orders, fills, equity


def _steps(journal: Path) -> int:
    """Bar-times the journal records as decided (0 before the first)."""
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1.0) as db:
            row = db.execute("SELECT steps FROM progress WHERE id = 1").fetchone()
    except sqlite3.Error:  # not created yet, or being set up
        return 0
    return int(row[0]) if row else 0


def _state(srv) -> dict:
    return httpx.get(f"{srv.url}/admin/state", headers=srv.headers, timeout=10).json()


@pytest.mark.slow
def test_a_run_killed_at_100_random_points_ends_exactly_like_an_uninterrupted_one(sample_store, tmp_path):
    rng = random.Random(20261207)
    store_root = Path(sample_store.root)
    keys = {"key_id": "kill-key-id", "secret": "kill-secret-value"}

    # the uninterrupted run, against a fresh broker with the same script
    with FakeBrokerServer(_broker(sample_store), **keys) as ref_srv:
        cfg = _config(tmp_path, store_root, ref_srv.url, "ref")
        t0 = time.monotonic()
        ref = subprocess.Popen(_cmd(cfg, tmp_path / "ref.sqlite", tmp_path / "ref-report"), env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        first = None
        while ref.poll() is None:
            if first is None and _steps(tmp_path / "ref.sqlite") > 0:
                first = time.monotonic() - t0  # start-up: imports, data, connecting, reconciling
            time.sleep(0.01)
        out, err = ref.communicate()
        assert ref.returncode == 0, out[-3000:] + err[-3000:]
        total = _steps(tmp_path / "ref.sqlite")
        startup = first or 1.0
    ref_orders, ref_fills, ref_equity = _report(tmp_path / "ref-report")
    assert len(ref_fills) > 20, "the run must trade for the test to mean anything"

    with FakeBrokerServer(_broker(sample_store), **keys) as srv:
        cfg = _config(tmp_path, store_root, srv.url, "kill")
        journal, out = tmp_path / "kill.sqlite", tmp_path / "kill-report"
        kills = 0
        while kills < KILLS:
            before = _steps(journal)
            proc = subprocess.Popen(_cmd(cfg, journal, out), env=_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
            if rng.random() < 0.2:  # in start-up: loading, recovery, connecting, reconciling
                deadline = time.monotonic() + rng.uniform(0.2, startup)
                target = None
            else:  # a few bar-times further on, at a random moment inside a step
                deadline = time.monotonic() + 120.0
                target = before + rng.randint(0, max(1, total // 70))
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
            break  # it finished before the 100th kill came
        assert kills >= KILLS * 0.8, f"only {kills} kills landed before the run finished"
        final = _run_to_end(_cmd(cfg, journal, out))
        state = _state(srv)

        # not one duplicate order at the broker
        ids = Counter(o["client_order_id"] for o in state["orders"])
        assert [i for i, n in ids.items() if n > 1] == []
        # not one lost fill: every execution at the broker is booked in the journal, once
        j = SqliteJournal(journal)
        try:
            booked = Counter(ev.event_id for _, ev in j.venue_events() if ev.kind.value == "filled")
        finally:
            j.close()
        executions = {f["id"].split("::", 1)[1] for f in state["fills"]}
        assert executions == set(booked) and max(booked.values()) == 1
        # positions and cash equal the broker's
        account = httpx.get(f"{srv.url}/v2/account", headers=srv.headers, timeout=10).json()
        positions = httpx.get(f"{srv.url}/v2/positions", headers=srv.headers, timeout=10).json()
    orders, fills, equity = _report(out)
    held = (
        fills.assign(signed=fills.qty.where(fills.side == "buy", -fills.qty)).groupby("symbol").signed.sum()
    )
    broker_held = {p["symbol"]: float(p["qty"]) for p in positions}
    for sym, qty in held.items():
        assert broker_held.get(sym, 0.0) == pytest.approx(qty, abs=1e-9)
    cash_run = (
        100_000.0 - (fills.qty.where(fills.side == "buy", -fills.qty) * fills.price).sum() - fills.fee.sum()
    )
    assert float(account["cash"]) == pytest.approx(cash_run, abs=0.01)

    # and the end is the uninterrupted run's end
    pd.testing.assert_frame_equal(ref_orders, orders)
    pd.testing.assert_frame_equal(ref_fills, fills)
    pd.testing.assert_series_equal(ref_equity, equity)
    assert "resumed after" in final.stdout
