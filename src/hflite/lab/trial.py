"""One config, many parameter sets: the evaluator behind ``optimize``, ``walkforward`` and ``validate``.

An :class:`Evaluator` loads a run's market data once (with enough warm-up history for the longest
lookback in the search) and then runs any parameter set through it:

- the **research path** (:mod:`hflite.engine.sweep`) when the config is one it supports (a trend strategy
  on one USD-quoted symbol, no protective stops, risk no richer than ``minimal``): the same signals, risk
  gate and costs as the engine, proven equal fill for fill by ``tests/test_sweep.py``, about 50x faster;
- the **full engine** otherwise: the same engine, risk manager and costs as ``hflite backtest``.

Each trial's metrics are ``hflite.analytics.metrics.compute_metrics`` of its equity, so an optimiser's
Sharpe is the Sharpe the backtest report would print for those parameters (same risk-free rate, same
annualisation). A parameter set the config rejects (``fast >= slow``, a value out of range) is an
:class:`InvalidParams` naming the field; the optimisers prune it.

Keys of ``strategy``, ``risk``, ``execution`` and ``ai`` can be searched. A trial that changes ``ai``
builds its own AI brain (one data load per distinct ``ai`` setting, the last one kept). Keys that change
what data or period a run reads (``run.*``, ``data.*``) cannot: every trial must be measured on the same
sample, or their comparison is not fair.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import ValidationError

from hflite.ai.brain import AIConfig
from hflite.config import ConfigError, Settings, format_validation_error
from hflite.data.store import Store
from hflite.engine.core import run_backtest
from hflite.engine.result import RunResult
from hflite.engine.run import (
    Prepared,
    _add_benchmarks,
    _utc_index,
    build_result,
    make_costs,
    make_engine,
    make_limits,
    open_store,
    prepare,
    scheduled_commands,
)
from hflite.engine.signals import compute_signals
from hflite.engine.sweep import SweepSpec, Unsupported, run_pair
from hflite.lab.space import overrides_of
from hflite.strategy.base import Strategy, attach_market
from hflite.strategy.builtin import make_strategy

Path_ = Literal["auto", "engine", "research"]

#: Objectives an optimiser can use: name -> (metric key, direction). Drawdown is a negative fraction,
#: so "maximize" drives it towards 0.
OBJECTIVES: dict[str, tuple[str, Literal["maximize", "minimize"]]] = {
    "sharpe": ("sharpe", "maximize"),
    "sortino": ("sortino", "maximize"),
    "calmar": ("calmar", "maximize"),
    "cagr": ("cagr", "maximize"),
    "total_return": ("total_return", "maximize"),
    "max_drawdown": ("max_drawdown", "maximize"),
    "profit_factor": ("profit_factor", "maximize"),
    "hit_rate": ("hit_rate", "maximize"),
    "volatility": ("volatility", "minimize"),
    "turnover": ("turnover", "minimize"),
}

#: Sections a search may vary. ``ai`` changes the AI brain (views, ensemble, model): a trial with new
#: ``ai`` settings builds its own brain (trained models and features are reused from the registry and the
#: feature cache when their fingerprint matches), so it costs a data load; the others reuse the load.
SEARCHABLE = ("strategy", "risk", "execution", "ai")


class InvalidParams(ValueError):
    """A parameter set the config rejects; the message names the field."""


@dataclass(frozen=True)
class TrialOutcome:
    """What one parameter set did."""

    params: dict[str, Any]
    metrics: dict[str, float]
    equity: pd.Series  # full resolution, UTC
    daily_returns: pd.Series  # close-to-close daily returns, UTC dates
    trade_returns: np.ndarray  # closed trades' net returns (fractions), in exit order
    path: Literal["engine", "research"]
    seconds: float
    halted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def value(self, objective: str) -> float:
        """The objective's value; NaN (a flat or empty run) counts as the worst value."""
        key, direction = OBJECTIVES[objective]
        v = float(self.metrics.get(key, math.nan))
        if not math.isfinite(v):
            return -math.inf if direction == "maximize" else math.inf
        return v


