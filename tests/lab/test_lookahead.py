"""Look-ahead and recursive analysis: leaky toy strategies are caught at the right bar and output, the
built-in strategies pass on the sample data, and the warm-up numbers are checked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from hflite.domain.instrument import instrument_for
from hflite.domain.signal import Exits
from hflite.engine.market import MarketData, market_from_arrays
from hflite.engine.run import prepare
from hflite.lab.lookahead import (
    LookaheadConfig,
    StartupDiff,
    lookahead_analysis,
    market_view,
    needed_startups,
    rel_diff,
    sample_bars,
)
from hflite.strategy import indicators as ta
from hflite.strategy.base import BarArrays, SignalSet
from hflite.tables import build_table
from tests.conftest import make_settings, synthetic_bars


def _market(
    n: int = 300,
    symbols: tuple[str, ...] = ("SPY",),
    vol: float = 0.002,
    live_from: int = 0,
    jump_at: int = 0,
) -> MarketData:
    arrays = {}
    for i, sym in enumerate(symbols):
        df = synthetic_bars(n, seed=11 + i, vol=vol)
        if jump_at:  # every price 30% higher from this bar on
            df.loc[jump_at:, ["open", "high", "low", "close"]] *= 1.3
        arrays[sym] = {
            "ts": df["ts"].astype("int64").to_numpy(),
            **{c: df[c].to_numpy() for c in df if c != "ts"},
        }
    start_ns = int(arrays[symbols[0]]["ts"][live_from])
    instruments = {s: instrument_for(s) for s in symbols}
    return market_from_arrays(arrays, instruments, [symbols[0]], start_ns=start_ns)


class _Toy:
    """A strategy whose target and values are given by functions of the bars."""

    name = "toy"

    def __init__(self, target, values=None, warmup: int = 1) -> None:
        self._target, self._values, self._warmup = target, values or {}, warmup

    def warmup(self) -> int:
        return self._warmup

    def signals(self, bars: BarArrays) -> SignalSet:
        return SignalSet(
            target=self._target(bars),
            atr=ta.atr(bars.high, bars.low, bars.close, 14),
            exits=Exits(),
            values={k: f(bars) for k, f in self._values.items()},
        )


# ------------------------------------------------------------------------------------- sampling


def test_sampling_takes_evenly_spaced_live_bars_and_every_signal_bar_within_the_cap():
    target = np.full(1000, np.nan)
    target[[5, 300, 301, 777]] = 1.0  # bar 5 is warm-up history: not checked
    ks = sample_bars(target, first_live=100, checks=10, max_checks=200)
    assert ks[0] == 100 and ks[-1] == 999
    assert {300, 301, 777} <= set(ks.tolist()) and 5 not in ks
    assert len(ks) == 10 + 2  # bar 300 is one of the evenly spaced ones (100, 200, 300, ..., 999)
    capped = sample_bars(np.ones(1000), first_live=0, checks=10, max_checks=50)
    assert len(capped) == 50 and capped[0] == 0 and capped[-1] == 999


# ------------------------------------------------------------------------------------ leaky toys


def test_a_target_that_reads_the_next_close_is_caught_at_the_bar_before_the_jump():
    md = _market(300, jump_at=150)  # a jump from bar 149 to bar 150: the leaky rule fires at bar 149 only

    def leaky(bars: BarArrays) -> np.ndarray:
        nxt = np.roll(bars.close, -1)  # close[k + 1]: known only after bar k
        return np.where(nxt > bars.close * 1.2, 1.0, np.nan)

    res = lookahead_analysis(_Toy(leaky), md)
    assert res.leaks
    assert [(m.symbol, m.bar, m.output, m.full) for m in res.mismatches] == [("SPY", 149, "target", 1.0)]
    (m,) = res.mismatches
    assert math.isnan(m.truncated)
    assert m.ts == pd.Timestamp(int(md.bars["SPY"].ts[149]), unit="ns", tz="UTC")
    assert "LOOK-AHEAD" in res.verdict() and "149" in res.rows()[0]["first mismatch"]


def test_a_centred_moving_average_is_caught_at_every_checked_bar_it_is_defined_on():
    md = _market(300)
    centred = {"centred": lambda b: pd.Series(b.close).rolling(5, center=True).mean().to_numpy()}
    res = lookahead_analysis(_Toy(lambda b: np.full(len(b), np.nan), centred), md, LookaheadConfig(checks=40))
    checked = set(sample_bars(np.full(300, np.nan), 0, 40, 200).tolist())
    assert res.checks == {"SPY": len(checked)}
    # defined on bars 2..297 in the full run, never at the last bar of a truncated run
    assert {m.bar for m in res.mismatches} == {k for k in checked if 2 <= k <= 297}
    assert {m.output for m in res.mismatches} == {"value:centred"}
    assert all(math.isnan(m.truncated) for m in res.mismatches)


def test_a_strategy_normalising_by_the_whole_sample_is_caught():
    md = _market(200)
    zscore = {"z": lambda b: (b.close - b.close.mean()) / max(b.close.std(), 1e-9)}
    res = lookahead_analysis(_Toy(lambda b: np.full(len(b), np.nan), zscore), md, LookaheadConfig(checks=20))
    # every truncated run but the last (the full history itself) has another mean
    assert len(res.mismatches) == res.total_checks - 1
    assert 199 not in {m.bar for m in res.mismatches}


def test_a_strategy_that_raises_on_a_shorter_history_is_reported():
    md = _market(120)

    def needs_everything(bars: BarArrays) -> np.ndarray:
        if len(bars) < 120:
            raise ValueError("wants the whole file")
        return np.full(len(bars), np.nan)

    res = lookahead_analysis(_Toy(needs_everything), md, LookaheadConfig(checks=10))
    assert res.leaks and len(res.errors) == 9
    assert "wants the whole file" in res.errors[0]
    assert res.verdict().startswith("NOT VERIFIED: the strategy raised on 9 of 10")


# --------------------------------------------------------------------------- cross-sectional hook


class _PeerReader:
    """Reads the peer symbol through an ``attach_market`` hook: as of each bar's time (legit), or the
    peer's whole close history (a leak only a consistently truncated market shows)."""

    name = "peer"

    def __init__(self, leak: bool) -> None:
        self.leak = leak
        self.md: MarketData | None = None
        self.attached = 0

    def warmup(self) -> int:
        return 1

    def attach_market(self, md: MarketData) -> None:
        self.md = md
        self.attached += 1

    def signals(self, bars: BarArrays) -> SignalSet:
        assert self.md is not None and bars.ts is not None
        peer = self.md.bars["QQQ"]
        if self.leak:
            value = np.full(len(bars), peer.close[: peer.n].mean())
        else:
            pos = np.searchsorted(peer.ts[: peer.n], bars.ts, side="right") - 1
            value = np.where(pos >= 0, peer.close[np.maximum(pos, 0)], np.nan)
        return SignalSet(np.full(len(bars), np.nan), np.full(len(bars), 1.0), Exits(), {"peer": value})


