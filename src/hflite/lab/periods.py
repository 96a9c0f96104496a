"""A run's results cut by market regime, by calendar year and over stress periods, each against the
benchmark on the same days: does the result come from one lucky stretch, and how did it live through
the known crashes?

- **Regimes** (bull, bear, sideways, crisis): each day is labelled by the rule of
  :func:`hflite.ai.regime.rule_regimes` on the index's closes (SPY by default; causal: trailing SMA,
  its slope and trailing volatility, checked in the tests). A day's return (from the previous day's
  last equity point to this day's) belongs to the regime in force when the day began, i.e. the
  label of the index's last bar dated before that day: the pairing itself never looks ahead. Days
  before the rule's windows are full are "unknown", listed rather than dropped.
- **Years**: calendar-year return, Sharpe, max drawdown and trades entered, against the benchmark.
- **Stress periods**: a fixed list of named sell-offs (:data:`STRESS_PERIODS`, dates below) plus the
  benchmark's worst drawdowns found in the data (peak to trough); per period the strategy's and the
  benchmark's return and max drawdown. A period outside the data is listed as "not in data", one
  partly inside as "partial" (measured over the part inside), never dropped.

Statistics per group of days: return is the compounded daily return; Sharpe is
``hflite.lab.stats.sharpe`` of the daily returns (not of excess returns: no risk-free rate here),
annualised with the run's observed periods per year; max drawdown is ``hflite.lab.stats.max_drawdown``
of the group's days compounded in order (for a regime, its days stitched together: the drawdown an
investor would have seen holding the strategy only in that regime).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd

from hflite import logs
from hflite.ai.regime import REGIMES, RegimeConfig, rule_regimes
from hflite.analytics.metrics import daily_equity, periods_per_year
from hflite.lab.stats import max_drawdown, sharpe
from hflite.tables import Col

if TYPE_CHECKING:
    from hflite.data.store import Store
    from hflite.engine.result import RunResult

_log = logs.get("hflite.lab.periods")
UNKNOWN = "unknown"
#: Years of index history read before the run for the regime rule's windows (200-bar SMA + slope).
_REGIME_HISTORY = pd.Timedelta(days=550)


@dataclass(frozen=True)
class StressPeriod:
    """A named stretch of market stress: ``start`` is the close the loss is measured from (the peak),
    ``end`` the close it is measured to (the trough). ``symbols``: it applies only to runs that trade
    one of them (empty: to every run)."""

    name: str
    start: str
    end: str
    why: str
    symbols: tuple[str, ...] = ()


#: Named stress periods (S&P 500 closing peaks and troughs unless said otherwise). The first three and
#: the crypto winter are the issue's list; the others are well-known sell-offs, each dated by the index's
#: close. Periods before the embedded sample (2015) are kept: with longer data they apply, without they
#: show as "not in data".
STRESS_PERIODS: tuple[StressPeriod, ...] = (
    StressPeriod(
        "Global financial crisis",
        "2007-10-09",
        "2009-03-09",
        "S&P 500 closing high of 9 Oct 2007 to its closing low of 9 Mar 2009 (-57%)",
    ),
    StressPeriod(
        "2011 US downgrade",
        "2011-04-29",
        "2011-10-03",
        "S&P 500 closing high of 29 Apr 2011 to the low of 3 Oct 2011 after the US downgrade (-19%)",
    ),
    StressPeriod(
        "2015 yuan devaluation",
        "2015-08-17",
        "2015-08-25",
        "the week after China's devaluation of 11 Aug 2015, with the flash crash of 24 Aug (-11%)",
    ),
    StressPeriod(
        "2018 volatility spike",
        "2018-01-26",
        "2018-02-08",
        "S&P 500 high of 26 Jan 2018 to 8 Feb 2018 ('Volmageddon': short-volatility funds blew up, -10%)",
    ),
    StressPeriod(
        "2018 Q4 sell-off", "2018-10-01", "2018-12-24", "Fed tightening and trade war: Q4 2018 (-19%)"
    ),
    StressPeriod(
        "COVID crash", "2020-02-19", "2020-03-23", "S&P 500 high of 19 Feb 2020 to the low of 23 Mar (-34%)"
    ),
    StressPeriod(
        "2022 bear market",
        "2022-01-03",
        "2022-10-12",
        "S&P 500 closing high of 3 Jan 2022 to the closing low of 12 Oct 2022 (-25%)",
    ),
    StressPeriod(
        "Crypto winter 2022",
        "2021-11-10",
        "2022-11-21",
        "bitcoin's all-time high of 10 Nov 2021 to its low after FTX's collapse, 21 Nov 2022 (-77%)",
        symbols=("BTC-USD", "ETH-USD"),
    ),
    StressPeriod(
        "2024 yen carry unwind",
        "2024-07-16",
        "2024-08-05",
        "S&P 500 closing high of 16 Jul 2024 to 5 Aug 2024, when the yen carry trade unwound (-8.5%)",
    ),
)

Status = Literal["full", "partial", "not in data", "not applicable"]


@dataclass(frozen=True)
class GroupStats:
    """The strategy and the benchmark over one group of days (a regime or a year)."""

    label: str
    days: int
    share: float  # of all days of the run
    strategy_return: float
    sharpe: float
    max_drawdown: float
    exposure: float  # share of the group's days with a position open
    gross: float  # mean gross exposure / equity at the days' ends (NaN when not given)
    trades: int  # trades entered in the group's days
    benchmark_return: float
    benchmark_sharpe: float
    benchmark_max_drawdown: float


@dataclass(frozen=True)
class StressResult:
    """One stress period: what the strategy and the benchmark did from its start close to its end close."""

    name: str
    kind: Literal["named", "benchmark drawdown"]
    start: pd.Timestamp
    end: pd.Timestamp
    status: Status
    why: str
    covered_start: pd.Timestamp | None = None
    covered_end: pd.Timestamp | None = None
    strategy_return: float = math.nan
    strategy_max_drawdown: float = math.nan
    benchmark_return: float = math.nan
    benchmark_max_drawdown: float = math.nan


_GROUP_COLS = (
    Col("days", "count"),
    Col("return %", "number", digits=2),
    Col("sharpe", "number", digits=2),
    Col("max dd %", "number", digits=2),
    Col("exposure %", "number", digits=1),
    Col("gross %", "number", digits=1, default=False),
    Col("trades", "count", default=False),
    Col("bench return %", "number", digits=2),
    Col("bench sharpe", "number", digits=2, default=False),
    Col("bench max dd %", "number", digits=2),
)
_STRESS_COLS = (
    Col("period", "text"),
    Col("start", "date"),
    Col("end", "date"),
    Col("status", "text"),
    Col("return %", "number", digits=2),
    Col("max dd %", "number", digits=2),
    Col("bench return %", "number", digits=2),
    Col("bench max dd %", "number", digits=2),
)


@dataclass(frozen=True)
class PeriodsResult:
    """Regimes, years and stress periods of one run (see the module docstring for the definitions)."""

    title: ClassVar[str] = "Regimes, years and stress periods"
    cols: ClassVar[tuple[Col, ...]] = (Col("regime", "id"), *_GROUP_COLS)

    regimes: tuple[GroupStats, ...]
    years: tuple[GroupStats, ...]
    stress: tuple[StressResult, ...]
    benchmark: str
    regime_index: str
    periods_per_year: float
    first_day: pd.Timestamp
    last_day: pd.Timestamp
    notes: tuple[str, ...] = field(default_factory=tuple)

    def rows(self) -> list[dict[str, Any]]:
        """The regime table (``cols``) for a terminal."""
        return [_group_row("regime", g) for g in self.regimes]

    def tables(self) -> list[tuple[str, tuple[Col, ...], list[dict[str, Any]]]]:
        """Every table of the analysis as (title, columns, rows), for ``hflite.tables.print_table``."""
        return [
            (f"by regime of {self.regime_index}", self.cols, self.rows()),
            ("by year", (Col("year", "id"), *_GROUP_COLS), [_group_row("year", g) for g in self.years]),
            ("stress periods", _STRESS_COLS, [_stress_row(s) for s in self.stress]),
        ]

    def summary(self) -> dict[str, Any]:
        """Headline numbers (JSON-safe): per regime and per stress period, the strategy vs the benchmark."""
        return {
            "benchmark": self.benchmark,
            "regime_index": self.regime_index,
            "regimes": {g.label: _group_summary(g) for g in self.regimes},
            "years": {g.label: _group_summary(g) for g in self.years},
            "stress": {
                s.name: {
                    "status": s.status,
                    "return": _num(s.strategy_return),
                    "max_drawdown": _num(s.strategy_max_drawdown),
                    "benchmark_return": _num(s.benchmark_return),
                    "benchmark_max_drawdown": _num(s.benchmark_max_drawdown),
                }
                for s in self.stress
            },
            "positive_years": sum(1 for g in self.years if g.strategy_return > 0),
            "years_beating_benchmark": sum(1 for g in self.years if g.strategy_return > g.benchmark_return),
        }

    def html(self) -> str:
        """The section's inner HTML (the caller wraps it in its ``<section>`` titled ``title``)."""
        return _html(self)


