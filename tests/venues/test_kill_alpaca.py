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
from collections import Counter
from pathlib import Path

import httpx
import pytest

from hflite.execution.venues.fakebroker import FakeBroker, parse_script
from hflite.execution.venues.fakes.alpaca import FakeAlpacaServer
from tests.conftest import make_settings
from tests.venues.killing import (
    KEYS,
    SCRIPT,
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
        total, startup = reference_run(
            cmd(cfg, tmp_path / "ref.sqlite", tmp_path / "ref-report"), tmp_path / "ref.sqlite", env()
        )
    ref = report(tmp_path / "ref-report")
    assert_quality_pages(cfg, tmp_path / "ref.sqlite", tmp_path / "ref-quality", env())
    assert len(ref[1]) > 10, "the run must trade for the test to mean anything"

    with _server(sample_store) as srv:
        cfg = _config(tmp_path, store_root, srv.url, "kill")
        journal, out_dir = tmp_path / "kill.sqlite", tmp_path / "kill-report"
        kill_and_restart(
            cmd(cfg, journal, out_dir), journal, env(), rng, kills=KILLS, startup=startup, stride=total // 15
        )
        final = run_to_end(cmd(cfg, journal, out_dir))
        state = _state(srv)

        ids = Counter(o["client_order_id"] for o in state["orders"])
        assert [i for i, n in ids.items() if n > 1] == []
        booked = booked_fills(journal)
        executions = {f["id"].split("::", 1)[1] for f in state["fills"]}
        assert executions == set(booked) and max(booked.values()) == 1
        account = httpx.get(f"{srv.url}/v2/account", headers=srv.headers, timeout=10).json()
        positions = httpx.get(f"{srv.url}/v2/positions", headers=srv.headers, timeout=10).json()
    end = report(out_dir)
    fills = end[1]
    assert_positions(
        fills, {p["symbol"]: float(p["qty"]) * (1 if p["side"] == "long" else -1) for p in positions}
    )
    assert float(account["cash"]) == pytest.approx(cash_after(fills), abs=0.01)

    assert_same_end(ref, end, final)
