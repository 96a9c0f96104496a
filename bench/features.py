"""Point-in-time features for 30 symbols x 10 years of daily bars, against a naive pandas version.

30 symbols: the 25 daily symbols of the sample plus 5 copies of real ones under new names, each
starting later (AAPL2, MSFT2, SPY2, BTC2, EUR2), over 2014-12-08 .. 2024-12-06 with two years of
warm-up bars before (ETH-USD has data from 2017-11 only). Headlines are scored once with VADER
before timing (the feature cache keeps scores per news partition, so builds reuse them).

Figures: ``features_s`` (best of 3 ``compute_features`` calls, every symbol and group), ``prepare_s``
(``prepare_inputs``: availability and release times), ``rows``, ``columns``, ``naive_pandas_s`` (the
same features with pandas rolling/ewm/merge_asof per symbol, written below) and ``ratio_to_naive``
(naive / ours). The two outputs are checked to agree (Wilder and EMA indicators after the first 400
bars of each symbol, where their different seeds have faded). Target: ``features_s`` < 5.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time

import numpy as np
import pandas as pd
from _common import peak_rss_mb, process_seconds, write

from hflite.ai.feature_cache import VaderScorer
from hflite.data.sample import ensure_sample, sample_symbols
from hflite.data.store import Store
from hflite.domain.instrument import instrument_for
from hflite.features import (
    FEATURES,
    MACRO_SERIES,
    FeatureConfig,
    FeatureInputs,
    compute_features,
    prepare_inputs,
)

TARGET_S = 5.0
START, END = pd.Timestamp("2014-12-08", tz="UTC"), pd.Timestamp("2024-12-06", tz="UTC")
READ_START = START - pd.Timedelta(days=730)
#: new name -> (real symbol, days its history starts after the real one's)
COPIES = {"AAPL2": ("AAPL", 90), "MSFT2": ("MSFT", 180), "SPY2": ("SPY", 270), "BTC2": ("BTC-USD", 45),
          "EUR2": ("EURUSD", 365)}  # fmt: skip
SEEDED = ("rsi_14", "atr_pct", "adx_14", "macd_hist_pct")  # TA-Lib seeds these with an SMA
WARM = 400


def load(store: Store) -> tuple[FeatureInputs, float]:
    symbols = sample_symbols("1d")
    bars = {s: store.read_bars(s, "1d", READ_START, END) for s in symbols}
    instruments = {}
    for new, (real, days) in COPIES.items():
        frame = bars[real]
        bars[new] = frame[frame["ts"] >= frame["ts"].iloc[0] + pd.Timedelta(days=days)].reset_index(drop=True)
        instruments[new] = dataclasses.replace(instrument_for(real), symbol=new)
    macro = {sid: store.read_series(sid, READ_START, END + pd.Timedelta(days=3)) for sid in MACRO_SERIES}
    news = store.read_news(start=READ_START, end=END + pd.Timedelta(days=3))
    news["score"] = VaderScorer()(news["headline"].tolist())
    t0 = time.perf_counter()
    inputs = prepare_inputs(bars, macro, news, [*symbols, *COPIES], instruments=instruments)
    return inputs, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------
# the naive version: pandas per symbol


def _asof(t: pd.Series, right: pd.DataFrame, days: float) -> pd.DataFrame:
    """merge_asof of ``right`` (a ``known`` column + values) onto times t, dropping too old rows."""
    left = pd.DataFrame({"t": t.to_numpy()})
    merged = pd.merge_asof(left, right.sort_values("known", kind="mergesort"), left_on="t", right_on="known")
    stale = (merged["t"] - merged["known"]) > pd.Timedelta(days=days)
    return merged.drop(columns=["t", "known"]).mask(stale)


def _naive_technical(b: pd.DataFrame, per_year: float) -> pd.DataFrame:
    c, h, lo = b["close"], b["high"], b["low"]
    out = pd.DataFrame(index=b.index)
    r = np.log(c).diff()
    for n in (1, 5, 21, 63, 252):
        out[f"ret_{n}"] = np.log(c).diff(n)
    for n in (21, 63):
        out[f"vol_{n}"] = r.rolling(n).std() * np.sqrt(per_year)
    tr = pd.concat([h - lo, (h - c.shift()).abs(), (lo - c.shift()).abs()], axis=1).max(axis=1, skipna=False)
    wilder = {"alpha": 1 / 14, "adjust": False}
    out["atr_pct"] = tr.ewm(**wilder).mean() / c
    d = c.diff()
    gain, loss = d.clip(lower=0).ewm(**wilder).mean(), (-d).clip(lower=0).ewm(**wilder).mean()
    out["rsi_14"] = 100 * gain / (gain + loss)
    macd = c.ewm(span=12, adjust=False).mean() - c.ewm(span=26, adjust=False).mean()
    out["macd_hist_pct"] = (macd - macd.ewm(span=9, adjust=False).mean()) / c
    mid, sd = c.rolling(20).mean(), c.rolling(20).std(ddof=0)
    out["bb_pos"] = ((c - mid) / (2 * sd)).where(sd > 0)
    up, dn = h.diff(), -lo.diff()
    plus = up.where((up > dn) & (up > 0), 0.0).ewm(**wilder).mean()
    minus = dn.where((dn > up) & (dn > 0), 0.0).ewm(**wilder).mean()
    out["adx_14"] = (100 * (plus - minus).abs() / (plus + minus)).ewm(**wilder).mean()
    lv = np.log(b["volume"].where(b["volume"] > 0))
    prev = lv.shift().rolling(20)
    out["volume_z"] = (lv - prev.mean()) / prev.std()
    out["dist_high_252"] = c / h.rolling(252).max() - 1
    out["dist_low_252"] = c / lo.rolling(252).min() - 1
    out["trend_50_200"] = c.rolling(50).mean() / c.rolling(200).mean() - 1
    return out


def _naive_macro(macro: dict[str, pd.DataFrame]) -> list[pd.DataFrame]:
    v = {sid: f["value"] for sid, f in macro.items()}
    vix, avg = v["VIXCLS"], v["ICSA"].rolling(4).mean()
    oil = v["DCOILWTICO"]
    derived = {
        "CPIAUCSL": {"cpi_yoy": v["CPIAUCSL"].pct_change(12, fill_method=None) * 100},
        "CPILFESL": {"core_cpi_yoy": v["CPILFESL"].pct_change(12, fill_method=None) * 100},
        "UNRATE": {"unrate": v["UNRATE"], "unrate_chg_3m": v["UNRATE"].diff(3)},
        "FEDFUNDS": {"fedfunds": v["FEDFUNDS"], "fedfunds_chg_6m": v["FEDFUNDS"].diff(6)},
        "DGS10": {"dgs10": v["DGS10"]},
        "T10YIE": {"t10yie": v["T10YIE"]},
        "ICSA": {"claims_z": (avg - avg.shift().rolling(52).mean()) / avg.shift().rolling(52).std()},
        "INDPRO": {"indpro_yoy": v["INDPRO"].pct_change(12, fill_method=None) * 100},
        "DTWEXBGS": {"usd_ret_63": np.log(v["DTWEXBGS"]).diff(63)},
        "DCOILWTICO": {"oil_ret_63": (oil.diff(63) / oil.shift(63).abs()).clip(-1, 3)},
        "T10Y2Y": {"curve_slope": v["T10Y2Y"]},
        "VIXCLS": {
            "vix": vix,
            "vix_z": (vix - vix.shift().rolling(252).mean()) / vix.shift().rolling(252).std(),
            "vix_chg_5": vix.diff(5),
        },
    }
    derived["CPIAUCSL"]["cpi_trend"] = derived["CPIAUCSL"]["cpi_yoy"].diff(3)
    return [pd.DataFrame({"known": macro[sid]["known"].cummax(), **cols}) for sid, cols in derived.items()]


def _naive_news(t: pd.Series, news: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Time-based rolling windows over headlines and bar times together (headlines first on ties)."""
    rows = pd.concat(
        [
            pd.DataFrame({"t": news["ts"].to_numpy(), "x": news["score"].to_numpy(), "bar": False}),
            pd.DataFrame({"t": t.to_numpy(), "x": np.nan, "bar": True}),
        ],
        ignore_index=True,
    ).sort_values(["t", "bar"], kind="mergesort")
    series = pd.Series(rows["x"].to_numpy(float), index=pd.DatetimeIndex(rows["t"]).as_unit("ns"))
    short, long = series.rolling("5D"), series.rolling("60D")
    bar = rows["bar"].to_numpy()
    mean, long_mean = short.mean().to_numpy()[bar], long.mean().to_numpy()[bar]
    return pd.DataFrame(
        {
            f"{prefix}_mean": mean,
            f"{prefix}_std": short.std(ddof=0).to_numpy()[bar],
            f"{prefix}_count": short.count().to_numpy()[bar],
            f"{prefix}_surprise": mean - long_mean,
        }
    )


