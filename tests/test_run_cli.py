"""`hflite run` and the commands that read its journal (status, positions, orders, reconcile), run as a
user runs them: typer's CliRunner on ``hflite.cli.app``, configs written as TOML files from the shipped
``configs/paper.toml`` (BTC-USD + EURUSD daily), the embedded sample as the store, and the local fake
broker served in-process on a free port."""

from __future__ import annotations

import csv
import json
import re
import socket
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from hflite.cli import app
from hflite.config import load_settings
from hflite.execution.oms import SqliteJournal
from hflite.execution.venues.fakebroker import FakeBroker, FakeBrokerServer
from tests.conftest import REPO

runner = CliRunner()
WIDE = {"COLUMNS": "250"}  # no wrapping in rich tables, so the output can be searched
PAPER = REPO / "configs" / "paper.toml"
NAME = "paper-btc-eur"
RECORDED = ("--feed", "recorded", "--speed", "max")
ONE_YEAR = {"start": "2023-12-06"}  # a shorter window (2023-12-06 .. 2024-12-06) for the broker scenarios
# distinctive keys: none of them may show up in any output, log, journal or report
KEY_ID, SECRET = "kid-Qz7wX1mPb", "sec-Vn93hQ7pLmRt2"
WRONG_KEY_ID, WRONG_SECRET = "kid-Wr0ngZ8yK", "sec-Wr0ngJd5sXc4"


# -- helpers --------------------------------------------------------------------------------------
def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a TOML basic string


def _toml(sections: dict[str, dict[str, Any]]) -> str:
    out = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {_value(v)}" for k, v in values.items()]
        out.append("")
    return "\n".join(out)


@pytest.fixture
def home(tmp_path: Path, sample_store, monkeypatch) -> Path:
    """A project folder: var/data is the sample store, so the journal is var/journal/<run>.sqlite here."""
    monkeypatch.chdir(tmp_path)  # no ./.env of the developer's, nothing written in the repo
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "data").symlink_to(sample_store.root, target_is_directory=True)
    return tmp_path


def write_config(home: Path, file: str = "paper", **overrides: dict[str, Any] | None) -> Path:
    """configs/paper.toml with its folders inside ``home``; ``section={...}`` merges, ``section=None``
    drops the section."""
    sections = tomllib.loads(PAPER.read_text())
    assert sections["run"]["name"] == NAME and sections["run"]["symbols"] == ["BTC-USD", "EURUSD"]
    sections["data"]["dir"] = str(home / "var" / "data")
    sections["report"]["dir"] = str(home / "reports")
    sections["runtime"]["log_dir"] = str(home / "var" / "logs")
    for name, values in overrides.items():
        if values is None:
            sections.pop(name, None)
        else:
            sections.setdefault(name, {}).update(values)
    path = home / f"{file}.toml"
    path.write_text(_toml(sections))
    return path


def cli(*args: Any, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env={**WIDE, **(env or {})})


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    assert result.exception is None, result.output
    return result.output


def one_line_error(result, code: int = 2) -> str:
    """A refused command: exit ``code``, no traceback, exactly one non-empty line, ``error: ...``."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def rows(output: str) -> list[list[str]]:
    """The body rows of the rich tables in ``output``, as stripped cells."""
    return [[c.strip() for c in line.strip().strip("│").split("│")] for line in output.splitlines()
            if line.strip().startswith("│")]  # fmt: skip


def fields(output: str) -> dict[str, str]:
    """A two-column table (``hflite status``) as {field: value}."""
    return {r[0]: r[1] for r in rows(output) if len(r) >= 2 and r[0]}


def final_equity(output: str) -> float:
    m = re.search(r"Final equity \(USD\)\s*│\s*([\d,]+\.\d\d)\s*│", output)
    assert m, output
    return float(m.group(1).replace(",", ""))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def open_trades(report: Path) -> dict[str, float]:
    """symbol -> quantity of the report's open positions (trades.csv, is_open)."""
    return {t["symbol"]: float(t["qty"]) for t in read_csv(report / "trades.csv") if t["is_open"] == "True"}


def journal_of(home: Path, name: str = NAME) -> Path:
    return home / "var" / "journal" / f"{name}.sqlite"


