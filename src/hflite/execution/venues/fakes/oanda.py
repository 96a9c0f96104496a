"""A local fake of OANDA's v20 REST API and transaction stream, over the ``FakeBroker`` core.

The core (``hflite.execution.venues.fakebroker.FakeBroker``) keeps the orders, matches them bar by bar
with hflite's ``SimVenue``, and books positions and cash. This module is only a front: it turns v20
requests (``POST /v3/accounts/{id}/orders`` with a MarketOrderRequest, LimitOrderRequest or
StopOrderRequest, ``PUT .../orders/{specifier}`` to replace, ``PUT .../orders/{specifier}/cancel``,
``PUT .../trades/{id}/orders`` for a trade's take-profit and stop-loss) into core calls, and turns the
core's events into v20 Transactions with sequential ids (``MARKET_ORDER``, ``LIMIT_ORDER``,
``STOP_ORDER``, ``TAKE_PROFIT_ORDER``, ``STOP_LOSS_ORDER``, ``ORDER_FILL``, ``ORDER_CANCEL``,
``*_ORDER_REJECT``), served by ``GET .../transactions/sinceid`` and the newline-delimited
``GET .../transactions/stream`` (with ``HEARTBEAT`` lines). OANDA's trades (FIFO lots opened by fills)
are tracked here from the core's fills, as the v20 API reports them.

Pages followed (developer.oanda.com/rest-live-v20/...): account-ep, instrument-df, order-ep,
order-df, trade-ep, position-ep, transaction-ep, transaction-df, troubleshooting-errors. Deviations,
on purpose: fill prices are the core's exact prices (not rounded to the instrument's precision), so a
run's books equal the core's to the last digit; the account keeps the core's per-currency cash and
reports ``balance`` as the home-currency view of it (see ``OandaFront.summary``).

Test hooks (not OANDA's API): ``POST /admin/clock`` moves the driven market clock, and the
``OandaFront`` methods ``fill``, ``duplicate_last_fill``, ``foreign_fill``, ``reject_next`` and
``fault_next`` play the venue's part in the contract tests. Public names: ``OandaFront``,
``OandaFakeServer`` (the HTTP server as a context manager), ``oanda_name`` and ``serve``.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from hflite.domain.instrument import AssetClass, fx_pair_for
from hflite.execution.venues.fakebroker import BrokerError, FakeBroker, format_ts, parse_ts
from hflite.execution.venues.fakes.http import Handler, HttpApp, Server, wait_until_stopped
from hflite.execution.venues.oanda import oanda_name

if TYPE_CHECKING:
    from pathlib import Path

    from hflite.config import Settings
    from hflite.data.store import Store

DEFAULT_TOKEN = "fake-oanda-token"  # noqa: S105 - the documented default of a local test server
DEFAULT_ACCOUNT = "101-001-1234567-001"
HEARTBEAT_S = 5.0  # OANDA's transaction stream sends a heartbeat every 5 seconds
MAX_SINCE = 1000  # transactions per GET .../transactions/sinceid answer
MAX_ORDERS = 500  # OANDA's maximum ``count`` for GET .../orders

Op = Literal["submit", "cancel", "replace", "read"]
FaultKind = Literal["429", "503", "timeout", "malformed"]

_TYPE_OUT = {"market": "MARKET", "limit": "LIMIT", "stop": "STOP", "stop_limit": "STOP"}
_CREATE_TYPES = ("MARKET", "LIMIT", "STOP")
_DEPENDENT = ("TAKE_PROFIT", "STOP_LOSS")


def _dec(x: float) -> str:
    """A number as v20 sends it: a decimal string (shortest round-trip form, never an exponent)."""
    return str(np.format_float_positional(float(x), trim="-"))


def _fixed(x: float, places: int) -> str:
    return f"{x:.{max(places, 0)}f}"


def _places(step: float) -> int:
    """Decimal places of a tick or lot size (1e-5 -> 5, 1.0 -> 0)."""
    return max(0, round(-math.log10(step))) if step > 0 else 0


class V20Error(Exception):
    """A v20 error reply: HTTP status and body (``errorMessage``, maybe ``errorCode`` and a reject)."""

    def __init__(self, status: int, message: str, code: str = "", **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"errorMessage": message, **extra}
        if code:
            self.body["errorCode"] = code


@dataclass
class _OOrder:
    """One v20 order: a view of a core order (several v20 orders share one after replacements)."""

    id: str
    core_id: str
    kind: str  # MARKET, LIMIT, STOP, TAKE_PROFIT, STOP_LOSS
    instrument: str
    create_time: str
    client: dict[str, str] | None  # clientExtensions (None: placed without, e.g. on the website)
    time_in_force: str
    position_fill: str = "DEFAULT"
    price: float | None = None
    price_bound: float | None = None
    trade_id: str | None = None
    units: float = 0.0  # signed; 0 for trade-dependent orders
    state: str = "PENDING"
    replaces: str | None = None
    replaced_by: str | None = None
    filling_txn: str | None = None
    filled_time: str | None = None
    cancelling_txn: str | None = None
    cancelled_time: str | None = None
    trade_opened: str | None = None
    trades_closed: list[str] = field(default_factory=list)


@dataclass
class _Trade:
    id: str
    instrument: str
    price: float
    open_time: str
    initial_units: float
    current_units: float
    realized_pl: float = 0.0
    state: str = "OPEN"
    closing: list[str] = field(default_factory=list)
    dependents: list[str] = field(default_factory=list)  # core ids of its TP / SL orders


@dataclass
class _Ledger:
    """Per instrument, in the home currency at each fill's rate: realized P/L and commission."""

    pl: float = 0.0
    commission: float = 0.0


