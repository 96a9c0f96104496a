"""The fake broker (hflite.execution.venues.fakebroker) driven over HTTP with plain httpx, on the
embedded sample data (SPY and BTC-USD daily bars)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from hflite.data.store import Store
from hflite.domain.order import OrderType
from hflite.engine.run import Prepared, make_venue, prepare
from hflite.execution.venues.fakebroker import (
    BehaviourScript,
    FakeBroker,
    FakeBrokerServer,
    ScriptError,
    format_ts,
    load_script,
    parse_script,
    path_key,
)
from tests.conftest import make_settings

FEE_BPS = {"etf": 10.0, "crypto": 20.0, "equity": 10.0, "fx": 1.0}
SLIP_BPS = {"etf": 2.0, "crypto": 5.0, "equity": 2.0, "fx": 0.5}
RANGE_FRAC = 0.02


@pytest.fixture(scope="module")
def prep(sample_store: Store) -> Prepared:
    settings = make_settings(
        sample_store,
        run={
            "symbols": ["SPY", "BTC-USD"],
            "start": "2024-01-02",
            "end": "2024-03-28",
            "benchmarks": ["SPY"],
        },
        execution={
            "fees": {k: {"model": "bps", "bps": v} for k, v in FEE_BPS.items()},
            "slippage": {"model": "volatility", "bps": SLIP_BPS, "range_frac": RANGE_FRAC},
            "max_volume_share": 0.1,
        },
    )
    return prepare(settings, sample_store)


def new_broker(
    prep: Prepared, script: BehaviourScript | None = None, *, cash: float = 100_000.0
) -> FakeBroker:
    """A fresh broker over the module's market data (the broker never writes to it)."""
    venue = make_venue(prep.settings, prep.instruments)
    return FakeBroker(prep.md, venue, cash, script=script, start_ns=int(prep.md.timeline[0]) - 1)


@pytest.fixture
def broker(prep: Prepared) -> FakeBroker:
    return new_broker(prep)


@pytest.fixture
def server(broker: FakeBroker) -> Iterator[FakeBrokerServer]:
    with FakeBrokerServer(broker, "127.0.0.1", 0) as srv:
        yield srv


@pytest.fixture
def api(server: FakeBrokerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=5.0) as client:
        yield client


# -- helpers --------------------------------------------------------------------------------------


def next_bar(prep: Prepared, sym: str, after_i: int) -> tuple[int, int]:
    """(k, timeline index) of ``sym``'s first bar after timeline index ``after_i``."""
    b = prep.md.bars[sym]
    k = int(np.flatnonzero(b.tl[: b.n] > after_i)[0])
    return k, int(b.tl[k])


def move_to(api: httpx.Client, prep: Prepared, i: int) -> dict[str, Any]:
    r = api.post("/admin/clock", json={"ts": format_ts(int(prep.md.timeline[i]))})
    assert r.status_code == 200, r.text
    return r.json()


def market(
    api: httpx.Client, sym: str = "SPY", qty: float = 10, side: str = "buy", **extra: Any
) -> httpx.Response:
    return api.post("/v2/orders", json={"symbol": sym, "qty": qty, "side": side, "type": "market", **extra})


def events(api: httpx.Client, since: int, until: int) -> list[dict[str, Any]]:
    """Replay since < seq <= until as a finite SSE request, checking ``id:`` equals ``event_id``."""
    r = api.get("/v2/events/trades", params={"since_id": since, "until_id": until})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    out = []
    for block in r.text.strip().split("\n\n"):
        if not block or block.startswith(":"):
            continue
        id_line, data_line = block.split("\n")
        event = json.loads(data_line.removeprefix("data: "))
        assert int(id_line.removeprefix("id: ")) == event["event_id"]
        out.append(event)
    return out


def state(api: httpx.Client) -> dict[str, Any]:
    return api.get("/admin/state").json()


def slip(price: float, bps: float, prev_range: float) -> float:
    return price * bps / 1e4 + RANGE_FRAC * prev_range


# -- auth and plumbing ----------------------------------------------------------------------------