def test_a_cross_sectional_strategy_sees_the_market_cut_at_the_checked_bar():
    md = _market(150, symbols=("SPY", "QQQ"))
    honest, leaky = _PeerReader(leak=False), _PeerReader(leak=True)
    cfg = LookaheadConfig(checks=15, startups=(20,))
    ok = lookahead_analysis(honest, md, cfg)
    bad = lookahead_analysis(leaky, md, cfg)
    assert ok.cross_sectional and not ok.leaks
    assert honest.md is md  # the full market is attached again at the end
    assert bad.leaks and {m.output for m in bad.mismatches} == {"value:peer"}
    assert len(bad.mismatches) == bad.total_checks - 1  # all but the last bar (the full history)
    # recursive: the peer's history is cut at the same start, so an as-of lookup does not move at all,
    # while a mean over the peer's whole history does
    assert {(r.indicator, r.rel_diff) for r in ok.recursive if r.indicator == "peer"} == {("peer", 0.0)}
    assert all(r.rel_diff > 0 for r in bad.recursive if r.indicator == "peer")
    assert honest.attached > 1 + ok.total_checks  # the full market, each check's view, each startup's


def test_a_market_view_ends_at_the_given_time():
    md = _market(50, symbols=("SPY", "QQQ"))
    t = int(md.timeline[19])
    view = market_view(md, t)
    assert len(view.timeline) == 20 and view.timeline[-1] == t
    assert view.bars["QQQ"].n == 20 and len(view.bars["QQQ"].close) == 20
    assert len(view.close_tl["QQQ"]) == 20 and view.slots.shape == (20, 1)
    assert len(md.timeline) == 50  # the original is untouched


def test_a_market_view_can_also_start_later_with_indices_renumbered():
    md = _market(50, symbols=("SPY", "QQQ"))
    view = market_view(md, int(md.timeline[29]), since_ns=int(md.timeline[10]))
    assert view.timeline.tolist() == md.timeline[10:30].tolist()
    spy = view.bars["SPY"]
    assert spy.n == 20 and spy.ts[0] == md.timeline[10]
    assert spy.tl.tolist() == list(range(20)) and view.slots[:, 0].tolist() == list(range(20))
    assert view.bars["QQQ"].close.tolist() == md.bars["QQQ"].close[10:30].tolist()
    assert view.group(0) == [("SPY", 0)]


