"""The venue contract for the ``oanda`` kind: ``OandaVenue`` against the local OANDA v20 fake.

The fake (``hflite.execution.venues.fakes.oanda``) serves v20 REST and the transaction stream over the
``FakeBroker`` core on the embedded sample's EURUSD and USDJPY daily bars; its ``OandaFront`` hooks play
the venue's part. The adapter-specific tests below pin the order mapping, the error translation,
precision and minimums, symbol mapping and the fixtures' shapes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hflite.domain.order import Order, OrderStatus, OrderType, Side, TimeInForce
from hflite.execution.venues.base import (
    EventVenue,
    VenueAuthError,
    VenueError,
    VenueEventKind,
    VenueNotFound,
    VenueRateLimited,
    VenueRejected,
    VenueUnavailable,
    VenueUnknownState,
)
from hflite.execution.venues.fakebroker import FakeBroker
from hflite.execution.venues.fakes.oanda import DEFAULT_ACCOUNT, OandaFakeServer, OandaFront
from hflite.execution.venues.oanda import OandaVenue, Precision, _Failure, from_spec, oanda_name, stream_host
from hflite.execution.venues.registry import VenueSpec, build
from tests.conftest import make_settings
from tests.venues.contract import *  # noqa: F403
from tests.venues.contract import T0, FakeVenueHarness, Op, bar, make_order, wait_until
from tests.venues.contract import Fault as FaultKind

TOKEN = "oanda-contract-TOKEN-5d41402abc4b2a76"
ACCOUNT = "101-004-7777777-003"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "venues" / "oanda"


class OandaHarness(FakeVenueHarness):
    kind = "oanda"
    key_id, secret = "oanda-unused-key-id", TOKEN
    symbol, qty, price = "EURUSD", 1000.0, 1.1

    def __init__(self, front: OandaFront) -> None:
        self.front = front
        self.server = OandaFakeServer(front, token=TOKEN, heartbeat_s=0.5).start()
        self.made: list[OandaVenue] = []

    def venue(self, *, key_id: str | None = None, secret: str | None = None, **options: Any) -> EventVenue:
        v = OandaVenue(
            "oanda",
            self.server.url,
            TOKEN if secret is None else secret,
            account=ACCOUNT,
            instruments={s: self.front.core.venue.instruments[s] for s in self.front.core.md.traded},
            rate_per_min=60_000,
            **options,
        )
        self.made.append(v)
        return v

    def fill(self, client_id: str, qty: float, price: float, fee: float = 0.0) -> None:
        self.front.fill(client_id, qty, price, fee)

    def duplicate_last_fill(self) -> None:
        assert self.front.duplicate_last_fill()

    def foreign_fill(self, qty: float, price: float) -> None:
        self.front.foreign_fill(self.symbol, qty, price)

    def reject_next(self, reason: str) -> None:
        self.front.reject_next(reason)

    def fault_next(self, op: Op, fault: FaultKind, retry_after_s: float | None = None) -> None:
        self.front.fault_next(op, fault, retry_after_s)

    def drop_stream(self) -> None:
        wait_until(lambda: self.server.drop_streams() > 0, what="an open stream to drop")

    def down(self) -> None:
        self.server.stop()

    def up(self) -> None:
        self.server = OandaFakeServer(self.front, port=self.server.port, token=TOKEN, heartbeat_s=0.5).start()

    def client_ids_at_venue(self) -> list[str]:
        return [str(o["client_order_id"]) for o in self.front.core.state()["orders"]]

    def close(self) -> None:
        for v in self.made:
            v.close()
        self.server.stop()


def _front(sample_store: Any, **run: Any) -> OandaFront:
    settings = make_settings(
        sample_store,
        run={"symbols": ["EURUSD", "USDJPY"], "start": "2019-01-02", "end": "2019-12-31", **run},
    )
    return OandaFront(FakeBroker.from_settings(settings, sample_store), account_id=ACCOUNT)


def make_harness(store: Any) -> OandaHarness:
    """A started harness over the sample store (the fixture's, and ``bench/venues.py``'s)."""
    return OandaHarness(_front(store))


@pytest.fixture
def harness(sample_store: Any) -> Iterator[OandaHarness]:
    h = make_harness(sample_store)
    yield h
    h.close()


@pytest.fixture
def api(harness: OandaHarness) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{harness.server.url}/v3/accounts/{ACCOUNT}", headers=harness.server.headers
    ) as c:
        yield c


# -- adapter specifics -------------------------------------------------------------------------------
def _order(
    symbol: str, side: Side, type_: OrderType, qty: float, price: float | None = None, **kw: Any
) -> Order:
    return Order(
        kw.pop("id", f"o-{symbol}-{type_.value}-{side.value}"), symbol, side, type_, qty, T0, price, **kw
    )


@pytest.fixture
def offline(harness: OandaHarness) -> OandaVenue:
    """An adapter that read the instruments' precision from the fake (no stream needed)."""
    v = harness.venue()
    assert isinstance(v, OandaVenue)
    v._read_instruments()
    return v


