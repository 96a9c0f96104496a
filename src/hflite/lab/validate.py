"""``hflite validate``: is this result real? One report, verdict first.

Everything here runs on the **research window**: the config's period cut before the hold-out
(2023-01-01 by default), the period an optimiser may have seen. The hold-out period is then traded once
with the same parameters and reported on its own, never used to choose anything.

What it computes (each in its section of the report):

- **Candidates.** Overfitting statistics compare the chosen parameters with the alternatives that were
  (or could have been) tried. With ``--study`` they are the optimiser's own trials (the best ones and a
  spread of the rest, re-run on the research window) and N is the number of trials the study ran. Without
  a study they are the config's numeric strategy parameters moved one at a time by -50%, -25%, +25% and
  +50% (the parameter perturbation test), and N is their number unless ``--trials-tried`` says more.
- **Deflated Sharpe ratio** of the chosen run given N trials and the variance of their Sharpe ratios.
- **PBO** by CSCV on the candidates' daily returns.
- **Purged k-fold and CPCV over periods**: the days are cut into groups; in each split the best
  candidate on the training days (purged, with an embargo after each test group) trades the test days.
  CPCV's paths give a distribution of out-of-sample Sharpe ratios; the k-fold gives one path.
- **Monte Carlo**, **regimes, years and stress periods**, **look-ahead and recursive analysis**:
  :mod:`hflite.lab.montecarlo`, :mod:`hflite.lab.periods`, :mod:`hflite.lab.lookahead`.
- **The plan's success criteria** as a checklist (Sharpe > 1, max drawdown <= 15%, beat buy-and-hold SPY
  and BTC, hit rate > 55% with positive expectancy) next to the lab's own (DSR >= 0.95, PBO < 0.5,
  CPCV median Sharpe > 0, beats random entries at the 95th percentile, no look-ahead, a positive
  hold-out), each PASS or FAIL with its number.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hflite.config import Settings
from hflite.data.store import Store
from hflite.lab import stats
from hflite.lab.trial import (
    DEFAULT_HOLDOUT,
    Evaluator,
    InvalidParams,
    TrialOutcome,
    before_holdout,
    derive,
    with_window,
)

Progress = Callable[[str, float], None]

#: The benchmark name of the equal-weight buy and hold of the traded symbols.
EQUAL_WEIGHT = "Equal-weight buy & hold"

#: Moves of each numeric parameter for the perturbation candidates.
PERTURBATIONS = (-0.5, -0.25, 0.25, 0.5)


@dataclass
class Candidates:
    """The parameter sets the chosen one is compared with, and their daily returns (T x M)."""

    source: str  # "study <name>" or "perturbation"
    labels: list[str]
    params: list[dict[str, Any]]
    returns: pd.DataFrame  # one column per candidate; the chosen one is column 0
    sharpes: np.ndarray  # annualised, per candidate
    n_trials: int  # N for the deflated Sharpe ratio
    var_sr: float  # variance of the trials' Sharpe ratios, per period (the DSR's V[SR])
    note: str = ""


@dataclass
class CVResult:
    """Out-of-sample Sharpe ratios of selection by cross-validation over periods."""

    kind: str  # "cpcv" or "purged k-fold"
    n_groups: int
    n_test_groups: int
    n_splits: int
    path_sharpes: np.ndarray  # annualised, one per path
    picks: list[str]  # the candidate chosen in each split
    embargo_days: int

    @property
    def median(self) -> float:
        return float(np.median(self.path_sharpes)) if len(self.path_sharpes) else math.nan


@dataclass
class Check:
    name: str
    passed: bool | None  # None: not applicable (with why in the value)
    value: str
    target: str
    group: str  # "plan" or "lab"


@dataclass
class Validation:
    """Everything the report shows."""

    settings: Settings
    window: tuple[pd.Timestamp, pd.Timestamp]
    holdout: pd.Timestamp | None
    metrics: dict[str, float]
    bench: dict[str, dict[str, float]]
    chosen: TrialOutcome
    candidates: Candidates
    dsr: stats.DeflatedSharpe | None
    pbo: stats.PBOResult | None
    cpcv: CVResult | None
    kfold: CVResult | None
    holdout_metrics: dict[str, float] | None
    holdout_bench: dict[str, dict[str, float]]
    analyses: dict[str, Any] = field(default_factory=dict)  # montecarlo, periods, lookahead, perturbation
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def verdict(self) -> tuple[str, str]:
        """(level, sentence): "good" when every lab check passes, "bad" when the edge is not there
        (DSR, CPCV or the random-entry null fail), "mixed" otherwise."""
        lab = [c for c in self.checks if c.group == "lab" and c.passed is not None]
        failed = [c.name for c in lab if not c.passed]
        core = {"Deflated Sharpe ratio", "CPCV median out-of-sample Sharpe", "Beats random entries"}
        if not lab:
            return "mixed", "NOT ENOUGH EVIDENCE: no lab check could run"
        if not failed:
            return "good", f"LIKELY REAL: all {len(lab)} lab checks pass"
        if core & set(failed):
            return "bad", f"NOT PROVEN: {', '.join(failed)} failed"
        return "mixed", f"INCONCLUSIVE: {', '.join(failed)} failed; the core checks pass"


# ----------------------------------------------------------------------------------- candidates
def _label(values: dict[str, Any]) -> str:
    return ", ".join(f"{k.removeprefix('strategy.')}={v}" for k, v in values.items()) or "as configured"


def perturbation_sets(settings: Settings) -> list[dict[str, Any]]:
    """The config's numeric strategy parameters moved one at a time by :data:`PERTURBATIONS`."""
    out: list[dict[str, Any]] = []
    for name, value in settings.strategy.params().items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
            continue
        for move in PERTURBATIONS:
            moved = value * (1 + move)
            new: int | float = max(1, round(moved)) if isinstance(value, int) else round(moved, 6)
            if new != value:
                out.append({f"strategy.{name}": new})
    return out


