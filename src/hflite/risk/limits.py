"""Every limit the risk manager enforces, with the plan's defaults. Plain frozen values.

Units: percentages are percent (2.0 = 2%); exposure caps are multiples of equity (1.0 = 100%);
bar counts are bars of the symbol concerned (global pauses: points of the run's timeline).
A value of 0 switches a rule off where the field says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


class Regime(StrEnum):
    BULL = "bull"
    BEAR = "bear"
    SIDEWAYS = "sideways"
    CRISIS = "crisis"


@dataclass(frozen=True, slots=True)
class BreakerLimits:
    """Circuit breakers. Per symbol: a bar whose return is beyond ``sigma`` standard deviations of
    the previous ``sigma_window`` returns, a volume beyond ``volume_spike`` times the previous
    ``volume_window`` bars' average, or realised volatility beyond ``vol_ratio`` times its own
    one-year median pauses new entries in that symbol for ``cooldown_bars`` bars (the tripping bar
    included). Market-wide: an ``index`` bar moving ``index_move_pct`` or more (either way) pauses
    new entries in every symbol for ``index_cooldown_bars`` bars of the index."""

    sigma: float = 5.0  # 0 = off
    sigma_window: int = 60
    volume_spike: float = 5.0  # 0 = off
    volume_window: int = 20
    vol_ratio: float = 3.0  # 0 = off
    cooldown_bars: int = 5
    index: str = "SPY"  # "" = no market-wide breaker
    index_move_pct: float = 7.0  # 0 = off (7% = the NYSE level-1 market-wide halt)
    index_cooldown_bars: int = 3


@dataclass(frozen=True, slots=True)
class ProtectionLimits:
    """freqtrade-style protections, driven by the run's own trades."""

    stop_cooldown_bars: int = 3  # no re-entry in a symbol for this many bars after its stop-out
    guard_stops: int = 3  # stop-loss guard: this many stop-outs ... (0 = off)
    guard_window_bars: int = 20  # ... within this many bars ...
    guard_scope: Literal["symbol", "all"] = "symbol"  # ... pause the symbol or every symbol ...
    guard_pause_bars: int = 10  # ... for this many bars
    low_profit_trades: int = 3  # low-profit guard: at least this many closed trades ... (0 = off)
    low_profit_window_bars: int = 120  # ... exiting within this many bars ...
    low_profit_min_pct: float = -5.0  # ... whose summed return is below this (percent) ...
    low_profit_pause_bars: int = 40  # ... pause the symbol for this many bars


@dataclass(frozen=True, slots=True)
class RegimeLimits:
    """How limits scale by market regime. ``source`` "rule" classifies the ``index`` by trend and
    volatility (see ``risk.features.rule_regime``); "none" switches scaling off; other sources are
    plugged in through ``RiskManager(regime_source=...)``."""

    source: str = "rule"
    index: str = "SPY"
    trend_window: int = 200
    slope_bars: int = 20
    vol_window: int = 20
    crisis_vol: float = 40.0  # annualised realised volatility (percent) that means crisis
    scale: dict[str, float] = field(
        default_factory=lambda: {"bull": 1.0, "sideways": 0.75, "bear": 0.5, "crisis": 0.25}
    )


