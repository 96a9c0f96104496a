"""The broker venue contract: one suite every adapter passes against its local fake.

A vendor's test module defines a ``harness`` fixture (a started ``FakeVenueHarness``) and imports this
module's tests (``from tests.venues.contract import *``). The tests drive the adapter through the
engine's side of the venue port (submit, cancel, replace, match, snapshot) and the fake through the
harness (fill, fault, drop the stream, go down), so each vendor's wire protocol is exercised by the
vendor's own client library while the expectations stay the same for all four.

Cases (the issue's list): accept, reject, partial fill then fill, cancel, replace, duplicate fill
message, fill for an unknown order, 429 with Retry-After, 5xx, timeout on send (order becomes unknown,
reconciliation settles it), malformed payload, invalid key, stream drop and resubscribe, restart with
fills missed while down; plus: no test key in any log line or exception.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, Literal

import pytest

from hflite.domain.order import Order, OrderStatus, OrderType, Side
from hflite.execution.venues.base import (
    EventVenue,
    VenueAuthError,
    VenueError,
    VenueEvent,
    VenueEventKind,
    VenueFill,
)

Op = Literal["submit", "cancel", "replace", "read"]
Fault = Literal["429", "503", "timeout", "malformed"]
T0 = 1_704_488_400_000_000_000  # 2024-01-05T21:00:00Z


#: Every venue test key and account id the suite uses: ``tests/conftest.py`` greps every file the
#: suite's runs wrote (journals, logs, reports, configs) for them at the end of the session.
TEST_SECRETS: set[str] = set()


def register_test_secret(*values: str) -> None:
    """Add test keys to the end-of-session grep (values shorter than 8 characters are ignored: too
    likely to occur by chance)."""
    TEST_SECRETS.update(v for v in values if isinstance(v, str) and len(v) >= 8)


class FakeVenueHarness(ABC):
    """A vendor's local fake on 127.0.0.1 and the adapter pointed at it.

    ``symbol`` is one the fake trades, ``qty`` a valid size for it and ``price`` a price near its
    market (a buy limit there rests: the fake never fills by itself unless told to via ``fill``)."""

    kind: str
    key_id: str
    secret: str
    symbol: str
    qty: float
    price: float

    @abstractmethod
    def venue(self, *, key_id: str | None = None, secret: str | None = None, **options: Any) -> EventVenue:
        """A new adapter for the fake (not connected). ``options`` may hold ``sleep`` (a callable the
        adapter's retries wait with, so tests never really wait) and ``timeout_s``."""

    @abstractmethod
    def fill(self, client_id: str, qty: float, price: float, fee: float = 0.0) -> None:
        """The venue executes ``qty`` of our order ``client_id`` (our order id) at ``price`` now and
        reports it its own way (stream, or what the adapter polls)."""

    @abstractmethod
    def duplicate_last_fill(self) -> None:
        """The venue sends its last fill message again (same execution id)."""

    @abstractmethod
    def foreign_fill(self, qty: float, price: float) -> None:
        """An order nobody here placed (placed at the venue's website) is created and filled."""

    @abstractmethod
    def reject_next(self, reason: str) -> None:
        """The venue refuses the next order on its merits (e.g. insufficient buying power), its words
        containing ``reason``."""

    @abstractmethod
    def fault_next(self, op: Op, fault: Fault, retry_after_s: float | None = None) -> None:
        """The next request of kind ``op`` gets ``fault``: "429" (with Retry-After when given; the
        request is not processed), "503" (not processed), "timeout" (processed, the answer held past
        the client's timeout), "malformed" (processed, the answer is not the documented payload)."""

    @abstractmethod
    def drop_stream(self) -> None:
        """The venue closes the event stream connection (the adapter must resubscribe)."""

    @abstractmethod
    def down(self) -> None:
        """The venue stops answering (the server closes, state kept)."""

    @abstractmethod
    def up(self) -> None:
        """The venue answers again on the same address with the same state."""

    @abstractmethod
    def client_ids_at_venue(self) -> list[str]:
        """Our order ids of every order the venue holds (one entry per venue order)."""

    def close(self) -> None:  # noqa: B027 - optional
        """Stop the fake."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_test_secret(getattr(cls, "key_id", ""), getattr(cls, "secret", ""))


# -- helpers -------------------------------------------------------------------------------------------
def wait_until(check: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout_s} s")
        time.sleep(0.01)


def bar(i: int = 1) -> SimpleNamespace:
    return SimpleNamespace(ts=T0 + i * 60_000_000_000, i=i)


def kinds(venue: EventVenue, symbol: str) -> list[VenueEventKind]:
    return [ev.kind for ev in venue.pending(symbol)]


def events(venue: EventVenue, symbol: str, kind: VenueEventKind) -> list[VenueEvent]:
    return [ev for ev in venue.pending(symbol) if ev.kind is kind]


_counter = iter(range(1, 1_000_000))


def make_order(h: FakeVenueHarness, type_: OrderType = OrderType.LIMIT, **kw: Any) -> Order:
    n = next(_counter)
    price = kw.pop("price", h.price if type_ is not OrderType.MARKET else None)
    if type_ is OrderType.STOP and "price" not in kw:
        price = round(h.price * 1.2, 2) if kw.get("side", Side.BUY) is Side.BUY else round(h.price * 0.8, 2)
    return Order(
        kw.pop("id", f"ct{n}.trend-{h.symbol}-20240105T210000-e{n}"),
        h.symbol,
        kw.pop("side", Side.BUY),
        type_,
        kw.pop("qty", h.qty),
        T0,
        price,
        **kw,
    )


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def venue(harness: FakeVenueHarness, sleeps: list[float]) -> Iterator[EventVenue]:
    v = harness.venue(sleep=sleeps.append, timeout_s=1.0)
    v.connect()  # type: ignore[attr-defined]
    yield v
    v.close()  # type: ignore[attr-defined]


def ours(venue: EventVenue, order: Order, kind: VenueEventKind) -> list[VenueEvent]:
    """The delivered, not yet applied events of ``kind`` for ``order``."""
    return [ev for ev in venue.pending(order.symbol) if ev.kind is kind and ev.order_id == order.id]


def _accepted(venue: EventVenue, order: Order) -> None:
    wait_until(lambda: bool(ours(venue, order, VenueEventKind.ACCEPTED)), what=f"ACCEPTED for {order.id}")


def _fills(venue: EventVenue, order: Order, n: int) -> list[VenueEvent]:
    wait_until(lambda: len(ours(venue, order, VenueEventKind.FILLED)) >= n, what=f"{n} fills for {order.id}")
    return ours(venue, order, VenueEventKind.FILLED)


class Booked:
    def __init__(self) -> None:
        self.fills: list[tuple[str, float, float]] = []

    def __call__(self, order: Order, fill: Any) -> None:
        self.fills.append((order.id, fill.qty, fill.price))


# -- the contract ----------------------------------------------------------------------------------------
def test_contract_accept_places_one_order_under_our_client_id(harness, venue):
    order = make_order(harness)
    venue.submit(order)
    _accepted(venue, order)
    venue.match(order.symbol, bar(1), Booked())
    assert order.status is OrderStatus.ACCEPTED
    assert harness.client_ids_at_venue().count(order.id) == 1


def test_contract_reject_delivers_rejected_with_the_venues_reason(harness, venue):
    harness.reject_next("insufficient buying power")
    order = make_order(harness)
    venue.submit(order)
    wait_until(lambda: VenueEventKind.REJECTED in kinds(venue, order.symbol), what="REJECTED")
    (ev,) = events(venue, order.symbol, VenueEventKind.REJECTED)
    assert "insufficient" in ev.reason.lower()
    venue.match(order.symbol, bar(1), Booked())
    assert order.status is OrderStatus.REJECTED


def test_contract_partial_fill_then_fill_books_both_executions(harness, venue):
    order = make_order(harness)
    venue.submit(order)
    _accepted(venue, order)
    first = harness.qty / 4
    harness.fill(order.id, first, harness.price)
    harness.fill(order.id, harness.qty - first, harness.price)
    fills = _fills(venue, order, 2)
    assert sum(ev.qty for ev in fills) == pytest.approx(harness.qty)
    assert len({ev.event_id for ev in fills}) == 2
    booked = Booked()
    venue.match(order.symbol, bar(1), booked)
    assert order.status is OrderStatus.FILLED
    assert order.filled_qty == pytest.approx(harness.qty)
    assert [q for _, q, _ in booked.fills] == pytest.approx([first, harness.qty - first])
    assert order.avg_fill_price == pytest.approx(harness.price)


def test_contract_cancel_closes_the_order_when_the_venue_confirms(harness, venue):
    order = make_order(harness)
    venue.submit(order)
    _accepted(venue, order)
    venue.cancel(order, T0)
    wait_until(lambda: VenueEventKind.CANCELLED in kinds(venue, order.symbol), what="CANCELLED")
    venue.match(order.symbol, bar(1), Booked())
    assert order.status is OrderStatus.CANCELLED
    assert not venue.has_working(order.symbol)


def test_contract_replace_moves_the_price_and_keeps_one_working_order(harness, venue):
    order = make_order(harness)
    venue.submit(order)
    _accepted(venue, order)
    new_price = round(harness.price * 0.99, 2)
    venue.replace(order, new_price)
    wait_until(lambda: VenueEventKind.REPLACED in kinds(venue, order.symbol), what="REPLACED")
    venue.match(order.symbol, bar(1), Booked())
    assert order.price == pytest.approx(new_price)
    assert order.is_open
    snap = venue.snapshot([order.id])  # type: ignore[attr-defined]
    working = (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)
    assert [vo.price for vo in snap.orders.values() if vo.status in working] == pytest.approx([new_price])
    # a fill after the replace still reaches the same order of ours
    harness.fill(order.id, harness.qty, new_price)
    _fills(venue, order, 1)
    venue.match(order.symbol, bar(2), Booked())
    assert order.status is OrderStatus.FILLED


def test_contract_a_duplicate_fill_message_is_booked_once(harness, venue):
    order = make_order(harness)
    venue.submit(order)
    _accepted(venue, order)
    harness.fill(order.id, harness.qty, harness.price)
    _fills(venue, order, 1)
    harness.duplicate_last_fill()
    time.sleep(0.3)
    booked = Booked()
    venue.match(order.symbol, bar(1), booked)
    venue.match(order.symbol, bar(2), booked)
    assert len(booked.fills) == 1
    assert order.filled_qty == pytest.approx(harness.qty)


def test_contract_a_fill_for_an_order_we_never_sent_goes_to_reconciliation(harness, venue):
    harness.foreign_fill(harness.qty, harness.price)
    wait_until(lambda: bool(venue.strangers) or venue.needs_reconcile, what="a stranger event")
    booked = Booked()
    venue.match(harness.symbol, bar(1), booked)
    assert booked.fills == []
    snap = venue.snapshot([])  # type: ignore[attr-defined]
    assert snap.positions[harness.symbol].qty == pytest.approx(harness.qty)


def test_contract_a_429_waits_retry_after_and_places_the_order_once(harness, venue, sleeps):
    harness.fault_next("submit", "429", retry_after_s=3.0)
    order = make_order(harness)
    venue.submit(order)
    _accepted(venue, order)
    assert 3.0 in sleeps
    assert harness.client_ids_at_venue().count(order.id) == 1


def test_contract_a_503_on_submit_makes_the_order_unknown_and_reconciliation_settles_it(harness, venue):
    harness.fault_next("submit", "503")
    order = make_order(harness)
    venue.submit(order)
    wait_until(lambda: VenueEventKind.UNKNOWN in kinds(venue, order.symbol), what="UNKNOWN")
    assert venue.needs_reconcile
    venue.match(order.symbol, bar(1), Booked())
    assert order.status is OrderStatus.UNKNOWN
    snap = venue.snapshot([order.id])  # type: ignore[attr-defined]
    # the venue never took it: the snapshot does not hold it and nothing is at the venue
    assert order.id not in snap.orders
    assert harness.client_ids_at_venue().count(order.id) == 0


def test_contract_a_timeout_on_send_makes_the_order_unknown_and_the_snapshot_finds_it(harness, venue):
    harness.fault_next("submit", "timeout")
    order = make_order(harness)
    venue.submit(order)
    wait_until(lambda: VenueEventKind.UNKNOWN in kinds(venue, order.symbol), timeout_s=15.0, what="UNKNOWN")
    venue.match(order.symbol, bar(1), Booked())
    assert order.status is OrderStatus.UNKNOWN
    snap = venue.snapshot([order.id])  # type: ignore[attr-defined]
    assert snap.orders[order.id].status in (OrderStatus.ACCEPTED, OrderStatus.SUBMITTED)
    assert harness.client_ids_at_venue().count(order.id) == 1


def test_contract_a_malformed_answer_is_a_clear_venue_error_not_a_crash(harness, venue):
    harness.fault_next("read", "malformed")
    with pytest.raises(VenueError) as err:
        venue.snapshot([])  # type: ignore[attr-defined]
    assert "malformed" in str(err.value).lower() or "unexpected" in str(err.value).lower()
    venue.snapshot([])  # type: ignore[attr-defined]  # the next answer is fine again


def test_contract_invalid_keys_fail_connect_with_an_auth_error_that_names_no_key(harness):
    bad = harness.venue(key_id="WRONGKEYID123", secret="wrong-secret-456", timeout_s=1.0)
    try:
        with pytest.raises(VenueAuthError) as err:
            bad.connect()  # type: ignore[attr-defined]
    finally:
        bad.close()  # type: ignore[attr-defined]
    text = str(err.value)
    assert "\n" not in text
    assert "WRONGKEYID123" not in text and "wrong-secret-456" not in text


def test_contract_a_dropped_stream_resubscribes_and_events_keep_coming(harness, venue):
    order = make_order(harness)
    venue.submit(order)
    _accepted(venue, order)
    harness.drop_stream()
    wait_until(lambda: bool(getattr(venue, "reconnected", False)), timeout_s=10.0, what="reconnected")
    harness.fill(order.id, harness.qty, harness.price)
    _fills(venue, order, 1)
    venue.match(order.symbol, bar(1), Booked())
    assert order.status is OrderStatus.FILLED


def test_contract_fills_missed_while_down_are_found_after_a_restart(harness, sleeps):
    first = harness.venue(sleep=sleeps.append, timeout_s=1.0)
    first.connect()  # type: ignore[attr-defined]
    order = make_order(harness)
    first.submit(order)
    _accepted(first, order)
    first.close()  # type: ignore[attr-defined]  # the process stops; the venue goes on
    harness.fill(order.id, harness.qty, harness.price)

    second = harness.venue(sleep=sleeps.append, timeout_s=1.0)
    try:
        second.connect()  # type: ignore[attr-defined]
        snap = second.snapshot([order.id])  # type: ignore[attr-defined]
        assert snap.orders[order.id].status is OrderStatus.FILLED
        missed = [f for f in snap.fills if f.order_id == order.id]
        assert isinstance(missed[0], VenueFill)
        assert sum(f.qty for f in missed) == pytest.approx(harness.qty)
        assert missed[0].price == pytest.approx(harness.price)
        assert snap.positions[harness.symbol].qty == pytest.approx(harness.qty)
    finally:
        second.close()  # type: ignore[attr-defined]


def test_contract_a_venue_that_went_down_is_unavailable_then_works_again(harness, venue):
    harness.down()
    try:
        with pytest.raises(VenueError):
            venue.snapshot([])  # type: ignore[attr-defined]
    finally:
        harness.up()
    wait_until(lambda: _snapshot_ok(venue), timeout_s=10.0, what="the venue answering again")


def _snapshot_ok(venue: EventVenue) -> bool:
    try:
        venue.snapshot([])  # type: ignore[attr-defined]
    except VenueError:
        return False
    return True


def test_contract_no_test_key_appears_in_any_log_line_or_error(harness, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    v = harness.venue(sleep=sleeps.append, timeout_s=1.0)
    messages: list[str] = []
    try:
        v.connect()  # type: ignore[attr-defined]
        harness.fault_next("submit", "503")
        order = make_order(harness)
        v.submit(order)
        wait_until(lambda: bool(v.pending(order.symbol)), what="an event")
        messages += [ev.reason for ev in v.pending(order.symbol)]
        harness.down()
        try:
            v.snapshot([order.id])  # type: ignore[attr-defined]
        except VenueError as exc:
            messages.append(str(exc))
        finally:
            harness.up()
    finally:
        v.close()  # type: ignore[attr-defined]
    bad = harness.venue(key_id=harness.key_id, secret="x" + harness.secret, timeout_s=1.0)
    try:
        bad.connect()  # type: ignore[attr-defined]
    except VenueError as exc:
        messages.append(str(exc))
    finally:
        bad.close()  # type: ignore[attr-defined]
    text = "\n".join(messages + [r.getMessage() for r in caplog.records] + [caplog.text])
    for secret in (harness.key_id, harness.secret):
        assert secret not in text


__all__ = [name for name in list(globals()) if name.startswith("test_contract_")] + [
    "FakeVenueHarness",
    "TEST_SECRETS",
    "register_test_secret",
    "sleeps",
    "venue",
]