def test_each_order_type_maps_to_its_v20_order_request(offline):
    cid = {"tag": "hflite"}
    market = offline._order_request(_order("EURUSD", Side.BUY, OrderType.MARKET, 1000.0))
    assert market == {
        "type": "MARKET",
        "timeInForce": "FOK",
        "instrument": "EUR_USD",
        "units": "1000",
        "positionFill": "DEFAULT",
        "clientExtensions": {"id": "o-EURUSD-market-buy", **cid, "comment": "market"},
    }
    limit = offline._order_request(
        _order("EURUSD", Side.SELL, OrderType.LIMIT, 2500.0, 1.123456, tif=TimeInForce.DAY)
    )
    assert (limit["type"], limit["units"], limit["price"], limit["timeInForce"]) == (
        "LIMIT",
        "-2500",
        "1.12346",
        "GFD",
    )
    stop = offline._order_request(
        _order("USDJPY", Side.SELL, OrderType.STOP, 700.0, 151.2346, reduce_only=True, reason="stop-loss")
    )
    assert (stop["type"], stop["instrument"], stop["units"], stop["price"]) == (
        "STOP",
        "USD_JPY",
        "-700",
        "151.235",
    )
    assert stop["positionFill"] == "REDUCE_ONLY" and stop["clientExtensions"]["comment"] == "stop-loss"
    stop_limit = offline._order_request(
        _order("EURUSD", Side.BUY, OrderType.STOP_LIMIT, 1000.0, 1.0912, stop_price=1.09)
    )
    assert (stop_limit["type"], stop_limit["price"], stop_limit["priceBound"]) == (
        "STOP",
        "1.09000",
        "1.09120",
    )
    ioc = offline._order_request(_order("EURUSD", Side.BUY, OrderType.LIMIT, 1.0, 1.1, tif=TimeInForce.IOC))
    assert ioc["timeInForce"] == "IOC"


def test_a_long_order_id_travels_as_a_short_client_id_and_maps_back(offline):
    long_id = "x" * 80
    req = offline._order_request(_order("EURUSD", Side.BUY, OrderType.LIMIT, 1000.0, 1.1, id=long_id))
    short = req["clientExtensions"]["id"]
    assert len(short) <= 48 and short.startswith("hf-")
    assert offline.order_id(short) == long_id


def test_units_and_prices_follow_the_instruments_precision_and_minimum():
    eur = Precision("EUR_USD", 5, 0, 1.0)
    assert eur.units(1000.0000000001) == "1000" and eur.price(1.234565) == "1.23456"
    with pytest.raises(ValueError, match="precision"):
        eur.units(1000.5)
    with pytest.raises(ValueError, match="minimum trade size"):
        Precision("XAU_USD", 3, 2, 1.0).units(0.5)
    assert Precision("XAU_USD", 3, 2, 0.01).units(0.25) == "0.25"


def test_an_order_below_the_minimum_is_refused_before_it_is_sent(harness, venue):
    before = venue.requests
    order = _order("EURUSD", Side.BUY, OrderType.LIMIT, 0.5, 1.1, id="too-small-1")
    venue.submit(order)
    (ev,) = venue.pending("EURUSD")
    assert ev.kind is VenueEventKind.REJECTED and "precision" in ev.reason
    assert venue.requests == before
    assert "too-small-1" not in harness.client_ids_at_venue()


