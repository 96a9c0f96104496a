"""compute_features: the point-in-time feature table of each symbol (pure: no I/O, no clock)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hflite.features._config import FeatureConfig
from hflite.features._context import Bars, Context
from hflite.features._inputs import FeatureInputs
from hflite.features._numeric import NS_PER_DAY, nans, utc_index, window_stats
from hflite.features._spec import FEATURES
from hflite.features._technical import technical_features

DEFAULT_BARS_PER_YEAR = 252.0


def _sentiment(
    prefix: str, stamped: tuple[np.ndarray, np.ndarray], t: np.ndarray, config: FeatureConfig
) -> dict[str, np.ndarray]:
    ts, score = stamped
    short_ns = round(config.news_short_days * NS_PER_DAY)
    long_ns = round(config.news_long_days * NS_PER_DAY)
    count, mean, std = window_stats(ts, score, t, short_ns, with_std=True)
    _, long_mean, _ = window_stats(ts, score, t, long_ns, with_std=False)
    return {
        f"{prefix}_mean": mean,
        f"{prefix}_std": std,
        f"{prefix}_count": count,
        f"{prefix}_surprise": mean - long_mean,
    }


def _symbol_columns(
    bars: Bars, bars_per_year: float, symbol: str, context: Context, config: FeatureConfig
) -> dict[str, np.ndarray]:
    t = bars.t
    cols = technical_features(bars.high, bars.low, bars.close, bars.volume, bars_per_year, config)
    if context.market is not None:
        cols.update(context.market.at(t))
    cols["breadth"] = context.breadth_at(t)
    for series in context.macro:
        cols.update(series.at(t))
    if "dgs10" in cols and "t10yie" in cols:
        cols["real_rate"] = cols["dgs10"] - cols["t10yie"]
    if context.headlines is not None:
        cols.update(_sentiment("news_mkt", context.headlines.market, t, config))
        empty = (np.empty(0, np.int64), np.empty(0, np.float64))
        cols.update(_sentiment("news_sym", context.headlines.by_ticker.get(symbol, empty), t, config))
    return cols


def compute_features(inputs: FeatureInputs, config: FeatureConfig | None = None) -> dict[str, pd.DataFrame]:
    """The feature table of each of ``inputs.symbols``: one row per bar, indexed by ``ts`` = the bar's
    availability time (UTC), columns :data:`FEATURES` (float64). A row at t reads only inputs known at
    or before t; missing optional inputs (market symbol, breadth symbols, macro series, news) give NaN.
    """
    config = config or FeatureConfig()
    missing = [s for s in inputs.symbols if s not in inputs.bars]
    if missing:
        raise ValueError(f"no bars for {', '.join(missing)} in the feature inputs")
    wanted = {*inputs.symbols, config.market_symbol, *config.breadth_symbols}
    bars = {s: Bars.of(s, f) for s, f in inputs.bars.items() if s in wanted}
    context = Context.of(inputs, bars, config)
    out: dict[str, pd.DataFrame] = {}
    for sym in inputs.symbols:
        b = bars[sym]
        per_year = float(inputs.bars_per_year.get(sym, DEFAULT_BARS_PER_YEAR))
        cols = _symbol_columns(b, per_year, sym, context, config)
        n = len(b.t)
        matrix = (
            np.column_stack([cols.get(c, nans(n)) for c in FEATURES]) if n else np.empty((0, len(FEATURES)))
        )
        index = utc_index(b.t, "ts")
        out[sym] = pd.DataFrame(matrix, index=index, columns=list(FEATURES), dtype=np.float64)
    return out
