"""The report of an optimisation: a folder with index.html, trials.csv, neighbourhood.csv and best.json.

It says what was searched and on which data (the hold-out stated plainly), ranks the trials (or shows the
Pareto front), plots the optimisation history, the parameters' importance, the objective's surface over
the most important pairs and its slices, and then asks whether the optimum is a plateau or a spike: the
best parameters' neighbourhood is run again, one parameter moved at a time and a few random points
around it, and a one-line verdict says how much of it stays close to the best. Last, the best
parameters' backtest on the optimisation window and, separately, on the hold-out (reported, never used
to choose). The folder is written atomically, as :func:`hflite.analytics.report.write_report` does.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from plotly.offline import get_plotlyjs

from hflite.analytics.report import (
    _CSS,
    ReportError,
    _figure_html,
    _json_safe,
    _table,
    _thin,
    write_folder,
)
from hflite.analytics.summary import Kind, format_metric
from hflite.config import Settings
from hflite.data.store import Store
from hflite.lab.optimize import StudyResult, default_warmup, top_trials
from hflite.lab.space import Param
from hflite.lab.trial import OBJECTIVES, Evaluator, InvalidParams, TrialOutcome, with_window

#: Files of an optimisation report folder.
REPORT_FILES = ("index.html", "trials.csv", "neighbourhood.csv", "best.json")
#: A neighbour is "close" when its objective is within this share of the best's (20%).
CLOSE = 0.20
#: Moves of one parameter: steps on a coarse stepped range, percentages of the value otherwise.
STEP_MOVES = (-3, -2, -1, 1, 2, 3)
PCT_MOVES = (-0.30, -0.20, -0.10, 0.10, 0.20, 0.30)
#: A stepped range with more points than this is moved by percentages (one step of 1 in 5..200 is noise).
COARSE_POINTS = 30
_TOP_ROWS = 15
_METRIC_ROWS: tuple[tuple[str, str, Kind], ...] = (
    ("Total return", "total_return", "pct"),
    ("CAGR", "cagr", "pct"),
    ("Volatility", "volatility", "pct"),
    ("Sharpe", "sharpe", "ratio"),
    ("Sortino", "sortino", "ratio"),
    ("Calmar", "calmar", "ratio"),
    ("Max drawdown", "max_drawdown", "pct"),
    ("Closed trades", "trades", "count"),
    ("Hit rate", "hit_rate", "pct"),
    ("Profit factor", "profit_factor", "ratio"),
    ("Fees paid (USD)", "fees_usd", "usd"),
    ("Final equity (USD)", "final_equity", "usd"),
)
_KIND: dict[str, Kind] = {key: kind for _, key, kind in _METRIC_ROWS}


# --------------------------------------------------------------------------------- the neighbourhood


@dataclass(frozen=True)
class Move:
    """One neighbour of the optimum: which parameter moved and how (``random`` moves several)."""

    param: str  # the short name, or "random"
    label: str  # "-2 steps", "+10%", "random 3"
    offset: float  # steps or fraction (0 for random moves)
    values: dict[str, Any]


def _snap(p: Param, value: float) -> Any:
    """``value`` clipped to ``p``'s range and onto its step (an int for an integer parameter)."""
    d = p.dist
    assert isinstance(d, IntDistribution | FloatDistribution)
    value = min(max(value, d.low), d.high)
    if d.step is not None:
        value = d.low + round((value - d.low) / d.step) * d.step
        value = min(value, d.high)
    if isinstance(d, IntDistribution):
        return int(round(value))
    return round(float(value), 12)


def _coarse(p: Param) -> bool:
    d = p.dist
    if isinstance(d, IntDistribution | FloatDistribution) and d.step is not None and not d.log:
        return (d.high - d.low) / d.step <= COARSE_POINTS
    return False


