"""Execution quality: every fill of a paper or live run records its decision and arrival prices, fees
and latency in the journal, and `hflite execution report` reads them back as slippage in bps by venue,
symbol, order type and hour, on a paper session and on one against the fake broker."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hflite.cli import app
from hflite.domain.order import FillRecord, Order, OrderType, Side
from hflite.engine.live import trade
from hflite.execution.oms import SqliteJournal
from hflite.execution.quality import build_report, fee_bps, load_fills, slippage_bps, write_html
from hflite.execution.venues.fakebroker import FakeBroker, FakeBrokerServer, parse_script
from tests.conftest import make_settings

RUN = {
    "symbols": ["BTC-USD", "EURUSD"],
    "start": "2023-06-01",
    "end": "2024-06-28",
    "benchmarks": ["BTC-USD"],
}
STRATEGY = {"name": "trend", "fast": 5, "slow": 20, "ma": "ema", "stop_atr": 2.0}
#: The fake broker's own costs: dearer than the run's config (its defaults), so live drifts from the backtest.
BROKER_COSTS = {
    "slippage": {"model": "volatility", "bps": {"crypto": 20.0, "fx": 3.0, "equity": 2.0, "etf": 1.0},
                 "range_frac": 0.05},
    "fees": {"crypto": {"model": "bps", "bps": 25.0}, "fx": {"model": "bps", "bps": 1.0},
             "equity": {"model": "per_share", "per_share": 0.005, "minimum": 1.0},
             "etf": {"model": "per_share", "per_share": 0.005, "minimum": 1.0}},
}  # fmt: skip
KEY_ID, SECRET = "eq-key-id", "eq-secret-value"


def paper_session(store, tmp: Path):
    """A paper run on recorded bars: (settings, journal, outcome)."""
    settings = make_settings(store, run={**RUN, "name": "eqpaper"}, strategy=STRATEGY)
    journal = tmp / "paper.sqlite"
    out = asyncio.run(trade(settings, store, feed="recorded", journal_path=journal))
    return settings, journal, out


def fake_session(store, tmp: Path, monkeypatch: pytest.MonkeyPatch):
    """A run against the fake broker (driven clock; one order's reply held past the client's timeout),
    whose fills carry the broker's own, higher costs: (settings, journal, outcome)."""
    broker = FakeBroker.from_settings(
        make_settings(store, run={**RUN, "name": "eqfake"}, strategy=STRATEGY, execution=BROKER_COSTS), store
    )
    broker.set_script(
        parse_script(
            {
                "timeout_hold_s": 1.0,
                "fault": [{"method": "POST", "path": "/v2/orders", "nth": [3], "action": "timeout"}],
            }
        )
    )
    monkeypatch.setenv("HFLITE_BROKER_KEY_ID", KEY_ID)
    monkeypatch.setenv("HFLITE_BROKER_SECRET", SECRET)
    srv = FakeBrokerServer(broker, key_id=KEY_ID, secret=SECRET).start()
    try:
        venue = {
            "kind": "fakebroker",
            "url": srv.url,
            "rate_per_min": 100_000,
            "drive_clock": True,
            "timeout_s": 0.5,
        }
        settings = make_settings(store, run={**RUN, "name": "eqfake"}, strategy=STRATEGY, venue=venue)
        journal = tmp / "fake.sqlite"
        out = asyncio.run(trade(settings, store, feed="recorded", journal_path=journal))
    finally:
        srv.stop()
    return settings, journal, out


@pytest.fixture(scope="module")
def paper(sample_store, tmp_path_factory):
    return paper_session(sample_store, tmp_path_factory.mktemp("paper"))


