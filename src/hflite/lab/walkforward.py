"""Walk-forward optimisation: choose parameters on a train window, trade them on the next test window.

The config's period is cut before the hold-out (:func:`~hflite.lab.trial.before_holdout`; by default
2023-01-01 onwards is never read) and split into windows (:func:`plan_windows`):

- **rolling**: a fixed-length train window moving forward by ``step`` (default: the test length);
- **anchored**: the train window always starts at the period's start and grows by ``step``.

For each window a study (Optuna, :func:`hflite.lab.optimize.run_study`) searches the parameters on the
train window only, with an :class:`~hflite.lab.trial.Evaluator` whose data end at the train window's
last day: a window's choice cannot see anything after it (``tests/lab/test_walkforward_lab.py`` proves it
by changing the data after a train window and getting the same choice). The winner then runs on the
test window through a fresh Evaluator, as do the config's own (un-optimised) parameters for comparison.

Each test window starts with the configured cash and no position: positions do not carry across
windows. A position still open at a test window's last bar is marked at that bar's close (its exit fee
is estimated, not deducted, as in the backtest report) and the next window starts flat. The windows'
daily returns are chained into one out-of-sample (OOS) equity curve (:func:`stitch`) and compared with
buy-and-hold of the config's benchmarks over the same days, chained the same way, and with the
un-optimised parameters' stitched curve.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pandas as pd
from optuna.distributions import CategoricalDistribution

from hflite import logs
from hflite.analytics.metrics import compute_metrics, daily_equity, risk_free_daily
from hflite.config import ConfigError, Settings
from hflite.data.store import DataNotFoundError, Store
from hflite.engine.run import _add_benchmarks, open_store
from hflite.engine.sweep import Unsupported
from hflite.lab.space import Param, widest
from hflite.lab.trial import (
    DEFAULT_HOLDOUT,
    OBJECTIVES,
    Evaluator,
    InvalidParams,
    Path_,
    TrialOutcome,
    before_holdout,
    derive,
    with_window,
)
from hflite.strategy.builtin import make_strategy

_log = logs.get("hflite.lab.walkforward")

#: ``progress(message, fraction)``: what the CLI's progress bar is fed.
Progress = Callable[[str, float], None]

_SPAN = re.compile(r"^\s*(\d+)\s*([ymwd])\s*$", re.IGNORECASE)


# ------------------------------------------------------------------------------------------ windows


@dataclass(frozen=True)
class Span:
    """A calendar length (``3y``, ``18m``, ``26w``, ``90d``) kept as months and days, so that adding
    spans is exact (``3y + 6m`` is 42 months, whatever the start day)."""

    months: int
    days: int
    text: str

    def __str__(self) -> str:
        return self.text


def parse_span(text: str, flag: str = "--train") -> Span:
    """``"3y"`` -> Span(36 months); units y (years), m (months), w (weeks), d (days); at least 1."""
    m = _SPAN.match(str(text))
    if m is None or int(m.group(1)) < 1:
        raise ConfigError(f"config error: {flag}: {text!r} is not a length such as 3y, 18m, 26w or 90d")
    n, unit = int(m.group(1)), m.group(2).lower()
    months = {"y": 12 * n, "m": n}.get(unit, 0)
    days = {"w": 7 * n, "d": n}.get(unit, 0)
    return Span(months, days, f"{n}{unit}")


def _span(value: Span | str, flag: str) -> Span:
    return value if isinstance(value, Span) else parse_span(value, flag)


@dataclass(frozen=True)
class Window:
    """One walk-forward window: inclusive calendar dates. ``partial``: the last test window, cut at the
    period's end (kept when it holds at least half of a full test window)."""

    index: int
    train_start: date
    train_end: date
    test_start: date
    test_end: date
    partial: bool = False

    @property
    def label(self) -> str:
        return f"W{self.index + 1}"


def _days(a: date, b: date) -> int:
    """Calendar days from ``a`` to ``b`` inclusive."""
    return (b - a).days + 1


