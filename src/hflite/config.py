"""Configuration: TOML file, then environment (``HFLITE_`` prefix, ``__`` for nesting, and ``.env``),
then ``--set key=value`` overrides; validated at start with messages that name the field.

Precedence (highest first): ``--set`` > environment > ``.env`` > TOML file > defaults.
"""

from __future__ import annotations

import math
import os
import tomllib
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from hflite.ai.brain import AIConfig
from hflite.ai.llm.config import LLMConfig
from hflite.domain.instrument import AssetClass
from hflite.lab.portfolio_config import PortfolioConfig

if TYPE_CHECKING:
    from hflite.execution.timing import TimingRules

FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

#: Upper bound on any amount of money in the config (USD): larger is a typo, not a portfolio.
MAX_USD = 1e12


class ConfigError(ValueError):
    """A configuration problem, one line per field."""


class RunConfig(BaseModel):
    model_config = FROZEN
    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)
    symbols: list[str] = Field(min_length=1)
    start: date
    end: date
    frequency: Literal["1d", "1h", "1m"] = "1d"
    initial_cash: float = Field(100_000.0, gt=0, le=MAX_USD)
    benchmarks: list[str] = Field(default_factory=lambda: ["SPY", "BTC-USD"])

    @field_validator("symbols", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _window(self) -> RunConfig:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbols contains duplicates")
        return self


class StrategyConfig(BaseModel):
    """``name`` picks a built-in; every other key is that strategy's parameter (checked by it),
    including ``[strategy.by_regime.<regime>]`` blocks of per-regime overrides (docs/strategies.md)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    name: Literal["trend", "breakout", "mean_reversion", "ai_ensemble", "tsmom", "xsmom"]

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BreakerConfig(BaseModel):
    """Circuit breakers (see docs/risk.md). 0 switches a breaker off."""

    model_config = FROZEN
    sigma: float = Field(5.0, ge=0, description="pause a symbol on a bar move beyond N sigmas")
    sigma_window: int = Field(60, ge=5, le=1000)
    volume_spike: float = Field(5.0, ge=0, description="... or volume beyond N x its average")
    volume_window: int = Field(20, ge=2, le=1000)
    vol_ratio: float = Field(3.0, ge=0, description="... or volatility beyond N x its 1-year median")
    cooldown_bars: int = Field(5, ge=1, le=1000)
    index: str = Field("SPY", description="broad index for the market-wide breaker ('' = off)")
    index_move_pct: float = Field(7.0, ge=0, le=100)
    index_cooldown_bars: int = Field(3, ge=1, le=1000)


class ProtectionConfig(BaseModel):
    """Protections driven by the run's own trades. 0 switches a guard off."""

    model_config = FROZEN
    stop_cooldown_bars: int = Field(3, ge=0, le=1000)
    guard_stops: int = Field(3, ge=0, le=100)
    guard_window_bars: int = Field(20, ge=1, le=10_000)
    guard_scope: Literal["symbol", "all"] = "symbol"
    guard_pause_bars: int = Field(10, ge=1, le=10_000)
    low_profit_trades: int = Field(3, ge=0, le=100)
    low_profit_window_bars: int = Field(120, ge=1, le=10_000)
    low_profit_min_pct: float = Field(-5.0, ge=-100, le=100)
    low_profit_pause_bars: int = Field(40, ge=1, le=10_000)


class RegimeConfig(BaseModel):
    model_config = FROZEN
    source: Literal["rule", "ai", "none"] = Field(
        "rule", description="'ai': the regimes of [ai.regime] (rule or hidden Markov model)"
    )
    index: str = "SPY"
    trend_window: int = Field(200, ge=10, le=2000)
    slope_bars: int = Field(20, ge=1, le=500)
    vol_window: int = Field(20, ge=5, le=500)
    crisis_vol: float = Field(40.0, gt=0, le=500, description="annualised volatility % = crisis")
    scale: dict[Literal["bull", "bear", "sideways", "crisis"], float] = Field(
        default_factory=lambda: {"bull": 1.0, "sideways": 0.75, "bear": 0.5, "crisis": 0.25}  # type: ignore[arg-type,dict-item]
    )

    @field_validator("scale")
    @classmethod
    def _scale_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: x for k, x in v.items() if not 0 <= x <= 1}
        if bad:
            raise ValueError(f"scales must be within [0, 1] (risk never grows with the regime): {bad}")
        return v


class RiskCommandConfig(BaseModel):
    """A human command scheduled in a backtest (to test what pause, kill... do)."""

    model_config = FROZEN
    at: datetime = Field(description="applied at the first bar-time at or after this (UTC if naive)")
    action: Literal["pause", "resume", "close_all", "kill"]
    reason: str = ""

    @field_validator("at", mode="before")
    @classmethod
    def _date_is_midnight(cls, v: Any) -> Any:
        if isinstance(v, date) and not isinstance(v, datetime):
            return datetime(v.year, v.month, v.day, tzinfo=UTC)
        return v


