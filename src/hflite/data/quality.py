"""Data quality: validate bars and macro series, quarantine bad rows, report per partition.

:func:`validate_bars` splits a bar frame into ``clean`` rows and ``quarantined`` rows (one row per
rule that caught it) and lists issues that do not remove rows (zero volume, large moves, gaps,
staleness). Nothing is dropped silently: every row not in ``clean`` is in ``quarantined``.
:func:`check_store` runs the checks over a whole :class:`~hflite.data.store.Store`;
:func:`render_quality_table` and :func:`write_quality_html` present the result.
"""

from __future__ import annotations

import html
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from hflite.data.store import BAR_COLUMNS, PRICE_COLUMNS, DataNotFoundError, Store
from hflite.domain.instrument import (
    AssetClass,
    Calendar,
    Instrument,
    UnknownInstrumentError,
    VolumeUnit,
    instrument_for,
)
from hflite.engine.market import FREQ_NS, calendar_gaps

if TYPE_CHECKING:
    from rich.table import Table

Severity = Literal["error", "warning", "info"]

#: Every rule, in report order, with what it means. The names are part of the API.
RULES: dict[str, str] = {
    "schema": "the frame is not bars at all (missing column, wrong dtype, naive timestamps): refused "
    "whole with ValueError; in a store check, a partition that cannot be read",
    "duplicate_ts": "a timestamp seen before in the batch with identical values: the first row is kept, the "
    "copies quarantined (providers collapse exact copies before validation and count them)",
    "duplicate_conflict": "a timestamp repeated with different values: every version is quarantined and "
    "the timestamp is kept out of the clean data (neither can be trusted)",
    "nan": "a missing or infinite value in ts, open, high, low, close or volume: quarantined",
    "non_positive_price": "open, high, low or close <= 0: quarantined",
    "ohlc_inconsistent": "low > min(open, close), high < max(open, close) or low > high "
    "(relative tolerance 1e-6): quarantined",
    "negative_volume": "volume < 0: quarantined",
    "off_calendar": "a bar the instrument's calendar has no room for: a daily bar on a day that is not an "
    "XNYS session (holiday, weekend) or on a 24/5 FX weekend day, an intraday bar opening outside the "
    "XNYS session or the FX week (Sunday to Friday 17:00 New York); 24/7 markets have none: quarantined",
    "zero_volume": "volume == 0: reported, kept (a real market can print a zero-volume bar, e.g. an "
    "exchange outage; for instruments that publish no volume, such as Yahoo FX, it is expected)",
    "spike": "a close-to-close move beyond spike_sigma trailing standard deviations that the next bar "
    "takes at least half back, with the next bar opening at least half way back: a bad print, "
    "quarantined",
    "level_shift": "a close-to-close jump by a factor of 3 or more, or by a split ratio on a day the "
    "corporate actions list a split, that is not a one-bar spike: the bars on the level holding fewer "
    "bars (from the shift on, a stretch that later comes back, or the history before it) are quarantined, "
    "named a likely unadjusted split (a common split ratio with volume moving inversely, or a listed "
    "split) or a persistent jump with no split signature",
    "large_move": "a move beyond spike_sigma standard deviations that is not taken back, or beyond the "
    "asset class's daily threshold (15 % stocks/ETFs, 25 % crypto, 4 % FX): a real move, reported, kept",
    "gap": "a bar (or observation) the calendar or the series' frequency expects but the data lacks",
    "stale": "the last bar/observation is older than expected at `now` (its age counted in the "
    "calendar's sessions or bars), or a run of more than 5 identical closes",
}
#: Rules whose rows are removed from ``clean`` and go to quarantine.
QUARANTINE_RULES: tuple[str, ...] = (
    "duplicate_ts",
    "duplicate_conflict",
    "nan",
    "non_positive_price",
    "ohlc_inconsistent",
    "negative_volume",
    "off_calendar",
    "spike",
    "level_shift",
)
#: Rules checked on macro series.
SERIES_RULES: tuple[str, ...] = ("schema", "duplicate_ts", "nan", "gap", "stale")
#: Daily close-to-close moves above these are reported as ``large_move`` (SOURCES.md's thresholds).
DAILY_MOVE_THRESHOLD: dict[AssetClass, float] = {
    AssetClass.EQUITY: 0.15,
    AssetClass.ETF: 0.15,
    AssetClass.CRYPTO: 0.25,
    AssetClass.FX: 0.04,
}
#: A close-to-close jump by this factor or more (either way) that is not taken back is a ``level_shift``.
LEVEL_SHIFT_FACTOR = 3.0
#: Split ratios (new shares per old) a level shift is compared with; reverse splits are their inverses.
SPLIT_RATIOS: tuple[float, ...] = (1.5, 2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 25, 30, 40, 50, 100)
#: A jump matches a split ratio within this relative tolerance (the day's own move comes on top).
SPLIT_TOLERANCE = 0.1
#: More than this many identical consecutive closes is reported as ``stale``.
MAX_FLAT_RUN = 5
OHLC_TOLERANCE = 1e-6
MAX_EXAMPLES = 10
_MIN_SIGMA = 1e-4  # floor of the trailing std (log return): a one-tick wobble on a flat series is no spike
_MAX_SPIKE_PASSES = 5
_SHIFT_CONFIRM = 5  # bars the new level must hold for a jump to be called persistent
_VOLUME_WINDOW = 20  # bars each side of a level shift whose median volumes are compared
_MIN_LISTED_SPLIT = 1.25  # listed splits closer to 1 (spin-off adjustments) are not looked for in prices
_LISTED_SPLIT_DAYS = pd.Timedelta(days=3)
_NEW_YORK = "America/New_York"
_XNYS_RANGE = ("1995-01-03", "2030-12-31")  # the span the engine loads the NYSE calendar for
_FREQ_RE = re.compile(r"([1-9][0-9]*)([mhdw])")
_UNIT = {"m": "min", "h": "h", "d": "D", "w": "W"}
_DTYPE_HINT = "expected a tz-aware datetime column"
_NUMERIC_HINT = "expected int or float"


# ---------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class Issue:
    """One rule's finding on one frame: how many rows/bars, the first, and a few examples."""

    rule: str
    count: int
    first_ts: pd.Timestamp | None
    detail: str
    severity: Severity = "warning"
    examples: tuple[tuple[pd.Timestamp, str], ...] = ()


@dataclass(eq=False)
class Validation:
    """The outcome of :func:`validate_bars`.

    ``clean`` keeps the input's columns, sorted by ``ts``; its index and ``quarantined``'s index
    (named ``row``) are the rows' positions in the input, so the two never share a label.
    ``large_moves`` lists the kept moves reported as ``large_move`` (columns ts, ret, z);
    ``level_shifts`` the shifts that bound quarantined levels (columns ts: the first bar on the new
    level, factor: its close over the previous close, split: the likely split ratio in new shares per
    old, as the corporate actions write it, NaN when the shift has no split signature, bars: how many
    bars were quarantined on its account).
    """

    clean: pd.DataFrame
    quarantined: pd.DataFrame
    gaps: pd.DatetimeIndex
    issues: list[Issue]
    large_moves: pd.DataFrame
    level_shifts: pd.DataFrame = field(default_factory=lambda: _no_shifts())

    @property
    def ok(self) -> bool:
        """True when nothing was quarantined, no bar is missing and no issue is a warning."""
        return not any(i.severity in ("error", "warning") for i in self.issues)

    def issue(self, rule: str) -> Issue | None:
        return next((i for i in self.issues if i.rule == rule), None)

    def count(self, rule: str) -> int:
        found = self.issue(rule)
        return found.count if found else 0


# ---------------------------------------------------------------------------------------------------
# small helpers


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _day_or_time(ts: pd.Timestamp) -> str:
    if ts is pd.NaT:
        return "NaT"
    if ts == ts.normalize():
        return str(ts.strftime("%Y-%m-%d"))
    return str(ts.strftime("%Y-%m-%d %H:%M"))


def _when(ts: pd.Timestamp) -> str:
    return f"{ts:%Y-%m-%d %H:%M} UTC"


def _age(delta: pd.Timedelta) -> str:
    hours = delta / pd.Timedelta(hours=1)
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def _no_shifts() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts": pd.Series(dtype="datetime64[ns, UTC]"),
            "factor": pd.Series(dtype="float64"),
            "split": pd.Series(dtype="float64"),
            "bars": pd.Series(dtype="int64"),
        }
    )