def test_requests_without_the_right_keys_are_refused(server: FakeBrokerServer) -> None:
    for headers in ({}, {"APCA-API-KEY-ID": "fake-key", "APCA-API-SECRET-KEY": "wrong"}):
        r = httpx.get(server.url + "/v2/account", headers=headers)
        assert r.status_code == 401
        assert r.json() == {"code": 40110000, "message": "request is not authorized"}
    assert httpx.post(server.url + "/admin/clock", json={"ts": "2024-02-01T00:00:00Z"}).status_code == 401


def test_account_and_clock_report_cash_and_the_wall_clock(api: httpx.Client) -> None:
    acct = api.get("/v2/account").json()
    assert (acct["status"], acct["currency"], acct["trading_blocked"]) == ("ACTIVE", "USD", False)
    assert float(acct["cash"]) == float(acct["equity"]) == float(acct["buying_power"]) == 100_000.0
    clock = api.get("/v2/clock").json()
    assert abs(_parse(clock["timestamp"]) - time.time()) < 5  # the wall clock, not the market's


def _parse(text: str) -> float:
    import pandas as pd

    return pd.Timestamp(text).timestamp()


def test_path_key_collapses_ids() -> None:
    assert path_key("/v2/orders/6b1c-uuid") == "/v2/orders/{id}"
    assert path_key("/v2/orders:by_client_order_id") == "/v2/orders:by_client_order_id"
    assert path_key("/v2/positions/SPY") == "/v2/positions/{symbol}"
    assert path_key("/v2/orders") == "/v2/orders"


def test_stopping_with_an_open_stream_is_prompt(broker: FakeBroker) -> None:
    srv = FakeBrokerServer(broker).start()
    got = threading.Event()

    def listen() -> None:
        with (
            httpx.Client(headers=srv.headers, timeout=10) as c,
            c.stream("GET", srv.url + "/v2/events/trades", params={"since_id": 0}) as r,
        ):
            got.set()
            for _ in r.iter_lines():
                pass

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert got.wait(5)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 1.5
    t.join(3)
    assert not t.is_alive()


# -- orders and fills -----------------------------------------------------------------------------


def test_market_order_is_acknowledged_then_fills_at_the_next_bars_open_plus_slippage(
    api: httpx.Client, prep: Prepared
) -> None:
    move_to(api, prep, 0)
    r = market(api, "SPY", 10, client_order_id="entry-1")
    assert r.status_code == 200
    ack = r.json()
    assert (ack["status"], ack["client_order_id"], ack["qty"], ack["filled_qty"]) == (
        "new",
        "entry-1",
        "10",
        "0",
    )
    assert ack["created_at"] == format_ts(int(prep.md.timeline[0]))  # the market clock
    k, i = next_bar(prep, "SPY", 0)
    b = prep.md.bars["SPY"]
    moved = move_to(api, prep, i)
    price = b.open[k] + slip(b.open[k], SLIP_BPS["etf"], b.high[k - 1] - b.low[k - 1])
    fee = 10 * price * FEE_BPS["etf"] / 1e4
    order = api.get(f"/v2/orders/{ack['id']}").json()
    assert order["status"] == "filled"
    assert float(order["filled_avg_price"]) == pytest.approx(price, rel=1e-12)
    evs = events(api, 0, moved["last_event_id"])
    assert [e["event"] for e in evs] == ["new", "fill"]
    fill = evs[1]
    assert float(fill["price"]) == pytest.approx(price, rel=1e-12)
    assert float(fill["commission"]) == pytest.approx(fee, rel=1e-12)
    assert (fill["qty"], fill["position_qty"]) == ("10", "10")
    assert fill["timestamp"] == format_ts(int(prep.md.timeline[i]))
    pos = api.get("/v2/positions/SPY").json()
    assert (pos["qty"], pos["side"]) == ("10", "long")
    assert float(pos["avg_entry_price"]) == pytest.approx(price)
    assert float(pos["current_price"]) == pytest.approx(b.close[k])
    assert float(api.get("/v2/account").json()["cash"]) == pytest.approx(
        100_000 - 10 * price - fee, rel=1e-12
    )
    assert api.get("/v2/positions/BTC-USD").status_code == 404


