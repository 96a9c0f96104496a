"""Data vendors behind one ``Provider`` protocol; loaded lazily so unused clients cost nothing."""

from __future__ import annotations

import importlib
from typing import Any

from hflite.data.providers.base import (
    HttpOptions,
    Limits,
    MalformedResponseError,
    MissingKeyError,
    NotSupportedError,
    Provider,
    ProviderError,
    RejectedError,
    TransientError,
)

#: name -> "module:Class"
REGISTRY = {
    "yfinance": "hflite.data.providers.yahoo:YahooProvider",
    "alphavantage": "hflite.data.providers.alphavantage:AlphaVantageProvider",
    "fred": "hflite.data.providers.fred:FredProvider",
    "finnhub": "hflite.data.providers.finnhub:FinnhubProvider",
    "newsapi": "hflite.data.providers.newsapi:NewsApiProvider",
    "polygon": "hflite.data.providers.polygon:PolygonProvider",
    "coingecko": "hflite.data.providers.coingecko:CoinGeckoProvider",
    "ccxt": "hflite.data.providers.ccxt_provider:CcxtProvider",
    "oanda": "hflite.data.providers.oanda:OandaProvider",
}


def provider_class(name: str) -> Any:
    if name not in REGISTRY:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_provider(name: str, **kwargs: Any) -> Provider:
    """Build a provider by name; its key comes from the environment (MissingKeyError names it)."""
    return provider_class(name)(**kwargs)  # type: ignore[no-any-return]


__all__ = [
    "REGISTRY",
    "HttpOptions",
    "Limits",
    "MalformedResponseError",
    "MissingKeyError",
    "NotSupportedError",
    "Provider",
    "ProviderError",
    "RejectedError",
    "TransientError",
    "make_provider",
    "provider_class",
]
