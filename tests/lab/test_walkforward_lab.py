"""``hflite walkforward``: the window arithmetic (hand-checked dates), the stitching of out-of-sample
returns (hand-computed chains), that a window's choice cannot see past its train window, and the whole
command on the sample data writing its report."""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hflite.analytics.metrics import _utc_index
from hflite.cli import app
from hflite.config import ConfigError, load_settings
from hflite.data.store import Store
from hflite.lab.space import parse_space
from hflite.lab.trial import Evaluator, with_window
from hflite.lab.walkforward import (
    Choice,
    Window,
    parameter_stability,
    parse_span,
    plan_windows,
    search_warmup,
    stitch,
    walk_forward,
    window_returns,
)
from hflite.lab.walkforward_report import REPORT_FILES, write_walkforward
from tests.conftest import make_settings

runner = CliRunner()
D = date.fromisoformat

# ------------------------------------------------------------------------------------------ spans


@pytest.mark.parametrize(
    ("text", "months", "days"),
    [("3y", 36, 0), ("18m", 18, 0), ("26w", 0, 182), ("90d", 0, 90), (" 2Y ", 24, 0)],
)
def test_a_span_is_months_or_days(text, months, days):
    s = parse_span(text)
    assert (s.months, s.days) == (months, days)


@pytest.mark.parametrize("text", ["3x", "0y", "", "y", "1.5y", "-3m"])
def test_a_bad_span_is_one_config_error_naming_the_flag(text):
    with pytest.raises(ConfigError, match=r"^config error: --test: .* is not a length such as 3y"):
        parse_span(text, "--test")


# ---------------------------------------------------------------------------------------- windows


def test_rolling_windows_move_by_the_test_length_and_the_last_one_is_cut_at_the_period_end():
    ws = plan_windows("2015-01-02", "2022-12-31", "3y", "6m")
    assert len(ws) == 10
    assert ws[0] == Window(0, D("2015-01-02"), D("2018-01-01"), D("2018-01-02"), D("2018-07-01"))
    assert ws[1] == Window(1, D("2015-07-02"), D("2018-07-01"), D("2018-07-02"), D("2019-01-01"))
    assert ws[8] == Window(8, D("2019-01-02"), D("2022-01-01"), D("2022-01-02"), D("2022-07-01"))
    # 2015-01-02 + 96 months - 1 day = 2023-01-01 passes the end: cut to 2022-12-31 (183 of 181+ days)
    assert ws[9] == Window(9, D("2019-07-02"), D("2022-07-01"), D("2022-07-02"), D("2022-12-31"), True)


def test_a_tail_shorter_than_half_a_test_window_is_left_out():
    # the tail after 2022-07-01 is 2022-07-02..2022-09-15 = 76 days, under half of 181
    ws = plan_windows("2015-01-02", "2022-09-15", "3y", "6m")
    assert len(ws) == 9 and not any(w.partial for w in ws)
    assert ws[-1].test_end == D("2022-07-01")
    # 2022-07-02..2022-09-30 = 91 days: at least half of 181, kept and cut
    assert plan_windows("2015-01-02", "2022-09-30", "3y", "6m")[-1].test_end == D("2022-09-30")


def test_anchored_windows_all_train_from_the_start():
    ws = plan_windows("2015-01-02", "2022-12-31", "3y", "1y", anchored=True)
    assert [(w.train_start, w.train_end, w.test_start, w.test_end) for w in ws] == [
        (D("2015-01-02"), D("2018-01-01"), D("2018-01-02"), D("2019-01-01")),
        (D("2015-01-02"), D("2019-01-01"), D("2019-01-02"), D("2020-01-01")),
        (D("2015-01-02"), D("2020-01-01"), D("2020-01-02"), D("2021-01-01")),
        (D("2015-01-02"), D("2021-01-01"), D("2021-01-02"), D("2022-01-01")),
        # 2022-01-02..2022-12-31 is 364 of 365 days: kept, cut
        (D("2015-01-02"), D("2022-01-01"), D("2022-01-02"), D("2022-12-31")),
    ]