def test_a_round_trip_leaves_cash_down_by_the_costs_and_no_position(
    api: httpx.Client, prep: Prepared
) -> None:
    b = prep.md.bars["SPY"]
    move_to(api, prep, 0)
    market(api, "SPY", 5)
    k1, i1 = next_bar(prep, "SPY", 0)
    move_to(api, prep, i1)
    market(api, "SPY", 5, side="sell")
    k2, i2 = next_bar(prep, "SPY", i1)
    move_to(api, prep, i2)
    buy = b.open[k1] + slip(b.open[k1], SLIP_BPS["etf"], b.high[k1 - 1] - b.low[k1 - 1])
    sell = b.open[k2] - slip(b.open[k2], SLIP_BPS["etf"], b.high[k2 - 1] - b.low[k2 - 1])
    fees = 5 * (buy + sell) * FEE_BPS["etf"] / 1e4
    assert api.get("/v2/positions").json() == []
    st = state(api)
    assert float(st["cash"]) == pytest.approx(100_000 - 5 * buy + 5 * sell - fees, rel=1e-12)
    assert len(st["fills"]) == 2


def test_a_duplicate_client_order_id_is_refused_with_422(api: httpx.Client) -> None:
    assert market(api, client_order_id="same").status_code == 200
    r = market(api, client_order_id="same")
    assert r.status_code == 422
    assert r.json() == {"code": 40010001, "message": "client_order_id must be unique"}
    st = state(api)
    assert (len(st["orders"]), st["duplicates_refused"]) == (1, 1)
    by_client = api.get("/v2/orders:by_client_order_id", params={"client_order_id": "same"})
    assert by_client.json()["client_order_id"] == "same"


def test_bad_fields_unknown_symbols_and_missing_cash_are_refused(api: httpx.Client) -> None:
    assert market(api, "ZZZ").json()["message"] == "asset ZZZ not found"
    r = market(api, qty="-3")
    assert (r.status_code, "qty" in r.json()["message"]) == (422, True)
    r = api.post("/v2/orders", json={"symbol": "SPY", "qty": 1, "side": "buy", "type": "limit"})
    assert (r.status_code, r.json()["message"]) == (422, "limit_price is required")
    r = market(api, time_in_force="fok")
    assert "time_in_force" in r.json()["message"]
    r = market(api, "BTC-USD", 1000)  # ~40m USD with 100k cash
    assert (r.status_code, r.json()) == (403, {"code": 40310000, "message": "insufficient buying power"})
    assert state(api)["orders"] == []


@pytest.mark.skipif(not hasattr(OrderType, "STOP_LIMIT"), reason="no OrderType.STOP_LIMIT yet")
def test_a_stop_limit_triggers_at_its_stop_and_never_fills_past_its_limit(
    api: httpx.Client, prep: Prepared
) -> None:
    b = prep.md.bars["SPY"]
    move_to(api, prep, 0)
    k, i = next_bar(prep, "SPY", 0)
    stop_px = round((b.open[k] + b.high[k]) / 2, 2)
    limit_px = round(stop_px + 0.05, 2)
    body = {"symbol": "SPY", "qty": 1, "side": "buy", "type": "stop_limit"}
    r = api.post("/v2/orders", json={**body, "stop_price": stop_px, "limit_price": limit_px})
    assert r.status_code == 200, r.text
    move_to(api, prep, i)
    got = api.get(f"/v2/orders/{r.json()['id']}").json()
    want = stop_px + min(slip(stop_px, SLIP_BPS["etf"], b.high[k - 1] - b.low[k - 1]), limit_px - stop_px)
    assert got["status"] == "filled"
    assert float(got["filled_avg_price"]) == pytest.approx(want, rel=1e-12)
    assert float(got["filled_avg_price"]) <= limit_px


