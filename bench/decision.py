"""Decision latency per bar for 30 symbols, without an LLM: what a live run does when a new bar-time
arrives, built from the product's own functions.

30 symbols: the 25 daily symbols of the sample plus 5 renamed copies of real ones (as in
``bench/features.py``). Before timing, a LightGBM model is trained on 2015-2022 features of all 30.
Each timed step is one bar-time of 2023-2024:

- ``features``: ``compute_features`` on the trailing 300 bars of every symbol (plus macro and
  headlines), of which the last row is used -- the live path recomputes the window, not history;
- ``decide``: the model's calibrated prediction for the 30 rows, the three views per asset group,
  the ensemble and the hysteresis step.

Also ``amortised_ms_per_bar``: the backtest path (features, predictions, regimes, views and
ensemble over the whole history in vectorised blocks) divided by the bar-times.

Figures: ``decision_ms_per_bar`` (= features + decide, median over the steps), ``features_ms``,
``decide_ms``, ``steps``, ``symbols``. A backtest pays far less per bar: it computes features and
views for the whole history in vectorised blocks. Target: ``decision_ms_per_bar`` < 10.
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np
import pandas as pd
from _common import peak_rss_mb, process_seconds, write
from features import COPIES, load

from hflite.ai.ensemble import EnsembleConfig, combine
from hflite.ai.models import make_model
from hflite.ai.regime import REGIMES
from hflite.ai.views import REGIME_SIGNAL, VIEWS, asset_group, view_frame
from hflite.ai.walkforward import build_panel
from hflite.data.sample import ensure_sample
from hflite.data.store import Store
from hflite.domain.instrument import instrument_for
from hflite.features import FeatureConfig, FeatureInputs, compute_features

TARGET_MS = 10.0
WINDOW = 300


def _trailing(inputs: FeatureInputs, t: pd.Timestamp) -> FeatureInputs:
    bars = {}
    for sym, df in inputs.bars.items():
        known = df[df["ts"] <= t]
        bars[sym] = known.iloc[-WINDOW:].reset_index(drop=True)
    news = inputs.news
    if news is not None:
        news = news[(news["ts"] <= t) & (news["ts"] > t - pd.Timedelta(days=90))]
    return FeatureInputs(inputs.symbols, bars, inputs.bars_per_year, inputs.macro, news, inputs.notes)


def _amortised(
    inputs: FeatureInputs, cfg: FeatureConfig, model: object, panel: object, closes: dict
) -> float:
    """The backtest path: features, predictions, regimes, views and ensemble for every bar of the
    whole history in vectorised blocks, divided by the number of bar-times."""
    from hflite.ai.brain import AIConfig, ModelConfig, think

    ai = AIConfig(model=ModelConfig(enabled=False))
    instruments = {s: instrument_for(COPIES.get(s, (s, 0))[0]) for s in inputs.symbols}
    t0 = time.perf_counter()
    frames = compute_features(inputs, cfg)
    pred = model.predict(panel.X)  # type: ignore[attr-defined]
    brain = think(frames, closes, instruments, ai, index_close=closes["SPY"])
    elapsed = time.perf_counter() - t0
    assert len(pred.prob_up) == len(panel.X)  # type: ignore[attr-defined]
    bar_times = len(set().union(*(f.index for f in brain.decisions.values())))
    return elapsed / bar_times * 1000


def main(steps: int = 60) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"{tmp}/store")
        ensure_sample(store)
        inputs, _ = load(store)
    cfg = FeatureConfig(warmup_days=0)
    frames = compute_features(inputs, cfg)
    symbols = list(inputs.symbols)
    closes = {s: inputs.bars[s].set_index("ts")["close"] for s in symbols}
    panel = build_panel(frames, closes, 5)
    train = panel.X.index.get_level_values(0) < pd.Timestamp("2023-01-01", tz="UTC")
    model = make_model("lightgbm", None, 0)
    y_ret = panel.fwd_return[train].to_numpy()
    ok = ~np.isnan(y_ret)
    model.fit(panel.X[train][ok], y_ret[ok] > 0, y_ret[ok])
    groups = {s: asset_group(instrument_for(COPIES.get(s, (s, 0))[0])) for s in symbols}
    weights = EnsembleConfig().fixed_vector()
    times = sorted(set(closes["SPY"].index[closes["SPY"].index >= pd.Timestamp("2023-01-03", tz="UTC")]))
    times = times[:: max(len(times) // steps, 1)][:steps]
    feat_ms, decide_ms = [], []
    state = dict.fromkeys(symbols, 0.0)
    for t in times:
        t0 = time.perf_counter()
        live = compute_features(_trailing(inputs, t), cfg)
        rows = pd.DataFrame({s: f.iloc[-1] for s, f in live.items() if len(f)}).T
        t1 = time.perf_counter()
        pred = model.predict(rows[panel.X.columns])
        rows["prob_up"], rows["exp_return"] = pred.prob_up, pred.exp_return
        rows["regime_signal"] = REGIME_SIGNAL[REGIMES[0]]
        scores = np.full((len(rows), 3), np.nan)
        confs = np.zeros((len(rows), 3))
        for group in set(groups.values()):
            mask = np.array([groups[s] == group for s in rows.index])
            part = rows[mask]
            part.index = pd.DatetimeIndex([t] * len(part))
            for j, v in enumerate(VIEWS):
                vf = view_frame(v, part, group)
                scores[mask, j], confs[mask, j] = vf.score, vf.confidence
        score, conf = combine(scores, confs, weights)
        for s, sc, c in zip(rows.index, score, conf, strict=True):
            if sc >= 0.25 and c >= 0.2:
                state[s] = 1.0
            elif state[s] > 0 and sc <= 0:
                state[s] = 0.0
        t2 = time.perf_counter()
        feat_ms.append((t1 - t0) * 1000)
        decide_ms.append((t2 - t1) * 1000)
    total = np.array(feat_ms) + np.array(decide_ms)
    amortised = _amortised(inputs, cfg, model, panel, closes)
    figures = {
        "amortised_ms_per_bar": amortised,
        "decision_ms_per_bar": float(np.median(total)),
        "decision_ms_p90": float(np.percentile(total, 90)),
        "features_ms": float(np.median(feat_ms)),
        "decide_ms": float(np.median(decide_ms)),
        "steps": float(len(times)),
        "symbols": float(len(symbols)),
        "target_ms": TARGET_MS,
        "peak_rss_mb": peak_rss_mb(),
        "process_s": process_seconds(),
    }
    write("decision", figures)
    for k, v in figures.items():
        print(f"{k:>22}: {v:,.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