def plan_windows(
    start: object,
    end: object,
    train: Span | str,
    test: Span | str,
    step: Span | str | None = None,
    *,
    anchored: bool = False,
) -> list[Window]:
    """The windows over ``start``..``end`` (inclusive dates).

    Window i's test window starts at ``start + train + i * step`` and lasts ``test``; its train window is
    the ``train`` before it (rolling) or everything from ``start`` (anchored). Boundaries are computed
    from ``start`` in one step (not by repeated addition), so month ends never drift. A last test window
    that would pass ``end`` is cut there when it keeps at least half of ``test``'s days, else dropped.
    ``step`` shorter than ``test`` is refused: overlapping test windows would count days twice.
    """
    train, test = _span(train, "--train"), _span(test, "--test")
    step = test if step is None else _span(step, "--step")
    p0 = pd.Timestamp(pd.Timestamp(start).date())
    p1 = pd.Timestamp(end).date()

    def at(*spans: tuple[Span, int]) -> date:
        months = sum(s.months * k for s, k in spans)
        days = sum(s.days * k for s, k in spans)
        return (p0 + pd.DateOffset(months=months, days=days)).date()

    if at((step, 1)) < at((test, 1)):
        raise ConfigError(
            f"config error: --step: {step} is shorter than --test {test}: test windows would overlap and "
            "count days twice in the out-of-sample curve (use --step >= --test)"
        )
    full_test = _days(at((train, 1)), at((train, 1), (test, 1))) - 1
    windows: list[Window] = []
    for i in range(100_000):
        test_start = at((train, 1), (step, i))
        test_end = date.fromordinal(at((train, 1), (step, i), (test, 1)).toordinal() - 1)
        partial = test_end > p1
        if partial:
            test_end = p1
            if test_start > p1 or 2 * _days(test_start, p1) < full_test:
                break
        train_start = p0.date() if anchored else at((step, i))
        train_end = date.fromordinal(test_start.toordinal() - 1)
        windows.append(Window(i, train_start, train_end, test_start, test_end, partial))
        if partial:
            break
    if not windows:
        period = _days(p0.date(), p1) if p1 >= p0.date() else 0
        need_train = _days(p0.date(), at((train, 1))) - 1
        need = need_train + math.ceil(full_test / 2)
        raise ConfigError(
            f"config error: walkforward: the period {p0.date()} to {p1} ({period} days) is too short "
            f"for one window: --train {train} ({need_train} days) plus at least "
            f"half of --test {test} ({math.ceil(full_test / 2)} of {full_test} days) need {need} days"
        )
    return windows


# ---------------------------------------------------------------------------------------- stitching


def window_returns(equity: pd.Series, initial_cash: float) -> pd.Series:
    """Daily returns of one window's equity, the first day measured from ``initial_cash`` (the cash the
    window starts with), so a window's returns chain to its final equity / initial cash."""
    daily = daily_equity(equity)
    if daily.empty:
        return daily
    prev = daily.shift(1)
    prev.iloc[0] = float(initial_cash)
    return (daily / prev - 1.0).rename("return")


def stitch(returns: Sequence[pd.Series], initial_cash: float) -> pd.Series:
    """One equity curve from consecutive windows' daily returns: ``initial_cash * prod(1 + r)``.

    A window may end on the UTC day the next one starts: a crypto bar of a window's last date closes
    at 00:00 UTC the day after, before that day's stock and FX closes of the next window. The two
    returns are then consecutive in time and compound into that day's one return. Windows that overlap
    more (a day of one before the other's last day) are refused. An empty list gives an empty curve."""
    parts = [r for r in returns if len(r)]
    if not parts:
        return pd.Series(dtype="float64", name="equity")
    for a, b in zip(parts, parts[1:], strict=False):
        if b.index[0] < a.index[-1]:
            raise ValueError(f"stitch: windows overlap ({b.index[0].date()} < {a.index[-1].date()})")
    r = pd.concat(parts).astype("float64")
    growth = (1.0 + r).groupby(level=0, sort=False).prod()
    return (float(initial_cash) * growth.cumprod()).rename("equity")


# ------------------------------------------------------------------------------------------ search


@dataclass(frozen=True)
class Choice:
    """What a window's study chose: the winner (dotted keys) and its in-sample objective."""

    params: dict[str, Any]
    value: float
    n_complete: int = 0
    n_pruned: int = 0
    seconds: float = 0.0


#: ``search(train_evaluator, params, window, trial_progress) -> Choice``; ``trial_progress(done, total)``.
Search = Callable[[Evaluator, list[Param], Window, Callable[[int, int], None]], Choice]


