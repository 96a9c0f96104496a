"""Walk-forward targets and their confidence intervals (issue 17): hand-checked labels of the three
targets (direction, the cross-sectional rank against the session median, and triple-barrier
meta-labels of trend entries) with their true end times; labels unchanged by data after their end;
the sparse panel's embargo counted in bars; the block bootstrap of AUC and IC over whole sessions
(perfect predictions: [1, 1]; random ones: covering 0.5); the effective number of independent labels;
and the CI as the CLI and the report show it."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hflite.ai.walkforward import (
    MetaTrendConfig,
    WalkForwardConfig,
    _auc,
    _spearman,
    _Ties,
    _weighted_auc,
    _weighted_spearman,
    build_panel,
    make_labels,
    make_meta_labels,
    make_xs_labels,
    n_independent,
    oos_intervals,
    oos_metrics,
    session_dates,
    skill_words,
    splits,
    trend_entries,
    triple_barrier,
    walk_forward,
)
from tests.test_models import synthetic_frames

DAY_NS = 86_400 * 10**9


def daily(values: list[float], start: str = "2024-03-04 21:00", freq: str = "D") -> pd.Series:
    return pd.Series(
        values, index=pd.date_range(start, periods=len(values), freq=freq, tz="UTC"), dtype=float
    )


# ---------------------------------------------------------------------------------------------------
# direction: today's labels, bit for bit


def test_the_direction_target_is_the_default_and_reproduces_todays_labels_exactly():
    features, closes = synthetic_frames(n_symbols=3, n_bars=300, seed=5)
    default = build_panel(features, closes, horizon=5)
    explicit = build_panel(features, closes, horizon=5, target="direction")
    assert default.target == "direction" and WalkForwardConfig().target == "direction"
    assert default.bar_of_row is None and default.calendar is None
    for sym in closes:
        labels = make_labels(closes[sym], 5)
        mine = default.symbol == sym
        assert np.array_equal(
            default.fwd_return.to_numpy()[mine], labels["fwd_return"].to_numpy(), equal_nan=True
        )
        assert (
            default.label_end_ns[mine][:-5]
            == pd.DatetimeIndex(labels["label_end"].iloc[:-5]).as_unit("ns").asi8
        ).all()
        assert (default.label_end_ns[mine][-5:] == np.iinfo(np.int64).max).all()  # unknown: never
    assert default.content_hash() == explicit.content_hash()
    assert np.array_equal(default.X.to_numpy(), explicit.X.to_numpy(), equal_nan=True)


# ---------------------------------------------------------------------------------------------------
# xs_rank


def test_sessions_are_new_york_dates_so_crypto_and_us_closes_of_one_day_meet():
    ts = pd.DatetimeIndex(
        ["2024-03-05 21:00", "2024-03-06 00:00", "2024-03-05 22:00", "2024-07-01 20:00"], tz="UTC"
    )
    days = session_dates(ts)
    assert days[0] == days[1] == days[2]  # stock close, crypto close at 00:00 UTC, FX close 17:00 NY
    assert pd.Timestamp(days[0] * DAY_NS).date() == pd.Timestamp("2024-03-05").date()
    assert pd.Timestamp(days[3] * DAY_NS).date() == pd.Timestamp("2024-07-01").date()  # 16:00 EDT
    with pytest.raises(ValueError, match="timezone-aware"):
        session_dates(pd.DatetimeIndex(["2024-03-05"]))


def test_xs_labels_compare_each_return_with_its_sessions_median():
    # session 1 (four symbols): returns +10%, +5%, -5%, 0 -> median 2.5% -> A, B above; C, D below
    closes = {
        "A": daily([100, 110, 110]),
        "B": daily([100, 105, 105]),
        "C": daily([100, 95, 95]),
        "D": daily([100, 100, 100]),
    }
    labels = make_xs_labels(closes, horizon=1)
    raw = {s: math.log(c.iloc[1] / c.iloc[0]) for s, c in closes.items()}
    median = (raw["B"] + raw["D"]) / 2
    for sym in closes:
        assert labels[sym]["raw_return"].iloc[0] == pytest.approx(raw[sym])
        assert labels[sym]["fwd_return"].iloc[0] == pytest.approx(raw[sym] - median)
    assert [labels[s]["fwd_return"].iloc[0] > 0 for s in "ABCD"] == [True, True, False, False]
    # session 2: every return is 0 -> all at the median: no label; the last bar has no forward return
    assert all(labels[s]["fwd_return"].iloc[1:].isna().all() for s in "ABCD")


def test_with_an_odd_count_the_median_symbol_gets_no_label_and_fewer_than_three_none_at_all():
    three = {"A": daily([100, 110]), "B": daily([100, 105]), "C": daily([100, 95])}
    labels = make_xs_labels(three, horizon=1)
    assert labels["A"]["fwd_return"].iloc[0] > 0 > labels["C"]["fwd_return"].iloc[0]
    assert np.isnan(labels["B"]["fwd_return"].iloc[0]) and pd.isna(labels["B"]["label_end"].iloc[0])
    two = {"A": daily([100, 110]), "B": daily([100, 105])}
    assert all(lab["fwd_return"].isna().all() for lab in make_xs_labels(two, horizon=1).values())


def test_the_xs_label_ends_when_the_last_member_of_its_session_is_known():
    # A and B close at 21:00 UTC; C is crypto, known at 00:00 UTC the next day: same New York session
    closes = {
        "A": daily([100, 110, 120]),
        "B": daily([100, 104, 90]),
        "C": daily([100, 97, 99], start="2024-03-05 00:00"),
        "D": daily([100, 101, 130]),
    }
    labels = make_xs_labels(closes, horizon=1)
    # session 2024-03-04: C's label (bar 2024-03-05 00:00 -> 2024-03-06 00:00) is the last known
    end = pd.Timestamp("2024-03-06 00:00", tz="UTC")
    assert all(labels[s]["label_end"].iloc[0] == end for s in "ABCD")
    # +10%, +4%, -3%, +1%: the median is between B and D
    assert [labels[s]["fwd_return"].iloc[0] > 0 for s in "ABCD"] == [True, True, False, False]


def test_the_xs_panel_labels_by_session_and_refuses_intraday_bars():
    features, closes = synthetic_frames(n_symbols=4, n_bars=60, seed=2)
    panel = build_panel(features, closes, horizon=2, target="xs_rank")
    expected = make_xs_labels(closes, horizon=2)
    for sym in closes:
        mine = panel.symbol == sym
        assert np.array_equal(
            panel.fwd_return.to_numpy()[mine], expected[sym]["fwd_return"].to_numpy(), equal_nan=True
        )
    known = np.isfinite(panel.fwd_return.to_numpy())
    per_session = pd.Series(panel.fwd_return.to_numpy()[known] > 0).groupby(panel.dates[known]).mean()
    assert (per_session == 0.5).all()  # four symbols: two above, two below the median, every session
    hourly = {
        s: c.set_axis(pd.date_range("2024-01-02 14:00", periods=len(c), freq="h", tz="UTC"))
        for s, c in closes.items()
    }
    frames = {s: f.set_axis(hourly[s].index) for s, f in features.items()}
    with pytest.raises(ValueError, match="more than one bar in a session"):
        build_panel(frames, hourly, horizon=2, target="xs_rank")


def test_the_xs_ic_is_the_per_session_rank_correlation_averaged():
    dates = np.array([0, 0, 0, 1, 1, 1, 2])
    e = np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 9.0])
    r = np.array([0.1, 0.2, 0.3, 0.3, 0.2, 0.1, -0.5])  # session 0: +1, session 1: -1, session 2: 1 row
    assert oos_metrics(e / 10, e, r, dates=dates)["ic"] == pytest.approx(0.0)
    assert oos_metrics(e / 10, e, r)["ic"] == pytest.approx(_spearman(e, r))  # pooled without dates


# ---------------------------------------------------------------------------------------------------
# meta_trend: entries and triple barriers


def test_a_trend_entry_is_the_fast_ema_crossing_above_the_slow_one():
    # fast span 1 is the close itself; slow span 2 (alpha 2/3) from bar 1:
    # 9.333, 8.444, 8.815, 9.605, 8.535, 7.512, 8.504 -> the close is above it at bars 3, 4 and 7
    close = daily([10, 9, 8, 9, 10, 8, 7, 9])
    assert np.flatnonzero(trend_entries(close, 1, 2)).tolist() == [3, 7]


def test_the_triple_barrier_ends_at_the_first_touch_or_at_the_vertical_barrier():
    # ATR 1, take-profit 2 ATR, stop 1 ATR, 3 bars: entry 0 -> 102 touched at bar 2 (top first);
    # entry 4 -> 98.9 <= 99 at bar 6 (bottom first); entry 8 -> no touch, 101.5 at bar 11 (time out, up);
    # entry 12 -> no touch, 99.5 at bar 15 (time out, down); entry 16 -> undecided at the data's end
    close = daily(
        [100, 101, 102, 50,  100, 100.5, 98.9, 200,  100, 100.5, 101, 101.5,  100, 99.5, 100.5, 99.5,
         100, 101]
    )  # fmt: skip
    entries = np.array([0, 4, 8, 12, 16])
    labels = triple_barrier(close, entries, horizon=3, atr=np.ones(len(close)), tp_atr=2.0, sl_atr=1.0)
    assert labels["barrier"].tolist()[:4] == [1.0, -1.0, 0.0, 0.0]
    assert list(labels.index) == list(close.index[entries])
    assert list(labels["label_end"].iloc[:4]) == list(close.index[[2, 6, 11, 15]])  # the first touch
    assert labels["fwd_return"].iloc[:4].tolist() == pytest.approx(
        np.log([1.02, 0.989, 1.015, 0.995]).tolist()
    )
    assert (labels["fwd_return"].iloc[:4] > 0).tolist() == [True, False, True, False]  # the labels
    assert np.isnan(labels["fwd_return"].iloc[4]) and pd.isna(labels["label_end"].iloc[4])


def test_touching_a_barrier_exactly_counts_and_the_stop_can_come_first():
    close = daily([100, 99, 104])  # the stop (99) is touched at bar 1, before the take-profit
    labels = triple_barrier(close, np.array([0]), horizon=5, atr=np.full(3, 0.5), tp_atr=4.0, sl_atr=2.0)
    assert labels["barrier"].tolist() == [-1.0]
    assert labels["label_end"].iloc[0] == close.index[1]


def test_meta_labels_take_the_entries_and_the_barriers_from_the_config():
    close = daily([10, 9, 8, 9, 10, 8, 7, 9, 9.1, 9.2, 9.3, 12])
    cfg = MetaTrendConfig(fast=1, slow=2, tp_atr=1.0, sl_atr=1.0)
    atr = pd.Series(1.0, index=close.index)
    labels = make_meta_labels(close, horizon=2, config=cfg, atr=atr)
    assert list(labels.index) == list(close.index[[3, 7]])
    # entry 3 (9): barriers 10 and 8 -> 10 at bar 4; entry 7 (9): 9.1, 9.2 inside (8, 10) -> time out up
    assert labels["barrier"].tolist() == [1.0, 0.0]
    assert list(labels["label_end"]) == list(close.index[[4, 9]])
    assert labels["fwd_return"].tolist() == pytest.approx([math.log(10 / 9), math.log(9.2 / 9)])


def test_the_meta_trend_config_is_checked():
    with pytest.raises(ValidationError, match="fast"):
        MetaTrendConfig(fast=50, slow=20)
    with pytest.raises(ValidationError):
        WalkForwardConfig(target="next_week")
    with pytest.raises(ValidationError, match="extra"):
        MetaTrendConfig(tp=2)


@pytest.fixture(scope="module")
def meta_panel():
    features, closes = synthetic_frames(n_symbols=3, n_bars=800, seed=4, persist=0.9, signal=0.01)
    cfg = MetaTrendConfig(fast=3, slow=8, tp_atr=1.5, sl_atr=1.5)
    return (
        build_panel(features, closes, horizon=10, target="meta_trend", meta_trend=cfg),
        features,
        closes,
        cfg,
    )


def test_the_meta_panel_holds_the_entries_only_with_their_bars_and_labels(meta_panel):
    panel, features, closes, cfg = meta_panel
    assert panel.target == "meta_trend" and len(panel) > 50
    for code, sym in enumerate(panel.symbols):
        mine = panel.symbol == sym
        expected = make_meta_labels(
            closes[sym],
            10,
            cfg,
            features[sym]["atr_pct"] * closes[sym] if "atr_pct" in features[sym] else None,
        )
        assert list(panel.ts[mine]) == list(expected.index)
        assert np.array_equal(
            panel.fwd_return.to_numpy()[mine], expected["fwd_return"].to_numpy(), equal_nan=True
        )
        assert (closes[sym].index[panel.bar_of_row[mine]] == panel.ts[mine]).all()  # bar numbers
        assert np.array_equal(panel.calendar[code], closes[sym].index.as_unit("ns").asi8)
    assert (
        panel.label_end_ns[np.isfinite(panel.fwd_return.to_numpy())]
        > panel.ts_ns[np.isfinite(panel.fwd_return.to_numpy())]
    ).all()


def test_the_meta_panel_embargo_counts_bars_not_entries(meta_panel):
    panel, *_ = meta_panel
    config = WalkForwardConfig(
        horizon=10, target="meta_trend", embargo_bars=10, train_years=1, min_train_rows=20
    )
    for split in splits(panel, config):
        start = split.test_start.value
        assert (panel.label_end_ns[split.train] < start).all()
        for code, cal in enumerate(panel.calendar):
            before = int(np.searchsorted(cal, start))
            mine = split.train[panel.symbol_codes[split.train] == code]
            assert (panel.bar_of_row[mine] < before - 10).all()  # outside the last 10 bars
            near = np.flatnonzero(
                (panel.symbol_codes == code)
                & (panel.ts_ns < start)
                & (panel.bar_of_row < before - 10)
                & (panel.label_end_ns < start)
            )
            assert set(near.tolist()) <= set(split.train.tolist())  # and nothing else is dropped


def test_splits_refuse_a_panel_of_another_target(meta_panel):
    panel, *_ = meta_panel
    with pytest.raises(ValueError, match="target"):
        splits(panel, WalkForwardConfig(horizon=10))


# ---------------------------------------------------------------------------------------------------
# no look-ahead: a label depends on nothing after its end time


def _perturb_after(closes: dict[str, pd.Series], cut: pd.Timestamp, seed: int) -> dict[str, pd.Series]:
    rng = np.random.default_rng(seed)
    out = {}
    for sym, c in closes.items():
        later = c.index > cut
        out[sym] = c.where(~later, c * np.exp(rng.normal(0, 0.05, len(c))))
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut_at=st.integers(40, 380),
    seed=st.integers(0, 1000),
    target=st.sampled_from(["xs_rank", "meta_trend", "direction"]),
)
def test_changing_closes_after_a_labels_end_never_changes_it(cut_at, seed, target):
    features, closes = synthetic_frames(n_symbols=4, n_bars=400, seed=7, persist=0.9)
    cfg = MetaTrendConfig(fast=3, slow=8, tp_atr=1.0, sl_atr=1.0)
    features = {s: f.assign(atr_pct=0.01) for s, f in features.items()}
    cut = closes["S00"].index[cut_at]
    a = build_panel(features, closes, 5, target=target, meta_trend=cfg)
    b = build_panel(features, _perturb_after(closes, cut, seed), 5, target=target, meta_trend=cfg)
    known_a = a.label_end_ns <= cut.value
    assert known_a.any()
    rows_a = a.ts_ns <= cut.value
    assert np.array_equal(a.ts_ns[rows_a], b.ts_ns[b.ts_ns <= cut.value])  # entries are causal
    same = np.flatnonzero(known_a)
    assert np.array_equal(a.fwd_return.to_numpy()[same], b.fwd_return.to_numpy()[same])
    assert np.array_equal(a.label_end_ns[same], b.label_end_ns[same])


# ---------------------------------------------------------------------------------------------------
# confidence intervals


def _rows(n_dates: int, per_date: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    dates = np.repeat(np.arange(n_dates), per_date)
    ts = dates * DAY_NS + 21 * 3600 * 10**9
    return rng, dates, ts, ts + DAY_NS  # one-day labels


def test_perfect_predictions_have_an_auc_ci_of_exactly_one():
    rng, dates, ts, ends = _rows(200, 5, 0)
    r = rng.normal(size=len(dates))
    ci = oos_intervals(np.where(r > 0, 0.9, 0.1), r, r, dates, ts, ends, seed=1)
    assert (ci["auc_lo"], ci["auc_hi"]) == (1.0, 1.0)
    assert ci["ic_lo"] == pytest.approx(1.0) and ci["ic_hi"] == pytest.approx(1.0)
    assert ci["n_dates"] == 200 and ci["n_independent"] == pytest.approx(200)
    assert skill_words(ci["auc_lo"], ci["auc_hi"]).startswith("skill")


def test_random_predictions_have_cis_covering_a_coin_flip():
    rng, dates, ts, ends = _rows(250, 8, 3)
    r, p, e = rng.normal(size=len(dates)), rng.random(len(dates)), rng.normal(size=len(dates))
    ci = oos_intervals(p, e, r, dates, ts, ends, seed=0)
    assert ci["auc_lo"] < 0.5 < ci["auc_hi"] and ci["ic_lo"] < 0.0 < ci["ic_hi"]
    assert 0.02 < ci["auc_hi"] - ci["auc_lo"] < 0.1
    assert (
        skill_words(ci["auc_lo"], ci["auc_hi"]) == "no demonstrated skill: the 95% CI of the AUC includes 0.5"
    )
    assert oos_intervals(p, e, r, dates, ts, ends, seed=0) == ci  # seeded
    by_date = oos_intervals(p, e, r, dates, ts, ends, ic_by_date=True, seed=0)
    assert by_date["ic_lo"] < 0.0 < by_date["ic_hi"] and by_date["auc_lo"] == ci["auc_lo"]


def test_rows_of_one_session_are_not_counted_as_independent():
    # every symbol of a session moves together and gets the same prediction: 10 rows per session
    # carry the information of one, so the CI must be as wide as with one row per session
    rng, dates, ts, ends = _rows(300, 10, 5)
    day_r = rng.normal(size=300)
    day_p = 1 / (1 + np.exp(-(0.3 * day_r + rng.normal(size=300))))
    r, p = day_r[dates], day_p[dates]
    pooled = oos_intervals(p, p, r, dates, ts, ends, seed=2)
    one = oos_intervals(day_p, day_p, day_r, np.arange(300), ts[::10], ends[::10], seed=2)
    width, width_one = pooled["auc_hi"] - pooled["auc_lo"], one["auc_hi"] - one["auc_lo"]
    assert width == pytest.approx(width_one, rel=0.25)
    assert width > 0.05  # a row bootstrap of 3,000 rows would give about a third of this


def test_the_bootstrap_blocks_span_about_one_horizon_of_sessions():
    _, dates, ts, _ = _rows(500, 3, 0)
    ends = ts + 20 * DAY_NS  # 20-day labels on consecutive days
    ci = oos_intervals(
        np.linspace(0, 1, len(dates)), ts.astype(float), np.sin(ts.astype(float)), dates, ts, ends
    )
    assert ci["n_independent"] == pytest.approx(500 / 20, rel=0.1)
    assert ci["ci_block"] == pytest.approx(20, rel=0.1)


def test_too_few_sessions_give_no_interval():
    ci = oos_intervals(np.array([0.2, 0.8]), np.array([0.0, 1.0]), np.array([-1.0, 1.0]), np.array([3, 3]),
                       np.array([0, 1]), np.array([5, 6]))  # fmt: skip
    assert ci["n_dates"] == 1 and math.isnan(ci["auc_lo"]) and math.isnan(ci["ic_hi"])
    assert skill_words(ci["auc_lo"], ci["auc_hi"]).startswith("no demonstrated skill")


def test_the_independent_count_is_the_summed_uniqueness_of_the_labels():
    day = DAY_NS
    assert n_independent(np.arange(4) * day, np.arange(4) * day + 2 * day) == pytest.approx(2.5)  # hand
    assert n_independent(np.arange(10) * day, np.arange(10) * day + day) == pytest.approx(10)  # no overlap
    assert n_independent(np.zeros(4, np.int64), np.full(4, day)) == pytest.approx(1)  # all at once
    with pytest.raises(ValueError, match="end after"):
        n_independent(np.array([5]), np.array([5]))


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.integers(0, 5), st.integers(-3, 3), st.integers(-3, 3), st.integers(0, 3), st.integers(0, 2)
        ),
        min_size=3,
        max_size=40,
    )
)
def test_weighted_auc_and_spearman_equal_the_repeated_rows(data):
    score, ret, e = (np.array([d[i] for d in data], dtype=float) for i in (0, 1, 2))
    weights = np.array([[d[3] for d in data], [d[4] for d in data]], dtype=float)  # two resamples
    up = (ret > 0).astype(float)
    auc = _weighted_auc(_Ties.of(score), up, weights)
    rho = _weighted_spearman(_Ties.of(e), _Ties.of(ret), weights)
    for b, w in enumerate(weights):
        repeated = np.repeat(np.arange(len(data)), w.astype(int))
        direct_auc = _auc(score[repeated], up[repeated]) if len(repeated) else float("nan")
        direct_rho = _spearman(e[repeated], ret[repeated]) if len(repeated) else float("nan")
        assert auc[b] == pytest.approx(direct_auc, nan_ok=True)
        assert rho[b] == pytest.approx(direct_rho, nan_ok=True, abs=1e-9)


# ---------------------------------------------------------------------------------------------------
# the walk-forward with a target, and how its CI is shown


@pytest.fixture(scope="module")
def xs_run():
    features, closes = synthetic_frames(n_symbols=5, n_bars=520, persist=0.8, seed=1)
    panel = build_panel(features, closes, horizon=3, target="xs_rank")
    config = WalkForwardConfig(horizon=3, train_years=0.5, min_train_rows=200, target="xs_rank")
    return walk_forward(panel, "linear", None, config), panel


def test_an_xs_walk_forward_finds_the_planted_signal_with_a_ci_above_chance(xs_run):
    res, panel = xs_run
    s = res.summary
    assert s["auc_lo"] > 0.5 and s["ic_lo"] > 0.0 and s["auc_lo"] <= s["auc"] <= s["auc_hi"]
    assert s["n_dates"] == len(
        np.unique(
            panel.dates[np.isin(panel.ts, res.predictions["ts"]) & np.isfinite(panel.fwd_return.to_numpy())]
        )
    )
    assert s["n_independent"] == pytest.approx(s["n_dates"] / 3, rel=0.15)
    pred = res.predictions.merge(
        pd.DataFrame(
            {"ts": panel.ts, "symbol": panel.symbol.astype(str), "fwd": panel.fwd_return.to_numpy()}
        ),
        on=["ts", "symbol"],
    )
    dates = session_dates(pd.DatetimeIndex(pred["ts"]))
    assert s["ic"] == pytest.approx(
        oos_metrics(
            pred["prob_up"].to_numpy(), pred["exp_return"].to_numpy(), pred["fwd"].to_numpy(), dates=dates
        )["ic"]
    )


def test_the_train_line_and_the_report_show_the_intervals_and_say_no_skill_in_words():
    from hflite.analytics.report_ai import _oos_html
    from hflite.cli_ai import _oos_overall

    summary = {"n_windows": 4.0, "auc": 0.512, "auc_lo": 0.488, "auc_hi": 0.537, "ic": 0.01, "ic_lo": -0.02,
               "ic_hi": 0.04, "n_dates": 1725.0, "n_independent": 86.6, "ci_block": 19.9}  # fmt: skip
    line = _oos_overall(summary, WalkForwardConfig(horizon=20, target="xs_rank"))
    assert line.startswith(
        "OOS overall (target xs_rank, horizon 20): n_windows 4, auc 0.512 [95% CI 0.488, 0.537]"
    )
    assert "ic 0.010 [95% CI -0.020, 0.040]" in line
    assert "1725 sessions, about 87 independent observations" in line
    assert line.endswith("no demonstrated skill: the 95% CI of the AUC includes 0.5.")
    html = _oos_html({"rows": 9000.0, "hit_rate": 0.52, "base_rate": 0.5, **summary})
    assert "0.512 (95% CI 0.488 to 0.537)" in html and "0.010 (95% CI -0.020 to 0.040)" in html
    assert "1,725 (about 87 independent)" in html
    assert "no demonstrated skill: the 95% CI of the AUC includes 0.5" in html
    plain = _oos_html({"rows": 9000.0, "hit_rate": 0.52, "base_rate": 0.5, "auc": 0.512})
    assert "95% CI" not in plain and "Sessions" not in plain  # a result without intervals renders as before


def test_a_bad_target_or_trend_setting_is_a_one_line_config_error():
    from pathlib import Path

    from hflite.config import ConfigError, load_settings, parse_overrides

    ai = Path(__file__).resolve().parents[1] / "configs" / "ai.toml"
    with pytest.raises(
        ConfigError, match=r"config error: ai\.walkforward\.target: Input should be 'direction'"
    ):
        load_settings(ai, parse_overrides(["ai.walkforward.target=weekly"]), trades=False)
    with pytest.raises(
        ConfigError, match=r"ai\.walkforward\.meta_trend: fast \(60\) must be below slow \(50\)"
    ):
        load_settings(ai, parse_overrides(["ai.walkforward.meta_trend.fast=60"]), trades=False)
    xs = load_settings(ai.with_name("ai_xs20.toml"), trades=False).ai.walkforward
    assert (xs.target, xs.horizon, xs.embargo_bars) == ("xs_rank", 20, 20)


@pytest.mark.slow
def test_hflite_train_runs_a_target_and_prints_its_intervals(sample_store, tmp_path):
    from typer.testing import CliRunner

    from hflite.cli import app

    cfg = tmp_path / "ai.toml"
    cfg.write_text(
        f"""
[run]
symbols = ["SPY", "TLT", "GLD", "QQQ"]
start = "2019-01-02"
end = "2019-12-31"
[data]
dir = "{sample_store.root}"
[ai]
history_start = "2014-01-01"
registry_dir = "{tmp_path / "models"}"
[ai.walkforward]
retrain = "quarterly"
train_years = 3
min_train_rows = 300
target = "xs_rank"
""",
        encoding="utf-8",
    )
    out = CliRunner().invoke(
        app, ["train", "--model", "linear", "--config", str(cfg)], env={"COLUMNS": "200"}
    )
    assert out.exit_code == 0, out.output
    line = " ".join(out.output.split())
    assert "OOS overall (target xs_rank, horizon 5): n_windows 4," in line
    assert re.search(r"auc 0\.\d{3} \[95% CI 0\.\d{3}, 0\.\d{3}\]", line)
    assert re.search(r"\d+ sessions, about \d+ independent observations; (no demonstrated )?skill", line)