class RiskConfig(BaseModel):
    """Every limit of the risk manager (docs/risk.md); names match ``risk.limits.RiskLimits``."""

    model_config = FROZEN
    profile: Literal["full", "minimal"] = Field(
        "full", description="full: every rule on; minimal: sizing, position/gross caps, drawdown halt"
    )
    sizing: Literal["atr", "percent_equity"] = "atr"
    risk_pct: float = Field(0.5, ge=0.25, le=1.0, description="% of equity risked per trade")
    stop_atr: float = Field(2.0, gt=0, le=50)
    percent_equity: float = Field(10.0, gt=0, le=100)
    vol_adjust: bool = True
    vol_window: int = Field(20, ge=5, le=500)
    vol_history: int = Field(252, ge=20, le=5000)
    vol_floor: float = Field(0.25, gt=0, le=1)
    max_position_pct: float = Field(25.0, gt=0, le=100)
    max_correlation: float = Field(0.3, gt=0, le=1, description="1 = off")
    correlation_window: int = Field(60, ge=10, le=1000)
    correlation_action: Literal["reduce", "reject"] = "reduce"
    max_sector_pct: float = Field(20.0, gt=0, le=100, description="100 = off")
    max_asset_class_pct: dict[AssetClass, float] = Field(default_factory=lambda: {AssetClass.CRYPTO: 20.0})
    min_adv_usd: float = Field(1_000_000.0, ge=0, le=MAX_USD)
    max_adv_share: float = Field(0.01, ge=0, le=1, description="0 = off")
    liquidity_window: int = Field(20, ge=1, le=500)
    max_gross_exposure: float = Field(1.0, gt=0, le=10)
    max_net_exposure: float = Field(1.0, gt=0, le=10)
    max_leverage: float = Field(1.0, ge=1, le=10, description="1 = cash account: no margin loan")
    max_open_positions: int = Field(10, ge=0, le=1000, description="0 = off")
    daily_loss_pct: float = Field(2.0, ge=0, le=100, description="0 = off")
    weekly_loss_pct: float = Field(5.0, ge=0, le=100)
    monthly_loss_pct: float = Field(10.0, ge=0, le=100)
    period_tz: str = "America/New_York"
    drawdown_reduce_pct: float = Field(10.0, ge=0, le=100, description="0 = off")
    drawdown_reduce_factor: float = Field(0.5, gt=0, le=1)
    max_drawdown_pct: float = Field(15.0, gt=0, le=100)
    max_order_usd: float = Field(1_000_000.0, ge=0, le=MAX_USD, description="0 = off")
    max_orders_per_minute: int = Field(60, ge=0, le=100_000, description="0 = off")
    collar_pct: float = Field(10.0, ge=0, le=100, description="0 = off")
    allow_short: bool = True
    breakers: BreakerConfig = Field(default_factory=BreakerConfig)
    protections: ProtectionConfig = Field(default_factory=ProtectionConfig)
    regime: RegimeConfig = Field(default_factory=RegimeConfig)
    events: list[RiskCommandConfig] = Field(default_factory=list)

    @field_validator("period_tz")
    @classmethod
    def _known_tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as America/New_York)") from None
        return v

    @model_validator(mode="after")
    def _coherent(self) -> RiskConfig:
        if self.drawdown_reduce_pct and self.drawdown_reduce_pct >= self.max_drawdown_pct:
            raise ValueError(
                f"drawdown_reduce_pct ({self.drawdown_reduce_pct:g}) must be below max_drawdown_pct "
                f"({self.max_drawdown_pct:g})"
            )
        return self


class FeeSpec(BaseModel):
    model_config = FROZEN
    model: Literal["bps", "per_share"] = "bps"
    bps: float = Field(0.0, ge=0, le=500)
    per_share: float = Field(0.0, ge=0, le=1)
    minimum: float = Field(0.0, ge=0, le=10_000)
    max_pct: float = Field(1.0, gt=0, le=100)


def _default_fees() -> dict[AssetClass, FeeSpec]:
    return {
        AssetClass.EQUITY: FeeSpec(model="per_share", per_share=0.005, minimum=1.0, max_pct=1.0),
        AssetClass.ETF: FeeSpec(model="per_share", per_share=0.005, minimum=1.0, max_pct=1.0),
        AssetClass.CRYPTO: FeeSpec(model="bps", bps=10.0),
        AssetClass.FX: FeeSpec(model="bps", bps=0.5),
    }


class SlippageConfig(BaseModel):
    model_config = FROZEN
    model: Literal["fixed", "volatility"] = "volatility"
    bps: dict[AssetClass, float] = Field(
        default_factory=lambda: {
            AssetClass.EQUITY: 2.0,
            AssetClass.ETF: 1.0,
            AssetClass.CRYPTO: 5.0,
            AssetClass.FX: 0.5,
        }
    )
    range_frac: float = Field(0.02, ge=0, le=1, description="share of the previous bar's range")

    @field_validator("bps")
    @classmethod
    def _non_negative(cls, v: dict[AssetClass, float]) -> dict[AssetClass, float]:
        for k, x in v.items():
            if x < 0:
                raise ValueError(f"bps for {k} must be >= 0")
        return v


