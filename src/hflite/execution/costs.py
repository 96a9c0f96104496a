"""Commission and slippage models: small swappable objects with one method each (zipline's habit)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from hflite.domain.instrument import AssetClass, Instrument


class CommissionModel(Protocol):
    def fee(self, instrument: Instrument, qty: float, price: float) -> float:
        """Commission in the instrument's quote currency for ``qty`` units at ``price``."""
        ...


class SlippageModel(Protocol):
    def slippage(self, instrument: Instrument, price: float, prev_range: float) -> float:
        """Adverse price move in price units (>= 0) for an order filling at ``price``.

        ``prev_range`` is the high-low range of the symbol's previous bar (known before the fill).
        """
        ...


@dataclass(frozen=True, slots=True)
class BpsCommission:
    """A share of notional, with a minimum per fill (in the quote currency)."""

    bps: float
    minimum: float = 0.0

    def fee(self, instrument: Instrument, qty: float, price: float) -> float:
        return max(abs(qty) * price * self.bps / 1e4, self.minimum)


@dataclass(frozen=True, slots=True)
class PerShareCommission:
    """Per share with a minimum and a cap as a share of notional (the IBKR fixed-rate shape)."""

    per_share: float
    minimum: float = 0.0
    max_pct: float = 1.0

    def fee(self, instrument: Instrument, qty: float, price: float) -> float:
        notional = abs(qty) * price
        return min(max(abs(qty) * self.per_share, self.minimum), notional * self.max_pct / 100)


@dataclass(frozen=True, slots=True)
class AssetClassCommission:
    """One model per asset class."""

    models: dict[AssetClass, CommissionModel] = field(default_factory=dict)

    def fee(self, instrument: Instrument, qty: float, price: float) -> float:
        return self.models[instrument.asset_class].fee(instrument, qty, price)


@dataclass(frozen=True, slots=True)
class FixedBpsSlippage:
    """A fixed adverse move in basis points of the price."""

    bps: float

    def slippage(self, instrument: Instrument, price: float, prev_range: float) -> float:
        return price * self.bps / 1e4


@dataclass(frozen=True, slots=True)
class VolatilitySlippage:
    """Fixed bps per asset class plus a share of the previous bar's range (a spread/volatility proxy)."""

    bps: dict[AssetClass, float]
    range_frac: float = 0.02

    def slippage(self, instrument: Instrument, price: float, prev_range: float) -> float:
        vol_term = self.range_frac * prev_range if prev_range == prev_range else 0.0  # NaN-safe
        return price * self.bps.get(instrument.asset_class, 0.0) / 1e4 + max(vol_term, 0.0)