def optuna_search(
    objective: str = "sharpe",
    *,
    n_trials: int = 100,
    seed: int = 0,
    workers: int = 1,
    sampler: str = "auto",
    warmup: int | None = None,
) -> Search:
    """The default search: one :func:`hflite.lab.optimize.run_study` per train window. A walk-forward's
    studies are throw-away (``hflite optimize`` keeps studies): in memory with one worker, which reuses
    the window's loaded data; with several, a journal file in a temporary folder that the worker
    processes share, removed afterwards. Either way a study starts empty, never resuming an older one."""

    def search(
        evaluator: Evaluator, params: list[Param], window: Window, progress: Callable[[int, int], None]
    ) -> Choice:
        from hflite.lab.optimize import StudyError, run_study

        with tempfile.TemporaryDirectory(prefix="hflite-walkforward-") as tmp, warnings.catch_warnings():
            # optuna's deprecation notices would print once per window, between the progress bar's lines
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"optuna\.")
            shared = workers > 1
            try:
                res = run_study(
                    evaluator.base,
                    params,
                    objectives=(objective,),
                    n_trials=n_trials,
                    store=evaluator.store,
                    storage=str(Path(tmp) / "studies.journal") if shared else "memory",
                    study_name=f"walkforward-{window.label}",
                    workers=workers,
                    seed=seed,
                    sampler=sampler,
                    warmup=warmup,
                    path=evaluator.path,
                    progress=lambda done, total, _best: progress(done, total),
                    evaluator=None if shared else evaluator,
                )
            except StudyError as exc:
                raise ConfigError(f"config error: walkforward: {exc}") from None
        if not res.best_params:
            raise ConfigError(
                f"config error: walkforward: window {window.label} ({window.train_start} to "
                f"{window.train_end}): no trial completed ({res.n_pruned} pruned as invalid parameter sets)"
            )
        return Choice(dict(res.best_params), float(res.best_value), res.n_complete, res.n_pruned, res.seconds)

    return search


def search_warmup(settings: Settings, params: list[Param]) -> int:
    """Bars of warm-up that serve every parameter set of the search: the longer of the strategy's
    warm-up at the widest values and the widest integer value itself (+1)."""
    wide = widest(params)
    bars = max((int(v) + 1 for v in wide.values()), default=0)
    try:
        s = derive(settings, wide)
        bars = max(bars, make_strategy(s.strategy.name, s.strategy.params()).warmup())
    except (InvalidParams, ConfigError, ValueError):
        pass  # e.g. fast's high end above slow's: the integer bound stands
    return bars


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class WindowResult:
    """One window: the choice, its in-sample run, its out-of-sample run, and the config's own params on
    the same test window."""

    window: Window
    choice: Choice
    is_metrics: dict[str, float]
    oos_metrics: dict[str, float]
    base_metrics: dict[str, float]
    oos_returns: pd.Series
    base_returns: pd.Series
    bench_returns: dict[str, pd.Series]
    objective: str
    path: str
    warnings: tuple[str, ...] = ()

    @property
    def params(self) -> dict[str, Any]:
        return self.choice.params

    @property
    def is_value(self) -> float:
        return float(self.is_metrics.get(OBJECTIVES[self.objective][0], math.nan))

    @property
    def oos_value(self) -> float:
        return float(self.oos_metrics.get(OBJECTIVES[self.objective][0], math.nan))

    @property
    def base_value(self) -> float:
        return float(self.base_metrics.get(OBJECTIVES[self.objective][0], math.nan))

    @property
    def degradation_ratio(self) -> float:
        """OOS / IS objective (1 = no loss out of sample); NaN when IS is zero or not finite."""
        a, b = self.oos_value, self.is_value
        return a / b if math.isfinite(a) and math.isfinite(b) and b != 0 else math.nan

    @property
    def degradation_diff(self) -> float:
        """OOS - IS objective."""
        return self.oos_value - self.is_value

    @property
    def efficiency(self) -> float:
        """Annualised OOS return / annualised IS return (NaN when IS is not positive)."""
        return _efficiency(self.oos_metrics.get("cagr", math.nan), self.is_metrics.get("cagr", math.nan))

    def row(self, params: list[Param]) -> dict[str, Any]:
        """The window as one flat record (windows.csv, the terminal table)."""
        w, m = self.window, self.oos_metrics
        out: dict[str, Any] = {
            "window": w.label,
            "train_start": w.train_start.isoformat(),
            "train_end": w.train_end.isoformat(),
            "test_start": w.test_start.isoformat(),
            "test_end": w.test_end.isoformat(),
            "partial": w.partial,
        }
        out.update({p.name: self.params.get(p.key) for p in params})
        out.update(
            {
                "is_objective": self.is_value,
                "oos_objective": self.oos_value,
                "degradation_ratio": self.degradation_ratio,
                "degradation_diff": self.degradation_diff,
                "is_cagr": self.is_metrics.get("cagr", math.nan),
                "oos_cagr": m.get("cagr", math.nan),
                "efficiency": self.efficiency,
                "oos_return": m.get("total_return", math.nan),
                "oos_max_drawdown": m.get("max_drawdown", math.nan),
                "oos_trades": m.get("trades", math.nan),
                "oos_open_trades": m.get("open_trades", math.nan),
                "base_oos_objective": self.base_value,
                "base_oos_return": self.base_metrics.get("total_return", math.nan),
                "trials": self.choice.n_complete,
                "pruned": self.choice.n_pruned,
                "search_seconds": self.choice.seconds,
                "path": self.path,
            }
        )
        return out