def test_stop_limit_is_refused_unless_the_order_model_has_it(api: httpx.Client) -> None:
    body = {
        "symbol": "SPY",
        "qty": 1,
        "side": "sell",
        "type": "stop_limit",
        "stop_price": 400,
        "limit_price": 399,
    }
    r = api.post("/v2/orders", json=body)
    if hasattr(OrderType, "STOP_LIMIT"):
        assert r.status_code == 200
        assert (r.json()["stop_price"], r.json()["limit_price"]) == ("400", "399")
    else:
        assert (r.status_code, r.json()["message"]) == (422, "order type stop_limit not supported")


def test_cancel_emits_canceled_and_a_closed_order_is_not_cancelable(api: httpx.Client) -> None:
    oid = market(api).json()["id"]
    assert api.delete(f"/v2/orders/{oid}").status_code == 204
    assert api.get(f"/v2/orders/{oid}").json()["status"] == "canceled"
    assert [e["event"] for e in events(api, 0, 2)] == ["new", "canceled"]
    r = api.delete(f"/v2/orders/{oid}")
    assert (r.status_code, r.json()["message"]) == (422, "order is not cancelable")
    assert api.delete("/v2/orders/nope").status_code == 404
    assert api.get("/v2/orders/nope").json() == {"code": 40410000, "message": "order not found"}


def test_stops_and_limits_trigger_by_the_bar_range(api: httpx.Client, prep: Prepared) -> None:
    b = prep.md.bars["SPY"]
    move_to(api, prep, 0)
    k, i = next_bar(prep, "SPY", 0)
    o, h, lo = b.open[k], b.high[k], b.low[k]
    stop_px = round((o + h) / 2, 2)  # above the open, inside the range: fills at the trigger
    limit_px = round((o + lo) / 2, 2)  # below the open, inside the range: fills at the limit
    far = round(lo * 0.9, 2)  # never reached
    ids = {}
    for name, body in {
        "stop": {"type": "stop", "stop_price": stop_px},
        "limit": {"type": "limit", "limit_price": limit_px},
        "far": {"type": "limit", "limit_price": far},
    }.items():
        r = api.post("/v2/orders", json={"symbol": "SPY", "qty": 1, "side": "buy", **body})
        assert r.status_code == 200, r.text
        ids[name] = r.json()["id"]
    move_to(api, prep, i)
    got = {n: api.get(f"/v2/orders/{x}").json() for n, x in ids.items()}
    want_stop = stop_px + slip(stop_px, SLIP_BPS["etf"], b.high[k - 1] - b.low[k - 1])
    assert got["stop"]["status"] == "filled"
    assert float(got["stop"]["filled_avg_price"]) == pytest.approx(want_stop, rel=1e-12)
    assert (got["limit"]["status"], float(got["limit"]["filled_avg_price"])) == ("filled", limit_px)
    assert (got["far"]["status"], got["far"]["filled_avg_price"]) == ("new", None)
    opened = api.get("/v2/orders", params={"status": "open"}).json()
    assert [x["id"] for x in opened] == [ids["far"]]


def test_replace_changes_the_price_in_place_and_emits_replaced(api: httpx.Client) -> None:
    oid = api.post(
        "/v2/orders", json={"symbol": "SPY", "qty": 1, "side": "sell", "type": "stop", "stop_price": "300"}
    ).json()["id"]
    r = api.patch(f"/v2/orders/{oid}", json={"stop_price": "310.5"})
    assert r.status_code == 200
    assert (r.json()["id"], r.json()["stop_price"]) == (oid, "310.5")
    last = events(api, 0, 2)[-1]
    assert (last["event"], last["price"]) == ("replaced", "310.5")
    r = api.patch(f"/v2/orders/{oid}", json={"qty": 3})  # a new total quantity, as Alpaca's replace
    assert (r.status_code, r.json()["qty"]) == (200, "3")
    last = events(api, 0, 3)[-1]
    assert (last["event"], last["qty"]) == ("replaced", "3")
    assert api.patch(f"/v2/orders/{oid}", json={"side": "buy"}).status_code == 422


