"""The ML models: each kind finds a planted signal, calibrates, ranks the informative feature first,
is deterministic, and refuses bad parameters by name. ``synthetic_frames`` and ``split_panel`` are
shared with the walk-forward and registry tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hflite.ai import models
from hflite.ai.models import (
    MODEL_KINDS,
    ModelParamsError,
    ModelUnavailable,
    make_model,
    model_params,
)
from hflite.ai.walkforward import Panel, build_panel

TORCH_KINDS = ("lstm", "gru")
#: Small recurrent nets keep the tests fast.
SMALL = {
    "linear": {},
    "random_forest": {"n_estimators": 40, "max_depth": 5, "min_samples_leaf": 20},
    "lightgbm": {"n_estimators": 60},
    "xgboost": {"n_estimators": 60},
    "lstm": {"seq_len": 5, "hidden": 16, "epochs": 3, "min_steps": 150, "batch_size": 128},
    "gru": {"seq_len": 5, "hidden": 16, "epochs": 3, "min_steps": 150, "batch_size": 128},
}


def synthetic_frames(
    n_symbols: int = 3,
    n_bars: int = 600,
    *,
    seed: int = 0,
    start: str = "2018-01-01",
    signal: float = 0.01,
    noise: float = 0.01,
    persist: float = 0.0,
    n_noise: int = 3,
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.Series]]:
    """Per-symbol features (indexed by availability time, 21:00 UTC on business days) and closes:
    the feature ``signal`` drives the next bar's log return; ``noise_*`` do not (the last has NaNs).
    ``persist`` makes ``signal`` an AR(1), so it also predicts multi-bar returns."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=n_bars, freq="B", tz="UTC") + pd.Timedelta(hours=21)
    features, closes = {}, {}
    for j in range(n_symbols):
        shock = rng.normal(size=n_bars)
        sig = np.empty(n_bars)
        sig[0] = shock[0]
        for k in range(1, n_bars):
            sig[k] = persist * sig[k - 1] + np.sqrt(1 - persist**2) * shock[k]
        ret = np.r_[0.0, signal * sig[:-1] + noise * rng.normal(size=n_bars - 1)]
        frame = pd.DataFrame({"signal": sig}, index=ts)
        for i in range(n_noise):
            frame[f"noise_{i}"] = rng.normal(size=n_bars)
        frame.iloc[rng.random(n_bars) < 0.15, n_noise] = np.nan
        sym = f"S{j:02d}"
        features[sym] = frame
        closes[sym] = pd.Series(100 * np.exp(np.cumsum(ret)), index=ts)
    return features, closes


