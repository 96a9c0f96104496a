"""Market timing (``[execution.timing]``): session edges, the spread limit, and market orders sent as
limits priced from the quote with a timeout that re-prices or cancels (``hflite.execution.timing``
through ``engine.hours.MarketGate``)."""

from __future__ import annotations

import pytest

from hflite.config import TimingConfig
from hflite.domain.order import OrderStatus, OrderType, Side
from hflite.engine.hours import MarketGate
from hflite.execution.timing import (
    Quote,
    TimingRules,
    crossing_price,
    limit_price,
    next_window,
    session_bounds,
)
from hflite.execution.venues.base import VenueEvent, VenueEventKind
from tests.test_market_hours import BTC, EURUSD, INSTRUMENTS, SPY, Broker, Clock, Log, iso, order, t

EDGES = TimingRules(avoid_open_min=15, avoid_close_min=15)


# -- the arithmetic ------------------------------------------------------------------------------------
def test_session_bounds_of_an_nyse_day_an_early_close_the_fx_week_and_crypto() -> None:
    assert session_bounds(SPY, t("2024-07-05 15:00")) == (t("2024-07-05 13:30"), t("2024-07-05 20:00"))
    assert session_bounds(SPY, t("2024-07-03 15:00")) == (t("2024-07-03 13:30"), t("2024-07-03 17:00"))
    assert session_bounds(SPY, t("2024-07-06 15:00")) is None  # Saturday: closed
    # the FX week: Sunday 17:00 to Friday 17:00 New York (21:00 UTC in summer)
    assert session_bounds(EURUSD, t("2024-07-03 12:00")) == (t("2024-06-30 21:00"), t("2024-07-05 21:00"))
    assert session_bounds(EURUSD, t("2024-07-05 20:59")) == (t("2024-06-30 21:00"), t("2024-07-05 21:00"))
    assert session_bounds(BTC, t("2024-07-06 15:00")) is None  # never closes


@pytest.mark.parametrize(
    ("now", "expected", "why"),
    [
        ("2024-07-05 13:30", "2024-07-05 13:45", "first 15 min of the session"),
        ("2024-07-05 13:44:59", "2024-07-05 13:45", "first 15 min of the session"),
        ("2024-07-05 13:45", "2024-07-05 13:45", ""),
        ("2024-07-05 19:44:59", "2024-07-05 19:44:59", ""),
        ("2024-07-05 19:45", "2024-07-08 13:45", "last 15 min of the session"),
        ("2024-07-03 16:50", "2024-07-05 13:45", "last 15 min of the session"),  # early close 13:00 NY
        ("2024-07-06 12:00", "2024-07-08 13:45", "market closed"),
    ],
)
def test_an_nyse_order_waits_for_the_window_inside_the_session(now: str, expected: str, why: str) -> None:
    at, reason = next_window(SPY, t(now), EDGES)
    assert iso(at) == iso(t(expected))
    assert reason == why


def test_fx_edges_are_the_weeks_and_crypto_has_none() -> None:
    at, reason = next_window(EURUSD, t("2024-07-05 20:50"), EDGES)
    assert iso(at) == iso(t("2024-07-07 21:15")) and reason == "last 15 min of the session"
    assert next_window(EURUSD, t("2024-07-03 12:00"), EDGES) == (t("2024-07-03 12:00"), "")
    assert next_window(BTC, t("2024-07-06 23:59"), EDGES) == (t("2024-07-06 23:59"), "")


def test_limit_and_crossing_prices_from_a_quote() -> None:
    q = Quote(100.00, 100.10)
    assert q.spread_bps == pytest.approx(9.995, abs=1e-3)
    assert limit_price(Side.BUY, q, TimingRules(limit_at="mid"), SPY) == 100.05
    assert limit_price(Side.BUY, q, TimingRules(limit_at="touch"), SPY) == 100.00
    assert limit_price(Side.SELL, q, TimingRules(limit_at="touch"), SPY) == 100.10
    # 10 bps past the far side, rounded away from the book: 100.10 * 1.001 = 100.2001 -> 100.21
    assert crossing_price(Side.BUY, q, TimingRules(cross_bps=10), SPY) == 100.21
    # 100.00 * 0.999 = 99.90 exactly: stays on its tick
    assert crossing_price(Side.SELL, q, TimingRules(cross_bps=10), SPY) == 99.90
    assert Quote(100.0, 99.0).spread_bps == float("inf")  # crossed book


