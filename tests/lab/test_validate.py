"""``hflite validate``: the selection statistics on hand-made candidates, the checklist's thresholds, the
verdict's rule, and the whole command on the sample data."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hflite.cli import app
from hflite.lab import stats
from hflite.lab.validate import Candidates, Check, cross_validate, perturbation_sets, plan_checks
from tests.conftest import make_settings


def _candidates(returns: np.ndarray) -> Candidates:
    m = returns.shape[1]
    return Candidates(
        source="test",
        labels=[f"c{i}" for i in range(m)],
        params=[{} for _ in range(m)],
        returns=pd.DataFrame(returns),
        sharpes=np.asarray(stats.sharpe(returns)),
        n_trials=m,
        var_sr=0.0,
    )


def test_a_dominant_candidate_is_chosen_in_every_split_and_its_paths_are_its_own_returns():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.01, size=(600, 4))
    noise[:, 2] += 0.004  # candidate 2 earns 40 bp a day more than the others: chosen everywhere
    cand = _candidates(noise)
    cpcv, kfold = cross_validate(cand, 252.0, n_groups=6, n_test_groups=2, embargo_frac=0.0)
    assert cpcv is not None and kfold is not None
    assert (cpcv.n_splits, len(cpcv.path_sharpes)) == (15, 5)  # C(6,2) splits, phi = 5 paths
    assert set(cpcv.picks) == {"c2"} and set(kfold.picks) == {"c2"}
    own = float(stats.sharpe(noise[:, 2], 252.0))
    # every path is candidate 2's whole series, so every path's Sharpe is its Sharpe
    assert cpcv.path_sharpes == pytest.approx([own] * 5, rel=1e-12)
    assert kfold.path_sharpes[0] == pytest.approx(own, rel=1e-12)


def test_selection_among_noise_earns_nothing_out_of_sample():
    rng = np.random.default_rng(7)
    cand = _candidates(rng.normal(0, 0.01, size=(1500, 20)))
    cpcv, _ = cross_validate(cand, 252.0)
    assert cpcv is not None
    assert abs(cpcv.median) < 1.0  # annualised; a true edge of 0 gives |SR| ~ 0.4 on 1,500 days
    assert len(set(cpcv.picks)) > 3  # the in-sample best changes from split to split


def test_one_candidate_or_too_few_days_is_not_applicable():
    assert cross_validate(_candidates(np.ones((600, 1)) * 0.001), 252.0) == (None, None)
    assert cross_validate(_candidates(np.zeros((50, 3))), 252.0) == (None, None)


def test_perturbations_move_each_numeric_parameter_alone(sample_store):
    s = make_settings(sample_store, strategy={"fast": 20, "slow": 100, "stop_atr": 3.0, "ma": "ema"})
    sets = perturbation_sets(s)
    assert sets == [
        {"strategy.fast": 10},
        {"strategy.fast": 15},
        {"strategy.fast": 25},
        {"strategy.fast": 30},
        {"strategy.slow": 50},
        {"strategy.slow": 75},
        {"strategy.slow": 125},
        {"strategy.slow": 150},
        {"strategy.stop_atr": 1.5},
        {"strategy.stop_atr": 2.25},
        {"strategy.stop_atr": 3.75},
        {"strategy.stop_atr": 4.5},
    ]


def _metrics(**kw: float) -> dict[str, float]:
    base = {"sharpe": 1.2, "max_drawdown": -0.12, "cagr": 0.10, "hit_rate": 0.56, "avg_trade": 10.0}
    return {**base, **kw}


def test_the_plans_criteria_are_passed_and_failed_at_their_thresholds():
    bench = {"SPY buy & hold": {"cagr": 0.09}, "BTC-USD buy & hold": {"cagr": 0.30}}
    got = {c.name: c.passed for c in plan_checks(_metrics(), bench)}
    assert got == {
        "Sharpe ratio": True,
        "Max drawdown": True,
        "Beats SPY buy & hold": True,
        "Beats BTC-USD buy & hold": False,
        "Win rate with positive expectancy": True,
    }
    edge = {
        c.name: c.passed for c in plan_checks(_metrics(sharpe=1.0, max_drawdown=-0.1501, hit_rate=0.55), {})
    }
    assert edge == {"Sharpe ratio": False, "Max drawdown": False, "Win rate with positive expectancy": False}
    none = plan_checks(_metrics(hit_rate=math.nan), {})[-1]
    assert (none.passed, none.value) == (None, "no closed trade")


def test_the_verdict_reads_the_lab_checks():
    from hflite.lab.validate import Validation

    def verdict(*results: tuple[str, bool | None]) -> tuple[str, str]:
        v = Validation.__new__(Validation)
        v.checks = [Check("Sharpe ratio", False, "0.5", "> 1.0", "plan")]
        v.checks += [Check(name, ok, "", "", "lab") for name, ok in results]
        return v.verdict

    assert verdict(("Deflated Sharpe ratio", True), ("Beats random entries", True))[0] == "good"
    level, sentence = verdict(("Deflated Sharpe ratio", False), ("Probability of backtest overfitting", True))
    assert (level, sentence) == ("bad", "NOT PROVEN: Deflated Sharpe ratio failed")
    level, sentence = verdict(("Deflated Sharpe ratio", True), ("Probability of backtest overfitting", False))
    assert level == "mixed" and sentence.startswith("INCONCLUSIVE: Probability of backtest overfitting")
    assert verdict(("Probability of backtest overfitting", None))[0] == "mixed"


@pytest.mark.slow
def test_validate_writes_its_report_verdict_first(sample_store, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[run]\nname = 'v'\nsymbols = ['SPY', 'TLT']\nstart = '2016-01-04'\nend = '2023-06-30'\n"
        "benchmarks = ['SPY']\n[strategy]\nname = 'trend'\nfast = 20\nslow = 100\n"
        f"[data]\ndir = '{sample_store.root}'\n[llm]\nmode = 'off'\n"
    )
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["validate", "--config", str(cfg), "--out", str(out), "--paths", "200"])
    assert res.exit_code == 0, res.output
    assert "Report:" in res.output and "Deflated Sharpe" in res.output
    html = (out / "index.html").read_text()
    assert html.index('class="verdict') < html.index("Deflated Sharpe")
    assert "2023-01-01 onwards was never used" in html
    data = json.loads((out / "validation.json").read_text())
    assert data["window"] == ["2016-01-04", "2022-12-31"]
    assert data["holdout_from"] == "2023-01-01" and data["holdout"]["sharpe"] is not None
    assert data["n_trials"] == 9  # the configured run and its 8 perturbations of fast and slow
    assert 0 <= data["pbo"] <= 1 and 0 <= data["deflated_sharpe"] <= 1
    checks = pd.read_csv(out / "checks.csv")
    assert {"Sharpe ratio", "Deflated Sharpe ratio", "CPCV median out-of-sample Sharpe"} <= set(
        checks["name"]
    )


def test_with_a_study_the_best_trial_is_validated_and_n_counts_distinct_sets(sample_store):
    from hflite.lab.optimize import run_study
    from hflite.lab.space import parse_space
    from hflite.lab.trial import before_holdout
    from hflite.lab.validate import validate

    s = make_settings(
        sample_store,
        run={"start": "2016-01-04", "end": "2023-12-29"},
        strategy={"stop_atr": 0, "fast": 20, "slow": 100},
        risk={"profile": "minimal"},
    )
    space = parse_space(["fast=5..25:10", "slow=40..120:40"])  # a 3 x 3 grid, all valid
    res = run_study(
        before_holdout(s), space, n_trials=9, sampler="grid", storage="memory", store=sample_store
    )
    best = res.study.best_trial
    v = validate(s, sample_store, study=res.study, top=9, paths=50)
    assert v.chosen.params == best.params
    assert v.settings.strategy.params()["fast"] == best.params["strategy.fast"]
    assert v.metrics["sharpe"] == pytest.approx(best.user_attrs["sharpe"], rel=1e-9)
    assert v.candidates.n_trials == 9 and v.candidates.returns.shape[1] == 10  # the chosen + 9 re-run
    assert any(f"#{best.number}" in n for n in v.notes)
    kept = validate(s, sample_store, study=res.study, top=9, paths=50, use_best=False)
    assert kept.chosen.params == {} and kept.settings.strategy.params()["fast"] == 20


def _small_config(tmp_path, store) -> str:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[run]\nname = 'v'\nsymbols = ['SPY']\nstart = '2016-01-04'\nend = '2019-12-31'\n"
        "benchmarks = ['SPY']\n[strategy]\nname = 'trend'\nstop_atr = 0\n[risk]\nprofile = 'minimal'\n"
        f"[data]\ndir = '{store.root}'\n[llm]\nmode = 'off'\n"
    )
    return str(cfg)


def test_a_bad_holdout_is_one_line(sample_store, tmp_path):
    res = CliRunner().invoke(
        app, ["validate", "--config", _small_config(tmp_path, sample_store), "--holdout", "x"]
    )
    assert res.exit_code == 2 and "--holdout: 'x' is not a date (YYYY-MM-DD) or 'none'" in res.output


def test_an_optimisation_whose_every_trial_is_rejected_says_why(sample_store, tmp_path):
    args = ["optimize", "--config", _small_config(tmp_path, sample_store), "-p", "foo=1..5", "--trials", "2"]
    res = CliRunner().invoke(app, [*args, "--storage", "memory", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (
        "every parameter set was rejected; the first: config error: strategy.foo: unknown key" in res.output
    )


def test_a_run_that_barely_trades_is_validated_without_an_error(sample_store, tmp_path):
    """Most candidates never trade in half a year: PBO and the paths count a flat stretch as Sharpe 0."""
    cfg = tmp_path / "flat.toml"
    cfg.write_text(
        "[run]\nname = 'flat'\nsymbols = ['SPY']\nstart = '2016-01-04'\nend = '2016-06-30'\n"
        "benchmarks = ['SPY']\n[strategy]\nname = 'trend'\nfast = 100\nslow = 400\n"
        f"[data]\ndir = '{sample_store.root}'\n[llm]\nmode = 'off'\n"
    )
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["validate", "--config", str(cfg), "--out", str(out), "--paths", "50"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "validation.json").read_text())
    assert data["cpcv_median_sharpe"] is not None and math.isfinite(data["cpcv_median_sharpe"])
    assert data["verdict"].startswith("NOT PROVEN")