def derive(base: Settings, values: dict[str, Any]) -> Settings:
    """``base`` with dotted-key ``values`` applied as ``--set`` would apply them, validated."""
    from hflite.config import _check_finite, _check_strategy, _merge

    bad = sorted({k.split(".")[0] for k in values} - set(SEARCHABLE))
    if bad:
        raise ConfigError(
            f"config error: {', '.join(bad)}: only {', '.join(SEARCHABLE)} parameters can be searched "
            "(the others change the data or period a run reads)"
        )
    data = _merge(base.model_dump(exclude_unset=True), overrides_of(values))
    try:
        out = Settings.model_validate(data)
        _check_finite(out.strategy.params(), "strategy")
        _check_strategy(out)
    except ValidationError as exc:
        raise InvalidParams(format_validation_error(exc)) from None
    except ConfigError as exc:
        raise InvalidParams(str(exc)) from None
    return out


#: The first day of the final test period that no optimisation may see (issue 17: 2023-2024 held out).
DEFAULT_HOLDOUT = "2023-01-01"


def with_window(base: Settings, start: object | None = None, end: object | None = None) -> Settings:
    """``base`` with ``run.start`` / ``run.end`` replaced (a walk-forward window, or the period before
    the hold-out); everything else as configured."""
    data = base.model_dump(exclude_unset=True)
    run = dict(data.get("run", {}))
    if start is not None:
        run["start"] = pd.Timestamp(start).date()
    if end is not None:
        run["end"] = pd.Timestamp(end).date()
    data["run"] = run
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def before_holdout(base: Settings, holdout: object | None = DEFAULT_HOLDOUT) -> Settings:
    """The config's period cut at the day before ``holdout`` (None: no hold-out). A config that starts
    inside the hold-out is an error: there would be nothing to optimise on."""
    if holdout is None:
        return base
    cut = pd.Timestamp(holdout)
    if pd.Timestamp(base.run.start) >= cut:
        raise ConfigError(
            f"config error: run.start: {base.run.start} is inside the hold-out (from {cut.date()}); "
            "nothing is left to optimise on (move the start or pass --holdout none)"
        )
    if pd.Timestamp(base.run.end) < cut:
        return base
    return with_window(base, end=cut - pd.Timedelta(days=1))


def build_strategy(settings: Settings, prep: Prepared) -> Strategy:
    """The strategy of ``settings``, attached to the data it reads beyond its own bars."""
    try:
        strategy = make_strategy(settings.strategy.name, settings.strategy.params())
    except (ValueError, ValidationError) as exc:
        msg = format_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        raise InvalidParams(msg) from None
    if hasattr(strategy, "attach") and prep.brain is not None:
        strategy.attach(prep.brain)
    attach_market(strategy, prep.md)
    return strategy


