"""Regime-specific parameters (``[strategy.by_regime]``): the regime rule is causal, each bar takes the
target of the parameter set of the regime in force, transitions and ``enabled = false`` behave as
documented, every built-in but ai_ensemble can be switched, configs are validated, and backtest ==
replay."""

from __future__ import annotations

import asyncio
import copy
import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hflite.ai.regime import RegimeConfig, rule_regimes
from hflite.config import ConfigError, load_settings, parse_overrides
from hflite.domain.signal import Exits
from hflite.engine.replay import replay
from hflite.engine.run import backtest, prepare
from hflite.strategy import make_strategy
from hflite.strategy.base import BarArrays, SignalSet, attach_market
from hflite.strategy.builtin import TrendParams
from hflite.strategy.regime_switch import RegimeSwitch, regime_codes_at
from tests.conftest import REPO, make_settings, synthetic_bars
from tests.test_strategies_momentum import _market, _ts, assert_causal

# -- the regime rule is causal ------------------------------------------------------------------------


def test_the_regime_rule_labels_each_bar_from_the_bars_before_it(sample_store):
    spy = sample_store.read_bars("SPY", "1d", "2004-01-01", "2024-12-06")
    close = pd.Series(spy["close"].to_numpy(), index=pd.DatetimeIndex(spy["ts"]))
    full = rule_regimes(close, 252.0, RegimeConfig())
    assert set(full) == {"", "bull", "bear", "sideways", "crisis"}, "the check must see every label"
    changes = np.flatnonzero(full.to_numpy()[1:] != full.to_numpy()[:-1]) + 1
    for k in sorted(set(changes.tolist()) | set(range(0, len(close), 97))):
        head = rule_regimes(close.iloc[: k + 1], 252.0, RegimeConfig())
        assert head.iloc[k] == full.iloc[k], f"label at bar {k} ({close.index[k].date()})"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(1, 299))
def test_the_regime_rule_never_changes_when_future_bars_are_rewritten(seed, cut):
    a = synthetic_bars(300, seed=seed, vol=0.03)["close"].to_numpy()
    b = synthetic_bars(300, seed=seed + 1, vol=0.03)["close"].to_numpy()
    cfg = RegimeConfig(trend_window=20, slope_bars=5, vol_window=10, crisis_vol=45.0)
    x = rule_regimes(pd.Series(a), 252.0, cfg)
    y = rule_regimes(pd.Series(np.concatenate((a[:cut], b[cut:]))), 252.0, cfg)
    assert x.iloc[:cut].tolist() == y.iloc[:cut].tolist()


def test_a_bar_takes_the_label_of_the_last_index_bar_known_at_its_time():
    labels = np.array(["", "bull", "bear"], dtype=object)
    label_ts = np.array([10, 20, 30])
    np.testing.assert_array_equal(
        regime_codes_at(labels, label_ts, np.array([5, 10, 19, 20, 29, 30, 99])), [0, 0, 0, 1, 1, 2, 2]
    )


# -- choosing the set in force, by hand ---------------------------------------------------------------
# Regime codes 1 bull, 2 bear, 4 crisis; crisis entries disabled; bear has its own set.
CODES = np.array([1, 1, 1, 2, 2, 2, 4, 1, 4, 4])
BASE_TARGET = np.array([np.nan, 1, np.nan, np.nan, 0, np.nan, 1, np.nan, np.nan, 0])
BEAR_TARGET = np.array([np.nan, np.nan, 0, np.nan, np.nan, 1, np.nan, np.nan, np.nan, np.nan])


class _Fixed:
    """A strategy with given targets (ATR 1 for the base set, 2 for the bear set)."""

    name = "fixed"

    def __init__(self, params: TrendParams) -> None:
        self.bear = params.fast == 10
        self.target = BEAR_TARGET if self.bear else BASE_TARGET

    def warmup(self) -> int:
        return 1

    def signals(self, bars: BarArrays) -> SignalSet:
        n = len(bars)
        return SignalSet(
            target=self.target[:n].copy(),
            atr=np.full(n, 2.0 if self.bear else 1.0),
            exits=Exits(stop_atr=2.0),
            values={"x": np.arange(n, dtype=float)},
            reasons={1: "up {x:.0f}", 0: "out {x:.0f}", -1: "down {x:.0f}"},
        )