class TimingConfig(BaseModel):
    """``[execution.timing]``: when a paper/live run's orders may reach a broker and at what price a
    market order goes out (``hflite.execution.timing``). On the live clock only: a backtest, a replay
    and a recorded feed fill at their bars as always."""

    model_config = FROZEN
    avoid_open_min: int = Field(0, ge=0, le=720, description="no order in a session's first N minutes")
    avoid_close_min: int = Field(0, ge=0, le=720, description="no order in a session's last N minutes")
    max_spread_bps: float | None = Field(
        None, gt=0, le=10_000, description="hold orders while the venue's quoted spread is wider"
    )
    spread_recheck_s: float = Field(5.0, gt=0, le=3600, description="how often a held spread is checked")
    limit_from_spread: bool = Field(
        False, description="send market entries/exits as limits priced from the venue's quote"
    )
    limit_at: Literal["mid", "touch"] = Field("mid", description="mid of bid/ask, or our side (touch)")
    limit_timeout_s: float = Field(
        60.0, gt=0, le=86_400, description="a limit from the spread lives this long"
    )
    on_timeout: Literal["market", "cancel"] = Field(
        "market", description="market: re-price across the spread by cross_bps; cancel: cancel it"
    )
    cross_bps: float = Field(
        10.0, ge=0, le=1000, description="how far past the far side a re-priced order goes"
    )

    def rules(self) -> TimingRules:
        from hflite.execution.timing import TimingRules

        return TimingRules(**self.model_dump())


class ExecutionConfig(BaseModel):
    model_config = FROZEN
    tif: Literal["gtc", "day", "ioc"] = "gtc"
    max_volume_share: float = Field(0.1, gt=0, le=1, description="max share of a bar's volume per fill")
    fees: dict[AssetClass, FeeSpec] = Field(default_factory=_default_fees)
    slippage: SlippageConfig = Field(default_factory=SlippageConfig)
    timing: TimingConfig = Field(default_factory=TimingConfig)

    @model_validator(mode="after")
    def _every_class_has_fees(self) -> ExecutionConfig:
        missing = [c.value for c in AssetClass if c not in self.fees]
        if missing:
            raise ValueError(f"fees missing for asset classes: {', '.join(missing)}")
        return self


class IntradayItem(BaseModel):
    model_config = FROZEN
    symbol: str
    freq: Literal["1h", "1m"] = "1h"
    provider: str = "ccxt"
    exchange: str | None = "binance"
    asset_class: AssetClass | None = None


def _sample_daily() -> list[str]:
    from hflite.domain.instrument import SAMPLE_INSTRUMENTS

    return [s for s, i in SAMPLE_INSTRUMENTS.items() if s not in ("BTCUSDT", "ETHUSDT")]


class DataUpdateConfig(BaseModel):
    """What ``hflite data update`` keeps current (defaults: the embedded sample's contents)."""

    model_config = FROZEN
    symbols: list[str] = Field(default_factory=_sample_daily, description="daily bars to keep current")
    providers: dict[AssetClass, str] = Field(
        default_factory=lambda: {
            AssetClass.EQUITY: "yfinance",
            AssetClass.ETF: "yfinance",
            AssetClass.CRYPTO: "yfinance",
            AssetClass.FX: "yfinance",
        }
    )
    intraday: list[IntradayItem] = Field(
        default_factory=lambda: [IntradayItem(symbol="BTCUSDT"), IntradayItem(symbol="ETHUSDT")]
    )
    series: list[str] = Field(
        default_factory=lambda: [
            "FEDFUNDS",
            "CPIAUCSL",
            "CPILFESL",
            "PCEPILFE",
            "UNRATE",
            "PAYEMS",
            "INDPRO",
            "M2SL",
            "GDPC1",
            "DGS10",
            "DGS2",
            "T10Y2Y",
            "T10YIE",
            "DCOILWTICO",
            "DTWEXBGS",
            "VIXCLS",
            "ICSA",
            "USREC",
        ]
    )
    series_provider: str = "fred"
    news_symbols: list[str] = Field(default_factory=list)
    news_provider: str = "finnhub"
    history_start: date = date(2000, 1, 1)
    overlap_bars: int = Field(5, ge=1, le=1000)


class DataConfig(BaseModel):
    model_config = FROZEN
    dir: Path = Path("var/data")
    archive_dir: Path | None = Field(None, description="a second disk for old partitions")
    pin: dict[str, str] = Field(
        default_factory=dict,
        description="partition key -> data version to read (a run's config.json pins "
        "the versions it read, so `hflite backtest --rerun <report folder>` reproduces it)",
    )
    update: DataUpdateConfig = Field(default_factory=DataUpdateConfig)


class ReportConfig(BaseModel):
    model_config = FROZEN
    dir: Path = Path("reports")


def _rule(field: str, reason: str) -> PydanticCustomError:
    """A validation error reported against ``field`` (a dotted path such as ``risk.risk_pct``), whatever
    model raised it: rules that span sections name the field the user has to change."""
    return PydanticCustomError("config_rule", "{reason}", {"field": field, "reason": reason})


# ---------------------------------------------------------------------------------------------------
# [phase]: the plan's stages, each a set of limits (docs/phases.md)

PhaseName = Literal["sandbox", "small", "grow", "pro"]


@dataclass(frozen=True)
class PhaseLimits:
    """The limits of one phase of the plan and the settings they map onto (docs/phases.md)."""

    name: str
    min_assets: int  # the plan's advice only: not enforced
    max_assets: int | None  # caps len(run.symbols) and risk.max_open_positions; None = no maximum
    min_cash_usd: float  # the plan's advice only: not enforced
    max_cash_usd: float | None  # caps run.initial_cash; None = no cap
    min_risk_pct: float  # risk.risk_pct must lie within [min_risk_pct, max_risk_pct] ...
    max_risk_pct: float  # ... and defaults to max_risk_pct
    portfolio_risk_pct: float  # caps risk.max_drawdown_pct (the drawdown that halts entries); its default
    paper_only: bool  # no live (real-money) endpoint, ever

    def rows(self) -> list[tuple[str, str]]:
        """(limit, value) pairs for a status table."""
        assets = f"{self.min_assets}-{self.max_assets}" if self.max_assets else f"{self.min_assets}+"
        cash = (
            f"${self.min_cash_usd:,.0f}-${self.max_cash_usd:,.0f}"
            if self.max_cash_usd is not None
            else ("no cap" if not self.min_cash_usd else f"${self.min_cash_usd:,.0f}+ (no cap)")
        )
        return [
            ("phase", self.name),
            ("assets", assets),
            ("capital", cash),
            ("per-trade risk", f"{self.min_risk_pct:g}-{self.max_risk_pct:g}%"),
            ("portfolio risk (max drawdown)", f"{self.portfolio_risk_pct:g}%"),
            ("venues", "paper only" if self.paper_only else "paper or live"),
        ]