def freq_delta(freq: str) -> pd.Timedelta:
    """The length of one bar, e.g. ``"1h"`` -> 1 hour; ValueError for anything else."""
    m = _FREQ_RE.fullmatch(freq) if isinstance(freq, str) else None
    if m is None:
        raise ValueError(f"invalid frequency {freq!r}: expected e.g. '1d', '1h', '1m'")
    return pd.Timedelta(int(m.group(1)), _UNIT[m.group(2)])


def _aware(now: Any, what: str = "now") -> pd.Timestamp | None:
    if now is None:
        return None
    ts = pd.Timestamp(now)
    if ts.tzinfo is None:
        raise ValueError(f"{what} {now!r} is timezone-naive; pass a tz-aware time (UTC)")
    return ts.tz_convert("UTC")


def _issue(
    rule: str,
    severity: Severity,
    detail: str,
    stamps: pd.DatetimeIndex | list[pd.Timestamp],
    notes: list[str] | None = None,
    count: int | None = None,
) -> Issue:
    stamps = list(stamps)
    notes = notes or [""] * len(stamps)
    examples = tuple((t, n) for t, n in list(zip(stamps, notes, strict=True))[:MAX_EXAMPLES])
    valid = [t for t in stamps if t is not pd.NaT]
    return Issue(
        rule=rule,
        count=len(stamps) if count is None else count,
        first_ts=min(valid) if valid else None,
        detail=detail,
        severity=severity,
        examples=examples,
    )


# ---------------------------------------------------------------------------------------------------
# bars: schema and row rules


def _check_schema(df: pd.DataFrame) -> None:
    """Refuse a frame that is not bars at all, naming the offending column."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame of bars, got {type(df).__name__}")
    cols = [str(c) for c in df.columns]
    missing = [c for c in BAR_COLUMNS if c not in cols]
    if missing:
        raise ValueError(f"schema: missing column(s) {missing}; bars need {list(BAR_COLUMNS)}")
    if len(set(cols)) != len(cols):
        raise ValueError(f"schema: duplicate column names in {cols}")
    ts = df["ts"].dtype
    if not isinstance(ts, pd.DatetimeTZDtype):
        naive = pd.api.types.is_datetime64_dtype(ts)
        why = "is timezone-naive; localize it to UTC first" if naive else f"has dtype {ts}; {_DTYPE_HINT}"
        raise ValueError(f"schema: column ts {why}")
    for c in BAR_COLUMNS[1:]:
        dtype = df[c].dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            raise ValueError(f"schema: column {c} has dtype {dtype}; {_NUMERIC_HINT}")


def _nan_details(ts_nat: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    bad_vals = ~np.isfinite(values)
    mask = ts_nat | bad_vals.any(axis=1)
    details = []
    for row in np.flatnonzero(mask):
        parts = ["ts is missing"] if ts_nat[row] else []
        parts += [f"{BAR_COLUMNS[1 + k]} is {values[row, k]}" for k in np.flatnonzero(bad_vals[row])]
        details.append("; ".join(parts))
    return mask, details


def _ohlc_details(
    o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    body_lo = np.minimum(o, c)
    body_hi = np.maximum(o, c)
    tol = OHLC_TOLERANCE
    with np.errstate(invalid="ignore"):
        low_above = lo - body_lo > tol * np.abs(body_lo)
        high_below = body_hi - h > tol * np.abs(body_hi)
        crossed = lo - h > tol * np.abs(h)
    mask = low_above | high_below | crossed
    details = []
    for r in np.flatnonzero(mask):
        parts = []
        if low_above[r]:
            parts.append(f"low {_fmt(lo[r])} > min(open, close) {_fmt(body_lo[r])}")
        if high_below[r]:
            parts.append(f"high {_fmt(h[r])} < max(open, close) {_fmt(body_hi[r])}")
        if crossed[r]:
            parts.append(f"low {_fmt(lo[r])} > high {_fmt(h[r])}")
        details.append("; ".join(parts))
    return mask, details


def _conflict_note(rows: list[int], values: np.ndarray) -> str:
    cols = [
        f"{BAR_COLUMNS[1 + k]} " + " / ".join(_fmt(values[r, k]) for r in rows)
        for k in range(values.shape[1])
        if not all(np.array_equal(values[r, k], values[rows[0], k], equal_nan=True) for r in rows)
    ]
    shown = ", ".join(map(str, rows))
    return f"rows {shown} share this ts with different values ({'; '.join(cols)}): none kept"


def _duplicate_details(
    ts_ns: np.ndarray, ts_nat: np.ndarray, values: np.ndarray
) -> dict[str, tuple[np.ndarray, list[str]]]:
    """``duplicate_ts`` (exact copies after the first row) and ``duplicate_conflict`` (every row of a
    timestamp repeated with different values)."""
    keys = pd.Series(np.where(ts_nat, np.iinfo(np.int64).min, ts_ns))
    repeated = keys.duplicated(keep=False).to_numpy() & ~ts_nat
    groups: dict[int, list[int]] = {}
    for row in np.flatnonzero(repeated):
        groups.setdefault(int(ts_ns[row]), []).append(int(row))
    copies: dict[int, str] = {}
    conflicts: dict[int, str] = {}
    for rows in groups.values():
        first = rows[0]
        if all(np.array_equal(values[r], values[first], equal_nan=True) for r in rows[1:]):
            copies.update({r: f"same ts and values as row {first}, which is kept" for r in rows[1:]})
        else:
            note = _conflict_note(rows, values)
            conflicts.update({r: note for r in rows})
    out = {}
    for rule, notes in (("duplicate_ts", copies), ("duplicate_conflict", conflicts)):
        mask = np.zeros(len(ts_ns), dtype=bool)
        mask[list(notes)] = True
        out[rule] = (mask, [notes[int(r)] for r in np.flatnonzero(mask)])
    return out


def _row_rules(frame: pd.DataFrame, ts: pd.DatetimeIndex) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Per quarantine rule (except spike): mask over input rows and one detail per flagged row."""
    values = frame[list(BAR_COLUMNS[1:])].to_numpy(dtype="float64", na_value=np.nan)
    o, h, lo, c, v = (values[:, k] for k in range(5))
    ts_nat = np.asarray(ts.isna())
    ts_ns = ts.asi8
    out: dict[str, tuple[np.ndarray, list[str]]] = {
        **_duplicate_details(ts_ns, ts_nat, values),
        "nan": _nan_details(ts_nat, values),
    }
    prices = values[:, :4]
    with np.errstate(invalid="ignore"):
        nonpos = prices <= 0
    mask = nonpos.any(axis=1)
    out["non_positive_price"] = (
        mask,
        [
            ", ".join(f"{PRICE_COLUMNS[k]} = {_fmt(prices[r, k])}" for k in np.flatnonzero(nonpos[r]))
            for r in np.flatnonzero(mask)
        ],
    )
    out["ohlc_inconsistent"] = _ohlc_details(o, h, lo, c)
    with np.errstate(invalid="ignore"):
        neg = v < 0
    out["negative_volume"] = (neg, [f"volume = {_fmt(v[r])}" for r in np.flatnonzero(neg)])
    return out


# ---------------------------------------------------------------------------------------------------
# bars: the instrument's calendar


@dataclass(frozen=True)
class _Nyse:
    sessions: pd.DatetimeIndex  # session dates at 00:00 UTC
    opens: np.ndarray  # int64 ns UTC, one per session
    closes: np.ndarray
    holidays: dict[pd.Timestamp, str]  # weekday closures with a name (regular holidays)


@lru_cache(maxsize=1)
def _nyse() -> _Nyse:
    import exchange_calendars as xcals

    start, end = _XNYS_RANGE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library's own pandas deprecations, not about our data
        cal = xcals.get_calendar("XNYS", start=start, end=end)
        names = cal.regular_holidays.holidays(pd.Timestamp(start), pd.Timestamp(end), return_name=True)
    schedule = cal.schedule
    days = pd.DatetimeIndex(schedule.index)
    sessions = days.tz_localize("UTC") if days.tz is None else days.tz_convert("UTC")
    opens, closes = (
        pd.DatetimeIndex(schedule[c]).tz_convert("UTC").as_unit("ns").asi8.copy() for c in ("open", "close")
    )
    holidays = {pd.Timestamp(d).tz_localize("UTC"): str(n) for d, n in names.items()}
    return _Nyse(sessions.as_unit("ns"), opens, closes, holidays)


