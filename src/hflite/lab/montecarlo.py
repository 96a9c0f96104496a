"""Monte Carlo on a finished run: how much of the result is the order of its trades, the particular
path of its returns, or what any random entries with the same exposure would have made?

(a) **Trade order** (sequence risk): the run's closed trades, each as its net P&L over the equity just
    before its entry, reshuffled (``hflite.lab.stats.shuffle_trades``). The final return is the same in
    every order; the max drawdown is not: the real order's drawdown against the distribution says
    whether the run's drawdown was lucky.
(b) **Stationary block bootstrap** of the daily returns (Politis & Romano 1994, via
    ``hflite.lab.stats.block_bootstrap``): distributions of Sharpe, CAGR and max drawdown that keep
    volatility clusters. The same resampled positions applied to the returns minus their mean give a
    null with a true Sharpe of 0, whose share of paths at or above the real Sharpe is a bootstrap
    p-value (Efron & Tibshirani 1993, ch. 16: the bootstrap test of a mean, shifted to the null).
(c) **Random-entry null with the same exposure**: for each traded symbol, the run's trades (their
    number, holding periods in bars and directions) are placed at random non-overlapping start bars
    of the same period (uniformly over all arrangements), held through the symbol's daily
    close-to-close returns at the symbol's average weight in the run, and charged the run's average
    cost in bps (fees plus slippage, from its fills) at each entry and exit. This is an
    **approximation** of a null strategy, not a re-run of the engine: no stops, no risk gate, constant
    weights rebalanced daily, entries and exits at the close. The share of random paths whose Sharpe
    beats the real one reads like a p-value: small means entries better than chance.
(d) **Parameter perturbations**: a summary of the Sharpe ratios (or returns) of runs with perturbed
    parameters (the caller runs them with the engine): median, 5th percentile, share positive and
    where the real run sits; a real run far above its neighbours sits on a fragile peak.

Every draw comes from ``numpy.random.default_rng`` seeded from one ``seed`` (a ``SeedSequence`` split
per analysis): the same seed gives the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from html import escape
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field

from hflite import logs
from hflite.analytics.metrics import daily_equity, periods_per_year
from hflite.lab.stats import block_bootstrap, path_statistics, percentile_of, sharpe, shuffle_trades
from hflite.tables import Col

if TYPE_CHECKING:
    from hflite.engine.result import RunResult

FloatArray = NDArray[np.float64]
_log = logs.get("hflite.lab.montecarlo")


class MonteCarloConfig(BaseModel):
    """Paths and seed of the Monte Carlo analyses."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    paths: int = Field(1000, ge=10, le=1_000_000, description="random paths per analysis")
    seed: int = Field(0, ge=0)
    block: float | None = Field(None, ge=1, description="mean bootstrap block in days (default T^(1/3))")
    method: Literal["stationary", "fixed"] = "stationary"


# ----------------------------------------------------------------------------------- distributions


@dataclass(frozen=True)
class Distribution:
    """One statistic over the random paths and the real run's value in it."""

    name: str
    values: FloatArray
    real: float
    percentile: float  # stats.percentile_of(real, values): 95 = the real run beat 95% of the paths
    higher_is_better: bool = True

    @classmethod
    def of(cls, name: str, values: ArrayLike, real: float, higher_is_better: bool = True) -> Distribution:
        v = np.asarray(values, dtype=np.float64)
        return cls(name, v, float(real), percentile_of(float(real), v), higher_is_better)

    def quantile(self, q: float) -> float:
        v = self.values[np.isfinite(self.values)]
        return float(np.quantile(v, q)) if len(v) else math.nan

    @property
    def share_beating(self) -> float:
        """Share of paths at least as good as the real run (>= when higher is better, <= otherwise)."""
        v = self.values[~np.isnan(self.values)]
        if not len(v) or math.isnan(self.real):
            return math.nan
        return float(np.mean(v >= self.real) if self.higher_is_better else np.mean(v <= self.real))

    def row(self, analysis: str) -> dict[str, Any]:
        return {
            "analysis": analysis,
            "statistic": self.name,
            "real": self.real,
            "p5": self.quantile(0.05),
            "median": self.quantile(0.5),
            "p95": self.quantile(0.95),
            "percentile": self.percentile,
            "paths beating": self.share_beating,
        }

    def summary(self) -> dict[str, float | None]:
        return {
            k: _num(v)
            for k, v in (
                ("real", self.real),
                ("p5", self.quantile(0.05)),
                ("median", self.quantile(0.5)),
                ("p95", self.quantile(0.95)),
                ("percentile", self.percentile),
                ("share_beating", self.share_beating),
            )
        }


