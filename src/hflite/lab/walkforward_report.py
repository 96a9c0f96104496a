"""The walk-forward report: a folder with ``index.html``, ``windows.csv`` (one row per window),
``oos_equity.csv`` (the stitched curves by day) and ``walkforward.json`` (the headline numbers), written
atomically (:func:`hflite.lab.html.write_folder`)."""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hflite.lab.html import figure, page, table, write_folder
from hflite.lab.walkforward import WalkForwardResult

#: Files of a walk-forward report folder.
REPORT_FILES = ("index.html", "windows.csv", "oos_equity.csv", "walkforward.json")

#: (label, metric key, kind) of the headline table.
HEADLINE_ROWS = (
    ("Total return", "total_return", "pct"),
    ("CAGR", "cagr", "pct"),
    ("Volatility", "volatility", "pct"),
    ("Sharpe", "sharpe", "num"),
    ("Sortino", "sortino", "num"),
    ("Max drawdown", "max_drawdown", "pct"),
    ("Calmar", "calmar", "num"),
    ("Trades (closed, all windows)", "trades", "int"),
)

_TRAIN, _TEST, _PARTIAL = "#1f77b4", "#ff7f0e", "#fdbf6f"


def fmt(v: Any, kind: str) -> str:
    """A number as the report and the terminal print it; NaN and None as n/a."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if kind == "pct":
        return f"{v:.1%}"
    if kind == "num":
        return f"{v:.2f}"
    if kind == "int":
        return f"{v:.0f}"
    return str(v)


def holdout_sentence(r: WalkForwardResult) -> str:
    """The plain statement of what the walk-forward never read."""
    if r.holdout is None:
        return "No hold-out (--holdout none): every day of the config's period was used."
    return (
        f"{r.holdout} onwards was never used: no window trained or tested on it "
        f"(the walk-forward ends on {r.period[1]})."
    )


def headline(r: WalkForwardResult) -> dict[str, Any]:
    """The numbers a summary quotes (``walkforward.json``)."""

    def f(x: Any) -> float | None:
        return float(x) if x is not None and math.isfinite(float(x)) else None

    keys = [k for _, k, _ in HEADLINE_ROWS]
    return {
        "config": r.config_name,
        "strategy": r.strategy,
        "symbols": r.symbols,
        "objective": r.objective,
        "space": {p.key: p.describe() for p in r.params},
        "train": str(r.train),
        "test": str(r.test),
        "step": str(r.step),
        "mode": "anchored" if r.anchored else "rolling",
        "period": [str(r.period[0]), str(r.period[1])],
        "holdout_from": str(r.holdout) if r.holdout is not None else None,
        "trials_per_window": r.n_trials,
        "seed": r.seed,
        "windows": len(r.windows),
        "oos": {k: f(r.oos_metrics.get(k)) for k in keys},
        "unoptimised": {k: f(r.base_metrics.get(k)) for k in keys},
        "benchmarks": {n: {k: f(m.get(k)) for k in keys} for n, m in r.bench_metrics.items()},
        "walk_forward_efficiency": f(r.efficiency),
        "positive_oos_share": f(r.positive_share),
        "mean_is_objective": f(r.mean_is_value),
        "mean_oos_objective": f(r.mean_oos_value),
        "stability": r.stability(),
        "warnings": r.warnings,
        "seconds": round(r.seconds, 2),
    }


# ----------------------------------------------------------------------------------------- sections


def _setup_html(r: WalkForwardResult) -> str:
    mode = (
        "anchored: every train window starts on the period's first day and grows by the step"
        if r.anchored
        else "rolling: a fixed-length train window moves forward by the step"
    )
    space = "; ".join(f"{p.name} = {p.describe()}" for p in r.params)
    tail = r.unused_tail
    tail_html = (
        f'<p class="note">{tail[0]} to {tail[1]} is in no test window (less than half a test window '
        "was left).</p>"
        if tail
        else ""
    )
    partial = [w.window for w in r.windows if w.window.partial]
    partial_html = (
        f'<p class="note">The last test window ({partial[0].test_start} to {partial[0].test_end}) is '
        "shorter than --test: it was cut at the period's end.</p>"
        if partial
        else ""
    )
    warn = "".join(f'<li class="warn">{escape(w)}</li>' for w in r.warnings)
    return (
        f"<p><b>Config:</b> {escape(r.config_name or '(flags only)')} · strategy {escape(r.strategy)} · "
        f"{escape(', '.join(r.symbols))}</p>"
        f"<p><b>Searched:</b> {escape(space)} · objective <b>{escape(r.objective)}</b> · "
        f"{r.n_trials} trials per window · seed {r.seed}</p>"
        f"<p><b>Windows:</b> {len(r.windows)} · train {r.train} · test {r.test} · step {r.step} · "
        f"{escape(mode)}</p>"
        f"<p><b>Period:</b> {r.period[0]} to {r.period[1]}</p>"
        f"<p><b>Hold-out:</b> {escape(holdout_sentence(r))}</p>"
        '<p class="note">Each window\'s parameters are chosen on its train window only, then traded on '
        "the test window that follows it. Every test window starts with the configured cash "
        f"({r.initial_cash:,.0f} USD) and no position: positions do not carry across windows. A "
        "position open at a test window's last bar is marked at that bar's close (its exit fee is not "
        "deducted) and the next window starts flat. The out-of-sample curve chains the test windows' "
        "daily returns; buy-and-hold and the un-optimised parameters are chained over the same "
        "windows the same way (so the move from one window's last close to the next window's first "
        "close is in none of them).</p>"
        f"{partial_html}{tail_html}"
        + (f"<ul>{warn}</ul>" if warn else "")
        + f'<p class="note">Ran in {r.seconds:.1f} s.</p>'
    )


def _headline_html(r: WalkForwardResult) -> str:
    names = list(r.bench_metrics)
    cols = [
        "Metric",
        "Walk-forward OOS",
        "Un-optimised",
        *[n.removesuffix(" buy & hold") + " B&H" for n in names],
    ]
    rows = [
        [
            label,
            fmt(r.oos_metrics.get(k), kind),
            fmt(r.base_metrics.get(k), kind),
            *[fmt(r.bench_metrics[n].get(k), kind) if k != "trades" else "—" for n in names],
        ]
        for label, k, kind in HEADLINE_ROWS
    ]
    overall = [
        ["Walk-forward efficiency (OOS CAGR / mean IS CAGR)", fmt(r.efficiency, "num")],
        ["Windows with a positive OOS return", f"{fmt(r.positive_share, 'pct')} of {len(r.windows)}"],
        [f"Mean in-sample {r.objective} of the winners", fmt(r.mean_is_value, "num")],
        [f"Mean out-of-sample {r.objective}", fmt(r.mean_oos_value, "num")],
    ]
    return (
        table(cols, rows)
        + '<p class="note">All columns cover the same test windows, chained. Benchmarks are buy-and-hold '
        "on their own calendar, bought at each test window's first close, no fees. Trades, fees and "
        "open trades add up the windows; hit rate and profit factor are per window (windows.csv).</p>"
        + "<h3>Overall</h3>"
        + table(["Measure", "Value"], overall)
        + '<p class="note">Walk-forward efficiency near 1 (or above) means the winners kept out of sample '
        "what they earned in sample; near 0 or negative means they did not. n/a when the mean in-sample "
        "CAGR is not positive.</p>"
    )


def _timeline_figure(r: WalkForwardResult) -> go.Figure:
    fig = go.Figure()
    labels = [w.window.label for w in r.windows]
    day_ms = 86_400_000

    def bars(name: str, colour: str, spans: list[tuple[str, Any, Any]]) -> None:
        if not spans:
            return
        fig.add_trace(
            go.Bar(
                name=name,
                y=[s[0] for s in spans],
                base=[pd.Timestamp(s[1]).isoformat() for s in spans],
                x=[((pd.Timestamp(s[2]) - pd.Timestamp(s[1])).days + 1) * day_ms for s in spans],
                orientation="h",
                marker_color=colour,
                hovertext=[f"{s[0]}: {s[1]} to {s[2]}" for s in spans],
                hoverinfo="text",
            )
        )

    bars("train", _TRAIN, [(w.window.label, w.window.train_start, w.window.train_end) for w in r.windows])
    full = [w for w in r.windows if not w.window.partial]
    part = [w for w in r.windows if w.window.partial]
    bars("test", _TEST, [(w.window.label, w.window.test_start, w.window.test_end) for w in full])
    bars(
        "test (cut at the period's end)",
        _PARTIAL,
        [(w.window.label, w.window.test_start, w.window.test_end) for w in part],
    )
    if r.holdout is not None:
        fig.add_vline(x=pd.Timestamp(r.holdout).timestamp() * 1000, line_dash="dash", line_color="#cf222e")
        fig.add_annotation(
            x=pd.Timestamp(r.holdout).isoformat(), y=1.0, yref="paper", text="hold-out", showarrow=False
        )
    fig.update_layout(
        title="Train and test windows",
        barmode="overlay",
        xaxis={"type": "date"},
        yaxis={"categoryorder": "array", "categoryarray": labels[::-1]},
        hovermode="closest",
    )
    return fig


def _equity_figure(r: WalkForwardResult) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=r.oos_equity.index, y=r.oos_equity, name="walk-forward OOS", line_width=2.2))
    fig.add_trace(go.Scatter(x=r.base_equity.index, y=r.base_equity, name="un-optimised", line_dash="dot"))
    for name, curve in r.bench_equity.items():
        fig.add_trace(go.Scatter(x=curve.index, y=curve, name=name, line_width=1.2))
    for w in r.windows[1:]:
        fig.add_vline(
            x=pd.Timestamp(w.window.test_start).timestamp() * 1000, line_width=0.6, line_color="#d0d7de"
        )
    fig.update_layout(
        title="Stitched out-of-sample equity (USD; grey lines: window starts)", yaxis_title="USD"
    )
    return fig


def _objective_figure(r: WalkForwardResult) -> go.Figure:
    labels = [w.window.label for w in r.windows]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=labels, y=[_finite(w.is_value) for w in r.windows], name="in-sample (winner)"))
    fig.add_trace(
        go.Bar(x=labels, y=[_finite(w.oos_value) for w in r.windows], name="out-of-sample (winner)")
    )
    fig.add_trace(
        go.Bar(x=labels, y=[_finite(w.base_value) for w in r.windows], name="out-of-sample (un-optimised)")
    )
    fig.update_layout(
        title=f"{r.objective}: in sample vs out of sample per window (missing bar: no trade, undefined)",
        barmode="group",
        hovermode="x unified",
    )
    return fig


def _params_figure(r: WalkForwardResult) -> go.Figure:
    n = max(len(r.params), 1)
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, subplot_titles=[p.name for p in r.params])
    x = [f"{w.window.label} ({w.window.test_start})" for w in r.windows]
    for i, p in enumerate(r.params, start=1):
        y = [w.params.get(p.key) for w in r.windows]
        fig.add_trace(go.Scatter(x=x, y=y, name=p.name, mode="lines+markers"), row=i, col=1)
        bounds = p.bounds()
        if bounds is not None:
            fig.update_yaxes(range=[bounds[0], bounds[1]], row=i, col=1)
    fig.update_layout(title="Chosen parameters per window (y axis: the searched range)", showlegend=False)
    return fig


def _clean(value: Any) -> Any:
    """JSON-ready: NaN and infinities as null, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _windows_html(r: WalkForwardResult) -> str:
    header = [
        "Window",
        "Train",
        "Test",
        *[p.name for p in r.params],
        f"IS {r.objective}",
        f"OOS {r.objective}",
        "OOS / IS",
        "OOS − IS",
        "OOS return",
        "OOS max DD",
        "Trades",
        f"Un-opt. OOS {r.objective}",
        "Un-opt. OOS return",
    ]
    rows = []
    for w in r.windows:
        win = w.window
        m = w.oos_metrics
        rows.append(
            [
                win.label + (" (cut)" if win.partial else ""),
                f"{win.train_start} to {win.train_end}",
                f"{win.test_start} to {win.test_end}",
                *[_param_text(w.params.get(p.key)) for p in r.params],
                fmt(w.is_value, "num"),
                fmt(w.oos_value, "num"),
                fmt(w.degradation_ratio, "num"),
                fmt(w.degradation_diff, "num"),
                fmt(m.get("total_return"), "pct"),
                fmt(m.get("max_drawdown"), "pct"),
                f"{fmt(m.get('trades'), 'int')}"
                + (f" + {m['open_trades']:.0f} open" if m.get("open_trades") else ""),
                fmt(w.base_value, "num"),
                fmt(w.base_metrics.get("total_return"), "pct"),
            ]
        )
    return (
        table(header, rows)
        + '<p class="note">IS: the winner on its train window; OOS: the same parameters on the test window. '
        "OOS / IS is the objective kept out of sample (1 = all of it); n/a when a value is undefined "
        "(no trade in the window gives no Sharpe). Every column, with trials and timings, is in "
        "windows.csv.</p>"
    )


