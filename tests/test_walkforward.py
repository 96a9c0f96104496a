"""Purged walk-forward: labels, the pooled panel, the splits (purge, embargo, calendar windows) and
the out-of-sample run; properties: no training label reaches into its test window, train and test
never share a row, and changing data after a time t cannot change a prediction made at or before t."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hflite.ai.walkforward import (
    CALIBRATION_BINS,
    WalkForwardConfig,
    build_panel,
    make_labels,
    splits,
    walk_forward,
)
from tests.test_models import synthetic_frames

DAY = pd.Timedelta(days=1)


def closes_of(values: list[float], start: str = "2020-01-01") -> pd.Series:
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq="D", tz="UTC"))


@pytest.fixture(scope="module")
def signal_panel():
    return build_panel(*synthetic_frames(n_symbols=3, n_bars=520, persist=0.8), horizon=3)


@pytest.fixture(scope="module")
def linear_run(signal_panel):
    config = WalkForwardConfig(horizon=3, train_years=0.5, min_train_rows=200)
    return walk_forward(signal_panel, "linear", None, config)


# ---------------------------------------------------------------------------------------------------
# labels and the panel


def test_labels_are_forward_log_returns_known_h_bars_later():
    close = closes_of([100.0, 110.0, 121.0, 99.0, 120.0])
    labels = make_labels(close, 2)
    assert labels["fwd_return"].iloc[:3].tolist() == pytest.approx(np.log([1.21, 0.9, 120 / 121]).tolist())
    assert labels["fwd_return"].iloc[3:].isna().all()
    assert list(labels["label_end"].iloc[:3]) == list(close.index[2:])
    assert labels["label_end"].iloc[3:].isna().all()


def test_labels_refuse_naive_times_bad_prices_and_a_zero_horizon():
    with pytest.raises(ValueError, match="timezone-aware"):
        make_labels(pd.Series([1.0, 2.0], index=pd.date_range("2020-01-01", periods=2)), 1)
    with pytest.raises(ValueError, match="positive"):
        make_labels(closes_of([1.0, -2.0, 3.0]), 1)
    with pytest.raises(ValueError, match="horizon"):
        make_labels(closes_of([1.0, 2.0]), 0)


def test_a_missing_close_makes_no_label():
    labels = make_labels(closes_of([100.0, np.nan, 105.0, 106.0]), 1)
    assert labels["fwd_return"].isna().tolist() == [True, True, False, True]
    assert labels["label_end"].isna().tolist() == [True, True, False, True]


def test_the_panel_pools_symbols_sorted_by_time_then_symbol():
    ts = pd.date_range("2021-01-01", periods=4, freq="D", tz="UTC")
    features = {
        "B": pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}, index=ts),
        "A": pd.DataFrame({"x": [5.0, 6.0, 7.0], "y": [1.0, 1.0, 1.0]}, index=ts[1:]),
    }
    closes = {
        "B": pd.Series([10.0, 11.0, 12.0, 13.0], index=ts),
        "A": pd.Series([1.0, 2.0, 4.0], index=ts[1:]),
    }
    panel = build_panel(features, closes, horizon=1)

    assert panel.X.index.names == ["ts", "symbol"]
    assert list(panel.X.index) == [
        (ts[0], "B"), (ts[1], "A"), (ts[1], "B"), (ts[2], "A"), (ts[2], "B"), (ts[3], "A"), (ts[3], "B"),
    ]  # fmt: skip
    assert panel.features == ["x", "y"]
    assert panel.X["y"].isna().tolist() == [True, False, True, False, True, False, True]
    a = panel.symbol == "A"
    assert panel.fwd_return[a].tolist()[:2] == pytest.approx([np.log(2), np.log(2)])
    assert panel.bar[a].tolist() == [0, 1, 2]
    assert panel.X.dtypes.eq(np.float64).all()


def test_the_panel_needs_the_same_symbols_in_features_and_closes():
    features, closes = synthetic_frames(n_symbols=2, n_bars=10)
    closes.pop("S01")
    with pytest.raises(ValueError, match="S01"):
        build_panel(features, closes, 1)


# ---------------------------------------------------------------------------------------------------
# the configuration


def test_the_config_refuses_unknown_fields_and_defaults_the_embargo_to_the_horizon():
    with pytest.raises(ValidationError, match="retrain_every"):
        WalkForwardConfig(retrain_every="monthly")
    assert WalkForwardConfig(horizon=7).embargo_bars == 7
    assert WalkForwardConfig(horizon=7, embargo_bars=0).embargo_bars == 0
    with pytest.raises(ValidationError, match="scheme"):
        WalkForwardConfig(scheme="sliding")


def test_config_bounds_are_utc_and_a_date_as_the_end_covers_that_day():
    config = WalkForwardConfig(start="2020-03-01", end="2020-06-30")
    assert config.start == pd.Timestamp("2020-03-01", tz="UTC")
    assert config.end == pd.Timestamp("2020-07-01", tz="UTC") - pd.Timedelta(1, "us")
    with pytest.raises(ValidationError, match="must not be after"):
        WalkForwardConfig(start="2021-01-01", end="2020-01-01")


# ---------------------------------------------------------------------------------------------------
# splits


def test_monthly_windows_follow_the_calendar_after_the_minimum_training_span(signal_panel):
    config = WalkForwardConfig(horizon=3, train_years=1, min_train_rows=10)
    out = splits(signal_panel, config)
    first_ts = signal_panel.ts[0]
    # data from 2018-01-01 21:00: a full year is there at 2019-01-01 21:00, so February is the first
    assert out[0].test_start == pd.Timestamp("2019-02-01", tz="UTC")
    assert out[0].test_start >= first_ts + pd.DateOffset(years=1)
    for split in out:
        assert split.test_start.day == 1
        ts = signal_panel.ts[split.test]
        assert (ts >= split.test_start).all() and (ts < split.test_end).all()
    assert [s.test_end for s in out[:-1]] == [s.test_start for s in out[1:]]
    assert out[-1].test[-1] == len(signal_panel) - 1  # up to the last row


def test_training_rows_are_purged_and_embargoed_per_symbol(signal_panel):
    config = WalkForwardConfig(horizon=3, embargo_bars=5, train_years=1, min_train_rows=10)
    split = splits(signal_panel, config)[2]
    p = signal_panel
    assert p.label_end_ns[split.train].max() < split.test_start.value
    for code, rows in enumerate(p.symbol_rows):
        before = rows[p.ts_ns[rows] < split.test_start.value]
        assert set(before[-5:]).isdisjoint(split.train)  # the embargo: the last 5 bars before
        assert set(before[:-5]) <= set(split.train)  # and nothing else
        assert len(before) > 5, code


def test_a_rolling_window_keeps_only_its_span(signal_panel):
    config = WalkForwardConfig(scheme="rolling", horizon=3, train_years=0.5, min_train_rows=10)
    for split in splits(signal_panel, config):
        assert split.train_start >= split.test_start - pd.DateOffset(months=6)
        assert split.train_start < split.test_start - pd.DateOffset(months=6) + pd.Timedelta(days=4)


def test_a_window_with_too_few_training_rows_is_skipped(signal_panel):
    few = splits(signal_panel, WalkForwardConfig(horizon=3, train_years=0.5, min_train_rows=10))
    many = splits(signal_panel, WalkForwardConfig(horizon=3, train_years=0.5, min_train_rows=600))
    assert len(many) < len(few)
    assert all(len(s.train) >= 600 for s in many)


def test_a_config_with_another_horizon_than_the_panel_is_refused(signal_panel):
    with pytest.raises(ValueError, match="horizon 3"):
        splits(signal_panel, WalkForwardConfig(horizon=5))


def random_panel(seed: int, horizon: int, n_symbols: int):
    """Symbols on different calendars (business days, every day, every other day) and lengths."""
    rng = np.random.default_rng(seed)
    features, closes = {}, {}
    for j in range(n_symbols):
        freq = ["B", "D", "2D"][j % 3]
        n = int(rng.integers(150, 400))
        start = pd.Timestamp("2019-01-01", tz="UTC") + pd.Timedelta(days=int(rng.integers(0, 60)), hours=21)
        ts = pd.date_range(start, periods=n, freq=freq)
        features[f"S{j}"] = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)}, index=ts)
        closes[f"S{j}"] = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))), index=ts)
    return build_panel(features, closes, horizon)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    horizon=st.integers(1, 10),
    embargo=st.integers(0, 12),
    n_symbols=st.integers(1, 4),
    scheme=st.sampled_from(["expanding", "rolling"]),
    retrain=st.sampled_from(["monthly", "quarterly"]),
    train_years=st.sampled_from([0.25, 0.5, 0.75]),
)
def test_no_training_label_reaches_into_its_test_window(
    seed, horizon, embargo, n_symbols, scheme, retrain, train_years
):
    panel = random_panel(seed, horizon, n_symbols)
    config = WalkForwardConfig(
        scheme=scheme, retrain=retrain, train_years=train_years, horizon=horizon, embargo_bars=embargo,
        min_train_rows=1,
    )  # fmt: skip
    tested: set[int] = set()
    for split in splits(panel, config):
        start = split.test_start.value
        assert (panel.label_end_ns[split.train] < start).all()  # purged (NaT labels are never trained)
        assert np.isfinite(panel.fwd_return.to_numpy()[split.train]).all()
        assert len(np.intersect1d(split.train, split.test)) == 0
        assert (panel.ts_ns[split.test] >= start).all() and (
            panel.ts_ns[split.test] < split.test_end.value
        ).all()
        for rows in panel.symbol_rows:  # embargoed: none of a symbol's last `embargo` bars before start
            before = rows[panel.ts_ns[rows] < start]
            assert set(before[len(before) - embargo :] if embargo else []).isdisjoint(split.train)
        assert tested.isdisjoint(split.test.tolist())  # each row in one test window at most
        tested |= set(split.test.tolist())


# ---------------------------------------------------------------------------------------------------
# the walk-forward


def test_the_walk_forward_finds_the_signal_out_of_sample(linear_run):
    s = linear_run.summary
    assert s["hit_rate"] > 0.6 and s["auc"] > 0.65 and s["ic"] > 0.3
    assert s["fwd_ret_up"] > 0 > s["fwd_ret_down"]
    mean_importance = linear_run.importance.mean()
    assert mean_importance.idxmax() == "signal"
    assert list(linear_run.importance.index) == linear_run.windows["model_id"].tolist()


def test_each_prediction_comes_from_the_model_of_its_own_window(linear_run, signal_panel):
    pred, windows = linear_run.predictions, linear_run.windows.set_index("model_id")
    assert list(pred.columns) == ["ts", "symbol", "prob_up", "exp_return", "model_id"]
    bounds = windows.loc[pred["model_id"]]
    assert (pred["ts"].to_numpy() >= bounds["test_start"].to_numpy()).all()
    assert (pred["ts"].to_numpy() < bounds["test_end"].to_numpy()).all()
    assert (pred["ts"].to_numpy() > bounds["train_end"].to_numpy()).all()
    assert pred["ts"].min() >= windows["test_start"].min()  # nothing in-sample
    assert len(pred) == windows["n_test"].sum() == pred[["ts", "symbol"]].drop_duplicates().shape[0]


def test_rows_without_a_label_yet_are_predicted_but_not_scored(linear_run, signal_panel):
    last = linear_run.windows.iloc[-1]
    assert last["n_scored"] == last["n_test"] - 3 * signal_panel.horizon  # 3 symbols x 3 bars
    assert linear_run.predictions["ts"].max() == signal_panel.ts[-1]
    assert linear_run.summary["n_scored"] == linear_run.summary["n_predictions"] - 9


def test_the_calibration_table_covers_every_scored_prediction(linear_run):
    table = linear_run.calibration
    assert len(table) == CALIBRATION_BINS
    assert table["n"].sum() == linear_run.summary["n_scored"]
    assert table["n"].max() - table["n"].min() <= 1  # quantile bins: equal counts
    p = table["mean_prob"]
    standard_error = np.sqrt(p * (1 - p) / table["n"])
    assert (abs(p - table["up_rate"]) < 3 * standard_error).all()  # calibrated, within sampling noise


def test_window_metrics_are_computed_on_that_window_only(linear_run, signal_panel):
    from hflite.ai.walkforward import oos_metrics

    row = linear_run.windows.iloc[1]
    pred = linear_run.predictions[linear_run.predictions["model_id"] == row["model_id"]]
    index = pd.MultiIndex.from_arrays([pred["ts"], pred["symbol"]])
    fwd = signal_panel.fwd_return.reindex(index).to_numpy()
    expected = oos_metrics(pred["prob_up"].to_numpy(), pred["exp_return"].to_numpy(), fwd)
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, nan_ok=True)


@pytest.mark.parametrize(("kind", "params"), [("lightgbm", {"n_estimators": 30}), ("linear", None)])
def test_the_same_inputs_give_identical_predictions_whatever_the_parallelism(kind, params, signal_panel):
    config = WalkForwardConfig(horizon=3, train_years=0.5, min_train_rows=200)
    a = walk_forward(signal_panel, kind, params, config, n_jobs=1)
    b = walk_forward(signal_panel, kind, params, config, n_jobs=2)
    pd.testing.assert_frame_equal(a.predictions, b.predictions, check_exact=True)
    pd.testing.assert_frame_equal(a.windows, b.windows, check_exact=True)
    assert a.fingerprint == b.fingerprint


def test_progress_is_reported_after_each_window(signal_panel):
    seen = []
    config = WalkForwardConfig(horizon=3, train_years=0.5, min_train_rows=200, retrain="quarterly")
    result = walk_forward(signal_panel, "linear", None, config, progress=lambda d, n: seen.append((d, n)))
    n = len(result.windows)
    assert seen == [(i, n) for i in range(1, n + 1)]


def test_no_window_with_enough_training_rows_is_an_error(signal_panel):
    with pytest.raises(ValueError, match="min_train_rows|training rows"):
        walk_forward(
            signal_panel, "linear", None, WalkForwardConfig(horizon=3, train_years=0.5, min_train_rows=10**6)
        )


def perturbed_after(features, closes, cut: pd.Timestamp, seed: int):
    """Copies with every feature and close after ``cut`` changed (closes stay positive)."""
    rng = np.random.default_rng(seed)
    f2, c2 = {}, {}
    for sym in features:
        f = features[sym].copy()
        after = f.index > cut
        f.loc[after] = rng.normal(size=(int(after.sum()), f.shape[1])) * 3
        c = closes[sym].copy()
        c[c.index > cut] *= np.exp(rng.normal(0, 0.2, int((c.index > cut).sum())))
        f2[sym], c2[sym] = f, c
    return f2, c2


def _point_in_time(kind, params, features, closes, config, cut, seed):
    before = walk_forward(build_panel(features, closes, config.horizon), kind, params, config)
    after = walk_forward(
        build_panel(*perturbed_after(features, closes, cut, seed), config.horizon), kind, params, config
    )
    keep_a = before.predictions["ts"] <= cut
    keep_b = after.predictions["ts"] <= cut
    a, b = before.predictions[keep_a].reset_index(drop=True), after.predictions[keep_b].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    return len(a), len(before.predictions)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 1000),
    month=st.integers(9, 19),  # the test windows start monthly from 2018-08
    offset_bars=st.integers(-2, 8),  # where leaks would show: just before and after a window starts
    horizon=st.integers(1, 6),
    scheme=st.sampled_from(["expanding", "rolling"]),
    kind=st.sampled_from(["linear", "lightgbm"]),
    embargo=st.sampled_from([0, None]),  # 0: the purge alone must keep the future out
)
def test_changing_data_after_t_never_changes_a_prediction_made_at_or_before_t(
    seed, month, offset_bars, horizon, scheme, kind, embargo
):
    features, closes = synthetic_frames(n_symbols=2, n_bars=460, seed=seed, persist=0.5)
    index = features["S00"].index
    window_start = pd.Timestamp(2018 + (month - 1) // 12, (month - 1) % 12 + 1, 1, tz="UTC")
    cut = index[index.searchsorted(window_start) + offset_bars] + pd.Timedelta(hours=int(seed % 5))
    config = WalkForwardConfig(
        scheme=scheme, horizon=horizon, embargo_bars=embargo, train_years=0.5, min_train_rows=100
    )
    params = {"n_estimators": 15} if kind == "lightgbm" else None
    kept, total = _point_in_time(kind, params, features, closes, config, cut, seed)
    assert 0 < kept < total


@pytest.mark.parametrize("kind", ["gru", "xgboost", "random_forest"])
def test_the_other_kinds_are_point_in_time_too(kind):
    if kind == "gru":
        pytest.importorskip("torch")
    params = {
        "gru": {"seq_len": 4, "hidden": 8, "epochs": 1, "min_steps": 20},
        "xgboost": {"n_estimators": 15},
        "random_forest": {"n_estimators": 15},
    }[kind]
    features, closes = synthetic_frames(n_symbols=2, n_bars=400, seed=5, persist=0.5)
    config = WalkForwardConfig(horizon=2, train_years=0.5, min_train_rows=100, retrain="quarterly")
    kept, total = _point_in_time(kind, params, features, closes, config, features["S00"].index[250], 5)
    assert 0 < kept < total