def _evaluate_all(
    ev: Evaluator, sets: list[dict[str, Any]], say: Progress, what: str
) -> list[tuple[dict[str, Any], TrialOutcome]]:
    done = []
    for n, values in enumerate(sets):
        say(f"{what} {n + 1}/{len(sets)}", n / max(1, len(sets)))
        try:
            done.append((values, ev.evaluate(values)))
        except InvalidParams:
            continue
    return done


def _matrix(outcomes: list[TrialOutcome]) -> pd.DataFrame:
    cols = {i: o.daily_returns for i, o in enumerate(outcomes)}
    return pd.DataFrame(cols).fillna(0.0)


def _per_period_var(sharpes: np.ndarray, ppy: float) -> float:
    finite = sharpes[np.isfinite(sharpes)]
    return float(np.var(finite / math.sqrt(ppy), ddof=1)) if len(finite) > 1 else 0.0


def candidates_from_study(
    ev: Evaluator, chosen: TrialOutcome, study: Any, top: int, say: Progress
) -> Candidates:
    """The study's trials: its ``top`` best and an even spread of the rest, re-run on the window."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ValueError(f"study {study.study_name!r} has no completed trial")
    n_obj = len(study.directions)
    sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
    ranked = sorted(done, key=lambda t: -sign * (t.values[0] if t.values else -math.inf))
    picked = ranked[: top // 2]
    rest = ranked[top // 2 :]
    if rest:
        idx = np.unique(np.linspace(0, len(rest) - 1, max(0, top - len(picked))).round().astype(int))
        picked += [rest[i] for i in idx]
    distinct = len({tuple(sorted(t.params.items(), key=lambda kv: kv[0])) for t in done})
    sets = [dict(t.params) for t in picked]
    runs = _evaluate_all(ev, sets, say, "re-running the study's trials")
    outcomes = [chosen] + [o for _, o in runs]
    sharpes_all = np.array(
        [float(t.user_attrs.get("sharpe", t.values[0] if n_obj == 1 else math.nan)) for t in done]
    )
    ppy = chosen.metrics.get("periods_per_year", 252.0)
    return Candidates(
        source=f"study {study.study_name}",
        labels=["chosen: " + _label(chosen.params)] + [_label(v) for v, _ in runs],
        params=[chosen.params] + [v for v, _ in runs],
        returns=_matrix(outcomes),
        sharpes=np.array([o.metrics["sharpe"] for o in outcomes]),
        n_trials=distinct,
        var_sr=_per_period_var(sharpes_all, ppy),
        note=f"{len(runs)} of the study's {len(done)} completed trials re-run on the research window "
        f"(the {len(ranked[: top // 2])} best and an even spread of the rest); N = {distinct} distinct "
        "parameter sets tried (a sampler's repeats of a point are not new trials)",
    )


def perturbation_candidates(
    ev: Evaluator, chosen: TrialOutcome, trials_tried: int | None, say: Progress
) -> Candidates:
    """The chosen parameters' one-at-a-time perturbations."""
    runs = _evaluate_all(ev, perturbation_sets(ev.base), say, "parameter perturbations")
    outcomes = [chosen] + [o for _, o in runs]
    sharpes = np.array([o.metrics["sharpe"] for o in outcomes])
    n = max(len(outcomes), trials_tried or 0)
    ppy = chosen.metrics.get("periods_per_year", 252.0)
    told = f"--trials-tried {trials_tried}" if trials_tried else f"the {len(outcomes)} candidates"
    return Candidates(
        source="perturbation",
        labels=["chosen: as configured"] + [_label(v) for v, _ in runs],
        params=[{}] + [v for v, _ in runs],
        returns=_matrix(outcomes),
        sharpes=sharpes,
        n_trials=n,
        var_sr=_per_period_var(sharpes, ppy),
        note=(
            "no study given: the candidates are the configured numeric strategy parameters moved one at a "
            f"time by {', '.join(f'{m:+.0%}' for m in PERTURBATIONS)}; N = {n} (from {told}). If you tried "
            "more settings than that by hand, pass --trials-tried, or the deflated Sharpe is too kind"
        ),
    )