def assert_no_secret_anywhere(home: Path, *outputs: str) -> set[Path]:
    """No key in the outputs nor in any file the run wrote (logs, journal, report); returns the files."""
    secrets = (KEY_ID, SECRET, WRONG_KEY_ID, WRONG_SECRET)
    for out in outputs:
        for s in secrets:
            assert s not in out
    scanned = set()
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink() and "data" not in path.relative_to(home).parts[:2]:
            blob = path.read_bytes()
            for s in secrets:
                assert s.encode() not in blob, f"{s} in {path}"
            scanned.add(path.relative_to(home))
    return scanned


@contextmanager
def fake_broker(config: Path, key_id: str = KEY_ID, secret: str = SECRET) -> Iterator[FakeBrokerServer]:
    """The fake broker over the market data of the (paper) config, driven clock, on a free port."""
    broker = FakeBroker.from_settings(load_settings(config))
    with FakeBrokerServer(broker, "127.0.0.1", 0, key_id=key_id, secret=secret) as srv:
        yield srv


def broker_config(
    home: Path, srv_url: str, file: str = "broker", venue: dict[str, Any] | None = None, **overrides: Any
) -> Path:
    return write_config(
        home, file, venue={"kind": "fakebroker", "url": srv_url, **(venue or {})}, **overrides
    )


KEYS = {"HFLITE_BROKER_KEY_ID": KEY_ID, "HFLITE_BROKER_SECRET": SECRET}


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- 1. the paper venue ---------------------------------------------------------------------------
def test_paper_run_reports_resumes_and_its_journal_reads_back(home: Path):
    config = write_config(home)
    report = home / "reports" / NAME

    first = ok(cli("run", "--config", config, *RECORDED))

    assert "Final equity (USD)" in first and "Last bar" in first
    assert "Report:" in first
    assert str(report / "report.html") in first.replace("\n", "")
    for f in ("report.html", "metrics.json", "orders.csv", "fills.csv", "trades.csv", "equity.parquet"):
        assert (report / f).is_file(), f
    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    equity = final_equity(first)
    assert equity == round(metrics["final_equity"], 2)
    assert equity != 100_000  # it traded
    n_orders = len(read_csv(report / "orders.csv"))
    assert n_orders >= 10
    assert "resumed after" not in first

    second = ok(cli("run", "--config", config, *RECORDED))

    status = ok(cli("status", "--config", config))
    info = fields(status)
    m = re.search(r"resumed after (\d{4}-\d\d-\d\d \d\d:\d\d UTC) \((.+?)\)", second.replace("\n", ""))
    assert m, second
    assert m.group(1) == info["last decided"] == "2024-12-07 00:00 UTC"  # the 2024-12-06 bar, closed
    assert m.group(2) == str(journal_of(home))
    assert final_equity(second) == equity
    assert len(read_csv(report / "orders.csv")) == n_orders  # the restart decided nothing new

    # hflite status: journal, last decided, equity, stopped
    assert info["journal"] == str(journal_of(home))
    assert info["runtime"].startswith("stopped at ")
    assert info["venue"] == "paper"
    assert info["equity"] == f"{equity:,.2f}"
    assert int(info["bar-times"]) > 700
    assert info["risk"] == "running"

    # hflite positions: the report's open positions, same quantities
    held = open_trades(report)
    assert held, "the window must end with an open position for this test to mean anything"
    table = {r[0]: r for r in rows(ok(cli("positions", "--config", config)))}
    assert set(table) == set(held)
    for sym, qty in held.items():
        assert float(table[sym][1]) == pytest.approx(qty, abs=5e-7)
    assert int(info["positions"]) == len(held)

    # hflite orders: every order with its status; --open only the working ones
    report_orders = {o["order_id"]: o for o in read_csv(report / "orders.csv")}
    listed = ok(cli("orders", "--config", config, "--last", "0", "--wide"))
    # id, symbol, side, type, qty, filled, avg_price, status, created, reason
    statuses = {r[0]: r[7] for r in rows(listed)}
    assert set(statuses) == set(report_orders)
    assert set(statuses.values()) >= {"filled", "cancelled"}
    for oid, row in {r[0]: r for r in rows(listed)}.items():
        assert row[1] == report_orders[oid]["symbol"] and row[2] == report_orders[oid]["side"]
        assert row[7] == report_orders[oid]["status"]
        assert float(row[5]) == pytest.approx(float(report_orders[oid]["filled_qty"]), abs=5e-7)
    working = {i for i, s in statuses.items() if s in ("accepted", "submitted", "partially_filled", "new")}
    assert len(working) == int(info["open orders"]) >= 1
    opened = {r[0]: r for r in rows(ok(cli("orders", "--config", config, "--open", "--wide")))}
    assert set(opened) == working
    assert all(i.endswith("-sl") and i.startswith(f"{NAME}.trend-") for i in opened)  # the open stop
    assert all(statuses[i] in ("filled", "cancelled") for i in set(statuses) - working)