_DIST_COLS = (
    Col("analysis", "id"),
    Col("statistic", "id"),
    Col("real", "number"),
    Col("p5", "number"),
    Col("median", "number"),
    Col("p95", "number"),
    Col("percentile", "number", digits=1),
    Col("paths beating", "number"),
)


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _seeds(seed: int, n: int) -> list[int]:
    """``n`` independent seeds from one (each analysis reproducible on its own)."""
    return [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(seed).spawn(n)]


# --------------------------------------------------------------------------------- (a) trade order


@dataclass(frozen=True)
class TradeOrderMC:
    """Sequence risk: the run's closed trades (net return on the equity before entry) in random orders."""

    title: ClassVar[str] = "Trade order"

    trade_returns: FloatArray  # in the real order (by exit time)
    final_return: float  # the same in every order
    total_return: Distribution  # every path's: equal to final_return up to float rounding
    max_drawdown: Distribution
    n_paths: int
    seed: int

    def rows(self) -> list[dict[str, Any]]:
        return [self.max_drawdown.row("trade order")]

    def summary(self) -> dict[str, Any]:
        return {
            "trades": len(self.trade_returns),
            "final_return": _num(self.final_return),
            "max_drawdown": self.max_drawdown.summary(),
        }

    def html(self) -> str:
        d = self.max_drawdown
        text = (
            f"{len(self.trade_returns)} closed trades, each as its net P&L over the equity just before "
            f"its entry, compounded in {self.n_paths:,} random orders (seed {self.seed}). The final "
            f"return is {self.final_return:.2%} in every order. The real order's max drawdown "
            f"({d.real:.2%}) is at the {d.percentile:.0f}th percentile: milder than {d.percentile:.0f}% "
            f"of the orders; in one order of twenty it reaches {d.quantile(0.05):.2%} or worse."
        )
        return _note(text) + _stats_table([d.row("trade order")]) + _hist(d, "lab-mc-order", pct=True)


def trade_order_mc(trade_returns: ArrayLike, n_paths: int = 1000, seed: int = 0) -> TradeOrderMC:
    """:func:`hflite.lab.stats.shuffle_trades` of ``trade_returns`` (fractions of equity, real order)."""
    r = np.asarray(trade_returns, dtype=np.float64)
    if len(r) < 2:
        raise ValueError(f"need at least 2 closed trades to shuffle, got {len(r)}")
    shuffled = shuffle_trades(r, n_paths, seed)
    real = path_statistics(r[None, :], periods_per_year=1)
    return TradeOrderMC(
        trade_returns=r,
        final_return=float(np.prod(1.0 + r) - 1.0),
        total_return=Distribution.of(
            "total return", shuffled.stats.total_return, float(real.total_return[0])
        ),
        max_drawdown=Distribution.of(
            "max drawdown", shuffled.stats.max_drawdown, float(real.max_drawdown[0])
        ),
        n_paths=n_paths,
        seed=seed,
    )


