"""Parameter search with Optuna: ``hflite optimize``'s engine, and the study ``validate`` reads later.

:func:`run_study` runs trials of one config over a search space (:mod:`hflite.lab.space`) through an
:class:`~hflite.lab.trial.Evaluator`: each trial suggests every parameter, runs the backtest on the
research path or the full engine, and returns the objective(s). A parameter set the config rejects
(``fast >= slow``) is PRUNED with its reason; a run without trades (a NaN Sharpe) scores the worst value
rather than failing. Each trial keeps the main metrics as user attributes, so the study alone is enough to
rank, validate and deflate its best result later (the deflated Sharpe's N is every completed trial).

Storage. A study lives in an Optuna storage, so it can be resumed and shared:

- default: an Optuna journal file, ``<data dir>/../lab/studies.journal`` (``var/lab/studies.journal``
  for ``data.dir = "var/data"``). An append-only log that several local processes share safely (file
  lock) and that replays incrementally. Optuna's SQL storage on a SQLite file costs ~40 ms of ORM and
  commit per trial here (measured: 1,000 trivial trials in 41 s against 14 s for the journal, 5 s in
  memory), more than a research-path trial itself (~15 ms): too slow for the default.
- ``sqlite:///path.db``, ``postgresql+psycopg://user@host/db`` (several machines), any SQLAlchemy URL:
  Optuna's RDB storage. SQLite files get WAL mode and a 60 s busy timeout so several processes can write.
- a file path (or ``journal:<path>``): a journal file there. ``memory``: in this process only.

A study records in its user attributes the config (redacted), the search space, the data window, the
hold-out, the objectives and the code version; resuming it (same name, same storage) with a different
config or space is refused, since its trials would no longer be comparable. ``n_trials`` counts new trials.

Several workers are separate processes (spawned, each loading its own data), sharing the storage; the
trials are split between them exactly, so a study of ``n_trials`` records ``n_trials`` trials.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import math
import multiprocessing
import os
import pickle  # noqa: S403  (only to check that an exception can cross to the parent)
import queue as queue_mod
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.storages import BaseStorage, InMemoryStorage
from optuna.storages.journal import BaseJournalBackend
from optuna.trial import FrozenTrial, TrialState

from hflite import logs
from hflite.config import Settings, redacted
from hflite.data.store import Store
from hflite.engine.sweep import Unsupported
from hflite.lab.space import Param, widest
from hflite.lab.trial import OBJECTIVES, SEARCHABLE, Evaluator, InvalidParams, Path_

log = logs.get(__name__)

#: The metrics each trial keeps as user attributes (with ``path`` and ``seconds``); NaN is stored as None.
METRIC_ATTRS = ("sharpe", "sortino", "calmar", "cagr", "total_return", "max_drawdown", "trades", "hit_rate")
#: Samplers by name; "auto" is TPE for one objective and NSGA-II for several.
SAMPLERS = ("auto", "tpe", "nsga2", "random", "grid")
#: Config keys that name a place on one machine: two machines sharing a study may differ there.
LOCAL_KEYS = ("data.dir", "data.archive_dir", "report.dir", "runtime.journal", "runtime.log_dir")
#: The study user attributes :func:`run_study` writes (``runs`` grows by one entry per run).
STUDY_ATTRS = ("config", "space", "window", "holdout", "objectives", "code_version", "created_utc", "runs")

Progress = Callable[[int, int, float | None], None]


class StudyError(ValueError):
    """A study that cannot be run or resumed as asked (one line: what and why)."""


class StorageError(StudyError):
    """A storage that cannot be opened; the message masks any password in its URL."""


@dataclass
class StudyResult:
    """What a study holds after a run.

    ``n_complete`` and ``n_pruned`` count this run's new trials; ``n_before`` the trials the study had
    already; ``n_total`` every completed trial of the study ever (the N of the deflated Sharpe ratio).
    ``n_distinct`` counts the distinct parameter sets among them (a sampler may suggest a point again: the
    repeat copies the first run's result and names it in its ``duplicate_of`` attribute).
    ``best_params`` (dotted keys) and ``best_value`` are the best of the first objective; with several
    objectives ``best_trials`` is the Pareto front.
    """

    study: optuna.Study
    study_name: str
    storage: str  # the URL or path, password masked
    settings: Settings
    params: list[Param]
    objectives: tuple[str, ...]
    sampler: str
    path: str
    holdout: str | None
    best_params: dict[str, Any]
    best_value: float
    best_trials: list[FrozenTrial]
    n_before: int
    n_complete: int
    n_pruned: int
    n_total: int
    seconds: float
    trials_per_second: float
    n_distinct: int = 0
    workers: int = 1

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o][1] for o in self.objectives]


# ------------------------------------------------------------------------------------------- storage


def default_storage(settings: Settings) -> str:
    """The journal file studies go to when no storage is named: ``lab/studies.journal`` beside the
    data folder (``var/lab/studies.journal`` for the default ``data.dir = "var/data"``)."""
    return str(Path(settings.data.dir).expanduser().parent / "lab" / "studies.journal")


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (as printed in messages and the report)."""
    if "://" in url:
        try:
            from sqlalchemy.engine import make_url

            return make_url(url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001, S110  (not a SQLAlchemy URL: fall through to the generic mask)
            pass
    from hflite.redact import redact

    return redact(url)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
    cur.execute("PRAGMA synchronous=NORMAL")  # a commit is not an fsync (WAL stays consistent)
    cur.close()


def open_storage(storage: str | BaseStorage | None, settings: Settings | None = None) -> BaseStorage:
    """An Optuna storage for ``storage`` (see the module docstring); :class:`StorageError` when it cannot
    be opened, naming it (password masked) and why."""
    if isinstance(storage, BaseStorage):
        return storage
    if storage is None:
        if settings is None:
            raise StorageError("no storage named and no config to place the default one")
        storage = default_storage(settings)
    text = str(storage).strip()
    if text in ("memory", ":memory:"):
        return InMemoryStorage()
    try:
        path = _journal_path(text)
        return _rdb(text) if path is None else _journal(path)
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001  (drivers raise anything: name it in one line)
        raise StorageError(f"--storage {mask_url(text)}: cannot open it: {_reason(exc, text)}") from None


def _journal(path: Path) -> BaseStorage:
    from optuna.storages.journal import JournalStorage

    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFile(path))


class JournalFile(BaseJournalBackend):
    """Optuna's journal file format (one JSON operation per line: optuna's own ``JournalFileBackend`` and
    optuna-dashboard read it), appended under an ``flock`` and without an fsync per operation.

    Optuna's backend fsyncs each of a trial's ~15 operations and waits for its lock file with an
    exponential back-off: on this machine that is ~70 ms per trial, five times a research-path trial.
    Here a waiting process wakes as soon as the lock is free, and the file is fsynced by :meth:`sync`
    at the end of a run. A killed process loses nothing (its lines are in the page cache); a power cut
    may lose the last operations, as with any file not yet synced.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.lock_path = f"{self.path}.lock"
        open(self.path, "ab").close()  # noqa: SIM115  (create it: readers expect the file)
        self._offsets: dict[int, int] = {0: 0}

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        """Operations from ``log_number_from`` on; a line still being written is left for the next read."""
        with open(self.path, "rb") as f:
            start = log_number_from if log_number_from in self._offsets else 0
            f.seek(self._offsets[start])
            for number, line in enumerate(f, start=start):
                if not line.endswith(b"\n"):
                    return  # another process is appending it
                self._offsets.setdefault(number + 1, self._offsets[number] + len(line))
                if number >= log_number_from:
                    yield json.loads(line)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(op, separators=(",", ":")) for op in logs) + "\n").encode("utf-8")
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with open(self.path, "ab") as f:  # one write of whole lines: readers never see a torn one
                f.write(data)
        finally:
            os.close(fd)  # releases the lock

    def sync(self) -> None:
        """Flush the file to disk (at the end of a run)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _journal_path(storage: str | None) -> Path | None:
    """The journal file a storage string names (None for a database URL or ``memory``)."""
    if storage is None:
        return None
    text = storage.strip()
    if text in ("memory", ":memory:") or ("://" in text and not text.startswith("journal:")):
        return None
    return Path(text.removeprefix("journal:")).expanduser()


def sync_storage(storage: str | None) -> None:
    """fsync a journal file (a no-op for databases, which commit durably themselves)."""
    path = _journal_path(storage)
    if path is not None and path.exists():
        JournalFile(path).sync()


def _rdb(url: str) -> BaseStorage:
    from sqlalchemy import event
    from sqlalchemy.engine import make_url

    parsed = make_url(url)  # a malformed URL raises here, before any driver import
    kwargs: dict[str, Any] = {}
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite:
        db = parsed.database
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 60.0}  # wait for another process's write, do not fail
    else:
        kwargs["pool_pre_ping"] = True  # a server restarted between two trials is reconnected
        if parsed.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": 10}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    if sqlite:
        event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()  # the connections made while creating the tables lack the pragmas
    return storage