# -- 2. the same run against the fake broker ------------------------------------------------------
def test_the_fake_broker_run_ends_like_the_paper_run_and_the_broker_agrees(home: Path):
    paper = write_config(home, "paper", run={"name": "on-paper"})
    paper_out = ok(cli("run", "--config", paper, *RECORDED))

    with fake_broker(paper) as srv:
        config = broker_config(home, srv.url)
        out = ok(cli("run", "--config", config, *RECORDED, env=KEYS))
        status = ok(cli("status", "--config", config, env=KEYS))
        positions = ok(cli("positions", "--config", config, env=KEYS))
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=5.0) as api:
            venue_positions = api.get("/v2/positions").json()
            account = api.get("/v2/account").json()
            state = api.get("/admin/state").json()

    report = home / "reports" / NAME
    equity = final_equity(out)
    assert equity == final_equity(paper_out)
    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    paper_metrics = json.loads((home / "reports" / "on-paper" / "metrics.json").read_text())["metrics"]
    assert metrics["final_equity"] == pytest.approx(paper_metrics["final_equity"], rel=1e-12)
    assert open_trades(report) == open_trades(home / "reports" / "on-paper")

    # the broker's book is the run's
    held = open_trades(report)
    assert held
    assert {p["symbol"]: float(p["qty"]) for p in venue_positions} == pytest.approx(held)
    info = fields(status)
    assert info["venue"] == "fakebroker"
    assert info["cash"] == f"USD {float(account['cash']):,.2f}"
    assert info["equity"] == f"{float(account['equity']):,.2f}"
    assert float(account["equity"]) == pytest.approx(metrics["final_equity"], rel=1e-12)
    table = {r[0]: float(r[1]) for r in rows(positions)}
    assert table == pytest.approx({s: round(q, 6) for s, q in held.items()})
    assert state["requests"].get("POST /v2/orders", 0) >= 10  # it really traded through the API
    scanned = assert_no_secret_anywhere(home, out, status, positions)
    assert Path("var/journal") / f"{NAME}.sqlite" in scanned
    assert Path("var/logs") / f"{NAME}.jsonl" in scanned
    assert Path("reports") / NAME / "config.json" in scanned


# -- 3. bad input and faults: one clear line each -------------------------------------------------
def test_keys_the_broker_rejects_stop_the_run_in_one_line_without_showing_them(home: Path):
    with fake_broker(write_config(home, "plain")) as srv:  # it accepts KEY_ID / SECRET only
        config = broker_config(home, srv.url)
        wrong = {"HFLITE_BROKER_KEY_ID": WRONG_KEY_ID, "HFLITE_BROKER_SECRET": WRONG_SECRET}
        result = cli("run", "--config", config, *RECORDED, env=wrong)
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=5.0) as api:
            requests = api.get("/admin/state").json()["requests"]

    line = one_line_error(result)
    assert line == f"error: venue fakebroker at {srv.url} rejected the keys (HTTP 401)"
    assert requests.get("GET /v2/account") == 1  # the first request, refused
    assert "POST /v2/orders" not in requests
    assert_no_secret_anywhere(home, result.output)


def test_a_broker_unreachable_at_start_is_one_line(home: Path):
    port = closed_port()
    config = broker_config(home, f"http://127.0.0.1:{port}", venue={"max_retries": 0})

    result = cli("run", "--config", config, *RECORDED, env=KEYS)

    line = one_line_error(result)
    assert line.startswith(f"error: cannot reach venue fakebroker at http://127.0.0.1:{port}: ")
    assert "gave up after 1 tries" in line
    assert_no_secret_anywhere(home, result.output)


