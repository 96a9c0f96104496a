"""A local fake of Alpaca's Trading API v2 and its ``trade_updates`` websocket, on 127.0.0.1, as a
front over ``FakeBroker`` (fakebroker.py): orders, matching, positions, cash and the event log are the
core's; this module speaks Alpaca's wire format around them (tests/fixtures/venues/alpaca/ holds the
documented payloads it follows, with the doc page of each).

What it adds to the core, as Alpaca does it:

- ``GET /stream`` upgraded to a websocket (RFC 6455): ``authenticate`` then ``listen`` messages, the
  ``authorization`` / ``listening`` answers and every trade update as BINARY frames (Alpaca's paper
  stream sends binary frames); only updates after ``listen`` are sent (the stream has no replay);
- a replace (PATCH /v2/orders/{id}) answers with a NEW order (new id, the body's client_order_id or a
  generated one) and the old one becomes ``replaced`` with ``replaced_by``; the core keeps one order
  whose price moved, the new id is an alias of it;
- ``order_class=bracket``: the entry goes to the core, its take-profit and stop-loss legs are ``held``
  until it fills, then work as the core's OCO pair under the ids shown from the start;
- ``GET /v2/assets/{symbol}``, ``GET /v2/calendar`` and ``GET /v2/clock`` from the NYSE calendar;
- crypto symbols on the wire as ``BTC/USD`` (the core's ``BTC-USD``);
- documented error payloads ``{"code", "message"}``: 401 40110000 for bad keys, 403 40310000 for
  buying power, 404 40410000, 422 40010001 for a duplicate client_order_id, 422 42210000 otherwise
  (``trailing_stop`` orders: the core cannot trail a stop, they are refused so).

Test hooks (not Alpaca's API): ``POST /admin/clock`` (driven clock: move the market to a bar-time;
answers the last event seq the move caused and the seq before it), ``GET /admin/events?since_id=&
until_id=`` (trade updates by seq, for a client whose stream missed them), ``GET /admin/state``,
``POST /admin/fill`` (execute our order now), and injected faults (``fault_next``, the core's
behaviour script: 429 + Retry-After, 503, a reply held past the client's timeout, a malformed reply,
dropped streams). Each trade update carries the core's seq as ``event_id``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import struct
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import numpy as np

from hflite.execution.venues.fakebroker import (
    BrokerError,
    FakeBroker,
    broker_keys,
    format_ts,
    load_script,
    parse_ts,
    path_key,
)
from hflite.execution.venues.fakes.http import Handler, HttpApp, Server, wait_until_stopped

if TYPE_CHECKING:
    from hflite.config import Settings
    from hflite.data.store import Store

__all__ = ["AlpacaFront", "FakeAlpacaServer", "serve"]

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_NY = ZoneInfo("America/New_York")
_ORDER_KEYS_ADDED = {
    "expires_at": None,
    "replaced_by": None,
    "replaces": None,
    "notional": None,
    "trail_percent": None,
    "trail_price": None,
    "hwm": None,
    "position_intent": None,
}
_OPS = ("submit", "cancel", "replace", "read")


def _num(x: float) -> str:
    return str(np.format_float_positional(float(x), trim="-"))


def _err(status: int, code: int, message: str) -> BrokerError:
    return BrokerError(status, code, message)


class AlpacaFront:
    """Alpaca's view of a ``FakeBroker``: ids, symbols, replaced orders, bracket legs, assets and the
    calendar. Thread-safe through the core's lock."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self._lock = broker._lock  # one lock for the core and its front: no interleaving
        # alias history of core orders that were replaced: core id -> [(from_seq, alpaca id, client id)]
        self._alias: dict[str, list[tuple[int, str, str]]] = {}
        self._by_alpaca: dict[str, str] = {}  # alpaca id of a live alias -> core id
        self._tombstones: dict[str, dict[str, Any]] = {}  # alpaca id of a replaced order -> its object
        self._tomb_at: dict[int, str] = {}  # seq of a "replaced" event -> the tombstone it shows
        self._cids: dict[str, str] = {}  # client ids of replacements -> alpaca id
        self._brackets: dict[str, dict[str, Any]] = {}  # entry core id -> held legs
        self._exec_seq: dict[str, int] = {}
        self._scanned = 0

    # -- symbols and ids --------------------------------------------------------------------------
    def wire_symbol(self, symbol: str) -> str:
        inst = self.broker.venue.instruments.get(symbol)
        if inst is not None and inst.asset_class.value == "crypto":
            return f"{inst.base_currency or symbol.split('-')[0]}/{inst.currency}"
        return symbol

    def core_symbol(self, wire: str) -> str:
        return wire.replace("/", "-") if "/" in wire else wire

    def _alias_at(self, core_id: str, seq: int | None) -> tuple[str, str] | None:
        hist = self._alias.get(core_id)
        if not hist:
            return None
        chosen = None
        for from_seq, aid, cid in hist:
            if seq is None or seq > from_seq:
                chosen = (aid, cid)
        return chosen

    def core_id(self, alpaca_id: str) -> str:
        """The core order behind an Alpaca id (404 when unknown; 422 for a replaced one)."""
        if alpaca_id in self._tombstones:
            raise _err(422, 42210000, "order is replaced and cannot be changed")
        if alpaca_id in self._by_alpaca:
            return self._by_alpaca[alpaca_id]
        if alpaca_id in self._alias:  # the original id of a replaced order
            raise _err(422, 42210000, "order is replaced and cannot be changed")
        if alpaca_id in self.broker._entries:
            return alpaca_id
        raise _err(404, 40410000, "order not found")

    # -- translation ------------------------------------------------------------------------------
    def order(self, obj: dict[str, Any], seq: int | None = None) -> dict[str, Any]:
        """A core order object as Alpaca's (alias ids, wire symbol, every documented key)."""
        out = {**obj, **{k: obj.get(k) for k in _ORDER_KEYS_ADDED}}
        core = str(obj["id"])
        alias = self._alias_at(core, seq)
        if alias is not None:
            hist = self._alias[core]
            out["id"], out["client_order_id"] = alias
            ids = [h[1] for h in hist]
            at = ids.index(alias[0])
            out["replaces"] = ids[at - 1] if at > 0 else None
        out["symbol"] = self.wire_symbol(str(obj["symbol"]))
        out["asset_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, "alpaca-asset:" + out["symbol"]))
        legs = obj.get("legs")
        if legs:
            out["legs"] = [self.order(leg, seq) for leg in legs]
        held = self._brackets.get(core)
        if held is not None and not held.get("active"):
            out["order_class"] = "bracket"
            out["legs"] = [dict(leg) for leg in held["legs"]]
        elif held is not None:
            out["order_class"] = "bracket"
            out["legs"] = [
                self.order(self.broker.get_order(c, nested=False), seq) for c in held.get("cores", [])
            ]
        return out

    def update(self, seq: int, event: dict[str, Any]) -> dict[str, Any]:
        """A core event as Alpaca's ``trade_updates`` data."""
        data = {k: v for k, v in event.items() if k not in ("order", "event_id")}
        data["event_id"] = str(seq)
        tomb = self._tomb_at.get(seq)
        data["order"] = dict(self._tombstones[tomb]) if tomb else self.order(event["order"], seq)
        return data

    def events(self, since: int, until: int | None) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            return [(seq, self.update(seq, ev)) for seq, ev in self.broker.events_between(since, until)]

    # -- orders -----------------------------------------------------------------------------------
    def submit(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise _err(422, 42210000, "the request body must be a JSON object")
        body = dict(body)
        if isinstance(body.get("symbol"), str):
            body["symbol"] = self.core_symbol(body["symbol"])
        if body.get("type") == "trailing_stop":
            raise _err(422, 42210000, "order type trailing_stop is not supported by this venue")
        cid = body.get("client_order_id")
        with self._lock:
            if isinstance(cid, str) and cid in self._cids:
                raise _err(422, 40010001, "client_order_id must be unique")
            if body.get("order_class") == "bracket":
                return self._bracket(body)
            return self.order(self.broker.submit(body))

    def _bracket(self, body: dict[str, Any]) -> dict[str, Any]:
        """Entry to the core now; its exits held until it fills (then an OCO pair in the core)."""
        tp, sl = body.pop("take_profit", None), body.pop("stop_loss", None)
        body.pop("order_class")
        if not isinstance(tp, Mapping) or not isinstance(sl, Mapping):
            raise _err(422, 42210000, "take_profit and stop_loss are required for order_class bracket")
        if body.get("type") not in ("market", "limit"):
            raise _err(422, 42210000, 'bracket entries must be "market" or "limit" orders')
        entry = self.broker.submit(body)
        exit_side = "sell" if body.get("side") == "buy" else "buy"
        now = format_ts(self.broker.clock_ns)
        legs = []
        for kind, price in (("limit", tp.get("limit_price")), ("stop", sl.get("stop_price"))):
            leg = {**entry, "id": str(uuid.uuid4()), "client_order_id": str(uuid.uuid4()), "side": exit_side,
                   "type": kind, "order_type": kind, "status": "held", "filled_qty": "0",
                   "filled_avg_price": None, "limit_price": price if kind == "limit" else None,
                   "stop_price": price if kind == "stop" else None, "legs": None, "created_at": now,
                   "order_class": "bracket"}  # fmt: skip
            legs.append(self.order(leg) | {"id": leg["id"], "client_order_id": leg["client_order_id"]})
        self._brackets[str(entry["id"])] = {
            "legs": legs, "tp": dict(tp), "sl": dict(sl), "side": exit_side,
            "tif": body.get("time_in_force", "gtc"),
            "symbol": body["symbol"], "active": False,
        }  # fmt: skip
        return self.order(entry)

    def activate_brackets(self) -> None:
        """Legs of every bracket whose entry has filled start working (as the core's OCO pair)."""
        with self._lock:
            for core, br in self._brackets.items():
                if br["active"]:
                    continue
                entry = self.broker._entries[core].order
                if entry.status.value != "filled":
                    if not entry.is_open:
                        br["active"] = True  # cancelled / expired before filling: legs never work
                    continue
                br["active"] = True
                tp_leg, sl_leg = br["legs"]
                sl = {"stop_price": br["sl"]["stop_price"], "client_order_id": sl_leg["client_order_id"]}
                if br["sl"].get("limit_price") is not None:
                    sl["limit_price"] = br["sl"]["limit_price"]
                made = self.broker.submit(
                    {"symbol": br["symbol"], "qty": str(entry.filled_qty), "side": br["side"],
                     "type": "limit", "time_in_force": br["tif"], "order_class": "oco",
                     "client_order_id": tp_leg["client_order_id"],
                     "take_profit": {"limit_price": br["tp"]["limit_price"]}, "stop_loss": sl}
                )  # fmt: skip
                made_legs = [made, *(made.get("legs") or [])]
                br["cores"] = [str(o["id"]) for o in made_legs]
                for leg_obj, shown in zip(made_legs, (tp_leg, sl_leg), strict=False):
                    cid = str(shown["client_order_id"])
                    self._alias[str(leg_obj["id"])] = [(0, str(shown["id"]), cid)]
                    self._by_alpaca[str(shown["id"])] = str(leg_obj["id"])

    def get_order(self, alpaca_id: str) -> dict[str, Any]:
        with self._lock:
            if alpaca_id in self._tombstones:
                return dict(self._tombstones[alpaca_id])
            for br in self._brackets.values():
                for leg in br["legs"]:
                    if leg["id"] == alpaca_id and not br["active"]:
                        return dict(leg)
            return self.order(self.broker.get_order(self.core_id(alpaca_id)))

    def by_client_id(self, cid: str) -> dict[str, Any]:
        with self._lock:
            aid = self._cids.get(cid)
            if aid is not None:
                return self.order(self.broker.get_order(self._by_alpaca[aid]))
            for tomb in self._tombstones.values():
                if tomb["client_order_id"] == cid:
                    return dict(tomb)
            return self.order(self.broker.get_by_client_id(cid))

    def list_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        core_params = dict(params)
        if "symbols" in core_params:
            core_params["symbols"] = ",".join(self.core_symbol(s) for s in core_params["symbols"].split(","))
        with self._lock:
            rows = [self.order(o) for o in self.broker.list_orders(core_params)]
            if params.get("status", "open") in ("closed", "all"):
                after = parse_ts(params["after"], "after") if params.get("after") else None
                until = parse_ts(params["until"], "until") if params.get("until") else None
                for tomb in self._tombstones.values():
                    created = parse_ts(str(tomb["created_at"]))
                    if (after is None or created > after) and (until is None or created < until):
                        rows.append(dict(tomb))
                rows.sort(key=lambda o: (parse_ts(str(o["created_at"])), str(o["id"])),
                          reverse=params.get("direction", "desc") == "desc")  # fmt: skip
                limit = int(params.get("limit") or 50)
                rows = rows[:limit]
            return rows

    def cancel(self, alpaca_id: str) -> None:
        with self._lock:
            for br in self._brackets.values():
                if any(leg["id"] == alpaca_id for leg in br["legs"]) and not br["active"]:
                    raise _err(422, 42210000, "held bracket legs are cancelled with their entry")
            self.broker.cancel(self.core_id(alpaca_id))

    def replace(self, alpaca_id: str, body: Any) -> dict[str, Any]:
        """Alpaca's replace: a new order (new id and client id) takes the old one's place."""
        if not isinstance(body, Mapping):
            raise _err(422, 42210000, "the request body must be a JSON object")
        fields = {k: body[k] for k in ("limit_price", "stop_price", "qty") if body.get(k) is not None}
        if body.get("trail") is not None:
            raise _err(422, 42210000, "trail applies to trailing_stop orders only")
        with self._lock:
            core = self.core_id(alpaca_id)
            cid = body.get("client_order_id") or str(uuid.uuid4())
            if not isinstance(cid, str) or not 0 < len(cid) <= 128:
                raise _err(422, 42210000, "client_order_id must be a string of 1 to 128 characters")
            if cid in self._cids or cid in self.broker._by_client:
                raise _err(422, 40010001, "client_order_id must be unique")
            old = self.order(self.broker.get_order(core))
            before = self.broker.last_event_id
            self.broker.replace(core, {k: str(v) for k, v in fields.items()})
            after = self.broker.last_event_id
            new_id = str(uuid.uuid4())
            now = format_ts(self.broker.clock_ns)
            tomb = {**old, "status": "replaced", "replaced_by": new_id, "replaced_at": now, "updated_at": now}
            self._tombstones[old["id"]] = tomb
            for seq in range(before + 1, after + 1):
                self._tomb_at[seq] = old["id"]
            hist = self._alias.setdefault(core, [(0, old["id"], old["client_order_id"])])
            hist.append((after, new_id, cid))
            self._by_alpaca.pop(old["id"], None)
            self._by_alpaca[new_id] = core
            self._cids[cid] = new_id
            return self.order(self.broker.get_order(core))

    def fill(self, client_id: str, qty: float, price: float, fee: float = 0.0) -> dict[str, Any]:
        """Admin: execute ``qty`` of the order with ``client_id`` (the latest of a replaced chain)."""
        with self._lock:
            core = self.broker._by_client.get(client_id)  # a replaced chain keeps its first client id
            if core is None:
                raise _err(404, 40410000, "order not found")
            out = self.broker.execute(core, qty, price, fee)
            self.activate_brackets()
            return self.order(out)

    # -- account ----------------------------------------------------------------------------------
    def positions(self) -> list[dict[str, Any]]:
        return [self._position(p) for p in self.broker.positions()]

    def position(self, wire: str) -> dict[str, Any]:
        return self._position(self.broker.position(self.core_symbol(wire)))

    def _position(self, p: dict[str, Any]) -> dict[str, Any]:
        """A core position as Alpaca's: wire symbol, unsigned qty with its side, every documented key."""
        sym = self.wire_symbol(str(p["symbol"]))
        qty = float(p["qty"])
        cost, value = float(p["cost_basis"]), float(p["market_value"])
        pl = float(p["unrealized_pl"])
        out = {k: v for k, v in p.items() if k != "currency"}
        out.update(
            symbol=sym,
            asset_id=str(uuid.uuid5(uuid.NAMESPACE_URL, "alpaca-asset:" + sym)),
            exchange="CRYPTO" if "/" in sym else "ARCA",
            asset_marginable="/" not in sym,
            side="long" if qty > 0 else "short",
            qty=_num(abs(qty)),
            qty_available=_num(abs(qty)),
            unrealized_plpc=_num(pl / abs(cost)) if cost else "0",
            unrealized_intraday_pl=_num(pl),
            unrealized_intraday_plpc=_num(pl / abs(value)) if value else "0",
            lastday_price=p["current_price"],
            change_today="0",
        )
        return out

    def account(self) -> dict[str, Any]:
        """The core's account with every documented key of Alpaca's (margin figures of a cash account)."""
        a = self.broker.account()
        bp = a["buying_power"]
        a.update(
            crypto_status="ACTIVE", regt_buying_power=bp, daytrading_buying_power=bp,
            non_marginable_buying_power=bp, accrued_fees="0", pending_transfer_in="0",
            initial_margin="0", maintenance_margin="0", last_maintenance_margin="0", sma="0",
            daytrade_count=0, trade_suspended_by_user=False,
        )  # fmt: skip
        return a

    def activities(self, params: dict[str, str]) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.broker.activities(params)
            for seq, ev in self.broker.events_between(self._scanned):
                if ev.get("execution_id"):
                    self._exec_seq[str(ev["execution_id"])] = seq
                self._scanned = seq
            out = []
            for act in rows:
                exec_id = str(act["id"]).split("::", 1)[-1]
                alias = self._alias_at(str(act["order_id"]), self._exec_seq.get(exec_id))
                sym = self.wire_symbol(str(act["symbol"]))
                out.append({**act, "symbol": sym, "order_id": alias[0] if alias else act["order_id"]})
            return out

    def asset(self, wire: str) -> dict[str, Any]:
        sym = self.core_symbol(wire)
        inst = self.broker.venue.instruments.get(sym)
        if inst is None or sym not in self.broker.md.traded:
            raise _err(404, 40410000, f"asset not found for {wire}")
        crypto = inst.asset_class.value == "crypto"
        name = self.wire_symbol(sym)
        out: dict[str, Any] = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "alpaca-asset:" + name)),
            "class": "crypto" if crypto else "us_equity",
            "exchange": "CRYPTO" if crypto else "ARCA",
            "symbol": name,
            "name": name,
            "status": "active",
            "tradable": True,
            "marginable": not crypto,
            "maintenance_margin_requirement": 100 if crypto else 30,
            "shortable": not crypto and inst.shortable,
            "easy_to_borrow": not crypto,
            "fractionable": True,
            "attributes": [],
        }
        if crypto:
            out.update(min_order_size=str(inst.lot_size), min_trade_increment=str(inst.lot_size),
                       price_increment=str(inst.tick_size))  # fmt: skip
        return out

    def state(self) -> dict[str, Any]:
        with self._lock:
            s = self.broker.state()
            s["orders"] = [self.order(o) for o in s["orders"]] + [dict(t) for t in self._tombstones.values()]
            return s


