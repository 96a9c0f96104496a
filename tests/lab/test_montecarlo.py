"""Monte Carlo of a run: hand-computed null paths and costs, uniform non-overlapping placements, the
shuffle keeping the final return, the bootstrap's fixed points, seeds, and one real run."""

from __future__ import annotations

import json
import math
from collections import Counter
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hflite.engine.result import FILL_COLUMNS, TRADE_COLUMNS
from hflite.engine.run import backtest
from hflite.lab.montecarlo import (
    MonteCarloConfig,
    bootstrap_mc,
    cost_bps,
    monte_carlo,
    perturbation_summary,
    random_entry_mc,
    random_entry_returns,
    random_starts,
    trade_order_mc,
    trade_returns_on_equity,
)
from hflite.lab.stats import path_statistics, sharpe
from hflite.tables import build_table
from tests.conftest import make_settings

# ------------------------------------------------------------------------------ random placements


def test_placements_are_uniform_over_every_non_overlapping_arrangement():
    """Blocks of 2 and 1 slots in 4 slots fit in exactly 6 ways (2 at 0: 1 at 2 or 3; 2 at 1: 1 at 0
    or 3; 2 at 2: 1 at 0 or 1); 60,000 draws hit each about 10,000 times."""
    starts = random_starts(4, [2, 1], 60_000, np.random.default_rng(1))
    counts = Counter(map(tuple, starts.tolist()))
    assert set(counts) == {(0, 2), (0, 3), (1, 0), (1, 3), (2, 0), (2, 1)}
    for n in counts.values():
        assert abs(n - 10_000) < 400  # 4 standard deviations of a binomial(60000, 1/6)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=8),
    extra=st.integers(0, 20),
    seed=st.integers(0, 1000),
)
def test_placed_blocks_never_overlap_and_stay_inside(lengths, extra, seed):
    n = sum(lengths) + extra
    starts = random_starts(n, lengths, 50, np.random.default_rng(seed))
    ln = np.array(lengths)
    assert starts.min() >= 0 and (starts + ln).max() <= n
    for row in starts:
        order = np.argsort(row)
        ends = row[order] + ln[order]
        assert np.all(row[order][1:] >= ends[:-1])


def test_blocks_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="do not fit"):
        random_starts(5, [3, 3], 1, np.random.default_rng(0))


# ------------------------------------------------------------------------------- null paths by hand


def test_one_trade_filling_the_period_is_the_weighted_returns_minus_both_costs():
    r = np.array([0.10, -0.05, 0.02])
    net, starts = random_entry_returns(r, [3], [1.0], 0.5, 0.001, 4, np.random.default_rng(0))
    assert starts.tolist() == [[0]] * 4
    # 0.5 x returns, 10 bps of the 0.5 weight (0.0005) at the entry slot and at the exit slot
    np.testing.assert_allclose(net, [[0.0495, -0.025, 0.0095]] * 4, rtol=0, atol=1e-15)
    total = path_statistics(net, 252).total_return[0]
    assert total == pytest.approx(1.0495 * 0.975 * 1.0095 - 1, abs=1e-14)
    short, _ = random_entry_returns(r, [3], [-1.0], 0.5, 0.0, 1, np.random.default_rng(0))
    np.testing.assert_allclose(short, [[-0.05, 0.025, -0.01]], atol=1e-15)


def test_a_seeded_null_path_matches_the_hand_computation_from_its_starts():
    rng = np.random.default_rng(42)
    r = rng.normal(0, 0.01, 30)
    held, direction, w, c = np.array([4, 2, 0, 5]), np.array([1.0, -1.0, 1.0, 1.0]), 0.3, 0.0007
    net, starts = random_entry_returns(r, held, direction, w, c, 8, np.random.default_rng(7))
    again, starts2 = random_entry_returns(r, held, direction, w, c, 8, np.random.default_rng(7))
    np.testing.assert_array_equal(net, again)
    np.testing.assert_array_equal(starts, starts2)
    for p in range(8):
        expected = [0.0] * 30
        for s, h, d in zip(starts[p].tolist(), held.tolist(), direction.tolist(), strict=True):
            for j in range(s, s + h):
                expected[j] += d * w * r[j]
            expected[s] -= w * c  # entry
            expected[s + max(h, 1) - 1] -= w * c  # exit (same slot for a 0-bar trade)
        np.testing.assert_allclose(net[p], expected, rtol=0, atol=1e-15)
    held_blocks = [(s, s + h) for s, h in zip(starts[0].tolist(), held.tolist(), strict=True) if h]
    for (_, a1), (b0, _) in pairwise(sorted(held_blocks)):
        assert a1 <= b0


