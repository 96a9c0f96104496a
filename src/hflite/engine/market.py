"""Market data as the engine sees it: per-symbol arrays stamped with the time each bar became
known (its close), merged onto one timeline.

Availability times: a daily US equity bar is known at that session's NYSE close (16:00 New York,
13:00 on early-close days, from ``exchange_calendars``); a daily crypto bar (a UTC day) at 00:00 UTC
the next day; a daily FX bar at 17:00 New York (the FX day's end); an intraday bar at its open
time plus its length.
"""

from __future__ import annotations

import warnings
from contextlib import suppress
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hflite.domain.instrument import Calendar, Instrument, fx_pair_for
from hflite.strategy.base import BarArrays

if TYPE_CHECKING:
    import pandas as pd

FREQ_NS = {"1m": 60 * 10**9, "1h": 3600 * 10**9, "1d": 86400 * 10**9}
NS_PER_DAY = 86_400_000_000_000


def ns(idx: pd.DatetimeIndex) -> np.ndarray:
    """Int64 nanoseconds since the epoch, whatever the index's own resolution (pandas 3 varies)."""
    import pandas as pd

    return pd.DatetimeIndex(idx).as_unit("ns").asi8.copy()


def ts_ns(t: pd.Timestamp) -> int:
    import pandas as pd

    return int(pd.Timestamp(t).as_unit("ns").value)


_NYSE_SPAN = ("1995-01-03", "2030-12-31")
#: Bump when the layout of the cached calendar file changes.
_NYSE_CACHE_FORMAT = 1


def _nyse_cache_path() -> Path | None:
    """Where the NYSE calendar is cached: the user cache dir, keyed by exchange_calendars' version,
    pandas' version and the span (None when the version cannot be read: no cache then)."""
    import os
    from importlib.metadata import PackageNotFoundError, version

    try:
        xcals_version = version("exchange-calendars")
        pandas_version = version("pandas")
    except PackageNotFoundError:
        return None
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = (
        f"xnys-{_NYSE_SPAN[0]}-{_NYSE_SPAN[1]}-xcals{xcals_version}-pandas{pandas_version}"
        f"-v{_NYSE_CACHE_FORMAT}.npz"
    )
    return Path(root) / "hflite" / name


@lru_cache(maxsize=1)
def _nyse_closes() -> pd.Series:
    """Each NYSE session's close (UTC) by session date, 1995-2030. exchange_calendars takes ~0.15 s
    to import and build it, so it is cached on disk (see ``_nyse_cache_path``); a missing, corrupt
    or unreadable cache file is recomputed, and a cache dir that cannot be written is skipped."""
    path = _nyse_cache_path()
    if path is not None:
        # missing, corrupt, truncated or from another layout: recomputed below
        with suppress(Exception):
            return _load_nyse_closes(path)
    closes = _compute_nyse_closes()
    if path is not None:
        with suppress(Exception):  # a read-only or full cache dir never fails a run
            _save_nyse_closes(path, closes)
    return closes


def _load_nyse_closes(path: Path) -> pd.Series:
    import pandas as pd

    with np.load(path, allow_pickle=False) as z:
        sessions = np.asarray(z["sessions"], dtype=np.int64)
        close = np.asarray(z["close"], dtype=np.int64)
        holidays = np.asarray(z["holidays"], dtype=np.int64)
        weekmask = str(z["weekmask"])
    if sessions.ndim != 1 or sessions.shape != close.shape or len(sessions) < 2:
        raise ValueError("malformed NYSE calendar cache")
    if not bool((sessions[1:] > sessions[:-1]).all()):
        raise ValueError("malformed NYSE calendar cache")
    # the session index's frequency, equal to exchange_calendars' ``cal.day``: the same holidays
    # (as given, duplicates included) and the numpy business-day calendar pandas would build from
    # them (passed in: pandas' own conversion of 2,300 dates takes ~7 ms)
    days = holidays.view("M8[D]")
    day = pd.offsets.CustomBusinessDay(
        holidays=tuple(days), calendar=np.busdaycalendar(holidays=days, weekmask=weekmask), weekmask=weekmask
    )
    index = pd.DatetimeIndex(sessions.view("M8[ns]"))._with_freq(day).tz_localize("UTC")
    values = pd.DatetimeIndex(close.view("M8[ns]")).tz_localize("UTC")
    return pd.Series(values, index=index, name="close")