def _reason(exc: BaseException, url: str) -> str:
    """The driver's own first line (``connection refused``, ``password authentication failed``),
    without SQLAlchemy's wrapping and never with the password."""
    from sqlalchemy.exc import NoSuchModuleError

    from hflite.redact import redact

    inner = getattr(exc, "orig", None) or exc
    if isinstance(exc, NoSuchModuleError):
        scheme = url.split("://", 1)[0]
        text = f"unknown scheme {scheme!r} (give a file path, sqlite:///file.db or postgresql+psycopg://...)"
    elif isinstance(exc, ModuleNotFoundError):
        text = f"{exc} (install the postgres extra: pip install 'hflite[postgres]')"
    else:
        text = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    password = None
    if "://" in url:
        with contextlib.suppress(Exception):
            from sqlalchemy.engine import make_url

            password = make_url(url).password
    if password:
        text = text.replace(str(password), "***")
    return redact(text)


# -------------------------------------------------------------------------------------------- samplers


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Random search whose draw for a parameter depends only on (seed, trial number, parameter name):
    the same study draws the same points whether one process or several ran it (trial numbers are
    unique and consecutive in a storage), unlike ``RandomSampler``, whose stream is per process."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        entropy = [self.seed, trial.number, zlib.crc32(param_name.encode())]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        return optuna.samplers.RandomSampler(seed=seed).sample_independent(
            study, trial, param_name, param_distribution
        )


