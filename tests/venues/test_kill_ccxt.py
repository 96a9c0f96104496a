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
from collections import Counter
from pathlib import Path

import pytest

from hflite.execution.venues.fakebroker import FakeBroker, parse_script
from hflite.execution.venues.fakes.binance import BinanceFront, FakeBinanceServer
from tests.conftest import make_settings
from tests.venues.killing import (
    KEYS,
    assert_positions,
    assert_quality_pages,
    assert_same_end,
    booked_fills,
    cash_after,
    cmd,
    env,
    kill_and_restart,
    reference_run,
    report,
    run_to_end,
)

KILLS = int(os.environ.get("HFLITE_KILLS", "10"))
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
        total, startup = reference_run(
            cmd(cfg, tmp_path / "ref.sqlite", tmp_path / "ref-report"), tmp_path / "ref.sqlite", env()
        )
    ref = report(tmp_path / "ref-report")
    assert_quality_pages(cfg, tmp_path / "ref.sqlite", tmp_path / "ref-quality", env())
    assert len(ref[1]) > 10, "the run must trade for the test to mean anything"

    front = _front(sample_store)
    with FakeBinanceServer(front, **KEYS) as srv:
        cfg = _config(tmp_path, store_root, srv.url, "kill")
        journal, out_dir = tmp_path / "kill.sqlite", tmp_path / "kill-report"
        kill_and_restart(
            cmd(cfg, journal, out_dir),
            journal,
            env(),
            rng,
            kills=KILLS,
            startup=startup,
            stride=total // (KILLS + 2),
        )
        final = run_to_end(cmd(cfg, journal, out_dir))
        state = front.state()

    # no client id placed twice (cancelReplace's new order keeps its client id: not a second placing)
    placed = Counter(o["clientOrderId"] for o in state["orders"] if o["via"] == "order")
    assert [cid for cid, n in placed.items() if n > 1] == []
    # every trade at the exchange booked in the journal, once
    booked = booked_fills(journal)
    trades = {f"{t['symbol']}-{t['id']}" for t in state["trades"]}
    assert trades == set(booked) and max(booked.values()) == 1
    end = report(out_dir)
    fills = end[1]
    # positions and cash equal the exchange's balances
    assets = {"BTC-USD": "BTC", "ETH-USD": "ETH"}
    assert_positions(
        fills, {sym: state["balances"][a] for sym, a in assets.items() if a in state["balances"]}
    )
    assert state["balances"]["USDT"] == pytest.approx(cash_after(fills), abs=0.01)

    assert_same_end(ref, end, final)
