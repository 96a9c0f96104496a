"""CoinGecko (public/Demo API, ``https://api.coingecko.com/api/v3``): daily crypto bars in USD.

Why two endpoints: the free API has no daily OHLC endpoint. ``/coins/{id}/ohlc`` picks the candle
size from ``days`` (1-2 days: 30 minutes; 3-30 days: 4 hours; 31 days and more: 4 days - too coarse
for daily bars) and has no volume; ``/coins/{id}/market_chart/range`` has volume but only prices, no
open/high/low. So daily bars are built honestly from both:

- OHLC: ``/ohlc?vs_currency=usd&days=7|14|30`` (4-hour candles; each candle is stamped with its
  close time). A UTC day is kept only when all six of its candles (closing 04:00 ... 24:00) are
  there: open of the first, highest high, lowest low, close of the last. ``ts`` = that date at
  00:00 UTC. Only the last 30 days can be served this way; older windows are cut to the last 30
  days (asking further back would return 4-day candles).
- Volume: ``/market_chart/range?interval=daily``: ``total_volumes`` at 00:00 UTC of the next day is
  the 24-hour USD volume of the day (USD notional, as the store's Yahoo crypto bars). A day with no
  volume point keeps NaN, so validation quarantines it instead of inventing a number.

Symbols: BTC-USD -> bitcoin, ETH-USD -> ethereum; any lowercase CoinGecko id passes through.
The key is optional (Demo key in the ``x-cg-demo-api-key`` header). Errors arrive as
``{"status": {"error_code": ..., "error_message": ...}}`` (or ``{"error": "coin not found"}``); 429 is
retried with backoff. Limits: keyless calls share an IP-based limit (the client keeps to 10 a
minute); a Demo key gets 30 calls a minute and 10,000 a month.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import httpx
import numpy as np
import pandas as pd

from hflite.data.providers.base import (
    BAR_COLUMNS,
    BaseProvider,
    HttpOptions,
    Limits,
    MalformedResponseError,
    NotSupportedError,
    RateLimiter,
    collapse_duplicates,
    empty,
    env_key,
)

#: Our symbols -> CoinGecko coin ids.
COINS = {"BTC-USD": "bitcoin", "ETH-USD": "ethereum"}
#: ``days`` values that give 4-hour candles.
OHLC_DAYS = (7, 14, 30)
CANDLE = pd.Timedelta(hours=4)
CANDLES_PER_DAY = 6
#: Candle close times within this of the 4-hour grid are snapped onto it.
GRID_TOLERANCE = pd.Timedelta(minutes=5)
KEYLESS_LIMITS = Limits(per_minute=10, note="keyless: IP-based limit shared with other users")


class CoinGeckoProvider(BaseProvider):
    """CoinGecko daily bars (``1d`` only); ``now`` is injectable because ``days`` counts back from it."""

    name: ClassVar[str] = "coingecko"
    key_env: ClassVar[str | None] = "COINGECKO_API_KEY"
    key_required: ClassVar[bool] = False
    default_url: ClassVar[str] = "https://api.coingecko.com/api/v3"
    limits: ClassVar[Limits] = Limits(
        per_minute=30, note="Demo key: 30 calls/minute, 10,000 calls/month; keyless: IP-based"
    )
    supplies: ClassVar[frozenset[str]] = frozenset({"bars"})

    def __init__(
        self,
        *,
        key: str | None = None,
        url: str | None = None,
        options: HttpOptions | None = None,
        limiter: RateLimiter | None = None,
        now: Callable[[], pd.Timestamp] | None = None,
    ) -> None:
        options = options or HttpOptions()
        if limiter is None and not env_key(self.name, self.key_env, key, required=False):
            limiter = RateLimiter(KEYLESS_LIMITS, options.clock, options.sleep)
        super().__init__(key=key, url=url, options=options, limiter=limiter)
        self.now = now or (lambda: pd.Timestamp.now(tz="UTC"))

    def auth_headers(self) -> dict[str, str]:
        return {"x-cg-demo-api-key": self.key} if self.key else {}

    def error_message(self, resp: httpx.Response) -> str | None:
        body = resp.json()
        if not isinstance(body, dict):
            return None
        status = body.get("status")
        if isinstance(status, dict) and status.get("error_message"):
            code = status.get("error_code", body.get("error_code", ""))
            return f"{code}: {status['error_message']}".strip(": ")
        if body.get("error"):
            return str(body["error"])
        return None

    def bars(self, symbol: str, freq: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        if freq != "1d":
            raise NotSupportedError(
                self.name, f"frequency {freq!r} (has 1d: the free API has no intraday OHLC)"
            )
        coin = coin_id(symbol)
        now = _utc(self.now())
        oldest = (now - pd.Timedelta(days=OHLC_DAYS[-1])).normalize() + pd.Timedelta(days=1)
        first = max(_utc(start).normalize(), oldest)
        last = min(_utc(end).normalize(), now.normalize() - pd.Timedelta(days=1))
        if first > last:
            return empty(BAR_COLUMNS)
        needed = (now - first) / pd.Timedelta(days=1)
        days = next(d for d in OHLC_DAYS if d >= needed)
        candles = self.http.get_json(f"/coins/{coin}/ohlc", {"vs_currency": "usd", "days": days})
        daily = self._daily(candles)
        daily = daily[(daily.index >= first) & (daily.index <= last)]
        if daily.empty:
            return empty(BAR_COLUMNS)
        volume = self._volume(coin, daily.index[0], daily.index[-1])
        frame = daily.reset_index(names="ts")
        frame["volume"] = frame["ts"].map(volume).astype(float)
        frame["ts"] = pd.DatetimeIndex(frame["ts"]).as_unit("ns")
        return collapse_duplicates(frame[BAR_COLUMNS])

    def _daily(self, candles: Any) -> pd.DataFrame:
        """Whole UTC days from 4-hour candles ``[close_ms, open, high, low, close]``."""
        if not isinstance(candles, list):
            raise MalformedResponseError(self.name, "expected a list of OHLC candles")
        if not candles:
            return pd.DataFrame(
                columns=["open", "high", "low", "close"], index=pd.DatetimeIndex([], tz="UTC")
            )
        try:
            arr = np.array(candles, dtype=float)
        except (TypeError, ValueError) as exc:
            raise MalformedResponseError(self.name, f"unexpected OHLC candle ({exc})") from None
        if arr.ndim != 2 or arr.shape[1] != 5:
            raise MalformedResponseError(self.name, "OHLC candles are not [time, open, high, low, close]")
        close_at = pd.to_datetime(arr[:, 0].astype("int64"), unit="ms", utc=True)
        grid = close_at.round(CANDLE)
        on_grid = abs(close_at - grid) <= GRID_TOLERANCE
        frame = pd.DataFrame(arr[:, 1:], columns=["open", "high", "low", "close"], index=grid)[on_grid]
        if not frame.index.duplicated().any():
            return _whole_days(frame.sort_index())
        # a candle answered twice: a day built from conflicting versions is returned once per version,
        # so validation quarantines both (rule duplicate_conflict) instead of trusting either
        first = _whole_days(frame[~frame.index.duplicated(keep="first")].sort_index())
        last = _whole_days(frame[~frame.index.duplicated(keep="last")].sort_index())
        differs = first.ne(last.reindex(first.index)).any(axis=1)
        return pd.concat([first, last.reindex(first.index)[differs]]).sort_index(kind="stable")

    def _volume(self, coin: str, first: pd.Timestamp, last: pd.Timestamp) -> pd.Series:
        """Day -> 24-hour USD volume, read at 00:00 UTC of the following day."""
        one_day, slack = pd.Timedelta(days=1), pd.Timedelta(hours=1)
        params = {
            "vs_currency": "usd",
            "from": int((first + one_day - slack).timestamp()),
            "to": int((last + one_day + slack).timestamp()),
            "interval": "daily",
        }
        payload = self.http.get_json(f"/coins/{coin}/market_chart/range", params)
        points = payload.get("total_volumes") if isinstance(payload, dict) else None
        if not isinstance(points, list):
            raise MalformedResponseError(self.name, "no 'total_volumes' list in market_chart/range")
        try:
            arr = np.array(points, dtype=float).reshape(-1, 2)
        except (TypeError, ValueError) as exc:
            raise MalformedResponseError(self.name, f"unexpected volume point ({exc})") from None
        at = pd.to_datetime(arr[:, 0].astype("int64"), unit="ms", utc=True)
        midnight = at.round("D")
        keep = abs(at - midnight) <= slack
        series = pd.Series(arr[keep, 1], index=midnight[keep] - one_day)
        return series[~series.index.duplicated(keep="last")]


def _whole_days(candles: pd.DataFrame) -> pd.DataFrame:
    """Daily OHLC of the UTC days that all their 4-hour candles (sorted, unique) complete."""
    day = (candles.index - CANDLE).floor("D")
    grouped = candles.groupby(day)
    out = grouped.agg(
        open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last")
    )
    return out[grouped.size() == CANDLES_PER_DAY]


def coin_id(symbol: str) -> str:
    """CoinGecko's coin id for one of our symbols (BTC-USD -> bitcoin); lowercase ids pass through."""
    if symbol in COINS:
        return COINS[symbol]
    if symbol and symbol == symbol.lower():
        return symbol
    known = ", ".join(f"{k} ({v})" for k, v in COINS.items())
    raise NotSupportedError("coingecko", f"no CoinGecko id for {symbol!r}: use {known} or a CoinGecko id")


def _utc(t: pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
