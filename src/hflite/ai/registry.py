"""A local model registry: each fitted model in its own folder, with what it was trained on.

``<root>/<model_id>/model.joblib`` (the recurrent kinds: the network's ``model.pt`` state dict beside
the pickled rest, the architecture in the meta) and ``meta.json`` (kind, hyper-parameters, seed,
features, training and test windows, OOS metrics, data and code versions, run). Every entry and every
walk-forward run (``<root>/runs/<run_id>/``: OOS predictions, windows, importance and calibration as
Parquet, plus ``run.json``) is written to a temporary folder and renamed into place, so a reader never
sees half of one. The folders are the index: :meth:`ModelRegistry.list` scans them.

With MLflow installed (the optional ``hflite[mlflow]`` extra) each saved model is also logged as an
MLflow run (parameters, metrics, the model files as artifacts) to ``sqlite:///<root>/mlflow.db`` with
artifacts under ``<root>/mlruns``: local files only, telemetry off.

Loading unpickles files: open only registries you wrote yourself.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import pandas as pd

from hflite.ai.models import Model, ModelUnavailable, RecurrentModel, _import_torch

if TYPE_CHECKING:
    from hflite.ai.walkforward import WalkForwardResult

__all__ = ["ModelNotFoundError", "ModelRegistry", "RegistryError", "code_version", "git_commit"]

_log = logging.getLogger(__name__)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,159}$")
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_RESERVED = {"runs", "mlruns"}
_TABLES = ("predictions", "windows", "importance", "calibration")
MLFLOW_HINT = "pip install mlflow (or the hflite[mlflow] extra)"
#: Columns of :meth:`ModelRegistry.list`, before the OOS metric columns.
LIST_COLUMNS = (
    "id",
    "kind",
    "created",
    "train_start",
    "train_end",
    "test_start",
    "test_end",
    "n_features",
    "features",
    "params",
    "data_version",
    "code_version",
    "run",
    "window",
)
METRIC_COLUMNS = (
    "n_train",
    "n_test",
    "n_scored",
    "hit_rate",
    "auc",
    "brier",
    "log_loss",
    "ic",
    "fwd_ret_up",
    "fwd_ret_down",
)
_TIME_COLUMNS = ("created", "train_start", "train_end", "test_start", "test_end")


class RegistryError(Exception):
    """The registry cannot do what was asked (an id taken or malformed, an unfitted model)."""


class ModelNotFoundError(RegistryError, LookupError):
    """No model (or run) with that id in this registry."""


# ---------------------------------------------------------------------------------------------------
# code version: the package version and the git commit, read from .git without running git


def git_commit(start: Path | None = None) -> str | None:
    """The commit HEAD points at in the first ``.git`` found from ``start`` upwards, or None."""
    start = (start or Path(__file__)).resolve()
    for folder in [start, *start.parents]:
        dot = folder / ".git"
        if dot.is_dir():
            return _head_commit(dot)
        if dot.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = dot.read_text(encoding="utf-8", errors="replace").strip()
            if text.startswith("gitdir:"):
                return _head_commit((folder / text[len("gitdir:") :].strip()).resolve())
            return None
    return None


def _head_commit(gitdir: Path) -> str | None:
    try:
        head = (gitdir / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head if _SHA.match(head) else None  # detached HEAD
    ref = head[len("ref:") :].strip()
    bases = [gitdir]
    common = gitdir / "commondir"
    if common.is_file():
        bases.append((gitdir / common.read_text(encoding="utf-8").strip()).resolve())
    for base in bases:
        loose = base / ref
        if loose.is_file():
            sha = loose.read_text(encoding="utf-8").strip()
            if _SHA.match(sha):
                return sha
    for base in bases:
        packed = base / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref and _SHA.match(parts[0]):
                    return parts[0]
    return None  # an unborn branch


def code_version(start: Path | None = None) -> str:
    """``hflite.__version__`` plus the git commit (``0.1.0+g<12 hex>``), or ``0.1.0+unknown``."""
    from hflite import __version__

    commit = git_commit(start)
    return f"{__version__}+g{commit[:12]}" if commit else f"{__version__}+unknown"


# ---------------------------------------------------------------------------------------------------
# files


def _jsonable(value: Any) -> Any:
    """JSON-safe copy: timestamps as ISO strings, numpy scalars as Python ones, NaN as null."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, pd.Timestamp | datetime | date):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path) -> None:
    """Flush every file of ``tmp`` and rename it to ``final`` (which must not exist)."""
    for f in tmp.iterdir():
        _fsync(f)
    _fsync(tmp)
    if final.exists():
        raise RegistryError(f"{final.name!r} already exists in the registry")
    os.replace(tmp, final)
    _fsync(final.parent)


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------------
# the registry


