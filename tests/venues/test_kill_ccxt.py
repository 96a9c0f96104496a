"""The kill test against the fake Binance: `hflite run` with ``[venue] kind = "ccxt"`` (the real ccxt
client, exchange "binance") on recorded bars with a driven clock, killed with SIGKILL at
``HFLITE_KILLS`` random points (10 by default) and restarted each time, ends exactly where an
uninterrupted run against a fresh fake ends.

The exchange misbehaves throughout (the core's behaviour script on Binance paths): 429 with
Retry-After on every 7th order, two orders whose reply is held past the client's timeout (it took
them), one 503 on an order it did not take, and a 503 on every 61st trade poll. Asserted at the end:
no client id placed twice by POST /api/v3/order (a replace's new order keeps its client id by design),
every trade at the exchange booked in the journal once, the run's positions and cash equal the
exchange's balances, and the final orders, fills and equity equal the uninterrupted run's.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from hflite.execution.oms import SqliteJournal
from hflite.execution.venues.fakebroker import FakeBroker, parse_script
from hflite.execution.venues.fakes.binance import BinanceFront, FakeBinanceServer
from tests.conftest import make_settings
from tests.test_kill import _cmd, _env, _report, _run_to_end, _steps

KILLS = int(os.environ.get("HFLITE_KILLS", "10"))
KEYS = {"key_id": "kill-key-id", "secret": "kill-secret-value"}  # what tests.test_kill._env exports
SYMBOLS = {"BTC-USD": "BTC/USDT", "ETH-USD": "ETH/USDT"}

SCRIPT = {
    "timeout_hold_s": 2.0,
    "fault": [
        {"method": "POST", "path": "/api/v3/order", "every": 7, "respond": 429, "retry_after_s": 0.05},
        {"method": "POST", "path": "/api/v3/order", "nth": [5, 23], "action": "timeout"},
        {"method": "POST", "path": "/api/v3/order", "nth": [9], "respond": 503},
        {"method": "GET", "path": "/api/v3/myTrades", "every": 61, "respond": 503},
    ],
}
RUN = {
    "name": "killccxt",
    "symbols": ["BTC-USD", "ETH-USD"],
    "start": "2023-06-01",
    "end": "2024-12-06",
    "benchmarks": ["BTC-USD"],
}
STRATEGY = {"name": "trend", "fast": 5, "slow": 20, "ma": "ema", "stop_atr": 2.0}


def _config(tmp: Path, store_root: Path, url: str, name: str) -> Path:
    symbols = ", ".join(f'"{k}" = "{v}"' for k, v in SYMBOLS.items())
    text = f"""
[run]
name = "{RUN["name"]}"
symbols = ["BTC-USD", "ETH-USD"]
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
kind = "ccxt"
exchange = "binance"
url = "{url}"
drive_clock = true
timeout_s = 0.5
max_retries = 5
rate_per_min = 100000
symbols = {{ {symbols} }}

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
    path.write_text(text)
    return path


def _front(store) -> BinanceFront:
    settings = make_settings(store, run=RUN, strategy=STRATEGY)
    return BinanceFront(FakeBroker.from_settings(settings, store, script=parse_script(SCRIPT)), SYMBOLS)


@pytest.mark.slow
def test_a_ccxt_run_killed_at_random_points_ends_exactly_like_an_uninterrupted_one(sample_store, tmp_path):
    rng = random.Random(20261207)
    store_root = Path(sample_store.root)

    with FakeBinanceServer(_front(sample_store), **KEYS) as ref_srv:
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

    front = _front(sample_store)
    with FakeBinanceServer(front, **KEYS) as srv:
        cfg = _config(tmp_path, store_root, srv.url, "kill")
        journal, out_dir = tmp_path / "kill.sqlite", tmp_path / "kill-report"
        kills = 0
        while kills < KILLS:
            before = _steps(journal)
            proc = subprocess.Popen(_cmd(cfg, journal, out_dir), env=_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
            if rng.random() < 0.2:  # in start-up: loading, recovery, connecting, reconciling
                deadline = time.monotonic() + rng.uniform(0.2, startup)
                target = None
            else:  # a few bar-times further on, at a random moment inside a step
                deadline = time.monotonic() + 120.0
                target = before + rng.randint(0, max(1, total // (KILLS + 2)))
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
        state = front.state()

    # no client id placed twice (cancelReplace's new order keeps its client id: not a second placing)
    placed = Counter(o["clientOrderId"] for o in state["orders"] if o["via"] == "order")
    assert [cid for cid, n in placed.items() if n > 1] == []
    # every trade at the exchange booked in the journal, once
    j = SqliteJournal(journal)
    try:
        booked = Counter(ev.event_id for _, ev in j.venue_events() if ev.kind.value == "filled")
    finally:
        j.close()
    trades = {f"{t['symbol']}-{t['id']}" for t in state["trades"]}
    assert trades == set(booked) and max(booked.values()) == 1
    orders, fills, equity = _report(out_dir)
    # positions and cash equal the exchange's balances
    held = (
        fills.assign(signed=fills.qty.where(fills.side == "buy", -fills.qty)).groupby("symbol").signed.sum()
    )
    assets = {"BTC-USD": "BTC", "ETH-USD": "ETH"}
    for sym, qty in held.items():
        assert state["balances"][assets[str(sym)]] == pytest.approx(qty, abs=1e-9)
    cash_run = (
        100_000.0 - (fills.qty.where(fills.side == "buy", -fills.qty) * fills.price).sum() - fills.fee.sum()
    )
    assert state["balances"]["USDT"] == pytest.approx(cash_run, abs=0.01)

    pd.testing.assert_frame_equal(ref_orders, orders)
    pd.testing.assert_frame_equal(ref_fills, fills)
    pd.testing.assert_series_equal(ref_equity, equity)
    assert "resumed after" in final.stdout
