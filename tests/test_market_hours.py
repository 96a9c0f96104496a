"""Market hours and the gate that holds orders while a market is closed (``hflite.engine.hours``)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from hflite.domain.instrument import SAMPLE_INSTRUMENTS, Instrument
from hflite.domain.order import Order, OrderStatus, OrderType, Side
from hflite.engine.hours import MarketGate, is_open, next_open, release_forever
from hflite.execution.venues.base import EventVenue, VenueEventKind

SPY = SAMPLE_INSTRUMENTS["SPY"]
BTC = SAMPLE_INSTRUMENTS["BTC-USD"]
EURUSD = SAMPLE_INSTRUMENTS["EURUSD"]
INSTRUMENTS: dict[str, Instrument] = {s: SAMPLE_INSTRUMENTS[s] for s in ("SPY", "BTC-USD", "EURUSD")}


def t(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value)


def iso(t_ns: int) -> str:
    return str(pd.Timestamp(t_ns, unit="ns", tz="UTC"))


class Clock:
    def __init__(self, start: str) -> None:
        self.ns = t(start)

    def __call__(self) -> int:
        return self.ns

    def set(self, text: str) -> None:
        self.ns = t(text)


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    warning = info

    def named(self, event: str) -> list[dict[str, Any]]:
        return [kw for e, kw in self.events if e == event]


class Broker(EventVenue):
    """An EventVenue that records what reaches the broker, with the clock's time."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.sent: list[tuple[str, list[str], int]] = []

    def _send_submit(self, order: Order) -> None:
        self.sent.append(("submit", [order.id], self.clock()))

    def _send_oco(self, orders: list[Order]) -> None:
        self.sent.append(("oco", [o.id for o in orders], self.clock()))

    def _send_cancel(self, order: Order) -> None:
        self.sent.append(("cancel", [order.id], self.clock()))

    def _send_replace(self, order: Order, price: float) -> None:
        self.sent.append(("replace", [order.id], self.clock()))

    def _send_resize(self, order: Order, qty: float) -> None:
        self.sent.append(("resize", [order.id], self.clock()))


class LegsBroker(Broker):
    """A venue without OCO support: the base class sends each leg through ``_send_submit``."""

    _send_oco = EventVenue._send_oco


def order(oid: str, symbol: str = "SPY", qty: float = 10, side: Side = Side.BUY, **kw: Any) -> Order:
    return Order(oid, symbol, side, kw.pop("type", OrderType.MARKET), qty, 0, **kw)


def setup(start: str, venue_cls: type[Broker] = Broker) -> tuple[Clock, Broker, MarketGate, Log]:
    clock, log = Clock(start), Log()
    venue = venue_cls(clock)
    gate = MarketGate(INSTRUMENTS, now=clock, log=log)
    gate.wrap(venue)
    return clock, venue, gate, log


# -- calendars --------------------------------------------------------------------------------------
def test_nyse_session_bounds_open_inclusive_close_exclusive() -> None:
    assert not is_open(SPY, t("2024-07-05 13:29:59"))
    assert is_open(SPY, t("2024-07-05 13:30"))
    assert is_open(SPY, t("2024-07-05 19:59:59"))
    assert not is_open(SPY, t("2024-07-05 20:00"))
    assert not is_open(SPY, t("2024-07-04 15:00"))  # Independence Day
    assert not is_open(SPY, t("2024-07-06 15:00"))  # Saturday
    assert next_open(SPY, t("2024-07-05 15:00")) == t("2024-07-05 15:00")  # open: now


def test_nyse_early_close_comes_from_the_calendar() -> None:
    # 2024-07-03 and 2024-11-29 close at 13:00 New York (17:00 and 18:00 UTC)
    assert is_open(SPY, t("2024-07-03 16:59"))
    assert not is_open(SPY, t("2024-07-03 17:00"))
    assert is_open(SPY, t("2024-11-29 17:59"))
    assert not is_open(SPY, t("2024-11-29 18:00"))
    assert next_open(SPY, t("2024-11-29 18:30")) == t("2024-12-02 14:30")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # March 2024: DST starts Sunday 2024-03-10; the open moves from 14:30 to 13:30 UTC
        ("2024-03-08 21:00", "2024-03-11 13:30"),
        ("2024-03-07 21:00", "2024-03-08 14:30"),
        # November 2024: DST ends Sunday 2024-11-03; the open moves from 13:30 to 14:30 UTC
        ("2024-11-01 21:00", "2024-11-04 14:30"),
        ("2024-10-31 21:00", "2024-11-01 13:30"),
    ],
)
def test_nyse_open_in_utc_across_dst(now: str, expected: str) -> None:
    assert iso(next_open(SPY, t(now))) == iso(t(expected))
    assert not is_open(SPY, t(expected) - 1)
    assert is_open(SPY, t(expected))


