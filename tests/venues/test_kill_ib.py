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
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from hflite.execution.oms import SqliteJournal
from hflite.execution.venues.fakebroker import FakeBroker
from hflite.execution.venues.fakes.tws import TwsServer
from tests.conftest import make_settings
from tests.test_kill import RUN, STRATEGY, _cmd, _report, _steps

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


def _run_to_end(cmd: list[str], timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_an_ib_run_killed_at_random_points_ends_exactly_like_an_uninterrupted_one(sample_store, tmp_path):
    rng = random.Random(20261207)
    store_root = Path(sample_store.root)

    with _tws(sample_store) as ref_tws:
        cfg = _config(tmp_path, store_root, ref_tws.url, "ref")
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
    assert len(ref_fills) > 20, "the run must trade for the test to mean anything"

    with _tws(sample_store) as tws:
        cfg = _config(tmp_path, store_root, tws.url, "kill")
        journal, out_dir = tmp_path / "kill.sqlite", tmp_path / "kill-report"
        kills = 0
        while kills < KILLS:
            before = _steps(journal)
            proc = subprocess.Popen(_cmd(cfg, journal, out_dir), env=_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
            if rng.random() < 0.2:
                deadline = time.monotonic() + rng.uniform(0.2, startup)
                target = None
            else:
                deadline = time.monotonic() + 120.0
                target = before + rng.randint(0, max(1, total // 12))
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

        # not one order twice at the venue (IB does not refuse a repeated orderRef: the adapter must)
        refs = Counter(tws.refs_at_venue())
        assert [r for r, n in refs.items() if n > 1 and r] == []
        # not one lost execution: every one at the venue is booked in the journal, once
        j = SqliteJournal(journal)
        try:
            booked = Counter(ev.event_id for _, ev in j.venue_events() if ev.kind.value == "filled")
        finally:
            j.close()
        assert set(tws.exec_ids()) == set(booked) and max(booked.values()) == 1
        account = tws.broker.account()
        positions = tws.broker.positions()
    orders, fills, equity = _report(out_dir)
    held = (
        fills.assign(signed=fills.qty.where(fills.side == "buy", -fills.qty)).groupby("symbol").signed.sum()
    )
    venue_held = {p["symbol"]: float(p["qty"]) for p in positions}
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