def test_symbols_map_to_oanda_names_and_the_config_overrides_them(harness):
    eurusd, usdjpy = (harness.front.core.venue.instruments[s] for s in ("EURUSD", "USDJPY"))
    assert oanda_name("EURUSD", eurusd) == "EUR_USD" and oanda_name("USDJPY", usdjpy) == "USD_JPY"
    assert oanda_name("EUR-USD") == oanda_name("EUR/USD") == oanda_name("eurusd") == "EUR_USD"
    assert oanda_name("BTC-USD") == "BTC_USD" and oanda_name("SPX500_USD") == "SPX500_USD"
    spec = VenueSpec(
        "oanda",
        harness.server.url,
        "",
        TOKEN,
        account=ACCOUNT,
        instruments={"EURUSD": eurusd},
        symbols={"EURUSD": "EUR_USD", "GER40": "DE30_EUR"},
    )
    v = build(spec)
    assert isinstance(v, OandaVenue)
    assert v.names == {"EURUSD": "EUR_USD", "GER40": "DE30_EUR"} and v.symbols["DE30_EUR"] == "GER40"
    v.close()


def test_the_stream_host_is_derived_from_the_api_host():
    assert stream_host("https://api-fxpractice.oanda.com") == "https://stream-fxpractice.oanda.com"
    assert stream_host("https://api-fxtrade.oanda.com/") == "https://stream-fxtrade.oanda.com"
    assert stream_host("http://127.0.0.1:8766") == "http://127.0.0.1:8766"
    live = from_spec(VenueSpec("oanda", "", "", TOKEN, live=True))
    practice = from_spec(VenueSpec("oanda", "", "", TOKEN))
    assert (
        live.base_url == "https://api-fxtrade.oanda.com"
        and practice.base_url == "https://api-fxpractice.oanda.com"
    )
    live.close()
    practice.close()


@pytest.mark.parametrize(
    ("failure", "error", "words"),
    [
        (
            _Failure("http", "Insufficient authorization to perform request.", 401),
            VenueAuthError,
            "rejected the token",
        ),
        (_Failure("http", "The provided request was forbidden.", 403), VenueAuthError, "refused access"),
        (
            _Failure(
                "http", "The Order specified does not exist", 404, body={"errorCode": "ORDER_DOESNT_EXIST"}
            ),
            VenueNotFound,
            "not found",
        ),
        (
            _Failure(
                "http",
                "Insufficient margin",
                400,
                body={"orderRejectTransaction": {"rejectReason": "INSUFFICIENT_MARGIN"}},
            ),
            VenueRejected,
            "insufficient margin",
        ),
        (_Failure("refused", "HTTP 429: Too many requests", 429, 2.5), VenueRateLimited, "rate limited"),
        (_Failure("lost", "HTTP 503: Service temporarily unavailable", 503), VenueUnavailable, "failed"),
        (_Failure("lost", "no answer within 1 s"), VenueUnavailable, "no answer"),
        (_Failure("unreachable", "connection refused"), VenueUnavailable, "cannot reach"),
    ],
)
def test_v20_errors_translate_into_our_small_set(offline, failure, error, words):
    err = offline._error(failure, "reading the account")
    assert type(err) is error
    assert words in str(err).lower() and "\n" not in str(err) and TOKEN not in str(err)
    if isinstance(err, VenueRateLimited):
        assert err.retry_after_s == 2.5
    if isinstance(err, VenueRejected):
        assert err.reason == "INSUFFICIENT_MARGIN"


def test_a_malformed_summary_is_an_unknown_state_error(harness, venue):
    harness.fault_next("read", "malformed")
    with pytest.raises(VenueUnknownState, match="malformed"):
        venue.snapshot([])


def test_a_rejected_order_carries_oandas_reject_reason(harness, venue):
    harness.reject_next("insufficient buying power")
    order = make_order(harness)
    venue.submit(order)
    wait_until(
        lambda: VenueEventKind.REJECTED in [e.kind for e in venue.pending(order.symbol)], what="REJECTED"
    )
    ev = next(e for e in venue.pending(order.symbol) if e.kind is VenueEventKind.REJECTED)
    assert ev.reason.startswith("INSUFFICIENT_MARGIN")