#: The plan's phases, smallest first.
PHASES: dict[str, PhaseLimits] = {
    "sandbox": PhaseLimits("sandbox", 1, 2, 0.0, None, 0.25, 0.5, 5.0, paper_only=True),
    "small": PhaseLimits("small", 5, 10, 100.0, 500.0, 0.25, 1.0, 10.0, paper_only=False),
    "grow": PhaseLimits("grow", 15, 25, 1_000.0, 5_000.0, 0.25, 0.75, 15.0, paper_only=False),
    "pro": PhaseLimits("pro", 30, None, 10_000.0, None, 0.25, 0.5, 20.0, paper_only=False),
}


class PhaseConfig(BaseModel):
    """``[phase]``: which stage of the plan this run is in; its limits bound the risk settings."""

    model_config = FROZEN
    name: PhaseName

    def limits(self) -> PhaseLimits:
        return PHASES[self.name]


def _looser(field: str, value: str, phase: PhaseLimits, limit: str) -> PydanticCustomError:
    return _rule(field, f"{value} is looser than phase {phase.name} allows ({limit})")


def _risk_under_phase(risk: RiskConfig, phase: PhaseLimits) -> RiskConfig:
    """``risk`` with the phase's limits as defaults for what the user left unset; an explicit value may
    only tighten them."""
    explicit = risk.model_fields_set
    updates: dict[str, Any] = {}
    if "risk_pct" in explicit:
        _check_risk_pct(risk.risk_pct, phase)
    else:
        updates["risk_pct"] = phase.max_risk_pct
    max_dd = risk.max_drawdown_pct
    if "max_drawdown_pct" not in explicit:
        max_dd = updates["max_drawdown_pct"] = phase.portfolio_risk_pct
    elif max_dd > phase.portfolio_risk_pct:
        limit = f"at most {phase.portfolio_risk_pct:g}, its portfolio risk"
        raise _looser("risk.max_drawdown_pct", f"{max_dd:g}", phase, limit)
    positions = _positions_under_phase(risk, phase)
    if positions != risk.max_open_positions:
        updates["max_open_positions"] = positions
    reduce_at = risk.drawdown_reduce_pct
    if reduce_at and reduce_at >= max_dd:
        if "drawdown_reduce_pct" in explicit:
            raise _rule(
                "risk.drawdown_reduce_pct",
                f"{reduce_at:g} must be below max_drawdown_pct ({max_dd:g}, phase {phase.name}'s "
                "portfolio risk)",
            )
        updates["drawdown_reduce_pct"] = max_dd / 2
    if not updates:
        return risk
    return RiskConfig.model_validate({**{k: getattr(risk, k) for k in explicit}, **updates})


def _check_risk_pct(risk_pct: float, phase: PhaseLimits) -> None:
    if risk_pct > phase.max_risk_pct:
        raise _looser("risk.risk_pct", f"{risk_pct:g}", phase, f"at most {phase.max_risk_pct:g}")
    if risk_pct < phase.min_risk_pct:
        raise _rule(
            "risk.risk_pct",
            f"{risk_pct:g} is below phase {phase.name}'s per-trade risk range "
            f"({phase.min_risk_pct:g}-{phase.max_risk_pct:g})",
        )


def _positions_under_phase(risk: RiskConfig, phase: PhaseLimits) -> int:
    """``risk.max_open_positions`` capped at the phase's assets (0 = off counts as no cap)."""
    positions = risk.max_open_positions
    if phase.max_assets is None or 0 < positions <= phase.max_assets:
        return positions
    if "max_open_positions" in risk.model_fields_set:
        shown = "0 (off)" if positions == 0 else str(positions)
        raise _looser("risk.max_open_positions", shown, phase, f"at most {phase.max_assets}")
    return phase.max_assets


# ---------------------------------------------------------------------------------------------------
# [venue]: where a paper or live run sends its orders

