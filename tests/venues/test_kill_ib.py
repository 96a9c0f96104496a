"""The kill test against the fake TWS: `hflite run` with ``[venue] kind = "ib"`` (the real ib_async
client) killed with SIGKILL at HFLITE_KILLS random points (default 10 here) and restarted each time,
ends exactly where an uninterrupted run ends.

The fake misbehaves in both runs the same way (``fault_every``, counted per new order): a pacing
violation (error 100) on every 7th order, the answer held past the client's timeout on every 11th,
the socket dropped right after TWS took every 13th (a gateway restart: the order's fate is unknown,
the adapter reconnects and the runtime reconciles). The fake runs here, so its state survives every
kill. Asserted at the end: not one order twice at the venue (by orderRef), not one execution the
journal lacks, the run's positions and cash equal the venue's, and the final orders, fills and
equity equal those of an uninterrupted run against a fresh fake.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from hflite.execution.venues.fakebroker import FakeBroker
from hflite.execution.venues.fakes.tws import TwsServer
from tests.conftest import make_settings
from tests.test_kill import RUN, STRATEGY
from tests.venues.killing import (
    assert_positions,
    assert_quality_pages,
    assert_same_end,
    booked_fills,
    cash_after,
    cmd,
    kill_and_restart,
    reference_run,
    report,
    run_to_end,
)

KILLS = int(os.environ.get("HFLITE_KILLS", "10"))
ACCOUNT = "DU5550123"
FAULTS = {"429": 7, "timeout": 11, "drop": 13}


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
kind = "ib"
url = "{url}"
drive_clock = true
client_id = 7
timeout_s = 0.5
max_retries = 5

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


def _env() -> dict[str, str]:
    # TWS has no keys: the account id is the credential (see docs/venues/ib.md)
    env = {k: v for k, v in os.environ.items() if k not in ("HFLITE_BROKER_KEY_ID", "HFLITE_BROKER_SECRET")}
    return {**env, "HFLITE_BROKER_ACCOUNT": ACCOUNT, "COLUMNS": "200"}


def _tws(store) -> TwsServer:
    settings = make_settings(store, run=RUN, strategy=STRATEGY)
    broker = FakeBroker.from_settings(settings, store)
    return TwsServer(broker, accounts=(ACCOUNT,), hold_s=1.5, fault_every=FAULTS)


@pytest.mark.slow
def test_an_ib_run_killed_at_random_points_ends_exactly_like_an_uninterrupted_one(sample_store, tmp_path):
    rng = random.Random(20261207)
    store_root = Path(sample_store.root)

    with _tws(sample_store) as ref_tws:
        cfg = _config(tmp_path, store_root, ref_tws.url, "ref")
        total, startup = reference_run(
            cmd(cfg, tmp_path / "ref.sqlite", tmp_path / "ref-report"), tmp_path / "ref.sqlite", _env()
        )
    ref = report(tmp_path / "ref-report")
    assert_quality_pages(cfg, tmp_path / "ref.sqlite", tmp_path / "ref-quality", _env())
    assert len(ref[1]) > 20, "the run must trade for the test to mean anything"

    with _tws(sample_store) as tws:
        cfg = _config(tmp_path, store_root, tws.url, "kill")
        journal, out_dir = tmp_path / "kill.sqlite", tmp_path / "kill-report"
        kill_and_restart(
            cmd(cfg, journal, out_dir), journal, _env(), rng, kills=KILLS, startup=startup, stride=total // 12
        )
        final = run_to_end(cmd(cfg, journal, out_dir), _env(), timeout=300.0)

        # not one order twice at the venue (IB does not refuse a repeated orderRef: the adapter must)
        refs = Counter(tws.refs_at_venue())
        assert [r for r, n in refs.items() if n > 1 and r] == []
        # not one lost execution: every one at the venue is booked in the journal, once
        booked = booked_fills(journal)
        assert set(tws.exec_ids()) == set(booked) and max(booked.values()) == 1
        account = tws.broker.account()
        positions = tws.broker.positions()
    end = report(out_dir)
    fills = end[1]
    assert_positions(fills, {p["symbol"]: float(p["qty"]) for p in positions})
    assert float(account["cash"]) == pytest.approx(cash_after(fills), abs=0.01)

    assert_same_end(ref, end, final, untimed_cancels=True)  # TWS stamps no cancellation
