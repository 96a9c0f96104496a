"""A research path for parameter sweeps: the engine's rules for a single-symbol trend strategy,
without order objects, journal or venue book.

It uses the same strategy code for signals, the same risk gate (``risk.gate.evaluate``) and the
same commission and slippage objects, and walks only the bars where a signal fires. It supports the
case a sweep needs (one USD-quoted symbol, market entries and exits, no protective stops, risk
limits no richer than ``RiskLimits.minimal()`` plus its drawdown halt); anything else raises
``Unsupported`` so the caller runs the full engine instead. ``tests/test_sweep.py``
proves that every pair's fills and equity equal a full-engine run of that pair.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from hflite.domain.instrument import Instrument, VolumeUnit
from hflite.domain.order import Side
from hflite.domain.signal import IntentKind, OrderIntent
from hflite.engine.market import SymbolBars
from hflite.execution.costs import CommissionModel, SlippageModel
from hflite.risk.gate import RiskLimits, RiskState, evaluate
from hflite.strategy.builtin import Trend, TrendParams


class Unsupported(ValueError):
    """The configuration needs the full engine."""


@dataclass(frozen=True, slots=True)
class SweepFill:
    k: int
    side: int
    qty: float
    price: float
    fee: float


@dataclass(frozen=True, slots=True)
class SweepResult:
    fast: int
    slow: int
    final_equity: float
    peak_equity: float
    fills: tuple[SweepFill, ...]
    halted: bool


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """Everything but the (fast, slow) pair."""

    bars: SymbolBars
    limits: RiskLimits
    commission: CommissionModel
    slippage: SlippageModel
    initial_cash: float
    max_volume_share: float = 1.0
    params: dict[str, object] | None = None


def run_pair(spec: SweepSpec, fast: int, slow: int) -> SweepResult:
    """One (fast, slow) pair through the engine's rules."""
    b, inst = spec.bars, spec.bars.instrument
    if inst.currency != "USD":
        raise Unsupported("the research path values USD-quoted instruments only")
    params = TrendParams.model_validate({**(spec.params or {}), "fast": fast, "slow": slow})
    if params.stop_atr or params.take_profit_atr or params.trailing:
        raise Unsupported("protective stops need the full engine (set stop_atr = 0)")
    extra = spec.limits.beyond_minimal()
    if extra:
        raise Unsupported(f"risk rules beyond RiskLimits.minimal() need the full engine: {', '.join(extra)}")
    sig = Trend(params).signals(b.arrays())
    n, first = b.n, b.first_live
    target, atr = sig.target[:n], sig.atr[:n]
    live_events = np.flatnonzero(~np.isnan(target[first:])) + first
    o, h, lo, c, v = _bar_lists(b)
    close_arr, t_list, events = b.close[:n], target.tolist(), live_events.tolist()
    cash, qty = float(spec.initial_cash), 0.0
    risk = RiskState(equity=cash, peak_equity=cash, gross_exposure=0.0)
    fills: list[SweepFill] = []
    pending: list[tuple[int, float]] = []
    done, j, fill_at = first - 1, 0, n  # last bar valued; next event; bar where pending orders fill
    while True:
        e = min(events[j] if j < len(events) else n, fill_at)
        if e >= n:
            break
        if e - 1 > done:  # quiet bars: constant position; the halt may trip on any of them
            quiet = cash + qty * close_arr[done + 1 : e] if qty else np.full(e - 1 - done, cash)
            _observe(risk, quiet, spec.limits.max_drawdown_pct)
        if e == fill_at:  # 1. fills at the open
            cash, qty = _fill_next_open(spec, inst, pending, e, o, h, lo, v, cash, qty, fills)
            pending, fill_at = [], n
        eq = cash + qty * c[e]  # 2. mark
        risk.gross_exposure = abs(qty * c[e])
        _observe(risk, np.array([eq]), spec.limits.max_drawdown_pct)
        done = e
        if j < len(events) and events[j] == e:  # 3. decide
            j += 1
            pending = _decide(spec, inst, risk, sig.exits, t_list[e], qty, float(c[e]), float(atr[e]), e)
            if pending:
                fill_at = e + 1
    if n - 1 > done:
        tail = cash + qty * close_arr[done + 1 : n] if qty else np.full(n - 1 - done, cash)
        _observe(risk, tail, spec.limits.max_drawdown_pct)
    return SweepResult(fast, slow, cash + qty * c[n - 1], risk.peak_equity, tuple(fills), risk.halted)