def _closed_because(date: pd.Timestamp) -> str:
    if date.weekday() >= 5:
        return f"a {date.day_name()}"
    return _nyse().holidays.get(date, "market closed")


def _off_xnys(ts: pd.DatetimeIndex, valid: np.ndarray, daily: bool) -> tuple[np.ndarray, list[str]]:
    nyse = _nyse()
    t = ts.asi8
    if daily:
        days = ts.normalize()
        known = valid & (days >= nyse.sessions[0]) & (days <= nyse.sessions[-1])
        mask = known & ~days.isin(nyse.sessions)
        notes = [
            f"{_day_or_time(ts[r])} is not an XNYS session ({_closed_because(days[r])})"
            for r in np.flatnonzero(mask)
        ]
        return mask, notes
    k = np.searchsorted(nyse.opens, t, side="right") - 1
    inside = (k >= 0) & (t < nyse.closes[np.clip(k, 0, None)])
    mask = valid & (t >= nyse.opens[0]) & (t < nyse.closes[-1]) & ~inside
    notes = []
    for r in np.flatnonzero(mask):
        date = ts[r].tz_convert(_NEW_YORK).normalize().tz_localize(None).tz_localize("UTC")
        at = nyse.sessions.get_indexer([date])[0]
        if at < 0:
            notes.append(f"{_day_or_time(ts[r])} is not in an XNYS session ({_closed_because(date)})")
            continue
        hours = "-".join(f"{pd.Timestamp(x[at], tz='UTC'):%H:%M}" for x in (nyse.opens, nyse.closes))
        notes.append(f"{_day_or_time(ts[r])} is outside the XNYS session ({hours} UTC)")
    return mask, notes


def _fx_closed(ts: pd.DatetimeIndex) -> np.ndarray:
    """Intraday times outside the FX week, Sunday 17:00 to Friday 17:00 New York."""
    ny = ts.tz_convert(_NEW_YORK)
    weekday, evening = np.asarray(ny.day_of_week), np.asarray(ny.hour) >= 17
    return np.asarray((weekday == 5) | ((weekday == 4) & evening) | ((weekday == 6) & ~evening))


