"""What the report says about the AI: out-of-sample model metrics inside the run's window, the
ensemble against technical-only and buy-and-hold on the same windows, and results per regime.

Honesty rules: model metrics use out-of-sample predictions only (each from the walk-forward model
of its window) whose labels are known by the run's end; the ablation runs the same engine, risk gate
and costs with only the score swapped; the verdict sentence says plainly when the AI did not help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hflite.ai.brain import BrainResult
from hflite.ai.regime import label_at

VARIANTS = ("ensemble", "technical", "buy_hold")
VARIANT_NAMES = {
    "ensemble": "AI ensemble",
    "technical": "technical only",
    "buy_hold": "buy and hold (equal weight)",
}


@dataclass
class AIResult:
    """The AI part of a run's result (``RunResult.ai``)."""

    summary: dict[str, Any]
    decisions: pd.DataFrame
    windows: pd.DataFrame
    calibration: pd.DataFrame
    importance: pd.DataFrame
    oos: dict[str, float]
    weights: pd.DataFrame | None
    equity: dict[str, pd.Series]
    ablation: pd.DataFrame
    ablation_summary: pd.DataFrame
    by_regime: pd.DataFrame
    verdict: str
    warnings: list[str] = field(default_factory=list)


def _utc(ts: Any) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")


def labelled_predictions(
    brain: BrainResult, closes: dict[str, pd.Series], horizon: int, start: Any, end: Any
) -> pd.DataFrame:
    """OOS predictions with ts in [start, end] and their realised forward return (label known by
    ``end``): columns ts, symbol, prob_up, exp_return, model_id, fwd_return, regime."""
    if brain.wf is None or brain.wf.predictions.empty:
        return pd.DataFrame(columns=["ts", "symbol", "prob_up", "exp_return", "model_id", "fwd_return"])
    p = brain.wf.predictions.copy()
    p["ts"] = pd.to_datetime(p["ts"], utc=True)
    s, e = _utc(start), _utc(end) + pd.Timedelta(days=1)
    p = p[(p["ts"] >= s) & (p["ts"] < e)]
    parts = []
    for sym, grp in p.groupby("symbol", sort=False):
        c = closes[str(sym)]
        idx = c.index.get_indexer(grp["ts"])
        values = c.to_numpy(dtype=float)
        fwd = np.full(len(grp), np.nan)
        label_end = np.full(len(grp), np.iinfo(np.int64).max)
        ok = (idx >= 0) & (idx + horizon < len(values))
        known_by_end = np.zeros(len(grp), bool)
        known_by_end[ok] = c.index[idx[ok] + horizon] < e
        ok &= known_by_end
        fwd[ok] = np.log(values[idx[ok] + horizon] / values[idx[ok]])
        label_end[ok] = c.index[idx[ok] + horizon].as_unit("ns").asi8
        g = grp.copy()
        g["fwd_return"] = fwd
        g["label_end_ns"] = label_end
        parts.append(g)
    out = pd.concat(parts, ignore_index=True) if parts else p.assign(fwd_return=np.nan)
    out["regime"] = label_at(brain.regimes, out["ts"].dt.as_unit("ns").astype("int64").to_numpy())
    return out


def oos_metrics(pred: pd.DataFrame) -> dict[str, float]:
    """The walk-forward's own metrics (hit rate, AUC, Brier, log loss, IC) over the run's predictions
    with a known label, plus ``rows`` and ``base_rate`` (the share of up moves), and (when the
    predictions carry their label ends) the 95% session-block bootstrap intervals of AUC and IC
    (``hflite.ai.walkforward.oos_intervals``). Scored against the direction of the forward return,
    whatever target the model was trained on."""
    from hflite.ai.walkforward import oos_intervals, session_dates
    from hflite.ai.walkforward import oos_metrics as scores

    known = pred.dropna(subset=["prob_up"])
    fwd = known["fwd_return"].to_numpy(dtype=float)
    prob, exp = known["prob_up"].to_numpy(dtype=float), known["exp_return"].to_numpy(dtype=float)
    out = scores(prob, exp, fwd)
    labelled = fwd[np.isfinite(fwd)]
    metrics = {
        "rows": out.pop("n_scored"),
        "base_rate": float((labelled > 0).mean()) if len(labelled) else float("nan"),
        **out,
    }
    if "label_end_ns" in known and len(known):
        ts = pd.DatetimeIndex(known["ts"])
        metrics.update(
            oos_intervals(
                prob, exp, fwd, session_dates(ts), ts.as_unit("ns").asi8, known["label_end_ns"].to_numpy()
            )
        )
    return metrics