def trade_returns_on_equity(trades: pd.DataFrame, equity: pd.Series, initial_cash: float) -> FloatArray:
    """Each closed trade's net P&L (``pnl_usd - fees_usd``) over the equity just before its entry, in
    the order the trades closed."""
    closed = trades[~trades["is_open"].fillna(False).astype(bool)] if "is_open" in trades else trades
    if closed.empty:
        return np.empty(0)
    closed = closed.sort_values(["exit_ts", "entry_ts"], kind="stable")
    net = closed["pnl_usd"].astype(float).to_numpy() - closed["fees_usd"].fillna(0.0).astype(float).to_numpy()
    eq = equity.dropna()
    idx = pd.DatetimeIndex(eq.index)
    entry = pd.DatetimeIndex(pd.to_datetime(closed["entry_ts"], utc=True))
    pos = idx.searchsorted(entry, side="left") - 1
    values = eq.to_numpy(dtype=float)
    before = np.where(pos >= 0, values[np.maximum(pos, 0)], float(initial_cash))
    return np.asarray(net / before, dtype=np.float64)


# ------------------------------------------------------------------------------------ (b) bootstrap


@dataclass(frozen=True)
class BootstrapMC:
    """Stationary block bootstrap of the daily returns: Sharpe, CAGR and max drawdown distributions."""

    title: ClassVar[str] = "Bootstrap of daily returns"

    n_days: int
    block: float
    method: str
    periods_per_year: float
    sharpe: Distribution
    cagr: Distribution
    max_drawdown: Distribution
    p_value: float  # share of zero-mean (centred) paths with a Sharpe >= the real one
    prob_loss: float  # share of paths that lose money
    n_paths: int
    seed: int

    def rows(self) -> list[dict[str, Any]]:
        return [d.row("bootstrap") for d in (self.sharpe, self.cagr, self.max_drawdown)]

    def summary(self) -> dict[str, Any]:
        return {
            "days": self.n_days,
            "block": self.block,
            "sharpe": self.sharpe.summary(),
            "cagr": self.cagr.summary(),
            "max_drawdown": self.max_drawdown.summary(),
            "p_value": _num(self.p_value),
            "prob_loss": _num(self.prob_loss),
        }

    def html(self) -> str:
        s = self.sharpe
        text = (
            f"{self.n_paths:,} resamples of the {self.n_days} daily returns in blocks of mean length "
            f"{self.block:g} days ({self.method} bootstrap, seed {self.seed}): the spread the same "
            f"strategy could have shown on another draw of the same market. Sharpe 90% interval "
            f"[{s.quantile(0.05):.2f}, {s.quantile(0.95):.2f}] around {s.real:.2f}; "
            f"{self.prob_loss:.1%} of the paths lose money. Bootstrap p-value (share of zero-mean paths "
            f"with a Sharpe at or above the real one): {self.p_value:.3f}."
        )
        figs = (
            _hist(self.sharpe, "lab-mc-boot-sharpe")
            + _hist(self.cagr, "lab-mc-boot-cagr", pct=True)
            + _hist(self.max_drawdown, "lab-mc-boot-dd", pct=True)
        )
        return _note(text) + _stats_table(self.rows()) + figs


def _cagr(total_return: FloatArray | float, n_days: int, ppy: float) -> FloatArray:
    growth = 1.0 + np.asarray(total_return, dtype=np.float64)
    years = n_days / ppy
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(growth > 0, growth ** (1.0 / years) - 1.0, -1.0)


