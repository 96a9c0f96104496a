r"""``hflite optimize``: an Optuna study over a config's parameters, with its report (hflite.lab.optimize).

A plain function; ``hflite.cli`` registers it as a top-level command.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from hflite.cli_errors import fail
from hflite.tables import Col, print_table

#: ``--param``, shared with ``hflite walkforward``.
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        help="A parameter to search (repeatable): fast=5..50 (integers), risk.risk_pct=0.25..1:0.25 "
        "(stepped), stop_atr=1.0..4.0:log (log-uniform floats; 1..4:log would be integers), ma=sma,ema "
        "(choices). A bare name means strategy.<name>.",
    ),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")]


def optimize(
    config: ConfigOpt = None,
    param: ParamOpt = None,
    objective: Annotated[
        list[str] | None,
        typer.Option(
            "--objective",
            "-o",
            help="What to optimise (repeatable: several give a Pareto front): sharpe (default), sortino, "
            "calmar, cagr, total_return, max_drawdown, profit_factor, hit_rate (maximised), volatility, "
            "turnover (minimised).",
        ),
    ] = None,
    trials: Annotated[int, typer.Option(min=0, help="New trials to run (a resumed study adds them).")] = 100,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Where the study lives: a journal file path (default <data dir>/../lab/studies.journal), "
            "sqlite:///file.db, or postgresql+psycopg://user@host/db to share it between machines."
        ),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option(
            help="Study name (default <run name>-<objectives>-<hash of config and space>: the same command "
            "resumes the same study)."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes running trials at once (they share --storage).")
    ] = 1,
    seed: Annotated[int, typer.Option(help="Sampler seed (one worker: same seed, same trials).")] = 0,
    sampler: Annotated[
        str,
        typer.Option(
            help="auto (TPE for one objective, NSGA-II for several), tpe, nsga2, random or grid (every "
            "point of choices and stepped ranges, in a seeded order)."
        ),
    ] = "auto",
    holdout: Annotated[
        str,
        typer.Option(
            help="First day no trial may see (YYYY-MM-DD), or 'none'. The report backtests the best "
            "parameters on it once, for the record."
        ),
    ] = "2023-01-01",
    path: Annotated[
        str,
        typer.Option(
            help="auto (the research path where it applies: one trend symbol, no stops, risk profile "
            "minimal; else the engine), engine, or research (fail if it does not apply)."
        ),
    ] = "auto",
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Stop starting new trials after this many seconds.")
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a setting: section.key=value (repeatable), e.g. --set risk.profile=minimal.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default reports/optimize-<study name>).")
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Rows of the final table of the best trials.")] = 10,
    wide: Annotated[bool, typer.Option("--wide", help="Every column of the table at full width.")] = False,
) -> None:
    r"""Search a strategy's parameters with Optuna and write a report on the best ones and their stability.

    Each trial is a backtest of the config with the suggested parameters (same risk gate, fees and slippage), on the research path when it applies (about 15 ms) or the full engine. Invalid sets (fast >= slow) are pruned. The study is kept in --storage: running the same command again resumes it; `hflite validate` reads it. The hold-out (default 2023-01-01 onwards) is never seen by a trial.

    Example: hflite optimize --config configs/demo.toml --param fast=5..50 --param slow=20..200 --trials 200

    Two objectives, 2 processes: hflite optimize -c configs/demo.toml -p fast=5..50 -p slow=20..200 -o sharpe -o max_drawdown --workers 2

    One symbol on the research path: hflite optimize -c configs/demo.toml --set run.symbols=SPY --set strategy.stop_atr=0 --set risk.profile=minimal -p fast=5..50 -p slow=20..200 -p ma=sma,ema --trials 1000

    Shared between machines: hflite optimize -c configs/demo.toml -p fast=5..50 --storage postgresql+psycopg://hflite@db-host/studies --study demo-fast
    """  # noqa: E501  (one line per paragraph: the help wraps it to the terminal)
    from hflite.cli import _guard, _load
    from hflite.config import ConfigError
    from hflite.lab.optimize import OBJECTIVES, StudyError, default_storage, mask_url, resolve_sampler
    from hflite.lab.space import parse_space
    from hflite.lab.trial import before_holdout

    settings = _load(config, sets)
    objectives = tuple(objective or ["sharpe"])
    for o in objectives:
        if o not in OBJECTIVES:
            fail(f"--objective {o}: unknown; expected one of {', '.join(OBJECTIVES)}")
    if len(set(objectives)) != len(objectives):
        fail("--objective: an objective is given twice")
    if path not in ("auto", "engine", "research"):
        fail(f"--path: expected auto, engine or research, got {path!r}")
    try:
        params = parse_space(param or [])
        resolve_sampler(sampler, objectives)
    except (ConfigError, StudyError) as exc:
        fail(str(exc))
    cut = _holdout(holdout)
    try:
        opt_settings = before_holdout(settings, cut)
    except ConfigError as exc:
        fail(str(exc))
    url = storage or default_storage(settings)
    result = _run(
        opt_settings, params, objectives, trials, url, study, workers, seed, sampler, path, timeout, cut
    )
    console = Console()
    if result.n_before:
        console.print(
            f"resumed study [bold]{escape(result.study_name)}[/]: it had {result.n_before} trials; "
            f"{result.n_complete + result.n_pruned} more now",
            highlight=False,
        )
    _print_top(console, result, top, wide)
    folder = out or settings.report.dir / f"optimize-{result.study_name}"
    index = _guard(lambda: _report(result, folder, settings, config))
    if index is None:
        return
    console.print(f"Report: [bold]{escape(str(index))}[/]", highlight=False)
    validate = (
        f"hflite validate {f'--config {config} ' if config is not None else ''}--study {result.study_name}"
    )
    if url == "memory":  # the study ends with this process
        console.print(
            "The study was in memory only: run it with --storage FILE (or the default) to validate it later.",
            highlight=False,
            soft_wrap=True,
        )
        return
    validate += f" --storage {mask_url(url)}"
    console.print(f"Validate it: {escape(validate)}", highlight=False, soft_wrap=True)


def _holdout(holdout: str) -> str | None:
    import pandas as pd

    text = holdout.strip()
    if text.lower() == "none":
        return None
    try:
        return str(pd.Timestamp(text).date())
    except ValueError:
        fail(f"--holdout: {holdout!r} is not a date (YYYY-MM-DD) or 'none'")


def _run(
    settings: Any,
    params: list[Any],
    objectives: tuple[str, ...],
    trials: int,
    url: str,
    study: str | None,
    workers: int,
    seed: int,
    sampler: str,
    path: str,
    timeout: float | None,
    holdout: str | None,
) -> Any:
    from hflite.cli import _guard
    from hflite.cli_ai import ProgressBar
    from hflite.engine.run import open_store
    from hflite.lab.optimize import StudyError, run_study
    from hflite.lab.trial import InvalidParams

    def work(say: Any) -> Any:
        store = open_store(settings)

        def progress(done: int, total: int, best: float | None) -> None:
            shown = "—" if best is None or not math.isfinite(best) else f"{best:.3f}"
            say(f"trial {done}/{total} best {objectives[0]} {shown}", done / total if total else 1.0)

        return run_study(
            settings,
            params,
            objectives=objectives,
            n_trials=trials,
            store=store,
            storage=url,
            study_name=study,
            workers=workers,
            seed=seed,
            sampler=sampler,
            path=path,  # type: ignore[arg-type]
            progress=progress,
            timeout=timeout,
            holdout=holdout,
        )

    with ProgressBar() as say:
        try:
            return _guard(lambda: work(say))
        except (StudyError, InvalidParams) as exc:  # a storage, a resume refused, a grid without steps
            fail(str(exc))


def _report(result: Any, folder: Path, settings: Any, config: Path | None) -> Path:
    from hflite.analytics.report import ReportError
    from hflite.cli_ai import ProgressBar
    from hflite.lab.optimize_report import write_optimize_report

    with ProgressBar() as say:
        try:
            return write_optimize_report(
                result, folder, full_settings=settings, config_path=config, progress=say
            )
        except ReportError as exc:
            fail(str(exc), code=1)


def _param_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "—" if v is None else str(v)


def _print_top(console: Console, result: Any, top: int, wide: bool) -> None:
    from hflite.lab.optimize import top_trials

    multi = len(result.objectives) > 1
    if multi:
        direction = -1.0 if result.directions[0] == "maximize" else 1.0
        trials = sorted(result.best_trials, key=lambda t: (direction * t.values[0], t.number))[:top]
        title = f"Pareto front of {result.study_name}: {len(result.best_trials)} trials"
    else:
        trials = top_trials(result.study, result.objectives, top)
        title = f"best of {result.n_total} trials in {result.study_name}"
    cols = [
        Col("trial", "count"),
        *[Col(o, "number", digits=3) for o in result.objectives],
        *[Col(p.name, "text") for p in result.params],
        Col("sharpe", "number", digits=2, default="sharpe" not in result.objectives),
        Col("CAGR %", "number", digits=2),
        Col("max DD %", "number", digits=2),
        Col("trades", "count"),
        Col("path", "id", default=False),
        Col("seconds", "number", digits=3, default=False),
    ]
    rows = []
    for t in trials:
        a = t.user_attrs
        rows.append(
            {
                "trial": t.number,
                **{o: v for o, v in zip(result.objectives, t.values, strict=True)},
                **{p.name: _param_text(t.params.get(p.key)) for p in result.params},
                "sharpe": a.get("sharpe"),
                "CAGR %": _pct(a.get("cagr")),
                "max DD %": _pct(a.get("max_drawdown")),
                "trades": a.get("trades"),
                "path": a.get("path"),
                "seconds": a.get("seconds"),
            }
        )
    print_table(console, cols, rows, wide=wide, title=title)
    summary = (
        f"{result.n_complete} trials completed and {result.n_pruned} pruned in {result.seconds:.1f} s "
        f"({result.trials_per_second:.1f}/s, {result.workers} worker{'s' if result.workers > 1 else ''}); "
        f"the study holds {result.n_total} completed trials ({result.n_distinct} distinct parameter sets)"
    )
    console.print(summary, highlight=False)
    if not trials:
        reasons = [t.user_attrs["invalid"] for t in result.study.trials if "invalid" in t.user_attrs]
        why = f"; the first: {reasons[0]}" if reasons else ""
        console.print(
            f"[yellow]no trial completed[/]: every parameter set was rejected{escape(why)} (see trials.csv)",
            highlight=False,
            soft_wrap=True,
        )


def _pct(v: Any) -> float | None:
    return None if v is None else float(v) * 100.0
