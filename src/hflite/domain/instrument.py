"""Instruments: what can be traded, in which currency, on which calendar, in which increments."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class AssetClass(StrEnum):
    EQUITY = "equity"
    ETF = "etf"
    CRYPTO = "crypto"
    FX = "fx"


class Calendar(StrEnum):
    """Trading calendars. ``XNYS`` is the NYSE calendar (sessions, holidays, early closes)."""

    XNYS = "XNYS"
    ALWAYS = "24/7"
    FX = "24/5"


class VolumeUnit(StrEnum):
    """What a bar's volume counts: units of the instrument, quote-currency notional, or nothing."""

    UNITS = "units"
    QUOTE = "quote"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Instrument:
    """A tradable instrument. Prices are in ``currency`` (the quote currency) per one unit."""

    symbol: str
    asset_class: AssetClass
    currency: str
    calendar: Calendar
    tick_size: float
    lot_size: float
    base_currency: str | None = None
    sector: str | None = None
    volume_unit: VolumeUnit = VolumeUnit.UNITS
    shortable: bool = True

    def round_qty(self, qty: float) -> float:
        """Round a quantity toward zero to a whole number of lots."""
        lots = math.floor(abs(qty) / self.lot_size + 1e-9)
        return math.copysign(round(lots * self.lot_size, 10), qty) if lots else 0.0

    def round_price(self, price: float) -> float:
        """Round a price to the nearest tick."""
        return round(round(price / self.tick_size) * self.tick_size, 10)


def _equity(symbol: str, sector: str) -> Instrument:
    return Instrument(symbol, AssetClass.EQUITY, "USD", Calendar.XNYS, 0.01, 1.0, sector=sector)


def _etf(symbol: str, sector: str | None = None) -> Instrument:
    return Instrument(symbol, AssetClass.ETF, "USD", Calendar.XNYS, 0.01, 1.0, sector=sector)


def _crypto(symbol: str, quote: str, volume_unit: VolumeUnit) -> Instrument:
    return Instrument(
        symbol,
        AssetClass.CRYPTO,
        quote,
        Calendar.ALWAYS,
        0.01,
        1e-5,
        base_currency=symbol[:3],
        volume_unit=volume_unit,
        shortable=False,  # spot: no borrowing
    )


#: Instruments of the embedded sample data set (sectors from ../shared/data/SOURCES.md).
SAMPLE_INSTRUMENTS: dict[str, Instrument] = {
    i.symbol: i
    for i in [
        _etf("SPY"),
        _etf("QQQ"),
        _etf("TLT"),
        _etf("GLD"),
        _etf("IWM"),
        _etf("EFA"),
        _etf("VNQ"),
        _etf("XLE", "energy"),
        _equity("AAPL", "technology"),
        _equity("MSFT", "technology"),
        _equity("NVDA", "technology"),
        _equity("AMZN", "consumer discretionary"),
        _equity("GOOGL", "communication services"),
        _equity("JPM", "financials"),
        _equity("BAC", "financials"),
        _equity("XOM", "energy"),
        _equity("CVX", "energy"),
        _equity("JNJ", "health care"),
        _equity("PFE", "health care"),
        _equity("WMT", "consumer staples"),
        _equity("KO", "consumer staples"),
        # Yahoo's crypto dailies report volume as USD notional; Binance bars as base units.
        _crypto("BTC-USD", "USD", VolumeUnit.QUOTE),
        _crypto("ETH-USD", "USD", VolumeUnit.QUOTE),
        _crypto("BTCUSDT", "USDT", VolumeUnit.UNITS),
        _crypto("ETHUSDT", "USDT", VolumeUnit.UNITS),
        Instrument(
            "EURUSD",
            AssetClass.FX,
            "USD",
            Calendar.FX,
            1e-5,
            1.0,
            base_currency="EUR",
            volume_unit=VolumeUnit.NONE,
        ),
        Instrument(
            "USDJPY",
            AssetClass.FX,
            "JPY",
            Calendar.FX,
            1e-3,
            1.0,
            base_currency="USD",
            volume_unit=VolumeUnit.NONE,
        ),
    ]
}

#: Currencies treated as pegged 1:1 to another (documented simplification: USDT = USD).
PEGGED: dict[str, str] = {"USDT": "USD"}


class UnknownInstrumentError(KeyError):
    """A symbol that no instrument definition covers."""

    def __str__(self) -> str:
        return f"unknown instrument {self.args[0]!r}"


def instrument_for(symbol: str, extra: dict[str, Instrument] | None = None) -> Instrument:
    """Look a symbol up among user-defined instruments first, then the sample set."""
    if extra and symbol in extra:
        return extra[symbol]
    try:
        return SAMPLE_INSTRUMENTS[symbol]
    except KeyError:
        raise UnknownInstrumentError(symbol) from None


def fx_pair_for(currency: str, base: str = "USD") -> tuple[str, bool] | None:
    """The FX instrument that converts ``currency`` into ``base`` and whether to invert its price.

    Returns None when no conversion is needed. ``("USDJPY", True)`` means JPY->USD = 1 / USDJPY.
    """
    currency = PEGGED.get(currency, currency)
    if currency == base:
        return None
    direct = f"{currency}{base}"
    inverse = f"{base}{currency}"
    if direct in SAMPLE_INSTRUMENTS:
        return direct, False
    if inverse in SAMPLE_INSTRUMENTS:
        return inverse, True
    return direct, False