def bootstrap_mc(
    daily_returns: ArrayLike,
    ppy: float,
    n_paths: int = 1000,
    seed: int = 0,
    block: float | None = None,
    method: Literal["stationary", "fixed"] = "stationary",
) -> BootstrapMC:
    """Block bootstrap of ``daily_returns``; ``block`` defaults to ``T^(1/3)`` days, the usual order
    of the optimal block length for variance-type statistics (Hall, Horowitz & Jing 1995)."""
    r = np.asarray(daily_returns, dtype=np.float64)
    if len(r) < 3:
        raise ValueError(f"need at least 3 daily returns, got {len(r)}")
    b = float(block) if block is not None else float(max(1, round(len(r) ** (1 / 3))))
    b = min(b, float(len(r)))
    paths = block_bootstrap(r, b, n_paths, seed=seed, method=method)
    ps = path_statistics(paths, ppy)
    real = path_statistics(r[None, :], ppy)
    centred = np.asarray(sharpe((paths - r.mean()).T, ppy), dtype=np.float64)
    real_sharpe = float(real.sharpe[0])
    return BootstrapMC(
        n_days=len(r),
        block=b,
        method=method,
        periods_per_year=float(ppy),
        sharpe=Distribution.of("sharpe", ps.sharpe, real_sharpe),
        cagr=Distribution.of(
            "cagr", _cagr(ps.total_return, len(r), ppy), float(_cagr(real.total_return, len(r), ppy)[0])
        ),
        max_drawdown=Distribution.of("max drawdown", ps.max_drawdown, float(real.max_drawdown[0])),
        p_value=float(np.mean(centred >= real_sharpe)) if math.isfinite(real_sharpe) else math.nan,
        prob_loss=float(np.mean(ps.total_return < 0)),
        n_paths=n_paths,
        seed=seed,
    )


# --------------------------------------------------------------------------------- (c) random entry


def random_starts(
    n_slots: int, lengths: ArrayLike, n_paths: int, rng: np.random.Generator
) -> NDArray[np.intp]:
    """Start slots (n_paths x n_blocks, in the order of ``lengths``) of non-overlapping blocks of the
    given lengths (>= 1) inside ``n_slots`` slots, in a random order and uniformly over all
    arrangements: choose the blocks' ranks among the free slots (m distinct of free + m, sorted)
    and lay the blocks out in a random permutation."""
    ln = np.asarray(lengths, dtype=np.intp)
    m = len(ln)
    if m == 0:
        return np.empty((n_paths, 0), dtype=np.intp)
    if np.any(ln < 1):
        raise ValueError("block lengths must be >= 1")
    free = n_slots - int(ln.sum())
    if free < 0:
        raise ValueError(f"{m} blocks of {int(ln.sum())} slots do not fit in {n_slots}")
    cells = free + m
    keys = rng.random((n_paths, cells))
    ranks = np.sort(
        np.argpartition(keys, m - 1, axis=1)[:, :m] if m < cells else np.argsort(keys, axis=1), axis=1
    )
    order = rng.permuted(np.tile(np.arange(m), (n_paths, 1)), axis=1)
    placed = ln[order]
    before = np.cumsum(placed, axis=1) - placed  # slots taken by the blocks laid out earlier
    starts_in_order = ranks - np.arange(m) + before
    starts = np.empty_like(starts_in_order)
    np.put_along_axis(starts, order, starts_in_order, axis=1)
    return starts.astype(np.intp)


def random_entry_returns(
    returns: ArrayLike,
    held: ArrayLike,
    direction: ArrayLike,
    weight: float,
    cost: float,
    n_paths: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, NDArray[np.intp]]:
    """One symbol's null: per path, its trades (bars ``held``, +1/-1 ``direction``) at random start slots
    of its bar-to-bar ``returns``; returns the (n_paths x len(returns)) weighted returns net of
    ``cost`` (a fraction of the traded weight) at each entry and exit, and the starts (n_paths x trades).

    A trade starting at slot s holds returns s .. s+held-1 (entered at the close before slot s) and pays
    its entry cost on slot s and its exit cost on slot s+held-1. Trades held for at least a bar never
    overlap; a trade held 0 bars (in and out within one bar) holds nothing and only pays both costs, on
    a uniformly random slot of its own."""
    r = np.asarray(returns, dtype=np.float64)
    h = np.asarray(held, dtype=np.intp)
    d = np.asarray(direction, dtype=np.float64)
    n, m = len(r), len(h)
    if n == 0:
        raise ValueError("no returns to place trades on")
    held_some = np.flatnonzero(h > 0)
    starts = np.empty((n_paths, m), dtype=np.intp)
    starts[:, held_some] = random_starts(n, h[held_some], n_paths, rng)
    flat = np.flatnonzero(h == 0)
    starts[:, flat] = rng.integers(0, n, size=(n_paths, len(flat)))
    # built slot-major (slots x paths: each slot's paths contiguous), returned as a transposed view
    cols = np.repeat(np.arange(n_paths), m)
    s = starts.reshape(-1)
    steps = np.zeros((n + 1, n_paths))
    signed = np.tile(d * weight, n_paths)
    np.add.at(steps, (s, cols), signed)
    np.add.at(steps, (s + np.tile(h, n_paths), cols), -signed)
    net = np.cumsum(steps[:n], axis=0)
    net *= r[:, None]
    if cost:
        np.add.at(net, (s, cols), -weight * cost)
        np.add.at(net, (s + np.tile(np.maximum(h, 1), n_paths) - 1, cols), -weight * cost)
    return net.T, starts