def _save_nyse_closes(path: Path, closes: pd.Series) -> None:
    import os
    import tempfile

    import pandas as pd

    day = closes.index.freq
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                sessions=closes.index.tz_localize(None).as_unit("ns").asi8,
                close=pd.DatetimeIndex(closes).as_unit("ns").asi8,
                holidays=np.array(day.holidays, dtype="M8[D]").view(np.int64),
                weekmask=np.array(day.weekmask),
            )
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _compute_nyse_closes() -> pd.Series:
    import exchange_calendars as xcals
    import pandas as pd

    with warnings.catch_warnings():
        # exchange_calendars uses Series.values on tz-aware data, which pandas 3.1 deprecates;
        # the warning is about the library's internals, not about our data
        warnings.simplefilter("ignore")
        cal = xcals.get_calendar("XNYS", start=_NYSE_SPAN[0], end=_NYSE_SPAN[1])
    closes = cal.schedule["close"]
    closes.index = (
        pd.DatetimeIndex(closes.index).tz_localize("UTC")
        if closes.index.tz is None
        else closes.index.tz_convert("UTC")
    )
    return closes


def nyse_sessions(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    closes = _nyse_closes()
    return closes.index[(closes.index >= start) & (closes.index <= end)]


def available_at(instrument: Instrument, freq: str, ts: pd.DatetimeIndex) -> tuple[np.ndarray, list[str]]:
    """Int64 ns UTC times at which each bar became known, and notes on rows off the calendar."""
    import pandas as pd

    notes: list[str] = []
    if freq != "1d":
        return ns(ts + pd.Timedelta(FREQ_NS[freq], "ns")), notes
    if instrument.calendar is Calendar.XNYS:
        if str(getattr(ts, "tz", None)) == "UTC":
            return _nyse_available_at(instrument, ts, notes)
        closes = _nyse_closes()
        mapped = closes.reindex(ts)
        off = mapped.isna()
        if off.any():
            mapped[off] = _off_nyse(instrument, ts, off.to_numpy(), notes)
        return ns(pd.DatetimeIndex(mapped)), notes
    if instrument.calendar is Calendar.ALWAYS:
        return ns(ts + pd.Timedelta(days=1)), notes
    ny = (ts.tz_localize(None) + pd.Timedelta(hours=17)).tz_localize("America/New_York")
    return ns(ny.tz_convert("UTC")), notes


def _nyse_available_at(
    instrument: Instrument, ts: pd.DatetimeIndex, notes: list[str]
) -> tuple[np.ndarray, list[str]]:
    """``available_at`` of a UTC daily index on the NYSE calendar, in numpy: each session's close,
    16:00 New York on a day that is not a session (noted)."""
    import pandas as pd

    closes = _nyse_closes()
    sessions = closes.index.as_unit("ns").asi8
    close_ns = pd.DatetimeIndex(closes).as_unit("ns").asi8
    t = ns(ts)
    pos = np.searchsorted(sessions, t)
    np.minimum(pos, len(sessions) - 1, out=pos)
    on = sessions[pos] == t
    out = close_ns[pos]
    if not on.all():
        off = ~on
        out[off] = ns(_off_nyse(instrument, ts, off, notes))
    return out, notes


def _off_nyse(
    instrument: Instrument, ts: pd.DatetimeIndex, off: np.ndarray, notes: list[str]
) -> pd.DatetimeIndex:
    """Daily bars on days that are not NYSE sessions: stamped at 16:00 New York, and noted."""
    import pandas as pd

    notes.append(
        f"{instrument.symbol}: {int(off.sum())} bars on non-NYSE days "
        f"(first {ts[off][0].date()}) stamped at 16:00 New York"
    )
    local = ts[off].tz_localize(None) + pd.Timedelta(hours=16)
    return local.tz_localize("America/New_York").tz_convert("UTC")


def calendar_gaps(instrument: Instrument, freq: str, ts: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Bars the instrument's calendar expects between the first and last bar but the data lacks."""
    import pandas as pd

    if len(ts) < 2:
        return pd.DatetimeIndex([], tz="UTC")
    if freq == "1d":
        if instrument.calendar is Calendar.XNYS:
            expected = nyse_sessions(ts[0], ts[-1])
        elif instrument.calendar is Calendar.ALWAYS:
            expected = pd.date_range(ts[0], ts[-1], freq="D")
        else:
            expected = pd.bdate_range(ts[0], ts[-1], tz="UTC")
    elif instrument.calendar is Calendar.ALWAYS:
        expected = pd.date_range(ts[0], ts[-1], freq=pd.Timedelta(FREQ_NS[freq], "ns"))
    else:
        return pd.DatetimeIndex([], tz="UTC")  # intraday session calendars: not checked here
    return expected.difference(ts)


@dataclass
class SymbolBars:
    """One symbol's bars; ``tl[k]`` is bar k's timeline index (-1 for warm-up bars before start)."""

    instrument: Instrument
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    tl: np.ndarray
    n: int = 0

    def arrays(self, n: int | None = None) -> BarArrays:
        m = self.n if n is None else n
        return BarArrays(
            self.open[:m],
            self.high[:m],
            self.low[:m],
            self.close[:m],
            self.volume[:m],
            self.ts[:m],
            self.instrument.symbol,
        )

    @property
    def first_live(self) -> int:
        live = np.flatnonzero(self.tl[: self.n] >= 0)
        return int(live[0]) if len(live) else self.n


@dataclass
class MarketData:
    """All bars of a run on one timeline. ``close_tl`` and ``fx_tl`` hold, per timeline index, the
    last known close of each symbol and the USD value of one unit of each currency."""

    timeline: np.ndarray
    bars: dict[str, SymbolBars]
    traded: list[str]
    slots: np.ndarray  # [T, len(traded)] int64: k of each traded symbol's bar at i, or -1
    close_tl: dict[str, np.ndarray]
    fx_tl: dict[str, np.ndarray]
    warnings: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.timeline)

    def group(self, i: int) -> list[tuple[str, int]]:
        """(symbol, k) of every traded symbol with a bar at timeline index i."""
        if len(self.traded) == 1:
            k = self.slots.item(i, 0)
            return [(self.traded[0], k)] if k >= 0 else []
        return [(sym, k) for sym, k in zip(self.traded, self.slots[i].tolist(), strict=True) if k >= 0]


def fx_currencies(instruments: list[Instrument], base: str = "USD") -> dict[str, tuple[str, bool]]:
    """Currency -> (FX symbol, invert) for every quote currency that needs converting."""
    out: dict[str, tuple[str, bool]] = {}
    for inst in instruments:
        pair = fx_pair_for(inst.currency, base)
        if pair is not None:
            out[inst.currency] = pair
        if inst.base_currency and inst.asset_class.value == "fx":
            pair = fx_pair_for(inst.base_currency, base)
            if pair is not None and inst.base_currency not in out:
                out[inst.base_currency] = pair
    return out


def build_market(
    frames: dict[str, pd.DataFrame],
    instruments: dict[str, Instrument],
    traded: list[str],
    freq: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    versions: dict[str, str] | None = None,
) -> MarketData:
    """Assemble MarketData from store frames (``ts`` = session date or bar open, UTC).

    Frames may start before ``start`` (warm-up history); bars available after ``end`` are dropped.
    Rows with NaN or non-positive prices are dropped with a warning naming them.
    """
    import pandas as pd

    warnings: list[str] = []
    prepared: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}
    end_ns = ts_ns(end + pd.Timedelta(days=1)) if freq == "1d" else ts_ns(end)
    for sym, df in frames.items():
        inst = instruments[sym]
        df = _drop_bad_rows(sym, df, warnings)
        idx = pd.DatetimeIndex(df["ts"])
        avail, notes = available_at(inst, freq, idx)
        warnings.extend(notes)
        keep = (avail <= end_ns) if freq != "1d" else (ns(idx) <= ts_ns(end))
        if not keep.all():
            df, avail = df[keep], avail[keep]
        live = pd.DatetimeIndex(df["ts"]) >= start
        gaps = calendar_gaps(inst, freq, pd.DatetimeIndex(df["ts"][live]))
        if len(gaps) and sym in traded:
            shown = ", ".join(str(g.date() if freq == "1d" else g) for g in gaps[:5])
            more = f" and {len(gaps) - 5} more" if len(gaps) > 5 else ""
            warnings.append(
                f"{sym}: {len(gaps)} missing bars vs the {inst.calendar.value} calendar "
                f"({shown}{more}); the symbol is skipped on those dates"
            )
        prepared[sym] = (df, avail)

    columns = {
        sym: (
            {
                c: df[c].to_numpy(dtype=np.float64, copy=True)
                for c in ("open", "high", "low", "close", "volume")
            },
            avail,
            np.asarray(pd.DatetimeIndex(df["ts"]) >= start),
        )
        for sym, (df, avail) in prepared.items()
    }
    return assemble(columns, instruments, traded, warnings, versions)