def naive_features(inputs: FeatureInputs, config: FeatureConfig) -> dict[str, pd.DataFrame]:
    spy = inputs.bars["SPY"]
    spy_cols = pd.DataFrame(
        {
            "known": spy["ts"],
            "spy_trend": spy["close"] / spy["close"].rolling(200).mean() - 1,
            "spy_ret_21": np.log(spy["close"]).diff(21),
        }
    )
    above = []
    for sym in config.breadth_symbols:
        b = inputs.bars[sym]
        sma = b["close"].rolling(200).mean()
        above.append(
            pd.DataFrame({"known": b["ts"], sym: (b["close"] > sma).astype(float).where(sma.notna())})
        )
    macro = _naive_macro(dict(inputs.macro))
    news = inputs.news
    assert news is not None
    market = news[news["tickers"] == ""]
    out = {}
    for sym in inputs.symbols:
        b = inputs.bars[sym]
        t = b["ts"]
        parts = [_naive_technical(b, inputs.bars_per_year[sym]), _asof(t, spy_cols, 10)]
        parts.append(
            pd.DataFrame({"breadth": pd.concat([_asof(t, a, 10) for a in above], axis=1).mean(axis=1)})
        )
        parts += [_asof(t, m, 100) for m in macro]
        tagged = news[news["tickers"].str.split(",").apply(lambda tags, s=sym: s in tags)]
        parts += [_naive_news(t, market, "news_mkt"), _naive_news(t, tagged, "news_sym")]
        frame = pd.concat([p.reset_index(drop=True) for p in parts], axis=1)
        frame["real_rate"] = frame["dgs10"] - frame["t10yie"]
        out[sym] = frame[list(FEATURES)].set_index(pd.DatetimeIndex(t, name="ts"))
    return out