#: The venues ``[venue] kind`` may name. A broker adapter adds its kind here (and to
#: ``DEFAULT_VENUE_KEYS`` only if it is a local fake that accepts known keys).
VenueKind = Literal["paper", "fakebroker", "alpaca", "ccxt", "oanda", "ib"]
VENUE_KINDS: tuple[str, ...] = get_args(VenueKind)
#: Each broker's (paper/practice/testnet, live) endpoint when ``[venue] url`` is not set. The paper one is
#: the default: a live endpoint needs ``live = true`` (and ``--live`` on the command line). CCXT's
#: endpoints come from the exchange's ccxt class (its sandbox URLs unless live); IB's are TWS's paper
#: and live socket ports (IB Gateway uses 4002 / 4001: set the url).
VENUE_ENDPOINTS: dict[str, tuple[str, str]] = {
    "fakebroker": ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
    "alpaca": ("https://paper-api.alpaca.markets", "https://api.alpaca.markets"),
    "ccxt": ("", ""),
    "oanda": ("https://api-fxpractice.oanda.com", "https://api-fxtrade.oanda.com"),
    "ib": ("tcp://127.0.0.1:7497", "tcp://127.0.0.1:7496"),
}
#: Venues simulated in-process: no endpoint, no keys, no live mode.
SIMULATED_VENUES: frozenset[str] = frozenset({"paper"})
#: Keys a venue falls back to when both its variables are unset (the local fake broker accepts these).
DEFAULT_VENUE_KEYS: dict[str, tuple[str, str]] = {"fakebroker": ("fake-key", "fake-secret")}
#: Venues without API keys: TWS / IB Gateway is reached through its local socket, and the account id
#: (``account_env``) is what is checked.
KEYLESS_VENUES: frozenset[str] = frozenset({"ib"})
#: Venues signed in with one token (read from ``secret_env``; ``key_id_env`` is not needed).
TOKEN_VENUES: frozenset[str] = frozenset({"oanda"})
#: The variable whose value confirms a live run when no terminal can ask (``hflite.execution.live_guard``).
CONFIRM_LIVE_ENV = "HFLITE_CONFIRM_LIVE"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _env_secret(name: str) -> SecretStr | None:
    """The value of the variable ``name`` from the environment, else from ``./.env``; registered with
    the redaction layer, so it is masked in every log line and message."""
    from hflite import redact

    value = os.environ.get(name)
    if not value:
        from dotenv import dotenv_values

        value = dotenv_values(".env").get(name) if Path(".env").is_file() else None
    if not value:
        return None
    redact.register(value)
    return SecretStr(value)