def test_a_stop_loss_and_take_profit_pair_rests_on_the_trade_and_one_fill_cancels_the_other(harness, venue):
    entry = make_order(harness)
    venue.submit(entry)
    harness.fill(entry.id, harness.qty, harness.price)
    wait_until(
        lambda: any(e.kind is VenueEventKind.FILLED for e in venue.pending("EURUSD")), what="entry fill"
    )
    venue.match("EURUSD", bar(1), lambda o, f: None)
    stop = _order(
        "EURUSD", Side.SELL, OrderType.STOP, 1000.0, 1.0, id="pair-sl", oco_group="g", parent_id=entry.id
    )
    take = _order(
        "EURUSD", Side.SELL, OrderType.LIMIT, 1000.0, 1.2, id="pair-tp", oco_group="g", parent_id=entry.id
    )
    venue.submit_oco([stop, take])
    wait_until(
        lambda: (
            {e.order_id for e in venue.pending("EURUSD") if e.kind is VenueEventKind.ACCEPTED}
            >= {"pair-sl", "pair-tp"}
        ),
        what="both accepted",
    )
    kinds = {o["type"] for o in harness.front.state()["orders"] if o["state"] == "PENDING"}
    assert kinds == {"STOP_LOSS", "TAKE_PROFIT"}
    harness.fill("pair-tp", 1000.0, 1.2)
    wait_until(
        lambda: any(
            e.order_id == "pair-sl" and e.kind is VenueEventKind.CANCELLED for e in venue.pending("EURUSD")
        ),
        what="the stop cancelled",
    )
    venue.match("EURUSD", bar(2), lambda o, f: None)
    assert take.status is OrderStatus.FILLED and stop.status is OrderStatus.CANCELLED
    assert venue.snapshot([stop.id]).positions == {}


def test_a_trailing_stop_moves_by_replacement_and_keeps_our_client_id(harness, venue):
    stop = make_order(harness, OrderType.STOP, side=Side.SELL, price=1.0)
    venue.submit(stop)
    wait_until(lambda: VenueEventKind.ACCEPTED in [e.kind for e in venue.pending("EURUSD")], what="ACCEPTED")
    venue.match("EURUSD", bar(1), lambda o, f: None)
    for price in (1.01, 1.02):
        venue.replace(stop, price)
        wait_until(
            lambda p=price: any(
                e.kind is VenueEventKind.REPLACED and e.price == p for e in venue.pending("EURUSD")
            ),
            what=f"REPLACED {price}",
        )
        venue.match("EURUSD", bar(2), lambda o, f: None)
    live = [o for o in harness.front.state()["orders"] if o["state"] == "PENDING"]
    assert [(o["clientExtensions"]["id"], o["price"]) for o in live] == [(stop.id, "1.02000")]
    assert live[0]["replacesOrderID"]
    snap = venue.snapshot([stop.id])
    assert (
        snap.orders[stop.id].price == pytest.approx(1.02)
        and snap.orders[stop.id].status is OrderStatus.ACCEPTED
    )


def test_a_resend_of_an_order_oanda_already_filled_places_nothing(harness, venue):
    order = make_order(harness)
    venue.submit(order)
    harness.fill(order.id, harness.qty, harness.price)
    wait_until(
        lambda: any(e.kind is VenueEventKind.FILLED for e in venue.pending(order.symbol)), what="FILLED"
    )
    again = make_order(harness, id=order.id)  # a restarted run sends the same order again
    venue.submit(again)
    assert harness.client_ids_at_venue().count(order.id) == 1


def test_sync_moves_the_driven_clock_and_delivers_up_to_the_horizon(harness):
    v = harness.venue(drive_clock=True)
    try:
        v.connect()
        order = make_order(harness, OrderType.MARKET, id="mkt-sync-1")
        v.submit(order)
        core = harness.front.core
        nxt = int(core.md.timeline[core.md.timeline.searchsorted(core.clock_ns, side="right")])
        v.sync(nxt)
        assert v.horizon is not None and v.cursor >= v.horizon
        fills = [e for e in v.pending(order.symbol) if e.kind is VenueEventKind.FILLED]
        assert len(fills) == 1 and 0 < fills[0].seq <= v.horizon
        booked: list[float] = []
        v.match(order.symbol, bar(1), lambda o, f: booked.append(f.qty))
        assert booked == [harness.qty] and order.status is OrderStatus.FILLED
    finally:
        v.close()


def test_a_restarted_adapter_catches_up_missed_fills_from_sinceid(harness):
    first = harness.venue(drive_clock=True)
    first.connect()
    order = make_order(harness, id="caught-up-1")
    first.submit(order)
    wait_until(lambda: bool(first.pending(order.symbol)), what="an event")
    first.close()
    harness.fill(order.id, harness.qty, harness.price, fee=0.07)
    second = harness.venue(drive_clock=True)
    try:
        second.adopt(make_order(harness, id=order.id))
        second.connect()
        wait_until(
            lambda: any(e.kind is VenueEventKind.FILLED for e in second.pending(order.symbol)), what="FILLED"
        )
        (fill,) = [e for e in second.pending(order.symbol) if e.kind is VenueEventKind.FILLED]
        assert fill.qty == harness.qty and fill.price == harness.price and fill.fee == pytest.approx(0.07)
        assert fill.event_id == str(fill.seq)
    finally:
        second.close()


