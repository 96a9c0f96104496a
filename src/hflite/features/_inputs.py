"""FeatureInputs: bars, macro and scored headlines, each stamped with the time it became known."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hflite.data.store import known_at
from hflite.domain.instrument import Calendar, Instrument, instrument_for
from hflite.features._config import FeatureConfig
from hflite.features._numeric import utc_index
from hflite.features._spec import MACRO_SERIES

BAR_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
#: Bars per year by calendar, to annualise volatility: sessions for exchanges and FX, days for crypto.
BARS_PER_YEAR: dict[Calendar, float] = {Calendar.XNYS: 252.0, Calendar.FX: 252.0, Calendar.ALWAYS: 365.0}


@dataclass(frozen=True)
class FeatureInputs:
    """What :func:`compute_features` reads. Every time is when the value became known (UTC):

    - ``bars[sym]``: columns ts (the bar's availability, i.e. its close), open, high, low, close,
      volume; strictly increasing ts. Needed for each of ``symbols``; the market symbol and the
      breadth universe are read from here too when present.
    - ``bars_per_year[sym]``: to annualise volatility (252, or 365 for crypto; 252 if absent).
    - ``macro[series_id]``: columns date (observation), known, value; a series absent gives NaN.
    - ``news``: columns ts, tickers (comma-joined, "" = market-wide), score in [-1, 1]; None = no news.
    """

    symbols: tuple[str, ...]
    bars: Mapping[str, pd.DataFrame]
    bars_per_year: Mapping[str, float] = field(default_factory=dict)
    macro: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    news: pd.DataFrame | None = None
    notes: tuple[str, ...] = ()


def bars_per_year(instrument: Instrument) -> float:
    """Daily bars per year of an instrument's calendar (252 sessions; 365 days for crypto)."""
    return BARS_PER_YEAR[instrument.calendar]


def prepare_inputs(
    bars: Mapping[str, pd.DataFrame],
    macro: Mapping[str, pd.DataFrame],
    news: pd.DataFrame | None,
    symbols: Sequence[str],
    *,
    instruments: Mapping[str, Instrument] | None = None,
) -> FeatureInputs:
    """FeatureInputs from store frames (pure): daily bars (ts = session date) get their availability
    time from the instrument's calendar, macro observations their publication time (``known_at``;
    USREC is refused as it is not point-in-time), headlines (ts, tickers, score) are kept as stamped.
    """
    from hflite.engine.market import available_at  # lazily: the engine imports strategies

    extra = dict(instruments or {})
    stamped: dict[str, pd.DataFrame] = {}
    per_year: dict[str, float] = {}
    notes: list[str] = []
    for sym, frame in bars.items():
        inst = instrument_for(sym, extra)
        avail, found = available_at(inst, "1d", pd.DatetimeIndex(frame["ts"]))
        notes.extend(found)
        out = pd.DataFrame({"ts": utc_index(avail)})
        for name in BAR_FIELDS:
            out[name] = frame[name].to_numpy(dtype=np.float64)
        stamped[sym] = out
        per_year[sym] = bars_per_year(inst)
    series: dict[str, pd.DataFrame] = {}
    for sid, frame in macro.items():
        dates = pd.DatetimeIndex(frame["date"])
        series[sid] = pd.DataFrame(
            {"date": dates, "known": known_at(sid, dates), "value": frame["value"].to_numpy(np.float64)}
        )
    scored = None
    if news is not None:
        scored = pd.DataFrame(
            {
                "ts": pd.DatetimeIndex(news["ts"]).tz_convert("UTC"),
                "tickers": news["tickers"].astype(str).to_numpy(dtype=object),
                "score": news["score"].to_numpy(dtype=np.float64),
            }
        )
    return FeatureInputs(tuple(symbols), stamped, per_year, series, scored, tuple(notes))


def input_warnings(inputs: FeatureInputs, config: FeatureConfig) -> list[str]:
    """What the inputs lack, and which columns are NaN because of it."""
    out: list[str] = []
    if config.market_symbol not in inputs.bars:
        out.append(f"no bars for the market symbol {config.market_symbol}: spy_trend, spy_ret_21 are NaN")
    missing = [s for s in config.breadth_symbols if s not in inputs.bars]
    if len(missing) == len(config.breadth_symbols):
        out.append("no bars for any breadth symbol: breadth is NaN")
    elif missing:
        out.append(f"breadth leaves out {len(missing)} symbols without bars: {', '.join(missing)}")
    for sid, cols in MACRO_SERIES.items():
        if sid not in inputs.macro or inputs.macro[sid].empty:
            out.append(f"no observations of macro series {sid}: {', '.join(cols)} NaN")
    if inputs.news is None:
        out.append("no news: the sentiment columns are NaN")
    return out