def calibration_table(pred: pd.DataFrame) -> pd.DataFrame:
    """Predicted probability vs realised up-rate per probability bin (the walk-forward's quantile bins,
    labelled by their lowest and highest prediction): columns bin, predicted, realised, count."""
    from hflite.ai.walkforward import calibration_table as bins

    known = pred.dropna(subset=["prob_up"])
    table = bins(known["prob_up"].to_numpy(dtype=float), known["fwd_return"].to_numpy(dtype=float))
    table = table[table["n"] > 0]
    return pd.DataFrame(
        {
            "bin": [f"{lo:.3f}-{hi:.3f}" for lo, hi in zip(table["bin_lo"], table["bin_hi"], strict=True)],
            "predicted": table["mean_prob"].to_numpy(),
            "realised": table["up_rate"].to_numpy(),
            "count": table["n"].to_numpy(),
        }
    )


def period_returns(equity: dict[str, pd.Series], freq: str) -> pd.DataFrame:
    """Return (%) of each variant's equity in each calendar period (``freq``: 'M', 'Q' or 'Y')."""
    cols = {}
    for name, eq in equity.items():
        e = eq.dropna()
        if e.empty:
            continue
        idx = e.index.tz_convert("UTC").tz_localize(None).to_period(freq)
        last = e.groupby(idx).last()
        first = pd.concat([pd.Series([e.iloc[0]], index=[last.index[0]]), last.iloc[:-1]])
        first.index = last.index
        cols[name] = (last / first.to_numpy() - 1) * 100
    return pd.DataFrame(cols)


def ablation_summary(
    equity: dict[str, pd.Series], periods: pd.DataFrame, risk_free: pd.Series | None = None
) -> pd.DataFrame:
    """Per variant, with the report's own metrics (``analytics.metrics.compute_metrics``, the same
    risk-free rate): total return, CAGR, volatility, Sharpe, max drawdown (all %), and the share of
    periods in which the ensemble did better than that variant."""
    from hflite.analytics.metrics import compute_metrics

    rows = []
    for name, eq in equity.items():
        m = compute_metrics(eq, None, risk_free=risk_free)
        won = float("nan")
        if name != "ensemble" and "ensemble" in periods and name in periods:
            both = periods[["ensemble", name]].dropna()
            won = float((both["ensemble"] > both[name]).mean() * 100) if len(both) else float("nan")
        rows.append(
            {
                "variant": VARIANT_NAMES.get(name, name),
                "total_return_pct": m["total_return"] * 100,
                "cagr_pct": m["cagr"] * 100,
                "volatility_pct": m["volatility"] * 100,
                "sharpe": m["sharpe"],
                "max_drawdown_pct": abs(m["max_drawdown"]) * 100,
                "ensemble_won_pct": won,
            }
        )
    return pd.DataFrame(rows)


