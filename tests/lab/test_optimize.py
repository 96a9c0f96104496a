"""``hflite optimize``: a study finds what evaluating every point by hand finds, prunes what the config
rejects, resumes (and refuses to resume what is no longer comparable), returns a non-dominated Pareto
front, shares one storage between processes without losing or repeating a trial, and writes its report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState
from typer.testing import CliRunner

from hflite.cli import app
from hflite.lab.optimize import (
    STUDY_ATTRS,
    StorageError,
    StudyError,
    TrialSeededSampler,
    default_storage,
    default_study_name,
    grid_points,
    mask_url,
    open_storage,
    run_study,
)
from hflite.lab.optimize_report import REPORT_FILES, neighbourhood, stability, write_optimize_report
from hflite.lab.space import Param, parse_space
from hflite.lab.trial import Evaluator, InvalidParams, TrialOutcome
from tests.conftest import make_settings

runner = CliRunner()
GRID = ["fast=5,10,20", "slow=50,100"]


def research_settings(store, **run):
    """SPY 2015-2018, trend without stops, minimal risk: the research path applies (~20 ms a trial)."""
    return make_settings(
        store,
        run={"start": "2015-01-02", "end": "2018-12-31", **run},
        strategy={"name": "trend", "stop_atr": 0},
        risk={"profile": "minimal"},
    )


@pytest.fixture(scope="module")
def evaluator(sample_store):
    return Evaluator(research_settings(sample_store), sample_store, warmup=101)


def by_hand(evaluator: Evaluator, points: list[dict], objective: str = "sharpe") -> dict[str, float]:
    out = {}
    for pt in points:
        try:
            out[json.dumps(pt, sort_keys=True)] = evaluator.evaluate(pt).value(objective)
        except InvalidParams:
            continue
    return out


# ----------------------------------------------------------------------------------------------- studies


def test_a_grid_study_finds_the_best_point_evaluating_each_by_hand_finds(sample_store, evaluator):
    params = parse_space(GRID)
    res = run_study(
        evaluator.base, params, n_trials=50, storage="memory", sampler="grid", evaluator=evaluator, seed=3
    )
    values = by_hand(evaluator, grid_points(params))
    assert len(values) == 6  # the whole grid, once: 50 trials asked, 6 points exist
    best_key = max(values, key=values.__getitem__)
    assert res.best_params == json.loads(best_key)
    assert res.best_value == pytest.approx(values[best_key], abs=0, rel=1e-12)
    assert (res.n_complete, res.n_pruned, res.n_total, res.n_before) == (6, 0, 6, 0)
    trials = res.study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(json.dumps(t.params, sort_keys=True) for t in trials) == sorted(values)
    for t in trials:  # each trial's value and stored metrics are the evaluator's
        assert t.values[0] == values[json.dumps(t.params, sort_keys=True)]
        assert t.user_attrs["path"] == "research"
        assert set(t.user_attrs) >= {"sharpe", "sortino", "calmar", "cagr", "total_return", "max_drawdown"}
        assert t.user_attrs["sharpe"] == t.values[0]


def test_a_rejected_pair_is_pruned_with_its_reason(evaluator):
    res = run_study(
        evaluator.base,
        parse_space(["fast=10,60", "slow=50,100"]),
        n_trials=4,
        storage="memory",
        sampler="grid",
        evaluator=evaluator,
    )
    assert (res.n_complete, res.n_pruned) == (3, 1)
    (pruned,) = res.study.get_trials(states=(TrialState.PRUNED,))
    assert pruned.params == {"strategy.fast": 60, "strategy.slow": 50}
    assert "fast (60) must be smaller than slow (50)" in pruned.user_attrs["invalid"]


def test_a_run_without_trades_scores_the_worst_value_not_a_failure(sample_store):
    s = research_settings(sample_store, start="2015-01-02", end="2015-03-31")
    res = run_study(
        s, parse_space(["fast=150,160", "slow=190,200"]), n_trials=2, storage="memory", sampler="grid"
    )
    trials = res.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert all(t.values == [-math.inf] and t.user_attrs["trades"] == 0 for t in trials)
    assert all(t.user_attrs["sharpe"] is None for t in trials)  # NaN kept as null


def test_tpe_is_reproducible_with_its_seed(evaluator):
    params = parse_space(["fast=5..30", "slow=40..120"])
    runs = [
        run_study(evaluator.base, params, n_trials=12, storage="memory", seed=7, evaluator=evaluator)
        for _ in range(2)
    ]
    assert [t.params for t in runs[0].study.trials] == [t.params for t in runs[1].study.trials]
    assert runs[0].best_value == runs[1].best_value


def test_resume_adds_new_trials_to_the_count(tmp_path, evaluator):
    params = parse_space(["fast=5..30", "slow=40..120"])
    storage = str(tmp_path / "s.journal")
    first = run_study(
        evaluator.base, params, n_trials=5, storage=storage, study_name="r", evaluator=evaluator
    )
    again = run_study(
        evaluator.base, params, n_trials=4, storage=storage, study_name="r", evaluator=evaluator
    )
    assert (first.n_before, first.n_total) == (0, first.n_complete)
    assert again.n_before == 5
    assert again.n_complete + again.n_pruned == 4
    assert [t.number for t in again.study.trials] == list(range(9))
    assert [r["trials"] for r in again.study.user_attrs["runs"]] == [5, 4]
    assert again.study.user_attrs["space"][0]["key"] == "strategy.fast"
    assert sorted(again.study.user_attrs) == sorted(STUDY_ATTRS)


def test_resume_with_another_space_config_or_objective_is_refused(tmp_path, evaluator):
    params = parse_space(["fast=5..30", "slow=40..120"])
    storage = str(tmp_path / "s.journal")
    run_study(evaluator.base, params, n_trials=2, storage=storage, study_name="r", evaluator=evaluator)
    with pytest.raises(StudyError, match=r"another search space \(fast 5 .. 30 -> 5 .. 35\)"):
        run_study(
            evaluator.base, parse_space(["fast=5..35", "slow=40..120"]), storage=storage, study_name="r"
        )
    other = research_settings(evaluator.store, end="2018-06-29")
    with pytest.raises(StudyError, match=r"another config \(differs in run.end\)"):
        run_study(other, params, n_trials=1, storage=storage, study_name="r")
    with pytest.raises(StudyError, match="optimises sharpe, not sortino"):
        run_study(evaluator.base, params, objectives=["sortino"], storage=storage, study_name="r")
    # a machine-local path may differ: another data.dir resumes
    moved = evaluator.base.model_copy(
        update={"data": evaluator.base.data.model_copy(update={"dir": tmp_path})}
    )
    res = run_study(moved, params, n_trials=1, storage=storage, study_name="r", evaluator=evaluator)
    assert res.n_before == 2


def test_the_default_name_resumes_the_same_command_and_the_default_storage_sits_by_the_data(evaluator):
    params = parse_space(["fast=5..30"])
    name = default_study_name(evaluator.base, params, ["sharpe"])
    assert name.startswith("run-sharpe-") and len(name) == len("run-sharpe-") + 8
    assert name == default_study_name(evaluator.base, parse_space(["fast=5..30"]), ["sharpe"])
    assert name != default_study_name(evaluator.base, parse_space(["fast=5..31"]), ["sharpe"])
    assert default_storage(evaluator.base) == str(
        Path(evaluator.store.root).parent / "lab" / "studies.journal"
    )


def test_several_objectives_give_a_non_dominated_pareto_front(evaluator):
    res = run_study(
        evaluator.base,
        parse_space(["fast=5..30", "slow=40..150"]),
        objectives=["sharpe", "max_drawdown"],
        n_trials=24,
        storage="memory",
        sampler="random",
        evaluator=evaluator,
    )
    assert res.sampler == "random" and res.best_trials
    done = res.study.get_trials(states=(TrialState.COMPLETE,))

    def dominates(a, b):  # both objectives maximised
        return all(x >= y for x, y in zip(a.values, b.values, strict=True)) and a.values != b.values

    front = {t.number for t in res.best_trials}
    for t in res.best_trials:
        assert not any(dominates(o, t) for o in done)
    for t in done:  # every other trial is beaten by one on the front (or ties one)
        if t.number not in front:
            assert any(dominates(f, t) or f.values == t.values for f in res.best_trials)
    assert res.best_value == max(t.values[0] for t in done)


def test_bad_arguments_are_one_line_errors(evaluator):
    params = parse_space(["fast=5..30"])
    with pytest.raises(StudyError, match="unknown; expected one of sharpe, sortino"):
        run_study(evaluator.base, params, objectives=["sharp"], storage="memory")
    with pytest.raises(StudyError, match="several processes need a storage they can share"):
        run_study(evaluator.base, params, storage="memory", workers=2)
    with pytest.raises(StudyError, match="continuous range: give it a step"):
        run_study(evaluator.base, parse_space(["risk.risk_pct=0.25..1"]), storage="memory", sampler="grid")
    with pytest.raises(StudyError, match="--param data.dir: only strategy, risk, execution, ai"):
        run_study(evaluator.base, parse_space(["data.dir=1..2"]), storage="memory")


def test_a_storage_that_cannot_be_opened_is_named_with_its_password_masked():
    with pytest.raises(StorageError) as caught:
        open_storage("postgresql+psycopg://bob:s3cret-pw@127.0.0.1:1/db")
    text = str(caught.value)
    assert "s3cret-pw" not in text
    assert text.startswith("--storage postgresql+psycopg://bob:***@127.0.0.1:1/db: cannot open it: ")
    assert "refused" in text.lower()
    with pytest.raises(StorageError, match="unknown scheme 'foo'"):
        open_storage("foo://x")
    assert mask_url("postgresql+psycopg://bob:pw@h/db") == "postgresql+psycopg://bob:***@h/db"
    assert mask_url("var/lab/studies.journal") == "var/lab/studies.journal"


def test_a_sqlite_url_is_an_optuna_database_several_processes_can_write(tmp_path, evaluator):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    res = run_study(
        evaluator.base, parse_space(GRID), n_trials=3, storage=url, sampler="grid", evaluator=evaluator
    )
    again = optuna.load_study(study_name=res.study_name, storage=url)
    assert len(again.trials) == 3
    import sqlite3

    with sqlite3.connect(tmp_path / "studies.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_journal_file_is_optunas_own_format(tmp_path, evaluator):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = tmp_path / "s.journal"
    res = run_study(
        evaluator.base, parse_space(GRID), n_trials=6, storage=str(path), sampler="grid", evaluator=evaluator
    )
    theirs = optuna.load_study(
        study_name=res.study_name, storage=JournalStorage(JournalFileBackend(str(path)))
    )
    assert [t.values for t in theirs.trials] == [t.values for t in res.study.trials]
    assert theirs.trials[0].user_attrs == res.study.trials[0].user_attrs


# ------------------------------------------------------------------------------------ several processes


def test_two_workers_on_a_journal_record_each_trial_once_and_the_grid_a_single_process_runs(
    tmp_path, sample_store
):
    s = research_settings(sample_store)
    params = parse_space(["fast=5,10,20", "slow=50,100,150"])
    kw = dict(n_trials=9, store=sample_store, sampler="grid", seed=1, study_name="g")
    two = run_study(s, params, storage=str(tmp_path / "two.journal"), workers=2, **kw)
    one = run_study(s, params, storage=str(tmp_path / "one.journal"), workers=1, **kw)
    numbers = [t.number for t in two.study.trials]
    assert sorted(numbers) == list(range(9)) and len(set(numbers)) == 9
    assert {t.state for t in two.study.trials} == {TrialState.COMPLETE}
    points = lambda r: sorted(json.dumps(t.params, sort_keys=True) for t in r.study.trials)  # noqa: E731
    assert points(two) == points(one) == sorted(json.dumps(p, sort_keys=True) for p in grid_points(params))
    values = lambda r: {json.dumps(t.params, sort_keys=True): t.values[0] for t in r.study.trials}  # noqa: E731
    assert values(two) == values(one)
    assert two.best_params == one.best_params and two.workers == 2


def test_random_search_draws_by_trial_number_so_workers_draw_what_one_process_draws():
    dist = {"x": IntDistribution(0, 1000), "y": FloatDistribution(0.0, 1.0)}
    draws = []
    for _ in range(2):
        study = optuna.create_study(sampler=TrialSeededSampler(5))
        for _ in range(4):
            t = study.ask(dist)
            study.tell(t, 0.0)
        draws.append([t.params for t in study.trials])
    assert draws[0] == draws[1]
    assert len({d["x"] for d in draws[0]}) == 4
    other = optuna.create_study(sampler=TrialSeededSampler(6))
    assert other.ask(dist).params != draws[0][0]


# --------------------------------------------------------------------------------------- the neighbourhood


def test_grid_points_enumerate_choices_int_and_stepped_float_ranges():
    params = parse_space(["fast=5..7", "risk.risk_pct=0.25..0.75:0.25", "ma=sma,ema"])
    pts = grid_points(params)
    assert len(pts) == 3 * 3 * 2
    assert {p["risk.risk_pct"] for p in pts} == {0.25, 0.5, 0.75}
    assert pts[0] == {"strategy.fast": 5, "risk.risk_pct": 0.25, "strategy.ma": "sma"}


def test_neighbours_move_one_parameter_by_steps_or_percentages():
    params = parse_space(["fast=5..50", "slow=20..200:20", "ma=sma,ema"])
    best = {"strategy.fast": 20, "strategy.slow": 100, "strategy.ma": "ema"}
    moves = neighbourhood(params, best, n_random=0)
    fast = [(m.label, m.values["strategy.fast"]) for m in moves if m.param == "fast"]
    slow = [(m.label, m.values["strategy.slow"]) for m in moves if m.param == "slow"]
    assert fast == [("-30%", 14), ("-20%", 16), ("-10%", 18), ("+10%", 22), ("+20%", 24), ("+30%", 26)]
    assert slow == [("-3 steps", 40), ("-2 steps", 60), ("-1 step", 80), ("+1 step", 120), ("+2 steps", 140),
                    ("+3 steps", 160)]  # fmt: skip
    assert all(m.values["strategy.ma"] == "ema" for m in moves)
    edge = neighbourhood(params, {**best, "strategy.slow": 200}, n_random=0)  # clipped, duplicates dropped
    assert [m.values["strategy.slow"] for m in edge if m.param == "slow"] == [140, 160, 180]
    small = neighbourhood(parse_space(["stop_atr=1..4:log"]), {"strategy.stop_atr": 1}, n_random=0)
    assert [(m.label, m.values["strategy.stop_atr"]) for m in small] == [
        ("+1 step", 2),
        ("+2 steps", 3),
        ("+3 steps", 4),
    ]  # 10 % of 1 rounds to 0: an integer moves at least 1, 2, 3 steps; below 1 is outside


@hsettings(max_examples=60, deadline=None)
@given(
    fast=st.integers(5, 50),
    slow=st.integers(0, 9),
    pct=st.integers(0, 8),
    seed=st.integers(0, 2**16),
)
def test_every_neighbour_is_inside_the_space_on_its_steps_and_not_the_optimum(fast, slow, pct, seed):
    params = parse_space(["fast=5..50", "slow=20..200:20", "risk.risk_pct=0.25..1:log"])
    best = {"strategy.fast": fast, "strategy.slow": 20 + 20 * slow, "risk.risk_pct": 0.25 * 1.18**pct}
    moves = neighbourhood(params, best, n_random=10, seed=seed)
    keys = [json.dumps(m.values, sort_keys=True) for m in moves]
    assert len(set(keys)) == len(keys) and json.dumps(best, sort_keys=True) not in keys
    for m in moves:
        v = m.values
        assert 5 <= v["strategy.fast"] <= 50 and isinstance(v["strategy.fast"], int)
        assert 20 <= v["strategy.slow"] <= 200 and (v["strategy.slow"] - 20) % 20 == 0
        assert 0.25 <= v["risk.risk_pct"] <= 1.0


class _Bowl:
    """An evaluator whose Sharpe is 1 - (fast - 20)^2 / 100: hand-checkable stability."""

    def evaluate(self, values):
        f = values["strategy.fast"]
        if f > 25:
            raise InvalidParams("fast too big")
        eq = pd.Series([1.0, 1.0], pd.date_range("2020-01-01", periods=2, tz="UTC"))
        sharpe = 1 - (f - 20) ** 2 / 100
        return TrialOutcome(
            dict(values), {"sharpe": sharpe}, eq, eq.pct_change(), np.zeros(0), "research", 0.0
        )


def test_stability_counts_neighbours_within_20_percent_and_names_the_worst():
    params = [Param("strategy.fast", IntDistribution(5, 50))]
    s = stability(_Bowl(), params, {"strategy.fast": 20}, "sharpe", n_random=0)  # type: ignore[arg-type]
    # moves 14, 16, 18, 22, 24, 26: Sharpe 0.64, 0.84, 0.96, 0.96, 0.84, rejected (26 > 25)
    assert s.best == 1.0
    assert s.rows["value"].tolist()[:5] == pytest.approx([0.64, 0.84, 0.96, 0.96, 0.84])
    assert s.rows["close"].tolist() == [False, True, True, True, True, False]
    assert s.share_close == pytest.approx(4 / 5)
    assert (s.worst, s.worst_move) == (pytest.approx(0.64), "fast -30%")
    assert s.verdict.startswith("stable: 80% of 5 neighbours are within 20% of the best sharpe (1.000)")
    assert "fast -30%, gives 0.640 (-36%); 1 rejected by the config" in s.verdict


# ------------------------------------------------------------------------------------------ the report


def test_the_report_folder_has_its_files_the_holdout_and_the_best(tmp_path, sample_store):
    full = research_settings(sample_store, end="2019-12-31")
    from hflite.lab.trial import before_holdout

    s = before_holdout(full, "2019-01-01")
    res = run_study(s, parse_space(GRID), n_trials=6, storage="memory", sampler="grid", store=sample_store,
                    holdout="2019-01-01")  # fmt: skip
    index = write_optimize_report(res, tmp_path / "rep", full_settings=full, store=sample_store, n_random=4)
    folder = index.parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(REPORT_FILES)
    html = index.read_text()
    assert "2019-01-01 onwards was never seen by this optimisation" in html
    assert "hold-out (reported, never used to choose)" in html
    best = json.loads((folder / "best.json").read_text())
    assert best["best_params"] == res.best_params and best["holdout"] == "2019-01-01"
    assert best["optimisation_window_metrics"]["sharpe"] == pytest.approx(res.best_value, rel=1e-12)
    assert best["holdout_metrics"]["years"] < 1.01  # 2019 only
    assert len(pd.read_csv(folder / "trials.csv")) == 6
    assert not list(tmp_path.glob(".rep.*"))  # no temporary folder left behind


def test_the_command_runs_a_study_and_writes_its_report(tmp_path, sample_store):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[run]\nsymbols = ["SPY"]\nstart = 2015-01-02\nend = 2019-12-31\nbenchmarks = ["SPY"]\n'
        f'[strategy]\nname = "trend"\nstop_atr = 0\n[risk]\nprofile = "minimal"\n'
        f'[data]\ndir = "{sample_store.root}"\n[llm]\nmode = "off"\n'
    )
    storage = tmp_path / "s.journal"
    args = ["optimize", "-c", str(cfg), "-p", "fast=5,10,20", "-p", "slow=50,100", "--sampler", "grid"]
    args += ["--trials", "6", "--storage", str(storage), "--study", "cli", "--holdout", "2019-01-01"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "rep")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "best of 6 trials in cli" in result.output
    assert f"hflite validate --config {cfg} --study cli --storage {storage}" in result.output
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "2019-01-01 onwards was never seen by this optimisation" in html
    best = json.loads((tmp_path / "rep" / "best.json").read_text())
    assert best["window"] == {"start": "2015-01-02", "end": "2018-12-31"}
    study = optuna.load_study(study_name="cli", storage=open_storage(str(storage)))
    assert study.user_attrs["holdout"] == "2019-01-01"
    assert study.user_attrs["window"]["end"] == "2018-12-31"
    # again: the study resumes (the grid is complete: nothing new to run)
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "rep2")], env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert "resumed study cli: it had 6 trials; 0 more now" in again.output


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["-p", "fast=5..50", "-o", "sharp"], "--objective sharp: unknown; expected one of sharpe, sortino"),
        (["-p", "fast=50..5"], "the range 50..5 is empty"),
        (["-p", "fast=5..50", "--holdout", "soon"], "--holdout: 'soon' is not a date"),
        (
            ["-p", "fast=5..50", "--storage", "postgresql+psycopg://u:pw123456@127.0.0.1:1/d"],
            "u:***@127.0.0.1",
        ),
    ],
)
def test_the_command_fails_in_one_line(tmp_path, sample_store, extra, says):
    sets = [f"data.dir={sample_store.root}", "run.symbols=SPY", "run.start=2015-01-02", "run.end=2018-12-31"]
    sets += ["strategy.name=trend"]
    args = ["optimize", *(a for s in sets for a in ("--set", s)), *extra]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.output
    assert "pw123456" not in result.output


def test_a_worker_error_reaches_the_caller_and_stops_the_study(tmp_path, sample_store):
    two_symbols = make_settings(sample_store, run={"symbols": ["SPY", "TLT"], "end": "2016-12-31"})
    with pytest.raises(StudyError, match="--path research: the research path runs one trend strategy"):
        run_study(
            two_symbols,
            parse_space(["fast=5..20"]),
            n_trials=4,
            storage=str(tmp_path / "s.journal"),
            workers=2,
            path="research",
            store=sample_store,
        )


def test_the_command_explains_itself_with_examples():
    result = runner.invoke(app, ["optimize", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Example: hflite optimize --config configs/demo.toml --param fast=5..50" in result.output
    assert "postgresql+psycopg://" in result.output and "--workers" in result.output
