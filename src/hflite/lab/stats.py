"""Statistics of the validation lab: is a backtest result real, or the best of many lucky tries?

Pure functions over numpy arrays (no I/O, no pandas). Sources, each named again where it is used:

- Bailey, D. H. and López de Prado, M. (2014), "The Deflated Sharpe Ratio: Correcting for Selection
  Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5), 94-107
  (PSR, E[max SR] over N trials, DSR, and the paper's numerical example).
- Bailey, D. H., Borwein, J., López de Prado, M. and Zhu, Q. J. (2017), "The Probability of Backtest
  Overfitting", Journal of Computational Finance 20(4), 39-69 (CSCV, PBO, performance degradation,
  probability of loss).
- López de Prado, M. (2018), "Advances in Financial Machine Learning", Wiley: ch. 7 (purged k-fold
  with embargo, snippets 7.1-7.3) and ch. 12 (combinatorial purged cross-validation, phi[N, k]).
- Politis, D. N. and Romano, J. P. (1994), "The Stationary Bootstrap", JASA 89(428), 1303-1313, and
  (1992) "A Circular Block-Resampling Procedure for Stationary Data" (the fixed-block variant).

Conventions: returns are simple per-period returns (fractions); Sharpe ratios fed to the PSR/DSR are
per period (not annualised), as in the papers; kurtosis is Pearson's (a normal law has 3, not 0);
drawdowns are negative fractions, as in :mod:`hflite.analytics.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
#: A performance metric for CSCV: a (rows x strategies) block -> one number per strategy.
Metric = Callable[[FloatArray], ArrayLike]

#: The Euler-Mascheroni constant of E[max SR] (Bailey & López de Prado 2014, appendix).
EULER_GAMMA = float(np.euler_gamma)
#: A standard deviation at or below this is zero (flat returns): the Sharpe ratio is NaN.
_FLAT_STD = 1e-12


def _as_float(values: ArrayLike, name: str, ndim: int | None = None) -> FloatArray:
    out = np.asarray(values, dtype=np.float64)
    if ndim is not None and out.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {out.shape}")
    return out


# --------------------------------------------------------------------------------------- Sharpe


def sharpe(returns: ArrayLike, periods_per_year: float = 252) -> float | FloatArray:
    """Annualised Sharpe ratio ``mean / stdev(ddof=1) * sqrt(periods_per_year)`` along axis 0.

    ``returns`` should be excess returns (subtract the risk-free rate first). A 1-D input gives a float,
    a (T x N) input one ratio per column, so it also serves as the CSCV metric of :func:`pbo`.
    Flat or too-short series give NaN, never an error (as ``hflite.analytics.metrics`` does).
    """
    r = _as_float(returns, "returns")
    if r.shape[0] < 2:
        out = np.full(r.shape[1:], np.nan)
    else:
        mean = r.mean(axis=0)
        std = r.std(axis=0, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(std > _FLAT_STD, mean / std, np.nan) * math.sqrt(periods_per_year)
    return float(out) if out.ndim == 0 else np.asarray(out, dtype=np.float64)


def psr(sr: float, n_obs: int, skew: float, kurt: float, sr_benchmark: float = 0.0) -> float:
    """Probabilistic Sharpe ratio: the probability that the true Sharpe ratio exceeds ``sr_benchmark``.

    PSR(SR*) = Z[(SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2)], with SR and SR* per period
    (not annualised), g3 the skewness and g4 the (Pearson, non-excess) kurtosis of the returns: the
    non-normal standard error of the Sharpe estimator (Mertens 2002) turned into a probability
    (Bailey & López de Prado 2012, "The Sharpe Ratio Efficient Frontier"; restated as the PSR equation
    of Bailey & López de Prado 2014). NaN when the variance term is not positive (impossible moments).
    """
    if n_obs < 2:
        raise ValueError(f"n_obs must be >= 2, got {n_obs}")
    var_term = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if not var_term > 0:
        return math.nan
    z = (sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var_term)
    return float(sps.norm.cdf(z))


def expected_max_sharpe(n_trials: int, var_trials_sr: float) -> float:
    """Expected maximum Sharpe ratio of ``n_trials`` independent trials whose true Sharpe is zero.

    E[max SR] = sqrt(V[SR_n]) ((1 - gamma) Z^-1[1 - 1/N] + gamma Z^-1[1 - 1/(N e)]), gamma the
    Euler-Mascheroni constant: the approximation of the expected maximum of N standard normals (Bailey
    & López de Prado 2014, the SR0 of the DSR and its appendix), scaled by the dispersion of the trials'
    Sharpe ratios. This is the bar a best-of-N backtest must clear. Units are those of
    ``var_trials_sr`` (per period for the DSR). One trial has no selection: 0.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if var_trials_sr < 0:
        raise ValueError(f"var_trials_sr must be >= 0, got {var_trials_sr}")
    if n_trials == 1:
        return 0.0
    z1 = float(sps.norm.ppf(1.0 - 1.0 / n_trials))
    z2 = float(sps.norm.ppf(1.0 - 1.0 / (n_trials * math.e)))
    return math.sqrt(var_trials_sr) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