def test_a_live_venue_without_the_live_flag_is_refused_by_the_guard(home: Path):
    config = write_config(
        home,
        phase=None,
        venue={"kind": "fakebroker", "url": f"http://127.0.0.1:{closed_port()}", "live": True},
    )

    result = cli("run", "--config", config, env=KEYS)  # the config's live feed

    assert one_line_error(result) == (
        "error: venue fakebroker is configured for its live (real-money) endpoint: add --live to trade "
        "real money, or set [venue] live = false for its paper endpoint"
    )
    assert not journal_of(home).exists()  # refused before anything started
    assert_no_secret_anywhere(home, result.output)


def test_the_live_flag_on_a_paper_config_is_refused_by_the_guard(home: Path):
    result = cli("run", "--config", write_config(home), *RECORDED, "--live")

    assert one_line_error(result) == (
        "error: --live: the paper venue is simulated and has no live endpoint: drop --live, or configure "
        "a broker venue with [venue] live = true"
    )
    assert not journal_of(home).exists()


def test_a_live_venue_in_the_sandbox_phase_is_a_config_error(home: Path):
    config = write_config(home, venue={"kind": "fakebroker", "live": True})  # paper.toml's phase: sandbox

    result = cli("run", "--config", config, *RECORDED, "--live", env=KEYS)

    assert one_line_error(result) == (
        "error: config error: venue.live: phase sandbox is paper only: set [venue] live = false, or move to "
        "phase small or above to trade real money"
    )
    assert not journal_of(home).exists()


@pytest.mark.parametrize("speed", ["0", "-5", "fast", "nan"])
def test_a_bad_speed_is_one_line(home: Path, speed: str):
    result = cli("run", "--config", write_config(home), "--feed", "recorded", "--speed", speed)

    assert one_line_error(result) == (
        f"error: --speed: expected 'max' or a positive number such as 86400, got '{speed}'"
    )
    assert not journal_of(home).exists()


def test_the_recorded_feed_flag_cannot_trade_a_live_endpoint(home: Path):
    name = "live-run"
    config = write_config(
        home,
        phase=None,
        run={"name": name},
        venue={"kind": "fakebroker", "url": f"http://127.0.0.1:{closed_port()}", "live": True,
               "max_retries": 0},
    )  # fmt: skip

    result = cli("run", "--config", config, *RECORDED, "--live",
                 env={**KEYS, "HFLITE_CONFIRM_LIVE": f"LIVE {name}"})  # fmt: skip

    line = one_line_error(result)
    assert "recorded feed" in line and "live endpoint" in line
    assert "cannot reach venue" not in line  # refused before contacting the venue


# -- 4. a difference at the broker halts trading until a human accepts it --------------------------
def _by_hand(srv: FakeBrokerServer, qty: float, price: float = 99_000.0) -> None:
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=5.0) as api:
        api.post("/admin/position", json={"symbol": "BTC-USD", "qty": qty, "price": price}).raise_for_status()


def _venue_qty(srv: FakeBrokerServer, symbol: str = "BTC-USD") -> float:
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=5.0) as api:
        return {p["symbol"]: float(p["qty"]) for p in api.get("/v2/positions").json()}.get(symbol, 0.0)


def _reconcile_rows(config: Path) -> dict[str, list[str]]:
    out = ok(cli("reconcile", "--config", config, "--wide", env=KEYS))
    return {r[0]: r for r in rows(out) if r[0]}


@contextmanager
def _halted_then_accepted(home: Path) -> Iterator[tuple[FakeBrokerServer, Path]]:
    """A full run against the fake broker, +0.01 BTC-USD by hand at the broker, a halted --once, the
    human's accept and the --once that proceeds; yields the broker and the config for more."""
    paper = write_config(home, "plain", run=ONE_YEAR)
    with fake_broker(paper) as srv:
        config = broker_config(home, srv.url, run=ONE_YEAR)
        ok(cli("run", "--config", config, *RECORDED, env=KEYS))
        _by_hand(srv, 0.01)
        assert cli("run", "--config", config, *RECORDED, "--once", env=KEYS).exit_code == 3
        ok(cli("reconcile", "--config", config, "--accept", env=KEYS))
        ok(cli("run", "--config", config, *RECORDED, "--once", env=KEYS))
        yield srv, config