def _param_text(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _stability_html(r: WalkForwardResult) -> str:
    rows = []
    for s in r.stability():
        if "mean" in s:
            rows.append(
                [
                    s["param"],
                    f"{s['mean']:.4g} ± {s['std']:.3g}",
                    f"{s['min']:.4g} to {s['max']:.4g}",
                    fmt(s["spread_of_range"], "pct"),
                    fmt(s["mean_jump_of_range"], "pct"),
                    f"{s['changes']} of {max(s['windows'] - 1, 0)}",
                ]
            )
        else:
            rows.append(
                [
                    s["param"],
                    f"mostly {s.get('mode')} ({fmt(s.get('mode_share'), 'pct')})",
                    "—",
                    "—",
                    "—",
                    f"{s['changes']} of {max(s['windows'] - 1, 0)}",
                ]
            )
    return (
        table(
            [
                "Parameter",
                "Mean ± std",
                "Chosen range",
                "Spread / searched range",
                "Mean jump / range",
                "Changes",
            ],
            rows,
        )
        + '<p class="note">Stable choices (small spread and jumps) suggest the optimum is a property of the '
        "market, not of one sample; choices that jump from one end of the range to the other suggest the "
        "objective surface is flat or noisy, and the walk-forward result is what to trust.</p>"
    )


def write_walkforward(r: WalkForwardResult, out_dir: Path) -> Path:
    """Write the report folder (:data:`REPORT_FILES`); returns the path of index.html."""
    sections = [
        ("Setup", _setup_html(r)),
        ("Out-of-sample result", _headline_html(r)),
        ("Timeline", figure(_timeline_figure(r), 80 + 26 * len(r.windows))),
        ("Equity", figure(_equity_figure(r), 420)),
        ("In sample vs out of sample", figure(_objective_figure(r), 340)),
        ("Chosen parameters", figure(_params_figure(r), 180 + 150 * len(r.params))),
        ("Windows", _windows_html(r)),
        ("Parameter stability", _stability_html(r)),
    ]
    title = f"HedgeFund-Lite walk-forward: {r.config_name or r.strategy} ({r.strategy})"

    def fill(tmp: Path) -> None:
        (tmp / "index.html").write_text(page(title, sections), encoding="utf-8")
        r.window_frame().to_csv(tmp / "windows.csv", index=False)
        r.equity_frame().to_csv(tmp / "oos_equity.csv")
        payload = json.dumps(_clean(headline(r)), indent=2, default=str, allow_nan=False)
        (tmp / "walkforward.json").write_text(payload + "\n", encoding="utf-8")

    write_folder(out_dir, fill)
    return Path(out_dir) / "index.html"
