"""The kill test against the OANDA v20 fake: ``hflite run`` with ``[venue] kind = "oanda"``, killed with
SIGKILL at HFLITE_KILLS random points (default 10) and restarted, ends exactly where an uninterrupted
run against a fresh fake ends.

The fake runs here (its state survives every kill) over the ``FakeBroker`` core, trading the sample's
EURUSD and USDJPY daily bars with the trend strategy; the runtime runs in a child process on recorded
bars at full speed, its adapter following the transaction stream and catching up with ``sinceid`` after
each restart. Asserted: not one duplicate order at the venue, not one fill the journal lacks (or books
twice), the run's positions and per-currency cash equal the venue's, and the final orders, fills and
equity equal the uninterrupted run's.

Both pairs trade (HFLITE_OANDA_KILL_SYMBOLS narrows them): a kill between an order and the journal
booking its fill makes reconciliation adopt the fill, and a USDJPY fill moves yen, not the dollars
reconciliation's cash check compares (``reconcile(..., currencies=)``).
"""

from __future__ import annotations

import json
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
from hflite.execution.venues.fakes.oanda import OandaFakeServer, OandaFront
from tests.conftest import make_settings
from tests.test_kill import _cmd, _report, _steps

KILLS = int(os.environ.get("HFLITE_KILLS", "10"))
TOKEN, ACCOUNT = "kill-oanda-token-value", "101-001-4242424-001"
SYMBOLS = os.environ.get("HFLITE_OANDA_KILL_SYMBOLS", "EURUSD,USDJPY").split(",")
RUN = {
    "name": "killoanda",
    "symbols": SYMBOLS,
    "start": "2023-06-01",
    "end": "2024-12-06",
    "benchmarks": ["EURUSD"],
}
STRATEGY = {"name": "trend", "fast": 5, "slow": 20, "ma": "ema", "stop_atr": 2.0}


def _config(tmp: Path, store_root: Path, url: str, name: str) -> Path:
    text = f"""
[run]
name = "{RUN["name"]}"
symbols = {json.dumps(SYMBOLS)}
start = "{RUN["start"]}"
end = "{RUN["end"]}"
benchmarks = ["EURUSD"]

[strategy]
name = "trend"
fast = 5
slow = 20
ma = "ema"
stop_atr = 2.0

[venue]
kind = "oanda"
url = "{url}"
drive_clock = true
secret_env = "HFLITE_OANDA_TOKEN"
account_env = "HFLITE_OANDA_ACCOUNT"
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
    path.write_text(text)
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "HFLITE_OANDA_TOKEN": TOKEN, "HFLITE_OANDA_ACCOUNT": ACCOUNT, "COLUMNS": "200"}


def _server(store) -> OandaFakeServer:
    settings = make_settings(store, run=RUN, strategy=STRATEGY)
    front = OandaFront(FakeBroker.from_settings(settings, store), account_id=ACCOUNT)
    return OandaFakeServer(front, token=TOKEN, heartbeat_s=1.0, timeout_hold_s=2.0)


def _run(cmd: list[str], timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_a_run_against_the_oanda_fake_killed_at_random_points_ends_like_an_uninterrupted_one(
    sample_store, tmp_path
):
    rng = random.Random(20261208)
    store_root = Path(sample_store.root)

    with _server(sample_store) as ref_srv:
        cfg = _config(tmp_path, store_root, ref_srv.url, "ref")
        t0 = time.monotonic()
        ref = subprocess.Popen(
            _cmd(cfg, tmp_path / "ref.sqlite", tmp_path / "ref-report"),
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
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
        front = srv.front
        cfg = _config(tmp_path, store_root, srv.url, "kill")
        journal, out_dir = tmp_path / "kill.sqlite", tmp_path / "kill-report"
        kills = 0
        while kills < KILLS:
            before = _steps(journal)
            proc = subprocess.Popen(
                _cmd(cfg, journal, out_dir),
                env=_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            if rng.random() < 0.2:
                deadline, target = time.monotonic() + rng.uniform(0.2, startup), None
            else:
                deadline, target = (
                    time.monotonic() + 120.0,
                    before + rng.randint(0, max(1, total // (KILLS + 2))),
                )
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
        final = _run(_cmd(cfg, journal, out_dir))
        state = front.state()

        # not one duplicate order at the venue
        ids = Counter(str(o["client_order_id"]) for o in state["core_orders"])
        assert [i for i, n in ids.items() if n > 1] == []
        # every ORDER_FILL at the venue booked in the journal, once
        j = SqliteJournal(journal)
        try:
            booked = Counter(ev.event_id for _, ev in j.venue_events() if ev.kind.value == "filled")
        finally:
            j.close()
        assert {str(t["id"]) for t in state["fills"]} == set(booked)
        assert max(booked.values()) == 1

    orders, fills, equity = _report(out_dir)
    signed = fills.qty.where(fills.side == "buy", -fills.qty)
    held = fills.assign(signed=signed).groupby("symbol").signed.sum()
    venue_held = {s: float(q) for s, q in state["positions"].items()}
    for sym, qty in held.items():
        assert venue_held.get(sym, 0.0) == pytest.approx(qty, abs=1e-9)
    cash = {"USD": 100_000.0}
    for sym, ccy in (("EURUSD", "USD"), ("USDJPY", "JPY")):
        if sym not in SYMBOLS:
            continue
        mine = fills[fills.symbol == sym]
        cash[ccy] = cash.get(ccy, 0.0) - (signed[mine.index] * mine.price).sum() - mine.fee.sum()
    venue_cash = {c: float(v) for c, v in state["cash_by_currency"].items()}
    assert venue_cash["USD"] == pytest.approx(cash["USD"], abs=0.01)
    assert venue_cash.get("JPY", 0.0) == pytest.approx(cash.get("JPY", 0.0), abs=1.0)

    pd.testing.assert_frame_equal(ref_orders, orders)
    pd.testing.assert_frame_equal(ref_fills, fills)
    pd.testing.assert_series_equal(ref_equity, equity)
    assert "resumed after" in final.stdout
    # neither the token nor the account id in any output of the runs
    texts = [final.stdout, final.stderr] + [
        f.read_text(errors="replace") for f in (tmp_path / "logs").rglob("*") if f.is_file()
    ]
    texts += [
        f.read_text(errors="replace")
        for f in out_dir.rglob("*")
        if f.suffix in (".csv", ".json", ".html", ".md", ".txt")
    ]
    assert not [t for t in texts if TOKEN in t or ACCOUNT in t]
