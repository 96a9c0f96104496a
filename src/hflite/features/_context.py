"""What every symbol's features share: the market index, the breadth universe, macro series and
headlines, each as values stamped with the time they became known, ready for as-of joins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import talib

from hflite.features._config import FeatureConfig
from hflite.features._inputs import BAR_FIELDS, FeatureInputs
from hflite.features._numeric import (
    NS_PER_DAY,
    asof_rows,
    known_after_all,
    lag_diff,
    lag_ratio,
    take,
    trailing_mean,
    zscore_vs_previous,
)
from hflite.features._technical import above_sma

MARKET_TREND_SMA = 200
MARKET_RETURN_BARS = 21
YOY_OBS = 12
CPI_TREND_OBS = 3
UNRATE_CHANGE_OBS = 3
FEDFUNDS_CHANGE_OBS = 6
RATE_CHANGE_OBS = 63  # usd_ret_63, oil_ret_63


@dataclass(frozen=True)
class Bars:
    """One symbol's bars as contiguous arrays; ``t`` = int64 ns availability times."""

    t: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def of(cls, symbol: str, frame: pd.DataFrame) -> Bars:
        t = pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8.copy()
        if len(t) > 1 and not (np.diff(t) > 0).all():
            raise ValueError(f"{symbol}: bar availability times must be strictly increasing")
        arrays = [np.ascontiguousarray(frame[c].to_numpy(dtype=np.float64)) for c in BAR_FIELDS]
        return cls(t, *arrays)


@dataclass(frozen=True)
class Stamped:
    """Values derived from a series, each known at ``known`` (int64 ns, non-decreasing)."""

    known: np.ndarray
    values: dict[str, np.ndarray]
    max_age_ns: float

    def at(self, t: np.ndarray) -> dict[str, np.ndarray]:
        """Each value as of each time t (NaN before the first, or when the last is too old)."""
        rows = asof_rows(self.known, t, self.max_age_ns)
        return {name: take(v, rows) for name, v in self.values.items()}


def _pct_change(v: np.ndarray, n: int) -> np.ndarray:
    return (lag_ratio(v, n) - 1.0) * 100.0


