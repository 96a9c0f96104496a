"""Replay: the live runtime driven by recorded bars, with a SQLite journal."""

from __future__ import annotations

from pathlib import Path

from hflite import logs
from hflite.config import Settings
from hflite.data.store import Store
from hflite.engine.core import Engine
from hflite.engine.market import MarketData
from hflite.engine.result import RunResult
from hflite.engine.run import (
    Prepared,
    Progress,
    ai_result,
    build_result,
    llm_result,
    make_engine,
    new_run_id,
    open_store,
    prepare,
)
from hflite.engine.runtime import LiveRuntime, RecordedFeed
from hflite.execution.oms import Journal, MemoryJournal, SqliteJournal
from hflite.strategy.ai import AIEnsemble
from hflite.strategy.base import SignalSet


async def replay(
    settings: Settings,
    store: Store | None = None,
    *,
    speed: float | None = None,
    run_id: str | None = None,
    journal_path: Path | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Replay the configured window bar by bar through the live runtime and return its result."""
    say = progress or (lambda _msg, _frac: None)
    store = store or open_store(settings)
    say("loading data", 0.05)
    prep = prepare(settings, store, progress=say)
    run_id = run_id or f"{new_run_id(settings)}-replay"
    if prep.llm is not None:
        prep.llm.run_id = run_id
    path = (
        journal_path
        if journal_path is not None
        else settings.data.dir.parent / "journal" / f"{run_id}.sqlite"
    )
    journal: Journal = SqliteJournal(path) if path != Path("-") else MemoryJournal()

    def engine_for(md: MarketData, signals: dict[str, SignalSet]) -> Engine:
        live = Prepared(
            prep.settings, prep.store, prep.instruments, prep.strategy, md, prep.start, prep.end, prep.brain
        )
        return make_engine(live, signals, journal, advisor=prep.advisor)

    control = journal if isinstance(journal, SqliteJournal) else None
    runtime = LiveRuntime(prep.md, prep.strategy, engine_for, control)
    snap = journal.risk_state() if isinstance(journal, SqliteJournal) else None
    if snap:  # a restart keeps a halt, pause or kill in force until a human resumes
        runtime.engine.risk.restore(snap)
    log = logs.get("hflite.run").bind(run_id=run_id, mode="replay")
    log.info("run.start", symbols=prep.md.traded, speed=speed or "max", journal=str(path))
    say("replaying bars", 0.2)
    try:
        engine = await runtime.run(RecordedFeed(prep.md, speed))
    finally:
        journal.close()
    say("building results", 0.85)
    live_prep = Prepared(
        prep.settings,
        prep.store,
        prep.instruments,
        prep.strategy,
        runtime.md,
        prep.start,
        prep.end,
        prep.brain,
        prep.llm,
        prep.advisor,
    )
    result = build_result(engine, live_prep, run_id)
    if engine.stopped:  # a kill stopped the runtime: the run ends at its last bar, not the config's end
        result.end = result.equity.index[-1]
        result.warnings.insert(0, f"risk: killed; the runtime stopped flat at {result.end}")
    result.stats.update({"steps": float(engine.steps), "timeline_points": float(runtime.md.length)})
    if prep.brain is not None and isinstance(prep.strategy, AIEnsemble):
        result.ai = ai_result(live_prep, result)
    if prep.llm is not None:
        result.llm = llm_result(live_prep, result, progress=say)
    log.info(
        "run.done",
        steps=engine.steps,
        fills=len(engine.fills),
        final_equity=round(float(result.equity.iloc[-1]), 2),
    )
    if isinstance(journal, SqliteJournal):
        result.stats["journal"] = str(journal.path)  # type: ignore[assignment]
    return result