def market_from_arrays(
    arrays: dict[str, dict[str, np.ndarray]],
    instruments: dict[str, Instrument],
    traded: list[str],
    start_ns: int = 0,
) -> MarketData:
    """MarketData from numpy arrays, without pandas (feeds, research, benchmarks).

    ``arrays[sym]`` holds ``ts`` (int64 ns UTC, when each bar became known: its close), ``open``,
    ``high``, ``low``, ``close`` and ``volume``. Bars before ``start_ns`` are warm-up history.
    Refuses unsorted times and NaN or non-positive prices rather than guessing.
    """
    columns = {}
    for sym, a in arrays.items():
        ts = np.asarray(a["ts"], dtype=np.int64)
        if len(ts) > 1 and not (np.diff(ts) > 0).all():
            raise ValueError(f"{sym}: bar times must be strictly increasing")
        cols = {c: np.asarray(a[c], dtype=np.float64) for c in ("open", "high", "low", "close", "volume")}
        if not all(bool((cols[c] > 0).all()) for c in ("open", "high", "low", "close")):  # also NaN
            raise ValueError(f"{sym}: NaN or non-positive prices")
        columns[sym] = (cols, ts, ts >= start_ns)
    return assemble(columns, instruments, traded, [], None)


def assemble(
    columns: dict[str, tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]],
    instruments: dict[str, Instrument],
    traded: list[str],
    warnings: list[str],
    versions: dict[str, str] | None,
) -> MarketData:
    """Merge per-symbol arrays (columns, availability ns, live mask) onto one timeline."""
    timeline = _sorted_unique([columns[s][1][columns[s][2]] for s in traded])
    T = len(timeline)
    bars: dict[str, SymbolBars] = {}
    slots = np.full((T, len(traded)), -1, dtype=np.int64)
    close_tl: dict[str, np.ndarray] = {}
    for sym, (arr, avail, live) in columns.items():
        tl = np.full(len(avail), -1, dtype=np.int64)
        live_avail = avail[live]
        same = len(live_avail) == T and (
            T == 0
            or (
                live_avail[0] == timeline[0]
                and live_avail[-1] == timeline[-1]
                and np.array_equal(live_avail, timeline)
            )
        )
        tl[live] = np.arange(T) if same else np.searchsorted(timeline, live_avail)
        bars[sym] = SymbolBars(
            instruments[sym],
            avail,
            arr["open"],
            arr["high"],
            arr["low"],
            arr["close"],
            arr["volume"],
            tl,
            n=len(avail),
        )
        if sym in traded:
            if same and live.all():  # bar k at timeline index k
                slots[:, traded.index(sym)] = np.arange(T)
            else:
                slots[tl[live], traded.index(sym)] = np.flatnonzero(live)
        # last close known at each timeline time (as-of, including warm-up history)
        if same and live.all():
            close_tl[sym] = arr["close"]  # this symbol alone makes the timeline
        else:
            pos = np.searchsorted(avail, timeline, side="right") - 1
            close_tl[sym] = np.where(pos >= 0, arr["close"][np.maximum(pos, 0)], np.nan)
    fx_tl = {"USD": np.ones(T)}
    for ccy, (pair, invert) in fx_currencies([instruments[s] for s in traded]).items():
        if pair not in close_tl:
            raise ValueError(f"no {pair} data to convert {ccy} to USD: add {pair} to the data store")
        rate = close_tl[pair]
        if T and np.isnan(rate[0]):
            raise ValueError(f"{pair} data starts after the run's start: cannot value {ccy} positions")
        fx_tl[ccy] = 1.0 / rate if invert else rate.copy()
    return MarketData(timeline, bars, list(traded), slots, close_tl, fx_tl, warnings, dict(versions or {}))


