"""The live runtime's recorded feed: order of delivery and pacing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hflite.cli import app
from hflite.domain.instrument import SAMPLE_INSTRUMENTS
from hflite.engine.market import build_market
from hflite.engine.replay import replay
from hflite.engine.runtime import RecordedFeed
from tests.conftest import make_settings


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


@pytest.mark.parametrize("speed", [float("nan"), float("inf"), 0.0, -1.0])
def test_a_recorded_feed_refuses_a_speed_that_is_not_a_positive_finite_number(sample_store, speed):
    with pytest.raises(ValueError, match="speed"):
        RecordedFeed(_md(sample_store), speed=speed)


@pytest.mark.parametrize("speed", ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999"])
def test_replay_refuses_a_speed_that_is_not_a_finite_number_instead_of_hanging(tmp_path, speed):
    missing = tmp_path / "never-read.toml"  # parsing --speed comes first: no config is read

    result = CliRunner().invoke(app, ["replay", "--config", str(missing), "--speed", speed])

    assert result.exit_code == 2, result.output
    assert "--speed" in result.output and "'max'" in result.output
    assert "config file not found" not in result.output


def test_replay_suggests_max_for_an_infinite_speed(tmp_path):
    result = CliRunner().invoke(app, ["replay", "--speed", "inf"], env={"COLUMNS": "250"})

    assert result.exit_code == 2
    assert "is infinite: use 'max' for no waiting" in result.output


def _killed_replay(sample_store, kill_at: str):
    settings = make_settings(
        sample_store,
        run={"symbols": ["SPY", "EURUSD"], "start": "2019-01-02", "end": "2019-12-31"},
        strategy={"name": "trend", "fast": 5, "slow": 20},
        risk={"events": [{"at": kill_at, "action": "kill", "reason": "drill"}]},
    )
    return asyncio.run(replay(settings, sample_store, journal_path=Path("-")))


def test_a_killed_replay_says_when_it_was_killed_and_flags_no_gap_after_it(sample_store):
    # the sample's EURUSD misses 2019-05-22: after a kill in March that date was never replayed
    result = _killed_replay(sample_store, "2019-03-01")

    assert result.end < pd.Timestamp("2019-03-10", tz="UTC")
    assert result.warnings[0].startswith("risk: killed at 2019-03-01")
    assert "(drill)" in result.warnings[0] and f"stopped flat at {result.end}" in result.warnings[0]
    assert not [w for w in result.warnings if "2019-05-22" in w or "missing bars" in w]


def test_a_killed_replay_still_flags_a_gap_before_the_kill(sample_store):
    result = _killed_replay(sample_store, "2019-07-01")

    gaps = [w for w in result.warnings if "missing bars" in w]
    assert gaps == [
        "EURUSD: 1 missing bars vs the 24/5 calendar (2019-05-22); the symbol is skipped on those dates"
    ]


def test_a_killed_replay_compares_with_its_benchmarks_over_the_same_window(sample_store):
    result = _killed_replay(sample_store, "2019-03-01")

    curve = result.benchmarks["SPY buy & hold"]
    assert curve.index[0] >= result.equity.index[0] - pd.Timedelta(days=1)
    assert curve.index[-1] <= result.end
    assert curve.index[-1] >= result.end - pd.Timedelta(days=4)