class Evaluator:
    """Runs parameter sets of one config over one loaded data set.

    ``warmup`` (bars) is the longest warm-up any searched parameter set needs; ``path`` forces the
    engine or the research path ("auto": the research path where it applies).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        *,
        warmup: int | None = None,
        path: Path_ = "auto",
        prepared: Prepared | None = None,
    ) -> None:
        self.base = settings
        self.store = store or open_store(settings)
        self.path = path
        self.warmup = warmup
        self.prep = prepared or prepare(settings, self.store, warmup=warmup)
        self._bench: dict[str, Any] | None = None
        self._ai_prep: tuple[AIConfig, Prepared] | None = None  # the last trial's own AI brain

    def _prepared(self, settings: Settings) -> Prepared:
        """The loaded data for ``settings``: the evaluator's own, or, when its ``ai`` section differs
        from the config's, a load with that AI brain (kept until another ``ai`` setting comes)."""
        if settings.ai == self.base.ai:
            return self.prep
        if self._ai_prep is None or self._ai_prep[0] != settings.ai:
            self._ai_prep = (settings.ai, prepare(settings, self.store, warmup=self.warmup))
        return self._ai_prep[1]

    # -- running ----------------------------------------------------------------------------------
    def evaluate(self, values: dict[str, Any]) -> TrialOutcome:
        """Run one parameter set (dotted keys); raises :class:`InvalidParams` for a rejected one."""
        t0 = time.perf_counter()
        settings = derive(self.base, values) if values else self.base
        prep = dataclasses.replace(self._prepared(settings), settings=settings)
        prep.strategy = build_strategy(settings, prep)
        if self.path != "engine":
            try:
                return self._research(prep, values, t0)
            except Unsupported:
                if self.path == "research":
                    raise
        return self._engine(prep, values, t0)

    def backtest(self, values: dict[str, Any] | None = None, run_id: str = "trial") -> RunResult:
        """The full engine's result (trades, fills, benchmarks) of one parameter set."""
        settings = derive(self.base, values) if values else self.base
        prep = dataclasses.replace(self._prepared(settings), settings=settings)
        prep.strategy = build_strategy(settings, prep)
        return self._result(prep, run_id)

    def _result(self, prep: Prepared, run_id: str) -> RunResult:
        engine = make_engine(prep, compute_signals(prep.strategy, prep.md), advisor=prep.advisor)
        run_backtest(engine)
        return build_result(engine, prep, run_id)

    def _engine(self, prep: Prepared, values: dict[str, Any], t0: float) -> TrialOutcome:
        result = self._result(prep, "trial")
        from hflite.analytics.metrics import run_metrics

        metrics = run_metrics(result)
        return TrialOutcome(
            dict(values),
            metrics,
            result.equity,
            _daily_returns(result.equity),
            _trade_returns(result.trades),
            "engine",
            time.perf_counter() - t0,
            result.halted_at is not None,
        )

    def _research(self, prep: Prepared, values: dict[str, Any], t0: float) -> TrialOutcome:
        s, md = prep.settings, prep.md
        if s.strategy.name != "trend" or len(md.traded) != 1 or len(md.bars) != 1:
            raise Unsupported("the research path runs one trend strategy on one symbol")
        if scheduled_commands(s) or prep.advisor is not None or prep.brain is not None:
            raise Unsupported("scheduled commands, an advisor or the AI need the full engine")
        if prep.strategy.name != "trend":  # by_regime wraps it
            raise Unsupported("only the plain trend strategy has a research path")
        sym = md.traded[0]
        b = md.bars[sym]
        commission, slippage = make_costs(s)
        params = s.strategy.params()
        spec = SweepSpec(
            b,
            make_limits(s),
            commission,
            slippage,
            float(s.run.initial_cash),
            s.execution.max_volume_share,
            params={k: v for k, v in params.items() if k not in ("fast", "slow")},
        )
        res = run_pair(spec, int(params.get("fast", 20)), int(params.get("slow", 50)))
        equity, gross, fills, trades = _research_frames(md, sym, res, float(s.run.initial_cash))
        if len(trades) and trades["is_open"].iloc[-1]:  # valued as the engine values an open trade
            held, price = trades["qty"].iloc[-1], float(b.close[b.n - 1])
            trades.loc[trades.index[-1], "exit_fee_est_usd"] = commission.fee(b.instrument, held, price)
        metrics = self._metrics(prep, equity, trades, gross, fills)
        return TrialOutcome(
            dict(values),
            metrics,
            equity,
            _daily_returns(equity),
            _trade_returns(trades),
            "research",
            time.perf_counter() - t0,
            res.halted,
        )

    def _metrics(
        self, prep: Prepared, equity: pd.Series, trades: pd.DataFrame, gross: pd.Series, fills: pd.DataFrame
    ) -> dict[str, float]:
        from hflite.analytics.metrics import compute_metrics

        if self._bench is None:  # the risk-free rate and the first benchmark, loaded once per evaluator
            probe = SimpleNamespace(
                benchmarks={},
                benchmark_last={},
                benchmark_risk_free={},
                risk_free=pd.Series(0.0, equity.index),
                warnings=[],
                initial_cash=float(prep.settings.run.initial_cash),
            )
            _add_benchmarks(probe, prep, equity.index)  # type: ignore[arg-type]
            self._bench = {
                "risk_free": probe.risk_free,
                "benchmark": next(iter(probe.benchmarks.values()), None),
            }
        return compute_metrics(
            equity,
            trades,
            benchmark=self._bench["benchmark"],
            risk_free=self._bench["risk_free"],
            gross_exposure=gross,
            fills=fills,
            initial_cash=float(prep.settings.run.initial_cash),
        )