@dataclass(frozen=True, slots=True)
class RiskLimits:
    # Sizing: per-trade risk over an ATR stop (or a fixed share of equity).
    sizing: Literal["atr", "percent_equity"] = "atr"
    risk_pct: float = 0.5  # % of equity lost if the ATR stop is hit (atr sizing)
    stop_atr: float = 2.0  # stop distance in ATRs assumed for sizing when the strategy sets none
    percent_equity: float = 10.0  # % of equity per new position (percent_equity sizing)
    vol_adjust: bool = True  # scale size by (median volatility / current volatility), at most 1
    vol_window: int = 20  # bars of realised volatility
    vol_history: int = 252  # bars of history its median is taken over
    vol_floor: float = 0.25  # the smallest volatility multiplier
    # Position, correlation, sector and asset class.
    max_position_pct: float = 25.0  # % of equity in one position
    max_correlation: float = 0.3  # with any held position in the same direction (1 = off)
    correlation_window: int = 60  # bars of returns
    correlation_action: Literal["reduce", "reject"] = "reduce"
    max_sector_pct: float = 20.0  # % of equity per sector (instruments without a sector are exempt)
    max_asset_class_pct: dict[str, float] = field(default_factory=lambda: {"crypto": 20.0})
    # Liquidity (instruments whose bars carry volume).
    min_adv_usd: float = 1_000_000.0  # minimum average daily dollar volume
    max_adv_share: float = 0.01  # order size at most this share of average volume (0 = off)
    liquidity_window: int = 20  # bars
    # Portfolio.
    max_gross_exposure: float = 1.0  # (sum |positions| + working entries) / equity
    max_net_exposure: float = 1.0  # |long - short| / equity
    max_leverage: float = 1.0  # (equity + borrowed cash) / equity: 1 = cash account, no margin loan
    max_open_positions: int = 10
    # Loss limits: loss from the equity at the period's start; entries stop until the next period.
    daily_loss_pct: float = 2.0  # 0 = off
    weekly_loss_pct: float = 5.0
    monthly_loss_pct: float = 10.0
    period_tz: str = "America/New_York"  # where days, weeks (Monday-Sunday) and months begin
    # Drawdown from the equity peak.
    drawdown_reduce_pct: float = 10.0  # from here new entries are sized down ...
    drawdown_reduce_factor: float = 0.5  # ... by this factor
    max_drawdown_pct: float = 15.0  # from here new entries halt until a human resumes
    # Order sanity.
    max_order_usd: float = 1_000_000.0
    max_orders_per_minute: int = 60
    collar_pct: float = 10.0  # reject when the intent's price is this far from the last price
    allow_short: bool = True  # the account may sell short (instruments may still forbid it)
    breakers: BreakerLimits = field(default_factory=BreakerLimits)
    protections: ProtectionLimits = field(default_factory=ProtectionLimits)
    regime: RegimeLimits = field(default_factory=RegimeLimits)

    @classmethod
    def minimal(cls, **overrides: object) -> RiskLimits:
        """Sizing, the position and gross caps and the drawdown halt only: every rule that needs
        market history, the run's trades or the clock is off. For research paths and unit tests of
        the engine's mechanics; not a safe profile for money."""
        inf = float("inf")
        base: dict[str, object] = {
            "vol_adjust": False,
            "max_correlation": 1.0,
            "max_sector_pct": 100.0,
            "max_asset_class_pct": {},
            "min_adv_usd": 0.0,
            "max_adv_share": 0.0,
            "max_net_exposure": inf,
            "max_leverage": inf,
            "max_open_positions": 0,
            "daily_loss_pct": 0.0,
            "weekly_loss_pct": 0.0,
            "monthly_loss_pct": 0.0,
            "drawdown_reduce_pct": 0.0,
            "max_drawdown_pct": 100.0,
            "max_order_usd": 0.0,
            "max_orders_per_minute": 0,
            "collar_pct": 0.0,
            "breakers": BreakerLimits(
                sigma=0.0, volume_spike=0.0, vol_ratio=0.0, index="", index_move_pct=0.0
            ),
            "protections": ProtectionLimits(stop_cooldown_bars=0, guard_stops=0, low_profit_trades=0),
            "regime": RegimeLimits(source="none"),
        }
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]

    def beyond_minimal(self) -> list[str]:
        """The fields where these limits switch on a rule that ``minimal()`` keeps off."""
        ref = RiskLimits.minimal()
        return [
            n for n in self.__dataclass_fields__ if n not in _SIZING and getattr(self, n) != getattr(ref, n)
        ]

    def table(self) -> list[tuple[str, str]]:
        """(limit, value) rows for reports and ``hflite risk status``."""
        rows: list[tuple[str, str]] = []
        for group, obj in (("", self), ("breakers.", self.breakers), ("protections.", self.protections)):
            for name in obj.__dataclass_fields__:
                value = getattr(obj, name)
                if isinstance(value, BreakerLimits | ProtectionLimits | RegimeLimits):
                    continue
                rows.append((group + name, _fmt(value)))
        reg = self.regime
        rows.append(("regime.source", reg.source))
        rows.append(("regime.index", reg.index))
        rows.append(("regime.scale", _fmt(reg.scale)))
        return rows


#: Fields that tune sizing or switch nothing on by themselves (ignored by ``beyond_minimal``).
_SIZING = {
    "sizing", "risk_pct", "stop_atr", "percent_equity", "max_position_pct", "max_gross_exposure",
    "max_drawdown_pct", "allow_short", "period_tz", "drawdown_reduce_factor", "vol_window",
    "vol_history", "vol_floor", "correlation_window", "correlation_action", "liquidity_window",
}  # fmt: skip


def _fmt(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) or "none"
    if isinstance(value, float):
        return f"{value:,.6g}"
    return str(value)