# ---------------------------------------------------------------------------------------- helpers


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _pct(v: float) -> float:
    return v * 100 if math.isfinite(v) else math.nan


def _group_row(key: str, g: GroupStats) -> dict[str, Any]:
    return {
        key: g.label,
        "days": g.days,
        "return %": _pct(g.strategy_return),
        "sharpe": g.sharpe,
        "max dd %": _pct(g.max_drawdown),
        "exposure %": _pct(g.exposure),
        "gross %": _pct(g.gross),
        "trades": g.trades,
        "bench return %": _pct(g.benchmark_return),
        "bench sharpe": g.benchmark_sharpe,
        "bench max dd %": _pct(g.benchmark_max_drawdown),
    }


def _group_summary(g: GroupStats) -> dict[str, Any]:
    return {
        "days": g.days,
        "return": _num(g.strategy_return),
        "sharpe": _num(g.sharpe),
        "max_drawdown": _num(g.max_drawdown),
        "exposure": _num(g.exposure),
        "gross": _num(g.gross),
        "trades": g.trades,
        "benchmark_return": _num(g.benchmark_return),
        "benchmark_sharpe": _num(g.benchmark_sharpe),
        "benchmark_max_drawdown": _num(g.benchmark_max_drawdown),
    }


def _stress_row(s: StressResult) -> dict[str, Any]:
    return {
        "period": s.name,
        "start": s.start,
        "end": s.end,
        "status": s.status,
        "return %": _pct(s.strategy_return),
        "max dd %": _pct(s.strategy_max_drawdown),
        "bench return %": _pct(s.benchmark_return),
        "bench max dd %": _pct(s.benchmark_max_drawdown),
    }


