"""Calendar periods of the loss limits: the day, Monday-to-Sunday week and month of a time in a zone.

Keys are integers that change exactly when the period changes: the local date's proleptic
ordinal (day), the ordinal of that week's Monday (week) and ``year * 12 + month - 1`` (month).
``period_keys`` is the definition (one time). ``PeriodKeys.of`` gives the same numbers for an
array of times at once: per UTC day that holds a time, it looks the zone's offset up at the day's
first and last second (and, when they differ, finds the transition by bisection: the tz database
never has two transitions within 4 days of each other); the local date then changes only at the
local midnights and transitions, so the keys are runs between those instants.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

NS = 1_000_000_000
DAY_S = 86_400
EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal()
EPOCH_MONTH = 1970 * 12


def period_keys(ts: int, tz: ZoneInfo) -> tuple[int, int, int]:
    """(day, week, month) keys of one time (ns UTC) in ``tz``."""
    # whole seconds, floored: ``ts / 1e9`` rounds a point just before midnight into the next day
    d = datetime.fromtimestamp(ts // NS, UTC).astimezone(tz).date()
    day = d.toordinal()
    return day, day - d.weekday(), d.year * 12 + d.month - 1


class PeriodKeys:
    """Vectorised ``period_keys`` for one zone."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz

    def _offset(self, s: int) -> int:
        """The zone's UTC offset (seconds) at UTC second ``s``."""
        off = datetime.fromtimestamp(s, self.tz).utcoffset()
        return int(off.total_seconds()) if off is not None else 0

    def _changes(self, days: list[int]) -> tuple[list[int], list[int]]:
        """The UTC seconds, within the given UTC days, at which the local date may change (each
        day's start, local midnights, transitions), with the local day number (since 1970) from
        each on."""
        at: list[int] = []
        local: list[int] = []
        for u in days:
            lo, end = u * DAY_S, (u + 1) * DAY_S
            o = self._offset(lo)
            o_end = self._offset(end - 1)
            pieces = [(lo, end, o)]
            if o_end != o:  # one transition inside the day: find its first second
                a, b = lo, end - 1  # offset(a) == o, offset(b) != o
                while b - a > 1:
                    mid = (a + b) // 2
                    if self._offset(mid) == o:
                        a = mid
                    else:
                        b = mid
                pieces = [(lo, b, o), (b, end, self._offset(b))]
            for start, stop, off in pieces:
                at.append(start)
                local.append((start + off) // DAY_S)
                midnight = start + (-(start + off)) % DAY_S  # the first local midnight at or after start
                if start < midnight < stop:
                    at.append(midnight)
                    local.append((midnight + off) // DAY_S)
        return at, local

    def of(self, ts: np.ndarray) -> np.ndarray:
        """Int64 keys of times ``ts`` (ns UTC): rows day, week, month (as ``period_keys``)."""
        ts = np.asarray(ts, dtype=np.int64)
        n = len(ts)
        out = np.empty((3, n), dtype=np.int64)
        if n == 0:
            return out
        ordered = n == 1 or bool((ts[1:] >= ts[:-1]).all())
        if ordered:
            first, last = int(ts[0]) // NS // DAY_S, int(ts[-1]) // NS // DAY_S
            bounds = np.arange(first, last + 2, dtype=np.int64) * (DAY_S * NS)
            pos = np.searchsorted(ts, bounds)
            days = (np.flatnonzero(pos[1:] > pos[:-1]) + first).tolist()
        else:
            days = np.unique(ts // NS // DAY_S).tolist()
        at, local = self._changes(days)
        change_ns = np.array(at, dtype=np.int64) * NS
        keys = np.empty((3, len(local)), dtype=np.int64)
        d = np.array(local, dtype=np.int64)
        keys[0] = d + EPOCH_ORDINAL
        keys[1] = keys[0] - (d + 3) % 7  # 1970-01-01 was a Thursday (weekday 3)
        keys[2] = d.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) + EPOCH_MONTH
        if ordered:
            starts = np.searchsorted(ts, change_ns)
            counts = np.diff(np.append(starts, n))
            out[:] = np.repeat(keys, counts, axis=1)
        else:
            out[:] = keys[:, np.searchsorted(change_ns, ts, side="right") - 1]
        return out