def by_regime(equity: pd.Series, regimes: pd.Series, pred: pd.DataFrame) -> pd.DataFrame:
    """Per regime (as known at each bar): days, the strategy's mean daily return, volatility, share
    of up days, and the model's OOS hit rate in that regime."""
    e = equity.dropna().resample("1D").last().dropna()
    ret = e.pct_change().dropna()
    lab = label_at(regimes, ret.index.as_unit("ns").asi8)
    df = pd.DataFrame({"ret": ret.to_numpy(), "regime": lab})
    df["regime"] = df["regime"].replace("", "unknown")
    rows = []
    known = pred.dropna(subset=["fwd_return", "prob_up"]) if not pred.empty else pred
    for reg, g in df.groupby("regime", sort=False):
        hit = float("nan")
        if not known.empty:
            kp = known[known["regime"].replace("", "unknown") == reg]
            if len(kp):
                hit = float(((kp["prob_up"] > 0.5) == (kp["fwd_return"] > 0)).mean() * 100)
        rows.append(
            {
                "regime": reg,
                "days": len(g),
                "return_pct": float(((1 + g["ret"]).prod() - 1) * 100),
                "ann_return_pct": float(g["ret"].mean() * 365 * 100),
                "ann_vol_pct": float(g["ret"].std() * np.sqrt(365) * 100) if len(g) > 1 else float("nan"),
                "up_days_pct": float((g["ret"] > 0).mean() * 100),
                "model_hit_rate_pct": hit,
            }
        )
    order = {"bull": 0, "sideways": 1, "bear": 2, "crisis": 3}
    out = pd.DataFrame(rows)
    return out.sort_values("regime", key=lambda s: s.map(lambda r: order.get(r, 9))) if len(out) else out


def verdict(summary: pd.DataFrame, oos: dict[str, float]) -> str:
    """One honest sentence (or three) on whether the AI helped."""
    rows = summary.set_index("variant")
    ens = rows.loc[VARIANT_NAMES["ensemble"]] if VARIANT_NAMES["ensemble"] in rows.index else None
    if ens is None:
        return "No ablation was run."
    parts = []
    for key in ("technical", "buy_hold"):
        name = VARIANT_NAMES[key]
        if name not in rows.index:
            continue
        other = rows.loc[name]
        better_sharpe = ens["sharpe"] > other["sharpe"]
        better_ret = ens["total_return_pct"] > other["total_return_pct"]
        if better_sharpe and better_ret:
            how = "beat"
        elif better_sharpe or better_ret:
            how = "was mixed against"
        else:
            how = "did NOT beat"
        parts.append(
            f"The AI ensemble {how} {name}: {ens['total_return_pct']:.1f}% vs "
            f"{other['total_return_pct']:.1f}% "
            f"total return, Sharpe {ens['sharpe']:.2f} vs {other['sharpe']:.2f}, ahead in "
            f"{other['ensemble_won_pct']:.0f}% of periods."
        )
    hit = oos.get("hit_rate")
    if hit is not None:
        base = oos.get("base_rate", float("nan"))
        edge = "above" if hit > max(base, 1 - base) else "NOT above"
        parts.append(
            f"The model's out-of-sample hit rate was {hit * 100:.1f}%, {edge} the naive rate of "
            f"always guessing the majority side ({max(base, 1 - base) * 100:.1f}%)."
        )
    return " ".join(parts)


def decision_rows(trail: pd.DataFrame, verdicts: pd.DataFrame | None) -> pd.DataFrame:
    """The brain's rows behind the run's intents: one per intent, with its ``intent_id`` first."""
    if verdicts is None or verdicts.empty or trail.empty:
        return trail.iloc[:0].assign(intent_id=pd.Series(dtype=object))
    keys = verdicts[["intent_id", "symbol", "ts"]].copy()
    keys["ts"] = pd.to_datetime(keys["ts"], utc=True)
    rows = trail.copy()
    rows["ts"] = pd.to_datetime(rows["ts"], utc=True)
    out = keys.merge(rows, on=["symbol", "ts"], how="left")
    return out.reset_index(drop=True)