# ------------------------------------------------------------------------------- cross-validation
def _select_and_trade(
    m: np.ndarray, train: np.ndarray, test: np.ndarray, ppy: float
) -> tuple[int, np.ndarray]:
    sr = stats.sharpe(m[train], ppy)
    sr = np.where(np.isfinite(sr), sr, -np.inf)
    best = int(np.argmax(sr))
    return best, m[test, best]


def _flat_is_zero(sharpes: object) -> np.ndarray:
    """Sharpe ratios with a path that never moved (no position: NaN) counted as 0, what it earned."""
    return np.nan_to_num(np.asarray(sharpes, dtype=float), nan=0.0)


def cross_validate(
    cand: Candidates, ppy: float, n_groups: int = 6, n_test_groups: int = 2, embargo_frac: float = 0.01
) -> tuple[CVResult | None, CVResult | None]:
    """CPCV and purged k-fold selection over the candidates' daily returns (None when there is only one
    candidate: nothing to select)."""
    m = cand.returns.to_numpy()
    n_obs, n_cand = m.shape
    if n_cand < 2 or n_obs < n_groups * 20:
        return None, None
    plan = stats.cpcv_splits(n_obs, n_groups, n_test_groups, embargo_frac=embargo_frac)
    values, picks = [], []
    for split in plan.splits:
        best, test_returns = _select_and_trade(m, split.train, split.test, ppy)
        values.append(test_returns)
        picks.append(cand.labels[best])
    paths = stats.cpcv_paths(plan, values)
    cpcv = CVResult(
        "cpcv",
        n_groups,
        n_test_groups,
        len(plan.splits),
        _flat_is_zero(stats.sharpe(paths.T, ppy)),
        picks,
        int(math.floor(embargo_frac * n_obs)),
    )
    times = np.arange(n_obs)
    path = np.full(n_obs, np.nan)
    k_picks = []
    for train, test in stats.purged_kfold(times, times, k=n_groups, embargo_frac=embargo_frac):
        best, test_returns = _select_and_trade(m, train, test, ppy)
        path[test] = test_returns
        k_picks.append(cand.labels[best])
    kfold = CVResult(
        "purged k-fold",
        n_groups,
        1,
        n_groups,
        _flat_is_zero(np.array([float(stats.sharpe(path, ppy))])),
        k_picks,
        int(math.floor(embargo_frac * n_obs)),
    )
    return cpcv, kfold


# ------------------------------------------------------------------------------------ the checks
def _pct(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.1%}"


def _num(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.2f}"


def plan_checks(metrics: dict[str, float], bench: dict[str, dict[str, float]]) -> list[Check]:
    """The plan's success criteria on the research window's run."""
    out = [
        Check("Sharpe ratio", metrics["sharpe"] > 1.0, _num(metrics["sharpe"]), "> 1.0", "plan"),
        Check(
            "Max drawdown",
            abs(metrics["max_drawdown"]) <= 0.15,
            _pct(metrics["max_drawdown"]),
            "no deeper than -15% (plan: 10-15%)",
            "plan",
        ),
    ]
    for name, m in bench.items():
        if name == EQUAL_WEIGHT:  # reported, not one of the plan's criteria
            continue
        out.append(
            Check(
                f"Beats {name.removesuffix(' buy & hold')} buy & hold",
                metrics["cagr"] > m["cagr"],
                f"CAGR {_pct(metrics['cagr'])} vs {_pct(m['cagr'])}",
                "higher CAGR",
                "plan",
            )
        )
    hit, avg = metrics["hit_rate"], metrics["avg_trade"]
    out.append(
        Check(
            "Win rate with positive expectancy",
            (hit > 0.55 and avg > 0) if math.isfinite(hit) else None,
            f"{_pct(hit)}, avg trade {avg:,.0f} USD" if math.isfinite(hit) else "no closed trade",
            "> 55% and avg trade > 0",
            "plan",
        )
    )
    return out