def test_a_step_longer_than_the_test_leaves_gaps_between_test_windows():
    ws = plan_windows("2016-01-01", "2020-12-31", "2y", "6m", step="1y")
    assert [(w.train_start, w.test_start, w.test_end) for w in ws] == [
        (D("2016-01-01"), D("2018-01-01"), D("2018-06-30")),
        (D("2017-01-01"), D("2019-01-01"), D("2019-06-30")),
        (D("2018-01-01"), D("2020-01-01"), D("2020-06-30")),
    ]


def test_weeks_and_days_count_calendar_days():
    ws = plan_windows("2020-01-01", "2020-12-31", "26w", "90d")
    # 2020 is a leap year: Jan 1 + 182 days = Jul 1; Jul 1 + 90 days = Sep 29
    assert ws[0] == Window(0, D("2020-01-01"), D("2020-06-30"), D("2020-07-01"), D("2020-09-28"))
    assert ws[1] == Window(1, D("2020-03-31"), D("2020-09-28"), D("2020-09-29"), D("2020-12-27"))
    assert len(ws) == 2  # Dec 28..31 (4 of 90 days) is too short a tail


def test_month_ends_do_not_drift():
    # computed from the start in one step: Jan 31 + 1 month is Feb 29 (2016), + 2 months Mar 31
    ws = plan_windows("2016-01-31", "2016-06-30", "1m", "1m")
    assert [(w.test_start, w.test_end) for w in ws[:3]] == [
        (D("2016-02-29"), D("2016-03-30")),
        (D("2016-03-31"), D("2016-04-29")),
        (D("2016-04-30"), D("2016-05-30")),
    ]


def test_a_step_shorter_than_the_test_is_refused():
    with pytest.raises(ConfigError, match=r"--step: 3m is shorter than --test 6m"):
        plan_windows("2015-01-01", "2022-12-31", "3y", "6m", step="3m")


def test_too_little_data_for_one_window_is_one_error_naming_the_sizes():
    with pytest.raises(ConfigError) as exc:
        plan_windows("2015-01-02", "2016-12-31", "3y", "6m")
    assert str(exc.value) == (
        "config error: walkforward: the period 2015-01-02 to 2016-12-31 (730 days) is too short for one "
        "window: --train 3y (1096 days) plus at least half of --test 6m "
        "(91 of 181 days) need 1187 days"
    )


_spans = st.builds(
    lambda n, u: parse_span(f"{n}{u}"), st.integers(1, 30), st.sampled_from(["y", "m", "w", "d"])
).filter(lambda s: s.months <= 60 and s.days <= 400)


@hsettings(max_examples=60, deadline=None)
@given(
    start=st.dates(date(2000, 1, 1), date(2020, 12, 31)),
    years=st.integers(1, 12),
    train=_spans,
    test=_spans,
    anchored=st.booleans(),
)
def test_windows_tile_the_period_without_overlap_or_look_ahead(start, years, train, test, anchored):
    end = start + timedelta(days=365 * years)
    try:
        ws, why = plan_windows(start, end, train, test, anchored=anchored), ""
    except ConfigError as exc:
        ws, why = [], str(exc)
    if not ws:
        assert "too short for one window" in why
        return
    for w in ws:
        assert w.train_start <= w.train_end < w.test_start <= w.test_end <= end
        assert w.test_start - w.train_end == timedelta(days=1)  # the test follows its train window
        assert w.train_start == start if anchored else w.train_start >= start
    for a, b in zip(ws, ws[1:], strict=False):
        assert b.test_start - a.test_end == timedelta(days=1)  # step == test: contiguous, no overlap
    assert all(not w.partial for w in ws[:-1])


# -------------------------------------------------------------------------------------- stitching


def _curve(days: list[str], values: list[float], hour: int = 21) -> pd.Series:
    idx = pd.DatetimeIndex([pd.Timestamp(d, tz="UTC") + pd.Timedelta(hours=hour) for d in days])
    return pd.Series(values, idx, name="equity")