class OandaFront:
    """OANDA v20's view of a ``FakeBroker``: every method takes the front's lock, then the core's."""

    def __init__(
        self,
        core: FakeBroker,
        *,
        account_id: str = DEFAULT_ACCOUNT,
        currency: str = "USD",
        margin_rate: float = 0.0333,
    ) -> None:
        self.core = core
        self.account_id = account_id
        self.currency = currency
        self.margin_rate = margin_rate
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._txns: list[dict[str, Any]] = []  # transaction id = index + 1
        self._pumped = 0  # the last core event seq turned into transactions
        self._txn_at: dict[int, int] = {0: 0}  # core seq -> the last transaction id it caused
        self._orders: dict[str, _OOrder] = {}  # v20 order id -> order
        self._current: dict[str, str] = {}  # core order id -> its current v20 order id
        self._pending: dict[str, dict[str, Any]] = {}  # core client id -> what the request said
        self._cancel_reason: dict[str, str] = {}  # core order id -> why we asked the core to cancel
        self._replacing: dict[str, dict[str, Any]] = {}  # core order id -> the replacement request
        self._executions: set[str] = set()  # core execution ids already reported
        self._trades: dict[str, _Trade] = {}
        self._ledger: dict[str, _Ledger] = {}
        self._rejections: list[str] = []
        self._faults: dict[str, list[tuple[str, float | None]]] = {}
        self.echoes: list[dict[str, Any]] = []  # transactions to send again on open streams
        self.symbols = {oanda_name(s, core.venue.instruments.get(s)): s for s in core.md.traded}
        self.names = {s: n for n, s in self.symbols.items()}
        self.created = format_ts(time.time_ns()) or ""

    # -- transactions ------------------------------------------------------------------------------
    @property
    def last_id(self) -> int:
        with self._lock:
            self._pump()
            return len(self._txns)

    def _txn(self, kind: str, ts: str | None = None, **fields: Any) -> dict[str, Any]:
        tid = str(len(self._txns) + 1)
        txn: dict[str, Any] = {
            "id": tid,
            "time": ts or format_ts(self.core.clock_ns),
            "userID": 1234567,
            "accountID": self.account_id,
            "batchID": fields.pop("batchID", tid),
            "requestID": f"2{int(tid):017d}",
            "type": kind,
        }
        txn.update({k: v for k, v in fields.items() if v is not None})
        self._txns.append(txn)
        self._cond.notify_all()
        return txn

    def since(self, after: int, until: int | None = None) -> list[dict[str, Any]]:
        """Transactions with after < id [<= until], at most ``MAX_SINCE``."""
        with self._lock:
            self._pump()
            hi = len(self._txns) if until is None else min(until, len(self._txns))
            return [dict(t) for t in self._txns[max(after, 0) : hi][:MAX_SINCE]]

    def wait(self, after: int, timeout_s: float) -> bool:
        """Block until a transaction with id > ``after`` exists (True) or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._pump()
                if len(self._txns) > after:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))  # core events (fills) do not notify this condition

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _pump(self) -> None:
        """Turn every core event not seen yet into transactions (in the core's order)."""
        core = self.core
        while self._pumped < core.last_event_id:
            for seq, event in core.events_between(self._pumped, core.last_event_id):
                self._translate(event)
                self._pumped = seq
                self._txn_at[seq] = len(self._txns)

    def _translate(self, ev: dict[str, Any]) -> None:
        kind, obj = str(ev["event"]), ev["order"]
        core_id, ts = str(obj["id"]), str(ev["timestamp"])
        if kind == "new":
            self._on_new(obj, ts)
        elif kind in ("fill", "partial_fill"):
            if ev.get("execution_id") in self._executions:
                return  # the core repeating itself: OANDA reports a fill once
            self._executions.add(str(ev.get("execution_id")))
            self._on_fill(core_id, ev, ts)
        elif kind in ("canceled", "expired"):
            self._on_cancel(core_id, kind, ts)
        elif kind == "replaced":
            self._on_replaced(core_id, ts)

    def _on_new(self, obj: dict[str, Any], ts: str) -> None:
        req = self._pending.pop(str(obj["client_order_id"]), {})
        kind = req.get("kind") or _TYPE_OUT[str(obj["type"])]
        instrument = self.names[str(obj["symbol"])]
        units = float(obj["qty"]) * (1 if obj["side"] == "buy" else -1)
        price = obj.get("stop_price") if obj["type"] in ("stop", "stop_limit") else obj.get("limit_price")
        bound = obj.get("limit_price") if obj["type"] == "stop_limit" else None
        tif = req.get("timeInForce") or {"gtc": "GTC", "day": "GFD", "ioc": "IOC"}[str(obj["time_in_force"])]
        txn = self._txn(
            f"{kind}_ORDER",
            ts,
            instrument=instrument if kind not in _DEPENDENT else None,
            units=_dec(units) if kind not in _DEPENDENT else None,
            tradeID=req.get("tradeID"),
            price=self._px(instrument, float(price) if price is not None else None),
            priceBound=self._px(instrument, float(bound) if bound is not None else None),
            timeInForce=tif,
            positionFill=req.get("positionFill", "DEFAULT") if kind not in _DEPENDENT else None,
            triggerCondition="DEFAULT" if kind != "MARKET" else None,
            reason="CLIENT_ORDER",
            clientExtensions=req.get("clientExtensions"),
        )
        o = _OOrder(
            txn["id"],
            str(obj["id"]),
            kind,
            instrument,
            ts,
            req.get("clientExtensions"),
            tif,
            req.get("positionFill", "DEFAULT"),
            float(price) if price is not None else None,
            float(bound) if bound is not None else None,
            req.get("tradeID"),
            units if kind not in _DEPENDENT else 0.0,
        )
        self._orders[o.id] = o
        self._current[o.core_id] = o.id
        if o.trade_id is not None and o.trade_id in self._trades:
            self._trades[o.trade_id].dependents.append(o.core_id)

    def _on_fill(self, core_id: str, ev: dict[str, Any], ts: str) -> None:
        o = self._orders[self._current[core_id]]
        symbol = self.symbols[o.instrument]
        inst = self.core.venue.instruments[symbol]
        units = float(ev["qty"]) * (1 if ev["order"]["side"] == "buy" else -1)
        price, fee = float(ev["price"]), float(ev.get("commission") or 0.0)
        rate = self._home_per(inst.currency, price, symbol)
        tid = str(len(self._txns) + 1)
        opened, closed, reduced, pl_quote = self._trade_fill(o.instrument, units, price, tid, ts)
        ledger = self._ledger.setdefault(o.instrument, _Ledger())
        ledger.pl += pl_quote * rate
        ledger.commission += fee * rate
        self._txn(
            "ORDER_FILL",
            ts,
            orderID=o.id,
            clientOrderID=(o.client or {}).get("id"),
            instrument=o.instrument,
            units=_dec(units),
            requestedUnits=_dec(units),
            price=_dec(price),
            fullVWAP=_dec(price),
            reason=f"{o.kind}_ORDER",
            pl=_dec(pl_quote * rate),
            quotePL=_dec(pl_quote),
            financing="0",
            baseFinancing="0",
            commission=_dec(fee * rate),
            guaranteedExecutionFee="0",
            halfSpreadCost="0",
            accountBalance=_dec(self._balance()),
            homeConversionFactors={
                "gainQuoteHome": {"factor": _dec(rate)},
                "lossQuoteHome": {"factor": _dec(rate)},
            },
            gainQuoteHomeConversionFactor=_dec(rate),
            lossQuoteHomeConversionFactor=_dec(rate),
            tradeOpened=opened,
            tradesClosed=closed or None,
            tradeReduced=reduced,
        )
        if str(ev["order"]["status"]) == "filled":  # the order as it was at this fill
            o.state, o.filling_txn, o.filled_time = "FILLED", tid, ts
        if opened is not None:
            o.trade_opened = opened["tradeID"]
        o.trades_closed += [c["tradeID"] for c in closed]
        for c in closed:  # OANDA cancels a closed trade's take-profit and stop-loss
            for dep in self._trades[c["tradeID"]].dependents:
                if self._core_open(dep) and dep != core_id:
                    self._cancel_reason[dep] = "LINKED_TRADE_CLOSED"
                    self.core.cancel(dep)

    def _trade_fill(
        self, instrument: str, units: float, price: float, tid: str, ts: str
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any] | None, float]:
        """Close or reduce open trades FIFO, open one with what is left; (opened, closed, reduced,
        realized P/L in the quote currency)."""
        left, pl = units, 0.0
        closed: list[dict[str, Any]] = []
        reduced = None
        for t in [t for t in self._trades.values() if t.instrument == instrument and t.state == "OPEN"]:
            if abs(left) < 1e-12 or (t.current_units > 0) == (left > 0):
                continue
            take = math.copysign(min(abs(left), abs(t.current_units)), left)
            gain = -take * (price - t.price)
            pl += gain
            t.realized_pl += gain
            t.current_units += take
            left -= take
            t.closing.append(tid)
            info = {
                "tradeID": t.id,
                "units": _dec(take),
                "price": _dec(price),
                "realizedPL": _dec(gain),
                "financing": "0",
                "halfSpreadCost": "0",
            }
            if abs(t.current_units) < 1e-9:
                t.current_units, t.state = 0.0, "CLOSED"
                closed.append(info)
            else:
                reduced = info
        opened = None
        if abs(left) >= 1e-12:
            self._trades[tid] = _Trade(tid, instrument, price, ts, left, left)
            opened = {
                "tradeID": tid,
                "units": _dec(left),
                "price": _dec(price),
                "guaranteedExecutionFee": "0",
                "halfSpreadCost": "0",
                "initialMarginRequired": "0",
            }
        return opened, closed, reduced, pl

    def _on_cancel(self, core_id: str, kind: str, ts: str) -> None:
        o = self._orders[self._current[core_id]]
        reason = self._cancel_reason.pop(core_id, "")
        if not reason:
            reason = "TIME_IN_FORCE_EXPIRED" if kind == "expired" else "LINKED_TRADE_CLOSED"
        txn = self._txn(
            "ORDER_CANCEL", ts, orderID=o.id, clientOrderID=(o.client or {}).get("id"), reason=reason
        )
        o.state, o.cancelling_txn, o.cancelled_time = "CANCELLED", txn["id"], ts

    def _on_replaced(self, core_id: str, ts: str) -> None:
        req = self._replacing.pop(core_id, None)
        if req is None:
            return  # not a v20 replacement (nothing OANDA reports)
        old = self._orders[self._current[core_id]]
        cancel_id, new_id = str(len(self._txns) + 1), str(len(self._txns) + 2)
        self._txn(
            "ORDER_CANCEL",
            ts,
            batchID=cancel_id,
            orderID=old.id,
            clientOrderID=(old.client or {}).get("id"),
            reason="CLIENT_REQUEST_REPLACED",
            replacedByOrderID=new_id,
        )
        old.state, old.cancelling_txn, old.cancelled_time, old.replaced_by = (
            "CANCELLED",
            cancel_id,
            ts,
            new_id,
        )
        core_obj = self.core.get_order(core_id)
        left = float(core_obj["qty"]) - float(core_obj["filled_qty"])  # the replacement is for what is left
        units = left * (1 if core_obj["side"] == "buy" else -1)
        price = req["price"] if req.get("price") is not None else old.price
        new = _OOrder(
            new_id,
            core_id,
            old.kind,
            old.instrument,
            ts,
            req.get("clientExtensions") or old.client,
            req.get("timeInForce") or old.time_in_force,
            old.position_fill,
            price,
            old.price_bound,
            old.trade_id,
            units if old.kind not in _DEPENDENT else 0.0,
            replaces=old.id,
        )
        self._txn(
            f"{new.kind}_ORDER",
            ts,
            batchID=cancel_id,
            instrument=new.instrument if new.kind not in _DEPENDENT else None,
            units=_dec(units) if new.kind not in _DEPENDENT else None,
            tradeID=new.trade_id,
            price=self._px(new.instrument, price),
            timeInForce=new.time_in_force,
            positionFill=new.position_fill if new.kind not in _DEPENDENT else None,
            triggerCondition="DEFAULT",
            reason="REPLACEMENT",
            replacesOrderID=old.id,
            cancellingTransactionID=cancel_id,
            clientExtensions=new.client,
        )
        self._orders[new.id] = new
        self._current[core_id] = new.id

    def _px(self, instrument: str, price: float | None) -> str | None:
        """An order's price as OANDA echoes it: at the instrument's displayPrecision."""
        if price is None:
            return None
        tick = self.core.venue.instruments[self.symbols[instrument]].tick_size
        return _fixed(float(price), _places(tick))

    def _core_open(self, core_id: str) -> bool:
        return str(self.core.get_order(core_id, nested=False)["status"]) in (
            "new",
            "partially_filled",
            "pending_new",
            "accepted",
        )

    def _home_per(self, ccy: str, price: float, symbol: str) -> float:
        """Home currency per one unit of ``ccy`` now (the pair's own fill price when it quotes it)."""
        if ccy == self.currency:
            return 1.0
        inst = self.core.venue.instruments[symbol]
        if inst.base_currency == self.currency:
            return 1.0 / price  # USD_JPY: JPY -> USD at this fill
        pair = fx_pair_for(ccy, self.currency)
        if pair is None or pair[0] not in self.core.md.bars:
            return 1.0
        b = self.core.md.bars[pair[0]]
        k = int(np.searchsorted(b.ts[: b.n], self.core.clock_ns, side="right")) - 1
        if k < 0:
            return 1.0
        close = float(b.close.item(k))
        return 1.0 / close if pair[1] else close

    # -- requests ------------------------------------------------------------------------------------
    def check_account(self, account_id: str) -> None:
        if account_id != self.account_id:
            raise V20Error(403, "The provided request was forbidden.")

    def create_order(self, body: Any) -> tuple[int, dict[str, Any]]:
        """POST /v3/accounts/{id}/orders: 201 with orderCreateTransaction, or 400 with a reject."""
        if not isinstance(body, Mapping) or not isinstance(body.get("order"), Mapping):
            raise V20Error(400, "The request was missing required data")
        req = dict(body["order"])
        with self._lock:
            self._pump()
            kind = str(req.get("type", "MARKET")).upper()
            if kind in _DEPENDENT:
                return self._dependents(str(req.get("tradeID", "")), {kind: req}, single=True)
            try:
                core_body = self._core_body(kind, req)
                if self._rejections:
                    why = self._rejections.pop(0)
                    raise _Reject(
                        "INSUFFICIENT_MARGIN" if "insufficient" in why.lower() else "ADMIN_CONFIGURED", why
                    )
                obj = self.core.submit(core_body)
            except _Reject as r:
                return self._reject(kind, req, r.reason, r.message)
            except BrokerError as exc:
                reason = {403: "INSUFFICIENT_MARGIN"}.get(exc.status, "INVALID_REQUEST")
                if exc.code == 40010001:  # the core refuses any reused client id (OANDA: a pending one)
                    reason = "CLIENT_ORDER_ID_ALREADY_EXISTS"
                return self._reject(kind, req, reason, exc.message)
            self._pump()
            o = self._orders[self._current[str(obj["id"])]]
            create = next(t for t in reversed(self._txns) if t["id"] == o.id)
            out: dict[str, Any] = {"orderCreateTransaction": create}
            fill = next((t for t in self._txns if t["type"] == "ORDER_FILL" and t["orderID"] == o.id), None)
            if fill is not None:
                out["orderFillTransaction"] = fill
            out["relatedTransactionIDs"] = [t["id"] for t in self._txns[int(o.id) - 1 :]]
            out["lastTransactionID"] = str(len(self._txns))
            return 201, out

    def _core_body(self, kind: str, req: dict[str, Any]) -> dict[str, Any]:
        """The core's order body for a v20 order request (``_Reject`` for what OANDA rejects)."""
        if kind not in _CREATE_TYPES:
            raise _Reject(
                "INVALID_REQUEST" if kind else "TYPE_MISSING", f"order type {kind} is not supported here"
            )
        name = req.get("instrument")
        if not name:
            raise _Reject("INSTRUMENT_MISSING", "The request was missing required data")
        symbol = self.symbols.get(str(name))
        if symbol is None:
            raise _Reject("INSTRUMENT_UNKNOWN", "Invalid value specified for 'instrument'")
        inst = self.core.venue.instruments[symbol]
        units = _units(req.get("units"), inst.lot_size)
        tif = str(req.get("timeInForce") or ("FOK" if kind == "MARKET" else "GTC"))
        core_tif = {"GTC": "gtc", "GFD": "day", "IOC": "ioc", "FOK": "ioc", "GTD": "gtc"}.get(tif)
        if core_tif is None or (kind == "MARKET" and tif not in ("FOK", "IOC")):
            raise _Reject("TIME_IN_FORCE_INVALID", f"timeInForce {tif} is not valid for a {kind} order")
        if kind == "MARKET":
            core_tif = "gtc"  # filled at the next bar by the core's rules
        cid = (req.get("clientExtensions") or {}).get("id")
        if cid is not None and (not isinstance(cid, str) or not 0 < len(cid) <= 128):
            raise _Reject("CLIENT_ORDER_ID_INVALID", "clientExtensions.id must be 1 to 128 characters")
        if cid is not None and self._pending_client(cid):
            raise _Reject("CLIENT_ORDER_ID_ALREADY_EXISTS", "The client Order ID specified is already in use")
        fill = str(req.get("positionFill") or "DEFAULT")
        body: dict[str, Any] = {
            "symbol": symbol,
            "qty": _dec(abs(units)),
            "side": "buy" if units > 0 else "sell",
            "time_in_force": core_tif,
            "client_order_id": cid or f"oanda-{len(self._txns) + 1}",
        }
        body.update(_priced(kind, req, inst.tick_size))
        self._pending[body["client_order_id"]] = {
            "kind": kind,
            "timeInForce": tif,
            "positionFill": fill,
            "clientExtensions": dict(req["clientExtensions"]) if cid is not None else None,
        }
        return body

    def _pending_client(self, cid: str) -> bool:
        """OANDA refuses a client id another PENDING order holds (a closed order's id may be reused)."""
        return any(o.state == "PENDING" and (o.client or {}).get("id") == cid for o in self._orders.values())

    def _reject(
        self, kind: str, req: dict[str, Any], reason: str, message: str
    ) -> tuple[int, dict[str, Any]]:
        self._pending.pop(str((req.get("clientExtensions") or {}).get("id")), None)
        fields = {
            k: req.get(k)
            for k in ("instrument", "units", "price", "timeInForce", "tradeID", "clientExtensions")
        }
        txn = self._txn(
            f"{kind or 'MARKET'}_ORDER_REJECT", None, rejectReason=reason, reason="CLIENT_ORDER", **fields
        )
        return 400, {
            "orderRejectTransaction": txn,
            "relatedTransactionIDs": [txn["id"]],
            "lastTransactionID": txn["id"],
            "errorCode": reason,
            "errorMessage": message,
        }

    def set_trade_orders(self, trade_id: str, body: Any) -> tuple[int, dict[str, Any]]:
        """PUT /v3/accounts/{id}/trades/{tradeSpecifier}/orders: a trade's take-profit and stop-loss."""
        if not isinstance(body, Mapping):
            raise V20Error(400, "The request was missing required data")
        wanted = {
            k: dict(body[f])
            for k, f in (("TAKE_PROFIT", "takeProfit"), ("STOP_LOSS", "stopLoss"))
            if isinstance(body.get(f), Mapping)
        }
        with self._lock:
            self._pump()
            return self._dependents(trade_id, wanted, single=False)

    def _dependents(
        self, trade_id: str, wanted: dict[str, dict[str, Any]], *, single: bool
    ) -> tuple[int, dict[str, Any]]:
        """Create a trade's TAKE_PROFIT / STOP_LOSS orders in the core (an OCO pair when both)."""
        t = self._trades.get(trade_id.lstrip("@"))
        first = next(iter(wanted), "TAKE_PROFIT")
        if t is None or t.state != "OPEN":
            reason = "TRADE_DOESNT_EXIST"
            if single:
                return self._reject(
                    first, next(iter(wanted.values()), {}), reason, "The Trade specified does not exist"
                )
            raise V20Error(404, "The Trade specified does not exist", reason)
        symbol = self.symbols[t.instrument]
        side = "sell" if t.current_units > 0 else "buy"
        base = {"symbol": symbol, "qty": _dec(abs(t.current_units)), "side": side, "time_in_force": "gtc"}
        cids = {}
        for kind, req in wanted.items():
            cid = (req.get("clientExtensions") or {}).get(
                "id"
            ) or f"oanda-{kind.lower()}-{len(self._txns) + 1}"
            if self._pending_client(cid):
                return self._reject(
                    kind,
                    req,
                    "CLIENT_ORDER_ID_ALREADY_EXISTS",
                    "The client Order ID specified is already in use",
                )
            try:
                _number(req.get("price"), f"{kind}_PRICE")
            except _Reject as r:
                return self._reject(kind, req, r.reason, r.message)
            cids[kind] = cid
            self._pending[cid] = {
                "kind": kind,
                "tradeID": t.id,
                "timeInForce": str(req.get("timeInForce") or "GTC"),
                "clientExtensions": dict(req["clientExtensions"]) if req.get("clientExtensions") else None,
            }
        tp, sl = wanted.get("TAKE_PROFIT"), wanted.get("STOP_LOSS")
        if tp is not None and sl is not None:
            body = dict(
                base,
                type="limit",
                order_class="oco",
                client_order_id=cids["TAKE_PROFIT"],
                take_profit={"limit_price": str(tp["price"])},
                stop_loss={"stop_price": str(sl["price"]), "client_order_id": cids["STOP_LOSS"]},
            )
            self.core.submit(body)
        elif tp is not None:
            self.core.submit(
                dict(base, type="limit", limit_price=str(tp["price"]), client_order_id=cids["TAKE_PROFIT"])
            )
        elif sl is not None:
            self.core.submit(
                dict(base, type="stop", stop_price=str(sl["price"]), client_order_id=cids["STOP_LOSS"])
            )
        self._pump()
        out: dict[str, Any] = {}
        related = []
        for kind, key in (
            ("TAKE_PROFIT", "takeProfitOrderTransaction"),
            ("STOP_LOSS", "stopLossOrderTransaction"),
        ):
            if kind in cids:
                core_id = str(self.core.get_by_client_id(cids[kind])["id"])
                txn = next(x for x in self._txns if x["id"] == self._current[core_id])
                out[key] = txn
                related.append(txn["id"])
        if single:
            out = {"orderCreateTransaction": next(iter(out.values()))}
        out["relatedTransactionIDs"] = related
        out["lastTransactionID"] = str(len(self._txns))
        return (201 if single else 200), out

    def _find(self, specifier: str) -> _OOrder:
        """An order by v20 id or by "@" + client id (the live one when several share it)."""
        spec = unquote(specifier)
        if spec.startswith("@"):
            cid = spec[1:]
            found = [o for o in self._orders.values() if (o.client or {}).get("id") == cid]
            live = [o for o in found if o.replaced_by is None]
            if live or found:
                return (live or found)[-1]
        elif spec in self._orders:
            return self._orders[spec]
        raise V20Error(404, "The Order specified does not exist", "ORDER_DOESNT_EXIST")

    def cancel_order(self, specifier: str) -> tuple[int, dict[str, Any]]:
        """PUT .../orders/{specifier}/cancel: 200 with orderCancelTransaction; 404 when not pending."""
        with self._lock:
            self._pump()
            try:
                o = self._find(specifier)
            except V20Error:
                return self._cancel_reject(
                    specifier, "ORDER_DOESNT_EXIST", "The Order specified does not exist"
                )
            if o.state != "PENDING" or not self._core_open(o.core_id):
                return self._cancel_reject(
                    specifier, "ORDER_DOESNT_EXIST", "The Order specified is not pending"
                )
            self._cancel_reason[o.core_id] = "CLIENT_REQUEST"
            self.core.cancel(o.core_id)
            self._pump()
            txn = next(
                t for t in reversed(self._txns) if t["type"] == "ORDER_CANCEL" and t["orderID"] == o.id
            )
            return 200, {
                "orderCancelTransaction": txn,
                "relatedTransactionIDs": [txn["id"]],
                "lastTransactionID": str(len(self._txns)),
            }

    def _cancel_reject(self, specifier: str, code: str, message: str) -> tuple[int, dict[str, Any]]:
        spec = unquote(specifier)
        txn = self._txn(
            "ORDER_CANCEL_REJECT",
            None,
            orderID=None if spec.startswith("@") else spec,
            clientOrderID=spec[1:] if spec.startswith("@") else None,
            rejectReason=code,
        )
        return 404, {
            "orderCancelRejectTransaction": txn,
            "relatedTransactionIDs": [txn["id"]],
            "lastTransactionID": txn["id"],
            "errorCode": code,
            "errorMessage": message,
        }

    def replace_order(self, specifier: str, body: Any) -> tuple[int, dict[str, Any]]:
        """PUT .../orders/{specifier}: cancel the order and create its replacement (new id,
        ``replacesOrderID``); the core moves its one order's price or units in place."""
        if not isinstance(body, Mapping) or not isinstance(body.get("order"), Mapping):
            raise V20Error(400, "The request was missing required data")
        req = dict(body["order"])
        with self._lock:
            self._pump()
            o = self._find(specifier)
            kind = str(req.get("type") or o.kind).upper()
            if o.state != "PENDING" or not self._core_open(o.core_id):
                return self._reject(kind, req, "ORDER_DOESNT_EXIST", "The Order specified is not pending")
            if kind != o.kind:
                return self._reject(
                    kind, req, "REPLACING_ORDER_INVALID", f"a {o.kind} order cannot become {kind}"
                )
            try:
                change = self._replacement(o, req)
            except _Reject as r:
                return self._reject(kind, req, r.reason, r.message)
            if not change:
                return self._reject(kind, req, "PRICE_MISSING", "The request was missing required data")
            self._replacing[o.core_id] = {
                "price": float(change.get("limit_price") or change.get("stop_price") or o.price or 0) or None,
                "clientExtensions": dict(req["clientExtensions"]) if req.get("clientExtensions") else None,
                "timeInForce": req.get("timeInForce"),
            }
            try:
                for key in ("qty", "limit_price", "stop_price"):
                    if key in change:
                        self.core.replace(o.core_id, {key: change[key]})
            except BrokerError as exc:
                self._replacing.pop(o.core_id, None)
                return self._reject(kind, req, "INVALID_REQUEST", exc.message)
            self._pump()
            new = self._orders[self._current[o.core_id]]
            cancel = next(t for t in self._txns if t["type"] == "ORDER_CANCEL" and t["orderID"] == o.id)
            create = next(t for t in self._txns if t["id"] == new.id)
            return 201, {
                "orderCancelTransaction": cancel,
                "orderCreateTransaction": create,
                "relatedTransactionIDs": [cancel["id"], create["id"]],
                "lastTransactionID": str(len(self._txns)),
            }

    def _replacement(self, o: _OOrder, req: dict[str, Any]) -> dict[str, Any]:
        """What a replacement changes in the core's order: its price, and its total quantity (the
        replacement is for ``units``, on top of what already filled)."""
        change: dict[str, Any] = {}
        if req.get("price") is not None:
            price = _number(req["price"], "PRICE")
            change["stop_price" if o.kind in ("STOP", "STOP_LOSS") else "limit_price"] = _dec(price)
        if req.get("units") is not None and o.kind not in _DEPENDENT:
            units = _number(req["units"], "UNITS")
            if (units > 0) != (o.units > 0):
                raise _Reject("UNITS_INVALID", "a replacement keeps the order's direction")
            core = self.core.get_order(o.core_id, nested=False)
            total = float(core["filled_qty"]) + abs(units)
            if abs(total - float(core["qty"])) > 1e-12:
                change["qty"] = _dec(total)
        return change

    # -- reads -----------------------------------------------------------------------------------------
    def order_json(self, o: _OOrder) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": o.id,
            "createTime": o.create_time,
            "state": o.state,
            "type": o.kind,
            "timeInForce": o.time_in_force,
        }
        if o.kind != "MARKET":
            out["triggerCondition"] = "DEFAULT"
        if o.kind in _DEPENDENT:
            out["tradeID"] = o.trade_id
        else:
            out.update(instrument=o.instrument, units=_dec(o.units), positionFill=o.position_fill)
        if o.price is not None:
            out["price"] = self._px(o.instrument, o.price)
        if o.price_bound is not None:
            out["priceBound"] = self._px(o.instrument, o.price_bound)
        optional = {
            "clientExtensions": o.client,
            "replacesOrderID": o.replaces,
            "replacedByOrderID": o.replaced_by,
            "fillingTransactionID": o.filling_txn,
            "filledTime": o.filled_time,
            "tradeOpenedID": o.trade_opened,
            "tradeClosedIDs": o.trades_closed or None,
            "cancellingTransactionID": o.cancelling_txn,
            "cancelledTime": o.cancelled_time,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out

    def get_order(self, specifier: str) -> dict[str, Any]:
        with self._lock:
            self._pump()
            return {
                "order": self.order_json(self._find(specifier)),
                "lastTransactionID": str(len(self._txns)),
            }

    def list_orders(self, params: Mapping[str, str], *, pending_only: bool = False) -> dict[str, Any]:
        """GET .../orders (state PENDING|FILLED|TRIGGERED|CANCELLED|ALL, instrument, count, beforeID,
        ids) and GET .../pendingOrders; newest first, as OANDA lists them."""
        state = "PENDING" if pending_only else params.get("state", "PENDING").upper()
        if state not in ("PENDING", "FILLED", "TRIGGERED", "CANCELLED", "ALL"):
            raise V20Error(400, f"Invalid value specified for 'state': {state}")
        count = _int(params.get("count"), 50, 1, MAX_ORDERS, "count")
        before = _int(params.get("beforeID"), 0, 0, 10**12, "beforeID")
        ids = set(params["ids"].split(",")) if params.get("ids") else None
        with self._lock:
            self._pump()
            rows = []
            for o in sorted(self._orders.values(), key=lambda o: int(o.id), reverse=True):
                if state != "ALL" and o.state != state or before and int(o.id) >= before:
                    continue
                if params.get("instrument") and o.instrument != params["instrument"]:
                    continue
                if ids is not None and o.id not in ids:
                    continue
                rows.append(self.order_json(o))
            return {"orders": rows[:count], "lastTransactionID": str(len(self._txns))}

    def trade_json(self, t: _Trade) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": t.id,
            "instrument": t.instrument,
            "price": _dec(t.price),
            "openTime": t.open_time,
            "state": t.state,
            "initialUnits": _dec(t.initial_units),
            "currentUnits": _dec(t.current_units),
            "realizedPL": _dec(t.realized_pl),
            "financing": "0",
            "dividendAdjustment": "0",
        }
        if t.state == "OPEN":
            symbol = self.symbols[t.instrument]
            last = self._last_close(symbol) or t.price
            out["unrealizedPL"] = _dec(t.current_units * (last - t.price))
        if t.closing:
            out["closingTransactionIDs"] = list(t.closing)
        return out

    def list_trades(self, params: Mapping[str, str], *, open_only: bool = False) -> dict[str, Any]:
        state = "OPEN" if open_only else params.get("state", "OPEN").upper()
        with self._lock:
            self._pump()
            rows = [
                self.trade_json(t)
                for t in sorted(self._trades.values(), key=lambda t: int(t.id), reverse=True)
                if (state == "ALL" or t.state == state)
                and (not params.get("instrument") or t.instrument == params["instrument"])
            ]
            return {"trades": rows, "lastTransactionID": str(len(self._txns))}

    def _last_close(self, symbol: str) -> float | None:
        b = self.core.md.bars[symbol]
        k = int(np.searchsorted(b.ts[: b.n], self.core.clock_ns, side="right")) - 1
        return float(b.close.item(k)) if k >= 0 else None

    def positions(self, *, open_only: bool) -> dict[str, Any]:
        """GET .../openPositions and .../positions (every instrument ever traded, with its P/L)."""
        with self._lock:
            self._pump()
            held = {str(p["symbol"]): p for p in self.core.positions()}
            rows = []
            for name in sorted(set(self._ledger) | {self.names[s] for s in held}):
                symbol = self.symbols[name]
                p = held.get(symbol)
                if open_only and p is None:
                    continue
                rows.append(self._position_json(name, p))
            return {"positions": rows, "lastTransactionID": str(len(self._txns))}

    def _position_json(self, name: str, p: dict[str, Any] | None) -> dict[str, Any]:
        ledger = self._ledger.get(name, _Ledger())
        qty = float(p["qty"]) if p else 0.0
        avg = float(p["avg_entry_price"]) if p else 0.0
        upl = float(p["unrealized_pl"]) if p else 0.0
        trade_ids = [t.id for t in self._trades.values() if t.instrument == name and t.state == "OPEN"]

        def side(units: float) -> dict[str, Any]:
            out: dict[str, Any] = {
                "units": _dec(units),
                "pl": "0",
                "resettablePL": "0",
                "financing": "0",
                "unrealizedPL": _dec(upl) if units else "0",
            }
            if units:
                out.update(averagePrice=_dec(avg), tradeIDs=trade_ids)
            return out

        return {
            "instrument": name,
            "long": side(qty if qty > 0 else 0.0),
            "short": side(qty if qty < 0 else 0.0),
            "pl": _dec(ledger.pl),
            "resettablePL": _dec(ledger.pl),
            "unrealizedPL": _dec(upl),
            "financing": "0",
            "commission": _dec(ledger.commission),
            "guaranteedExecutionFees": "0",
            "marginUsed": _dec(abs(qty) * avg * self.margin_rate),
        }

    def _balance(self) -> float:
        """The home-currency balance: the core's home cash plus what the home-quoted positions cost,
        plus each other-quoted instrument's realized P/L less commission (converted at each fill, as
        OANDA books it). Positions are margin positions: buying them is not paid out of the balance."""
        cash = {c: float(v) for c, v in self.core.account()["cash_by_currency"].items()}
        total = cash.get(self.currency, 0.0)
        for p in self.core.positions():
            if str(p["currency"]) == self.currency:
                total += float(p["qty"]) * float(p["avg_entry_price"])
        for name, ledger in self._ledger.items():
            if self.core.venue.instruments[self.symbols[name]].currency != self.currency:
                total += ledger.pl - ledger.commission
        return total

    def summary(self) -> dict[str, Any]:
        """GET .../summary: balance (see ``_balance``), NAV = the core's equity, margins."""
        with self._lock:
            self._pump()
            acct = self.core.account()
            positions = self.core.positions()
            balance = self._balance()
            upl = sum(float(p["unrealized_pl"]) * self._rate_now(str(p["currency"])) for p in positions)
            used = sum(abs(float(p["market_value"])) * self._rate_now(str(p["currency"])) for p in positions)
            used *= self.margin_rate
            nav = float(acct["equity"])
            pending = sum(1 for o in self._orders.values() if o.state == "PENDING")
            return {
                "account": {
                    "id": self.account_id,
                    "alias": "hflite fake",
                    "currency": self.currency,
                    "createdByUserID": 1234567,
                    "createdTime": self.created,
                    "guaranteedStopLossOrderMode": "DISABLED",
                    "hedgingEnabled": False,
                    "balance": _dec(balance),
                    "pl": _dec(sum(x.pl for x in self._ledger.values())),
                    "resettablePL": "0",
                    "financing": "0",
                    "commission": _dec(sum(x.commission for x in self._ledger.values())),
                    "dividendAdjustment": "0",
                    "guaranteedExecutionFees": "0",
                    "marginRate": _dec(self.margin_rate),
                    "openTradeCount": sum(1 for t in self._trades.values() if t.state == "OPEN"),
                    "openPositionCount": len(positions),
                    "pendingOrderCount": pending,
                    "unrealizedPL": _dec(upl),
                    "NAV": _dec(nav),
                    "marginUsed": _dec(used),
                    "marginAvailable": _dec(max(nav - used, 0.0)),
                    "positionValue": _dec(used / self.margin_rate),
                    "marginCloseoutUnrealizedPL": _dec(upl),
                    "marginCloseoutNAV": _dec(nav),
                    "marginCloseoutMarginUsed": _dec(used),
                    "marginCloseoutPercent": _dec(used / nav / 2 if nav else 0.0),
                    "marginCloseoutPositionValue": _dec(used / self.margin_rate),
                    "withdrawalLimit": _dec(max(nav - used, 0.0)),
                    "marginCallMarginUsed": _dec(used),
                    "marginCallPercent": _dec(used / nav if nav else 0.0),
                    "lastTransactionID": str(len(self._txns)),
                },
                "lastTransactionID": str(len(self._txns)),
            }

    def _rate_now(self, ccy: str) -> float:
        if ccy == self.currency:
            return 1.0
        pair = fx_pair_for(ccy, self.currency)
        if pair is None or pair[0] not in self.core.md.bars:
            return 1.0
        close = self._last_close(pair[0])
        return 1.0 if close is None else (1.0 / close if pair[1] else close)

    def pricing(self, params: Mapping[str, str]) -> dict[str, Any]:
        """GET .../pricing?instruments=A,B: each tradeable instrument's bid and ask around the core's
        last close (``latest_quote``), at its display precision."""
        wanted = [n for n in params.get("instruments", "").split(",") if n]
        if not wanted:
            raise V20Error(400, "Invalid value specified for 'instruments'")
        prices = []
        for name in wanted:
            symbol = self.symbols.get(name)
            if symbol is None:
                raise V20Error(400, f"Invalid value specified for 'instruments': {name}")
            try:
                q = self.core.latest_quote(symbol)["quote"]
            except BrokerError:
                continue
            places = _places(self.core.venue.instruments[symbol].tick_size)
            bid, ask = _fixed(q["bp"], places), _fixed(q["ap"], places)
            prices.append(
                {
                    "type": "PRICE", "instrument": name, "time": q["t"], "status": "tradeable",
                    "tradeable": True, "bids": [{"price": bid, "liquidity": 10_000_000}],
                    "asks": [{"price": ask, "liquidity": 10_000_000}], "closeoutBid": bid, "closeoutAsk": ask,
                }
            )  # fmt: skip
        return {"prices": prices, "time": format_ts(self.core.clock_ns)}

    def instruments(self, params: Mapping[str, str]) -> dict[str, Any]:
        """GET .../instruments: precision, minimum size and margin rate from the core's instruments."""
        wanted = set(params["instruments"].split(",")) if params.get("instruments") else None
        rows = []
        for name, symbol in sorted(self.symbols.items()):
            if wanted is not None and name not in wanted:
                continue
            inst = self.core.venue.instruments[symbol]
            fx = inst.asset_class is AssetClass.FX
            pip = -2 if inst.currency == "JPY" else -4
            rows.append(
                {
                    "name": name,
                    "type": "CURRENCY" if fx else "CFD",
                    "displayName": name.replace("_", "/"),
                    "pipLocation": pip if fx else 0,
                    "displayPrecision": _places(inst.tick_size),
                    "tradeUnitsPrecision": _places(inst.lot_size),
                    "minimumTradeSize": _dec(inst.lot_size),
                    "maximumTrailingStopDistance": "1.00000",
                    "minimumTrailingStopDistance": _fixed(
                        10.0 ** (pip if fx else -2), _places(inst.tick_size)
                    ),
                    "maximumPositionSize": "0",
                    "maximumOrderUnits": "100000000",
                    "marginRate": _dec(self.margin_rate),
                    "guaranteedStopLossOrderMode": "DISABLED",
                    "tags": [{"type": "ASSET_CLASS", "name": "CURRENCY" if fx else "INDEX"}],
                    "financing": {"longRate": "0", "shortRate": "0", "financingDaysOfWeek": []},
                }
            )
        with self._lock:
            return {"instruments": rows, "lastTransactionID": str(len(self._txns))}

    def advance_to(self, ts_ns: int) -> int:
        """Move the core's market to bar-time ``ts_ns``; the id of the last transaction it caused (the
        same id when asked again for the same time)."""
        with self._lock:
            seq = self.core.advance_to(ts_ns)
            self._pump()
            return self._txn_at.get(seq, len(self._txns))

    # -- the venue's part in tests ------------------------------------------------------------------------
    def core_id(self, client_id: str) -> str:
        with self._lock:
            return self._find("@" + client_id).core_id

    def fill(self, client_id: str, units: float, price: float, fee: float = 0.0) -> None:
        """The venue executes ``units`` of our order ``client_id`` at ``price`` now."""
        with self._lock:
            self.core.execute(self.core_id(client_id), abs(units), price, fee)
            self._pump()

    def foreign_fill(self, symbol: str, units: float, price: float) -> None:
        """An order placed at OANDA's website (no client extensions) is created and filled."""
        with self._lock:
            cid = f"oanda-web-{len(self._txns) + 1}"
            self._pending[cid] = {"kind": "MARKET", "timeInForce": "FOK", "clientExtensions": None}
            obj = self.core.submit(
                {
                    "symbol": symbol,
                    "qty": _dec(abs(units)),
                    "side": "buy" if units > 0 else "sell",
                    "type": "market",
                    "time_in_force": "gtc",
                    "client_order_id": cid,
                }
            )
            self.core.execute(str(obj["id"]), abs(units), price)
            self._pump()

    def duplicate_last_fill(self) -> bool:
        """Send the last ORDER_FILL again on every open stream (same transaction id)."""
        with self._lock:
            self._pump()
            last = next((t for t in reversed(self._txns) if t["type"] == "ORDER_FILL"), None)
            if last is None:
                return False
            self.echoes.append(dict(last))
            self._cond.notify_all()
            return True

    def reject_next(self, reason: str) -> None:
        """The next order request is rejected (HTTP 400, a reject transaction) with ``reason``."""
        with self._lock:
            self._rejections.append(reason)

    def fault_next(self, op: Op, fault: FaultKind, retry_after_s: float | None = None) -> None:
        """The next request of kind ``op`` gets ``fault`` (see the module's HTTP handler)."""
        with self._lock:
            self._faults.setdefault(op, []).append((fault, retry_after_s))

    def take_fault(self, op: str) -> tuple[str, float | None] | None:
        with self._lock:
            queue = self._faults.get(op)
            return queue.pop(0) if queue else None

    def state(self) -> dict[str, Any]:
        """GET /admin/state: the orders (ours by client id), fills, positions and cash, for tests."""
        with self._lock:
            self._pump()
            core = self.core.state()
            return {
                "orders": [self.order_json(o) for o in self._orders.values()],
                "core_orders": core["orders"],
                "fills": [t for t in self._txns if t["type"] == "ORDER_FILL"],
                "positions": core["positions"],
                "cash_by_currency": core["cash_by_currency"],
                "balance": _dec(self._balance()),
                "lastTransactionID": str(len(self._txns)),
            }


