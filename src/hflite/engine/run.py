"""Compose a run from settings: store -> market data -> signals -> engine -> RunResult.

This module is the edge where files, the wall clock (run ids) and pandas live; the engine core
below it has none of them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hflite import logs
from hflite.config import ConfigError, Settings, redacted
from hflite.data.store import DataNotFoundError, Store
from hflite.domain.instrument import AssetClass, Instrument, UnknownInstrumentError, instrument_for
from hflite.domain.order import TimeInForce
from hflite.engine.core import Engine, run_backtest
from hflite.engine.market import FREQ_NS, MarketData, build_market, fx_currencies
from hflite.engine.result import (
    CHECK_COLUMNS,
    FILL_COLUMNS,
    ORDER_COLUMNS,
    RISK_EVENT_COLUMNS,
    RISK_LIMIT_COLUMNS,
    RISK_SPAN_COLUMNS,
    TRADE_COLUMNS,
    VERDICT_COLUMNS,
    RunResult,
)
from hflite.engine.signals import compute_signals
from hflite.execution.costs import (
    AssetClassCommission,
    BpsCommission,
    CommissionModel,
    FixedBpsSlippage,
    PerShareCommission,
    SlippageModel,
    VolatilitySlippage,
)
from hflite.execution.oms import Journal
from hflite.execution.venues.base import Venue
from hflite.execution.venues.sim import SimVenue
from hflite.risk.limits import RiskLimits
from hflite.strategy.ai import AIEnsemble
from hflite.strategy.base import SignalSet, Strategy, attach_market
from hflite.strategy.builtin import make_strategy

if TYPE_CHECKING:
    from hflite.ai.brain import BrainResult
    from hflite.ai.evaluation import AIResult
    from hflite.ai.llm.passes import LLMAdvisor, LLMRunResult
    from hflite.ai.llm.service import LLMService
    from hflite.engine.core import Advisor

#: Bars per year by frequency (annualised volatility for the regime rule).
BARS_PER_YEAR = {"1d": 252.0, "1h": 252.0 * 7, "1m": 252.0 * 390}

#: How far a symbol's stored data may start after the run's start (weekends, holidays).
COVERAGE_SLACK = pd.Timedelta(days=7)

Progress = Callable[[str, float], None]


@dataclass
class Prepared:
    """Everything a run needs before the first step."""

    settings: Settings
    store: Store
    instruments: dict[str, Instrument]
    strategy: Strategy
    md: MarketData
    start: pd.Timestamp
    end: pd.Timestamp
    brain: BrainResult | None = None
    llm: LLMService | None = None  # [llm]: None when its mode is off or no role is on
    advisor: LLMAdvisor | None = None  # [llm] advise: the portfolio-manager pass on entries


def open_store(settings: Settings) -> Store:
    """The configured store, with the embedded sample imported on first use."""
    from hflite.data.sample import ensure_sample

    store = Store(settings.data.dir)
    ensure_sample(store)
    return store


def _ts(d: object) -> pd.Timestamp:
    return pd.Timestamp(d).tz_localize("UTC") if pd.Timestamp(d).tz is None else pd.Timestamp(d)


def prepare(
    settings: Settings, store: Store, progress: Progress | None = None, *, warmup: int | None = None
) -> Prepared:
    """Validate the run against the store and load its market data (with warm-up history); for the
    ``ai_ensemble`` strategy (or ``risk.regime.source = "ai"``) also build the AI brain. ``warmup``
    (bars) raises the strategy's own warm-up, so that one load serves every parameter set of a search."""
    run = settings.run
    start, end = _ts(run.start), _ts(run.end)
    instruments: dict[str, Instrument] = {}
    for sym in run.symbols:
        try:
            instruments[sym] = instrument_for(sym)
        except UnknownInstrumentError:
            raise ConfigError(f"config error: run.symbols: unknown instrument {sym!r}") from None
    strategy = make_strategy(settings.strategy.name, settings.strategy.params())
    for pair, _ in fx_currencies(list(instruments.values())).values():
        if pair not in instruments:
            instruments[pair] = instrument_for(pair)
    optional = _add_risk_instruments(settings, instruments)
    warmup = max(strategy.warmup(), warmup or 0)
    delta = pd.Timedelta(FREQ_NS[run.frequency], "ns")
    lookback = delta * warmup * (1.6 if run.frequency == "1d" else 1.0) + pd.Timedelta(days=14)
    frames: dict[str, pd.DataFrame] = {}
    current = _read_current(store, settings, list(instruments), start - lookback)
    for sym in list(instruments):
        df = current.get(sym)
        if df is None:
            df = _read_symbol(store, settings, sym, start - lookback, required=sym not in optional)
        if df is None:  # an optional index: the risk manager warns and switches the rule off
            del instruments[sym]
            continue
        if sym not in optional:
            _check_coverage(sym, df, start, end, run.frequency)
        frames[sym] = df
    versions = store.versions([f"bars/{s}/{run.frequency}" for s in instruments])
    versions.update({k: v for k, v in settings.data.pin.items() if k in versions})
    md = build_market(frames, instruments, list(run.symbols), run.frequency, start, end, versions)
    if md.length == 0:
        raise ConfigError(f"config error: run.start/run.end: no bars between {run.start} and {run.end}")
    attach_market(strategy, md)  # xsmom ranks the traded symbols; by_regime reads its index
    llm = _llm_service(settings)
    brain = _brain(settings, store, strategy, instruments, start, end, progress, llm)
    advisor = None
    if llm is not None and settings.llm.advise:
        from hflite.ai.llm.passes import LLMAdvisor

        advisor = LLMAdvisor(llm, settings.llm.advise_bounds, brain)
    return Prepared(settings, store, instruments, strategy, md, start, end, brain, llm, advisor)