@dataclass(frozen=True)
class WalkForwardResult:
    """The whole walk-forward: the setup, each window, and the stitched out-of-sample curves."""

    config_name: str
    strategy: str
    symbols: list[str]
    objective: str
    params: list[Param]
    train: Span
    test: Span
    step: Span
    anchored: bool
    holdout: date | None
    period: tuple[date, date]
    initial_cash: float
    n_trials: int
    seed: int
    windows: list[WindowResult]
    oos_equity: pd.Series
    base_equity: pd.Series
    bench_equity: dict[str, pd.Series]
    oos_metrics: dict[str, float]
    base_metrics: dict[str, float]
    bench_metrics: dict[str, dict[str, float]]
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def efficiency(self) -> float:
        """Walk-forward efficiency: the stitched OOS CAGR over the mean in-sample CAGR of the winners
        (NaN when that mean is not positive: a ratio to a loss says nothing)."""
        is_cagr = [w.is_metrics.get("cagr", math.nan) for w in self.windows]
        finite = [c for c in is_cagr if math.isfinite(c)]
        mean = float(np.mean(finite)) if finite else math.nan
        return _efficiency(self.oos_metrics.get("cagr", math.nan), mean)

    @property
    def positive_share(self) -> float:
        """Share of windows whose OOS total return is above zero."""
        rets = [w.oos_metrics.get("total_return", math.nan) for w in self.windows]
        return float(np.mean([r > 0 for r in rets])) if rets else math.nan

    @property
    def mean_is_value(self) -> float:
        return _nanmean([w.is_value for w in self.windows])

    @property
    def mean_oos_value(self) -> float:
        return _nanmean([w.oos_value for w in self.windows])

    @property
    def unused_tail(self) -> tuple[date, date] | None:
        """The days between the last test window and the period's end (in no test window)."""
        last = self.windows[-1].window.test_end if self.windows else None
        if last is None or last >= self.period[1]:
            return None
        return date.fromordinal(last.toordinal() + 1), self.period[1]

    def stability(self) -> list[dict[str, Any]]:
        """:func:`parameter_stability` of the windows' choices."""
        return parameter_stability([w.params for w in self.windows], self.params)

    def window_frame(self) -> pd.DataFrame:
        return pd.DataFrame([w.row(self.params) for w in self.windows])

    def equity_frame(self) -> pd.DataFrame:
        """The stitched curves side by side on the union of their days (benchmarks on their own days,
        carried forward over days they do not trade)."""
        curves = {"oos": self.oos_equity, "unoptimised": self.base_equity}
        curves.update({f"benchmark_{n}": c for n, c in self.bench_equity.items()})
        frame = pd.DataFrame(curves).sort_index()
        frame.index.name = "day"
        return frame


