"""Operating a running paper session, as a user does: `hflite run --api` as a child process on the
embedded sample (configs/paper.toml, recorded feed, paced so it runs for a while), commands sent
through the API taking effect on the next bar, a real Prometheus scraping its /metrics, and
`hflite serve` answering for the stopped run without pretending it is live."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.ops.prometheus import start_prometheus
from tests.test_run_cli import NAME, write_config

TOKEN = "operating-token-Zq81xLm4Wv0"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CODE = "import sys; from hflite.cli import app; sys.argv[0] = 'hflite'; app()"
# about 730 daily bar-times of BTC-USD and EURUSD: 2 days of market time per wall second = ~6 min
# (the test kills it long before); the commands apply at the next bar-time, within ~0.5 s
SPEED = str(2 * 86400)

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path: Path, sample_store) -> Path:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "data").symlink_to(sample_store.root, target_is_directory=True)
    return tmp_path


def _env() -> dict[str, str]:
    return {**os.environ, "HFLITE_API_TOKEN": TOKEN, "COLUMNS": "200"}


@contextmanager
def _spawn(home: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``hflite <args>`` in ``home``; yield it and the API's URL (from its start-up line)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CODE, *args], cwd=home, env=_env(), text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url, seen = None, []
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline() if proc.stderr else ""
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            m = re.search(r"control API: (http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        assert url is not None, "".join(seen)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait(pred, timeout: float = 60.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout}s")


def test_commands_through_the_api_take_effect_on_the_next_bar_of_a_running_paper_session(home: Path) -> None:
    config = write_config(home)
    with _spawn(home, "run", "--config", str(config), "--feed", "recorded", "--speed", SPEED,
                "--api", "--api-port", "0") as (proc, url):  # fmt: skip
        c = httpx.Client(base_url=url, headers=AUTH, timeout=10)
        assert httpx.get(f"{url}/status").status_code == 401
        live = _wait(lambda: (s := c.get("/status").json()).get("runtime") == "live" and s["bar_ts"] and s)
        assert live["run_id"] == NAME and live["venue"] == "paper"
        assert c.get("/health").json()["checks"]["runtime"]["ok"] is True

        paused = c.post("/emergency/pause?wait=10", json={"reason": "fomc"}).json()
        assert paused["live"] is True and paused["applied_at"] is not None, paused
        status = c.get("/status").json()
        assert status["risk"] == "paused" and "fomc [via api]" in status["risk_reason"]
        applied = paused["applied_at"]
        assert applied > live["bar_ts"], "applied at a later bar-time than the one it was sent at"
        rc = c.get("/emergency/risk_check").json()
        assert rc["mode"] == "paused" and rc["live"] is True
        assert any(r["name"] == "drawdown" for r in rc["limits"])

        resumed = c.post("/resume?wait=10", json={"reason": "done"}).json()
        assert resumed["applied_at"] is not None
        assert c.get("/status").json()["risk"] == "running"

        metrics = c.get("/metrics").text
        assert re.search(r"^hflite_equity \d", metrics, re.M) and "hflite_runtime_up 1.0" in metrics
        # a recorded feed's clock is its bar-time: its data is not stale (the wall clock would say years)
        stale = re.search(r'^hflite_data_staleness_seconds\{symbol="BTC-USD"\} (\S+)', metrics, re.M)
        assert stale and float(stale.group(1)) < 2 * 86400, stale
        assert re.search(r'^hflite_commands_total\{action="pause",source="api"\} 1\.0', metrics, re.M), (
            metrics
        )

        killed = c.post("/emergency/kill?wait=10", json={"reason": "end of test", "confirm": True}).json()
        assert killed["applied_at"] is not None
        assert proc.wait(60) == 0, "a kill stops the runtime once flat"

    # the runtime is down: `hflite serve` says so instead of pretending
    with _spawn(home, "serve", "--config", str(config), "--port", "0") as (_serve, url):
        c = httpx.Client(base_url=url, headers=AUTH, timeout=10)
        s = c.get("/status").json()
        assert s["runtime"] == "stopped" and s["live"] is False and s["risk"] == "killed"
        r = c.post("/emergency/pause", json={"reason": "later"}).json()
        assert r["live"] is False and "next start" in r["message"]
        assert c.get("/health?ready=true").status_code == 503
        sources = [(x["action"], x["source"]) for x in c.get("/commands").json()]
        assert sources == [("pause", "api"), ("resume", "api"), ("kill", "api"), ("pause", "api")]


def test_a_real_prometheus_scrapes_a_running_paper_session(home: Path, tmp_path: Path) -> None:
    config = write_config(home)
    with _spawn(home, "run", "--config", str(config), "--feed", "recorded", "--speed", SPEED,
                "--api", "--api-port", "0") as (_proc, url):  # fmt: skip
        c = httpx.Client(base_url=url, headers=AUTH, timeout=10)
        _wait(lambda: (r := c.get("/status")).status_code == 200 and r.json()["bar_ts"])
        target = url.removeprefix("http://")
        with start_prometheus(tmp_path, [target], TOKEN) as prom:
            got = prom.wait_for("hflite_equity", timeout=30)
            value = float(got[0]["value"][1])
            now = c.get("/status").json()["equity"]
            assert value == pytest.approx(now, rel=0.05), "Prometheus stored the session's equity"
            up = prom.wait_for("hflite_runtime_up == 1", timeout=30)
            assert up[0]["metric"]["job"] == "hflite"
            prom.wait_for("hflite_bars_total > 0", timeout=30)