@dataclass(frozen=True)
class SymbolTrades:
    """What the null keeps of one symbol's trades."""

    symbol: str
    held: NDArray[np.intp]
    direction: FloatArray
    weight: float  # mean |position| / equity while the run held the symbol
    bars: int


@dataclass(frozen=True)
class RandomEntryMC:
    """The random-entry null with the run's exposure (an approximation: see the module docstring)."""

    title: ClassVar[str] = "Random-entry null"

    symbols: tuple[SymbolTrades, ...]
    cost_bps: float
    sharpe: Distribution
    total_return: Distribution
    max_drawdown: Distribution
    periods_per_year: float
    n_paths: int
    seed: int
    seconds: float = 0.0

    @property
    def p_value(self) -> float:
        """Share of random-entry paths whose Sharpe is at least the real one."""
        return self.sharpe.share_beating

    def rows(self) -> list[dict[str, Any]]:
        return [d.row("random entry") for d in (self.sharpe, self.total_return, self.max_drawdown)]

    def summary(self) -> dict[str, Any]:
        return {
            "cost_bps": self.cost_bps,
            "trades": int(sum(len(s.held) for s in self.symbols)),
            "sharpe": self.sharpe.summary(),
            "total_return": self.total_return.summary(),
            "max_drawdown": self.max_drawdown.summary(),
            "p_value": _num(self.p_value),
        }

    def html(self) -> str:
        from hflite.analytics import report as _r

        n_trades = sum(len(s.held) for s in self.symbols)
        text = (
            f"{self.n_paths:,} paths (seed {self.seed}) that keep each symbol's {n_trades} trades, their "
            f"holding periods and directions, at random non-overlapping dates of the same period, held "
            f"at the symbol's average weight in the run through its close-to-close returns, charged "
            f"{self.cost_bps:.1f} bps (the run's average fees and slippage) per entry and exit. An "
            f"approximation of a no-skill strategy with the same exposure: no stops, no risk gate, "
            f"entries and exits at the close. {self.p_value:.1%} of the random paths reach the real "
            f"Sharpe ({self.sharpe.real:.2f}); the real run is at the {self.sharpe.percentile:.0f}th "
            f"percentile. Built in {self.seconds:.2f} s."
        )
        per_symbol = _r._table(
            ["Symbol", "Trades", "Bars held (total)", "Bars in period", "Weight"],
            [
                [s.symbol, str(len(s.held)), str(int(s.held.sum())), str(s.bars), f"{s.weight:.1%}"]
                for s in self.symbols
            ],
        )
        figs = (
            _hist(self.sharpe, "lab-mc-null-sharpe")
            + _hist(self.total_return, "lab-mc-null-return", pct=True)
            + _hist(self.max_drawdown, "lab-mc-null-dd", pct=True)
        )
        return _note(text) + _stats_table(self.rows()) + per_symbol + figs


def cost_bps(fills: pd.DataFrame) -> float:
    """The run's average cost per side in bps of traded notional: (fees + slippage) / notional, all in
    USD (slippage is per unit, in price units: slippage / price of the notional)."""
    if fills is None or fills.empty:
        return 0.0
    notional = fills["notional_usd"].astype(float).abs()
    price = fills["price"].astype(float).abs()
    slip = (fills["slippage"].fillna(0.0).astype(float) / price.where(price > 0)).fillna(0.0) * notional
    fees = fills["fee_usd"].fillna(0.0).astype(float)
    total = float(notional.sum())
    return float((fees.sum() + slip.sum()) / total * 1e4) if total > 0 else 0.0