# -- the NYSE calendar ------------------------------------------------------------------------------
def _sessions(start: date, end: date) -> list[tuple[date, int, int]]:
    """(day, open, close) of each NYSE session from start to end, ns UTC (hflite's calendar)."""
    import pandas as pd

    from hflite.domain.instrument import AssetClass, Calendar, Instrument
    from hflite.engine.market import available_at, nyse_sessions

    days = nyse_sessions(pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
    if len(days) == 0:
        return []
    xnys = Instrument("XNYS", AssetClass.EQUITY, "USD", Calendar.XNYS, 0.01, 1.0)
    closes = available_at(xnys, "1d", pd.DatetimeIndex(days))[0]
    out = []
    for d, close in zip(days, closes, strict=True):
        day = d.date()
        opening = datetime(day.year, day.month, day.day, 9, 30, tzinfo=_NY)
        out.append((day, int(opening.timestamp()) * 10**9, int(close)))
    return out


def _ny(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).astimezone(_NY).isoformat(timespec="seconds")


def calendar_json(params: dict[str, str]) -> list[dict[str, Any]]:
    try:
        start = date.fromisoformat(params.get("start") or "1970-01-01")
        end = date.fromisoformat(params.get("end") or "2029-12-31")
    except ValueError:
        raise _err(422, 42210000, "start and end must be dates (YYYY-MM-DD)") from None
    out = []
    for day, opening, close in _sessions(start, end):
        out.append({
            "date": day.isoformat(),
            "open": datetime.fromtimestamp(opening / 1e9, UTC).astimezone(_NY).strftime("%H:%M"),
            "close": datetime.fromtimestamp(close / 1e9, UTC).astimezone(_NY).strftime("%H:%M"),
            "session_open": "0400",
            "session_close": "2000",
            "settlement_date": (day + timedelta(days=1)).isoformat(),
        })  # fmt: skip
    return out


def clock_json(now_ns: int) -> dict[str, Any]:
    """GET /v2/clock at the wall clock ``now_ns``: open or not, next open and close (New York time)."""
    today = datetime.fromtimestamp(now_ns / 1e9, UTC).date()
    sessions = _sessions(today - timedelta(days=1), today + timedelta(days=10))
    is_open = any(o <= now_ns < c for _, o, c in sessions)
    nxt_open = next((o for _, o, _c in sessions if o > now_ns), now_ns)
    nxt_close = next((c for _, _o, c in sessions if c > now_ns), now_ns)
    return {
        "timestamp": _ny(now_ns),
        "is_open": is_open,
        "next_open": _ny(nxt_open),
        "next_close": _ny(nxt_close),
    }


# -- websocket framing (RFC 6455) -------------------------------------------------------------------
def _read_frame(rfile: Any) -> tuple[int, bytes]:
    """(opcode, payload) of the next frame from a client (masked); fragments are joined."""
    payload = b""
    opcode = 0
    while True:
        head = rfile.read(2)
        if len(head) < 2:
            raise ConnectionError("websocket closed")
        fin, op = head[0] & 0x80, head[0] & 0x0F
        n = head[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", rfile.read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", rfile.read(8))[0]
        mask = rfile.read(4) if head[1] & 0x80 else b""
        data = rfile.read(n)
        if mask:
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        if op >= 0x8:  # control frames are never fragmented
            return op, data
        opcode = opcode or op
        payload += data
        if fin:
            return opcode, payload


def _frame(opcode: int, data: bytes) -> bytes:
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + data


class _Server(Server):
    app: FakeAlpacaServer


class _Handler(Handler):
    server: _Server
    server_version = "hflite-fake-alpaca/1"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # -- one request ------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        raw = self._read_body()
        if method == "GET" and url.path == "/stream":
            self._websocket()
            return
        op = _op_of(method, url.path)
        fault, retry_after = app.take_fault(op) if op else (None, None)
        script_fault = app.front.broker.count_request(method, path_key(url.path))
        if script_fault is not None and script_fault.action == "drop":
            self._drop()
            return
        if script_fault is not None and script_fault.respond is not None:
            fault, retry_after = str(script_fault.respond), 1.0
        if script_fault is not None and script_fault.action == "timeout":
            fault = "timeout"
        if fault in ("429", "503"):
            status = int(fault)
            message = "too many requests" if status == 429 else "service unavailable"
            headers = {"Retry-After": f"{retry_after:g}"} if status == 429 and retry_after is not None else {}
            self._send_json(status, {"code": status * 100000, "message": message}, headers)
            return
        key, secret = self.headers.get("APCA-API-KEY-ID"), self.headers.get("APCA-API-SECRET-KEY")
        if not app.authorised(key, secret):
            self._send_json(401, {"code": 40110000, "message": "request is not authorized"})
            return
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            status, payload = self._route(method, url.path, params, raw)
        except BrokerError as exc:
            status, payload = exc.status, {"code": exc.code, "message": exc.message}
        if fault == "timeout":
            app.stopping.wait(app.hold_s)
            self._drop()
            return
        if fault == "malformed":
            self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
            return
        if status == 204:
            self._send(204, b"", "application/json")
        else:
            self._send_json(status, payload)

    def _route(self, method: str, path: str, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        app = self.server.app
        front = app.front
        if method == "GET":
            return 200, self._get(path, params)
        body = _json(raw) if method in ("POST", "PATCH") else None
        if method == "POST":
            if path == "/v2/orders":
                return 200, front.submit(body)
            if path == "/admin/clock":
                return 200, app.move_clock(body)
            if path == "/admin/fill":
                if not isinstance(body, Mapping):
                    raise _err(422, 42210000, "client_order_id, qty and price are required")
                return 200, front.fill(str(body.get("client_order_id")), float(body.get("qty", 0)),
                                       float(body.get("price", 0)), float(body.get("fee", 0)))  # fmt: skip
            if path == "/admin/order":
                return 200, front.order(front.broker.submit(body or {}, source="admin"))
        elif method == "DELETE" and path.startswith("/v2/orders/"):
            front.cancel(path.rsplit("/", 1)[1])
            return 204, None
        elif method == "PATCH" and path.startswith("/v2/orders/"):
            return 200, front.replace(path.rsplit("/", 1)[1], body)
        raise _err(404, 40410000, f"endpoint not found: {method} {path}")

    def _get(self, path: str, params: dict[str, str]) -> Any:
        app = self.server.app
        front = app.front
        simple = {
            "/v2/account": front.account,
            "/v2/positions": front.positions,
            "/admin/state": front.state,
        }
        if path in simple:
            return simple[path]()
        with_params = {
            "/v2/calendar": calendar_json,
            "/v2/orders": front.list_orders,
            "/v2/account/activities/FILL": front.activities,
            # the market-data API's latest quotes (stocks)
            "/v2/stocks/quotes/latest": lambda p: front.broker.latest_quotes(p.get("symbols", "")),
        }
        if path in with_params:
            return with_params[path](params)
        if path == "/v2/clock":
            return clock_json(app.wall_ns())
        if path == "/v2/orders:by_client_order_id":
            return front.by_client_id(params.get("client_order_id", ""))
        if path.startswith("/v2/orders/"):
            return front.get_order(path.rsplit("/", 1)[1])
        if path.startswith("/v2/positions/"):
            return front.position(path.split("/v2/positions/", 1)[1])
        if path.startswith("/v2/assets/"):
            return front.asset(path.split("/v2/assets/", 1)[1])
        if path == "/admin/events":
            try:
                since = int(params.get("since_id") or 0)
                until = int(params["until_id"]) if params.get("until_id") else None
            except ValueError:
                raise _err(422, 42210000, "since_id and until_id must be integers") from None
            return [{"stream": "trade_updates", "data": d} for _, d in front.events(since, until)]
        raise _err(404, 40410000, f"endpoint not found: GET {path}")

    # -- the trade_updates websocket --------------------------------------------------------------
    def _websocket(self) -> None:
        app = self.server.app
        key = self.headers.get("Sec-WebSocket-Key")
        if (self.headers.get("Upgrade") or "").lower() != "websocket" or not key:
            self._send_json(400, {"code": 40000000, "message": "websocket upgrade required"})
            return
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()  # noqa: S324 - RFC 6455
        self.close_connection = True
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        write_lock = threading.Lock()

        def send(opcode: int, obj: Any) -> None:
            data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
            with write_lock:
                self.wfile.write(_frame(opcode, data))
                self.wfile.flush()

        try:
            self._ws_session(app, send)
        except (OSError, ConnectionError, ValueError):
            return

    def _ws_session(self, app: FakeAlpacaServer, send: Any) -> None:
        op, data = _read_frame(self.rfile)
        msg = json.loads(data) if op in (1, 2) else {}
        creds = msg.get("data") or {} if isinstance(msg, dict) else {}
        if msg.get("action") != "authenticate" or not app.authorised(
            creds.get("key_id"), creds.get("secret_key")
        ):
            refused = {
                "action": "authenticate",
                "status": "unauthorized",
                "message": "access key verification failed",
            }
            send(2, {"stream": "authorization", "data": refused})
            send(8, struct.pack("!H", 1008))
            return
        send(2, {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}})
        op, data = _read_frame(self.rfile)
        msg = json.loads(data) if op in (1, 2) else {}
        streams = [s for s in ((msg.get("data") or {}).get("streams") or []) if s == "trade_updates"]
        cursor = app.front.broker.last_event_id
        send(2, {"stream": "listening", "data": {"streams": streams}})
        if not streams:
            return
        closed = threading.Event()
        threading.Thread(target=self._ws_reader, args=(send, closed), daemon=True).start()
        generation = app.drops
        app.streaming(+1)
        try:
            self._follow(app, send, closed, cursor, generation)
        finally:
            app.streaming(-1)

    def _follow(self, app: Any, send: Any, closed: threading.Event, cursor: int, generation: int) -> None:
        """Send the trade updates after ``cursor`` as they happen, until the stream is dropped."""
        sent = 0
        while not app.stopping.is_set() and not closed.is_set():
            if app.drops != generation:
                self._drop()
                return
            batch = app.front.events(cursor, None)
            if not batch:
                app.front.broker.wait_events(cursor, 0.2)
                continue
            for seq, update in batch:
                send(2, {"stream": "trade_updates", "data": update})
                cursor, sent = seq, sent + 1
                app.last_update = update
                every = app.front.broker.script.drop_stream_every
                if every and sent >= every:
                    self._drop()
                    return

    def _ws_reader(self, send: Any, closed: threading.Event) -> None:
        """Answer pings and a close from the client."""
        try:
            while True:
                op, data = _read_frame(self.rfile)
                if op == 0x9:
                    send(0xA, data)
                elif op == 0x8:
                    with contextlib.suppress(OSError):
                        send(0x8, data[:2])
                    break
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            closed.set()


def _op_of(method: str, path: str) -> str | None:
    if method == "POST" and path == "/v2/orders":
        return "submit"
    if method == "DELETE" and path.startswith("/v2/orders/"):
        return "cancel"
    if method == "PATCH" and path.startswith("/v2/orders/"):
        return "replace"
    if method == "GET" and path.startswith("/v2/"):
        return "read"
    return None


def _json(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _err(400, 40010000, "request body format is invalid") from None


class FakeAlpacaServer(HttpApp):
    """The fake Alpaca on ``host:port`` (0 = a free port), REST and ``/stream`` on one port, as a
    context manager. ``fault_next``, ``drop_streams``, ``down``/``up`` drive its misbehaviour."""

    def __init__(
        self,
        broker: FakeBroker,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        key_id: str = "fake-key",
        secret: str = "fake-secret",  # noqa: S107 - the documented default of a local test server
        hold_s: float | None = None,
        wall_ns: Any = None,
    ) -> None:
        import time

        super().__init__(host, port)
        self.front = AlpacaFront(broker)
        self._key_id, self._secret = key_id.encode(), secret.encode()
        self.hold_s = hold_s if hold_s is not None else broker.script.timeout_hold_s
        self.wall_ns = wall_ns or time.time_ns
        self.stopping = threading.Event()
        self.drops = 0
        self._streams = 0  # trade_updates connections following the event log now
        self._streams_cond = threading.Condition()
        self.last_update: dict[str, Any] | None = None
        self._faults: dict[str, deque[tuple[str, float | None]]] = {op: deque() for op in _OPS}
        self._faults_lock = threading.Lock()

    @property
    def headers(self) -> dict[str, str]:
        return {"APCA-API-KEY-ID": self._key_id.decode(), "APCA-API-SECRET-KEY": self._secret.decode()}

    def authorised(self, key_id: Any, secret: Any) -> bool:
        ok = hmac.compare_digest(str(key_id or "").encode(), self._key_id)
        return ok & hmac.compare_digest(str(secret or "").encode(), self._secret)

    def fault_next(self, op: str, fault: str, retry_after_s: float | None = None) -> None:
        """The next request of kind ``op`` (submit, cancel, replace, read) gets ``fault``."""
        if op not in _OPS or fault not in ("429", "503", "timeout", "malformed"):
            raise ValueError(f"unknown op {op!r} or fault {fault!r}")
        with self._faults_lock:
            self._faults[op].append((fault, retry_after_s))

    def take_fault(self, op: str) -> tuple[str | None, float | None]:
        with self._faults_lock:
            return self._faults[op].popleft() if self._faults[op] else (None, None)

    def streaming(self, delta: int) -> None:
        """Count a trade_updates connection in (+1) or out (-1)."""
        with self._streams_cond:
            self._streams += delta
            self._streams_cond.notify_all()

    def drop_streams(self, wait_s: float = 5.0) -> None:
        """Close every trade_updates connection now (clients must reconnect); a client still
        subscribing is waited for (up to ``wait_s``), so the drop is never lost to a race."""
        with self._streams_cond:
            self._streams_cond.wait_for(lambda: self._streams > 0, timeout=wait_s)
            self.drops += 1
        self.front.broker.wake_waiters()

    def move_clock(self, body: Any) -> dict[str, Any]:
        b = self.front.broker
        if b.clock_mode != "driven":
            raise _err(409, 40900000, "the broker runs on the wall clock: /admin/clock is for driven mode")
        if not isinstance(body, Mapping) or not isinstance(body.get("ts"), str):
            raise _err(422, 42210000, 'ts is required (an RFC 3339 time, e.g. "2024-01-05T21:00:00Z")')
        with self.front._lock:
            before = b.last_event_id
            last = b.advance_to(parse_ts(body["ts"]))
            self.front.activate_brackets()
            return {
                "ts": format_ts(b.clock_ns),
                "last_event_id": last,
                "previous_event_id": min(before, last),
            }

    def start(self) -> FakeAlpacaServer:
        self.stopping.clear()
        self._start_http(_Server, _Handler, "fake-alpaca-http")
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (streams and held replies end at once)."""
        self.stopping.set()
        self.front.broker.wake_waiters()
        self._stop_http()


def serve(
    settings: Settings,
    port: int = 8766,
    script_path: str | Path | None = None,
    key_id: str | None = None,
    secret: str | None = None,
    *,
    host: str = "127.0.0.1",
    store: Store | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run the fake Alpaca (driven clock) until Ctrl-C or ``stop``: for a CLI. Prints its URL once it
    listens and sets ``ready``."""
    script = load_script(script_path) if script_path is not None else None
    broker = FakeBroker.from_settings(settings, store, clock="driven", script=script)
    kid, sec = broker_keys(key_id, secret)
    with FakeAlpacaServer(broker, host, port, key_id=kid, secret=sec) as srv:
        print(
            f"fake alpaca listening on {srv.url} (stream {srv.url.replace('http', 'ws')}/stream); "
            "Ctrl-C stops it"
        )
        wait_until_stopped(ready, stop)