def test_window_returns_start_from_the_cash_and_use_each_days_last_point():
    eq = _curve(["2020-01-02", "2020-01-03", "2020-01-03", "2020-01-06"], [100.0, 999.0, 110.0, 99.0])
    r = window_returns(eq, 100.0)
    assert list(r.index.strftime("%Y-%m-%d")) == ["2020-01-02", "2020-01-03", "2020-01-06"]
    assert r.to_numpy() == pytest.approx([0.0, 0.10, -0.10])


def test_a_first_day_away_from_the_cash_counts_as_that_days_return():
    r = window_returns(_curve(["2020-01-02", "2020-01-03"], [102.0, 102.0]), 100.0)
    assert r.to_numpy() == pytest.approx([0.02, 0.0])


def test_stitching_chains_the_windows_returns_from_the_cash():
    w1 = window_returns(_curve(["2020-01-02", "2020-01-03", "2020-01-06"], [100.0, 110.0, 99.0]), 100.0)
    w2 = window_returns(_curve(["2020-01-07", "2020-01-08"], [100.0, 120.0]), 100.0)
    eq = stitch([w1, w2], 1000.0)
    # 1000 x 1.0 x 1.1 x 0.9 = 990 at the end of window 1; window 2 starts flat (990), then +20% = 1188
    assert eq.to_numpy() == pytest.approx([1000.0, 1100.0, 990.0, 990.0, 1188.0])
    assert eq.iloc[-1] / 1000.0 - 1 == pytest.approx((99 / 100) * (120 / 100) - 1)


def test_a_window_ending_on_the_day_the_next_starts_compounds_into_that_days_return():
    # window 1's last point is a crypto close at 00:00 UTC on Jul 2; window 2's first is a stock close
    # at 21:00 the same day: consecutive in time, one day's return (1.05 x 1.02)
    a = window_returns(_curve(["2021-07-01", "2021-07-02"], [100.0, 105.0], hour=0), 100.0)
    b = window_returns(_curve(["2021-07-02", "2021-07-06"], [102.0, 102.0]), 100.0)
    eq = stitch([a, b], 100.0)
    assert list(eq.index.strftime("%Y-%m-%d")) == ["2021-07-01", "2021-07-02", "2021-07-06"]
    assert eq.to_numpy() == pytest.approx([100.0, 100.0 * 1.05 * 1.02, 100.0 * 1.05 * 1.02])


def test_stitching_refuses_overlapping_windows_and_is_empty_for_none():
    a = window_returns(_curve(["2020-01-02", "2020-01-03"], [100.0, 101.0]), 100.0)
    b = window_returns(_curve(["2020-01-02", "2020-01-06"], [100.0, 101.0]), 100.0)
    with pytest.raises(ValueError, match="overlap"):
        stitch([a, b], 100.0)
    assert stitch([], 100.0).empty


def test_parameter_stability_by_hand():
    params = parse_space(["fast=5..50", "ma=sma,ema"])
    chosen = [
        {"strategy.fast": 10, "strategy.ma": "sma"},
        {"strategy.fast": 20, "strategy.ma": "ema"},
        {"strategy.fast": 20, "strategy.ma": "ema"},
        {"strategy.fast": 40, "strategy.ma": "ema"},
    ]
    fast, ma = parameter_stability(chosen, params)
    assert fast["mean"] == 22.5
    assert fast["std"] == pytest.approx(math.sqrt((12.5**2 + 2.5**2 + 2.5**2 + 17.5**2) / 4))
    assert fast["spread_of_range"] == pytest.approx(30 / 45)
    assert fast["mean_jump_of_range"] == pytest.approx((10 + 0 + 20) / 3 / 45)
    assert fast["changes"] == 2
    assert (ma["mode"], ma["mode_share"], ma["changes"]) == ("ema", 0.75, 1)


def test_the_warm_up_covers_the_widest_parameters(sample_store):
    s = make_settings(sample_store, strategy={"name": "trend", "stop_atr": 0})
    assert search_warmup(s, parse_space(["fast=5..50", "slow=20..200"])) == 201  # max(slow, atr) + 1
    # fast's high end above slow's: the pair is invalid; the integer bound still stands
    assert search_warmup(s, parse_space(["fast=5..300", "slow=20..200"])) == 301


