"""The risk gate's cost per intent with 30 positions held, against the engine's cost per bar.

60 symbols (48 stocks in 8 sectors, 6 ETFs incl. SPY as the regime and breaker index, 6 spot
crypto) of synthetic daily bars over two years, with factor-model returns so that correlations,
volatility, liquidity, breakers and the regime are all live. 30 of them are held; entries come on
the others (the engine releases a symbol before it enters it again), at random recent bars.
Measured in one process:

- ``check``: ``RiskManager.check`` = market context (features, market breaker, regime, order rate,
  correlation with the 30 held) + ``evaluate``: the engine's real per-entry path;
- ``evaluate``: the pure gate alone on the same intents with their contexts precomputed;
- the engine's cost per bar: the full engine (trend strategy, the same limits) over the same bars.

Also: ``check`` with the held positions' per-window statistics dropped before every intent (what the
first entry on a bar pays), and the ``minimal`` profile alone and inside the engine.

Target: ``check`` under 25 microseconds per intent, alone and inside the engine. Run with ``make bench`` or
``python bench/risk_gate.py [n_intents]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
from _common import peak_rss_mb, process_seconds, write

from hflite.domain.instrument import AssetClass, Calendar, Instrument, VolumeUnit
from hflite.domain.order import Side
from hflite.domain.signal import Exits, IntentKind, OrderIntent, VerdictStatus
from hflite.engine.core import Engine, run_backtest
from hflite.engine.market import MarketData, market_from_arrays
from hflite.engine.signals import compute_signals
from hflite.execution.costs import BpsCommission, FixedBpsSlippage
from hflite.execution.venues.sim import SimVenue
from hflite.risk.gate import RiskLimits, evaluate
from hflite.risk.manager import RiskManager
from hflite.strategy.builtin import make_strategy

TARGET_US = 25.0
BARS = 504  # two years of sessions
HELD = 30
EQUITY = 10_000_000.0
SECTORS = [
    "technology",
    "energy",
    "financials",
    "health care",
    "staples",
    "industrials",
    "utilities",
    "materials",
]
#: Every rule on (the defaults), with room for 40 open positions so entries reach the caps.
LIMITS = RiskLimits(max_open_positions=40)
EXITS = Exits(stop_atr=2.0)


def instruments() -> list[Instrument]:
    out = [Instrument("SPY", AssetClass.ETF, "USD", Calendar.XNYS, 0.01, 1.0)]
    out += [Instrument(f"ETF{j}", AssetClass.ETF, "USD", Calendar.XNYS, 0.01, 1.0) for j in range(5)]
    out += [
        Instrument(f"S{j:02d}", AssetClass.EQUITY, "USD", Calendar.XNYS, 0.01, 1.0, sector=SECTORS[j % 8])
        for j in range(48)
    ]
    out += [
        Instrument(
            f"C{j}",
            AssetClass.CRYPTO,
            "USD",
            Calendar.ALWAYS,
            0.01,
            1e-5,
            volume_unit=VolumeUnit.QUOTE,
            shortable=False,
        )
        for j in range(6)
    ]
    return out


def market(insts: list[Instrument], seed: int = 5) -> MarketData:
    """Daily bars: returns = beta x market + sector factor + noise, one shared session calendar."""
    rng = np.random.default_rng(seed)
    ts = (1_609_459_200 + 86_400 * (np.arange(BARS, dtype=np.int64) + 1)) * 10**9 + 21 * 3600 * 10**9
    mkt = rng.normal(0.0003, 0.01, BARS)
    sector = {s: rng.normal(0, 0.007, BARS) for s in SECTORS}
    arrays = {}
    for inst in insts:
        vol = 0.04 if inst.asset_class is AssetClass.CRYPTO else 0.012
        ret = rng.uniform(0.5, 1.5) * mkt + rng.normal(0, vol, BARS)
        if inst.sector:
            ret += sector[inst.sector]
        close = rng.uniform(20, 500) * np.exp(np.cumsum(ret))
        open_ = np.concatenate(([close[0]], close[:-1]))
        spread = np.abs(rng.normal(0, vol / 2, (2, BARS)))
        units = rng.uniform(2e5, 5e6) * np.exp(rng.normal(0, 0.3, BARS))
        arrays[inst.symbol] = {
            "ts": ts,
            "open": open_,
            "high": np.maximum(open_, close) * (1 + spread[0]),
            "low": np.minimum(open_, close) * (1 - spread[1]),
            "close": close,
            "volume": units * close if inst.volume_unit is VolumeUnit.QUOTE else units,
        }
    by_symbol = {i.symbol: i for i in insts}
    return market_from_arrays(arrays, by_symbol, list(by_symbol))


def held_book(md: MarketData, rng: np.random.Generator) -> tuple[dict[str, float], float]:
    """30 positions of 1-3% of equity each (stocks both ways, crypto long), and the cash left."""
    candidates = [s for s in md.traded if s != "SPY"]
    held: dict[str, float] = {}
    for sym in rng.choice(candidates, HELD, replace=False).tolist():
        inst = md.bars[sym].instrument
        sign = 1.0 if not inst.shortable or rng.random() < 0.75 else -1.0
        held[sym] = sign * EQUITY * rng.uniform(0.01, 0.03)
    cash = EQUITY - sum(held.values())
    return held, cash


def intents(md: MarketData, rng: np.random.Generator, n: int, held: dict[str, float]) -> list[tuple]:
    """Entries on random symbols not held, at random bars of the last 100 in random order (so no
    intent reuses what an earlier one at the same bar computed): (intent, instrument, k, i)."""
    out = []
    symbols = [s for s in md.traded if s not in held]
    for j, k in enumerate(rng.integers(BARS - 100, BARS, n).tolist()):
        sym = symbols[int(rng.integers(len(symbols)))]
        b = md.bars[sym]
        price = float(b.close[k])
        side = Side.BUY if rng.random() < 0.7 else Side.SELL
        i = int(b.tl[k])
        it = OrderIntent(
            f"b{j}", sym, IntentKind.ENTRY, side, int(b.ts[k]), i, "bench", price, price * 0.02, None, EXITS
        )
        out.append((it, b.instrument, k, i))
    return out


def us_per_call(fn: Callable[..., object], cases: list[tuple]) -> float:
    """One pass over every case, in microseconds per call."""
    t0 = time.perf_counter()
    for case in cases:
        fn(*case)
    return (time.perf_counter() - t0) / len(cases) * 1e6


def engine_run(md: MarketData, limits: RiskLimits = LIMITS) -> dict[str, float]:
    """The full engine (trend strategy, the same limits) over the same bars: its cost per bar (all
    of it: set-up, signals, the loop) and what ``RiskManager.check`` cost per entry inside it
    (first uses of a symbol's features included; the book there is whatever the run holds)."""
    strategy = make_strategy("trend", {"fast": 10, "slow": 40, "stop_atr": 2.0, "allow_short": True})
    insts = {s: b.instrument for s, b in md.bars.items()}
    t0 = time.perf_counter()
    engine = Engine(
        md,
        compute_signals(strategy, md),
        strategy_name="trend",
        limits=limits,
        venue=SimVenue(insts, BpsCommission(1.0), FixedBpsSlippage(1.0)),
        initial_cash=EQUITY,
    )
    check, spent = engine.risk.check, [0.0, 0]

    def timed(*args: object) -> object:
        t = time.perf_counter()
        out = check(*args)  # type: ignore[arg-type]
        spent[0] += time.perf_counter() - t
        spent[1] += 1
        return out

    engine.risk.check = timed  # type: ignore[method-assign]
    run_backtest(engine)
    seconds = time.perf_counter() - t0
    bars = sum(int((md.bars[s].tl[: md.bars[s].n] >= 0).sum()) for s in md.traded)
    return {
        "us_per_bar": seconds / bars * 1e6,
        "bars": bars,
        "entries": spent[1],
        "check_us": spent[0] / max(spent[1], 1) * 1e6,
    }


def cold(rm: RiskManager) -> Callable[..., object]:
    """``check`` with the per-window statistics of the held positions' returns dropped first: what
    the first entry decided on a bar pays (the next ones on that bar reuse them)."""

    def run(it: OrderIntent, inst: Instrument, k: int, i: int) -> object:
        rm._windows.clear()
        return rm.check(it, inst, k, i, 1.0)

    return run


def main(n: int, rounds: int = 7) -> dict[str, object]:
    rng = np.random.default_rng(17)
    md = market(instruments())
    rm = RiskManager(LIMITS, md, EQUITY)
    minimal = RiskManager(RiskLimits.minimal(max_open_positions=40), md, EQUITY)
    held, cash = held_book(md, rng)
    rm.set_book(held, cash)
    minimal.set_book(dict(held), cash)
    cases = intents(md, rng, n, held)
    for sym in md.traded:  # features are computed once per symbol, on first use: not per intent
        rm.features(sym).ensure(md.bars[sym].n - 1)
    verdicts = [rm.check(it, inst, k, i, 1.0) for it, inst, k, i in cases]
    contexts = [(LIMITS, rm.state, it, inst, rm.context(it, k, i, 1.0)) for it, inst, k, i in cases]

    # Interleaved rounds, best of each: a shared machine slows whole stretches down, not one call.
    timings: dict[str, list[float]] = {"check": [], "context": [], "evaluate": [], "cold": [], "minimal": []}
    for _ in range(rounds):
        timings["check"].append(us_per_call(lambda it, inst, k, i: rm.check(it, inst, k, i, 1.0), cases))
        timings["context"].append(us_per_call(lambda it, inst, k, i: rm.context(it, k, i, 1.0), cases))
        timings["evaluate"].append(us_per_call(evaluate, contexts))
        timings["cold"].append(us_per_call(cold(rm), cases))
        timings["minimal"].append(
            us_per_call(lambda it, inst, k, i: minimal.check(it, inst, k, i, 1.0), cases)
        )
    runs = [engine_run(md) for _ in range(3)]
    engine = min(runs, key=lambda r: r["us_per_bar"])
    runs_minimal = [engine_run(md, RiskLimits.minimal(max_open_positions=40)) for _ in range(3)]
    engine_minimal = min(runs_minimal, key=lambda r: r["us_per_bar"])
    check_us = min(timings["check"])
    return {
        "positions_held": len(rm.held),
        "symbols": len(md.traded),
        "intents": n,
        "verdicts": {s.value: sum(v.status is s for v in verdicts) for s in VerdictStatus},
        "check_us_per_intent": check_us,
        "context_us_per_intent": min(timings["context"]),
        "evaluate_us_per_intent": min(timings["evaluate"]),
        "check_us_median": float(np.median(timings["check"])),
        "check_cold_us_per_intent": min(timings["cold"]),
        "check_us_per_intent_minimal": min(timings["minimal"]),
        "engine_us_per_bar": engine["us_per_bar"],
        "engine_bars": engine["bars"],
        "engine_entries": engine["entries"],
        "engine_check_us_per_entry": min(r["check_us"] for r in runs),
        "engine_us_per_bar_minimal": engine_minimal["us_per_bar"],
        "engine_check_us_per_entry_minimal": min(r["check_us"] for r in runs_minimal),
        "check_to_engine_bar": check_us / engine["us_per_bar"],
        "target_us": TARGET_US,
        "target_met": check_us < TARGET_US,
        "peak_rss_mb": peak_rss_mb(),
        "process_s": process_seconds(),
    }


if __name__ == "__main__":
    f = main(int(sys.argv[1]) if len(sys.argv) > 1 else 2_000)
    print(
        f"risk gate with {f['positions_held']} positions held, {f['intents']:,} entries: "
        f"check {f['check_us_per_intent']:.1f} us per intent (context {f['context_us_per_intent']:.1f}, "
        f"evaluate alone {f['evaluate_us_per_intent']:.1f}); engine {f['engine_us_per_bar']:.1f} us per bar "
        f"(check inside it: {f['engine_check_us_per_entry']:.1f} us per entry over {f['engine_entries']} "
        "entries); "
        f"check / engine bar = {f['check_to_engine_bar']:.2f}; "
        f"target < {TARGET_US:g} us: {'met' if f['target_met'] else 'MISSED'}"
    )
    print(
        f"first entry on a bar (window statistics not yet computed): {f['check_cold_us_per_intent']:.1f} us; "
        f"minimal profile: check {f['check_us_per_intent_minimal']:.1f} us, inside the engine "
        f"{f['engine_check_us_per_entry_minimal']:.1f} us per entry"
    )
    print(write("risk_gate", f))