def _daily_returns(equity: pd.Series) -> pd.Series:
    from hflite.analytics.metrics import daily_equity

    return daily_equity(equity).pct_change().iloc[1:]


def _trade_returns(trades: pd.DataFrame | None) -> np.ndarray:
    """Closed trades' net returns as fractions, in exit order."""
    if trades is None or trades.empty:
        return np.zeros(0)
    closed = trades[~trades["is_open"].fillna(False).astype(bool)] if "is_open" in trades else trades
    closed = closed.sort_values("exit_ts", kind="stable") if "exit_ts" in closed else closed
    return closed["return_pct"].astype("float64").to_numpy() / 100.0


def _research_frames(
    md: Any, sym: str, res: Any, cash0: float
) -> tuple[pd.Series, pd.Series, pd.DataFrame, pd.DataFrame]:
    """The research path's fills as the engine's frames: equity and gross exposure on the timeline
    (marked at each bar's close, fills at its open), fills, and closed round trips."""
    b = md.bars[sym]
    n = b.n
    close = b.close[:n]
    dcash, dqty = np.zeros(n), np.zeros(n)
    rows = []
    for f in res.fills:
        dcash[f.k] -= f.side * f.qty * f.price + f.fee
        dqty[f.k] += f.side * f.qty
        rows.append((f.k, f.side, f.qty, f.price, f.fee))
    cash = cash0 + np.cumsum(dcash)
    qty = np.cumsum(dqty)
    qty[np.abs(qty) <= 1e-9] = 0.0
    live = b.tl[:n] >= 0
    equity_bars = cash + qty * close
    index = _utc_index(md.timeline)
    equity = np.full(md.length, np.nan)
    gross = np.zeros(md.length)
    equity[b.tl[:n][live]] = equity_bars[live]
    gross[b.tl[:n][live]] = np.abs(qty * close)[live]
    equity = pd.Series(equity, index, name="equity").ffill().fillna(cash0)
    fills = pd.DataFrame(
        {
            "ts": [index[b.tl[k]] for k, *_ in rows],
            "side": [s for _, s, *_ in rows],
            "qty": [q for *_, q, _p, _f in rows],
            "price": [p for *_, p, _f in rows],
            "fee": [fe for *_, fe in rows],
            "fee_usd": [fe for *_, fe in rows],
        }
    )
    return equity, pd.Series(gross, index), fills, _round_trips(rows, index, b.tl)


def _round_trips(
    rows: list[tuple[int, int, float, float, float]], index: pd.DatetimeIndex, tl: np.ndarray
) -> pd.DataFrame:
    """Closed round trips from one symbol's fills: an entry opens a trade, the next opposite fill of
    the same size closes it (the research path always exits a whole position)."""
    out = []
    open_: tuple[int, int, float, float, float] | None = None
    for row in rows:
        k, side, q, price, fee = row
        if open_ is None:
            open_ = row
            continue
        ek, eside, eq, eprice, efee = open_
        if side == -eside and abs(q - eq) <= 1e-9 * max(1.0, eq):
            pnl = eside * eq * (price - eprice)
            fees = efee + fee
            out.append(
                {
                    "entry_ts": index[tl[ek]],
                    "exit_ts": index[tl[k]],
                    "qty": eq,
                    "pnl_usd": pnl,
                    "fees_usd": fees,
                    "return_pct": pnl / (eq * eprice) * 100.0,  # gross of fees, as the engine's
                    "is_open": False,
                }
            )
            open_ = None
        else:
            open_ = row
    if open_ is not None:
        ek, eside, eq, eprice, efee = open_
        out.append(
            {"entry_ts": index[tl[ek]], "qty": eq, "fees_usd": efee, "is_open": True, "exit_fee_est_usd": 0.0}
        )
    cols = ["entry_ts", "exit_ts", "qty", "pnl_usd", "fees_usd", "return_pct", "is_open", "exit_fee_est_usd"]
    return pd.DataFrame(out, columns=cols)