def test_an_oco_leg_that_fills_cancels_the_other(api: httpx.Client, prep: Prepared) -> None:
    b = prep.md.bars["SPY"]
    move_to(api, prep, 0)
    assert api.post("/admin/position", json={"symbol": "SPY", "qty": 10, "price": 470}).status_code == 200
    k, i = next_bar(prep, "SPY", 0)
    take = round(max(b.open[k], b.close[k]) + (b.high[k] - max(b.open[k], b.close[k])) / 2, 2)
    body = {
        "symbol": "SPY", "qty": 10, "side": "sell", "type": "limit", "order_class": "oco",
        "client_order_id": "tp-1", "take_profit": {"limit_price": take},
        "stop_loss": {"stop_price": round(b.low[k] * 0.9, 2), "client_order_id": "sl-1"},
    }  # fmt: skip
    r = api.post("/v2/orders", json=body)
    assert r.status_code == 200, r.text
    parent = r.json()
    assert (parent["client_order_id"], parent["order_class"], parent["type"]) == ("tp-1", "oco", "limit")
    assert [leg["client_order_id"] for leg in parent["legs"]] == ["sl-1"]
    moved = move_to(api, prep, i)
    evs = events(api, 0, moved["last_event_id"])
    assert [(e["event"], e["order"]["client_order_id"]) for e in evs] == [
        ("new", "tp-1"), ("new", "sl-1"), ("fill", "tp-1"), ("canceled", "sl-1"),
    ]  # fmt: skip
    assert float(evs[2]["price"]) == take
    assert api.get("/v2/positions").json() == []


def test_fill_activities_paginate_with_page_token(api: httpx.Client, prep: Prepared) -> None:
    move_to(api, prep, 0)
    for _ in range(3):
        market(api, "SPY", 1)
    moved = move_to(api, prep, next_bar(prep, "SPY", 0)[1])
    exec_ids = [e["execution_id"] for e in events(api, 0, moved["last_event_id"]) if e["event"] == "fill"]
    url = "/v2/account/activities/FILL"
    first = api.get(url, params={"direction": "asc", "page_size": 2}).json()
    rest = api.get(url, params={"direction": "asc", "page_size": 2, "page_token": first[-1]["id"]}).json()
    assert [a["id"].split("::")[1] for a in first + rest] == exec_ids
    a = first[0]
    assert (a["activity_type"], a["type"], a["qty"], a["leaves_qty"], a["order_status"]) == (
        "FILL", "fill", "1", "0", "filled",
    )  # fmt: skip
    assert float(a["commission"]) > 0
    after = api.get(url, params={"after": a["transaction_time"]}).json()
    assert after == []  # all three filled at the same bar-time


def test_orders_list_paginates_by_created_at(api: httpx.Client) -> None:
    ids = [market(api, "SPY", 1).json()["id"] for _ in range(5)]
    page1 = api.get("/v2/orders", params={"status": "all", "direction": "asc", "limit": 3}).json()
    after = page1[-1]["created_at"]
    page2 = api.get(
        "/v2/orders", params={"status": "all", "direction": "asc", "limit": 3, "after": after}
    ).json()
    assert [o["id"] for o in page1 + page2] == ids
    assert api.get("/v2/orders", params={"status": "closed"}).json() == []


def test_the_clock_is_idempotent(api: httpx.Client, prep: Prepared) -> None:
    market(api)
    k, i = next_bar(prep, "SPY", -1)
    first = move_to(api, prep, i + 4)
    again = move_to(api, prep, i)
    assert again["last_event_id"] == first["last_event_id"] == 2
    assert state(api)["bar_index"] == i + 4


# -- the event stream -----------------------------------------------------------------------------