def _weight(result: RunResult, sym: str) -> float:
    """Mean |market value| / equity of the symbol over the points the run held it (else its fills)."""
    eq = result.equity.to_numpy(dtype=float)
    if sym in result.positions:
        mv = np.abs(np.nan_to_num(result.positions[sym].to_numpy(dtype=float)))
        held = mv > 0
        if held.any():
            return float(np.mean(mv[held] / eq[held]))
    fills = result.fills[result.fills["symbol"] == sym] if not result.fills.empty else result.fills
    if fills.empty:
        return 0.0
    at = result.equity.index.searchsorted(pd.DatetimeIndex(pd.to_datetime(fills["ts"], utc=True))) - 1
    before = eq[np.clip(at, 0, len(eq) - 1)]
    return float(np.mean(fills["notional_usd"].astype(float).abs().to_numpy() / before))


def _symbol_trades(result: RunResult, sym: str) -> tuple[SymbolTrades, FloatArray, NDArray[np.int64]]:
    """The symbol's trades, its bar-to-bar close returns and each return's day (as a UTC day)."""
    t = result.trades[result.trades["symbol"] == sym]
    close = result.prices[sym]["close"].to_numpy(dtype=float)
    rets = close[1:] / close[:-1] - 1.0
    days = pd.DatetimeIndex(result.prices[sym].index).tz_convert("UTC").normalize()[1:]
    direction = np.where(t["direction"].astype(str) == "short", -1.0, 1.0)
    held = np.clip(t["bars_held"].fillna(0).astype(int).to_numpy(), 0, len(rets))
    st = SymbolTrades(sym, held.astype(np.intp), direction, _weight(result, sym), len(close))
    return st, rets, np.asarray(days.as_unit("ns").asi8, dtype=np.int64)


def _add_by_day(out: FloatArray, values: FloatArray, row: NDArray[np.intp]) -> None:
    """``out[row[j]] += values[j]`` (day-major arrays) for non-decreasing ``row`` (bars in time order;
    several bars of one day, intraday, are summed first), rows clipped into ``out``."""
    row = np.clip(row, 0, out.shape[0] - 1)
    if len(row) == 0:
        return
    first = np.flatnonzero(np.concatenate(([True], row[1:] != row[:-1])))
    out[row[first]] += values if len(first) == len(row) else np.add.reduceat(values, first, axis=0)


def random_entry_mc(result: RunResult, n_paths: int = 1000, seed: int = 0) -> RandomEntryMC:
    """The random-entry null of a finished run (see the module docstring, (c))."""
    t0 = time.perf_counter()
    daily = daily_equity(result.equity)
    if len(daily) < 3:
        raise ValueError(f"need at least 3 days of equity, got {len(daily)}")
    ppy = periods_per_year(daily)
    days = np.asarray(pd.DatetimeIndex(daily.index).as_unit("ns").asi8, dtype=np.int64)
    real = daily.to_numpy()[1:] / daily.to_numpy()[:-1] - 1.0
    cost = cost_bps(result.fills) / 1e4
    rng = np.random.default_rng(seed)
    null = np.zeros((len(real), n_paths))  # day-major while adding symbols
    kept = []
    for sym in result.symbols:
        if sym not in result.prices or result.trades.empty or not (result.trades["symbol"] == sym).any():
            continue
        st, rets, ret_days = _symbol_trades(result, sym)
        net, _ = random_entry_returns(rets, st.held, st.direction, st.weight, cost, n_paths, rng)
        _add_by_day(null, net.T, np.searchsorted(days, ret_days, side="left") - 1)
        kept.append(st)
    ps = path_statistics(np.ascontiguousarray(null.T), ppy)
    rs = path_statistics(real[None, :], ppy)
    return RandomEntryMC(
        symbols=tuple(kept),
        cost_bps=cost * 1e4,
        sharpe=Distribution.of("sharpe", ps.sharpe, float(rs.sharpe[0])),
        total_return=Distribution.of("total return", ps.total_return, float(rs.total_return[0])),
        max_drawdown=Distribution.of("max drawdown", ps.max_drawdown, float(rs.max_drawdown[0])),
        periods_per_year=float(ppy),
        n_paths=n_paths,
        seed=seed,
        seconds=time.perf_counter() - t0,
    )


