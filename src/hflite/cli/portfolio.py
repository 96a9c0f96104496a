"""``hflite portfolio``: several strategies in one account, capital allocated walk-forward.

The work is in :mod:`hflite.lab.portfolio`; this module parses the options and prints the tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

from hflite.cli_errors import fail

if TYPE_CHECKING:
    from rich.table import Table

    from hflite.lab.portfolio import PortfolioResult


def portfolio(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="TOML config with a \\[portfolio] section and its sleeves.")
    ],
    out: Annotated[Path | None, typer.Option(help="Report folder (default reports/<run-id>).")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a setting: section.key=value (repeatable), e.g. --set portfolio.allocation=equal.",
        ),
    ] = None,
) -> None:
    r"""Run a portfolio of strategies (sleeves) in one account through the one risk manager.

    Each sleeve (\[\[portfolio.sleeve]]: a strategy on its own symbols) first runs alone; its daily returns set its weight walk-forward at each rebalance (equal, inverse_vol, vol_target, risk_parity, hrp or mean_variance), and the selection rule (\[portfolio.selection]) cuts sleeves whose trailing record decayed. Then one engine trades every sleeve's symbols, each sleeve's entries sized by its weight (docs/portfolio.md).

    Writes the usual report of the combined run plus portfolio.html: weights over time, every rebalance and cut with its reason, each sleeve alone against the combined account. \[run] symbols is derived from the sleeves; \[strategy] is not used.

    Example: hflite portfolio --config configs/portfolio.toml --out reports/portfolio
    """  # noqa: E501  (one line per paragraph: the help wraps it to the terminal)
    from hflite.analytics.report import ReportError
    from hflite.cli import _guard, _progress
    from hflite.config import ConfigError
    from hflite.lab.portfolio import load_portfolio_settings, run_portfolio
    from hflite.lab.portfolio_report import write_portfolio_report

    try:
        settings, warnings = load_portfolio_settings(config, sets)
    except ConfigError as exc:
        fail(str(exc))
    with _progress() as say:
        pr = _guard(lambda: run_portfolio(settings, progress=say))
    pr.warnings += warnings
    folder = out or settings.report.dir / pr.result.run_id
    try:
        page = write_portfolio_report(pr, folder)
    except ReportError as exc:
        fail(str(exc), code=1)
    console = Console()
    console.print(_weights_table(pr))
    console.print(_metrics_table(pr))
    for w in [*pr.warnings, *pr.result.warnings]:
        console.print(Text.assemble(("warning: ", "yellow"), w))
    console.print(Text.assemble("Report: ", (str(folder / "report.html"), "bold")))
    console.print(Text.assemble("Portfolio: ", (str(page), "bold")))


def _weights_table(pr: PortfolioResult) -> Table:
    from hflite.tables import Col, build_table

    last = pr.plan[-1]
    when = "start" if last.day is None else f"{last.day:%Y-%m-%d}"
    rows = []
    for s in pr.sleeves:
        name = s.config.name
        check = last.checks.get(name)
        rows.append(
            {
                "sleeve": name,
                "strategy": s.config.strategy_name(),
                "weight": last.weights[name],
                "sharpe": None if check is None else check.sharpe,
                "drawdown %": None if check is None else check.drawdown_pct,
                "status": f"cut: {last.cut[name]}" if name in last.cut else "active",
            }
        )
    cols = [
        Col("sleeve", "id"),
        Col("strategy", "id"),
        Col("weight", "number"),
        Col("sharpe", "number", digits=2),
        Col("drawdown %", "number", digits=1),
        Col("status"),
    ]
    title = f"{pr.config.allocation} weights at the last rebalance ({when}), {len(pr.plan) - 1} rebalances"
    return build_table(cols, rows, title=title)


def _metrics_table(pr: PortfolioResult) -> Table:
    from hflite.tables import Col, build_table

    keys = [("total %", "total_return", 100), ("CAGR %", "cagr", 100), ("Sharpe", "sharpe", 1)]
    keys += [("max DD %", "max_drawdown", 100), ("trades", "trades", 1)]
    runs = [("combined", pr.metrics)] + [(f"{s.config.name} (alone)", s.metrics) for s in pr.sleeves]
    rows = []
    for label, m in runs:
        row: dict[str, object] = {"run": label}
        for name, key, mult in keys:
            v = m.get(key)
            row[name] = None if v is None else float(v) * mult
        rows.append(row)
    cols = [Col("run", "id")] + [
        Col(name, "count" if key == "trades" else "number", digits=2) for name, key, _ in keys
    ]
    return build_table(cols, rows, title=f"headline metrics · {pr.result.run_id}")
