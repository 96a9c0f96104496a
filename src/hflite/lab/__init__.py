"""The validation lab: statistics that say whether a backtest result is real (issue 17).

:mod:`hflite.lab.stats` holds the deflated Sharpe ratio, the probability of backtest overfitting,
purged and combinatorial cross-validation, and bootstrap and Monte Carlo resampling; see
``docs/validation-stats.md``.
"""

from hflite.lab.stats import (
    CPCVPlan,
    CPCVSplit,
    DeflatedSharpe,
    PathStats,
    PBOResult,
    TradeShuffle,
    block_bootstrap,
    cpcv_paths,
    cpcv_splits,
    deflated_sharpe,
    expected_max_sharpe,
    max_drawdown,
    n_backtest_paths,
    path_statistics,
    pbo,
    percentile_of,
    psr,
    purged_kfold,
    sharpe,
    shuffle_trades,
)

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
