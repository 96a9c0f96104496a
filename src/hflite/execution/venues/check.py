"""``hflite venue check``: connect to a configured broker venue and say what it sees.

One check per config: connect (keys, account, the adapter's own clock check), one snapshot (cash,
positions, open orders, the venue's clock), the round-trip latency of a second snapshot, and the clock
skew between the venue's clock and ours. Adapters that can say more (account id, buying power,
equity) expose ``describe() -> dict``. Nothing here prints a key: every message has been through
``hflite.redact``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hflite import redact
from hflite.execution.venues.base import VenueError, VenueOrder, VenuePosition

if TYPE_CHECKING:
    from hflite.config import Settings


@dataclass(slots=True)
class VenueCheck:
    """What one venue said; ``error`` is set (one line) when the check failed."""

    kind: str
    endpoint: str
    live: bool
    ok: bool = False
    error: str = ""
    account: dict[str, Any] = field(default_factory=dict)
    cash: dict[str, float] = field(default_factory=dict)
    positions: list[VenuePosition] = field(default_factory=list)
    open_orders: list[VenueOrder] = field(default_factory=list)
    clock_skew_s: float | None = None  # venue clock minus ours (positive: the venue is ahead)
    latency_ms: float | None = None  # one request's round trip (the adapter's), else a snapshot's
    snapshot_ms: float | None = None  # one snapshot (several requests)
    connect_ms: float | None = None


def check_venue(settings: Settings) -> VenueCheck:
    """Connect to ``settings``' venue and read its state. Never raises for venue or config trouble:
    the result carries the reason."""
    from hflite.config import ConfigError
    from hflite.execution.venues.registry import AdapterMissing, build, spec_from_settings

    v = settings.venue
    out = VenueCheck(v.kind, redact.sanitize_url(v.endpoint) or f"{v.kind} default", v.live)
    if v.kind == "paper":
        out.error = "venue paper is simulated in-process: nothing to connect to (set [venue] kind)"
        return out
    instruments = _instruments(settings)
    try:
        venue = build(spec_from_settings(settings, instruments))
    except (ConfigError, AdapterMissing, ValueError, VenueError) as exc:
        out.error = redact.redact(str(exc))
        return out
    try:
        t0 = time.perf_counter()
        venue.connect()
        out.connect_ms = (time.perf_counter() - t0) * 1e3
        before = time.time_ns()
        t1 = time.perf_counter()
        snap = venue.snapshot([])
        out.snapshot_ms = (time.perf_counter() - t1) * 1e3
        after = time.time_ns()
        # the adapter's own measures where it has them (one light request; the venue's clock), else
        # the snapshot's: its clock against the middle of our request, its round trip
        skew, latency = getattr(venue, "clock_skew_s", None), getattr(venue, "latency_ms", None)
        out.clock_skew_s = skew() if callable(skew) else (snap.ts - (before + after) // 2) / 1e9
        out.latency_ms = latency() if callable(latency) else out.snapshot_ms
        out.cash = dict(snap.cash)
        out.positions = sorted(snap.positions.values(), key=lambda p: p.symbol)
        out.open_orders = [o for o in snap.orders.values() if o.status.value in _OPEN_STATUSES]
        describe = getattr(venue, "describe", None)
        if callable(describe):
            out.account = {k: val for k, val in describe().items() if val is not None}
        out.ok = True
    except VenueError as exc:
        out.error = redact.redact(str(exc))
    finally:
        try:
            venue.close()
        except VenueError:
            pass
    return out


_OPEN_STATUSES = frozenset({"submitted", "accepted", "partially_filled"})


def _instruments(settings: Settings) -> dict[str, Any]:
    """The configured symbols' instruments (precision, lots) without loading any bars."""
    from hflite.domain.instrument import UnknownInstrumentError, instrument_for

    out: dict[str, Any] = {}
    for sym in settings.run.symbols:
        try:
            out[sym] = instrument_for(sym)
        except UnknownInstrumentError:
            continue
    return out