class _Reject(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _number(raw: Any, what: str) -> float:
    """A v20 decimal (a string, or a JSON number) or a ``_Reject`` naming it (PRICE_MISSING, ...)."""
    if raw is None or raw == "":
        raise _Reject(f"{what}_MISSING", "The request was missing required data")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _Reject(f"{what}_INVALID", f"Invalid value specified for '{what.lower()}'") from None
    if not math.isfinite(value) or (what != "UNITS" and value <= 0):
        raise _Reject(f"{what}_INVALID", f"Invalid value specified for '{what.lower()}'")
    return value


def _units(raw: Any, lot: float) -> float:
    """An order request's signed units, at the instrument's precision and minimum (else ``_Reject``)."""
    units = _number(raw, "UNITS")
    if units == 0:
        raise _Reject("UNITS_INVALID", "units must not be zero")
    if _too_precise(units, _places(lot)):
        raise _Reject("UNITS_PRECISION_EXCEEDED", f"units {raw} exceed the instrument's precision")
    if abs(units) < lot - 1e-12:
        raise _Reject("UNITS_MINIMUM_NOT_MET", f"units {raw} below the minimum trade size")
    return units


def _priced(kind: str, req: Mapping[str, Any], tick: float) -> dict[str, Any]:
    """The core's type and prices for a v20 MARKET / LIMIT / STOP request (``priceBound``: stop-limit)."""
    if kind == "MARKET":
        return {"type": "market"}
    price = _number(req.get("price"), "PRICE")
    if _too_precise(price, _places(tick)):
        raise _Reject("PRICE_PRECISION_EXCEEDED", f"price {req['price']} exceeds the instrument's precision")
    if kind == "LIMIT":
        return {"type": "limit", "limit_price": _dec(price)}
    bound = req.get("priceBound")
    if bound is not None:
        return {
            "type": "stop_limit",
            "stop_price": _dec(price),
            "limit_price": _dec(_number(bound, "PRICE_BOUND")),
        }
    return {"type": "stop", "stop_price": _dec(price)}


def _too_precise(value: float, places: int) -> bool:
    return abs(round(value, places) - value) > 1e-9 * max(1.0, abs(value))


def _int(raw: str | None, default: int, lo: int, hi: int, name: str) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise V20Error(400, f"Invalid value specified for '{name}'") from None
    if not lo <= value <= hi:
        raise V20Error(400, f"Invalid value specified for '{name}'")
    return value


# -- HTTP ---------------------------------------------------------------------------------------------------
_ACCOUNT = re.compile(r"^/v3/accounts/(?P<acct>[^/]+)(?P<rest>/.*)?$")
_ORDER = re.compile(r"^/orders/(?P<spec>[^/]+)$")
_CANCEL = re.compile(r"^/orders/(?P<spec>[^/]+)/cancel$")
_TRADE_ORDERS = re.compile(r"^/trades/(?P<spec>[^/]+)/orders$")


class _Server(Server):
    app: OandaFakeServer


class _Handler(Handler):
    server: _Server
    server_version = "hflite-oanda-fake/1"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        front = app.front
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if not app.authorised(self.headers.get("Authorization")):
            self._send_json(401, {"errorMessage": "Insufficient authorization to perform request."})
            return
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        op = _op(method, url.path)
        fault = front.take_fault(op) if op else None
        if fault is not None and fault[0] in ("429", "503"):
            headers = (
                {"Retry-After": _dec(fault[1] if fault[1] is not None else 1.0)} if fault[0] == "429" else {}
            )
            message = "Too many requests" if fault[0] == "429" else "Service temporarily unavailable"
            self._send_json(int(fault[0]), {"errorMessage": message}, headers)
            return
        if method == "GET" and url.path.endswith("/transactions/stream"):
            self._stream(url.path)
            return
        try:
            status, payload = self._route(method, url.path, params, raw)
        except V20Error as exc:
            status, payload = exc.status, exc.body
        if fault is not None and fault[0] == "timeout":
            app._stopping.wait(app.timeout_hold_s)  # processed, never answered
            self._drop()
            return
        if fault is not None and fault[0] == "malformed":
            self._send(200, b'{"lastTransactionID": "', "application/json")
            return
        self._send_json(status, payload)

    def _route(self, method: str, path: str, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        front = self.server.app.front
        if path.startswith("/admin/"):
            return self._admin(method, path, raw)
        if path == "/v3/accounts" and method == "GET":
            return 200, {"accounts": [{"id": front.account_id, "tags": []}]}
        m = _ACCOUNT.match(path)
        if m is None:
            raise V20Error(404, f"endpoint not found: {method} {path}")
        front.check_account(m["acct"])
        rest = m["rest"] or ""
        body = _json(raw) if method in ("POST", "PUT", "PATCH") else None
        if method == "GET":
            return 200, self._get(rest, params)
        if method == "POST" and rest == "/orders":
            return front.create_order(body)
        if method == "PUT":
            if c := _CANCEL.match(rest):
                return front.cancel_order(c["spec"])
            if o := _ORDER.match(rest):
                return front.replace_order(o["spec"], body)
            if t := _TRADE_ORDERS.match(rest):
                return front.set_trade_orders(unquote(t["spec"]), body)
        raise V20Error(405, f"The method {method} is not allowed on {path}")

    def _get(self, rest: str, params: dict[str, str]) -> Any:
        front = self.server.app.front
        if rest in ("", "/summary"):
            return front.summary()
        routes = {
            "/instruments": lambda: front.instruments(params),
            "/pricing": lambda: front.pricing(params),
            "/orders": lambda: front.list_orders(params),
            "/pendingOrders": lambda: front.list_orders(params, pending_only=True),
            "/trades": lambda: front.list_trades(params),
            "/openTrades": lambda: front.list_trades(params, open_only=True),
            "/positions": lambda: front.positions(open_only=False),
            "/openPositions": lambda: front.positions(open_only=True),
            "/transactions/sinceid": lambda: self._since(params),
        }
        if rest in routes:
            return routes[rest]()
        if o := _ORDER.match(rest):
            return front.get_order(o["spec"])
        raise V20Error(404, f"endpoint not found: GET {rest}")

    def _since(self, params: dict[str, str]) -> dict[str, Any]:
        front = self.server.app.front
        after = _int(params.get("id"), -1, 0, 10**12, "id")
        if after < 0:
            raise V20Error(400, "Invalid value specified for 'id'")
        last = front.last_id
        if after > last:
            raise V20Error(404, "The Transaction specified does not exist", "NO_SUCH_TRANSACTION")
        return {"transactions": front.since(after), "lastTransactionID": str(last)}

    def _admin(self, method: str, path: str, raw: bytes) -> tuple[int, Any]:
        app = self.server.app
        front = app.front
        if method == "GET" and path == "/admin/state":
            return 200, front.state()
        body = _json(raw)
        if method == "POST" and path == "/admin/clock":
            if front.core.clock_mode != "driven":
                raise V20Error(409, "the fake runs on the wall clock: /admin/clock is for driven mode")
            if not isinstance(body, Mapping) or not isinstance(body.get("ts"), str):
                raise V20Error(400, 'ts is required (an RFC 3339 time, e.g. "2024-01-05T21:00:00Z")')
            try:
                ts = parse_ts(body["ts"])
            except BrokerError as exc:
                raise V20Error(400, exc.message) from None
            last = front.advance_to(ts)
            return 200, {"ts": format_ts(front.core.clock_ns), "last_event_id": last}
        if method == "POST" and path == "/admin/fill":
            if not isinstance(body, Mapping):
                raise V20Error(400, "client_id, units and price are required")
            try:
                front.fill(
                    str(body["client_id"]),
                    float(body["units"]),
                    float(body["price"]),
                    float(body.get("fee", 0)),
                )
            except (KeyError, TypeError, ValueError):
                raise V20Error(400, "client_id, units and price are required") from None
            except BrokerError as exc:
                raise V20Error(400, exc.message) from None
            return 200, {"lastTransactionID": str(front.last_id)}
        raise V20Error(404, f"endpoint not found: {method} {path}")

    # -- the transaction stream ----------------------------------------------------------------------
    def _stream(self, path: str) -> None:
        """Newline-delimited JSON: every transaction created from now on, and a HEARTBEAT line (with
        the last transaction id) every ``heartbeat_s``; repeated fills (``duplicate_last_fill``) too."""
        app = self.server.app
        front = app.front
        m = _ACCOUNT.match(path.removesuffix("/transactions/stream"))
        if m is None or m["acct"] != front.account_id:
            self._send_json(403, {"errorMessage": "The provided request was forbidden."})
            return
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        cursor, echoed = front.last_id, len(front.echoes)
        app._track_stream(self.connection, add=True)
        try:
            self._chunk(self._heartbeat(cursor))
            beat = time.monotonic()
            while not app._stopping.is_set():
                front.wait(cursor, min(app.heartbeat_s, 0.25))
                lines = front.since(cursor)
                while len(front.echoes) > echoed:
                    lines.append(front.echoes[echoed])
                    echoed += 1
                for txn in lines:
                    self._chunk(txn)
                    cursor = max(cursor, int(txn["id"]))
                if time.monotonic() - beat >= app.heartbeat_s:
                    self._chunk(self._heartbeat(cursor))  # all sent up to here
                    beat = time.monotonic()
        except OSError:
            return
        finally:
            app._track_stream(self.connection, add=False)

    @staticmethod
    def _heartbeat(last: int) -> dict[str, Any]:
        return {"type": "HEARTBEAT", "lastTransactionID": str(last), "time": format_ts(time.time_ns())}

    def _chunk(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _extra_headers(self) -> Mapping[str, str]:
        return {"RequestID": f"{time.time_ns()}"}


def _op(method: str, path: str) -> str | None:
    """Which kind of request a fault may hit: submit, cancel, replace or read (admin: none)."""
    if path.startswith("/admin/") or path.endswith("/transactions/stream"):
        return None
    if method == "GET":
        return "read"
    if method == "POST" and path.endswith("/orders"):
        return "submit"
    if method == "PUT" and path.endswith("/cancel"):
        return "cancel"
    if method == "PUT" and re.search(r"/trades/[^/]+/orders$", path):
        return "submit"
    if method == "PUT" and re.search(r"/orders/[^/]+$", path):
        return "replace"
    return None


def _json(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise V20Error(400, "The request body is not valid JSON") from None


class OandaFakeServer(HttpApp):
    """The OANDA fake over HTTP on ``host:port`` (0 = a free port), REST and the transaction stream
    on one address, as a context manager. ``stop()`` closes streams and held replies at once."""

    def __init__(
        self,
        front: OandaFront,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str = DEFAULT_TOKEN,
        heartbeat_s: float = HEARTBEAT_S,
        timeout_hold_s: float = 2.0,
        poll_s: float = 5.0,
    ) -> None:
        super().__init__(host, port)
        self.front = front
        self.heartbeat_s, self.timeout_hold_s, self.poll_s = heartbeat_s, timeout_hold_s, poll_s
        self._token = token.encode()
        self._stopping = threading.Event()
        self._streams: set[socket.socket] = set()

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header this server accepts (tests and tools)."""
        return {"Authorization": f"Bearer {self._token.decode()}"}

    def authorised(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._token)

    def start(self) -> OandaFakeServer:
        self._stopping.clear()
        self._start_http(_Server, _Handler, "oanda-fake-http")
        if self.front.core.clock_mode == "wall":
            poller = threading.Thread(target=self._poll_wall, name="oanda-fake-clock", daemon=True)
            poller.start()
            self._threads.append(poller)
        return self

    def _poll_wall(self) -> None:
        while not self._stopping.wait(self.poll_s):
            try:
                self.front.core.refresh()
                self.front.wake()
            except Exception as exc:  # a bad read keeps the old data; the next poll retries
                from hflite import logs

                logs.get("hflite.oanda_fake").warning("oanda_fake.refresh_failed", error=str(exc))

    def stop(self) -> None:
        self._stopping.set()
        self.front.wake()
        self._stop_http()

    def drop_streams(self) -> int:
        """Close every open transaction stream now (clients must reconnect); returns how many."""
        with self._conns_lock:
            streams = list(self._streams)
        for conn in streams:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        return len(streams)

    def _track_stream(self, conn: socket.socket, *, add: bool) -> None:
        with self._conns_lock:
            (self._streams.add if add else self._streams.discard)(conn)


def serve(
    settings: Settings,
    port: int = 8766,
    token: str | None = None,
    account_id: str = DEFAULT_ACCOUNT,
    clock: Literal["driven", "wall"] = "driven",
    *,
    host: str = "127.0.0.1",
    store: Store | None = None,
    script_path: str | Path | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run the OANDA fake until Ctrl-C (or ``stop`` is set), for a CLI: prints one line with the URL
    once it listens. The token defaults to HFLITE_BROKER_SECRET, else "fake-oanda-token"."""
    import os

    from hflite.execution.venues.fakebroker import load_script

    script = load_script(script_path) if script_path is not None else None
    core = FakeBroker.from_settings(settings, store, clock=clock, script=script)
    front = OandaFront(core, account_id=account_id)
    secret = token or os.environ.get("HFLITE_BROKER_SECRET") or DEFAULT_TOKEN
    with OandaFakeServer(front, host, port, token=secret) as srv:
        names = ", ".join(sorted(front.symbols))
        print(f"OANDA v20 fake listening on {srv.url} ({clock} clock, {names}); Ctrl-C stops it")
        wait_until_stopped(ready, stop)


__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_TOKEN",
    "OandaFakeServer",
    "OandaFront",
    "V20Error",
    "oanda_name",
    "serve",
]