def _read_symbol(
    store: Store, settings: Settings, sym: str, since: pd.Timestamp, *, required: bool = False
) -> pd.DataFrame | None:
    """One symbol's bars (its pinned version when ``data.pin`` names one); None when they are not
    stored, or with ``required`` a ConfigError naming the field to fix."""
    run = settings.run
    key = f"bars/{sym}/{run.frequency}"
    pinned = settings.data.pin.get(key)
    try:
        return store.read_bars(sym, run.frequency, since, run.end, version=pinned)
    except DataNotFoundError as exc:
        if not required:
            return None
        if pinned:
            raise ConfigError(
                f"config error: data.pin: {key} version {pinned[:12]} is not in the store any more ({exc})"
            ) from None
        field = "run.symbols" if sym in run.symbols else f"run.symbols (FX for {sym})"
        raise ConfigError(
            f"config error: {field}: no {run.frequency} bars for {sym} in the store "
            f"at {store.root} (`hflite data list` shows what is stored)"
        ) from None


def _read_current(
    store: Store, settings: Settings, symbols: list[str], since: pd.Timestamp
) -> dict[str, pd.DataFrame]:
    """The current (unpinned) bars of ``symbols`` in one DuckDB query, each frame as ``read_bars``
    returns it. Empty when any of them is not stored: the caller then reads symbol by symbol and
    names what is missing."""
    run = settings.run
    wanted = [s for s in symbols if f"bars/{s}/{run.frequency}" not in settings.data.pin]
    if len(wanted) < 2:
        return {}
    try:
        many = store.read_bars_many(wanted, run.frequency, since, run.end)
    except DataNotFoundError:
        return {}
    owner = many["symbol"].to_numpy(dtype=object)  # sorted by symbol, then ts
    bars = many.drop(columns="symbol")
    out = {}
    for sym in wanted:
        lo, hi = owner.searchsorted(sym, "left"), owner.searchsorted(sym, "right")
        out[sym] = bars.iloc[lo:hi].reset_index(drop=True)
    return out


def _llm_service(settings: Settings) -> LLMService | None:
    """The run's LLM service (``[llm]``), or None when its mode is off or no role is on."""
    cfg = settings.llm
    if cfg.mode == "off" or not (cfg.explain or cfg.advise or cfg.summarise):
        return None
    import sqlite3

    from hflite.ai.llm.service import LLMService

    try:
        service = LLMService(cfg, base_dir=Path.cwd())
    except ValueError as exc:  # a malformed tape names its file and line
        raise ConfigError(f"config error: llm.tapes: {exc}") from None
    except sqlite3.Error as exc:
        raise ConfigError(
            f"config error: llm.journal: {cfg.journal} is not a readable journal ({exc})"
        ) from None
    cut = service.stats.cutoff
    if cfg.mode == "live" and cut is not None and pd.Timestamp(settings.run.start).date() < cut:
        msg = (
            f"llm: {service.model} has a training cutoff of {cut}; this run's decisions before it are "
            "explained by a model that may know what happened next (the report counts them)"
        )
        service.stats.warnings.append(msg)
        logs.get("hflite.llm").warning("llm.cutoff", model=service.model, cutoff=str(cut))
    return service


