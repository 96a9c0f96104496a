"""Analytics: performance metrics, benchmarks, the HTML report folder and the terminal summary.

The report writer (plotly and the HTML sections) is imported on first use, so a run that writes no
report does not pay for it.
"""

from typing import Any

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


_REPORT_NAMES = ("REPORT_FILES", "SECTIONS", "write_report")


def __getattr__(name: str) -> Any:
    if name in _REPORT_NAMES:
        from hflite.analytics import report

        return getattr(report, name)
    raise AttributeError(f"module 'hflite.analytics' has no attribute {name!r}")
