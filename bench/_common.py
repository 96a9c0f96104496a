"""Shared helpers for the benchmarks: synthetic bars, the numpy reference, timing and results."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def process_seconds() -> float:
    """Wall time since this process started (interpreter start-up and imports included).

    From /proc: uptime now minus the process's start tick (10 ms resolution). psutil's
    create_time() adds the boot time, which the kernel reports in whole seconds: up to 1 s off.
    """
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):  # not Linux: fall back to psutil
        import psutil

        return time.time() - psutil.Process(os.getpid()).create_time()


def baseline_s(rounds: int = 5) -> float:
    """Seconds of a fixed workload like the engine's (a plain-Python loop over floats, a dict and an
    object's attributes, then numpy on small arrays), best of ``rounds``: the yardstick ``make bench``
    measures before and after each benchmark, so a figure can be read against the machine's speed at
    that moment (a shared machine varies by ±30%; figures in baselines vary much less)."""

    class Book:
        __slots__ = ("cash", "qty")

        def __init__(self) -> None:
            self.cash, self.qty = 1e6, 0.0

    prices = np.linspace(90.0, 110.0, 256)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        book, seen = Book(), {}
        for i in range(120_000):
            p = float(prices[i & 255])
            if i % 7 == 0:
                q = book.cash * 0.01 / p
                book.qty += q
                book.cash -= q * p * 1.0001
            seen[i & 1023] = p
        for _ in range(300):
            x = np.cumsum(prices) / np.arange(1, 257)
            x.sort()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def synthetic_minutes(n: int, seed: int = 42) -> dict[str, np.ndarray]:
    """A random walk of 1-minute bars (benchmarks only; never the demo)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.0007, n)))
    open_ = np.empty(n)
    open_[0], open_[1:] = close[0], close[:-1]
    wiggle = rng.uniform(0, 0.0004, (2, n))
    return {
        "open": open_,
        "high": np.maximum(open_, close) * (1 + wiggle[0]),
        "low": np.minimum(open_, close) * (1 - wiggle[1]),
        "close": close,
        "volume": np.full(n, 1e6),
    }


def sma(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    c = np.cumsum(np.insert(x, 0, 0.0))
    out[n - 1 :] = (c[n:] - c[:-n]) / n
    return out


def numpy_reference(bars: dict[str, np.ndarray], fast: int, slow: int, cost_bps: float) -> float:
    """The same SMA-cross signals, long/flat, filled at the next open, in pure vectorised numpy.

    Returns final equity per unit of capital (no sizing, no risk gate, no orders: a speed floor).
    """
    diff = sma(bars["close"], fast) - sma(bars["close"], slow)
    side = np.sign(diff)
    side[side == 0] = np.nan
    idx = np.where(~np.isnan(side), np.arange(len(side)), 0)
    np.maximum.accumulate(idx, out=idx)
    state = np.where(side[idx] > 0, 1.0, 0.0)
    pos = np.zeros(len(state))
    pos[2:] = state[:-2]  # decided at close t, held from the open of t+1
    o = bars["open"]
    ret = np.zeros(len(o))
    ret[1:] = o[1:] / o[:-1] - 1
    trades = np.abs(np.diff(pos, prepend=0.0))
    return float(np.prod(1 + pos * ret - trades * cost_bps / 1e4))


def write(name: str, figures: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    figures = {"name": name, "python": sys.version.split()[0], **figures}
    path.write_text(json.dumps(figures, indent=2, default=float) + "\n")
    return path
