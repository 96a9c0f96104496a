"""The portfolio runner: several strategies ("sleeves") in one account, through the one risk manager,
with capital moved between them walk-forward and decayed sleeves cut (issue 17).

How a run goes (docs/portfolio.md has the whole story):

1. Each sleeve runs alone through the real engine (its strategy on its symbols, the same risk limits and
   costs, the full initial cash): its standalone daily equity is the record the allocation reads.
2. ``hflite.lab.portfolio_weights.schedule`` turns those records into weights, walk-forward: the weights
   of a rebalance on day ``d`` read returns up to ``d`` only and apply from the first bar after ``d``.
   Before ``min_history_days`` the weights are equal; the selection rule cuts decayed sleeves.
3. ONE engine then trades every sleeve's symbols in one account (one portfolio, one risk manager). A
   symbol's signals are its sleeve's strategy's signals with a size multiplier set by the sleeve's weight
   in force at each bar (``PortfolioStrategy``).

What a weight means: with ``N`` sleeves, a sleeve of weight ``w`` trades at ``risk.risk_pct x N x w`` of
equity per trade (``percent_equity x N x w`` with that sizing), so an equal weight is exactly the configured
risk, as the sleeve had when it ran alone. The engine's gate is given ``risk_pct x S`` (``S`` = ``max_scale``,
lowered so that it never passes the highest per-trade risk the config allows: 1%, or the phase's maximum)
and each entry's size is multiplied by ``min(1, N w / S)``: a sleeve's per-trade risk is therefore
``risk_pct x min(N w, S)``. Every other rule of the gate (position, sector, asset-class, gross, net and
leverage caps, correlation, drawdown and regime cuts, loss limits, halts) applies to the combined book, so
a sleeve may get less than its weight says, never more. Weights size new entries: an open position keeps
its size until it exits (the engine has no resize order), except that a sleeve cut to zero is closed at
its next bar.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from hflite import logs
from hflite.config import (
    PHASES,
    ConfigError,
    RiskConfig,
    Settings,
    StrategyConfig,
    format_validation_error,
    load_settings,
    parse_overrides,
    read_toml,
)
from hflite.data.store import Store
from hflite.engine.market import MarketData
from hflite.engine.result import RunResult
from hflite.lab.portfolio_config import PortfolioConfig, SleeveConfig
from hflite.lab.portfolio_weights import Rebalance, daily_table, schedule, weekday_calendar, weights_at
from hflite.strategy.base import BarArrays, SignalSet, Strategy, attach_market
from hflite.strategy.builtin import make_strategy

__all__ = [
    "PortfolioResult",
    "PortfolioStrategy",
    "SleeveRun",
    "SleeveSignals",
    "load_portfolio_settings",
    "run_portfolio",
    "sleeve_settings",
    "sizing_scale",
]

Progress = Callable[[str, float], None]

#: The highest per-trade risk (% of equity) the config accepts for ``risk.risk_pct``.
RISK_PCT_MAX = float(next(m.le for m in RiskConfig.model_fields["risk_pct"].metadata if hasattr(m, "le")))


# ------------------------------------------------------------------------------------- settings


def load_portfolio_settings(path: str | Path, sets: list[str] | None = None) -> tuple[Settings, list[str]]:
    """The settings of a portfolio config and the warnings about it.

    ``[run] symbols`` is derived from the sleeves (their union, in sleeve order); a config that also sets
    it must list the same symbols, else a ConfigError names the difference. ``[strategy]`` is not used
    (each sleeve names its own): when present, a warning says so.
    """
    raw = read_toml(path)
    extra = parse_overrides(sets or [])
    merged = _merge(raw, extra)
    section = merged.get("portfolio")
    if not isinstance(section, dict):
        raise ConfigError(
            "config error: portfolio: missing: add a [portfolio] section with [[portfolio.sleeve]] tables "
            "(see configs/portfolio.toml)"
        )
    try:
        cfg = PortfolioConfig.model_validate(section)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix="portfolio")) from None
    union = cfg.symbols()
    given = merged.get("run", {}).get("symbols") if isinstance(merged.get("run"), dict) else None
    if given is not None:
        listed = [s.strip() for s in given.split(",") if s.strip()] if isinstance(given, str) else list(given)
        if set(listed) != set(union):
            missing = [s for s in union if s not in listed]
            unknown = [s for s in listed if s not in union]
            diff = "; ".join(
                part
                for part in (
                    f"not in run.symbols: {', '.join(missing)}" if missing else "",
                    f"in no sleeve: {', '.join(unknown)}" if unknown else "",
                )
                if part
            )
            raise ConfigError(
                "config error: run.symbols: a portfolio trades exactly its sleeves' symbols; leave "
                f"run.symbols out (it is derived) or list the same ones ({diff})"
            )
    extra.setdefault("run", {})["symbols"] = union
    settings = load_settings(path, extra, trades=False)
    warnings = []
    if "strategy" in raw:
        warnings.append("config: [strategy] is not used by a portfolio: each sleeve names its own strategy")
    return settings, warnings


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _portfolio(settings: Settings) -> PortfolioConfig:
    if settings.portfolio is None:
        raise ConfigError("config error: portfolio: missing: a portfolio run needs a [portfolio] section")
    return settings.portfolio


def sleeve_settings(settings: Settings, sleeve: SleeveConfig) -> Settings:
    """The settings of one sleeve run alone: its symbols and strategy, everything else unchanged."""
    strategy = StrategyConfig.model_validate({"name": sleeve.strategy_name(), **sleeve.strategy_params()})
    run = settings.run.model_copy(update={"symbols": list(sleeve.symbols)})
    return settings.model_copy(update={"run": run, "strategy": strategy})


def sizing_scale(settings: Settings) -> float:
    """``S``: how far above the configured per-trade risk (or share of equity) a heavily weighted sleeve
    may go: ``max_scale``, lowered so the gate's risk never passes the config's own ceiling (1% per trade,
    or the phase's maximum; 100% of equity for ``percent_equity`` sizing). At least 1."""
    cfg, risk = _portfolio(settings), settings.risk
    if risk.sizing == "percent_equity":
        return max(1.0, min(cfg.max_scale, 100.0 / risk.percent_equity))
    ceiling = RISK_PCT_MAX
    if settings.phase is not None:
        ceiling = min(ceiling, PHASES[settings.phase.name].max_risk_pct)
    return max(1.0, min(cfg.max_scale, ceiling / risk.risk_pct))


def _engine_settings(settings: Settings, scale: float) -> Settings:
    """The settings the combined engine's gate sizes with: ``risk_pct`` (or ``percent_equity``) times S."""
    risk = settings.risk
    key = "percent_equity" if risk.sizing == "percent_equity" else "risk_pct"
    scaled = risk.model_copy(update={key: getattr(risk, key) * scale})
    return settings.model_copy(update={"risk": scaled})


# ------------------------------------------------------------------------------------ strategy


@dataclass(slots=True)
class SleeveSignals(SignalSet):
    """A sleeve's signals in the combined run: every reason names the sleeve; ``notes`` replace the
    strategy's reason on the bars where the portfolio itself acts (a cut sleeve closed)."""

    sleeve: str = ""
    notes: dict[int, str] = field(default_factory=dict)

    def reason(self, k: int) -> str:
        note = self.notes.get(k)
        if note is not None:
            return note
        text = SignalSet.reason(self, k)
        return f"sleeve {self.sleeve}: {text}" if text else text


class PortfolioStrategy:
    """The combined run's strategy: each symbol's sleeve strategy, with sizes set by the sleeve's weight
    in force at each bar (``plan``). The plan is known up front, but each weight depends only on data from
    before the bars it applies to, so signals at bar k still use nothing after k.

    While a sleeve's weight is 0 its entries are dropped and, on its first bar at 0, it is sent flat.
    """

    name = "portfolio"

    def __init__(self, config: PortfolioConfig, plan: list[Rebalance], scale: float) -> None:
        self.config = config
        self.plan = plan
        self.scale = float(scale)
        self.owner = config.owner()
        self.strategies: dict[str, Strategy] = {
            sl.name: make_strategy(sl.strategy_name(), sl.strategy_params()) for sl in config.sleeve
        }

    def warmup(self) -> int:
        return max(s.warmup() for s in self.strategies.values())

    def attach_market(self, md: MarketData) -> None:
        """Each sleeve strategy that reads other symbols (xsmom ranks its universe, by_regime reads its
        index) sees the market with only its own sleeve's symbols traded, as in its run alone."""
        for sl in self.config.sleeve:
            view = dataclasses.replace(md, traded=[s for s in md.traded if s in sl.symbols])
            attach_market(self.strategies[sl.name], view)

    def signals(self, bars: BarArrays) -> SignalSet:
        sleeve = self.owner[bars.symbol]
        sig = self.strategies[sleeve].signals(bars)
        if bars.ts is None:
            raise ValueError("the portfolio strategy needs each bar's time (BarArrays.ts)")
        w = weights_at(self.plan, sleeve, bars.ts)
        n = len(self.config.sleeve)
        mult = np.minimum(1.0, n * w / self.scale)
        size = mult if sig.size is None else np.asarray(sig.size, dtype="float64") * mult
        target = np.array(sig.target, dtype="float64")
        cut = w <= 0
        target[cut & (target != 0)] = np.nan  # no entries while cut (NaN stays NaN)
        onset = cut & ~np.concatenate(([False], cut[:-1]))
        notes: dict[int, str] = {}
        for k in np.flatnonzero(onset).tolist():
            target[k] = 0.0
            notes[k] = self._cut_note(sleeve, int(bars.ts[k]))
        return SleeveSignals(
            target=target,
            atr=sig.atr,
            exits=sig.exits,
            values={**sig.values, "sleeve_weight": w, "size_multiplier": mult},
            reasons=sig.reasons,
            size=size,
            sleeve=sleeve,
            notes=notes,
        )

    def _cut_note(self, sleeve: str, ts_ns: int) -> str:
        eff = [r.effective_ns for r in self.plan]
        reb = self.plan[max(0, int(np.searchsorted(eff, ts_ns, side="right")) - 1)]
        day = f"{reb.day:%Y-%m-%d}" if reb.day is not None else "initial"
        why = f"selection: {reb.cut[sleeve]}" if sleeve in reb.cut else f"{reb.method} gave it no weight"
        return f"sleeve {sleeve}: at weight 0 from the {day} rebalance ({why}): go flat"


# ------------------------------------------------------------------------------------- the run


@dataclass
class SleeveRun:
    """One sleeve run alone: the standalone record the allocation and the selection read."""

    config: SleeveConfig
    result: RunResult
    metrics: dict[str, float]


@dataclass
class PortfolioResult:
    """The combined run and everything behind its weights."""

    result: RunResult  # the combined run (one account): the usual report's input
    metrics: dict[str, float]
    sleeves: list[SleeveRun]
    plan: list[Rebalance]  # the initial allocation, then one per rebalance
    days: pd.DatetimeIndex  # the weekday calendar of the sleeve returns
    sleeve_equity: pd.DataFrame  # each sleeve's standalone equity on ``days``
    config: PortfolioConfig
    risk_pct: float  # the configured per-trade risk (or percent of equity)
    scale: float  # S: the gate sizes at risk_pct x S and each entry at min(1, N w / S) of that
    sizing: str
    warnings: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [s.config.name for s in self.sleeves]

    def final_weights(self) -> dict[str, float]:
        return dict(self.plan[-1].weights)


def run_portfolio(
    settings: Settings,
    store: Store | None = None,
    *,
    run_id: str | None = None,
    progress: Progress | None = None,
) -> PortfolioResult:
    """Run every sleeve alone, compute the walk-forward weights, then the combined run (see the module
    docstring); nothing is written to disk."""
    from hflite.analytics.metrics import run_metrics
    from hflite.engine.core import run_backtest
    from hflite.engine.run import backtest, build_result, make_engine, open_store, prepare
    from hflite.engine.signals import compute_signals

    say = progress or (lambda _msg, _frac: None)
    cfg = _portfolio(settings)
    store = store or open_store(settings)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_id = run_id or f"{settings.run.name}-portfolio-{stamp}"
    log = logs.get("hflite.portfolio").bind(run_id=run_id)
    sleeves: list[SleeveRun] = []
    warnings: list[str] = []
    for j, sl in enumerate(cfg.sleeve):
        say(f"sleeve {sl.name}", 0.05 + 0.45 * j / len(cfg.sleeve))
        res = backtest(sleeve_settings(settings, sl), store, run_id=f"{run_id}-{sl.name}")
        sleeves.append(SleeveRun(sl, res, run_metrics(res)))
        if res.halted_at is not None:
            warnings.append(
                f"sleeve {sl.name}: its standalone run hit the drawdown halt at {res.halted_at:%Y-%m-%d} and "
                "took no new entries after it, so its record (what its weight reads) stops moving there"
            )
        log.info("sleeve.done", sleeve=sl.name, final_equity=round(float(res.equity.iloc[-1]), 2))

    say("weights", 0.5)
    names = [sl.name for sl in cfg.sleeve]
    first = sleeves[0].result
    days = weekday_calendar(first.start, first.end)
    curves = {s.config.name: s.result.equity for s in sleeves}
    equity, returns = daily_table(curves, days, settings.run.initial_cash)
    plan = schedule(names, days, equity, returns, cfg, settings.run.initial_cash)

    say("combined run", 0.6)
    scale = sizing_scale(settings)
    composite = PortfolioStrategy(cfg, plan, scale)
    longest = max(cfg.sleeve, key=lambda sl: composite.strategies[sl.name].warmup())
    data_settings = settings.model_copy(update={"strategy": sleeve_settings(settings, longest).strategy})
    prep = prepare(data_settings, store, progress=say)  # the longest warm-up loads enough history
    prep = dataclasses.replace(prep, settings=settings, strategy=composite)
    signals = compute_signals(composite, prep.md)
    engine_prep = dataclasses.replace(prep, settings=_engine_settings(settings, scale))
    engine = make_engine(engine_prep, signals)
    t0 = time.perf_counter()
    run_backtest(engine)
    elapsed = time.perf_counter() - t0
    say("building results", 0.9)
    result = build_result(engine, prep, run_id)
    result.config["strategy"] = {"name": "portfolio", "sleeves": names}
    result.stats.update({"engine_seconds": elapsed, "steps": float(engine.steps)})
    metrics = run_metrics(result)
    log.info("portfolio.done", final_equity=round(float(result.equity.iloc[-1]), 2), rebalances=len(plan) - 1)
    risk = settings.risk
    base = risk.percent_equity if risk.sizing == "percent_equity" else risk.risk_pct
    sleeve_equity = pd.DataFrame(equity, index=days, columns=names)
    return PortfolioResult(
        result, metrics, sleeves, plan, days, sleeve_equity, cfg, base, scale, risk.sizing, warnings
    )
