"""The kill tests' machinery (tests/test_kill.py and tests/venues/test_kill_*.py): ``hflite run`` in a
child process against a fake venue served here, an uninterrupted reference run, the SIGKILL-and-restart
loop, the run to the end, and reading what the runs left (journal steps, booked fills, the report).

Each test keeps its own venue, config and venue-specific assertions."""

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

import pandas as pd
import pytest

from hflite.execution.oms import SqliteJournal
from tests.venues.contract import register_test_secret

#: The keys ``env`` exports (the fakes are started with them).
KEYS = {"key_id": "kill-key-id", "secret": "kill-secret-value"}

#: The fake broker's misbehaviour (tests/test_kill.py, and the fake Alpaca over the same core): 429 on
#: every 7th order, two replies held past the client's timeout, one 503, every fill sent twice, the
#: event stream dropped every 11 events.
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

register_test_secret(KEYS["key_id"], KEYS["secret"])


def cmd(config: Path, journal: Path, out: Path) -> list[str]:
    """``hflite run`` at full speed with this journal and report directory."""
    code = "import sys; from hflite.cli import app; sys.argv[0] = 'hflite'; app()"
    return [sys.executable, "-c", code, "run", "--config", str(config), "--speed", "max",
            "--journal", str(journal), "--out", str(out)]  # fmt: skip


def env() -> dict[str, str]:
    """The child's environment: the broker keys in HFLITE_BROKER_KEY_ID / HFLITE_BROKER_SECRET."""
    return {**os.environ, "HFLITE_BROKER_KEY_ID": KEYS["key_id"], "HFLITE_BROKER_SECRET": KEYS["secret"],
            "COLUMNS": "200"}  # fmt: skip


def run_to_end(
    command: list[str], environ: dict[str, str] | None = None, timeout: float = 240.0
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to its end; it must succeed."""
    done = subprocess.run(
        command,
        env=environ if environ is not None else env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def report(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """The run's final orders, fills and equity."""
    orders = pd.read_csv(out / "orders.csv")
    fills = pd.read_csv(out / "fills.csv")[["order_id", "symbol", "side", "qty", "price", "fee", "ts"]]
    equity = pd.read_parquet(out / "equity.parquet")["equity"]
    return orders, fills, equity


def steps(journal: Path) -> int:
    """Bar-times the journal records as decided (0 before the first)."""
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1.0) as db:
            row = db.execute("SELECT steps FROM progress WHERE id = 1").fetchone()
    except sqlite3.Error:  # not created yet, or being set up
        return 0
    return int(row[0]) if row else 0