# ------------------------------------------------------------------------ on the sample, one symbol

GRID = [(f, s) for f in (5, 10, 20) for s in (50, 100)]


def grid_search(seen: list[tuple[Window, pd.Timestamp]] | None = None):
    """An exhaustive search over GRID by Sharpe (deterministic), recording the last bar it could see."""

    def search(ev: Evaluator, params, window: Window, progress) -> Choice:
        if seen is not None:
            seen.append((window, _utc_index(ev.prep.md.timeline)[-1]))
        best: tuple[dict, float] | None = None
        for i, (f, s) in enumerate(GRID):
            values = {"strategy.fast": f, "strategy.slow": s}
            v = ev.evaluate(values).value("sharpe")
            if best is None or v > best[1]:
                best = (values, v)
            progress(i + 1, len(GRID))
        assert best is not None
        return Choice(best[0], best[1], len(GRID), 0, 0.0)

    return search


def _one_symbol(store: Store, **run):
    return make_settings(
        store,
        run={"start": "2015-01-02", "end": "2024-12-31", **run},
        strategy={"name": "trend", "stop_atr": 0, "fast": 20, "slow": 100},
        risk={"profile": "minimal"},
    )


@pytest.fixture(scope="module")
def wf(sample_store):
    seen: list = []
    s = _one_symbol(sample_store)
    r = walk_forward(
        s,
        parse_space(["fast=5..20", "slow=50..100"]),
        train="2y",
        test="1y",
        store=sample_store,
        search=grid_search(seen),
    )
    return r, seen


def test_the_hold_out_is_never_read_and_the_windows_cover_the_rest(wf):
    r, seen = wf
    assert r.period == (D("2015-01-02"), D("2022-12-31"))
    assert [(w.window.test_start, w.window.test_end) for w in r.windows][0] == (
        D("2017-01-02"),
        D("2018-01-01"),
    )
    assert r.windows[-1].window.test_end == D("2022-12-31")
    assert r.oos_equity.index[-1] < pd.Timestamp("2023-01-01", tz="UTC")
    assert all(c.index[-1] < pd.Timestamp("2023-01-01", tz="UTC") for c in r.bench_equity.values())


def test_each_search_sees_its_train_window_only(wf):
    r, seen = wf
    assert len(seen) == len(r.windows)
    for window, last in seen:
        assert pd.Timestamp(last) < pd.Timestamp(window.test_start, tz="UTC")


def test_the_oos_run_of_a_window_is_the_winner_on_a_fresh_test_window(sample_store, wf):
    r, _ = wf
    w = r.windows[2]
    base = _one_symbol(sample_store, end="2022-12-31")
    ev = Evaluator(with_window(base, w.window.test_start, w.window.test_end), sample_store, warmup=101)
    again = ev.evaluate(w.params)
    assert again.metrics["total_return"] == pytest.approx(w.oos_metrics["total_return"], abs=1e-12)
    assert ev.evaluate({}).metrics["total_return"] == pytest.approx(w.base_metrics["total_return"], abs=1e-12)
    assert w.choice.value == pytest.approx(w.is_value, nan_ok=True)  # the IS re-run is the study's value


def test_the_stitched_curves_are_the_windows_returns_chained(wf):
    r, _ = wf
    grow = np.prod([1 + w.oos_metrics["total_return"] for w in r.windows])
    assert r.oos_equity.iloc[-1] == pytest.approx(r.initial_cash * grow, rel=1e-12)
    assert r.oos_metrics["total_return"] == pytest.approx(grow - 1, rel=1e-12)
    base = np.prod([1 + w.base_metrics["total_return"] for w in r.windows])
    assert r.base_metrics["total_return"] == pytest.approx(base - 1, rel=1e-12)
    # buy-and-hold over the same windows: each window bought at its first close, held to its last
    name = "SPY buy & hold"
    bh = np.prod([1 + w.bench_returns[name].add(1).prod() - 1 for w in r.windows])
    assert r.bench_metrics[name]["total_return"] == pytest.approx(bh - 1, rel=1e-12)
    assert r.oos_metrics["trades"] == sum(w.oos_metrics["trades"] for w in r.windows)


