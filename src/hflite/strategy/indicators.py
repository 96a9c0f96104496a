"""Indicators from TA-Lib (the maintained C library); every one is trailing-only."""

from __future__ import annotations

import numpy as np
import talib


def sma(x: np.ndarray, n: int) -> np.ndarray:
    return talib.SMA(x, timeperiod=n)


def ema(x: np.ndarray, n: int) -> np.ndarray:
    return talib.EMA(x, timeperiod=n)


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> np.ndarray:
    return talib.ATR(high, low, close, timeperiod=n)


def rsi(close: np.ndarray, n: int) -> np.ndarray:
    return talib.RSI(close, timeperiod=n)


def bollinger(close: np.ndarray, n: int, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    upper, mid, lower = talib.BBANDS(close, timeperiod=n, nbdevup=k, nbdevdn=k, matype=talib.MA_Type.SMA)
    return upper, mid, lower


def donchian(high: np.ndarray, low: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Highest high and lowest low of the ``n`` bars BEFORE each bar (excludes the bar itself)."""
    upper = np.full(len(high), np.nan)
    lower = np.full(len(low), np.nan)
    if len(high) > n:
        upper[1:] = talib.MAX(high, timeperiod=n)[:-1]
        lower[1:] = talib.MIN(low, timeperiod=n)[:-1]
    return upper, lower
