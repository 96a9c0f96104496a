"""The lab's evaluator: a parameter set run through the engine gives the backtest's own numbers, and the
research path gives the engine's; search spaces parse as a user types them."""

from __future__ import annotations

import math

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hflite.analytics.metrics import run_metrics
from hflite.config import ConfigError
from hflite.engine.run import backtest
from hflite.lab.space import overrides_of, parse_param, parse_space, widest
from hflite.lab.trial import Evaluator, InvalidParams, before_holdout, derive, with_window
from tests.conftest import make_settings


def test_ranges_steps_logs_and_choices_parse():
    assert parse_param("fast=5..50") == parse_param("strategy.fast=5..50")
    p = parse_param("fast=5..50")
    assert (p.key, p.name, p.dist) == ("strategy.fast", "fast", IntDistribution(5, 50))
    assert parse_param("risk.risk_pct=0.25..1.5:0.25").dist == FloatDistribution(0.25, 1.5, step=0.25)
    assert parse_param("stop_atr=1..4.0:log").dist == FloatDistribution(1.0, 4.0, log=True)
    assert parse_param("slow=20..200:10").dist == IntDistribution(20, 200, step=10)
    assert parse_param("ma=sma,ema").dist == CategoricalDistribution(("sma", "ema"))
    assert parse_param("allow_short=true,false").dist == CategoricalDistribution((True, False))
    assert widest(parse_space(["fast=5..50", "slow=20..200", "ma=sma,ema"])) == {
        "strategy.fast": 50,
        "strategy.slow": 200,
    }
    assert overrides_of({"strategy.fast": 5, "risk.risk_pct": 0.5, "strategy.by_regime.bear.fast": 3}) == {
        "strategy": {"fast": 5, "by_regime": {"bear": {"fast": 3}}},
        "risk": {"risk_pct": 0.5},
    }


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("fast", "expected name=lo..hi"),
        ("fast=50..5", "the range 50..5 is empty"),
        ("fast=a..9", "'a' is not a number"),
        ("stop_atr=0..2:log", "a log range needs a low above 0"),
        ("stop_atr=0..1:0", "the step must be above 0"),
        ("ma=sma,sma", "listed twice"),
        ("=1..2", "a parameter needs a name"),
    ],
)
def test_a_bad_param_is_one_line_naming_it(spec, says):
    with pytest.raises(ConfigError, match=says):
        parse_param(spec)


def test_a_key_given_twice_or_no_param_is_refused():
    with pytest.raises(ConfigError, match="given twice"):
        parse_space(["fast=1..5", "strategy.fast=2..6"])
    with pytest.raises(ConfigError, match="at least one --param"):
        parse_space([])


def test_only_strategy_risk_and_execution_can_be_searched(sample_store):
    s = make_settings(sample_store)
    with pytest.raises(ConfigError, match="run: only strategy, risk, execution, ai"):
        derive(s, {"run.start": "2016-01-04"})
    with pytest.raises(InvalidParams, match="fast .* must be smaller than slow"):
        Evaluator(s, sample_store).evaluate({"strategy.fast": 60, "strategy.slow": 50})
    with pytest.raises(InvalidParams, match="strategy.fsat"):
        Evaluator(s, sample_store).evaluate({"strategy.fsat": 6})


def test_an_engine_trial_is_the_backtest_of_those_parameters(sample_store):
    s = make_settings(sample_store, strategy={"fast": 10, "slow": 40})
    ev = Evaluator(s, sample_store)
    out = ev.evaluate({"strategy.fast": 15, "risk.risk_pct": 0.5})
    assert out.path == "engine"
    ref = backtest(derive(s, {"strategy.fast": 15, "risk.risk_pct": 0.5}), sample_store)
    want = run_metrics(ref)
    for key, value in want.items():
        assert out.metrics[key] == pytest.approx(value, rel=1e-12, nan_ok=True), key
    assert out.equity.iloc[-1] == ref.equity.iloc[-1]
    assert len(out.trade_returns) == int(want["trades"])


def test_the_research_path_gives_the_engines_numbers(sample_store):
    s = make_settings(
        sample_store,
        strategy={"stop_atr": 0, "fast": 10, "slow": 40},
        risk={"profile": "minimal"},
    )
    ev = Evaluator(s, sample_store, warmup=201)
    for fast, slow in [(5, 30), (20, 100), (50, 200)]:
        values = {"strategy.fast": fast, "strategy.slow": slow}
        ev.path = "auto"
        fast_run = ev.evaluate(values)
        ev.path = "engine"
        engine_run = ev.evaluate(values)
        assert (fast_run.path, engine_run.path) == ("research", "engine")
        assert (fast_run.equity - engine_run.equity).abs().max() < 1e-6
        for key, value in engine_run.metrics.items():
            assert fast_run.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), key
        assert fast_run.trade_returns == pytest.approx(engine_run.trade_returns, rel=1e-12)
    ev.path = "research"
    with pytest.raises(ValueError, match="protective stops need the full engine"):
        ev.evaluate({"strategy.stop_atr": 2.0})


def test_the_hold_out_cuts_the_period_and_a_window_moves_it(sample_store):
    s = make_settings(sample_store, run={"start": "2016-01-04", "end": "2024-06-28"})
    cut = before_holdout(s)
    assert (str(cut.run.start), str(cut.run.end)) == ("2016-01-04", "2022-12-31")
    assert before_holdout(s, None) is s
    assert before_holdout(with_window(s, end="2020-12-31")).run.end.isoformat() == "2020-12-31"
    with pytest.raises(ConfigError, match="inside the hold-out"):
        before_holdout(with_window(s, start="2023-02-01"))


def test_a_flat_run_is_the_worst_value_not_an_error(sample_store):
    s = make_settings(sample_store, run={"start": "2016-01-04", "end": "2016-03-31"})
    out = Evaluator(s, sample_store).evaluate({"strategy.fast": 100, "strategy.slow": 400})
    assert out.metrics["trades"] == 0
    assert out.value("sharpe") == -math.inf
    assert out.value("volatility") == 0.0


@pytest.mark.slow
def test_an_ai_parameter_builds_the_trials_own_brain_as_a_backtest_would(sample_store, tmp_path):
    s = make_settings(
        sample_store,
        run={"symbols": ["SPY", "TLT", "BTC-USD"], "start": "2019-01-02", "end": "2020-06-30"},
        strategy={"name": "ai_ensemble", "enter": 0.2, "min_confidence": 0.15},
        ai={
            "history_start": "2013-01-01",
            "registry_dir": str(tmp_path / "models"),
            "model": {"kind": "linear"},
            "walkforward": {"retrain": "quarterly", "train_years": 3, "min_train_rows": 300},
        },
        llm={"mode": "off"},
    )
    ev = Evaluator(s, sample_store)
    values = {"ai.ensemble.fixed.market": 0.9, "strategy.enter": 0.3}
    out = ev.evaluate(values)
    ref = backtest(derive(s, values), sample_store)
    assert out.path == "engine"
    assert out.equity.iloc[-1] == ref.equity.iloc[-1]
    assert out.metrics["trades"] == run_metrics(ref)["trades"]
    base = ev.evaluate({"strategy.enter": 0.3})  # the config's own brain again: a different result
    assert base.equity.iloc[-1] == backtest(derive(s, {"strategy.enter": 0.3}), sample_store).equity.iloc[-1]
    assert base.equity.iloc[-1] != out.equity.iloc[-1]
