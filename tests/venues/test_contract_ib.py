"""The venue contract for the ``ib`` kind: ``IbVenue`` (on the real ib_async client) against the fake
TWS of ``hflite.execution.venues.fakes.tws`` over the FakeBroker core, plus the IB specifics.

TWS has no API keys: the harness's ``key_id`` is the account id (the credential analogue: a wrong
one fails ``connect`` with VenueAuthError) and ``secret`` is never sent anywhere. "429" is TWS's
pacing violation (error 100; the harness's ``retry_after_s`` becomes the adapter's pacing wait),
"503" a socket closed before TWS read the order, "timeout" an order taken whose status is held past
the client's timeout, "malformed" a message with fields that do not parse.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hflite.execution.venues.base import EventVenue
from hflite.execution.venues.fakebroker import FakeBroker
from hflite.execution.venues.fakes.tws import TwsServer
from hflite.execution.venues.ib import IbVenue
from hflite.execution.venues.registry import VenueSpec, build
from hflite.execution.venues.rest import client_order_id
from tests.conftest import make_settings
from tests.venues.contract import *  # noqa: F403
from tests.venues.contract import FakeVenueHarness, Op, wait_until
from tests.venues.contract import Fault as FaultKind

ACCOUNT = "DU7654321"
UNUSED_SECRET = "tws-has-no-secret-0042"  # noqa: S105 - never sent: TWS has no API keys
CLIENT_ID = 11


class TwsHarness(FakeVenueHarness):
    kind = "ib"
    key_id, secret = ACCOUNT, UNUSED_SECRET
    symbol, qty, price = "SPY", 10.0, 200.0

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.tws = TwsServer(broker, accounts=(ACCOUNT,), master_client_id=CLIENT_ID, hold_s=2.5).start()
        self.made: list[IbVenue] = []

    def venue(self, *, key_id: str | None = None, secret: str | None = None, **options: Any) -> EventVenue:
        spec = VenueSpec(
            "ib",
            self.tws.url,
            "",
            "",
            account=ACCOUNT if key_id is None else key_id,
            client_id=CLIENT_ID,
            timeout_s=options.pop("timeout_s", 1.0),
            instruments={},
        )
        venue = build(spec)
        assert isinstance(venue, IbVenue)
        venue.backoff_max_s = 0.5
        for name, value in options.items():  # the injectable sleep
            setattr(venue, f"_{name}", value)
        self.made.append(venue)
        return venue

    def fill(self, client_id: str, qty: float, price: float, fee: float = 0.0) -> None:
        self.tws.execute(client_order_id(client_id), qty, price, fee)

    def duplicate_last_fill(self) -> None:
        assert self.tws.repeat_last_fill()

    def foreign_fill(self, qty: float, price: float) -> None:
        self.tws.foreign_fill(self.symbol, qty, price)

    def reject_next(self, reason: str) -> None:
        self.tws.reject_next(reason)

    def fault_next(self, op: Op, fault: FaultKind, retry_after_s: float | None = None) -> None:
        if retry_after_s is not None:
            for v in self.made:
                v.pacing_wait_s = retry_after_s
        self.tws.fault_next(op, fault, retry_after_s)

    def drop_stream(self) -> None:
        wait_until(lambda: self.tws.drop_connections() > 0, what="an API connection to drop")

    def down(self) -> None:
        self.tws.stop()

    def up(self) -> None:
        self.tws.start()

    def client_ids_at_venue(self) -> list[str]:
        return self.tws.refs_at_venue()

    def close(self) -> None:
        for v in self.made:
            v.close()
        self.tws.stop()


def make_harness(store) -> TwsHarness:
    """A started harness over the sample store's SPY (the fixture's, and ``bench/venues.py``'s)."""
    settings = make_settings(store, run={"symbols": ["SPY"], "start": "2019-01-02", "end": "2019-12-31"})
    return TwsHarness(FakeBroker.from_settings(settings, store))


@pytest.fixture
def harness(sample_store) -> Iterator[TwsHarness]:
    h = make_harness(sample_store)
    yield h
    h.close()
