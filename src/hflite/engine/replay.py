"""Replay: the live runtime driven by recorded bars, with a SQLite journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from hflite import logs
from hflite.config import Settings
from hflite.data.store import Store
from hflite.engine.core import Engine
from hflite.engine.market import FREQ_NS, MarketData, available_at, build_market
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
from hflite.execution.oms import Journal, JournalLock, MemoryJournal, SqliteJournal
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
    config: str = "",
) -> RunResult:
    """Replay the configured window bar by bar through the live runtime and return its result.

    The runtime owns its journal for the whole run: another runtime on the same journal refuses to
    start (JournalBusyError, before any data is loaded). ``config`` names the config file in the
    owner's details that ``hflite risk`` lists."""
    say = progress or (lambda _msg, _frac: None)
    run_id = run_id or f"{new_run_id(settings)}-replay"
    folder = settings.data.dir.parent / "journal"
    path = journal_path if journal_path is not None else folder / f"{run_id}.sqlite"
    lock = None if path == Path("-") else JournalLock(path)
    if lock is not None:
        lock.acquire(run_id, config, registry=folder)
    try:
        if lock is not None and path.exists():  # not a journal: say so now, not after loading the data
            SqliteJournal(path).close()
        store = store or open_store(settings)
        say("loading data", 0.05)
        prep = prepare(settings, store, progress=say)
        journal: Journal = SqliteJournal(path, owner=lock) if lock is not None else MemoryJournal()
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return await _run(prep, journal, run_id, speed, say)


async def _run(
    prep: Prepared, journal: Journal, run_id: str, speed: float | None, say: Progress
) -> RunResult:
    if prep.llm is not None:
        prep.llm.run_id = run_id

    def engine_for(md: MarketData, signals: dict[str, SignalSet]) -> Engine:
        live = Prepared(
            prep.settings, prep.store, prep.instruments, prep.strategy, md, prep.start, prep.end, prep.brain
        )
        return make_engine(live, signals, journal, advisor=prep.advisor)

    log = logs.get("hflite.run").bind(run_id=run_id, mode="replay")
    try:  # the journal is closed (and its ownership given up) whatever happens
        if isinstance(journal, SqliteJournal):
            # A journal that already decided bar-times resumes after the last one: the bars before
            # it are re-run with nothing written or sent, so the state is the one it had.
            from hflite.engine.live import Session, recorded_events

            done = journal.progress()
            resume_ts = done[1] if done else None
            session = Session(prep, journal, None, run_id=run_id, resume_ts=resume_ts)
            runtime = session.build()
            snap = journal.risk_state() if resume_ts is None else None
            if snap:  # an old journal (no decided bar-times): its halt, pause or kill stays in force
                runtime.engine.risk.restore(snap)
            feed: Any = recorded_events(prep.md, speed, resume_ts)
        else:
            session = None
            runtime = LiveRuntime(prep.md, prep.strategy, engine_for, None)
            feed = RecordedFeed(prep.md, speed)
        where = str(journal.path) if isinstance(journal, SqliteJournal) else "-"
        log.info("run.start", symbols=prep.md.traded, speed=speed or "max", journal=where)
        say("replaying bars", 0.2)
        engine = await runtime.run(feed)
        if session is not None and session.recovering:
            session.go_live()
    finally:
        journal.close()
    say("building results", 0.85)
    end = prep.end
    if engine.stopped:  # only the bars up to the kill were replayed: data warnings and benchmarks end there
        runtime.md.warnings = covered_warnings(prep, int(runtime.md.timeline[-1]))
        end = pd.Timestamp(int(runtime.md.timeline[-1]), unit="ns", tz="UTC")
    live_prep = Prepared(
        prep.settings,
        prep.store,
        prep.instruments,
        prep.strategy,
        runtime.md,
        prep.start,
        end,
        prep.brain,
        prep.llm,
        prep.advisor,
    )
    result = build_result(engine, live_prep, run_id)
    if engine.stopped:  # a kill stopped the runtime: the run ends at its last bar, not the config's end
        result.warnings.insert(0, killed_warning(engine, result.end))
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


def killed_warning(engine: Engine, end: pd.Timestamp) -> str:
    """When the kill took effect and why, and where the runtime stopped (the bars after it were not
    replayed, so they are no data gap)."""
    kills = [e for e in engine.risk.events if e.kind == "kill"]
    if kills:
        when = pd.Timestamp(kills[-1].ts, unit="ns", tz="UTC")
        at = f"killed at {when} ({kills[-1].detail})"
    else:  # restarted on a killed journal: the kill came from an earlier run
        at = f"killed before this start ({engine.risk.state.mode_reason or 'no reason given'})"
    return f"risk: {at}; the runtime stopped flat at {end}; the bars after it were not replayed"


def covered_warnings(prep: Prepared, last_ns: int) -> list[str]:
    """The data warnings of the window a killed run covered (its start to ``last_ns``, the bar-time
    it stopped at): a gap after the kill is in data the run never reached, so it is not reported."""
    freq = prep.settings.run.frequency
    step = pd.Timedelta(FREQ_NS[freq], "ns")
    frames: dict[str, pd.DataFrame] = {}
    for sym, bars in prep.md.bars.items():  # the rows the run read: its first bar to the kill
        pinned = prep.settings.data.pin.get(f"bars/{sym}/{freq}")
        first = pd.Timestamp(int(bars.ts[0]), unit="ns", tz="UTC") - step
        df = prep.store.read_bars(
            sym, freq, first, pd.Timestamp(last_ns, unit="ns", tz="UTC"), version=pinned
        )
        known, _ = available_at(prep.instruments[sym], freq, pd.DatetimeIndex(df["ts"]))
        frames[sym] = df[known <= last_ns]
    md = build_market(frames, prep.instruments, list(prep.md.traded), freq, prep.start, prep.end)
    return md.warnings