def _brain(
    settings: Settings,
    store: Store,
    strategy: Strategy,
    instruments: dict[str, Instrument],
    start: pd.Timestamp,
    end: pd.Timestamp,
    progress: Progress | None,
    llm: LLMService | None = None,
) -> BrainResult | None:
    """The AI brain over the traded symbols when the strategy or the risk regime needs it."""
    needs = isinstance(strategy, AIEnsemble) or settings.risk.regime.source == "ai"
    if not needs:
        return None
    from hflite.ai.brain import think_from_store

    ai = settings.ai
    if not isinstance(strategy, AIEnsemble):  # only the regimes are needed
        ai = ai.model_copy(update={"model": ai.model.model_copy(update={"enabled": False})})
    symbols = list(settings.run.symbols)
    brain = think_from_store(
        store,
        ai,
        symbols,
        instruments,
        start=start,
        end=end,
        base_dir=Path.cwd(),
        progress=progress,
        llm=llm if isinstance(strategy, AIEnsemble) else None,
    )
    if isinstance(strategy, AIEnsemble):
        strategy.attach(brain)
    return brain


def _add_risk_instruments(settings: Settings, instruments: dict[str, Instrument]) -> set[str]:
    """Add the indexes the risk manager reads; they are optional (the rule warns and goes off)."""
    optional: set[str] = set()
    for sym in risk_symbols(settings):
        if sym not in instruments:
            try:
                instruments[sym] = instrument_for(sym)
            except UnknownInstrumentError:
                raise ConfigError(f"config error: risk: unknown index instrument {sym!r}") from None
            optional.add(sym)
    return optional


def _check_coverage(sym: str, df: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, freq: str) -> None:
    ts = df["ts"]  # sorted, as the store returns it
    k = int(ts.searchsorted(start))
    if k == len(ts):
        raise ConfigError(f"config error: run.start: {sym} has no {freq} bars on or after {start.date()}")
    first, last = ts.iloc[k], ts.iloc[-1]
    if first - start > COVERAGE_SLACK:
        raise ConfigError(
            f"config error: run.start: {sym} {freq} data starts {first.date()}, after the run's "
            f"start {start.date()} (start on or after {first.date()}, or drop {sym})"
        )
    if end - last > COVERAGE_SLACK:
        raise ConfigError(
            f"config error: run.end: {sym} {freq} data ends {last.date()}, before the run's "
            f"end {end.date()} (end on or before {last.date()}, or drop {sym})"
        )


def make_limits(settings: Settings) -> RiskLimits:
    """The risk config as the gate's frozen limits. ``risk.profile`` picks the base (``full``: every
    rule at the plan's defaults; ``minimal``: ``RiskLimits.minimal()``); fields set in the config
    override the base, section by section."""
    r = settings.risk
    base = RiskLimits.minimal() if r.profile == "minimal" else RiskLimits()
    changes: dict[str, Any] = {}
    for name in r.model_fields_set:
        if name in ("profile", "events"):
            continue
        value = getattr(r, name)
        if name == "max_asset_class_pct":
            changes[name] = {str(k.value): v for k, v in value.items()}
        elif name in ("breakers", "protections", "regime"):
            sub = {f: getattr(value, f) for f in value.model_fields_set}
            if "scale" in sub:
                sub["scale"] = {str(k): v for k, v in sub["scale"].items()}
            changes[name] = dataclasses.replace(getattr(base, name), **sub)
        else:
            changes[name] = value
    return dataclasses.replace(base, **changes)


def risk_symbols(settings: Settings) -> list[str]:
    """Symbols the risk manager reads besides the traded ones (breaker and regime indexes)."""
    r = settings.risk
    out = []
    if r.breakers.index and r.breakers.index_move_pct:
        out.append(r.breakers.index)
    if r.regime.source == "rule" and r.regime.index:
        out.append(r.regime.index)
    return list(dict.fromkeys(out))