def check_agreement(ours: dict[str, pd.DataFrame], naive: dict[str, pd.DataFrame]) -> float:
    """Largest absolute difference (after the seeds' warm-up for the Wilder and EMA indicators)."""
    worst = 0.0
    for sym, frame in ours.items():
        other = naive[sym]
        assert frame.index.equals(other.index), sym
        for col in FEATURES:
            a, b = frame[col].to_numpy(), other[col].to_numpy()
            if col in SEEDED:
                a, b = a[WARM:], b[WARM:]
            # pandas' rolling std carries ~1e-8 of running-sum noise where the true std is 0
            atol = 1e-7 if col.endswith("_std") else 1e-9
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=atol, equal_nan=True, err_msg=f"{sym} {col}")
            both = ~np.isnan(a) & ~np.isnan(b)
            if both.any():
                worst = max(worst, float(np.abs(a[both] - b[both]).max()))
    return worst


def main() -> dict[str, object]:
    store = Store(tempfile.mkdtemp(prefix="hflite-bench-"))
    ensure_sample(store)
    inputs, prepare_s = load(store)
    config = FeatureConfig()
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        frames = compute_features(inputs, config)
        runs.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    naive = naive_features(inputs, config)
    naive_s = time.perf_counter() - t0
    worst = check_agreement(frames, naive)
    in_window = sum(int((f.index >= START).sum()) for f in frames.values())
    features_s = min(runs)
    return {
        "symbols": len(frames),
        "rows": sum(len(f) for f in frames.values()),
        "rows_in_window": in_window,
        "columns": len(FEATURES),
        "features_s": features_s,
        "prepare_s": prepare_s,
        "naive_pandas_s": naive_s,
        "ratio_to_naive": naive_s / features_s,
        "max_abs_diff_to_naive": worst,
        "target_s": TARGET_S,
        "target_met": features_s < TARGET_S,
        "peak_rss_mb": peak_rss_mb(),
        "process_s": process_seconds(),
    }


if __name__ == "__main__":
    f = main()
    print(
        f"features: {f['symbols']} symbols, {f['rows']:,} rows x {f['columns']} columns in "
        f"{f['features_s']:.3f} s (prepare {f['prepare_s']:.3f} s); naive pandas {f['naive_pandas_s']:.2f} s "
        f"= {f['ratio_to_naive']:.1f}x; outputs agree (max abs diff {f['max_abs_diff_to_naive']:.2e}); "
        f"target < {TARGET_S:g} s: {'met' if f['target_met'] else 'MISSED'}"
    )
    print(write("features", f))