def test_fx_weekend_from_friday_to_sunday_17_new_york() -> None:
    # summer (EDT): 17:00 New York = 21:00 UTC
    assert is_open(EURUSD, t("2024-07-05 20:59"))
    assert not is_open(EURUSD, t("2024-07-05 21:00"))
    assert not is_open(EURUSD, t("2024-07-06 12:00"))
    assert next_open(EURUSD, t("2024-07-06 12:00")) == t("2024-07-07 21:00")
    assert is_open(EURUSD, t("2024-07-07 21:00"))
    assert is_open(EURUSD, t("2024-07-04 15:00"))  # a US holiday is an FX day
    # winter (EST): 22:00 UTC
    assert next_open(EURUSD, t("2024-01-06 12:00")) == t("2024-01-07 22:00")
    assert next_open(EURUSD, t("2024-01-05 22:00")) == t("2024-01-07 22:00")
    assert is_open(EURUSD, t("2024-01-05 21:59"))


def test_crypto_never_closes() -> None:
    for now in ("2024-07-07 12:00", "2024-07-04 03:00", "2024-12-25 00:00"):
        assert is_open(BTC, t(now))
        assert next_open(BTC, t(now)) == t(now)


def test_after_the_nyse_calendar_is_an_error() -> None:
    with pytest.raises(ValueError, match="end of the NYSE calendar"):
        is_open(SPY, t("2032-03-01 15:00"))


# -- the gate ---------------------------------------------------------------------------------------
def test_spy_after_the_close_before_july_4_waits_for_july_5_open() -> None:
    clock, venue, gate, log = setup("2024-07-03 20:00")
    o = order("o1")
    venue.submit(o)
    assert venue.sent == []
    assert o.status is OrderStatus.SUBMITTED
    assert gate.held() == [o]
    assert gate.next_wake() == t("2024-07-05 13:30")
    assert gate.describe() == ["SPY buy 10: held until 2024-07-05 13:30 UTC (market closed)"]
    assert log.named("order.held") == [
        {"order_id": "o1", "symbol": "SPY", "open": "2024-07-05T13:30:00+00:00", "reason": "market closed"}
    ]

    for now in ("2024-07-04 13:30", "2024-07-05 13:29:59"):
        clock.set(now)
        assert gate.due() == []
    assert venue.sent == []

    clock.set("2024-07-05 13:30")
    assert gate.due() == [o]
    assert venue.sent == [("submit", ["o1"], t("2024-07-05 13:30"))]
    assert gate.held() == [] and gate.next_wake() is None and gate.describe() == []
    clock.set("2024-07-05 14:00")
    assert gate.due() == []
    assert len(venue.sent) == 1
    assert len(log.named("order.held")) == 1


def test_order_after_an_early_close_is_held() -> None:
    clock, venue, gate, _ = setup("2024-11-29 17:30")  # 12:30 New York: open
    venue.submit(order("early"))
    assert venue.sent == [("submit", ["early"], t("2024-11-29 17:30"))]
    clock.set("2024-11-29 18:30")  # 13:30 New York, after the 13:00 early close
    late = order("late")
    venue.submit(late)
    assert gate.held() == [late]
    assert gate.next_wake() == t("2024-12-02 14:30")
    clock.set("2024-12-02 14:30")
    assert gate.due() == [late]
    assert venue.sent[-1] == ("submit", ["late"], t("2024-12-02 14:30"))


def test_crypto_is_sent_at_once_on_a_sunday() -> None:
    _, venue, gate, log = setup("2024-07-07 12:00")
    venue.submit(order("btc", "BTC-USD", 0.5))
    assert venue.sent == [("submit", ["btc"], t("2024-07-07 12:00"))]
    assert gate.held() == [] and log.named("order.held") == []


@pytest.mark.parametrize(
    ("saturday", "reopen"),
    [("2024-07-06 12:00", "2024-07-07 21:00"), ("2024-01-06 12:00", "2024-01-07 22:00")],
)
def test_fx_held_on_saturday_until_sunday_17_new_york(saturday: str, reopen: str) -> None:
    clock, venue, gate, _ = setup(saturday)
    o = order("fx", "EURUSD", 1000)
    venue.submit(o)
    assert venue.sent == [] and gate.next_wake() == t(reopen)
    clock.ns = t(reopen) - 1
    assert gate.due() == []
    clock.set(reopen)
    assert gate.due() == [o]
    assert venue.sent == [("submit", ["fx"], t(reopen))]


