"""Interactive Brokers through TWS or IB Gateway: the ``ib`` venue kind, on the ``ib_async`` client.

``IbVenue`` is an ``EventVenue``. ib_async runs on its own event loop in a daemon thread; the engine's
calls reach it through ``asyncio.run_coroutine_threadsafe`` and never block the engine's loop for more
than one request's timeout. What TWS says comes back as ``VenueEvent``s from ib_async's events:

- ``orderStatusEvent``: Submitted / PreSubmitted -> ACCEPTED, Cancelled -> CANCELLED (TWS reports an
  expired DAY order as Cancelled too); ``openOrderEvent`` after a modification -> REPLACED;
- ``execDetailsEvent`` + ``commissionReportEvent``: one FILLED per execution (``event_id`` = IB's
  execId). TWS sends an execution's commission in a separate message right after it: the fill is
  held until its commission report arrives and delivered once, fee included; if no report comes
  within ``commission_wait_s`` the fill is delivered with fee 0 and a late report is only logged
  (the snapshot's executions carry the commission for reconciliation). A fill is never booked twice;
- ``errorEvent``: IB's codes translated at the border (see ``_REJECTING`` and ``_on_error``).

Our order id travels as ``orderRef``; IB's own order ids are ints from nextValidId, mapped both
ways and recovered after a restart from the open orders and executions' ``orderRef``. ``permId`` is
the venue order id (stable across client ids and sessions).

TWS has no API keys: the account id (``spec.account``) is the credential analogue. An account the
login does not manage, or a client id already connected (error 326), fails ``connect`` with
``VenueAuthError``. A dropped socket (a gateway restart, ``drop``), and error 1101/1102 (IB's
servers reconnected) set ``reconnected`` so the runtime reconciles; the socket is reopened with
backoff. Error 100 (pacing violation, TWS's "429") waits ``pacing_wait_s`` and resends.

Quotes (``quote``, for ``[execution.timing]``): a snapshot reqMktData of live data (market data type 1)
answered by tickPrice bid / ask and ended by tickSnapshotEnd. Without a live market-data subscription
(error 354, 10089/10090, 10168, or 10167 "displaying delayed market data") there is no quote: None,
logged, and the timing rules do not hold the order for its spread.

The driven clock (``drive_clock``, tests against ``fakes/tws.py``): ``sync`` posts the bar-time to
the fake's ``/admin/clock`` on the same port, then makes a ``reqCurrentTime`` round trip: TWS
answers in order, so every message the move caused has been handled when the answer arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from ib_async import IB, Contract, ExecutionFilter
from ib_async import Order as IbOrder
from ib_async import Trade as IbTrade
from ib_async.ib import StartupFetch
from ib_async.objects import CommissionReport
from ib_async.objects import Fill as IbFill
from ib_async.ticker import Ticker
from ib_async.util import UNSET_DOUBLE

from hflite import redact as redaction
from hflite.domain.instrument import AssetClass, Instrument, UnknownInstrumentError, instrument_for
from hflite.domain.order import Order, OrderEvent, OrderStatus, OrderType, Side
from hflite.execution.timing import Quote
from hflite.execution.venues.base import (
    Capabilities,
    EventVenue,
    Recorder,
    VenueAuthError,
    VenueError,
    VenueEvent,
    VenueEventKind,
    VenueFill,
    VenueNotFound,
    VenueOrder,
    VenuePosition,
    VenueSnapshot,
    VenueUnavailable,
    VenueUnknownState,
)
from hflite.execution.venues.common import (
    ack_events,
    client_order_id,
    fmt_ts,
    mask_account,
    need_price,
    oco_pair,
)
from hflite.execution.venues.registry import VenueSpec

__all__ = ["DEFAULT_ENDPOINT", "IbVenue", "from_spec", "ib_contract", "parse_endpoint"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

#: TWS paper trading's API port (IB Gateway paper: 4002; live: TWS 7496, Gateway 4001).
DEFAULT_ENDPOINT = "tcp://127.0.0.1:7497"
_SYNC_FETCH = (
    StartupFetch.POSITIONS | StartupFetch.ORDERS_OPEN | StartupFetch.ORDERS_COMPLETE | StartupFetch.EXECUTIONS
)
_SUMMARY_TAGS = "AccountType,NetLiquidation,TotalCashValue,BuyingPower,AvailableFunds"
#: Error codes that refuse an order (its words become the REJECTED reason).
_REJECTING = frozenset(
    {103, 104, 105, 106, 107, 109, 110, 200, 201, 203, 321, 382, 383, 387, 391, 399, 434, 461}
)
_SYNC_TRIES = 3  # the clock's barrier, across a dropped connection
_CANCELLED_STATE = re.compile(r"state: *(?:Api)?Cancelled", re.IGNORECASE)
_INFO = frozenset({2104, 2106, 2107, 2108, 2158, 2119, 2100, 2150})
_PACING = 100
#: Market data refused or not live: no subscription (354, 10168), one missing for the API (10089,
#: 10090), or only delayed data shown (10167, a warning). The quote is missing, not an error.
_NO_MARKET_DATA = frozenset({354, 10089, 10090, 10167, 10168})
_LIVE = 1  # reqMarketDataType: 1 live, 2 frozen, 3 delayed, 4 delayed frozen
_ORDER_TYPES = {OrderType.MARKET: "MKT", OrderType.LIMIT: "LMT", OrderType.STOP: "STP"}
_STOP_LIMIT: OrderType | None = getattr(OrderType, "STOP_LIMIT", None)
if _STOP_LIMIT is not None:
    _ORDER_TYPES[_STOP_LIMIT] = "STP LMT"
_OUR_TYPES = {v: k for k, v in _ORDER_TYPES.items()}
_OPEN_STATES = frozenset({"PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "PendingCancel"})
_DONE_STATES = {
    "Filled": OrderStatus.FILLED,
    "Cancelled": OrderStatus.CANCELLED,
    "ApiCancelled": OrderStatus.CANCELLED,
    "Inactive": OrderStatus.REJECTED,
}
_LOGGERS = ("ib_async", "ib_async.client", "ib_async.wrapper", "ib_async.ib", "ib_async.Decoder")


#: ib_async's log lines for codes the adapter translates (pacing, cancel confirmations, notices, no market
#: data for a quote).
_HANDLED = re.compile(
    r"^(?:(?:Error|Warning) (?:100|202|21\d\d|354|10089|10090|10167|10168), reqId"
    r"|Canceled order: .*errorCode=100\))"
)


class _Redacting(logging.Filter):
    """Masks registered secrets (the account id) in ib_async's log records: it logs positions,
    executions and account values with the account number in them."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            return True
        if _HANDLED.match(text):
            return False  # the adapter reports these itself, in its own words
        clean = redaction.redact(text)
        if clean != text:
            record.msg, record.args = clean, ()
        return True


_FILTER = _Redacting()
for _name in _LOGGERS:
    if _FILTER not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_FILTER)


