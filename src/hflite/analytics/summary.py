"""The terminal summary of a run: one rich table, strategy next to its benchmarks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from rich.table import Table

if TYPE_CHECKING:
    from hflite.engine.result import RunResult

Kind = Literal["pct", "ratio", "usd", "count", "days"]

#: (label, metric key, kind, strategy only) of the summary rows, in display order.
SUMMARY_ROWS: tuple[tuple[str, str, Kind, bool], ...] = (
    ("Total return", "total_return", "pct", False),
    ("CAGR", "cagr", "pct", False),
    ("Volatility", "volatility", "pct", False),
    ("Sharpe", "sharpe", "ratio", False),
    ("Sortino", "sortino", "ratio", False),
    ("Calmar", "calmar", "ratio", False),
    ("Max drawdown", "max_drawdown", "pct", False),
    ("Max DD duration (days)", "max_drawdown_duration_days", "days", False),
    ("VaR 95% (daily)", "var_95", "pct", False),
    ("Information ratio", "information_ratio", "ratio", True),
    ("Trades (closed)", "trades", "count", True),
    ("Hit rate", "hit_rate", "pct", True),
    ("Profit factor", "profit_factor", "ratio", True),
    ("Avg trade (USD)", "avg_trade", "usd", True),
    ("Fees (USD)", "fees_usd", "usd", True),
    ("Exposure (time in market)", "exposure", "pct", True),
    ("Turnover (x / year)", "turnover", "ratio", True),
    ("Final equity (USD)", "final_equity", "usd", False),
)

MISSING = "—"


def benchmark_last_bar(result: RunResult, name: str) -> str:
    """The date (YYYY-MM-DD) of benchmark ``name``'s last bar; for a result that did not record it, the
    date of its curve's last point."""
    last = result.benchmark_last.get(name)
    if last is None:
        curve = result.benchmarks.get(name)
        last = curve.index[-1] if curve is not None and len(curve) else None
    return MISSING if last is None else f"{last:%Y-%m-%d}"


def format_metric(value: float | None, kind: Kind) -> str:
    """A metric value as text: % and ratios with 2 decimals, USD with thousands separators; NaN as —."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if kind == "pct":
        return f"{value * 100:.2f}%"
    if kind == "ratio":
        return f"{value:.2f}"
    if kind == "usd":
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def summary_table(result: RunResult, metrics: dict, bench_metrics: dict[str, dict]) -> Table:
    """Metric rows with a strategy column and one column per benchmark (trade rows blank for benchmarks)."""
    window = f"{result.start:%Y-%m-%d} → {result.end:%Y-%m-%d}"
    table = Table(title=f"{result.strategy} · {result.run_id}", caption=window, title_justify="left")
    table.add_column("Metric", style="bold")
    table.add_column("Strategy", justify="right", style="cyan")
    for name in bench_metrics:
        table.add_column(name, justify="right")
    for label, key, kind, strategy_only in SUMMARY_ROWS:
        cells = [format_metric(metrics.get(key), kind)]
        cells += [
            MISSING if strategy_only else format_metric(bm.get(key), kind) for bm in bench_metrics.values()
        ]
        table.add_row(label, *cells)
    if bench_metrics:  # benchmarks run on their own calendars, to their last bar on or before the end
        table.add_row("Last bar", MISSING, *(benchmark_last_bar(result, name) for name in bench_metrics))
    open_trades = metrics.get("open_trades") or 0
    if open_trades > 0:
        fee = format_metric(metrics.get("open_exit_fee_est_usd"), "usd")
        table.caption = (
            f"{window}  ·  {open_trades:.0f} open position(s) marked to market; "
            f"est. exit fees {fee} USD not deducted"
        )
    return table
