"""The live feed against local vendor servers (Binance klines via ccxt, Polygon aggregates), on
simulated time: bars are delivered once each after their close, never while forming; outages delay
only their symbol; the schedule follows each instrument's calendar."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest

from hflite.data.providers.polygon import PolygonProvider
from hflite.data.store import Store
from hflite.domain.instrument import SAMPLE_INSTRUMENTS
from hflite.engine.feed import LiveFeed, next_known_at
from hflite.engine.market import available_at
from hflite.engine.runtime import BarEvent
from tests.conftest import make_settings
from tests.providers import case_ccxt
from tests.providers.contract import fast_options
from tests.providers.server import FixtureServer, Route, fixture

KEY = "test-secret-key-123"
HOUR_MS = 3_600_000
KLINES = json.loads(fixture("ccxt", "klines_btcusdt_1h.json"))  # BTCUSDT 2023-12-20 00:00..04:00
AAPL = SAMPLE_INSTRUMENTS["AAPL"]
AAPL_DAYS = json.loads(fixture("polygon", "aggs_aapl_day.json"))["results"]  # 2024-01-02..08


def t(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def ns(text: str) -> int:
    return int(t(text).value)


class Clock:
    """Simulated time: ``sleep`` moves it on and runs the hooks whose time has come."""

    def __init__(self, start: str) -> None:
        self.t = t(start)
        self.hooks: list[tuple[pd.Timestamp, Callable[[], None]]] = []

    def now(self) -> pd.Timestamp:
        return self.t

    def at(self, when: str, fn: Callable[[], None]) -> None:
        self.hooks.append((t(when), fn))
        self.hooks.sort(key=lambda h: h[0])

    async def sleep(self, seconds: float) -> None:
        self.t += pd.Timedelta(seconds=seconds)
        while self.hooks and self.hooks[0][0] <= self.t:
            self.hooks.pop(0)[1]()
        await asyncio.sleep(0)


class Log:
    """Records the feed's structured log events."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        return lambda event, **kw: self.records.append((level, event, kw))

    def of(self, event: str) -> list[dict[str, Any]]:
        return [kw for _, e, kw in self.records if e == event]


