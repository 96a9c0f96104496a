"""The venue contract for the ``fakebroker`` kind: ``RestBrokerVenue`` against the local fake broker.

This is the reference harness: the fake's admin hooks (``FakeBroker.execute``, ``reject_next``,
``repeat_last_fill``, behaviour-script faults, ``FakeBrokerServer.drop_streams``) play the venue's
part, the adapter is the one ``hflite run`` builds for ``[venue] kind = "fakebroker"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hflite.execution.venues.base import EventVenue
from hflite.execution.venues.fakebroker import BehaviourScript, FakeBroker, FakeBrokerServer, Fault
from hflite.execution.venues.registry import VenueSpec, build
from hflite.execution.venues.rest import client_order_id
from tests.conftest import make_settings
from tests.venues.contract import *  # noqa: F403
from tests.venues.contract import FakeVenueHarness, Op, wait_until
from tests.venues.contract import Fault as FaultKind

KEY_ID, SECRET = "PKCONTRACTKEY0042", "sk-contract-SECRET-77aa"

_ROUTES: dict[str, tuple[str, str]] = {
    "submit": ("POST", "/v2/orders"),
    "cancel": ("DELETE", "/v2/orders/{id}"),
    "replace": ("PATCH", "/v2/orders/{id}"),
    "read": ("GET", "/v2/clock"),
}


class FakeBrokerHarness(FakeVenueHarness):
    kind = "fakebroker"
    key_id, secret = KEY_ID, SECRET
    symbol, qty, price = "SPY", 10.0, 200.0

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.server = FakeBrokerServer(broker, key_id=KEY_ID, secret=SECRET).start()
        self.made: list[EventVenue] = []

    def venue(self, *, key_id: str | None = None, secret: str | None = None, **options: Any) -> EventVenue:
        spec = VenueSpec(
            "fakebroker",
            self.server.url,
            KEY_ID if key_id is None else key_id,
            SECRET if secret is None else secret,
            timeout_s=options.pop("timeout_s", 1.0),
            rate_per_min=60_000,
        )
        venue = build(spec)
        for name, value in options.items():  # the injectable sleep
            setattr(venue, f"_{name}", value)
            if name == "sleep":
                venue.limiter._sleep = value  # type: ignore[attr-defined]
        self.made.append(venue)  # type: ignore[arg-type]
        return venue  # type: ignore[return-value]

    def _broker_id(self, client_id: str) -> str:
        return str(self.broker.get_by_client_id(client_order_id(client_id))["id"])

    def fill(self, client_id: str, qty: float, price: float, fee: float = 0.0) -> None:
        self.broker.execute(self._broker_id(client_id), qty, price, fee)

    def duplicate_last_fill(self) -> None:
        assert self.broker.repeat_last_fill() > 0

    def foreign_fill(self, qty: float, price: float) -> None:
        body = {
            "symbol": self.symbol, "qty": str(qty), "side": "buy", "type": "limit",
            "limit_price": str(price), "time_in_force": "gtc", "client_order_id": "placed-on-the-website",
        }  # fmt: skip
        obj = self.broker.submit(body, source="admin")
        self.broker.execute(str(obj["id"]), qty, price)

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
        wait_until(lambda: self.server.drop_streams() > 0, what="an open stream to drop")

    def down(self) -> None:
        self.server.stop()

    def up(self) -> None:
        self.server = FakeBrokerServer(
            self.broker, port=self.server.port, key_id=KEY_ID, secret=SECRET
        ).start()

    def client_ids_at_venue(self) -> list[str]:
        return [str(o["client_order_id"]) for o in self.broker.list_orders({"status": "all", "limit": "500"})]

    def close(self) -> None:
        for v in self.made:
            v.close()  # type: ignore[attr-defined]
        self.server.stop()


def make_harness(store) -> FakeBrokerHarness:
    """A started harness over the sample store's SPY (the fixture's, and ``bench/venues.py``'s)."""
    run = {"symbols": ["SPY"], "start": "2019-01-02", "end": "2019-12-31"}
    return FakeBrokerHarness(FakeBroker.from_settings(make_settings(store, run=run), store))


@pytest.fixture
def harness(sample_store) -> Iterator[FakeBrokerHarness]:
    h = make_harness(sample_store)
    yield h
    h.close()
