"""Walk-forward LightGBM with monthly retraining over 30 symbols x 10 years of daily bars.

Prices are REAL: the 25 daily symbols of the embedded sample over the 10 years to 2024-12-06, plus
5 more series made of the decade before (2004-12 to 2014-12) of SPY, AAPL, JPM, XOM and KO, stamped by
bar number onto SPY's 2014-2024 session times (named ``SPY~04`` etc.). The ~45 FEATURES are computed
here from those bars (returns, volatility, moving averages, RSI, ranges, gaps, volume, 52-week
extremes, SPY context, calendar), not by ``hflite.features``: the benchmark measures the training
loop, not the feature code. Labels: the 5-bar forward log return.

Walk-forward: expanding window, 1-year minimum, monthly test windows, 5-bar purge and embargo, the
default LightGBM hyper-parameters. Target: under 2 minutes on a 2-core machine.

Figures: ``walkforward_s`` (the ``walk_forward`` call), ``windows``, ``rows``, ``features``,
``s_per_window``, plus the OOS metrics, feature build time, ``peak_rss_mb`` and ``process_s``.
Run with ``python bench/walkforward.py [kind]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import peak_rss_mb, process_seconds, write

from hflite.ai.walkforward import WalkForwardConfig, build_panel, walk_forward
from hflite.data.sample import ensure_sample, sample_catalog
from hflite.data.store import Store

TARGET_S = 120.0
END = pd.Timestamp("2024-12-06", tz="UTC")
START = END - pd.DateOffset(years=10)
WARMUP = pd.DateOffset(years=2)  # history before START for the 252-bar features
OLD = {"SPY": "SPY~04", "AAPL": "AAPL~04", "JPM": "JPM~04", "XOM": "XOM~04", "KO": "KO~04"}


def _rsi(close: pd.Series, n: int) -> pd.Series:
    d = close.diff()
    up = d.clip(lower=0).ewm(alpha=1 / n, adjust=False).mean()
    down = (-d.clip(upper=0)).ewm(alpha=1 / n, adjust=False).mean()
    return 100 - 100 / (1 + up / down.replace(0, np.nan))


def symbol_features(bars: pd.DataFrame) -> pd.DataFrame:
    """42 trailing features of one symbol's daily bars (each row uses bars up to itself only)."""
    c, o, h, lo, v = (bars[k] for k in ("close", "open", "high", "low", "volume"))
    lc = np.log(c)
    r1 = lc.diff()
    f: dict[str, pd.Series] = {}
    for n in (1, 2, 3, 5, 10, 21, 63, 126, 252):
        f[f"ret_{n}"] = lc.diff(n)
    for n in (5, 10, 21, 63, 126):
        f[f"vol_{n}"] = r1.rolling(n).std()
    f["vol_ratio"] = f["vol_5"] / f["vol_63"]
    sma = {n: c.rolling(n).mean() for n in (5, 10, 21, 50, 100, 200)}
    for n, s in sma.items():
        f[f"px_sma_{n}"] = np.log(c / s)
    f["sma_10_50"] = np.log(sma[10] / sma[50])
    f["sma_50_200"] = np.log(sma[50] / sma[200])
    f["rsi_14"], f["rsi_2"] = _rsi(c, 14), _rsi(c, 2)
    for n in (21, 63):
        f[f"z_{n}"] = (c - c.rolling(n).mean()) / c.rolling(n).std()
    rng = (h - lo) / c
    f["range_5"], f["range_21"] = rng.rolling(5).mean(), rng.rolling(21).mean()
    loc = (c - lo) / (h - lo).replace(0, np.nan)
    f["close_loc"], f["close_loc_5"] = loc, loc.rolling(5).mean()
    gap = np.log(o / c.shift(1))
    f["gap"], f["gap_5"] = gap, gap.rolling(5).mean()
    f["off_high_252"] = np.log(c / c.rolling(252, min_periods=21).max())
    f["off_low_252"] = np.log(c / c.rolling(252, min_periods=21).min())
    lv = np.log(v.where(v > 0))
    f["volume_z"] = (lv - lv.rolling(21).mean()) / lv.rolling(21).std()
    f["volume_5_63"] = lv.rolling(5).mean() - lv.rolling(63).mean()
    f["skew_63"], f["kurt_63"] = r1.rolling(63).skew(), r1.rolling(63).kurt()
    f["autocorr_63"] = r1.rolling(63).corr(r1.shift(1))
    f["drawdown_63"] = np.log(c / c.rolling(63).max())
    f["dow"] = pd.Series(bars.index.day_of_week, index=bars.index, dtype=np.float64)
    f["month"] = pd.Series(bars.index.month, index=bars.index, dtype=np.float64)
    return pd.DataFrame(f).astype(np.float64)