def test_usd_jpy_fees_come_back_in_yen_and_cash_is_kept_per_currency(harness, venue):
    order = _order("USDJPY", Side.BUY, OrderType.LIMIT, 1000.0, 108.0, id="yen-1")
    venue.submit(order)
    harness.fill(order.id, 1000.0, 108.0, fee=54.0)  # the core's fee is in yen
    wait_until(lambda: any(e.kind is VenueEventKind.FILLED for e in venue.pending("USDJPY")), what="FILLED")
    (fill,) = [e for e in venue.pending("USDJPY") if e.kind is VenueEventKind.FILLED]
    assert fill.fee == pytest.approx(54.0)
    snap = venue.snapshot([order.id])
    core_cash = {c: float(x) for c, x in harness.front.core.state()["cash_by_currency"].items()}
    assert snap.cash["USD"] == pytest.approx(core_cash["USD"], abs=1e-6)
    assert snap.cash["JPY"] == pytest.approx(-108_000.0)
    assert snap.positions["USDJPY"].qty == 1000.0 and snap.positions["USDJPY"].avg_price == 108.0


def test_describe_masks_the_account_and_clock_skew_and_latency_are_measured(venue):
    info = venue.describe()
    assert info["account"] == "…" + ACCOUNT[-4:] and ACCOUNT not in json.dumps(info)
    assert info["currency"] == "USD" and info["cash"] == pytest.approx(100_000.0)
    assert abs(venue.clock_skew_s()) < 2.0
    assert 0.0 < venue.latency_ms() < 1000.0


def test_an_unknown_account_is_an_auth_error_and_an_empty_one_is_found(harness):
    wrong = OandaVenue("oanda", harness.server.url, TOKEN, account="101-001-0000000-001", timeout_s=1.0)
    try:
        with pytest.raises(VenueAuthError, match="refused access"):
            wrong.connect()
    finally:
        wrong.close()
    found = OandaVenue("oanda", harness.server.url, TOKEN, timeout_s=1.0)
    try:
        found.connect()
        assert found.account == ACCOUNT
    finally:
        found.close()


def test_an_instrument_the_account_does_not_offer_fails_connect(harness):
    from hflite.domain.instrument import SAMPLE_INSTRUMENTS

    v = OandaVenue(
        "oanda", harness.server.url, TOKEN, account=ACCOUNT, instruments={"SPY": SAMPLE_INSTRUMENTS["SPY"]}
    )
    try:
        with pytest.raises(VenueNotFound, match="SPY"):
            v.connect()
    finally:
        v.close()


# -- the fake's replies against the documented payloads ----------------------------------------------
def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def _assert_shape(fake: Any, doc: Any, where: str) -> None:
    if isinstance(doc, dict):
        assert isinstance(fake, dict), f"{where}: expected an object"
        assert sorted(fake) == sorted(doc), f"{where}: keys differ: {sorted(set(fake) ^ set(doc))}"
        for k in doc:
            _assert_shape(fake[k], doc[k], f"{where}.{k}")
    elif isinstance(doc, list):
        assert isinstance(fake, list), f"{where}: expected a list"
        by_type = {d.get("type"): d for d in doc if isinstance(d, dict)}
        for n, item in enumerate(fake):
            ref = (
                by_type.get(item.get("type"))
                if isinstance(item, dict) and by_type
                else (doc[0] if doc else None)
            )
            if ref is not None:
                _assert_shape(item, ref, f"{where}[{n}]")
    else:
        assert type(fake) is type(doc), f"{where}: {type(fake).__name__} is not {type(doc).__name__}"


def _doc(name: str) -> Any:
    data = json.loads((FIXTURES / name).read_text())
    assert data["_doc"].startswith("https://developer.oanda.com/rest-live-v20/")
    return data["payload"]


