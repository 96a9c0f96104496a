"""RestBrokerVenue against a scripted local broker speaking the documented Alpaca v2 dialect.

The broker below is minimal and lives here (stdlib ``ThreadingHTTPServer`` on 127.0.0.1): routes answer
with the payload shapes of /work/spec/broker-protocol.md, faults are queued per (method, path prefix),
and the SSE endpoint streams whatever events a test emits. No wall-time assertions: waits are counted
through the venue's injectable ``sleep`` and ``clock``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from hflite.domain.order import Fill, Order, OrderStatus, OrderType, Side, TimeInForce
from hflite.execution.venues.base import VenueAuthError, VenueError, VenueEventKind
from hflite.execution.venues.rest import RestBrokerVenue, TokenBucket, client_order_id

KEY_ID, SECRET = "PKTESTKEYID42", "sk-broker-SECRET-9f8e7d6c"
T0 = 1_704_488_400_000_000_000  # 2024-01-05T21:00:00Z


def rfc3339(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def ns_of(text: str) -> int:
    head, _, frac = text.rstrip("Z").partition(".")
    secs = int(datetime.fromisoformat(head + "+00:00").timestamp())
    return secs * 1_000_000_000 + int(frac.ljust(9, "0")[:9] or 0)


# -- the scripted broker ---------------------------------------------------------------------------
class Broker:
    """State and routes of a tiny Alpaca-dialect broker; every request is counted."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.orders: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # seq = index + 1
        self.activities: list[dict[str, Any]] = []
        self.positions: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.faults: dict[tuple[str, str], list[Any]] = {}
        self.stream_since: list[int] = []
        self.clock_events: list[dict[str, Any]] = []
        self.clock_skew_s = 0.0
        self.drop_stream_after = 0
        self.stopped = False
        self.url = ""

    # scripting
    def fault(self, method: str, prefix: str, *answers: Any) -> None:
        self.faults.setdefault((method, prefix), []).extend(answers)

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and p.startswith(prefix))

    def bodies(self, method: str, prefix: str) -> list[dict[str, Any]]:
        return [b for m, p, b in self.requests if m == method and p.startswith(prefix)]

    def place(self, body: dict[str, Any], status: str = "accepted") -> dict[str, Any]:
        n = len(self.orders)
        obj = {
            "id": str(uuid.UUID(int=n + 1)),
            "client_order_id": body.get("client_order_id") or f"broker-{n}",
            "created_at": rfc3339(T0 + n * 1_000_000_000),
            "updated_at": rfc3339(T0 + n * 1_000_000_000),
            "submitted_at": rfc3339(T0 + n * 1_000_000_000),
            "symbol": body["symbol"],
            "qty": str(body["qty"]),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": body.get("order_class", "simple"),
            "type": body.get("type", "market"),
            "side": body["side"],
            "time_in_force": body.get("time_in_force", "gtc"),
            "limit_price": body.get("limit_price"),
            "stop_price": body.get("stop_price"),
            "status": status,
            "legs": None,
        }
        self.orders.append(obj)
        if obj["order_class"] == "oco":
            obj["limit_price"] = body["take_profit"]["limit_price"]
            leg = self.place(
                {
                    "symbol": body["symbol"],
                    "qty": body["qty"],
                    "side": body["side"],
                    "type": "stop",
                    "stop_price": body["stop_loss"]["stop_price"],
                    "client_order_id": body["stop_loss"].get("client_order_id"),
                }
            )
            obj["legs"] = [leg]
        return obj

    def emit(self, event: str, order: dict[str, Any], **fields: Any) -> None:
        with self.cond:
            seq = len(self.events) + 1
            data = {"event": event, "event_id": seq, "timestamp": rfc3339(T0 + seq), "order": order, **fields}
            self.events.append(data)
            self.cond.notify_all()

    def by_client_id(self, cid: str) -> dict[str, Any] | None:
        return next((o for o in self.orders if o["client_order_id"] == cid), None)

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    # routes: (status, body, headers)
    def route(self, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> tuple:
        if path == "/v2/account":
            return 200, {
                "id": "acc-1",
                "account_number": "PA1",
                "status": "ACTIVE",
                "currency": "USD",
                "cash": "100000.00",
                "equity": "100000.00",
                "buying_power": "100000.00",
                "portfolio_value": "100000.00",
                "trading_blocked": False,
            }
        if path == "/v2/clock":
            now = rfc3339(time.time_ns() + int(self.clock_skew_s * 1e9))
            return 200, {"timestamp": now, "is_open": True, "next_open": now, "next_close": now}
        if path == "/v2/positions":
            return 200, self.positions
        if path == "/v2/orders" and method == "POST":
            if self.by_client_id(body.get("client_order_id", "")):
                return 422, {"code": 40010001, "message": "client_order_id must be unique"}
            return 200, self.place(body, "new")
        if path == "/v2/orders":
            return 200, self.list_orders(query)
        if path == "/v2/orders:by_client_order_id":
            obj = self.by_client_id(query.get("client_order_id", ""))
            return (200, obj) if obj else (404, {"code": 40410000, "message": "order not found"})
        if path.startswith("/v2/orders/"):
            return self.one_order(method, path.rsplit("/", 1)[1], body)
        if path == "/v2/account/activities/FILL":
            return 200, self.list_fills(query)
        if path == "/admin/clock":
            for data in self.clock_events:
                self.emit(
                    data["event"],
                    data["order"],
                    **{k: v for k, v in data.items() if k not in ("event", "order")},
                )
            self.clock_events = []
            return 200, {"ts": body["ts"], "last_event_id": len(self.events)}
        return 404, {"code": 40400000, "message": "not found"}

    def one_order(self, method: str, oid: str, body: dict[str, Any]) -> tuple:
        obj = next((o for o in self.orders if o["id"] == oid), None)
        if obj is None:
            return 404, {"code": 40410000, "message": "order not found"}
        if method == "DELETE":
            if obj["status"] in ("filled", "canceled", "expired", "rejected"):
                return 422, {"code": 42210000, "message": "order is not cancelable"}
            obj["status"] = "canceled"
            return 204, None
        if method == "PATCH":
            obj.update(body)
        return 200, obj

    def list_orders(self, query: dict[str, str]) -> list[dict[str, Any]]:
        open_ = {"new", "accepted", "partially_filled"}
        status = query.get("status", "open")
        rows = [o for o in self.orders if o["order_class"] != "oco_leg"]
        if status == "open":
            rows = [o for o in rows if o["status"] in open_]
        elif status == "closed":
            rows = [o for o in rows if o["status"] not in open_]
        if "after" in query:
            rows = [o for o in rows if ns_of(o["created_at"]) > ns_of(query["after"])]
        return rows[: int(query.get("limit", 50))]

    def list_fills(self, query: dict[str, str]) -> list[dict[str, Any]]:
        rows = self.activities
        if "page_token" in query:
            ids = [a["id"] for a in rows]
            rows = rows[ids.index(query["page_token"]) + 1 :]
        return rows[: int(query.get("page_size", 100))]


def handler_for(broker: Broker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.handle_any("GET")

        def do_POST(self) -> None:
            self.handle_any("POST")

        def do_DELETE(self) -> None:
            self.handle_any("DELETE")

        def do_PATCH(self) -> None:
            self.handle_any("PATCH")

        def handle_any(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            broker.requests.append((method, parts.path, body or query))
            if (
                self.headers.get("APCA-API-KEY-ID") != KEY_ID
                or self.headers.get("APCA-API-SECRET-KEY") != SECRET
            ):
                self.answer(401, {"code": 40110000, "message": "request is not authorized"})
                return
            queue = next(
                (q for (m, p), q in broker.faults.items() if m == method and parts.path.startswith(p) and q),
                None,
            )
            fault = queue.pop(0) if queue else None
            if fault == "drop":
                self.close_connection = True
                return
            if isinstance(fault, int):
                self.answer(fault, {"code": fault * 100000, "message": f"scripted {fault}"})
                return
            if isinstance(fault, tuple):
                self.answer(*fault)
                return
            if parts.path == "/v2/events/trades":
                self.stream(
                    int(query.get("since_id", 0)), int(query["until_id"]) if "until_id" in query else None
                )
                return
            status, payload = broker.route(method, parts.path, query, body)
            if fault == "timeout":  # processed, but the answer comes after the client gave up
                time.sleep(1.0)
            self.answer(status, payload)

        def answer(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "1")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def stream(self, since: int, until: int | None) -> None:
            broker.stream_since.append(since)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            seq, sent = since, 0
            while True:
                with broker.cond:
                    broker.cond.wait_for(lambda n=seq: len(broker.events) > n or broker.stopped, timeout=0.1)
                    batch = broker.events[seq : until if until is not None else None]
                    stopped = broker.stopped
                for data in batch:
                    seq += 1
                    self.wfile.write(f"id: {seq}\ndata: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()
                    sent += 1
                    if broker.drop_stream_after and sent >= broker.drop_stream_after:
                        return
                if stopped or (until is not None and seq >= until):
                    return
                if not batch:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()

    return Handler


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(b))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    b.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield b
    b.stop()
    server.shutdown()
    server.server_close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_venue(broker: Broker, sleeps: list[float]) -> Iterator[Callable[..., RestBrokerVenue]]:
    made: list[RestBrokerVenue] = []

    def make(**kw: Any) -> RestBrokerVenue:
        opts: dict[str, Any] = {"timeout_s": 0.4, "rate_per_min": 60_000, "sleep": sleeps.append}
        opts.update(kw)
        venue = RestBrokerVenue(
            "fake", broker.url, opts.pop("key_id", KEY_ID), opts.pop("secret", SECRET), **opts
        )
        made.append(venue)
        return venue

    yield make
    for venue in made:
        venue.close()


def order(
    oid: str = "o1", type_: OrderType = OrderType.LIMIT, price: float | None = 101.5, **kw: Any
) -> Order:
    return Order(
        oid, kw.pop("symbol", "SPY"), kw.pop("side", Side.BUY), type_, kw.pop("qty", 10.0), T0, price, **kw
    )


def bar(i: int = 1) -> SimpleNamespace:
    return SimpleNamespace(ts=T0 + i * 86_400_000_000_000, i=i)


def wait_until(check: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def kinds(venue: RestBrokerVenue, symbol: str = "SPY") -> list[VenueEventKind]:
    return [ev.kind for ev in venue.pending(symbol)]


def fill_event(broker: Broker, obj: dict[str, Any], exec_id: str, qty: str, price: str, fee: str) -> None:
    broker.emit("fill", obj, execution_id=exec_id, qty=qty, price=price, position_qty=qty, commission=fee)


# -- connect -----------------------------------------------------------------------------------------
def test_wrong_keys_raise_a_one_line_auth_error_without_the_keys(make_venue):
    venue = make_venue(secret="sk-WRONG-secret-value-123")

    with pytest.raises(VenueAuthError) as info:
        venue.connect()

    msg = str(info.value)
    assert msg == f"venue fake at {venue.url} rejected the keys (HTTP 401)"
    assert "\n" not in msg and "sk-WRONG" not in msg and SECRET not in msg and KEY_ID not in msg
    assert info.value.__suppress_context__ and info.value.__cause__ is None


def test_an_unreachable_broker_raises_venue_error_saying_connection_refused(sleeps):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    venue = RestBrokerVenue(
        "fake", f"http://127.0.0.1:{port}", KEY_ID, SECRET, max_retries=2, sleep=sleeps.append
    )

    with pytest.raises(VenueError) as info:
        venue.connect()

    msg = str(info.value)
    assert msg.startswith(f"cannot reach venue fake at http://127.0.0.1:{port}: connection refused")
    assert "\n" not in msg and SECRET not in msg
    assert len(sleeps) == 2  # connection refused: nothing was sent, so it was retried
    venue.close()


def test_a_local_clock_behind_the_broker_is_refused(broker, make_venue):
    broker.clock_skew_s = 30.0
    venue = make_venue()

    with pytest.raises(
        VenueError, match=r"local clock is 3\d\.\d s behind the broker's \(max 2 s\); synchronise"
    ):
        venue.connect()


def test_keys_come_from_the_environment_and_missing_ones_are_named(broker):
    env = {"HFLITE_BROKER_KEY_ID": KEY_ID, "HFLITE_BROKER_SECRET": SECRET}

    venue = RestBrokerVenue.from_env("fake", broker.url, env, sleep=lambda _s: None)
    venue.connect()
    venue.close()

    with pytest.raises(VenueAuthError, match="set HFLITE_BROKER_KEY_ID and HFLITE_BROKER_SECRET"):
        RestBrokerVenue.from_env("fake", broker.url, {"HFLITE_BROKER_KEY_ID": KEY_ID})


def test_a_closed_venue_rejects_new_orders_without_raising(broker, make_venue):
    venue = make_venue()
    venue.close()

    venue.submit(order())

    [ev] = venue.pending("SPY")
    assert ev.kind is VenueEventKind.REJECTED and ev.reason == "venue fake is closed"
    assert broker.requests == []


def test_capabilities_name_server_side_stops_and_oco(make_venue):
    caps = make_venue().capabilities

    assert caps.server_side_stops and caps.oco and caps.stop_limit and caps.replace and caps.fractional


# -- submit --------------------------------------------------------------------------------------------
def test_submit_sends_the_documented_body_and_delivers_accepted(broker, make_venue):
    venue = make_venue()
    o = order(tif=TimeInForce.DAY)

    venue.submit(o)

    assert broker.bodies("POST", "/v2/orders") == [
        {
            "symbol": "SPY",
            "qty": "10",
            "side": "buy",
            "type": "limit",
            "time_in_force": "day",
            "client_order_id": "o1",
            "limit_price": "101.5",
        }
    ]
    [ev] = venue.pending("SPY")
    assert (ev.kind, ev.order_id, ev.event_id) == (VenueEventKind.ACCEPTED, "o1", "o1:accepted")
    venue.match("SPY", bar(), lambda *_: None)
    assert o.status is OrderStatus.ACCEPTED


def test_stop_orders_carry_the_trigger_as_stop_price(broker, make_venue):
    venue = make_venue()

    venue.submit(order("s1", OrderType.STOP, 95.25, side=Side.SELL, qty=0.5))

    [body] = broker.bodies("POST", "/v2/orders")
    assert (body["type"], body["stop_price"], body["qty"], body["side"]) == ("stop", "95.25", "0.5", "sell")
    assert "limit_price" not in body


@pytest.mark.skipif(not hasattr(OrderType, "STOP_LIMIT"), reason="no STOP_LIMIT order type yet")
def test_stop_limit_orders_carry_the_trigger_and_the_limit(broker, make_venue):
    venue = make_venue()

    venue.submit(order("sx", OrderType.STOP_LIMIT, 94.0, side=Side.SELL, stop_price=95.0))

    [body] = broker.bodies("POST", "/v2/orders")
    assert (body["type"], body["stop_price"], body["limit_price"]) == ("stop_limit", "95", "94")


def test_a_429_is_retried_after_retry_after_and_places_one_order(broker, make_venue, sleeps):
    broker.fault("POST", "/v2/orders", 429)
    venue = make_venue()

    venue.submit(order())

    assert sleeps == [1.0]
    assert broker.count("POST", "/v2/orders") == 2
    assert len(broker.orders) == 1
    assert kinds(venue) == [VenueEventKind.ACCEPTED]


def test_a_503_on_submit_delivers_unknown_and_is_not_retried(broker, make_venue, sleeps):
    broker.fault("POST", "/v2/orders", 503)
    venue = make_venue()
    o = order()

    venue.submit(o)

    assert broker.count("POST", "/v2/orders") == 1 and sleeps == []
    [ev] = venue.pending("SPY")
    assert ev.kind is VenueEventKind.UNKNOWN and "HTTP 503" in ev.reason
    venue.match("SPY", bar(), lambda *_: None)
    assert o.status is OrderStatus.UNKNOWN and venue.needs_reconcile


def test_a_read_timeout_on_submit_delivers_unknown_though_the_broker_placed_it(broker, make_venue, sleeps):
    broker.fault("POST", "/v2/orders", "timeout")
    venue = make_venue()

    venue.submit(order())

    assert broker.count("POST", "/v2/orders") == 1 and sleeps == []
    assert len(broker.orders) == 1
    [ev] = venue.pending("SPY")
    assert ev.kind is VenueEventKind.UNKNOWN and "no answer within 0.4 s" in ev.reason


def test_a_dropped_connection_on_submit_delivers_unknown(broker, make_venue):
    broker.fault("POST", "/v2/orders", "drop")
    venue = make_venue()

    venue.submit(order())

    assert kinds(venue) == [VenueEventKind.UNKNOWN]
    assert broker.count("POST", "/v2/orders") == 1


def test_a_duplicate_client_id_is_looked_up_and_accepted(broker, make_venue):
    broker.place({"symbol": "SPY", "qty": "10", "side": "buy", "type": "limit", "client_order_id": "o1"})
    venue = make_venue()

    venue.submit(order())

    assert broker.count("GET", "/v2/orders:by_client_order_id") == 1
    [ev] = venue.pending("SPY")
    assert (ev.kind, ev.event_id) == (VenueEventKind.ACCEPTED, "o1:accepted")
    assert len(broker.orders) == 1


def test_another_4xx_rejects_with_the_brokers_message(broker, make_venue):
    broker.fault("POST", "/v2/orders", (403, {"code": 40310000, "message": "insufficient buying power"}))
    venue = make_venue()
    o = order()

    venue.submit(o)

    [ev] = venue.pending("SPY")
    assert ev.kind is VenueEventKind.REJECTED and ev.reason == "insufficient buying power"
    venue.match("SPY", bar(), lambda *_: None)
    assert o.status is OrderStatus.REJECTED


def test_a_broker_message_echoing_the_secret_is_redacted(broker, make_venue):
    broker.fault(
        "POST", "/v2/orders", (422, {"code": 40010000, "message": f"bad qty for key {SECRET}\nline2"})
    )
    venue = make_venue()

    venue.submit(order())

    [ev] = venue.pending("SPY")
    assert ev.kind is VenueEventKind.REJECTED
    assert SECRET not in ev.reason and "\n" not in ev.reason and "bad qty" in ev.reason


def test_a_long_order_id_travels_as_a_deterministic_short_client_id_and_maps_back(broker, make_venue):
    long_id = "decision-2024-01-05-SPY-" + "x" * 60
    short = "hf-" + hashlib.sha256(long_id.encode()).hexdigest()[:40]
    venue = make_venue()
    venue.connect()

    venue.submit(order(long_id))
    broker.emit("new", broker.orders[0])
    wait_until(lambda: venue.cursor == 1)

    assert client_order_id(long_id) == short and client_order_id("short-id") == "short-id"
    assert broker.bodies("POST", "/v2/orders")[0]["client_order_id"] == short
    events = venue.pending("SPY")
    assert [ev.order_id for ev in events] == [long_id, long_id]
    assert {ev.event_id for ev in events} == {f"{long_id}:accepted"}


def test_an_adopted_long_id_order_gets_its_stream_events(broker, make_venue):
    long_id = "recovered-" + "y" * 60
    venue = make_venue()
    venue.connect()
    held = order(long_id, status=OrderStatus.ACCEPTED)
    venue.adopt(held)
    obj = broker.place(
        {"symbol": "SPY", "qty": "10", "side": "buy", "client_order_id": client_order_id(long_id)}
    )

    broker.emit("canceled", obj)
    wait_until(lambda: venue.cursor == 1)
    venue.match("SPY", bar(), lambda *_: None)

    assert held.status is OrderStatus.CANCELLED and venue.strangers == []


def test_an_oco_pair_is_one_request_with_the_stop_legs_client_id(broker, make_venue):
    venue = make_venue()
    stop = order("sl", OrderType.STOP, 95.0, side=Side.SELL, oco_group="g1")
    take = order("tp", OrderType.LIMIT, 110.0, side=Side.SELL, oco_group="g1")

    venue.submit_oco([stop, take])

    [body] = broker.bodies("POST", "/v2/orders")
    assert body["order_class"] == "oco" and body["type"] == "limit" and body["client_order_id"] == "tp"
    assert body["take_profit"] == {"limit_price": "110"}
    assert body["stop_loss"] == {"stop_price": "95", "client_order_id": "sl"}
    assert sorted(ev.event_id for ev in venue.pending("SPY")) == ["sl:accepted", "tp:accepted"]
    assert venue._venue_ids == {"tp": broker.orders[0]["id"], "sl": broker.orders[1]["id"]}


# -- cancel and replace --------------------------------------------------------------------------------
def test_cancel_is_retried_on_a_503(broker, make_venue, sleeps):
    venue = make_venue()
    o = order()
    venue.submit(o)
    venue.match("SPY", bar(), lambda *_: None)
    broker.fault("DELETE", "/v2/orders/", 503)

    venue.cancel(o, T0)

    assert broker.count("DELETE", "/v2/orders/") == 2 and len(sleeps) == 1
    assert broker.orders[0]["status"] == "canceled"
    assert o.status is OrderStatus.ACCEPTED  # until the "canceled" event arrives


def test_cancel_of_an_order_already_closed_does_nothing(broker, make_venue, sleeps):
    venue = make_venue()
    o = order()
    venue.submit(o)
    broker.orders[0]["status"] = "filled"

    venue.cancel(o, T0)

    assert broker.count("DELETE", "/v2/orders/") == 1 and sleeps == []
    assert kinds(venue) == [VenueEventKind.ACCEPTED]


def test_replace_patches_the_price_and_delivers_replaced(broker, make_venue):
    venue = make_venue()
    o = order()
    venue.submit(o)

    venue.replace(o, 99.5)
    venue.match("SPY", bar(), lambda *_: None)

    assert broker.bodies("PATCH", "/v2/orders/") == [{"limit_price": "99.5"}]
    assert o.price == 99.5


# -- the event stream ------------------------------------------------------------------------------
def test_a_stream_fill_maps_to_filled_with_execution_id_qty_price_and_fee(broker, make_venue):
    venue = make_venue()
    venue.connect()
    o = order()
    venue.submit(o)

    fill_event(broker, broker.orders[0], "exec-1", "4", "100.5", "0.25")
    wait_until(lambda: VenueEventKind.FILLED in kinds(venue))

    ev = venue.pending("SPY")[-1]
    assert (ev.event_id, ev.order_id, ev.qty, ev.price, ev.fee) == ("exec-1", "o1", 4.0, 100.5, 0.25)
    assert ev.ts == T0 + 1
    fills: list[Fill] = []
    venue.match("SPY", bar(), lambda _o, f: fills.append(f))
    assert [(f.qty, f.price, f.fee) for f in fills] == [(4.0, 100.5, 0.25)]
    assert o.status is OrderStatus.PARTIALLY_FILLED


def test_a_fill_sent_twice_is_delivered_twice_and_booked_once(broker, make_venue):
    venue = make_venue()
    venue.connect()
    o = order()
    venue.submit(o)

    fill_event(broker, broker.orders[0], "exec-7", "10", "101", "0.5")
    fill_event(broker, broker.orders[0], "exec-7", "10", "101", "0.5")
    wait_until(lambda: kinds(venue).count(VenueEventKind.FILLED) == 2)
    fills: list[Fill] = []
    venue.match("SPY", bar(), lambda _o, f: fills.append(f))

    assert len(fills) == 1
    assert o.status is OrderStatus.FILLED and o.filled_qty == 10.0


def test_stream_events_map_cancel_expire_reject_and_replace(broker, make_venue):
    venue = make_venue()
    venue.connect()
    venue.submit(order("a"))
    obj = broker.orders[0]

    broker.emit("replaced", obj, price="99.25")
    broker.emit("canceled", obj)
    broker.emit("expired", obj)
    broker.emit("rejected", obj)
    wait_until(lambda: venue.cursor == 4)

    assert [(ev.kind, ev.event_id) for ev in venue.pending("SPY")[1:]] == [
        (VenueEventKind.REPLACED, "a:replaced:99.25"),
        (VenueEventKind.CANCELLED, "a:canceled"),
        (VenueEventKind.EXPIRED, "a:expired"),
        (VenueEventKind.REJECTED, "a:rejected"),
    ]


def test_events_of_orders_we_never_sent_become_strangers(broker, make_venue):
    venue = make_venue()
    venue.connect()
    obj = broker.place({"symbol": "QQQ", "qty": "3", "side": "sell", "type": "market"})

    fill_event(broker, obj, "exec-h", "3", "400", "0")
    wait_until(lambda: venue.cursor == 1)
    venue.match("QQQ", bar(), lambda *_: None)  # where an inbox holds them until the bar

    [ev] = venue.strangers
    assert (ev.symbol, ev.order_id, ev.kind) == ("QQQ", "broker-0", VenueEventKind.FILLED)


def test_a_dropped_stream_reconnects_from_the_last_seq_and_flags_reconnected(broker, make_venue):
    broker.drop_stream_after = 2
    venue = make_venue()
    venue.connect()
    venue.submit(order())
    obj = broker.orders[0]

    broker.emit("new", obj)
    broker.emit("partial_fill", obj, execution_id="e1", qty="4", price="100", commission="0")
    broker.emit("fill", obj, execution_id="e2", qty="6", price="100", commission="0")
    wait_until(lambda: venue.cursor == 3)

    assert broker.stream_since[:2] == [0, 2]
    assert venue.reconnected
    assert [ev.event_id for ev in venue.pending("SPY")] == ["o1:accepted", "o1:accepted", "e1", "e2"]


# -- sync ----------------------------------------------------------------------------------------------
def test_sync_with_drive_clock_waits_for_the_events_up_to_last_event_id(broker, make_venue):
    venue = make_venue(drive_clock=True)
    venue.connect()
    venue.submit(order())
    obj = broker.orders[0]
    broker.clock_events = [
        {"event": "fill", "order": obj, "execution_id": "e9", "qty": "10", "price": "101", "commission": "1"}
    ]

    venue.sync(T0 + 86_400_000_000_000)

    assert broker.bodies("POST", "/admin/clock") == [{"ts": "2024-01-06T21:00:00.000000000Z"}]
    assert venue.cursor == 1 and VenueEventKind.FILLED in kinds(venue)


def test_sync_with_the_stream_down_fetches_the_events_as_a_finite_request(broker, make_venue):
    venue = make_venue(drive_clock=True)  # never connected: no reader
    venue.submit(order())
    broker.emit("new", broker.orders[0])
    broker.clock_events = [
        {"event": "fill", "order": broker.orders[0], "execution_id": "e3", "qty": "10", "price": "101"}
    ]

    venue.sync(T0)

    assert venue.cursor == 2
    assert [ev.event_id for ev in venue.pending("SPY")] == ["o1:accepted", "o1:accepted", "e3"]
    assert broker.bodies("GET", "/v2/events/trades") == [{"since_id": "0", "until_id": "2"}]


def test_sync_without_drive_clock_sends_nothing(broker, make_venue):
    venue = make_venue()

    venue.sync(T0)

    assert broker.requests == []


# -- snapshot ------------------------------------------------------------------------------------------
def test_snapshot_paginates_orders_and_fill_activities(broker, make_venue):
    venue = make_venue()
    venue.orders_page, venue.fills_page = 2, 2
    for i in range(5):
        broker.place(
            {"symbol": "SPY", "qty": "1", "side": "buy", "type": "market", "client_order_id": f"c{i}"},
            "accepted" if i < 3 else "filled",
        )
    for i in range(5):
        o = broker.orders[3 + i % 2]
        broker.activities.append(
            {
                "id": f"2024010521000{i}000::x{i}",
                "activity_type": "FILL",
                "transaction_time": rfc3339(T0 + i),
                "type": "fill",
                "price": "100.5",
                "qty": "0.5",
                "side": "buy",
                "symbol": "SPY",
                "leaves_qty": "0",
                "order_id": o["id"],
                "cum_qty": "1",
                "order_status": "filled",
                "commission": "0.1",
            }
        )
    broker.positions = [
        {
            "symbol": "SPY",
            "qty": "-2",
            "side": "short",
            "avg_entry_price": "100.5",
            "market_value": "-201",
            "current_price": "100.5",
        }
    ]

    snap = venue.snapshot(["c0", "c4", "gone"], since="2024-01-05T00:00:00Z")

    assert sorted(snap.orders) == ["c0", "c1", "c2", "c4"]
    assert snap.orders["c4"].status is OrderStatus.FILLED and snap.orders["c0"].status is OrderStatus.ACCEPTED
    assert [(f.event_id, f.order_id) for f in snap.fills] == [
        ("x0", "c3"),
        ("x1", "c4"),
        ("x2", "c3"),
        ("x3", "c4"),
        ("x4", "c3"),
    ]
    assert snap.fills[0].fee == 0.1 and snap.fills[0].side is Side.BUY
    assert snap.cash == {"USD": 100_000.0}
    assert snap.positions["SPY"].qty == -2.0 and snap.cursor == "0"
    assert broker.count("GET", "/v2/account/activities/FILL") == 3
    open_pages = [b for b in broker.bodies("GET", "/v2/orders") if b.get("status") == "open"]
    assert len(open_pages) == 3 and "after" in open_pages[1]
    assert broker.bodies("GET", "/v2/orders:by_client_order_id") == [{"client_order_id": "gone"}]
    assert broker.bodies("GET", "/v2/account/activities/FILL")[0]["after"] == "2024-01-05T00:00:00Z"


# -- rate limit ----------------------------------------------------------------------------------------
class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_the_token_bucket_spaces_calls_after_its_burst():
    t = FakeTime()
    bucket = TokenBucket(60, burst=2, clock=t.clock, sleep=t.sleep)

    for _ in range(5):
        bucket.acquire()

    assert t.sleeps == pytest.approx([1.0, 1.0, 1.0])


def test_the_venue_waits_for_its_rate_limit_between_requests(broker, make_venue):
    t = FakeTime()
    venue = make_venue(rate_per_min=60, clock=t.clock, sleep=t.sleep)  # burst: 6

    for i in range(8):
        venue.submit(order(f"r{i}"))

    assert broker.count("POST", "/v2/orders") == 8
    assert t.sleeps == pytest.approx([1.0, 1.0])
