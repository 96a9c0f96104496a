"""Market timing for a live run's orders (``[execution.timing]``): when they may reach a broker, and
at what price a market order goes out when the venue quotes a spread.

- Session edges: no order in the first ``avoid_open_min`` or the last ``avoid_close_min`` minutes of
  an instrument's session (NYSE sessions with their early closes; the FX week from Sunday 17:00 to
  Friday 17:00 New York; crypto has no session edges). An order decided inside an edge waits for the
  window to open; one decided after it waits for the next session.
- Spread: while the venue's quoted spread is wider than ``max_spread_bps`` the order waits (checked
  again every ``spread_recheck_s``). A venue without quotes is never held for its spread.
- Limit from the spread: with ``limit_from_spread`` a MARKET entry or exit goes out as a LIMIT at the
  quote's mid (``limit_at = "mid"``) or our side of it (``"touch"``: the bid to buy, the ask to sell).
  After ``limit_timeout_s`` an order still working is re-priced across the spread by ``cross_bps`` (a
  marketable limit: ``on_timeout = "market"``) or cancelled (``"cancel"``).

``engine.hours.MarketGate`` applies these rules to the orders it routes; they act on the live clock
only (a backtest fills at its bars as always). This module is the arithmetic, with no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from hflite.domain.instrument import Calendar, Instrument
from hflite.domain.order import Side

NS_PER_MIN = 60 * 10**9
_NY = ZoneInfo("America/New_York")
_FX_ROLL_H = 17


@dataclass(frozen=True, slots=True)
class Quote:
    """The venue's best bid and ask for a symbol, at ``ts`` (ns UTC)."""

    bid: float
    ask: float
    ts: int = 0

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2.0

    @property
    def spread_bps(self) -> float:
        """The spread in basis points of the mid (inf for a crossed or empty book)."""
        mid = self.mid
        if not (self.bid > 0.0 and self.ask >= self.bid and mid > 0.0):
            return float("inf")
        return (self.ask - self.bid) / mid * 1e4


@dataclass(frozen=True, slots=True)
class TimingRules:
    """``[execution.timing]`` as the gate uses it (see the module docstring)."""

    avoid_open_min: int = 0
    avoid_close_min: int = 0
    max_spread_bps: float | None = None
    spread_recheck_s: float = 5.0
    limit_from_spread: bool = False
    limit_at: Literal["mid", "touch"] = "mid"
    limit_timeout_s: float = 60.0
    on_timeout: Literal["market", "cancel"] = "market"
    cross_bps: float = 10.0

    @property
    def active(self) -> bool:
        return bool(
            self.avoid_open_min
            or self.avoid_close_min
            or self.max_spread_bps is not None
            or self.limit_from_spread
        )


def session_bounds(instrument: Instrument, now_ns: int) -> tuple[int, int] | None:
    """(open, close) of the session ``now_ns`` falls in, ns UTC; None for a market that never closes
    (crypto) and when the market is closed at ``now_ns``."""
    from hflite.engine.hours import _nyse_table, is_open

    cal = instrument.calendar
    if cal is Calendar.ALWAYS or not is_open(instrument, now_ns):
        return None
    if cal is Calendar.FX:
        local = datetime.fromtimestamp(now_ns / 1e9, tz=UTC).astimezone(_NY)
        friday = local.date() + timedelta(days=(4 - local.weekday()) % 7)
        close = datetime(friday.year, friday.month, friday.day, _FX_ROLL_H, tzinfo=_NY)
        if close <= local:  # a Friday before 17:00 is the same week; after it the market is closed
            close += timedelta(days=7)
        open_ = close - timedelta(days=5)  # Sunday 17:00: no DST change between (clocks move at 02:00)
        return int(open_.timestamp()) * 10**9, int(close.timestamp()) * 10**9
    import numpy as np

    opens, closes = _nyse_table()
    pos = int(np.searchsorted(opens, now_ns, side="right")) - 1
    return int(opens[pos]), int(closes[pos])


def next_window(instrument: Instrument, now_ns: int, rules: TimingRules) -> tuple[int, str]:
    """When an order for ``instrument`` may go out at the earliest (``now_ns`` if now), and why it
    waits ("" when it does not): the market is closed, or the session's first / last minutes."""
    from hflite.engine.hours import next_open

    t, reason = int(now_ns), ""
    for _ in range(16):  # a few sessions at most (a window shorter than the edges skips a session)
        start = next_open(instrument, t)
        if start > t:
            t, reason = start, reason or "market closed"
        bounds = session_bounds(instrument, t)
        if bounds is None:
            return t, reason
        open_, close = bounds
        first = open_ + rules.avoid_open_min * NS_PER_MIN
        last = close - rules.avoid_close_min * NS_PER_MIN
        if first < last and t < first:
            return first, reason or f"first {rules.avoid_open_min} min of the session"
        if first < last and t < last:
            return t, reason
        t, reason = close, reason or f"last {rules.avoid_close_min} min of the session"
    raise ValueError(f"{instrument.symbol}: no trading window in 16 sessions after {now_ns}")


def limit_price(side: Side, quote: Quote, rules: TimingRules, instrument: Instrument) -> float:
    """The limit a market order goes out at: the quote's mid, or our side of it, on the tick."""
    if rules.limit_at == "mid":
        price = quote.mid
    else:
        price = quote.bid if side is Side.BUY else quote.ask
    return instrument.round_price(price)


def crossing_price(side: Side, quote: Quote, rules: TimingRules, instrument: Instrument) -> float:
    """A marketable limit: ``cross_bps`` beyond the far side of the quote (ask to buy, bid to sell),
    rounded away from the book so it still crosses after rounding."""
    import math

    tick = instrument.tick_size
    if side is Side.BUY:
        raw = quote.ask * (1.0 + rules.cross_bps / 1e4)
        return round(math.ceil(raw / tick - 1e-9) * tick, 10)
    raw = quote.bid * (1.0 - rules.cross_bps / 1e4)
    return round(math.floor(raw / tick + 1e-9) * tick, 10)