def test_the_stream_replays_since_and_then_streams_live(api: httpx.Client, server: FakeBrokerServer) -> None:
    market(api, client_order_id="a")
    market(api, client_order_id="b")
    seen: list[tuple[int, str]] = []
    ready, two = threading.Event(), threading.Event()

    def listen() -> None:
        with (
            httpx.Client(headers=server.headers, timeout=10) as c,
            c.stream("GET", server.url + "/v2/events/trades", params={"since_id": 1}) as r,
        ):
            ready.set()
            seq = 0
            for line in r.iter_lines():
                if line.startswith("id: "):
                    seq = int(line[4:])
                elif line.startswith("data: "):
                    seen.append((seq, json.loads(line[6:])["order"]["client_order_id"]))
                    if len(seen) == 2:
                        two.set()
                        return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(5)
    market(api, client_order_id="c")
    assert two.wait(5)
    assert seen == [(2, "b"), (3, "c")]
    assert [e["order"]["client_order_id"] for e in events(api, 0, 2)] == ["a", "b"]


# -- the behaviour script and faults --------------------------------------------------------------


def test_429_refuses_without_processing_and_says_when_to_retry(api: httpx.Client) -> None:
    api.post(
        "/admin/script",
        json={"fault": [{"method": "POST", "path": "/v2/orders", "nth": [1], "respond": 429}]},
    )
    r = market(api)
    assert (r.status_code, r.headers["Retry-After"]) == (429, "1")
    assert state(api)["orders"] == []
    assert market(api).status_code == 200  # the 2nd matching request is served


def test_503_every_second_request_is_not_processed(api: httpx.Client) -> None:
    api.post(
        "/admin/script",
        json={"fault": [{"method": "POST", "path": "/v2/orders", "every": 2, "respond": 503}]},
    )
    codes = [market(api).status_code for _ in range(4)]
    assert codes == [200, 503, 200, 503]
    st = state(api)
    assert len(st["orders"]) == 2
    assert st["requests"]["POST /v2/orders"] == 4


def test_a_timeout_still_creates_the_order(api: httpx.Client, server: FakeBrokerServer) -> None:
    script = {
        "timeout_hold_s": 1.0,
        "fault": [{"method": "POST", "path": "/v2/orders", "nth": [1], "action": "timeout"}],
    }
    api.post("/admin/script", json=script)
    with pytest.raises(httpx.ReadTimeout):
        api.post("/v2/orders", json={"symbol": "SPY", "qty": 1, "side": "buy", "type": "market",
                                     "client_order_id": "lost"}, timeout=0.3)  # fmt: skip
    assert api.get("/v2/orders:by_client_order_id", params={"client_order_id": "lost"}).status_code == 200


def test_a_dropped_request_is_not_processed(api: httpx.Client) -> None:
    api.post(
        "/admin/script",
        json={"fault": [{"method": "POST", "path": "/v2/orders", "nth": [1], "action": "drop"}]},
    )
    with pytest.raises(httpx.RemoteProtocolError):
        market(api, client_order_id="never")
    assert api.get("/v2/orders:by_client_order_id", params={"client_order_id": "never"}).status_code == 404
    assert state(api)["requests"]["POST /v2/orders"] == 1


def test_faults_match_collapsed_paths(api: httpx.Client) -> None:
    oid = market(api).json()["id"]
    api.post(
        "/admin/script",
        json={"fault": [{"method": "DELETE", "path": "/v2/orders/{id}", "nth": [1], "respond": 500}]},
    )
    assert api.delete(f"/v2/orders/{oid}").status_code == 500
    assert api.delete(f"/v2/orders/{oid}").status_code == 204


def test_duplicate_fills_send_each_fill_twice_with_one_execution_id(
    api: httpx.Client, prep: Prepared
) -> None:
    api.post("/admin/script", json={"duplicate_fills": True})
    move_to(api, prep, 0)
    market(api)
    moved = move_to(api, prep, next_bar(prep, "SPY", 0)[1])
    fills = [e for e in events(api, 0, moved["last_event_id"]) if e["event"] == "fill"]
    assert len(fills) == 2
    assert fills[0]["execution_id"] == fills[1]["execution_id"]
    assert fills[0]["event_id"] != fills[1]["event_id"]
    assert len(state(api)["fills"]) == 1  # booked once