def _efficiency(oos_cagr: float, is_cagr: float) -> float:
    ok = math.isfinite(oos_cagr) and math.isfinite(is_cagr) and is_cagr > 0
    return oos_cagr / is_cagr if ok else math.nan


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def parameter_stability(chosen: Sequence[dict[str, Any]], params: list[Param]) -> list[dict[str, Any]]:
    """How much the chosen values move across windows, per parameter.

    Numeric: mean, standard deviation (population), the spread (max - min) and the mean jump between
    consecutive windows, the last two as a share of the searched range (0 = the same value every time,
    1 = from one end of the range to the other). Categorical: the most chosen value and its share.
    Both: how many times the choice changed from one window to the next.
    """
    out = []
    for p in params:
        values = [c.get(p.key) for c in chosen]
        changes = sum(1 for a, b in zip(values, values[1:], strict=False) if a != b)
        row: dict[str, Any] = {"param": p.name, "key": p.key, "windows": len(values), "changes": changes}
        bounds = p.bounds()
        if bounds is not None and not isinstance(p.dist, CategoricalDistribution) and values:
            x = np.asarray(values, dtype="float64")
            width = float(bounds[1]) - float(bounds[0])
            jumps = np.abs(np.diff(x))
            row.update(
                {
                    "mean": float(x.mean()),
                    "std": float(x.std()),
                    "min": float(x.min()),
                    "max": float(x.max()),
                    "spread_of_range": float(x.max() - x.min()) / width if width > 0 else math.nan,
                    "mean_jump_of_range": float(jumps.mean()) / width if len(jumps) and width > 0 else 0.0,
                }
            )
        elif values:
            counts = pd.Series([repr(v) for v in values]).value_counts()
            modal = next(v for v in values if repr(v) == counts.index[0])
            row.update({"mode": modal, "mode_share": float(counts.iloc[0]) / len(values)})
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------- run