def split_panel(panel: Panel, frac: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of a time-ordered train/test split with the train labels purged before the test."""
    labelled = np.flatnonzero(np.isfinite(panel.fwd_return.to_numpy()))
    cut_ts = panel.ts_ns[int(len(panel) * frac)]
    train = labelled[panel.label_end_ns[labelled] < cut_ts]
    test = np.flatnonzero(panel.ts_ns >= cut_ts)
    test = test[np.isfinite(panel.fwd_return.to_numpy()[test])]
    return train, test


def fit_on(kind: str, panel: Panel, train: np.ndarray, params: dict | None = None, seed: int = 0):
    fwd = panel.fwd_return.to_numpy()
    model = make_model(kind, {**SMALL[kind], **(params or {})}, seed)
    return model.fit(
        panel.X.iloc[train], (fwd[train] > 0).astype(float), fwd[train], panel.label_end.iloc[train]
    )


def skip_without_torch(kind: str) -> None:
    if kind in TORCH_KINDS:
        pytest.importorskip("torch")


@pytest.fixture(scope="module")
def panel() -> Panel:
    return build_panel(*synthetic_frames(n_symbols=3, n_bars=700), horizon=1)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_each_kind_finds_the_planted_signal_and_ranks_it_first(kind, panel):
    skip_without_torch(kind)
    train, test = split_panel(panel)
    model = fit_on(kind, panel, train)
    pred = model.predict(panel.X.iloc[test])
    fwd = panel.fwd_return.to_numpy()[test]

    assert np.mean((pred.prob_up > 0.5) == (fwd > 0)) > 0.6
    assert np.corrcoef(pred.exp_return, fwd)[0, 1] > 0.3
    assert ((pred.prob_up >= 0) & (pred.prob_up <= 1)).all()
    importance = model.feature_importance()
    assert importance.idxmax() == "signal"
    assert importance.sum() == pytest.approx(1.0)
    assert list(importance.index) == panel.features


@pytest.fixture(scope="module")
def weak_panel() -> Panel:
    """A weak signal (as in markets) over 10,000 rows: probabilities mostly within 0.35-0.65."""
    return build_panel(*synthetic_frames(n_symbols=4, n_bars=2500, seed=3, signal=0.004), horizon=1)


@pytest.mark.parametrize("kind", ["linear", "lightgbm", "xgboost"])
@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibrated_probabilities_match_the_realised_up_rate(kind, method, weak_panel):
    train, test = split_panel(weak_panel, 0.6)
    prob = fit_on(kind, weak_panel, train, {"calibration": method}).predict(weak_panel.X.iloc[test]).prob_up
    up = (weak_panel.fwd_return.to_numpy()[test] > 0).astype(float)

    quintiles = np.array_split(np.argsort(prob, kind="stable"), 5)
    ece = np.mean([abs(prob[q].mean() - up[q].mean()) for q in quintiles])
    assert ece < 0.05
    assert abs(prob.mean() - up.mean()) < 0.035
    assert np.mean((prob - up) ** 2) < np.mean((up.mean() - up) ** 2) - 0.01  # beats the base rate


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibration_keeps_the_order_of_the_raw_scores(method, panel):
    train, test = split_panel(panel)
    model = fit_on("lightgbm", panel, train, {"calibration": method})
    x = panel.X.iloc[test]
    raw, _ = model._predict_raw(models._design(x, model.features), np.arange(len(x)))
    calibrated = model.predict(x).prob_up
    order = np.argsort(raw, kind="stable")
    assert (np.diff(calibrated[order]) >= -1e-12).all()
    assert not np.array_equal(raw, calibrated)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_the_same_seed_gives_identical_predictions(kind, panel):
    skip_without_torch(kind)
    train, test = split_panel(panel)
    a = fit_on(kind, panel, train, seed=7).predict(panel.X.iloc[test])
    b = fit_on(kind, panel, train, seed=7).predict(panel.X.iloc[test])
    assert np.array_equal(a.prob_up, b.prob_up)
    assert np.array_equal(a.exp_return, b.exp_return)


@pytest.mark.parametrize(
    ("kind", "key", "bagging"),
    [("lightgbm", "num_threads", "bagging_fraction"), ("xgboost", "nthread", "subsample")],
)
def test_the_thread_count_does_not_change_tree_predictions(kind, key, bagging, panel):
    train, test = split_panel(panel)
    small = {"n_estimators": 20, bagging: 0.8}
    a = fit_on(kind, panel, train, {key: 1, **small}).predict(panel.X.iloc[test])
    b = fit_on(kind, panel, train, {key: 2, **small}).predict(panel.X.iloc[test])
    assert np.array_equal(a.prob_up, b.prob_up)
    assert np.array_equal(a.exp_return, b.exp_return)


def test_an_unknown_parameter_is_refused_by_name():
    with pytest.raises(ModelParamsError, match="'num_leaf'.*lightgbm.*allowed: .*num_leaves"):
        make_model("lightgbm", {"num_leaf": 7})


def test_a_bad_parameter_value_names_the_field():
    with pytest.raises(ModelParamsError, match="num_leaves"):
        make_model("lightgbm", {"num_leaves": 1})
    with pytest.raises(ModelParamsError, match="calibration"):
        make_model("linear", {"calibration": "platt"})


def test_an_unknown_kind_lists_the_known_ones():
    with pytest.raises(ModelParamsError, match="unknown model kind 'svm'.*lightgbm"):
        make_model("svm")


def test_params_include_every_default():
    params = make_model("lightgbm", {"num_leaves": 31}).params
    assert params["num_leaves"] == 31 and params["learning_rate"] == 0.05 and params["n_estimators"] == 100
    assert model_params("gru", {"hidden": 8})["hidden"] == 8  # validated without building a net


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_a_missing_torch_says_what_to_install(kind, monkeypatch):
    real = models.importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec", lambda n, *a: None if n == "torch" else real(n, *a)
    )
    with pytest.raises(ModelUnavailable, match=r"pip install torch==2\.13\.0.*hflite\[torch\]"):
        make_model(kind)


def test_linear_imputes_missing_values_with_the_training_medians(panel):
    train, test = split_panel(panel)
    model = fit_on("linear", panel, train)
    x = panel.X.iloc[test].copy()
    x["noise_0"] = np.nan
    filled = x.copy()
    filled["noise_0"] = panel.X.iloc[train]["noise_0"].median()
    a, b = model.predict(x), model.predict(filled)
    assert np.allclose(a.prob_up, b.prob_up, rtol=0, atol=1e-12)
    assert np.allclose(a.exp_return, b.exp_return, rtol=0, atol=1e-15)


def test_predict_takes_the_columns_by_name(panel):
    train, test = split_panel(panel)
    model = fit_on("lightgbm", panel, train)
    x = panel.X.iloc[test]
    shuffled = x[list(reversed(x.columns))].assign(extra=1.0)
    assert np.array_equal(model.predict(x).prob_up, model.predict(shuffled).prob_up)
    with pytest.raises(ValueError, match="noise_1"):
        model.predict(x.drop(columns="noise_1"))


def test_an_unfitted_model_refuses_to_predict(panel):
    with pytest.raises(RuntimeError, match="not fitted"):
        make_model("linear").predict(panel.X)


def test_fit_needs_labels_of_both_signs(panel):
    x = panel.X.iloc[:100]
    with pytest.raises(ValueError, match="both signs"):
        make_model("linear").fit(x, np.ones(100), np.full(100, 0.01))


def test_max_train_rows_draws_a_seeded_sample(panel):
    train, test = split_panel(panel)
    a = fit_on("lightgbm", panel, train, {"max_train_rows": 400}).predict(panel.X.iloc[test])
    b = fit_on("lightgbm", panel, train, {"max_train_rows": 400}).predict(panel.X.iloc[test])
    c = fit_on("lightgbm", panel, train, {"max_train_rows": None}).predict(panel.X.iloc[test])
    assert np.array_equal(a.prob_up, b.prob_up)
    assert not np.array_equal(a.prob_up, c.prob_up)


def test_the_calibration_tail_is_purged_of_overlapping_labels():
    p = build_panel(*synthetic_frames(n_symbols=2, n_bars=300, persist=0.9), horizon=5)
    known = np.isfinite(p.fwd_return.to_numpy())
    d = models._design(p.X, p.features)
    fit_rows, calib_rows = models._calibration_split(d, known, p.label_end_ns, 0.2)
    first_calib = p.ts_ns[calib_rows].min()
    assert p.label_end_ns[fit_rows].max() < first_calib
    assert len(np.intersect1d(fit_rows, calib_rows)) == 0
    assert len(calib_rows) == pytest.approx(0.2 * known.sum(), abs=3)


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_a_recurrent_prediction_uses_only_its_own_symbol_and_the_past(kind, panel):
    pytest.importorskip("torch")
    train, test = split_panel(panel)
    model = fit_on(kind, panel, train)
    x = panel.X.iloc[test]
    base = model.predict(x).to_frame()
    sym = x.index.get_level_values("symbol")
    ts = x.index.get_level_values("ts")
    later = ts > ts[len(ts) // 2]

    other = x.copy()
    other.loc[sym == "S01", "signal"] += 3.0  # another symbol changes
    assert base[sym != "S01"].equals(model.predict(other).to_frame()[sym != "S01"])

    future = x.copy()
    future.loc[later, "signal"] += 3.0  # the future changes
    assert base[~later].equals(model.predict(future).to_frame()[~later])

    past = x.copy()
    first_later = np.flatnonzero(later & (sym == "S00"))[0]
    previous = np.flatnonzero((sym == "S00") & ~later)[-1]
    past.iloc[previous, 0] += 3.0  # the bar before, within seq_len, changes
    assert model.predict(past).prob_up[first_later] != base["prob_up"].iloc[first_later]
    assert model.context_rows == SMALL[kind]["seq_len"] - 1
