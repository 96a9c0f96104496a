"""The live runtime's recorded feed: order of delivery and pacing."""

from __future__ import annotations

import asyncio

import pandas as pd

from hflite.domain.instrument import SAMPLE_INSTRUMENTS
from hflite.engine.market import build_market
from hflite.engine.runtime import RecordedFeed


def _md(sample_store):
    frames = {s: sample_store.read_bars(s, "1d", "2024-03-01", "2024-03-12") for s in ("SPY", "BTC-USD")}
    return build_market(
        frames,
        {s: SAMPLE_INSTRUMENTS[s] for s in frames},
        ["SPY", "BTC-USD"],
        "1d",
        pd.Timestamp("2024-03-07", tz="UTC"),
        pd.Timestamp("2024-03-11", tz="UTC"),
    )


async def _collect(feed):
    return [ev async for ev in feed]


def test_bars_arrive_in_the_order_they_became_known_warm_up_first(sample_store):
    events = asyncio.run(_collect(RecordedFeed(_md(sample_store))))
    live = [e for e in events if e.live]
    assert all(not e.live for e in events[: len(events) - len(live)])  # history first
    assert [e.ts for e in live] == sorted(e.ts for e in live)
    assert [e.symbol for e in live[:3]] == ["SPY", "BTC-USD", "SPY"]  # Thu 21:00, Fri 00:00, Fri 21:00


def test_speed_scales_the_wait_between_bar_times(sample_store):
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    asyncio.run(_collect(RecordedFeed(_md(sample_store), speed=3600.0, sleep=fake_sleep)))
    # Thu 21:00 UTC SPY close -> Fri 00:00 BTC close: 3 hours at 3600x = 3 seconds
    assert waits[0] == 3.0
    assert all(w > 0 for w in waits)


def test_max_speed_never_waits(sample_store):
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    asyncio.run(_collect(RecordedFeed(_md(sample_store), speed=None, sleep=fake_sleep)))
    assert waits == []
