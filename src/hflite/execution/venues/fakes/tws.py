"""A local fake of Interactive Brokers' TWS / IB Gateway: the TWS socket API on 127.0.0.1 in front of
``FakeBroker``'s state and rules, so the real ``ib_async`` client runs against it unchanged.

The wire format is the TWS API's (IBKR Campus, "TWS API documentation": the "API\\0" handshake,
4-byte big-endian length prefixed messages of NUL-terminated fields). This fake announces server
version ``SERVER_VERSION`` (157, the lowest ib_async 2.1 accepts: the shortest field lists) and
encodes every message exactly as ``ib_async.decoder`` reads it at that version. It serves what the
``ib`` venue adapter and ``IB.connect()``'s start-up sync use: startApi / nextValidId /
managedAccounts, placeOrder (new order, modification, OCA pair, bracket), cancelOrder,
reqGlobalCancel, reqOpenOrders / reqAllOpenOrders / reqAutoOpenOrders, reqCompletedOrders,
reqExecutions (with the ExecutionFilter), reqPositions, reqAccountSummary, reqAccountUpdates,
reqAccountUpdatesMulti, reqContractDetails, reqIds, reqCurrentTime, reqManagedAccts, reqMktData /
cancelMktData / reqMarketDataType; what it sends back: openOrder, orderStatus, execDetails,
commissionReport, position, accountSummary, marketDataType, tickPrice, tickSize, tickSnapshotEnd,
error, ...

Market data (https://interactivebrokers.github.io/tws-api/md_request.html): a reqMktData is answered
with the core's latest quote (``FakeBroker.latest_quote``: ``quote_spread_bps`` around the last close)
as marketDataType, tickPrice + tickSize for the bid (tick types 1 / 0) and the ask (2 / 3), then
tickSnapshotEnd for a snapshot; an unknown contract gets error 200. A streaming request gets the same
ticks once and no updates after (a documented limit). ``market_data`` plays the account's market-data
permissions: "live" (default), "delayed" (no subscription, delayed data enabled: warning 10167, then the
delayed ticks 66 / 67 under marketDataType 3) or "none" (error 354, nothing else).

Orders, matching, positions and cash are the core's (``FakeBroker``): this module only translates
TWS messages to core calls and core events to TWS messages. TWS has no API keys: the account id
is the credential analogue (a client connecting for another account is refused by the adapter)
and a client id already connected is refused with error 326, as TWS does.

Test hooks (``TwsFront``): ``reject_next``, ``fault_next`` (pacing violation 100 for "429", the
socket closed before the request is processed for "503", the reply held past the client's timeout
for "timeout", a field that does not parse for "malformed"), ``drop_connections``,
``execute`` / ``foreign_fill`` / ``repeat_last_fill``, ``market_data``, ``stop`` / ``start`` on the same
port.
The driven clock: ``POST /admin/clock`` ``{"ts": RFC 3339}`` -> ``{"ts", "last_event_id"}`` is
answered on the same port (HTTP is told apart from the API by its first bytes); every TWS message
the move caused is written to the sockets before the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from hflite.domain.instrument import AssetClass, Instrument
from hflite.execution.venues.fakebroker import BrokerError, FakeBroker, format_ts, parse_ts
from hflite.execution.venues.fakes.http import wait_until_stopped

if TYPE_CHECKING:
    from pathlib import Path

    from hflite.config import Settings
    from hflite.data.store import Store

__all__ = [
    "DEFAULT_ACCOUNT",
    "SERVER_VERSION",
    "TwsFront",
    "TwsServer",
    "contract_fields",
    "serve",
]

#: The server version this fake speaks (ib_async 2.1 accepts 157..178).
SERVER_VERSION = 157
#: The paper account id the fake manages unless told otherwise (IB paper accounts start with "DU").
DEFAULT_ACCOUNT = "DU1234567"
MAX_MESSAGE_BYTES = 1 << 24
_log = logging.getLogger(__name__)  # TWS refuses longer messages too

Op = Literal["submit", "cancel", "replace", "read"]
FaultKind = Literal["429", "503", "timeout", "malformed", "drop"]
T = TypeVar("T")

# well-known IB contract ids (so payloads look like the real ones); others are hashed
_KNOWN_CONIDS = {
    ("STK", "SPY", "USD"): 756733,
    ("CASH", "EUR", "USD"): 12087792,
    ("CRYPTO", "BTC", "USD"): 479624278,
}
_ORDER_TYPES = {"market": "MKT", "limit": "LMT", "stop": "STP", "stop_limit": "STP LMT"}
_CORE_TYPES = {v: k for k, v in _ORDER_TYPES.items()}
_STATUS = {
    "new": "Submitted",
    "pending_new": "PendingSubmit",
    "partially_filled": "Submitted",
    "filled": "Filled",
    "canceled": "Cancelled",
    "expired": "Cancelled",
    "rejected": "Inactive",
}
_READS = frozenset({1, 5, 6, 7, 9, 16, 61, 62, 76, 99})  # request ids that count as "read" for faults
_PACING_TEXT = "Max rate of messages per second has been exceeded:max=50 rec=51 (1)"
_NO_SECDEF = "No security definition has been found for the request"
MarketData = Literal["live", "delayed", "none"]


# -- contracts ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Contract:
    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    min_tick: float
    long_name: str


def contract_fields(inst: Instrument) -> tuple[str, str, str, str]:
    """(secType, symbol, exchange, currency) IB trades ``inst`` under: stocks and ETFs on SMART,
    FX on IDEALPRO (symbol = base currency), crypto on PAXOS (symbol = the coin)."""
    if inst.asset_class is AssetClass.FX:
        return "CASH", inst.base_currency or inst.symbol[:3], "IDEALPRO", inst.currency
    if inst.asset_class is AssetClass.CRYPTO:
        return "CRYPTO", inst.base_currency or inst.symbol[:3], "PAXOS", inst.currency
    return "STK", inst.symbol, "SMART", inst.currency


def _contract(inst: Instrument) -> _Contract:
    sec_type, symbol, exchange, ccy = contract_fields(inst)
    con_id = _KNOWN_CONIDS.get((sec_type, symbol, ccy))
    if con_id is None:
        digest = hashlib.sha256(f"{sec_type}:{symbol}:{ccy}".encode()).digest()
        con_id = 100_000_000 + int.from_bytes(digest[:4], "big") % 400_000_000
    local = f"{symbol}.{ccy}" if sec_type in ("CASH", "CRYPTO") else symbol
    tclass = local if sec_type == "CASH" else symbol
    return _Contract(con_id, symbol, sec_type, exchange, ccy, local, tclass, inst.tick_size, inst.symbol)


# -- wire format ----------------------------------------------------------------------------------
def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value) if value != int(value) or abs(value) >= 1e16 else str(int(value))
    return str(value)


def encode(*fields: Any) -> bytes:
    """One TWS message: NUL-terminated fields behind a 4-byte big-endian length."""
    body = "".join(_text(f) + "\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


def _ib_time(ns: int) -> str:
    """An execution time as TWS sends it: "yyyymmdd hh:mm:ss <zone>" (UTC here)."""
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"


def _parse_filter_time(text: str) -> int | None:
    """An ExecutionFilter time ("yyyymmdd hh:mm:ss" [zone] or "yyyymmdd-hh:mm:ss", UTC) as ns."""
    text = text.strip()
    if not text:
        return None
    parts = text.replace("-", " ").split()
    try:
        when = datetime.strptime(parts[0] + parts[1], "%Y%m%d%H:%M:%S").replace(tzinfo=UTC)
    except (IndexError, ValueError):
        return None
    return int(when.timestamp()) * 1_000_000_000


# -- state per order and per connection -----------------------------------------------------------
@dataclass(slots=True)
class _Record:
    """What TWS knows about one core order: its API ids, contract and the order fields echoed back."""

    core_id: str
    order_id: int  # the API order id (0: placed in TWS by hand)
    client_id: int
    perm_id: int
    ref: str  # orderRef: the client's own id for the order
    account: str
    contract: _Contract
    action: str
    order_type: str
    tif: str
    qty: float
    lmt: float | None
    aux: float | None
    oca_group: str = ""
    oca_type: int = 0
    parent_id: int = 0
    cancel_asked: bool = False
    hold_until: float = 0.0  # "timeout" fault: status messages wait until then (monotonic s)
    held: list[bytes] = field(default_factory=list)
    status: str = "PreSubmitted"
    filled: float = 0.0
    avg_price: float = 0.0
    last_price: float = 0.0
    children: list[_Pending] = field(default_factory=list)  # a bracket's legs, until the parent fills


@dataclass(slots=True)
class _Pending:
    """An order placed with transmit=0 (waiting for the last order of its group) or a bracket leg."""

    order_id: int
    client_id: int
    contract: _Contract
    symbol: str
    action: str
    qty: float
    order_type: str
    lmt: float | None
    aux: float | None
    tif: str
    ref: str
    account: str
    oca_group: str
    oca_type: int
    parent_id: int


class _Conn:
    def __init__(self, front: TwsFront, writer: asyncio.StreamWriter) -> None:
        self.front, self.writer = front, writer
        self.client_id: int | None = None
        self.positions = False  # subscribed to position updates
        self.auto_bind = False
        self.md_type = 1  # reqMarketDataType: 1 live, 2 frozen, 3 delayed, 4 delayed frozen
        self.streams: set[int] = set()  # streaming reqMktData ids not cancelled yet
        self.closed = False

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)

    def abort(self) -> None:
        """Close at once, dropping what is still buffered (the peer cannot know what was taken)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.transport.abort()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.close()