class _DecodeWatch:
    """Stands in for ib_async's decoder logger: counts messages that did not parse (the decoder
    logs and drops them), so a read that lost one fails as malformed instead of coming back short."""

    def __init__(self, inner: logging.Logger) -> None:
        self.inner = inner
        self.errors = 0

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.errors += 1
        self.inner.error("ib_async could not decode a message from TWS (dropped)")

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.errors += 1
        self.inner.error(redaction.redact(str(msg)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclasses.dataclass(slots=True)
class _Wait:
    """One request waiting for TWS's answer: "ack", "rejected", "pacing" or "lost"."""

    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outcome: str = ""

    def settle(self, outcome: str) -> None:
        if not self.done.is_set():
            self.outcome = outcome
            self.done.set()


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """ "tcp://host:port" (or "host:port") as (host, port); ValueError naming the problem."""
    text = endpoint.strip() or DEFAULT_ENDPOINT
    parts = urlsplit(text if "://" in text else f"tcp://{text}")
    if parts.scheme not in ("tcp", "ib", "tws"):
        raise ValueError(
            f'venue ib: endpoint must look like "tcp://127.0.0.1:7497", got scheme {parts.scheme!r}'
        )
    if not parts.hostname or parts.port is None:
        raise ValueError(
            f'venue ib: endpoint must name host and port, e.g. "tcp://127.0.0.1:7497" (got {text!r})'
        )
    return parts.hostname, parts.port


def ib_contract(symbol: str, inst: Instrument | None, override: str | None = None) -> Contract:
    """The IB contract of our ``symbol``: stocks and ETFs on SMART, FX on IDEALPRO (Forex), crypto on
    PAXOS. ``override`` ("SPY", "EUR.USD" or "SECTYPE:SYMBOL:EXCHANGE:CURRENCY", e.g.
    "CRYPTO:ETH:PAXOS:USD") replaces the default."""
    if override:
        parts = override.split(":")
        if len(parts) == 4:
            sec_type, sym, exchange, ccy = (p.strip() for p in parts)
            return Contract(secType=sec_type.upper(), symbol=sym, exchange=exchange, currency=ccy)
        if len(parts) != 1:
            raise ValueError(
                f'venue ib: symbol override {override!r}: use "SYM" or "SECTYPE:SYMBOL:EXCHANGE:CURRENCY"'
            )
        if "." in override:
            base, _, quote = override.partition(".")
            return Contract(secType="CASH", symbol=base, exchange="IDEALPRO", currency=quote)
        return Contract(secType="STK", symbol=override, exchange="SMART", currency="USD")
    if inst is None:
        raise ValueError(f"venue ib: no instrument definition for {symbol!r} (add it or set [venue] symbols)")
    if inst.asset_class is AssetClass.FX:
        base = inst.base_currency or inst.symbol[:3]
        return Contract(secType="CASH", symbol=base, exchange="IDEALPRO", currency=inst.currency)
    if inst.asset_class is AssetClass.CRYPTO:
        base = inst.base_currency or inst.symbol[:3]
        return Contract(secType="CRYPTO", symbol=base, exchange="PAXOS", currency=inst.currency)
    return Contract(secType="STK", symbol=inst.symbol, exchange="SMART", currency=inst.currency)


class IbVenue(EventVenue):
    """The broker venue port over TWS / IB Gateway (see the module's docstring).

    ``account``: the account to trade ("" = the only one the login manages). ``symbols``: our symbol
    -> an IB contract override (``ib_contract``). ``instruments``: lot sizes (quantities are checked
    against them) and fallback ticks (prices are rounded to TWS's minTick when it is known).
    ``sleep`` waits between pacing retries (injectable for tests); ``commission_wait_s`` bounds how
    long a fill waits for its commission report."""

    capabilities = Capabilities(
        server_side_stops=True, oco=True, stop_limit=True, replace=True, fractional=False
    )

    def __init__(
        self,
        name: str,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        client_id: int = 1,
        account: str = "",
        instruments: dict[str, Instrument] | None = None,
        symbols: dict[str, str] | None = None,
        drive_clock: bool = False,
        timeout_s: float = 5.0,
        max_retries: int = 5,
        max_clock_skew_s: float = 2.0,
        record: Recorder | None = None,
        pacing_wait_s: float = 1.0,
        backoff_max_s: float = 5.0,
        commission_wait_s: float = 2.0,
        sync_timeout_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(record)
        if timeout_s <= 0 or max_retries < 0 or max_clock_skew_s < 0:
            raise ValueError(
                f"venue {name}: timeout_s must be > 0, max_retries >= 0 and max_clock_skew_s >= 0 "
                f"(got {timeout_s}, {max_retries}, {max_clock_skew_s})"
            )
        self.name = name
        self.host, self.port = parse_endpoint(endpoint)
        self.client_id = int(client_id)
        self.account = account
        if account:
            redaction.register(account)
        self.instruments = dict(instruments or {})
        self.symbols = dict(symbols or {})
        self.drive_clock = drive_clock
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.max_clock_skew_s = max_clock_skew_s
        self.pacing_wait_s, self.backoff_max_s = pacing_wait_s, backoff_max_s
        self.commission_wait_s = commission_wait_s
        self.sync_timeout_s = max(sync_timeout_s, timeout_s)
        self._sleep, self._wall_ns = sleep, wall_clock_ns
        self.reconnected = False  # the socket dropped (or IB's servers reconnected): reconcile
        self.currency = "USD"
        self.server_version = 0
        self._contracts: dict[str, Contract] = {}
        self._ticks: dict[str, float] = {}
        self._by_key: dict[tuple[str, str, str], str] = {}
        self._ref_to_id: dict[str, int] = {}  # orderRef -> IB order id (this client id's)
        self._id_to_ref: dict[int, str] = {}
        self._refs: dict[str, str] = {}  # short orderRef -> our order id (long ids)
        self._waits: dict[int, _Wait] = {}  # IB order id -> the submit / modify waiting for an answer
        self._replacing: dict[int, tuple[str, float, str]] = {}  # order id -> (field, value, prior status)
        self._unbooked: dict[str, tuple[VenueEvent, asyncio.TimerHandle | None]] = {}
        self._booked: set[str] = set()
        self._fee_missing: set[str] = set()
        self._next_tag = 0  # the seq given to delivered events (driven clock, see ``sync``)
        self._quote_warned: set[tuple[str, str]] = set()  # (symbol, why): logged once at warning
        self._closing = False
        self._was_up = False  # connected once: a dropped socket is reconnected from then on
        self._up = threading.Event()
        self._reconnecting: asyncio.Task[None] | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=f"venue-{name}-ib", daemon=True)
        self._thread.start()
        self._ib: IB = self._call(self._make_ib, timeout_s=10.0)
        self._decode = _DecodeWatch(self._ib.client.decoder.logger)
        self._ib.client.decoder.logger = self._decode  # type: ignore[assignment]
        self._http = httpx.Client(
            base_url=f"http://{self.host}:{self.port}", timeout=httpx.Timeout(timeout_s)
        )

    # -- the ib_async thread -------------------------------------------------------------------------
    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _make_ib(self) -> IB:
        ib = IB()
        ib.RequestTimeout = self.timeout_s
        ib.orderStatusEvent += self._on_status
        ib.openOrderEvent += self._on_open_order
        ib.execDetailsEvent += self._on_exec
        ib.commissionReportEvent += self._on_commission
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        return ib

    def _call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout_s: float | None = None) -> T:
        """Run a coroutine on the ib_async loop and wait for it (from any other thread)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("IbVenue._call from its own loop thread")
        fut = asyncio.run_coroutine_threadsafe(fn(), self._loop)
        try:
            return fut.result(timeout_s if timeout_s is not None else self.timeout_s + 1.0)
        except TimeoutError:
            fut.cancel()
            raise

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def connect(self) -> None:
        """Open the API socket, check the account, learn order ids and contract details, check the clock."""
        self._closing = False
        try:
            self._call(self._connect_once, timeout_s=3 * self.timeout_s + 2.0)
        except TimeoutError:
            raise VenueUnavailable(
                f"venue {self.name} at {self.url}: no answer within {self.timeout_s:g} s"
            ) from None
        self._up.set()
        self._was_up = True
        self._call(self._load_contracts, timeout_s=len(self._traded()) * self.timeout_s + 2.0)
        skew = self.clock_skew_s()
        if -skew > self.max_clock_skew_s:
            raise VenueError(
                f"venue {self.name}: the local clock is {-skew:.1f} s behind TWS's "
                f"(max {self.max_clock_skew_s:g} s); synchronise it with NTP (e.g. timedatectl set-ntp true)"
            )

    async def _connect_once(self) -> None:
        ib = self._ib
        refused: list[int] = []

        def on_error(req_id: int, code: int, text: str, contract: Any) -> None:
            if code in (326, 502, 504):
                refused.append(code)

        ib.errorEvent += on_error
        try:
            await ib.connectAsync(
                self.host, self.port, self.client_id, timeout=self.timeout_s, fetchFields=_SYNC_FETCH
            )
        except (ConnectionError, OSError, TimeoutError) as exc:
            ib.disconnect()
            if 326 in refused:
                raise VenueAuthError(
                    f"venue {self.name} at {self.url}: client id {self.client_id} is already in use "
                    "(IB error 326); "
                    "set [venue] client_id to a free one"
                ) from None
            if isinstance(exc, ConnectionRefusedError):
                raise VenueUnavailable(
                    f"cannot reach venue {self.name} at {self.url}: connection refused "
                    "(is TWS / IB Gateway running "
                    "with its API port open?)"
                ) from None
            raise VenueUnavailable(
                f"venue {self.name} at {self.url}: API connection failed ({_reason(exc)})"
            ) from None
        finally:
            ib.errorEvent -= on_error
        accounts = ib.managedAccounts()
        if self.account and self.account not in accounts:
            ib.disconnect()
            raise VenueAuthError(
                f"venue {self.name} at {self.url}: account {mask_account(self.account)} is not managed "
                "by this TWS / "
                "Gateway login (check HFLITE_BROKER_ACCOUNT)"
            )
        if not self.account:
            if len(accounts) != 1:
                ib.disconnect()
                raise VenueAuthError(
                    f"venue {self.name} at {self.url}: the login manages {len(accounts)} accounts; "
                    "name one in "
                    "HFLITE_BROKER_ACCOUNT"
                )
            self.account = accounts[0]
            redaction.register(self.account)
        self.server_version = ib.client.serverVersion()
        for trade in ib.openTrades():
            self._learn(trade.order.orderId, trade.order.orderRef, trade.order.clientId)
        for fill in ib.fills():
            self._learn(fill.execution.orderId, fill.execution.orderRef, fill.execution.clientId)

    def _traded(self) -> list[str]:
        return sorted(set(self.instruments) | set(self.symbols))

    async def _load_contracts(self) -> None:
        """Qualify each traded symbol's contract (conId) and learn its minTick."""
        for symbol in self._traded():
            try:
                contract = self._contract(symbol)
            except ValueError as exc:
                _log.warning(str(exc))
                continue
            try:
                details = await asyncio.wait_for(self._ib.reqContractDetailsAsync(contract), self.timeout_s)
            except (TimeoutError, ConnectionError):
                details = []
            if details and details[0].contract is not None:
                found = details[0].contract
                contract.conId = found.conId
                contract.localSymbol = found.localSymbol
                if details[0].minTick and details[0].minTick > 0:
                    self._ticks[symbol] = float(details[0].minTick)
            else:
                _log.warning(
                    f"venue {self.name}: TWS does not know {symbol}'s contract; orders for it will be refused"
                )

    def close(self) -> None:
        """Disconnect and stop the ib_async thread (idempotent)."""
        self._closing = True
        self._up.clear()
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                self._call(self._disconnect, timeout_s=5.0)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
            if not self._thread.is_alive():
                self._loop.close()
        self._http.close()

    async def _disconnect(self) -> None:
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        self._ib.disconnect()

    def _on_disconnected(self) -> None:
        """The socket closed (a gateway restart, a drop): what was in flight is unknown; reconnect."""
        self._up.clear()
        for wait in list(self._waits.values()):
            wait.settle("lost")
        if self._closing or not self._was_up:
            return  # closing, or a first connect that failed (connect raises; nothing to resume)
        _log.warning(f"venue {self.name}: the TWS API connection dropped; reconnecting")
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                await self._connect_once()
            except VenueAuthError as exc:
                _log.error(str(exc))
            except VenueError:
                pass
            else:
                self.reconnected = True
                self._up.set()
                _log.warning(f"venue {self.name}: reconnected to TWS; reconciling")
                return
            delay = min(self.backoff_max_s, delay * 2)

    def _ensure_up(self) -> None:
        if not self._up.wait(self.timeout_s):
            raise VenueUnavailable(f"venue {self.name} at {self.url}: not connected to TWS (IB error 504)")

    # -- ids ---------------------------------------------------------------------------------------
    def _ref(self, order_id: str) -> str:
        ref = client_order_id(order_id)
        if ref != order_id:
            self._refs[ref] = order_id
        return ref

    def order_id(self, ref: str) -> str:
        """Our order id for an orderRef seen at TWS."""
        return self._refs.get(ref, ref)

    def _learn(self, ib_id: int, ref: str, client_id: int) -> None:
        if ref and ib_id > 0 and client_id == self.client_id:
            self._ref_to_id[ref] = ib_id
            self._id_to_ref[ib_id] = ref

    def _ours(self, trade: IbTrade | None, ib_id: int = 0, perm_id: int = 0) -> str:
        """Our order id for a trade (or order id); an order of someone else: "ib-perm-<permId>"."""
        ref = trade.order.orderRef if trade is not None else ""
        if not ref and ib_id > 0:
            ref = self._id_to_ref.get(ib_id, "")
        if ref:
            return self.order_id(ref)
        perm = perm_id or (trade.order.permId if trade is not None else 0)
        return f"ib-perm-{perm}"

    def adopt(self, order: Order) -> None:
        """Hold an order already at the venue (recovery): its events map back by orderRef."""
        self._ref(order.id)
        super().adopt(order)

    # -- contracts, prices, quantities ---------------------------------------------------------------
    def _instrument(self, symbol: str) -> Instrument | None:
        inst = self.instruments.get(symbol)
        if inst is not None:
            return inst
        try:
            return instrument_for(symbol)
        except UnknownInstrumentError:
            return None

    def _contract(self, symbol: str) -> Contract:
        """The IB contract for ``symbol`` (ValueError when there is none); cached, qualified on connect."""
        contract = self._contracts.get(symbol)
        if contract is None:
            contract = ib_contract(symbol, self._instrument(symbol), self.symbols.get(symbol))
            self._contracts[symbol] = contract
            self._by_key[(contract.secType, contract.symbol, contract.currency)] = symbol
        return contract

    def symbol_of(self, contract: Contract) -> str:
        """Our symbol for an IB contract (its IB symbol when we do not trade it)."""
        if not self._by_key:
            for symbol in self._traded():
                with contextlib.suppress(ValueError):
                    self._contract(symbol)
        key = (contract.secType, contract.symbol, contract.currency)
        if key in self._by_key:
            return self._by_key[key]
        return (
            f"{contract.symbol}.{contract.currency}"
            if contract.secType in ("CASH", "CRYPTO")
            else contract.symbol
        )

    def _price(self, symbol: str, price: float) -> float:
        tick = self._ticks.get(symbol)
        inst = self._instrument(symbol)
        if tick is None and inst is not None:
            tick = inst.tick_size
        if not tick:
            return price
        return round(round(price / tick) * tick, 10)

    def _qty(self, order: Order, qty: float) -> float:
        inst = self._instrument(order.symbol)
        if not qty > 0 or not math.isfinite(qty):
            raise ValueError(f"order {order.id}: quantity must be positive, got {qty:g}")
        if inst is not None and inst.lot_size > 0:
            lots = qty / inst.lot_size
            if abs(lots - round(lots)) > 1e-6:
                raise ValueError(
                    f"order {order.id}: quantity {qty:g} is not a multiple of "
                    f"{order.symbol}'s lot {inst.lot_size:g}"
                )
            return round(round(lots) * inst.lot_size, 10)
        return qty

    def _ib_order(self, order: Order) -> IbOrder:
        """Our order as an IB order (ValueError when it cannot be sent)."""
        kind = _ORDER_TYPES.get(order.type)
        if kind is None:
            raise ValueError(f"order {order.id}: order type {order.type.value} is not supported by IB here")
        ib = IbOrder(
            action="BUY" if order.side is Side.BUY else "SELL",
            totalQuantity=self._qty(order, order.qty),
            orderType=kind,
            tif=order.tif.value.upper(),
            orderRef=self._ref(order.id),
            account=self.account,
        )
        if kind in ("LMT", "STP LMT"):
            ib.lmtPrice = self._price(order.symbol, need_price(order))
        if kind == "STP":
            ib.auxPrice = self._price(order.symbol, need_price(order))
        if kind == "STP LMT":
            trigger = getattr(order, "stop_price", None)
            if trigger is None:
                raise ValueError(f"order {order.id}: stop_limit without a stop_price")
            ib.auxPrice = self._price(order.symbol, float(trigger))
        return ib

    # -- sending -----------------------------------------------------------------------------------
    def _send_submit(self, order: Order) -> None:
        self._place_group([order], lambda ib_orders: None)

    def _send_oco(self, orders: list[Order]) -> None:
        """A position's stop-loss and take-profit as one OCA group (ocaType 1: cancel the rest with
        block), transmitted together."""
        pair = oco_pair(orders, same_qty=False, same_tif=False)
        if pair is None:
            for order in orders:
                self._send_submit(order)
            return

        def link(ib_orders: list[IbOrder]) -> None:
            group = f"oca-{self._ref(orders[0].id)}"
            for ib_order in ib_orders:
                ib_order.ocaGroup, ib_order.ocaType = group, 1

        self._place_group(list(pair), link)

    def submit_bracket(self, entry: Order, take_profit: Order, stop_loss: Order) -> None:
        """An entry with its take-profit and stop-loss as one IB bracket: the legs carry the entry's
        ``parentId`` and work (as an OCA pair) once it fills; only the last leg is transmitted."""
        for order in (entry, take_profit, stop_loss):
            order.apply(OrderEvent.SUBMIT)
            self.orders[order.id] = order
            self._sent.setdefault(order.id, len(self._sent))
            self.working.setdefault(order.symbol, []).append(order)

        def link(ib_orders: list[IbOrder]) -> None:
            parent = ib_orders[0]
            for leg in ib_orders[1:]:
                leg.parentId = parent.orderId

        self._place_group([entry, take_profit, stop_loss], link)

    def _place_group(self, orders: list[Order], link: Callable[[list[IbOrder]], None]) -> None:
        """Place orders (the last one transmits the group) and wait for TWS's answer: ACCEPTED and
        REJECTED arrive from the event handlers; a pacing violation waits and resends; no answer
        within the timeout, or a dropped socket, makes the orders UNKNOWN."""
        try:
            contracts = [self._contract(o.symbol) for o in orders]
            ib_orders = [self._ib_order(o) for o in orders]
        except ValueError as exc:
            self._deliver_all(orders, VenueEventKind.REJECTED, str(exc))
            return
        if not self._up.wait(self.timeout_s):
            self._deliver_all(orders, VenueEventKind.REJECTED, "not connected to TWS (IB error 504)")
            return
        if self._recognised(orders, ib_orders):
            return
        for attempt in range(1 + self.max_retries):
            waits: list[_Wait] = []
            try:
                self._call(partial(self._place_async, contracts, ib_orders, link, waits, first=attempt == 0))
            except (ConnectionError, TimeoutError):
                self._deliver_all(orders, VenueEventKind.REJECTED, "not connected to TWS (IB error 504)")
                return
            outcomes = [self._await(w) for w in waits]
            if "pacing" in outcomes and attempt < self.max_retries:
                _log.warning(f"venue {self.name}: TWS pacing violation (error 100); resending")
                self._sleep(self.pacing_wait_s)
                continue
            for order, outcome in zip(orders, outcomes, strict=True):
                if outcome == "pacing":
                    why = "TWS pacing violation (error 100): retries ran out"
                    self._deliver_all([order], VenueEventKind.REJECTED, why)
                elif outcome in ("lost", ""):
                    lost = outcome == "lost"
                    why = (
                        "connection dropped after sending"
                        if lost
                        else f"no answer within {self.timeout_s:g} s"
                    )
                    self._deliver_all([order], VenueEventKind.UNKNOWN, f"submit: {why}")
            return

    def _recognised(self, orders: list[Order], ib_orders: list[IbOrder]) -> bool:
        """True when TWS has (or had) orders under these refs (an earlier send got through): their
        state is taken, the others are sent one by one."""
        try:
            known = self._call(partial(self._existing, [o.orderRef for o in ib_orders]))
        except (ConnectionError, TimeoutError):
            return False
        if not known:
            return False
        for order, ib_order in zip(orders, ib_orders, strict=True):
            if ib_order.orderRef in known:
                self._recover(order, known[ib_order.orderRef])
            else:
                self._place_group([order], lambda _orders: None)
        return True

    async def _existing(self, refs: list[str]) -> dict[str, IbTrade]:
        """The trades TWS told us about (open, completed, this session's) under these orderRefs.
        IB does not refuse a repeated orderRef: this is how a re-sent order is recognised."""
        wanted = set(refs)
        out: dict[str, IbTrade] = {}
        for trade in self._ib.wrapper.trades.values():
            o = trade.order
            if o.orderRef in wanted and o.permId > 0:
                prior = out.get(o.orderRef)
                if prior is None or prior.orderStatus.status not in _OPEN_STATES:
                    out[o.orderRef] = trade
        return out

    def _recover(self, order: Order, trade: IbTrade) -> None:
        """Take the state of an order TWS already has under our id instead of sending it again."""
        status = trade.orderStatus.status
        self._learn(trade.order.orderId, trade.order.orderRef, self.client_id)
        if status == "Inactive":
            self._deliver_all([order], VenueEventKind.REJECTED, "rejected by the venue")
            return
        self._deliver_all([order], VenueEventKind.ACCEPTED, "")
        if status in ("Cancelled", "ApiCancelled"):
            self._deliver_all([order], VenueEventKind.CANCELLED, "cancelled at the venue")
        if trade.orderStatus.filled or status == "Filled":
            self.needs_reconcile = True  # its executions come with the next snapshot

    async def _place_async(
        self,
        contracts: list[Contract],
        ib_orders: list[IbOrder],
        link: Callable[[list[IbOrder]], None],
        waits: list[_Wait],
        *,
        first: bool,
    ) -> None:
        """On the loop: give the orders their ids (first time), link them, send them all."""
        if first:
            for ib_order in ib_orders:
                ib_order.orderId = self._ib.client.getReqId()
            link(ib_orders)
            for ib_order in ib_orders[:-1]:
                ib_order.transmit = False
        for ib_order in ib_orders:
            self._learn(ib_order.orderId, ib_order.orderRef, self.client_id)
            wait = self._waits[ib_order.orderId] = _Wait()
            waits.append(wait)
        for contract, ib_order in zip(contracts, ib_orders, strict=True):
            self._ib.wrapper.trades.pop((self.client_id, ib_order.orderId), None)  # a resend is new
            self._ib.placeOrder(contract, ib_order)

    def _await(self, wait: _Wait) -> str:
        wait.done.wait(self.timeout_s)
        return wait.outcome

    def _trade(self, order_id: str) -> IbTrade | None:
        """ib_async's live trade for our order (None when TWS has not told us about it)."""
        ref = self._ref(order_id)
        ib_id = self._ref_to_id.get(ref)
        if ib_id is None:
            return None
        return self._ib.wrapper.trades.get((self.client_id, ib_id))  # type: ignore[return-value]

    def _send_cancel(self, order: Order) -> None:
        trade = self._trade(order.id) or self._known(order)
        if trade is None:
            return  # TWS never acknowledged it: the UNKNOWN path reconciles it
        if trade.orderStatus.status in ("Cancelled", "ApiCancelled"):
            # closed before this process knew (a run killed after its cancel went out): say so now,
            # as TWS's own confirmation would have
            self._deliver_all([order], VenueEventKind.CANCELLED, "cancelled at the venue")
            return
        for attempt in range(1 + self.max_retries):
            wait = _Wait()
            try:
                if not self._call(partial(self._cancel_async, trade, wait)):
                    return
            except (ConnectionError, TimeoutError) as exc:
                _log.warning(f"venue {self.name}: cancel of {order.id} not sent ({_reason(exc)})")
                return
            if self._await(wait) == "pacing" and attempt < self.max_retries:
                self._sleep(self.pacing_wait_s)
                continue
            return

    def _known(self, order: Order) -> IbTrade | None:
        """The order as TWS reported it on connect (open or completed), found by orderRef."""
        try:
            known = self._call(partial(self._existing, [self._ref(order.id)]))
        except (ConnectionError, TimeoutError):
            return None
        return known.get(self._ref(order.id))

    async def _cancel_async(self, trade: IbTrade, wait: _Wait) -> bool:
        if trade.orderStatus.status not in _OPEN_STATES:
            return False
        self._waits[trade.order.orderId] = wait
        self._ib.client.cancelOrder(trade.order.orderId)
        return True

    def _send_replace(self, order: Order, price: float) -> None:
        kind = _ORDER_TYPES.get(order.type)
        field = "auxPrice" if kind == "STP" else "lmtPrice"
        self._modify(order, field, self._price(order.symbol, price))

    def _send_resize(self, order: Order, qty: float) -> None:
        try:
            self._modify(order, "totalQuantity", self._qty(order, qty))
        except ValueError as exc:
            _log.warning(f"venue {self.name}: resize of {order.id} refused: {exc}")

    def _modify(self, order: Order, field: str, value: float) -> None:
        """placeOrder again with the same order id: TWS modifies the working order in place; the
        REPLACED event comes with its openOrder echo."""
        trade = self._trade(order.id)
        if trade is None:
            return
        for attempt in range(1 + self.max_retries):
            wait = _Wait()
            try:
                if not self._call(partial(self._modify_async, trade, field, value, wait)):
                    return
            except (ConnectionError, TimeoutError) as exc:
                _log.warning(f"venue {self.name}: modification of {order.id} not sent ({_reason(exc)})")
                return
            outcome = self._await(wait)
            if outcome == "pacing" and attempt < self.max_retries:
                self._sleep(self.pacing_wait_s)
                continue
            if outcome != "ack":
                _log.warning(f"venue {self.name}: modification of {order.id}: {outcome or 'no answer'}")
            return

    async def _modify_async(self, trade: IbTrade, field: str, value: float, wait: _Wait) -> bool:
        if trade.orderStatus.status not in _OPEN_STATES:
            return False
        changed = dataclasses.replace(trade.order)
        setattr(changed, field, value)
        self._waits[trade.order.orderId] = wait
        self._replacing[trade.order.orderId] = (field, value, trade.orderStatus.status)
        self._ib.client.placeOrder(trade.order.orderId, trade.contract, changed)
        return True

    def cancel_venue_order(self, venue_order_id: str) -> None:
        """Cancel an order by its permId (one the journal never saw, that a human accepted to cancel);
        one already closed or gone is left alone."""
        self._ensure_up()

        async def cancel() -> bool:
            trades = await asyncio.wait_for(self._ib.reqAllOpenOrdersAsync(), self.timeout_s)
            for trade in trades:
                if str(trade.order.permId) == venue_order_id:
                    self._ib.client.cancelOrder(trade.order.orderId)
                    return True
            return False

        try:
            found = self._call(cancel)
        except (ConnectionError, TimeoutError) as exc:
            raise VenueUnavailable(
                f"venue {self.name}: cancelling venue order {venue_order_id} failed ({_reason(exc)})"
            ) from None
        if not found:
            raise VenueNotFound(f"venue {self.name}: no open order with permId {venue_order_id}")

    # -- events (on the ib_async loop) -------------------------------------------------------------
    def _emit(self, events: Iterable[VenueEvent]) -> None:
        self.deliver(ev._replace(seq=self._next_tag) for ev in events)

    def _deliver_all(self, orders: list[Order], kind: VenueEventKind, reason: str) -> None:
        self._emit(ack_events(orders, kind, redaction.redact(reason), self._wall_ns()))

    def _on_status(self, trade: IbTrade) -> None:
        status = trade.orderStatus.status
        if trade.log and trade.log[-1].errorCode:
            return  # ib_async's own "Cancelled" after an error: the error handler decides
        order_id = trade.order.orderId
        self._learn(order_id, trade.order.orderRef, trade.order.clientId)
        ours = self._ours(trade, order_id)
        symbol = self.symbol_of(trade.contract)
        ts = self._wall_ns()
        if status in ("Submitted", "PreSubmitted", "Filled"):
            wait = self._waits.get(order_id)
            if wait is not None and order_id not in self._replacing:
                wait.settle("ack")
            self._emit([VenueEvent(VenueEventKind.ACCEPTED, ours, ts, f"{ours}:accepted", symbol=symbol)])
        elif status in ("Cancelled", "ApiCancelled"):
            wait = self._waits.pop(order_id, None)
            if wait is not None:
                wait.settle("ack")
            why = "cancelled at the venue"
            self._emit(
                [
                    VenueEvent(
                        VenueEventKind.CANCELLED, ours, ts, f"{ours}:canceled", reason=why, symbol=symbol
                    )
                ]
            )

    def _on_open_order(self, trade: IbTrade) -> None:
        order_id = trade.order.orderId
        self._learn(order_id, trade.order.orderRef, trade.order.clientId)
        asked = self._replacing.get(order_id)
        if asked is None:
            return
        field, value, _ = asked
        if not math.isclose(float(getattr(trade.order, field)), value, rel_tol=1e-9, abs_tol=1e-12):
            return
        self._replacing.pop(order_id, None)
        wait = self._waits.pop(order_id, None)
        if wait is not None:
            wait.settle("ack")
        ours = self._ours(trade, order_id)
        symbol = self.symbol_of(trade.contract)
        ts = self._wall_ns()
        if field == "totalQuantity":
            ev = VenueEvent(
                VenueEventKind.REPLACED, ours, ts, f"{ours}:resized:{value:g}", qty=value, symbol=symbol
            )
        else:
            ev = VenueEvent(
                VenueEventKind.REPLACED, ours, ts, f"{ours}:replaced:{value:g}", price=value, symbol=symbol
            )
        self._emit([ev])

    def _on_exec(self, trade: IbTrade, fill: IbFill) -> None:
        ex = fill.execution
        if ex.execId in self._booked or ex.execId in self._unbooked:
            return
        self._learn(ex.orderId, ex.orderRef, ex.clientId)
        ours = self._ours(trade, ex.orderId, ex.permId)
        ev = VenueEvent(
            VenueEventKind.FILLED,
            ours,
            _ns(ex.time) or self._wall_ns(),
            ex.execId,
            qty=float(ex.shares),
            price=float(ex.price),
            symbol=self.symbol_of(fill.contract),
        )
        report = fill.commissionReport
        if report is not None and report.execId == ex.execId and _commission(report) is not None:
            self._book(ev, _commission(report) or 0.0)
            return
        timer = self._loop.call_later(self.commission_wait_s, self._book_without_commission, ex.execId)
        self._unbooked[ex.execId] = (ev, timer)

    def _on_commission(self, trade: IbTrade, fill: IbFill, report: CommissionReport) -> None:
        held = self._unbooked.pop(report.execId, None)
        if held is None:  # a repeat, or the report of a reqExecutions answer
            if report.execId in self._fee_missing:
                self._fee_missing.discard(report.execId)
                _log.warning(
                    f"venue {self.name}: commission for execution {report.execId} came after its fill "
                    "was booked with fee 0; the snapshot's executions carry it"
                )
            return
        ev, timer = held
        if timer is not None:
            timer.cancel()
        self._book(ev, _commission(report) or 0.0)

    def _book_without_commission(self, exec_id: str) -> None:
        held = self._unbooked.pop(exec_id, None)
        if held is not None:
            _log.warning(
                f"venue {self.name}: no commission report for execution {exec_id}; booked with fee 0"
            )
            self._fee_missing.add(exec_id)
            self._book(held[0], 0.0)

    def _book(self, ev: VenueEvent, fee: float) -> None:
        self._booked.add(ev.event_id)
        self._emit([ev._replace(fee=fee)])

    def _on_error(self, req_id: int, code: int, text: str, contract: Any) -> None:
        """IB's error codes at the border: order refusals -> REJECTED (the venue's words); 202 ->
        CANCELLED; 100 -> pacing (the sender waits and resends); 10147/10148 (cancel of an unknown or
        closed order) and a refused modification leave the order as it was; the connectivity codes
        and the 2100-range notices are handled by ``_on_notice``."""
        message = redaction.redact(" ".join(str(text).split()))[:300]
        if self._on_notice(code, message):
            return
        if req_id <= 0:
            _log.warning(f"venue {self.name}: TWS error {code}: {message}")
            return
        asked = self._replacing.pop(req_id, None)
        trade = self._ib.wrapper.trades.get((self.client_id, req_id))
        if trade is not None and (asked is not None or code in (_PACING, 10147, 10148)):
            _restore(trade, asked[2] if asked is not None else None)  # TWS did not cancel it
        wait = self._waits.pop(req_id, None)
        if code == _PACING or asked is not None or code in (10147, 10148):
            if wait is not None:
                wait.settle("pacing" if code == _PACING else "refused")
            if code == 10148 and _CANCELLED_STATE.search(message) and req_id in self._id_to_ref:
                ours = self.order_id(self._id_to_ref[req_id])  # "cannot be cancelled, state: Cancelled"
                self._emit([VenueEvent(VenueEventKind.CANCELLED, ours, self._wall_ns(), f"{ours}:canceled",
                                       reason="cancelled at the venue", symbol=self.symbol_of(trade.contract)
                                       if trade is not None else "")])  # fmt: skip
            elif code != _PACING:
                _log.warning(f"venue {self.name}: request for order {req_id} refused ({code}: {message})")
            return
        ref = self._id_to_ref.get(req_id)
        if ref is None:
            return  # not one of our orders (a request id)
        if wait is not None:
            wait.settle("ack" if code == 202 else "rejected")
        if code == 202 or code in _REJECTING or wait is not None:
            ours = self.order_id(ref)
            order = self.orders.get(ours)
            kind = VenueEventKind.CANCELLED if code == 202 else VenueEventKind.REJECTED
            suffix = "canceled" if code == 202 else "rejected"
            why = message or "cancelled" if code == 202 else f"{message} (IB {code})"
            ev = VenueEvent(
                kind,
                ours,
                self._wall_ns(),
                f"{ours}:{suffix}",
                reason=why,
                symbol=order.symbol if order else "",
            )
            self._emit([ev])
            return
        _log.warning(f"venue {self.name}: TWS error {code} for order {req_id}: {message}")

    def _on_notice(self, code: int, message: str) -> bool:
        """Connectivity codes and notices (True when ``code`` was one): 1100 IB's servers lost
        (logged), 1101/1102 restored (reconcile), 2100-2199 farm and data notices (ignored)."""
        if code in _INFO or 2100 <= code < 2200:
            _log.debug(f"venue {self.name}: TWS notice {code}: {message}")
            return True
        if code == 1100:
            _log.warning(f"venue {self.name}: TWS lost its connection to IB (1100); orders wait")
            return True
        if code in (1101, 1102):
            self.reconnected = True
            _log.warning(f"venue {self.name}: TWS reconnected to IB ({code}); reconciling")
            return True
        return False

    # -- reading the venue -------------------------------------------------------------------------
    def _read(self, what: str, fn: Callable[[], Awaitable[T]], timeout_s: float | None = None) -> T:
        """One read request: VenueUnavailable when TWS cannot be reached, VenueUnknownState when a
        message of its answer did not parse (or it never ended)."""
        self._ensure_up()
        before = self._decode.errors
        limit = timeout_s or self.timeout_s

        async def run() -> T:
            return await asyncio.wait_for(fn(), limit)

        try:
            result = self._call(run, timeout_s=limit + 2.0)
        except TimeoutError:
            if self._decode.errors > before:
                raise VenueUnknownState(
                    f"venue {self.name}: malformed message from TWS while {what}"
                ) from None
            raise VenueUnavailable(
                f"venue {self.name}: {what}: no answer from TWS within {limit:g} s"
            ) from None
        except ConnectionError as exc:
            raise VenueUnavailable(f"venue {self.name}: {what} failed ({_reason(exc)})") from None
        if self._decode.errors > before:
            raise VenueUnknownState(f"venue {self.name}: malformed message from TWS while {what}")
        return result

    def _summary(self) -> dict[str, tuple[str, str]]:
        """The account summary: tag -> (value, currency) for our account."""

        async def fetch() -> dict[str, tuple[str, str]]:
            ib = self._ib
            req_id = ib.client.getReqId()
            future = ib.wrapper.startReq(req_id)
            ib.client.reqAccountSummary(req_id, "All", _SUMMARY_TAGS)
            try:
                await future
            finally:
                with contextlib.suppress(ConnectionError):
                    ib.client.cancelAccountSummary(req_id)
            return {
                v.tag: (v.value, v.currency)
                for v in ib.wrapper.acctSummary.values()
                if v.account == self.account
            }

        return self._read("reading the account summary", fetch)

    def quote(self, symbol: str) -> Quote | None:
        """The best bid and ask of ``symbol`` (a snapshot reqMktData of live data), for
        ``[execution.timing]``; None for a symbol not traded here, a contract TWS does not know
        (error 200), no live market-data permission (``_NO_MARKET_DATA``), no snapshot within
        ``timeout_s``, or a missing / non-positive bid or ask (each logged). VenueUnavailable when
        TWS is not connected."""
        try:
            contract = self._contract(symbol)
        except ValueError:
            return None
        self._ensure_up()
        try:
            ticker, errors, ended = self._call(
                partial(self._snapshot_async, contract), timeout_s=self.timeout_s + 2.0
            )
        except TimeoutError:
            ticker, errors, ended = None, [], False
        except ConnectionError as exc:
            raise VenueUnavailable(
                f"venue {self.name}: reading {symbol}'s quote failed ({_reason(exc)})"
            ) from None
        refused = next(((c, t) for c, t in errors if c in _NO_MARKET_DATA), None) or next(iter(errors), None)
        if refused is not None:
            code, text = refused
            if code in _NO_MARKET_DATA:
                self._no_quote(symbol, f"no live market data for it (IB {code}: {text})", f"md-{code}")
            else:
                self._no_quote(symbol, f"TWS refused the request (IB {code}: {text})", f"err-{code}")
            return None
        if ticker is None or not ended:
            self._no_quote(symbol, f"no snapshot from TWS within {self.timeout_s:g} s", "timeout")
            return None
        if ticker.marketDataType != _LIVE:
            self._no_quote(symbol, f"TWS sent market data type {ticker.marketDataType}, not live", "type")
            return None
        bid, ask = float(ticker.bid), float(ticker.ask)
        if not (math.isfinite(bid) and math.isfinite(ask) and bid > 0.0 and ask > 0.0):
            self._no_quote(symbol, f"the snapshot has no bid or ask (bid {bid:g}, ask {ask:g})", "empty")
            return None
        return Quote(bid, ask, self._wall_ns())  # TWS does not stamp bid / ask ticks: their arrival

    async def _snapshot_async(self, contract: Contract) -> tuple[Ticker, list[tuple[int, str]], bool]:
        """On the loop: reqMarketDataType(live) and a snapshot reqMktData; waits for tickSnapshotEnd
        (or an error ending the request) up to ``timeout_s``, cancelling the request when it does not
        come. Returns the snapshot's ticker (its own, not ib_async's shared one per contract), the
        errors TWS sent for the request and whether it ended."""
        ib = self._ib
        req_id = ib.client.getReqId()
        errors: list[tuple[int, str]] = []

        def on_error(rid: int, code: int, text: str, _contract: Any) -> None:
            if rid == req_id:
                errors.append((code, redaction.redact(" ".join(str(text).split()))[:200]))

        ticker = Ticker(contract=contract, defaults=ib.wrapper.defaults)
        ib.wrapper.reqId2Ticker[req_id] = ticker
        future = ib.wrapper.startReq(req_id, contract)
        ib.errorEvent += on_error
        ended = False
        try:
            ib.client.reqMarketDataType(_LIVE)
            ib.client.reqMktData(req_id, contract, "", True, False, [])
            await asyncio.wait_for(future, self.timeout_s)
            ended = True
        except TimeoutError:
            ib.wrapper._futures.pop(req_id, None)
            with contextlib.suppress(ConnectionError):
                ib.client.cancelMktData(req_id)
        finally:
            ib.errorEvent -= on_error
            if ended:
                ib.wrapper.reqId2Ticker.pop(req_id, None)
        return ticker, errors, ended

    def _no_quote(self, symbol: str, why: str, kind: str) -> None:
        """Log a missing quote: at warning the first time per symbol and cause, then at debug."""
        key = (symbol, kind)
        level = logging.DEBUG if key in self._quote_warned else logging.WARNING
        self._quote_warned.add(key)
        _log.log(level, f"venue {self.name}: no quote for {symbol}: {why}; the spread rules do not hold it")

    def _now_ns(self) -> int:
        stamp = self._read("reading TWS's clock", self._ib.reqCurrentTimeAsync)
        return _ns(stamp) or self._wall_ns()

    def snapshot(self, order_ids: Iterable[str], since: str | None = None) -> VenueSnapshot:
        """TWS's state for reconciliation: cash (TotalCashValue), positions, every open order (any
        client's), the orders asked for (open or completed today, by orderRef) and the executions
        (with commissions) since ``since`` (ns since the epoch or RFC 3339; IB keeps the current
        day's executions, more with TWS's trade log setting)."""
        wanted = list(dict.fromkeys(order_ids))
        for oid in wanted:
            self._ref(oid)
        summary = self._summary()
        positions = self._read("reading positions", self._ib.reqPositionsAsync)
        open_trades = self._read("reading open orders", self._ib.reqAllOpenOrdersAsync)
        orders: dict[str, VenueOrder] = {}
        for trade in open_trades:
            vo = self._venue_order(trade)
            orders[vo.order_id or vo.venue_order_id] = vo
        missing = {oid for oid in wanted if oid not in orders}
        if missing:
            done = self._read("reading completed orders", lambda: self._ib.reqCompletedOrdersAsync(False))
            for trade in done:
                vo = self._venue_order(trade)
                if vo.order_id in missing:
                    orders[vo.order_id] = vo
        fills = self._executions(since)
        averages: dict[str, list[float]] = {}
        for f in fills:
            acc = averages.setdefault(f.order_id, [0.0, 0.0])
            acc[0] += f.qty
            acc[1] += f.qty * f.price
        for key, vo in list(orders.items()):
            qty_px = averages.get(vo.order_id)
            if qty_px and qty_px[0] > 0 and not vo.avg_fill_price:
                orders[key] = vo._replace(avg_fill_price=qty_px[1] / qty_px[0])
        try:
            cash_value, ccy = summary["TotalCashValue"]
            cash = {ccy or self.currency: float(cash_value)}
            pos = {}
            for p in positions:
                if p.account != self.account or not p.position:
                    continue
                symbol = self.symbol_of(p.contract)
                multiplier = float(p.contract.multiplier or 1) or 1.0
                pos[symbol] = VenuePosition(symbol, float(p.position), float(p.avgCost) / multiplier)
        except (KeyError, TypeError, ValueError):
            raise VenueUnknownState(
                f"venue {self.name}: malformed account summary or positions from TWS"
            ) from None
        self.currency = ccy or self.currency
        return VenueSnapshot(self._now_ns(), cash, pos, orders, fills, "")

    def _executions(self, since: str | None) -> list[VenueFill]:
        flt = ExecutionFilter()
        since_ns = _since_ns(since)
        if since_ns is not None:
            flt.time = datetime.fromtimestamp(since_ns / 1e9, UTC).strftime("%Y%m%d-%H:%M:%S")
        found = self._read("reading executions", lambda: self._ib.reqExecutionsAsync(flt))
        out: list[VenueFill] = []
        seen: set[str] = set()
        stored = self._ib.wrapper.fills
        for f in found:
            ex = f.execution
            if ex.execId in seen:
                continue
            seen.add(ex.execId)
            ts = _ns(ex.time)
            if since_ns is not None and ts is not None and ts <= since_ns:
                continue
            self._learn(ex.orderId, ex.orderRef, ex.clientId)
            report = stored[ex.execId].commissionReport if ex.execId in stored else f.commissionReport
            ours = (
                self.order_id(ex.orderRef)
                if ex.orderRef
                else self._ours(None, ex.orderId if ex.clientId == self.client_id else 0, ex.permId)
            )
            side = Side.BUY if ex.side in ("BOT", "BUY") else Side.SELL
            out.append(
                VenueFill(
                    ex.execId, ours, self.symbol_of(f.contract), side, float(ex.shares), float(ex.price),
                    _commission(report) or 0.0, ts or 0,
                )
            )  # fmt: skip
        out.sort(key=lambda x: x.ts)
        return out

    def _venue_order(self, trade: IbTrade) -> VenueOrder:
        o, st = trade.order, trade.orderStatus
        kind = _OUR_TYPES.get(o.orderType, OrderType.MARKET)
        lmt, aux = _unset(o.lmtPrice), _unset(o.auxPrice)
        if kind is OrderType.STOP:
            price, stop = aux, None
        elif _STOP_LIMIT is not None and kind is _STOP_LIMIT:
            price, stop = lmt, aux
        else:
            price, stop = lmt, None
        filled = float(st.filled or 0.0) or float(_unset(o.filledQuantity) or 0.0)
        status = _DONE_STATES.get(st.status)
        if status is None:
            status = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED
        ours = self.order_id(o.orderRef) if o.orderRef else ""
        return VenueOrder(
            ours,
            str(o.permId),
            self.symbol_of(trade.contract),
            Side.BUY if o.action == "BUY" else Side.SELL,
            kind,
            float(o.totalQuantity),
            filled,
            float(st.avgFillPrice or 0.0),
            status,
            price,
            stop,
        )

    # -- clock -------------------------------------------------------------------------------------
    def sync(self, ts: int) -> None:
        """With ``drive_clock``: move the fake TWS's market to bar-time ``ts`` (POST /admin/clock on
        its port) and return once every message the move caused has been handled (a reqCurrentTime
        round trip: TWS answers in order). Events delivered after that are tagged past the horizon,
        so they are applied at the next bar-time, as the venue's own sequence would place them."""
        if not self.drive_clock:
            return
        try:
            resp = self._http.post("/admin/clock", json={"ts": fmt_ts(ts)})
        except httpx.HTTPError as exc:
            raise VenueUnavailable(
                f"venue {self.name}: moving the fake TWS's clock failed ({type(exc).__name__})"
            ) from None
        try:
            last = int(resp.json()["last_event_id"])
        except (ValueError, KeyError, TypeError):
            raise VenueUnknownState(
                f"venue {self.name}: malformed answer from POST /admin/clock (HTTP {resp.status_code})"
            ) from None
        for attempt in range(_SYNC_TRIES):
            try:
                self._read("waiting for TWS's messages", self._ib.reqCurrentTimeAsync, self.sync_timeout_s)
                break
            except VenueUnavailable:
                # the socket dropped mid-barrier (a gateway restart, error 1100): the reader
                # reconnects (and flags ``reconnected``: the runtime reconciles); wait for it, again
                if attempt == _SYNC_TRIES - 1:
                    raise

        async def flush() -> None:  # fills still waiting for their commission: book them now
            for exec_id in list(self._unbooked):
                held = self._unbooked.get(exec_id)
                if held is not None and held[1] is not None:
                    held[1].cancel()
                self._book_without_commission(exec_id)
            self.horizon = last
            self._next_tag = last + 1

        self._call(flush)

    def clock_skew_s(self) -> float:
        """TWS's clock minus ours, in seconds (positive: TWS is ahead), to about half a second (TWS
        answers in whole seconds)."""
        before = self._wall_ns()
        stamp = self._read("reading TWS's clock", self._ib.reqCurrentTimeAsync)
        after = self._wall_ns()
        venue_ns = _ns(stamp)
        if venue_ns is None:
            return 0.0
        # TWS's time is whole seconds (truncated): its midpoint is half a second later
        return (venue_ns + 500_000_000 - (before + after) // 2) / 1e9

    def latency_ms(self) -> float:
        """One request's round trip to TWS (reqCurrentTime), in milliseconds."""
        t0 = time.perf_counter()
        self._read("reading TWS's clock", self._ib.reqCurrentTimeAsync)
        return (time.perf_counter() - t0) * 1e3

    def describe(self) -> dict[str, Any]:
        """Account (masked), currency, cash, buying power and equity, for ``hflite venue check``."""
        summary = self._summary()

        def num(tag: str) -> float | None:
            value = summary.get(tag, ("", ""))[0]
            try:
                return float(value)
            except ValueError:
                return None

        return {
            "account": mask_account(self.account),
            "currency": summary.get("NetLiquidation", ("", self.currency))[1] or self.currency,
            "cash": num("TotalCashValue"),
            "buying_power": num("BuyingPower"),
            "equity": num("NetLiquidation"),
            "account_type": summary.get("AccountType", (None, ""))[0],
            "client_id": self.client_id,
            "server_version": self.server_version,
        }


# -- helpers ---------------------------------------------------------------------------------------
def from_spec(spec: VenueSpec) -> IbVenue:
    """The ``ib`` kind: TWS / IB Gateway at ``spec.endpoint`` (paper TWS 7497 by default)."""
    return IbVenue(
        spec.kind,
        spec.endpoint or DEFAULT_ENDPOINT,
        client_id=spec.client_id,
        account=spec.account,
        instruments=spec.instruments,
        symbols=spec.symbols,
        drive_clock=spec.drive_clock,
        timeout_s=spec.timeout_s,
        max_retries=spec.max_retries,
        max_clock_skew_s=spec.max_clock_skew_s,
    )


def _restore(trade: IbTrade, status: str | None) -> None:
    """Undo ib_async's "Cancelled" after an error that left the order working at TWS (a refused
    modification or cancel, a pacing refusal)."""
    if trade.log and trade.log[-1].errorCode and trade.orderStatus.status == "Cancelled":
        prior = status or next((e.status for e in reversed(trade.log[:-1]) if not e.errorCode), "Submitted")
        trade.orderStatus.status = prior


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:120]
    return redaction.redact(text) or type(exc).__name__


def _ns(when: Any) -> int | None:
    if not isinstance(when, datetime):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(round(when.timestamp() * 1e6)) * 1000


def _since_ns(since: str | None) -> int | None:
    if not since:
        return None
    if since.isdigit():
        return int(since)
    try:
        when = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return None
    return _ns(when)


def _unset(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if x == UNSET_DOUBLE or not math.isfinite(x) or x == 0.0 else x


def _commission(report: CommissionReport | None) -> float | None:
    if report is None or not report.execId:
        return None
    value = float(report.commission)
    return None if value == UNSET_DOUBLE or not math.isfinite(value) else value
