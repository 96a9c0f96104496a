"""Strategies: causal signals (no look-ahead), the documented tie rule, validated parameters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hflite.strategy import make_strategy
from hflite.strategy.base import BarArrays, crossings, entry_exit_targets, onset
from tests.conftest import synthetic_bars

CONFIGS = [
    ("trend", {"fast": 5, "slow": 20}),
    ("trend", {"fast": 10, "slow": 30, "ma": "ema", "allow_short": True, "trailing": True}),
    ("breakout", {"entry_period": 20, "exit_period": 10, "allow_short": True}),
    ("mean_reversion", {"mode": "rsi"}),
    ("mean_reversion", {"mode": "bollinger", "allow_short": True, "bb_k": 1.5}),
]


def _bars(df) -> BarArrays:
    return BarArrays(*(df[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume")))


@pytest.fixture(scope="module")
def spy(sample_store) -> BarArrays:
    return _bars(sample_store.read_bars("SPY", "1d", "2018-01-01", "2020-12-31"))


@pytest.mark.parametrize(("name", "params"), CONFIGS)
def test_every_signal_is_the_same_when_computed_on_history_truncated_at_that_bar(name, params, spy):
    strategy = make_strategy(name, params)
    full = strategy.signals(spy)
    events = np.flatnonzero(~np.isnan(full.target))
    assert len(events) > 5, "the configuration must produce signals on this data"
    checks = sorted(set(events.tolist()) | set(range(strategy.warmup() - 2, len(spy), 37)))
    for k in checks:
        head = strategy.signals(spy.head(k + 1))
        np.testing.assert_equal(head.target[k], full.target[k], err_msg=f"{name} target at bar {k}")
        np.testing.assert_allclose(head.atr[k], full.atr[k], rtol=1e-12, err_msg=f"{name} atr at bar {k}")
        for value_name, arr in full.values.items():
            np.testing.assert_allclose(head.values[value_name][k], arr[k], rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(40, 299))
def test_trend_signals_never_change_when_future_bars_are_rewritten(seed, cut):
    bars = _bars(synthetic_bars(300, seed=seed))
    other = _bars(synthetic_bars(300, seed=seed + 1))
    spliced = BarArrays(
        *(
            np.concatenate((getattr(bars, f)[:cut], getattr(other, f)[cut:]))
            for f in ("open", "high", "low", "close", "volume")
        )
    )
    strategy = make_strategy("trend", {"fast": 5, "slow": 20, "ma": "ema"})
    a, b = strategy.signals(bars), strategy.signals(spliced)
    np.testing.assert_array_equal(a.target[:cut], b.target[:cut])


def test_equal_moving_averages_are_not_a_cross():
    fast = np.array([1.0, 2.0, 3.0, 3.0, 4.0, 3.0, 2.0])
    slow = np.array([2.0, 2.5, 3.0, 3.0, 3.5, 3.5, 3.5])
    # below, below, equal, equal, above  -> one cross up at bar 4 (not at the ties)
    # then below at bar 5 -> cross down at bar 5
    np.testing.assert_array_equal(crossings(fast, slow), [0, 0, 0, 0, 1, -1, 0])


def test_touching_and_returning_to_the_same_side_is_not_a_cross():
    fast = np.array([1.0, 3.0, 2.0])
    slow = np.array([2.0, 3.0, 3.0])
    np.testing.assert_array_equal(crossings(fast, slow), [0, 0, 0])


def test_first_valid_bar_is_never_a_cross():
    fast = np.array([np.nan, 5.0, 6.0])
    slow = np.array([np.nan, 4.0, 4.0])
    np.testing.assert_array_equal(crossings(fast, slow), [0, 0, 0])


def test_onset_marks_only_the_first_bar_of_a_condition():
    np.testing.assert_array_equal(onset(np.array([True, True, False, True])), [True, False, False, True])


def test_long_exit_condition_does_not_close_a_short():
    long_in = np.array([False, False, False, False])
    short_in = np.array([True, False, False, False])
    long_out = np.array([False, True, False, False])
    short_out = np.array([False, False, False, True])
    np.testing.assert_array_equal(
        entry_exit_targets(long_in, short_in, long_out, short_out), [-1.0, np.nan, np.nan, 0.0]
    )


def test_trend_reason_quotes_the_indicator_values(spy):
    sig = make_strategy("trend", {"fast": 5, "slow": 20}).signals(spy)
    k = int(np.flatnonzero(sig.target == 1.0)[0])
    reason = sig.reason(k)
    assert reason.startswith("SMA(5) ")
    assert "crossed above SMA(20)" in reason
    assert f"{sig.values['fast'][k]:.4f}" in reason


def test_mean_reversion_declares_its_time_stop():
    sig = make_strategy("mean_reversion", {"time_stop_bars": 7}).signals(_bars(synthetic_bars(100)))
    assert sig.exits.time_stop_bars == 7


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("trend", {"fast": 50, "slow": 20}, r"fast \(50\) must be smaller than slow \(20\)"),
        ("trend", {"fastt": 5}, "fastt"),
        ("breakout", {"entry_period": 1}, "entry_period"),
        ("mean_reversion", {"oversold": 60, "exit_level": 50}, "oversold < exit_level"),
    ],
)
def test_bad_parameters_are_refused_with_the_field_named(name, params, field):
    with pytest.raises(ValidationError, match=field):
        make_strategy(name, params)


def test_unknown_strategy_lists_the_built_ins():
    with pytest.raises(ValueError, match="breakout, mean_reversion, trend"):
        make_strategy("nope", {})