@dataclass(eq=False)
class Klines(Route):
    """Binance ``/api/v3/klines`` as the exchange answers at the clock's time: the rows from
    ``startTime`` to ``endTime`` that have opened, the current one still forming (close = open);
    503 while ``down`` is set; each row twice when ``twice`` is set."""

    clock: Clock | None = None
    rows: list[list[Any]] = field(default_factory=lambda: [list(r) for r in KLINES])
    down: bool = False
    twice: bool = False
    _query: dict[str, list[str]] = field(default_factory=dict)

    def matches(self, path: str, query: dict[str, list[str]]) -> bool:
        if not super().matches(path, query):
            return False
        self._query = query
        self.status = 503 if self.down else 200
        return True

    def payload(self) -> bytes:
        if self.down:
            return b"<html><body>503 Service Temporarily Unavailable</body></html>"
        assert self.clock is not None
        now_ms = int(self.clock.t.value // 10**6)
        lo = int(self._query.get("startTime", ["0"])[0])
        hi = int(self._query.get("endTime", [str(2**62)])[0])
        out = []
        for row in self.rows:
            if lo <= row[0] <= min(hi, now_ms):
                if row[0] + HOUR_MS > now_ms:  # still forming: only its first trades so far
                    row = [row[0], row[1], row[2], row[3], row[1], "1.00000000", *row[6:]]
                out += [row, row] if self.twice else [row]
        return json.dumps(out).encode()


@dataclass(eq=False)
class Aggs(Route):
    """Polygon daily aggregates as the vendor answers at the clock's time: each session that has
    started, today's still forming (close = open) until the NYSE close; the clock of each request kept."""

    clock: Clock | None = None
    results: list[dict[str, Any]] = field(default_factory=lambda: [dict(r) for r in AAPL_DAYS])
    asked_at: list[pd.Timestamp] = field(default_factory=list)

    def payload(self) -> bytes:
        assert self.clock is not None
        now = self.clock.t
        self.asked_at.append(now)
        out = []
        for r in self.results:
            opened = pd.Timestamp(r["t"], unit="ms", tz="UTC")
            if opened <= now:
                day = opened.tz_convert("America/New_York").tz_localize(None).normalize()
                closes = pd.Timestamp(
                    available_at(AAPL, "1d", pd.DatetimeIndex([day], tz="UTC"))[0][0], tz="UTC"
                )
                out.append({**r, "c": r["o"], "v": 1000.0} if now < closes else r)
        body = {"ticker": "AAPL", "status": "OK", "adjusted": True, "resultsCount": len(out), "results": out}
        return json.dumps(body).encode()


@pytest.fixture
def server():
    with FixtureServer([]) as srv:
        yield srv


def settings(store: Store) -> Any:
    return make_settings(
        store,
        data={
            "dir": str(store.root),
            "update": {
                "symbols": [],
                "providers": {"equity": "polygon", "etf": "polygon", "crypto": "ccxt", "fx": "oanda"},
                "intraday": [
                    {"symbol": s, "freq": "1h", "provider": "ccxt", "exchange": "binance"}
                    for s in ("BTCUSDT", "ETHUSDT")
                ],
                "history_start": "2023-12-01",
            },
        },
    )


def factory(url: str | Callable[[], str]) -> Callable[..., Any]:
    """Providers pointed at the local server (``url`` may change between polls)."""

    def make(name: str, **_options: Any) -> Any:
        where = url() if callable(url) else url
        if name == "ccxt":
            return case_ccxt.make(where, None)
        if name == "polygon":
            return PolygonProvider(key=KEY, url=where, options=fast_options())
        raise AssertionError(f"unexpected provider {name}")

    return make


def collect(feed: LiveFeed, clock: Clock, until: str | None = None) -> list[tuple[pd.Timestamp, BarEvent]]:
    """Run the feed on the clock (until ``until``, or until it ends); each event with its time."""
    if until is not None:
        clock.at(until, feed.stop)

    async def main() -> list[tuple[pd.Timestamp, BarEvent]]:
        return [(clock.t, ev) async for ev in feed]

    return asyncio.run(main())


def hourly_feed(tmp_path, server, clock, symbols, **kw) -> tuple[LiveFeed, Store, Log]:
    store, log = Store(tmp_path), Log()
    feed = LiveFeed(
        settings(store),
        store,
        symbols,
        "1h",
        since={s: ns("2023-12-20 00:00") for s in symbols},
        now=clock.now,
        sleep=clock.sleep,
        log=log,
        factory=factory(server.url),
        **kw,
    )
    return feed, store, log


# -- the schedule: each instrument's calendar ------------------------------------------------------
def test_nyse_daily_bars_are_due_at_each_close_skipping_holidays_and_weekends_early_closes_honoured():
    aapl = SAMPLE_INSTRUMENTS["AAPL"]
    # 2024-07-03 closes early at 13:00 New York; 07-04 is a holiday; 07-06/07 a weekend
    assert next_known_at(aapl, "1d", ns("2024-07-02 20:00")) == ns("2024-07-03 17:00")
    assert next_known_at(aapl, "1d", ns("2024-07-03 17:00")) == ns("2024-07-05 20:00")
    assert next_known_at(aapl, "1d", ns("2024-07-05 20:00")) == ns("2024-07-08 20:00")
    assert next_known_at(aapl, "1d", ns("2024-07-06 12:00")) == ns("2024-07-08 20:00")  # Saturday


def test_nyse_hourly_bars_stop_at_an_early_close_and_resume_at_the_next_open():
    aapl = SAMPLE_INSTRUMENTS["AAPL"]
    # the 12:30-13:30 New York bar still meets the 13:00 early close; the 13:00 one does not
    assert next_known_at(aapl, "1h", ns("2024-07-03 16:30")) == ns("2024-07-03 17:30")
    assert next_known_at(aapl, "1h", ns("2024-07-03 17:00")) == ns("2024-07-05 14:00")
    assert next_known_at(aapl, "1m", ns("2024-07-05 20:00")) == ns("2024-07-08 13:31")


def test_fx_has_nothing_due_on_a_saturday_and_crypto_is_due_every_day():
    eur, btc = SAMPLE_INSTRUMENTS["EURUSD"], SAMPLE_INSTRUMENTS["BTC-USD"]
    # the FX day ends 17:00 New York; Friday's bar is the last of the week
    assert next_known_at(eur, "1d", ns("2024-07-05 21:00")) == ns("2024-07-08 21:00")
    assert next_known_at(eur, "1d", ns("2024-07-06 12:00")) == ns("2024-07-08 21:00")
    assert next_known_at(eur, "1h", ns("2024-07-05 21:00")) == ns("2024-07-07 22:00")  # Sunday 17:00 NY
    assert next_known_at(btc, "1d", ns("2024-07-05 00:00")) == ns("2024-07-06 00:00")
    assert next_known_at(btc, "1d", ns("2024-07-06 00:00")) == ns("2024-07-07 00:00")  # a Saturday bar
    assert next_known_at(btc, "1h", ns("2024-07-06 12:00")) == ns("2024-07-06 13:00")


def test_the_nyse_feed_polls_after_the_early_close_and_not_on_the_holiday_or_the_weekend(tmp_path, server):
    clock = Clock("2024-07-03 12:00")
    days = ["2024-07-01", "2024-07-02", "2024-07-03", "2024-07-05", "2024-07-08"]
    aggs = Aggs(
        r"/v2/aggs/ticker/AAPL/range/1/day/.*",
        clock=clock,
        results=[  # session dates at 00:00 New York, as Polygon stamps daily aggregates
            {
                "t": int((t(d) + pd.Timedelta(hours=4)).value // 10**6),
                "o": 220.0 + i,
                "h": 222.0 + i,
                "l": 219.0 + i,
                "c": 221.0 + i,
                "v": 4e7,
            }
            for i, d in enumerate(days)
        ],
    )
    server.routes = [aggs]
    store, log = Store(tmp_path), Log()
    feed = LiveFeed(
        settings(store),
        store,
        ["AAPL"],
        "1d",
        since={"AAPL": ns("2024-07-02 20:00")},
        now=clock.now,
        sleep=clock.sleep,
        log=log,
        factory=factory(server.url),
    )
    got = collect(feed, clock, until="2024-07-09 12:00")
    assert [(when, ev.ts) for when, ev in got] == [
        (t("2024-07-03 17:00:05"), ns("2024-07-03 17:00")),  # early close: 13:00 New York
        (t("2024-07-05 20:00:05"), ns("2024-07-05 20:00")),
        (t("2024-07-08 20:00:05"), ns("2024-07-08 20:00")),
    ]
    assert aggs.asked_at == [when for when, _ in got]  # no request on the 4th, the 6th or the 7th
    assert [ev.close for _, ev in got] == [223.0, 224.0, 225.0]


# -- delivery --------------------------------------------------------------------------------------
def test_hourly_bars_are_delivered_once_each_after_their_close_never_while_forming(tmp_path, server):
    clock = Clock("2023-12-20 00:30")
    server.routes = [Klines(r"/api/v3/klines", clock=clock)]
    feed, store, log = hourly_feed(tmp_path, server, clock, ["BTCUSDT"])
    got = collect(feed, clock, until="2023-12-20 05:40")
    hours = [ns(f"2023-12-20 0{h}:00") for h in range(1, 6)]
    assert [ev.ts for _, ev in got] == hours
    assert all(when == pd.Timestamp(ev.ts, unit="ns", tz="UTC") + pd.Timedelta(seconds=5) for when, ev in got)
    assert all(ev.live and ev.symbol == "BTCUSDT" for _, ev in got)
    # the final values, not the forming bar the exchange answered an hour earlier
    assert [ev.close for _, ev in got] == [float(r[4]) for r in KLINES]
    assert [ev.volume for _, ev in got] == [float(r[5]) for r in KLINES]
    forming = log.of("feed.forming")
    assert [f["bar_known_at"] for f in forming] == [t(f"2023-12-20 0{h}:00").isoformat() for h in range(2, 6)]
    # every bar went through the update path into the store, with the final values
    stored = store.read_bars("BTCUSDT", "1h")
    assert list(stored.close) == [float(r[4]) for r in KLINES]
    status = feed.status["BTCUSDT"]
    assert (status.last_ts, status.next_due, status.state, status.failures) == (
        ns("2023-12-20 05:00"),
        ns("2023-12-20 06:00:05"),
        "ok",
        0,
    )


def test_a_daily_bar_still_forming_is_not_delivered_and_once_ends(tmp_path, server):
    clock = Clock("2024-01-03 15:00")  # the 3rd's session is open
    server.routes = [Aggs(r"/v2/aggs/ticker/AAPL/range/1/day/.*", clock=clock)]
    store, log = Store(tmp_path), Log()

    def feed(since: int) -> LiveFeed:
        return LiveFeed(
            settings(store),
            store,
            ["AAPL"],
            "1d",
            since={"AAPL": since},
            once=True,
            now=clock.now,
            sleep=clock.sleep,
            log=log,
            factory=factory(server.url),
        )

    first = collect(feed(ns("2023-12-29 21:00")), clock)
    assert [ev.ts for _, ev in first] == [ns("2024-01-02 21:00")]
    assert log.of("feed.forming")[0]["bar_known_at"] == t("2024-01-03 21:00").isoformat()
    clock.t = t("2024-01-03 21:10")
    second = collect(feed(first[-1][1].ts), clock)
    assert [(ev.ts, ev.close) for _, ev in second] == [(ns("2024-01-03 21:00"), AAPL_DAYS[1]["c"])]


def test_once_polls_only_the_symbols_that_are_due(tmp_path, server):
    clock = Clock("2023-12-20 02:10")
    klines = Klines(r"/api/v3/klines", clock=clock)
    server.routes = [klines]
    store, log = Store(tmp_path), Log()
    feed = LiveFeed(
        settings(store),
        store,
        ["BTCUSDT", "ETHUSDT"],
        "1h",
        once=True,
        since={"BTCUSDT": ns("2023-12-20 01:00"), "ETHUSDT": ns("2023-12-20 03:00")},
        now=clock.now,
        sleep=clock.sleep,
        log=log,
        factory=factory(server.url),
    )
    got = collect(feed, clock)
    assert [(ev.symbol, ev.ts) for _, ev in got] == [("BTCUSDT", ns("2023-12-20 02:00"))]
    assert {q["symbol"][0] for _, q in server.requests} == {"BTCUSDT"}


# -- outages, late and duplicate bars -------------------------------------------------------------
def test_a_503_delays_only_its_symbol_and_the_bars_it_missed_arrive_as_history(tmp_path, server):
    clock = Clock("2023-12-20 00:30")
    btc = Klines(r"/api/v3/klines", query={"symbol": "BTCUSDT"}, clock=clock)
    eth = Klines(r"/api/v3/klines", query={"symbol": "ETHUSDT"}, clock=clock, down=True)
    server.routes = [btc, eth]
    feed, _, log = hourly_feed(tmp_path, server, clock, ["BTCUSDT", "ETHUSDT"])
    seen: dict[str, str] = {}
    clock.at("2023-12-20 02:30", lambda: seen.update(state=feed.status["ETHUSDT"].state))
    clock.at("2023-12-20 03:30", lambda: setattr(eth, "down", False))
    got = collect(feed, clock, until="2023-12-20 05:40")

    btc_events = [(when, ev) for when, ev in got if ev.symbol == "BTCUSDT"]
    assert [ev.ts for _, ev in btc_events] == [ns(f"2023-12-20 0{h}:00") for h in range(1, 6)]
    assert all(ev.live for _, ev in btc_events)  # the other symbol kept flowing, on time
    delayed = log.of("feed.delayed")
    assert delayed and {d["symbol"] for d in delayed} == {"ETHUSDT"}
    assert "503 Service Unavailable" in delayed[0]["error"] and "\n" not in delayed[0]["error"]
    assert t(delayed[0]["retry_at"]) == t("2023-12-20 01:00:05") + pd.Timedelta(seconds=30)
    assert seen["state"].startswith("delayed: ccxt: ") and "since 2023-12-20 01:00:05 UTC" in seen["state"]
    # after the outage: each bar the exchange has, once, none invented; the stale ones as history
    eth_events = [ev for _, ev in got if ev.symbol == "ETHUSDT"]
    assert [ev.ts for ev in eth_events] == [ns(f"2023-12-20 0{h}:00") for h in range(1, 6)]
    assert [ev.live for ev in eth_events] == [False, False, True, True, True]
    assert [f["bar_known_at"] for f in log.of("feed.late")] == [
        t("2023-12-20 01:00").isoformat(),
        t("2023-12-20 02:00").isoformat(),
    ]
    live = [ev.ts for _, ev in got if ev.live]
    assert live == sorted(live)  # non-decreasing across symbols; only history comes out of order
    assert log.of("feed.resumed") and feed.status["ETHUSDT"].state == "ok"
    assert feed.status["ETHUSDT"].failures == 0


def test_a_refused_connection_backs_off_and_the_bar_comes_once_it_is_back(tmp_path, server):
    clock = Clock("2024-01-03 20:00")
    server.routes = [Aggs(r"/v2/aggs/ticker/AAPL/range/1/day/.*", clock=clock)]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    store, log = Store(tmp_path), Log()
    feed = LiveFeed(
        settings(store),
        store,
        ["AAPL"],
        "1d",
        since={"AAPL": ns("2024-01-02 21:00")},
        now=clock.now,
        sleep=clock.sleep,
        log=log,
        factory=factory(lambda: dead if clock.t < t("2024-01-03 21:20") else server.url),
    )
    got = collect(feed, clock, until="2024-01-03 23:00")
    delayed = log.of("feed.delayed")
    assert "connection failed" in delayed[0]["error"]
    waits = [(t(d["retry_at"]) - t("2024-01-03 21:00:05")).total_seconds() for d in delayed[:5]]
    assert waits == [30, 30 + 60, 30 + 60 + 120, 30 + 60 + 120 + 240, 30 + 60 + 120 + 240 + 300]
    assert [d["failures"] for d in delayed] == list(range(1, len(delayed) + 1))
    assert [(ev.ts, ev.close, ev.live) for _, ev in got] == [
        (ns("2024-01-03 21:00"), AAPL_DAYS[1]["c"], True)
    ]
    assert got[0][0] >= t("2024-01-03 21:20")
    assert feed.status["AAPL"].state == "ok" and feed.status["AAPL"].failures == 0


def test_a_bar_sent_twice_or_revised_after_delivery_is_delivered_once(tmp_path, server):
    clock = Clock("2023-12-20 00:30")
    klines = Klines(r"/api/v3/klines", clock=clock, twice=True)
    server.routes = [klines]
    feed, _, log = hourly_feed(tmp_path, server, clock, ["BTCUSDT"])

    def revise_first_bar() -> None:
        klines.rows[0] = [*klines.rows[0][:4], "42400.00000000", *klines.rows[0][5:]]

    clock.at("2023-12-20 01:30", revise_first_bar)
    got = collect(feed, clock, until="2023-12-20 03:40")
    assert [ev.ts for _, ev in got] == [ns(f"2023-12-20 0{h}:00") for h in range(1, 4)]
    assert got[0][1].close == float(KLINES[0][4])  # the value delivered stays the first one
    notes = [d["note"] for d in log.of("feed.duplicate")]
    assert any("exact copies" in n for n in notes)
    assert sum("revised" in n for n in notes) == 1  # logged once, not at every poll


def test_by_default_the_feed_starts_after_the_stores_last_bar_known_by_now(tmp_path, server):
    clock = Clock("2024-01-03 15:00")
    server.routes = [Aggs(r"/v2/aggs/ticker/AAPL/range/1/day/.*", clock=clock)]
    store, log = Store(tmp_path), Log()
    common = {"now": clock.now, "sleep": clock.sleep, "log": log, "factory": factory(server.url)}
    since = {"AAPL": ns("2023-12-29 21:00")}
    collect(LiveFeed(settings(store), store, ["AAPL"], "1d", since=since, once=True, **common), clock)
    assert store.read_bars("AAPL").ts.iloc[-1] == t("2024-01-03")  # the update path stored the partial bar
    feed = LiveFeed(settings(store), store, ["AAPL"], "1d", **common)
    status = feed.status["AAPL"]
    assert (status.last_ts, status.next_due) == (ns("2024-01-02 21:00"), ns("2024-01-03 21:00:05"))
    assert status.as_dict()["last_bar"] == "2024-01-02T21:00:00+00:00"
    assert status.summary() == "AAPL last 2024-01-02 21:00 next 2024-01-03 21:00:05 ok"


def test_batches_hand_over_each_polls_bars_together(tmp_path, server):
    clock = Clock("2023-12-20 00:30")
    server.routes = [Klines(r"/api/v3/klines", clock=clock)]
    feed, _, _ = hourly_feed(tmp_path, server, clock, ["BTCUSDT", "ETHUSDT"])
    clock.at("2023-12-20 02:30", feed.stop)

    async def main() -> list[list[tuple[str, int]]]:
        return [[(ev.symbol, ev.ts) for ev in batch] async for batch in feed.batches()]

    hour = [ns("2023-12-20 01:00"), ns("2023-12-20 02:00")]
    assert asyncio.run(main()) == [[("BTCUSDT", h), ("ETHUSDT", h)] for h in hour]
