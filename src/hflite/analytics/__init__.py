"""Analytics: performance metrics, benchmarks, the HTML report folder and the terminal summary."""

from hflite.analytics.metrics import (
    METRIC_KEYS,
    benchmark_metrics,
    buy_and_hold,
    compute_metrics,
    daily_equity,
    drawdown,
    monthly_returns,
    periods_per_year,
    risk_free_daily,
    run_metrics,
)
from hflite.analytics.report import REPORT_FILES, SECTIONS, write_report
from hflite.analytics.summary import format_metric, summary_table

__all__ = [
    "METRIC_KEYS",
    "REPORT_FILES",
    "SECTIONS",
    "benchmark_metrics",
    "buy_and_hold",
    "compute_metrics",
    "daily_equity",
    "drawdown",
    "format_metric",
    "monthly_returns",
    "periods_per_year",
    "risk_free_daily",
    "run_metrics",
    "summary_table",
    "write_report",
]