def build_ai_result(
    brain: BrainResult,
    equity: dict[str, pd.Series],
    start: Any,
    end: Any,
    symbols: list[str],
    verdicts: pd.DataFrame | None = None,
    risk_free: pd.Series | None = None,
) -> AIResult:
    """Everything the report's AI section shows, from the brain and the variants' equity curves;
    ``decisions`` holds the brain's row (views, reasons, model id) behind each intent."""
    cfg = brain.config
    horizon = cfg.walkforward.horizon if cfg is not None else 5
    pred = labelled_predictions(brain, brain.closes, horizon, start, end)
    pred = pred[pred["symbol"].isin(symbols)] if len(pred) else pred
    oos = oos_metrics(pred)
    s, e = _utc(start), _utc(end) + pd.Timedelta(days=1)
    windows = pd.DataFrame()
    importance = pd.DataFrame()
    if brain.wf is not None:
        w = brain.wf.windows.copy()
        if len(w):
            w = w[
                (pd.to_datetime(w["test_end"], utc=True) >= s)
                & (pd.to_datetime(w["test_start"], utc=True) < e)
            ]
        windows = w.reset_index(drop=True)
        imp = brain.wf.importance
        if len(imp):
            keep = imp.loc[imp.index.isin(windows["model_id"])] if "model_id" in windows else imp
            mean = (keep if len(keep) else imp).mean(axis=0).sort_values(ascending=False)
            importance = mean.rename("importance").rename_axis("feature").reset_index()
    trail = decision_rows(brain.trail(symbols, s, e), verdicts)
    freq = {"monthly": "M", "quarterly": "Q", "yearly": "Y"}.get(cfg.walkforward.retrain if cfg else "", "Q")
    periods = period_returns(equity, freq)
    summary_table = ablation_summary(equity, periods, risk_free)
    regimes_table = by_regime(equity["ensemble"], brain.regimes, pred)
    summary = {
        "model": cfg.model.kind if cfg and cfg.model.enabled else "none",
        "model_params": dict(cfg.model.params) if cfg else {},
        "horizon_bars": horizon,
        "walkforward": cfg.walkforward.model_dump(mode="json") if cfg else {},
        "regime_source": cfg.regime.source if cfg else "",
        "weights": cfg.ensemble.weights if cfg else "",
        "fixed_weights": dict(cfg.ensemble.fixed) if cfg else {},
        "feature_key": brain.feature_key,
        "sentiment_method": brain.sentiment_method,
        "walkforward_run": getattr(brain.wf, "run_id", "") if brain.wf is not None else "",
        "windows": len(windows),
        "data_versions": dict(sorted(brain.data_versions.items())),  # every partition the features read
    }
    return AIResult(
        summary=summary,
        decisions=trail,
        windows=windows,
        calibration=calibration_table(pred),
        importance=importance,
        oos=oos,
        weights=_in_run(brain.weights, s, e),
        equity=equity,
        ablation=periods.rename(columns=VARIANT_NAMES)
        .rename_axis("period")
        .reset_index()
        .astype({"period": str}),
        ablation_summary=summary_table,
        by_regime=regimes_table,
        verdict=verdict(summary_table, oos),
        warnings=list(brain.warnings),
    )


def _in_run(weights: pd.DataFrame | None, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame | None:
    """The learned weights in force during the run: from the period covering its start to its end."""
    if weights is None or weights.empty:
        return weights
    idx = pd.DatetimeIndex(weights.index)
    first = idx[idx <= start].max() if (idx <= start).any() else idx.min()
    return weights[(idx >= first) & (idx < end)]


def buy_and_hold(close_usd: dict[str, np.ndarray], index: pd.DatetimeIndex, cash: float) -> pd.Series:
    """Equal-weight buy and hold of the traded symbols (each bought at its first known close in the
    window, no costs): the plainest benchmark on the same timeline."""
    n = len(close_usd)
    total = np.zeros(len(index))
    for px in close_usd.values():
        p = pd.Series(px).ffill().to_numpy()
        ok = np.flatnonzero(~np.isnan(p))
        part = np.full(len(index), cash / n)
        if len(ok):
            first = ok[0]
            part[first:] = cash / n / p[first] * p[first:]
        total += part
    return pd.Series(total, index=index, name="buy_hold")