def scheduled_commands(settings: Settings) -> list[tuple[int, str, str]]:
    """``[[risk.events]]`` as (ns UTC, action, reason)."""
    return [
        (int(_ts(e.at).value), e.action, e.reason or f"scheduled in the config for {e.at:%Y-%m-%d %H:%M}")
        for e in settings.risk.events
    ]


def make_costs(settings: Settings) -> tuple[CommissionModel, SlippageModel]:
    ex = settings.execution
    models: dict[AssetClass, CommissionModel] = {}
    for cls, spec in ex.fees.items():
        if spec.model == "per_share":
            models[cls] = PerShareCommission(spec.per_share, spec.minimum, spec.max_pct)
        else:
            models[cls] = BpsCommission(spec.bps, spec.minimum)
    slip: SlippageModel
    if ex.slippage.model == "fixed":
        slip = _FixedPerClass(ex.slippage.bps)
    else:
        slip = VolatilitySlippage(dict(ex.slippage.bps), ex.slippage.range_frac)
    return AssetClassCommission(models), slip


@dataclass(frozen=True, slots=True)
class _FixedPerClass:
    bps: dict[AssetClass, float]

    def slippage(self, instrument: Instrument, price: float, prev_range: float) -> float:
        return FixedBpsSlippage(self.bps.get(instrument.asset_class, 0.0)).slippage(
            instrument, price, prev_range
        )


def make_venue(settings: Settings, instruments: dict[str, Instrument]) -> SimVenue:
    commission, slippage = make_costs(settings)
    return SimVenue(instruments, commission, slippage, settings.execution.max_volume_share)


def new_run_id(settings: Settings) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{settings.run.name}-{settings.strategy.name}-{stamp}"


