"""What the ``ccxt`` venue does beyond the shared contract, against the fake Binance spot API: order
types, precision and minimums refused before sending, client ids, symbol mapping, the error table, a
restart that re-sends an order, the driven clock, ``describe`` / clock skew / latency, and the fake's
replies checked against the documented payloads in tests/fixtures/venues/binance."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import httpx
import pytest

from hflite.domain.instrument import instrument_for
from hflite.domain.order import Order, OrderStatus, OrderType, Side, TimeInForce
from hflite.execution.venues.base import (
    VenueAuthError,
    VenueEventKind,
    VenueNotFound,
    VenueRateLimited,
    VenueRejected,
    VenueUnavailable,
    VenueUnknownState,
)
from hflite.execution.venues.ccxt_venue import CcxtVenue, _Failure, ccxt_client_id, from_spec
from hflite.execution.venues.fakebroker import BehaviourScript, Fault
from hflite.execution.venues.registry import VenueSpec
from tests.venues.contract import T0, bar, wait_until
from tests.venues.test_contract_ccxt import KEY_ID, SECRET, SYMBOLS, BinanceHarness, new_broker

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "venues" / "binance"


@pytest.fixture
def h(sample_store: Any) -> Iterator[BinanceHarness]:
    broker = new_broker(sample_store)
    broker.advance_to(int(broker.md.timeline[10]))  # a market with a last price (market orders)
    harness = BinanceHarness(broker)
    yield harness
    harness.close()


@pytest.fixture
def v(h: BinanceHarness) -> Iterator[CcxtVenue]:
    venue = h.venue(sleep=lambda _s: None)
    assert isinstance(venue, CcxtVenue)
    venue.connect()
    yield venue
    venue.close()


_n = iter(range(1, 10_000))


def order(type_: OrderType = OrderType.LIMIT, **kw: Any) -> Order:
    n = next(_n)
    return Order(
        kw.pop("id", f"ad{n}"), kw.pop("symbol", "BTC-USD"), kw.pop("side", Side.BUY), type_,
        kw.pop("qty", 0.01), T0, kw.pop("price", 40_000.0 if type_ is not OrderType.MARKET else None), **kw,
    )  # fmt: skip


def events(venue: CcxtVenue, kind: VenueEventKind, oid: str) -> list[Any]:
    return [e for e in venue.pending() if e.kind is kind and e.order_id == oid]


def _wait_kind(venue: CcxtVenue, kind: VenueEventKind, oid: str) -> Any:
    wait_until(lambda: bool(events(venue, kind, oid)), what=f"{kind} for {oid}")
    return events(venue, kind, oid)[0]


# -- order types and precision ---------------------------------------------------------------------------
def test_each_order_type_becomes_its_binance_spot_type(h, v):
    sent = [
        order(OrderType.MARKET),
        order(OrderType.LIMIT, price=39_000.0, tif=TimeInForce.IOC),
        order(OrderType.STOP, price=52_000.0),
        order(OrderType.STOP_LIMIT, price=52_500.0, stop_price=52_000.0),
    ]
    for o in sent:
        v.submit(o)
        _wait_kind(v, VenueEventKind.ACCEPTED, o.id)
    got = {r.client_order_id: r for r in h.front.records()}
    assert [(got[o.id].type, got[o.id].time_in_force) for o in sent] == [
        ("MARKET", "GTC"), ("LIMIT", "IOC"), ("STOP_LOSS", "GTC"), ("STOP_LOSS_LIMIT", "GTC"),
    ]  # fmt: skip
    assert (got[sent[2].id].stop_price, got[sent[2].id].price) == (52_000.0, 0.0)
    assert (got[sent[3].id].stop_price, got[sent[3].id].price) == (52_000.0, 52_500.0)


def test_an_order_below_the_minimum_notional_is_refused_before_sending(h, v):
    o = order(qty=0.0001)  # 0.0001 BTC at 40,000 = 4 USDT < the 5 USDT NOTIONAL filter
    v.submit(o)
    ev = _wait_kind(v, VenueEventKind.REJECTED, o.id)
    assert "minimum notional 5" in ev.reason and "BTC/USDT" in ev.reason
    assert h.front.records() == []


def test_a_market_order_below_the_minimum_notional_is_checked_at_the_last_price(h, v):
    o = order(OrderType.MARKET, qty=0.00001)
    v.submit(o)
    ev = _wait_kind(v, VenueEventKind.REJECTED, o.id)
    assert "minimum notional" in ev.reason
    assert h.front.records() == []


def test_a_quantity_off_the_amount_step_is_refused_before_sending(h, v):
    o = order(qty=0.012345)
    v.submit(o)
    ev = _wait_kind(v, VenueEventKind.REJECTED, o.id)
    assert "amount step" in ev.reason
    assert h.front.records() == []


def test_limit_prices_travel_on_the_tick(h, v):
    o = order(price=40_000.004)
    v.submit(o)
    _wait_kind(v, VenueEventKind.ACCEPTED, o.id)
    assert [r.price for r in h.front.records()] == [40_000.0]


def test_day_orders_are_refused_binance_has_none(h, v):
    o = order(tif=TimeInForce.DAY)
    v.submit(o)
    ev = _wait_kind(v, VenueEventKind.REJECTED, o.id)
    assert "day" in ev.reason and h.front.records() == []


def test_a_sell_beyond_the_free_balance_is_rejected_with_binances_words(h, v):
    o = order(side=Side.SELL, qty=1.0)
    v.submit(o)
    ev = _wait_kind(v, VenueEventKind.REJECTED, o.id)
    assert "insufficient balance" in ev.reason.lower()


# -- client ids, symbols, restarts ----------------------------------------------------------------------
def test_a_long_order_id_travels_as_a_short_deterministic_client_id_and_maps_back(h, v):
    long_id = "paper-btc-eur.trend-BTC-USD-20240105T210000-e123456"
    o = order(id=long_id)
    v.submit(o)
    _wait_kind(v, VenueEventKind.ACCEPTED, long_id)
    (rec,) = h.front.records()
    assert rec.client_order_id == ccxt_client_id(long_id, 36) and len(rec.client_order_id) == 36
    assert rec.client_order_id.startswith("hf-")
    h.fill(long_id, 0.01, 40_000.0, 0.5)
    fill = _wait_kind(v, VenueEventKind.FILLED, long_id)
    assert (fill.qty, fill.price, fill.fee) == (0.01, 40_000.0, 0.5)
    assert fill.event_id == f"BTCUSDT-{h.front.state()['trades'][0]['id']}"


def test_a_restart_that_resends_a_filled_order_adopts_it_instead_of_trading_twice(h):
    first = h.venue(sleep=lambda _s: None)
    first.connect()  # type: ignore[attr-defined]
    o = order()
    first.submit(o)
    _wait_kind(first, VenueEventKind.ACCEPTED, o.id)  # type: ignore[arg-type]
    first.close()  # type: ignore[attr-defined]
    h.fill(o.id, 0.01, 40_000.0)  # closed: Binance would take its client id again

    second = h.venue(sleep=lambda _s: None)
    second.connect()  # type: ignore[attr-defined]
    again = order(id=o.id)
    second.submit(again)
    _wait_kind(second, VenueEventKind.ACCEPTED, o.id)  # type: ignore[arg-type]
    try:
        assert h.client_ids_at_venue().count(o.id) == 1
        snap = second.snapshot([o.id])  # type: ignore[attr-defined]
    finally:
        second.close()  # type: ignore[attr-defined]
    # the fill made while no process ran is reconciliation's to book (the poller starts after it)
    assert snap.orders[o.id].status is OrderStatus.FILLED
    assert [(f.order_id, f.qty) for f in snap.fills] == [(o.id, 0.01)]


def test_symbols_are_mapped_by_the_config_and_an_unmapped_one_fails_connect_naming_it(h):
    unmapped = CcxtVenue(
        "ccxt:binance", "binance", KEY_ID, SECRET, endpoint=h.server.url,
        instruments={"BTC-USD": instrument_for("BTC-USD")},
    )  # fmt: skip
    try:
        with pytest.raises(VenueNotFound) as err:
            unmapped.connect()
    finally:
        unmapped.close()
    assert "BTC/USD for BTC-USD" in str(err.value) and "[venue] symbols" in str(err.value)


def test_the_exchange_market_id_is_accepted_as_our_symbol(h):
    by_id = CcxtVenue(
        "ccxt:binance", "binance", KEY_ID, SECRET, endpoint=h.server.url, symbols={"BTCUSDT": "BTCUSDT"}
    )
    try:
        by_id.symbol_map = {}
        by_id.instruments = {"BTCUSDT": None}  # type: ignore[dict-item]
        by_id.connect()
        assert by_id._unified == {"BTCUSDT": "BTC/USDT"}
    finally:
        by_id.close()


def test_replace_uses_cancel_replace_and_keeps_our_client_id(h, v):
    o = order()
    v.submit(o)
    _wait_kind(v, VenueEventKind.ACCEPTED, o.id)
    v.match("BTC-USD", bar(1), lambda *_: None)
    v.replace(o, 39_500.0)
    ev = _wait_kind(v, VenueEventKind.REPLACED, o.id)
    assert ev.price == 39_500.0
    state = h.front.state()["orders"]
    assert [(x["clientOrderId"], x["status"], x["via"]) for x in state] == [
        (o.id, "CANCELED", "order"), (o.id, "NEW", "cancelReplace"),
    ]  # fmt: skip


def test_a_resize_places_the_new_remainder(h, v):
    o = order(qty=0.02)
    v.submit(o)
    _wait_kind(v, VenueEventKind.ACCEPTED, o.id)
    v.match("BTC-USD", bar(1), lambda *_: None)
    v.resize(o, 0.01)
    ev = _wait_kind(v, VenueEventKind.REPLACED, o.id)
    assert ev.qty == 0.01
    assert [r.qty for r in h.front.records()] == [0.02, 0.01]


# -- errors ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "status", "domain"),
    [
        (ccxt.AuthenticationError("x"), 401, VenueAuthError),
        (ccxt.PermissionDenied("x"), 401, VenueAuthError),
        (ccxt.InsufficientFunds("x"), 400, VenueRejected),
        (ccxt.InvalidOrder("x"), 400, VenueRejected),
        (ccxt.BadSymbol("x"), 400, VenueRejected),
        (ccxt.OrderNotFound("x"), 400, VenueNotFound),
        (ccxt.RateLimitExceeded("x"), 429, VenueRateLimited),
        (ccxt.DDoSProtection("x"), 418, VenueRateLimited),
        (ccxt.ExchangeNotAvailable("x"), 503, VenueUnavailable),
        (ccxt.OnMaintenance("x"), 503, VenueUnavailable),
        (ccxt.OperationFailed("x"), 502, VenueUnavailable),
        (ccxt.RequestTimeout("x"), 0, VenueUnavailable),
        (ccxt.NetworkError("x"), 0, VenueUnavailable),
        (ccxt.BadResponse("x"), 200, VenueUnknownState),
        (ccxt.InvalidNonce("x"), 400, VenueRejected),
    ],
)
def test_ccxt_errors_translate_into_our_small_set(h, exc, status, domain):
    venue = h.venue()
    try:
        venue._status = status  # type: ignore[attr-defined]
        failure = venue._classify(exc)  # type: ignore[attr-defined]
        error = venue._error(failure, "doing something")  # type: ignore[attr-defined]
    finally:
        venue.close()  # type: ignore[attr-defined]
    assert type(error) is domain
    assert "\n" not in str(error) and KEY_ID not in str(error)


def test_an_order_whose_answer_times_out_is_unknown_not_retried(h, v):
    h.fault_next("submit", "timeout")
    o = order()
    v.submit(o)
    ev = _wait_kind(v, VenueEventKind.UNKNOWN, o.id)
    assert "no answer within 1 s" in ev.reason
    assert h.client_ids_at_venue().count(o.id) == 1  # it was taken, once


def test_a_429_on_a_read_waits_retry_after_then_answers(h):
    waits: list[float] = []
    venue = h.venue(sleep=waits.append)
    try:
        venue.connect()  # type: ignore[attr-defined]
        h.broker.set_script(
            BehaviourScript(
                fault=[Fault(method="GET", path="/api/v3/account", nth=[1], respond=429, retry_after_s=2.5)]
            )
        )
        snap = venue.snapshot([])  # type: ignore[attr-defined]
    finally:
        venue.close()  # type: ignore[attr-defined]
    assert 2.5 in waits and snap.cash == {"USD": 100_000.0}


def test_a_429_that_does_not_stop_is_rate_limited_with_the_venues_wait(h):
    venue = h.venue(sleep=lambda _s: None, max_retries=2)
    try:
        venue.connect()  # type: ignore[attr-defined]
        h.broker.set_script(
            BehaviourScript(
                fault=[Fault(method="GET", path="/api/v3/account", every=1, respond=429, retry_after_s=7)]
            )
        )
        with pytest.raises(VenueRateLimited) as err:
            venue.snapshot([])  # type: ignore[attr-defined]
    finally:
        venue.close()  # type: ignore[attr-defined]
    assert err.value.retry_after_s == 7.0 and "gave up after 3 tries" in str(err.value)


# -- the driven clock, describe, clock ----------------------------------------------------------------------
def test_sync_moves_the_fake_market_and_fills_carry_the_moves_event_seq(sample_store):
    broker = new_broker(sample_store)
    h = BinanceHarness(broker)
    venue = h.venue(drive_clock=True)
    try:
        assert isinstance(venue, CcxtVenue)
        ts = [int(t) for t in broker.md.timeline[:12]]
        venue.sync(ts[10])
        o = order(price=90_000.0)  # a buy limit far above the market: the next bar fills it
        venue.connect()
        assert venue._poller is None  # driven: events arrive with sync, not from a thread
        venue.submit(o)
        venue.sync(ts[11])
        (fill,) = events(venue, VenueEventKind.FILLED, o.id)
        assert venue.horizon is not None and 0 < fill.seq <= venue.horizon
        assert fill.ts == ts[11] and fill.qty == pytest.approx(0.01)
    finally:
        h.close()


def test_describe_masks_the_account_and_reports_cash_and_equity(h, v):
    o = order(price=40_000.0)
    v.submit(o)
    _wait_kind(v, VenueEventKind.ACCEPTED, o.id)
    h.fill(o.id, 0.01, 40_000.0)
    info = v.describe()
    assert info["account"] == "…" + str(h.front.uid)[-4:]
    assert info["currency"] == "USDT" and info["cash"] == pytest.approx(99_600.0)
    assert info["buying_power"] == pytest.approx(99_600.0)
    assert info["equity"] > info["cash"]
    assert abs(v.clock_skew_s()) < 1.0 and v.latency_ms() > 0


def test_from_spec_builds_the_sandbox_client_at_the_configured_endpoint(h):
    spec = VenueSpec("ccxt", h.server.url, KEY_ID, SECRET, exchange="binance", symbols=SYMBOLS, timeout_s=2.0)
    venue = from_spec(spec)
    try:
        assert venue.exchange.isSandboxModeEnabled
        assert venue.exchange.urls["api"]["private"] == h.server.url + "/api/v3"
        assert venue.name == "ccxt:binance" and "fake" not in repr(spec)
    finally:
        venue.close()


def test_an_unknown_exchange_id_is_not_found():
    with pytest.raises(VenueNotFound, match="no exchange 'nosuchexchange'"):
        CcxtVenue("ccxt:x", "nosuchexchange", KEY_ID, SECRET)


def test_failures_never_hold_a_key(h):
    venue = h.venue(key_id=KEY_ID, secret=SECRET)
    try:
        failure = _Failure("rejected", f"bad {KEY_ID} and {SECRET}")
        text = str(venue._error(failure, "x"))  # type: ignore[attr-defined]
    finally:
        venue.close()  # type: ignore[attr-defined]
    assert KEY_ID not in text and SECRET not in text


# -- the fake's payloads against the documented ones -----------------------------------------------------
def _signed(url: str, method: str, path: str, params: dict[str, Any], key: str = KEY_ID) -> httpx.Response:
    query = "&".join(f"{k}={v}" for k, v in {**params, "timestamp": time.time_ns() // 1_000_000}.items())
    sig = hmac.new(SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
    headers = {"X-MBX-APIKEY": key}
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return httpx.post(f"{url}{path}", content=f"{query}&signature={sig}", headers=headers)
    return httpx.request(method, f"{url}{path}?{query}&signature={sig}", headers=headers)


def _shape(doc: Any, got: Any, where: str = "$") -> list[str]:
    """Where ``got`` differs from ``doc`` in keys or JSON types (lists: their first items)."""
    if isinstance(doc, dict):
        if not isinstance(got, dict):
            return [f"{where}: {type(got).__name__} instead of an object"]
        out = [f"{where}: keys {sorted(set(doc) ^ set(got))} differ"] if set(doc) != set(got) else []
        for k in set(doc) & set(got):
            if doc[k] is not None and got[k] is not None:
                out += _shape(doc[k], got[k], f"{where}.{k}")
        return out
    if isinstance(doc, list):
        if not isinstance(got, list):
            return [f"{where}: {type(got).__name__} instead of a list"]
        return _shape(doc[0], got[0], f"{where}[0]") if doc and got else []
    same = isinstance(got, bool) == isinstance(doc, bool) and (
        isinstance(got, type(doc)) or (isinstance(doc, int | float) and isinstance(got, int | float))
    )
    return [] if same else [f"{where}: {type(got).__name__} instead of {type(doc).__name__}"]


_UNKNOWN = {"symbol": "BTCUSDT", "origClientOrderId": "no-such-order"}


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_the_fakes_replies_have_the_documented_shapes(h):
    url = h.server.url
    problems: list[str] = []
    problems += _shape(_fixture("time.json"), httpx.get(f"{url}/api/v3/time").json(), "time")
    info = httpx.get(f"{url}/api/v3/exchangeInfo").json()
    problems += _shape(_fixture("exchange_info_symbol.json"), info["symbols"][0], "exchangeInfo.symbol")
    account = _signed(url, "GET", "/api/v3/account", {}).json()
    problems += _shape(_fixture("account.json"), account, "account")
    new = _signed(url, "POST", "/api/v3/order", {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
        "price": "40000", "newClientOrderId": "shape-1", "newOrderRespType": "FULL",
    }).json()  # fmt: skip
    problems += _shape({**_fixture("new_order_full.json"), "fills": []}, new, "new order")
    h.fill("shape-1", 0.004, 40_000.0)
    (rec,) = h.front.records()
    new = h.front._order_answer(rec, "FULL")  # the same answer once the order has a fill
    problems += _shape(_fixture("new_order_full.json"), new, "new order")
    query = _signed(url, "GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "shape-1"}).json()
    problems += _shape(_fixture("query_order.json"), query, "query order")
    replaced = _signed(url, "POST", "/api/v3/order/cancelReplace", {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.006",
        "price": "39000", "cancelReplaceMode": "STOP_ON_FAILURE", "cancelOrigClientOrderId": "shape-1",
        "newClientOrderId": "shape-1",
    }).json()  # fmt: skip
    problems += _shape(_fixture("cancel_replace.json"), replaced, "cancelReplace")
    cancel = _signed(
        url, "DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "shape-1"}
    ).json()
    problems += _shape(_fixture("cancel_order.json"), cancel, "cancel")
    trades = _signed(url, "GET", "/api/v3/myTrades", {"symbol": "BTCUSDT"}).json()
    problems += _shape(_fixture("my_trades.json"), trades, "myTrades")
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    ("case", "request_"),
    [
        ("invalid_key", ("GET", "/api/v3/account", {}, "WRONGKEY")),
        ("no_such_order", ("GET", "/api/v3/order", _UNKNOWN, KEY_ID)),
        ("cancel_rejected", ("DELETE", "/api/v3/order", _UNKNOWN, KEY_ID)),
        ("filter_failure", ("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                            "timeInForce": "GTC", "quantity": "0.000015", "price": "40000"}, KEY_ID)),
        ("insufficient_balance", ("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "SELL",
                                  "type": "MARKET", "quantity": "1"}, KEY_ID)),
    ],
)  # fmt: skip
def test_the_fakes_errors_are_binances(h, case, request_):
    method, path, params, key = request_
    doc = _fixture("errors.json")[case]
    resp = _signed(h.server.url, method, path, params, key)
    assert (resp.status_code, resp.json()) == (doc["status"], doc["body"])


def test_a_bad_signature_and_a_stale_timestamp_are_refused(h):
    url = h.server.url
    bad = httpx.get(
        f"{url}/api/v3/account?timestamp={time.time_ns() // 1_000_000}&signature=00",
        headers={"X-MBX-APIKEY": KEY_ID},
    )
    assert (bad.status_code, bad.json()) == (400, _fixture("errors.json")["bad_signature"]["body"])
    stale = "timestamp=1000"
    sig = hmac.new(SECRET.encode(), stale.encode(), hashlib.sha256).hexdigest()
    old = httpx.get(f"{url}/api/v3/account?{stale}&signature={sig}", headers={"X-MBX-APIKEY": KEY_ID})
    assert (old.status_code, old.json()) == (400, _fixture("errors.json")["recv_window"]["body"])


@pytest.mark.parametrize(("cancelled_at", "booked"), [(10, "now"), (11, "next bar-time")])
def test_a_cancel_another_run_made_is_booked_where_that_runs_answer_would_be(
    sample_store, cancelled_at, booked
):
    """A run killed inside a bar-time cancelled an order; the restarted run finds it cancelled when it
    syncs. Cancelled before the move to this bar-time: booked now (the uninterrupted run's answer was);
    cancelled after it (inside this bar-time): booked one bar-time on, as that run's answer was."""
    broker = new_broker(sample_store)
    h = BinanceHarness(broker)
    ts = [int(t) for t in broker.md.timeline[:13]]
    try:
        killed = h.venue(drive_clock=True)
        assert isinstance(killed, CcxtVenue)
        killed.connect()
        killed.sync(ts[10])
        o = order(price=1_000.0)  # far below the market: never fills
        killed.submit(o)
        killed.sync(ts[cancelled_at])
        killed.cancel(o, ts[cancelled_at])
        killed.close()

        restarted = h.venue(drive_clock=True)
        assert isinstance(restarted, CcxtVenue)
        restarted.connect()
        held = order(id=o.id, price=1_000.0)
        held.status = OrderStatus.ACCEPTED  # as the journal left it
        restarted.adopt(held)
        restarted.sync(ts[11])
        (ev,) = events(restarted, VenueEventKind.CANCELLED, o.id)
        assert restarted.horizon is not None
        assert (ev.seq <= restarted.horizon) == (booked == "now")
    finally:
        h.close()


def test_an_ioc_order_the_move_expires_arrives_as_expired_in_the_same_sync(sample_store):
    broker = new_broker(sample_store)
    h = BinanceHarness(broker)
    ts = [int(t) for t in broker.md.timeline[:13]]
    try:
        venue = h.venue(drive_clock=True)
        assert isinstance(venue, CcxtVenue)
        venue.connect()
        venue.sync(ts[10])
        o = order(price=1_000.0, tif=TimeInForce.IOC)  # nothing trades there: the bar expires it
        venue.submit(o)
        venue.match("BTC-USD", bar(1), lambda *_: None)
        venue.sync(ts[11])
        (ev,) = events(venue, VenueEventKind.EXPIRED, o.id)
        assert ev.seq == 0 and [r["status"] for r in h.front.state()["orders"]] == ["EXPIRED"]
        venue.match("BTC-USD", bar(2), lambda *_: None)
        assert o.status is OrderStatus.EXPIRED
    finally:
        h.close()