def oco_pair() -> list[Order]:
    stop = order("sl", side=Side.SELL, type=OrderType.STOP, price=90.0, oco_group="g")
    take = order("tp", side=Side.SELL, type=OrderType.LIMIT, price=120.0, oco_group="g")
    return [stop, take]


def test_oco_pair_is_held_and_released_together() -> None:
    clock, venue, gate, log = setup("2024-07-06 15:00")
    pair = oco_pair()
    venue.submit_oco(pair)
    assert venue.sent == [] and gate.held() == pair
    assert [kw["order_id"] for kw in log.named("order.held")] == ["sl", "tp"]
    clock.set("2024-07-08 13:30")
    assert gate.due() == pair
    assert venue.sent == [("oco", ["sl", "tp"], t("2024-07-08 13:30"))]


def test_oco_legs_sent_one_by_one_by_the_venue_itself_pass_the_gate() -> None:
    clock, venue, gate, _ = setup("2024-07-06 15:00", LegsBroker)
    venue.submit_oco(oco_pair())
    assert venue.sent == []
    clock.set("2024-07-08 13:30")
    gate.due()
    assert venue.sent == [
        ("submit", ["sl"], t("2024-07-08 13:30")),
        ("submit", ["tp"], t("2024-07-08 13:30")),
    ]
    clock.set("2024-07-08 15:00")  # open: an OCO goes straight through
    venue.submit_oco([order("a"), order("b")])
    assert [s[1] for s in venue.sent[2:]] == [["a"], ["b"]]


def test_oco_pair_released_at_the_open_when_sent_while_open() -> None:
    _, venue, gate, _ = setup("2024-07-08 15:00")
    venue.submit_oco(oco_pair())
    assert venue.sent == [("oco", ["sl", "tp"], t("2024-07-08 15:00"))]
    assert gate.held() == []


def test_a_held_order_cancelled_is_never_sent_and_the_engine_books_cancelled() -> None:
    clock, venue, gate, _ = setup("2024-07-03 20:00")
    o, keep = order("c1"), order("c2", qty=5)
    venue.submit(o)
    venue.submit(keep)
    venue.cancel(o, clock())
    assert venue.sent == []  # the cancel did not reach the broker either
    assert gate.held() == [keep]
    [ev] = venue.pending("SPY")
    assert (ev.kind, ev.order_id, ev.event_id) == (VenueEventKind.CANCELLED, "c1", "c1:cancelled")
    closed = venue.match("SPY", SimpleNamespace(ts=clock(), i=0), lambda *_: None)
    assert closed == [o] and o.status is OrderStatus.CANCELLED
    assert venue.working["SPY"] == [keep]
    clock.set("2024-07-05 13:30")
    assert gate.due() == [keep]
    assert venue.sent == [("submit", ["c2"], t("2024-07-05 13:30"))]


def test_cancel_of_a_sent_order_reaches_the_venue() -> None:
    clock, venue, _, _ = setup("2024-07-05 14:00")
    o = order("live")
    venue.submit(o)
    venue.cancel(o, clock())
    assert [s[0] for s in venue.sent] == ["submit", "cancel"]
    assert venue.pending() == []


def test_one_leg_of_a_held_oco_cancelled_the_other_still_goes() -> None:
    clock, venue, gate, _ = setup("2024-07-06 15:00")
    stop, take = oco_pair()
    venue.submit_oco([stop, take])
    venue.cancel(stop, clock())
    assert gate.held() == [take]
    clock.set("2024-07-08 13:30")
    assert gate.due() == [take]
    assert venue.sent == [("oco", ["tp"], t("2024-07-08 13:30"))]


def test_replacing_a_held_order_goes_out_at_the_new_price() -> None:
    clock, venue, gate, _ = setup("2024-07-06 15:00")
    o = order("lim", type=OrderType.LIMIT, price=100.0)
    venue.submit(o)
    venue.replace(o, 101.5)
    assert venue.sent == []
    [ev] = venue.pending("SPY")
    assert ev.kind is VenueEventKind.REPLACED and ev.price == 101.5
    clock.set("2024-07-08 13:30")
    gate.due()
    assert venue.sent == [("submit", ["lim"], t("2024-07-08 13:30"))] and o.price == 101.5


def test_held_orders_go_first_in_fifo_order() -> None:
    clock, venue, gate, _ = setup("2024-07-06 15:00")
    for oid in ("h1", "h2", "h3"):
        venue.submit(order(oid))
    clock.set("2024-07-08 13:31")
    venue.submit(order("new"))  # the market is open: what waited goes first
    assert [s[1][0] for s in venue.sent] == ["h1", "h2", "h3", "new"]
    assert gate.held() == []