def test_partial_fill_fills_a_share_per_bar(api: httpx.Client, prep: Prepared) -> None:
    api.post("/admin/script", json={"partial_fill": 0.5})
    move_to(api, prep, 0)
    oid = market(api, "SPY", 8).json()["id"]
    _, i1 = next_bar(prep, "SPY", 0)
    move_to(api, prep, i1)
    order = api.get(f"/v2/orders/{oid}").json()
    assert (order["status"], order["filled_qty"]) == ("partially_filled", "4")
    move_to(api, prep, next_bar(prep, "SPY", i1)[1])
    assert api.get(f"/v2/orders/{oid}").json()["filled_qty"] == "6"


def test_drop_stream_every_closes_the_stream_after_n_events(
    api: httpx.Client, server: FakeBrokerServer
) -> None:
    for _ in range(3):
        market(api)
    api.post("/admin/script", json={"drop_stream_every": 2})
    r = api.get("/v2/events/trades", params={"since_id": 0})  # would stay open: the server closes it
    assert r.text.count("data: ") == 2


def test_ack_delay_holds_the_reply(api: httpx.Client) -> None:
    api.post("/admin/script", json={"ack_delay_ms": 300})
    t0 = time.monotonic()
    assert market(api).status_code == 200
    assert time.monotonic() - t0 >= 0.28


def test_scripts_load_from_toml_and_json_and_name_the_bad_field(tmp_path: Any) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text(
        'partial_fill = 0.5\nduplicate_fills = true\n[[fault]]\nmethod = "post"\npath = "/v2/orders"\n'
        "nth = [3, 7]\nrespond = 503\n"
    )
    script = load_script(toml)
    assert (script.partial_fill, script.fault[0].method, script.fault[0].nth) == (0.5, "POST", [3, 7])
    js = tmp_path / "s.json"
    js.write_text(
        json.dumps({"fault": [{"method": "GET", "path": "/v2/account", "every": 2, "action": "drop"}]})
    )
    assert load_script(js).fault[0].action == "drop"
    with pytest.raises(ScriptError, match=r"fault\.0\.respond"):
        parse_script({"fault": [{"method": "GET", "path": "/x", "nth": [1], "respond": 200}]})
    with pytest.raises(ScriptError, match="partial_fill"):
        parse_script({"partial_fill": 2})
    with pytest.raises(ScriptError, match="exactly one of respond"):
        parse_script({"fault": [{"method": "GET", "path": "/x", "nth": [1]}]})


def test_a_toml_script_can_be_posted_as_is(api: httpx.Client) -> None:
    toml = '[[fault]]\nmethod = "GET"\npath = "/v2/account"\nnth = [1]\nrespond = 503\n'
    assert api.post("/admin/script", content=toml).status_code == 200
    assert api.get("/v2/account").status_code == 503


def test_a_bad_script_posted_to_admin_is_refused(api: httpx.Client) -> None:
    r = api.post("/admin/script", json={"drop_stream_every": -1})
    assert (r.status_code, "drop_stream_every" in r.json()["message"]) == (422, True)


# -- admin ----------------------------------------------------------------------------------------


def test_admin_position_moves_cash_and_shows_in_positions(api: httpx.Client) -> None:
    api.post("/admin/position", json={"symbol": "SPY", "qty": -4, "price": 450})
    pos = api.get("/v2/positions").json()
    assert [(p["symbol"], p["qty"], p["side"], p["avg_entry_price"]) for p in pos] == [
        ("SPY", "-4", "short", "450")
    ]
    assert state(api)["cash"] == state(api)["cash_by_currency"]["USD"] == "101800"


def test_admin_order_and_admin_cancel_look_like_a_human_at_the_broker(api: httpx.Client) -> None:
    placed = api.post(
        "/admin/order", json={"symbol": "SPY", "qty": 2, "side": "buy", "type": "limit", "limit_price": 1}
    )
    assert placed.status_code == 200
    cid = placed.json()["client_order_id"]
    r = api.post("/admin/cancel", json={"client_order_id": cid})
    assert (r.status_code, r.json()["status"]) == (200, "canceled")
    assert [e["event"] for e in events(api, 0, 2)] == ["new", "canceled"]
    assert api.post("/admin/cancel", json={"client_order_id": "nope"}).status_code == 404


