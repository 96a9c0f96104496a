r"""``hflite validate``: one report that says whether a backtest result is real (hflite.lab.validate).

A plain function; ``hflite.cli`` registers it as a top-level command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hflite.cli_errors import fail

if TYPE_CHECKING:
    from hflite.config import Settings


def validate(
    config: Annotated[Path, typer.Option("--config", "-c", help="The TOML config whose result is tested.")],
    study: Annotated[
        str | None,
        typer.Option(help="An `hflite optimize` study: its trials are the candidates and N for the DSR."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="The study's storage URL (default: the one `hflite optimize` uses)."),
    ] = None,
    holdout: Annotated[
        str,
        typer.Option(help="First day of the hold-out no test may see (YYYY-MM-DD), or 'none'."),
    ] = "2023-01-01",
    trials_tried: Annotated[
        int | None,
        typer.Option(min=1, help="How many settings were tried to reach this config (N for the DSR)."),
    ] = None,
    paths: Annotated[int, typer.Option(min=10, help="Monte Carlo paths per test.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = 0,
    groups: Annotated[int, typer.Option(min=3, help="CPCV groups (N).")] = 6,
    test_groups: Annotated[int, typer.Option(min=1, help="CPCV test groups per split (k).")] = 2,
    embargo: Annotated[float, typer.Option(min=0, max=0.2, help="Embargo after each test group.")] = 0.01,
    top: Annotated[int, typer.Option(min=2, help="Study trials re-run as candidates.")] = 30,
    as_configured: Annotated[
        bool,
        typer.Option(help="With --study: validate the config's own parameters, not the study's best."),
    ] = False,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key, e.g. strategy.fast=20.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default reports/validate-<name>).")] = None,
) -> None:
    """Test whether a config's result is real and write one report, verdict first.

    On the period before the hold-out: deflated Sharpe (N from the study or the candidates), PBO
    (CSCV), purged k-fold and combinatorial purged CV over periods, Monte Carlo (trade shuffles, block
    bootstrap, random entries with the same exposure, parameter perturbation), results per regime,
    year and stress period, look-ahead and recursive analysis, and the plan's success criteria as a
    PASS/FAIL checklist. The hold-out is then traded once and reported on its own.

    Example: hflite validate --config configs/demo.toml

    After `hflite optimize --config configs/demo.toml -p fast=5..50 -p slow=20..200 --study demo-trend`
    (validates the study's best trial, with N = the parameter sets it tried):
    hflite validate --config configs/demo.toml --study demo-trend
    """
    from hflite.cli import _guard, _load, _progress
    from hflite.lab.validate import validate as run_validate
    from hflite.lab.validate_report import write_validation

    settings = _load(config, sets)
    from hflite.cli.optimize import _holdout

    cut = _holdout(holdout)
    loaded = _open_study(study, storage, settings) if study else None
    if test_groups >= groups:
        fail(f"--test-groups ({test_groups}) must be below --groups ({groups})")
    with _progress() as say:
        v = _guard(
            lambda: _checked(
                run_validate,
                settings,
                holdout=cut,
                study=loaded,
                top=top,
                trials_tried=trials_tried,
                n_groups=groups,
                n_test_groups=test_groups,
                embargo_frac=embargo,
                paths=paths,
                seed=seed,
                use_best=not as_configured,
                progress=say,
            )
        )
    from hflite.analytics.report import ReportError

    folder = out or settings.report.dir / f"validate-{settings.run.name}"
    try:
        index = write_validation(v, folder)
    except ReportError as exc:
        fail(str(exc), code=1)
    _print(v)
    Console().print(f"Report: [bold]{index}[/]", highlight=False)


def _checked(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn`` with a statistic's refusal (too few days or candidates for a test) as one line, not a
    traceback: ``ValueError`` names what was missing."""
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        from hflite.config import ConfigError

        if isinstance(exc, ConfigError):
            raise
        fail(f"validate: {exc}", code=1)


def _open_study(name: str, storage: str | None, settings: Settings) -> object:
    from hflite.lab.optimize import StorageError, StudyError, open_study

    try:
        return open_study(name, storage, settings)
    except (StudyError, StorageError) as exc:
        fail(str(exc))


def _print(v: object) -> None:
    from hflite.lab.validate import Validation

    assert isinstance(v, Validation)
    level, sentence = v.verdict
    colour = {"good": "green", "bad": "red", "mixed": "yellow"}[level]
    console = Console()
    console.print(f"[bold {colour}]{sentence}[/]", highlight=False)
    t = Table(title=f"validate {v.settings.run.name}: {v.window[0].date()} to {v.window[1].date()}")
    for col in ("", "Check", "Target", "Value", "Result"):
        t.add_column(col, overflow="fold")
    for c in v.checks:
        word = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "n/a"}[c.passed]
        t.add_row(c.group, c.name, c.target, c.value, word)
    console.print(t)