def test_the_null_keeps_the_exposure_of_the_trades():
    ones = np.ones(200)
    held = np.array([10, 25, 3, 40])
    net, _ = random_entry_returns(ones, held, np.ones(4), 0.25, 0.0, 300, np.random.default_rng(3))
    # with every return 1, a path's slot value is its position: never more than one trade, 85 bars held
    np.testing.assert_allclose(net.sum(axis=1), 0.25 * held.sum())
    assert net.max() == 0.25 and net.min() == 0.0


# -------------------------------------------------------------------------------- costs and trades


def test_the_average_cost_is_fees_and_slippage_over_notional():
    fills = pd.DataFrame(
        [
            {"notional_usd": 10_000.0, "price": 100.0, "fee_usd": 1.0, "slippage": 0.05},  # 1 + 5 USD
            {"notional_usd": 5_000.0, "price": 50.0, "fee_usd": 2.0, "slippage": 0.0},  # 2 USD
        ],
        columns=FILL_COLUMNS,
    )
    assert cost_bps(fills) == pytest.approx(8 / 15_000 * 1e4)
    assert cost_bps(pd.DataFrame(columns=FILL_COLUMNS)) == 0.0


def test_trade_returns_are_net_pnl_over_the_equity_before_entry_in_exit_order():
    idx = pd.date_range("2024-01-01 21:00", periods=5, freq="D", tz="UTC")
    equity = pd.Series([1000.0, 1010.0, 990.0, 1030.0, 1020.0], index=idx)
    rows = []
    for entry, exit_, pnl, fees in (
        (idx[1], idx[4], 20.0, 1.0),  # equity before its entry: 1000 -> (20 - 1) / 1000
        (idx[0], idx[2], -11.0, 1.0),  # entered at the first point: the initial cash, 1000
        (idx[3], None, 5.0, 0.5),  # still open: left out
    ):
        row = dict.fromkeys(TRADE_COLUMNS)
        row.update(entry_ts=entry, exit_ts=exit_, pnl_usd=pnl, fees_usd=fees, is_open=exit_ is None)
        rows.append(row)
    got = trade_returns_on_equity(pd.DataFrame(rows, columns=TRADE_COLUMNS), equity, 1000.0)
    np.testing.assert_allclose(got, [-12 / 1000, 19 / 1000])


# ------------------------------------------------------------------------------ order and bootstrap


def test_trade_order_shuffles_keep_the_final_return_and_move_the_drawdown():
    r = np.array([0.05, -0.03, 0.02, -0.04, 0.06, -0.01, 0.03, -0.02])
    res = trade_order_mc(r, 500, seed=9)
    assert res.final_return == pytest.approx(np.prod(1 + r) - 1, abs=1e-15)
    np.testing.assert_allclose(res.total_return.values, res.final_return, rtol=0, atol=1e-12)
    # real order: 1.05 -> 1.05 * 0.97 * 1.02 * 0.96 is the deepest fall from the 1.05 peak
    assert res.max_drawdown.real == pytest.approx(0.97 * 1.02 * 0.96 - 1, abs=1e-12)
    assert np.ptp(res.max_drawdown.values) > 0.01
    assert trade_order_mc(r, 500, seed=9).max_drawdown.values.tolist() == res.max_drawdown.values.tolist()


def test_a_bootstrap_of_whole_circular_blocks_only_rotates_the_returns():
    """Fixed blocks as long as the series are rotations of it: the product, the mean and the standard
    deviation do not change, so every path has the real run's Sharpe, total return and CAGR."""
    r = np.random.default_rng(5).normal(0.0005, 0.01, 250)
    res = bootstrap_mc(r, 252, n_paths=200, seed=1, block=250, method="fixed")
    assert res.sharpe.real == pytest.approx(sharpe(r, 252), rel=1e-12)
    np.testing.assert_allclose(res.sharpe.values, res.sharpe.real, rtol=1e-9)
    np.testing.assert_allclose(res.cagr.values, res.cagr.real, rtol=1e-9)
    growth = np.prod(1 + r)
    assert res.cagr.real == pytest.approx(growth ** (252 / 250) - 1, rel=1e-12)


