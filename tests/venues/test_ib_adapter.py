"""IB specifics of the ``ib`` venue (beyond the shared contract): order types as IB orders, OCA pairs
and brackets at the fake TWS, IB error codes at the border, precision from contract details, symbol
mapping, connect refusals, restart recovery by orderRef, commissions, the driven clock and
``venue check``'s methods, and quotes (snapshot reqMktData)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import pytest
from ib_async import Contract

from hflite.domain.instrument import SAMPLE_INSTRUMENTS
from hflite.domain.order import Order, OrderEvent, OrderStatus, OrderType, Side, TimeInForce
from hflite.execution.venues.base import VenueAuthError, VenueEventKind, VenueUnavailable
from hflite.execution.venues.fakebroker import FakeBroker
from hflite.execution.venues.fakes.tws import TwsServer
from hflite.execution.venues.ib import IbVenue, ib_contract, parse_endpoint
from tests.conftest import REPO, make_settings
from tests.venues.contract import T0, Booked, bar, wait_until

ACCOUNT = "DU2468024"
SYMBOLS = ["SPY", "EURUSD", "BTC-USD"]
INSTRUMENTS = {s: SAMPLE_INSTRUMENTS[s] for s in SYMBOLS}


@pytest.fixture
def tws(sample_store) -> Iterator[TwsServer]:
    settings = make_settings(
        sample_store, run={"symbols": SYMBOLS, "start": "2019-01-02", "end": "2019-12-31"}
    )
    with TwsServer(FakeBroker.from_settings(settings, sample_store), accounts=(ACCOUNT,), hold_s=1.0) as srv:
        yield srv


def _venue(tws: TwsServer, **kw) -> IbVenue:
    options = {"client_id": 3, "account": ACCOUNT, "instruments": INSTRUMENTS, "timeout_s": 1.0} | kw
    return IbVenue("ib", tws.url, **options)


@pytest.fixture
def venue(tws: TwsServer) -> Iterator[IbVenue]:
    v = _venue(tws)
    v.connect()
    yield v
    v.close()


_n = iter(range(1, 1_000_000))


def _order(symbol: str = "SPY", type_: OrderType = OrderType.LIMIT, **kw) -> Order:
    n = next(_n)
    return Order(
        kw.pop("id", f"ib{n}.trend-{symbol}-e{n}"),
        symbol,
        kw.pop("side", Side.BUY),
        type_,
        kw.pop("qty", 10.0),
        T0,
        kw.pop("price", 200.0 if type_ is not OrderType.MARKET else None),
        **kw,
    )


def _events(venue: IbVenue, order: Order, kind: VenueEventKind):
    return [ev for ev in venue.pending(order.symbol) if ev.order_id == order.id and ev.kind is kind]


def _wait_for(venue: IbVenue, order: Order, kind: VenueEventKind, timeout_s: float = 5.0):
    wait_until(lambda: bool(_events(venue, order, kind)), timeout_s, f"{kind.value} for {order.id}")
    return _events(venue, order, kind)


# -- order types -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("type_", "kw", "ib_type", "lmt", "aux"),
    [
        (OrderType.MARKET, {}, "MKT", None, None),
        (OrderType.LIMIT, {"price": 200.5}, "LMT", 200.5, None),
        (OrderType.STOP, {"price": 190.25}, "STP", None, 190.25),
        (OrderType.STOP_LIMIT, {"price": 189.5, "stop_price": 190.0}, "STP LMT", 189.5, 190.0),
    ],
)
def test_each_order_type_becomes_its_ib_order(tws, type_, kw, ib_type, lmt, aux):
    v = _venue(tws)
    try:
        ib = v._ib_order(_order(type_=type_, side=Side.SELL, tif=TimeInForce.GTC, **kw))
    finally:
        v.close()
    assert (ib.orderType, ib.action, ib.totalQuantity, ib.tif, ib.account) == (
        ib_type,
        "SELL",
        10.0,
        "GTC",
        ACCOUNT,
    )
    assert (ib.lmtPrice if lmt is not None else None) == lmt
    assert (ib.auxPrice if aux is not None else None) == aux
    assert ib.orderRef.startswith("ib") and ib.orderRef.endswith(f"-e{ib.orderRef.rsplit('-e', 1)[1]}")


def test_each_order_type_is_taken_by_the_fake_tws_with_its_prices(tws, venue):
    orders = [
        _order(type_=OrderType.LIMIT, price=150.0),
        _order(type_=OrderType.STOP, price=400.0),
        _order(type_=OrderType.STOP_LIMIT, price=401.0, stop_price=400.0),
        _order("EURUSD", OrderType.LIMIT, qty=20_000.0, price=1.05),
    ]
    for order in orders:
        venue.submit(order)
        _wait_for(venue, order, VenueEventKind.ACCEPTED)
    snap = venue.snapshot([o.id for o in orders])
    got = {oid: (vo.type, vo.price, vo.stop_price, vo.symbol) for oid, vo in snap.orders.items()}
    assert got[orders[0].id] == (OrderType.LIMIT, 150.0, None, "SPY")
    assert got[orders[1].id] == (OrderType.STOP, 400.0, None, "SPY")
    assert got[orders[2].id] == (OrderType.STOP_LIMIT, 401.0, 400.0, "SPY")
    assert got[orders[3].id] == (OrderType.LIMIT, 1.05, None, "EURUSD")


def test_an_exit_pair_is_one_oca_group_and_a_fill_of_one_cancels_the_other(tws, venue):
    tws.broker.set_position({"symbol": "SPY", "qty": 10, "price": 250})
    stop = _order(type_=OrderType.STOP, side=Side.SELL, price=150.0, oco_group="g1", reduce_only=True)
    take = _order(type_=OrderType.LIMIT, side=Side.SELL, price=400.0, oco_group="g1", reduce_only=True)
    venue.submit_oco([stop, take])
    _wait_for(venue, stop, VenueEventKind.ACCEPTED)
    _wait_for(venue, take, VenueEventKind.ACCEPTED)
    groups = {r.ref: (r.oca_group, r.oca_type) for r in tws.records.values()}
    assert groups[stop.id][0] == groups[take.id][0] != "" and groups[stop.id][1] == 1
    tws.execute(take.id, 10.0, 400.0)
    _wait_for(venue, take, VenueEventKind.FILLED)
    (cancel,) = _wait_for(venue, stop, VenueEventKind.CANCELLED)
    assert cancel.reason


def test_a_bracket_s_legs_wait_for_the_entry_then_work_as_an_oca_pair(tws, venue):
    entry = _order(type_=OrderType.LIMIT, price=200.0)
    take = _order(type_=OrderType.LIMIT, side=Side.SELL, price=260.0, parent_id=entry.id)
    stop = _order(type_=OrderType.STOP, side=Side.SELL, price=180.0, parent_id=entry.id)
    venue.submit_bracket(entry, take, stop)
    for o in (entry, take, stop):
        _wait_for(venue, o, VenueEventKind.ACCEPTED)
    assert sorted(r.ref for r in tws.records.values()) == [entry.id]  # the legs are not working yet
    tws.execute(entry.id, 10.0, 200.0)
    wait_until(lambda: len(tws.records) == 3, what="the legs at work")
    tws.execute(take.id, 10.0, 260.0)
    _wait_for(venue, take, VenueEventKind.FILLED)
    _wait_for(venue, stop, VenueEventKind.CANCELLED)


def test_replace_moves_a_stop_s_trigger_and_resize_its_quantity(tws, venue):
    order = _order(type_=OrderType.STOP, price=400.0)
    venue.submit(order)
    _wait_for(venue, order, VenueEventKind.ACCEPTED)
    venue.replace(order, 410.0)
    (moved,) = _wait_for(venue, order, VenueEventKind.REPLACED)
    assert moved.price == 410.0
    venue.match(order.symbol, bar(1), Booked())
    venue.resize(order, 4.0)
    wait_until(
        lambda: any(ev.qty == 4.0 for ev in _events(venue, order, VenueEventKind.REPLACED)), what="resize"
    )
    snap = venue.snapshot([order.id])
    assert (snap.orders[order.id].price, snap.orders[order.id].qty) == (410.0, 4.0)


# -- IB error codes at the border ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "text", "kind", "reason_part"),
    [
        (
            201,
            "Order rejected - reason:Insufficient funds",
            VenueEventKind.REJECTED,
            "insufficient funds (ib 201)",
        ),
        (
            200,
            "No security definition has been found for the request",
            VenueEventKind.REJECTED,
            "no security",
        ),
        (
            110,
            "The price does not conform to the minimum price variation",
            VenueEventKind.REJECTED,
            "(ib 110)",
        ),
        (202, "Order Canceled - reason:", VenueEventKind.CANCELLED, "order canceled"),
    ],
)
def test_order_error_codes_become_our_events_with_the_venues_words(venue, code, text, kind, reason_part):
    order = _order()
    venue.orders[order.id] = order
    venue._learn(77, venue._ref(order.id), venue.client_id)
    venue._call(_on_loop(lambda: venue._on_error(77, code, text, None)))
    (ev,) = _events(venue, order, kind)
    assert reason_part in ev.reason.lower()


@pytest.mark.parametrize(
    ("code", "reconnected"), [(1101, True), (1102, True), (1100, False), (2104, False), (2158, False)]
)
def test_connectivity_codes_ask_for_reconciliation_and_notices_change_nothing(venue, code, reconnected):
    venue.reconnected = False
    venue._call(_on_loop(lambda: venue._on_error(-1, code, "connectivity", None)))
    assert venue.reconnected is reconnected
    assert venue.pending() == []


def test_a_cancel_of_an_unknown_order_10147_leaves_the_order_as_it_was(venue):
    order = _order()
    venue.orders[order.id] = order
    venue._learn(78, venue._ref(order.id), venue.client_id)
    venue._call(
        _on_loop(
            lambda: venue._on_error(78, 10147, "OrderId 78 that needs to be cancelled is not found.", None)
        )
    )
    assert venue.pending(order.symbol) == []


def test_a_client_id_already_connected_fails_connect_with_an_auth_error_naming_326(tws, venue):
    second = _venue(tws)  # the same client id as ``venue``
    try:
        with pytest.raises(VenueAuthError, match="326"):
            second.connect()
    finally:
        second.close()


def test_nothing_listening_is_unavailable_with_a_hint(tws):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    v = IbVenue("ib", f"tcp://127.0.0.1:{port}", account=ACCOUNT, timeout_s=0.5)
    try:
        with pytest.raises(VenueUnavailable, match="connection refused"):
            v.connect()
    finally:
        v.close()


# -- precision, minimums, symbols -------------------------------------------------------------------
def test_prices_are_rounded_to_the_contracts_min_tick_from_tws(venue):
    assert venue._ticks == {"BTC-USD": 0.01, "EURUSD": 1e-05, "SPY": 0.01}
    order = _order("EURUSD", OrderType.LIMIT, qty=25_000.0, price=1.0812349)
    assert venue._ib_order(order).lmtPrice == pytest.approx(1.08123)
    assert venue._ib_order(_order(price=200.126)).lmtPrice == pytest.approx(200.13)


def test_a_quantity_off_the_lot_is_refused_before_sending_with_the_reason(tws, venue):
    order = _order("BTC-USD", OrderType.MARKET, qty=0.000013)
    venue.submit(order)
    (ev,) = _events(venue, order, VenueEventKind.REJECTED)
    assert "not a multiple of btc-usd's lot 1e-05" in ev.reason.lower()
    assert tws.refs_at_venue() == []


def test_our_symbols_map_to_ib_contracts_and_back(venue):
    assert _key(ib_contract("SPY", INSTRUMENTS["SPY"])) == ("STK", "SPY", "SMART", "USD")
    assert _key(ib_contract("EURUSD", INSTRUMENTS["EURUSD"])) == ("CASH", "EUR", "IDEALPRO", "USD")
    assert _key(ib_contract("BTC-USD", INSTRUMENTS["BTC-USD"])) == ("CRYPTO", "BTC", "PAXOS", "USD")
    assert venue.symbol_of(Contract(secType="CASH", symbol="EUR", currency="USD")) == "EURUSD"
    assert venue.symbol_of(Contract(secType="STK", symbol="IBM", currency="USD")) == "IBM"


def test_a_symbol_override_replaces_the_default_contract():
    assert _key(ib_contract("SPY", INSTRUMENTS["SPY"], "STK:SPY:ARCA:USD")) == ("STK", "SPY", "ARCA", "USD")
    assert _key(ib_contract("EUR-USD", None, "EUR.USD")) == ("CASH", "EUR", "IDEALPRO", "USD")
    with pytest.raises(ValueError, match="SECTYPE:SYMBOL:EXCHANGE:CURRENCY"):
        ib_contract("X", None, "STK:X:SMART")


def test_endpoints_are_host_and_port():
    assert parse_endpoint("tcp://127.0.0.1:7497") == ("127.0.0.1", 7497)
    assert parse_endpoint("localhost:4002") == ("localhost", 4002)
    with pytest.raises(ValueError, match="host and port"):
        parse_endpoint("tcp://127.0.0.1")


# -- fills, commissions, restarts ------------------------------------------------------------------
def test_a_fill_is_delivered_once_with_its_commission_as_the_fee(tws, venue):
    order = _order()
    venue.submit(order)
    _wait_for(venue, order, VenueEventKind.ACCEPTED)
    tws.execute(order.id, 10.0, 199.5, fee=1.25)
    (fill,) = _wait_for(venue, order, VenueEventKind.FILLED)
    assert (fill.qty, fill.price, fill.fee, fill.symbol) == (10.0, 199.5, 1.25, "SPY")
    assert fill.event_id.endswith(".01.01")  # IB's execId


def test_a_fill_whose_commission_never_comes_is_booked_with_fee_0_after_the_wait(venue):
    from ib_async import Execution
    from ib_async.objects import Fill as IbFill

    venue.commission_wait_s = 0.1
    order = _order()
    venue.orders[order.id] = order
    venue._learn(91, venue._ref(order.id), venue.client_id)
    ex = Execution(execId="0000abcd.00000001.01.01", orderId=91, shares=10.0, price=201.0, orderRef=order.id)
    fill = IbFill(Contract(secType="STK", symbol="SPY", currency="USD"), ex, None, None)  # type: ignore[arg-type]
    venue._call(_on_loop(lambda: venue._on_exec(None, fill)))  # type: ignore[arg-type]
    assert _events(venue, order, VenueEventKind.FILLED) == []
    (ev,) = _wait_for(venue, order, VenueEventKind.FILLED, 2.0)
    assert (ev.fee, ev.qty, ev.price) == (0.0, 10.0, 201.0)


def test_a_restarted_process_resending_an_order_the_venue_has_does_not_place_it_twice(tws):
    first = _venue(tws)
    first.connect()
    order = _order()
    first.submit(order)
    _wait_for(first, order, VenueEventKind.ACCEPTED)
    first.close()
    second = _venue(tws)
    try:
        second.connect()
        again = _order(id=order.id)
        second.submit(again)
        _wait_for(second, again, VenueEventKind.ACCEPTED)
        assert tws.refs_at_venue().count(order.id) == 1
        second.cancel(again, T0)  # and it is still ours to cancel
        _wait_for(second, again, VenueEventKind.CANCELLED)
    finally:
        second.close()


# -- the driven clock and venue check --------------------------------------------------------------
def test_sync_moves_the_market_and_returns_once_its_fills_are_delivered(tws):
    v = _venue(tws, drive_clock=True)
    v.connect()
    try:
        order = _order(type_=OrderType.MARKET)
        v.submit(order)
        _wait_for(v, order, VenueEventKind.ACCEPTED)
        first_bar = int(tws.broker.md.timeline[0])
        v.sync(first_bar)
        assert v.horizon is not None and v.horizon >= 2
        (fill,) = _events(v, order, VenueEventKind.FILLED)  # there already: no waiting
        assert fill.seq <= v.horizon and fill.ts == first_bar
        booked = Booked()
        v.match(order.symbol, bar(1), booked)
        assert order.status is OrderStatus.FILLED and len(booked.fills) == 1
    finally:
        v.close()


def test_describe_masks_the_account_and_the_clock_methods_answer(venue):
    info = venue.describe()
    assert info["account"] == "…8024"
    assert ACCOUNT not in str(info)
    assert info["currency"] == "USD" and info["cash"] == pytest.approx(100_000.0)
    assert info["equity"] == pytest.approx(100_000.0) and info["buying_power"] == pytest.approx(100_000.0)
    assert abs(venue.clock_skew_s()) <= 1.5
    assert 0.0 < venue.latency_ms() < 1000.0


def test_the_runtime_builds_it_from_a_spec(tws):
    from hflite.execution.venues.registry import VenueSpec, build

    v = build(VenueSpec("ib", tws.url, "", "", account=ACCOUNT, client_id=9, instruments=INSTRUMENTS))
    try:
        assert isinstance(v, IbVenue) and (v.port, v.client_id, v.account) == (tws.port, 9, ACCOUNT)
        v.connect()
        assert v.snapshot([]).cash == {"USD": pytest.approx(100_000.0)}
    finally:
        v.close()


def _key(c: Contract) -> tuple[str, str, str, str]:
    return (c.secType, c.symbol, c.exchange, c.currency)


def _on_loop(fn):
    """A coroutine factory running ``fn`` on the adapter's loop (where ib_async's events fire)."""

    async def run():
        fn()

    return run


def test_venue_check_reports_the_masked_account_and_fails_for_another_account(tws, sample_store, monkeypatch):
    from hflite.config import load_settings
    from hflite.execution.venues.check import check_venue

    monkeypatch.setenv("HFLITE_BROKER_ACCOUNT", ACCOUNT)
    monkeypatch.delenv("HFLITE_BROKER_KEY_ID", raising=False)  # TWS has no keys: none are asked for
    monkeypatch.delenv("HFLITE_BROKER_SECRET", raising=False)
    overrides = {"venue": {"url": tws.url}, "data": {"dir": str(sample_store.root)}}
    ok = check_venue(load_settings(REPO / "configs" / "ib_paper.toml", overrides))
    assert ok.ok, ok.error
    assert ok.account["account"] == "…8024" and ok.cash == {"USD": pytest.approx(100_000.0)}
    assert ok.latency_ms is not None and ok.clock_skew_s is not None and abs(ok.clock_skew_s) < 1.5
    monkeypatch.setenv("HFLITE_BROKER_ACCOUNT", "DU0000001")
    bad = check_venue(load_settings(REPO / "configs" / "ib_paper.toml", overrides))
    assert not bad.ok and "not managed" in bad.error and "DU0000001" not in bad.error


def test_a_cancel_re_sent_after_a_restart_for_an_order_tws_already_cancelled_confirms_it(tws):
    first = _venue(tws)
    first.connect()
    order = _order()
    first.submit(order)
    _wait_for(first, order, VenueEventKind.ACCEPTED)
    first.cancel(order, T0)
    _wait_for(first, order, VenueEventKind.CANCELLED)
    first.close()  # killed before the journal saw the cancellation
    second = _venue(tws)
    try:
        second.connect()
        again = _order(id=order.id)
        again.apply(OrderEvent.SUBMIT)
        again.apply(OrderEvent.ACCEPT)  # as the journal left it
        second.adopt(again)
        second.cancel(again, T0)
        (ev,) = _wait_for(second, again, VenueEventKind.CANCELLED)
        assert ev.reason == "cancelled at the venue"
        assert tws.requests.get("cancelOrder", 0) == 1  # nothing sent again
    finally:
        second.close()


# -- quotes (snapshot reqMktData) ------------------------------------------------------------------
def _last_quote(tws: TwsServer, symbol: str) -> dict:
    return tws.broker.latest_quote(symbol)["quote"]


def test_a_quote_is_the_snapshot_s_bid_and_ask_two_bps_around_the_last_close(tws, venue):
    bars = tws.broker.md.bars["EURUSD"]
    k = int(np.searchsorted(bars.ts[: bars.n], tws.broker.clock_ns, side="right")) + 2
    tws.broker.advance_to(int(bars.ts[k]))  # the fake's market is now at bar k's close
    close = float(bars.close[k])
    q = venue.quote("EURUSD")
    last = _last_quote(tws, "EURUSD")
    assert q is not None
    assert q.bid == pytest.approx(close * (1 - 1e-4), rel=1e-12)  # quote_spread_bps = 2: 1 bp a side
    assert q.ask == pytest.approx(close * (1 + 1e-4), rel=1e-12)
    assert (q.bid, q.ask) == (pytest.approx(last["bp"]), pytest.approx(last["ap"]))
    assert q.ts > 0
    assert tws.requests["reqMktData"] == 1 and tws.requests["reqMarketDataType"] == 1


def test_a_contract_tws_does_not_know_has_no_quote_error_200_logged(tws, caplog):
    v = _venue(tws, symbols={"ZZZZ": "ZZZZ"})
    v.connect()
    try:
        with caplog.at_level("WARNING", logger="hflite.execution.venues.ib"):
            assert v.quote("ZZZZ") is None
        assert v.quote("NOT-TRADED") is None  # no contract at all: nothing is asked
        assert v.quote("SPY") is not None  # the connection is still good
    finally:
        v.close()
    assert "no quote for ZZZZ" in caplog.text and "IB 200" in caplog.text
    assert tws.requests["reqMktData"] == 2


@pytest.mark.parametrize(
    ("permission", "code"),
    [("none", "IB 354"), ("delayed", "IB 10167")],
)
def test_without_live_market_data_the_quote_is_missing_not_a_failure(tws, venue, caplog, permission, code):
    assert venue.quote("SPY") is not None
    tws.market_data = permission
    with caplog.at_level("WARNING", logger="hflite.execution.venues.ib"):
        assert venue.quote("SPY") is None  # a fresh ticker: the earlier snapshot's bid and ask are not reused
    assert "no live market data" in caplog.text and code in caplog.text
    tws.market_data = "live"
    assert venue.quote("SPY") is not None


def test_a_snapshot_that_never_ends_is_cancelled_and_has_no_quote(tws, venue, caplog):
    tws.fault_next("read", "timeout")
    with caplog.at_level("WARNING", logger="hflite.execution.venues.ib"):
        assert venue.quote("SPY") is None
    assert "within 1 s" in caplog.text
    wait_until(lambda: tws.requests.get("cancelMktData", 0) == 1, what="cancelMktData")
    assert venue.quote("SPY") is not None


def test_a_snapshot_sends_bid_then_ask_price_and_size_ticks(tws):
    """The order of a snapshot's ticks (their shapes: tests/venues/test_ib_fixtures.py)."""
    v = _venue(tws)
    seen: dict[int, list[list[str]]] = {}
    interpret = v._ib.client.decoder.interpret

    def record(fields: list[str]) -> None:
        seen.setdefault(int(fields[0]), []).append(list(fields))
        interpret(fields)

    v._ib.client.decoder.interpret = record  # type: ignore[method-assign]
    v.connect()
    try:
        assert v.quote("SPY") is not None
    finally:
        v.close()
    assert 57 in seen  # tickSnapshotEnd
    assert [f[3] for f in seen[1]] == ["1", "2"] and [f[3] for f in seen[2]] == ["0", "3"]
