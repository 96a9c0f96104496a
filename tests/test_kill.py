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
from collections import Counter
from pathlib import Path

import httpx
import pytest

from hflite.execution.venues.fakebroker import FakeBroker, FakeBrokerServer, parse_script
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

KILLS = int(os.environ.get("HFLITE_KILLS", "100"))

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


def _state(srv) -> dict:
    return httpx.get(f"{srv.url}/admin/state", headers=srv.headers, timeout=10).json()


@pytest.mark.slow
def test_a_run_killed_at_100_random_points_ends_exactly_like_an_uninterrupted_one(sample_store, tmp_path):
    rng = random.Random(20261207)
    store_root = Path(sample_store.root)

    # the uninterrupted run, against a fresh broker with the same script
    with FakeBrokerServer(_broker(sample_store), **KEYS) as ref_srv:
        cfg = _config(tmp_path, store_root, ref_srv.url, "ref")
        total, startup = reference_run(
            cmd(cfg, tmp_path / "ref.sqlite", tmp_path / "ref-report"), tmp_path / "ref.sqlite", env()
        )
    ref = report(tmp_path / "ref-report")
    assert_quality_pages(cfg, tmp_path / "ref.sqlite", tmp_path / "ref-quality", env())
    assert len(ref[1]) > 20, "the run must trade for the test to mean anything"

    with FakeBrokerServer(_broker(sample_store), **KEYS) as srv:
        cfg = _config(tmp_path, store_root, srv.url, "kill")
        journal, out = tmp_path / "kill.sqlite", tmp_path / "kill-report"
        kill_and_restart(
            cmd(cfg, journal, out), journal, env(), rng, kills=KILLS, startup=startup, stride=total // 70
        )
        final = run_to_end(cmd(cfg, journal, out))
        state = _state(srv)

        # not one duplicate order at the broker
        ids = Counter(o["client_order_id"] for o in state["orders"])
        assert [i for i, n in ids.items() if n > 1] == []
        # not one lost fill: every execution at the broker is booked in the journal, once
        booked = booked_fills(journal)
        executions = {f["id"].split("::", 1)[1] for f in state["fills"]}
        assert executions == set(booked) and max(booked.values()) == 1
        # positions and cash equal the broker's
        account = httpx.get(f"{srv.url}/v2/account", headers=srv.headers, timeout=10).json()
        positions = httpx.get(f"{srv.url}/v2/positions", headers=srv.headers, timeout=10).json()
    end = report(out)
    fills = end[1]
    assert_positions(fills, {p["symbol"]: float(p["qty"]) for p in positions})
    assert float(account["cash"]) == pytest.approx(cash_after(fills), abs=0.01)

    # and the end is the uninterrupted run's end
    assert_same_end(ref, end, final)
