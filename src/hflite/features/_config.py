"""FeatureConfig: the tunable windows of the feature tables, frozen and hashed into cache keys.

Windows that a column's name spells out (``ret_21``, ``rsi_14``, ``trend_50_200``...) are fixed by
that name and are not configurable.
"""

from __future__ import annotations

import hashlib
import json
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hflite.features._spec import SAMPLE_BREADTH


class FeatureConfig(BaseModel):
    """Windows and universes of the feature tables (frozen; ``version()`` names it in cache keys)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    market_symbol: str = Field("SPY", min_length=1, description="the index behind spy_trend, spy_ret_21")
    breadth_symbols: tuple[str, ...] = Field(SAMPLE_BREADTH, min_length=1)
    breadth_sma: int = Field(200, ge=2, le=2000, description="bars of the SMA breadth compares to")
    volume_z_window: int = Field(20, ge=2, le=1000)
    bb_window: int = Field(20, ge=2, le=1000)
    bb_width: float = Field(2.0, gt=0.0, le=10.0, description="Bollinger band width in std")
    macd_fast: int = Field(12, ge=2, le=500)
    macd_slow: int = Field(26, ge=3, le=1000)
    macd_signal: int = Field(9, ge=1, le=500)
    vix_z_window: int = Field(252, ge=2, le=5000, description="previous VIX observations vix_z uses")
    vix_change_obs: int = Field(5, ge=1, le=500)
    claims_average_weeks: int = Field(4, ge=1, le=52)
    claims_z_weeks: int = Field(52, ge=2, le=520)
    news_short_days: float = Field(5.0, gt=0.0, le=365.0)
    news_long_days: float = Field(60.0, gt=0.0, le=3650.0)
    oil_return_clip: tuple[float, float] = (-1.0, 3.0)
    max_bar_age_days: float = Field(
        10.0,
        gt=0.0,
        le=3650.0,
        description="older last-known bars of SPY or breadth symbols count as missing",
    )
    max_macro_age_days: float = Field(
        100.0, gt=0.0, le=3650.0, description="older last-known macro observations count as missing"
    )
    warmup_days: int = Field(730, ge=0, le=36500, description="calendar days of history read before start")

    @field_validator("breadth_symbols")
    @classmethod
    def _unique_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("breadth_symbols contains duplicates")
        return value

    @model_validator(mode="after")
    def _ordered_windows(self) -> Self:
        if self.macd_fast >= self.macd_slow:
            raise ValueError(f"macd_fast ({self.macd_fast}) must be below macd_slow ({self.macd_slow})")
        if self.news_short_days >= self.news_long_days:
            raise ValueError(
                f"news_short_days ({self.news_short_days}) must be below "
                f"news_long_days ({self.news_long_days})"
            )
        lo, hi = self.oil_return_clip
        if not lo < 0.0 < hi:
            raise ValueError(f"oil_return_clip must be (negative, positive), got {self.oil_return_clip}")
        return self

    def version(self) -> str:
        """A short hash of every setting (same settings, same version, whatever the field order)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]