def reference_run(command: list[str], journal: Path, environ: dict[str, str]) -> tuple[int, float]:
    """The uninterrupted run: (the bar-times it stepped, its start-up in seconds: imports, data,
    connecting, reconciling)."""
    t0 = time.monotonic()
    ref = subprocess.Popen(command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    while ref.poll() is None:
        if first is None and steps(journal) > 0:
            first = time.monotonic() - t0
        time.sleep(0.01)
    out, err = ref.communicate()
    assert ref.returncode == 0, out[-3000:] + err[-3000:]
    return steps(journal), first or 1.0


def kill_and_restart(
    command: list[str],
    journal: Path,
    environ: dict[str, str],
    rng: random.Random,
    *,
    kills: int,
    startup: float,
    stride: int,
) -> int:
    """Start the run and SIGKILL it, ``kills`` times: one kill in five lands in start-up (loading,
    recovery, connecting, reconciling), the others up to ``stride`` bar-times further on, at a random
    moment inside a step. Stops early when the run finishes first; at least 80% must land. Returns
    how many landed."""
    landed = 0
    while landed < kills:
        before = steps(journal)
        proc = subprocess.Popen(command, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        if rng.random() < 0.2:
            deadline, target = time.monotonic() + rng.uniform(0.2, startup), None
        else:
            deadline, target = time.monotonic() + 120.0, before + rng.randint(0, max(1, stride))
        while proc.poll() is None and time.monotonic() < deadline:
            if target is not None and steps(journal) >= target:
                time.sleep(rng.uniform(0.0, 0.02))
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            landed += 1
            continue
        assert proc.returncode == 0, proc.stderr.read()[-3000:] if proc.stderr else ""
        break  # it finished before the last kill came
    assert landed >= kills * 0.8, f"only {landed} kills landed before the run finished"
    return landed


def booked_fills(journal: Path) -> Counter[str]:
    """How often each fill's event id is booked in the journal."""
    j = SqliteJournal(journal)
    try:
        return Counter(ev.event_id for _, ev in j.venue_events() if ev.kind.value == "filled")
    finally:
        j.close()


def held(fills: pd.DataFrame) -> pd.Series:
    """The position per symbol the fills leave."""
    return fills.assign(signed=signed(fills)).groupby("symbol").signed.sum()


def signed(fills: pd.DataFrame) -> pd.Series:
    """Each fill's quantity, negative when sold."""
    return fills.qty.where(fills.side == "buy", -fills.qty)


def cash_after(fills: pd.DataFrame, start: float = 100_000.0) -> float:
    """The cash the fills leave of ``start`` (one currency)."""
    return float(start - (signed(fills) * fills.price).sum() - fills.fee.sum())


def assert_positions(fills: pd.DataFrame, venue_held: dict[str, float]) -> None:
    """The run's positions equal the venue's."""
    for sym, qty in held(fills).items():
        assert venue_held.get(str(sym), 0.0) == pytest.approx(qty, abs=1e-9)


def assert_same_end(
    ref: tuple[pd.DataFrame, pd.DataFrame, pd.Series],
    end: tuple[pd.DataFrame, pd.DataFrame, pd.Series],
    final: subprocess.CompletedProcess[str],
    *,
    untimed_cancels: bool = False,
) -> None:
    """The killed run ends where the uninterrupted one ended, and its last start resumed.

    ``untimed_cancels``: the venue does not say when it cancelled an order (TWS stamps no
    cancellation and replays nothing a dead connection missed) and the fake holds some answers past
    the client's timeout. A kill between a cancel request and the booking of its answer leaves the
    restart only reconciliation's word for it, booked at a fixed bar-time, where the uninterrupted run
    booked the (held) answer whenever it came: such an order may close one of its symbol's bars
    earlier or later. Everything else (every other order field, every fill, the equity) must still be
    equal."""
    if untimed_cancels:
        orders = end[0].copy()
        times = ref[2].index
        late = (orders["closed_ts"] != ref[0]["closed_ts"]) & (orders["status"] == "cancelled")
        for k in orders.index[late]:
            was, now = pd.Timestamp(ref[0].at[k, "closed_ts"]), pd.Timestamp(orders.at[k, "closed_ts"])
            lo, hi = min(was, now), max(was, now)
            # a symbol's bars share their time of day (a DST change moves it by an hour): a bar-time
            # between the two at either's hour would be a bar of the symbol between them
            between = times[(times > lo) & (times < hi)]
            hours = {was.hour, now.hour}
            oid = orders.at[k, "order_id"]
            assert was in times and now in times and not any(t.hour in hours for t in between), (
                f"order {oid} closed at {now}, the uninterrupted run at {was}: not one of its symbol's "
                "bars apart"
            )
            orders.at[k, "closed_ts"] = ref[0].at[k, "closed_ts"]
        end = (orders, end[1], end[2])
    pd.testing.assert_frame_equal(ref[0], end[0])
    pd.testing.assert_frame_equal(ref[1], end[1])
    pd.testing.assert_series_equal(ref[2], end[2])
    assert "resumed after" in final.stdout


def assert_quality_pages(config: Path, journal: Path, out: Path, environ: dict[str, str]) -> None:
    """``hflite execution report`` and ``hflite drift`` on a finished paper session's journal (against a
    fake broker) write their pages: slippage per fill, and the live-vs-backtest P&L taken apart."""
    code = "import sys; from hflite.cli import app; sys.argv[0] = 'hflite'; app()"
    report_cmd = ["execution", "report", "--journal", str(journal), "--out", str(out)]
    drift_cmd = ["drift", "--config", str(config), "--journal", str(journal), "--out", str(out)]
    done = run_to_end([sys.executable, "-c", code, *report_cmd], environ)
    assert "slip_decision_bps" in done.stdout and "execution by symbol" in done.stdout, done.stdout[-2000:]
    fills = pd.read_csv(out / "execution_fills.csv")
    booked = (
        pd.read_csv(journal.parent / "ref-report" / "fills.csv")
        if (journal.parent / "ref-report").is_dir()
        else None
    )
    if booked is not None:
        assert len(fills) == len(booked)  # every fill of the run, measured
    assert len(fills) > 0 and fills["price"].gt(0).all() and fills["fee_bps"].ge(0).all()
    assert fills["slip_decision_bps"].notna().all()  # every fill has its decision price
    done = run_to_end([sys.executable, "-c", code, *drift_cmd], environ)
    assert "total" in done.stdout.lower(), done.stdout[-2000:]
    for page in ("execution.html", "drift.html"):
        assert (out / page).stat().st_size > 5_000, page