def lab_checks(v: Validation) -> list[Check]:
    out = []
    if v.dsr is not None:
        out.append(
            Check(
                "Deflated Sharpe ratio",
                v.dsr.dsr >= 0.95,
                f"{v.dsr.dsr:.3f} (N = {v.dsr.n_trials})",
                ">= 0.95",
                "lab",
            )
        )
    if v.pbo is not None:
        out.append(
            Check("Probability of backtest overfitting", v.pbo.pbo < 0.5, f"{v.pbo.pbo:.2f}", "< 0.5", "lab")
        )
    else:
        out.append(Check("Probability of backtest overfitting", None, "one candidate only", "< 0.5", "lab"))
    if v.cpcv is not None:
        out.append(
            Check(
                "CPCV median out-of-sample Sharpe",
                v.cpcv.median > 0,
                f"{v.cpcv.median:.2f} over {len(v.cpcv.path_sharpes)} paths",
                "> 0",
                "lab",
            )
        )
    if v.holdout_metrics is not None:
        sr = v.holdout_metrics["sharpe"]
        out.append(
            Check(
                "Hold-out Sharpe (never used to choose)",
                sr > 0 if math.isfinite(sr) else False,
                _num(sr),
                "> 0",
                "lab",
            )
        )
    return out


def validate(
    settings: Settings,
    store: Store | None = None,
    *,
    holdout: object | None = DEFAULT_HOLDOUT,
    study: Any = None,
    top: int = 30,
    trials_tried: int | None = None,
    n_groups: int = 6,
    n_test_groups: int = 2,
    embargo_frac: float = 0.01,
    paths: int = 1000,
    seed: int = 0,
    use_best: bool = True,
    progress: Progress | None = None,
) -> Validation:
    """Run every analysis of ``settings`` (see the module docstring). With a single-objective ``study``
    and ``use_best``, the parameters validated are the study's best trial's, not the config's."""
    import time

    from hflite.analytics.metrics import benchmark_metrics, run_metrics

    t0 = time.perf_counter()
    say = progress or (lambda _m, _f: None)
    notes: list[str] = []
    values: dict[str, Any] = {}
    if study is not None and use_best:
        values, why = best_values(study)
        notes.append(why)
        if values:
            settings = derive(settings, values)
    research = before_holdout(settings, holdout)
    warmup = _study_warmup(study) if study is not None else None
    say("loading data", 0.02)
    ev = Evaluator(research, store, warmup=warmup)
    say("the chosen parameters", 0.05)
    result = ev.backtest(None, run_id=f"{settings.run.name}-validate")
    metrics = run_metrics(result)
    bench = benchmark_metrics(result)
    bench[EQUAL_WEIGHT] = _equal_weight(ev, result)
    chosen = dataclasses.replace(ev.evaluate({}), params=values)
    ppy = metrics["periods_per_year"]
    if study is not None:
        cand = candidates_from_study(ev, chosen, study, top, lambda m, f: say(m, 0.1 + 0.3 * f))
    else:
        cand = perturbation_candidates(ev, chosen, trials_tried, lambda m, f: say(m, 0.1 + 0.3 * f))
    say("deflated Sharpe, PBO, cross-validation", 0.45)
    dsr = None
    r = chosen.daily_returns.to_numpy()
    if len(r) > 10 and np.std(r) > 0:
        dsr = stats.deflated_sharpe(r, cand.n_trials, cand.var_sr)
    pbo_res = None
    m = cand.returns.to_numpy()
    moving = m[:, np.std(m, axis=0) > 0]
    if moving.shape[1] >= 2 and len(m) >= 16:
        # a candidate flat over a block (no position in it) has a Sharpe of 0 there, not NaN
        pbo_res = stats.pbo(m, n_splits=16, metric=lambda x: np.nan_to_num(stats.sharpe(x, ppy), nan=0.0))
    elif cand.returns.shape[1] >= 2:
        notes.append(
            f"PBO: not computed ({moving.shape[1]} of {m.shape[1]} candidates traded, over {len(m)} days)"
        )
    cpcv, kfold = cross_validate(cand, ppy, n_groups, n_test_groups, embargo_frac)
    hold_m, hold_b = None, {}
    cut = pd.Timestamp(holdout) if holdout is not None else None
    if cut is not None and pd.Timestamp(settings.run.end) >= cut:
        say("the hold-out period", 0.55)
        hold_ev = Evaluator(with_window(settings, start=cut), ev.store)
        hold_result = hold_ev.backtest(None, run_id=f"{settings.run.name}-holdout")
        hold_m, hold_b = run_metrics(hold_result), benchmark_metrics(hold_result)
        hold_b[EQUAL_WEIGHT] = _equal_weight(hold_ev, hold_result)
    v = Validation(
        settings=settings,
        window=(pd.Timestamp(research.run.start), pd.Timestamp(research.run.end)),
        holdout=cut,
        metrics=metrics,
        bench=bench,
        chosen=chosen,
        candidates=cand,
        dsr=dsr,
        pbo=pbo_res,
        cpcv=cpcv,
        kfold=kfold,
        holdout_metrics=hold_m,
        holdout_bench=hold_b,
        notes=notes,
    )
    v.analyses["result"] = result
    _run_analyses(v, ev, paths, seed, lambda m, f: say(m, 0.6 + 0.35 * f))
    v.checks = plan_checks(metrics, bench) + lab_checks(v) + v.checks
    v.seconds = time.perf_counter() - t0
    return v