def test_the_config_section_becomes_the_rules() -> None:
    rules = TimingConfig(
        avoid_open_min=5, max_spread_bps=20, limit_from_spread=True, on_timeout="cancel"
    ).rules()
    assert rules == TimingRules(
        avoid_open_min=5, max_spread_bps=20.0, limit_from_spread=True, on_timeout="cancel"
    )
    assert rules.active and not TimingConfig().rules().active
    with pytest.raises(ValueError, match="avoid_open_min"):
        TimingConfig(avoid_open_min=-1)


# -- the gate ---------------------------------------------------------------------------------------------
def _gate(start: str, rules: TimingRules, quotes: dict[str, Quote] | None = None):
    clock, log = Clock(start), Log()
    venue = Broker(clock)
    book = quotes if quotes is not None else {}
    gate = MarketGate(INSTRUMENTS, now=clock, log=log, rules=rules, quotes=book.get)
    gate.wrap(venue)
    return clock, venue, gate, log, book


def test_an_order_in_the_first_minutes_is_held_then_sent_when_the_window_opens() -> None:
    clock, venue, gate, log, _ = _gate("2024-07-05 13:31", EDGES)
    o = order("o1")
    venue.submit(o)
    assert venue.sent == []
    assert log.named("order.held")[0]["reason"] == "first 15 min of the session"
    assert gate.describe() == ["SPY buy 10: held until 2024-07-05 13:45 UTC (first 15 min of the session)"]
    assert gate.next_wake() == t("2024-07-05 13:45")
    clock.set("2024-07-05 13:45")
    assert gate.due() == [o]
    assert venue.sent == [("submit", ["o1"], t("2024-07-05 13:45"))]


def test_a_wide_spread_holds_the_order_until_it_narrows() -> None:
    rules = TimingRules(max_spread_bps=20.0, spread_recheck_s=5.0)
    clock, venue, gate, log, book = _gate("2024-07-05 15:00", rules, {"SPY": Quote(100.0, 100.5)})
    venue.submit(order("o1"))
    assert venue.sent == []
    assert log.named("order.held")[0]["reason"] == "spread 49.9 bps > 20"
    clock.set("2024-07-05 15:00:05")
    assert gate.due() == []  # still wide: held again, 5 s on
    assert gate.next_wake() == t("2024-07-05 15:00:10")
    book["SPY"] = Quote(100.0, 100.1)
    clock.set("2024-07-05 15:00:10")
    assert [o.id for o in gate.due()] == ["o1"]
    assert venue.sent == [("submit", ["o1"], t("2024-07-05 15:00:10"))]


def test_a_venue_without_quotes_is_never_held_for_its_spread() -> None:
    _, venue, _, _, _ = _gate("2024-07-05 15:00", TimingRules(max_spread_bps=1.0))
    venue.submit(order("o1"))
    assert venue.sent == [("submit", ["o1"], t("2024-07-05 15:00"))]


def test_a_market_order_goes_out_as_a_limit_at_the_mid_and_crosses_at_its_timeout() -> None:
    rules = TimingRules(limit_from_spread=True, limit_timeout_s=30, on_timeout="market", cross_bps=10)
    clock, venue, gate, log, _ = _gate("2024-07-05 15:00", rules, {"SPY": Quote(100.0, 100.1)})
    o = order("o1")
    venue.submit(o)
    assert (o.type, o.price) == (OrderType.LIMIT, 100.05)
    assert venue.sent == [("submit", ["o1"], t("2024-07-05 15:00"))]
    assert gate.next_wake() == t("2024-07-05 15:00:30")
    clock.set("2024-07-05 15:00:29")
    gate.due()
    assert len(venue.sent) == 1  # not yet
    clock.set("2024-07-05 15:00:30")
    gate.due()
    assert venue.sent[-1] == ("replace", ["o1"], t("2024-07-05 15:00:30"))
    assert log.named("order.limit_timeout") == [
        {"order_id": "o1", "symbol": "SPY", "action": "market", "limit": 100.21}
    ]
    gate.due()
    assert len(venue.sent) == 2  # once