class _FixedRegimes(RegimeSwitch):
    def regimes(self, ts: np.ndarray) -> np.ndarray:
        return CODES[: len(ts)]


def _switched() -> SignalSet:
    params = TrendParams.model_validate(
        {"fast": 20, "slow": 50, "by_regime": {"bear": {"fast": 10}, "crisis": {"enabled": False}}}
    )
    c = np.full(10, 100.0)
    return _FixedRegimes(params, _Fixed).signals(BarArrays(c, c, c, c, c, _ts(10)))  # type: ignore[arg-type]


def test_each_bar_takes_the_target_of_its_regimes_set_and_a_change_issues_the_new_sets_standing_target():
    sig = _switched()
    # bar 3 (bull -> bear): the bear set stands flat since bar 2 -> 0
    # bar 6 (bear -> crisis, disabled): the base set's +1 is an entry -> no instruction
    # bar 7 (crisis -> bull): the base set stands long since bar 6 -> +1
    # bar 8 (bull -> crisis): its standing +1 is an entry -> none; bar 9: its exit (0) is kept
    np.testing.assert_array_equal(sig.target, [np.nan, 1, np.nan, 0, np.nan, 1, np.nan, 1, np.nan, 0])
    np.testing.assert_array_equal(sig.atr, [1, 1, 1, 2, 2, 2, 1, 1, 1, 1])
    np.testing.assert_array_equal(sig.values["regime"], CODES)
    np.testing.assert_array_equal(
        sig.values["regime_from"], [np.nan] * 3 + [1, np.nan, np.nan, 2, 4, 1, np.nan]
    )
    assert sig.exits == Exits(stop_atr=2.0)


def test_the_reason_names_the_regime_and_what_changed():
    sig = _switched()
    assert sig.reason(1) == "[bull] up 1"
    assert sig.reason(5) == "[bear] up 5"
    assert sig.reason(9) == "[crisis] out 9"
    assert sig.reason(3) == (
        "regime bull -> bear: the bear parameter set (fast=10) stands flat (its last signal, at today's "
        "values: out 3)"
    )
    assert sig.reason(7) == (
        "regime crisis -> bull: the bull parameter set (base parameters) stands long (its last signal, "
        "at today's values: up 7)"
    )


def test_a_reason_template_survives_pickling_and_copying():
    template = _switched().reasons[0]
    for clone in (pickle.loads(pickle.dumps(template)), copy.deepcopy(template)):  # noqa: S301 - our own bytes
        assert clone.format(x=3.0, regime=2.0, regime_from=math.nan) == "[bear] out 3"


def test_a_regime_without_a_block_shares_the_base_set():
    strategy = make_strategy("trend", {"fast": 20, "slow": 50, "by_regime": {"bear": {"fast": 10}}})
    assert isinstance(strategy, RegimeSwitch)
    assert strategy.name == "trend_by_regime"
    assert len(strategy.strategies) == 2  # base (unknown, bull, sideways, crisis) and bear
    assert strategy.warmup() == 200 + 20 + 1  # the index's rule needs the longest history


# -- every built-in, on the sample --------------------------------------------------------------------
BUILT_INS = {
    "trend": {
        "fast": 10,
        "slow": 40,
        "ma": "ema",
        "allow_short": True,
        "by_regime": {"bear": {"fast": 5, "slow": 20}},
    },
    "breakout": {"entry_period": 20, "exit_period": 10, "by_regime": {"bear": {"entry_period": 10}}},
    "mean_reversion": {"mode": "rsi", "by_regime": {"bull": {"oversold": 40, "exit_level": 55}}},
    "tsmom": {"lookback": 63, "rebalance": "week", "by_regime": {"bear": {"lookback": 21}}},
    "xsmom": {
        "lookback": 63,
        "skip": 5,
        "top_n": 1,
        "rebalance": "week",
        "by_regime": {"bear": {"top_n": 2}},
    },
}