def resolve_sampler(name: str, objectives: Sequence[str]) -> str:
    """``auto`` -> ``tpe`` (one objective) or ``nsga2`` (several); others as given, checked."""
    if name not in SAMPLERS:
        raise StudyError(f"--sampler: expected one of {', '.join(SAMPLERS)}, got {name!r}")
    if name == "auto":
        return "tpe" if len(objectives) == 1 else "nsga2"
    return name


def make_sampler(
    name: str, objectives: Sequence[str], seed: int, *, worker: int = 0, workers: int = 1, n_trials: int = 100
) -> optuna.samplers.BaseSampler:
    """The sampler of one process. TPE and NSGA-II get ``seed + worker`` (two processes drawing the same
    stream would duplicate each other's points); random search is seeded per trial number; the grid's
    points are enqueued by :func:`run_study`, so its sampler never draws."""
    kind = resolve_sampler(name, objectives)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed + worker,
                multivariate=True,
                constant_liar=workers > 1,
            )
        if kind == "nsga2":
            population = max(8, min(50, n_trials // 5))
            return optuna.samplers.NSGAIISampler(seed=seed + worker, population_size=population)
    return TrialSeededSampler(seed)


def grid_points(params: Sequence[Param]) -> list[dict[str, Any]]:
    """Every point of a finite space (choices, integer ranges, stepped float ranges), in order."""
    axes: list[list[Any]] = []
    for p in params:
        d = p.dist
        if isinstance(d, CategoricalDistribution):
            axes.append(list(d.choices))
        elif isinstance(d, IntDistribution):
            axes.append(list(range(d.low, d.high + 1, d.step)))
        elif isinstance(d, FloatDistribution) and d.step is not None:
            n = int(math.floor((d.high - d.low) / d.step + 1e-9))
            axes.append([round(d.low + i * d.step, 12) for i in range(n + 1)])
        else:
            lo, hi = p.bounds() or ("lo", "hi")
            raise StudyError(
                f"--sampler grid: {p.name} is a continuous range: give it a step "
                f"(e.g. {p.name}={lo}..{hi}:0.25)"
            )
    points: list[dict[str, Any]] = [{}]
    for p, axis in zip(params, axes, strict=True):
        points = [{**pt, p.key: v} for pt in points for v in axis]
    return points


# -------------------------------------------------------------------------------------------- trials


def suggest(trial: optuna.Trial, p: Param) -> Any:
    """Suggest ``p`` by its distribution, named by its dotted config key."""
    d = p.dist
    if isinstance(d, IntDistribution):
        return trial.suggest_int(p.key, d.low, d.high, step=d.step, log=d.log)
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(p.key, d.low, d.high, step=d.step, log=d.log)
    assert isinstance(d, CategoricalDistribution)
    return trial.suggest_categorical(p.key, d.choices)


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def make_objective(
    evaluator: Evaluator, params: Sequence[Param], objectives: Sequence[str]
) -> Callable[[optuna.Trial], float | list[float]]:
    """The Optuna objective: suggest, evaluate, keep the metrics, prune a rejected parameter set. A point
    this process already ran is not run again: the trial copies its result and names it in
    ``duplicate_of`` (it still counts as a trial: the sampler spent it)."""

    seen: dict[str, tuple[int, dict[str, Any], list[float]]] = {}  # params -> (trial, attrs, scores)

    def objective(trial: optuna.Trial) -> float | list[float]:
        values = {p.key: suggest(trial, p) for p in params}
        key = json.dumps(values, sort_keys=True, default=str)
        if key in seen:  # a sampler may suggest a point again: the backtest is deterministic, reuse it
            number, cached, scores = seen[key]
            for name, value in cached.items():
                trial.set_user_attr(name, value)
            trial.set_user_attr("duplicate_of", number)
            return scores[0] if len(scores) == 1 else scores
        try:
            outcome = evaluator.evaluate(values)
        except InvalidParams as exc:
            trial.set_user_attr("invalid", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        except Unsupported as exc:  # path="research" on a config that needs the engine
            raise StudyError(f"--path research: {exc} (use --path auto or engine)") from None
        attrs: dict[str, Any] = {k: _finite(outcome.metrics.get(k)) for k in METRIC_ATTRS}
        attrs["path"] = outcome.path
        attrs["seconds"] = round(outcome.seconds, 5)
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
        scores = [outcome.value(o) for o in objectives]  # NaN (no trades) -> the worst value
        seen[key] = (trial.number, attrs, scores)
        return scores[0] if len(scores) == 1 else scores

    return objective


# ------------------------------------------------------------------------------------- the fingerprint


def space_record(params: Sequence[Param]) -> list[dict[str, Any]]:
    """The search space as plain data: key, Optuna distribution (JSON) and a readable description."""
    return [{"key": p.key, "dist": distribution_to_json(p.dist), "describe": p.describe()} for p in params]


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): node}


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (flattened to dotted keys) without :data:`LOCAL_KEYS`: what must match to resume."""
    flat = _flat(json.loads(json.dumps(config, default=str)))
    return {k: v for k, v in flat.items() if k not in LOCAL_KEYS}


def fingerprint(settings: Settings, params: Sequence[Param], objectives: Sequence[str]) -> str:
    """A short hash of what makes trials comparable: the config (minus local paths), space, objectives."""
    payload = {
        "config": comparable_config(redacted(settings)),
        "space": space_record(params),
        "objectives": list(objectives),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def default_study_name(settings: Settings, params: Sequence[Param], objectives: Sequence[str]) -> str:
    """``<run name>-<objectives>-<8 hex of the fingerprint>``: the same command resumes the same study."""
    return f"{settings.run.name}-{'-'.join(objectives)}-{fingerprint(settings, params, objectives)[:8]}"


@functools.cache
def _code_version() -> str:
    try:
        from hflite.ai.registry import code_version

        return code_version()
    except Exception:  # noqa: BLE001  (the version is a record, never a reason to fail)
        from hflite import __version__

        return f"{__version__}+unknown"


def _check_resume(
    study: optuna.Study, name: str, settings: Settings, params: Sequence[Param], objectives: Sequence[str]
) -> None:
    """Refuse (one line) to add trials that would not be comparable with the study's own."""
    attrs = study.user_attrs
    if "space" not in attrs:
        raise StudyError(
            f"study {name!r} was not made by hflite optimize (no recorded space): use another --study"
        )
    old_obj = list(attrs.get("objectives", []))
    if old_obj != list(objectives):
        raise StudyError(
            f"study {name!r} optimises {', '.join(old_obj)}, not {', '.join(objectives)}: "
            "use another --study name to search other objectives"
        )
    old_space = {s["key"]: s for s in attrs["space"]}
    new_space = {s["key"]: s for s in space_record(params)}
    if old_space.keys() != new_space.keys() or any(
        json.loads(old_space[k]["dist"]) != json.loads(new_space[k]["dist"]) for k in new_space
    ):
        diffs = [
            f"{k.removeprefix('strategy.')} {old_space[k]['describe'] if k in old_space else '(absent)'} -> "
            f"{new_space[k]['describe'] if k in new_space else '(absent)'}"
            for k in sorted(old_space.keys() | new_space.keys())
            if k not in old_space or k not in new_space or old_space[k]["dist"] != new_space[k]["dist"]
        ]
        raise StudyError(
            f"study {name!r} has another search space ({'; '.join(diffs[:4])}): "
            "resume it with the same --param values, or use another --study name"
        )
    old_cfg = comparable_config(attrs.get("config", {}))
    new_cfg = comparable_config(redacted(settings))
    changed = sorted(k for k in old_cfg.keys() | new_cfg.keys() if old_cfg.get(k) != new_cfg.get(k))
    if changed:
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise StudyError(
            f"study {name!r} was run with another config (differs in {', '.join(changed[:4])}{more}): "
            "resume it with the same config, window and hold-out, or use another --study name"
        )


def _record_run(study: optuna.Study, entry: dict[str, Any]) -> None:
    runs = list(study.user_attrs.get("runs", []))
    runs.append(entry)
    study.set_user_attr("runs", runs)


def open_study(
    study_name: str, storage: str | BaseStorage | None, settings: Settings | None = None
) -> optuna.Study:
    """Load an existing study (for ``validate`` and the report); :class:`StudyError` naming the studies
    the storage holds when there is no such one."""
    store = open_storage(storage, settings)
    names = optuna.get_all_study_names(store)
    if study_name not in names:
        where = mask_url(str(storage)) if storage is not None else "the default storage"
        held = ", ".join(sorted(names)[:10]) or "none"
        raise StudyError(f"--study {study_name}: no such study in {where} (it holds: {held})")
    return optuna.load_study(study_name=study_name, storage=store)


# ------------------------------------------------------------------------------------------- running


@dataclass(frozen=True)
class _Job:
    """What a worker process needs to run its share (picklable: no storage, store or evaluator objects)."""

    settings: Settings
    params: tuple[Param, ...]
    objectives: tuple[str, ...]
    storage: str
    study_name: str
    sampler: str
    seed: int
    warmup: int | None
    path: Path_
    store_root: str | None
    archive_root: str | None
    n_trials: int
    timeout: float | None
    worker: int = 0
    workers: int = 1


def _quiet_optuna() -> None:
    """Optuna logs every trial (INFO) and a failed trial's traceback (WARNING): the error itself reaches
    the caller, as one line at the CLI."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _worker(job: _Job, results: Any) -> None:
    """One worker process: its own storage connection, evaluator and sampler; its share of the trials."""
    try:
        _quiet_optuna()
        store = Store(job.store_root, archive_root=job.archive_root) if job.store_root else None
        evaluator = Evaluator(job.settings, store, warmup=job.warmup, path=job.path)
        sampler = make_sampler(
            job.sampler,
            job.objectives,
            job.seed,
            worker=job.worker,
            workers=job.workers,
            n_trials=job.n_trials,
        )
        study = optuna.load_study(
            study_name=job.study_name, storage=open_storage(job.storage), sampler=sampler
        )
        study.optimize(
            make_objective(evaluator, job.params, job.objectives), n_trials=job.n_trials, timeout=job.timeout
        )
        sync_storage(job.storage)
        results.put((job.worker, None))
    except BaseException as exc:  # noqa: BLE001  (handed to the parent, which raises it)
        try:
            pickle.dumps(exc)  # the queue pickles in a thread of its own: check here, where it can be caught
        except Exception:  # noqa: BLE001  (an exception that does not pickle: its text)
            exc = StudyError(f"{type(exc).__name__}: {exc}")
        results.put((job.worker, exc))


def _split(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _finished(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def _best_of(trials: Sequence[FrozenTrial], direction: str) -> float | None:
    values = [t.values[0] for t in trials if t.state == TrialState.COMPLETE and t.values]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def _run_parallel(
    job: _Job, study: optuna.Study, workers: int, before: int, progress: Progress | None, direction: str
) -> None:
    """Run ``job`` in ``workers`` spawned processes (trials split exactly), report progress from the
    shared storage, and raise the first worker's error (stopping the others)."""
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold threads and locks
    results = ctx.Queue()
    procs = {
        i: ctx.Process(
            target=_worker,
            args=(replace(job, n_trials=n, worker=i, workers=workers), results),
            name=f"hflite-optimize-{i}",
            daemon=True,
        )
        for i, n in enumerate(_split(job.n_trials, workers))
        if n
    }
    for p in procs.values():
        p.start()
    pending = dict(procs)
    error: BaseException | None = None
    silent: dict[int, int] = {}  # worker -> polls since it exited without a word
    last = -1
    try:
        while pending and error is None:
            with contextlib.suppress(queue_mod.Empty):
                worker, error = results.get(timeout=0.5)
                pending.pop(worker, None)
            error = error or _dead_worker(pending, silent)
            if progress is not None:
                last = _report_progress(study, before, job.n_trials, direction, progress, last)
    except BaseException:
        error = error or StudyError("interrupted")
        raise
    finally:
        if error is not None:
            for p in procs.values():
                p.terminate()
        for p in procs.values():
            p.join()
        results.close()
    if error is not None:
        raise error


def _dead_worker(pending: dict[int, Any], silent: dict[int, int]) -> StudyError | None:
    """An error for a worker that exited without reporting (killed, or its last message lost)."""
    for worker, p in pending.items():
        if not p.is_alive():
            silent[worker] = silent.get(worker, 0) + 1
            if p.exitcode != 0 or silent[worker] > 4:  # a clean exit gets 2 s for its message to arrive
                return StudyError(f"optimize worker {p.name} died (exit code {p.exitcode})")
    return None


def _report_progress(
    study: optuna.Study, before: int, total: int, direction: str, progress: Progress, last: int
) -> int:
    done = _finished(study)
    if len(done) - before != last:
        last = len(done) - before
        progress(min(last, total), total, _best_of(done, direction))
    return last


def run_study(
    settings: Settings,
    params: list[Param],
    *,
    objectives: Sequence[str] = ("sharpe",),
    n_trials: int = 100,
    store: Store | None = None,
    storage: str | BaseStorage | None = None,
    study_name: str | None = None,
    workers: int = 1,
    seed: int = 0,
    sampler: str = "auto",
    warmup: int | None = None,
    path: Path_ = "auto",
    progress: Progress | None = None,
    evaluator: Evaluator | None = None,
    timeout: float | None = None,
    holdout: str | None = None,
) -> StudyResult:
    """Run ``n_trials`` new trials of ``params`` on ``settings`` (used as given: the caller cuts the
    hold-out off, and passes its first day as ``holdout`` to record it) and return the study's result.

    ``storage``: a URL, a path, ``"memory"`` or an Optuna storage (default :func:`default_storage`);
    ``study_name`` defaults to :func:`default_study_name`, so the same command resumes the same study.
    ``workers`` > 1 runs that many processes against a storage they can share (not ``memory``).
    ``progress(done, total, best)`` is called as trials finish. ``evaluator`` reuses loaded data (one
    process only); ``warmup`` defaults to the longest lookback in the space.
    """
    objectives = tuple(objectives)
    _check_args(objectives, n_trials, workers, storage, evaluator, path)
    fixed = sorted({p.key for p in params if p.key.split(".")[0] not in SEARCHABLE})
    if fixed:
        raise StudyError(
            f"--param {fixed[0]}: only {', '.join(SEARCHABLE)} parameters can be searched "
            "(the others change the data a run reads)"
        )
    kind = resolve_sampler(sampler, objectives)
    points = grid_points(params) if kind == "grid" else None
    if warmup is None:
        warmup = default_warmup(settings, params)
    url = (
        storage if isinstance(storage, str) else (None if storage is not None else default_storage(settings))
    )
    shown = mask_url(url) if url is not None else type(storage).__name__
    the_storage = open_storage(url if url is not None else storage, settings)
    name = study_name or default_study_name(settings, params, objectives)
    directions = [OBJECTIVES[o][1] for o in objectives]
    _quiet_optuna()

    study, before = _create_or_resume(
        the_storage, name, settings, params, objectives, directions, holdout, shown
    )
    n_new = n_trials
    if points is not None:
        n_new = _enqueue_grid(study, params, points, n_trials, seed)
    _record_run(
        study,
        {
            "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "code_version": _code_version(),
            "trials": n_new,
            "workers": workers,
            "sampler": kind,
            "seed": seed,
            "path": path,
        },
    )
    log.info("optimize.start", study=name, storage=shown, trials=n_new, before=sum(before), workers=workers)
    t0 = time.perf_counter()
    if n_new > 0:
        if workers > 1:
            if store is None:  # import the sample here once, not in two workers at the same time
                from hflite.engine.run import open_store

                store = open_store(settings)
            job = _Job(
                settings, tuple(params), objectives, str(url), name, kind, seed, warmup, path,
                str(store.root) if store is not None else None,
                str(store.archive_root) if store is not None and store.archive_root is not None else None,
                n_new, timeout, 0, workers,
            )  # fmt: skip
            _run_parallel(job, study, workers, sum(before), progress, directions[0])
        else:
            ev = evaluator or Evaluator(settings, store, warmup=warmup, path=path)
            study.sampler = make_sampler(kind, objectives, seed, n_trials=n_new)
            study.optimize(
                make_objective(ev, params, objectives),
                n_trials=n_new,
                timeout=timeout,
                callbacks=[_progress_callback(progress, study, n_new, directions[0])] if progress else [],
            )
    seconds = time.perf_counter() - t0
    sync_storage(url)
    result = _result(study, name, shown, settings, params, objectives, kind, path, holdout, before, seconds)
    result.workers = workers
    log.info("optimize.done", study=name, new=result.n_complete + result.n_pruned, seconds=round(seconds, 2))
    return result


def default_warmup(settings: Settings, params: Sequence[Param]) -> int:
    """Bars of warm-up that serve every trial: the widest integer value + 1, or the strategy's own
    warm-up at the widest values when longer (one data load then fits the whole search)."""
    from hflite.lab.trial import derive
    from hflite.strategy.builtin import make_strategy

    wide = widest(list(params))
    bars = max((int(v) + 1 for v in wide.values()), default=0)
    with contextlib.suppress(Exception):  # e.g. fast's high end above slow's: the integer bound stands
        s = derive(settings, wide)
        bars = max(bars, int(make_strategy(s.strategy.name, s.strategy.params()).warmup()))
    return bars


def _check_args(
    objectives: tuple[str, ...],
    n_trials: int,
    workers: int,
    storage: str | BaseStorage | None,
    evaluator: Evaluator | None,
    path: str,
) -> None:
    if not objectives:
        raise StudyError("give at least one objective, e.g. sharpe")
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise StudyError(f"--objective {unknown[0]}: unknown; expected one of {', '.join(OBJECTIVES)}")
    if len(set(objectives)) != len(objectives):
        raise StudyError("--objective: an objective is given twice")
    if n_trials < 0:
        raise StudyError(f"--trials: expected 0 or more, got {n_trials}")
    if workers < 1:
        raise StudyError(f"--workers: expected 1 or more, got {workers}")
    if path not in ("auto", "engine", "research"):
        raise StudyError(f"--path: expected auto, engine or research, got {path!r}")
    if workers > 1:
        if isinstance(storage, BaseStorage) or (
            isinstance(storage, str) and storage.strip() in ("memory", ":memory:")
        ):
            raise StudyError(
                "--workers: several processes need a storage they can share (a file or a database URL), "
                "not one held in this process"
            )
        if evaluator is not None:
            raise StudyError("an evaluator holds this process's data: several workers each load their own")


def _create_or_resume(
    storage: BaseStorage,
    name: str,
    settings: Settings,
    params: Sequence[Param],
    objectives: Sequence[str],
    directions: Sequence[Literal["maximize", "minimize"]],
    holdout: str | None,
    shown: str,
) -> tuple[optuna.Study, tuple[int, int]]:
    """The study ``name`` (created with its records, or resumed after the comparability check) and the
    numbers of completed and pruned trials it had already."""
    exists = name in optuna.get_all_study_names(storage)
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, directions=directions, load_if_exists=True
        )
    except ValueError as exc:  # an existing study with other directions
        raise StudyError(f"study {name!r} in {shown}: {exc}") from None
    if exists:
        _check_resume(study, name, settings, params, objectives)
        done = _finished(study)
        pruned = sum(1 for t in done if t.state == TrialState.PRUNED)
        log.info("optimize.resume", study=name, trials=len(done))
        return study, (len(done) - pruned, pruned)
    records = {
        "config": redacted(settings),
        "space": space_record(params),
        "window": {
            "start": str(settings.run.start),
            "end": str(settings.run.end),
            "frequency": settings.run.frequency,
            "symbols": list(settings.run.symbols),
        },
        "holdout": holdout,
        "objectives": list(objectives),
        "code_version": _code_version(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for key, value in records.items():
        study.set_user_attr(key, value)
    return study, (0, 0)


def _enqueue_grid(
    study: optuna.Study, params: Sequence[Param], points: list[dict[str, Any]], n_trials: int, seed: int
) -> int:
    """Queue up to ``n_trials`` grid points the study has not evaluated (in a seeded random order, so a
    partial grid is an unbiased sample); returns how many trials to run. Queued trials are taken
    atomically by the workers, so no point runs twice."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    seen = {
        json.dumps(t.params, sort_keys=True, default=str)
        for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        )
    }
    seen |= {json.dumps(t.params or t.system_attrs.get("fixed_params", {}), sort_keys=True) for t in waiting}
    order = np.random.default_rng(seed).permutation(len(points))
    todo = [points[i] for i in order if json.dumps(points[i], sort_keys=True, default=str) not in seen]
    take = max(0, min(n_trials - len(waiting), len(todo)))
    for pt in todo[:take]:
        study.enqueue_trial(pt, skip_if_exists=False)
    return len(waiting) + take


def _progress_callback(
    progress: Progress, study: optuna.Study, total: int, direction: str
) -> Callable[[optuna.Study, FrozenTrial], None]:
    best = _best_of(_finished(study), direction)
    done = 0

    def callback(_study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal best, done
        done += 1
        if trial.state == TrialState.COMPLETE and trial.values:
            v = trial.values[0]
            if best is None or (v > best if direction == "maximize" else v < best):
                best = v
        progress(done, total, best)

    return callback


def _result(
    study: optuna.Study,
    name: str,
    shown: str,
    settings: Settings,
    params: list[Param],
    objectives: tuple[str, ...],
    kind: str,
    path: str,
    holdout: str | None,
    before: tuple[int, int],
    seconds: float,
) -> StudyResult:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    n_pruned = sum(1 for t in trials if t.state == TrialState.PRUNED)
    best_params: dict[str, Any] = {}
    best_value = math.nan
    best_trials: list[FrozenTrial] = []
    if complete:
        top = top_trials(study, objectives, 1)[0]
        best_params, best_value = dict(top.params), float(top.values[0])
        best_trials = list(study.best_trials) if len(objectives) > 1 else [top]
    new_complete, new_pruned = len(complete) - before[0], n_pruned - before[1]
    return StudyResult(
        study=study,
        study_name=name,
        storage=shown,
        settings=settings,
        params=params,
        objectives=objectives,
        sampler=kind,
        path=path,
        holdout=holdout,
        best_params=best_params,
        best_value=best_value,
        best_trials=best_trials,
        n_before=sum(before),
        n_complete=new_complete,
        n_pruned=new_pruned,
        n_total=len(complete),
        n_distinct=len({json.dumps(t.params, sort_keys=True, default=str) for t in complete}),
        seconds=seconds,
        trials_per_second=(new_complete + new_pruned) / seconds if seconds > 0 else math.nan,
    )


def top_trials(study: optuna.Study, objectives: Sequence[str], n: int = 10) -> list[FrozenTrial]:
    """The ``n`` best completed trials by the first objective, one per parameter set (a repeat is left
    out for its first run; ties: the earlier trial first)."""
    direction = OBJECTIVES[objectives[0]][1]
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    sign = -1.0 if direction == "maximize" else 1.0
    out: list[FrozenTrial] = []
    seen: set[str] = set()
    for t in sorted(done, key=lambda t: (sign * t.values[0], t.number)):
        key = json.dumps(t.params, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(t)
            if len(out) == n:
                break
    return out