def test_efficiency_and_positive_share_by_their_definitions(wf):
    r, _ = wf
    is_cagr = np.mean([w.is_metrics["cagr"] for w in r.windows])
    expected = r.oos_metrics["cagr"] / is_cagr if is_cagr > 0 else math.nan
    assert r.efficiency == pytest.approx(expected, nan_ok=True)
    share = np.mean([w.oos_metrics["total_return"] > 0 for w in r.windows])
    assert r.positive_share == share
    w = r.windows[0]
    assert w.degradation_diff == pytest.approx(w.oos_value - w.is_value, nan_ok=True)


def test_the_report_folder_holds_every_file_and_the_hold_out_sentence(wf, tmp_path):
    r, _ = wf
    index = write_walkforward(r, tmp_path / "wf")
    assert sorted(p.name for p in (tmp_path / "wf").iterdir()) == sorted(REPORT_FILES)
    html = index.read_text(encoding="utf-8")
    assert "2023-01-01 onwards was never used" in html
    for title in ("Timeline", "Equity", "In sample vs out of sample", "Chosen parameters", "Windows"):
        assert f">{title}</h2>" in html
    windows = pd.read_csv(tmp_path / "wf" / "windows.csv")
    assert list(windows["window"]) == [f"W{i + 1}" for i in range(len(r.windows))]
    assert list(windows["fast"]) == [w.params["strategy.fast"] for w in r.windows]
    eq = pd.read_csv(tmp_path / "wf" / "oos_equity.csv", index_col=0)
    assert {"oos", "unoptimised", "benchmark_SPY buy & hold"} <= set(eq.columns)
    assert eq["oos"].dropna().iloc[-1] == pytest.approx(r.oos_equity.iloc[-1])
    head = json.loads((tmp_path / "wf" / "walkforward.json").read_text())
    assert head["holdout_from"] == "2023-01-01" and head["windows"] == len(r.windows)


def test_stock_and_crypto_windows_on_the_engine_stitch_into_one_curve(sample_store):
    # BTC's bar of a window's last date closes at 00:00 UTC the next day, the day the next window starts
    s = make_settings(
        sample_store,
        run={
            "symbols": ["SPY", "BTC-USD"],
            "start": "2018-01-02",
            "end": "2019-12-31",
            "benchmarks": ["SPY"],
        },
        strategy={"name": "trend", "fast": 20, "slow": 100},
    )

    def two(ev: Evaluator, params, window: Window, progress) -> Choice:
        best = max(
            ((10, 50), (20, 100)), key=lambda p: ev.evaluate(dict(zip(KEYS, p, strict=True))).value("sharpe")
        )
        return Choice(dict(zip(KEYS, best, strict=True)), math.nan, 2, 0, 0.0)

    r = walk_forward(
        s, parse_space(["fast=10..20", "slow=50..100"]), train="1y", test="6m", store=sample_store, search=two
    )
    assert [w.path for w in r.windows] == ["engine"] * 2
    first, second = (w.oos_returns for w in r.windows)
    assert first.index[-1] == second.index[0] == pd.Timestamp("2019-07-02", tz="UTC")  # the shared day
    grow = np.prod([1 + w.oos_metrics["total_return"] for w in r.windows])
    assert r.oos_metrics["total_return"] == pytest.approx(grow - 1, rel=1e-12)
    assert r.oos_equity.index.is_unique


KEYS = ("strategy.fast", "strategy.slow")


def test_progress_runs_over_windows_times_trials_to_the_end(sample_store):
    calls: list[tuple[str, float]] = []
    walk_forward(
        _one_symbol(sample_store, end="2018-12-31"), parse_space(["fast=5..20", "slow=50..100"]),
        train="2y", test="1y", store=sample_store, search=grid_search(),
        progress=lambda m, f: calls.append((m, f)),
    )  # fmt: skip
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert ("W1/2 trial 3/6", 0.25) in calls and ("W2/2 trial 6/6", 1.0) in calls