def test_a_position_changed_at_the_broker_halts_once_until_accepted(home: Path):
    paper = write_config(home, "plain", run=ONE_YEAR)
    with fake_broker(paper) as srv:
        config = broker_config(home, srv.url, run=ONE_YEAR)
        ok(cli("run", "--config", config, *RECORDED, env=KEYS))
        before = _venue_qty(srv)
        held = open_trades(home / "reports" / NAME)
        assert before > 0
        assert held.get("BTC-USD") == pytest.approx(before)
        orders_before = len(ok(cli("orders", "--config", config, "--last", "0", env=KEYS)).splitlines())
        _by_hand(srv, 0.01)

        halted = cli("run", "--config", config, *RECORDED, "--once", env=KEYS)

        assert halted.exit_code == 3, halted.output
        assert isinstance(halted.exception, SystemExit) and "Traceback" not in halted.output
        (line,) = [ln for ln in halted.output.splitlines() if ln.startswith("error: ")]
        assert line.startswith("error: trading halted: reconcile: NOT reconciled:")
        assert "position:BTC-USD" in line
        assert line.endswith("see `hflite reconcile` and accept with `hflite reconcile --accept`")
        (alert,) = [ln for ln in halted.output.splitlines() if "ALERT" in ln]  # the alert hook, once
        assert alert.lstrip("\a").startswith("ALERT trading halted: reconcile: NOT reconciled:")
        status = fields(ok(cli("status", "--config", config, env=KEYS)))
        assert status["trading"].startswith("halted: reconcile:")
        assert "unexplained difference(s)" in status["reconcile"]

        out = ok(cli("reconcile", "--config", config, "--wide", env=KEYS))
        diffs = {r[0]: r for r in rows(out) if r[0]}
        pos = diffs["position:BTC-USD"]
        assert pos[1] == "NO"
        assert pos[2] == f"the run holds {before:g} BTC-USD after the venue's fills"
        assert pos[3].startswith(f"the venue holds {before + 0.01:g} BTC-USD @ ")
        assert "position changed by hand at the venue" in pos[4]
        assert "adopt the venue's position: +0.01 BTC-USD" in pos[4]
        assert "trading is halted until these are accepted: hflite reconcile --accept" in out

        accepted = ok(cli("reconcile", "--config", config, "--accept", env=KEYS))
        assert "accepted position:BTC-USD: position changed by hand at the venue" in accepted
        assert "adopt the venue's position: +0.01 BTC-USD" in accepted

        again = ok(cli("run", "--config", config, *RECORDED, "--once", env=KEYS))

        assert "resumed after 2024-12-07 00:00 UTC" in again
        assert "Report:" in again
        after = _reconcile_rows(config)
        assert after["position:BTC-USD"][1] == "yes"
        assert all(r[1] == "yes" for r in after.values())
        assert "trading is halted" not in ok(cli("reconcile", "--config", config, env=KEYS))
        info = fields(ok(cli("status", "--config", config, env=KEYS)))
        assert "trading" not in info and "reconcile" not in info
        assert info["runtime"].startswith("stopped at ")
        assert _venue_qty(srv) == pytest.approx(before + 0.01)  # the run left the broker's position alone
        assert open_trades(home / "reports" / NAME)["BTC-USD"] == pytest.approx(before + 0.01)
        assert (
            len(ok(cli("orders", "--config", config, "--last", "0", env=KEYS)).splitlines()) == orders_before
        )


def test_after_an_accept_reconcile_no_longer_asks_for_it(home: Path):
    paper = write_config(home, "plain", run=ONE_YEAR)
    with fake_broker(paper) as srv:
        config = broker_config(home, srv.url, run=ONE_YEAR)
        ok(cli("run", "--config", config, *RECORDED, env=KEYS))
        _by_hand(srv, 0.01)
        assert cli("run", "--config", config, *RECORDED, "--once", env=KEYS).exit_code == 3
        ok(cli("reconcile", "--config", config, "--accept", env=KEYS))

        listing = ok(cli("reconcile", "--config", config, "--wide", env=KEYS))
        again = ok(cli("reconcile", "--config", config, "--accept", env=KEYS))

    assert "trading is halted until these are accepted: hflite reconcile --accept" not in listing
    assert "accepted position:BTC-USD" not in again


def test_after_an_accept_positions_show_the_adopted_quantity(home: Path):
    with _halted_then_accepted(home) as (srv, config):
        venue_qty = _venue_qty(srv)
        table = {r[0]: float(r[1]) for r in rows(ok(cli("positions", "--config", config, env=KEYS)))}

    assert open_trades(home / "reports" / NAME)["BTC-USD"] == pytest.approx(venue_qty)  # the run adopted it
    assert table["BTC-USD"] == pytest.approx(round(venue_qty, 6))