def _sorted_unique(arrays: list[np.ndarray]) -> np.ndarray:
    """Sorted distinct values (np.unique hashes, which is slow on a million timestamps)."""
    if not arrays:
        return np.empty(0, np.int64)
    if len(arrays) == 1 and (len(arrays[0]) < 2 or bool((arrays[0][1:] > arrays[0][:-1]).all())):
        return arrays[0].copy()  # one strictly increasing series: already its own timeline
    t = np.sort(np.concatenate(arrays), kind="stable")
    if len(t) == 0:
        return t
    keep = np.empty(len(t), dtype=bool)
    keep[0] = True
    np.not_equal(t[1:], t[:-1], out=keep[1:])
    return t[keep]


def _drop_bad_rows(sym: str, df: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    import pandas as pd

    bad = _bad_rows(df)
    if bad is None:  # not plain float64 columns: the same test in pandas
        prices = df[["open", "high", "low", "close"]]
        bad = prices.isna().any(axis=1) | (prices <= 0).any(axis=1) | df["volume"].isna()
        bad = bad.to_numpy(dtype=bool)
    if bad.any():
        first = pd.Timestamp(df["ts"].iloc[int(np.flatnonzero(bad)[0])])
        warnings.append(
            f"{sym}: dropped {int(bad.sum())} bars with NaN or non-positive prices "
            f"(first {first}); the symbol is skipped on those dates"
        )
        df = df[~bad]
    return df.reset_index(drop=True)


def _bad_rows(df: pd.DataFrame) -> np.ndarray | None:
    """Rows with a NaN or non-positive price or a NaN volume, in numpy (None unless every column
    is plain float64: other dtypes take the pandas path)."""
    cols = [df[c] for c in ("open", "high", "low", "close", "volume")]
    if any(c.dtype != np.float64 for c in cols):
        return None
    o, h, lo, c, v = (col.to_numpy() for col in cols)
    ok = o > 0  # False for NaN too
    ok &= h > 0
    ok &= lo > 0
    ok &= c > 0
    ok &= v == v  # not NaN
    return ~ok