@dataclass(frozen=True)
class DeflatedSharpe:
    """The deflated Sharpe ratio and its parts; Sharpe ratios are per period (multiply by
    sqrt(periods per year) to annualise)."""

    dsr: float  # P(true SR > sr0): PSR with the expected maximum of the trials as benchmark
    sr: float  # observed Sharpe ratio of the selected strategy, per period
    sr0: float  # expected maximum Sharpe of n_trials null trials, per period
    n_obs: int
    skew: float
    kurt: float  # Pearson (normal = 3)
    n_trials: int
    var_trials_sr: float


def deflated_sharpe(returns: ArrayLike, n_trials: int, var_trials_sr: float) -> DeflatedSharpe:
    """Deflated Sharpe ratio of the selected strategy's per-period ``returns``, after ``n_trials`` trials
    whose per-period Sharpe ratios had variance ``var_trials_sr``.

    DSR = PSR(SR0) with SR0 = :func:`expected_max_sharpe` (Bailey & López de Prado 2014, the DSR
    equation): it corrects at once for selection among many trials, for non-normal returns and for a
    short sample. Skewness and kurtosis are the sample (biased) moments of ``returns``. Read it as a
    probability: 0.95 or more is a discovery at the 5% level; the paper's example (Sharpe 2.5 after 100
    trials) gives 0.90, a rejection.
    """
    r = _as_float(returns, "returns", ndim=1)
    if len(r) < 3:
        raise ValueError(f"need at least 3 returns, got {len(r)}")
    sr = float(sharpe(r, periods_per_year=1))
    skew = float(sps.skew(r, bias=True))
    kurt = float(sps.kurtosis(r, fisher=False, bias=True))
    sr0 = expected_max_sharpe(n_trials, var_trials_sr)
    dsr = psr(sr, len(r), skew, kurt, sr_benchmark=sr0) if math.isfinite(sr) else math.nan
    return DeflatedSharpe(dsr, sr, sr0, len(r), skew, kurt, n_trials, float(var_trials_sr))


# ------------------------------------------------------------------------------------------ PBO


@dataclass(frozen=True)
class PBOResult:
    """Outcome of CSCV over all C(S, S/2) splits (one entry per split, in ``itertools.combinations``
    order of the in-sample blocks)."""

    pbo: float  # share of logits <= 0: the in-sample best ranks at or below the OOS median
    logits: FloatArray  # ln(w / (1 - w)), w = OOS rank of the in-sample best / (N + 1)
    is_performance: FloatArray  # in-sample metric of the in-sample best
    oos_performance: FloatArray  # its out-of-sample metric (degradation pairs: is vs oos)
    prob_oos_loss: float  # share of splits where the chosen strategy's OOS metric is < 0
    degradation_slope: float  # least-squares slope of oos on is performance (NaN if is is constant)
    degradation_intercept: float