# ---------------------------------------------------------------------------------- no look-ahead


def _changed_after(sample_store: Store, root: Path, cut: str) -> Store:
    """A store with the sample's SPY and FEDFUNDS, SPY's prices after ``cut`` turned upside down (each
    daily move reversed), so every window after ``cut`` sees a different market."""
    spy = sample_store.read_bars("SPY", "1d")
    after = pd.to_datetime(spy["ts"], utc=True) > pd.Timestamp(cut, tz="UTC")
    k = int(np.argmax(after.to_numpy()))
    changed = spy.copy()
    for col in ("open", "high", "low", "close"):
        x = spy[col].to_numpy(dtype="float64")
        y = x.copy()
        y[k:] = x[k - 1] ** 2 / x[k:]  # mirror the path around the last unchanged close
        changed[col] = y
    changed["high"], changed["low"] = (
        changed[["high", "low"]].max(axis=1),
        changed[["high", "low"]].min(axis=1),
    )
    store = Store(root)
    store.write_bars("SPY", "1d", changed)
    store.write_series("FEDFUNDS", sample_store.read_series("FEDFUNDS"))
    return store


def test_changing_the_data_after_a_train_window_does_not_change_its_choice(sample_store, tmp_path):
    space = parse_space(["fast=5..20", "slow=50..100"])
    kw = {"train": "2y", "test": "1y", "search": grid_search()}
    s = _one_symbol(sample_store, end="2019-12-31")
    first_train_end = plan_windows("2015-01-02", "2019-12-31", "2y", "1y")[0].train_end  # 2017-01-01
    a = walk_forward(s, space, store=sample_store, **kw)
    b = walk_forward(s, space, store=_changed_after(sample_store, tmp_path / "b", str(first_train_end)), **kw)
    assert a.windows[0].params == b.windows[0].params
    assert _same(a.windows[0].is_metrics, b.windows[0].is_metrics)
    # ...while what came after did change: the test window's prices and the later windows' returns
    assert a.windows[0].oos_metrics["total_return"] != b.windows[0].oos_metrics["total_return"]
    assert not _same(a.windows[1].is_metrics, b.windows[1].is_metrics)


def _same(a: dict, b: dict) -> bool:
    """Equal metric dicts, NaN equal to NaN (an undefined ratio in both)."""
    return pd.Series(a).equals(pd.Series(b))


def test_a_shorter_end_date_gives_the_same_first_choices(sample_store, wf):
    long, _ = wf  # the same config and space, to 2022-12-31
    space = parse_space(["fast=5..20", "slow=50..100"])
    short = walk_forward(
        _one_symbol(sample_store, end="2019-07-15"),
        space,
        train="2y",
        test="1y",
        store=sample_store,
        search=grid_search(),
    )
    assert len(long.windows) == 6
    assert len(short.windows) == 3 and short.windows[-1].window.partial  # 2019-01-02..2019-07-15
    for a, b in zip(short.windows, long.windows[:3], strict=True):
        assert a.params == b.params and _same(a.is_metrics, b.is_metrics)
    for a, b in zip(short.windows[:2], long.windows[:2], strict=True):
        assert _same(a.oos_metrics, b.oos_metrics)


# ------------------------------------------------------------------------------------ the command