# -- the wall clock and the CLI entry point -------------------------------------------------------


def test_the_wall_clock_fills_market_orders_on_receipt_and_the_rest_on_new_bars(
    prep: Prepared, sample_store: Store
) -> None:
    older = prepare(prep.settings.model_copy(update={"run": prep.settings.run.model_copy(
        update={"end": prep.settings.run.end.replace(month=2, day=15)})}), sample_store).md  # fmt: skip
    stored = [older]
    venue = make_venue(prep.settings, prep.instruments)
    broker = FakeBroker(older, venue, 100_000.0, clock="wall", reload=lambda: stored[0])
    b = older.bars["SPY"]
    last = b.n - 1
    new_b = prep.md.bars["SPY"]
    k_new = last + 1  # the same start: the same warm-up, the same bar numbers
    assert new_b.ts[k_new] > b.ts[last]
    with (
        FakeBrokerServer(broker) as srv,
        httpx.Client(base_url=srv.url, headers=srv.headers, timeout=5) as api,
    ):
        filled = market(api, "SPY", 10).json()
        want = b.close[last] + slip(b.close[last], SLIP_BPS["etf"], b.high[last] - b.low[last])
        assert filled["status"] == "filled"
        assert float(filled["filled_avg_price"]) == pytest.approx(want, rel=1e-12)
        limit_px = round((new_b.open[k_new] + new_b.low[k_new]) / 2, 2)
        body = {"symbol": "SPY", "qty": 1, "side": "buy", "type": "limit", "limit_price": limit_px}
        oid = api.post("/v2/orders", json=body).json()["id"]
        assert broker.refresh() == 0  # nothing new in the store yet
        assert api.get(f"/v2/orders/{oid}").json()["status"] == "new"
        stored[0] = prep.md  # the store gained bars
        assert broker.refresh() > 0
        got = api.get(f"/v2/orders/{oid}").json()
        assert (got["status"], float(got["filled_avg_price"])) == ("filled", limit_px)
        assert api.post("/admin/clock", json={"ts": "2030-01-01T00:00:00Z"}).status_code == 409


def test_serve_listens_with_keys_from_the_environment_until_stopped(
    prep: Prepared, sample_store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hflite.execution.venues.fakebroker import serve

    monkeypatch.setenv("HFLITE_BROKER_KEY_ID", "env-key")
    monkeypatch.setenv("HFLITE_BROKER_SECRET", "env-secret")
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(
        target=serve, args=(prep.settings, 0), kwargs={"store": sample_store, "ready": ready, "stop": stop}
    )
    t.start()
    try:
        assert ready.wait(10)
        url = capsys.readouterr().out.split("listening on ")[1].split()[0]
        ok = httpx.get(
            url + "/v2/account", headers={"APCA-API-KEY-ID": "env-key", "APCA-API-SECRET-KEY": "env-secret"}
        )
        assert ok.status_code == 200
        assert httpx.get(url + "/v2/account", headers={"APCA-API-KEY-ID": "fake-key"}).status_code == 401
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()


def test_from_settings_with_the_wall_clock_reads_through_the_latest_stored_bar(
    prep: Prepared, sample_store: Store
) -> None:
    broker = FakeBroker.from_settings(prep.settings, sample_store, clock="wall")
    spy = broker.md.bars["SPY"]
    keys = ("bars/SPY/1d", "bars/BTC-USD/1d")
    last_stored = min(p.last for p in sample_store.partitions() if p.key in keys)
    assert spy.ts[spy.n - 1] > prep.md.bars["SPY"].ts[prep.md.bars["SPY"].n - 1]  # past run.end
    assert str(np.datetime64(int(spy.ts[spy.n - 1]), "ns"))[:10] == str(last_stored.date())
    assert broker.refresh() == 0  # the store has not changed
    order = broker.submit({"symbol": "SPY", "qty": 1, "side": "buy", "type": "market"})
    assert (order["status"], order["filled_qty"]) == ("filled", "1")