class VenueConfig(BaseModel):
    """``[venue]``: the broker (or simulation) a paper or live run trades with. Its keys never come from
    a file: they are read from the variables ``key_id_env`` and ``secret_env`` (environment or
    ``.env``) and held as ``SecretStr`` outside the dumped settings."""

    model_config = FROZEN
    kind: VenueKind = "paper"
    url: str | None = Field(
        None,
        pattern=r"^(https?|tcp)://\S+$",
        max_length=2000,
        description="the broker's endpoint (default: its paper/practice/testnet one; live with live = true)",
    )
    live: bool = Field(False, description="true: the broker's live, real-money endpoint (also needs --live)")
    drive_clock: bool = Field(
        False,
        description="local fakes only: the runtime moves the fake's market with its recorded feed "
        "(default true for fakebroker, false for real brokers)",
    )
    key_id_env: str = Field("HFLITE_BROKER_KEY_ID", pattern=_ENV_NAME, max_length=128)
    secret_env: str = Field("HFLITE_BROKER_SECRET", pattern=_ENV_NAME, max_length=128)
    timeout_s: float = Field(5.0, gt=0, le=300)
    max_retries: int = Field(5, ge=0, le=100)
    rate_per_min: int = Field(200, ge=1, le=100_000, description="requests a minute at most")
    max_clock_skew_s: float = Field(2.0, gt=0, le=3600, description="refuse to trade beyond this skew")
    exchange: str = Field(
        "binance",
        pattern=r"^[a-z0-9_]+$",
        max_length=64,
        description="ccxt only: the exchange id (binance, kraken, ...)",
    )
    account_env: str = Field(
        "HFLITE_BROKER_ACCOUNT",
        pattern=_ENV_NAME,
        max_length=128,
        description="oanda / ib: the variable holding the account id (a secret: never logged)",
    )
    client_id: int = Field(1, ge=0, le=2**31 - 1, description="ib only: the API client id")
    symbols: dict[str, str] = Field(
        default_factory=dict,
        description='our symbol -> the venue\'s, e.g. {"BTC-USD" = "BTC/USDT"}; unset symbols use the '
        "adapter's own mapping (EUR-USD -> EUR_USD at OANDA, BTC-USD -> BTC/USD at ccxt, ...)",
    )
    _key_id: SecretStr | None = PrivateAttr(None)
    _secret: SecretStr | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _fake_drives_its_clock(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "fakebroker" and "drive_clock" not in data:
            return {**data, "drive_clock": True}
        return data

    @model_validator(mode="after")
    def _live_needs_an_endpoint(self) -> VenueConfig:
        if self.live and self.kind in SIMULATED_VENUES:
            raise _rule(
                "venue.live",
                f"the {self.kind} venue has no live endpoint: set live = false "
                f"(a broker kind such as fakebroker has one)",
            )
        if self.drive_clock and self.kind not in SIMULATED_VENUES:
            from urllib.parse import urlsplit

            host = urlsplit(self.endpoint).hostname or ""
            if host not in ("127.0.0.1", "localhost", "::1"):
                where = host or f"{self.kind}'s default endpoint"
                raise _rule(
                    "venue.drive_clock",
                    f"only a local fake's market clock can be driven, not {where}: "
                    "set drive_clock = false, or url to the local fake",
                )
        return self

    def model_post_init(self, context: Any, /) -> None:
        if self.kind not in SIMULATED_VENUES:
            self._key_id = _env_secret(self.key_id_env)
            self._secret = _env_secret(self.secret_env)

    @property
    def endpoint(self) -> str:
        """Where the venue is reached: ``url`` when set, else the kind's paper (or, with ``live``, live)
        endpoint; "" for ccxt without a url (the exchange's own sandbox or live URLs)."""
        if self.url:
            return self.url
        paper, live = VENUE_ENDPOINTS.get(self.kind, ("", ""))
        return live if self.live else paper

    @property
    def account(self) -> SecretStr | None:
        """The account id read from ``account_env`` (oanda, ib; None when unset)."""
        if self.kind in SIMULATED_VENUES:
            return None
        return _env_secret(self.account_env)

    @property
    def key_id(self) -> SecretStr | None:
        """The key id read from ``key_id_env`` (None when unset); ``venue_keys`` applies defaults."""
        return self._key_id

    @property
    def secret(self) -> SecretStr | None:
        """The secret read from ``secret_env`` (None when unset)."""
        return self._secret


# ---------------------------------------------------------------------------------------------------
# [runtime]: how ``hflite run`` paces itself, journals and logs


class RuntimeConfig(BaseModel):
    """``[runtime]``: the paper/live runtime's feed, pacing, journal and log files."""

    model_config = FROZEN
    feed: Literal["live", "recorded"] = Field(
        "live", description="live: poll the data providers; recorded: replay the store's bars"
    )
    speed: float | None = Field(
        None,
        gt=0,
        le=1e9,
        description="recorded feed: market seconds per wall second (None = as fast as possible)",
    )
    poll_delay_s: float = Field(5.0, ge=0, le=3600, description="wait after a bar's close before polling")
    retry_s: float = Field(30.0, gt=0, le=86_400, description="retry a provider that is down after this")
    journal: Path | None = Field(None, description="None: var/journal/<run name>.sqlite")
    log_dir: Path = Path("var/logs")
    log_max_mb: float = Field(10.0, gt=0, le=100_000, description="rotate <run name>.jsonl at this size")
    log_backups: int = Field(5, ge=1, le=1000, description="rotated log files kept")
    heartbeat_s: float = Field(1.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _speed_is_for_recordings(self) -> RuntimeConfig:
        if self.speed is not None and self.feed != "recorded":
            raise _rule(
                "runtime.speed",
                f'{self.speed:g} paces the recorded feed only: set feed = "recorded" or remove speed',
            )
        return self


Level = Literal["info", "warning", "critical"]


def _alerting_levels() -> list[Level]:
    return ["warning", "critical"]


class AlertChannelConfig(BaseModel):
    """One alert channel: an apprise URL read from ``.env`` (never from the config: it holds tokens)."""

    model_config = FROZEN
    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$")
    url_env: str = Field(
        min_length=1,
        description="the environment variable (or .env line) holding the apprise URL, e.g. "
        "HFLITE_ALERT_DISCORD = discord://webhook_id/webhook_token",
    )
    levels: list[Level] = Field(
        default_factory=_alerting_levels, min_length=1, description="levels it receives"
    )
    kinds: list[str] = Field(
        default_factory=list, description="event kinds it receives (empty: every kind at its levels)"
    )


class AlertsConfig(BaseModel):
    """``[alerts]``: where the runtime's alerts go (docs/operating.md)."""

    model_config = FROZEN
    enabled: bool = True
    channels: list[AlertChannelConfig] = Field(default_factory=list)
    dedup_s: float = Field(300.0, ge=0, le=86_400, description="the same alert again within this is dropped")
    per_minute: int = Field(20, ge=1, le=10_000, description="at most this many alerts per channel a minute")
    retries: int = Field(5, ge=0, le=100, description="retries of a failed delivery (exponential backoff)")
    retry_base_s: float = Field(2.0, gt=0, le=3600)
    timeout_s: float = Field(10.0, gt=0, le=300, description="one delivery attempt's time limit")
    queue_max: int = Field(1000, ge=1, le=1_000_000, description="undelivered alerts kept; older ones drop")
    fills: bool = Field(True, description="an info alert for every fill")
    daily_summary: str | None = Field(
        "17:15", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="HH:MM in summary_tz; None = off"
    )
    summary_tz: str = "America/New_York"
    stale_after_bars: float = Field(
        3.0, gt=0, le=1000, description="a symbol's feed is stale after this many bar intervals with no bar"
    )

    @model_validator(mode="after")
    def _unique_names(self) -> AlertsConfig:
        names = [c.name for c in self.channels]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"channel names must be unique: {', '.join(dup)} repeated")
        return self


class ApiConfig(BaseModel):
    """``[api]``: the control API (``hflite run --api`` or ``hflite serve``)."""

    model_config = FROZEN
    host: str = Field("127.0.0.1", description="loopback by default; another address needs tls_cert")
    port: int = Field(8765, ge=0, le=65_535, description="0: any free port (printed at start)")
    token_env: str = Field("HFLITE_API_TOKEN", description="the .env variable holding the bearer token")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    control_per_minute: int = Field(10, ge=1, le=10_000, description="control commands per client a minute")
    read_per_second: int = Field(200, ge=1, le=100_000, description="reads per client a second")


class TelegramConfig(BaseModel):
    """``[telegram]``: the bot that notifies and takes commands from the configured chats only."""

    model_config = FROZEN
    enabled: bool = False
    token_env: str = "HFLITE_TELEGRAM_TOKEN"  # noqa: S105 - the variable's name, not a token
    chat_ids: list[int] = Field(default_factory=list, description="the only chats it answers and notifies")
    base_url: str | None = Field(None, description="the Bot API's URL (None: https://api.telegram.org/bot)")
    notify_levels: list[Level] = Field(default_factory=_alerting_levels)

    @model_validator(mode="after")
    def _needs_chats(self) -> TelegramConfig:
        if self.enabled and not self.chat_ids:
            raise ValueError("enabled = true needs chat_ids: the bot answers the configured chats only")
        return self


class MetricsConfig(BaseModel):
    """``[metrics]``: Prometheus metrics on the API's ``/metrics``."""

    model_config = FROZEN
    enabled: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HFLITE_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
    )
    run: RunConfig
    strategy: StrategyConfig  # required: a run never trades a strategy the user did not name
    # phase, venue and runtime come before risk: risk's validator reads the phase (fields validate in order)
    phase: PhaseConfig | None = Field(None, description="None: no phase limits (backtests, research)")
    venue: VenueConfig = Field(default_factory=VenueConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig, validate_default=True)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    ai: AIConfig = Field(default_factory=AIConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    portfolio: PortfolioConfig | None = Field(None, description="hflite portfolio: sleeves and allocation")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init carries --set overrides merged over the TOML file; env must sit between them.
        return (_Overrides(settings_cls), env_settings, _DotEnv(settings_cls, dotenv_settings), init_settings)

    @field_validator("venue")
    @classmethod
    def _phase_allows_live(cls, venue: VenueConfig, info: ValidationInfo) -> VenueConfig:
        phase: PhaseConfig | None = info.data.get("phase")
        if venue.live and phase is not None and phase.limits().paper_only:
            raise _rule(
                "venue.live",
                f"phase {phase.name} is paper only: set [venue] live = false, "
                "or move to phase small or above to trade real money",
            )
        return venue

    @field_validator("runtime")
    @classmethod
    def _live_venue_needs_live_feed(cls, runtime: RuntimeConfig, info: ValidationInfo) -> RuntimeConfig:
        venue: VenueConfig | None = info.data.get("venue")
        if runtime.feed == "recorded" and venue is not None and venue.live:
            raise _rule(
                "runtime.feed",
                f"the recorded feed replays history: it cannot trade venue {venue.kind}'s live endpoint "
                '(set feed = "live", or [venue] live = false)',
            )
        return runtime

    @field_validator("risk")
    @classmethod
    def _phase_bounds_risk(cls, risk: RiskConfig, info: ValidationInfo) -> RiskConfig:
        phase: PhaseConfig | None = info.data.get("phase")
        return risk if phase is None else _risk_under_phase(risk, phase.limits())

    @model_validator(mode="after")
    def _phase_bounds_run(self) -> Settings:
        limits = self.phase_limits()
        if limits is None:
            return self
        n = len(self.run.symbols)
        if limits.max_assets is not None and n > limits.max_assets:
            raise _rule(
                "run.symbols",
                f"{n} symbols is more than phase {limits.name} allows (at most {limits.max_assets})",
            )
        cash = self.run.initial_cash
        if limits.max_cash_usd is not None and cash > limits.max_cash_usd:
            raise _rule(
                "run.initial_cash",
                f"{cash:g} is more than phase {limits.name} allows (at most {limits.max_cash_usd:g})",
            )
        return self

    def phase_limits(self) -> PhaseLimits | None:
        """The limits of the configured ``[phase]`` (None without one: no phase limits apply)."""
        return None if self.phase is None else self.phase.limits()


class _DotEnv(PydanticBaseSettingsSource):
    """``.env`` minus the variables hflite reads itself: ``HFLITE_`` names without ``__`` (a venue's keys,
    ``HFLITE_CONFIRM_LIVE``, a provider's base URL) are not settings, so not "unknown keys"; a nested
    name (``HFLITE_RSK__RISK_PCT``) still is."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        fields = set(self.settings_cls.model_fields)
        return {
            k: v
            for k, v in self._inner().items()
            if k in fields or not k.lower().startswith("hflite_") or "__" in k
        }


_OVERRIDES: ContextVar[dict[str, Any] | None] = ContextVar("hflite_overrides", default=None)


class _Overrides(PydanticBaseSettingsSource):
    """The ``--set`` overrides of the current ``load_settings`` call, applied above the environment."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_OVERRIDES.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_OVERRIDES.get() or {})


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["strategy.fast=20", "run.symbols=SPY,TLT"]`` -> nested dict with TOML-typed values."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. strategy.fast=20")
        key, raw = pair.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"--set {pair!r}: the key needs a section, e.g. strategy.fast")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: keep it as a string
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_settings(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, *, trades: bool = True
) -> Settings:
    """Read, merge and validate; raises ConfigError naming each bad field. A run that ``trades``
    must name its strategy; commands that never trade (features, train) may leave it out."""
    file_data = read_toml(path) if path is not None else {}
    if trades and "portfolio" in file_data and "strategy" not in file_data:
        raise ConfigError(
            "config error: portfolio: this is a portfolio config (its strategies are its "
            "[[portfolio.sleeve]] tables): run it with `hflite portfolio --config ...`; this command "
            "takes a config with one [strategy]"
        )
    if not trades:
        file_data.setdefault("strategy", {"name": "trend"})  # unused by these commands
    token = _OVERRIDES.set(overrides or {})
    try:
        settings = Settings(**file_data)
        _check_finite(settings.strategy.params(), "strategy")
        _check_strategy(settings)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    finally:
        _OVERRIDES.reset(token)
    return settings


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML config file as a dict; a missing, binary or malformed file is one ConfigError line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise ConfigError(
            f"{p}: not a UTF-8 text file (byte {byte:#04x} at offset {exc.start}): a config is TOML text"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None


def _check_finite(values: dict[str, Any], prefix: str) -> None:
    """Free-form parameters (a strategy's) are typed by their own model later; refuse NaN and
    infinities first so every section says the same thing about them."""
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config error: {prefix}.{key}: must be a finite number (got {value!r})")


def _check_strategy(settings: Settings) -> None:
    from hflite.strategy.builtin import PARAMS

    try:
        PARAMS[settings.strategy.name].model_validate(settings.strategy.params())
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix="strategy")) from None