def _config(tmp_path: Path, store: Store, **run: str) -> Path:
    lines = {
        "run": {
            "name": "wf",
            "symbols": ["SPY"],
            "start": "2015-01-02",
            "end": "2024-12-31",
            "benchmarks": ["SPY"],
        }
        | run,
        "strategy": {"name": "trend", "fast": 20, "slow": 100, "stop_atr": 0},
        "risk": {"profile": "minimal"},
        "data": {"dir": str(store.root)},
        "report": {"dir": str(tmp_path / "reports")},
        "llm": {"mode": "off"},
    }
    text = ""
    for section, values in lines.items():
        text += f"[{section}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    path = tmp_path / "wf.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_command_explains_itself_with_an_example():
    result = runner.invoke(app, ["walkforward", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Example: hflite walkforward --config configs/demo.toml --param fast=5..50" in result.output
    assert "same flag" in result.output  # --param is hflite optimize's flag


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train", "3 years"], "error: config error: --train: '3 years' is not a length such as 3y"),
        (
            ["--train", "3y", "--test", "6m", "--step", "1m"],
            "error: config error: --step: 1m is shorter than",
        ),
        (["--set", "run.end=2016-12-31"], "is too short for one window: --train 3y (1096 days)"),
        (
            ["--set", "run.start=2022-01-03", "--train", "1y"],
            "the period 2022-01-03 to 2022-12-31 (363 days) is too short for one window: --train 1y "
            "(365 days) plus at least half of --test 6m (91 of 181 days) need 456 days "
            "(the period stops before the hold-out from 2023-01-01)",
        ),
        (["--objective", "luck"], "error: config error: --objective: 'luck' is not one of sharpe, sortino"),
        (["--holdout", "soon"], "error: --holdout: 'soon' is not a date"),
        (
            ["--path", "research", "--set", "strategy.stop_atr=2"],
            "error: config error: --path research: protective stops need the full engine",
        ),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, sample_store, args, message):
    cfg = _config(tmp_path, sample_store)
    result = runner.invoke(
        app, ["walkforward", "-c", str(cfg), "-p", "fast=5..20", *args], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_command_without_a_param_asks_for_one(tmp_path, sample_store):
    result = runner.invoke(app, ["walkforward", "-c", str(_config(tmp_path, sample_store))])
    assert result.exit_code == 2
    assert "give at least one --param" in result.output


def test_the_command_end_to_end_writes_the_report(tmp_path, sample_store):
    cfg = _config(tmp_path, sample_store, end="2020-12-31")
    out = tmp_path / "wf-report"
    result = runner.invoke(
        app,
        [
            "walkforward",
            "-c",
            str(cfg),
            "--param",
            "fast=5..30",
            "--param",
            "slow=40..120",
            "--train",
            "2y",
            "--test",
            "1y",
            "--trials",
            "8",
            "--seed",
            "3",
            "--out",
            str(out),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "2023-01-01 onwards was never used" in html
    windows = pd.read_csv(out / "windows.csv")
    assert list(windows["test_start"]) == ["2017-01-02", "2018-01-02", "2019-01-02", "2020-01-02"]
    assert (windows["trials"] + windows["pruned"] == 8).all()
    assert windows["fast"].between(5, 30).all() and windows["slow"].between(40, 120).all()
    assert set(windows["path"]) == {"research"}
    head = json.loads((out / "walkforward.json").read_text())
    assert head["trials_per_window"] == 8 and head["windows"] == 4
    for text in (
        "walk-forward trend: 4 windows",
        "stitched out-of-sample",
        "SPY B&H",
        "Walk-forward efficiency",
    ):
        assert text in result.output
    assert f"Report: {out / 'index.html'}" in result.output
    # the same seed gives the same choices; each winner's in-sample re-run scores the study's best value
    again = walk_forward(
        load_settings(cfg), parse_space(["fast=5..30", "slow=40..120"]), train="2y", test="1y", n_trials=8,
        seed=3, store=sample_store,
    )  # fmt: skip
    assert [w.params["strategy.fast"] for w in again.windows] == list(windows["fast"])
    assert [w.params["strategy.slow"] for w in again.windows] == list(windows["slow"])
    for w in again.windows:
        assert w.choice.value == pytest.approx(w.is_value, rel=1e-12)


def test_the_optuna_studies_choose_the_same_with_a_shorter_end_date(sample_store):
    space = parse_space(["fast=5..30", "slow=40..120"])
    runs = [
        walk_forward(_one_symbol(sample_store, end=end), space, train="2y", test="1y", n_trials=6, seed=1,
                     store=sample_store)
        for end in ("2018-12-31", "2019-12-31")
    ]  # fmt: skip
    short, long = runs
    assert (len(short.windows), len(long.windows)) == (2, 3)
    for a, b in zip(short.windows, long.windows, strict=False):
        assert a.params == b.params and a.choice.value == b.choice.value
