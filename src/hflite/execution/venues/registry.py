"""Which adapter serves which ``[venue] kind``: the one place the runtime and ``hflite venue check``
turn a config into a broker venue.

Each broker module exposes ``from_spec(spec: VenueSpec) -> RemoteVenue``; it is imported only when its
kind is configured, so a user of one broker never needs another broker's client library installed.
Every adapter is an ``EventVenue`` with the ``RemoteVenue`` methods, plus (optionally):

- ``reconnected: bool``: set when its event stream dropped and came back (the runtime reconciles);
- ``cancel_venue_order(venue_order_id)``: cancel an order we did not place (reconciliation's choice);
- ``describe() -> dict``: account id (masked), buying power, currency, for ``hflite venue check``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hflite.domain.instrument import Instrument

if TYPE_CHECKING:
    from hflite.config import Settings
    from hflite.execution.venues.base import RemoteVenue

#: kind -> the module whose ``from_spec`` builds it.
ADAPTERS: dict[str, str] = {
    "fakebroker": "hflite.execution.venues.rest",
    "alpaca": "hflite.execution.venues.alpaca",
    "ccxt": "hflite.execution.venues.ccxt_venue",
    "oanda": "hflite.execution.venues.oanda",
    "ib": "hflite.execution.venues.ib",
}

#: The pip extra that installs a kind's client library (named in the error when it is missing).
EXTRAS: dict[str, str] = {"alpaca": "brokers", "ccxt": "brokers", "ib": "brokers"}


@dataclass(frozen=True, slots=True)
class VenueSpec:
    """Everything an adapter needs, resolved from ``[venue]`` and the environment. ``key_id``,
    ``secret`` and ``account`` are secrets (registered with ``hflite.redact``): never log them."""

    kind: str
    endpoint: str  # "" = the vendor's default (ccxt: the exchange's own sandbox / live URLs)
    key_id: str
    secret: str
    account: str = ""  # oanda / ib account id ("" = the first account the keys can see)
    live: bool = False
    instruments: dict[str, Instrument] = field(default_factory=dict)
    drive_clock: bool = False  # a local fake's driven market clock (tests, recorded feeds)
    timeout_s: float = 5.0
    max_retries: int = 5
    rate_per_min: int = 200
    max_clock_skew_s: float = 2.0
    exchange: str = "binance"  # ccxt
    client_id: int = 1  # ib
    symbols: dict[str, str] = field(default_factory=dict)  # our symbol -> the venue's (overrides)

    def __repr__(self) -> str:  # never the keys
        return f"VenueSpec(kind={self.kind!r}, endpoint={self.endpoint!r}, live={self.live})"


def spec_from_settings(settings: Settings, instruments: dict[str, Instrument]) -> VenueSpec:
    """The spec for the configured broker venue (ConfigError when its keys are missing)."""
    from hflite.config import venue_keys

    v = settings.venue
    key_id, secret = venue_keys(settings)
    account = v.account
    return VenueSpec(
        kind=v.kind,
        endpoint=v.endpoint,
        key_id=key_id,
        secret=secret,
        account=account.get_secret_value() if account is not None else "",
        live=v.live,
        instruments=dict(instruments),
        drive_clock=v.drive_clock,
        timeout_s=v.timeout_s,
        max_retries=v.max_retries,
        rate_per_min=v.rate_per_min,
        max_clock_skew_s=v.max_clock_skew_s,
        exchange=v.exchange,
        client_id=v.client_id,
        symbols=dict(v.symbols),
    )


class AdapterMissing(RuntimeError):
    """A kind's client library is not installed (one line saying what to install)."""


def build(spec: VenueSpec) -> RemoteVenue:
    """The adapter for ``spec.kind`` (not connected yet)."""
    module_name = ADAPTERS.get(spec.kind)
    if module_name is None:
        raise ValueError(f"venue kind {spec.kind!r} has no broker adapter (known: {', '.join(ADAPTERS)})")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise
        extra = EXTRAS.get(spec.kind, "brokers")
        raise AdapterMissing(f"venue {spec.kind} needs {exc.name}: pip install 'hflite[{extra}]'") from None
    return module.from_spec(spec)  # type: ignore[no-any-return]