def backtest(
    settings: Settings,
    store: Store | None = None,
    *,
    run_id: str | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Run a backtest end to end and return its result (nothing written to disk)."""
    say = progress or (lambda _msg, _frac: None)
    store = store or open_store(settings)
    say("loading data", 0.05)
    prep = prepare(settings, store, progress=say)
    run_id = run_id or new_run_id(settings)
    log = logs.get("hflite.run").bind(run_id=run_id, mode="backtest")
    log.info(
        "run.start",
        symbols=prep.md.traded,
        start=str(prep.start.date()),
        end=str(prep.end.date()),
        data_versions={k: v[:12] for k, v in prep.md.versions.items()},
    )
    for warning in prep.md.warnings:
        log.warning("data.gap", detail=warning)
    if prep.llm is not None:
        prep.llm.run_id = run_id
    say("computing signals", 0.2)
    signals = compute_signals(prep.strategy, prep.md)
    say("running the engine", 0.35)
    engine = make_engine(prep, signals, advisor=prep.advisor)
    t0 = time.perf_counter()
    run_backtest(engine)
    elapsed = time.perf_counter() - t0
    say("building results", 0.8)
    result = build_result(engine, prep, run_id)
    log.info(
        "run.done",
        steps=engine.steps,
        engine_s=round(elapsed, 4),
        fills=len(engine.fills),
        final_equity=round(float(result.equity.iloc[-1]), 2),
        halted=engine.risk.state.halted,
    )
    if prep.brain is not None and isinstance(prep.strategy, AIEnsemble):
        say("AI ablation", 0.9)
        result.ai = ai_result(prep, result)
        result.warnings += [w for w in result.ai.warnings if w not in result.warnings]
    if prep.llm is not None:
        say("LLM explanations", 0.95)
        result.llm = llm_result(prep, result, progress=say)
    result.stats.update(
        {
            "engine_seconds": elapsed,
            "steps": float(engine.steps),
            "timeline_points": float(prep.md.length),
            "bars": float(
                sum(int((b.tl[: b.n] >= 0).sum()) for s, b in prep.md.bars.items() if s in prep.md.traded)
            ),
        }
    )
    return result


def ai_result(prep: Prepared, result: RunResult) -> AIResult:
    """The AI section's numbers: the same run with the technical-only score (same engine, risk and
    costs) and an equal-weight buy and hold on the same timeline, next to the ensemble."""
    from hflite.ai.evaluation import build_ai_result, buy_and_hold

    assert prep.brain is not None
    assert isinstance(prep.strategy, AIEnsemble)
    equity = {"ensemble": result.equity}
    if prep.settings.ai.ablation:
        tech = AIEnsemble(prep.strategy.p.model_copy(update={"score": "technical"}))
        tech.attach(prep.brain)
        engine = make_engine(prep, compute_signals(tech, prep.md))
        run_backtest(engine)
        equity["technical"] = pd.Series(engine.equity, index=result.equity.index, name="technical")
    md = prep.md
    usd = {s: md.close_tl[s] * md.fx_tl[prep.instruments[s].currency] for s in md.traded}
    equity["buy_hold"] = buy_and_hold(usd, result.equity.index, result.initial_cash)
    return build_ai_result(
        prep.brain, equity, prep.start, prep.end, list(md.traded), result.verdicts, result.risk_free
    )


def llm_result(prep: Prepared, result: RunResult, progress: Progress | None = None) -> LLMRunResult:
    """The run's LLM work: explanations of its decisions (``[llm] explain``), the advisor's and the
    summaries' tables, and the service's counters. Closes the service."""
    from hflite.ai.llm.passes import LLMRunResult, explain_decisions

    service, cfg = prep.llm, prep.settings.llm
    assert service is not None
    try:
        explanations = None
        if cfg.explain:
            ai_rows = result.ai.decisions if result.ai is not None else None
            say = progress or (lambda _m, _f: None)
            explanations = explain_decisions(
                service,
                result.verdicts,
                ai_rows,
                cfg.explain_scope,
                progress=lambda d, t: say(f"LLM explanations {d}/{t}", 0.95),
            )
        out = LLMRunResult(
            stats=service.stats.as_dict(),
            scope=cfg.explain_scope,
            roles={"explain": cfg.explain, "advise": cfg.advise, "summarise": cfg.summarise},
        )
        if explanations is not None:
            out.explanations = explanations
        if prep.advisor is not None:
            out.advice = prep.advisor.frame()
        if prep.brain is not None and prep.brain.llm_summaries is not None:
            out.summaries = prep.brain.llm_summaries
    finally:
        service.close()
    stats = out.stats
    result.warnings += [w for w in stats["warnings"] if w not in result.warnings]
    if stats["before_cutoff"]:
        result.warnings.append(
            f"llm: {stats['before_cutoff']} LLM answers are about dates before {stats['model']}'s training "
            f"cutoff ({stats['training_cutoff']}): the model may know what happened next"
        )
    if stats["backends_down"]:
        result.warnings.append(f"llm: backends down during the run: {', '.join(stats['backends_down'])}")
    return out


def make_engine(
    prep: Prepared,
    signals: dict[str, SignalSet],
    journal: Journal | None = None,
    advisor: Advisor | None = None,
    venue: Venue | None = None,
    id_prefix: str = "",
) -> Engine:
    """The engine of a run: ``venue`` defaults to the sim venue (backtest, replay, paper);
    ``id_prefix`` prefixes client order ids (``hflite run`` uses the run's name)."""
    s = prep.settings
    if venue is None:
        venue = make_venue(s, {k: v for k, v in prep.instruments.items() if k in prep.md.traded})
    return Engine(
        prep.md,
        signals,
        strategy_name=prep.strategy.name,
        limits=make_limits(s),
        venue=venue,
        initial_cash=s.run.initial_cash,
        tif=TimeInForce(s.execution.tif),
        journal=journal,
        bars_per_year=BARS_PER_YEAR[s.run.frequency],
        scheduled=scheduled_commands(s),
        regime_source=_regime_source(prep),
        advisor=advisor,
        id_prefix=id_prefix,
    )


def _regime_source(prep: Prepared) -> Any:
    """``risk.regime.source = "ai"``: the brain's regimes ([ai.regime]) drive the risk scaling."""
    if prep.settings.risk.regime.source != "ai" or prep.brain is None:
        return None
    from hflite.ai.regime import regime_source

    return regime_source(prep.brain.regimes)


# -- results ------------------------------------------------------------------------------------
def _steps(md: MarketData, log: list[tuple[int, str, float]], key: str, initial: float) -> np.ndarray:
    """A step series on the timeline from (index, key, value-after) changes."""
    out = np.full(md.length, np.nan)
    for i, k, v in log:
        if k == key:
            out[i] = v
    if np.isnan(out[0]):
        out[0] = initial
    idx = np.where(~np.isnan(out), np.arange(md.length), 0)
    np.maximum.accumulate(idx, out=idx)
    return out[idx]


def _to_ts(ns: int | float | None) -> pd.Timestamp | None:
    return None if ns is None else pd.Timestamp(int(ns), tz="UTC")


def _utc_index(ns: np.ndarray, name: str | None = None) -> pd.DatetimeIndex:
    """Int64 ns UTC as a DatetimeIndex: what ``pd.to_datetime(ns, utc=True)`` gives, 40x faster."""
    return pd.DatetimeIndex(np.array(ns, dtype=np.int64).view("M8[ns]"), name=name).tz_localize("UTC")


def build_result(engine: Engine, prep: Prepared, run_id: str) -> RunResult:
    """Turn the engine's state into pandas objects; checks equity = cash + market value."""
    md, pf = prep.md, engine.portfolio
    index = _utc_index(md.timeline)
    cash_usd = np.zeros(md.length)
    for ccy in set(pf.cash) | {"USD"}:
        initial = engine.initial_cash if ccy == "USD" else 0.0
        cash_usd += _steps(md, engine.cash_log, ccy, initial) * md.fx_tl[ccy]
    positions = {}
    for sym in md.traded:
        qty = _steps(md, engine.qty_log, sym, 0.0)
        positions[sym] = qty * md.close_tl[sym] * md.fx_tl[prep.instruments[sym].currency]
    pos_df = pd.DataFrame(positions, index=index)
    mv = pos_df.to_numpy()
    equity = cash_usd + np.nan_to_num(mv).sum(axis=1)
    if not np.allclose(equity, engine.equity, rtol=1e-9, atol=1e-6):
        worst = int(np.nanargmax(np.abs(equity - engine.equity)))
        raise RuntimeError(
            f"accounting mismatch at {index[worst]}: cash+positions {equity[worst]:.6f} "
            f"vs engine equity {engine.equity[worst]:.6f}"
        )
    gross = np.abs(np.nan_to_num(mv)).sum(axis=1)
    net = np.nan_to_num(mv).sum(axis=1)
    s = prep.settings
    result = RunResult(
        run_id=run_id,
        strategy=prep.strategy.name,
        symbols=list(md.traded),
        start=prep.start,
        end=prep.end,
        initial_cash=engine.initial_cash,
        equity=pd.Series(equity, index, name="equity"),
        cash=pd.Series(cash_usd, index, name="cash"),
        gross_exposure=pd.Series(gross, index, name="gross_exposure"),
        net_exposure=pd.Series(net, index, name="net_exposure"),
        positions=pos_df,
        trades=_trades(engine, prep),
        orders=_orders(engine),
        fills=_fills(engine, prep),
        verdicts=_verdicts(engine, prep),
        prices=_prices(md),
        benchmarks={},
        risk_free=pd.Series(0.0, index),
        config=_pinned_config(s, md.versions),
        data_versions=dict(md.versions),
        warnings=list(md.warnings),
        halted_at=_to_ts(md.timeline[engine.halted_at]) if engine.halted_at is not None else None,
        risk_checks=_risk_checks(engine),
        risk_events=_risk_events(engine),
        risk_spans=_risk_spans(engine, md),
        risk_limits=pd.DataFrame(engine.risk.limits.table(), columns=RISK_LIMIT_COLUMNS),
    )
    result.warnings += [w for w in engine.risk.warnings if w not in result.warnings]
    if engine.halted_at is not None:
        rejected = sum(1 for d in engine.decisions if "drawdown_halt" in d.verdict.rules)
        (halt,) = [e for e in engine.risk.events if e.kind == "halt"][:1]
        ends = [s.end for s in engine.risk.spans if s.kind == "halted" and s.end is not None]
        until = f"until a human resumed at {index[ends[0]]}" if ends else "still in force at the end"
        result.warnings.insert(
            0,
            f"risk: new entries halted from {index[engine.halted_at]} ({halt.detail.split(';')[0]}), "
            f"{until}; {rejected} entries rejected by it, exits still allowed",
        )
    _add_benchmarks(result, prep, index)
    return result


def _pinned_config(settings: Settings, versions: dict[str, str]) -> dict[str, object]:
    """The resolved config with ``data.pin`` set to the data versions this run read."""
    config = redacted(settings)
    config["data"]["pin"] = dict(sorted(versions.items()))
    return config


def _fx_at(prep: Prepared, ccy: str, i: int) -> float:
    return float(prep.md.fx_tl[ccy][min(i, prep.md.length - 1)])


def _trades(engine: Engine, prep: Prepared) -> pd.DataFrame:
    md, rows = prep.md, []
    commission = make_costs(prep.settings)[0]  # the config's fee model, whatever venue traded
    last = md.length - 1
    for n, t in enumerate(engine.portfolio.trades):
        inst = prep.instruments[t.symbol]
        bars = md.bars[t.symbol]
        k_in = int(np.searchsorted(bars.tl[: bars.n], t.entry_bar))
        if t.is_open:
            held = t.qty - t.exit_qty
            price = float(md.close_tl[t.symbol][last])
            pnl = t.pnl + (price - t.entry_price) * held * t.direction
            fx = _fx_at(prep, inst.currency, last)
            exit_fee = commission.fee(inst, held, price) * fx
            k_out, exit_ts, exit_price = bars.n - 1, None, price
        else:
            exit_bar = t.exit_bar if t.exit_bar is not None else last
            fx = _fx_at(prep, inst.currency, exit_bar)
            pnl, exit_fee = t.pnl, 0.0
            k_out = int(np.searchsorted(bars.tl[: bars.n], exit_bar))
            exit_ts, exit_price = _to_ts(int(md.timeline[exit_bar])), t.exit_price
        rows.append(
            {
                "trade_id": n + 1,
                "symbol": t.symbol,
                "direction": "long" if t.direction > 0 else "short",
                "qty": t.qty,
                "entry_ts": _to_ts(md.timeline[t.entry_bar]),
                "entry_price": t.entry_price,
                "exit_ts": exit_ts,
                "exit_price": exit_price,
                "pnl": pnl,
                "pnl_usd": pnl * fx,
                "fees_usd": t.fees * fx,
                "return_pct": pnl / (t.entry_price * t.qty) * 100 if t.qty else 0.0,
                "bars_held": k_out - k_in,
                "entry_reason": t.entry_reason,
                "exit_reason": t.exit_reason,
                "is_open": t.is_open,
                "exit_fee_est_usd": exit_fee,
            }
        )
    return pd.DataFrame(rows, columns=TRADE_COLUMNS)


def _orders(engine: Engine) -> pd.DataFrame:
    rows = [
        {
            "order_id": o.id,
            "symbol": o.symbol,
            "side": o.side.value,
            "type": o.type.value,
            "qty": o.qty,
            "price": o.price,
            "tif": o.tif.value,
            "status": o.status.value,
            "filled_qty": o.filled_qty,
            "avg_fill_price": o.avg_fill_price if o.filled_qty else None,
            "created_ts": _to_ts(o.created_ts),
            "closed_ts": _to_ts(o.closed_ts),
            "reason": o.reason,
            "decision_id": o.decision_id,
            "parent_id": o.parent_id,
        }
        for o in engine.orders.values()
    ]
    return pd.DataFrame(rows, columns=ORDER_COLUMNS)


def _fills(engine: Engine, prep: Prepared) -> pd.DataFrame:
    rows = []
    for f in engine.fills:
        fx = _fx_at(prep, prep.instruments[f.symbol].currency, f.bar_index)
        rows.append(
            {
                "order_id": f.order_id,
                "symbol": f.symbol,
                "side": f.side.value,
                "qty": f.qty,
                "price": f.price,
                "notional_usd": f.qty * f.price * fx,
                "fee": f.fee,
                "fee_usd": f.fee * fx,
                "slippage": f.slippage,
                "ts": _to_ts(f.ts),
                "liquidity_capped": f.liquidity_capped,
            }
        )
    return pd.DataFrame(rows, columns=FILL_COLUMNS)


def _verdicts(engine: Engine, prep: Prepared) -> pd.DataFrame:
    """One row per decision: the intent, the gate's verdict, the order it became and the indicators."""
    rows = []
    for d in engine.decisions:
        v, it = d.verdict, d.intent
        rows.append(
            {
                "intent_id": v.intent_id,
                "symbol": v.symbol,
                "ts": _to_ts(v.ts),
                "status": v.status.value,
                "qty_requested": v.qty_requested,
                "qty_approved": v.qty_approved,
                "reason": v.reason,
                "kind": it.kind.value,
                "side": it.side.value,
                "intent_reason": it.reason,
                "price": it.price,
                "atr": it.atr,
                "fx": _fx_at(prep, prep.instruments[it.symbol].currency, it.bar_index),
                "rules": ";".join(v.rules),
                "order_id": d.order_id,
                "values": _values_json(d.values),
            }
        )
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def _values_json(values: dict[str, float]) -> str:
    """Indicator values as strict JSON (NaN and infinities become null)."""
    return json.dumps({k: v if math.isfinite(v) else None for k, v in values.items()}, allow_nan=False)


def _risk_checks(engine: Engine) -> pd.DataFrame:
    """Every check of every verdict, in the order the gate ran them."""
    rows = []
    for d in engine.decisions:
        v = d.verdict
        ts = _to_ts(v.ts)
        rows += [(v.intent_id, v.symbol, ts, c.name, c.value, c.limit, c.passed) for c in v.checks]
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def _risk_events(engine: Engine) -> pd.DataFrame:
    """The manager's state changes and every circuit-breaker trip, by time (ties keep that order)."""
    events = [*engine.risk.events, *engine.risk.breaker_trips()]
    rows = [(_to_ts(e.ts), e.kind, e.symbol, e.detail) for e in events]
    frame = pd.DataFrame(rows, columns=RISK_EVENT_COLUMNS)
    return frame.sort_values("ts", kind="stable", ignore_index=True)


def _risk_spans(engine: Engine, md: MarketData) -> pd.DataFrame:
    """Time under each restriction. A span that outlasts the run (never lifted, or planned to end after
    the last point) has no end and counts up to the last point."""
    last = md.length - 1
    rows = []
    for sp in engine.risk.spans:
        start = min(sp.start, last)
        ended = sp.end is not None and sp.end <= last
        stop = sp.end if ended and sp.end is not None else last
        days = (int(md.timeline[stop]) - int(md.timeline[start])) / 86_400e9
        end_ts = _to_ts(md.timeline[stop]) if ended else None
        rows.append((sp.kind, _to_ts(md.timeline[start]), end_ts, max(days, 0.0), sp.detail))
    return pd.DataFrame(rows, columns=RISK_SPAN_COLUMNS)


def _prices(md: MarketData) -> dict[str, pd.DataFrame]:
    out = {}
    for sym in md.traded:
        b = md.bars[sym]
        live = b.tl[: b.n] >= 0
        out[sym] = pd.DataFrame(
            {
                "open": b.open[: b.n][live],
                "high": b.high[: b.n][live],
                "low": b.low[: b.n][live],
                "close": b.close[: b.n][live],
                "volume": b.volume[: b.n][live],
            },
            index=_utc_index(b.ts[: b.n][live], name="ts"),
        )
    return out


def _add_benchmarks(result: RunResult, prep: Prepared, index: pd.DatetimeIndex) -> None:
    from hflite.analytics.metrics import buy_and_hold, risk_free_daily
    from hflite.engine.market import available_at

    store, s = prep.store, prep.settings
    first, last = prep.start.normalize(), prep.end.normalize()
    for sym in s.run.benchmarks:
        try:
            df = store.read_bars(sym, "1d", prep.start - pd.Timedelta(days=10), s.run.end)
            inst = instrument_for(sym)
        except (DataNotFoundError, UnknownInstrumentError):
            result.warnings.append(f"benchmark {sym}: no daily data in the store; skipped")
            continue
        # the run's window on the benchmark's own calendar, not on the run's timeline: the same curve
        # whatever the run trades (a stocks-only timeline ends before BTC's last midnight close)
        day = pd.DatetimeIndex(pd.to_datetime(df["ts"], utc=True)).normalize()
        inside = (day >= first) & (day <= last)
        if not inside.any():
            result.warnings.append(f"benchmark {sym}: no daily bar between {first.date()} and {last.date()}")
            continue
        window = df[inside]
        avail, _ = available_at(inst, "1d", pd.DatetimeIndex(window["ts"]))
        close = pd.Series(window["close"].to_numpy(), index=_utc_index(avail))
        name = f"{sym} buy & hold"
        result.benchmarks[name] = buy_and_hold(close, result.initial_cash, close.index)
        result.benchmark_last[name] = day[inside][-1]
    try:
        fed = store.read_series("FEDFUNDS")
        result.risk_free = risk_free_daily(fed, index)
        result.benchmark_risk_free = {n: risk_free_daily(fed, c.index) for n, c in result.benchmarks.items()}
    except DataNotFoundError:
        result.warnings.append("risk-free rate: FEDFUNDS not in the store; using 0%")