@pytest.fixture(scope="module")
def regime_prep(sample_store):
    settings = make_settings(
        sample_store,
        run={"symbols": ["SPY", "TLT", "GLD", "BTC-USD"], "start": "2018-01-02", "end": "2020-12-31"},
        strategy={"name": "trend", "by_regime": {"crisis": {"enabled": False}}},
    )
    return prepare(settings, sample_store)


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_every_built_in_switches_by_regime_without_look_ahead(name, regime_prep):
    params = {**BUILT_INS[name]}
    params["by_regime"] = {**params["by_regime"], "crisis": {"enabled": False}}
    md = regime_prep.md
    bars = md.bars["BTC-USD"].arrays()  # a 24/7 symbol: its bars fall between the index's
    full_strategy = make_strategy(name, params)
    attach_market(full_strategy, md)
    full = full_strategy.signals(bars)
    codes = full.values["regime"]
    assert {1.0, 2.0, 4.0} <= set(codes.tolist()), "the window must hold bull, bear and crisis bars"
    changes = np.flatnonzero((np.diff(np.nan_to_num(full.target, nan=9.0)) != 0) | (np.diff(codes) != 0)) + 1
    checks = sorted(set(changes.tolist()) | set(range(250, len(bars), 61)))
    assert assert_causal(lambda: make_strategy(name, params), bars, checks, md) > 20
    entries = (full.target == 1.0) | (full.target == -1.0)
    assert not (entries & (codes == 4.0)).any(), "no entry in a disabled regime"


def test_the_regime_is_read_from_the_index_bars_known_at_each_bars_time(regime_prep):
    md = regime_prep.md
    strategy = make_strategy("trend", {"by_regime": {"bear": {"fast": 10}}})
    attach_market(strategy, md)
    btc, spy = md.bars["BTC-USD"], md.bars["SPY"]
    mondays = np.flatnonzero(pd.DatetimeIndex(btc.ts[: btc.n], tz="UTC").day_of_week == 0)  # Sunday's bar
    assert len(mondays) > 100
    for k in mondays.tolist():
        friday = int(np.searchsorted(spy.ts[: spy.n], btc.ts[k], "right")) - 1
        if friday < 0:  # before the index's first bar
            continue
        assert pd.Timestamp(int(spy.ts[friday]), tz="UTC").day_of_week in (3, 4)  # Thursday: a Friday holiday
        assert strategy.regimes(btc.ts[k : k + 1])[0] == strategy.regimes(spy.ts[friday : friday + 1])[0]


def test_an_index_the_run_does_not_load_is_a_config_error():
    strategy = make_strategy("trend", {"regime_index": "QQQ", "by_regime": {"bear": {"fast": 10}}})
    with pytest.raises(
        ConfigError, match=r"^config error: strategy.regime_index: QQQ is not loaded by this run"
    ):
        attach_market(strategy, _market({"SPY": [100.0] * 3, "TLT": [100.0] * 3}))


def test_signals_need_the_market_attached():
    strategy = make_strategy("trend", {"by_regime": {"bear": {"fast": 10}}})
    c = np.full(3, 100.0)
    with pytest.raises(RuntimeError, match="attach_market"):
        strategy.signals(BarArrays(c, c, c, c, c, _ts(3)))