def test_a_second_change_by_hand_after_an_accept_halts_again(home: Path):
    with _halted_then_accepted(home) as (srv, config):
        _by_hand(srv, -0.02)  # someone sells at the broker: a new, different difference

        result = cli("run", "--config", config, *RECORDED, "--once", env=KEYS)
        diffs = _reconcile_rows(config)

    assert diffs["position:BTC-USD"][1] == "NO"
    assert result.exit_code == 3, result.output


def test_a_restart_after_an_accept_books_the_adjustment_once(home: Path):
    with _halted_then_accepted(home) as (srv, config):
        ok(cli("run", "--config", config, *RECORDED, "--once", env=KEYS))
        ok(cli("run", "--config", config, *RECORDED, "--once", env=KEYS))

    j = SqliteJournal(journal_of(home))
    try:
        booked = [f for f in j.fills() if str(f["order_id"]).startswith("reconcile-")]
    finally:
        j.close()
    assert len(booked) == 1, booked


# -- 5. a kill queued while stopped is applied by the next run -------------------------------------
def test_a_kill_queued_before_a_restart_is_applied_by_run_and_it_stops_flat(home: Path):
    config = write_config(home)
    first = ok(cli("run", "--config", config, *RECORDED, "--set", "run.end=2024-06-15"))
    assert "Report:" in first
    held = {r[0]: float(r[1]) for r in rows(ok(cli("positions", "--config", config)))}
    assert held, "the first window must end with an open position for this test to mean anything"
    journal = journal_of(home)

    queued = ok(cli("risk", "kill", "--journal", journal, "--reason", "drill", "--yes"))
    assert "queued kill (command 1)" in queued
    assert "not running; the command will apply when it resumes" in queued

    restarted = ok(cli("run", "--config", config, *RECORDED))

    assert "resumed after 2024-06-16 00:00 UTC" in restarted
    info = fields(ok(cli("status", "--config", config)))
    assert info["risk"] == "killed: drill"
    assert info["positions"] == "0" and info["open orders"] == "0"
    assert info["last decided"] < "2024-07-01"  # stopped at the kill, long before the window's end
    assert info["runtime"].startswith("stopped at ")
    flat = ok(cli("positions", "--config", config))
    assert flat.startswith("flat at 2024-06-")
    assert float(re.search(r"'USD': ([\d.]+)", flat).group(1)) == pytest.approx(
        float(info["equity"].replace(",", "")), abs=0.01
    )
    report = home / "reports" / NAME
    assert open_trades(report) == {}
    kills = [o for o in read_csv(report / "orders.csv") if o["reason"].startswith("kill: drill")]
    assert {o["symbol"] for o in kills} == set(held)
    assert all(o["status"] == "filled" for o in kills)
    for sym, qty in held.items():
        assert sum(float(o["filled_qty"]) for o in kills if o["symbol"] == sym) == pytest.approx(
            qty, abs=5e-7
        )
    j = SqliteJournal(journal)
    try:
        (cmd,) = j.commands()
        assert cmd.action == "kill" and cmd.applied_at is not None
        assert j.risk_state()["mode"] == "killed"
    finally:
        j.close()


def test_a_command_queued_on_a_stopped_run_says_to_resume_it_with_run(home: Path):
    config = write_config(home, run={"end": "2023-06-30"})
    ok(cli("run", "--config", config, *RECORDED))

    queued = ok(cli("risk", "pause", "--journal", journal_of(home), "--reason", "weekend"))

    assert "hflite run" in queued and "hflite replay" not in queued


# -- 6. every command explains itself with an example ---------------------------------------------
@pytest.mark.parametrize(
    "command", [["run"], ["status"], ["positions"], ["orders"], ["reconcile"], ["venue", "fake-broker"]]
)
def test_every_trading_command_has_an_example_in_its_help(command: list[str]):
    result = runner.invoke(app, [*command, "--help"], env=WIDE)

    assert result.exit_code == 0, result.output
    assert "Example:" in result.output
    assert f"hflite {' '.join(command)} --config configs/paper.toml" in result.output.replace("\n", " ")
