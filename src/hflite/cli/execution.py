"""``hflite execution report`` and ``hflite drift``: how well a paper or live run's orders executed,
and how far its P&L drifted from a backtest of the same config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from hflite.cli_errors import fail
from hflite.tables import Col, print_table

execution_app = typer.Typer(
    help="Execution quality of a paper or live run: slippage, fees and latency from its journal.\n\n"
    "Example: hflite execution report --run paper-btc-eur",
    no_args_is_help=True,
)

JournalsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--journal",
        "-j",
        help="A run's SQLite journal (repeatable: the report groups them by venue). Default: --run, "
        "else the journal of --config, else the only live runtime, else the newest journal.",
    ),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")]
RunOpt = Annotated[str | None, typer.Option("--run", "-r", help="The run id (a run's id is its name).")]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Folder for the HTML page (default reports/<journal name>).")
]

_SUMMARY_COLS = [
    Col("fills", "count"),
    Col("slip_decision_bps", "number", digits=2),
    Col("slip_decision_bps_median", "number", default=False, digits=2),
    Col("slip_arrival_bps", "number", digits=2),
    Col("fee_bps", "number", digits=2),
    Col("decide_to_send_ms_p50", "number"),
    Col("send_to_fill_ms_p50", "number", default=False),
    Col("send_to_fill_ms_p95", "number", default=False),
    Col("fill_delay_h_mean", "number", digits=2),
    Col("notional", "number", default=False, digits=2),
]


def _journals(journals: list[Path] | None, run: str | None, config: Path | None) -> list[Path]:
    if journals:
        if run is not None:
            fail("give --run or --journal, not both")
        missing = [str(j) for j in journals if not j.is_file()]
        if missing:
            fail(f"no journal at {', '.join(missing)}")
        return list(journals)
    from hflite.cli.trading import _target

    return [Path(_target(None, run, config).path)]


def _out_dir(out: Path | None, journal: Path, config: Path | None) -> Path:
    if out is not None:
        return out
    base = Path("reports")
    if config is not None:
        from hflite.config import ConfigError, load_settings

        try:
            base = load_settings(config).report.dir
        except ConfigError as exc:
            fail(str(exc))
    return Path(base) / journal.stem


@execution_app.command("report")
def report(
    journal: JournalsOpt = None,
    run: RunOpt = None,
    config: ConfigOpt = None,
    out: OutOpt = None,
    wide: Annotated[bool, typer.Option("--wide", help="Every column at full width.")] = False,
) -> None:
    """Slippage (bps, positive = a cost to us) against the decision and arrival prices, fees (bps) and latency, by venue, symbol, order type and hour of the day (UTC and the exchange's), from a paper or live run's journal; tables here and an HTML page with plots in --out.

    Example: hflite execution report --journal var/journal/paper-btc-eur.sqlite --out reports/exec
    """  # noqa: E501  (one line per paragraph: the help wraps it to the terminal)
    from hflite.execution.quality import QualityError, build_report, write_html

    paths = _journals(journal, run, config)
    try:
        rep = build_report(list(paths))
    except QualityError as exc:
        fail(str(exc))
    console = Console()
    if rep.fills.empty:
        console.print(f"no fills in {', '.join(map(str, paths))} yet", highlight=False)
    for title, frame in [("overall", rep.overall), *rep.tables.items()]:
        key = frame.columns[0]
        cols = [Col(str(key), "id"), *_SUMMARY_COLS]
        print_table(console, cols, frame.to_dict("records"), wide=wide, title=f"execution by {title}")
    folder = _out_dir(out, paths[0], config)
    page = write_html(rep, folder)
    console.print(f"Report: [bold]{page}[/]", highlight=False)


def drift(
    since: Annotated[
        str | None,
        typer.Option(help="First day of the live period (YYYY-MM-DD, UTC). Default: the journal's first."),
    ] = None,
    config: ConfigOpt = None,
    journal: Annotated[
        Path | None,
        typer.Option("--journal", "-j", help="The run's journal (default: var/journal/<run name>.sqlite)."),
    ] = None,
    out: OutOpt = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: section.key=value (repeatable).")
    ] = None,
) -> None:
    """Replay a paper or live run's period through the backtester on the stored bars with the same config, and take the P&L difference apart: positions carried in, decisions that differed, missed or partial fills, latency, slippage and fees (they sum to the difference). Also fits the slippage model to the run's own fills and prints it as a config snippet (written to --out as slippage_fit.toml).

    Example: hflite drift --since 2024-01-01 --config configs/paper.toml
    """  # noqa: E501  (one line per paragraph: the help wraps it to the terminal)
    import pandas as pd

    from hflite.cli import _load
    from hflite.execution.drift import DriftError, measure, parts_frame, write_html

    path, cfg = _drift_inputs(journal, config)
    settings = _load(cfg, sets)
    if journal is None:
        from hflite.engine.live import default_journal

        path = default_journal(settings)
        if not path.is_file():
            fail(f"no journal at {path} (the run of {cfg} has not started; or give --journal)")
    assert path is not None
    try:
        when = pd.Timestamp(since).date() if since else None
    except ValueError:
        fail(f"--since: expected a date YYYY-MM-DD, got {since!r}")
    try:
        rep = measure(settings, path, when)
    except DriftError as exc:
        fail(str(exc))
    console = Console()
    cols = [Col("part", "id"), Col("usd", "number", digits=2)]
    print_table(console, cols, parts_frame(rep).to_dict("records"), title="live - backtest P&L (USD)")
    sym_cols = [Col("symbol", "id"), *[Col(c, "number", digits=2) for c in rep.by_symbol.columns[1:]]]
    print_table(console, sym_cols, rep.by_symbol.to_dict("records"), title="by symbol")
    if rep.fit is not None:
        console.print(rep.fit.snippet(), highlight=False, markup=False)
    folder = out if out is not None else Path(settings.report.dir) / f"{path.stem}-drift"
    page = write_html(rep, folder)
    console.print(f"Report: [bold]{page}[/]", highlight=False)


def _drift_inputs(journal: Path | None, config: Path | None) -> tuple[Path | None, Path | None]:
    """The journal and config drift reads: a journal names the config its runtime ran (when --config
    is not given)."""
    if journal is not None and not journal.is_file():
        fail(f"no journal at {journal}")
    if config is None and journal is not None:
        from hflite.cli.risk import _open

        j: Any = _open(journal)
        try:
            beat = j.runtime()
        finally:
            j.close()
        if beat is None or not beat.config:
            fail(f"journal {journal} does not name its config: give --config")
        config = Path(beat.config)
    if config is None:
        fail("give --config (and --journal unless it is var/journal/<run name>.sqlite)")
    return journal, config
