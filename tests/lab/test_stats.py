"""Tests of the validation lab's statistics against published worked examples, hand computations and
invariants (see docs/validation-stats.md)."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

import hflite.lab as lab
from hflite.analytics.metrics import drawdown
from hflite.lab.stats import (
    block_bootstrap,
    cpcv_paths,
    cpcv_splits,
    deflated_sharpe,
    expected_max_sharpe,
    max_drawdown,
    n_backtest_paths,
    path_statistics,
    pbo,
    percentile_of,
    psr,
    purged_kfold,
    sharpe,
    shuffle_trades,
)


def test_public_names_are_pinned():
    assert lab.__all__ == [
        "CPCVPlan",
        "CPCVSplit",
        "DeflatedSharpe",
        "PBOResult",
        "PathStats",
        "TradeShuffle",
        "block_bootstrap",
        "cpcv_paths",
        "cpcv_splits",
        "deflated_sharpe",
        "expected_max_sharpe",
        "max_drawdown",
        "n_backtest_paths",
        "path_statistics",
        "pbo",
        "percentile_of",
        "psr",
        "purged_kfold",
        "sharpe",
        "shuffle_trades",
    ]


# ------------------------------------------------------------------------------------------ Sharpe


def test_sharpe_is_mean_over_sample_stdev_annualised():
    r = np.array([0.01, -0.02, 0.03, 0.0])
    # mean 0.005; deviations .005 -.025 .025 -.005 -> sum sq 0.00130 -> var 0.000433.. (ddof=1)
    expected = 0.005 / math.sqrt(0.0013 / 3) * math.sqrt(252)
    assert sharpe(r) == pytest.approx(expected, rel=1e-12)


def test_sharpe_of_a_matrix_is_one_ratio_per_column_and_flat_is_nan():
    r = np.array([[0.01, 0.0], [-0.02, 0.0], [0.03, 0.0], [0.0, 0.0]])
    out = sharpe(r, periods_per_year=1)
    assert isinstance(out, np.ndarray)
    assert out[0] == pytest.approx(sharpe(r[:, 0], periods_per_year=1))
    assert math.isnan(out[1])
    assert math.isnan(sharpe([0.01]))


# ------------------------------------------------------------------------- PSR, E[max SR], DSR


def test_dsr_reproduces_the_papers_numerical_example():
    """Bailey & López de Prado (2014), numerical example: annualised SR 2.5 over T=1250 daily returns
    (250 a year), N=100 trials with annualised V[SR_n]=1/2, skewness -3, kurtosis 10. The paper prints
    SR0 ~ 0.1132, SR ~ 0.1581 (per day) and DSR ~ 0.9004: not significant at 95%."""
    sr = 2.5 / math.sqrt(250)
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    dsr = psr(sr, 1250, skew=-3.0, kurt=10.0, sr_benchmark=sr0)
    assert round(sr0, 4) == 0.1132
    assert round(sr, 4) == 0.1581
    assert round(dsr, 4) == 0.9004


def test_psr_by_hand():
    # SR 0.1, T 101, skew -0.5, kurt 4: var term 1 + 0.05 + 0.75 * 0.01 = 1.0575
    z = 0.1 * 10 / math.sqrt(1.0575)
    assert psr(0.1, 101, -0.5, 4.0) == pytest.approx(0.5 * (1 + math.erf(z / math.sqrt(2))), rel=1e-12)
    # against a benchmark equal to the observed SR the probability is one half
    assert psr(0.1, 101, -0.5, 4.0, sr_benchmark=0.1) == pytest.approx(0.5)


def test_expected_max_sharpe_by_hand_and_limits():
    # N=10: Z^-1(0.9) = 1.2815516, Z^-1(1 - 1/(10e)) = Z^-1(0.9632121) = 1.7895..., V = 4
    g = 0.5772156649015329
    by_hand = 2 * ((1 - g) * sps.norm.ppf(0.9) + g * sps.norm.ppf(1 - 1 / (10 * math.e)))
    assert expected_max_sharpe(10, 4.0) == pytest.approx(by_hand, rel=1e-12)
    assert expected_max_sharpe(1, 4.0) == 0.0
    values = [expected_max_sharpe(n, 1.0) for n in (2, 10, 100, 1000)]
    assert values == sorted(values)


def test_expected_max_sharpe_approximates_the_simulated_maximum_of_normals():
    """The closed form is an approximation (better as N grows) that lies slightly above the simulated
    mean maximum: a conservative bar. Measured: N=100 2.531 vs 2.505, N=1000 3.255 vs 3.241."""
    rng = np.random.default_rng(3)
    for n in (100, 1000):
        simulated = rng.standard_normal((20_000, n)).max(axis=1).mean()
        assert expected_max_sharpe(n, 1.0) == pytest.approx(simulated, rel=0.02)
        assert expected_max_sharpe(n, 1.0) > simulated


def test_deflated_sharpe_from_returns_matches_a_hand_computation():
    r = np.array([0.02, -0.01, 0.03, 0.005, -0.015, 0.01, 0.0, 0.025])
    out = deflated_sharpe(r, n_trials=20, var_trials_sr=0.01)
    mean, sd = r.mean(), r.std(ddof=1)
    m2, m3, m4 = (np.mean((r - mean) ** p) for p in (2, 3, 4))
    sr, skew, kurt = mean / sd, m3 / m2**1.5, m4 / m2**2
    sr0 = expected_max_sharpe(20, 0.01)
    z = (sr - sr0) * math.sqrt(7) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    assert out.sr == pytest.approx(sr, rel=1e-12)
    assert out.skew == pytest.approx(skew, rel=1e-12)
    assert out.kurt == pytest.approx(kurt, rel=1e-12)
    assert out.sr0 == pytest.approx(sr0, rel=1e-12)
    assert out.dsr == pytest.approx(sps.norm.cdf(z), rel=1e-12)
    assert out.n_obs == 8 and out.n_trials == 20


def test_more_trials_deflate_more():
    r = np.random.default_rng(5).normal(0.001, 0.01, 1000)
    dsrs = [deflated_sharpe(r, n, 0.001).dsr for n in (1, 10, 100, 1000)]
    assert dsrs == sorted(dsrs, reverse=True)
    assert dsrs[0] == pytest.approx(psr(float(sharpe(r, 1)), 1000, float(sps.skew(r)), sps.kurtosis(r) + 3))


# ------------------------------------------------------------------------------------------- PBO

_BLOCKS = {  # strategy -> value of its two rows in each of the 4 blocks
    "A": [3.0, 0.0, -1.0, 1.0],
    "B": [1.0, 2.5, 0.0, -2.0],
    "C": [0.0, 1.0, 2.25, 0.5],
}


def _column_mean(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=0)


def test_pbo_hand_computed_tiny_case():
    """8 x 3 matrix, S=4 blocks of 2 rows, metric = column mean. By hand, per in-sample block pair:
    {1,2}: IS means A 1.5 B 1.75 C .5 -> B; OOS {3,4}: A 0 B -1 C 1.375 -> rank 1 -> w 1/4 -> -ln 3
    {1,3}: A 1 B .5 C 1.125 -> C; OOS {2,4}: A .5 B .25 C .75 -> rank 3 -> ln 3
    {1,4}: A 2 B -.5 C .25 -> A; OOS {2,3}: A -.5 B 1.25 C 1.625 -> rank 1 -> -ln 3
    {2,3}: A -.5 B 1.25 C 1.625 -> C; OOS {1,4}: A 2 B -.5 C .25 -> rank 2 -> 0
    {2,4}: A .5 B .25 C .75 -> C; OOS {1,3}: A 1 B .5 C 1.125 -> rank 3 -> ln 3
    {3,4}: A 0 B -1 C 1.375 -> C; OOS {1,2}: A 1.5 B 1.75 C .5 -> rank 1 -> -ln 3
    PBO = 4/6 (three -ln 3 and one 0); OOS of the chosen < 0 in 2 of 6."""
    m = np.repeat(np.array([_BLOCKS["A"], _BLOCKS["B"], _BLOCKS["C"]]).T, 2, axis=0)
    assert m.shape == (8, 3)
    out = pbo(m, n_splits=4, metric=_column_mean)
    ln3 = math.log(3)
    np.testing.assert_allclose(out.logits, [-ln3, ln3, -ln3, 0.0, ln3, -ln3], atol=1e-15)
    assert out.pbo == pytest.approx(4 / 6)
    np.testing.assert_allclose(out.is_performance, [1.75, 1.125, 2.0, 1.625, 0.75, 1.375])
    np.testing.assert_allclose(out.oos_performance, [-1.0, 0.75, -0.5, 0.25, 1.125, 0.5])
    assert out.prob_oos_loss == pytest.approx(2 / 6)
    slope, intercept = np.polyfit(out.is_performance, out.oos_performance, 1)
    assert out.degradation_slope == pytest.approx(slope)
    assert out.degradation_intercept == pytest.approx(intercept)


def test_pbo_is_near_zero_when_one_strategy_truly_dominates():
    rng = np.random.default_rng(11)
    m = rng.normal(0.0, 0.01, (1000, 10))
    m[:, 3] += 0.003  # a true daily edge of 0.3 standard deviations
    out = pbo(m, n_splits=10)
    assert len(out.logits) == math.comb(10, 5)
    assert out.pbo < 0.05
    assert out.prob_oos_loss == 0.0


def test_pbo_of_pure_noise_is_near_one_half():
    values = [
        pbo(np.random.default_rng(seed).normal(0, 0.01, (400, 20)), n_splits=8).pbo for seed in range(40)
    ]
    assert np.mean(values) == pytest.approx(0.5, abs=0.1)


def test_pbo_rejects_bad_inputs():
    m = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="even"):
        pbo(m, n_splits=5)
    with pytest.raises(ValueError, match="2 strategies"):
        pbo(m[:, :1], n_splits=4)
    with pytest.raises(ValueError, match="non-finite"):
        pbo(np.zeros((20, 3)), n_splits=4)


# ---------------------------------------------------------------------------- purged k-fold


@st.composite
def _labels(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, float]:
    n = draw(st.integers(4, 60))
    gaps = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    lengths = draw(st.lists(st.integers(0, 8), min_size=n, max_size=n))
    start = np.cumsum(gaps)
    end = start + np.array(lengths)
    k = draw(st.integers(2, min(6, n)))
    embargo = draw(st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.2]))
    return start, end, k, embargo


def _overlaps(start: np.ndarray, end: np.ndarray, i: int, j: int) -> bool:
    return bool(start[i] <= end[j] and start[j] <= end[i])


@settings(max_examples=150, deadline=None)
@given(_labels())
def test_purged_kfold_never_trains_on_a_label_overlapping_the_test_and_holds_the_embargo(case):
    start, end, k, embargo = case
    n = len(start)
    h = int(n * embargo)
    folds = list(purged_kfold(start, end, k, embargo))
    assert len(folds) == k
    np.testing.assert_array_equal(np.concatenate([test for _, test in folds]), np.arange(n))
    for train, test in folds:
        assert not set(train) & set(test)
        for i in train:
            assert not any(_overlaps(start, end, i, j) for j in test)
        span_end = end[test].max()
        after = np.flatnonzero(start > span_end)
        embargoed = set(after[:h])
        assert not embargoed & set(train)
        # nothing more is dropped than purging and the embargo ask for
        span = (start[test[0]], span_end)
        wanted = [
            i
            for i in range(n)
            if i not in set(test) and not (start[i] <= span[1] and end[i] >= span[0]) and i not in embargoed
        ]
        np.testing.assert_array_equal(train, wanted)


def test_purged_kfold_by_hand_with_overlapping_labels_and_embargo():
    # 10 daily observations whose labels last 2 days; 20% embargo = 2 observations
    start = np.arange(10)
    end = start + 2
    folds = list(purged_kfold(start, end, k=5, embargo_frac=0.2))
    train, test = folds[1]  # test = obs 2, 3: span [2, 5]
    np.testing.assert_array_equal(test, [2, 3])
    # purged: 0 (ends 2), 1 (ends 3), 4, 5 (start <= 5); embargo: 6, 7 (the first two starting after 5)
    np.testing.assert_array_equal(train, [8, 9])
    train, test = folds[4]  # test = 8, 9: span [8, 11]; 6, 7 end at 8, 9 -> purged; no room for embargo
    np.testing.assert_array_equal(train, [0, 1, 2, 3, 4, 5])


def test_purged_kfold_accepts_datetimes_and_rejects_unsorted_starts():
    start = np.arange("2024-01-01", "2024-01-11", dtype="datetime64[D]")
    end = start + np.timedelta64(1, "D")
    train, test = next(purged_kfold(start, end, k=5))
    np.testing.assert_array_equal(test, [0, 1])
    np.testing.assert_array_equal(train, np.arange(3, 10))
    with pytest.raises(ValueError, match="sorted"):
        next(purged_kfold(start[::-1], end[::-1], k=5))


# -------------------------------------------------------------------------------------------- CPCV


def test_cpcv_counts_match_the_book_for_n6_k2():
    plan = cpcv_splits(60, n_groups=6, n_test_groups=2)
    assert len(plan.splits) == 15 == math.comb(6, 2)
    assert plan.n_paths == 5 == n_backtest_paths(6, 2) == 2 * 15 // 6


def test_cpcv_every_observation_is_tested_phi_times_and_trained_the_rest():
    """AFML 12.4.1: the k C(N, k) tested groups are spread evenly, so each group (and observation) is
    in exactly phi test sets and, without purging, in the C(N, k) - phi other training sets."""
    plan = cpcv_splits(61, n_groups=6, n_test_groups=2)
    tested = np.zeros(61, dtype=int)
    trained = np.zeros(61, dtype=int)
    for split in plan.splits:
        tested[split.test] += 1
        trained[split.train] += 1
        assert not set(split.train) & set(split.test)
    assert (tested == plan.n_paths).all()
    assert (trained == 15 - plan.n_paths).all()


def test_cpcv_paths_follow_the_books_figure():
    """Figure 12.2 (N=6, k=2): path 1 is G1 and G2 from split 1, G3 from split 2 ((G1, G3)), G4 from
    split 3, G5 from split 4 and G6 from split 5; each path tests each group once."""
    plan = cpcv_splits(12, n_groups=6, n_test_groups=2)
    values = [np.full(len(split.test), float(s)) for s, split in enumerate(plan.splits)]
    paths = cpcv_paths(plan, values)
    assert paths.shape == (5, 12)
    group_source = paths[:, ::2]  # each group has two observations; take the first of each
    np.testing.assert_array_equal(group_source[0], [0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(paths[:, ::2], paths[:, 1::2])
    for g in range(6):
        tested_in = [s for s, split in enumerate(plan.splits) if g in split.test_groups]
        np.testing.assert_array_equal(group_source[:, g], tested_in)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 7).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n - 1))), st.integers(0, 9))
def test_cpcv_paths_cover_every_observation_once_with_its_own_value(nk, extra):
    n_groups, k = nk
    n_obs = n_groups * 2 + extra
    plan = cpcv_splits(n_obs, n_groups, k)
    assert plan.n_paths == k * math.comb(n_groups, k) // n_groups
    values = [split.test.astype(float) * 100 + s for s, split in enumerate(plan.splits)]
    paths = cpcv_paths(plan, values)
    assert not np.isnan(paths).any()
    np.testing.assert_array_equal(np.floor(paths / 100), np.tile(np.arange(n_obs), (plan.n_paths, 1)))
    sources = paths % 100
    for p in range(plan.n_paths):
        for g, rows in enumerate(plan.groups):
            s = int(round(sources[p, rows.start]))
            assert g in plan.splits[s].test_groups


@settings(max_examples=80, deadline=None)
@given(_labels(), st.integers(3, 6))
def test_cpcv_purges_and_embargoes_like_the_kfold(case, n_groups):
    start, end, _, embargo = case
    n = len(start)
    if n_groups > n:
        n_groups = n
    plan = cpcv_splits(n, n_groups, 2, start, end, embargo)
    h = int(n * embargo)
    for split in plan.splits:
        for i in split.train:
            assert not any(_overlaps(start, end, i, j) for j in split.test)
        for g in split.test_groups:
            rows = plan.groups[g]
            after = np.flatnonzero(start > end[rows.start : rows.stop].max())[:h]
            assert not set(after) & set(split.train)


# ----------------------------------------------------------------------- bootstrap and Monte Carlo


def test_max_drawdown_agrees_with_the_metrics_module():
    rng = np.random.default_rng(2)
    equity = 100 * np.cumprod(1 + rng.normal(0, 0.02, 300))
    index = pd.date_range("2020-01-01", periods=300, freq="D", tz="UTC")
    assert max_drawdown(equity) == pytest.approx(float(drawdown(pd.Series(equity, index=index)).min()))
    assert max_drawdown([1.0, 2.0, 1.0, 3.0, 1.5]) == pytest.approx(-0.5)
    np.testing.assert_allclose(max_drawdown([[1.0, 2.0, 3.0], [2.0, 1.0, 4.0]]), [0.0, -0.5])


def test_shuffle_keeps_the_trades_and_total_return_while_drawdowns_vary():
    trades = np.random.default_rng(4).normal(0.004, 0.03, 200)
    out = shuffle_trades(trades, n_paths=500, seed=9)
    # the same multiset of trades, exactly, in every path
    np.testing.assert_array_equal(np.sort(out.returns, axis=1), np.tile(np.sort(trades), (500, 1)))
    # so the same total return (products in another order: equal to the last rounding bits)
    np.testing.assert_allclose(out.stats.total_return, np.prod(1 + trades) - 1, rtol=1e-12)
    np.testing.assert_allclose(out.stats.sharpe, sharpe(trades, periods_per_year=1), rtol=1e-12)
    assert np.ptp(out.stats.max_drawdown) > 0.05
    assert out.equity.shape == (500, 201) and (out.equity[:, 0] == 1).all()
    real = float(max_drawdown(np.concatenate([[1.0], np.cumprod(1 + trades)])))
    assert 0.0 <= percentile_of(real, out.stats.max_drawdown) <= 100.0


def test_seeds_make_every_resampling_reproducible():
    r = np.random.default_rng(0).normal(0, 0.01, 300)
    np.testing.assert_array_equal(block_bootstrap(r, 5, 50, seed=1), block_bootstrap(r, 5, 50, seed=1))
    np.testing.assert_array_equal(
        block_bootstrap(r, 5, 50, seed=1, method="fixed"), block_bootstrap(r, 5, 50, seed=1, method="fixed")
    )
    assert not np.array_equal(block_bootstrap(r, 5, 50, seed=1), block_bootstrap(r, 5, 50, seed=2))
    np.testing.assert_array_equal(
        shuffle_trades(r, 20, seed=3).returns, shuffle_trades(r, 20, seed=3).returns
    )


def _runs(idx: np.ndarray, n: int) -> np.ndarray:
    """Number of blocks per path: a block continues while the next position is the previous + 1."""
    cont = idx[:, 1:] == (idx[:, :-1] + 1) % n
    return 1 + (~cont).sum(axis=1)


def test_stationary_bootstrap_keeps_the_mean_and_its_mean_block_length():
    n, block = 2000, 10.0
    r = np.random.default_rng(6).normal(0.0005, 0.01, n)
    paths = block_bootstrap(r, block, 1000, seed=8)
    means = paths.mean(axis=1)
    assert abs(means.mean() - r.mean()) < 4 * means.std() / math.sqrt(1000)
    # resample the positions themselves to measure the blocks
    idx = block_bootstrap(np.arange(n, dtype=float), block, 1000, seed=8).astype(int)
    mean_block = n / _runs(idx, n).mean()
    expected = n / (1 + (n - 1) / block)  # a new block at each step with probability 1/block
    assert mean_block == pytest.approx(expected, rel=0.02)
    assert expected == pytest.approx(block, rel=0.01)


def test_fixed_block_bootstrap_uses_blocks_of_exactly_the_given_length():
    n = 100
    idx = block_bootstrap(np.arange(n, dtype=float), 7, 200, seed=1, method="fixed", length=70).astype(int)
    assert idx.shape == (200, 70)
    blocks = idx.reshape(200, 10, 7)
    np.testing.assert_array_equal(np.diff(blocks, axis=2) % n, 1)


def test_percentile_of_matches_scipy_and_ignores_nans():
    d = np.array([1.0, 2.0, 2.0, 3.0, 4.0, np.nan])
    for v in (0.0, 2.0, 2.5, 5.0):
        assert percentile_of(v, d) == pytest.approx(sps.percentileofscore(d[:-1], v, kind="mean"))
    assert math.isnan(percentile_of(1.0, [np.nan]))


def test_a_thousand_paths_of_ten_years_are_fast():
    r = np.random.default_rng(1).normal(0.0004, 0.01, 2500)
    t0 = time.perf_counter()
    stationary = path_statistics(block_bootstrap(r, 10, 1000, seed=1))
    t1 = time.perf_counter()
    fixed = path_statistics(block_bootstrap(r, 10, 1000, seed=1, method="fixed"))
    t2 = time.perf_counter()
    shuffled = shuffle_trades(r, 1000, seed=1)
    t3 = time.perf_counter()
    print(
        f"\n1,000 x 2,500: stationary bootstrap + stats {t1 - t0:.3f} s, fixed {t2 - t1:.3f} s, "
        f"trade shuffle {t3 - t2:.3f} s (loose bound: well under 1 s each)"
    )
    assert stationary.sharpe.shape == fixed.sharpe.shape == shuffled.stats.sharpe.shape == (1000,)


def test_bootstrap_rejects_bad_inputs():
    with pytest.raises(ValueError, match="block"):
        block_bootstrap([0.1, 0.2], 0.5, 10)
    with pytest.raises(ValueError, match="method"):
        block_bootstrap([0.1, 0.2], 1, 10, method="iid")  # type: ignore[arg-type]