_STRATEGIES = "trend, breakout, mean_reversion, tsmom, xsmom or ai_ensemble"
#: What to do about a missing section or key a run cannot guess.
_MISSING = {
    "run": "missing: pass --config FILE (e.g. configs/demo.toml), or give [run] symbols, start and end",
    "strategy": f"missing: add a [strategy] section with name = {_STRATEGIES} (or pass --strategy)",
    "strategy.name": f"missing: one of {_STRATEGIES}",
}


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"] if x != "__root__")
        loc = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "config_rule":  # a cross-section rule names the field to change itself
            lines.append(f"config error: {err['ctx']['field']}: {msg}")
            continue
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "finite_number":
            msg = "must be a finite number"
        elif err["type"] == "missing" and loc in _MISSING:
            msg = _MISSING[loc]
        got = err.get("input")
        shown = (
            ""
            if err["type"] in ("missing", "extra_forbidden") or isinstance(got, dict)
            else f" (got {got!r})"
        )
        lines.append(f"config error: {loc or 'config'}: {msg}{shown}")
    return "\n".join(lines)


def _section(path: str | Path, name: str) -> dict[str, Any]:
    """One ``[name]`` table of a TOML config file (empty when absent)."""
    return dict(read_toml(path).get(name, {}))


class DataSettings(BaseSettings):
    """Only the ``[data]`` section: the data commands need no ``[run]``."""

    model_config = SettingsConfigDict(
        env_prefix="HFLITE_", env_nested_delimiter="__", env_file=".env", extra="ignore", frozen=True
    )
    data: DataConfig = Field(default_factory=DataConfig)