def _metric_values(metric: Metric, block: FloatArray, n_strategies: int) -> FloatArray:
    values = np.asarray(metric(block), dtype=np.float64).reshape(-1)
    if values.shape != (n_strategies,):
        raise ValueError(f"metric must return one value per strategy ({n_strategies}), got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("metric returned a non-finite value (a flat or too short strategy series?)")
    return values


def pbo(performance: ArrayLike, n_splits: int = 16, metric: Metric = sharpe) -> PBOResult:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation (CSCV).

    ``performance`` is T x N: one column of per-period returns per trial (parameter set). The rows are
    cut into ``n_splits`` = S contiguous blocks (``np.array_split``: sizes differ by at most one row when
    S does not divide T; nothing is dropped). For each of the C(S, S/2) choices of S/2 blocks as the
    in-sample set (the rest, in time order, is out of sample): pick the best trial in sample (the
    first on ties), take its relative rank w in [1/(N+1), N/(N+1)] out of sample (average ranks on
    ties) and its logit. PBO is the share of logits <= 0 (Bailey, Borwein, López de Prado & Zhu 2017,
    section 2, the CSCV steps and the PBO definition); the degradation pairs and the probability of
    loss are their sections on performance degradation.
    """
    m = _as_float(performance, "performance", ndim=2)
    n_rows, n_strat = m.shape
    if n_splits < 2 or n_splits % 2:
        raise ValueError(f"n_splits must be an even number >= 2, got {n_splits}")
    if n_strat < 2:
        raise ValueError(f"need at least 2 strategies (columns), got {n_strat}")
    if n_rows < n_splits:
        raise ValueError(f"need at least n_splits={n_splits} rows, got {n_rows}")
    blocks = np.array_split(np.arange(n_rows), n_splits)
    logits, is_perf, oos_perf = [], [], []
    for chosen in combinations(range(n_splits), n_splits // 2):
        in_rows = np.concatenate([blocks[b] for b in chosen])
        out_rows = np.concatenate([blocks[b] for b in range(n_splits) if b not in chosen])
        r_is = _metric_values(metric, m[in_rows], n_strat)
        r_oos = _metric_values(metric, m[out_rows], n_strat)
        best = int(np.argmax(r_is))
        # average rank (1 = worst) of the in-sample best among the out-of-sample values
        rank = np.sum(r_oos < r_oos[best]) + 0.5 * (np.sum(r_oos == r_oos[best]) - 1) + 1
        w = float(rank) / (n_strat + 1)
        logits.append(math.log(w / (1.0 - w)))
        is_perf.append(r_is[best])
        oos_perf.append(r_oos[best])
    lam, x, y = np.array(logits), np.array(is_perf), np.array(oos_perf)
    if np.ptp(x) > 0:
        slope, intercept = (float(v) for v in np.polyfit(x, y, 1))
    else:
        slope, intercept = math.nan, math.nan
    return PBOResult(
        pbo=float(np.mean(lam <= 0)),
        logits=lam,
        is_performance=x,
        oos_performance=y,
        prob_oos_loss=float(np.mean(y < 0)),
        degradation_slope=slope,
        degradation_intercept=intercept,
    )


# ------------------------------------------------------------------------ purged cross-validation


def _label_times(times_start: ArrayLike, times_end: ArrayLike) -> tuple[NDArray[np.generic], ...]:
    start, end = np.asarray(times_start), np.asarray(times_end)
    if start.ndim != 1 or start.shape != end.shape:
        raise ValueError(f"times_start and times_end must be 1-D of one length: {start.shape}, {end.shape}")
    if len(start) > 1 and np.any(start[1:] < start[:-1]):
        raise ValueError("times_start must be sorted (non-decreasing)")
    if np.any(end < start):
        raise ValueError("every label must end at or after its start (times_end >= times_start)")
    return start, end


def _embargo_count(n_obs: int, embargo_frac: float) -> int:
    if not 0.0 <= embargo_frac < 1.0:
        raise ValueError(f"embargo_frac must be in [0, 1), got {embargo_frac}")
    return int(n_obs * embargo_frac)  # h = floor(frac * T), as AFML snippet 7.2


def _train_mask(
    start: NDArray[np.generic], end: NDArray[np.generic], test_blocks: Sequence[range], embargo_n: int
) -> NDArray[np.bool_]:
    """Observations left to train on: not in a test block, no label overlapping a test block's span
    [first start, last end] (closed intervals: purging), and not among the ``embargo_n`` observations
    that start first after that span (embargo)."""
    keep = np.ones(len(start), dtype=bool)
    for block in test_blocks:
        keep[block.start : block.stop] = False
        t0, t1 = start[block.start], end[block.start : block.stop].max()
        keep &= ~((start <= t1) & (end >= t0))
        after = int(np.searchsorted(start, t1, side="right"))
        keep[after : after + embargo_n] = False
    return keep


def purged_kfold(
    times_start: ArrayLike, times_end: ArrayLike, k: int = 5, embargo_frac: float = 0.0
) -> Iterator[tuple[IntArray, IntArray]]:
    """Purged k-fold with embargo: yields ``(train_idx, test_idx)`` for k contiguous test folds.

    Observation i's label spans [times_start[i], times_end[i]] (numbers or datetime64; starts sorted).
    A training observation whose label interval overlaps the test fold's span is purged, and the
    ``floor(embargo_frac * T)`` observations that follow the test span are embargoed, so that no
    training label is computed from test-period information (López de Prado 2018, ch. 7, sections
    7.4.1-7.4.3 and snippets 7.1-7.3; purging uses closed intervals, one step stricter than
    snippet 7.3's ``searchsorted``).
    """
    start, end = _label_times(times_start, times_end)
    n_obs = len(start)
    if not 2 <= k <= n_obs:
        raise ValueError(f"k must be in [2, n_obs={n_obs}], got {k}")
    embargo_n = _embargo_count(n_obs, embargo_frac)
    for fold in np.array_split(np.arange(n_obs), k):
        test = range(int(fold[0]), int(fold[-1]) + 1)
        train = np.flatnonzero(_train_mask(start, end, [test], embargo_n))
        yield train.astype(np.intp), fold.astype(np.intp)


def n_backtest_paths(n_groups: int, n_test_groups: int) -> int:
    """phi[N, k] = k / N * C(N, k) = C(N - 1, k - 1): the number of full backtest paths CPCV yields
    (López de Prado 2018, section 12.4.1)."""
    if not 1 <= n_test_groups < n_groups:
        raise ValueError(f"need 1 <= n_test_groups < n_groups, got k={n_test_groups}, N={n_groups}")
    return math.comb(n_groups - 1, n_test_groups - 1)


@dataclass(frozen=True)
class CPCVSplit:
    """One CPCV split: purged and embargoed training indices, the test indices (its test groups'
    observations in time order) and which groups are tested."""

    train: IntArray
    test: IntArray
    test_groups: tuple[int, ...]


@dataclass(frozen=True)
class CPCVPlan:
    """All C(N, k) splits of combinatorial purged cross-validation and how they form ``n_paths`` paths.

    ``path_of[s, g]`` is the path that split s's prediction of group g belongs to (-1: g is not tested
    in split s). Group g's j-th test (in split order) goes to path j, as in the book's figure 12.2.
    """

    n_obs: int
    groups: tuple[range, ...]
    splits: tuple[CPCVSplit, ...]
    n_paths: int
    path_of: IntArray


def cpcv_splits(
    n_obs: int,
    n_groups: int,
    n_test_groups: int,
    times_start: ArrayLike | None = None,
    times_end: ArrayLike | None = None,
    embargo_frac: float = 0.0,
) -> CPCVPlan:
    """Combinatorial purged cross-validation: the observations are cut into N contiguous groups and
    every choice of k groups is a test set, with purging and an embargo after each test group as in
    :func:`purged_kfold` (López de Prado 2018, ch. 12, section 12.4). Without label times, each
    observation's label is its own point (nothing to purge beyond the test set).

    There are C(N, k) splits and phi[N, k] = k/N C(N, k) paths; each observation is tested in exactly
    phi splits (N=6, k=2: 15 splits, 5 paths).
    """
    if (times_start is None) != (times_end is None):
        raise ValueError("give both times_start and times_end, or neither")
    points = np.arange(n_obs)
    start, end = _label_times(
        points if times_start is None else times_start, points if times_end is None else times_end
    )
    if len(start) != n_obs:
        raise ValueError(f"label times have {len(start)} entries for n_obs={n_obs}")
    n_paths = n_backtest_paths(n_groups, n_test_groups)
    if n_groups > n_obs:
        raise ValueError(f"n_groups={n_groups} exceeds n_obs={n_obs}")
    embargo_n = _embargo_count(n_obs, embargo_frac)
    groups = tuple(range(int(g[0]), int(g[-1]) + 1) for g in np.array_split(np.arange(n_obs), n_groups))
    splits, path_rows = [], []
    tested_so_far = np.zeros(n_groups, dtype=np.intp)
    for chosen in combinations(range(n_groups), n_test_groups):
        blocks = [groups[g] for g in chosen]
        train = np.flatnonzero(_train_mask(start, end, blocks, embargo_n)).astype(np.intp)
        test = np.concatenate([np.arange(b.start, b.stop) for b in blocks]).astype(np.intp)
        splits.append(CPCVSplit(train, test, chosen))
        row = np.full(n_groups, -1, dtype=np.intp)
        row[list(chosen)] = tested_so_far[list(chosen)]
        tested_so_far[list(chosen)] += 1
        path_rows.append(row)
    return CPCVPlan(n_obs, groups, tuple(splits), n_paths, np.array(path_rows, dtype=np.intp))


def cpcv_paths(plan: CPCVPlan, test_values: Sequence[ArrayLike]) -> FloatArray:
    """Assemble per-split out-of-sample values (predictions or strategy returns, one array per split,
    one row per ``split.test`` index) into ``plan.n_paths`` full paths: shape (n_paths, n_obs, ...).

    Each path holds every observation once, each predicted by a model that did not train on it
    (López de Prado 2018, section 12.4.1 and figure 12.2).
    """
    if len(test_values) != len(plan.splits):
        raise ValueError(f"need one value array per split ({len(plan.splits)}), got {len(test_values)}")
    arrays = [_as_float(v, "test_values") for v in test_values]
    tail = arrays[0].shape[1:] if arrays else ()
    out = np.full((plan.n_paths, plan.n_obs, *tail), np.nan)
    for s, (split, values) in enumerate(zip(plan.splits, arrays, strict=True)):
        if values.shape[:1] != split.test.shape or values.shape[1:] != tail:
            raise ValueError(f"split {s}: values of shape {values.shape} for {len(split.test)} test rows")
        offset = 0
        for g in split.test_groups:
            rows = plan.groups[g]
            out[plan.path_of[s, g], rows.start : rows.stop] = values[offset : offset + len(rows)]
            offset += len(rows)
    return out


# ---------------------------------------------------------------------- bootstrap and Monte Carlo


def max_drawdown(equity: ArrayLike) -> float | FloatArray:
    """Largest fall from a running peak, ``min(equity / cummax(equity) - 1)`` along the last axis
    (negative, 0 for a curve that never falls): the vectorised form of
    ``hflite.analytics.metrics.drawdown(...).min()`` for many paths at once."""
    eq = _as_float(equity, "equity")
    dd = (eq / np.maximum.accumulate(eq, axis=-1) - 1.0).min(axis=-1)
    return float(dd) if np.ndim(dd) == 0 else np.asarray(dd, dtype=np.float64)


@dataclass(frozen=True)
class PathStats:
    """Per-path distributions of a Monte Carlo run (one entry per path)."""

    total_return: FloatArray
    max_drawdown: FloatArray
    sharpe: FloatArray


def path_statistics(returns: ArrayLike, periods_per_year: float = 252) -> PathStats:
    """Total return, max drawdown and Sharpe of each row of an (n_paths x T) return matrix."""
    r = _as_float(returns, "returns", ndim=2)
    equity = np.cumprod(1.0 + r, axis=1)
    with_start = np.concatenate([np.ones((r.shape[0], 1)), equity], axis=1)
    return PathStats(
        total_return=np.asarray(equity[:, -1] - 1.0, dtype=np.float64),
        max_drawdown=np.asarray(max_drawdown(with_start), dtype=np.float64),
        sharpe=np.asarray(sharpe(r.T, periods_per_year), dtype=np.float64),
    )


def _bootstrap_indices(
    n: int, length: int, block: float, n_paths: int, rng: np.random.Generator, method: str
) -> IntArray:
    """Resampled positions (n_paths x length), circular so every position is equally likely."""
    if method == "stationary":
        # blocks of geometric length (mean `block`) starting at uniform positions (Politis & Romano 1994)
        new_block = rng.random((n_paths, length)) < 1.0 / block
        new_block[:, 0] = True
        starts = rng.integers(0, n, size=(n_paths, length))
        pos = np.arange(length)
        last_start = np.maximum.accumulate(np.where(new_block, pos, 0), axis=1)
        return np.asarray((np.take_along_axis(starts, last_start, axis=1) + pos - last_start) % n, np.intp)
    if method == "fixed":
        size = int(block)
        n_blocks = -(-length // size)
        starts = rng.integers(0, n, size=(n_paths, n_blocks, 1))
        idx = ((starts + np.arange(size)) % n).reshape(n_paths, n_blocks * size)
        return np.asarray(idx[:, :length], dtype=np.intp)
    raise ValueError(f"method must be 'stationary' or 'fixed', got {method!r}")


def block_bootstrap(
    returns: ArrayLike,
    block: float,
    n_paths: int,
    seed: int | None = None,
    method: Literal["stationary", "fixed"] = "stationary",
    length: int | None = None,
) -> FloatArray:
    """Resampled return paths (n_paths x length, default the input's length) that keep short-range
    dependence (volatility clusters) which an i.i.d. bootstrap destroys.

    ``stationary``: the stationary bootstrap of Politis & Romano (1994), blocks of geometric length
    with mean ``block``, wrapping around the end; the resampled series is stationary and each path's
    expected mean is the sample mean. ``fixed``: the circular block bootstrap (Politis & Romano 1992)
    with blocks of exactly ``int(block)`` returns. Same ``seed``, same paths.
    """
    r = _as_float(returns, "returns", ndim=1)
    if len(r) == 0:
        raise ValueError("returns is empty")
    if not 1.0 <= block <= len(r):
        raise ValueError(f"block must be in [1, {len(r)}], got {block}")
    if n_paths < 1:
        raise ValueError(f"n_paths must be >= 1, got {n_paths}")
    rng = np.random.default_rng(seed)
    idx = _bootstrap_indices(len(r), length or len(r), block, n_paths, rng, method)
    return r[idx]


@dataclass(frozen=True)
class TradeShuffle:
    """Trade-order shuffles: the permuted trade returns, the equity paths (starting at 1) and their
    statistics. Total return and per-trade Sharpe do not depend on the order (same multiset of
    trades); the drawdown does, which is the point of the test."""

    returns: FloatArray
    equity: FloatArray
    stats: PathStats


def shuffle_trades(trade_returns: ArrayLike, n_paths: int, seed: int | None = None) -> TradeShuffle:
    """Monte Carlo of the trade order: each path is a random permutation of the same trade returns,
    compounded into an equity path. Shows how deep a drawdown the same trades could have dug in
    another order (the real run's percentile: :func:`percentile_of`). Sharpe here is per trade."""
    r = _as_float(trade_returns, "trade_returns", ndim=1)
    if n_paths < 1:
        raise ValueError(f"n_paths must be >= 1, got {n_paths}")
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.tile(r, (n_paths, 1)), axis=1)
    equity = np.concatenate([np.ones((n_paths, 1)), np.cumprod(1.0 + shuffled, axis=1)], axis=1)
    return TradeShuffle(shuffled, equity, path_statistics(shuffled, periods_per_year=1))


def percentile_of(value: float, distribution: ArrayLike) -> float:
    """Percentile rank (0-100) of ``value`` in ``distribution``: 100 * (share below + half the share
    equal), as ``scipy.stats.percentileofscore(kind="mean")``; NaNs are ignored, NaN if none is left.
    A real run at the 95th percentile of its null beat 95% of it."""
    d = _as_float(distribution, "distribution").reshape(-1)
    d = d[~np.isnan(d)]
    if len(d) == 0 or math.isnan(value):
        return math.nan
    return float(100.0 * (np.sum(d < value) + 0.5 * np.sum(d == value)) / len(d))
