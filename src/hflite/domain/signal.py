"""What strategies ask for (intents) and what the risk gate answers (verdicts)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from hflite.domain.order import Side


class IntentKind(StrEnum):
    ENTRY = "entry"  # open a position: sized by the risk gate
    EXIT = "exit"  # close a position: always allowed, never enlarged


@dataclass(frozen=True, slots=True)
class Exits:
    """Protective exits attached to an entry. Distances are in ATR multiples; 0 means none."""

    stop_atr: float = 0.0
    take_profit_atr: float = 0.0
    trailing: bool = False
    time_stop_bars: int = 0


class OrderIntent(NamedTuple):
    """A strategy's wish, before risk: enter (sized by the risk gate) or exit. Immutable."""

    id: str
    symbol: str
    kind: IntentKind
    side: Side
    ts: int
    bar_index: int
    reason: str
    price: float  # last close when decided: reference for sizing and collars
    atr: float  # ATR at decision time (NaN when unknown)
    qty: float | None = None  # exits: the quantity to close; entries: None (risk sizes it)
    exits: Exits = Exits()
    size: float = 1.0  # entries: the strategy's conviction in [0, 1], scaling the risk-sized quantity


class VerdictStatus(StrEnum):
    APPROVED = "approved"
    RESIZED = "resized"
    REJECTED = "rejected"


class Check(NamedTuple):
    """One risk check: the measured value, the limit, and whether it passed."""

    name: str
    value: float
    limit: float
    passed: bool


class RiskVerdict(NamedTuple):
    """The gate's answer to one intent, with every check's value and limit. Immutable."""

    intent_id: str
    symbol: str
    ts: int
    status: VerdictStatus
    qty_requested: float
    qty_approved: float
    reason: str
    checks: tuple[Check, ...] = ()
    rules: tuple[str, ...] = ()  # the rules that rejected or cut it, in the order they acted