def test_a_limit_from_the_spread_is_cancelled_at_its_timeout_when_configured() -> None:
    rules = TimingRules(limit_from_spread=True, limit_at="touch", limit_timeout_s=10, on_timeout="cancel")
    clock, venue, gate, _, _ = _gate("2024-07-05 15:00", rules, {"SPY": Quote(100.0, 100.1)})
    o = order("o1", side=Side.SELL)
    venue.submit(o)
    assert (o.type, o.price) == (OrderType.LIMIT, 100.1)  # a passive sell rests at the ask
    clock.set("2024-07-05 15:00:10")
    gate.due()
    assert venue.sent[-1] == ("cancel", ["o1"], t("2024-07-05 15:00:10"))


def test_a_filled_limit_is_forgotten_and_protective_legs_keep_their_type() -> None:
    rules = TimingRules(limit_from_spread=True, limit_timeout_s=10)
    clock, venue, gate, _, _ = _gate("2024-07-05 15:00", rules, {"SPY": Quote(100.0, 100.1)})
    o = order("o1")
    venue.submit(o)
    venue.deliver(
        [VenueEvent(VenueEventKind.FILLED, "o1", t("2024-07-05 15:00:01"), "x1", qty=10, price=100.05)]
    )
    venue.match("SPY", type("B", (), {"ts": t("2024-07-05 15:00:02"), "i": 1})(), lambda *_: None)
    assert o.status is OrderStatus.FILLED
    stop = order("o1-sl", side=Side.SELL, type=OrderType.STOP, price=95.0, parent_id="o1", reduce_only=True)
    venue.submit(stop)
    assert stop.type is OrderType.STOP and stop.price == 95.0
    clock.set("2024-07-05 15:00:10")
    gate.due()
    assert [s[0] for s in venue.sent] == ["submit", "submit"]  # no replace for the filled one


def test_without_a_quote_a_market_order_stays_a_market_order() -> None:
    _, venue, _, _, _ = _gate("2024-07-05 15:00", TimingRules(limit_from_spread=True))
    o = order("o1")
    venue.submit(o)
    assert o.type is OrderType.MARKET and venue.sent[0][0] == "submit"


def test_the_fake_brokers_quote_reaches_the_gate_through_the_rest_venue(sample_store) -> None:
    from hflite.execution.venues.fakebroker import BehaviourScript, FakeBroker, FakeBrokerServer
    from hflite.execution.venues.rest import RestBrokerVenue
    from tests.conftest import make_settings

    settings = make_settings(
        sample_store, run={"symbols": ["SPY"], "start": "2019-01-02", "end": "2019-12-31"}
    )
    broker = FakeBroker.from_settings(settings, sample_store, script=BehaviourScript(quote_spread_bps=40))
    with FakeBrokerServer(broker) as srv:
        venue = RestBrokerVenue("fakebroker", srv.url, "fake-key", "fake-secret")
        try:
            first = venue.quote("SPY")  # the market before the run: the warm-up's last close
            broker.advance_to(t("2019-01-03 00:00"))  # the 2019-01-02 bar is known (its close passed)
            q = venue.quote("SPY")
            assert venue.quote("QQQ") is None  # not traded here: the broker has no quote
        finally:
            venue.close()
    assert first is not None and first.mid == pytest.approx(224.149338)  # SPY 2018-12-31 close (sample)
    close = 224.382523  # SPY's 2019-01-02 close in the sample (bars/1d/SPY.parquet)
    assert q is not None
    assert (q.bid, q.ask) == pytest.approx((close * (1 - 0.002), close * (1 + 0.002)))
    assert q.spread_bps == pytest.approx(40.0)
    _, venue2, _, log, _ = _gate("2024-07-05 15:00", TimingRules(max_spread_bps=20), {"SPY": q})
    venue2.submit(order("o1"))
    assert venue2.sent == [] and log.named("order.held")[0]["reason"] == "spread 40.0 bps > 20"
