"""The validation lab: statistics that say whether a backtest result is real (issue 17).

:mod:`hflite.lab.stats` holds the deflated Sharpe ratio, the probability of backtest overfitting,
purged and combinatorial cross-validation, and bootstrap and Monte Carlo resampling; see
``docs/validation-stats.md``.
"""

import importlib
from typing import Any

__all__ = [
    "CPCVPlan",
    "CPCVSplit",
    "DeflatedSharpe",
    "PBOResult",
    "PathStats",
    "TradeShuffle",
    "block_bootstrap",
    "cpcv_paths",
    "cpcv_splits",
    "deflated_sharpe",
    "expected_max_sharpe",
    "max_drawdown",
    "n_backtest_paths",
    "path_statistics",
    "pbo",
    "percentile_of",
    "psr",
    "purged_kfold",
    "sharpe",
    "shuffle_trades",
]


def __getattr__(name: str) -> Any:
    """The statistics, imported on first use: ``hflite.config`` imports the lab's config models, and a
    command that never validates should not pay for scipy."""
    if name in __all__:
        return getattr(importlib.import_module("hflite.lab.stats"), name)
    raise AttributeError(f"module 'hflite.lab' has no attribute {name!r}")