def _observe(risk: RiskState, eq: np.ndarray, limit: float) -> None:
    """The risk manager's drawdown rule over marked points: peak first, then the halt."""
    peaks = np.maximum.accumulate(np.maximum(eq, risk.peak_equity))
    if not risk.halted and limit and risk.peak_equity > 0 and ((1 - eq / peaks) * 100 >= limit).any():
        risk.halted = True
    risk.peak_equity = float(peaks[-1])
    risk.equity = float(eq[-1])


_LISTS: dict[int, tuple[SymbolBars, tuple[list[float], ...]]] = {}


def _bar_lists(b: SymbolBars) -> tuple[list[float], ...]:
    """The bars as Python lists (fast scalar access), converted once per symbol per process."""
    cached = _LISTS.get(id(b))
    if cached is None or cached[0] is not b:
        _LISTS.clear()
        cached = _LISTS[id(b)] = (
            b,
            tuple(a[: b.n].tolist() for a in (b.open, b.high, b.low, b.close, b.volume)),
        )
    return cached[1]


def _decide(
    spec: SweepSpec,
    inst: Instrument,
    risk: RiskState,
    exits: object,
    t: float,
    qty: float,
    close: float,
    atr: float,
    e: int,
) -> list[tuple[int, float]]:
    """The engine's decision rule: exit the current side, then enter the new one through the gate."""
    cur = (qty > 0) - (qty < 0)
    if t == cur:
        return []
    orders: list[tuple[int, float]] = []
    if cur != 0:
        orders.append((-cur, abs(qty)))
        risk.gross_exposure = 0.0  # the engine stops counting a position once its exit is sent
    if t != 0:
        side = Side.BUY if t > 0 else Side.SELL
        intent = OrderIntent("sweep", inst.symbol, IntentKind.ENTRY, side, 0, e, "", close, atr, None, exits)  # type: ignore[arg-type]
        verdict = evaluate(spec.limits, risk, intent, inst, 1.0)
        if verdict.qty_approved > 0:
            orders.append((side.sign, verdict.qty_approved))
    return orders


def _fill_next_open(
    spec: SweepSpec,
    inst: Instrument,
    orders: list[tuple[int, float]],
    k: int,
    o: list[float],
    h: list[float],
    lo: list[float],
    v: list[float],
    cash: float,
    qty: float,
    fills: list[SweepFill],
) -> tuple[float, float]:
    cap = _cap(inst, spec.max_volume_share, v[k], o[k])
    if sum(q for _, q in orders) > cap:
        raise Unsupported("an order exceeds the bar's volume cap: partial fills need the full engine")
    prev_range = h[k - 1] - lo[k - 1] if k > 0 else float("nan")
    for side, q in orders:
        slip = spec.slippage.slippage(inst, o[k], prev_range)
        price = o[k] + slip if side > 0 else o[k] - slip
        fee = spec.commission.fee(inst, q, price)
        cash = cash - side * q * price - fee  # same association as Portfolio.apply_fill
        qty += side * q
        if abs(qty) <= 1e-9:
            qty = 0.0
        fills.append(SweepFill(k, side, q, price, fee))
    return cash, qty


def _cap(inst: Instrument, share: float, volume: float, open_: float) -> float:
    if inst.volume_unit is VolumeUnit.NONE:
        return float("inf")
    units = volume if inst.volume_unit is VolumeUnit.UNITS else volume / open_
    return units * share


def sweep(spec: SweepSpec, pairs: list[tuple[int, int]], workers: int = 1) -> list[SweepResult]:
    """Run every pair; ``workers`` > 1 spreads them over processes."""
    if workers <= 1:
        return [run_pair(spec, f, s) for f, s in pairs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_run_chunk, spec, pairs[w::workers]) for w in range(workers)]
        chunks = [f.result() for f in futures]
    out: list[SweepResult | None] = [None] * len(pairs)
    for w, chunk in enumerate(chunks):
        for j, res in enumerate(chunk):
            out[w + j * workers] = res
    return [r for r in out if r is not None]


def _run_chunk(spec: SweepSpec, pairs: list[tuple[int, int]]) -> list[SweepResult]:
    return [run_pair(spec, f, s) for f, s in pairs]