# -- configuration ------------------------------------------------------------------------------------
CONFIG = """
[run]
symbols = ["SPY", "TLT"]
start = "2019-01-02"
end = "2019-12-31"

[strategy]
name = "trend"
fast = 20
slow = 100

[strategy.by_regime.bear]
fast = 10
slow = 50

[strategy.by_regime.crisis]
enabled = false
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "by_regime.toml"
    path.write_text(CONFIG)
    return path


def test_an_optimiser_key_gives_settings_that_build_the_switch(config_file):
    settings = load_settings(
        config_file,
        parse_overrides(["strategy.by_regime.bear.fast=12", "strategy.by_regime.sideways.slow=80"]),
    )
    params = settings.strategy.params()
    assert params["by_regime"] == {
        "bear": {"fast": 12, "slow": 50},
        "crisis": {"enabled": False},
        "sideways": {"slow": 80},
    }
    strategy = make_strategy(settings.strategy.name, params)
    assert isinstance(strategy, RegimeSwitch)
    assert strategy.p.regime_params("bear").fast == 12  # type: ignore[attr-defined]
    assert strategy.p.regime_params("sideways").slow == 80  # type: ignore[attr-defined]
    assert not strategy.p.regime_enabled("crisis")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("strategy.by_regime.bear.fsat=10", "config error: strategy.by_regime.bear.fsat: unknown key"),
        (
            "strategy.by_regime.bul.fast=10",
            "config error: strategy.by_regime.bul: unknown regime; known: bull, bear, sideways, crisis",
        ),
        (
            "strategy.by_regime.bear.fast=0",
            "config error: strategy.by_regime.bear.fast: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            "strategy.by_regime.bear.fast=200",
            "config error: strategy.by_regime.bear: fast (200) must be smaller than slow (50)",
        ),
        (
            "strategy.by_regime.bear.stop_atr=1",
            "config error: strategy.by_regime.bear.stop_atr: exits cannot vary by regime (the engine "
            "attaches one exit rule per symbol); set it in [strategy]",
        ),
        (
            "strategy.by_regime.crisis.enabled=maybe",
            "config error: strategy.by_regime.crisis.enabled: must be true or false (got 'maybe')",
        ),
        (
            "strategy.by_regime.bear.regime_index=QQQ",
            "config error: strategy.by_regime.bear.regime_index: is set once in [strategy], not per regime",
        ),
        (
            "strategy.by_regime.bear.fast=nan",
            "config error: strategy.by_regime.bear.fast: Input should be a finite number (got nan)",
        ),
        (
            "strategy.regime_rule.trend_windw=50",
            "config error: strategy.regime_rule.trend_windw: unknown key",
        ),
    ],
)
def test_a_bad_regime_block_is_one_line_naming_the_key(config_file, override, message):
    with pytest.raises(ConfigError) as exc:
        load_settings(config_file, parse_overrides([override]))
    assert str(exc.value) == message


def test_regime_keys_without_blocks_and_ai_ensemble_blocks_are_refused(sample_store):
    with pytest.raises(
        ConfigError, match=r"^config error: strategy.regime_index: only used with \[strategy.by_regime\]"
    ):
        make_settings(sample_store, strategy={"name": "trend", "regime_index": "QQQ"})
    with pytest.raises(
        ConfigError, match=r"^config error: strategy.by_regime: ai_ensemble takes no per-regime"
    ):
        make_settings(sample_store, strategy={"name": "ai_ensemble", "by_regime": {"bear": {"enter": 0.5}}})


# -- one engine ---------------------------------------------------------------------------------------
@pytest.mark.slow  # a replay steps every bar: 4-9 s, like tests/test_parity.py's
def test_a_by_regime_backtest_and_its_replay_give_identical_orders_fills_and_equity(
    sample_store, tmp_path: Path
):
    settings = make_settings(
        sample_store,
        run={"symbols": ["SPY", "QQQ", "TLT", "GLD", "BTC-USD"], "start": "2019-06-03", "end": "2020-12-31"},
        strategy={
            "name": "trend",
            "fast": 10,
            "slow": 40,
            "ma": "ema",
            "allow_short": True,
            "by_regime": {
                "bear": {"fast": 5, "slow": 20},
                "sideways": {"allow_short": False},
                "crisis": {"enabled": False},
            },
        },
    )
    bt = backtest(settings, sample_store, run_id="bt")
    rp = asyncio.run(replay(settings, sample_store, run_id="rp", journal_path=tmp_path / "j.sqlite"))

    reasons = bt.verdicts.intent_reason
    assert reasons.str.startswith("regime ").sum() >= 3, "transitions must issue targets"
    assert reasons.str.startswith("[bear]").any() and reasons.str.startswith("regime crisis -> ").any()
    assert not bt.verdicts[bt.verdicts.kind == "entry"].intent_reason.str.startswith("[crisis]").any()
    pd.testing.assert_frame_equal(bt.orders.reset_index(drop=True), rp.orders.reset_index(drop=True))
    pd.testing.assert_frame_equal(bt.fills.reset_index(drop=True), rp.fills.reset_index(drop=True))
    pd.testing.assert_frame_equal(bt.trades, rp.trades)
    pd.testing.assert_frame_equal(bt.verdicts, rp.verdicts)
    pd.testing.assert_series_equal(bt.equity, rp.equity, check_exact=False, rtol=1e-12)


@pytest.mark.parametrize("name", ["tsmom", "xsmom"])
def test_the_momentum_configs_load_and_build(name):
    settings = load_settings(REPO / "configs" / f"{name}.toml")
    assert make_strategy(settings.strategy.name, settings.strategy.params()).name == name