def test_the_fakes_replies_have_the_documented_shapes(harness, api):
    ext = {"id": "my_order_100", "tag": "strategy_9", "comment": "hflite entry"}
    limit = {
        "type": "LIMIT",
        "instrument": "EUR_USD",
        "units": "100",
        "price": "1.10000",
        "timeInForce": "GTC",
        "positionFill": "DEFAULT",
        "clientExtensions": ext,
    }
    replies: dict[str, Any] = {"create_order_201.json": api.post("/orders", json={"order": limit})}
    harness.front.fill("my_order_100", 100, 1.1)
    stop = {
        "type": "STOP",
        "instrument": "EUR_USD",
        "units": "-100",
        "price": "1.05000",
        "timeInForce": "GTC",
        "positionFill": "REDUCE_ONLY",
        "clientExtensions": {"id": "my_stop_7", "tag": "t", "comment": "c"},
    }
    api.post("/orders", json={"order": stop})
    replies["replace_order_201.json"] = api.put(
        "/orders/@my_stop_7", json={"order": {**stop, "price": "1.06000"}}
    )
    trade = api.get("/openTrades").json()["trades"][0]["id"]
    replies["trade_orders_200.json"] = api.put(
        f"/trades/{trade}/orders",
        json={
            "takeProfit": {"price": "1.20000", "timeInForce": "GTC", "clientExtensions": {"id": "my_tp_8"}},
            "stopLoss": {"price": "1.00000", "timeInForce": "GTC", "clientExtensions": {"id": "my_sl_8"}},
        },
    )
    replies["cancel_order_200.json"] = api.put("/orders/@my_tp_8/cancel")
    replies["cancel_order_404.json"] = api.put("/orders/@my_order_404/cancel")
    replies["create_order_400_reject.json"] = api.post(
        "/orders", json={"order": {**limit, "units": "100000000", "clientExtensions": {**ext, "id": "big"}}}
    )
    for name, path in [
        ("get_order_200.json", "/orders/@my_order_100"),
        ("pending_orders_200.json", "/pendingOrders"),
        ("open_trades_200.json", "/openTrades"),
        ("positions_200.json", "/positions"),
        ("account_summary_200.json", "/summary"),
        ("instruments_200.json", "/instruments"),
    ]:
        replies[name] = api.get(path)
    replies["transactions_sinceid_200.json"] = api.get("/transactions/sinceid", params={"id": 0})
    replies["accounts_200.json"] = httpx.get(
        f"{harness.server.url}/v3/accounts", headers=harness.server.headers
    )
    replies["error_401.json"] = httpx.get(
        f"{harness.server.url}/v3/accounts", headers={"Authorization": "Bearer no"}
    )
    status = {
        "create_order_201.json": 201,
        "replace_order_201.json": 201,
        "cancel_order_404.json": 404,
        "create_order_400_reject.json": 400,
        "error_401.json": 401,
    }
    for name, resp in replies.items():
        assert resp.status_code == status.get(name, 200), (name, resp.text)
        _assert_shape(resp.json(), _doc(name), name)
    fill = next(
        t
        for t in replies["transactions_sinceid_200.json"].json()["transactions"]
        if t["type"] == "ORDER_FILL"
    )
    _assert_shape(fill, _doc("order_fill_transaction.json"), "ORDER_FILL")
    with httpx.stream(
        "GET",
        f"{harness.server.url}/v3/accounts/{ACCOUNT}/transactions/stream",
        headers=harness.server.headers,
    ) as resp:
        heartbeat = json.loads(next(resp.iter_lines()))
    _assert_shape(heartbeat, _doc("stream_heartbeat.json"), "HEARTBEAT")
    assert DEFAULT_ACCOUNT != ACCOUNT  # the harness's account id is not the fake's default


def test_no_error_message_of_the_fake_or_adapter_holds_the_token(harness, caplog):
    v = harness.venue(timeout_s=1.0)
    try:
        v.connect()
        v.max_retries = 0
        harness.fault_next("read", "503")
        with pytest.raises(VenueError) as err:
            v.snapshot([])
        assert TOKEN not in str(err.value) and ACCOUNT not in str(err.value)
    finally:
        v.close()
    assert TOKEN not in caplog.text


def test_serve_runs_the_fake_for_a_cli_until_told_to_stop(sample_store, capsys):
    import threading

    from hflite.execution.venues.fakes.oanda import serve

    settings = make_settings(
        sample_store, run={"symbols": ["EURUSD"], "start": "2019-01-02", "end": "2019-03-29"}
    )
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(
        target=serve,
        args=(settings, 0),
        kwargs={"token": TOKEN, "store": sample_store, "ready": ready, "stop": stop},
    )
    t.start()
    try:
        assert ready.wait(30)
    finally:
        stop.set()
        t.join(10)
    assert "OANDA v20 fake listening on http://127.0.0.1:" in capsys.readouterr().out