class ModelRegistry:
    """Fitted models and walk-forward runs under ``root`` (see the module docstring)."""

    def __init__(self, root: Path | str, *, mlflow: bool | None = None, experiment: str = "hflite") -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        installed = find_spec("mlflow") is not None
        if mlflow and not installed:
            raise ModelUnavailable(f"ModelRegistry(mlflow=True) needs MLflow: {MLFLOW_HINT}")
        self.mlflow = installed if mlflow is None else mlflow
        self.experiment = experiment
        self._client: Any = None
        self._experiment_id: str | None = None

    # -- models ------------------------------------------------------------------------------------

    def _folder(self, model_id: str) -> Path:
        if not _ID.match(model_id) or model_id in _RESERVED:
            raise RegistryError(
                f"bad model id {model_id!r}: letters, digits, '.', '_', '-' (not {_RESERVED})"
            )
        return self.root / model_id

    def save(
        self, model: Model, meta: Mapping[str, Any] | None = None, *, model_id: str | None = None
    ) -> str:
        """Store a fitted model with ``meta`` (training window, metrics, data_version, run, ...); the
        registry adds kind, params, seed, features, code version and creation time. Returns the id."""
        if not model.fitted:
            raise RegistryError(f"cannot save an unfitted {model.kind} model")
        created = _now()
        model_id = model_id or f"{model.kind}-{created:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
        final = self._folder(model_id)
        if final.exists():
            raise RegistryError(f"model id {model_id!r} already exists in {self.root}")
        record: dict[str, Any] = {"data_version": "unknown", **(meta or {})}
        record |= {
            "id": model_id,
            "kind": model.kind,
            "created": created,
            "seed": model.seed,
            "params": model.params,
            "features": model.features,
            "n_features": len(model.features),
            "code_version": code_version(),
        }
        tmp = self.root / f".tmp-{model_id}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            if isinstance(model, RecurrentModel):
                torch = _import_torch()
                torch.save(model.net_state(), tmp / "model.pt")
                joblib.dump(model.without_net(), tmp / "model.joblib")
                record |= {"format": "torch", "architecture": model.architecture()}
            else:
                joblib.dump(model, tmp / "model.joblib")
                record["format"] = "joblib"
            record["files"] = sorted(f.name for f in tmp.iterdir())
            if self.mlflow:
                record |= self._log_mlflow(model_id, record, tmp)
            (tmp / "meta.json").write_text(json.dumps(_jsonable(record), indent=2, sort_keys=True) + "\n")
            _publish(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return model_id

    def get(self, model_id: str) -> dict[str, Any]:
        """The meta of a stored model (as written to its ``meta.json``)."""
        path = self._folder(model_id) / "meta.json"
        if not path.is_file():
            raise ModelNotFoundError(f"no model {model_id!r} in registry {self.root}")
        out: dict[str, Any] = json.loads(path.read_text())
        return out

    def load(self, model_id: str) -> Model:
        """The stored model, ready to predict exactly as it did when saved."""
        meta = self.get(model_id)
        folder = self._folder(model_id)
        model = joblib.load(folder / "model.joblib")
        if meta.get("format") == "torch":
            torch = _import_torch()
            model.attach_net(torch.load(folder / "model.pt", weights_only=True))
        if not isinstance(model, Model):
            raise RegistryError(f"{folder / 'model.joblib'} does not hold a model")
        return model

    def delete(self, model_id: str) -> None:
        """Remove a stored model (its MLflow run, if any, stays in the MLflow store)."""
        folder = self._folder(model_id)
        if not (folder / "meta.json").is_file():
            raise ModelNotFoundError(f"no model {model_id!r} in registry {self.root}")
        trash = self.root / f".del-{model_id}-{secrets.token_hex(4)}"
        os.replace(folder, trash)  # gone from list() at once, even if the removal below is cut short
        shutil.rmtree(trash)

    def _metas(self) -> list[dict[str, Any]]:
        out = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or folder.name in _RESERVED:
                continue
            path = folder / "meta.json"
            if path.is_file():
                out.append(json.loads(path.read_text()))
        return out

    # -- walk-forward runs -------------------------------------------------------------------------

    def _run_folder(self, run_id: str) -> Path:
        if not _ID.match(run_id):
            raise RegistryError(f"bad run id {run_id!r}")
        return self.root / "runs" / run_id

    def new_run_id(self, fingerprint: str, kind: str = "run") -> str:
        """A fresh run id: kind, UTC time, the fingerprint's first 8 hex digits and 4 random ones."""
        return f"{kind}-{_now():%Y%m%dT%H%M%SZ}-{fingerprint[:8]}-{secrets.token_hex(2)}"

    def save_run(self, result: WalkForwardResult) -> Path:
        """Store a finished walk-forward run's tables (Parquet) and ``run.json``; returns its folder."""
        if result.run_id is None:
            raise RegistryError("the walk-forward result has no run id (it ran without this registry)")
        final = self._run_folder(result.run_id)
        final.parent.mkdir(exist_ok=True)
        tmp = final.parent / f".tmp-{result.run_id}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            result.predictions.to_parquet(tmp / "predictions.parquet", index=False)
            result.windows.to_parquet(tmp / "windows.parquet", index=False)
            result.importance.reset_index().to_parquet(tmp / "importance.parquet", index=False)
            result.calibration.to_parquet(tmp / "calibration.parquet", index=False)
            record = {
                "run_id": result.run_id,
                "fingerprint": result.fingerprint,
                "kind": result.kind,
                "params": result.params,
                "config": result.config.model_dump(mode="json"),
                "seed": result.seed,
                "data_version": result.data_version,
                "code_version": code_version(),
                "created": _now(),
                "elapsed_s": result.elapsed_s,
                "summary": result.summary,
                "model_ids": result.windows["model_id"].tolist(),
            }
            (tmp / "run.json").write_text(json.dumps(_jsonable(record), indent=2, sort_keys=True) + "\n")
            _publish(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def _run_records(self) -> list[dict[str, Any]]:
        folder = self.root / "runs"
        if not folder.is_dir():
            return []
        out = []
        for run in sorted(folder.iterdir()):
            path = run / "run.json"
            if not run.name.startswith(".") and path.is_file():
                out.append(json.loads(path.read_text()))
        return out

    def find_run(self, fingerprint: str) -> str | None:
        """The latest finished run with this fingerprint (see ``run_fingerprint``), or None."""
        found = [r for r in self._run_records() if r.get("fingerprint") == fingerprint]
        return max(found, key=lambda r: (r["created"], r["run_id"]))["run_id"] if found else None

    def runs(self) -> pd.DataFrame:
        """One row per finished run: run_id, kind, created, fingerprint, data_version, code_version,
        n_windows and the pooled OOS metrics."""
        rows = []
        for r in self._run_records():
            rows.append(
                {
                    "run_id": r["run_id"],
                    "kind": r["kind"],
                    "created": pd.Timestamp(r["created"]),
                    "fingerprint": r["fingerprint"],
                    "data_version": r["data_version"],
                    "code_version": r["code_version"],
                    **{k: (np.nan if v is None else v) for k, v in r["summary"].items()},
                }
            )
        return pd.DataFrame(rows)

    def load_run(self, run_id: str) -> WalkForwardResult:
        """A stored run's result (``reused=True``), as :func:`walk_forward` returned it."""
        from hflite.ai.walkforward import WalkForwardConfig, WalkForwardResult

        folder = self._run_folder(run_id)
        if not (folder / "run.json").is_file():
            raise ModelNotFoundError(f"no walk-forward run {run_id!r} in registry {self.root}")
        record = json.loads((folder / "run.json").read_text())
        tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in _TABLES}
        return WalkForwardResult(
            predictions=tables["predictions"],
            windows=tables["windows"],
            importance=tables["importance"].set_index("model_id").rename_axis(columns="feature"),
            calibration=tables["calibration"],
            summary={k: (float("nan") if v is None else float(v)) for k, v in record["summary"].items()},
            kind=record["kind"],
            params=record["params"],
            config=WalkForwardConfig.model_validate(record["config"]),
            seed=record["seed"],
            fingerprint=record["fingerprint"],
            data_version=record["data_version"],
            run_id=run_id,
            reused=True,
            elapsed_s=float(record.get("elapsed_s") or 0.0),
        )

    def delete_run(self, run_id: str, *, models: bool = True) -> None:
        """Remove a run's tables and (by default) the models it saved."""
        folder = self._run_folder(run_id)
        ids = [m["id"] for m in self._metas() if m.get("run") == run_id] if models else []
        if not folder.is_dir() and not ids:
            raise ModelNotFoundError(f"no walk-forward run {run_id!r} in registry {self.root}")
        for model_id in ids:
            self.delete(model_id)
        if folder.is_dir():
            trash = folder.parent / f".del-{run_id}-{secrets.token_hex(4)}"
            os.replace(folder, trash)
            shutil.rmtree(trash)

    # -- MLflow ------------------------------------------------------------------------------------

    def _mlflow_client(self) -> tuple[Any, str]:
        if self._client is None:
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # local files only: no telemetry
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=f"sqlite:///{self.root / 'mlflow.db'}")
            found = client.get_experiment_by_name(self.experiment)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                artifacts = (self.root / "mlruns").as_uri()
                self._experiment_id = client.create_experiment(self.experiment, artifact_location=artifacts)
            self._client = client
        assert self._experiment_id is not None
        return self._client, self._experiment_id

    def _log_mlflow(self, model_id: str, record: Mapping[str, Any], files: Path) -> dict[str, Any]:
        """Log one model as an MLflow run; a failure is reported in the meta, never raised."""
        try:
            from mlflow.entities import Metric, Param

            client, experiment_id = self._mlflow_client()
            tags = {"hflite.model_id": model_id, "hflite.kind": record["kind"]}
            if record.get("run"):
                tags["hflite.run"] = str(record["run"])
            run = client.create_run(experiment_id, run_name=model_id, tags=tags)
            params = {f"model.{k}": v for k, v in record["params"].items()}
            for key in ("kind", "seed", "n_features", "data_version", "code_version", "window", "horizon"):
                if key in record:
                    params[key] = record[key]
            for key in _TIME_COLUMNS[1:]:
                if key in record:
                    params[key] = _jsonable(record[key])
            stamp = int(time.time() * 1000)
            metrics = [
                Metric(k, float(record[k]), stamp, 0)
                for k in METRIC_COLUMNS
                if isinstance(record.get(k), int | float) and math.isfinite(float(record[k]))
            ]
            client.log_batch(
                run.info.run_id,
                metrics=metrics,
                params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            )
            for f in sorted(files.iterdir()):
                client.log_artifact(run.info.run_id, str(f), artifact_path="model")
            client.set_terminated(run.info.run_id)
            return {"mlflow_run_id": run.info.run_id}
        except Exception as exc:  # MLflow is optional bookkeeping: say so and carry on
            _log.warning("mlflow logging of %s failed: %s", model_id, exc)
            return {"mlflow_error": f"{type(exc).__name__}: {exc}"}

    def log_live_use(self, run_id: str, used: Mapping[str, int], params: Mapping[str, Any]) -> dict[str, Any]:
        """Log a paper/live run's use of registry models as an MLflow run (experiment
        ``<experiment>-live``): one metric per model id (the decisions it made in the run's live bars),
        the run's params, and a ``hflite.model.<id>`` tag each, so MLflow shows which model versions
        traded. A failure is reported in the answer, never raised."""
        if not self.mlflow:
            return {"mlflow_error": f"MLflow is not installed: {MLFLOW_HINT}"}
        try:
            from mlflow.entities import Metric, Param

            client, _ = self._mlflow_client()
            name = f"{self.experiment}-live"
            exp = client.get_experiment_by_name(name)
            experiment_id = exp.experiment_id if exp is not None else client.create_experiment(name)
            tags = {"hflite.run": run_id, **{f"hflite.model.{m}": "used" for m in used}}
            run = client.create_run(experiment_id, run_name=run_id, tags=tags)
            stamp = int(time.time() * 1000)
            client.log_batch(
                run.info.run_id,
                metrics=[Metric(f"decisions.{m}"[:250], float(n), stamp, 0) for m, n in sorted(used.items())],
                params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            )
            client.set_terminated(run.info.run_id)
            return {"mlflow_run_id": run.info.run_id}
        except Exception as exc:  # MLflow is optional bookkeeping: say so and carry on
            _log.warning("mlflow logging of live run %s failed: %s", run_id, exc)
            return {"mlflow_error": f"{type(exc).__name__}: {exc}"}

    # -- the index (last: the name shadows the builtin inside the class body) -----------------------

    def list(self) -> pd.DataFrame:
        """One row per stored model: id, kind, created, train/test bounds, n_features, features,
        params, data_version, code_version, run, window and the OOS metrics; sorted by created, id."""
        rows = []
        for meta in self._metas():
            row = {c: meta.get(c) for c in LIST_COLUMNS}
            row |= {c: meta.get(c, np.nan) for c in METRIC_COLUMNS}
            rows.append(row)
        frame = pd.DataFrame(rows, columns=[*LIST_COLUMNS, *METRIC_COLUMNS])
        for col in _TIME_COLUMNS:
            frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
        for col in METRIC_COLUMNS:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(np.float64)
        return frame.sort_values(["created", "id"], ignore_index=True)
