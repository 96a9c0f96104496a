"""The lab's optimiser: trials per second of ``hflite optimize`` on the full engine and on the research
path, and a 1,000-trial study with 2 worker processes.

Data: the sample's daily symbols over the 10 years 2015-01-02 .. 2024-12-06 (ETH-USD starts in 2017, so
24 symbols, as bench/daily_sample.py). The strategy is the demo's trend (EMA cross):

- ``engine_*``: every daily symbol, ATR stop and the full risk profile, so every trial runs the full
  engine (``ENGINE_TRIALS`` trials, one process);
- ``research_*``: SPY alone, no stop, risk profile ``minimal``: the research path (``RESEARCH_TRIALS``
  trials, one process);
- ``study_1000_*``: the research path, 1,000 trials, ``--workers 2``, TPE: the whole ``run_study`` call
  (spawning the workers, each loading its data, the shared journal). Target: under 60 s.
- ``validate_demo_s``: ``hflite validate`` of ``configs/demo.toml`` with 1,000 Monte Carlo paths per test
  (the library call and its report folder, as the command runs them). Target: under 30 s.

Each study writes to a journal file in a temporary folder (the default storage's kind), so storage and
sampler costs are in the figures; ``*_evaluate_ms`` is the mean backtest alone (from the trials'
``seconds``), ``*_overhead_ms`` the rest of a trial's wall time (sampler, storage, bookkeeping).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss_mb, process_seconds, write

from hflite.config import load_settings
from hflite.data.sample import ensure_sample, sample_symbols
from hflite.data.store import Store
from hflite.lab.optimize import run_study
from hflite.lab.space import parse_space

START, END = "2015-01-02", "2024-12-06"
SPACE = ["fast=5..50", "slow=20..200", "ma=sma,ema"]
ENGINE_TRIALS = 20
RESEARCH_TRIALS = 300
STUDY_TRIALS = 1000
TARGET_STUDY_S = 60.0
TARGET_VALIDATE_S = 30.0
DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.toml"


def _settings(store: Store, symbols: list[str], **sections: dict[str, object]) -> object:
    base: dict[str, object] = {
        "run": {"symbols": symbols, "start": START, "end": END, "benchmarks": ["SPY"]},
        "strategy": {"name": "trend", "ma": "ema", "fast": 20, "slow": 100},
        "data": {"dir": str(store.root)},
        "llm": {"mode": "off"},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}  # type: ignore[dict-item]
    return load_settings(None, base)


def _study(settings: object, store: Store, folder: str, name: str, n: int, workers: int, path: str) -> dict:
    params = parse_space(SPACE)
    t0 = time.perf_counter()
    res = run_study(
        settings,  # type: ignore[arg-type]
        params,
        n_trials=n,
        store=store,
        storage=str(Path(folder) / f"{name}.journal"),
        study_name=name,
        workers=workers,
        seed=0,
        path=path,  # type: ignore[arg-type]
    )
    wall = time.perf_counter() - t0
    trials = [t for t in res.study.trials if t.user_attrs.get("seconds") is not None]
    fresh = [t for t in trials if "duplicate_of" not in t.user_attrs]
    evaluate = sum(t.user_attrs["seconds"] for t in fresh) / max(len(fresh), 1)
    done = res.n_complete + res.n_pruned
    paths = sorted({str(t.user_attrs.get("path")) for t in trials})
    return {
        f"{name}_trials": done,
        f"{name}_pruned": res.n_pruned,
        f"{name}_duplicates": len(trials) - len(fresh),
        f"{name}_s": wall,
        f"{name}_trials_per_s": done / wall,
        f"{name}_evaluate_ms": evaluate * 1e3,
        f"{name}_overhead_ms": (wall * workers / done - evaluate) * 1e3 if workers == 1 else None,
        f"{name}_best_sharpe": res.best_value,
        f"{name}_path": ",".join(paths),
    }


def _validate(store: Store, folder: str) -> dict[str, object]:
    """The demo's validation, as ``hflite validate --config configs/demo.toml`` runs it."""
    from hflite.lab.validate import validate
    from hflite.lab.validate_report import write_validation

    settings = load_settings(DEMO, {"data": {"dir": str(store.root)}})
    t0 = time.perf_counter()
    v = validate(settings, store, paths=1000)
    write_validation(v, Path(folder) / "validate-demo")
    return {"validate_demo_s": time.perf_counter() - t0, "validate_demo_candidates": len(v.candidates.labels)}


def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="hflite-bench-lab-") as tmp:
        store = Store(Path(os.environ.get("HFLITE_BENCH_STORE", Path(tmp) / "store")))
        ensure_sample(store)
        symbols = [s for s in sample_symbols("1d") if s != "ETH-USD"]
        engine = _settings(store, symbols, strategy={"stop_atr": 3.0})
        research = _settings(store, ["SPY"], strategy={"stop_atr": 0}, risk={"profile": "minimal"})
        figures: dict[str, object] = {"symbols": len(symbols), "start": START, "end": END}
        figures |= _study(engine, store, tmp, "engine", ENGINE_TRIALS, 1, "engine")
        figures |= _study(research, store, tmp, "research", RESEARCH_TRIALS, 1, "research")
        figures |= _study(research, store, tmp, "study_1000", STUDY_TRIALS, 2, "research")
        figures |= _validate(store, tmp)
    figures["research_to_engine"] = figures["research_trials_per_s"] / figures["engine_trials_per_s"]  # type: ignore[operator]
    figures["target_study_1000_s"] = TARGET_STUDY_S
    figures["target_met"] = figures["study_1000_s"] < TARGET_STUDY_S  # type: ignore[operator]
    figures["load_avg_1m"] = os.getloadavg()[0]
    figures["cpus"] = os.cpu_count()
    figures["peak_rss_mb"] = peak_rss_mb()
    figures["process_s"] = process_seconds()
    return figures


if __name__ == "__main__":
    f = main()
    print(
        f"optimize, trend on {f['symbols']} daily symbols {START} .. {END}: full engine "
        f"{f['engine_trials_per_s']:.2f} trials/s ({f['engine_evaluate_ms']:.0f} ms a backtest); "
        f"research path (SPY) {f['research_trials_per_s']:.1f} trials/s ({f['research_evaluate_ms']:.1f} ms "
        f"a backtest, {f['research_overhead_ms']:.1f} ms of sampler and storage); 1,000 trials with 2 "
        f"workers in {f['study_1000_s']:.1f} s ({f['study_1000_trials_per_s']:.1f} trials/s); target < "
        f"{TARGET_STUDY_S:g} s: {'met' if f['target_met'] else 'MISSED'} "
        f"; validate demo with 1,000 paths {f['validate_demo_s']:.1f} s (target < {TARGET_VALIDATE_S:g} s) "
        f"(load average {f['load_avg_1m']:.1f})"
    )
    print(write("lab", f))
    sys.exit(0)