def load_bars(store: Store) -> dict[str, pd.DataFrame]:
    """The 30 bar series (see the module docstring), indexed by ts."""
    daily = sorted({f.symbol for f in sample_catalog() if f.kind == "bars" and f.freq == "1d"})
    out = {}
    for sym in daily:
        out[sym] = store.read_bars(sym, "1d", START - WARMUP, END).set_index("ts")
    spy_ts = out["SPY"].index
    for sym, name in OLD.items():
        old = store.read_bars(sym, "1d", START - WARMUP - pd.DateOffset(years=10), START).set_index("ts")
        n = min(len(old), len(spy_ts))
        out[name] = old.iloc[-n:].set_axis(spy_ts[:n])  # the older decade on SPY's recent sessions
    return out


def build(bars: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], dict[str, pd.Series]]:
    spy = symbol_features(bars["SPY"])[["ret_5", "ret_21", "vol_21"]].add_prefix("spy_")
    features, closes = {}, {}
    for sym, b in bars.items():
        f = symbol_features(b)
        f = pd.merge_asof(f, spy, left_index=True, right_index=True, direction="backward")
        keep = f.index >= START
        features[sym] = f[keep]
        closes[sym] = b["close"][keep]
    return features, closes


def main(kind: str = "lightgbm") -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(os.environ.get("HFLITE_BENCH_STORE", tmp)))
        ensure_sample(store)
        bars = load_bars(store)
    t0 = time.perf_counter()
    features, closes = build(bars)
    panel = build_panel(features, closes, horizon=5)
    build_s = time.perf_counter() - t0
    config = WalkForwardConfig(scheme="expanding", retrain="monthly", train_years=1, horizon=5)
    t1, cpu = time.perf_counter(), time.process_time()
    result = walk_forward(panel, kind, None, config, seed=0)
    seconds, cpu = time.perf_counter() - t1, time.process_time() - cpu
    s = result.summary
    n_windows = len(result.windows)
    return {
        "kind": kind,
        "symbols": len(features),
        "rows": len(panel),
        "features": len(panel.features),
        "windows": n_windows,
        "walkforward_s": seconds,
        "s_per_window": seconds / n_windows,
        "walkforward_cpu_s": cpu,
        "threads": os.cpu_count(),
        "mean_train_rows": float(result.windows["n_train"].mean()),
        "predictions": len(result.predictions),
        "features_s": build_s,
        "oos_hit_rate": s["hit_rate"],
        "oos_auc": s["auc"],
        "oos_ic": s["ic"],
        "oos_ic_mean": s["ic_mean"],
        "oos_long_short": s["long_short"],
        "params": result.params,
        "target_s": TARGET_S,
        "target_met": seconds < TARGET_S,
        "load_avg_1m": os.getloadavg()[0],
        "peak_rss_mb": peak_rss_mb(),
        "process_s": process_seconds(),
    }


if __name__ == "__main__":
    f = main(sys.argv[1] if len(sys.argv) > 1 else "lightgbm")
    print(
        f"walk-forward {f['kind']}: {f['windows']} monthly windows over {f['rows']:,} rows x "
        f"{f['features']} features ({f['symbols']} symbols): {f['walkforward_s']:.1f} s "
        f"({f['s_per_window']:.2f} s per window, {f['walkforward_cpu_s']:.0f} CPU-s on "
        f"{f['threads']} threads, mean {f['mean_train_rows']:,.0f} training rows); "
        f"OOS hit rate {f['oos_hit_rate']:.3f}, AUC {f['oos_auc']:.3f}, IC {f['oos_ic']:.3f}; "
        f"target < {TARGET_S:g} s: {'met' if f['target_met'] else 'MISSED'} "
        f"(load average {f['load_avg_1m']:.1f})"
    )
    print(write(f"walkforward_{f['kind']}" if f["kind"] != "lightgbm" else "walkforward", f))
