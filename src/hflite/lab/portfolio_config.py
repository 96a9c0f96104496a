"""``[portfolio]``: several strategies ("sleeves") in one account, and how capital moves between them.

A sleeve is a strategy on its own symbols::

    [portfolio]
    allocation = "hrp"          # equal | inverse_vol | vol_target | risk_parity | hrp | mean_variance
    rebalance = "monthly"       # weekly | monthly | quarterly
    lookback_days = 126         # weekdays of sleeve returns each allocation reads
    min_history_days = 63       # equal weights until this many weekdays of returns exist

    [[portfolio.sleeve]]
    name = "etf_trend"
    symbols = ["SPY", "TLT", "GLD"]
    strategy = { name = "trend", ma = "ema", fast = 20, slow = 100 }

    [portfolio.selection]       # present: on (enabled = false switches it off)
    window_days = 126
    min_sharpe = 0.0
    max_dd_pct = 15.0
    cut = 0.0

The runner (``hflite.lab.portfolio``) and the rules are described in docs/portfolio.md. This module holds
only the validated configuration, so ``hflite.config`` can import it cheaply.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

Allocation = Literal["equal", "inverse_vol", "vol_target", "risk_parity", "hrp", "mean_variance"]
Rebalance = Literal["weekly", "monthly", "quarterly"]
ALLOCATIONS: tuple[str, ...] = get_args(Allocation)
#: Built-in strategies a sleeve may run. ``ai_ensemble`` needs the AI brain built over the run's symbols,
#: which a sleeve run does not build: it is refused with a clear message rather than run half-way.
SLEEVE_STRATEGIES = ("trend", "breakout", "mean_reversion", "tsmom", "xsmom")


def _rule(field: str, reason: str) -> PydanticCustomError:
    """An error reported against ``field`` (a dotted path), as ``hflite.config`` reports cross-field rules."""
    return PydanticCustomError("config_rule", "{reason}", {"field": field, "reason": reason})


def _error_line(loc: tuple[Any, ...], msg: str) -> str:
    """One pydantic error as "field: message" (just the message for a rule on the whole model)."""
    where = ".".join(str(p) for p in loc)
    msg = msg.removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def _symbols(v: Any) -> Any:
    return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v


class SleeveConfig(BaseModel):
    """One strategy on its own symbols. ``strategy`` is a table: ``name`` plus that strategy's parameters
    (checked by the strategy's own parameter model, as ``[strategy]`` is)."""

    model_config = FROZEN
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=40)
    symbols: list[str] = Field(min_length=1)
    strategy: dict[str, Any]

    @field_validator("symbols", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return _symbols(v)

    @field_validator("symbols")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("symbols contains duplicates")
        return v

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from hflite.strategy.builtin import PARAMS

        who = f"sleeve {info.data.get('name', '?')!r}"
        name = v.get("name")
        if name not in SLEEVE_STRATEGIES:
            extra = (
                " (ai_ensemble needs the AI brain, which sleeves do not build)"
                if name == "ai_ensemble"
                else ""
            )
            raise ValueError(
                f"{who}: strategy name must be one of {', '.join(SLEEVE_STRATEGIES)}, got {name!r}{extra}"
            )
        params = {k: x for k, x in v.items() if k != "name"}
        try:
            PARAMS[name].model_validate(params)
        except ValidationError as exc:
            why = "; ".join(_error_line(e["loc"], e["msg"]) for e in exc.errors())
            raise ValueError(f"{who}: {name}: {why}") from None
        return v

    def strategy_name(self) -> str:
        return str(self.strategy["name"])

    def strategy_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.strategy.items() if k != "name"}


class SelectionConfig(BaseModel):
    """Automated strategy selection, applied at every re-allocation from each sleeve's own trailing record.

    The rule: a sleeve has **decayed** at a rebalance date when, over its last ``window_days`` weekdays
    of standalone daily returns, its annualised Sharpe ratio is below ``min_sharpe`` or its equity stands
    more than ``max_dd_pct`` below the highest point of that window. A decayed sleeve's weight is
    multiplied by ``cut`` (0: no capital; its positions are closed) until a later rebalance finds the rule
    no longer holds. The sleeve keeps running on its own (the standalone run), so it can recover. A
    sleeve that did not move at all in the window (no trades) has no Sharpe ratio and is not cut.
    """

    model_config = FROZEN
    enabled: bool = True
    window_days: int = Field(126, ge=20, le=2520, description="weekdays of trailing standalone returns")
    min_sharpe: float = Field(0.0, ge=-5, le=5, description="annualised trailing Sharpe below this: decayed")
    max_dd_pct: float = Field(15.0, gt=0, le=100, description="drawdown from the window's peak above this")
    cut: float = Field(0.0, ge=0, lt=1, description="weight multiplier of a decayed sleeve (0 = no capital)")


class PortfolioConfig(BaseModel):
    """Sleeves, how capital is split between them (``allocation``), how often (``rebalance``), on how much
    history, and the selection rule. What a weight means in the combined run is in docs/portfolio.md:
    a sleeve with weight ``w`` of ``N`` sleeves trades at ``risk.risk_pct x N x w`` per trade (an equal
    weight is exactly the configured risk), at most ``max_scale`` times it, always inside the risk gate."""

    model_config = FROZEN
    sleeve: list[SleeveConfig] = Field(min_length=1)
    allocation: Allocation = "hrp"
    rebalance: Rebalance = "monthly"
    lookback_days: int = Field(126, ge=20, le=2520, description="weekdays of sleeve returns per allocation")
    min_history_days: int = Field(63, ge=10, le=2520, description="equal weights before this much history")
    target_vol_pct: float = Field(10.0, gt=0, le=200, description="vol_target: annualised vol aimed at")
    max_scale: float = Field(2.0, ge=1, le=4, description="most a sleeve's risk may exceed risk_pct")
    redistribute: bool = Field(True, description="a cut sleeve's weight goes to the others (False: to cash)")
    selection: SelectionConfig = Field(default_factory=lambda: SelectionConfig(enabled=False))

    @model_validator(mode="after")
    def _coherent(self) -> PortfolioConfig:
        names: dict[str, int] = {}
        for sl in self.sleeve:
            if sl.name in names:
                raise _rule("portfolio.sleeve", f"two sleeves are named {sl.name!r}: names must be unique")
            names[sl.name] = 1
        owner: dict[str, str] = {}
        for sl in self.sleeve:
            for sym in sl.symbols:
                if sym in owner:
                    raise _rule(
                        "portfolio.sleeve",
                        f"{sym} is in sleeves {owner[sym]!r} and {sl.name!r}: a symbol may be in one sleeve "
                        "only (the account holds one position per symbol)",
                    )
                owner[sym] = sl.name
        if self.min_history_days > self.lookback_days:
            raise _rule(
                "portfolio.min_history_days",
                f"{self.min_history_days} is more than lookback_days ({self.lookback_days}): an allocation "
                "never reads more than lookback_days of history",
            )
        return self

    def symbols(self) -> list[str]:
        """Every sleeve's symbols, in sleeve order: the run's symbols."""
        return [sym for sl in self.sleeve for sym in sl.symbols]

    def owner(self) -> dict[str, str]:
        """Symbol -> the name of the sleeve that trades it."""
        return {sym: sl.name for sl in self.sleeve for sym in sl.symbols}
