"""The ``hflite`` command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from hflite.config import ConfigError, Settings, load_settings, parse_overrides

app = typer.Typer(
    help="HedgeFund-Lite: a personal, explainable, risk-first trading system.\n\n"
    "Example: hflite backtest --config configs/demo.toml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(
    help="Inspect the local data store.\n\nExample: hflite data list", no_args_is_help=True
)
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True)


@app.callback()
def _main(
    log_level: Annotated[
        str, typer.Option(help="DEBUG, INFO, WARNING or ERROR (logs go to stderr).")
    ] = "WARNING",
    log_json: Annotated[bool, typer.Option(help="Log one JSON object per line.")] = False,
) -> None:
    """HedgeFund-Lite: a personal, explainable, risk-first trading system.

    Example: hflite --log-level INFO backtest --config configs/demo.toml
    """
    from hflite import logs

    try:
        logs.configure(log_level, log_json)
    except ValueError as exc:
        _fail(str(exc))


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a setting: section.key=value (repeatable), e.g. --set strategy.fast=20."
    ),
]


def _settings(config: Path | None, sets: list[str] | None, shortcuts: dict[str, Any]) -> Settings:
    overrides: dict[str, Any] = {}
    for dotted, value in shortcuts.items():
        if value is not None:
            section, key = dotted.split(".")
            overrides.setdefault(section, {})[key] = value
    extra = parse_overrides(sets or [])
    for section, values in extra.items():
        if isinstance(values, dict):
            overrides.setdefault(section, {}).update(values)
    return load_settings(config, overrides)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


@app.command()
def backtest(
    config: ConfigOpt = None,
    strategy: Annotated[str | None, typer.Option(help="trend, breakout or mean_reversion.")] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated symbols, e.g. SPY,TLT,BTC-USD.")
    ] = None,
    start: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD.")] = None,
    cash: Annotated[float | None, typer.Option(help="Initial cash in USD.")] = None,
    sets: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default reports/<run-id>).")] = None,
) -> None:
    """Run a backtest on the local store and write an HTML report.

    Example: hflite backtest --strategy trend --symbols SPY,TLT,GLD,BTC-USD,EURUSD
    --start 2015-01-01 --end 2024-12-06 --set strategy.fast=20 --out reports/my-run
    """
    from hflite.engine.run import backtest as run_backtest

    settings = _load(config, sets, strategy=strategy, symbols=symbols, start=start, end=end, cash=cash)
    with _progress() as say:
        result = _guard(lambda: run_backtest(settings, progress=say))
    _finish(result, settings, out)


@app.command()
def replay(
    config: ConfigOpt = None,
    speed: Annotated[
        str, typer.Option(help="'max' (no waiting) or a time multiplier, e.g. 86400 = a day per second.")
    ] = "max",
    sets: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default reports/<run-id>).")] = None,
) -> None:
    """Run the live runtime (asyncio, bar by bar, SQLite journal) on recorded bars.

    Same strategy, risk gate, OMS and venue as a backtest; results match it exactly.
    Example: hflite replay --config configs/demo.toml --speed max
    """
    from hflite.engine.replay import replay as run_replay

    try:
        factor = None if speed == "max" else float(speed)
        if factor is not None and factor <= 0:
            raise ValueError
    except ValueError:
        _fail(f"--speed: expected 'max' or a positive number, got {speed!r}")
        return
    settings = _load(config, sets)
    with _progress() as say:
        result = _guard(lambda: asyncio.run(run_replay(settings, speed=factor, progress=say)))
    _finish(result, settings, out)


@data_app.command("list")
def data_list(
    data_dir: Annotated[
        Path | None, typer.Option(help="Store folder (default from config: var/data).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Show what the local store holds: symbol, frequency, first, last, rows, data version.

    Imports the embedded sample data set on first use. Example: hflite data list
    """
    from hflite.data.sample import ensure_sample
    from hflite.data.store import Store, render_partitions_table

    root = data_dir
    if root is None:
        root = _load_partial(config)
    store = Store(root)
    ensure_sample(store)
    console.print(render_partitions_table(store))


def _load_partial(config: Path | None) -> Path:
    """The data dir from a config file (or the default) without requiring a [run] section."""
    import tomllib

    from hflite.config import DataConfig

    data: dict[str, Any] = {}
    if config is not None:
        try:
            data = tomllib.loads(config.read_text()).get("data", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            _fail(f"{config}: {exc}")
    return DataConfig(**data).dir


def _load(config: Path | None, sets: list[str] | None, **shortcuts: Any) -> Settings:
    keys = {
        "strategy": "strategy.name",
        "symbols": "run.symbols",
        "start": "run.start",
        "end": "run.end",
        "cash": "run.initial_cash",
    }
    try:
        return _settings(config, sets, {keys[k]: v for k, v in shortcuts.items()})
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


def _guard(fn: Any) -> Any:
    from hflite.engine.core import StrategyError

    try:
        return fn()
    except ConfigError as exc:
        _fail(str(exc))
    except StrategyError as exc:
        _fail(str(exc), code=3)
    return None


class _progress:
    """A rich progress bar fed by (message, fraction) callbacks."""

    def __enter__(self) -> Any:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        )
        self.bar.__enter__()
        self.task = self.bar.add_task("starting", total=1.0)
        return self

    def __call__(self, message: str, fraction: float) -> None:
        self.bar.update(self.task, description=message, completed=fraction)

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]


def _finish(result: Any, settings: Settings, out: Path | None) -> None:
    from hflite.analytics.metrics import benchmark_metrics, run_metrics
    from hflite.analytics.report import write_report
    from hflite.analytics.summary import summary_table

    folder = out or settings.report.dir / result.run_id
    metrics = run_metrics(result)
    bench = benchmark_metrics(result)
    report = write_report(result, folder, metrics)
    console.print(summary_table(result, metrics, bench))
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print(f"Report: [bold]{report}[/]", highlight=False)


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="hflite")


if __name__ == "__main__":  # pragma: no cover
    main()
