"""The parameters every built-in strategy shares, including its ``[strategy.by_regime]`` blocks.

A strategy's parameter model is also what ``load_settings`` validates ``[strategy]`` with, so the
regime blocks are checked here: each block is the base parameters merged with the block's keys,
validated by the same model, and an error names the key as the config spells it
(``strategy.by_regime.bear.fsat``). The regime switch itself is ``hflite.strategy.regime_switch``.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

#: The labels of the regime rule (``hflite.ai.regime.rule_regimes``), in its code order.
REGIMES = ("bull", "bear", "sideways", "crisis")

#: Keys that set the exits attached to an entry: one exit rule per symbol and run (the engine reads
#: ``SignalSet.exits`` once), so a regime block may not change them.
EXIT_KEYS = frozenset({"stop_atr", "take_profit_atr", "trailing", "time_stop_bars"})

#: The keys of the regime switch itself (not the wrapped strategy's).
REGIME_KEYS = frozenset({"by_regime", "regime_index", "regime_rule"})


def _rule(field: str, reason: str) -> PydanticCustomError:
    """An error reported against a dotted config path (``format_validation_error`` prints it as is)."""
    return PydanticCustomError("config_rule", "{reason}", {"field": field, "reason": reason})


class RegimeRule(BaseModel):
    """``[strategy.regime_rule]``: the trend-and-volatility rule that labels the index (defaults equal
    ``[risk.regime]``'s, so the switch and the risk manager agree unless told otherwise)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    trend_window: int = Field(200, ge=10, le=2000, description="SMA of the index's close")
    slope_bars: int = Field(20, ge=1, le=500, description="bars over which the SMA must rise (bull) or fall")
    vol_window: int = Field(20, ge=5, le=500, description="bars of the annualised volatility")
    crisis_vol: float = Field(40.0, gt=0, le=500, description="annualised volatility % = crisis")
    bars_per_year: float = Field(252.0, gt=0, le=1e6, description="annualises the index's volatility")


class StrategyParams(BaseModel):
    """Shared by every built-in: ATR, exits, shorting, and the optional per-regime parameter sets."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    atr_period: int = Field(14, ge=2, le=500)
    stop_atr: float = Field(2.0, ge=0, le=50, description="protective stop distance in ATRs (0 = none)")
    take_profit_atr: float = Field(0.0, ge=0, le=100, description="take-profit distance in ATRs (0 = none)")
    allow_short: bool = False
    by_regime: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="regime -> parameter overrides (plus enabled = false: no new entries in that regime)",
    )
    regime_index: str = Field("SPY", min_length=1, description="the index whose regime picks the parameters")
    regime_rule: RegimeRule = Field(default_factory=RegimeRule)

    @field_validator("by_regime")
    @classmethod
    def _known_regimes(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for regime in v:
            if regime not in REGIMES:
                raise _rule(f"strategy.by_regime.{regime}", f"unknown regime; known: {', '.join(REGIMES)}")
        return v

    @model_validator(mode="after")
    def _regime_blocks(self) -> Self:
        if not self.by_regime:
            extra = sorted((REGIME_KEYS - {"by_regime"}) & self.model_fields_set)
            if extra:
                raise _rule(f"strategy.{extra[0]}", "only used with [strategy.by_regime] blocks")
            return self
        for regime in self.by_regime:
            self.regime_params(regime)  # raises naming the block's bad key
        return self

    def base_params(self) -> dict[str, Any]:
        """The keys set for the strategy itself (without the regime switch's)."""
        return self.model_dump(include=self.model_fields_set - REGIME_KEYS)

    def regime_enabled(self, regime: str) -> bool:
        """False when the regime's block says ``enabled = false`` (no new entries in it)."""
        return bool(self.by_regime.get(regime, {}).get("enabled", True))

    def regime_params(self, regime: str) -> Self:
        """The parameter set in force in ``regime``: the base merged with the regime's block."""
        block = self.by_regime.get(regime, {})
        where = f"strategy.by_regime.{regime}"
        enabled = block.get("enabled", True)
        if not isinstance(enabled, bool):
            raise _rule(f"{where}.enabled", f"must be true or false (got {enabled!r})")
        for key in block:
            if key in REGIME_KEYS:
                raise _rule(f"{where}.{key}", "is set once in [strategy], not per regime")
            if key in EXIT_KEYS:
                raise _rule(
                    f"{where}.{key}",
                    "exits cannot vary by regime (the engine attaches one exit rule per symbol); "
                    "set it in [strategy]",
                )
        overrides = {k: v for k, v in block.items() if k != "enabled"}
        try:
            return self.__class__.model_validate({**self.base_params(), **overrides})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            field = f"{where}.{loc}" if loc else where
            if err["type"] == "extra_forbidden":
                raise _rule(field, "unknown key") from None
            if err["type"] == "config_rule":
                raise _rule(field, str(err["msg"])) from None
            msg = str(err["msg"]).removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if err["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
            raise _rule(field, f"{msg}{shown}") from None