def _oil(v: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    # a simple change over |start| (WTI printed -36.98 on 2020-04-20: no log), clipped
    lo, hi = config.oil_return_clip
    start = np.full(len(v), np.nan)
    start[RATE_CHANGE_OBS:] = np.abs(v[:-RATE_CHANGE_OBS])
    with np.errstate(divide="ignore", invalid="ignore"):
        change = lag_diff(v, RATE_CHANGE_OBS) / start
    return {"oil_ret_63": np.clip(change, lo, hi)}


def _cpi(v: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    yoy = _pct_change(v, YOY_OBS)
    return {"cpi_yoy": yoy, "cpi_trend": lag_diff(yoy, CPI_TREND_OBS)}


def _claims(v: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    average = trailing_mean(v, config.claims_average_weeks)
    return {"claims_z": zscore_vs_previous(average, config.claims_z_weeks)}


def _vix(v: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    return {
        "vix": v,
        "vix_z": zscore_vs_previous(v, config.vix_z_window),
        "vix_chg_5": lag_diff(v, config.vix_change_obs),
    }


#: Per FRED series: the columns derived from its observation values (``t10yie`` feeds real_rate).
MACRO_BUILDERS: dict[str, Callable[[np.ndarray, FeatureConfig], dict[str, np.ndarray]]] = {
    "CPIAUCSL": _cpi,
    "CPILFESL": lambda v, c: {"core_cpi_yoy": _pct_change(v, YOY_OBS)},
    "UNRATE": lambda v, c: {"unrate": v, "unrate_chg_3m": lag_diff(v, UNRATE_CHANGE_OBS)},
    "FEDFUNDS": lambda v, c: {"fedfunds": v, "fedfunds_chg_6m": lag_diff(v, FEDFUNDS_CHANGE_OBS)},
    "DGS10": lambda v, c: {"dgs10": v},
    "T10YIE": lambda v, c: {"t10yie": v},
    "ICSA": _claims,
    "INDPRO": lambda v, c: {"indpro_yoy": _pct_change(v, YOY_OBS)},
    "DTWEXBGS": lambda v, c: {"usd_ret_63": lag_diff(np.log(v), RATE_CHANGE_OBS)},
    "DCOILWTICO": _oil,
    "T10Y2Y": lambda v, c: {"curve_slope": v},
    "VIXCLS": _vix,
}


def macro_stamped(series_id: str, frame: pd.DataFrame, config: FeatureConfig) -> Stamped:
    """A series' derived columns, each known once its observation and every earlier one are known."""
    frame = frame.sort_values("date", kind="mergesort")
    values = np.ascontiguousarray(frame["value"].to_numpy(dtype=np.float64))
    known = known_after_all(pd.DatetimeIndex(frame["known"]).as_unit("ns").asi8.copy())
    derived = MACRO_BUILDERS[series_id](values, config)
    return Stamped(known, derived, config.max_macro_age_days * NS_PER_DAY)


def market_stamped(bars: Bars, config: FeatureConfig) -> Stamped:
    """spy_trend and spy_ret_21 of the market symbol, known at each of its bars' close."""
    close = bars.close
    trend = close / talib.SMA(close, MARKET_TREND_SMA) - 1.0
    values = {"spy_trend": trend, "spy_ret_21": lag_diff(np.log(close), MARKET_RETURN_BARS)}
    return Stamped(bars.t, values, config.max_bar_age_days * NS_PER_DAY)


@dataclass(frozen=True)
class Headlines:
    """Scored headlines sorted by ts: the market-wide ones, and those of each wanted ticker."""

    market: tuple[np.ndarray, np.ndarray]
    by_ticker: dict[str, tuple[np.ndarray, np.ndarray]]

    @classmethod
    def of(cls, news: pd.DataFrame, tickers: tuple[str, ...]) -> Headlines:
        ts = pd.DatetimeIndex(news["ts"]).as_unit("ns").asi8
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        score = news["score"].to_numpy(dtype=np.float64)[order]
        if not np.isfinite(score).all() or (np.abs(score) > 1.0).any():
            raise ValueError("news scores must be finite and within [-1, 1]")
        tags = news["tickers"].astype(str).to_numpy(dtype=object)[order]
        market = tags == ""
        by_ticker: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        distinct = [str(tag) for tag in pd.unique(tags[~market])]  # few: split each once
        for sym in tickers:
            carrying = [tag for tag in distinct if sym in (part.strip() for part in tag.split(","))]
            if carrying:
                pick = np.flatnonzero(np.isin(tags, carrying))
                by_ticker[sym] = (ts[pick], score[pick])
        return cls((ts[market], score[market]), by_ticker)


@dataclass(frozen=True)
class Context:
    """The shared, precomputed inputs of every symbol's features."""

    market: Stamped | None
    breadth: list[Stamped]
    macro: list[Stamped]
    headlines: Headlines | None

    @classmethod
    def of(cls, inputs: FeatureInputs, bars: dict[str, Bars], config: FeatureConfig) -> Context:
        market = bars.get(config.market_symbol)
        breadth = [
            Stamped(
                bars[s].t,
                {"above": above_sma(bars[s].close, config.breadth_sma)},
                config.max_bar_age_days * NS_PER_DAY,
            )
            for s in config.breadth_symbols
            if s in bars
        ]
        macro = [
            macro_stamped(sid, frame, config)
            for sid, frame in inputs.macro.items()
            if sid in MACRO_BUILDERS and not frame.empty
        ]
        headlines = None if inputs.news is None else Headlines.of(inputs.news, inputs.symbols)
        return cls(
            None if market is None else market_stamped(market, config),
            breadth,
            macro,
            headlines,
        )

    def breadth_at(self, t: np.ndarray) -> np.ndarray:
        """Fraction above their SMA among the breadth symbols with a known, recent enough value."""
        if not self.breadth:
            return np.full(len(t), np.nan)
        above = np.vstack([b.at(t)["above"] for b in self.breadth])
        counted = (~np.isnan(above)).sum(axis=0)
        total = np.nansum(above, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(counted > 0, total / np.maximum(counted, 1), np.nan)
