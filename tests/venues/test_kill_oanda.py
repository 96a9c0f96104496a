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
from collections import Counter
from pathlib import Path

import pytest

from hflite.execution.venues.fakebroker import FakeBroker
from hflite.execution.venues.fakes.oanda import OandaFakeServer, OandaFront
from tests.conftest import make_settings
from tests.venues.killing import (
    assert_positions,
    assert_quality_pages,
    assert_same_end,
    booked_fills,
    cmd,
    kill_and_restart,
    reference_run,
    report,
    run_to_end,
    signed,
)

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


@pytest.mark.slow
def test_a_run_against_the_oanda_fake_killed_at_random_points_ends_like_an_uninterrupted_one(
    sample_store, tmp_path
):
    rng = random.Random(20261208)
    store_root = Path(sample_store.root)

    with _server(sample_store) as ref_srv:
        cfg = _config(tmp_path, store_root, ref_srv.url, "ref")
        total, startup = reference_run(
            cmd(cfg, tmp_path / "ref.sqlite", tmp_path / "ref-report"), tmp_path / "ref.sqlite", _env()
        )
    ref = report(tmp_path / "ref-report")
    assert_quality_pages(cfg, tmp_path / "ref.sqlite", tmp_path / "ref-quality", _env())
    assert len(ref[1]) > 10, "the run must trade for the test to mean anything"

    with _server(sample_store) as srv:
        front = srv.front
        cfg = _config(tmp_path, store_root, srv.url, "kill")
        journal, out_dir = tmp_path / "kill.sqlite", tmp_path / "kill-report"
        kill_and_restart(
            cmd(cfg, journal, out_dir),
            journal,
            _env(),
            rng,
            kills=KILLS,
            startup=startup,
            stride=total // (KILLS + 2),
        )
        final = run_to_end(cmd(cfg, journal, out_dir), _env(), timeout=300.0)
        state = front.state()

        # not one duplicate order at the venue
        ids = Counter(str(o["client_order_id"]) for o in state["core_orders"])
        assert [i for i, n in ids.items() if n > 1] == []
        # every ORDER_FILL at the venue booked in the journal, once
        booked = booked_fills(journal)
        assert {str(t["id"]) for t in state["fills"]} == set(booked)
        assert max(booked.values()) == 1

    end = report(out_dir)
    fills = end[1]
    assert_positions(fills, {s: float(q) for s, q in state["positions"].items()})
    qty = signed(fills)
    cash = {"USD": 100_000.0}
    for sym, ccy in (("EURUSD", "USD"), ("USDJPY", "JPY")):
        if sym not in SYMBOLS:
            continue
        mine = fills[fills.symbol == sym]
        cash[ccy] = cash.get(ccy, 0.0) - (qty[mine.index] * mine.price).sum() - mine.fee.sum()
    venue_cash = {c: float(v) for c, v in state["cash_by_currency"].items()}
    assert venue_cash["USD"] == pytest.approx(cash["USD"], abs=0.01)
    assert venue_cash.get("JPY", 0.0) == pytest.approx(cash.get("JPY", 0.0), abs=1.0)

    assert_same_end(ref, end, final)
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
