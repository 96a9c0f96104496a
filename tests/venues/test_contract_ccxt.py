"""The venue contract for the ``ccxt`` kind: ``CcxtVenue`` (the real ccxt client, exchange "binance",
sandbox mode) against the local fake Binance spot API (``fakes/binance.py``) over the fake broker.

The fake plays the exchange: ``BinanceFront.fill`` executes our order, ``foreign_fill`` fills an order
placed at the website, ``repeat_last_trade`` makes the next myTrades answer repeat a trade, the core's
behaviour script injects 429 / 503 / timeouts / malformed bodies on Binance paths, and
``drop_next_poll`` resets the poller's next connection (the "stream" of a polling venue).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hflite.domain.instrument import instrument_for
from hflite.execution.venues.base import EventVenue
from hflite.execution.venues.ccxt_venue import CcxtVenue, ccxt_client_id
from hflite.execution.venues.fakebroker import BehaviourScript, FakeBroker, Fault
from hflite.execution.venues.fakes.binance import BinanceFront, FakeBinanceServer
from tests.conftest import make_settings
from tests.venues.contract import *  # noqa: F403
from tests.venues.contract import FakeVenueHarness, Op
from tests.venues.contract import Fault as FaultKind

KEY_ID, SECRET = "BNCONTRACTKEY0042abcdef", "bn-contract-SECRET-77aa99"
SYMBOLS = {"BTC-USD": "BTC/USDT", "ETH-USD": "ETH/USDT"}
RUN = {
    "symbols": ["BTC-USD", "ETH-USD"],
    "start": "2024-01-02",
    "end": "2024-03-28",
    "benchmarks": ["BTC-USD"],
}

_ROUTES: dict[str, tuple[str, str]] = {
    "submit": ("POST", "/api/v3/order"),
    "cancel": ("DELETE", "/api/v3/order"),
    "replace": ("POST", "/api/v3/order/cancelReplace"),
    "read": ("GET", "/api/v3/account"),
}


class BinanceHarness(FakeVenueHarness):
    kind = "ccxt"
    key_id, secret = KEY_ID, SECRET
    symbol, qty, price = "BTC-USD", 0.01, 40_000.0

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.front = BinanceFront(broker, SYMBOLS)
        self.server = FakeBinanceServer(self.front, key_id=KEY_ID, secret=SECRET).start()
        self.made: list[CcxtVenue] = []

    def venue(self, *, key_id: str | None = None, secret: str | None = None, **options: Any) -> EventVenue:
        venue = CcxtVenue(
            "ccxt:binance",
            "binance",
            KEY_ID if key_id is None else key_id,
            SECRET if secret is None else secret,
            endpoint=self.server.url,
            symbols=SYMBOLS,
            instruments={s: instrument_for(s) for s in SYMBOLS},
            timeout_s=options.pop("timeout_s", 1.0),
            rate_per_min=60_000,
            poll_s=options.pop("poll_s", 0.1),
            **options,
        )
        self.made.append(venue)
        return venue

    def _cid(self, order_id: str) -> str:
        return ccxt_client_id(order_id, 36)

    def fill(self, client_id: str, qty: float, price: float, fee: float = 0.0) -> None:
        self.front.fill(self._cid(client_id), qty, price, fee)

    def duplicate_last_fill(self) -> None:
        self.front.repeat_last_trade = True

    def foreign_fill(self, qty: float, price: float) -> None:
        self.front.foreign_fill(self.symbol, qty, price)

    def reject_next(self, reason: str) -> None:
        self.broker.reject_next(reason)

    def fault_next(self, op: Op, fault: FaultKind, retry_after_s: float | None = None) -> None:
        method, path = _ROUTES[op]
        effect: dict[str, Any] = {"respond": int(fault)} if fault in ("429", "503") else {"action": fault}
        if retry_after_s is not None:
            effect["retry_after_s"] = retry_after_s
        self.broker.set_script(
            BehaviourScript(timeout_hold_s=2.0, fault=[Fault(method=method, path=path, nth=[1], **effect)])
        )

    def drop_stream(self) -> None:
        self.front.drop_next_poll = True

    def down(self) -> None:
        self.server.stop()

    def up(self) -> None:
        self.server = FakeBinanceServer(
            self.front, port=self.server.port, key_id=KEY_ID, secret=SECRET
        ).start()

    def client_ids_at_venue(self) -> list[str]:
        short: dict[str, str] = {}
        for v in self.made:
            short.update(v._client_ids)
        return [short.get(r.client_order_id, r.client_order_id) for r in self.front.records()]

    def close(self) -> None:
        for v in self.made:
            v.close()
        self.server.stop()


def new_broker(store: Any, **script: Any) -> FakeBroker:
    settings = make_settings(store, run=RUN)
    broker = FakeBroker.from_settings(settings, store)
    if script:
        broker.set_script(BehaviourScript(**script))
    return broker


def make_harness(store: Any) -> BinanceHarness:
    """A started harness over the sample store (the fixture's, and ``bench/venues.py``'s)."""
    return BinanceHarness(new_broker(store))


@pytest.fixture
def harness(sample_store: Any) -> Iterator[BinanceHarness]:
    h = make_harness(sample_store)
    yield h
    h.close()
