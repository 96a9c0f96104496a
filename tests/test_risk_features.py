"""Risk features are causal and the same bit for bit however the bars arrive."""

from __future__ import annotations

import numpy as np
import pytest

from hflite.domain.instrument import SAMPLE_INSTRUMENTS
from hflite.engine.market import SymbolBars
from hflite.risk.features import BLOCK, COLUMNS, SymbolFeatures, breaker_reason, market_reason, rule_regime
from hflite.risk.limits import Regime, RiskLimits


def bars_of(df, sym="SPY", n=None) -> SymbolBars:
    m = len(df) if n is None else n
    return SymbolBars(
        SAMPLE_INSTRUMENTS[sym],
        df["ts"].astype("int64").to_numpy()[:m].copy(),
        df["open"].to_numpy()[:m].copy(),
        df["high"].to_numpy()[:m].copy(),
        df["low"].to_numpy()[:m].copy(),
        df["close"].to_numpy()[:m].copy(),
        df["volume"].to_numpy()[:m].copy(),
        np.arange(m, dtype=np.int64),
        n=m,
    )


@pytest.fixture(scope="module")
def spy(sample_store):
    df = sample_store.read_bars("SPY", "1d", "2004-01-01", "2024-12-06")
    df["ts"] = df["ts"].astype("int64")
    return df


def test_each_bar_sees_only_its_past_and_blocks_do_not_change_the_bits(spy):
    limits = RiskLimits()
    full = SymbolFeatures(limits, bars_of(spy))
    full.ensure(len(spy) - 1)
    rng = np.random.default_rng(4)
    cuts = sorted({*rng.integers(300, len(spy), 25).tolist(), BLOCK - 1, BLOCK, 2 * BLOCK + 5})
    for k in cuts:
        part = SymbolFeatures(limits, bars_of(spy, n=k + 1))  # the history a live runtime has at k
        part.ensure(k)
        for col in COLUMNS:
            a, b = full.cols[col][k], part.cols[col][k]
            assert (a == b) or (np.isnan(a) and np.isnan(b)), (col, k)


def test_bar_by_bar_growth_equals_one_pass(spy):
    limits = RiskLimits()
    n = BLOCK + 120
    once = SymbolFeatures(limits, bars_of(spy, n=n))
    once.ensure(n - 1)
    grown = SymbolFeatures(limits, bars_of(spy, n=n))
    grown.ensure(BLOCK - 200)
    for k in range(BLOCK - 199, n):  # one bar at a time across a block boundary
        grown.ensure(k)
    for col in COLUMNS:
        np.testing.assert_array_equal(once.cols[col][:n], grown.cols[col][:n], err_msg=col)


def test_march_2020_on_spy_is_a_crisis_with_its_market_breaker(spy):
    f = SymbolFeatures(RiskLimits(), bars_of(spy))
    f.ensure(len(spy) - 1)
    ts = spy["ts"].to_numpy()

    def at(day: str) -> int:
        return int(np.flatnonzero(ts >= np.datetime64(day, "ns").astype("int64"))[0])

    assert rule_regime(f, at("2020-03-16")) is Regime.CRISIS
    assert rule_regime(f, at("2019-12-02")) is Regime.BULL
    assert rule_regime(f, at("2008-11-20")) is Regime.CRISIS
    assert "SPY moved -10.9% on 2020-03-16" in market_reason(f, at("2020-03-17"))
    assert market_reason(f, at("2020-03-30")) == ""  # three bars after the last trip (03-24)
    assert breaker_reason(f, at("2019-06-03")) == ""
