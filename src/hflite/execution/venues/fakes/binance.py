"""A local fake of the Binance spot REST API (v3) on 127.0.0.1: a front over ``FakeBroker``'s state.

The fake translates Binance's wire format to and from the fake broker's core: matching, positions,
cash and the event log stay the core's (orders are matched bar by bar by the run's ``SimVenue``); this
module only speaks Binance. What it serves is what ``ccxt.binance`` calls for spot trading, with the
payloads of the spot API docs (https://developers.binance.com/docs/binance-spot-api-docs/rest-api):
``/api/v3/ping``, ``time``, ``exchangeInfo``, ``ticker/24hr``, ``account``, ``order`` (POST, GET,
DELETE), ``order/cancelReplace``, ``openOrders``, ``allOrders`` and ``myTrades``.

- Symbols: our symbol -> a ccxt unified symbol ("BTC-USD" -> "BTC/USDT", given by ``symbols``; by
  default "BTC-USD" -> "BTC/USD") -> the Binance id ("BTCUSDT"). The quote asset's balance is the
  core's cash in the instrument's currency, the base asset's is the core's position.
- Filters: PRICE_FILTER and LOT_SIZE come from our Instrument's tick and lot, NOTIONAL from
  ``min_notional``; an order breaking one is refused with -1013 as Binance does.
- Keys: ``X-MBX-APIKEY`` and the HMAC-SHA256 ``signature`` of the query + body are checked on signed
  endpoints (-2015 / -1022), and ``timestamp`` against ``recvWindow`` (-1021).
- Order ids: every Binance order is one core order; ``cancelReplace`` cancels one and creates another
  under the same ``clientOrderId`` (Binance allows a client id again once its order is closed).
  Orders closed by the venue itself (time in force) report EXPIRED, cancelled ones CANCELED.
- Trade ids are the core's event sequence numbers of the fills, so a client that reads them can
  tell which fills a driven clock move caused (``POST /admin/clock`` answers the move's last seq).
- Faults: the core's behaviour script (``Fault`` with paths like "/api/v3/order") answers 429 with
  Retry-After, 5xx, holds a processed reply past the client's timeout, drops the connection or sends a
  malformed body; ``drop_next_poll`` resets the next polling request's connection.

Not modelled: OCO / order lists, TAKE_PROFIT and LIMIT_MAKER types, FOK, commissions charged in the
base asset or BNB (the fake charges the core's fee in the quote asset), weights and request counting.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import sys
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from hflite.execution.venues.fakebroker import BrokerError, FakeBroker, Fault, format_ts, parse_ts
from hflite.execution.venues.fakes.http import Handler, HttpApp, Server, wait_until_stopped

if TYPE_CHECKING:
    from hflite.config import Settings
    from hflite.data.store import Store

__all__ = [
    "DEFAULT_KEY_ID",
    "DEFAULT_SECRET",
    "BinanceError",
    "BinanceFront",
    "FakeBinanceServer",
    "binance_id",
    "serve",
]

DEFAULT_KEY_ID = "fake-binance-key"
DEFAULT_SECRET = "fake-binance-secret"  # noqa: S105 - the documented default of a local test server
DEFAULT_MIN_NOTIONAL = 5.0  # BTCUSDT's NOTIONAL minNotional on Binance spot
RECV_WINDOW_MS = 5_000  # Binance's default recvWindow
ORDER_TYPES = ["LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT"]
_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_CID_RANGE = "legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'"
_SIGNED = frozenset(
    {
        "/api/v3/account",
        "/api/v3/order",
        "/api/v3/order/cancelReplace",
        "/api/v3/openOrders",
        "/api/v3/allOrders",
        "/api/v3/myTrades",
    }
)
_POLLS = frozenset({"/api/v3/openOrders", "/api/v3/myTrades"})
_CORE_TYPE = {"LIMIT": "limit", "MARKET": "market", "STOP_LOSS": "stop", "STOP_LOSS_LIMIT": "stop_limit"}
_TOO_MANY = (
    "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. "
    "Please use WebSocket Streams for live updates to avoid polling the API."
)
_CORE_TIF = {"GTC": "gtc", "IOC": "ioc"}


class BinanceError(Exception):
    """A Binance error reply: HTTP status and the ``{"code", "msg"}`` body."""

    def __init__(self, status: int, code: int, msg: str, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.data = status, code, msg, data

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.data is not None:
            out["data"] = dict(self.data)
        return out


def _filter_failure(name: str) -> BinanceError:
    return BinanceError(400, -1013, f"Filter failure: {name}")


def _missing(name: str) -> BinanceError:
    return BinanceError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _no_order() -> BinanceError:
    return BinanceError(400, -2013, "Order does not exist.")


def _unknown_order() -> BinanceError:
    return BinanceError(400, -2011, "Unknown order sent.")


def _dec(x: float) -> str:
    """A number as Binance sends it: a decimal string with 8 places."""
    return f"{x:.8f}"


def _ms(ns: int | None) -> int:
    return int(ns // 1_000_000) if ns else 0


def binance_id(unified: str) -> str:
    """The Binance symbol of a ccxt unified spot symbol ("BTC/USDT" -> "BTCUSDT")."""
    return unified.split(":", 1)[0].replace("/", "")


def _default_unified(symbol: str) -> str:
    """ccxt's spelling of one of our symbols when the config does not map it ("BTC-USD" -> "BTC/USD")."""
    if "-" in symbol:
        base, quote = symbol.split("-", 1)
        return f"{base}/{quote}"
    return symbol