# ----------------------------------------------------------------------------- (d) perturbations


@dataclass(frozen=True)
class PerturbationSummary:
    """Runs with perturbed parameters around the chosen ones: is the result a plateau or a peak?"""

    title: ClassVar[str] = "Parameter perturbations"
    cols: ClassVar[tuple[Col, ...]] = (
        Col("metric", "id"),
        Col("runs", "count"),
        Col("real", "number"),
        Col("median", "number"),
        Col("p5", "number"),
        Col("share positive", "number"),
        Col("real percentile", "number", digits=1),
    )

    metric: str
    values: FloatArray
    real: float
    median: float
    p5: float
    p95: float
    share_positive: float
    percentile: float  # of the real run among the perturbed ones

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "metric": self.metric,
                "runs": len(self.values),
                "real": self.real,
                "median": self.median,
                "p5": self.p5,
                "share positive": self.share_positive,
                "real percentile": self.percentile,
            }
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "runs": len(self.values),
            **{
                k: _num(v)
                for k, v in (
                    ("real", self.real),
                    ("median", self.median),
                    ("p5", self.p5),
                    ("p95", self.p95),
                    ("share_positive", self.share_positive),
                    ("percentile", self.percentile),
                )
            },
        }

    def html(self) -> str:
        text = (
            f"{len(self.values)} runs with perturbed parameters: median {self.metric} {self.median:.3g}, "
            f"5th percentile {self.p5:.3g}, {self.share_positive:.0%} positive. The chosen parameters "
            f"({self.real:.3g}) are at the {self.percentile:.0f}th percentile of their neighbours: far "
            f"above the median means a peak that small changes lose; near it, a plateau."
        )
        dist = Distribution.of(self.metric, self.values, self.real)
        return _note(text) + _hist(dist, "lab-perturb")


def perturbation_summary(values: ArrayLike, real: float, metric: str = "sharpe") -> PerturbationSummary:
    """Summary of ``values`` (one per perturbed run; NaNs, failed runs, are ignored) against the real run."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        raise ValueError("no perturbed run values (all NaN or empty)")
    return PerturbationSummary(
        metric=metric,
        values=v,
        real=float(real),
        median=float(np.median(v)),
        p5=float(np.quantile(v, 0.05)),
        p95=float(np.quantile(v, 0.95)),
        share_positive=float(np.mean(v > 0)),
        percentile=percentile_of(float(real), v),
    )


# ------------------------------------------------------------------------------------------ driver


@dataclass(frozen=True)
class MonteCarloResult:
    """The three Monte Carlo analyses of one run (None where the run cannot feed one: see ``notes``)."""

    title: ClassVar[str] = "Monte Carlo"
    cols: ClassVar[tuple[Col, ...]] = _DIST_COLS

    trade_order: TradeOrderMC | None
    bootstrap: BootstrapMC
    random_entry: RandomEntryMC | None
    n_paths: int
    seed: int
    perturbations: PerturbationSummary | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def parts(self) -> list[Any]:
        return [p for p in (self.trade_order, self.bootstrap, self.random_entry, self.perturbations) if p]

    def rows(self) -> list[dict[str, Any]]:
        """Every distribution's real value, quantiles, percentile and share of paths beating it."""
        return [row for p in (self.trade_order, self.bootstrap, self.random_entry) if p for row in p.rows()]

    def tables(self) -> list[tuple[str, tuple[Col, ...], list[dict[str, Any]]]]:
        out = [(self.title, self.cols, self.rows())]
        if self.perturbations is not None:
            out.append((self.perturbations.title, self.perturbations.cols, self.perturbations.rows()))
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "paths": self.n_paths,
            "seed": self.seed,
            "trade_order": self.trade_order.summary() if self.trade_order else None,
            "bootstrap": self.bootstrap.summary(),
            "random_entry": self.random_entry.summary() if self.random_entry else None,
            "perturbations": self.perturbations.summary() if self.perturbations else None,
        }

    def with_perturbations(self, summary: PerturbationSummary) -> MonteCarloResult:
        """The same result with the perturbation summary (d) added to its tables, summary and section."""
        return replace(self, perturbations=summary)

    def html(self) -> str:
        """The section's inner HTML (the caller wraps it in its ``<section>`` titled ``title``)."""
        parts = [f"<h3>{escape(p.title)}</h3>{p.html()}" for p in self.parts()]
        parts += [_note(n) for n in self.notes]
        return "".join(parts)