def _day(value: Any) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return (t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")).normalize()


def _compound(r: np.ndarray) -> float:
    return float(np.prod(1.0 + r) - 1.0) if len(r) else math.nan


def _path_drawdown(r: np.ndarray) -> float:
    """Max drawdown of the returns compounded in order from 1 (0 when nothing falls)."""
    if len(r) == 0:
        return math.nan
    return float(max_drawdown(np.concatenate(([1.0], np.cumprod(1.0 + r)))))


def _sharpe(r: np.ndarray, ppy: float) -> float:
    return float(sharpe(r, ppy)) if len(r) >= 2 else math.nan


def _exposed_days(days: pd.DatetimeIndex, trades: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """Per day: a position was open at some time of the day (entry day to exit day, open trades to the
    end), and the number of trades entered that day."""
    n = len(days)
    held = np.zeros(n + 1, dtype=np.int64)
    entered = np.zeros(n, dtype=np.int64)
    if trades is None or trades.empty or n == 0:
        return np.zeros(n, dtype=bool), entered
    entry = pd.DatetimeIndex(pd.to_datetime(trades["entry_ts"], utc=True)).normalize()
    exit_ = pd.DatetimeIndex(pd.to_datetime(trades["exit_ts"], utc=True)).normalize()
    a = days.searchsorted(entry, side="left")
    b = np.where(exit_.isna(), n - 1, days.searchsorted(exit_.fillna(days[-1]), side="right") - 1)
    ok = (a < n) & (b >= a)
    np.add.at(held, a[ok], 1)
    np.add.at(held, b[ok] + 1, -1)
    inside = a < n
    np.add.at(entered, a[inside], 1)
    return np.cumsum(held)[:n] > 0, entered


@dataclass(frozen=True)
class _Days:
    """Per-day arrays of the run (one entry per daily return)."""

    r: np.ndarray  # strategy return
    rb: np.ndarray  # benchmark return on the same days
    exposed: np.ndarray  # a position was open
    entered: np.ndarray  # trades entered
    gross: np.ndarray  # gross exposure / equity at the day's end (NaN: unknown)
    ppy: float


def _stats(label: str, mask: np.ndarray, d: _Days) -> GroupStats:
    n = int(mask.sum())
    r, rb = d.r, d.rb
    ppy = d.ppy
    gross = d.gross[mask]
    return GroupStats(
        label=label,
        days=n,
        share=n / len(mask) if len(mask) else math.nan,
        strategy_return=_compound(r[mask]),
        sharpe=_sharpe(r[mask], ppy),
        max_drawdown=_path_drawdown(r[mask]),
        exposure=float(d.exposed[mask].mean()) if n else math.nan,
        gross=float(gross.mean()) if n and not np.isnan(gross).any() else math.nan,
        trades=int(d.entered[mask].sum()),
        benchmark_return=_compound(rb[mask]),
        benchmark_sharpe=_sharpe(rb[mask], ppy),
        benchmark_max_drawdown=_path_drawdown(rb[mask]),
    )


# ---------------------------------------------------------------------------------------- regimes


def day_regimes(labels: pd.Series, days: pd.DatetimeIndex) -> np.ndarray:
    """The regime in force when each day began: the label of the index's last bar dated before the day
    ("unknown" before the first label or where the rule had no label yet)."""
    idx = pd.DatetimeIndex(labels.index)
    idx = (idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")).normalize()
    lab = pd.Series(labels.to_numpy(dtype=object), index=idx).sort_index(kind="stable")
    lab = lab[~lab.index.duplicated(keep="last")]
    pos = lab.index.searchsorted(days, side="left") - 1
    values = lab.to_numpy(dtype=object)
    out = np.where(pos >= 0, values[np.maximum(pos, 0)], UNKNOWN).astype(object)
    out[(out == "") | pd.isna(out)] = UNKNOWN
    return out


def _regime_stats(regime: np.ndarray, d: _Days) -> tuple[GroupStats, ...]:
    order = [*REGIMES, UNKNOWN]
    present = [g for g in order if (regime == g).any()]
    present += sorted({str(g) for g in regime} - set(order))  # an hmm or custom label set
    return tuple(_stats(g, regime == g, d) for g in present)


# ------------------------------------------------------------------------------------------- stress


def benchmark_drawdowns(close: pd.Series, n: int) -> list[tuple[pd.Timestamp, pd.Timestamp, float]]:
    """The ``n`` deepest drawdowns of a daily close series as (peak day, trough day, depth), deepest
    first; episodes do not overlap (each runs from a running high to the lowest close before the next
    new high)."""
    c = close.dropna()
    if len(c) < 2 or n <= 0:
        return []
    values = c.to_numpy(dtype=float)
    peak = np.maximum.accumulate(values)
    at_high = values >= peak
    episode = np.cumsum(at_high)  # points after a high share its episode number
    dd = values / peak - 1.0
    frame = pd.DataFrame({"episode": episode, "dd": dd, "pos": np.arange(len(values))})
    under = frame[frame["dd"] < 0]
    if under.empty:
        return []
    troughs = under.loc[under.groupby("episode")["dd"].idxmin()]
    troughs = troughs.sort_values("dd", kind="stable").head(n)
    out = []
    for _, row in troughs.iterrows():
        trough = int(row["pos"])
        high = int(np.flatnonzero(at_high[: trough + 1])[-1])
        out.append((c.index[high], c.index[trough], float(row["dd"])))
    return out


def _window_stats(eq: pd.Series, a: pd.Timestamp, b: pd.Timestamp) -> tuple[float, float]:
    """Return and max drawdown of a daily curve from its last point on or before ``a`` to its last on
    or before ``b`` (from its first point when ``a`` is earlier)."""
    i = max(int(eq.index.searchsorted(a, side="right")) - 1, 0)
    j = int(eq.index.searchsorted(b, side="right")) - 1
    if j <= i:
        return math.nan, math.nan
    seg = eq.to_numpy(dtype=float)[i : j + 1]
    return float(seg[-1] / seg[0] - 1.0), float(max_drawdown(seg))


def _stress_one(
    name: str,
    kind: Literal["named", "benchmark drawdown"],
    a: pd.Timestamp,
    b: pd.Timestamp,
    why: str,
    eq: pd.Series,
    bench: pd.Series,
    applies: bool,
) -> StressResult:
    first, last = eq.index[0], eq.index[-1]
    if not applies:
        return StressResult(name, kind, a, b, "not applicable", why)
    if b <= first or a >= last:
        return StressResult(name, kind, a, b, "not in data", why)
    status: Status = "full" if a >= first and b <= last else "partial"
    lo, hi = max(a, first), min(b, last)
    s_ret, s_dd = _window_stats(eq, lo, hi)
    b_ret, b_dd = _window_stats(bench, lo, hi)
    return StressResult(name, kind, a, b, status, why, lo, hi, s_ret, s_dd, b_ret, b_dd)


def _stress(
    eq: pd.Series,
    bench: pd.Series,
    bench_name: str,
    periods: Sequence[StressPeriod],
    worst_n: int,
    symbols: set[str] | None,
) -> tuple[StressResult, ...]:
    out = []
    for p in periods:
        applies = not p.symbols or symbols is None or bool(set(p.symbols) & symbols)
        why = p.why if applies else f"{p.why}; not applicable: the run trades none of {', '.join(p.symbols)}"
        out.append(_stress_one(p.name, "named", _day(p.start), _day(p.end), why, eq, bench, applies))
    inside = bench[(bench.index >= eq.index[0]) & (bench.index <= eq.index[-1])]
    for rank, (peak, trough, depth) in enumerate(benchmark_drawdowns(inside, worst_n), start=1):
        name = f"{bench_name} drawdown #{rank} ({depth:.1%})"
        why = f"the benchmark's #{rank} deepest peak-to-trough fall inside the run, found in the data"
        out.append(_stress_one(name, "benchmark drawdown", peak, trough, why, eq, bench, True))
    return tuple(out)


# ------------------------------------------------------------------------------------------ driver


def _daily(series: pd.Series) -> pd.Series:
    return daily_equity(series)


def analyse_periods(
    equity: pd.Series,
    trades: pd.DataFrame | None,
    benchmark: pd.Series,
    *,
    benchmark_name: str = "benchmark",
    regime_close: pd.Series | None = None,
    regime_cfg: RegimeConfig | None = None,
    labels: pd.Series | None = None,
    stress_periods: Sequence[StressPeriod] = STRESS_PERIODS,
    worst_n: int = 3,
    symbols: Iterable[str] | None = None,
    gross_exposure: pd.Series | None = None,
    ppy: float | None = None,
) -> PeriodsResult:
    """Results per regime, per calendar year and per stress period.

    ``equity``: the run's equity (any points; the last of each UTC day is used), ``trades`` with
    ``entry_ts``/``exit_ts`` (``hflite.engine.result.TRADE_COLUMNS``), ``benchmark``: its closes (or a
    buy-and-hold curve: only returns are used). Regimes come from ``labels`` (a label per index bar, as
    :func:`hflite.ai.regime.regimes` gives) or else from the rule on ``regime_close`` (default: the
    benchmark; pass the index's closes with a year of history before the run or the first ~220 days are
    "unknown"). ``symbols``: the run's symbols (for periods that apply to some only; default: those
    traded). ``gross_exposure`` (USD, the run's) adds the mean gross exposure / equity per group.
    ``ppy``: periods per year for Sharpe (default: observed).
    """
    cfg = regime_cfg or RegimeConfig()
    eq = _daily(equity)
    if len(eq) < 2:
        raise ValueError(f"need at least 2 days of equity, got {len(eq)}")
    bench_daily = _daily(benchmark)
    bench = _asof_days(bench_daily, eq.index)
    days = eq.index[1:]
    r = eq.to_numpy()[1:] / eq.to_numpy()[:-1] - 1.0
    bv = bench.to_numpy()
    rb = np.where(np.isfinite(bv[:-1]) & np.isfinite(bv[1:]), bv[1:] / bv[:-1] - 1.0, 0.0)
    ppy = ppy or periods_per_year(eq)
    notes = []
    if not np.isfinite(bv[0]):
        notes.append(f"{benchmark_name} starts after the run: its returns count as 0 before its first close")
    exposed, entered = _exposed_days(days, trades)
    gross = np.full(len(days), np.nan)
    if gross_exposure is not None:
        g = _asof_days(_daily(gross_exposure), days).to_numpy()
        gross = np.abs(g) / eq.to_numpy()[1:]
    d = _Days(r, rb, exposed, entered, gross, float(ppy))
    source = cfg.index if labels is not None or regime_close is not None else benchmark_name
    if labels is None:
        close = _daily(regime_close if regime_close is not None else benchmark)
        labels = rule_regimes(close, 252.0, cfg)
    regime = day_regimes(labels, days)
    if (regime == UNKNOWN).any():
        notes.append(
            f"{int((regime == UNKNOWN).sum())} days have no regime yet (the rule needs "
            f"{cfg.trend_window + cfg.slope_bars} bars of the index before them): listed as 'unknown'"
        )
    years = np.asarray(days.year)
    by_year = tuple(_stats(str(y), years == y, d) for y in np.unique(years))
    traded = set(symbols) if symbols is not None else _traded(trades)
    stress = _stress(eq, bench_daily, benchmark_name, stress_periods, worst_n, traded)
    _log.info("lab.periods", days=len(days), regimes=len(set(regime)), stress=len(stress))
    return PeriodsResult(
        regimes=_regime_stats(regime, d),
        years=by_year,
        stress=stress,
        benchmark=benchmark_name,
        regime_index=source,
        periods_per_year=float(ppy),
        first_day=eq.index[0],
        last_day=eq.index[-1],
        notes=tuple(notes),
    )


def _traded(trades: pd.DataFrame | None) -> set[str] | None:
    if trades is None or "symbol" not in trades:
        return None
    return {str(s) for s in trades["symbol"].dropna().unique()}


def _asof_days(series: pd.Series, days: pd.DatetimeIndex) -> pd.Series:
    pos = series.index.searchsorted(days, side="right") - 1
    values = series.to_numpy(dtype=float)
    return pd.Series(np.where(pos >= 0, values[np.maximum(pos, 0)], np.nan), index=days)


def regime_close_from_store(store: Store, cfg: RegimeConfig, start: Any, end: Any) -> pd.Series:
    """The regime index's daily closes from ``start`` minus a year and a half (the rule's windows) to
    ``end``, indexed by the time each close became known (UTC)."""
    from hflite.domain.instrument import instrument_for
    from hflite.engine.market import available_at

    df = store.read_bars(cfg.index, "1d", _day(start) - _REGIME_HISTORY, end)
    avail, _ = available_at(instrument_for(cfg.index), "1d", pd.DatetimeIndex(df["ts"]))
    return pd.Series(df["close"].to_numpy(dtype=float), index=pd.DatetimeIndex(avail, tz="UTC"))


def periods_for_run(
    result: RunResult,
    store: Store | None = None,
    *,
    regime_cfg: RegimeConfig | None = None,
    benchmark: str | None = None,
    worst_n: int = 3,
) -> PeriodsResult:
    """:func:`analyse_periods` of a finished run against its first benchmark (or the one named), with the
    regime index's closes read from ``store`` with history before the run (without a store the
    benchmark's own curve labels the regimes, its first ~220 days "unknown")."""
    cfg = regime_cfg or RegimeConfig()
    if not result.benchmarks:
        raise ValueError('the run has no benchmark curve: set run.benchmarks (e.g. ["SPY"])')
    name = benchmark or next(iter(result.benchmarks))
    if name not in result.benchmarks:
        raise ValueError(f"no benchmark {name!r} in the run; it has {', '.join(result.benchmarks)}")
    close = regime_close_from_store(store, cfg, result.start, result.end) if store is not None else None
    return analyse_periods(
        result.equity,
        result.trades,
        result.benchmarks[name],
        benchmark_name=name,
        regime_close=close,
        regime_cfg=cfg,
        worst_n=worst_n,
        symbols=result.symbols,
        gross_exposure=result.gross_exposure,
    )


# -------------------------------------------------------------------------------------- rendering


def _fmt_pct(v: float) -> str:
    return "—" if not math.isfinite(v) else f"{v * 100:.2f}%"


def _fmt(v: float) -> str:
    return "—" if not math.isfinite(v) else f"{v:.2f}"


def _group_table(key: str, groups: tuple[GroupStats, ...]) -> str:
    from hflite.analytics import report as _r

    header = [key, "Days", "Share", "Return", "Sharpe", "Max DD", "Exposure", "Gross", "Trades"]
    header += ["Bench return", "Bench Sharpe", "Bench max DD"]
    rows = [
        [
            g.label,
            str(g.days),
            _fmt_pct(g.share),
            _fmt_pct(g.strategy_return),
            _fmt(g.sharpe),
            _fmt_pct(g.max_drawdown),
            _fmt_pct(g.exposure),
            _fmt_pct(g.gross),
            str(g.trades),
            _fmt_pct(g.benchmark_return),
            _fmt(g.benchmark_sharpe),
            _fmt_pct(g.benchmark_max_drawdown),
        ]
        for g in groups
    ]
    return _r._table(header, rows)


def _bars_figure(groups: tuple[GroupStats, ...], name: str, bench: str) -> str:
    import plotly.graph_objects as go

    from hflite.analytics import report as _r

    x = [g.label for g in groups]
    fig = go.Figure()
    fig.add_bar(x=x, y=[_pct(g.strategy_return) for g in groups], name="Strategy")
    fig.add_bar(x=x, y=[_pct(g.benchmark_return) for g in groups], name=bench)
    fig.update_layout(height=300, barmode="group", yaxis_title="Return (%)", yaxis_ticksuffix="%")
    return _r._figure_html(fig, name)


def _stress_table(stress: tuple[StressResult, ...]) -> str:
    from hflite.analytics import report as _r

    header = ["Period", "From", "To", "Status", "Return", "Max DD", "Bench return", "Bench max DD", "Why"]
    rows = [
        [
            s.name,
            f"{s.start:%Y-%m-%d}",
            f"{s.end:%Y-%m-%d}",
            s.status
            if s.status != "partial" or s.covered_start is None or s.covered_end is None
            else f"partial ({s.covered_start:%Y-%m-%d} to {s.covered_end:%Y-%m-%d})",
            _fmt_pct(s.strategy_return),
            _fmt_pct(s.strategy_max_drawdown),
            _fmt_pct(s.benchmark_return),
            _fmt_pct(s.benchmark_max_drawdown),
            s.why,
        ]
        for s in stress
    ]
    return _r._table(header, rows, left=(0, 3, 8), wrap=(8,))


def _html(res: PeriodsResult) -> str:
    covered = [s for s in res.stress if s.status in ("full", "partial")]
    parts = [
        f'<p class="note">{res.first_day:%Y-%m-%d} to {res.last_day:%Y-%m-%d}, daily returns against '
        f"{escape(res.benchmark)} on the same days. Sharpe annualised with {res.periods_per_year:.0f} "
        f"periods a year, without the risk-free rate. Max drawdown of a group: its days compounded in "
        f"order.</p>",
        f"<h3>By regime of {escape(res.regime_index)}</h3>",
        '<p class="note">Regime rule: crisis at or above the volatility threshold, else bull above a '
        "rising 200-day SMA, bear below a falling one, sideways otherwise; a day's return belongs to "
        "the regime known when the day began.</p>",
        _group_table("Regime", res.regimes),
        _bars_figure(res.regimes, "lab-regimes", res.benchmark),
        "<h3>By year</h3>",
        _group_table("Year", res.years),
        _bars_figure(res.years, "lab-years", res.benchmark),
        "<h3>Stress periods</h3>",
        f'<p class="note">{len(covered)} of {len(res.stress)} periods inside the data; return from the '
        f"close of the first day to the close of the last.</p>",
        _stress_table(res.stress),
    ]
    parts += [f'<p class="note">{escape(n)}</p>' for n in res.notes]
    return "".join(parts)