# --------------------------------------------------------------------------------------- recursive


def test_relative_difference_by_hand():
    assert rel_diff(np.array([1.0, 2.02]), np.array([1.0, 2.0])) == pytest.approx(0.01)
    assert rel_diff(np.array([np.nan, 2.0]), np.array([1.0, 2.0])) == math.inf  # not started yet
    assert rel_diff(np.array([np.nan, 3.0]), np.array([np.nan, 3.0])) == 0.0
    assert rel_diff(np.array([0.0]), np.array([0.0])) == 0.0


def test_the_needed_startup_is_the_first_from_which_every_longer_one_converges():
    diffs = {0: math.inf, 50: 0.01, 100: 0.0005, 200: 0.002, 300: 0.0001}
    rows = [StartupDiff("X", "ema", s, 0, d) for s, d in diffs.items()]
    rows += [StartupDiff("Y", "ema", 300, 0, 0.0), StartupDiff("Y", "sma", 0, 0, math.inf)]
    rows += [StartupDiff("Y", "sma", 300, 0, 0.0)]
    assert needed_startups(rows, 0.001) == {"ema": 300, "sma": 300}
    assert needed_startups([StartupDiff("X", "slow", 500, 0, 0.5)], 0.001) == {"slow": None}


def test_an_ema_needs_the_history_its_decay_implies():
    """EMA(n) forgets its seed at (1 - 2/(n+1)) per bar: for n = 10 the seed's weight falls under 1e-4
    after 50 bars (0.818^50 = 4.4e-5), so 50 bars of history are within 0.1%; a 10-bar SMA is exact as
    soon as it has its 9 earlier bars."""
    md = _market(400, vol=0.01)
    values = {"ema": lambda b: ta.ema(b.close, 10), "sma": lambda b: ta.sma(b.close, 10)}
    toy = _Toy(lambda b: np.full(len(b), np.nan), values, warmup=10)
    res = lookahead_analysis(toy, md, LookaheadConfig(checks=5, startups=(0, 5, 20, 50, 100), window=1))
    need = res.needed_startup()
    assert need["sma"] == 10  # the declared warm-up, tried as well: exact from 9 earlier bars on
    assert need["ema"] in (20, 50)
    by = {(r.indicator, r.startup): r.rel_diff for r in res.recursive}
    assert by[("sma", 5)] == math.inf and by[("sma", 10)] < 1e-12  # TA-Lib's running sum: float noise
    assert by[("ema", 100)] < by[("ema", 20)] < 0.05
    assert not res.leaks


# ------------------------------------------------------------------------------ the sample store


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("trend", {"fast": 20, "slow": 100, "ma": "ema"}),
        ("breakout", {}),
        ("mean_reversion", {"mode": "rsi"}),
        ("mean_reversion", {"mode": "bollinger", "allow_short": True}),
    ],
)
def test_the_builtin_strategies_do_not_look_ahead_on_the_sample(sample_store, name, params):
    settings = make_settings(
        sample_store,
        run={"symbols": ["SPY", "BTC-USD", "EURUSD"], "start": "2019-01-02", "end": "2022-12-30"},
        strategy={"name": name, **params},
    )
    prep = prepare(settings, sample_store)
    res = lookahead_analysis(prep.strategy, prep.md)
    assert res.mismatches == () and res.errors == ()
    assert set(res.checks) == {"SPY", "BTC-USD", "EURUSD"}
    assert all(100 <= c <= 200 for c in res.checks.values())
    for sym in prep.md.traded:  # every live signal bar was checked (fewer than the cap here)
        full = prep.strategy.signals(prep.md.bars[sym].arrays())
        first = prep.md.bars[sym].first_live
        events = first + np.flatnonzero(~np.isnan(full.target[first:]))
        if len(events) <= 100:
            assert res.checks[sym] >= len(set(events.tolist()))
    assert "No look-ahead" in res.verdict()
    json.dumps(res.summary())
    for title, cols, rows in res.tables():
        assert build_table(cols, rows, title=title).row_count == len(rows) > 0
    html = res.html()
    assert "No look-ahead found" in html and "fig-lab-warmup" in html
    assert res.seconds < 10


def test_the_sample_trend_ema_needs_more_warm_up_than_it_declares(sample_store):
    settings = make_settings(sample_store, strategy={"name": "trend", "fast": 20, "slow": 100, "ma": "ema"})
    prep = prepare(settings, sample_store)
    res = lookahead_analysis(prep.strategy, prep.md)
    need = res.needed_startup()
    assert need["slow"] is not None and need["slow"] > res.warmup == 101
    assert any(w.startswith("slow:") for w in res.warmup_warnings())
    assert [r["symbol"] for r in res.rows()] == ["SPY"]