def load_data_settings(path: str | Path | None = None) -> DataConfig:
    """The ``[data]`` section of a config file (or defaults), with environment overrides."""
    file_data: dict[str, Any] = {"data": _section(path, "data")} if path is not None else {}
    try:
        return DataSettings(**file_data).data
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


class LLMSettings(BaseSettings):
    """Only the ``[llm]`` section: ``hflite llm`` commands need no ``[run]``."""

    model_config = SettingsConfigDict(
        env_prefix="HFLITE_", env_nested_delimiter="__", env_file=".env", extra="ignore", frozen=True
    )
    llm: LLMConfig = Field(default_factory=LLMConfig)


def load_llm_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> LLMConfig:
    """The ``[llm]`` section of a config file (or defaults), with environment overrides, then
    ``overrides`` (keys of ``[llm]``)."""
    file_data = _section(path, "llm") if path is not None else {}
    try:
        cfg = LLMSettings(llm=file_data).llm if file_data else LLMSettings().llm
        return LLMConfig.model_validate({**cfg.model_dump(), **(overrides or {})}) if overrides else cfg
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix="")) from None


def redacted(settings: Settings) -> dict[str, Any]:
    """The resolved configuration as plain data for reports: secrets (``SecretStr``, e.g. the
    OpenAI-compatible API key) dump as "**********", never their value, a venue's keys are not part of
    the dump at all (only the names of their variables), and every text goes through the redaction
    layer (a password in an LLM server's URL, a key in its query, a registered key)."""
    from hflite.redact import redact

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items()}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return redact(node) if isinstance(node, str) else node

    return clean(settings.model_dump(mode="json"))  # type: ignore[no-any-return]


def venue_keys(settings: Settings) -> tuple[str, str]:
    """The (key id, secret) the configured broker venue signs in with, read from the environment or
    ``.env``. The local fake broker falls back to ``DEFAULT_VENUE_KEYS`` when both are unset; IB has
    no keys (``KEYLESS_VENUES``: empty strings); OANDA has a token only (``TOKEN_VENUES``: the
    secret); any other broker requires both. Never log the result: it is registered with
    ``hflite.redact`` regardless."""
    venue = settings.venue
    if venue.kind in SIMULATED_VENUES:
        raise ConfigError(f"venue {venue.kind} is simulated in-process: it has no keys")
    key_id, secret = venue.key_id, venue.secret
    if venue.kind in KEYLESS_VENUES:
        return "", ""
    if venue.kind in TOKEN_VENUES:
        if secret is None:
            raise ConfigError(
                f"venue {venue.kind} needs its API token in {venue.secret_env} (set it in .env)"
            )
        return (key_id.get_secret_value() if key_id is not None else ""), secret.get_secret_value()
    if key_id is None and secret is None and venue.kind in DEFAULT_VENUE_KEYS:
        return DEFAULT_VENUE_KEYS[venue.kind]
    if key_id is None or secret is None:
        raise ConfigError(
            f"venue {venue.kind} needs {venue.key_id_env} and {venue.secret_env} (set them in .env)"
        )
    return key_id.get_secret_value(), secret.get_secret_value()
