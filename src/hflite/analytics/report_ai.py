"""The report's AI section and its files: the verdict first, then the model and its setup, out-of-sample
metrics, the ablation against technical-only and buy-and-hold, calibration, feature importance,
per-window and per-regime results, the strongest decisions and any warnings.

Renders an :class:`~hflite.ai.evaluation.AIResult` as it is (no recomputation of results). The report
helpers are imported inside the functions because ``report`` imports this module lazily too.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hflite.ai.brain import TRAIL_COLUMNS
from hflite.ai.views import VIEWS as _VIEWS

if TYPE_CHECKING:
    from hflite.ai.evaluation import AIResult

#: Files :func:`write_ai_tables` writes (``ai_weights.csv`` only with learned weights).
AI_FILES = (
    "ai_decisions.csv",
    "ai_windows.csv",
    "ai_calibration.csv",
    "ai_importance.csv",
    "ai_ablation.csv",
    "ai_ablation_summary.csv",
    "ai_regimes.csv",
    "ai_weights.csv",
    "ai_summary.json",
)

_VARIANT_LABELS = {
    "ensemble": "AI ensemble",
    "technical": "technical only",
    "buy_hold": "buy and hold (equal weight)",
}
_VARIANT_COLORS = {"ensemble": "#1f77b4", "technical": "#ff7f0e", "buy_hold": "#57606a"}
_VIEW_COLORS = {"banker": "#8250df", "investor": "#1a7f37", "market": "#1f77b4"}
_WARNING_MARKS = ("did NOT", "NOT above")
_MAX_EQUITY_POINTS = 2000
_MAX_PERIOD_ROWS = 24
_TOP_FEATURES = 15
_TOP_DECISIONS = 15
_NO_MODEL = "No model (ai.model.enabled = false)"
_DASH = "—"

_DECISION_COLUMNS = list(TRAIL_COLUMNS)
_WINDOW_COLUMNS = ["model_id", "train_start", "train_end", "test_start", "test_end", "n_train", "n_test"]
_CALIBRATION_COLUMNS = ["bin", "predicted", "realised", "count"]
_IMPORTANCE_COLUMNS = ["feature", "importance"]
_SUMMARY_COLUMNS = [
    "variant",
    "total_return_pct",
    "cagr_pct",
    "volatility_pct",
    "sharpe",
    "max_drawdown_pct",
    "ensemble_won_pct",
]
_REGIME_COLUMNS = [
    "regime",
    "days",
    "return_pct",
    "ann_return_pct",
    "ann_vol_pct",
    "up_days_pct",
    "model_hit_rate_pct",
]
#: Out-of-sample metrics: key, label, kind, what it means.
_OOS_ROWS: tuple[tuple[str, str, str, str], ...] = (
    (
        "hit_rate",
        "Hit rate",
        "pct",
        "Share of predictions on the right side (P(up) > 0.5 vs the realised move).",
    ),
    ("majority", "Majority-side base rate", "pct", "Hit rate of always guessing the more frequent side."),
    ("auc", "AUC", "num3", "Ranking skill of P(up): 0.5 is a coin flip, 1 is perfect."),
    (
        "brier",
        "Brier score",
        "num3",
        "Mean squared error of P(up); 0.25 is always saying 50%, lower is better.",
    ),
    (
        "log_loss",
        "Log loss",
        "num3",
        "Penalises confident misses; 0.693 is always saying 50%, lower is better.",
    ),
    ("ic", "IC", "num3", "Rank correlation of the expected and the realised forward return."),
    ("rows", "Rows", "int", "Out-of-sample predictions in the run's window with a known label."),
)
#: Walk-forward settings shown first, with their labels; any other setting follows by name.
_WALKFORWARD_KEYS = {
    "scheme": "scheme",
    "retrain": "retrain",
    "train_years": "train years",
    "embargo_bars": "embargo (bars)",
    "min_train_rows": "min train rows",
    "start": "first test",
    "end": "last test",
}
_VERDICT_STYLE = "border-radius:6px;padding:10px 14px;margin:4px 0 12px;font-size:15px;font-weight:600;"
_VERDICT_WARN = "background:#fff8c5;border:1px solid #d4a72c;color:#7d4e00"
_VERDICT_INFO = "background:#ddf4ff;border:1px solid #54aeff;color:#0a3069"


# ------------------------------------------------------------------------------------ formatting


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _float(value: Any) -> float:
    """``value`` as a float; NaN when missing or not a number."""
    if _is_missing(value) or isinstance(value, str | bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _num(value: Any, digits: int = 3) -> str:
    x = _float(value)
    return _DASH if math.isnan(x) else f"{round(x, digits) + 0.0:,.{digits}f}"  # + 0.0: no "-0.00"


def _pct(fraction: Any) -> str:
    """A fraction as a percentage with one decimal (0.5432 -> 54.3%)."""
    x = _float(fraction)
    return _DASH if math.isnan(x) else f"{x * 100:,.1f}%"


def _pctv(percent: Any) -> str:
    """A value already in percent, with one decimal."""
    x = _float(percent)
    return _DASH if math.isnan(x) else f"{x:,.1f}%"


def _int(value: Any) -> str:
    x = _float(value)
    return _DASH if math.isnan(x) else f"{x:,.0f}"


def _date(value: Any) -> str:
    if _is_missing(value):
        return _DASH
    try:
        return f"{pd.Timestamp(value):%Y-%m-%d}"
    except (TypeError, ValueError):
        return str(value)


def _text(value: Any) -> str:
    return _DASH if _is_missing(value) or value == "" else str(value)


def _format(value: Any, kind: str) -> str:
    """``value`` formatted by ``kind``: pct (a fraction), pctv (already in %), num2, num3, int or text."""
    if kind == "num2":
        return _num(value, 2)
    formats = {"pct": _pct, "pctv": _pctv, "num3": _num, "int": _int}
    return formats.get(kind, _text)(value)


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _utc_index(values: Any) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(values)
    return idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")


def _frame(frame: pd.DataFrame | None) -> pd.DataFrame:
    return pd.DataFrame() if frame is None else frame


def _table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
    """Like the report's tables (formatted cells, escaped here), the columns ``left`` aligned left."""
    lft = ' style="text-align:left"'

    def cells(tag: str, values: list[str]) -> str:
        return "".join(f"<{tag}{lft if i in left else ''}>{escape(v)}</{tag}>" for i, v in enumerate(values))

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return (
        f'<div class="scroll"><table><thead><tr>{cells("th", header)}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


# --------------------------------------------------------------------------------------- the section


def ai_html(ai: AIResult) -> str:
    """The inner HTML of the report's AI section (the caller wraps it in its ``<section>``)."""
    model = _has_model(ai)
    parts = [
        _verdict_html(ai.verdict),
        "<h3>Model and setup</h3>",
        _setup_html(ai),
        "<h3>Out-of-sample model metrics</h3>",
        _oos_html(ai.oos) if model else _note(f"{_NO_MODEL}: no out-of-sample predictions."),
        "<h3>Ablation: the same engine, risk and costs with only the score swapped</h3>",
        _ablation_html(ai),
        "<h3>Calibration</h3>",
        _calibration_html(_frame(ai.calibration)) if model else _note(f"{_NO_MODEL}: nothing to calibrate."),
        "<h3>Feature importance</h3>",
        _importance_html(_frame(ai.importance)) if model else _note(f"{_NO_MODEL}: no features ranked."),
        "<h3>Walk-forward windows</h3>",
        _windows_html(_frame(ai.windows)) if model else _note(f"{_NO_MODEL}: no walk-forward windows."),
        "<h3>Per regime</h3>",
        _regimes_html(_frame(ai.by_regime)),
        "<h3>Strongest decisions</h3>",
        _decisions_html(_frame(ai.decisions)),
        "<h3>AI warnings</h3>",
        _warnings_html(ai.warnings),
    ]
    return "".join(parts)


def _has_model(ai: AIResult) -> bool:
    """False when the run had no model (``ai.model.enabled = false``)."""
    return str(ai.summary.get("model", "none") or "none") != "none"


def _verdict_html(verdict: str) -> str:
    text = verdict.strip() or "No verdict: the ablation was not run."
    warn = any(mark in text for mark in _WARNING_MARKS)
    kind, style = ("ai-verdict warn", _VERDICT_WARN) if warn else ("ai-verdict", _VERDICT_INFO)
    return f'<div class="{kind}" role="note" style="{_VERDICT_STYLE}{style}">{escape(text)}</div>'


# ------------------------------------------------------------------------------------- model and setup


def _setup_html(ai: AIResult) -> str:
    from hflite.analytics import report as _r

    s = ai.summary
    model = str(s.get("model", "none") or "none")
    rows = [["Model", f"{model} ({_params(s.get('model_params'))})" if model != "none" else _NO_MODEL]]
    rows += [
        ["Horizon", f"{_int(s.get('horizon_bars'))} bars"],
        ["Walk-forward", _walkforward(s.get("walkforward"))],
        ["Walk-forward windows in the run", _int(s.get("windows", len(_frame(ai.windows))))],
        ["Ensemble weights", _weights_text(s, ai.weights)],
        ["Regime source", _text(s.get("regime_source"))],
        ["Sentiment method", _text(s.get("sentiment_method"))],
        ["Feature set", _text(str(s.get("feature_key") or "")[:12])],
        ["Walk-forward run", _text(s.get("walkforward_run"))],
        ["Inputs read (data versions)", _versions_text(s.get("data_versions"))],
    ]
    parts = [_table(["Setting", "Value"], rows, left=(0, 1))]
    if ai.weights is not None and not ai.weights.empty:
        parts.append(_r._figure_html(_weights_figure(ai.weights, _last_ts(ai.equity)), "ai-weights"))
        parts.append(
            _note(
                "Learned weights per retraining period (non-negative least squares on rows whose labels "
                "ended before the period); a period without enough rows keeps the fixed weights."
            )
        )
    return "".join(parts)


def _params(params: Any) -> str:
    if not isinstance(params, dict) or not params:
        return "default parameters"
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _walkforward(settings: Any) -> str:
    if not isinstance(settings, dict) or not settings:
        return _DASH
    first = [
        f"{label}: {_date(settings[k]) if k in ('start', 'end') else _text(settings[k])}"
        for k, label in _WALKFORWARD_KEYS.items()
        if k in settings
    ]
    rest = [f"{k}: {_text(v)}" for k, v in settings.items() if k not in _WALKFORWARD_KEYS and k != "horizon"]
    return " · ".join(first + rest)


def _versions_text(versions: Any) -> str:
    """``key hash12`` pairs of the partitions the features read (also in ai_summary.json)."""
    if not isinstance(versions, dict) or not versions:
        return "—"
    return ", ".join(f"{k} {str(v)[:12]}" for k, v in sorted(versions.items()))


def _weights_text(summary: dict[str, Any], weights: pd.DataFrame | None) -> str:
    fixed = summary.get("fixed_weights") or {}
    total = sum(_float(v) for v in fixed.values()) if isinstance(fixed, dict) else math.nan
    shares = (
        ", ".join(f"{v} {_pct(_float(fixed.get(v)) / total)}" for v in _VIEWS if v in fixed)
        if total and not math.isnan(total)
        else ""
    )
    mode = str(summary.get("weights") or "fixed")
    if mode == "learned":
        periods = 0 if weights is None else len(weights)
        fitted = (
            0 if weights is None or "fitted" not in weights else int(weights["fitted"].astype(bool).sum())
        )
        return (
            f"learned walk-forward ({fitted} of {periods} periods fitted; fallback fixed: {shares or _DASH})"
        )
    return f"{mode} ({shares})" if shares else mode


def _last_ts(equity: dict[str, pd.Series] | None) -> pd.Timestamp | None:
    """The last time of any equity curve (where the last weights period ends on the plot)."""
    ends = [pd.Timestamp(c.index[-1]) for c in (equity or {}).values() if c is not None and len(c)]
    return max(ends) if ends else None


def _weights_figure(weights: pd.DataFrame, end: pd.Timestamp | None = None) -> go.Figure:
    """Learned weights as steps, the last one held to ``end`` (the run's last time) when that is later."""
    from hflite.analytics import report as _r

    w = weights.sort_index()
    w.index = _utc_index(w.index)
    if end is not None and len(w) and _utc_index([end])[0] > w.index[-1]:
        w = pd.concat([w, w.iloc[[-1]].set_axis(_utc_index([end]))])
    fig = go.Figure()
    for view in _VIEWS:
        if view in w:
            series = pd.Series(w[view].to_numpy(dtype="float64") * 100, index=w.index)
            fig.add_scatter(
                x=_r._x(w.index, daily=True),
                y=_r._y(series),
                name=view,
                line={"width": 2, "shape": "hv", "color": _VIEW_COLORS[view]},
                hovertemplate="%{y:.1f}%",
            )
    fig.update_layout(
        height=260,
        xaxis_type="date",
        yaxis_title="Weight (%)",
        yaxis_ticksuffix="%",
        yaxis_rangemode="tozero",
    )
    return fig


# ---------------------------------------------------------------------------------------- metrics


def _oos_html(oos: dict[str, float]) -> str:

    values = dict(oos)
    base = _float(values.get("base_rate"))
    values["majority"] = max(base, 1 - base) if not math.isnan(base) else math.nan
    rows = [[label, _oos_value(values, key, kind), why] for key, label, kind, why in _OOS_ROWS]
    if "n_dates" in values:
        rows.append(
            [
                "Sessions (independent)",
                f"{_int(values.get('n_dates'))} (about {_int(values.get('n_independent'))} independent)",
                "Sessions scored; overlapping labels make about one independent observation per horizon.",
            ]
        )
    parts = [_table(["Metric", "Value", "What it means"], rows, left=(0, 2))]
    if "hit_rate" not in oos:
        parts.append(_note("Fewer than 10 labelled out-of-sample rows in the run's window: no metrics."))
    elif not math.isnan(base):
        parts.append(
            _note(
                f"Realised up share {_pct(base)}. Each prediction comes from the walk-forward model of its "
                "window, trained only on labels that ended before that window."
            )
        )
    if "auc_lo" in values:
        from hflite.ai.walkforward import skill_words

        words = skill_words(_float(values.get("auc_lo")), _float(values.get("auc_hi")))
        parts.append(
            _note(
                f"The model shows {words}. Intervals: 95% block bootstrap over whole sessions (blocks of "
                "about one horizon), so overlapping labels and same-day moves are not counted as "
                "independent evidence."
            )
        )
    return "".join(parts)


def _oos_value(values: dict[str, Any], key: str, kind: str) -> str:
    """A metric's cell; the AUC and IC with their 95% confidence interval when the result has one."""
    text = _format(values.get(key), kind)
    lo, hi = values.get(f"{key}_lo"), values.get(f"{key}_hi")
    if key in ("auc", "ic") and lo is not None and hi is not None:
        text += f" (95% CI {_format(lo, kind)} to {_format(hi, kind)})"
    return text


# --------------------------------------------------------------------------------------- ablation


def _ablation_html(ai: AIResult) -> str:
    from hflite.analytics import report as _r

    summary = _frame(ai.ablation_summary)
    parts = []
    if summary.empty:
        parts.append(_note("No ablation was run."))
    else:
        rows = [
            [
                _text(r.get("variant")),
                _pctv(r.get("total_return_pct")),
                _pctv(r.get("cagr_pct")),
                _pctv(r.get("volatility_pct")),
                _num(r.get("sharpe"), 2),
                _pctv(r.get("max_drawdown_pct")),
                _pctv(r.get("ensemble_won_pct")),
            ]
            for r in summary.to_dict("records")
        ]
        header = ["Variant", "Total return", "CAGR", "Volatility", "Sharpe", "Max drawdown", "Ensemble ahead"]
        parts.append(_table(header, rows))
        parts.append(
            _note(
                "The same metrics as the Performance section (daily returns, the FEDFUNDS risk-free rate). "
                "Ensemble ahead: share of periods in which the AI ensemble returned more than the variant."
            )
        )
    curves = {k: v for k, v in (ai.equity or {}).items() if v is not None and not v.dropna().empty}
    if curves:
        parts.append(_r._figure_html(_equity_figure(curves), "ai-equity"))
    parts.append(_periods_html(_frame(ai.ablation)))
    return "".join(parts)


def _equity_figure(curves: dict[str, pd.Series]) -> go.Figure:
    from hflite.analytics import report as _r

    fig = go.Figure()
    for name, curve in curves.items():
        thin = _r._thin(curve, _MAX_EQUITY_POINTS)
        fig.add_scatter(
            x=_r._x(thin.index),
            y=_r._y(thin),
            name=_VARIANT_LABELS.get(name, name),
            line={"width": 2 if name == "ensemble" else 1.3, "color": _VARIANT_COLORS.get(name)},
        )
    fig.update_layout(height=380, xaxis_type="date", yaxis_title="Equity (USD)")
    return fig


def _period_rows(periods: pd.DataFrame) -> list[list[str]]:
    variants = [c for c in periods.columns if c != "period"]
    return [[_text(r["period"]), *(_pctv(r[v]) for v in variants)] for r in periods.to_dict("records")]


def yearly_returns(periods: pd.DataFrame) -> pd.DataFrame:
    """Per-period returns (%) compounded to calendar years (the period label's first four characters)."""
    variants = [c for c in periods.columns if c != "period"]
    growth = 1 + periods[variants].apply(pd.to_numeric, errors="coerce") / 100
    year = periods["period"].astype(str).str[:4]
    out = (growth.groupby(year).prod(min_count=1) - 1) * 100
    return out.rename_axis("period").reset_index()


def _periods_html(periods: pd.DataFrame) -> str:

    if periods.empty or "period" not in periods:
        return _note("No per-period returns.")
    header = ["Period", *(str(c) for c in periods.columns if c != "period")]
    full = _table(header, _period_rows(periods))
    if len(periods) <= _MAX_PERIOD_ROWS:
        return "<h3>Returns per period</h3>" + full
    years = yearly_returns(periods)
    return (
        "<h3>Returns per year</h3>"
        + _note(
            f"{len(periods)} periods, compounded to {len(years)} calendar years here; "
            "every period is below and in ai_ablation.csv."
        )
        + _table(["Year", *header[1:]], _period_rows(years))
        + f"<details><summary>Every period ({len(periods)})</summary>{full}</details>"
    )


# ------------------------------------------------------------------------------------ calibration


def _calibration_html(cal: pd.DataFrame) -> str:
    from hflite.analytics import report as _r

    if cal.empty:
        return _note("No labelled out-of-sample predictions to calibrate.")
    rows = [
        [_text(r.get("bin")), _pct(r.get("predicted")), _pct(r.get("realised")), _int(r.get("count"))]
        for r in cal.to_dict("records")
    ]
    return (
        _r._figure_html(_calibration_figure(cal), "ai-calibration")
        + _note(
            "Mean predicted P(up) per probability bin against the realised share of up moves; a calibrated "
            "model sits on the diagonal. The bins are quantiles (each holds about the same number of "
            "predictions, labelled by its lowest and highest), and the axes zoom to the predictions' range. "
            "Bars: predictions per bin (right axis)."
        )
        + _table(["P(up) bin", "Mean predicted", "Realised up share", "Predictions"], rows)
    )


def _calibration_range(predicted: np.ndarray) -> tuple[float, float]:
    """The x range of the calibration plot: the predictions' span with a margin, within [0, 1]; bins of
    predictions that bunch (0.50-0.56) get the whole width rather than a sliver of it."""
    finite = predicted[np.isfinite(predicted)]
    if len(finite) == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = max(hi - lo, 0.02) * 0.15
    return max(0.0, lo - pad), min(1.0, hi + pad)


def _calibration_figure(cal: pd.DataFrame) -> go.Figure:
    predicted = pd.to_numeric(cal["predicted"], errors="coerce").to_numpy(dtype="float64")
    realised = pd.to_numeric(cal["realised"], errors="coerce").to_numpy(dtype="float64")
    count = pd.to_numeric(cal["count"], errors="coerce").to_numpy(dtype="float64")
    top = float(np.nanmax(count)) if np.isfinite(count).any() else 1.0  # bars fill the lower third
    x0, x1 = _calibration_range(predicted)
    gaps = np.diff(np.sort(predicted[np.isfinite(predicted)]))
    gaps = gaps[gaps > 0]
    width = 0.7 * float(gaps.min()) if len(gaps) else 0.03 * (x1 - x0)  # bars never overlap
    seen = realised[np.isfinite(realised)]
    y0 = max(0.0, min(x0, float(seen.min()) - 0.05) if len(seen) else x0)
    y1 = min(1.0, max(x1, float(seen.max()) + 0.05) if len(seen) else x1)
    fig = go.Figure()
    fig.add_bar(
        x=predicted,
        y=count,
        name="predictions",
        width=width,
        marker={"color": "#d0d7de"},
        hovertemplate="%{y:,.0f} predictions<extra></extra>",
    )
    fig.add_scatter(
        x=[x0, x1],
        y=[x0, x1],
        mode="lines",
        name="perfect calibration",
        yaxis="y2",
        line={"dash": "dash", "color": "#8c959f", "width": 1},
        hoverinfo="skip",
    )
    fig.add_scatter(
        x=predicted,
        y=realised,
        mode="lines+markers",
        name="realised up share",
        yaxis="y2",
        line={"color": "#1f77b4", "width": 2},
        hovertemplate="predicted %{x:.1%} → realised %{y:.1%}<extra></extra>",
    )
    fig.update_layout(
        height=360,
        hovermode="closest",
        margin={"r": 70},
        xaxis={"title": "Mean predicted P(up)", "range": [x0, x1], "tickformat": _percent_format(x1 - x0)},
        yaxis={"title": "Predictions", "side": "right", "showgrid": False, "range": [0, top * 3]},
        yaxis2={
            "title": "Realised up share",
            "side": "left",
            "overlaying": "y",
            "range": [y0, y1],
            "tickmode": "linear",  # its own round steps, not the bar axis's grid
            "tick0": 0,
            "dtick": 0.05 if y1 - y0 <= 0.3 else (0.1 if y1 - y0 <= 0.6 else 0.2),
            "tickformat": _percent_format(y1 - y0),
            "showgrid": True,
        },
    )
    return fig


def _percent_format(span: float) -> str:
    """Whole percents, or one decimal on an axis spanning 4 points or less (its ticks are 0.5% apart)."""
    return ".0%" if span > 0.04 else ".1%"


# ------------------------------------------------------------------------------------- importance


def _importance_html(imp: pd.DataFrame) -> str:
    from hflite.analytics import report as _r

    if imp.empty or not {"feature", "importance"} <= set(imp.columns):
        return _note("No feature importance recorded.")
    top = imp.assign(importance=pd.to_numeric(imp["importance"], errors="coerce")).nlargest(
        _TOP_FEATURES, "importance"
    )
    fig = go.Figure(
        go.Bar(
            x=top["importance"].to_numpy(dtype="float64")[::-1],
            y=top["feature"].astype(str).to_numpy()[::-1],
            orientation="h",
            marker={"color": "#1f77b4"},
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        height=120 + 22 * len(top), hovermode="closest", xaxis_title="Importance", yaxis={"automargin": True}
    )
    return _r._figure_html(fig, "ai-importance") + _note(
        f"Top {len(top)} of {len(imp)} features: gain share, averaged over the run's windows."
    )


# ---------------------------------------------------------------------------------------- windows


def _window_cell(column: str, value: Any) -> str:
    if column.endswith(("_start", "_end")):
        return _date(value)
    if column.startswith("n_"):
        return _int(value)
    if column.endswith("_rate") or column.startswith("fwd_ret"):
        return _pct(value)
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        return _num(value)
    return _text(value)


def _windows_html(windows: pd.DataFrame) -> str:
    from hflite.analytics import report as _r

    if windows.empty:
        return _note("No walk-forward window overlaps the run's window.")
    parts = []
    if "test_start" in windows and "hit_rate" in windows:
        parts.append(_r._figure_html(_windows_figure(windows), "ai-windows"))
    columns = [str(c) for c in windows.columns]
    rows = [
        [_window_cell(c, v) for c, v in zip(columns, rec, strict=True)]
        for rec in windows.itertuples(index=False)
    ]
    parts.append(
        f"<details><summary>Every window ({len(windows)}; also in ai_windows.csv)</summary>"
        f"{_table(columns, rows)}</details>"
    )
    return "".join(parts)


def _windows_figure(windows: pd.DataFrame) -> go.Figure:
    w = windows.assign(test_start=pd.to_datetime(windows["test_start"], utc=True)).sort_values("test_start")
    x = list(w["test_start"].dt.strftime("%Y-%m-%d"))
    fig = go.Figure()
    fig.add_scatter(
        x=x,
        y=pd.to_numeric(w["hit_rate"], errors="coerce").to_numpy(dtype="float64"),
        mode="lines+markers",
        name="hit rate",
        hovertemplate="%{y:.1%}",
    )
    if "base_rate" in w:
        base = pd.to_numeric(w["base_rate"], errors="coerce").to_numpy(dtype="float64")
        fig.add_scatter(
            x=x,
            y=np.maximum(base, 1 - base),
            mode="lines",
            name="majority-side rate",
            line={"dash": "dot", "color": "#8c959f"},
            hovertemplate="%{y:.1%}",
        )
    if "auc" in w:
        fig.add_scatter(
            x=x,
            y=pd.to_numeric(w["auc"], errors="coerce").to_numpy(dtype="float64"),
            mode="lines+markers",
            name="AUC",
            hovertemplate="%{y:.3f}",
        )
    fig.add_hline(y=0.5, line={"dash": "dash", "color": "#cf222e", "width": 1})
    fig.update_layout(
        height=300, xaxis_type="date", xaxis_title="Test window start", yaxis_title="Hit rate, AUC"
    )
    return fig


# ------------------------------------------------------------------------------- regimes, decisions


def _regimes_html(regimes: pd.DataFrame) -> str:

    if regimes.empty:
        return _note("No regime results.")
    rows = [
        [
            _text(r.get("regime")),
            _int(r.get("days")),
            _pctv(r.get("return_pct")),
            _pctv(r.get("ann_return_pct")),
            _pctv(r.get("ann_vol_pct")),
            _pctv(r.get("up_days_pct")),
            _pctv(r.get("model_hit_rate_pct")),
        ]
        for r in regimes.to_dict("records")
    ]
    header = ["Regime", "Days", "Return", "Ann. return", "Ann. volatility", "Up days", "Model hit rate"]
    return _table(header, rows) + _note(
        "The AI ensemble's daily returns grouped by the regime known at each day; model hit rate over the "
        "out-of-sample predictions made in that regime."
    )


def top_reason(reasons: Any) -> str:
    """The first of a view's JSON reasons ``[[factor, value, contribution], ...]`` as ``factor (+0.12)``."""
    if _is_missing(reasons) or reasons == "":
        return _DASH
    try:
        parsed = json.loads(reasons) if isinstance(reasons, str) else reasons
        factor, _value, contribution = parsed[0][:3]
    except (ValueError, TypeError, IndexError, KeyError):
        return _DASH
    c = _float(contribution)
    return f"{factor} ({c:+.2f})" if not math.isnan(c) else str(factor)


def strongest_decisions(decisions: pd.DataFrame, n: int = _TOP_DECISIONS) -> pd.DataFrame:
    """The ``n`` decision rows with the largest |score|, strongest first."""
    if decisions.empty or "score" not in decisions:
        return decisions.head(0)
    strength = pd.to_numeric(decisions["score"], errors="coerce").abs()
    return decisions.loc[strength.sort_values(ascending=False, kind="stable").dropna().index[:n]]


def _decision_row(r: dict[str, Any]) -> list[str]:
    from hflite.analytics import report as _r

    views = [_num(r.get(v), 2) for v in _VIEWS]
    reasons = [top_reason(r.get(f"{v}_reasons")) for v in _VIEWS]
    return [
        _r._ts(r.get("ts")) or _DASH,
        _text(r.get("symbol")),
        _num(r.get("score")),
        _num(r.get("confidence"), 2),
        *views,
        _pct(r.get("prob_up")),
        _text(r.get("regime")),
        *reasons,
    ]


def _decisions_html(decisions: pd.DataFrame) -> str:

    top = strongest_decisions(decisions)
    if top.empty:
        return _note("No decisions recorded.")
    header = ["Time", "Symbol", "Score", "Confidence", "Banker", "Investor", "Market", "P(up)", "Regime"]
    header += ["Banker reason", "Investor reason", "Market reason"]
    rows = [_decision_row(r) for r in top.to_dict("records")]
    return _table(header, rows, left=(0, 1, 8, 9, 10, 11)) + _note(
        f"The {len(top)} of {len(decisions):,} decisions with the largest |score|; each reason is the "
        "factor with the largest contribution to that view. The full trail is in ai_decisions.csv."
    )


def _warnings_html(warnings: list[str]) -> str:
    if not warnings:
        return _note("None.")
    return "<ul>" + "".join(f'<li class="warn">{escape(str(w))}</li>' for w in warnings) + "</ul>"


# ------------------------------------------------------------------------------------------ files


def write_ai_tables(ai: AIResult, folder: Path) -> list[str]:
    """Write the AI section's tables and ``ai_summary.json`` into ``folder``; return the file names."""
    from hflite.analytics import report as _r

    folder = Path(folder)
    tables: list[tuple[str, pd.DataFrame]] = [
        ("ai_decisions.csv", _r._with_columns(ai.decisions, _DECISION_COLUMNS)),
        ("ai_windows.csv", _r._with_columns(ai.windows, _WINDOW_COLUMNS)),
        ("ai_calibration.csv", _r._with_columns(ai.calibration, _CALIBRATION_COLUMNS)),
        ("ai_importance.csv", _r._with_columns(ai.importance, _IMPORTANCE_COLUMNS)),
        ("ai_ablation.csv", _r._with_columns(ai.ablation, ["period"])),
        ("ai_ablation_summary.csv", _r._with_columns(ai.ablation_summary, _SUMMARY_COLUMNS)),
        ("ai_regimes.csv", _r._with_columns(ai.by_regime, _REGIME_COLUMNS)),
    ]
    written = []
    for name, frame in tables:
        frame.to_csv(folder / name, index=False)
        written.append(name)
    if ai.weights is not None:
        ai.weights.rename_axis("start").reset_index().to_csv(folder / "ai_weights.csv", index=False)
        written.append("ai_weights.csv")
    payload = {"verdict": ai.verdict, "summary": ai.summary, "oos": ai.oos, "warnings": list(ai.warnings)}
    _r._write_json(folder / "ai_summary.json", _iso(payload))
    written.append("ai_summary.json")
    return written


def _iso(value: Any) -> Any:
    """Copy with timestamps as ISO 8601 strings (NaT -> None); everything else as it is."""
    if isinstance(value, dict):
        return {k: _iso(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_iso(v) for v in value]
    if isinstance(value, datetime | np.datetime64):
        ts = pd.Timestamp(value)
        return None if ts is pd.NaT else ts.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return None if value is pd.NaT else value