def neighbourhood(
    params: Sequence[Param], best: dict[str, Any], *, n_random: int = 20, seed: int = 0
) -> list[Move]:
    """The optimum's neighbours: each numeric parameter moved alone by +-1, 2, 3 steps (a coarse stepped
    range) or +-10, 20, 30 % of its value (others; an integer moves at least 1, 2, 3 steps), the rest at
    the optimum; then ``n_random`` points with every numeric parameter moved at random (up to 2 steps or
    20 %). Points outside the range are clipped; a point equal to the optimum or to an earlier one is
    dropped."""
    numeric = [p for p in params if not isinstance(p.dist, CategoricalDistribution) and p.key in best]
    seen = {json.dumps(best, sort_keys=True, default=str)}
    moves: list[Move] = []

    def add(move: Move) -> None:
        key = json.dumps(move.values, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            moves.append(move)

    for p in numeric:
        d = p.dist
        assert isinstance(d, IntDistribution | FloatDistribution)
        x, step = best[p.key], d.step or 1
        if _coarse(p):
            for k in STEP_MOVES:
                add(
                    Move(
                        p.name,
                        f"{k:+d} step{'s' if abs(k) > 1 else ''}",
                        k,
                        {**best, p.key: _snap(p, x + k * step)},
                    )
                )
        elif isinstance(d, IntDistribution):  # a percentage, but at least 1, 2, 3 steps (5 -10% is 5)
            for k, f in zip((3, 2, 1, 1, 2, 3), PCT_MOVES, strict=True):
                n = round(abs(x * f) / d.step)
                label = f"{f:+.0%}" if n >= k else f"{int(math.copysign(k, f)):+d} step{'s' if k > 1 else ''}"
                value = x + math.copysign(max(n, k) * d.step, f)
                add(Move(p.name, label, f, {**best, p.key: _snap(p, value)}))
        else:
            for f in PCT_MOVES:
                add(Move(p.name, f"{f:+.0%}", f, {**best, p.key: _snap(p, x * (1 + f))}))
    rng = np.random.default_rng(seed)
    for i in range(n_random):
        values = dict(best)
        for p in numeric:
            d = p.dist
            assert isinstance(d, IntDistribution | FloatDistribution)
            x = best[p.key]
            if _coarse(p):
                values[p.key] = _snap(p, x + int(rng.integers(-2, 3)) * (d.step or 1))
            else:
                values[p.key] = _snap(p, x * (1 + rng.uniform(-0.2, 0.2)))
        add(Move("random", f"random {i + 1}", 0.0, values))
    return moves


@dataclass(frozen=True)
class Stability:
    """How the objective falls off around the optimum."""

    objective: str
    best: float  # the optimum re-run (equal to the study's best on the same data)
    rows: pd.DataFrame  # one row per neighbour: param, move, offset, value, change, close, params
    share_close: float  # share of the valid neighbours within CLOSE of the best
    worst: float
    worst_move: str
    verdict: str


def stability(
    evaluator: Evaluator,
    params: Sequence[Param],
    best: dict[str, Any],
    objective: str,
    *,
    n_random: int = 20,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Stability:
    """Run the optimum and its :func:`neighbourhood` and judge it: the share of neighbours within 20% of
    the best objective value, and the worst drop."""
    direction = OBJECTIVES[objective][1]
    centre = evaluator.evaluate(best).value(objective)
    moves = neighbourhood(params, best, n_random=n_random, seed=seed)
    rows = []
    for i, m in enumerate(moves):
        value: float | None = None
        try:
            score = evaluator.evaluate(m.values).value(objective)
        except InvalidParams as exc:
            note = str(exc)
        else:
            value, note = score, ("no trades (worst value)" if not math.isfinite(score) else "")
        rows.append(
            {"param": m.param, "move": m.label, "offset": m.offset, "value": value, "note": note, **m.values}
        )
        if progress is not None:
            progress(i + 1, len(moves))
    frame = pd.DataFrame(rows, columns=["param", "move", "offset", "value", "note", *(p.key for p in params)])
    values = pd.to_numeric(frame["value"], errors="coerce").astype(float)  # rejected -> NaN
    sign = 1.0 if direction == "maximize" else -1.0
    tol = CLOSE * abs(centre) if math.isfinite(centre) else math.inf
    with np.errstate(invalid="ignore"):
        better = sign * (values - centre)  # below 0: worse than the optimum
    valid = values.notna()
    frame["change"] = values - centre
    frame["close"] = valid & (better >= -tol)
    share = float(frame.loc[valid, "close"].mean()) if valid.any() else math.nan
    if valid.any():
        pos = better[valid].fillna(-math.inf).idxmin()
        name, move = frame.at[pos, "param"], frame.at[pos, "move"]
        worst, worst_move = (
            float(values[pos]),
            (f"{name} {move}" if name != "random" else f"the {move} point"),
        )
    else:
        worst, worst_move = math.nan, ""
    n_valid = int(valid.sum())
    verdict = _verdict(objective, centre, share, n_valid, worst, worst_move, len(frame) - n_valid)
    return Stability(objective, centre, frame, share, worst, worst_move, verdict)


def _verdict(objective: str, best: float, share: float, n: int, worst: float, move: str, invalid: int) -> str:
    if n == 0:
        return f"no valid neighbour to judge the optimum's stability ({invalid} rejected by the config)"
    word = "stable" if share >= 0.75 else ("fragile" if share < 0.5 else "moderately stable")
    if math.isfinite(worst) and math.isfinite(best):
        drop = f"{worst:.3f}" + (f" ({(worst - best) / abs(best):+.0%})" if best else "")
    else:
        drop = "no trades" if not math.isfinite(worst) else f"{worst:.3f}"
    skipped = f"; {invalid} rejected by the config" if invalid else ""
    return (
        f"{word}: {share:.0%} of {n} neighbours are within {CLOSE:.0%} of the best {objective} ({best:.3f}); "
        f"the worst, {move}, gives {drop}{skipped}"
    )


# ------------------------------------------------------------------------------------------ the folder


def write_optimize_report(
    result: StudyResult,
    out_dir: Path,
    *,
    full_settings: Settings | None = None,
    config_path: str | Path | None = None,
    store: Store | None = None,
    evaluator: Evaluator | None = None,
    n_random: int = 20,
    seed: int = 0,
    progress: Callable[[str, float], None] | None = None,
) -> Path:
    """Write the report folder of ``result`` (see :data:`REPORT_FILES`) and return index.html's path.

    ``full_settings``: the config before the hold-out was cut off (its period after ``result.holdout``
    is the hold-out backtest); ``evaluator`` reuses the optimisation window's loaded data. Raises
    :class:`~hflite.analytics.report.ReportError` when the folder cannot be written.
    """
    say = progress or (lambda _m, _f: None)
    out_dir = Path(out_dir)
    objective = result.objectives[0]
    warmup = default_warmup(result.settings, result.params)
    ev = evaluator or Evaluator(result.settings, store, warmup=warmup, path=result.path)  # type: ignore[arg-type]
    best_run = holdout_run = None
    stab = None
    if result.best_params:
        say("re-running the best", 0.05)
        best_run = ev.evaluate(result.best_params)
        stab = stability(
            ev,
            result.params,
            result.best_params,
            objective,
            n_random=n_random,
            seed=seed,
            progress=lambda i, n: say(f"neighbourhood {i}/{n}", 0.1 + 0.75 * i / n),
        )
        holdout_settings = _holdout_settings(result, full_settings)
        if holdout_settings is not None:
            say("hold-out backtest", 0.9)
            hold_ev = Evaluator(holdout_settings, store or ev.store, warmup=warmup, path=result.path)  # type: ignore[arg-type]
            holdout_run = hold_ev.evaluate(result.best_params)
    say("writing the report", 0.95)

    def fill(tmp: Path) -> None:
        trials_frame(result).to_csv(tmp / "trials.csv", index=False)
        (stab.rows if stab is not None else pd.DataFrame()).to_csv(tmp / "neighbourhood.csv", index=False)
        best = best_record(result, stab, best_run, holdout_run, config_path)
        (tmp / "best.json").write_text(
            json.dumps(_json_safe(best), indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        html = render_html(result, stab, best_run, holdout_run, config_path, full_settings)
        (tmp / "index.html").write_text(html, encoding="utf-8")

    write_folder(out_dir, fill)
    return out_dir / "index.html"


def _holdout_settings(result: StudyResult, full: Settings | None) -> Settings | None:
    """The hold-out period of the full config (None without a hold-out, or when it has no bars)."""
    if result.holdout is None or full is None:
        return None
    start = pd.Timestamp(result.holdout)
    if pd.Timestamp(full.run.end) <= start:
        return None
    return with_window(full, start=start)


def trials_frame(result: StudyResult) -> pd.DataFrame:
    """Every trial: number, state, objective value(s), parameters (dotted keys), metrics, path, seconds,
    and the reason of a pruned one."""
    rows = []
    for t in result.study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for i, o in enumerate(result.objectives):
            row[o if len(result.objectives) > 1 else f"value_{o}"] = t.values[i] if t.values else None
        row.update(t.params)
        row.update({k: v for k, v in t.user_attrs.items()})
        row["started_utc"] = t.datetime_start
        rows.append(row)
    return pd.DataFrame(rows)


def best_record(
    result: StudyResult,
    stab: Stability | None,
    best_run: TrialOutcome | None,
    holdout_run: TrialOutcome | None,
    config_path: str | Path | None,
) -> dict[str, Any]:
    """best.json: the study, the best parameters and value(s), the Pareto front, the stability verdict
    and the two backtests' metrics."""
    front = [
        {
            "number": t.number,
            "values": dict(zip(result.objectives, t.values, strict=True)),
            "params": t.params,
        }
        for t in result.best_trials
    ]
    return {
        "study": result.study_name,
        "storage": result.storage,
        "config": str(config_path) if config_path is not None else None,
        "objectives": {o: OBJECTIVES[o][1] for o in result.objectives},
        "sampler": result.sampler,
        "path": result.path,
        "window": {"start": str(result.settings.run.start), "end": str(result.settings.run.end)},
        "holdout": result.holdout,
        "best_params": result.best_params,
        "best_value": result.best_value,
        "pareto_front": front if len(result.objectives) > 1 else None,
        "trials": {
            "new_complete": result.n_complete,
            "new_pruned": result.n_pruned,
            "before": result.n_before,
            "total_complete": result.n_total,
            "distinct": result.n_distinct,
        },
        "stability": None
        if stab is None
        else {
            "verdict": stab.verdict,
            "share_close": stab.share_close,
            "best": stab.best,
            "worst": stab.worst,
        },
        "optimisation_window_metrics": best_run.metrics if best_run is not None else None,
        "holdout_metrics": holdout_run.metrics if holdout_run is not None else None,
    }


# -------------------------------------------------------------------------------------------- the page


def render_html(
    result: StudyResult,
    stab: Stability | None,
    best_run: TrialOutcome | None,
    holdout_run: TrialOutcome | None,
    config_path: str | Path | None,
    full_settings: Settings | None,
) -> str:
    """The whole self-contained page (plotly.js inlined once)."""
    sections: list[tuple[str, Callable[[], str]]] = [
        ("Setup", lambda: _setup_html(result, config_path, full_settings)),
        ("Pareto front" if len(result.objectives) > 1 else "Best trials", lambda: _best_html(result)),
        ("Optimisation history", lambda: _history_html(result)),
        ("Parameter importance", lambda: _importance_html(result)),
        ("Objective surface", lambda: _contour_html(result)),
        ("Slices", lambda: _slice_html(result)),
        ("Stability of the optimum", lambda: _stability_html(result, stab)),
        ("Best parameters: optimisation window", lambda: _run_html(result, best_run, "window")),
        (
            "Best parameters: hold-out (reported, never used to choose)",
            lambda: _holdout_html(result, holdout_run),
        ),
    ]
    nav = "".join(
        f'<a href="#s{i}">{escape(t.split(":")[0] if ":" in t else t)}</a>'
        for i, (t, _) in enumerate(sections)
    )
    body = "".join(
        f'<section id="s{i}"><h2>{escape(t)}</h2>{fn()}</section>' for i, (t, fn) in enumerate(sections)
    )
    title = escape(f"optimisation · {result.study_name}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}.holdout{{border-left:4px solid #bf8700}}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>HedgeFund-Lite: {title}</h1><nav>{nav}</nav></header>"
        f"<main>{body}</main></body></html>\n"
    )


def holdout_sentence(holdout: str | None) -> str:
    """The plain statement of the hold-out rule the report and the CLI print."""
    if holdout is None:
        return (
            "No hold-out: every date of the config was used to choose the parameters, so nothing here "
            "measures them on unseen data (pass --holdout to keep a final test period)."
        )
    return f"{holdout} onwards was never seen by this optimisation."


def _setup_html(result: StudyResult, config_path: str | Path | None, full: Settings | None) -> str:
    s = result.settings.run
    attrs = result.study.user_attrs
    paths = pd.Series(
        [t.user_attrs.get("path") for t in result.study.get_trials(deepcopy=False)]
    ).value_counts()
    used = ", ".join(f"{k} {v}" for k, v in paths.items()) or "none yet"
    directions = ", ".join(f"{o} ({OBJECTIVES[o][1]})" for o in result.objectives)
    rows = [
        ["Config", str(config_path) if config_path else "(options and --set only)"],
        ["Study", f"{result.study_name} in {result.storage}"],
        ["Optimisation window", f"{s.start} → {s.end} ({s.frequency}, {', '.join(s.symbols)})"],
        ["Hold-out", holdout_sentence(result.holdout)],
        ["Objectives", directions],
        ["Search space", "; ".join(f"{p.name} = {p.describe()}" for p in result.params)],
        ["Sampler", f"{result.sampler} ({result.workers} worker{'s' if result.workers > 1 else ''})"],
        [
            "Trials",
            f"{result.n_complete} completed and {result.n_pruned} pruned in this run "
            f"({result.n_before} before it); {result.n_total} completed in the study "
            f"(the N of the deflated Sharpe), {result.n_distinct} distinct parameter sets",
        ],
        ["Path", f"{result.path} (trials run by path: {used})"],
        ["Speed", f"{result.seconds:.1f} s, {result.trials_per_second:.1f} trials/s"],
        ["Code version", str(attrs.get("code_version", ""))],
    ]
    if full is not None and result.holdout is not None:
        rows.insert(4, ["Full config period", f"{full.run.start} → {full.run.end}"])
    note = (
        '<p class="note">Validate it: <code>hflite validate --config '
        f"{escape(str(config_path) if config_path else 'C')} --study {escape(result.study_name)} "
        f"--storage {escape(result.storage)}</code></p>"
    )
    return (
        f'<p class="holdout"><b>{escape(holdout_sentence(result.holdout))}</b></p>'
        + _table(["", ""], rows, wrap=(1,), fit=True)
        + note
    )


def _fmt_value(v: float | None, objective: str) -> str:
    if v is None:
        return "—"
    return format_metric(float(v), _KIND.get(OBJECTIVES[objective][0], "ratio"))


def _trial_row(t: FrozenTrial, result: StudyResult) -> list[str]:
    a = t.user_attrs
    cells = [str(t.number)]
    cells += [_fmt_value(v, o) for v, o in zip(t.values or [], result.objectives, strict=False)]
    cells += [_param_text(t.params.get(p.key)) for p in result.params]
    cells += [
        format_metric(a.get("sharpe"), "ratio"),
        format_metric(a.get("cagr"), "pct"),
        format_metric(a.get("max_drawdown"), "pct"),
        format_metric(a.get("trades"), "count"),
        str(a.get("path", "")),
    ]
    return cells


def _param_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "—" if v is None else str(v)


def _best_html(result: StudyResult) -> str:
    header = [
        "trial",
        *result.objectives,
        *(p.name for p in result.params),
        "sharpe",
        "CAGR",
        "max DD",
        "trades",
        "path",
    ]
    if len(result.objectives) > 1:
        trials = sorted(result.best_trials, key=lambda t: t.number)
        intro = f"<p>{len(trials)} trials are on the Pareto front: none is beaten on all objectives.</p>"
        fig = _pareto_figure(result)
        return intro + _table(header, [_trial_row(t, result) for t in trials]) + (fig or "")
    trials = top_trials(result.study, result.objectives, _TOP_ROWS)
    if not trials:
        return '<p class="note">No completed trial: every parameter set was rejected.</p>'
    intro = f"<p>The {len(trials)} best of {result.n_total} completed trials by {result.objectives[0]}.</p>"
    return intro + _table(header, [_trial_row(t, result) for t in trials])


def _finite_target(result: StudyResult, index: int = 0) -> Callable[[FrozenTrial], float]:
    """The objective as a plot/importance target, a non-finite value (no trades) as the worst finite one."""
    done = result.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = [t.values[index] for t in done if t.values and math.isfinite(t.values[index])]
    direction = OBJECTIVES[result.objectives[index]][1]
    worst = (min(values) if direction == "maximize" else max(values)) if values else 0.0

    def target(t: FrozenTrial) -> float:
        v = t.values[index] if t.values else math.nan
        return v if math.isfinite(v) else worst

    return target


def _completed(result: StudyResult) -> int:
    return len(result.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _safe_figure(build: Callable[[], go.Figure], name: str) -> str:
    try:
        return _figure_html(build(), name)
    except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as exc:
        return f'<p class="note">Not drawn: {escape(str(exc))}</p>'


def _history_html(result: StudyResult) -> str:
    if _completed(result) == 0:
        return '<p class="note">No completed trial.</p>'
    from optuna.visualization import plot_optimization_history

    def history(i: int, o: str) -> go.Figure:
        fig = plot_optimization_history(result.study, target=_finite_target(result, i), target_name=o)
        return fig.update_layout(title=f"{o} by trial (trials without trades at the worst value)")

    parts = [_safe_figure(partial(history, i, o), f"history-{o}") for i, o in enumerate(result.objectives)]
    return "".join(parts)


def importances(result: StudyResult) -> dict[str, float]:
    """Each parameter's importance for the first objective (PED-ANOVA, Optuna's default evaluator; 0-1,
    summing to 1); empty when there are too few completed trials to tell."""
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    if _completed(result) < 4 or len(result.params) < 1:
        return {}
    finite = _finite_target(result)
    sign = -1.0 if OBJECTIVES[result.objectives[0]][1] == "maximize" else 1.0  # PED-ANOVA ranks low values

    def target(t: FrozenTrial) -> float:
        return sign * finite(t)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "computes importances of low values": handled
            return get_param_importances(result.study, evaluator=PedAnovaImportanceEvaluator(), target=target)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def _importance_html(result: StudyResult) -> str:
    imp = importances(result)
    if not imp:
        return '<p class="note">Too few completed trials (or no variation) to rank the parameters.</p>'
    names = [k.removeprefix("strategy.") for k in imp]
    fig = go.Figure(
        go.Bar(x=list(imp.values())[::-1], y=names[::-1], orientation="h", marker_color="#1f77b4")
    )
    fig.update_layout(
        title=f"importance for {result.objectives[0]}", height=120 + 30 * len(imp), hovermode="closest"
    )
    note = (
        '<p class="note">Evaluator: PED-ANOVA (<code>optuna.importance.PedAnovaImportanceEvaluator</code>, '
        "Optuna's default): how much each parameter's distribution differs between the top trials and all of "
        "them. Importance is about this search's trials, not a causal effect.</p>"
    )
    rows = [[n, f"{v:.3f}"] for n, v in zip(names, imp.values(), strict=True)]
    return note + _table(["parameter", "importance"], rows) + _figure_html(fig, "importance")


def _top_pairs(result: StudyResult, n: int = 3) -> list[tuple[str, str]]:
    keys = list(importances(result)) or [p.key for p in result.params]
    keys = keys[:3]
    return [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :]][:n]


def _contour_html(result: StudyResult) -> str:
    pairs = _top_pairs(result)
    if not pairs or _completed(result) < 2:
        return '<p class="note">A surface needs two searched parameters and completed trials.</p>'
    from optuna.visualization import plot_contour

    o = result.objectives[0]
    parts = [
        '<p class="note">The objective over the most important pairs of parameters (interpolated between '
        "the trials, which are the dots). A broad high region is robust; a lone peak is not.</p>"
    ]

    def contour(a: str, b: str) -> go.Figure:
        fig = plot_contour(result.study, params=[a, b], target=_finite_target(result), target_name=o)
        title = f"{o}: {a.removeprefix('strategy.')} x {b.removeprefix('strategy.')}"
        return fig.update_layout(title=title, hovermode="closest")

    parts += [_safe_figure(partial(contour, a, b), f"contour-{a}-{b}".replace(".", "-")) for a, b in pairs]
    return "".join(parts)


def _slice_html(result: StudyResult) -> str:
    if _completed(result) == 0:
        return '<p class="note">No completed trial.</p>'
    from optuna.visualization import plot_slice

    o = result.objectives[0]
    return _safe_figure(
        lambda: plot_slice(result.study, target=_finite_target(result), target_name=o).update_layout(
            title=f"{o} against each parameter (colour: trial number)", hovermode="closest"
        ),
        "slices",
    )


def _pareto_figure(result: StudyResult) -> str | None:
    from optuna.visualization import plot_pareto_front

    if len(result.objectives) not in (2, 3):
        return None

    def build() -> go.Figure:
        return plot_pareto_front(
            result.study,
            targets=lambda t: tuple(_finite_target(result, i)(t) for i in range(len(result.objectives))),
            target_names=list(result.objectives),
        ).update_layout(hovermode="closest")

    return _safe_figure(build, "pareto")


def _stability_html(result: StudyResult, stab: Stability | None) -> str:
    if stab is None:
        return '<p class="note">No completed trial, so no optimum to probe.</p>'
    o = stab.objective
    rows = stab.rows
    intro = (
        f"<p><b>{escape(stab.verdict)}</b></p>"
        f'<p class="note">The best parameters re-run give {o} {stab.best:.4f}. Each numeric parameter is '
        f"moved alone ({'/'.join(f'{k:+d}' for k in STEP_MOVES)} steps on a range of at most "
        f"{COARSE_POINTS} steps, "
        f"{'/'.join(f'{f:+.0%}' for f in PCT_MOVES)} of its value otherwise) with the others at the optimum, "
        "then every numeric parameter at random within 2 steps or 20 %. Close: within "
        f"{CLOSE:.0%} of the best.</p>"
    )
    if rows.empty:
        return intro
    fig = go.Figure()
    for name, part in rows[rows["param"] != "random"].groupby("param", sort=False):
        part = part.sort_values("offset")
        x = [*part["offset"], 0.0]
        y = [*part["value"].astype(float), stab.best]
        order = np.argsort(x, kind="stable")
        fig.add_trace(
            go.Scatter(x=np.asarray(x)[order], y=np.asarray(y)[order], mode="lines+markers", name=str(name))
        )
    fig.add_hline(y=stab.best, line_dash="dot", line_color="#57606a")
    if math.isfinite(stab.best):
        band = CLOSE * abs(stab.best)
        fig.add_hrect(
            y0=stab.best - band, y1=stab.best + band, fillcolor="#2ca02c", opacity=0.08, line_width=0
        )
    fig.update_layout(
        title=f"{o} as one parameter moves (x: steps, or the fraction moved)", hovermode="closest"
    )
    names = [p.name for p in result.params]
    table_rows = []
    for r in rows.to_dict("records"):
        value = r["value"]
        table_rows.append(
            [
                str(r["param"]),
                str(r["move"]),
                *(_param_text(r.get(p.key)) for p in result.params),
                "rejected"
                if value is None or (isinstance(value, float) and math.isnan(value))
                else f"{value:.4f}",
                "" if value is None or not math.isfinite(float(value)) else f"{float(r['change']):+.4f}",
                "yes" if r["close"] else "no",
                str(r.get("note", "")),
            ]
        )
    table = _table(
        ["param", "move", *names, o, "change", "close", "note"], table_rows, wrap=(len(names) + 6,)
    )
    return intro + _figure_html(fig, "stability") + table


def _metrics_table(metrics: dict[str, float]) -> str:
    rows = [[label, format_metric(metrics.get(key), kind)] for label, key, kind in _METRIC_ROWS]
    return _table(["metric", "value"], rows)


def _equity_figure(run: TrialOutcome, name: str) -> go.Figure:
    eq = _thin(run.equity, 5000)
    fig = go.Figure(go.Scatter(x=eq.index, y=eq.to_numpy(dtype="float64"), mode="lines", name="equity"))
    fig.update_layout(title=name, yaxis_title="USD")
    return fig


def _run_html(result: StudyResult, run: TrialOutcome | None, kind: str) -> str:
    if run is None:
        return '<p class="note">No completed trial.</p>'
    s = result.settings.run
    params = ", ".join(
        f"{k.removeprefix('strategy.')}={_param_text(v)}" for k, v in result.best_params.items()
    )
    intro = (
        f"<p>{escape(params)} on {s.start} → {s.end}, the period the optimisation chose on "
        f"({run.path} path). In-sample: expect it to look better than it will out of sample.</p>"
    )
    return (
        intro
        + _metrics_table(run.metrics)
        + _figure_html(_equity_figure(run, "equity, optimisation window"), kind)
    )


def _holdout_html(result: StudyResult, run: TrialOutcome | None) -> str:
    if result.holdout is None:
        return f"<p>{escape(holdout_sentence(None))}</p>"
    if run is None:
        return (
            f"<p>{escape(holdout_sentence(result.holdout))} The config's period ends before it, so there is "
            "nothing to test on (widen run.end to include the hold-out).</p>"
        )
    intro = (
        f'<p class="holdout"><b>Hold-out, {escape(result.holdout)} → {run.equity.index[-1]:%Y-%m-%d}: '
        "reported here, never used to choose.</b> These are the best parameters of the optimisation window, "
        "run once on the period no trial saw. Looking at this and then searching again would spend the "
        "hold-out: keep it for the final check.</p>"
    )
    return (
        intro + _metrics_table(run.metrics) + _figure_html(_equity_figure(run, "equity, hold-out"), "holdout")
    )


__all__ = [
    "CLOSE",
    "REPORT_FILES",
    "Move",
    "ReportError",
    "Stability",
    "best_record",
    "holdout_sentence",
    "importances",
    "neighbourhood",
    "render_html",
    "stability",
    "trials_frame",
    "write_optimize_report",
]
