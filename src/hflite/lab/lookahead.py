"""Look-ahead and recursive analysis of any strategy (the idea of freqtrade's ``lookahead-analysis``
and ``recursive-analysis``), on the market data of a prepared run.

Look-ahead: a backtest computes each symbol's signals once over the whole history, while a live
runtime only ever has the bars up to now. A strategy whose output at bar k changes when the bars after
k are cut off (a centred window, a ``shift(-1)``, a full-sample normalisation, a label leaked into a
feature) looks ahead, and its backtest is not a result. For a sample of bars k of every traded symbol,
the signals are recomputed on the history truncated at k (``BarArrays.head(k + 1)``) and bar k's
target, ATR, size and every named indicator value are compared with the full-history run; any
difference is a mismatch, reported with the bar, its time and both values.

Recursive: indicators with memory (EMA, RSI, ATR: Wilder's smoothing) depend on how much history
precedes a bar, so the same bar's value differs between a backtest that loaded 2,000 bars and a live
runtime that loaded 200. The signals are recomputed on histories that start later (the first bars
dropped, so only ``startup`` bars precede the last ``window`` bars) and the relative difference of
every indicator over that window is reported per startup length, with the startup length from which
it stays under ``tolerance`` (0.1%): how much warm-up the indicators really need, against the
strategy's declared ``warmup()``.

Cross-sectional strategies: a strategy with an ``attach_market(md)`` hook (one that reads other
symbols) gets, before each truncated run, a view of the whole market cut at bar k's time (every
symbol's bars, the timeline and the as-of closes end there), so reading another symbol's future is
caught too; in the recursive analysis every symbol's history starts at the same later time. The
full market is attached again at the end. Strategies that read data the market view
does not hold (the ``ai_ensemble`` strategy reads the brain's decisions, which are point-in-time by
their own construction) are checked only as far as their bars go: the note in the result says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from html import escape
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hflite import logs
from hflite.engine.market import MarketData
from hflite.strategy.base import BarArrays, SignalSet, Strategy
from hflite.tables import Col

_log = logs.get("hflite.lab.lookahead")
Progress = Callable[[str, float], None]

#: Values equal within this relative (and absolute) tolerance are the same value (float noise of the
#: same computation on a shorter array; TA-Lib gives bit-identical results in practice).
_RTOL = 1e-9
_ATOL = 1e-12
_MAX_MISMATCH_ROWS = 50


class LookaheadConfig(BaseModel):
    """How much to check: evenly spaced live bars plus signal bars per symbol (capped), and the
    startup lengths of the recursive analysis."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    checks: int = Field(100, ge=1, le=100_000, description="evenly spaced live bars checked per symbol")
    max_checks: int = Field(200, ge=1, le=100_000, description="cap on all checks per symbol")
    startups: tuple[int, ...] = Field(
        (0, 50, 100, 200, 300, 500, 1000), description="bars of history before the recursive window"
    )
    window: int = Field(10, ge=1, le=10_000, description="last bars compared by the recursive analysis")
    tolerance: float = Field(0.001, gt=0, lt=1, description="relative difference counted as converged")

    @field_validator("startups")
    @classmethod
    def _sorted_startups(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(s < 0 for s in v):
            raise ValueError("startups must be a non-empty list of bar counts >= 0")
        return tuple(sorted(set(v)))


@dataclass(frozen=True)
class Mismatch:
    """One output at one bar that differs between the full and the truncated history."""

    symbol: str
    bar: int  # index into the symbol's bars (warm-up history included)
    ts: pd.Timestamp  # when bar k became known (UTC)
    output: str  # "target", "atr", "size" or "value:<name>" (NaN: the output is missing on that side)
    full: float
    truncated: float


@dataclass(frozen=True)
class StartupDiff:
    """Recursive analysis: how far ``indicator`` over the last ``window`` bars of ``symbol`` moves when
    only ``startup`` bars precede the window (``dropped`` bars cut from the start)."""

    symbol: str
    indicator: str
    startup: int
    dropped: int
    rel_diff: float  # max |short - full| / |full| over the window; inf: undefined on the short history


@dataclass(frozen=True)
class LookaheadResult:
    """Outcome of :func:`lookahead_analysis`. ``leaks`` is the verdict: any mismatch means the
    strategy's backtest used data a live run would not have had."""

    title: ClassVar[str] = "Look-ahead and warm-up"
    cols: ClassVar[tuple[Col, ...]] = (
        Col("symbol", "id"),
        Col("bars", "count"),
        Col("checks", "count"),
        Col("mismatches", "count"),
        Col("first mismatch", "text"),
    )

    strategy: str
    warmup: int
    bars: dict[str, int]
    checks: dict[str, int]
    mismatches: tuple[Mismatch, ...]
    recursive: tuple[StartupDiff, ...]
    startups: tuple[int, ...]
    window: int
    tolerance: float
    cross_sectional: bool
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def leaks(self) -> bool:
        return bool(self.mismatches) or bool(self.errors)

    @property
    def total_checks(self) -> int:
        return sum(self.checks.values())

    def needed_startup(self) -> dict[str, int | None]:
        """Per indicator: the smallest startup length from which it (and every longer one) stays within
        ``tolerance`` on every symbol; None when even the longest startup tried is not enough."""
        return needed_startups(self.recursive, self.tolerance)

    def warmup_warnings(self) -> list[str]:
        """Indicators that need more history than the strategy's declared warm-up."""
        out = []
        for name, need in self.needed_startup().items():
            if need is None:
                longest = max(self.startups)
                out.append(
                    f"{name}: still more than {self.tolerance:.1%} off after {longest} bars of history; "
                    f"the strategy declares a warm-up of {self.warmup} bars"
                )
            elif need > self.warmup:
                shorter = [s for s in self.startups if s < need]
                between = f" (not with {shorter[-1]})" if shorter else ""
                out.append(
                    f"{name}: within {self.tolerance:.1%} only with {need} or more bars of history"
                    f"{between}; the strategy declares a warm-up of {self.warmup} bars, so its values "
                    f"(and signals) early in a run depend on how much history preceded the start"
                )
        return out

    def verdict(self) -> str:
        """One sentence: look-ahead found (where), the strategy failing on shorter histories, or clean."""
        if self.mismatches:
            bars = len({(m.symbol, m.bar) for m in self.mismatches})
            syms = sorted({m.symbol for m in self.mismatches})
            raised = f"; and it raised on {len(self.errors)} shorter histories" if self.errors else ""
            return (
                f"LOOK-AHEAD: at {bars} of {self.total_checks} checked bars ({', '.join(syms)}) the strategy "
                f"says something else when the history is cut at that bar ({len(self.mismatches)} outputs "
                f"differ){raised}; the backtest is not a result until this is fixed"
            )
        if self.errors:
            return (
                f"NOT VERIFIED: the strategy raised on {len(self.errors)} of {self.total_checks} histories "
                f"cut at a checked bar (a live runtime has only those); the other bars agree"
            )
        return (
            f"No look-ahead found: {self.total_checks} bars checked over {len(self.checks)} symbols, every "
            f"target, ATR, size and indicator value equal on the truncated history"
        )

    def tables(self) -> list[tuple[str, tuple[Col, ...], list[dict[str, Any]]]]:
        """The per-symbol checks and the warm-up table (worst symbol per indicator and startup) as
        (title, columns, rows), for ``hflite.tables.print_table``."""
        need = self.needed_startup()
        worst: dict[str, dict[int, float]] = {}
        for r in self.recursive:
            per = worst.setdefault(r.indicator, {})
            per[r.startup] = max(per.get(r.startup, 0.0), r.rel_diff)
        startup_cols = tuple(Col(f"{s} bars %", "number", digits=4) for s in self.startups)
        cols = (Col("indicator", "id"), Col("needs", "text"), *startup_cols)
        rows = [
            {
                "indicator": name,
                "needs": _need_text(need.get(name)),
                **{
                    c.name: _pct(per.get(s, math.nan))
                    for c, s in zip(startup_cols, self.startups, strict=True)
                },
            }
            for name, per in worst.items()
        ]
        return [
            ("look-ahead", self.cols, self.rows()),
            (f"warm-up (declared {self.warmup} bars)", cols, rows),
        ]

    def rows(self) -> list[dict[str, Any]]:
        """One row per symbol (see ``cols``) for a terminal table."""
        first: dict[str, Mismatch] = {}
        counts: dict[str, int] = {}
        for m in self.mismatches:
            first.setdefault(m.symbol, m)
            counts[m.symbol] = counts.get(m.symbol, 0) + 1
        return [
            {
                "symbol": sym,
                "bars": self.bars[sym],
                "checks": self.checks[sym],
                "mismatches": counts.get(sym, 0),
                "first mismatch": _describe(first[sym]) if sym in first else "",
            }
            for sym in self.checks
        ]

    def summary(self) -> dict[str, Any]:
        """Headline numbers (JSON-safe) for metrics files and the terminal."""
        return {
            "strategy": self.strategy,
            "leaks": self.leaks,
            "checks": self.total_checks,
            "mismatches": len(self.mismatches),
            "errors": len(self.errors),
            "symbols": len(self.checks),
            "warmup": self.warmup,
            "needed_startup": self.needed_startup(),
            "cross_sectional": self.cross_sectional,
            "seconds": round(self.seconds, 3),
        }

    def mismatch_frame(self) -> pd.DataFrame:
        cols = ["symbol", "bar", "ts", "output", "full", "truncated"]
        return pd.DataFrame([[getattr(m, c) for c in cols] for m in self.mismatches], columns=cols)

    def recursive_frame(self) -> pd.DataFrame:
        cols = ["symbol", "indicator", "startup", "dropped", "rel_diff"]
        return pd.DataFrame([[getattr(d, c) for c in cols] for d in self.recursive], columns=cols)

    def html(self) -> str:
        """The section's inner HTML (the caller wraps it in its ``<section>`` titled ``title``)."""
        return _html(self)


# ------------------------------------------------------------------------------------------ sampling


def sample_bars(target: np.ndarray, first_live: int, checks: int, max_checks: int) -> np.ndarray:
    """Bars to check: up to ``checks`` evenly spaced live bars (the last included) plus the live bars
    with a target (evenly thinned so that the total stays within ``max_checks``)."""
    n = len(target)
    if first_live >= n:
        return np.empty(0, dtype=np.intp)
    n_spaced = min(checks, max_checks, n - first_live)
    spaced = np.unique(np.linspace(first_live, n - 1, n_spaced).round().astype(np.intp))
    events = first_live + np.flatnonzero(~np.isnan(target[first_live:]))
    room = max_checks - len(spaced)
    events = np.setdiff1d(events, spaced)
    if len(events) > room:
        events = events[np.unique(np.linspace(0, len(events) - 1, max(room, 0)).round().astype(np.intp))]
    return np.union1d(spaced, events[:room] if room > 0 else events[:0]).astype(np.intp)


# ------------------------------------------------------------------------------------ market views


def market_view(md: MarketData, t_ns: int, since_ns: int | None = None) -> MarketData:
    """The market as a live runtime knew it at ``t_ns``: every symbol's bars, the timeline, the slots
    and the as-of closes and FX rates cut after the last point at or before ``t_ns`` (views, not
    copies). With ``since_ns``, also as a runtime that loaded nothing before ``since_ns``: bars and
    timeline points before it are dropped (bar and timeline indices renumbered from 0)."""
    i1 = int(np.searchsorted(md.timeline, t_ns, side="right"))
    i0 = 0 if since_ns is None else min(int(np.searchsorted(md.timeline, since_ns, side="left")), i1)
    bars = {}
    dropped = {}
    for sym, b in md.bars.items():
        m = int(np.searchsorted(b.ts[: b.n], t_ns, side="right"))
        d = 0 if since_ns is None else min(int(np.searchsorted(b.ts[: b.n], since_ns, side="left")), m)
        dropped[sym] = d
        tl = b.tl[d:m] if not i0 else np.where(b.tl[d:m] >= i0, b.tl[d:m] - i0, -1)
        bars[sym] = replace(
            b,
            ts=b.ts[d:m],
            open=b.open[d:m],
            high=b.high[d:m],
            low=b.low[d:m],
            close=b.close[d:m],
            volume=b.volume[d:m],
            tl=tl,
            n=m - d,
        )
    slots = md.slots[i0:i1]
    if since_ns is not None:
        shift = np.array([dropped[s] for s in md.traded], dtype=np.int64)
        slots = np.where(slots >= 0, slots - shift, -1)
    return MarketData(
        md.timeline[i0:i1],
        bars,
        list(md.traded),
        slots,
        {s: a[i0:i1] for s, a in md.close_tl.items()},
        {c: a[i0:i1] for c, a in md.fx_tl.items()},
        list(md.warnings),
        dict(md.versions),
    )


def _attach(strategy: Strategy, md: MarketData) -> bool:
    hook = getattr(strategy, "attach_market", None)
    if callable(hook):
        hook(md)
        return True
    return False


# ------------------------------------------------------------------------------------- look-ahead


def _outputs(sig: SignalSet) -> dict[str, np.ndarray | None]:
    out: dict[str, np.ndarray | None] = {"target": sig.target, "atr": sig.atr, "size": sig.size}
    out.update({f"value:{name}": arr for name, arr in sig.values.items()})
    return out


def _compare(
    sym: str, ks: np.ndarray, ts: np.ndarray, full: SignalSet, short: dict[str, np.ndarray]
) -> list[Mismatch]:
    """Vectorised comparison of the truncated runs' outputs at each checked bar with the full run's."""
    out: list[Mismatch] = []
    for name, arr in _outputs(full).items():
        if arr is None and name not in short:
            continue
        full_k = np.full(len(ks), np.nan) if arr is None else np.asarray(arr, dtype=float)[ks]
        got = short.get(name)
        if got is None:  # the full run has it, the truncated runs never did
            got = np.full(len(ks), np.nan)
        same = np.isclose(got, full_k, rtol=_RTOL, atol=_ATOL, equal_nan=True)
        out += [
            Mismatch(sym, int(ks[j]), _when(ts, int(ks[j])), name, float(full_k[j]), float(got[j]))
            for j in np.flatnonzero(~same)
        ]
    for name in sorted(set(short) - set(_outputs(full))):  # a value only the truncated runs have
        known = np.flatnonzero(~np.isnan(short[name]))
        j = int(known[0]) if len(known) else 0
        out.append(Mismatch(sym, int(ks[j]), _when(ts, int(ks[j])), name, math.nan, float(short[name][j])))
    return out


def _when(ts: np.ndarray | None, k: int) -> pd.Timestamp:
    if ts is None or k >= len(ts):
        return pd.NaT  # type: ignore[return-value]
    return pd.Timestamp(int(ts[k]), unit="ns", tz="UTC")


def _truncated_outputs(
    strategy: Strategy, md: MarketData, sym: str, arrays: BarArrays, ks: np.ndarray, cross: bool
) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Each output of the strategy at bar k computed on the bars up to k, one array entry per k, and
    which of the truncated runs ran (the others raised: said in the errors, not compared)."""
    short: dict[str, np.ndarray] = {}
    ran = np.ones(len(ks), dtype=bool)
    errors: list[str] = []
    ts = arrays.ts
    for j, k in enumerate(ks.tolist()):
        if cross and ts is not None:
            _attach(strategy, market_view(md, int(ts[k])))
        try:
            sig = strategy.signals(arrays.head(k + 1))
        except Exception as exc:  # a strategy that cannot run on a prefix is a finding, not a crash
            errors.append(f"{sym} bar {k} ({_when(ts, k)}): {type(exc).__name__}: {exc}")
            ran[j] = False
            continue
        for name, arr in _outputs(sig).items():
            if arr is None:
                continue
            col = short.setdefault(name, np.full(len(ks), np.nan))
            col[j] = float(arr[k]) if len(arr) > k else math.nan
    return short, ran, errors


def _symbol_lookahead(
    strategy: Strategy, md: MarketData, sym: str, cfg: LookaheadConfig, cross: bool
) -> tuple[int, np.ndarray, list[Mismatch], list[str], SignalSet]:
    b = md.bars[sym]
    arrays = b.arrays()
    full = strategy.signals(arrays)
    ks = sample_bars(np.asarray(full.target, dtype=float), b.first_live, cfg.checks, cfg.max_checks)
    short, ran, errors = _truncated_outputs(strategy, md, sym, arrays, ks, cross)
    if cross:
        _attach(strategy, md)
    found = _compare(sym, ks[ran], b.ts, full, {name: v[ran] for name, v in short.items()})
    return len(arrays), ks, found, errors, full


# -------------------------------------------------------------------------------------- recursive


def _tail(arrays: BarArrays, start: int) -> BarArrays:
    ts = None if arrays.ts is None else arrays.ts[start:]
    return BarArrays(
        arrays.open[start:],
        arrays.high[start:],
        arrays.low[start:],
        arrays.close[start:],
        arrays.volume[start:],
        ts,
        arrays.symbol,
    )


def rel_diff(short: np.ndarray, full: np.ndarray) -> float:
    """Largest ``|short - full| / |full|`` over the bars where the full value is defined (0 where both
    are 0); inf when the short history leaves one of them undefined (the indicator has not started)."""
    s, f = np.asarray(short, dtype=float), np.asarray(full, dtype=float)
    defined = ~np.isnan(f)
    if not defined.any():
        return 0.0 if np.isnan(s).all() else math.inf
    s, f = s[defined], f[defined]
    if np.isnan(s).any():
        return math.inf
    diff = np.abs(s - f)
    scale = np.abs(f)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / scale)
    return float(np.max(rel))


def _symbol_recursive(
    strategy: Strategy,
    sym: str,
    arrays: BarArrays,
    full: SignalSet,
    startups: tuple[int, ...],
    w: int,
    md: MarketData | None = None,
) -> tuple[list[StartupDiff], list[str]]:
    """Relative differences over the last ``w`` bars per startup length; ``md`` (cross-sectional
    strategies) is attached cut to the same start, and the caller attaches the full market again."""
    n = len(arrays)
    if n <= w:
        return [], [f"{sym}: {n} bars, not more than the recursive window of {w}"]
    series = {"atr": full.atr, **full.values}
    if full.size is not None:
        series["size"] = full.size
    rows: list[StartupDiff] = []
    skipped: list[int] = []
    failed: list[str] = []
    for startup in startups:
        dropped = n - w - startup
        if dropped < 0:
            skipped.append(startup)
            continue
        if md is not None and arrays.ts is not None:  # every symbol's history starts there too
            _attach(strategy, market_view(md, int(arrays.ts[-1]), since_ns=int(arrays.ts[dropped])))
        try:
            sig = strategy.signals(_tail(arrays, dropped))
        except Exception as exc:  # said in the notes; the look-ahead part reports the same failure
            failed.append(f"{startup} ({type(exc).__name__}: {exc})")
            continue
        short = {"atr": sig.atr, **sig.values}
        if sig.size is not None:
            short["size"] = sig.size
        for name, arr in series.items():
            got = short.get(name)
            d = math.inf if got is None else rel_diff(np.asarray(got)[-w:], np.asarray(arr)[-w:])
            rows.append(StartupDiff(sym, name, startup, dropped, d))
    notes = []
    if skipped:
        notes.append(
            f"{sym}: only {n} bars; startups {', '.join(map(str, skipped))} need more history (not run)"
        )
    if failed:
        notes.append(f"{sym}: the strategy raised with startups {'; '.join(failed)}")
    return rows, notes


def needed_startups(
    rows: tuple[StartupDiff, ...] | list[StartupDiff], tolerance: float
) -> dict[str, int | None]:
    """Per indicator, the smallest startup from which it and every longer startup stays under
    ``tolerance`` on every symbol (None if even the longest is not enough)."""
    worst: dict[str, dict[int, float]] = {}
    for r in rows:
        per = worst.setdefault(r.indicator, {})
        per[r.startup] = max(per.get(r.startup, 0.0), r.rel_diff)
    out: dict[str, int | None] = {}
    for name, per in worst.items():
        need: int | None = None
        for startup in sorted(per, reverse=True):
            if per[startup] < tolerance:
                need = startup
            else:
                break
        out[name] = need
    return out


# ----------------------------------------------------------------------------------------- driver


def lookahead_analysis(
    strategy: Strategy,
    md: MarketData,
    cfg: LookaheadConfig | None = None,
    progress: Progress | None = None,
) -> LookaheadResult:
    """Look-ahead and recursive analysis of ``strategy`` on every traded symbol of ``md``
    (``hflite.engine.run.prepare(settings, store).md``: warm-up history included)."""
    cfg = cfg or LookaheadConfig()
    say = progress or (lambda _msg, _frac: None)
    t0 = time.perf_counter()
    cross = _attach(strategy, md)
    warmup = int(strategy.warmup())
    # the declared warm-up is always tried: a finite window (SMA, Donchian) is exact from there on
    startups = tuple(sorted({*cfg.startups, warmup}))
    bars: dict[str, int] = {}
    checks: dict[str, int] = {}
    mismatches: list[Mismatch] = []
    errors: list[str] = []
    recursive: list[StartupDiff] = []
    notes: list[str] = []
    if not cross and getattr(strategy, "brain", None) is not None:
        notes.append(
            f"{strategy.name} reads precomputed decisions (the AI brain): only its use of bars is "
            f"checked here; the decisions are point-in-time by their own walk-forward construction"
        )
    for i, sym in enumerate(md.traded):
        say(f"look-ahead {sym}", i / max(len(md.traded), 1))
        n, ks, found, errs, full = _symbol_lookahead(strategy, md, sym, cfg, cross)
        bars[sym], checks[sym] = n, len(ks)
        mismatches += found
        errors += errs
        arrays = md.bars[sym].arrays()
        rows, why = _symbol_recursive(
            strategy, sym, arrays, full, startups, cfg.window, md if cross else None
        )
        if cross:
            _attach(strategy, md)
        recursive += rows
        notes += why
    say("look-ahead done", 1.0)
    if cross:
        notes.append("attach_market: each truncated run saw the whole market cut at the checked bar's time")
    result = LookaheadResult(
        strategy=strategy.name,
        warmup=warmup,
        bars=bars,
        checks=checks,
        mismatches=tuple(mismatches),
        recursive=tuple(recursive),
        startups=startups,
        window=cfg.window,
        tolerance=cfg.tolerance,
        cross_sectional=cross,
        errors=tuple(errors),
        notes=tuple(notes),
        seconds=time.perf_counter() - t0,
    )
    _log.info(
        "lab.lookahead",
        strategy=strategy.name,
        checks=result.total_checks,
        mismatches=len(mismatches),
        errors=len(errors),
        seconds=round(result.seconds, 3),
    )
    return result


# -------------------------------------------------------------------------------------- rendering


def _describe(m: Mismatch) -> str:
    when = "" if pd.isna(m.ts) else f" ({m.ts:%Y-%m-%d %H:%M})"
    return f"bar {m.bar}{when} {m.output}: full {m.full:.6g} vs truncated {m.truncated:.6g}"


def _pct(v: float) -> float | str:
    return "undefined" if math.isinf(v) else v * 100


def _fmt_rel(v: float) -> str:
    if math.isinf(v):
        return "undefined"
    return f"{v * 100:.3g}%"


def _html(res: LookaheadResult) -> str:
    from hflite.analytics import report as _r

    color = "#cf222e" if res.leaks else "#1a7f37"
    parts = [
        f'<p style="border-left:4px solid {color};padding:6px 10px;background:#f6f8fa">'
        f"<strong>{escape(res.verdict())}</strong></p>",
        f'<p class="note">Each checked bar k re-runs the strategy on the bars up to k only and compares '
        f"bar k's target, ATR, size and indicator values with the full-history run (tolerance "
        f"{_RTOL:g} relative). Checks per symbol: up to the evenly spaced live bars plus the bars with "
        f"a signal, capped. {res.total_checks} checks in {res.seconds:.2f} s.</p>",
        _r._table(
            ["Symbol", "Bars", "Checks", "Mismatches", "First mismatch"],
            [
                [
                    str(r["symbol"]),
                    str(r["bars"]),
                    str(r["checks"]),
                    str(r["mismatches"]),
                    r["first mismatch"],
                ]
                for r in res.rows()
            ],
            left=(0, 4),
        ),
    ]
    if res.mismatches:
        shown = res.mismatches[:_MAX_MISMATCH_ROWS]
        parts.append("<h3>Mismatches</h3>")
        parts.append(
            _r._table(
                ["Symbol", "Bar", "Time (UTC)", "Output", "Full history", "Truncated at the bar"],
                [
                    [m.symbol, str(m.bar), _r._ts(m.ts), m.output, f"{m.full:.6g}", f"{m.truncated:.6g}"]
                    for m in shown
                ],
                left=(0, 3),
            )
        )
        if len(res.mismatches) > len(shown):
            parts.append(f'<p class="note">First {len(shown)} of {len(res.mismatches)} mismatches.</p>')
    parts += [f'<p class="warn">{escape(e)}</p>' for e in res.errors[:20]]
    parts.append("<h3>Warm-up (recursive analysis)</h3>")
    parts.append(_recursive_html(res))
    parts += [f'<p class="note">{escape(n)}</p>' for n in res.notes]
    return "".join(parts)


def _recursive_html(res: LookaheadResult) -> str:
    from hflite.analytics import report as _r

    if not res.recursive:
        return '<p class="note">No symbol had enough bars for the recursive analysis.</p>'
    frame = res.recursive_frame()
    worst = frame.groupby(["indicator", "startup"])["rel_diff"].max().unstack("startup")
    need = res.needed_startup()
    header = ["Indicator", *[f"{s} bars" for s in worst.columns], "Needs"]
    rows = [
        [str(name), *[_fmt_rel(float(v)) for v in worst.loc[name]], _need_text(need.get(str(name)))]
        for name in worst.index
    ]
    import plotly.graph_objects as go

    fig = go.Figure()
    floor = res.tolerance / 1000
    for name in worst.index:
        y = [max(float(v), floor) if math.isfinite(float(v)) else None for v in worst.loc[name]]
        fig.add_scatter(x=list(worst.columns), y=y, name=str(name), mode="lines+markers")
    fig.add_hline(y=res.tolerance, line={"dash": "dot", "color": "#cf222e"})
    fig.update_layout(
        height=320,
        xaxis_title="Bars of history before the window",
        yaxis={"type": "log", "title": "Max relative difference", "tickformat": ".0e"},
        hovermode="closest",
    )
    warn = "".join(f'<p class="warn">{escape(w)}</p>' for w in res.warmup_warnings())
    return (
        f'<p class="note">Largest relative difference, over the last {res.window} bars of each symbol '
        f"(worst symbol), between the full history and a history with only N bars before the window. "
        f"Converged below {res.tolerance:.1%}; 'undefined': the indicator has not started yet. "
        f"Declared warm-up: {res.warmup} bars.</p>"
        + _r._table(header, rows)
        + warn
        + _r._figure_html(fig, "lab-warmup")
    )


def _need_text(need: int | None) -> str:
    return "more than tried" if need is None else f"{need} bars"