def walk_forward(
    settings: Settings,
    params: list[Param],
    *,
    train: Span | str,
    test: Span | str,
    step: Span | str | None = None,
    anchored: bool = False,
    objective: str = "sharpe",
    n_trials: int = 100,
    seed: int = 0,
    workers: int = 1,
    holdout: object | None = DEFAULT_HOLDOUT,
    path: Path_ = "auto",
    store: Store | None = None,
    progress: Progress | None = None,
    search: Search | None = None,
    config_name: str = "",
) -> WalkForwardResult:
    """Run the walk-forward (see the module docstring) and return every window and the stitched curves.

    ``search`` replaces the default Optuna study per window (:func:`optuna_search`); it sees only the
    train window's Evaluator.
    """
    t0 = time.perf_counter()
    if objective not in OBJECTIVES:
        raise ConfigError(f"config error: --objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if n_trials < 1:
        raise ConfigError(f"config error: --trials: {n_trials} must be at least 1")
    base = before_holdout(settings, holdout)
    train_s, test_s = _span(train, "--train"), _span(test, "--test")
    step_s = test_s if step is None else _span(step, "--step")
    try:
        windows = plan_windows(base.run.start, base.run.end, train_s, test_s, step_s, anchored=anchored)
    except ConfigError as exc:
        if base.run.end == settings.run.end or "too short" not in str(exc):
            raise
        raise ConfigError(f"{exc} (the period stops before the hold-out from {holdout})") from None
    store = store or open_store(settings)
    warmup = search_warmup(base, params)
    search = search or optuna_search(objective, n_trials=n_trials, seed=seed, workers=workers, warmup=warmup)
    say = progress or (lambda _m, _f: None)
    cash = float(base.run.initial_cash)
    notes: list[str] = []
    results: list[WindowResult] = []
    n = len(windows)
    _log.info("walkforward.start", windows=n, trials=n_trials, objective=objective, warmup=warmup)
    for w in windows:

        def trial_progress(done: int, total: int, w: Window = w) -> None:
            share = done / total if total else 1.0
            say(f"{w.label}/{n} trial {done}/{total}", (w.index + min(share, 1.0)) / n)

        say(f"{w.label}/{n} loading", w.index / n)
        try:
            results.append(
                _run_window(base, params, w, store, warmup, path, search, objective, trial_progress)
            )
        except Unsupported as exc:  # --path research on a config it does not cover
            raise ConfigError(f"config error: --path research: {exc}") from None
        notes += [m for m in results[-1].warnings if m not in notes]
        _log.info(
            "walkforward.window",
            window=w.label,
            params=results[-1].params,
            is_value=results[-1].is_value,
            oos_value=results[-1].oos_value,
        )
    say("stitching", 1.0)
    oos = stitch([r.oos_returns for r in results], cash)
    unopt = stitch([r.base_returns for r in results], cash)
    benches = {
        name: stitch([r.bench_returns[name] for r in results if name in r.bench_returns], cash)
        for name in dict.fromkeys(k for r in results for k in r.bench_returns)
    }
    rf = _risk_free(store, notes)
    first_bench = next(iter(benches.values()), None)
    oos_m = _stitched_metrics(oos, results, "oos", cash, rf, first_bench)
    base_m = _stitched_metrics(unopt, results, "base", cash, rf, first_bench)
    bench_m = {name: compute_metrics(c, None, risk_free=_rf_on(rf, c)) for name, c in benches.items()}
    return WalkForwardResult(
        config_name=config_name,
        strategy=base.strategy.name,
        symbols=list(base.run.symbols),
        objective=objective,
        params=list(params),
        train=train_s,
        test=test_s,
        step=step_s,
        anchored=anchored,
        holdout=None if holdout is None else pd.Timestamp(holdout).date(),
        period=(pd.Timestamp(base.run.start).date(), pd.Timestamp(base.run.end).date()),
        initial_cash=cash,
        n_trials=n_trials,
        seed=seed,
        windows=results,
        oos_equity=oos,
        base_equity=unopt,
        bench_equity=benches,
        oos_metrics=oos_m,
        base_metrics=base_m,
        bench_metrics=bench_m,
        seconds=time.perf_counter() - t0,
        warnings=notes,
    )


def _run_window(
    base: Settings,
    params: list[Param],
    w: Window,
    store: Store,
    warmup: int,
    path: Path_,
    search: Search,
    objective: str,
    progress: Callable[[int, int], None],
) -> WindowResult:
    """One window: search on the train window, then the winner and the config's own parameters on the
    test window (a fresh Evaluator whose data start with the warm-up before the test window)."""
    train_ev = Evaluator(with_window(base, w.train_start, w.train_end), store, warmup=warmup, path=path)
    if path == "research" and w.index == 0:
        train_ev.evaluate({})  # a config the research path does not cover fails here, before any study
    choice = search(train_ev, params, w, progress)
    insample = train_ev.evaluate(choice.params)
    test_ev = Evaluator(with_window(base, w.test_start, w.test_end), store, warmup=warmup, path=path)
    oos = test_ev.evaluate(choice.params)
    unopt = test_ev.evaluate({})
    cash = float(base.run.initial_cash)
    benches, notes = _bench_returns(test_ev, oos, cash)
    return WindowResult(
        window=w,
        choice=choice,
        is_metrics=insample.metrics,
        oos_metrics=oos.metrics,
        base_metrics=unopt.metrics,
        oos_returns=window_returns(oos.equity, cash),
        base_returns=window_returns(unopt.equity, cash),
        bench_returns=benches,
        objective=objective,
        path=oos.path,
        warnings=tuple(notes),
    )


def _bench_returns(
    ev: Evaluator, outcome: TrialOutcome, cash: float
) -> tuple[dict[str, pd.Series], list[str]]:
    """Buy-and-hold of each configured benchmark over the test window (on its own calendar, as the
    backtest report computes it), as daily returns."""
    probe = SimpleNamespace(
        benchmarks={},
        benchmark_last={},
        benchmark_risk_free={},
        risk_free=pd.Series(0.0, outcome.equity.index),
        warnings=[],
        initial_cash=cash,
    )
    _add_benchmarks(probe, ev.prep, outcome.equity.index)  # type: ignore[arg-type]
    out = {name: window_returns(curve, cash) for name, curve in probe.benchmarks.items()}
    return out, [w for w in probe.warnings if not w.startswith("risk-free")]


def _risk_free(store: Store, notes: list[str]) -> pd.DataFrame | None:
    try:
        return store.read_series("FEDFUNDS")
    except DataNotFoundError:
        notes.append("risk-free rate: FEDFUNDS not in the store; using 0%")
        return None


def _rf_on(fed: pd.DataFrame | None, curve: pd.Series) -> pd.Series | None:
    if fed is None or curve.empty:
        return None
    return risk_free_daily(fed, pd.DatetimeIndex(curve.index))


def _stitched_metrics(
    curve: pd.Series,
    windows: list[WindowResult],
    which: Literal["oos", "base"],
    cash: float,
    fed: pd.DataFrame | None,
    benchmark: pd.Series | None,
) -> dict[str, float]:
    """:func:`compute_metrics` of a stitched curve, with the same risk-free rate as the Evaluator; trade
    counts and fees are the windows' sums (each window's fees in its own dollars, from the same cash);
    trade statistics that need every trade (hit rate, profit factor, averages) are per window only."""
    if curve.empty:
        return {}
    m = compute_metrics(curve, None, benchmark=benchmark, risk_free=_rf_on(fed, curve), initial_cash=cash)
    per = [w.oos_metrics if which == "oos" else w.base_metrics for w in windows]
    for key in ("trades", "open_trades", "fees_usd"):
        m[key] = float(np.nansum([p.get(key, math.nan) for p in per]))
    return m
