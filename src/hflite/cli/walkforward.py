r"""``hflite walkforward``: walk-forward optimisation with a stitched out-of-sample equity
(hflite.lab.walkforward).

A plain function; ``hflite.cli`` registers it as a top-level command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hflite.cli.optimize import ConfigOpt, ParamOpt
from hflite.cli_errors import fail
from hflite.tables import Col, print_table


def walkforward(
    config: ConfigOpt = None,
    param: ParamOpt = None,
    train: Annotated[
        str, typer.Option(help="Train window length: 3y, 18m, 26w or 90d (years, months, weeks, days).")
    ] = "3y",
    test: Annotated[
        str, typer.Option(help="Test window length (same units), traded after each train.")
    ] = "6m",
    step: Annotated[
        str | None, typer.Option(help="How far each window moves forward (default: --test; not shorter).")
    ] = None,
    anchored: Annotated[
        bool,
        typer.Option(
            "--anchored",
            help="Every train window starts at the period's start (default: rolling, fixed length).",
        ),
    ] = False,
    objective: Annotated[
        str,
        typer.Option(
            help="What each window maximises: sharpe, sortino, calmar, cagr, total_return, max_drawdown, "
            "profit_factor, hit_rate (or minimises: volatility, turnover)."
        ),
    ] = "sharpe",
    trials: Annotated[int, typer.Option(min=1, help="Trials of the study on each train window.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of every window's sampler (same seed, same choices).")] = 0,
    holdout: Annotated[
        str,
        typer.Option(help="First day never used (YYYY-MM-DD), or 'none'. The windows end the day before."),
    ] = "2023-01-01",
    path: Annotated[
        str,
        typer.Option(
            help="auto (the research path where it applies, else the engine), engine or research "
            "(fail if it does not apply)."
        ),
    ] = "auto",
    workers: Annotated[int, typer.Option(min=1, help="Processes running each window's trials.")] = 1,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a setting: section.key=value (repeatable), e.g. --set run.start=2016-01-04.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default reports/walkforward-<run name>).")
    ] = None,
    wide: Annotated[
        bool, typer.Option("--wide", help="Every column of the windows table at full width.")
    ] = False,
) -> None:
    r"""Walk-forward optimisation: choose parameters on each train window, trade them on the next test
    window, and chain the test windows into one out-of-sample equity curve.

    Each window runs a study (as `hflite optimize` does; --param is the same flag) on its train window
    only, then the winner and, for comparison, the config's own parameters on the test window that
    follows, each test window from fresh capital (positions do not carry across windows). The report
    compares the stitched out-of-sample curve with buy-and-hold of the config's benchmarks and with the
    un-optimised parameters over the same days, and shows per window the chosen parameters, in-sample
    vs out-of-sample objective, degradation, return, drawdown and trades, plus the walk-forward
    efficiency and how stable the choices are. The hold-out (default 2023-01-01 onwards) is never read.

    Example: hflite walkforward --config configs/demo.toml --param fast=5..50 --param slow=20..200
    --train 3y --test 6m

    Anchored, 30 trials a window: hflite walkforward -c configs/demo.toml -p fast=5..50 -p slow=20..200
    --train 3y --test 1y --anchored --trials 30 --out reports/wf-demo
    """
    from hflite.analytics.report import ReportError
    from hflite.cli import _guard, _load, _progress
    from hflite.config import ConfigError
    from hflite.lab.space import parse_space
    from hflite.lab.walkforward import walk_forward
    from hflite.lab.walkforward_report import write_walkforward

    settings = _load(config, sets)
    if path not in ("auto", "engine", "research"):
        fail(f"--path: expected auto, engine or research, got {path!r}")
    try:
        params = parse_space(param or [])
    except ConfigError as exc:
        fail(str(exc))
    cut = None if holdout.strip().lower() == "none" else holdout.strip()
    if cut is not None:
        import pandas as pd

        try:
            pd.Timestamp(cut)
        except ValueError:
            fail(f"--holdout: {holdout!r} is not a date (YYYY-MM-DD) or 'none'")
    with _progress() as say:
        result = _guard(
            lambda: walk_forward(
                settings,
                params,
                train=train,
                test=test,
                step=step,
                anchored=anchored,
                objective=objective,
                n_trials=trials,
                seed=seed,
                workers=workers,
                holdout=cut,
                path=path,  # type: ignore[arg-type]
                progress=say,
                config_name=str(config) if config is not None else settings.run.name,
            )
        )
    if result is None:
        return
    folder = out or settings.report.dir / f"walkforward-{settings.run.name}"
    try:
        index = write_walkforward(result, folder)
    except ReportError as exc:
        fail(str(exc), code=1)
    _print(result, wide)
    Console().print(f"Report: [bold]{index}[/]", highlight=False)


def _print(r: Any, wide: bool) -> None:
    from hflite.lab.walkforward import WalkForwardResult
    from hflite.lab.walkforward_report import HEADLINE_ROWS, fmt, holdout_sentence

    assert isinstance(r, WalkForwardResult)
    console = Console()
    cols = [
        Col("window", "id"),
        Col("test", "id"),
        *[Col(p.name, "text") for p in r.params],
        Col(f"IS {r.objective}", "number", digits=2),
        Col(f"OOS {r.objective}", "number", digits=2),
        Col("OOS/IS", "number", digits=2),
        Col("OOS return", "text"),
        Col("OOS max DD", "text"),
        Col("trades", "count"),
        Col("open", "count"),
        Col(f"un-opt {r.objective}", "number", digits=2),
        Col("train", "text", default=False),
        Col("trials", "count", default=False),
        Col("pruned", "count", default=False),
    ]
    rows = []
    for w in r.windows:
        win, m = w.window, w.oos_metrics
        rows.append(
            {
                "window": win.label + ("*" if win.partial else ""),
                "test": f"{win.test_start} to {win.test_end}",
                **{p.name: _param_text(w.params.get(p.key)) for p in r.params},
                f"IS {r.objective}": w.is_value,
                f"OOS {r.objective}": w.oos_value,
                "OOS/IS": w.degradation_ratio,
                "OOS return": fmt(m.get("total_return"), "pct"),
                "OOS max DD": fmt(m.get("max_drawdown"), "pct"),
                "trades": m.get("trades"),
                "open": m.get("open_trades"),
                f"un-opt {r.objective}": w.base_value,
                "train": f"{win.train_start} to {win.train_end}",
                "trials": w.choice.n_complete,
                "pruned": w.choice.n_pruned,
            }
        )
    mode = "anchored" if r.anchored else "rolling"
    title = f"walk-forward {r.strategy}: {len(r.windows)} windows, train {r.train}, test {r.test}, {mode}"
    print_table(console, cols, rows, wide=wide, title=title)
    if any(w.window.partial for w in r.windows):
        console.print("* the last test window is cut at the period's end", style="dim", highlight=False)

    names = list(r.bench_metrics)
    t = Table(title="stitched out-of-sample (same days for every column)")
    for c in ["", "walk-forward", "un-optimised", *[n.removesuffix(" buy & hold") + " B&H" for n in names]]:
        t.add_column(c, justify="left" if not c else "right")
    for label, key, kind in HEADLINE_ROWS:
        bench = [fmt(r.bench_metrics[n].get(key), kind) if key != "trades" else "—" for n in names]
        t.add_row(label, fmt(r.oos_metrics.get(key), kind), fmt(r.base_metrics.get(key), kind), *bench)
    console.print(t)
    console.print(
        f"Walk-forward efficiency {fmt(r.efficiency, 'num')} · positive OOS windows "
        f"{fmt(r.positive_share, 'pct')} · mean {r.objective} IS {fmt(r.mean_is_value, 'num')} -> OOS "
        f"{fmt(r.mean_oos_value, 'num')}",
        highlight=False,
    )
    console.print(f"Hold-out: {holdout_sentence(r)}", highlight=False)
    for note in r.warnings:
        console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)


def _param_text(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