def test_the_bootstrap_p_value_separates_an_edge_from_noise():
    rng = np.random.default_rng(11)
    edge = bootstrap_mc(rng.normal(0.002, 0.01, 1000), 252, n_paths=400, seed=2)
    noise = bootstrap_mc(rng.normal(0.0, 0.01, 1000) - 0.0001, 252, n_paths=400, seed=2)
    assert edge.p_value < 0.01 and edge.prob_loss < 0.01
    assert noise.p_value > 0.2
    assert edge.block == round(1000 ** (1 / 3))
    assert 35 < edge.sharpe.percentile < 65  # the real run sits mid-distribution of its own bootstrap


# -------------------------------------------------------------------------------------- perturbations


def test_perturbation_summary_by_hand():
    res = perturbation_summary([-1.0, 0.0, 1.0, 2.0, 3.0, math.nan], 2.5)
    assert (res.median, res.share_positive, res.percentile) == (1.0, 0.6, 80.0)
    assert res.p5 == pytest.approx(-0.8)  # linear interpolation: -1 + 0.05 x 4
    assert res.rows()[0]["runs"] == 5
    assert "80th percentile" in res.html()
    with pytest.raises(ValueError, match="no perturbed"):
        perturbation_summary([math.nan], 1.0)


# ----------------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def spy_run(sample_store):
    return backtest(
        make_settings(sample_store, strategy={"name": "trend", "fast": 20, "slow": 50}), sample_store
    )


def test_the_random_entry_null_of_a_real_run_rebuilds_from_its_seed(spy_run):
    res = random_entry_mc(spy_run, n_paths=50, seed=4)
    (spy,) = res.symbols
    closed = spy_run.trades
    assert len(spy.held) == len(closed) and spy.held.sum() == closed["bars_held"].sum()
    # the same draws by hand: one symbol, so the null's daily returns are its returns, day by day
    close = spy_run.prices["SPY"]["close"].to_numpy()
    net, _ = random_entry_returns(
        close[1:] / close[:-1] - 1,
        spy.held,
        spy.direction,
        spy.weight,
        res.cost_bps / 1e4,
        50,
        np.random.default_rng(4),
    )
    np.testing.assert_allclose(res.total_return.values, path_statistics(net, 252).total_return, rtol=1e-12)
    assert res.cost_bps == pytest.approx(cost_bps(spy_run.fills))
    held = spy_run.positions["SPY"].to_numpy() != 0
    weight = np.mean(np.abs(spy_run.positions["SPY"].to_numpy()[held]) / spy_run.equity.to_numpy()[held])
    assert spy.weight == pytest.approx(weight)
    assert 0 <= res.p_value <= 1 and res.seconds < 5


def test_monte_carlo_of_a_run_is_reproducible_and_renders(spy_run):
    cfg = MonteCarloConfig(paths=300, seed=123)
    a, b = monte_carlo(spy_run, cfg), monte_carlo(spy_run, cfg)
    c = monte_carlo(spy_run, MonteCarloConfig(paths=300, seed=124))
    for x, y in ((a.bootstrap.sharpe, b.bootstrap.sharpe), (a.random_entry.sharpe, b.random_entry.sharpe)):
        np.testing.assert_array_equal(x.values, y.values)
    np.testing.assert_array_equal(a.trade_order.max_drawdown.values, b.trade_order.max_drawdown.values)
    assert not np.array_equal(a.random_entry.sharpe.values, c.random_entry.sharpe.values)
    assert a.summary() == b.summary()
    json.dumps(a.summary())
    m = a.with_perturbations(perturbation_summary([0.1, 0.4, 0.5], 0.45))
    for title, cols, rows in m.tables():
        assert build_table(cols, rows, title=title).row_count == len(rows)
    html = m.html()
    for fig in ("lab-mc-order", "lab-mc-boot-sharpe", "lab-mc-null-sharpe", "lab-perturb"):
        assert f"fig-{fig}" in html
    assert "approximation" in html


def test_the_random_entry_null_with_a_thousand_paths_is_fast(spy_run):
    res = random_entry_mc(spy_run, n_paths=1000, seed=0)
    print(f"random-entry null, 1,000 paths: {res.seconds:.3f} s")
    assert res.sharpe.values.shape == (1000,)
    assert res.seconds < 5