def _equal_weight(ev: Evaluator, result: Any) -> dict[str, float]:
    """Metrics of an equal-weight buy and hold of the run's traded symbols on its timeline (each bought
    at its first close in the window; no costs, no rebalancing), with the run's risk-free rate."""
    from hflite.ai.evaluation import buy_and_hold
    from hflite.analytics.metrics import compute_metrics

    md, inst = ev.prep.md, ev.prep.instruments
    usd = {s: md.close_tl[s] * md.fx_tl[inst[s].currency] for s in md.traded}
    curve = buy_and_hold(usd, result.equity.index, result.initial_cash)
    return compute_metrics(curve, None, risk_free=result.risk_free, initial_cash=result.initial_cash)


def _study_warmup(study: Any) -> int | None:
    """The longest warm-up the study's parameter space needs (its int parameters' high ends)."""
    highs = [
        int(d.high)
        for d in (study.trials[0].distributions.values() if study.trials else [])
        if type(d).__name__ == "IntDistribution"
    ]
    return max(highs) + 1 if highs else None


def best_values(study: Any) -> tuple[dict[str, Any], str]:
    """The study's best trial's parameters (dotted keys) and a sentence saying which trial they are; no
    parameters (the config's own) for a study of several objectives, which has no single best."""
    if len(study.directions) > 1:
        return {}, (
            f"study {study.study_name} has {len(study.directions)} objectives and no single best trial: "
            "the config's own parameters are validated"
        )
    best = study.best_trial
    return dict(best.params), (
        f"validated: the best trial (#{best.number}, {_label(best.params)}) of study {study.study_name}"
    )


def _run_analyses(v: Validation, ev: Evaluator, paths: int, seed: int, say: Progress) -> None:
    """Monte Carlo (with the parameter perturbations), periods and look-ahead: their sections and
    checks."""
    from hflite.lab.lookahead import lookahead_analysis
    from hflite.lab.montecarlo import MonteCarloConfig, monte_carlo, perturbation_summary
    from hflite.lab.periods import periods_for_run

    result = v.analyses["result"]
    say("Monte Carlo", 0.0)
    mc = monte_carlo(result, MonteCarloConfig(paths=paths, seed=seed))
    cand = v.candidates
    if len(cand.sharpes) > 2:
        mc = mc.with_perturbations(perturbation_summary(cand.sharpes[1:], float(cand.sharpes[0])))
    v.analyses["montecarlo"] = mc
    sections = [(mc.title, mc.html())]
    if mc.random_entry is not None:
        p = mc.random_entry.p_value
        v.checks.append(
            Check(
                "Beats random entries",
                p <= 0.05,
                f"{p:.1%} of {mc.n_paths} random-entry paths reach its Sharpe",
                "<= 5% of paths",
                "lab",
            )
        )
    else:
        v.checks.append(Check("Beats random entries", None, "no trade to randomise", "<= 5% of paths", "lab"))
    say("regimes, years and stress periods", 0.5)
    try:
        periods = periods_for_run(result, ev.store)
        v.analyses["periods"] = periods
        sections.append((periods.title, periods.html()))
    except ValueError as exc:  # no benchmark: say so in the report
        v.notes.append(f"regimes and stress periods: {exc}")
    say("look-ahead and recursive analysis", 0.7)
    la = lookahead_analysis(ev.prep.strategy, ev.prep.md)
    v.analyses["lookahead"] = la
    sections.append((la.title, la.html()))
    v.checks.append(
        Check(
            "No look-ahead",
            not la.leaks,
            f"{len(la.mismatches)} differing outputs in {la.total_checks} checks",
            "0",
            "lab",
        )
    )
    v.analyses["sections"] = sections
