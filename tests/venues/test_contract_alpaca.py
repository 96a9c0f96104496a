"""The venue contract for the ``alpaca`` kind: ``AlpacaVenue`` (alpaca-py's TradingClient and
TradingStream, unchanged) against the local fake Alpaca (``fakes/alpaca.py``), plus Alpaca's specifics:
order types and their request bodies, replace making a new order, OCO and bracket, precision, symbol
mapping, the error table, the clock and calendar, and the fake's payloads against the documented ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from hflite.domain.instrument import instrument_for
from hflite.domain.order import Order, OrderStatus, OrderType, Side
from hflite.execution.venues.alpaca import AlpacaVenue, _Failure, stream_url
from hflite.execution.venues.base import (
    EventVenue,
    VenueAuthError,
    VenueEventKind,
    VenueNotFound,
    VenueRateLimited,
    VenueRejected,
    VenueUnavailable,
    VenueUnknownState,
)
from hflite.execution.venues.fakebroker import FakeBroker
from hflite.execution.venues.fakes.alpaca import FakeAlpacaServer
from hflite.execution.venues.registry import VenueSpec, build
from hflite.execution.venues.rest import client_order_id
from tests.conftest import make_settings
from tests.venues.contract import *  # noqa: F403
from tests.venues.contract import T0, Booked, FakeVenueHarness, Op, bar, kinds, make_order, wait_until
from tests.venues.contract import Fault as FaultKind

KEY_ID, SECRET = "PKALPACACONTRACT0042", "sk-alpaca-SECRET-9f3e"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "venues" / "alpaca"
RUN = {"symbols": ["SPY", "BTC-USD"], "start": "2019-01-02", "end": "2019-12-31"}


class AlpacaHarness(FakeVenueHarness):
    kind = "alpaca"
    key_id, secret = KEY_ID, SECRET
    symbol, qty, price = "SPY", 10.0, 200.0

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.server = FakeAlpacaServer(broker, key_id=KEY_ID, secret=SECRET, hold_s=2.0).start()
        self.made: list[EventVenue] = []

    def venue(self, *, key_id: str | None = None, secret: str | None = None, **options: Any) -> EventVenue:
        spec = VenueSpec(
            "alpaca",
            self.server.url,
            KEY_ID if key_id is None else key_id,
            SECRET if secret is None else secret,
            instruments={s: instrument_for(s) for s in RUN["symbols"]},
            timeout_s=options.pop("timeout_s", 1.0),
            rate_per_min=60_000,
        )
        venue = build(spec)
        assert isinstance(venue, AlpacaVenue)
        sleep = options.pop("sleep", None)
        if sleep is not None:
            venue._sleep = sleep
            venue.limiter.sleep = sleep
        self.made.append(venue)
        return venue

    def fill(self, client_id: str, qty: float, price: float, fee: float = 0.0) -> None:
        self.server.front.fill(client_order_id(client_id), qty, price, fee)

    def duplicate_last_fill(self) -> None:
        assert self.broker.repeat_last_fill() > 0

    def foreign_fill(self, qty: float, price: float) -> None:
        body = {
            "symbol": self.symbol, "qty": str(qty), "side": "buy", "type": "limit",
            "limit_price": str(price), "time_in_force": "gtc",
        }  # fmt: skip
        obj = self.broker.submit(body, source="admin")
        self.broker.execute(str(obj["id"]), qty, price)

    def reject_next(self, reason: str) -> None:
        self.broker.reject_next(reason)

    def fault_next(self, op: Op, fault: FaultKind, retry_after_s: float | None = None) -> None:
        self.server.fault_next(op, fault, retry_after_s)

    def drop_stream(self) -> None:
        self.server.drop_streams()

    def down(self) -> None:
        self.server.stop()

    def up(self) -> None:
        front = self.server.front
        self.server = FakeAlpacaServer(
            self.broker, port=self.server.port, key_id=KEY_ID, secret=SECRET, hold_s=2.0
        )
        self.server.front = front  # the same Alpaca-side state (replaced ids, brackets)
        self.server.start()

    def client_ids_at_venue(self) -> list[str]:
        ids = []
        for o in self.broker.list_orders({"status": "all", "limit": "500"}):
            cid = str(o["client_order_id"])
            ids.append(next((k for k in self._ours() if client_order_id(k) == cid), cid))
        return ids

    def _ours(self) -> list[str]:
        return [oid for v in self.made for oid in v.orders]

    def close(self) -> None:
        for v in self.made:
            v.close()  # type: ignore[attr-defined]
        self.server.stop()


def make_harness(store) -> AlpacaHarness:
    """A started harness over the sample store (the fixture's, and ``bench/venues.py``'s)."""
    return AlpacaHarness(FakeBroker.from_settings(make_settings(store, run=RUN), store))


@pytest.fixture
def harness(sample_store) -> Iterator[AlpacaHarness]:
    h = make_harness(sample_store)
    yield h
    h.close()


# -- Alpaca's specifics --------------------------------------------------------------------------------
def _sent(harness: AlpacaHarness, order: Order) -> dict[str, Any]:
    return harness.broker.get_by_client_id(client_order_id(order.id))


@pytest.mark.parametrize(
    ("type_", "extra", "expected"),
    [
        (OrderType.MARKET, {}, {"type": "market", "limit_price": None, "stop_price": None}),
        (OrderType.LIMIT, {"price": 199.123}, {"type": "limit", "limit_price": "199.12", "stop_price": None}),
        (OrderType.STOP, {"price": 240.0}, {"type": "stop", "limit_price": None, "stop_price": "240"}),
        (
            OrderType.STOP_LIMIT,
            {"price": 241.5, "stop_price": 240.0},
            {"type": "stop_limit", "limit_price": "241.5", "stop_price": "240"},
        ),
    ],
)
def test_each_order_type_reaches_alpaca_with_its_prices_and_our_client_id(
    harness, venue, type_, extra, expected
):
    order = make_order(harness, type_, **extra)
    venue.submit(order)
    wait_until(lambda: VenueEventKind.ACCEPTED in kinds(venue, order.symbol), what="ACCEPTED")
    sent = _sent(harness, order)
    assert {k: sent[k] for k in expected} == expected
    assert sent["qty"] == "10" and sent["side"] == "buy" and sent["time_in_force"] == "gtc"


def test_a_long_order_id_travels_as_a_short_client_id_and_maps_back(harness, venue):
    long_id = "run-with-a-long-name.trend-SPY-20240105T210000-e1-and-more-words"
    order = make_order(harness, id=long_id)
    venue.submit(order)
    wait_until(lambda: VenueEventKind.ACCEPTED in kinds(venue, order.symbol), what="ACCEPTED")
    cid = client_order_id(long_id)
    assert len(cid) <= 48 and harness.broker.get_by_client_id(cid)["symbol"] == "SPY"
    harness.fill(long_id, 10.0, 200.0)
    wait_until(lambda: VenueEventKind.FILLED in kinds(venue, order.symbol), what="FILLED")
    assert {ev.order_id for ev in venue.pending(order.symbol)} == {long_id}


def test_replace_makes_a_new_alpaca_order_that_maps_back_to_ours(harness, venue):
    order = make_order(harness)
    venue.submit(order)
    wait_until(lambda: VenueEventKind.ACCEPTED in kinds(venue, order.symbol), what="ACCEPTED")
    first_id = venue._current[order.id]
    venue.replace(order, 195.0)
    wait_until(lambda: VenueEventKind.REPLACED in kinds(venue, order.symbol), what="REPLACED")
    new_id = venue._current[order.id]
    assert new_id != first_id
    old = harness.server.front.get_order(first_id)
    assert old["status"] == "replaced" and old["replaced_by"] == new_id
    new = harness.server.front.get_order(new_id)
    assert new["replaces"] == first_id and new["client_order_id"].startswith(client_order_id(order.id) + "~r")
    assert venue.order_id(new["client_order_id"]) == order.id
    # a second replace works on the replacement, and a fresh adapter finds the live order by our id
    venue.replace(order, 194.0)
    wait_until(
        lambda: len([e for e in venue.pending(order.symbol) if e.kind is VenueEventKind.REPLACED]) >= 2
    )
    other = harness.venue()
    snap = other.snapshot([order.id])  # type: ignore[attr-defined]
    assert snap.orders[order.id].price == pytest.approx(194.0)
    assert snap.orders[order.id].status is OrderStatus.ACCEPTED


def _exit_pair(harness: AlpacaHarness) -> tuple[Order, Order]:
    stop = Order("p1-sl", "SPY", Side.SELL, OrderType.STOP, 10.0, T0, 150.0, oco_group="p1", reduce_only=True)
    take = Order(
        "p1-tp", "SPY", Side.SELL, OrderType.LIMIT, 10.0, T0, 260.0, oco_group="p1", reduce_only=True
    )
    return stop, take


def test_the_engines_exit_pair_is_one_alpaca_oco_order_and_a_fill_cancels_the_other(harness, venue):
    harness.broker.set_position({"symbol": "SPY", "qty": "10", "price": "200"})
    stop, take = _exit_pair(harness)
    venue.submit_oco([stop, take])
    wait_until(lambda: len([e for e in venue.pending("SPY") if e.kind is VenueEventKind.ACCEPTED]) >= 2)
    parent = _sent(harness, take)
    assert parent["order_class"] == "oco" and parent["limit_price"] == "260"
    (leg,) = parent["legs"]
    assert leg["type"] == "stop" and leg["stop_price"] == "150"
    assert venue._by_venue[leg["id"]] == stop.id  # Alpaca named the leg: mapped by its id
    harness.server.front.fill(client_order_id(take.id), 10.0, 260.0)
    wait_until(lambda: VenueEventKind.CANCELLED in kinds(venue, "SPY"), what="the stop leg cancelled")
    venue.match("SPY", bar(1), Booked())
    assert take.status is OrderStatus.FILLED and stop.status is OrderStatus.CANCELLED


def test_a_bracket_holds_its_exits_until_the_entry_fills(harness, venue):
    entry = Order("b1", "SPY", Side.BUY, OrderType.LIMIT, 10.0, T0, 200.0)
    stop = Order("b1-sl", "SPY", Side.SELL, OrderType.STOP, 10.0, T0, 150.0, oco_group="b1", reduce_only=True)
    take = Order(
        "b1-tp", "SPY", Side.SELL, OrderType.LIMIT, 10.0, T0, 260.0, oco_group="b1", reduce_only=True
    )
    venue.submit_bracket(entry, stop, take)
    wait_until(lambda: len([e for e in venue.pending("SPY") if e.kind is VenueEventKind.ACCEPTED]) >= 3)
    shown = harness.server.front.by_client_id("b1")
    assert shown["order_class"] == "bracket" and [leg["status"] for leg in shown["legs"]] == ["held", "held"]
    harness.fill("b1", 10.0, 200.0)
    shown = harness.server.front.by_client_id("b1")
    legs = [harness.server.front.get_order(leg["id"]) for leg in shown["legs"]]
    assert [leg["status"] for leg in legs] == ["new", "new"]
    harness.server.front.fill(legs[1]["client_order_id"], 10.0, 150.0)  # the stop leg fills
    wait_until(
        lambda: any(e.order_id == "b1-sl" and e.kind is VenueEventKind.FILLED for e in venue.pending("SPY"))
    )
    wait_until(
        lambda: any(
            e.order_id == "b1-tp" and e.kind is VenueEventKind.CANCELLED for e in venue.pending("SPY")
        )
    )


def test_a_trailing_stop_is_sent_as_alpacas_and_the_fakes_refusal_is_a_rejection(harness, venue):
    order = Order("t1", "SPY", Side.SELL, OrderType.STOP, 10.0, T0, 150.0)
    venue.submit_trailing_stop(order, trail_percent=2.0)
    wait_until(lambda: VenueEventKind.REJECTED in kinds(venue, "SPY"), what="REJECTED")
    (ev,) = [e for e in venue.pending("SPY") if e.kind is VenueEventKind.REJECTED]
    assert "trailing_stop" in ev.reason


def test_quantities_round_to_whole_shares_unless_fractionable_and_zero_is_refused(harness, venue):
    from hflite.execution.venues.alpaca import Asset

    venue._assets["SPY"] = Asset("SPY", True, False, True)  # as Alpaca says for a non-fractionable stock
    order = make_order(harness, qty=0.4)
    venue.submit(order)
    wait_until(lambda: VenueEventKind.REJECTED in kinds(venue, "SPY"), what="REJECTED")
    (ev,) = [e for e in venue.pending("SPY") if e.kind is VenueEventKind.REJECTED]
    assert "rounds to 0" in ev.reason and "whole shares" in ev.reason
    assert harness.client_ids_at_venue().count(order.id) == 0
    venue._assets["SPY"] = Asset("SPY", True, True, True)
    frac = make_order(harness, qty=0.1234567891234)
    venue.submit(frac)
    wait_until(
        lambda: any(e.order_id == frac.id and e.kind is VenueEventKind.ACCEPTED for e in venue.pending("SPY"))
    )
    assert _sent(harness, frac)["qty"] == "0.123456789"


def test_crypto_symbols_map_to_alpacas_pairs_and_back(harness, venue):
    assert venue.venue_symbol("BTC-USD") == "BTC/USD" and venue.our_symbol("BTC/USD") == "BTC-USD"
    assert venue.asset("BTC-USD").symbol == "BTC/USD"
    order = Order("c1", "BTC-USD", Side.BUY, OrderType.LIMIT, 0.5, T0, 3000.0)
    venue.submit(order)
    wait_until(lambda: VenueEventKind.ACCEPTED in kinds(venue, "BTC-USD"), what="ACCEPTED")
    assert harness.server.front.by_client_id("c1")["symbol"] == "BTC/USD"
    spec = VenueSpec("alpaca", harness.server.url, KEY_ID, SECRET, symbols={"SPY": "SPY.X"})
    mapped = build(spec)
    assert mapped.venue_symbol("SPY") == "SPY.X" and mapped.our_symbol("SPY.X") == "SPY"  # type: ignore[attr-defined]
    mapped.close()


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (_Failure("http", "request is not authorized", 401, code=40110000), VenueAuthError),
        (_Failure("http", "insufficient buying power", 403, code=40310000), VenueRejected),
        (_Failure("http", "order not found", 404, code=40410000), VenueNotFound),
        (_Failure("http", "qty must be > 0", 422, code=40010000), VenueRejected),
        (_Failure("refused", "HTTP 429: too many requests", 429, 3.0), VenueRateLimited),
        (_Failure("lost", "HTTP 503: service unavailable", 503), VenueUnavailable),
        (_Failure("unreachable", "connection refused"), VenueUnavailable),
        (_Failure("malformed", "malformed answer (unexpected payload: JSONDecodeError)"), VenueUnknownState),
    ],
)
def test_every_alpaca_failure_becomes_one_of_our_errors(harness, failure, error):
    v = harness.venue()
    exc = v._error(failure, "reading the account")
    assert type(exc) is error and "\n" not in str(exc)
    v.close()


def test_market_clock_calendar_skew_latency_and_describe(harness, venue):
    clock = venue.market_clock()
    assert clock.next_open > 0 and clock.next_close > 0
    days = venue.calendar(date(2024, 7, 1), date(2024, 7, 8))
    assert [d.day.isoformat() for d in days] == [
        "2024-07-01",
        "2024-07-02",
        "2024-07-03",
        "2024-07-05",
        "2024-07-08",
    ]
    july3 = days[2]
    assert (july3.close - july3.open) / 3.6e12 == pytest.approx(3.5)  # the early close at 13:00
    assert abs(venue.clock_skew_s()) < 2.0 and venue.latency_ms() > 0.0
    info = venue.describe()
    assert info["account"].startswith("…") and len(info["account"]) == 5
    assert info["currency"] == "USD" and info["cash"] > 0 and info["buying_power"] > 0 and info["equity"] > 0


def test_the_stream_url_follows_the_endpoint():
    assert stream_url("https://paper-api.alpaca.markets") == "wss://paper-api.alpaca.markets/stream"
    assert stream_url("http://127.0.0.1:8766/") == "ws://127.0.0.1:8766/stream"


def test_the_driven_clock_delivers_every_update_the_move_caused_and_those_the_stream_missed(harness):
    v = harness.venue()
    v.drive_clock = True
    v.connect()
    try:
        order = Order("d1", "SPY", Side.BUY, OrderType.MARKET, 10.0, T0)
        v.submit(order)
        wait_until(lambda: VenueEventKind.ACCEPTED in kinds(v, "SPY"))
        ts = int(harness.broker.md.timeline[5])
        v.sync(ts)
        assert any(e.kind is VenueEventKind.FILLED for e in v.pending("SPY"))
        assert v.horizon == harness.broker.last_event_id
        fresh = harness.venue()  # started after those updates: reads them from the fake's log
        fresh.drive_clock = True
        fresh.connect()
        fresh.adopt(Order("d1", "SPY", Side.BUY, OrderType.MARKET, 10.0, T0))
        fresh.sync(ts)  # the same bar-time again: nothing moves, the missed updates arrive
        assert {e.event_id for e in fresh.pending("SPY")} == {e.event_id for e in v.pending("SPY")}
    finally:
        v.close()


# -- the fake's payloads against Alpaca's documented ones -------------------------------------------------
def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if value is None:
        return None
    return type(value).__name__


def _same_shape(fake: dict[str, Any], doc: dict[str, Any], extra: set[str], where: str) -> None:
    doc = {k: v for k, v in doc.items() if k != "_doc"}
    missing = set(doc) - set(fake)
    unexpected = set(fake) - set(doc) - extra
    assert not missing and not unexpected, f"{where}: missing {missing}, not documented {unexpected}"
    for k, v in doc.items():
        if v is None or fake[k] is None or k == "legs":
            continue
        assert type(fake[k]) is type(v), f"{where}.{k}: {type(fake[k]).__name__} vs {type(v).__name__}"


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_the_fakes_replies_have_the_documented_shapes(harness, venue):
    order = make_order(harness)
    venue.submit(order)
    wait_until(lambda: VenueEventKind.ACCEPTED in kinds(venue, order.symbol))
    harness.fill(order.id, 4.0, 200.0)
    wait_until(lambda: VenueEventKind.FILLED in kinds(venue, order.symbol))
    front = harness.server.front
    _same_shape(front.by_client_id(order.id), _fixture("order.json"), set(), "order")
    _same_shape(front.account(), _fixture("account.json"), {"cash_by_currency"}, "account")
    _same_shape(front.positions()[0], _fixture("position.json"), set(), "position")
    _same_shape(front.asset("SPY"), _fixture("asset.json"), set(), "asset")
    _same_shape(front.activities({})[0], _fixture("activity_fill.json"), {"commission"}, "activity")
    from hflite.execution.venues.fakes.alpaca import calendar_json, clock_json

    _same_shape(clock_json(T0), _fixture("clock.json"), set(), "clock")
    _same_shape(
        calendar_json({"start": "2024-01-02", "end": "2024-01-02"})[0],
        _fixture("calendar.json")[0],
        set(),
        "calendar",
    )
    seq, update = front.events(0, None)[-1]
    doc = _fixture("trade_update_fill.json")
    _same_shape(update, doc["data"], {"event_id", "commission"}, "trade update")
    _same_shape(update["order"], _fixture("order.json"), set(), "trade update order")
    assert update["event_id"] == str(seq)


def test_the_fakes_error_payloads_are_alpacas(harness):
    import httpx

    url = harness.server.url
    bad = httpx.get(f"{url}/v2/account", headers={"APCA-API-KEY-ID": "x", "APCA-API-SECRET-KEY": "y"})
    assert bad.status_code == 401 and bad.json() == _fixture("error_unauthorized.json")["body"]
    h = harness.server.headers
    missing = httpx.get(f"{url}/v2/orders/{'0' * 8}-0000-0000-0000-{'0' * 12}", headers=h)
    assert missing.status_code == 404 and set(missing.json()) == {"code", "message"}
    body = {
        "symbol": "SPY",
        "qty": "1",
        "side": "buy",
        "type": "market",
        "time_in_force": "gtc",
        "client_order_id": "dup1",
    }
    assert httpx.post(f"{url}/v2/orders", json=body, headers=h).status_code == 200
    dup = httpx.post(f"{url}/v2/orders", json=body, headers=h)
    assert dup.status_code == 422 and dup.json()["code"] == 40010001