@dataclass(slots=True)
class _Fault:
    kind: FaultKind
    retry_after_s: float | None = None


class TwsFront:
    """TWS on ``host:port`` over ``broker`` (start/stop; ``url`` = "tcp://host:port").

    ``accounts``: the account ids this login manages (the first holds the core's positions and cash).
    ``master_client_id``: the API client that also sees orders of other clients and orders placed in
    TWS by hand (TWS's "Master API client ID" setting; None = none). ``hold_s``: how long a
    "timeout" fault holds a reply."""

    def __init__(
        self,
        broker: FakeBroker,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        accounts: Iterable[str] = (DEFAULT_ACCOUNT,),
        master_client_id: int | None = None,
        hold_s: float = 3.0,
        poll_s: float = 5.0,
        fault_every: Mapping[str, int] | None = None,
    ) -> None:
        self.broker = broker
        self.host, self.port = host, port
        self.accounts = [a for a in accounts if a]
        if not self.accounts:
            raise ValueError("accounts must name at least one account id")
        self.master_client_id = master_client_id
        self.hold_s, self.poll_s = hold_s, poll_s
        self.fault_every = {k: int(v) for k, v in (fault_every or {}).items()}
        unknown = set(self.fault_every) - {"429", "503", "timeout", "malformed", "drop"}
        if unknown:
            raise ValueError(
                f"fault_every: unknown fault {sorted(unknown)[0]!r} (429, 503, timeout, malformed, drop)"
            )
        self._placed = 0
        #: the account's market-data permissions (see the module's docstring); a test hook
        self.market_data: MarketData = "live"
        instruments = broker.venue.instruments
        self.contracts = {sym: _contract(instruments[sym]) for sym in broker.md.traded}
        self._by_key = {(c.sec_type, c.symbol, c.currency): s for s, c in self.contracts.items()}
        self._by_conid = {c.con_id: s for s, c in self.contracts.items()}
        # everything below is touched only on the server's event loop
        self.records: dict[str, _Record] = {}  # core id -> record
        self._by_api: dict[tuple[int, int], str] = {}  # (client id, order id) -> core id
        self._next_id: dict[int, int] = {}  # client id -> next valid order id
        self._pending: dict[int, list[_Pending]] = {}  # client id -> transmit=0 orders
        self._perm = 1_000_000 + int(time.time()) % 1_000_000 * 1000
        self._cursor = broker.last_event_id  # core events up to here are translated
        self._pumping = False
        self._conns: set[_Conn] = set()
        self._rejections: list[str] = []
        self._faults: dict[str, list[_Fault]] = {}
        self._last_fill: list[tuple[int, int, bytes]] = []  # (client id, order id, messages)
        self._exec_ids: dict[str, str] = {}  # core execution id -> IB execId
        self.requests: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> TwsFront:
        """Listen (in a daemon thread with its own event loop); ``url`` is valid afterwards."""
        ready = threading.Event()
        failure: list[BaseException] = []
        self._stopping.clear()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except OSError as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-tws", daemon=True)
        self._thread.start()
        ready.wait(10.0)
        if failure:
            raise failure[0]
        self._watcher = threading.Thread(target=self._watch, name="fake-tws-events", daemon=True)
        self._watcher.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection (state is kept: ``start`` again to resume)."""
        loop = self._loop
        if loop is None:
            return
        self._stopping.set()
        self.broker.wake_waiters()

        async def shut() -> None:
            for conn in list(self._conns):
                conn.close()
            self._conns.clear()
            if self._server is not None:
                self._server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server.wait_closed(), 2.0)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), loop).result(5.0)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5.0)
        if self._watcher is not None:
            self._watcher.join(2.0)
        self._loop = self._server = None

    def __enter__(self) -> TwsFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[[], T], timeout_s: float = 10.0) -> T:
        """Run ``fn`` on the server's loop and return its result (test hooks use it)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the fake TWS is not running")

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout_s)

    def _watch(self) -> None:
        """Translate core events caused outside a request (wall-clock matching, admin fills)."""
        last_poll = time.monotonic()
        while not self._stopping.is_set():
            seen = self.broker.last_event_id
            changed = self.broker.wait_events(seen, 0.2)
            if self.broker.clock_mode == "wall" and time.monotonic() - last_poll >= self.poll_s:
                last_poll = time.monotonic()
                with contextlib.suppress(Exception):
                    self.broker.refresh()
                changed = True
            loop = self._loop
            if (changed or self._held_due()) and loop is not None and not self._stopping.is_set():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._pump)

    def _held_due(self) -> bool:
        now = time.monotonic()
        return any(r.held and r.hold_until <= now for r in list(self.records.values()))

    # -- test hooks (any thread) --------------------------------------------------------------------
    def reject_next(self, reason: str) -> None:
        """The next new order is refused with error 201 "Order rejected - reason:<reason>"."""
        self.call(lambda: self._rejections.append(reason))

    def fault_next(self, op: Op, fault: FaultKind, retry_after_s: float | None = None) -> None:
        """The next request of kind ``op`` gets ``fault`` (see the module's docstring)."""
        self.call(lambda: self._faults.setdefault(op, []).append(_Fault(fault, retry_after_s)))

    def drop_connections(self) -> int:
        """Close every API connection (the listener stays): as a gateway restart does. Returns how many."""

        def drop() -> int:
            conns = [c for c in self._conns if c.client_id is not None]
            for conn in conns:
                conn.close()
                self._conns.discard(conn)
            return len(conns)

        return self.call(drop)

    def core_id(self, ref: str) -> str:
        """The core's id of the (latest) order placed with orderRef ``ref``."""

        def find() -> str:
            for rec in reversed(list(self.records.values())):
                if rec.ref == ref:
                    return rec.core_id
            raise KeyError(f"no order with orderRef {ref!r}")

        return self.call(find)

    def execute(self, ref: str, qty: float, price: float, fee: float = 0.0) -> None:
        """The venue executes ``qty`` of the order with orderRef ``ref`` at ``price`` now."""
        core = self.core_id(ref)
        self.broker.execute(core, qty, price, fee)
        self.call(self._pump)

    def foreign_fill(self, symbol: str, qty: float, price: float) -> None:
        """An order placed in TWS by hand (order id 0, no orderRef) is created and filled."""
        body = {
            "symbol": symbol, "qty": str(qty), "side": "buy", "type": "limit", "limit_price": str(price),
            "time_in_force": "gtc",
        }  # fmt: skip
        obj = self.broker.submit(body, source="admin")
        self.broker.execute(str(obj["id"]), qty, price)
        self.call(self._pump)

    def repeat_last_fill(self) -> bool:
        """Send the last execution's execDetails + commissionReport again (same execId)."""

        def again() -> bool:
            if not self._last_fill:
                return False
            client_id, order_id, data = self._last_fill[-1]
            for conn in self._audience(client_id):
                conn.send(data)
            return True

        return self.call(again)

    def exec_ids(self) -> list[str]:
        """The IB execId of every execution at the venue (in the core's order)."""

        def ids() -> list[str]:
            out, token = [], None
            while True:
                params = {"direction": "asc", "page_size": "100"} | ({"page_token": token} if token else {})
                page = self.broker.activities(params)
                out += [self._exec_id(str(a["id"]).split("::", 1)[-1]) for a in page]
                if len(page) < 100:
                    return out
                token = str(page[-1]["id"])

        return self.call(ids)

    def refs_at_venue(self) -> list[str]:
        """The orderRef of every order the venue holds (one entry per order; "" for manual ones)."""
        return self.call(lambda: [r.ref for r in self.records.values()])

    # -- connections ------------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(self, writer)
        self._conns.add(conn)
        try:
            head = await reader.readexactly(4)
            if head == b"API\0":
                await self._api(conn, reader)
            else:
                await self._http(conn, head, reader)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception:  # a bug here must not pass for a venue fault: say so, then drop the client
            _log.exception("fake TWS: request handling failed; closing the connection")
        finally:
            conn.close()
            self._conns.discard(conn)

    async def _read_msg(self, reader: asyncio.StreamReader) -> list[str]:
        size = struct.unpack(">I", await reader.readexactly(4))[0]
        if size > MAX_MESSAGE_BYTES:
            raise ConnectionError("message too long")
        text = (await reader.readexactly(size)).decode(errors="replace")
        fields = text.split("\0")
        if fields and fields[-1] == "":
            fields.pop()
        return fields

    async def _api(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        (hello,) = await self._read_msg(reader) or [""]
        lo, hi = _version_range(hello)
        if not lo <= SERVER_VERSION <= hi:
            return  # TWS closes a client whose version range it cannot serve
        conn.send(encode(SERVER_VERSION, datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC")))
        while not conn.closed:
            fields = await self._read_msg(reader)
            if not fields:
                continue
            if fields[0] == "71":
                await self._free_client_id(conn, fields)
            try:
                self._dispatch(conn, fields)
            except (IndexError, ValueError) as exc:
                conn.send(self._error(-1, 320, f"Error reading request: {type(exc).__name__}"))
            await conn.writer.drain()

    # -- requests -----------------------------------------------------------------------------------
    def _dispatch(self, conn: _Conn, f: list[str]) -> None:
        msg_id = int(f[0])
        if conn.client_id is None and msg_id != 71:
            conn.send(self._error(-1, 504, "Not connected"))
            return
        name = _REQUEST_NAMES.get(msg_id, str(msg_id))
        self.requests[name] = self.requests.get(name, 0) + 1
        if msg_id in _READS:
            fault = self._take("read")
            if fault is not None and self._read_fault(conn, fault, f):
                return
        handler = self._handlers().get(msg_id)
        if handler is None:
            return  # TWS ignores requests it does not serve for this client
        handler(conn, f)

    def _handlers(self) -> dict[int, Callable[[_Conn, list[str]], None]]:
        return {
            71: self._start_api,
            3: self._place_order,
            4: self._cancel_order,
            5: lambda c, f: self._open_orders(c, all_clients=False),
            16: lambda c, f: self._open_orders(c, all_clients=True),
            15: self._auto_open_orders,
            99: self._completed_orders,
            7: self._executions,
            61: self._positions,
            64: self._cancel_positions,
            62: self._account_summary,
            63: lambda c, f: None,
            6: self._account_updates,
            76: self._account_updates_multi,
            77: lambda c, f: None,
            9: self._contract_details,
            8: lambda c, f: c.send(encode(9, 1, self._next_valid(c))),
            49: lambda c, f: c.send(encode(49, 1, int(time.time()))),
            17: lambda c, f: c.send(encode(15, 1, ",".join(self.accounts))),
            58: self._global_cancel,
            1: self._market_data_request,
            2: lambda c, f: c.streams.discard(int(f[2])),
            59: self._market_data_type,
        }

    def _scripted(self) -> _Fault | None:
        """The fault ``fault_every`` gives this new order (counted from 1), if any."""
        self._placed += 1
        for kind, every in self.fault_every.items():
            if every > 0 and self._placed % every == 0:
                return _Fault(kind)  # type: ignore[arg-type]
        return None

    def _take(self, op: Op) -> _Fault | None:
        queue = self._faults.get(op)
        return queue.pop(0) if queue else None

    def _read_fault(self, conn: _Conn, fault: _Fault, f: list[str]) -> bool:
        """Apply a fault to a read request; True when the request is not to be answered normally."""
        if fault.kind == "429":
            conn.send(self._error(_req_id(f), 100, _PACING_TEXT))
            return True
        if fault.kind == "503":
            conn.close()
            return True
        if fault.kind == "timeout":
            return True  # never answered: the client's request times out
        # malformed: the answer's first message carries a field that does not parse
        capture = _Capture(conn)
        handler = self._handlers().get(int(f[0]))
        if handler is not None:
            handler(capture, f)  # type: ignore[arg-type]
        for n, data in enumerate(capture.sent):
            conn.send(_corrupt(data) if n == 0 else data)
        return True

    async def _free_client_id(self, conn: _Conn, f: list[str]) -> None:
        """A client reconnecting right after closing: give its old socket a moment to be seen closed
        before refusing the client id as in use."""
        client_id = int(f[2])
        for _ in range(12):  # at most 0.25 s: less than any client's connect timeout
            if not any(c.client_id == client_id for c in self._conns if c is not conn and not c.closed):
                return
            await asyncio.sleep(0.02)

    def _start_api(self, conn: _Conn, f: list[str]) -> None:
        client_id = int(f[2])
        if any(c.client_id == client_id for c in self._conns if c is not conn and not c.closed):
            conn.send(
                self._error(
                    -1,
                    326,
                    "Unable to connect as the client id is already in use. Retry with a unique client id.",
                )
            )
            conn.close()
            return
        conn.client_id = client_id
        conn.send(encode(9, 1, self._next_valid(conn)))
        conn.send(encode(15, 1, ",".join(self.accounts)))
        for code, text in (
            (2104, "Market data farm connection is OK:usfarm"),
            (2106, "HMDS data farm connection is OK:ushmds"),
            (2158, "Sec-def data farm connection is OK:secdefnj"),
        ):
            conn.send(self._error(-1, code, text))

    def _next_valid(self, conn: _Conn) -> int:
        cid = conn.client_id or 0
        return self._next_id.get(cid, 1)

    def _place_order(self, conn: _Conn, f: list[str]) -> None:
        cid = conn.client_id or 0
        order_id = int(f[1])
        core = self._by_api.get((cid, order_id))
        pending = self._decode_order(conn, f)
        if pending is None:
            return
        if core is not None:
            self._modify(conn, self.records[core], pending)
            return
        fault = self._take("submit") or self._scripted()
        if fault is not None and fault.kind == "429":
            conn.send(self._error(order_id, 100, _PACING_TEXT))
            return
        if fault is not None and fault.kind == "503":
            conn.abort()  # the gateway went away before the order was read: the client cannot tell
            return
        self._next_id[cid] = max(self._next_id.get(cid, 1), order_id + 1)
        transmit = f[27] != "0"
        if not transmit:
            self._pending.setdefault(cid, []).append(pending)
            return
        group = [p for p in self._pending.pop(cid, []) if p.order_id != order_id] + [pending]
        if self._rejections:
            reason = self._rejections.pop(0)
            for p in group:
                conn.send(self._error(p.order_id, 201, f"Order rejected - reason:{reason}"))
            return
        self._submit_group(conn, group, fault)
        if fault is not None and fault.kind == "drop":  # taken, then the socket dies before the answer
            conn.abort()

    def _decode_order(self, conn: _Conn, f: list[str]) -> _Pending | None:
        """The placeOrder fields this fake uses (server version 157, no combo legs)."""
        order_id = int(f[1])
        sec_type, symbol, exchange, currency = f[4], f[3], f[9], f[11]
        con_id = int(f[2] or 0)
        sym = self._by_conid.get(con_id) if con_id else self._by_key.get((sec_type, symbol, currency))
        if sym is None:
            conn.send(self._error(order_id, 200, "No security definition has been found for the request"))
            return None
        del exchange  # any routing destination is accepted (SMART, IDEALPRO, PAXOS, a direct venue)
        order_type = f[18]
        if order_type not in _CORE_TYPES:
            conn.send(
                self._error(
                    order_id, 387, f"Unsupported order type for this exchange and security type: {order_type}"
                )
            )
            return None
        action = f[16].upper()
        if action not in ("BUY", "SELL"):
            conn.send(self._error(order_id, 201, f"Order rejected - reason:invalid action {action!r}"))
            return None
        return _Pending(
            order_id=order_id,
            client_id=conn.client_id or 0,
            contract=self.contracts[sym],
            symbol=sym,
            action=action,
            qty=float(f[17]),
            order_type=order_type,
            lmt=_price(f[19]),
            aux=_price(f[20]),
            tif=(f[21] or "DAY").upper(),
            ref=f[26],
            account=f[23] or self.accounts[0],
            oca_group=f[22],
            oca_type=int(f[47] or 0) if len(f) > 47 else 0,
            parent_id=int(f[28] or 0),
        )

    def _body(self, p: _Pending) -> dict[str, Any]:
        body: dict[str, Any] = {
            "symbol": p.symbol,
            "qty": repr(p.qty),
            "side": p.action.lower(),
            "type": _CORE_TYPES[p.order_type],
            "time_in_force": p.tif.lower() if p.tif in ("DAY", "GTC", "IOC") else "day",
            "client_order_id": f"ib-{p.client_id}-{p.order_id}-{self._perm + 1}",
        }
        if p.order_type in ("LMT", "STP LMT") and p.lmt is not None:
            body["limit_price"] = repr(p.lmt)
        if p.order_type in ("STP", "STP LMT") and p.aux is not None:
            body["stop_price"] = repr(p.aux)
        return body

    def _submit_group(self, conn: _Conn, group: list[_Pending], fault: _Fault | None) -> None:
        """Submit what one transmit=1 order releases: a single order, an OCA pair (one core "oco"
        order), or a bracket (the parent now, its legs when it fills)."""
        for p in group:
            if p.account not in self.accounts:
                for q in group:
                    conn.send(
                        self._error(
                            q.order_id,
                            201,
                            f"Order rejected - reason:account {q.account} is not managed by this login",
                        )
                    )
                return
        parents = [p for p in group if p.parent_id == 0]
        legs = [p for p in group if p.parent_id != 0]
        if legs and len(parents) == 1 and all(leg.parent_id == parents[0].order_id for leg in legs):
            rec = self._submit_one(conn, parents[0], fault)
            if rec is not None:
                rec.children = legs
                for leg in legs:  # the legs wait for the parent's fill: PreSubmitted, as TWS shows them
                    held = encode(
                        3,
                        leg.order_id,
                        "PreSubmitted",
                        0,
                        leg.qty,
                        0,
                        0,
                        rec.order_id,
                        0,
                        leg.client_id,
                        "",
                        0,
                    )
                    self._send_order(rec, held)
            return
        oca = [p for p in group if p.oca_group]
        if len(group) == 2 and len(oca) == 2 and oca[0].oca_group == oca[1].oca_group:
            self._submit_oca(conn, oca, fault)
            return
        for p in group:
            self._submit_one(conn, p, fault)

    def _submit_one(self, conn: _Conn | None, p: _Pending, fault: _Fault | None) -> _Record | None:
        try:
            obj = self.broker.submit(self._body(p))
        except BrokerError as exc:
            if conn is not None:
                conn.send(self._reject(p.order_id, exc))
            return None
        rec = self._record(p, str(obj["id"]))
        self._apply_fault(rec, fault)
        self._pump()
        return rec

    def _submit_oca(self, conn: _Conn | None, pair: list[_Pending], fault: _Fault | None) -> None:
        stops = [p for p in pair if p.order_type in ("STP", "STP LMT")]
        takes = [p for p in pair if p.order_type == "LMT"]
        same = (
            pair[0].symbol == pair[1].symbol
            and pair[0].action == pair[1].action
            and pair[0].qty == pair[1].qty
        )
        if len(stops) != 1 or len(takes) != 1 or not same:
            for p in pair:  # other OCA shapes: each order alone (documented limit of this fake)
                self._submit_one(conn, p, fault)
            return
        stop, take = stops[0], takes[0]
        body = self._body(take)
        stop_body = self._body(stop)
        sl: dict[str, Any] = {
            "stop_price": stop_body["stop_price"],
            "client_order_id": stop_body["client_order_id"] + "s",
        }
        if "limit_price" in stop_body:
            sl["limit_price"] = stop_body["limit_price"]
        body.update(order_class="oco", take_profit={"limit_price": body.pop("limit_price")}, stop_loss=sl)
        try:
            obj = self.broker.submit(body)
        except BrokerError as exc:
            if conn is not None:
                for p in pair:
                    conn.send(self._reject(p.order_id, exc))
            return
        legs = obj.get("legs") or []
        take_rec = self._record(take, str(obj["id"]))
        recs = [take_rec]
        if legs:
            recs.append(self._record(stop, str(legs[0]["id"])))
        for rec in recs:
            self._apply_fault(rec, fault)
        self._pump()

    def _record(self, p: _Pending, core_id: str) -> _Record:
        self._perm += 1
        rec = _Record(
            core_id, p.order_id, p.client_id, self._perm, p.ref, p.account, p.contract, p.action,
            p.order_type, p.tif, p.qty, p.lmt, p.aux, p.oca_group, p.oca_type, p.parent_id,
        )  # fmt: skip
        self.records[core_id] = rec
        if p.order_id:
            self._by_api[(p.client_id, p.order_id)] = core_id
        return rec

    def _apply_fault(self, rec: _Record, fault: _Fault | None) -> None:
        if fault is not None and fault.kind == "timeout":
            rec.hold_until = time.monotonic() + self.hold_s
        elif fault is not None and fault.kind == "malformed":
            rec.hold_until = -1.0  # the first status message goes out corrupted

    def _modify(self, conn: _Conn, rec: _Record, p: _Pending) -> None:
        """placeOrder for an order id already working: a modification (price or quantity)."""
        fault = self._take("replace")
        if fault is not None and fault.kind == "429":
            conn.send(self._error(p.order_id, 100, _PACING_TEXT))
            return
        if fault is not None and fault.kind == "503":
            conn.close()
            return
        body: dict[str, Any] = {}
        if p.order_type in ("LMT", "STP LMT") and p.lmt is not None and p.lmt != rec.lmt:
            body["limit_price"] = repr(p.lmt)
        if p.order_type in ("STP", "STP LMT") and p.aux is not None and p.aux != rec.aux:
            body["stop_price"] = repr(p.aux)
        if p.qty != rec.qty:
            body["qty"] = repr(p.qty)
        if p.order_type != rec.order_type:
            conn.send(
                self._error(p.order_id, 329, "Order modify failed. Cannot change to the new order type.")
            )
            return
        if not body:
            self._send_order(rec, self._open_order(rec) + self._order_status(rec))
            return
        try:
            self.broker.replace(rec.core_id, body)
        except BrokerError as exc:
            conn.send(
                self._error(
                    p.order_id, 10147 if exc.status == 404 else 201, f"Order rejected - reason:{exc.message}"
                )
            )
            return
        rec.lmt = p.lmt if "limit_price" in body else rec.lmt
        rec.aux = p.aux if "stop_price" in body else rec.aux
        rec.qty = p.qty
        self._apply_fault(rec, fault)
        self._pump()

    def _cancel_order(self, conn: _Conn, f: list[str]) -> None:
        order_id = int(f[2])
        fault = self._take("cancel")
        if fault is not None and fault.kind == "429":
            conn.send(self._error(order_id, 100, _PACING_TEXT))
            return
        if fault is not None and fault.kind == "503":
            conn.close()
            return
        cid = conn.client_id or 0
        pending = self._pending.get(cid, [])
        if any(p.order_id == order_id for p in pending):
            self._pending[cid] = [p for p in pending if p.order_id != order_id]
            conn.send(encode(3, order_id, "Cancelled", 0, 0, 0, 0, 0, 0, cid, "", 0))
            return
        core = self._by_api.get((cid, order_id))
        if core is None:
            conn.send(
                self._error(order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found.")
            )
            return
        rec = self.records[core]
        state = str(self.broker.get_order(core, nested=False)["status"])
        if _STATUS.get(state) in ("Filled", "Cancelled", "Inactive"):
            text = (
                f"OrderId {order_id} that needs to be cancelled cannot be cancelled, state: {_STATUS[state]}."
            )
            conn.send(self._error(order_id, 10148, text))
            return
        rec.cancel_asked = True
        self._apply_fault(rec, fault)
        with contextlib.suppress(BrokerError):
            self.broker.cancel(core)
        self._pump()

    def _global_cancel(self, conn: _Conn, f: list[str]) -> None:
        for rec in list(self.records.values()):
            with contextlib.suppress(BrokerError):
                if self.broker.get_order(rec.core_id, nested=False)["status"] in ("new", "partially_filled"):
                    rec.cancel_asked = True
                    self.broker.cancel(rec.core_id)
        self._pump()

    def _visible(self, conn: _Conn, rec: _Record, *, all_clients: bool) -> bool:
        cid = conn.client_id
        if all_clients or rec.client_id == cid:
            return True
        if rec.order_id == 0 and (cid == 0 or conn.auto_bind):
            return True
        return self.master_client_id is not None and cid == self.master_client_id

    def _open_orders(self, conn: _Conn, *, all_clients: bool) -> None:
        for rec in self._all_records():
            obj = self.broker.get_order(rec.core_id, nested=False)
            if obj["status"] in ("new", "partially_filled") and self._visible(
                conn, rec, all_clients=all_clients
            ):
                self._refresh(rec, obj)
                conn.send(self._open_order(rec) + self._order_status(rec))
        conn.send(encode(53, 1))  # transmit=0 orders are not working yet: not listed

    def _auto_open_orders(self, conn: _Conn, f: list[str]) -> None:
        conn.auto_bind = f[2] == "1" and conn.client_id == 0

    def _completed_orders(self, conn: _Conn, f: list[str]) -> None:
        api_only = f[1] == "1"
        for rec in self._all_records():
            obj = self.broker.get_order(rec.core_id, nested=False)
            if obj["status"] in ("new", "partially_filled", "pending_new"):
                continue
            if api_only and rec.order_id == 0:
                continue
            if not self._visible(conn, rec, all_clients=True):
                continue
            self._refresh(rec, obj)
            conn.send(self._completed_order(rec, obj))
        conn.send(encode(102))

    def _all_records(self) -> list[_Record]:
        """Every core order with its record (orders placed outside the API get one now)."""
        for obj in self.broker.list_orders({"status": "all", "limit": "500", "direction": "asc"}):
            if str(obj["id"]) not in self.records:
                self._manual(obj)
        return list(self.records.values())

    def _manual(self, obj: dict[str, Any]) -> _Record:
        """A record for an order placed in TWS by hand (or via the core's admin): order id 0."""
        sym = str(obj["symbol"])
        kind = str(obj.get("type") or "market")
        p = _Pending(
            0, 0, self.contracts[sym], sym, str(obj["side"]).upper(), float(obj["qty"]),
            _ORDER_TYPES.get(kind, "MKT"), _price(obj.get("limit_price")), _price(obj.get("stop_price")),
            str(obj.get("time_in_force") or "day").upper(), "", self.accounts[0], "", 0, 0,
        )  # fmt: skip
        return self._record(p, str(obj["id"]))

    def _executions(self, conn: _Conn, f: list[str]) -> None:
        req_id = int(f[2])
        client_id, account, since = int(f[3] or 0), f[4], _parse_filter_time(f[5])
        symbol, sec_type, side = f[6], f[7], f[9].upper()
        token: str | None = None
        for _ in range(10_000):
            params = {"direction": "asc", "page_size": "100"}
            if token:
                params["page_token"] = token
            page = self.broker.activities(params)
            for act in page:
                rec = self.records.get(str(act["order_id"])) or self._manual(
                    self.broker.get_order(str(act["order_id"]), nested=False)
                )
                ts = parse_ts(str(act["transaction_time"]))
                act_side = "BOT" if act["side"] == "buy" else "SLD"
                if (
                    (client_id and rec.client_id != client_id)
                    or (account and rec.account != account)
                    or (since is not None and ts < since)
                    or (symbol and rec.contract.symbol != symbol)
                    or (sec_type and rec.contract.sec_type != sec_type)
                    or (side and side not in (act_side, {"BOT": "BUY", "SLD": "SELL"}[act_side]))
                    or not self._visible(conn, rec, all_clients=client_id == 0)
                ):
                    continue
                conn.send(self._exec_messages(rec, act, req_id))
            if len(page) < 100:
                break
            token = str(page[-1]["id"])
        conn.send(encode(55, 1, req_id))

    def _positions(self, conn: _Conn, f: list[str]) -> None:
        conn.positions = True
        for data in self._position_messages():
            conn.send(data)
        conn.send(encode(62, 1))

    def _cancel_positions(self, conn: _Conn, f: list[str]) -> None:
        conn.positions = False

    def _position_messages(self, only: str | None = None) -> list[bytes]:
        out = []
        for pos in self.broker.positions():
            sym = str(pos["symbol"])
            if only is not None and sym != only:
                continue
            c = self.contracts[sym]
            out.append(encode(61, 3, self.accounts[0], *_contract_msg(c), pos["qty"], pos["avg_entry_price"]))
        if only is not None and not out and only in self.contracts:
            out.append(encode(61, 3, self.accounts[0], *_contract_msg(self.contracts[only]), 0, 0))
        return out

    def _summary_values(self) -> dict[str, str]:
        acct = self.broker.account()
        return {
            "AccountType": "INDIVIDUAL",
            "NetLiquidation": str(acct["equity"]),
            "TotalCashValue": str(acct["cash"]),
            "SettledCash": str(acct["cash"]),
            "BuyingPower": str(acct["buying_power"]),
            "AvailableFunds": str(acct["buying_power"]),
            "EquityWithLoanValue": str(acct["equity"]),
            "GrossPositionValue": str(float(acct["long_market_value"]) - float(acct["short_market_value"])),
        }

    def _account_summary(self, conn: _Conn, f: list[str]) -> None:
        req_id, tags = int(f[2]), [t for t in f[4].split(",") if t]
        values = self._summary_values()
        for account in self.accounts[:1]:
            for tag in tags or list(values):
                if tag in values:
                    ccy = "" if tag == "AccountType" else "USD"
                    conn.send(encode(63, 1, req_id, account, tag, values[tag], ccy))
        conn.send(encode(64, 1, req_id))

    def _account_updates(self, conn: _Conn, f: list[str]) -> None:
        subscribe, account = f[2] == "1", f[3] or self.accounts[0]
        if not subscribe:
            return
        if account not in self.accounts:
            conn.send(
                self._error(
                    -1, 321, f"Error validating request.-'bB' : cause - Invalid account code {account}"
                )
            )
            return
        for tag, value in self._summary_values().items():
            conn.send(encode(6, 2, tag, value, "" if tag == "AccountType" else "USD", account))
        for pos in self.broker.positions():
            c = self.contracts[str(pos["symbol"])]
            conn.send(
                encode(
                    7,
                    8,
                    c.con_id,
                    c.symbol,
                    c.sec_type,
                    "",
                    0.0,
                    "",
                    "",
                    "",
                    c.currency,
                    c.local_symbol,
                    c.trading_class,
                    pos["qty"],
                    pos["current_price"],
                    pos["market_value"],
                    pos["avg_entry_price"],
                    pos["unrealized_pl"],
                    0.0,
                    account,
                )  # fmt: skip
            )
        conn.send(encode(8, 1, datetime.now(UTC).strftime("%H:%M")))
        conn.send(encode(54, 1, account))

    def _account_updates_multi(self, conn: _Conn, f: list[str]) -> None:
        req_id, account, model = int(f[2]), f[3] or self.accounts[0], f[4]
        if account in self.accounts:
            for tag, value in self._summary_values().items():
                conn.send(
                    encode(73, 1, req_id, account, model, tag, value, "" if tag == "AccountType" else "USD")
                )
        conn.send(encode(74, 1, req_id))

    def _contract_details(self, conn: _Conn, f: list[str]) -> None:
        req_id = int(f[2])
        con_id, symbol, sec_type, currency = int(f[3] or 0), f[4], f[5], f[12]
        sym = self._by_conid.get(con_id) if con_id else self._by_key.get((sec_type, symbol, currency))
        if sym is None:
            conn.send(self._error(req_id, 200, "No security definition has been found for the request"))
            return
        c = self.contracts[sym]
        kinds = "ACTIVETIM,ADJUST,ALERT,ALLOC,DAY,GTC,IOC,LMT,MKT,OCA,STP,STPLMT"
        conn.send(
            encode(
                10,
                8,
                req_id,
                c.symbol,
                c.sec_type,
                "",
                0.0,
                "",
                c.exchange,
                c.currency,
                c.local_symbol,
                c.trading_class,
                c.trading_class,
                c.con_id,
                c.min_tick,
                "1",
                "",
                kinds,
                c.exchange,
                1,
                0,
                c.long_name,
                "ARCA" if c.sec_type == "STK" else "",
                "",
                "",
                "",
                "",
                "UTC",
                "",
                "",
                "",
                "",
                0,
                1,
                "",
                "",
                "",
                "",
                "",
            )  # fmt: skip
        )
        conn.send(encode(52, 1, req_id))

    # -- market data ------------------------------------------------------------------------------
    def _market_data_type(self, conn: _Conn, f: list[str]) -> None:
        """reqMarketDataType: the type later reqMktData calls of this connection ask for."""
        kind = int(f[2])
        if kind not in (1, 2, 3, 4):
            conn.send(
                self._error(
                    -1, 321, f"Error validating request:-'bv' : cause - Invalid marketDataType {kind}"
                )
            )
            return
        conn.md_type = kind

    def _market_data_request(self, conn: _Conn, f: list[str]) -> None:
        """reqMktData (version 11): reqId, the contract (conId .. tradingClass, with primaryExchange),
        the delta-neutral flag (+ conId, delta, price when set), genericTickList, snapshot,
        regulatorySnapshot, mktDataOptions. Answered with the core's latest quote (tick types:
        https://interactivebrokers.github.io/tws-api/tick_types.html)."""
        req_id = int(f[2])
        con_id, symbol, sec_type, currency = int(f[3] or 0), f[4], f[5], f[12]
        rest = f[19:] if f[15] == "1" else f[16:]  # the delta-neutral contract's three fields
        snapshot = len(rest) > 1 and rest[1] == "1"
        sym = self._by_conid.get(con_id) if con_id else self._by_key.get((sec_type, symbol, currency))
        if sym is None:
            conn.send(self._error(req_id, 200, _NO_SECDEF))
            return
        delayed = self.market_data == "delayed"
        if self.market_data == "none" or (delayed and conn.md_type == 2):
            conn.send(self._error(req_id, 354, "Requested market data is not subscribed."))
            return
        if delayed and conn.md_type == 1:  # live asked, delayed shown (a warning, not a refusal)
            text = "Requested market data is not subscribed. Displaying delayed market data."
            conn.send(self._error(req_id, 10167, text))
        conn.send(encode(58, 1, req_id, 3 if delayed else 1))
        try:
            quote = self.broker.latest_quote(sym)["quote"]
        except BrokerError:  # before the symbol's first bar: no bid or ask to show
            quote = None
        if quote is not None:
            bid_type, ask_type = (66, 67) if delayed else (1, 2)
            bid_size, ask_size = (69, 70) if delayed else (0, 3)
            conn.send(encode(1, 6, req_id, bid_type, float(quote["bp"]), float(quote["bs"]), 0))
            conn.send(encode(2, 6, req_id, bid_size, float(quote["bs"])))
            conn.send(encode(1, 6, req_id, ask_type, float(quote["ap"]), float(quote["as"]), 0))
            conn.send(encode(2, 6, req_id, ask_size, float(quote["as"])))
        if snapshot:
            conn.send(encode(57, 1, req_id))
        else:
            conn.streams.add(req_id)

    # -- the HTTP admin side --------------------------------------------------------------------
    async def _http(self, conn: _Conn, head: bytes, reader: asyncio.StreamReader) -> None:
        raw = head + await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode(errors="replace").split("\r\n")
        method, path = (lines[0].split(" ") + ["", ""])[:2]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        body = await reader.readexactly(length) if length else b""
        try:
            status, payload = self._admin(method, path.split("?", 1)[0], body)
        except BrokerError as exc:
            status, payload = exc.status, {"code": exc.code, "message": exc.message}
        data = json.dumps(payload).encode()
        reason = {200: "OK", 404: "Not Found", 409: "Conflict", 422: "Unprocessable Entity"}.get(
            status, "Error"
        )
        conn.send(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + data
        )
        await conn.writer.drain()

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and path == "/admin/state":
            state = self.broker.state()
            state["tws"] = {"requests": dict(self.requests), "refs": [r.ref for r in self.records.values()]}
            return 200, state
        if method == "POST" and path == "/admin/clock":
            if self.broker.clock_mode != "driven":
                raise BrokerError(
                    409, 40900000, "the broker runs on the wall clock: /admin/clock is for driven mode"
                )
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                raise BrokerError(400, 40000000, "the request body is not valid JSON") from None
            if not isinstance(data, dict) or not isinstance(data.get("ts"), str):
                raise BrokerError(422, 40010000, "ts is required (an RFC 3339 time)")
            last = self.broker.advance_to(parse_ts(data["ts"]))
            self._pump()  # every message the move caused is queued on the sockets before the answer
            return 200, {"ts": format_ts(self.broker.clock_ns), "last_event_id": last}
        raise BrokerError(404, 40400000, f"endpoint not found: {method} {path}")

    # -- core events -> TWS messages ----------------------------------------------------------------
    def _pump(self) -> None:
        """Translate the core's new events into messages for the connections that should see them,
        one at a time and in order (a translation may cause events: a bracket's legs going to work)."""
        if self._pumping:
            return  # the running pump picks them up
        self._pumping = True
        try:
            while batch := self.broker.events_between(self._cursor, self._cursor + 1):
                seq, event = batch[0]
                self._cursor = seq
                self._translate(event)
        finally:
            self._pumping = False
        self._flush_held()

    def _translate(self, event: dict[str, Any]) -> None:
        """One core event as TWS messages: new/replaced -> openOrder + orderStatus, fill ->
        execDetails + commissionReport + orderStatus (+ position updates), canceled/expired ->
        orderStatus Cancelled (+ error 202 when a client asked for it)."""
        obj = event.get("order") or {}
        core = str(obj.get("id", ""))
        rec = self.records.get(core) or (self._manual(obj) if core else None)
        if rec is None:
            return
        self._refresh(rec, obj)
        kind = str(event.get("event", ""))
        if kind in ("new", "replaced"):
            self._send_order(rec, self._open_order(rec) + self._order_status(rec))
        elif kind in ("fill", "partial_fill"):
            self._on_fill(rec, event)
        elif kind in ("canceled", "expired"):
            data = self._order_status(rec)
            if rec.cancel_asked:
                data += self._error(rec.order_id, 202, "Order Canceled - reason:")
            self._send_order(rec, data)
            for leg in rec.children:  # a bracket whose parent died takes its legs along
                gone = (3, leg.order_id, "Cancelled", 0, leg.qty, 0, 0, rec.order_id, 0, leg.client_id, "", 0)
                self._send_order(rec, encode(*gone))
            rec.children = []

    def _refresh(self, rec: _Record, obj: dict[str, Any]) -> None:
        if not obj:
            return
        rec.status = _STATUS.get(str(obj.get("status")), rec.status)
        rec.filled = float(obj.get("filled_qty") or 0.0)
        rec.avg_price = float(obj.get("filled_avg_price") or 0.0)
        rec.qty = float(obj.get("qty") or rec.qty)

    def _on_fill(self, rec: _Record, event: dict[str, Any]) -> None:
        rec.last_price = float(event.get("price") or 0.0)
        act = {
            "id": event.get("execution_id"),
            "transaction_time": event.get("timestamp"),
            "side": "buy" if rec.action == "BUY" else "sell",
            "qty": event.get("qty"),
            "price": event.get("price"),
            "commission": event.get("commission"),
            "cum_qty": rec.filled,
            "order_id": rec.core_id,
        }
        data = self._exec_messages(rec, act, -1)
        self._last_fill.append((rec.client_id, rec.order_id, data))
        del self._last_fill[:-1]
        self._send_order(rec, data + self._order_status(rec), ack=False)
        for conn in self._conns:
            if conn.positions and conn.client_id is not None:
                for msg in self._position_messages(only=_symbol_of(self, rec)):
                    conn.send(msg)
        if rec.status == "Filled" and rec.children:
            legs, rec.children = rec.children, []
            self._release_legs(legs)

    def _release_legs(self, legs: list[_Pending]) -> None:
        """A bracket's parent filled: its take-profit and stop-loss go to work (as one OCA pair)."""
        conn = next((c for c in self._conns if c.client_id == legs[0].client_id), None)
        if len(legs) == 2:
            for leg in legs:
                leg.oca_group = leg.oca_group or f"bracket-{legs[0].parent_id}"
            self._submit_oca(conn, legs, None)
        else:
            for leg in legs:
                self._submit_one(conn, leg, None)

    def _exec_messages(self, rec: _Record, act: dict[str, Any], req_id: int) -> bytes:
        exec_id = self._exec_id(str(act["id"]).split("::", 1)[-1])
        ts = parse_ts(str(act["transaction_time"]))
        c = rec.contract
        side = "BOT" if act["side"] == "buy" else "SLD"
        qty, price = float(act["qty"]), float(act["price"])
        cum = float(act.get("cum_qty") or qty)
        details = encode(
            11, req_id, rec.order_id, c.con_id, c.symbol, c.sec_type, "", 0.0, "", "", c.exchange, c.currency,
            c.local_symbol, c.trading_class, exec_id, _ib_time(ts), rec.account, c.exchange, side, qty, price,
            rec.perm_id, rec.client_id, 0, cum, rec.avg_price or price, rec.ref, "", "", "", 1,
        )  # fmt: skip
        fee = float(act.get("commission") or 0.0)
        report = encode(59, 1, exec_id, fee, c.currency, "", "", "")
        return details + report

    def _exec_id(self, core_exec: str) -> str:
        """IB's execId for a core execution ("0000xxxx.xxxxxxxx.01.01", as TWS shapes them)."""
        exec_id = self._exec_ids.get(core_exec)
        if exec_id is None:
            digest = hashlib.sha256(core_exec.encode()).hexdigest()
            exec_id = self._exec_ids[core_exec] = f"0000{digest[:4]}.{digest[4:12]}.01.01"
        return exec_id

    def _order_status(self, rec: _Record) -> bytes:
        remaining = max(rec.qty - rec.filled, 0.0) if rec.status not in ("Cancelled", "Inactive") else 0.0
        return encode(
            3, rec.order_id, rec.status, rec.filled, remaining, rec.avg_price, rec.perm_id, rec.parent_id,
            rec.last_price, rec.client_id, "", 0.0,
        )  # fmt: skip

    def _open_order(self, rec: _Record) -> bytes:
        c = rec.contract
        fields: list[Any] = [
            5, rec.order_id, *_contract_msg(c, with_exchange=True), rec.action, rec.qty, rec.order_type,
            rec.lmt, rec.aux, rec.tif, rec.oca_group, rec.account, "O", 0, rec.ref, rec.client_id,
            rec.perm_id, 0, 0, 0, "", "", "", "", "",  # permId .. faPercentage (+ the skipped field)
            "",  # faProfile (server version < 177)
            "", "", "", "", "", 0, "", "", 0,  # modelCode .. auctionStrategy
            "", "", "", "", "", "", 0, 0, 0, "",  # startingPrice .. minQty
            rec.oca_type, 0, 0, "", rec.parent_id, 0, "", "", "", "",  # ocaType .. deltaNeutralAuxPrice
            0, 0, "", "", "", "", "",  # continuousUpdate .. comboLegsDescrip
            0, 0, 0,  # combo legs, order combo legs, smart combo routing params
            "", "", "",  # scale init/subs level size, price increment
            "",  # hedgeType
            0, "", "", 0, 0,  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, dncPresent
            "",  # algoStrategy
            0, 0, rec.status, *([""] * 9), "", "", "", "", "", 0, 0,  # solicited .. randomizePrice
            0,  # conditions
            "", "", "", "", "", "", "", 0, "", "", "", "",  # adjustedOrderType .. softDollarTier
            0, 0, "", 0,  # cashQty .. usePriceMgmtAlgo
        ]  # fmt: skip
        return encode(*fields)

    def _completed_order(self, rec: _Record, obj: dict[str, Any]) -> bytes:
        c = rec.contract
        when = (
            obj.get("filled_at") or obj.get("canceled_at") or obj.get("expired_at") or obj.get("updated_at")
        )
        done = _ib_time(parse_ts(str(when))) if when else ""
        fields: list[Any] = [
            101, *_contract_msg(c, with_exchange=True), rec.action, rec.qty, rec.order_type, rec.lmt, rec.aux,
            rec.tif, rec.oca_group, rec.account, "O", 0, rec.ref, rec.perm_id, 0, 0, "", "", "", "", "", "",
            "", "", "", "", "", 0, "", "",  # modelCode .. exemptCode
            "", "", "", "", "", "", 0, 0, "", rec.oca_type, 0, "", "", "", "",  # startingPrice .. dnAux
            0, 0, "", "", "",  # continuousUpdate .. comboLegsDescrip
            0, 0, 0, "", "", "", "",  # legs, order legs, params, scale x3, hedgeType
            "", "", 0, 0, "",  # clearingAccount, clearingIntent, notHeld, dncPresent, algoStrategy
            0, rec.status, 0, 0,  # solicited, status, randomizeSize, randomizePrice
            0,  # conditions
            "", "", "", 0, 0, "", rec.filled, 0, 0, "", 0, 0, "", done, rec.status,
        ]  # fmt: skip
        return encode(*fields)

    def _send_order(self, rec: _Record, data: bytes, *, ack: bool = True) -> None:
        """Send an order's messages to its audience, or hold them (a "timeout" fault holds the
        answers to the request, ``ack``; executions are not held)."""
        if not ack:
            for conn in self._audience(rec.client_id, manual=rec.order_id == 0):
                conn.send(data)
            return
        if rec.hold_until < 0:  # "malformed": the first status message has a field that does not parse
            rec.hold_until = 0.0
            data = _corrupt(data)
        if rec.hold_until > time.monotonic():
            rec.held.append(data)
            return
        for conn in self._audience(rec.client_id, manual=rec.order_id == 0):
            conn.send(data)

    def _flush_held(self) -> None:
        now = time.monotonic()
        for rec in self.records.values():
            if rec.held and rec.hold_until <= now:
                held, rec.held = rec.held, []
                for data in held:
                    for conn in self._audience(rec.client_id, manual=rec.order_id == 0):
                        conn.send(data)

    def _audience(self, client_id: int, *, manual: bool = False) -> list[_Conn]:
        out = []
        for conn in self._conns:
            cid = conn.client_id
            if cid is None or conn.closed:
                continue
            if cid == client_id and not manual:
                out.append(conn)
            elif manual and (cid == 0 or conn.auto_bind):
                out.append(conn)
            elif self.master_client_id is not None and cid == self.master_client_id:
                out.append(conn)
        return out

    def _reject(self, order_id: int, exc: BrokerError) -> bytes:
        if "not found" in exc.message:
            return self._error(order_id, 200, "No security definition has been found for the request")
        return self._error(order_id, 201, f"Order rejected - reason:{exc.message}")

    @staticmethod
    def _error(req_id: int, code: int, text: str) -> bytes:
        return encode(4, 2, req_id, code, text)


class _Capture:
    """A connection stand-in that keeps what a handler would send (for the "malformed" fault)."""

    def __init__(self, conn: _Conn) -> None:
        self.client_id, self.positions, self.auto_bind = conn.client_id, conn.positions, conn.auto_bind
        self.md_type, self.streams = conn.md_type, conn.streams
        self.closed = False
        self.sent: list[bytes] = []
        self.conn = conn

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def _contract_msg(c: _Contract, *, with_exchange: bool = True) -> list[Any]:
    """conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, currency,
    localSymbol, tradingClass (the order ib_async's decoder reads them in)."""
    del with_exchange
    return [
        c.con_id,
        c.symbol,
        c.sec_type,
        "",
        0.0,
        "",
        "",
        c.exchange,
        c.currency,
        c.local_symbol,
        c.trading_class,
    ]


def _symbol_of(front: TwsFront, rec: _Record) -> str:
    return front._by_conid[rec.contract.con_id]


def _corrupt(data: bytes) -> bytes:
    """The first message in ``data`` with its second field replaced by text that does not parse."""
    size = struct.unpack(">I", data[:4])[0]
    fields = data[4 : 4 + size].split(b"\0")
    if len(fields) > 2:
        fields[1] = b"N/A?"
        if len(fields) > 3:
            fields[2] = b"N/A?"
    body = b"\0".join(fields)
    return struct.pack(">I", len(body)) + body + data[4 + size :]


def _version_range(hello: str) -> tuple[int, int]:
    """The client's "v<min>..<max>[ options]" version range (0, -1 when unreadable)."""
    text = hello.split(" ", 1)[0]
    if not text.startswith("v"):
        return 0, -1
    lo, _, hi = text[1:].partition("..")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        return 0, -1


def _req_id(f: list[str]) -> int:
    """The request id of a read request (-1 for the ones that have none)."""
    msg_id = int(f[0])
    if msg_id in (1, 7, 9, 62, 76) and len(f) > 2:
        with contextlib.suppress(ValueError):
            return int(f[2])
    return -1


def _price(text: Any) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and 0 < value < 1e300 else None


_REQUEST_NAMES = {
    1: "reqMktData", 2: "cancelMktData", 59: "reqMarketDataType",
    3: "placeOrder", 4: "cancelOrder", 5: "reqOpenOrders", 6: "reqAccountUpdates", 7: "reqExecutions",
    8: "reqIds", 9: "reqContractDetails", 15: "reqAutoOpenOrders", 16: "reqAllOpenOrders",
    17: "reqManagedAccts", 49: "reqCurrentTime", 58: "reqGlobalCancel", 61: "reqPositions",
    62: "reqAccountSummary", 63: "cancelAccountSummary", 64: "cancelPositions", 71: "startApi",
    76: "reqAccountUpdatesMulti", 77: "cancelAccountUpdatesMulti", 99: "reqCompletedOrders",
}  # fmt: skip


class TwsServer(TwsFront):
    """``TwsFront`` as a context manager (the name the other fakes' servers use)::

    with TwsServer(broker) as tws:
        ib.connect("127.0.0.1", tws.port, clientId=1)
    """


def serve(
    settings: Settings,
    port: int = 7497,
    *,
    account: str = DEFAULT_ACCOUNT,
    clock: Literal["driven", "wall"] = "driven",
    host: str = "127.0.0.1",
    master_client_id: int | None = None,
    store: Store | None = None,
    script_path: str | Path | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run the fake TWS until Ctrl-C (or ``stop`` is set); prints one line with its address once it
    listens and sets ``ready`` then."""
    from hflite.execution.venues.fakebroker import load_script

    script = load_script(script_path) if script_path is not None else None
    broker = FakeBroker.from_settings(settings, store, clock=clock, script=script)
    with TwsServer(broker, host, port, accounts=(account,), master_client_id=master_client_id) as tws:
        print(
            f"fake TWS (API version {SERVER_VERSION}) listening on {tws.url} ({clock} clock); Ctrl-C stops it"
        )
        wait_until_stopped(ready, stop)


def main(argv: list[str] | None = None) -> None:
    """``python -m hflite.execution.venues.fakes.tws --config configs/ib_paper.toml [--port 7497]``."""
    import argparse

    from hflite.config import load_settings

    parser = argparse.ArgumentParser(
        prog="python -m hflite.execution.venues.fakes.tws", description=main.__doc__
    )
    parser.add_argument("--config", required=True, help="the run's config (market data, instruments, cash)")
    parser.add_argument("--port", type=int, default=7497)
    parser.add_argument("--account", default=DEFAULT_ACCOUNT)
    parser.add_argument("--clock", choices=("driven", "wall"), default="driven")
    parser.add_argument("--master-client-id", type=int, default=None)
    args = parser.parse_args(argv)
    serve(
        load_settings(args.config), args.port, account=args.account, clock=args.clock,
        master_client_id=args.master_client_id,
    )  # fmt: skip


if __name__ == "__main__":
    main()