@dataclass(frozen=True, slots=True)
class _Market:
    ours: str
    id: str
    base: str
    quote: str
    currency: str  # the instrument's (and the core's cash) currency
    tick: float
    lot: float


@dataclass(slots=True)
class _Record:
    """One Binance order and the core order that works it."""

    order_id: int
    core_id: str
    client_order_id: str
    market: _Market
    type: str
    side: str
    time_in_force: str
    price: float
    stop_price: float
    qty: float
    created_ms: int
    via: str  # "order", "cancelReplace" or "admin"
    cancelled_ms: int | None = None  # cancelled by a request (DELETE, cancelReplace)


@dataclass(frozen=True, slots=True)
class _Trade:
    id: int  # the core event seq of the fill
    record: _Record
    price: float
    qty: float
    commission: float
    ms: int


def _multiple(x: float, step: float) -> bool:
    return abs(round(x / step) * step - x) <= 1e-9 * max(1.0, abs(x))


class BinanceFront:
    """Binance spot semantics over a ``FakeBroker``: order records, filters, balances and trades.

    Thread-safe (one lock; the core has its own). Methods raise ``BinanceError``; ``params`` are the
    request's parameters as strings, as Binance receives them."""

    def __init__(
        self,
        broker: FakeBroker,
        symbols: Mapping[str, str] | None = None,
        *,
        min_notional: float = DEFAULT_MIN_NOTIONAL,
    ) -> None:
        self.broker = broker
        self.min_notional = min_notional
        self.markets: dict[str, _Market] = {}
        self.by_ours: dict[str, _Market] = {}
        mapping = dict(symbols or {})
        for sym in broker.md.traded:
            inst = broker.venue.instruments[sym]
            unified = mapping.get(sym, _default_unified(sym))
            if "/" not in unified:
                raise ValueError(f"symbol map: {sym} -> {unified!r} is not a ccxt symbol like BTC/USDT")
            base, quote = unified.split(":", 1)[0].split("/", 1)
            m = _Market(sym, binance_id(unified), base, quote, inst.currency, inst.tick_size, inst.lot_size)
            self.markets[m.id] = m
            self.by_ours[sym] = m
        self._lock = threading.RLock()
        self._records: dict[int, _Record] = {}
        self._by_core: dict[str, _Record] = {}
        self._next_id = 1
        self._trades: list[_Trade] = []
        self._seen_exec: set[str] = set()
        self._scanned = 0
        self.repeat_last_trade = False  # the next myTrades answer repeats the last trade (a glitch)
        self.drop_next_poll = False  # the next polling request's connection is reset
        self.uid = zlib.crc32(broker.account_id.encode()) % 1_000_000_000

    # -- market data --------------------------------------------------------------------------------
    def _market(self, params: Mapping[str, str], *, required: bool = True) -> _Market | None:
        sym = params.get("symbol")
        if not sym:
            if required:
                raise _missing("symbol")
            return None
        m = self.markets.get(sym)
        if m is None:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return m

    def last_price(self, m: _Market) -> float | None:
        """The latest close at the market's clock (driven: the bar-time moved to)."""
        b = self.broker.md.bars[m.ours]
        k = int(np.searchsorted(b.ts[: b.n], self.broker.clock_ns, side="right")) - 1
        return float(b.close[k]) if k >= 0 else None

    def exchange_info(self, params: Mapping[str, str]) -> dict[str, Any]:
        """GET /api/v3/exchangeInfo: every market (or ``symbol``) with its filters."""
        wanted = self.markets.values()
        if params.get("symbol"):
            m = self._market(params)
            wanted = [m] if m else []  # type: ignore[assignment]
        return {
            "timezone": "UTC",
            "serverTime": time.time_ns() // 1_000_000,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [self._symbol_info(m) for m in wanted],
        }

    def _symbol_info(self, m: _Market) -> dict[str, Any]:
        return {
            "symbol": m.id,
            "status": "TRADING",
            "baseAsset": m.base,
            "baseAssetPrecision": 8,
            "quoteAsset": m.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": list(ORDER_TYPES),
            "icebergAllowed": False,
            "ocoAllowed": False,
            "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": False,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": _dec(m.tick),
                    "maxPrice": _dec(1e6),
                    "tickSize": _dec(m.tick),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": _dec(m.lot),
                    "maxQty": _dec(9000.0),
                    "stepSize": _dec(m.lot),
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": _dec(0.0),
                    "maxQty": _dec(9000.0),
                    "stepSize": _dec(0.0),
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": _dec(self.min_notional),
                    "applyMinToMarket": True,
                    "maxNotional": _dec(9_000_000.0),
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def ticker(self, params: Mapping[str, str]) -> Any:
        """GET /api/v3/ticker/24hr for ``symbol`` (an object) or ``symbols`` (a JSON list)."""
        if params.get("symbols"):
            try:
                names = json.loads(params["symbols"])
            except ValueError:
                raise BinanceError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
            return [self._ticker(self._market({"symbol": str(n)})) for n in names]  # type: ignore[arg-type]
        if params.get("symbol"):
            return self._ticker(self._market(params))  # type: ignore[arg-type]
        return [self._ticker(m) for m in self.markets.values()]

    def _ticker(self, m: _Market) -> dict[str, Any]:
        last = self.last_price(m) or 0.0
        now = _ms(self.broker.clock_ns)
        half = m.tick / 2
        return {
            "symbol": m.id, "priceChange": _dec(0.0), "priceChangePercent": "0.000",
            "weightedAvgPrice": _dec(last), "prevClosePrice": _dec(last), "lastPrice": _dec(last),
            "lastQty": _dec(0.0), "bidPrice": _dec(last - half), "bidQty": _dec(1.0),
            "askPrice": _dec(last + half), "askQty": _dec(1.0), "openPrice": _dec(last),
            "highPrice": _dec(last), "lowPrice": _dec(last), "volume": _dec(0.0), "quoteVolume": _dec(0.0),
            "openTime": now - 86_400_000, "closeTime": now, "firstId": -1, "lastId": -1, "count": 0,
        }  # fmt: skip

    # -- the account ----------------------------------------------------------------------------------
    def balances(self) -> dict[str, tuple[float, float]]:
        """asset -> (free, locked): quote assets from the core's cash, base assets from positions,
        locked by open orders."""
        account = self.broker.account()
        cash = {c: float(v) for c, v in (account.get("cash_by_currency") or {}).items()}
        held = {p["symbol"]: float(p["qty"]) for p in self.broker.positions()}
        totals: dict[str, float] = {}
        for m in self.markets.values():
            totals[m.quote] = cash.get(m.currency, 0.0)
            totals[m.base] = totals.get(m.base, 0.0) + max(held.get(m.ours, 0.0), 0.0)
        locked = dict.fromkeys(totals, 0.0)
        with self._lock:
            for rec in self._records.values():
                core = self.broker.get_order(rec.core_id, nested=False)
                if core["status"] not in ("new", "pending_new", "partially_filled"):
                    continue
                left = float(core["qty"]) - float(core["filled_qty"] or 0.0)
                if rec.side == "SELL":
                    locked[rec.market.base] += left
                else:
                    price = rec.price or rec.stop_price or self.last_price(rec.market) or 0.0
                    locked[rec.market.quote] += left * price
        return {a: (max(t - locked[a], 0.0), min(locked[a], max(t, 0.0))) for a, t in totals.items()}

    def account(self) -> dict[str, Any]:
        """GET /api/v3/account."""
        bal = self.balances()
        return {
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": "0.00100000", "taker": "0.00100000",
                                "buyer": "0.00000000", "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False,
            "updateTime": time.time_ns() // 1_000_000, "accountType": "SPOT",
            "balances": [
                {"asset": a, "free": _dec(f), "locked": _dec(lk)} for a, (f, lk) in sorted(bal.items())
            ],
            "permissions": ["SPOT"], "uid": self.uid,
        }  # fmt: skip

    # -- orders -----------------------------------------------------------------------------------------
    def _core(self, rec: _Record) -> dict[str, Any]:
        return self.broker.get_order(rec.core_id, nested=False)

    def _status(self, rec: _Record, core: Mapping[str, Any]) -> str:
        status = str(core["status"])
        if status == "canceled":
            return "CANCELED" if rec.cancelled_ms is not None else "EXPIRED"  # venue-closed: EXPIRED
        return {
            "new": "NEW", "pending_new": "NEW", "accepted": "NEW", "partially_filled": "PARTIALLY_FILLED",
            "filled": "FILLED", "expired": "EXPIRED", "rejected": "REJECTED",
        }.get(status, "NEW")  # fmt: skip

    def order_json(self, rec: _Record, *, full: bool = True) -> dict[str, Any]:
        """The order object of GET /api/v3/order (``full``) or the RESULT response of a new order."""
        core = self._core(rec)
        filled = float(core["filled_qty"] or 0.0)
        avg = float(core["filled_avg_price"] or 0.0)
        status = self._status(rec, core)
        updated = _ms(parse_ts(str(core["updated_at"]))) if core.get("updated_at") else rec.created_ms
        if rec.cancelled_ms is not None:
            updated = max(updated, rec.cancelled_ms)
        out: dict[str, Any] = {
            "symbol": rec.market.id,
            "orderId": rec.order_id,
            "orderListId": -1,
            "clientOrderId": rec.client_order_id,
            "price": _dec(rec.price),
            "origQty": _dec(rec.qty),
            "executedQty": _dec(filled),
            "cummulativeQuoteQty": _dec(filled * avg),
            "status": status,
            "timeInForce": rec.time_in_force,
            "type": rec.type,
            "side": rec.side,
        }
        if rec.stop_price:
            out["stopPrice"] = _dec(rec.stop_price)
        if full:
            out.update(
                stopPrice=_dec(rec.stop_price),
                icebergQty=_dec(0.0),
                time=rec.created_ms,
                updateTime=updated,
                isWorking=status in ("NEW", "PARTIALLY_FILLED") and rec.type in ("LIMIT", "MARKET"),
            )
        out.update(
            workingTime=rec.created_ms, origQuoteOrderQty=_dec(0.0), selfTradePreventionMode="EXPIRE_MAKER"
        )
        return out

    def _validate(self, params: Mapping[str, str], *, replacing: _Record | None = None) -> dict[str, Any]:
        """Check a new order's parameters, filters and balance; the core's order body when they pass."""
        m = self._market(params)
        assert m is not None
        side, otype = params.get("side", ""), params.get("type", "")
        if side not in ("BUY", "SELL"):
            raise BinanceError(400, -1117, "Invalid side.")
        if otype not in ORDER_TYPES:
            raise BinanceError(400, -1116, "Invalid orderType.")
        cid = params.get("newClientOrderId") or f"fake{self._next_id:012d}"
        if not _CLIENT_ID.match(cid):
            raise BinanceError(
                400, -1100, f"Illegal characters found in parameter 'newClientOrderId'; {_CID_RANGE}."
            )
        qty = self._positive(params, "quantity")
        price = self._positive(params, "price") if otype in ("LIMIT", "STOP_LOSS_LIMIT") else 0.0
        stop = self._positive(params, "stopPrice") if otype in ("STOP_LOSS", "STOP_LOSS_LIMIT") else 0.0
        tif = params.get("timeInForce", "") if otype in ("LIMIT", "STOP_LOSS_LIMIT") else "GTC"
        if not tif:
            raise _missing("timeInForce")
        if tif not in _CORE_TIF:
            raise BinanceError(400, -1115, "Invalid timeInForce.")
        ref = self._filters(m, qty, price, stop)
        self._check_duplicate(m, cid, replacing)
        self._check_balance(m, side, qty * ref if side == "BUY" else qty, ref, replacing)
        body: dict[str, Any] = {
            "symbol": m.ours, "qty": repr(qty), "side": side.lower(), "type": _CORE_TYPE[otype],
            "time_in_force": _CORE_TIF[tif],
        }  # fmt: skip
        if price:
            body["limit_price"] = repr(price)
        if stop:
            body["stop_price"] = repr(stop)
        return {"market": m, "cid": cid, "side": side, "type": otype, "tif": tif, "qty": qty,
                "price": price, "stop": stop, "body": body}  # fmt: skip

    def _filters(self, m: _Market, qty: float, price: float, stop: float) -> float:
        """PRICE_FILTER, LOT_SIZE and NOTIONAL (-1013); returns the reference price of the notional."""
        for value in (price, stop):
            if value and (value < m.tick or not _multiple(value, m.tick)):
                raise _filter_failure("PRICE_FILTER")
        if qty < m.lot - 1e-12 or not _multiple(qty, m.lot):
            raise _filter_failure("LOT_SIZE")
        ref = price or stop or self.last_price(m) or 0.0
        if qty * ref < self.min_notional - 1e-9:
            raise _filter_failure("NOTIONAL")
        return ref

    def _check_duplicate(self, m: _Market, cid: str, replacing: _Record | None) -> None:
        """Binance refuses a client id only while an order holding it is open."""
        with self._lock:
            for rec in self._records.values():
                if rec is replacing or rec.client_order_id != cid or rec.market is not m:
                    continue
                if self._status(rec, self._core(rec)) in ("NEW", "PARTIALLY_FILLED"):
                    raise BinanceError(400, -2010, "Duplicate order sent.")

    def _check_balance(
        self, m: _Market, side: str, need: float, ref: float, replacing: _Record | None
    ) -> None:
        """-2010 when the free balance (quote for a buy, base for a sell) cannot cover the order; what
        a replaced order locks counts as free (its cancel releases it)."""
        free = {a: f for a, (f, _) in self.balances().items()}
        if replacing is not None:
            core = self._core(replacing)
            left = float(core["qty"]) - float(core["filled_qty"] or 0.0)
            if replacing.side == "SELL":
                free[m.base] = free.get(m.base, 0.0) + left
            else:
                unlock = left * (replacing.price or replacing.stop_price or ref)
                free[m.quote] = free.get(m.quote, 0.0) + unlock
        asset = m.base if side == "SELL" else m.quote
        if need > free.get(asset, 0.0) + 1e-9:
            raise BinanceError(400, -2010, "Account has insufficient balance for requested action.")

    @staticmethod
    def _positive(params: Mapping[str, str], name: str) -> float:
        raw = params.get(name)
        if raw is None or raw == "":
            raise _missing(name)
        try:
            value = float(raw)
        except ValueError:
            raise BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None
        if not math.isfinite(value) or value <= 0:
            raise BinanceError(400, -1013, f"Invalid {name}.")
        return value

    def _place(self, spec: Mapping[str, Any], via: str) -> _Record:
        """Create the core order for a validated spec and its Binance record."""
        with self._lock:
            order_id = self._next_id
            self._next_id += 1
            body = dict(spec["body"], client_order_id=f"bn-{order_id}")
            try:
                core = self.broker.submit(body, source="admin" if via == "admin" else "client")
            except BrokerError as exc:  # the core refused it (buying power, a scripted rejection)
                raise BinanceError(400, -2010, exc.message) from None
            created = parse_ts(str(core["created_at"])) if core.get("created_at") else self.broker.clock_ns
            rec = _Record(
                order_id, str(core["id"]), spec["cid"], spec["market"], spec["type"], spec["side"],
                spec["tif"], spec["price"], spec["stop"], spec["qty"], _ms(created), via,
            )  # fmt: skip
            self._records[order_id] = rec
            self._by_core[rec.core_id] = rec
            return rec

    def new_order(self, params: Mapping[str, str], *, via: str = "order") -> dict[str, Any]:
        """POST /api/v3/order (newOrderRespType ACK, RESULT or FULL)."""
        spec = self._validate(params)
        rec = self._place(spec, via)
        return self._order_answer(rec, params.get("newOrderRespType", "FULL"))

    def _order_answer(self, rec: _Record, resp_type: str) -> dict[str, Any]:
        now = _ms(self.broker.clock_ns)
        if resp_type == "ACK":
            return {"symbol": rec.market.id, "orderId": rec.order_id, "orderListId": -1,
                    "clientOrderId": rec.client_order_id, "transactTime": now}  # fmt: skip
        out = self.order_json(rec, full=False)
        out["transactTime"] = now
        if resp_type == "FULL":
            out["fills"] = [
                {
                    "price": _dec(t.price),
                    "qty": _dec(t.qty),
                    "commission": _dec(t.commission),
                    "commissionAsset": rec.market.quote,
                    "tradeId": t.id,
                }  # fmt: skip
                for t in self._trades_now()
                if t.record is rec
            ]
        return out

    def _find(self, params: Mapping[str, str], m: _Market, *, id_key: str, cid_key: str) -> _Record:
        """The order named by ``orderId`` (wins) or a client id: its open order, else the latest."""
        with self._lock:
            if params.get(id_key):
                try:
                    rec = self._records.get(int(params[id_key]))
                except ValueError:
                    raise BinanceError(
                        400, -1100, f"Illegal characters found in parameter '{id_key}'."
                    ) from None
                if rec is None or rec.market is not m:
                    raise _no_order()
                return rec
            cid = params.get(cid_key)
            if not cid:
                raise BinanceError(
                    400, -1102, f"Param '{id_key}' or '{cid_key}' must be sent, but both were empty/null!"
                )
            matches = [r for r in self._records.values() if r.client_order_id == cid and r.market is m]
            if not matches:
                raise _no_order()
            open_ = [r for r in matches if self._status(r, self._core(r)) in ("NEW", "PARTIALLY_FILLED")]
            return (open_ or matches)[-1]

    def get_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        """GET /api/v3/order by ``orderId`` or ``origClientOrderId``."""
        m = self._market(params)
        assert m is not None
        return self.order_json(self._find(params, m, id_key="orderId", cid_key="origClientOrderId"))

    def cancel_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        """DELETE /api/v3/order: -2011 when the order is not open."""
        m = self._market(params)
        assert m is not None
        with self._lock:
            try:
                rec = self._find(params, m, id_key="orderId", cid_key="origClientOrderId")
            except BinanceError as exc:
                raise _unknown_order() if exc.code == -2013 else exc from None
            self._cancel(rec)
            return self._cancel_answer(rec, params.get("newClientOrderId"))

    def _cancel_answer(self, rec: _Record, cancel_id: str | None) -> dict[str, Any]:
        """The documented answer to a cancel: the order as it closed, under the cancel's own id."""
        out = self.order_json(rec, full=False)
        for key in ("workingTime", "origQuoteOrderQty", "stopPrice"):
            out.pop(key, None)
        out["origClientOrderId"] = rec.client_order_id
        out["clientOrderId"] = cancel_id or f"cancel{rec.order_id}"
        out["transactTime"] = rec.cancelled_ms
        return out

    def _cancel(self, rec: _Record) -> None:
        if self._status(rec, self._core(rec)) not in ("NEW", "PARTIALLY_FILLED"):
            raise _unknown_order()
        rec.cancelled_ms = _ms(self.broker.clock_ns)
        try:
            self.broker.cancel(rec.core_id)
        except BrokerError:
            rec.cancelled_ms = None
            raise _unknown_order() from None

    def cancel_replace(self, params: Mapping[str, str]) -> dict[str, Any]:
        """POST /api/v3/order/cancelReplace (STOP_ON_FAILURE: no new order when the cancel fails)."""
        m = self._market(params)
        assert m is not None
        mode = params.get("cancelReplaceMode", "")
        if mode not in ("STOP_ON_FAILURE", "ALLOW_FAILURE"):
            raise _missing("cancelReplaceMode")
        with self._lock:
            try:
                old = self._find(params, m, id_key="cancelOrderId", cid_key="cancelOrigClientOrderId")
            except BinanceError:
                old = None
            spec = self._validate(params, replacing=old)  # filters are checked before the cancel
            cancel: dict[str, Any]
            try:
                if old is None:
                    raise _unknown_order()
                self._cancel(old)
                cancel = self._cancel_answer(old, params.get("cancelNewClientOrderId"))
                cancel_ok = True
            except BinanceError as exc:
                cancel, cancel_ok = exc.body(), False
            if not cancel_ok and mode == "STOP_ON_FAILURE":
                raise BinanceError(
                    400, -2022, "Order cancel-replace failed.",
                    {"cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
                     "cancelResponse": cancel, "newOrderResponse": None},
                )  # fmt: skip
            try:
                rec = self._place(spec, "cancelReplace")
            except BinanceError as exc:
                raise BinanceError(
                    409, -2021, "Order cancel-replace partially failed.",
                    {"cancelResult": "SUCCESS" if cancel_ok else "FAILURE", "newOrderResult": "FAILURE",
                     "cancelResponse": cancel, "newOrderResponse": exc.body()},
                ) from None  # fmt: skip
            new = self._order_answer(rec, params.get("newOrderRespType", "RESULT"))
            return {
                "cancelResult": "SUCCESS" if cancel_ok else "FAILURE",
                "newOrderResult": "SUCCESS",
                "cancelResponse": cancel,
                "newOrderResponse": new,
            }

    def open_orders(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /api/v3/openOrders (one symbol, or all)."""
        m = self._market(params, required=False)
        with self._lock:
            rows = [r for r in self._records.values() if m is None or r.market is m]
            out = [self.order_json(r) for r in rows]
        return [o for o in out if o["status"] in ("NEW", "PARTIALLY_FILLED")]

    def all_orders(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /api/v3/allOrders: ``orderId`` (from), ``startTime``/``endTime`` (created), ``limit``."""
        m = self._market(params)
        limit = _limit(params)
        start = _int(params, "startTime")
        end = _int(params, "endTime")
        first = _int(params, "orderId")
        with self._lock:
            rows = [
                r for r in self._records.values()
                if r.market is m and (first is None or r.order_id >= first)
                and (start is None or r.created_ms >= start) and (end is None or r.created_ms <= end)
            ]  # fmt: skip
            rows = rows[:limit] if first is not None or start is not None else rows[-limit:]
            return [self.order_json(r) for r in rows]

    # -- trades -------------------------------------------------------------------------------------
    def _trades_now(self) -> list[_Trade]:
        """Read the core's new fill events into trades (one per execution, id = its first seq)."""
        with self._lock:
            events = self.broker.events_between(self._scanned)
            for seq, ev in events:
                self._scanned = seq
                if ev.get("event") not in ("fill", "partial_fill"):
                    continue
                exec_id = str(ev.get("execution_id"))
                rec = self._by_core.get(str((ev.get("order") or {}).get("id")))
                if exec_id in self._seen_exec or rec is None:
                    continue
                self._seen_exec.add(exec_id)
                ms = _ms(parse_ts(str(ev["timestamp"])))
                fee = float(ev.get("commission") or 0.0)
                self._trades.append(_Trade(seq, rec, float(ev["price"]), float(ev["qty"]), fee, ms))
            return list(self._trades)

    def my_trades(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /api/v3/myTrades: ``orderId``, ``fromId`` (ascending from it), else ``startTime`` /
        ``endTime``, else the most recent ``limit`` (default 500, at most 1000)."""
        m = self._market(params)
        limit = _limit(params)
        from_id, order_id = _int(params, "fromId"), _int(params, "orderId")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        if from_id is not None and (start is not None or end is not None):
            raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
        rows = [t for t in self._trades_now() if t.record.market is m]
        if order_id is not None:
            rows = [t for t in rows if t.record.order_id == order_id]
        if from_id is not None:
            rows = [t for t in rows if t.id >= from_id][:limit]
        elif start is not None or end is not None:
            rows = [t for t in rows if (start is None or t.ms >= start) and (end is None or t.ms <= end)][
                :limit
            ]
        else:
            rows = rows[-limit:]
        with self._lock:
            if self.repeat_last_trade:
                mine = [t for t in self._trades if t.record.market is m]
                if mine:
                    rows = [*rows, mine[-1]]
                    self.repeat_last_trade = False
        return [self.trade_json(t) for t in rows]

    @staticmethod
    def trade_json(t: _Trade) -> dict[str, Any]:
        rec = t.record
        return {
            "symbol": rec.market.id, "id": t.id, "orderId": rec.order_id, "orderListId": -1,
            "price": _dec(t.price), "qty": _dec(t.qty), "quoteQty": _dec(t.price * t.qty),
            "commission": _dec(t.commission), "commissionAsset": rec.market.quote, "time": t.ms,
            "isBuyer": rec.side == "BUY", "isMaker": rec.type != "MARKET", "isBestMatch": True,
        }  # fmt: skip

    # -- admin (tests, the kill test) ----------------------------------------------------------------
    def records(self) -> list[_Record]:
        with self._lock:
            return list(self._records.values())

    def fill(self, client_order_id: str, qty: float, price: float, fee: float = 0.0) -> None:
        """The venue executes ``qty`` of the open order with this client id now at ``price``."""
        with self._lock:
            recs = [r for r in self._records.values() if r.client_order_id == client_order_id]
            open_ = [r for r in recs if self._status(r, self._core(r)) in ("NEW", "PARTIALLY_FILLED")]
            if not open_:
                raise BinanceError(400, -2013, "Order does not exist.")
            self.broker.execute(open_[-1].core_id, qty, price, fee)

    def foreign_fill(self, ours: str, qty: float, price: float) -> None:
        """An order placed at the exchange's website (not by us) is created and filled now."""
        m = self.by_ours[ours]
        params = {"symbol": m.id, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": repr(qty),
                  "price": repr(price), "newClientOrderId": f"web_{self._next_id}"}  # fmt: skip
        rec = self._place(self._validate(params), "admin")
        self.broker.execute(rec.core_id, qty, price)

    def state(self) -> dict[str, Any]:
        """GET /admin/state: every order (with how it was created), trade and balance."""
        with self._lock:
            orders = [dict(self.order_json(r), via=r.via) for r in self._records.values()]
        return {
            "clock": format_ts(self.broker.clock_ns),
            "orders": orders,
            "trades": [self.trade_json(t) for t in self._trades_now()],
            "balances": {a: f + lk for a, (f, lk) in self.balances().items()},
            "last_event_id": self.broker.last_event_id,
        }


def _int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None


def _limit(params: Mapping[str, str]) -> int:
    value = _int(params, "limit")
    if value is None:
        return 500
    if not 1 <= value <= 1000:
        raise BinanceError(
            400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1..1000'."
        )
    return value


# -- HTTP -----------------------------------------------------------------------------------------------


class _Server(Server):
    app: FakeBinanceServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that went away (killed, timed out): nothing to report
        super().handle_error(request, client_address)


class _Handler(Handler):
    server: _Server
    server_version = "hflite-fakebinance/1"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        front = app.front
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if url.path in _POLLS and front.drop_next_poll:
            front.drop_next_poll = False
            self._drop()
            return
        fault = front.broker.count_request(method, url.path) if method in ("GET", "POST", "DELETE") else None
        if fault is not None and fault.action == "drop":
            self._drop()
            return
        if fault is not None and fault.respond is not None:
            self._fault_reply(fault)
            return
        try:
            status, payload = 200, self._route(method, url.path, url.query, raw)
        except BinanceError as exc:
            status, payload = exc.status, exc.body()
        if fault is not None and fault.action == "timeout":
            app._stopping.wait(front.broker.script.timeout_hold_s)  # processed; never answered
            self._drop()
            return
        if fault is not None and fault.action == "malformed":  # processed; the answer is garbage
            self._send(
                200, b'{"symbol": "BTCUSDT", "orderId": <html>upstream error</html>', "application/json"
            )
            return
        self._send(status, json.dumps(payload).encode(), "application/json;charset=UTF-8")

    def _fault_reply(self, fault: Fault) -> None:
        status = int(fault.respond or 500)
        if status == 429:
            wait = fault.retry_after_s if fault.retry_after_s is not None else 1
            body = {"code": -1003, "msg": _TOO_MANY}
            self._send(429, json.dumps(body).encode(), "application/json", {"Retry-After": f"{wait:g}"})
        elif status >= 500:
            body = {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
            self._send(status, json.dumps(body).encode(), "application/json")
        else:
            self._send(
                status,
                json.dumps({"code": -1000, "msg": "An unknown error occurred."}).encode(),
                "application/json",
            )

    def _route(self, method: str, path: str, query: str, raw: bytes) -> Any:
        app = self.server.app
        front = app.front
        if path.startswith("/admin/"):
            app.check_key(self.headers.get("X-MBX-APIKEY"))
            return self._admin(method, path, raw)
        body = raw.decode("utf-8", "replace")
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        if path in _SIGNED:
            app.check_signed(self.headers.get("X-MBX-APIKEY"), query, body, params)
        routes: dict[tuple[str, str], Any] = {
            ("GET", "/api/v3/ping"): lambda: {},
            ("GET", "/api/v3/time"): lambda: {"serverTime": time.time_ns() // 1_000_000},
            ("GET", "/api/v3/exchangeInfo"): lambda: front.exchange_info(params),
            ("GET", "/api/v3/ticker/24hr"): lambda: front.ticker(params),
            ("GET", "/api/v3/account"): front.account,
            ("POST", "/api/v3/order"): lambda: front.new_order(params),
            ("GET", "/api/v3/order"): lambda: front.get_order(params),
            ("DELETE", "/api/v3/order"): lambda: front.cancel_order(params),
            ("POST", "/api/v3/order/cancelReplace"): lambda: front.cancel_replace(params),
            ("GET", "/api/v3/openOrders"): lambda: front.open_orders(params),
            ("GET", "/api/v3/allOrders"): lambda: front.all_orders(params),
            ("GET", "/api/v3/myTrades"): lambda: front.my_trades(params),
        }
        route = routes.get((method, path))
        if route is None:
            raise BinanceError(404, -1000, f"Unknown endpoint {method} {path}.")
        return route()

    def _admin(self, method: str, path: str, raw: bytes) -> Any:
        front = self.server.app.front
        if method == "GET" and path == "/admin/state":
            return front.state()
        if method == "POST" and path == "/admin/clock":
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("ts"), str):
                raise BinanceError(
                    400, -1102, 'ts is required (an RFC 3339 time, e.g. "2024-01-05T21:00:00Z")'
                )
            if front.broker.clock_mode != "driven":
                raise BinanceError(
                    409, -1000, "the fake runs on the wall clock: /admin/clock is for driven mode"
                )
            try:
                ts = parse_ts(body["ts"])
            except BrokerError as exc:
                raise BinanceError(400, -1100, exc.message) from None
            last = front.broker.advance_to(ts)
            return {"ts": format_ts(front.broker.clock_ns), "last_event_id": last}
        raise BinanceError(404, -1000, f"Unknown endpoint {method} {path}.")


class FakeBinanceServer(HttpApp):
    """The fake Binance spot API over HTTP on ``host:port`` (0 = a free port), as a context manager::

        with FakeBinanceServer(BinanceFront(broker, {"BTC-USD": "BTC/USDT"})) as srv:
            ccxt.binance({"apiKey": ..., "secret": ...})  # with urls['api'] pointed at srv.url

    ``stop()`` is prompt: held replies and keep-alive connections are closed."""

    def __init__(
        self,
        front: BinanceFront,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        key_id: str = DEFAULT_KEY_ID,
        secret: str = DEFAULT_SECRET,
        recv_window_ms: int = RECV_WINDOW_MS,
    ) -> None:
        super().__init__(host, port)
        self.front = front
        self.recv_window_ms = recv_window_ms
        self._key_id, self._secret = key_id.encode(), secret.encode()
        self._stopping = threading.Event()

    def check_key(self, key_id: str | None) -> None:
        """-2015 (HTTP 401) unless the API key is right (compared in constant time)."""
        if not hmac.compare_digest((key_id or "").encode(), self._key_id):
            raise BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")

    def check_signed(self, key_id: str | None, query: str, body: str, params: Mapping[str, str]) -> None:
        """A SIGNED endpoint's checks, in Binance's order: key, timestamp window, signature."""
        self.check_key(key_id)
        stamp = params.get("timestamp")
        if not stamp or not stamp.isdigit():
            raise _missing("timestamp")
        window = int(params.get("recvWindow") or self.recv_window_ms)
        now = time.time_ns() // 1_000_000
        if int(stamp) > now + 1000 or now - int(stamp) > window:
            raise BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        signed = "".join(_without_signature(part) for part in (query, body))
        given = params.get("signature", "")
        want = hmac.new(self._secret, signed.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.encode(), want.encode()):
            raise BinanceError(400, -1022, "Signature for this request is not valid.")

    def start(self) -> FakeBinanceServer:
        self._stopping.clear()
        self._start_http(_Server, _Handler, "fakebinance-http")
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._stop_http()


def _without_signature(part: str) -> str:
    return "&".join(p for p in part.split("&") if p and not p.startswith("signature="))


def serve(
    settings: Settings,
    port: int = 8766,
    key_id: str | None = None,
    secret: str | None = None,
    *,
    host: str = "127.0.0.1",
    min_notional: float = DEFAULT_MIN_NOTIONAL,
    store: Store | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run the fake Binance (driven clock) until Ctrl-C or ``stop``: what a CLI calls. The symbols
    map is the config's ``[venue] symbols``; keys default to "fake-binance-key" / "fake-binance-secret"."""
    broker = FakeBroker.from_settings(settings, store)
    front = BinanceFront(broker, settings.venue.symbols, min_notional=min_notional)
    with FakeBinanceServer(
        front, host, port, key_id=key_id or DEFAULT_KEY_ID, secret=secret or DEFAULT_SECRET
    ) as srv:
        names = ", ".join(f"{m.ours}={m.id}" for m in front.markets.values())
        print(f"fake binance spot listening on {srv.url} ({names}); Ctrl-C stops it")
        wait_until_stopped(ready, stop)
