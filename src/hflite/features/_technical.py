"""Technical features of one symbol's bars (TA-Lib for the indicators; numpy for the rest)."""

from __future__ import annotations

import math

import numpy as np
import talib

from hflite.features._config import FeatureConfig
from hflite.features._numeric import lag_diff, nans, trailing_std, zscore_vs_previous

RETURN_BARS = (1, 5, 21, 63, 252)
VOL_BARS = (21, 63)
PERIOD = 14  # RSI, ATR, ADX
RANGE_BARS = 252
TREND_SMAS = (50, 200)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(np.isfinite(out), out, np.nan)


def volume_z(volume: np.ndarray, window: int) -> np.ndarray:
    """z-score of log volume vs the previous ``window`` bars; NaN where a volume in play is 0."""
    with np.errstate(divide="ignore"):
        log_volume = np.where(volume > 0, np.log(np.where(volume > 0, volume, 1.0)), np.nan)
    return zscore_vs_previous(log_volume, window)


def technical_features(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    bars_per_year: float,
    config: FeatureConfig,
) -> dict[str, np.ndarray]:
    """The technical group for one symbol, one value per bar, each from bars <= that bar."""
    n = len(close)
    if n == 0:
        return {}
    log_close = np.log(close)
    out = {f"ret_{k}": lag_diff(log_close, k) for k in RETURN_BARS}
    for k in VOL_BARS:
        out[f"vol_{k}"] = trailing_std(out["ret_1"], k) * math.sqrt(bars_per_year)
    out["atr_pct"] = talib.ATR(high, low, close, PERIOD) / close
    out["rsi_14"] = talib.RSI(close, PERIOD)
    _, _, hist = talib.MACD(close, config.macd_fast, config.macd_slow, config.macd_signal)
    out["macd_hist_pct"] = hist / close
    upper, middle, _ = talib.BBANDS(
        close, config.bb_window, config.bb_width, config.bb_width, talib.MA_Type.SMA
    )
    out["bb_pos"] = _ratio(close - middle, upper - middle)
    out["adx_14"] = talib.ADX(high, low, close, PERIOD)
    out["volume_z"] = volume_z(volume, config.volume_z_window)
    out["dist_high_252"] = close / talib.MAX(high, RANGE_BARS) - 1.0
    out["dist_low_252"] = close / talib.MIN(low, RANGE_BARS) - 1.0
    fast, slow = (talib.SMA(close, k) for k in TREND_SMAS)
    out["trend_50_200"] = fast / slow - 1.0
    return out


def above_sma(close: np.ndarray, window: int) -> np.ndarray:
    """1.0 where close > SMA(window), 0.0 where not, NaN before ``window`` bars."""
    if len(close) == 0:
        return nans(0)
    sma = talib.SMA(close, window)
    return np.where(np.isnan(sma), np.nan, (close > sma).astype(np.float64))