@pytest.fixture(scope="module")
def fake(sample_store, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        yield fake_session(sample_store, tmp_path_factory.mktemp("fake"), mp)


# -- the bps math ----------------------------------------------------------------------------------
def test_slippage_is_positive_when_it_costs_us_on_either_side():
    assert slippage_bps(1, 101.0, 100.0) == pytest.approx(100.0)  # bought 1% above
    assert slippage_bps(-1, 99.0, 100.0) == pytest.approx(100.0)  # sold 1% below
    assert slippage_bps(-1, 100.5, 100.0) == pytest.approx(-50.0)  # sold above: price improvement
    assert math.isnan(slippage_bps(1, 101.0, 0.0))  # no benchmark recorded


def test_fees_are_basis_points_of_the_fills_notional():
    assert fee_bps(2.5, 10.0, 100.0) == pytest.approx(25.0)
    assert fee_bps(1.0, -4.0, 250.0) == pytest.approx(10.0)


# -- the journal records them --------------------------------------------------------------------
def test_every_paper_fill_carries_its_decision_arrival_and_times(paper):
    _, journal, out = paper
    fills = load_fills(journal)
    assert len(fills) == len(out.result.fills) == 34
    assert set(fills.order_type) == {"market", "stop"}
    assert fills.decision_price.gt(0).all() and fills.arrival_price.gt(0).all()
    assert (fills.decided_ns <= fills.sent_ns).all() and (fills.sent_ns <= fills.applied_ns).all()
    # checked by hand: the first fill buys EURUSD at the next bar's open plus slippage (1.09491824975)
    # against the decision bar's close 1.084305: (1.09491824975 - 1.084305) / 1.084305 * 1e4 = 97.88 bps
    first = fills.iloc[0]
    assert first.order_id == "eqpaper.trend-EURUSD-20230615T210000-e1"
    assert first.decision_price == pytest.approx(1.084305)
    assert first.slip_decision_bps == pytest.approx(97.8807, abs=1e-3)
    assert first.fee_bps == pytest.approx(0.5)  # the config's FX fee
    assert first.fill_delay_h == 24.0  # decided on one daily bar, filled on the next
    assert (first.hour_utc, first.hour_local, first.timezone) == (21, 17, "America/New_York")
    # a stop is measured from its trigger: how far through it the fill went
    stop = fills[fills.order_type == "stop"].iloc[0]
    assert stop.decision_price == stop.limit_price
    assert stop.slip_decision_bps > 0


def test_a_recorded_feed_has_no_wall_clock_execution_time_so_only_the_bar_delay_measures_it(paper):
    fills = load_fills(paper[1])
    assert fills.send_to_fill_ms.isna().all()
    assert fills.decide_to_send_ms.notna().all() and (fills.decide_to_send_ms >= 0).all()


def test_a_restart_keeps_an_orders_first_decision_and_send_stamps(tmp_path: Path):
    j = SqliteJournal(tmp_path / "j.sqlite")
    order = Order("o1", "SPY", Side.BUY, OrderType.MARKET, 10.0, 1_000, decision_price=100.0, decided_ns=5)
    j.order_created(order)
    order.sent_ns, order.arrival_price = 7, 100.5
    j.order_updated(order)
    j.close()
    again = SqliteJournal(tmp_path / "j.sqlite")  # a restarted process re-made the order later
    remade = Order("o1", "SPY", Side.BUY, OrderType.MARKET, 10.0, 1_000, decision_price=100.0, decided_ns=50)
    remade.sent_ns, remade.arrival_price = 70, 101.0
    again.order_updated(remade)
    again.fill(FillRecord("o1", "SPY", Side.BUY, 10.0, 101.0, 1.0, 2_000, 1, 0.0, False, "market", None,
                          1_000, 100.0, 101.0, 50, 70, 90, 2_000))  # fmt: skip
    (body,) = again.fills()
    again.close()
    assert (body["decided_ns"], body["sent_ns"], body["arrival_price"], body["applied_ns"]) == (
        5,
        7,
        100.5,
        90,
    )


def test_a_journal_written_before_fills_carried_stamps_still_reports(paper, tmp_path: Path):
    old = tmp_path / "old.sqlite"
    old.write_bytes(paper[1].read_bytes())
    paths = ", ".join(f"'$.{k}'" for k in _NEW_KEYS)
    with sqlite3.connect(old) as db:  # what a journal of the previous version holds
        db.execute("DROP TABLE order_stamps")
        db.execute(f"UPDATE events SET body = json_remove(body, {paths}) WHERE kind = 'fill'")  # noqa: S608
        db.execute("UPDATE orders SET body = json_remove(body, '$.decided_ns', '$.sent_ns')")
    SqliteJournal(old, create=False).close()  # opens, and gains the new table
    fills = load_fills(old)
    assert len(fills) == 34
    assert fills.decided_ns.isna().all()  # not recorded then: no latency, no made-up number
    assert fills.decision_price.notna().all()  # the order's body had it


_NEW_KEYS = ("order_type", "limit_price", "decision_ts", "decision_price", "arrival_price", "decided_ns",
             "sent_ns", "applied_ns", "bar_ts")  # fmt: skip


# -- the report ------------------------------------------------------------------------------------
def test_the_report_page_has_tables_and_plots_for_a_paper_session(paper, tmp_path: Path):
    report = build_report([paper[1]])
    page = write_html(report, tmp_path)
    text = page.read_text()
    assert "Execution quality" in text and 'id="fig-slippage-hist"' in text and "by order type" in text
    by_symbol = report.tables["symbol"].set_index("symbol")
    assert by_symbol.loc["BTC-USD", "fee_bps"] == pytest.approx(10.0)  # the config's crypto fee
    assert by_symbol.loc["EURUSD", "fee_bps"] == pytest.approx(0.5)
    assert list(report.tables["venue"].venue) == ["paper"]
    assert (tmp_path / "execution_fills.csv").is_file()


def test_execution_report_on_the_fake_broker_session_shows_the_brokers_costs(fake, tmp_path: Path):
    _, journal, out = fake
    result = CliRunner().invoke(
        app,
        ["execution", "report", "--journal", str(journal), "--out", str(tmp_path)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "execution by order type" in result.output and "fakebroker" in result.output
    report = build_report([journal])
    by_symbol = report.tables["symbol"].set_index("symbol")
    assert by_symbol.loc["BTC-USD", "fee_bps"] == pytest.approx(25.0)  # the broker's fee, not the config's
    assert by_symbol.loc["EURUSD", "fee_bps"] == pytest.approx(1.0)
    assert by_symbol.loc["BTC-USD", "slip_decision_bps"] == pytest.approx(42.30, abs=0.01)  # pinned
    assert len(report.fills) == len(out.result.fills)
    assert (tmp_path / "execution.html").is_file()


def test_execution_report_refuses_a_missing_journal_in_one_line(tmp_path: Path):
    result = CliRunner().invoke(app, ["execution", "report", "--journal", str(tmp_path / "nope.sqlite")])
    assert result.exit_code != 0
    assert "no journal at" in result.output
