"""``hflite venue check``: connects to the configured broker and prints what it sees, or fails with the
reason (exit 1) and never a key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hflite.cli import app
from hflite.execution.venues.check import check_venue
from hflite.execution.venues.fakebroker import FakeBroker, FakeBrokerServer
from tests.conftest import make_settings

KEY_ID, SECRET = "PKCHECKKEY9931", "sk-check-SECRET-5511"
RUN = {"symbols": ["SPY"], "start": "2019-01-02", "end": "2019-12-31"}


@pytest.fixture
def server(sample_store):
    broker = FakeBroker.from_settings(make_settings(sample_store, run=RUN), sample_store)
    broker.set_position({"symbol": "SPY", "qty": "12", "price": "250.5"})
    broker.submit(
        {"symbol": "SPY", "qty": "3", "side": "buy", "type": "limit", "limit_price": "240",
         "time_in_force": "gtc", "client_order_id": "run1.trend-SPY-20190102T000000-e1"}
    )  # fmt: skip
    with FakeBrokerServer(broker, key_id=KEY_ID, secret=SECRET) as srv:
        yield srv


def _config(tmp_path: Path, store_root: Path, url: str) -> Path:
    path = tmp_path / "check.toml"
    path.write_text(
        f"""
[run]
symbols = ["SPY"]
start = "2019-01-02"
end = "2019-12-31"
[strategy]
name = "trend"
[venue]
kind = "fakebroker"
url = "{url}"
timeout_s = 1.0
max_retries = 0
[data]
dir = "{store_root}"
[llm]
mode = "off"
"""
    )
    return path


def test_check_prints_cash_positions_orders_skew_and_latency(server, sample_store, tmp_path, monkeypatch):
    monkeypatch.setenv("HFLITE_BROKER_KEY_ID", KEY_ID)
    monkeypatch.setenv("HFLITE_BROKER_SECRET", SECRET)
    config = _config(tmp_path, sample_store.root, server.url)

    result = CliRunner().invoke(app, ["venue", "check", "--config", str(config)], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    out = result.output
    assert "OK" in out and "cash USD" in out and "96,994.00" in out
    assert "positions" in out and "SPY" in out and "250.5000" in out
    assert "run1.trend-SPY-20190102T000000-e1" in out and "accepted" in out
    assert "clock skew" in out and "ms per request" in out and "ms (account, positions, orders, fills)" in out
    assert KEY_ID not in out and SECRET not in out


def test_check_values_are_what_the_venue_holds(server, sample_store, tmp_path, monkeypatch):
    monkeypatch.setenv("HFLITE_BROKER_KEY_ID", KEY_ID)
    monkeypatch.setenv("HFLITE_BROKER_SECRET", SECRET)
    settings = make_settings(
        sample_store, run=RUN, venue={"kind": "fakebroker", "url": server.url, "max_retries": 0}
    )

    result = check_venue(settings)

    assert result.ok, result.error
    assert result.cash == {"USD": 100_000.0 - 12 * 250.5}  # set_position pays for the shares
    assert [(p.symbol, p.qty, p.avg_price) for p in result.positions] == [("SPY", 12.0, 250.5)]
    assert [(o.order_id, o.qty, o.price) for o in result.open_orders] == [
        ("run1.trend-SPY-20190102T000000-e1", 3.0, 240.0)
    ]
    assert result.latency_ms is not None and result.latency_ms > 0
    assert result.clock_skew_s is not None and abs(result.clock_skew_s) < 5  # its /v2/clock is the wall clock


def test_wrong_keys_fail_with_the_reason_and_no_key(server, sample_store, tmp_path, monkeypatch):
    monkeypatch.setenv("HFLITE_BROKER_KEY_ID", "PKWRONGKEY0001")
    monkeypatch.setenv("HFLITE_BROKER_SECRET", "sk-wrong-SECRET-0001")
    config = _config(tmp_path, sample_store.root, server.url)

    result = CliRunner().invoke(app, ["venue", "check", "--config", str(config)], env={"COLUMNS": "200"})

    assert result.exit_code == 1
    assert "FAIL" in result.output and "401" in result.output or "auth" in result.output.lower()
    assert "PKWRONGKEY0001" not in result.output and "sk-wrong-SECRET-0001" not in result.output


def test_an_unreachable_venue_fails_with_connection_refused(sample_store, tmp_path, monkeypatch):
    monkeypatch.setenv("HFLITE_BROKER_KEY_ID", KEY_ID)
    monkeypatch.setenv("HFLITE_BROKER_SECRET", SECRET)
    config = _config(tmp_path, sample_store.root, "http://127.0.0.1:9")

    result = CliRunner().invoke(app, ["venue", "check", "--config", str(config)], env={"COLUMNS": "200"})

    assert result.exit_code == 1
    assert "FAIL" in result.output and "refused" in result.output.lower()


def test_the_paper_venue_has_nothing_to_check(sample_store):
    result = check_venue(make_settings(sample_store, run=RUN))
    assert not result.ok and "simulated in-process" in result.error