def _off_calendar(
    instrument: Instrument, freq: str, ts: pd.DatetimeIndex, ts_nat: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Rows the instrument's calendar has no room for, with a note naming the date and the calendar."""
    bar = freq_delta(freq)
    none = np.zeros(len(ts), dtype=bool)
    if instrument.calendar is Calendar.ALWAYS or bar > pd.Timedelta(days=1) or not len(ts):
        return none, []
    valid = ~ts_nat
    daily = bar == pd.Timedelta(days=1)
    if instrument.calendar is Calendar.XNYS:
        return _off_xnys(ts, valid, daily)
    if daily:
        mask = valid & (np.asarray(ts.day_of_week) >= 5)
        notes = [
            f"{_day_or_time(ts[r])} is not a 24/5 FX day (a {ts[r].day_name()})" for r in np.flatnonzero(mask)
        ]
        return mask, notes
    mask = valid & _fx_closed(ts)
    week = "Sunday 17:00 to Friday 17:00 New York"
    return mask, [f"{_day_or_time(ts[r])} is outside the 24/5 FX week ({week})" for r in np.flatnonzero(mask)]


def bar_age(instrument: Instrument, freq: str, last: Any, now: Any) -> tuple[int, str]:
    """How many bars the instrument's calendar completed after ``last`` by ``now``: NYSE sessions
    closed since (``"sessions"``) on XNYS; bars (``"bars"``) on 24/7 and 24/5 markets, a daily FX bar
    being complete at 17:00 New York."""
    last_ts, now_ts = _aware(last, "last"), _aware(now)
    if last_ts is None or now_ts is None:
        raise ValueError("bar_age needs both last and now")
    bar = freq_delta(freq)
    daily = bar == pd.Timedelta(days=1)
    if instrument.calendar is Calendar.XNYS:
        nyse = _nyse()
        if daily:
            seen = int(nyse.sessions.searchsorted(last_ts.normalize(), side="right"))
        else:
            seen = int(np.searchsorted(nyse.opens, last_ts.value, side="right"))
        done = int(np.searchsorted(nyse.closes, now_ts.value, side="right"))
        return max(done - seen, 0), "sessions"
    if instrument.calendar is Calendar.ALWAYS or bar > pd.Timedelta(days=1):
        return max(int((now_ts - last_ts) // bar) - 1, 0), "bars"
    if daily:
        first_day = last_ts.normalize().tz_localize(None) + pd.Timedelta(days=1)
        days = pd.bdate_range(first_day, now_ts.normalize().tz_localize(None))
        ends = (days + pd.Timedelta(hours=17)).tz_localize(_NEW_YORK)
        return int((ends <= now_ts).sum()), "bars"
    opens = pd.date_range(last_ts + bar, now_ts - bar, freq=bar)
    return int((~_fx_closed(opens)).sum()), "bars"


# ---------------------------------------------------------------------------------------------------
# bars: level shifts


def _nearest_split(factor: float) -> float | None:
    """The common split ratio that a jump by ``factor`` (either way) matches, or None."""
    size = abs(math.log(factor))
    best = min(SPLIT_RATIOS, key=lambda n: abs(size - math.log(n)))
    return float(best) if abs(size - math.log(best)) <= math.log1p(SPLIT_TOLERANCE) else None


def _listed_jumps(bar_ts: pd.DatetimeIndex, r: np.ndarray, splits: pd.Series | None) -> dict[int, float]:
    """Returns that a listed split explains, ``{j: split ratio}`` (``r[j]`` leads into ``bar_ts[j]``)."""
    found: dict[int, float] = {}
    if splits is None or not len(splits):
        return found
    for when, ratio in splits.items():
        if not ratio > 0 or abs(math.log(ratio)) < math.log(_MIN_LISTED_SPLIT):
            continue
        day = pd.Timestamp(when)
        day = (day.tz_localize("UTC") if day.tz is None else day.tz_convert("UTC")).normalize()
        lo, hi = day - _LISTED_SPLIT_DAYS, day + _LISTED_SPLIT_DAYS + pd.Timedelta(days=1)
        near = (bar_ts >= lo) & (bar_ts < hi)
        for j in np.flatnonzero(near):
            if abs(r[j] + math.log(ratio)) <= math.log1p(SPLIT_TOLERANCE):
                found[int(j)] = float(ratio)
    return found


def _volume_ratio(volume: np.ndarray, idx: np.ndarray, at: int) -> float:
    """Median volume of up to 20 bars from ``idx[at]`` on over the 20 before it (NaN without volume)."""
    before = volume[idx[max(0, at - _VOLUME_WINDOW) : at]]
    after = volume[idx[at : at + _VOLUME_WINDOW]]
    if not len(before) or not len(after):
        return math.nan
    vb, va = float(np.median(before)), float(np.median(after))
    return va / vb if vb > 0 and va > 0 else math.nan


def _split_of(r: float, vol_ratio: float, listed: float | None) -> float:
    """The likely split ratio (new shares per old) behind a jump of log return ``r``, or NaN: a listed
    split, or a common split ratio with the volume moving the other way by about as much."""
    if listed is not None:
        return listed
    n = _nearest_split(math.exp(r))
    inverse = math.isfinite(vol_ratio) and abs(math.log(vol_ratio) + r) <= abs(r) / 2
    if n is None or not inverse:
        return math.nan
    return n if r < 0 else 1 / n


def _jump_kind(r: float, split: float, held: str) -> str:
    f = math.exp(r)
    if math.isnan(split):
        return f"{'persistent ' if held == 'persistent' else ''}jump x{f:.4g} with no split signature" + (
            "" if held == "persistent" else f", {held}"
        )
    if split >= 1:
        return f"likely unadjusted split 1:{_fmt(split)}"
    return f"likely unadjusted reverse split {_fmt(1 / split)}:1"


def _held(length: int, last: bool) -> str:
    if length >= _SHIFT_CONFIRM:
        return "persistent"
    bars = f"{length} bar{'s' if length != 1 else ''}"
    return f"on the last {bars}, not confirmed yet" if last else f"taken back after {bars}"


def _level_shifts(
    idx: np.ndarray,
    ts: pd.DatetimeIndex,
    close: np.ndarray,
    volume: np.ndarray,
    factor: float | None,
    splits: pd.Series | None,
) -> tuple[list[tuple[int, str]], list[dict[str, Any]]]:
    """Level shifts among the bars ``idx``: bars on a level other than the one holding the most bars,
    with a detail each, and one row per shift that explains a quarantined level."""
    if len(idx) < 2:
        return [], []
    r = np.diff(np.log(close[idx]))
    listed = _listed_jumps(ts[idx[1:]], r, splits)
    gate = np.zeros(len(r), dtype=bool)
    if factor is not None:
        with np.errstate(invalid="ignore"):
            gate |= np.abs(r) >= math.log(factor)
    gate[list(listed)] = True
    js = np.flatnonzero(gate)
    if not len(js):
        return [], []
    bounds = np.r_[0, js + 1, len(idx)]
    lengths = np.diff(bounds)
    offsets = np.r_[0.0, np.cumsum(r[js])]  # each level's log distance from the first
    tol = 0.5 * float(np.abs(r[js]).min())
    cover = (np.abs(offsets[:, None] - offsets[None, :]) < tol) @ lengths
    bad = np.abs(offsets - offsets[int(np.argmax(cover))]) >= tol
    first_kept = int(np.argmax(~bad))
    found: list[tuple[int, str]] = []
    rows: list[dict[str, Any]] = []
    for k in np.flatnonzero(bad):
        after = bool(k > first_kept)  # a kept level comes before: the jump into this level explains it
        j = int(js[k - 1] if after else js[k])
        vol = _volume_ratio(volume, idx, j + 1)
        split = _split_of(float(r[j]), vol, listed.get(j))
        held = _held(int(lengths[k]), bool(k == len(lengths) - 1)) if after else "persistent"
        prev, bar = idx[j], idx[j + 1]
        evidence = f"close {_fmt(close[prev])} -> {_fmt(close[bar])}" + (
            f", volume x{vol:.3g}" if math.isfinite(vol) else ""
        )
        if j in listed:
            evidence += f"; the corporate actions list a {_fmt(listed[j])}-for-1 split"
        side = f"{lengths[k]} bars from the shift on" if after else f"the {lengths[k]} bars before it"
        detail = (
            f"{_jump_kind(float(r[j]), split, held)} on {_day_or_time(ts[bar])} ({evidence}): "
            f"{side} quarantined (the level holding fewer bars)"
        )
        segment = idx[bounds[k] : bounds[k + 1]]
        found += [(int(pos), detail) for pos in segment]
        rows.append({"ts": ts[bar], "factor": math.exp(r[j]), "split": split, "bars": len(segment)})
    return found, rows


# ---------------------------------------------------------------------------------------------------
# bars: spikes and large moves


def _returns_z(close: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Log close-to-close returns and |return| / trailing std (the window before, not the bar itself)."""
    r = np.diff(np.log(close))
    min_periods = max(5, window // 3)
    sigma = pd.Series(r).rolling(window, min_periods=min_periods).std().shift(1).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(r) / np.maximum(sigma, _MIN_SIGMA)
    return r, z


def _spike_pass(
    idx: np.ndarray, r: np.ndarray, z: np.ndarray, open_: np.ndarray, close: np.ndarray, k: float
) -> list[tuple[int, str]]:
    """Spikes among the bars ``idx`` (``r[j]`` is the return into bar ``idx[j + 1]``)."""
    found: list[tuple[int, str]] = []
    last_j = -2
    with np.errstate(invalid="ignore"):
        candidates = np.flatnonzero(z > k)
    for j in candidates:
        if j == last_j + 1 or j + 1 >= len(r):  # the reversal of the spike just found / no next bar yet
            continue
        bar, nxt = idx[j + 1], idx[j + 2]
        taken_back = -r[j + 1] / r[j]
        at_open = -math.log(open_[nxt] / close[bar]) / r[j]
        if taken_back >= 0.5 and at_open >= 0.5:
            found.append(
                (
                    int(bar),
                    f"close {_fmt(close[bar])}: {math.expm1(r[j]):+.1%} ({z[j]:.1f} sigma) from "
                    f"{_fmt(close[idx[j]])}, {taken_back:.0%} taken back by the next bar "
                    f"(next open {_fmt(open_[nxt])})",
                )
            )
            last_j = int(j)
    return found


def _spike_passes(
    alive: np.ndarray, open_: np.ndarray, close: np.ndarray, sigma_k: float, window: int
) -> list[tuple[int, str]]:
    """Spikes among the ``alive`` bars, pass after pass (each pass takes out the spikes it found)."""
    spikes: list[tuple[int, str]] = []
    for _ in range(_MAX_SPIKE_PASSES):
        idx = np.flatnonzero(alive)
        if len(idx) < 3:
            break
        r, z = _returns_z(close[idx], window)
        new = _spike_pass(idx, r, z, open_, close, sigma_k)
        if not new:
            break
        spikes += new
        alive[[pos for pos, _ in new]] = False
    return spikes


@dataclass
class _Moves:
    spikes: list[tuple[int, str]]
    shifts: list[tuple[int, str]]
    shift_rows: list[dict[str, Any]]
    moves: pd.DataFrame


def _find_moves(
    ts: pd.DatetimeIndex,
    open_: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    *,
    sigma_k: float,
    window: int,
    threshold: float | None,
    shift_factor: float | None,
    splits: pd.Series | None,
) -> _Moves:
    """Spikes and level shifts (positions, details), and the large moves that remain once both are
    taken out. Spikes first, so a bad print that the next bar takes back stays a spike; once the
    levels are settled, spikes hidden by a shift's huge move in the trailing sigma are looked for again."""
    alive = np.ones(len(close), dtype=bool)
    spikes = _spike_passes(alive, open_, close, sigma_k, window)
    shifts, shift_rows = _level_shifts(np.flatnonzero(alive), ts, close, volume, shift_factor, splits)
    if shifts:
        alive[[pos for pos, _ in shifts]] = False
        spikes += _spike_passes(alive, open_, close, sigma_k, window)
    idx = np.flatnonzero(alive)
    if len(idx) < 2:
        return _Moves(spikes, shifts, shift_rows, pd.DataFrame({"ts": ts[:0], "ret": [], "z": []}))
    r, z = _returns_z(close[idx], window)
    simple = np.expm1(r)
    with np.errstate(invalid="ignore"):
        big = z > sigma_k
        if threshold is not None:
            big |= np.abs(simple) > threshold
    moves = pd.DataFrame({"ts": ts[idx[1:][big]], "ret": simple[big], "z": z[big]})
    return _Moves(spikes, shifts, shift_rows, moves.reset_index(drop=True))


def _move_issue(moves: pd.DataFrame, sigma_k: float, threshold: float | None, last_ts: pd.Timestamp) -> Issue:
    by_size = moves.reindex(moves["ret"].abs().sort_values(ascending=False).index)
    notes = []
    for t, ret, z in zip(by_size["ts"], by_size["ret"], by_size["z"], strict=True):
        sigma = "n/a" if not np.isfinite(z) else f"{z:.1f}"
        open_end = " (last bar: whether it is taken back is not known yet)" if t == last_ts else ""
        notes.append(f"{ret:+.1%}, {sigma} sigma{open_end}")
    top = by_size.iloc[0]
    limit = f"{sigma_k:g} sigma" + (f" or {threshold:.0%}" if threshold is not None else "")
    detail = (
        f"{len(moves)} close-to-close moves beyond {limit}, kept as real moves; largest "
        f"{_day_or_time(top['ts'])} {top['ret']:+.1%}"
    )
    return _issue("large_move", "info", detail, list(by_size["ts"]), notes)


# ---------------------------------------------------------------------------------------------------
# bars: gaps, volume, staleness


def _gaps(instrument: Instrument, freq: str, ts: pd.DatetimeIndex) -> pd.DatetimeIndex:
    if freq == "1d" or freq in FREQ_NS:
        return calendar_gaps(instrument, freq, ts)
    if instrument.calendar is Calendar.ALWAYS and len(ts) >= 2:
        return pd.date_range(ts[0], ts[-1], freq=freq_delta(freq)).difference(ts)
    return pd.DatetimeIndex([], tz="UTC")  # session calendars at other frequencies: not checked


def default_stale_after(instrument: Instrument, freq: str) -> pd.Timedelta:
    """How old the last bar may be before it is stale: three bars on a 24/7 market; on session
    calendars a long weekend (4 days) plus one daily bar, or 4 days intraday."""
    bar = freq_delta(freq)
    if instrument.calendar is Calendar.ALWAYS:
        return 3 * bar
    return pd.Timedelta(days=4) + (bar if bar >= pd.Timedelta(days=1) else pd.Timedelta(0))


def _flat_runs(ts: pd.DatetimeIndex, close: np.ndarray) -> tuple[list[pd.Timestamp], list[str]]:
    """Starts of runs of more than MAX_FLAT_RUN identical consecutive closes, with their lengths."""
    if len(close) <= MAX_FLAT_RUN:
        return [], []
    change = np.r_[True, close[1:] != close[:-1]]
    starts = np.flatnonzero(change)
    lengths = np.diff(np.r_[starts, len(close)])
    long = lengths > MAX_FLAT_RUN
    stamps = [ts[s] for s in starts[long]]
    notes = [f"{n} bars at close {_fmt(close[s])}" for s, n in zip(starts[long], lengths[long], strict=True)]
    return stamps, notes


def _stale_issue(
    instrument: Instrument,
    freq: str,
    ts: pd.DatetimeIndex,
    close: np.ndarray,
    now: pd.Timestamp | None,
    stale_after: timedelta | None,
) -> Issue | None:
    stamps, notes = _flat_runs(ts, close)
    parts = [f"{len(stamps)} runs of more than {MAX_FLAT_RUN} identical closes"] if stamps else []
    if now is not None and len(ts):
        limit = (
            pd.Timedelta(stale_after) if stale_after is not None else default_stale_after(instrument, freq)
        )
        age = now - ts[-1]
        if age > limit:
            count, unit = bar_age(instrument, freq, ts[-1], now)
            stamps.append(ts[-1])
            notes.append(f"last bar, {count} {unit} old at {_when(now)}")
            parts.append(
                f"last bar {_day_or_time(ts[-1])}, {count} {unit} old at {_when(now)} "
                f"({_age(age)}; limit {_age(limit)})"
            )
    if not stamps:
        return None
    return _issue("stale", "warning", "; ".join(parts), stamps, notes)


def _volume_issue(instrument: Instrument, ts: pd.DatetimeIndex, volume: np.ndarray) -> Issue | None:
    zero = np.flatnonzero(volume == 0)
    if not len(zero):
        return None
    if instrument.volume_unit is VolumeUnit.NONE:
        detail = (
            f"{len(zero)} of {len(volume)} bars with zero volume: expected, the instrument publishes none"
        )
        return _issue("zero_volume", "info", detail, ts[zero])
    detail = f"{len(zero)} bars with zero volume, kept (a real market can print one, e.g. during an outage)"
    return _issue("zero_volume", "warning", detail, ts[zero])


# ---------------------------------------------------------------------------------------------------
# bars: the entry point


def _quarantine_frame(frame: pd.DataFrame, flagged: dict[str, tuple[np.ndarray, list[str]]]) -> pd.DataFrame:
    parts = []
    for rule in QUARANTINE_RULES:
        if rule not in flagged or not flagged[rule][0].any():
            continue
        mask, details = flagged[rule]
        part = frame[mask].copy()
        part["rule"] = rule
        part["detail"] = details
        parts.append(part)
    if not parts:
        empty = frame.iloc[:0].copy()
        empty["rule"] = pd.Series(dtype=object)
        empty["detail"] = pd.Series(dtype=object)
        return empty.rename_axis("row")
    out = pd.concat(parts)
    order = {r: k for k, r in enumerate(QUARANTINE_RULES)}
    out["_order"] = out["rule"].map(order)
    out = out.rename_axis("row").sort_values(["row", "_order"], kind="mergesort")
    return out.drop(columns="_order")


def validate_bars(
    df: pd.DataFrame,
    instrument: Instrument,
    freq: str,
    *,
    spike_sigma: float = 8.0,
    spike_window: int = 60,
    stale_after: timedelta | None = None,
    now: datetime | pd.Timestamp | None = None,
    move_threshold: float | None = None,
    level_shift_factor: float | None = LEVEL_SHIFT_FACTOR,
    splits: pd.Series | None = None,
) -> Validation:
    """Check a bar frame (ts, open, high, low, close, volume) against every rule in :data:`RULES`.

    A frame that is not bars at all raises ValueError (rule ``schema``). Row rules, the instrument's
    calendar included, run on every row (a row caught by several rules is quarantined once per rule);
    the spike and level-shift rules then run on the rows that passed them, and gaps and staleness on
    the clean rows. ``move_threshold`` defaults to
    :data:`DAILY_MOVE_THRESHOLD` for daily bars (no fixed threshold intraday). Staleness of the last
    bar is checked only when ``now`` is given (``stale_after`` defaults to :func:`default_stale_after`).
    ``splits`` are the symbol's listed splits (split ratio by date, as in the ``corporate_actions``
    table), which a level shift is reconciled with; ``level_shift_factor=None`` looks only for those.
    """
    _check_schema(df)
    if not spike_sigma > 0 or spike_window < 2:
        raise ValueError(f"spike_sigma must be > 0 and spike_window >= 2; got {spike_sigma}, {spike_window}")
    now_ts = _aware(now)
    if move_threshold is None and freq_delta(freq) == pd.Timedelta(days=1):
        move_threshold = DAILY_MOVE_THRESHOLD.get(instrument.asset_class)
    frame = df.reset_index(drop=True)
    ts = pd.DatetimeIndex(frame["ts"]).tz_convert("UTC").as_unit("ns")

    flagged = _row_rules(frame, ts)
    flagged["off_calendar"] = _off_calendar(instrument, freq, ts, np.asarray(ts.isna()))
    bad = np.zeros(len(frame), dtype=bool)
    for mask, _ in flagged.values():
        bad |= mask
    survivors = np.flatnonzero(~bad)
    survivors = survivors[np.argsort(ts.asi8[survivors], kind="stable")]
    s_ts = ts[survivors]
    s_open = frame["open"].to_numpy(dtype="float64")[survivors]
    s_close = frame["close"].to_numpy(dtype="float64")[survivors]
    s_volume = frame["volume"].to_numpy(dtype="float64")[survivors]
    found = _find_moves(
        s_ts,
        s_open,
        s_close,
        s_volume,
        sigma_k=spike_sigma,
        window=spike_window,
        threshold=move_threshold,
        shift_factor=level_shift_factor,
        splits=splits,
    )
    moves = found.moves
    flagged["spike"] = _flag_rows(len(frame), survivors, found.spikes)
    flagged["level_shift"] = _flag_rows(len(frame), survivors, found.shifts)

    keep = survivors[~(flagged["spike"][0] | flagged["level_shift"][0])[survivors]]
    clean = frame.iloc[keep]
    clean_ts = ts[keep]
    quarantined = _quarantine_frame(frame, flagged)
    issues = [
        _issue(rule, "error", f"{int(mask.sum())} rows quarantined; first: {details[0]}", ts[mask], details)
        for rule in QUARANTINE_RULES
        for mask, details in [flagged[rule]]
        if mask.any()
    ]
    volume = clean["volume"].to_numpy(dtype="float64")
    extra = [
        _volume_issue(instrument, clean_ts, volume),
        _move_issue(moves, spike_sigma, move_threshold, clean_ts[-1]) if len(moves) else None,
    ]
    gaps = _gaps(instrument, freq, clean_ts)
    if len(gaps):
        detail = f"{len(gaps)} bars missing vs the {instrument.calendar.value} calendar at {freq}"
        extra.append(_issue("gap", "warning", detail, gaps))
    extra.append(
        _stale_issue(
            instrument, freq, clean_ts, clean["close"].to_numpy(dtype="float64"), now_ts, stale_after
        )
    )
    issues += [i for i in extra if i is not None]
    shifts = pd.DataFrame(found.shift_rows) if found.shift_rows else _no_shifts()
    return Validation(clean, quarantined, gaps, issues, moves, shifts)


def _flag_rows(n: int, survivors: np.ndarray, hits: list[tuple[int, str]]) -> tuple[np.ndarray, list[str]]:
    """A rule's mask over the ``n`` input rows and its details, from (survivor position, detail) hits."""
    mask = np.zeros(n, dtype=bool)
    rows = [int(survivors[pos]) for pos, _ in hits]
    mask[rows] = True
    by_row = dict(zip(rows, [d for _, d in hits], strict=True))
    return mask, [by_row[int(r)] for r in np.flatnonzero(mask)]


# ---------------------------------------------------------------------------------------------------
# quarantine table


QUARANTINE_TABLE = "quarantine"
QUARANTINE_COLUMNS: tuple[str, ...] = (
    "key",
    "ts",
    "rule",
    "detail",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "found_at",
    "missing",
)
_VALUE_COLUMNS = BAR_COLUMNS[1:]
_EPOCH = pd.Timestamp(0, tz="UTC")


def _encode_rows(key: str, rows: pd.DataFrame, found_at: pd.Timestamp) -> pd.DataFrame:
    """Rows in the table's layout; the store refuses missing values, so a NaN (or NaT ts) is kept as
    0.0 (epoch) and named in ``missing``."""
    values = rows[list(_VALUE_COLUMNS)].to_numpy(dtype="float64", na_value=np.nan)
    ts = pd.DatetimeIndex(rows["ts"]).tz_convert("UTC").as_unit("ns")
    nan = np.isnan(values)
    missing = [
        ",".join((["ts"] if t is pd.NaT else []) + [_VALUE_COLUMNS[k] for k in np.flatnonzero(nan[i])])
        for i, t in enumerate(ts)
    ]
    out = pd.DataFrame(
        {
            "key": key,
            "ts": ts.fillna(_EPOCH),
            "rule": rows["rule"].astype(str).to_numpy(),
            "detail": rows["detail"].astype(str).to_numpy(),
        }
    )
    for k, c in enumerate(_VALUE_COLUMNS):
        out[c] = np.where(nan[:, k], 0.0, values[:, k])
    out["found_at"] = pd.DatetimeIndex([found_at] * len(out)).as_unit("ns")
    out["missing"] = missing
    return out


def read_quarantine(store: Store) -> pd.DataFrame:
    """The store's quarantine table with missing values restored (NaN prices/volume, NaT ts).
    Empty (same columns) when nothing was ever quarantined."""
    try:
        table = store.read_table(QUARANTINE_TABLE)
    except DataNotFoundError:
        empty = {c: pd.Series(dtype="float64") for c in QUARANTINE_COLUMNS}
        for c in ("ts", "found_at"):
            empty[c] = pd.Series(dtype="datetime64[ns, UTC]")
        for c in ("key", "rule", "detail", "missing"):
            empty[c] = pd.Series(dtype=object)
        return pd.DataFrame(empty)
    for c in _VALUE_COLUMNS:
        hit = table["missing"].str.split(",").map(lambda names, c=c: c in names)
        table.loc[hit, c] = np.nan
    table.loc[table["missing"].str.split(",").map(lambda names: "ts" in names), "ts"] = pd.NaT
    return table


def quarantine(store: Store, key: str, rows: pd.DataFrame, *, found_at: datetime | pd.Timestamp) -> int:
    """Append quarantined rows (``Validation.quarantined``) of partition ``key`` to the store table
    ``quarantine``; a row already there (same key, ts, rule and values) is not added again.

    Returns how many rows were added. Missing values are kept as 0.0 and named in column ``missing``
    (:func:`read_quarantine` restores them).
    """
    found = _aware(found_at, "found_at")
    if found is None:
        raise ValueError("quarantine: found_at is required (a tz-aware time)")
    needed = {"ts", "rule", "detail", *_VALUE_COLUMNS}
    if not needed <= set(map(str, rows.columns)):
        raise ValueError(f"quarantine: rows need columns {sorted(needed)}; got {list(rows.columns)}")
    if rows.empty:
        return 0
    new = _encode_rows(key, rows, found)
    try:
        old = store.read_table(QUARANTINE_TABLE)
    except DataNotFoundError:
        old = new.iloc[:0]
    identity = ["key", "ts", "rule", *_VALUE_COLUMNS, "missing"]
    both = pd.concat([old[list(QUARANTINE_COLUMNS)], new], ignore_index=True)
    both = both[~both.duplicated(subset=identity, keep="first")]
    added = len(both) - len(old)
    if added:
        store.write_table(
            QUARANTINE_TABLE, both, sort_by=["key", "ts", "rule", "found_at"], source="hflite.data.quality"
        )
    return added


# ---------------------------------------------------------------------------------------------------
# macro series


@dataclass(frozen=True)
class SeriesSpec:
    """A macro series' frequency (D, W, M, Q) and its publication lag in days (None: not real time)."""

    freq: Literal["D", "W", "M", "Q"]
    lag_days: int | None


#: Frequencies and release lags of the sample's FRED series (SOURCES.md, column "known about").
SERIES_SPECS: dict[str, SeriesSpec] = {
    "FEDFUNDS": SeriesSpec("M", 3),
    "CPIAUCSL": SeriesSpec("M", 15),
    "CPILFESL": SeriesSpec("M", 15),
    "PCEPILFE": SeriesSpec("M", 31),
    "UNRATE": SeriesSpec("M", 7),
    "PAYEMS": SeriesSpec("M", 7),
    "INDPRO": SeriesSpec("M", 17),
    "M2SL": SeriesSpec("M", 28),
    "GDPC1": SeriesSpec("Q", 30),
    "DGS10": SeriesSpec("D", 0),
    "DGS2": SeriesSpec("D", 0),
    "T10Y2Y": SeriesSpec("D", 0),
    "T10YIE": SeriesSpec("D", 0),
    "DCOILWTICO": SeriesSpec("D", 7),
    "DTWEXBGS": SeriesSpec("D", 7),
    "VIXCLS": SeriesSpec("D", 0),
    "ICSA": SeriesSpec("W", 5),
    "USREC": SeriesSpec("M", None),
}
_SERIES_GRACE = {"D": 4, "W": 7, "M": 7, "Q": 7}  # days: weekends, holidays, release slips


def _infer_series_freq(dates: pd.DatetimeIndex) -> Literal["D", "W", "M", "Q"] | None:
    if len(dates) < 3:
        return None
    days = float(np.median(np.diff(dates.asi8))) / 86_400e9
    for freq, lo, hi in (("D", 0.5, 3.5), ("W", 6, 8), ("M", 27, 32), ("Q", 85, 95)):
        if lo <= days <= hi:
            return freq  # type: ignore[return-value]
    return None


def _expected_dates(freq: str, first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
    if freq == "D":
        return pd.bdate_range(first, last, tz="UTC")
    if freq == "W":
        return pd.date_range(first, last, freq="7D")
    return pd.date_range(first, last, freq="MS" if freq == "M" else "QS")


def _next_due(spec: SeriesSpec, last: pd.Timestamp) -> pd.Timestamp:
    """When the observation after ``last`` should have been published (dates as FRED stamps them:
    the day, the week's end, or the first day of the month/quarter)."""
    lag = pd.Timedelta(days=(spec.lag_days or 0) + _SERIES_GRACE[spec.freq])
    step = {
        "D": pd.DateOffset(days=1),
        "W": pd.DateOffset(days=7),
        "M": pd.DateOffset(months=2),
        "Q": pd.DateOffset(months=6),
    }
    return last + step[spec.freq] + lag


def validate_series(
    df: pd.DataFrame, series_id: str, *, spec: SeriesSpec | None = None, now: Any = None
) -> list[Issue]:
    """Check a macro series (date, value): NaN, duplicate dates, gaps vs its frequency and, when
    ``now`` is given, whether the next observation is overdue given its release lag."""
    for c in ("date", "value"):
        if c not in df.columns:
            raise ValueError(f"schema: {series_id}: missing column {c}")
    if not isinstance(df["date"].dtype, pd.DatetimeTZDtype):
        raise ValueError(f"schema: {series_id}: column date has dtype {df['date'].dtype}; {_DTYPE_HINT}")
    now_ts = _aware(now)
    dates = pd.DatetimeIndex(df["date"]).tz_convert("UTC").as_unit("ns")
    values = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    issues: list[Issue] = []
    bad = ~np.isfinite(values)
    if bad.any():
        issues.append(_issue("nan", "error", f"{int(bad.sum())} missing or infinite values", dates[bad]))
    dup = dates.duplicated(keep="first")
    if dup.any():
        issues.append(_issue("duplicate_ts", "error", f"{int(dup.sum())} repeated dates", dates[dup]))
    dates = dates[~dup].sort_values()
    spec = spec or SERIES_SPECS.get(series_id)
    freq = spec.freq if spec else _infer_series_freq(dates)
    if freq is not None and len(dates) >= 2:
        gaps = _expected_dates(freq, dates[0], dates[-1]).difference(dates)
        if len(gaps):
            daily = freq == "D"
            what = (
                "weekdays without an observation (market holidays included)" if daily else "periods missing"
            )
            issues.append(_issue("gap", "info" if daily else "warning", f"{len(gaps)} {what}", gaps))
    if now_ts is not None and spec is not None and spec.lag_days is not None and len(dates):
        due = _next_due(spec, dates[-1])
        if now_ts > due:
            detail = (
                f"last observation {_day_or_time(dates[-1])}; the next was due by about "
                f"{_day_or_time(due)} (lag {spec.lag_days} days + grace) and is missing at {now_ts.date()}"
            )
            issues.append(_issue("stale", "warning", detail, [dates[-1]]))
    return issues


# ---------------------------------------------------------------------------------------------------
# the store check


@dataclass(frozen=True, eq=False)
class PartitionQuality:
    """The checks of one partition: its issues, quarantined rows and kept large moves."""

    key: str
    kind: str
    symbol: str
    freq: str | None
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    issues: tuple[Issue, ...]
    quarantined_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    large_moves: pd.DataFrame = field(default_factory=pd.DataFrame)
    age: tuple[int, str] | None = None  # the last bar's age at the report's `now`: (count, unit)

    def issue(self, rule: str) -> Issue | None:
        return next((i for i in self.issues if i.rule == rule), None)

    def count(self, rule: str) -> int:
        found = self.issue(rule)
        return found.count if found else 0

    @property
    def status(self) -> Literal["ok", "warning", "error"]:
        """``error`` if rows were quarantined (or the partition is unreadable), ``warning`` for gaps,
        staleness or zero volume on a market that has volume, else ``ok``."""
        severities = {i.severity for i in self.issues}
        return "error" if "error" in severities else "warning" if "warning" in severities else "ok"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(eq=False)
class QualityReport:
    """:func:`check_store`'s result: one :class:`PartitionQuality` per bars partition and macro series."""

    root: str
    now: pd.Timestamp | None
    partitions: list[PartitionQuality]

    def partition(self, key: str) -> PartitionQuality:
        for p in self.partitions:
            if p.key == key:
                return p
        raise KeyError(f"no partition {key!r} in the report")

    def count(self, key: str, rule: str) -> int:
        return self.partition(key).count(rule)

    def issue(self, key: str, rule: str) -> Issue | None:
        return self.partition(key).issue(rule)

    def counts(self) -> dict[tuple[str, str], int]:
        """``{(key, rule): count}`` for every finding."""
        return {(p.key, i.rule): i.count for p in self.partitions for i in p.issues}

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.partitions)


def generic_instrument(symbol: str, asset_class: str | None) -> Instrument:
    """An instrument for a symbol outside the registry, from its partition's asset class."""
    cls = AssetClass(asset_class or "equity")
    calendar = {AssetClass.CRYPTO: Calendar.ALWAYS, AssetClass.FX: Calendar.FX}.get(cls, Calendar.XNYS)
    volume = VolumeUnit.NONE if cls is AssetClass.FX else VolumeUnit.UNITS
    return Instrument(symbol, cls, "USD", calendar, 0.01, 1.0, volume_unit=volume)


def listed_splits(store: Store) -> dict[str, pd.Series]:
    """Per symbol, the splits the store's ``corporate_actions`` table lists (split ratio by date, new
    shares per old); empty when the table is missing."""
    try:
        table = store.read_table("corporate_actions")
    except DataNotFoundError:
        return {}
    if not {"symbol", "date", "split_ratio"} <= set(map(str, table.columns)):
        return {}
    rows = table[(table["split_ratio"] > 0) & (table["split_ratio"] != 1)]
    return {
        str(sym): pd.Series(g["split_ratio"].to_numpy(dtype="float64"), index=pd.DatetimeIndex(g["date"]))
        for sym, g in rows.groupby("symbol")
    }


def _unreadable(p: Any, exc: Exception) -> PartitionQuality:
    issue = Issue("schema", 1, None, f"{type(exc).__name__}: {exc}", "error")
    return PartitionQuality(p.key, p.kind, p.symbol, p.freq, p.rows, p.first, p.last, (issue,))


def _recorded_issues(rows: pd.DataFrame, stored_ts: pd.Series) -> list[Issue]:
    """Rows the quarantine table holds for a partition whose time the store still lacks, per rule
    (a warning: the store's data is clean, but these bars are missing from it for a reason)."""
    rows = rows[~rows["ts"].isin(stored_ts)]
    out = []
    for rule in QUARANTINE_RULES:
        part = rows[rows["rule"] == rule]
        if part.empty:
            continue
        found = pd.DatetimeIndex(part["found_at"])
        when = f"{found.min():%Y-%m-%d}"
        if found.max() != found.min():
            when += f" to {found.max():%Y-%m-%d}"
        detail = (
            f"{len(part)} rows quarantined at ingest, kept in the quarantine table (found {when}); "
            f"first: {part['detail'].iloc[0]}"
        )
        out.append(_issue(rule, "warning", detail, list(part["ts"]), list(part["detail"])))
    return out


def _merge_issues(found: list[Issue], recorded: list[Issue]) -> list[Issue]:
    """``found`` with each recorded issue added to the finding of its rule (or appended)."""
    out = list(found)
    for rec in recorded:
        at = next((k for k, i in enumerate(out) if i.rule == rec.rule), None)
        if at is None:
            out.append(rec)
            continue
        mine = out[at]
        firsts = [t for t in (mine.first_ts, rec.first_ts) if t is not None]
        out[at] = Issue(
            rec.rule,
            mine.count + rec.count,
            min(firsts) if firsts else None,
            f"{mine.detail}; and {rec.detail}",
            mine.severity,
            (mine.examples + rec.examples)[:MAX_EXAMPLES],
        )
    return out


@dataclass(frozen=True)
class _StoreContext:
    """What a store check reads once for every partition."""

    now: pd.Timestamp | None
    instruments: dict[str, Instrument] | None
    recorded: pd.DataFrame
    splits: dict[str, pd.Series]


def _check_bars(store: Store, p: Any, ctx: _StoreContext) -> PartitionQuality:
    try:
        inst = instrument_for(p.symbol, ctx.instruments)
    except UnknownInstrumentError:
        inst = generic_instrument(p.symbol, p.asset_class)
    freq = p.freq or "1d"
    try:
        df = store.read_bars(p.symbol, freq)
        v = validate_bars(df, inst, freq, now=ctx.now, splits=ctx.splits.get(p.symbol))
    except (DataNotFoundError, ValueError, OSError) as exc:
        return _unreadable(p, exc)
    recorded = _recorded_issues(ctx.recorded[ctx.recorded["key"] == p.key], df["ts"])
    age = bar_age(inst, freq, df["ts"].max(), ctx.now) if ctx.now is not None and len(df) else None
    return PartitionQuality(
        p.key,
        p.kind,
        p.symbol,
        p.freq,
        len(df),
        p.first,
        p.last,
        tuple(_merge_issues(v.issues, recorded)),
        v.quarantined,
        v.large_moves,
        age,
    )


def _check_series(store: Store, p: Any, now: pd.Timestamp | None) -> PartitionQuality:
    try:
        df = store.read_series(p.symbol)
        issues = validate_series(df, p.symbol, now=now)
    except (DataNotFoundError, ValueError, OSError) as exc:
        return _unreadable(p, exc)
    age = None
    if now is not None and len(df):
        age = (max(int((now - pd.Timestamp(df["date"].max())) // pd.Timedelta(days=1)), 0), "days")
    return PartitionQuality(p.key, p.kind, p.symbol, p.freq, len(df), p.first, p.last, tuple(issues), age=age)


def check_store(
    store: Store, *, now: Any = None, instruments: dict[str, Instrument] | None = None
) -> QualityReport:
    """Validate every bars partition and macro series in ``store`` (reads only; see :func:`quarantine`
    to record the rows found), with the rows the quarantine table holds for it that the store lacks.
    Staleness and each partition's age are checked only when ``now`` (tz-aware; the CLI passes the
    wall clock) is given."""
    now_ts = _aware(now)
    ctx = _StoreContext(now_ts, instruments, read_quarantine(store), listed_splits(store))
    out: list[PartitionQuality] = []
    for p in store.partitions():
        if p.kind == "bars":
            out.append(_check_bars(store, p, ctx))
        elif p.kind == "macro":
            out.append(_check_series(store, p, now_ts))
    return QualityReport(str(store.root), now_ts, out)


# ---------------------------------------------------------------------------------------------------
# presentation


_SHORT = {
    "duplicate_ts": "dup",
    "duplicate_conflict": "conflict",
    "nan": "nan",
    "non_positive_price": "<=0",
    "ohlc_inconsistent": "ohlc",
    "negative_volume": "vol<0",
    "off_calendar": "offcal",
    "zero_volume": "vol=0",
    "spike": "spike",
    "level_shift": "shift",
    "large_move": "move",
    "gap": "gap",
    "stale": "stale",
}
_REPORT_RULES = tuple(_SHORT)
_STATUS_TEXT = {"ok": "OK", "warning": "check", "error": "BAD"}
_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim", "ok": "green", "zero": "dim", "na": ""}


def _cells(p: PartitionQuality, rules: tuple[str, ...] = _REPORT_RULES) -> list[tuple[str, str]]:
    """(text, kind) per report rule: a count and its severity, '.' (kind ``zero``) for none, ''
    (kind ``na``) for a rule not applied to this kind of partition."""
    cells = []
    for rule in rules:
        found = p.issue(rule)
        if p.kind == "macro" and rule not in SERIES_RULES:
            cells.append(("", "na"))
        elif found is None:
            cells.append((".", "zero"))
        else:
            cells.append((f"{int(found.count):d}", found.severity))
    return cells


def _age_text(p: PartitionQuality) -> str:
    return f"{p.age[0]:d} {p.age[1]}" if p.age is not None else ""


def _shown_rules(report: QualityReport, wide: bool) -> tuple[str, ...]:
    if wide:
        return _REPORT_RULES
    return tuple(r for r in _REPORT_RULES if any(p.count(r) for p in report.partitions))


def rule_legend(rules: tuple[str, ...] = _REPORT_RULES) -> str:
    """One line per reported rule (all by default): its short column name, its name and its meaning."""
    return "\n".join(f"{_SHORT.get(r, r)} = {r}: {RULES[r]}" for r in ("schema", *rules))


def render_quality_table(report: QualityReport, *, wide: bool = False) -> Table:
    """A rich table with one row per partition: rows, counts per rule, the last bar's age and a status,
    for ``hflite data check``. Readable at 80 columns: by default only the rules something was found
    for get a column (``wide=True``: every rule); ids, dates and counts never wrap."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    rules = _shown_rules(report, wide)
    when = f" at {_when(report.now)}" if report.now is not None else ""
    table = Table(
        title=f"data quality{when}",
        caption=f"store {report.root}\nred: rows quarantined by this check; yellow: look at it (rows "
        "quarantined at ingest included); dim: informational; age: sessions or bars since the last bar\n"
        + rule_legend(rules),
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )
    table.add_column("partition", no_wrap=True)
    table.add_column("rows", justify="right", no_wrap=True)
    for rule in rules:
        table.add_column(_SHORT[rule], justify="right", no_wrap=True)
    table.add_column("age", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for p in report.partitions:
        status = _STATUS_TEXT[p.status] + (" (unreadable)" if p.issue("schema") else "")
        table.add_row(
            p.key,
            f"{int(p.rows):d}",
            *(Text(text, style=_STYLE[kind]) for text, kind in _cells(p, rules)),
            _age_text(p),
            Text(status, style=_STYLE[p.status]),
        )
    return table


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child, td.status { text-align: left; }
.error { color: #b00020; font-weight: bold; } .warning { color: #a86a00; } .info, .zero { color: #888; }
.ok { color: #1a7f37; } dt { font-weight: bold; margin-top: 0.5em; } code { font-size: 0.95em; }
"""


def _html_summary(report: QualityReport) -> list[str]:
    e = html.escape
    head = "".join(f"<th title='{e(r)}'>{e(_SHORT[r])}</th>" for r in _REPORT_RULES)
    lines = ["<table>", f"<tr><th>partition</th><th>rows</th>{head}<th>age</th><th>status</th></tr>"]
    for p in report.partitions:
        cells = "".join(f"<td class='{kind}'>{e(text)}</td>" for text, kind in _cells(p))
        lines.append(
            f"<tr><td>{e(p.key)}</td><td>{int(p.rows):d}</td>{cells}<td>{e(_age_text(p))}</td>"
            f"<td class='status {p.status}'>{_STATUS_TEXT[p.status]}</td></tr>"
        )
    lines.append("</table>")
    return lines


def _html_details(report: QualityReport) -> list[str]:
    e = html.escape
    lines = ["<h2>Findings by rule</h2>"]
    for rule in ("schema", *_REPORT_RULES):
        hits = [(p, i) for p in report.partitions for i in p.issues if i.rule == rule]
        lines.append(f"<h3 id='{rule}'>{e(rule)}</h3><p>{e(RULES[rule])}</p>")
        if not hits:
            lines.append("<p class='ok'>No findings.</p>")
            continue
        lines.append("<ul>")
        for p, i in hits:
            shown = ", ".join(f"{_day_or_time(t)}" + (f" ({note})" if note else "") for t, note in i.examples)
            more = f" and {i.count - len(i.examples)} more" if i.count > len(i.examples) else ""
            lines.append(
                f"<li><b>{e(p.key)}</b> <span class='{i.severity}'>{i.count} ({i.severity})</span>: "
                f"{e(i.detail)}<br><small>examples: {e(shown)}{e(more)}</small></li>"
            )
        lines.append("</ul>")
    return lines


def write_quality_html(report: QualityReport, path: str | Path) -> Path:
    """Write a self-contained HTML quality report (summary table, rule meanings, per-rule findings
    with example timestamps). Returns the path written."""
    e = html.escape
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    when = f" at {e(_when(report.now))}" if report.now is not None else ""
    legend = "".join(f"<dt>{e(r)} ({e(_SHORT.get(r, r))})</dt><dd>{e(m)}</dd>" for r, m in RULES.items())
    body = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'><title>hflite data quality</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Data quality</h1><p>Store <code>{e(report.root)}</code>{when}: {len(report.partitions)} "
        f"partitions, {'all OK' if report.ok else 'some need a look'}.</p>",
        "<h2>Summary</h2>",
        *_html_summary(report),
        "<p><span class='error'>red</span>: rows quarantined by this check; <span class='warning'>amber"
        "</span>: look at it (rows quarantined at ingest included); <span class='info'>grey</span>: "
        "informational; blank: rule not applied to this kind; age: sessions or bars (days for macro "
        "series) since the last bar at the report's time.</p>",
        "<h2>Rules</h2><dl>",
        legend,
        "</dl>",
        *_html_details(report),
        "</body></html>",
    ]
    out.write_text("\n".join(body) + "\n", encoding="utf-8")
    return out


__all__ = [
    "DAILY_MOVE_THRESHOLD",
    "LEVEL_SHIFT_FACTOR",
    "QUARANTINE_COLUMNS",
    "QUARANTINE_RULES",
    "RULES",
    "SERIES_SPECS",
    "Issue",
    "PartitionQuality",
    "QualityReport",
    "SeriesSpec",
    "Validation",
    "bar_age",
    "check_store",
    "default_stale_after",
    "freq_delta",
    "generic_instrument",
    "listed_splits",
    "quarantine",
    "read_quarantine",
    "render_quality_table",
    "rule_legend",
    "validate_bars",
    "validate_series",
    "write_quality_html",
]