def test_an_order_settled_while_held_is_dropped_unsent() -> None:
    clock, venue, gate, log = setup("2024-07-06 15:00")
    o = order("gone")
    venue.submit(o)
    o.status = OrderStatus.REJECTED  # e.g. settled by reconciliation
    clock.set("2024-07-08 13:30")
    assert gate.due() == []
    assert venue.sent == [] and gate.held() == []
    assert log.named("order.hold_dropped")[0]["order_id"] == "gone"


def test_mixed_markets_release_at_their_own_opens() -> None:
    clock, venue, gate, _ = setup("2024-07-06 12:00")
    venue.submit(order("spy"))
    venue.submit(order("fx", "EURUSD", 1000))
    assert gate.next_wake() == t("2024-07-07 21:00")
    clock.set("2024-07-07 21:00")
    assert [o.id for o in gate.due()] == ["fx"]
    assert gate.next_wake() == t("2024-07-08 13:30")


# -- release_forever --------------------------------------------------------------------------------
class Done(Exception):
    pass


def run_release(clock: Clock, venue: Broker, gate: MarketGate, max_sleeps: int, **kw: Any) -> list[float]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        if venue.sent or len(slept) >= max_sleeps:
            raise Done
        slept.append(seconds)
        clock.ns += int(round(seconds * 1e9))

    with pytest.raises(Done):
        asyncio.run(release_forever(gate, sleep=sleep, now=clock, **kw))
    return slept


def test_release_forever_wakes_at_the_open() -> None:
    clock, venue, gate, _ = setup("2024-07-03 20:00")
    venue.submit(order("o1"))
    slept = run_release(clock, venue, gate, 10, max_sleep_s=1e9)
    assert slept == [(t("2024-07-05 13:30") - t("2024-07-03 20:00")) / 1e9]
    assert venue.sent == [("submit", ["o1"], t("2024-07-05 13:30"))]


def test_release_forever_sleeps_in_bounded_steps_and_sends_exactly_at_the_open() -> None:
    clock, venue, gate, _ = setup("2024-07-07 20:55")
    venue.submit(order("fx", "EURUSD", 1000))
    slept = run_release(clock, venue, gate, 100)
    assert slept == [60.0] * 5
    assert venue.sent == [("submit", ["fx"], t("2024-07-07 21:00"))]


def test_release_forever_idles_60_s_when_nothing_is_held() -> None:
    clock, venue, gate, _ = setup("2024-07-07 20:55")
    assert run_release(clock, venue, gate, 3) == [60.0, 60.0, 60.0]


def test_release_forever_is_cancellable() -> None:
    async def main() -> None:
        gate = MarketGate(INSTRUMENTS, now=Clock("2024-07-06 12:00"), log=Log())
        task = asyncio.create_task(release_forever(gate))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_release_forever_survives_a_failed_release() -> None:
    clock, venue, gate, log = setup("2024-07-06 12:00")
    venue.submit(order("o1"))
    calls = {"n": 0}
    real_due = gate.due

    def flaky(now_ns: int | None = None) -> list[Order]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real_due(now_ns)

    gate.due = flaky  # type: ignore[method-assign]
    slept = run_release(clock, venue, gate, 10, max_sleep_s=1e9)
    assert log.named("gate.release_failed") == [{"error": "boom"}]
    assert slept[1] == 5.0  # a pause after the failure, not a busy loop
    assert venue.sent == [("submit", ["o1"], t("2024-07-08 13:30") + 5 * 10**9)]


def test_a_send_that_raises_keeps_the_rest_held() -> None:
    clock, venue, gate, log = setup("2024-07-06 12:00")
    venue.submit(order("bad"))
    venue.submit(order("next"))

    def explode(o: Order) -> None:
        raise RuntimeError("venue down")

    gate._wrapped[id(venue)].submit = explode
    clock.set("2024-07-08 13:30")
    with pytest.raises(RuntimeError):
        gate.due()
    assert log.named("order.release_failed") == [{"order_ids": ["bad"]}]
    assert [o.id for o in gate.held()] == ["next"]


def test_an_order_sent_again_while_held_is_held_once() -> None:
    clock, venue, gate, log = setup("2024-07-06 12:00")
    o = order("again")
    venue.submit(o)
    venue._send_submit(o)  # e.g. the runtime resending an order the venue "never received"
    assert gate.held() == [o] and len(log.named("order.held")) == 1
    clock.set("2024-07-08 13:30")
    gate.due()
    assert venue.sent == [("submit", ["again"], t("2024-07-08 13:30"))]
