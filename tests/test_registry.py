"""The model registry: every kind predicts identically after a save/load round trip; meta, list and
delete; atomic folders; the code version read from .git; walk-forward runs saved per window, their
tables stored and reused by fingerprint; and MLflow logging to a local sqlite store when installed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hflite import __version__
from hflite.ai import registry as registry_module
from hflite.ai.models import MODEL_KINDS, ModelUnavailable, make_model
from hflite.ai.registry import (
    LIST_COLUMNS,
    METRIC_COLUMNS,
    ModelNotFoundError,
    ModelRegistry,
    RegistryError,
    code_version,
    git_commit,
)
from hflite.ai.walkforward import WalkForwardConfig, build_panel, run_fingerprint, walk_forward
from tests.test_models import SMALL, fit_on, skip_without_torch, split_panel, synthetic_frames

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def panel():
    return build_panel(*synthetic_frames(n_symbols=2, n_bars=420, persist=0.6), horizon=2)


@pytest.fixture
def registry(tmp_path):
    return ModelRegistry(tmp_path / "models", mlflow=False)


def small_config(**kw):
    return WalkForwardConfig(horizon=2, train_years=0.5, min_train_rows=100, retrain="quarterly", **kw)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_kind_predicts_identically_after_a_round_trip(kind, panel, registry):
    skip_without_torch(kind)
    train, test = split_panel(panel)
    model = fit_on(kind, panel, train)
    x = panel.X.iloc[test]
    before = model.predict(x)

    model_id = registry.save(model, {"data_version": "v1"})
    loaded = registry.load(model_id)

    after = loaded.predict(x)
    assert np.array_equal(before.prob_up, after.prob_up)
    assert np.array_equal(before.exp_return, after.exp_return)
    assert loaded.feature_importance().equals(model.feature_importance())
    assert loaded.params == model.params and loaded.kind == kind


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_recurrent_model_is_stored_as_a_state_dict_with_its_architecture(kind, panel, registry):
    pytest.importorskip("torch")
    train, _ = split_panel(panel)
    model_id = registry.save(fit_on(kind, panel, train))
    meta = registry.get(model_id)
    assert meta["format"] == "torch"
    assert meta["architecture"] == {
        "cell": kind,
        "n_features": 4,
        "hidden": SMALL[kind]["hidden"],
        "layers": 1,
    }
    assert set(meta["files"]) == {"model.joblib", "model.pt"}
    assert (registry.root / model_id / "model.pt").is_file()


def test_meta_records_what_the_model_was_trained_on(panel, registry):
    train, _ = split_panel(panel)
    model = fit_on("lightgbm", panel, train, seed=3)
    window = {"train_start": pd.Timestamp("2018-01-01", tz="UTC"), "hit_rate": 0.61, "auc": float("nan")}
    model_id = registry.save(model, {**window, "data_version": "store:abc"})
    meta = registry.get(model_id)

    assert meta["id"] == model_id and meta["kind"] == "lightgbm" and meta["seed"] == 3
    assert meta["features"] == panel.features and meta["n_features"] == 4
    assert meta["params"] == model.params
    assert meta["data_version"] == "store:abc"
    assert meta["code_version"] == code_version()
    assert meta["train_start"] == "2018-01-01T00:00:00+00:00"
    assert meta["hit_rate"] == 0.61 and meta["auc"] is None  # NaN is stored as null
    assert pd.Timestamp(meta["created"]).tzinfo is not None


def test_list_has_one_row_per_model_with_the_documented_columns(panel, registry):
    train, _ = split_panel(panel)
    ids = [registry.save(fit_on(kind, panel, train), {"hit_rate": 0.5}) for kind in ("linear", "xgboost")]
    table = registry.list()
    assert list(table.columns) == [*LIST_COLUMNS, *METRIC_COLUMNS]
    assert sorted(table["id"]) == sorted(ids)
    assert set(table["kind"]) == {"linear", "xgboost"}
    assert str(table["created"].dt.tz) == "UTC"
    assert table["hit_rate"].tolist() == [0.5, 0.5]
    assert ModelRegistry(registry.root, mlflow=False).list()["id"].tolist() == table["id"].tolist()


def test_an_empty_registry_lists_nothing(registry):
    assert registry.list().empty and list(registry.list().columns) == [*LIST_COLUMNS, *METRIC_COLUMNS]


def test_delete_removes_the_model(panel, registry):
    train, _ = split_panel(panel)
    model_id = registry.save(fit_on("linear", panel, train))
    registry.delete(model_id)
    with pytest.raises(ModelNotFoundError, match=model_id):
        registry.get(model_id)
    with pytest.raises(ModelNotFoundError):
        registry.load(model_id)
    assert registry.list().empty
    assert [p.name for p in registry.root.iterdir()] == []


def test_saving_leaves_no_temporary_folder_and_refuses_a_taken_id(panel, registry):
    train, _ = split_panel(panel)
    model = fit_on("linear", panel, train)
    registry.save(model, model_id="mine")
    with pytest.raises(RegistryError, match="already exists"):
        registry.save(model, model_id="mine")
    assert sorted(p.name for p in registry.root.iterdir()) == ["mine"]


def test_a_failed_save_leaves_nothing_behind(panel, registry, monkeypatch):
    train, _ = split_panel(panel)
    model = fit_on("linear", panel, train)

    def broken_dump(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(registry_module.joblib, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        registry.save(model, model_id="half")
    assert list(registry.root.iterdir()) == []


def test_bad_ids_and_unfitted_models_are_refused(panel, registry):
    train, _ = split_panel(panel)
    with pytest.raises(RegistryError, match="bad model id"):
        registry.save(fit_on("linear", panel, train), model_id="../escape")
    with pytest.raises(RegistryError, match="bad model id"):
        registry.get("runs")
    with pytest.raises(RegistryError, match="unfitted"):
        registry.save(make_model("linear"))


# ---------------------------------------------------------------------------------------------------
# the code version


def test_the_code_version_reads_the_branch_ref_from_git_head(tmp_path):
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text(SHA + "\n")
    deep = tmp_path / "repo" / "src" / "pkg"
    deep.mkdir(parents=True)
    assert git_commit(deep) == SHA
    assert code_version(deep) == f"{__version__}+g{SHA[:12]}"


def test_the_code_version_reads_packed_refs_detached_heads_and_worktrees(tmp_path):
    git = tmp_path / "a" / ".git"
    git.mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/dev\n")
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{SHA} refs/heads/dev\n")
    assert git_commit(tmp_path / "a") == SHA

    (git / "HEAD").write_text(SHA[::-1] + "\n")
    assert git_commit(tmp_path / "a") == SHA[::-1]

    worktree_git = tmp_path / "main.git" / "worktrees" / "b"
    worktree_git.mkdir(parents=True)
    (worktree_git / "HEAD").write_text("ref: refs/heads/feature\n")
    (worktree_git / "commondir").write_text("../..\n")
    (tmp_path / "main.git" / "refs" / "heads").mkdir(parents=True)
    (tmp_path / "main.git" / "refs" / "heads" / "feature").write_text(SHA + "\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".git").write_text(f"gitdir: {worktree_git}\n")
    assert git_commit(tmp_path / "b") == SHA


def test_without_git_the_commit_is_unknown(tmp_path):
    (tmp_path / "x").mkdir()
    assert git_commit(tmp_path / "x") is None  # no .git from here up (pytest's tmp folders)
    assert code_version(tmp_path / "x") == f"{__version__}+unknown"
    git = tmp_path / "x" / ".git"
    git.mkdir()
    (git / "HEAD").write_text("ref: refs/heads/unborn\n")
    assert code_version(tmp_path / "x") == f"{__version__}+unknown"


# ---------------------------------------------------------------------------------------------------
# walk-forward runs


@pytest.fixture
def run(panel, registry):
    return walk_forward(
        panel, "lightgbm", {"n_estimators": 20}, small_config(), registry=registry, data_version="d1"
    )


def test_a_walk_forward_saves_one_model_per_window_with_its_window_and_metrics(run, registry, panel):
    table = registry.list().sort_values("window", ignore_index=True)
    windows = run.windows
    assert table["id"].tolist() == windows["model_id"].tolist()
    assert (table["run"] == run.run_id).all()
    assert table["window"].tolist() == list(range(len(windows)))
    for col in ("train_start", "train_end", "test_start", "test_end"):
        assert table[col].tolist() == windows[col].tolist()
    assert np.allclose(table["hit_rate"], windows["hit_rate"], equal_nan=True)
    assert (table["data_version"] == "d1").all()
    assert (table["code_version"] == code_version()).all()
    assert all(f == panel.features for f in table["features"])
    assert (table["params"].map(lambda p: p["n_estimators"]) == 20).all()
    model = registry.load(windows["model_id"].iloc[0])
    split_rows = run.predictions["model_id"] == windows["model_id"].iloc[0]
    first = run.predictions[split_rows]
    x = panel.X.loc[pd.MultiIndex.from_arrays([first["ts"], first["symbol"]])]
    assert np.array_equal(model.predict(x).prob_up, first["prob_up"].to_numpy())


def test_the_run_tables_are_stored_as_parquet_and_load_back(run, registry):
    folder = registry.root / "runs" / run.run_id
    assert sorted(p.name for p in folder.iterdir()) == [
        "calibration.parquet", "importance.parquet", "predictions.parquet", "run.json", "windows.parquet",
    ]  # fmt: skip
    record = json.loads((folder / "run.json").read_text())
    assert record["fingerprint"] == run.fingerprint and record["data_version"] == "d1"

    loaded = registry.load_run(run.run_id)
    pd.testing.assert_frame_equal(loaded.predictions, run.predictions)
    pd.testing.assert_frame_equal(loaded.windows, run.windows)
    pd.testing.assert_frame_equal(loaded.importance, run.importance)
    pd.testing.assert_frame_equal(loaded.calibration, run.calibration)
    assert loaded.config == run.config and loaded.params == run.params and loaded.reused
    assert registry.runs()["run_id"].tolist() == [run.run_id]


def test_a_finished_run_with_the_same_fingerprint_is_reused(run, registry, panel):
    assert registry.find_run(run.fingerprint) == run.run_id
    models_before = len(registry.list())

    again = walk_forward(
        panel, "lightgbm", {"n_estimators": 20}, small_config(), registry=registry, data_version="d1"
    )

    assert again.reused and again.run_id == run.run_id
    pd.testing.assert_frame_equal(again.predictions, run.predictions)
    assert len(registry.list()) == models_before


def test_anything_that_changes_the_result_changes_the_fingerprint(panel):
    base = run_fingerprint(panel, "lightgbm", {"n_estimators": 20}, small_config(), 0, "d1")
    assert base == run_fingerprint(panel, "lightgbm", {"n_estimators": 20}, small_config(), 0, "d1")
    assert base != run_fingerprint(panel, "lightgbm", {"n_estimators": 21}, small_config(), 0, "d1")
    assert base != run_fingerprint(panel, "xgboost", {"n_estimators": 20}, small_config(), 0, "d1")
    assert base != run_fingerprint(
        panel, "lightgbm", {"n_estimators": 20}, small_config(embargo_bars=0), 0, "d1"
    )
    assert base != run_fingerprint(panel, "lightgbm", {"n_estimators": 20}, small_config(), 1, "d1")
    assert base != run_fingerprint(panel, "lightgbm", {"n_estimators": 20}, small_config(), 0, "d2")
    other = build_panel(*synthetic_frames(n_symbols=2, n_bars=420, persist=0.6, seed=9), horizon=2)
    assert base != run_fingerprint(other, "lightgbm", {"n_estimators": 20}, small_config(), 0, "d1")


def test_reuse_false_trains_a_new_run(run, registry, panel):
    fresh = walk_forward(
        panel,
        "lightgbm",
        {"n_estimators": 20},
        small_config(),
        registry=registry,
        data_version="d1",
        reuse=False,
    )
    assert not fresh.reused and fresh.run_id != run.run_id
    pd.testing.assert_frame_equal(
        fresh.predictions.drop(columns="model_id"), run.predictions.drop(columns="model_id")
    )
    registry.delete_run(fresh.run_id)
    assert registry.find_run(run.fingerprint) == run.run_id
    assert set(registry.list()["run"]) == {run.run_id}


# ---------------------------------------------------------------------------------------------------
# MLflow


def test_asking_for_mlflow_without_it_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(registry_module, "find_spec", lambda name: None)
    with pytest.raises(ModelUnavailable, match=r"pip install mlflow.*hflite\[mlflow\]"):
        ModelRegistry(tmp_path, mlflow=True)
    assert ModelRegistry(tmp_path).mlflow is False  # the default follows what is installed


def test_without_mlflow_nothing_is_logged(run, registry):
    assert not (registry.root / "mlflow.db").exists()
    assert not (registry.root / "mlruns").exists()


def test_each_window_is_an_mlflow_run_in_the_local_sqlite_store(panel, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    root = tmp_path / "tracked"
    reg = ModelRegistry(root)  # on by default when installed
    assert reg.mlflow
    result = walk_forward(panel, "linear", None, small_config(), registry=reg, data_version="d1")

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("hflite")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`hflite.run` = '{result.run_id}'"
    )
    assert len(runs) == len(result.windows)
    by_name = {r.info.run_name: r for r in runs}
    first = result.windows.iloc[0]
    logged = by_name[first["model_id"]]
    assert logged.data.metrics["hit_rate"] == pytest.approx(first["hit_rate"])
    assert logged.data.params["kind"] == "linear" and logged.data.params["data_version"] == "d1"
    assert logged.data.params["model.C"] == str(make_model("linear").params["C"])
    artifacts = [a.path for a in client.list_artifacts(logged.info.run_id, "model")]
    assert artifacts == ["model/model.joblib"]
    assert (root / "mlruns").is_dir()
    assert reg.get(first["model_id"])["mlflow_run_id"] == logged.info.run_id
