"""The risk scenario (configs/risk_scenario.toml): a leveraged trend portfolio run into the crash of
February-March 2020 on the embedded sample data, checked by hand once and pinned.

Each rule's action is recomputed here independently of the risk manager, from the run's equity
curve and the raw prices in the store:
- loss limits: for every New York day, Monday-week and month, the anchor is the equity at the last
  point before the period; the lock falls on the first point whose loss from it reaches 2% / 5% / 10%;
- the drawdown halt: the first point 15% below the running equity peak (2020-03-09, 15.01% below
  the 111,532.22 USD peak), held until the human resume scheduled for 2020-03-23;
- the market-wide breaker: SPY closes moving 7% or more from the previous close (five days in
  March 2020); the BTC breaker of 2019-10-25 (its daily bar closes 2019-10-26 00:00 UTC): a
  5.55-sigma move against the previous 60 returns.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from hflite.config import load_settings
from hflite.engine.core import run_backtest
from hflite.engine.run import make_engine, prepare
from hflite.engine.signals import compute_signals
from tests.conftest import REPO

pytestmark = pytest.mark.slow

LIMITS = {"daily": 2.0, "weekly": 5.0, "monthly": 10.0}


@pytest.fixture(scope="module")
def run(sample_store):
    settings = load_settings(
        REPO / "configs" / "risk_scenario.toml", {"data": {"dir": str(sample_store.root)}}
    )
    prep = prepare(settings, sample_store)
    engine = make_engine(prep, compute_signals(prep.strategy, prep.md))
    run_backtest(engine)
    return prep, engine


def _utc(ns: int) -> pd.Timestamp:
    return pd.Timestamp(int(ns), tz="UTC")


def expected_locks(timeline: np.ndarray, equity: np.ndarray, initial: float) -> set[tuple[str, pd.Timestamp]]:
    """Loss-limit locks computed with pandas from the equity curve alone."""
    local = pd.DatetimeIndex(pd.to_datetime(timeline, utc=True)).tz_convert("America/New_York")
    keys = {
        "daily": local.strftime("%Y-%m-%d"),
        "weekly": (local.normalize() - pd.to_timedelta(local.day_of_week, unit="D")).strftime("%Y-%m-%d"),
        "monthly": local.strftime("%Y-%m"),
    }
    out = set()
    for period, key in keys.items():
        key = np.asarray(key)
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        ends = np.append(starts[1:], len(key))
        for a, b in zip(starts, ends, strict=True):
            anchor = initial if a == 0 else equity[a - 1]
            loss = (1 - equity[a:b] / anchor) * 100
            hit = np.flatnonzero(loss >= LIMITS[period])
            if len(hit):
                out.add((f"{period}_loss", _utc(timeline[a + hit[0]])))
    return out


def test_loss_limits_lock_exactly_where_an_independent_computation_says(run):
    prep, engine = run
    got = {(e.kind, _utc(e.ts)) for e in engine.risk.events if e.kind.endswith("_loss")}
    want = expected_locks(prep.md.timeline, engine.equity, 100_000.0)
    assert got == want
    assert len(got) == 9
    assert ("daily_loss", pd.Timestamp("2019-08-01 20:00", tz="UTC")) in got
    assert ("weekly_loss", pd.Timestamp("2020-02-25 21:00", tz="UTC")) in got
    # each lock ends at the first point of the next period: the weekly lock of the week of
    # 2020-02-24 runs until the first point of Monday 2020-03-02 New York time (BTC's bar closing
    # 2020-03-02 00:00 UTC is still Sunday in New York)
    spans = {(s.kind, _utc(prep.md.timeline[s.start])): s for s in engine.risk.spans}
    weekly = spans[("weekly_loss", pd.Timestamp("2020-02-25 21:00", tz="UTC"))]
    assert _utc(prep.md.timeline[weekly.end]) == pd.Timestamp("2020-03-02 21:00", tz="UTC")


def test_a_loss_lock_rejects_the_entry_that_follows_it(run):
    _, engine = run
    (d,) = [d for d in engine.decisions if "weekly_loss" in d.verdict.rules]
    assert (d.verdict.symbol, _utc(d.verdict.ts)) == ("BTC-USD", pd.Timestamp("2019-08-05", tz="UTC"))
    assert d.verdict.reason == (
        "weekly loss limit: 5.58% below the period's starting equity 104,845 USD (limit 5%); "
        "no entries until the next period"
    )


def test_the_drawdown_cuts_sizes_then_halts_until_the_human_resume(run):
    prep, engine = run
    eq = engine.equity
    dd = (1 - eq / np.maximum.accumulate(eq)) * 100
    first = int(np.flatnonzero(dd >= 15.0)[0])
    assert engine.halted_at == first
    assert _utc(prep.md.timeline[first]) == pd.Timestamp("2020-03-09 20:00", tz="UTC")
    assert eq[first] == pytest.approx(94_786.428348, abs=1e-5)
    assert np.max(eq[: first + 1]) == pytest.approx(111_532.215289, abs=1e-5)
    (halt,) = [s for s in engine.risk.spans if s.kind == "halted"]
    assert _utc(prep.md.timeline[halt.end]) == pd.Timestamp("2020-03-23 20:00", tz="UTC")
    (resume,) = [e for e in engine.risk.events if e.kind == "resume"]
    assert resume.detail == "reviewed the crash; accept the loss and trade again"
    # from 10% below the peak every entry is sized down by half, and the check says by how much
    reduced = [d for d in engine.decisions if "drawdown_reduce" in d.verdict.rules]
    assert len(reduced) == 9
    for d in reduced:
        (check,) = [c for c in d.verdict.checks if c.name == "drawdown_reduce_pct"]
        assert 10.0 <= check.value < 15.0 and check.limit == 10.0


def test_circuit_breakers_trip_where_the_raw_prices_say(run, sample_store):
    _, engine = run
    trips = engine.risk.breaker_trips()
    market = sorted(_utc(e.ts).date().isoformat() for e in trips if e.kind == "market_breaker")
    spy = sample_store.read_bars("SPY", "1d", "2019-05-01", "2020-03-31").set_index("ts")["close"]
    moves = spy.pct_change().loc["2019-06-03":] * 100
    assert market == sorted(d.date().isoformat() for d in moves[moves.abs() >= 7.0].index)
    assert market == ["2020-03-09", "2020-03-12", "2020-03-13", "2020-03-16", "2020-03-24"]

    btc = sample_store.read_bars("BTC-USD", "1d", "2019-01-01", "2019-10-31").set_index("ts")["close"]
    r = np.log(btc).diff()
    day = pd.Timestamp("2019-10-25", tz="UTC")  # the store's label; the bar closes 2019-10-26 00:00 UTC
    j = btc.index.get_indexer([day])[0]
    z = abs(r.iloc[j]) / r.iloc[j - 60 : j].std()
    assert z == pytest.approx(5.5533, abs=1e-4)
    f = engine.risk.features("BTC-USD")
    k = int(np.searchsorted(f.bars.ts[: f.bars.n], pd.Timestamp("2019-10-26", tz="UTC").value))
    f.ensure(k)  # the block-wise columns, as a bar-by-bar reader sees them
    assert f.cols["z"][k] == pytest.approx(z, rel=1e-9)
    (d,) = [d for d in engine.decisions if "circuit_breaker" in d.verdict.rules]
    assert d.verdict.reason == (
        "circuit breaker on BTC-USD: a 5.6-sigma move (limit 5) at 2019-10-26 00:00; paused 5 bars"
    )
    assert Counter(e.kind for e in trips) == {"breaker": 74, "market_breaker": 5}


def test_the_scenario_is_pinned(run):
    _, engine = run
    assert engine.equity[-1] == pytest.approx(94_609.1312957052, rel=1e-9)
    assert len(engine.portfolio.trades) == 48
    assert Counter(d.verdict.status.value for d in engine.decisions) == {
        "approved": 43,
        "resized": 38,
        "rejected": 10,
    }
    assert Counter(r for d in engine.decisions for r in d.verdict.rules) == {
        "correlation": 31,
        "sector_cap": 9,
        "drawdown_reduce": 9,
        "protection": 5,
        "position_cap": 3,
        "weekly_loss": 1,
        "circuit_breaker": 1,
    }