def monte_carlo(result: RunResult, cfg: MonteCarloConfig | None = None) -> MonteCarloResult:
    """Trade-order shuffles, block bootstrap and the random-entry null of a finished run."""
    cfg = cfg or MonteCarloConfig()
    t0 = time.perf_counter()
    s_order, s_boot, s_null = _seeds(cfg.seed, 3)
    notes = []
    trade_r = trade_returns_on_equity(result.trades, result.equity, result.initial_cash)
    order = None
    if len(trade_r) >= 2:
        order = trade_order_mc(trade_r, cfg.paths, s_order)
    else:
        notes.append(f"trade order: {len(trade_r)} closed trades, too few to shuffle")
    daily = daily_equity(result.equity)
    rets = daily.to_numpy()[1:] / daily.to_numpy()[:-1] - 1.0
    boot = bootstrap_mc(rets, periods_per_year(daily), cfg.paths, s_boot, cfg.block, cfg.method)
    null = None
    if result.trades.empty:
        notes.append("random-entry null: the run made no trades")
    else:
        null = random_entry_mc(result, cfg.paths, s_null)
    _log.info("lab.montecarlo", paths=cfg.paths, seconds=round(time.perf_counter() - t0, 3))
    return MonteCarloResult(order, boot, null, cfg.paths, cfg.seed, notes=tuple(notes))


# -------------------------------------------------------------------------------------- rendering


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _fmt(v: Any) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _stats_table(rows: Sequence[dict[str, Any]]) -> str:
    from hflite.analytics import report as _r

    header = [
        "Statistic",
        "Real",
        "5th pct",
        "Median",
        "95th pct",
        "Real's percentile",
        "Paths at least as good",
    ]
    cells = [
        [
            str(r["statistic"]),
            _fmt(r["real"]),
            _fmt(r["p5"]),
            _fmt(r["median"]),
            _fmt(r["p95"]),
            _fmt(r["percentile"]),
            "—" if not math.isfinite(r["paths beating"]) else f"{r['paths beating']:.1%}",
        ]
        for r in rows
    ]
    return _r._table(header, cells)


def _hist(d: Distribution, name: str, pct: bool = False) -> str:
    import plotly.graph_objects as go

    from hflite.analytics import report as _r

    scale = 100.0 if pct else 1.0
    v = d.values[np.isfinite(d.values)] * scale
    fig = go.Figure()
    fig.add_histogram(x=v.astype("float32"), nbinsx=50, name="random paths", marker={"color": "#8c959f"})
    if math.isfinite(d.real):
        fig.add_vline(x=d.real * scale, line={"color": "#cf222e", "width": 2}, annotation_text="real run")
    fig.update_layout(
        height=260,
        showlegend=False,
        xaxis_title=d.name + (" (%)" if pct else ""),
        yaxis_title="paths",
        hovermode="closest",
    )
    return _r._figure_html(fig, name)
